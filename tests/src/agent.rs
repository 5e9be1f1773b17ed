//! Node agents for end-to-end tests: a containerd of the test's own (its own root, state and socket in a
//! short temp dir, the CRI plugin off), the busybox test image that `deploy/build-test-images.sh` makes from
//! busybox-static, and `keel agent` processes against a master. Needs root, containerd and runc (as CI has:
//! `deploy/install-deps.sh`). Dropping a [`Containerd`] kills what it ran (containers, shims, containerd),
//! unmounts everything under its directory and removes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::keel_bin;
use crate::masters::Api;

/// The containerd namespace the agents use in tests.
pub const NAMESPACE: &str = "keel";
/// The name the busybox test image is imported as.
pub const BUSYBOX: &str = "keel.test/busybox:1";

/// The status ("True", "False") of condition `type_` of an object as JSON; empty when it has none.
pub fn condition(object: &serde_json::Value, type_: &str) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Waits until pod `name` (namespace default) has the Ready condition; returns it as JSON.
pub async fn pod_ready(api: &Api, name: &str, within: Duration) -> serde_json::Value {
    crate::wait_for(&format!("pod {name} Ready"), within, || {
        let pod = crate::masters::json(api, &["get", "pod", name]);
        (condition(&pod, "Ready") == "True", pod)
    })
    .await
}

/// A pod of one container `app` running `sleep 3600` from `image` with this pull policy (grace period 1 s).
pub fn sleeping_pod(name: &str, image: &str, pull_policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: {pull_policy}\n    \
         command: [\"sleep\", \"3600\"]\n"
    )
}

/// A one-master cluster and an agent for node `agent-1` (more `keel agent` flags in `extra`) on a containerd
/// of its own with the busybox test image.
pub async fn cluster_with_agent(extra: &[&str]) -> (crate::Cluster, Api, Containerd, Agent) {
    let options = crate::Options { masters: true, ..Default::default() };
    let c = crate::Cluster::start_with(1, options).await.expect("a cluster starts");
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.expect("the master gets ready");
    let containerd = Containerd::start().await.expect("containerd starts");
    containerd.import_busybox().expect("the busybox image imports");
    let agent = Agent::start(&api, &containerd, "agent-1", extra).expect("the agent starts");
    (c, api, containerd, agent)
}

/// The repository's root (for its scripts).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_path_buf()
}

