//! Sockets inside another network namespace: the node's DNS server and ingress listen in the pods'
//! network namespace (the agent's `--cni-netns`), which need not be the agent's own. A thread enters the
//! namespace (`setns`), makes the sockets and leaves with them; a socket keeps the namespace it was made in.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Moves the calling thread into the network namespace `netns` (a path under /run/netns or
/// /proc/<pid>/ns/net); threads it starts afterwards are born there too.
pub fn enter(netns: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::open(netns)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Makes sockets of `kinds` bound to `addr` inside `netns` (or this process's namespace). The address
/// need not exist yet (IP_FREEBIND): a node's bridge gets its address with its first pod.
fn bind_in(
    netns: Option<PathBuf>,
    addr: SocketAddr,
    kinds: Vec<socket2::Type>,
) -> std::io::Result<Vec<socket2::Socket>> {
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            enter(&ns)?;
        }
        let domain = socket2::Domain::for_address(addr);
        let mut out = Vec::new();
        for kind in kinds {
            let s = socket2::Socket::new(domain, kind, None)?;
            if addr.is_ipv4() {
                s.set_freebind_v4(true)?;
            }
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            if kind == socket2::Type::STREAM {
                s.listen(1024)?;
            }
            out.push(s);
        }
        Ok(out)
    })
    .join()
    .map_err(|_| std::io::Error::other("the thread making sockets in a network namespace panicked"))?
}

/// A TCP listener on `addr` inside `netns`.
pub fn tcp_listener_in(netns: Option<PathBuf>, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = bind_in(netns, addr, vec![socket2::Type::STREAM])?.remove(0);
    tokio::net::TcpListener::from_std(s.into())
}

/// A UDP socket on `addr` inside `netns`.
pub fn udp_socket_in(netns: Option<PathBuf>, addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = bind_in(netns, addr, vec![socket2::Type::DGRAM])?.remove(0);
    tokio::net::UdpSocket::from_std(s.into())
}
