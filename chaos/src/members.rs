//! Store members, one per host: `keel kv` (or, to compare, etcd) started with etcd's flags on the host's
//! address, killed with -9, paused with SIGSTOP, restarted on the same data dir — or replaced: removed from
//! the cluster, its data dir set aside, and added back as a new member (a new peer port, so a new member
//! id) on an empty one.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::hosts::{in_ns, Host};
use crate::lazyfs::LazyMount;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// Which store the members run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// `keel kv` from this binary.
    Keel(PathBuf),
    /// An etcd server binary (3.4's flags are the ones used).
    Etcd(PathBuf),
}

pub struct Member {
    pub name: String,
    pub host: Host,
    work: PathBuf,
    /// How many times it was replaced by a new member on this host.
    generation: u16,
    log: PathBuf,
    initial_cluster: String,
    child: Option<Child>,
    paused: bool,
    /// More flags for the server, after the ones the harness sets.
    extra_args: Vec<String>,
    /// The LazyFS mount its data dirs are on, if any (dropped after the member is killed: see `Drop`).
    disk: Option<LazyMount>,
}

/// `--initial-cluster` for members 0..n on `hosts`, in the names and ports [`Member`] uses.
pub fn initial_cluster(hosts: &[Host]) -> String {
    let entries: Vec<String> =
        hosts.iter().enumerate().map(|(i, h)| format!("m{i}=http://{}:{PEER_PORT}", h.addr)).collect();
    entries.join(",")
}

/// `--initial-cluster` for these members as they are now.
pub fn current_cluster(members: &[Member]) -> String {
    let entries: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
    entries.join(",")
}

impl Member {
    pub fn new(i: usize, host: Host, work: &Path, initial_cluster: &str) -> Member {
        let name = format!("m{i}");
        Member {
            log: work.join(format!("{name}.log")),
            work: work.to_path_buf(),
            generation: 0,
            name,
            host,
            initial_cluster: initial_cluster.to_string(),
            child: None,
            paused: false,
            extra_args: Vec::new(),
            disk: None,
        }
    }

    /// Keeps its data dirs on `disk`, so that [`Member::crash`] can lose what was not fsynced.
    pub fn on_disk(mut self, disk: LazyMount) -> Member {
        self.disk = Some(disk);
        self
    }

    /// Passes `args` to the server too, after the flags the harness sets (say, `--heartbeat-interval=100`).
    pub fn with_args(mut self, args: &[String]) -> Member {
        self.extra_args = args.to_vec();
        self
    }

    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.host.addr)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host.addr, PEER_PORT + self.generation)
    }

    fn data_dir(&self) -> PathBuf {
        let root = self.disk.as_ref().map_or(self.work.as_path(), LazyMount::mountpoint);
        match self.generation {
            0 => root.join(&self.name),
            g => root.join(format!("{}.{g}", self.name)),
        }
    }

    /// Starts the member unless it runs; `state` is `new` or `existing` (etcd's `--initial-cluster-state`).
    pub fn start(&mut self, server: &Server, state: &str) -> std::io::Result<()> {
        if self.running() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match server {
            Server::Keel(keel) => {
                let mut c = in_ns(&self.host.ns, &keel.to_string_lossy());
                c.arg("kv");
                c
            }
            Server::Etcd(etcd) => in_ns(&self.host.ns, &etcd.to_string_lossy()),
        };
        let child = cmd
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &self.client_url(), "--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url(), "--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "chaos"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Becomes a new member on this host: the next peer port (so a new member id), an empty data dir (the
    /// old one stays, for the record), joining `cluster` (etcd's `--initial-cluster`, this member included
    /// under the URL [`Member::next_peer_url`] gave). Call it stopped, then [`Member::start`] it `existing`.
    pub fn renew(&mut self, cluster: &str) {
        self.generation += 1;
        self.initial_cluster = cluster.to_string();
    }

    /// The peer URL this member will have after [`Member::renew`].
    pub fn next_peer_url(&self) -> String {
        format!("http://{}:{}", self.host.addr, PEER_PORT + self.generation + 1)
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the server in place).
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

    /// A power cut: kill -9, then every write not yet fsynced is lost. Needs a disk ([`Member::on_disk`]).
    pub fn crash(&mut self) -> std::io::Result<()> {
        self.kill();
        match &self.disk {
            Some(d) => {
                let lost = d.drop_unsynced();
                // In the member's log, so that a run shows the power cuts did lose something.
                let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
                use std::io::Write;
                writeln!(log, "keel-chaos: power cut: {} unsynced bytes in {} files lost", lost.bytes, lost.files)
            }
            None => Err(std::io::Error::other("no LazyFS mount under this member's data dir")),
        }
    }

    pub fn pause(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGSTOP);
            self.paused = true;
        }
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
