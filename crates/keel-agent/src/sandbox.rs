//! A pod's shared namespaces (network, UTS, IPC) as bind-mounted files under the pod's directory, which
//! every container of the pod joins by path. No pause container: the files keep the namespaces alive with
//! no process, across agent and containerd restarts; tearing down is an unmount.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::spec::SandboxPaths;

/// The directory holding a pod's namespace files.
pub fn ns_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("ns")
}

/// Whether the pod's namespaces exist (all three files are mounted namespaces).
pub fn exists(paths: &SandboxPaths) -> bool {
    [&paths.net, &paths.uts, &paths.ipc].iter().all(|p| is_namespace(p))
}

fn is_namespace(path: &Path) -> bool {
    // A bind-mounted namespace file lives on nsfs; an empty placeholder is a regular file elsewhere.
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as u64 == 0x6e73_6673)
}

/// Makes the pod's network, UTS and IPC namespaces, with `hostname` set in the UTS one, and the loopback
/// interface of the network one brought up.
pub fn create(paths: &SandboxPaths, hostname: &str) -> io::Result<()> {
    if exists(paths) {
        return Ok(());
    }
    // A half-made sandbox (a crash between mounts) is made again from scratch.
    remove(paths)?;
    for p in [&paths.net, &paths.uts, &paths.ipc] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(p)?;
    }
    let paths = paths.clone();
    let hostname = hostname.to_string();
    // unshare changes the calling thread: a thread of its own, never a pooled one, which ends with it.
    std::thread::Builder::new()
        .name("keel-sandbox".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
                .map_err(io::Error::from)?;
            nix::unistd::sethostname(&hostname).map_err(io::Error::from)?;
            loopback_up()?;
            for (kind, target) in [("net", &paths.net), ("uts", &paths.uts), ("ipc", &paths.ipc)] {
                let source = format!("/proc/thread-self/ns/{kind}");
                mount(Some(source.as_str()), target.as_path(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| io::Error::other(format!("bind-mount {source} on {}: {e}", target.display())))?;
            }
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("the sandbox thread panicked"))?
}

/// Brings `lo` up in the calling thread's network namespace (an ioctl on a datagram socket).
fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // Any AF_INET datagram socket serves for the ioctl.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut req: libc_ifreq = unsafe { std::mem::zeroed() };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write a struct ifreq, which `libc_ifreq` lays out.
    unsafe {
        if nix::libc::ioctl(socket.as_raw_fd(), nix::libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.flags |= nix::libc::IFF_UP as i16;
        if nix::libc::ioctl(socket.as_raw_fd(), nix::libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `struct ifreq` with the flags member of its union (40 bytes on Linux).
#[repr(C)]
struct libc_ifreq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Unmounts and removes the pod's namespace files (those already gone are skipped).
pub fn remove(paths: &SandboxPaths) -> io::Result<()> {
    for p in [&paths.net, &paths.uts, &paths.ipc] {
        match umount2(p.as_path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io::Error::other(format!("unmount {}: {e}", p.display()))),
        }
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Unmounts everything mounted at or under `dir` (deepest first).
pub fn unmount_under(dir: &Path) -> io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut targets: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|t| PathBuf::from(t.replace("\\040", " ")))
        .filter(|t| t.starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.as_os_str().len()));
    for t in targets {
        match umount2(t.as_path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io::Error::other(format!("unmount {}: {e}", t.display()))),
        }
    }
    Ok(())
}
