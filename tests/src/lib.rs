//! Test kit for keel's end-to-end tests: real `keel kv` (or stacked `keel server`) processes on 127.0.0.1
//! with free ports and temporary data dirs, masters on an external store ([`masters`]), stock `etcdctl` and
//! `kubectl`, and gRPC clients of the etcd API. Everything a test starts is stopped and removed when its
//! [`Cluster`] (or [`masters::ExternalMasters`]) is dropped.

pub mod agent;
pub mod masters;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use tonic::transport::Channel;

/// The `keel` binary built with the tests (`KEEL_BIN` overrides).
pub fn keel_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEEL_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in <target>/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("keel");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p keel` (cargo test/nextest --workspace does)",
        bin.display()
    );
    bin
}

/// The ports [`free_port`] hands out: below Linux's ephemeral range (32768–60999), so that no outgoing
/// connection (the tests make many) can take one between the pick and the member's bind.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

/// Port locks this test process holds until it exits.
static HELD: Mutex<Vec<std::os::unix::net::UnixListener>> = Mutex::new(Vec::new());

/// Takes the lock of `port` among test processes (an abstract Unix socket named after it) and keeps it
/// until this process exits; false when another test process holds it.
fn lock_port(port: u16) -> Option<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let name = format!("keel-test-port-{port}");
    SocketAddr::from_abstract_name(name.as_bytes()).and_then(|a| UnixListener::bind_addr(&a)).ok()
}

/// A port on 127.0.0.1 that is free, and reserved for this test process until it exits: an abstract Unix
/// socket named after the port is held as a lock (no files to clean up), so concurrent test processes
/// never pick the same port.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};

    let span = TEST_PORTS.end - TEST_PORTS.start;
    let first = std::hash::RandomState::new().build_hasher().finish() as u16 % span;
    for i in 0..span {
        let port = TEST_PORTS.start + (first + i) % span;
        let Some(lock) = lock_port(port) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// Reserves a fixed port (one a script always uses) so that [`free_port`] in other test processes never
/// hands it out; false when it is taken, by a test process or anything else.
pub fn reserve_port(port: u16) -> bool {
    let Some(lock) = lock_port(port) else { return false };
    if TcpListener::bind(("127.0.0.1", port)).is_err() {
        return false;
    }
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
    true
}

/// The command lines of running processes that mention `text` (a test's temp dir: what it left behind).
pub fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains(text))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` until it holds, or fails with `what` and the last value seen.
pub async fn wait_for<T: std::fmt::Debug>(what: &str, within: Duration, mut check: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + within;
    loop {
        let (done, seen) = check();
        if done {
            return seen;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {within:?}; last seen {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub struct MemberProc {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// The Kubernetes API's port when members are stacked masters ([`Options::masters`]).
    pub api_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Started with `--initial-cluster-state existing` (added to a running cluster).
    pub joining: bool,
    /// Stopped with SIGSTOP ([`Cluster::pause`]) until [`Cluster::resume`].
    pub paused: bool,
    child: Option<Child>,
}

impl MemberProc {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
    /// Started, and not paused.
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// Options for the members a cluster starts.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub snapshot_count: Option<u64>,
    pub extra_args: Vec<String>,
    /// Environment for one member only: (member index, name, value).
    pub member_env: Vec<(usize, String, String)>,
    /// Run `keel server` (a master with its store member) instead of `keel kv`.
    pub masters: bool,
}

/// A store of `keel kv` processes.
pub struct Cluster {
    pub members: Vec<MemberProc>,
    pub dir: tempfile::TempDir,
    initial_cluster: String,
    options: Options,
}

impl Cluster {
    /// Starts `n` members and waits until they have a leader.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Self::start_with(n, Options::default()).await
    }

    pub async fn start_with(n: usize, options: Options) -> anyhow::Result<Cluster> {
        let mut c = Self::prepare(n, options)?;
        c.start_all().await?;
        Ok(c)
    }

    /// Spawns every member that is not running and waits until they have a leader.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if !self.members[i].is_running() {
                self.spawn(i)?;
            }
        }
        self.wait_leader(Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Allocates ports and data dirs for `n` members without starting them.
    pub fn prepare(n: usize, options: Options) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("keel-test-").tempdir()?;
        let members: Vec<MemberProc> = (1..=n)
            .map(|i| MemberProc {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                api_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                joining: false,
                paused: false,
                child: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        Ok(Cluster { members, dir, initial_cluster, options })
    }

    /// `keel kv restore <snapshot>` with member `i`'s flags: builds its data dir from a backup.
    pub fn restore(&self, i: usize, snapshot: &Path) -> anyhow::Result<Output> {
        let base = self.command(i);
        let mut cmd = Command::new(base.get_program());
        let mut args: Vec<std::ffi::OsString> = base.get_args().map(|a| a.to_owned()).collect();
        args.insert(1, "restore".into());
        args.insert(2, snapshot.as_os_str().to_owned());
        cmd.args(args);
        Ok(cmd.output()?)
    }

    /// The command line that starts member `i` (without spawning it).
    pub fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let mut cmd = Command::new(keel_bin());
        if self.options.masters {
            cmd.arg("server").args(["--api-listen", &format!("127.0.0.1:{}", m.api_port)]);
        } else {
            cmd.arg("kv");
        }
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url(), "--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url(), "--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", if m.joining { "existing" } else { "new" }]);
        if let Some(s) = self.options.snapshot_count {
            cmd.args(["--snapshot-count", &s.to_string()]);
        }
        cmd.args(&self.options.extra_args);
        cmd.env("RUST_LOG", "info,openraft=warn");
        for (member, k, v) in &self.options.member_env {
            if *member == i {
                cmd.env(k, v);
            }
        }
        cmd
    }

    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.members[i].log)?;
        let child = self
            .command(i)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", keel_bin().display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// A new member for this cluster (not started: add it with `etcdctl member add`, then [`Cluster::spawn`]);
    /// every member's `--initial-cluster` names it from now on, as an operator would update the flags.
    pub fn add_member(&mut self) -> usize {
        let i = self.members.len();
        let m = MemberProc {
            name: format!("m{}", i + 1),
            client_port: free_port(),
            peer_port: free_port(),
            api_port: free_port(),
            data_dir: self.dir.path().join(format!("m{}", i + 1)),
            log: self.dir.path().join(format!("m{}.log", i + 1)),
            joining: true,
            paused: false,
            child: None,
        };
        self.initial_cluster.push_str(&format!(",{}={}", m.name, m.peer_url()));
        self.members.push(m);
        i
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.members[i].paused = false;
    }

    /// SIGSTOP of member `i`: it holds its sockets but does nothing, as a machine that stalls.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-STOP")?;
        self.members[i].paused = true;
        Ok(())
    }

    /// SIGCONT of a paused member.
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-CONT")?;
        self.members[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) -> anyhow::Result<()> {
        let pid = self.members[i].child.as_ref().context("member not started")?.id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// Restarts a killed member with the same flags and data dir.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    pub fn endpoints(&self) -> String {
        self.members.iter().filter(|m| m.is_running()).map(|m| m.endpoint()).collect::<Vec<_>>().join(",")
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].is_running()).collect()
    }

    fn endpoint(&self, i: usize) -> anyhow::Result<tonic::transport::Endpoint> {
        Ok(Channel::from_shared(self.members[i].client_url())?.connect_timeout(Duration::from_secs(2)))
    }

    /// A gRPC channel to member `i` without a request deadline (for streams such as watches).
    pub async fn channel(&self, i: usize) -> anyhow::Result<Channel> {
        Ok(self.endpoint(i)?.connect().await?)
    }

    /// A gRPC KV client of member `i` (requests time out after 10 s).
    pub async fn kv(&self, i: usize) -> anyhow::Result<KvClient<Channel>> {
        Ok(KvClient::new(self.endpoint(i)?.timeout(Duration::from_secs(10)).connect().await?))
    }

    pub async fn maintenance(&self, i: usize) -> anyhow::Result<MaintenanceClient<Channel>> {
        Ok(MaintenanceClient::new(self.endpoint(i)?.timeout(Duration::from_secs(5)).connect().await?))
    }

    /// The index of the member every running member agrees leads, once they agree.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for i in self.running() {
                let st =
                    async { self.maintenance(i).await?.status(StatusRequest {}).await.map_err(anyhow::Error::from) }
                        .await;
                match st {
                    Ok(s) => {
                        let s = s.into_inner();
                        leaders.push(s.leader);
                        ids.push((s.header.map(|h| h.member_id).unwrap_or(0), i));
                    }
                    Err(_) => leaders.push(0),
                }
            }
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|&x| x == l) {
                    if let Some((_, i)) = ids.iter().find(|(id, _)| *id == l) {
                        return Ok(*i);
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.running().into_iter().map(|i| format!("--- member {i} ---\n{}", self.log_tail(i))).collect();
                bail!(
                    "no agreed leader after {timeout:?} (leaders seen: {leaders:x?}); the members' logs:\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs stock etcdctl (API v3) against `endpoints`.
    pub fn etcdctl_at(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        etcdctl(endpoints, args, stdin)
    }

    /// Every key-value of the store as member `i` has it, read locally (serializable).
    pub async fn dump(&self, i: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut kv = self.kv(i).await?;
        let r = kv
            .range(RangeRequest { key: vec![0], range_end: vec![0], serializable: true, ..Default::default() })
            .await?
            .into_inner();
        Ok(r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    /// The store revision member `i` has applied.
    pub async fn revision(&self, i: usize) -> anyhow::Result<i64> {
        let s = self.maintenance(i).await?.status(StatusRequest {}).await?.into_inner();
        Ok(s.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Waits until every running member has applied the same revision.
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut revs = Vec::new();
            for i in self.running() {
                revs.push(self.revision(i).await.unwrap_or(-1));
            }
            if !revs.is_empty() && revs[0] > 0 && revs.iter().all(|r| *r == revs[0]) {
                return Ok(revs[0]);
            }
            if Instant::now() > deadline {
                bail!("members did not converge: revisions {revs:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stacked master `i`'s API, as its admin kubeconfig reaches it.
    pub fn api(&self, i: usize) -> masters::Api {
        let m = &self.members[i];
        masters::Api { kubeconfig: m.data_dir.join("admin.kubeconfig"), port: m.api_port }
    }

    /// The tail of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let s = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.members.len() {
                eprintln!("--- log of {} ---\n{}", self.members[i].name, self.log_tail(i));
            }
        }
    }
}

/// Runs stock etcdctl (API v3) against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    use std::io::Write;
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--command-timeout=15s", "--dial-timeout=5s"])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("etcdctl is not installed (deploy/install-deps.sh installs it)")?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// etcdctl's stdout, failing with its stderr when it did not succeed.
pub fn ok_stdout(out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        return Err(anyhow!(
            "etcdctl failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Puts `key`=`value` through member `i`.
pub async fn put(c: &Cluster, i: usize, key: &str, value: &str) -> anyhow::Result<i64> {
    let r = c
        .kv(i)
        .await?
        .put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
        .await?
        .into_inner();
    Ok(r.header.map(|h| h.revision).unwrap_or(0))
}

/// Puts `key`=`value` through member `i`, trying again (a few times, on the next member) when the store answers
/// Unavailable, as during an election that a loaded machine can cause. A retried put may have taken effect
/// twice: callers must not count revisions.
pub async fn put_retrying(c: &Cluster, i: usize, key: &str, value: &str) -> anyhow::Result<i64> {
    let mut attempt = 0;
    loop {
        match put(c, (i + attempt) % c.members.len(), key, value).await {
            Err(e)
                if attempt < 20
                    && e.downcast_ref::<tonic::Status>().is_some_and(|s| s.code() == tonic::Code::Unavailable) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

/// Acknowledged writes (key → value) and when each was acknowledged.
#[derive(Default)]
pub struct Acked {
    pub writes: BTreeMap<String, String>,
    pub times: Vec<Instant>,
}

/// Starts `writers` clients that put unique keys until `stop`, each on its own member at first and moving to
/// the next member whenever a request fails (its outcome unknown, that key is not counted).
pub fn write_loop(
    urls: Vec<String>,
    writers: usize,
    prefix: &str,
    stop: Instant,
) -> (Arc<Mutex<Acked>>, tokio::task::JoinHandle<()>) {
    let acked: Arc<Mutex<Acked>> = Default::default();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (acked, urls, prefix) = (acked.clone(), urls.clone(), prefix.to_string());
        tasks.spawn(async move {
            let mut member = w % urls.len();
            let mut n = 0u64;
            while Instant::now() < stop {
                let key = format!("{prefix}/{w}/{n:06}");
                let value = format!("v{n}");
                n += 1;
                let res = async {
                    let ch = tonic::transport::Channel::from_shared(urls[member].clone())?
                        .connect_timeout(Duration::from_millis(500))
                        .timeout(Duration::from_secs(10))
                        .connect()
                        .await?;
                    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::new(ch);
                    kv.put(PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() })
                        .await?;
                    anyhow::Ok(())
                }
                .await;
                match res {
                    Ok(()) => {
                        let mut a = acked.lock().unwrap();
                        a.writes.insert(key, value);
                        a.times.push(Instant::now());
                    }
                    Err(_) => {
                        member = (member + 1) % urls.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    // Aborting `all` drops the set, which aborts every writer: a writer left running would keep
    // acknowledging writes while a test compares members.
    let all = tokio::spawn(async move {
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
    });
    (acked, all)
}

pub fn urls(c: &Cluster) -> Vec<String> {
    c.members.iter().map(|m| m.client_url()).collect()
}

/// Every acknowledged write is present, with its value, on member `i`.
pub async fn assert_has_all(c: &Cluster, i: usize, acked: &BTreeMap<String, String>) {
    let dump: BTreeMap<String, String> = c
        .dump(i)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|(k, v)| dump.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    assert!(
        missing.is_empty(),
        "member {} lost {} of {} acknowledged writes, e.g. {:?}",
        c.members[i].name,
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
