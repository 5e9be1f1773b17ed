//! `keel kv` members, one per host: started with etcd-style flags on the host's address, killed with -9,
//! paused with SIGSTOP, restarted on the same data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::hosts::{in_ns, Host};

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

pub struct Member {
    pub name: String,
    pub host: Host,
    data_dir: PathBuf,
    log: PathBuf,
    initial_cluster: String,
    child: Option<Child>,
    paused: bool,
}

/// `--initial-cluster` for members 0..n on `hosts`, in the names and ports [`Member`] uses.
pub fn initial_cluster(hosts: &[Host]) -> String {
    let entries: Vec<String> =
        hosts.iter().enumerate().map(|(i, h)| format!("m{i}=http://{}:{PEER_PORT}", h.addr)).collect();
    entries.join(",")
}

impl Member {
    pub fn new(i: usize, host: Host, work: &Path, initial_cluster: &str) -> Member {
        let name = format!("m{i}");
        Member {
            data_dir: work.join(&name),
            log: work.join(format!("{name}.log")),
            name,
            host,
            initial_cluster: initial_cluster.to_string(),
            child: None,
            paused: false,
        }
    }

    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.host.addr)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.host.addr)
    }

    pub fn start(&mut self, keel: &Path, state: &str) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = in_ns(&self.host.ns, &keel.to_string_lossy())
            .args(["kv", "--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url(), "--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url(), "--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "chaos"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs keel in place).
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.signal(libc::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill();
    }
}
