//! Masters for end-to-end tests: `keel server` processes on an external store (stacked masters are a
//! [`crate::Cluster`] with [`crate::Options::masters`]), and stock `kubectl` against any master.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{free_port, keel_bin, Cluster};

/// One master's API as a client reaches it.
#[derive(Debug, Clone)]
pub struct Api {
    /// The admin kubeconfig the master wrote (any master's works against every master).
    pub kubeconfig: PathBuf,
    pub port: u16,
}

impl Api {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The same credentials against another master.
    pub fn at(&self, other: &Api) -> Api {
        Api { kubeconfig: self.kubeconfig.clone(), port: other.port }
    }

    /// A kube-rs client with the admin kubeconfig, as an operator connects.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("the admin kubeconfig reads");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("a client config");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// Runs the installed kubectl against this master, with `stdin` if given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(["--server", &self.url()]).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn kubectl (is it installed?)")?;
        if let Some(input) = stdin {
            child.stdin.take().context("kubectl stdin")?.write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// kubectl's stdout; an error with its stderr if it failed.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.kubectl(args, stdin)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A kubectl that runs until killed (watches), its stdout to `out`.
    pub fn kubectl_background(&self, args: &[&str], out: &std::path::Path) -> anyhow::Result<Child> {
        let file = std::fs::File::create(out)?;
        Ok(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--server", &self.url()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Waits until the master has written its kubeconfig and answers an authenticated request.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if self.kubeconfig.exists() {
                match self.kubectl(&["get", "namespace", "default", "-o", "name"], None) {
                    Ok(out) if out.status.success() => return Ok(()),
                    Ok(out) => last = String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("master on port {} not ready after {timeout:?}: {last}", self.port)
    }
}

/// `keel server token create --for <purpose> --print-join-command` (`master` or `node`), run with `api`'s
/// admin kubeconfig: the (`--join`, `--join-token`, `--join-ca-hash`) it prints.
pub fn join_command(api: &Api, purpose: &str) -> (String, String, String) {
    let out = Command::new(keel_bin())
        .args(["server", "token", "create", "--for", purpose, "--print-join-command", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let program = if purpose == "node" { "agent" } else { "server" };
    assert_eq!(words[..2], ["keel", program], "{line}");
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1].to_string();
    (after("--join"), after("--join-token"), after("--join-ca-hash"))
}

/// `kubectl <args> -o json` through `api`, parsed; panics (naming the command) when it fails.
pub fn json(api: &Api, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = api.ok(&all, None).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?} -o json: {e}: {out}"))
}

struct MasterProc {
    name: String,
    api_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// `keel server` processes on the external store of a [`Cluster`] of `keel kv` members.
pub struct ExternalMasters {
    masters: Vec<MasterProc>,
    store_endpoints: String,
    _dir: tempfile::TempDir,
}

impl ExternalMasters {
    /// Starts `n` masters on `store`'s members.
    pub fn start(store: &Cluster, n: usize) -> anyhow::Result<ExternalMasters> {
        let dir = tempfile::Builder::new().prefix("keel-test-masters-").tempdir()?;
        let store_endpoints = crate::urls(store).join(",");
        let masters = (1..=n)
            .map(|i| MasterProc {
                name: format!("master{i}"),
                api_port: free_port(),
                data_dir: dir.path().join(format!("master{i}")),
                log: dir.path().join(format!("master{i}.log")),
                child: None,
            })
            .collect();
        let mut m = ExternalMasters { masters, store_endpoints, _dir: dir };
        for i in 0..n {
            m.spawn(i)?;
        }
        Ok(m)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.masters[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let child = Command::new(keel_bin())
            .arg("server")
            .args(["--name", &m.name, "--store-endpoints", &self.store_endpoints])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--api-listen", &format!("127.0.0.1:{}", m.api_port)])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.masters[i].child = Some(child);
        Ok(())
    }

    pub fn api(&self, i: usize) -> Api {
        let m = &self.masters[i];
        Api { kubeconfig: m.data_dir.join("admin.kubeconfig"), port: m.api_port }
    }

    /// Stops master `i` cleanly (SIGTERM), waiting for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.masters[i].child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// The name master `i` runs as (`--name`).
    pub fn name(&self, i: usize) -> &str {
        &self.masters[i].name
    }

    /// kill -9 master `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.masters[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Master `i`'s whole log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.masters[i].log).unwrap_or_default()
    }

    fn log_tail(&self, i: usize) -> String {
        let s = std::fs::read_to_string(&self.masters[i].log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ExternalMasters {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.masters.len() {
                eprintln!("--- log of {} ---\n{}", self.masters[i].name, self.log_tail(i));
            }
        }
    }
}

/// A `keel hollow-nodes` process: Nodes without machines, their pods reported Running and Ready.
pub struct Hollow {
    child: Child,
    pub log: PathBuf,
}

impl Hollow {
    /// `count` nodes named `<prefix><i>` registered through `api`'s own kubeconfig (so through that master),
    /// with more `keel hollow-nodes` flags in `extra`.
    pub fn start(api: &Api, prefix: &str, count: usize, extra: &[&str]) -> anyhow::Result<Hollow> {
        let dir = api.kubeconfig.parent().context("kubeconfig dir")?;
        let log = dir.join(format!("hollow-{prefix}log"));
        let child = Command::new(keel_bin())
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(&api.kubeconfig)
            .args(["--prefix", prefix, "--count", &count.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn keel hollow-nodes")?;
        Ok(Hollow { child, log })
    }

    /// Stops it (kill -9): its nodes stop renewing their Leases.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- hollow nodes log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}
