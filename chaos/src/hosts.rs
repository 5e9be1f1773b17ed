//! Hosts for the members: one network namespace each, joined by veth pairs to a bridge in a namespace of
//! their own, plus one namespace for the clients — so that partitions, delay and loss hit real network
//! paths. Addresses are 10.199.0.0/24 inside those namespaces only (each run has its own bridge, so runs do
//! not see each other). Everything is removed when the [`Network`] is dropped, and namespaces that a dead
//! run left behind are removed by [`remove_stale`].

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {ns}")]
    Enter {
        ns: String,
        #[source]
        source: std::io::Error,
    },
}

/// Every namespace of a run starts with this, then the harness's pid.
pub const PREFIX: &str = "kchaos";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The network namespace's name (`ip netns`).
    pub ns: String,
    pub addr: Ipv4Addr,
}

pub struct Network {
    switch: String,
    pub client: Host,
    pub hosts: Vec<Host>,
}

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<(), HostError> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<(), HostError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| HostError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HostError::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// A command that runs `program` inside namespace `ns`. It inherits no descriptor of the harness but its
/// stdio: a member restarted while a delaying thread's netlink socket was open (the `nfq` crate opens it
/// without close-on-exec) kept that socket, and with it the queue, bound for as long as it lived.
pub fn in_ns(ns: &str, program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    // SAFETY: close_range(2) is async-signal-safe; it only marks the child's descriptors above stdio
    // close-on-exec (std sets up stdio before this runs).
    unsafe {
        c.pre_exec(|| {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Runs `program args…` inside `ns`, failing on a non-zero exit.
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<(), HostError> {
    run(in_ns(ns, program).args(args))
}

/// Moves the calling thread into namespace `ns`: sockets it opens from then on live there.
pub fn enter(ns: &str) -> Result<(), HostError> {
    let err = |source| HostError::Enter { ns: ns.to_string(), source };
    let f = File::open(format!("/var/run/netns/{ns}")).map_err(err)?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn subnet_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 199, 0, n)
}

impl Network {
    /// `hosts` member hosts (addresses .1, .2, …) and the clients' host (.200), all on one bridge.
    pub fn create(hosts: usize) -> Result<Network, HostError> {
        let run = format!("{PREFIX}{}", std::process::id());
        let mut net = Network {
            switch: format!("{run}-sw"),
            client: Host { ns: format!("{run}-c"), addr: subnet_addr(200) },
            hosts: (0..hosts).map(|i| Host { ns: format!("{run}-h{i}"), addr: subnet_addr(i as u8 + 1) }).collect(),
        };
        // Dropped on any error below: whatever was made is removed.
        net.build().map(|()| net)
    }

    fn build(&mut self) -> Result<(), HostError> {
        ip(&["netns", "add", &self.switch])?;
        ip(&["-n", &self.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &self.switch, "link", "set", "br0", "up"])?;
        let all: Vec<Host> = self.hosts.iter().cloned().chain([self.client.clone()]).collect();
        for (i, h) in all.iter().enumerate() {
            let port = format!("p{i}");
            ip(&["netns", "add", &h.ns])?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &h.ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &self.switch])?;
            ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &self.switch, "link", "set", &port, "up"])?;
            ip(&["-n", &h.ns, "addr", "add", &format!("{}/24", h.addr), "dev", "eth0"])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Every namespace of this run.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        v.push(self.client.ns.clone());
        v.push(self.switch.clone());
        v
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Removes namespaces left by runs whose harness process no longer exists (killed before it could clean up).
pub fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