/// Builds the busybox OCI image tar into `dir` with `deploy/build-test-images.sh`.
pub fn build_busybox_tar(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new("bash").arg(repo_root().join("deploy/build-test-images.sh")).arg(dir).output()?;
    if !out.status.success() {
        bail!(
            "deploy/build-test-images.sh failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(dir.join("busybox.tar"))
}

/// A containerd of the test's own.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// Cgroup parents the agents on it use (`/keel/<node>`), removed on drop.
    nodes: Mutex<Vec<String>>,
}

impl Containerd {
    pub async fn start() -> anyhow::Result<Containerd> {
        if !nix_is_root() {
            bail!("the agent tests need root (containerd, runc, namespaces); CI runs them as root");
        }
        // Unix socket paths must stay under 108 bytes: a short directory in /tmp.
        let dir = PathBuf::from(format!("/tmp/kc-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("c.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{s}\"\n",
                d = dir.display(),
                s = socket.display()
            ),
        )?;
        let mut c = Containerd { dir, socket, child: None, log: PathBuf::new(), nodes: Mutex::default() };
        c.log = c.dir.join("containerd.log");
        c.spawn().await?;
        Ok(c)
    }

    /// Starts containerd on this root, state and socket and waits until it answers.
    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn containerd (apt install containerd runc: deploy/install-deps.sh)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket.exists() && self.ctr(&["version"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not start: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9 of containerd (the containers and their shims keep running), then a new containerd on the
    /// same root, state and socket after `down`.
    pub async fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        tokio::time::sleep(down).await;
        self.spawn().await
    }

    /// Runs `ctr` against this containerd in the agents' namespace.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new("ctr").arg("-a").arg(&self.socket).args(["-n", NAMESPACE]).args(args).output()?)
    }

    /// `ctr`'s stdout, or an error with its stderr.
    pub fn ctr_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ctr(args)?;
        if !out.status.success() {
            bail!("ctr {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports the busybox test image with `keel images import`.
    pub fn import_busybox(&self) -> anyhow::Result<()> {
        let tar = build_busybox_tar(&self.dir.join("images"))?;
        let out = Command::new(keel_bin())
            .args(["images", "import", "--containerd-socket"])
            .arg(&self.socket)
            .args(["--containerd-namespace", NAMESPACE])
            .arg(&tar)
            .output()?;
        if !out.status.success() {
            bail!("keel images import failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn kill_everything(&mut self) {
        // The containers' processes, then their shims (whose command line names our socket), then containerd.
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task");
        let mut ids = Vec::new();
        for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                ids.push((ns.file_name(), task.file_name()));
                if let Ok(pid) = std::fs::read_to_string(task.path().join("init.pid")) {
                    kill9(pid.trim());
                }
            }
        }
        let socket = self.socket.display().to_string();
        for proc_dir in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(proc_dir.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
                kill9(&proc_dir.file_name().to_string_lossy());
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // runc's state of our containers (one directory for every containerd on the machine).
        for (ns, id) in ids {
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(ns).join(id));
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn kill9(pid: &str) {
    let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
}

/// Unmounts everything mounted under `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = Command::new("umount").args(["-l", &t]).stderr(Stdio::null()).status();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- containerd log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill_everything();
        unmount_under(&self.dir);
        for node in self.nodes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            remove_cgroups(node);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes `/keel/<node>` (empty by now) from every cgroup hierarchy.
fn remove_cgroups(node: &str) {
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let dir = hierarchy.path().join("keel").join(node);
        if !dir.exists() {
            continue;
        }
        let mut dirs = vec![];
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        // The shared parent goes too once no agent uses it (rmdir fails on a non-empty cgroup).
        let _ = std::fs::remove_dir(hierarchy.path().join("keel"));
    }
}

/// A `keel agent` process.
pub struct Agent {
    child: Option<Child>,
    pub node: String,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log: PathBuf,
    /// The port of the agent's HTTPS endpoint (on 127.0.0.1).
    pub port: u16,
}

impl Agent {
    /// An agent for node `node` on `containerd`, joined to `api`'s cluster with a bootstrap token, with more
    /// `keel agent` flags in `extra`.
    pub fn start(api: &Api, containerd: &Containerd, node: &str, extra: &[&str]) -> anyhow::Result<Agent> {
        containerd.nodes.lock().unwrap_or_else(|e| e.into_inner()).push(node.to_string());
        let data_dir = containerd.dir.join(format!("agent-{node}"));
        let log_dir = containerd.dir.join(format!("logs-{node}"));
        let log = containerd.dir.join(format!("agent-{node}.log"));
        let port = crate::free_port();
        let mut agent = Agent { child: None, node: node.to_string(), data_dir, log_dir, log, port };
        agent.spawn(api, containerd, extra)?;
        Ok(agent)
    }

    fn spawn(&mut self, api: &Api, containerd: &Containerd, extra: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(keel_bin());
        command.arg("agent");
        // Agents join as a node does, with a bootstrap token, and use the node's own certificate from then
        // on (its kubeconfig in the data dir), unless `extra` says how they reach the API.
        if !extra.contains(&"--join") && !extra.contains(&"--kubeconfig") {
            let (urls, token, ca_hash) = crate::masters::join_command(api, "node");
            command.args(["--join", &urls, "--join-token", &token, "--join-ca-hash", &ca_hash]);
        }
        let child = command
            .args(["--node-name", &self.node, "--containerd-namespace", NAMESPACE])
            .arg("--containerd-socket")
            .arg(&containerd.socket)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--log-dir")
            .arg(&self.log_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            // The masters reach the agent on loopback here, not at the machine's own address.
            .args(if extra.contains(&"--node-ip") { &[][..] } else { &["--node-ip", "127.0.0.1"][..] })
            .args(extra)
            .env("RUST_LOG", "info,keel_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn keel agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the agent again after [`Agent::kill`], with the same flags as `extra`.
    pub fn restart(&mut self, api: &Api, containerd: &Containerd, extra: &[&str]) -> anyhow::Result<()> {
        self.kill();
        self.spawn(api, containerd, extra)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- agent {} log ---\n{}", self.node, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Debian's `docker-registry` on 127.0.0.1 and a free port, storing under a temp dir; killed on drop. Images
/// are pushed to it with skopeo (digests kept).
pub struct LocalRegistry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`: the registry part of image names, and the agent's `--insecure-registry`.
    pub addr: String,
}

impl LocalRegistry {
    pub async fn start() -> anyhow::Result<LocalRegistry> {
        let dir = tempfile::Builder::new().prefix("keel-registry-").tempdir()?;
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \"{addr}\"}}\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start docker-registry (deploy/install-deps.sh installs it)")?;
        let registry = LocalRegistry { child, _dir: dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {} within 20s", registry.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(registry)
    }

    /// Pushes the busybox test image as `<addr>/<name>` (e.g. `keel/busybox:1`); returns the full name.
    pub fn push_busybox(&self, scratch: &Path, name: &str) -> anyhow::Result<String> {
        let tar = build_busybox_tar(scratch)?;
        let full = format!("{}/{name}", self.addr);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", tar.display()))
            .arg(format!("docker://{full}"))
            .output()?;
        if !out.status.success() {
            bail!("skopeo copy to {full} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(full)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace made by the test (`ip netns add`), deleted on drop: a node's "host" network, so that
/// the pods' bridge and veths never touch the machine's own.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create() -> anyhow::Result<Netns> {
        let name = format!("keel-t-{:08x}", rand::random::<u32>());
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        if !out.status.success() {
            bail!("ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let netns = Netns { name };
        netns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace (`nsenter --net`, which leaves the mount namespace alone).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new("nsenter").arg(format!("--net={}", self.path().display())).args(args).output()?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The hosts of `deploy/hosts.sh` (each node's host network a namespace), under a prefix of this test
/// process's own; removed on drop.
pub struct Hosts {
    prefix: String,
}

impl Hosts {
    pub fn up(n: u32) -> Hosts {
        let prefix = format!("kt{}x", std::process::id() % 100_000);
        let hosts = Hosts { prefix };
        let out = hosts.script(&["up", &n.to_string()]);
        assert!(out.status.success(), "hosts.sh up: {}", String::from_utf8_lossy(&out.stderr));
        hosts
    }

    pub fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(repo_root().join("deploy/hosts.sh"))
            .args(args)
            .env("KEEL_HOSTS_PREFIX", &self.prefix)
            .output()
            .expect("bash runs")
    }

    /// The address of host `host` (`1`, `m2`, …).
    pub fn ip(&self, host: &str) -> String {
        String::from_utf8_lossy(&self.script(&["ip", host]).stdout).trim().to_string()
    }

    /// Runs a command on host `host` (in its network namespace).
    pub fn exec(&self, host: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}{host}", self.prefix))
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    /// The `keel agent` flags for host `i`.
    pub fn flags(&self, i: u32) -> Vec<String> {
        let out = self.script(&["env", &i.to_string()]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.script(&["down"]);
    }
}

/// Two nodes on hosts of `deploy/hosts.sh`: a cluster with agent-1 on host 1 ([`cluster_with_agent`]) and
/// agent-2, with a containerd of its own, on host 2. Fields drop in their order: agents and containerds
/// first, the hosts last.
pub struct TwoNodes {
    pub agent2: Agent,
    pub containerd2: Containerd,
    pub agent1: Agent,
    pub containerd1: Containerd,
    pub api: Api,
    pub cluster: crate::Cluster,
    pub hosts: Hosts,
}

impl TwoNodes {
    pub async fn start() -> TwoNodes {
        let hosts = Hosts::up(2);
        let (one, two) = (hosts.flags(1), hosts.flags(2));
        let one: Vec<&str> = one.iter().map(String::as_str).collect();
        let two: Vec<&str> = two.iter().map(String::as_str).collect();
        let (cluster, api, containerd1, agent1) = cluster_with_agent(&one).await;
        let containerd2 = Containerd::start().await.expect("containerd starts");
        containerd2.import_busybox().expect("the busybox image imports");
        let agent2 = Agent::start(&api, &containerd2, "agent-2", &two).expect("agent-2 starts");
        TwoNodes { agent2, containerd2, agent1, containerd1, api, cluster, hosts }
    }
}
