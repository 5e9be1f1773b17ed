//! Pod networking through CNI plugins, invoked directly per the CNI spec (1.0.0): each plugin of a network
//! configuration list is an executable in the bin dir named by its `type`, run with `CNI_*` environment
//! variables and its config on stdin; it answers with a result (or an error object) on stdout.
//!
//! ADD runs the plugins in order, feeding each the previous one's result as `prevResult`, and caches the final
//! result under `<cache dir>/<pod uid>.json` (as libcni does) so that DEL, run in reverse order, can hand it back
//! and an agent restart can learn the pod's IPs without running anything. With a host network namespace file
//! the plugins run inside it, so the bridge and the host ends of the veths live there, not in the agent's.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The pod's interface, made by the plugins inside its network namespace.
pub const IFNAME: &str = "eth0";

/// The `PATH` plugins get when the agent itself has none (they may run helpers such as `iptables`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long one plugin may run before it is killed and its call fails (the kubelet gives a whole sandbox
/// set-up its 2-minute runtime request timeout; one plugin gets less).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A CNI network configuration list and how to run it on this node.
#[derive(Debug, Clone)]
pub struct Network {
    bin_dir: PathBuf,
    conflist: Value,
    cache_dir: PathBuf,
    host_netns: Option<PathBuf>,
    timeout: Duration,
}

/// A pod's attachment to the network: its addresses (without prefix length) and the full ADD result.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub ips: Vec<IpAddr>,
    pub result: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {}", .bin_dir.display())]
    MissingPlugin { plugin: String, bin_dir: PathBuf },
    #[error("bad CNI network configuration: {0}")]
    BadConfig(String),
    #[error("bad pod uid {0:?} for CNI: letters, digits, '_', '.' and '-' only, starting with a letter or digit")]
    BadPodUid(String),
    #[error("{0}")]
    PluginFailed(Box<PluginFailure>),
    #[error("CNI {command} of pod {pod}: plugin {plugin} returned a bad result: {reason}")]
    BadResult { plugin: String, command: &'static str, pod: String, reason: String },
    #[error("bad CNI result cache {}: {reason}", .path.display())]
    BadCache { path: PathBuf, reason: String },
    #[error("CNI {command} of pod {pod}: plugin {plugin} did not finish within {after:?} and was killed")]
    Timeout { plugin: String, command: &'static str, pod: String, after: Duration },
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

/// A plugin that exited non-zero, with the error object it printed (`{code, msg, details}`) and its stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginFailure {
    pub plugin: String,
    /// ADD or DEL.
    pub command: &'static str,
    pub pod: String,
    /// The CNI error code (1-99 well-known, 100+ plugin-specific), when the plugin printed one.
    pub code: Option<i64>,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI {} of pod {}: plugin {} failed", self.command, self.pod, self.plugin)?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; details: {}", self.details)?;
        }
        if !self.stderr.is_empty() {
            write!(f, "; stderr: {}", self.stderr)?;
        }
        Ok(())
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> CniError {
    let context = context.into();
    move |error| CniError::Io { context, error }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

impl Network {
    /// A network from any configuration list (`{"cniVersion", "name", "plugins": [...]}`); results are cached
    /// in `cache_dir`.
    pub fn new(bin_dir: PathBuf, conflist: Value, cache_dir: PathBuf, host_netns: Option<PathBuf>) -> Network {
        Network { bin_dir, conflist, cache_dir, host_netns, timeout: PLUGIN_TIMEOUT }
    }

    /// How long each plugin may run ([`PLUGIN_TIMEOUT`] unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Network {
        self.timeout = timeout;
        self
    }

    /// keel's network for a node: one `bridge` plugin (bridge name given, isGateway true, ipMasq false,
    /// hairpinMode true) with `host-local` IPAM over `pod_cidr` (routes 0.0.0.0/0, dataDir
    /// `<state_dir>/ipam`), cniVersion 1.0.0, name "keel". Results are cached in `<state_dir>/results`.
    pub fn bridge(
        bin_dir: PathBuf,
        state_dir: &Path,
        bridge: &str,
        pod_cidr: &str,
        host_netns: Option<PathBuf>,
    ) -> Network {
        let conflist = bridge_conflist(bridge, pod_cidr, &state_dir.join("ipam"));
        Network::new(bin_dir, conflist, state_dir.join("results"), host_netns)
    }

    /// The network configuration list, as given to the plugins (less the injected fields).
    pub fn conflist(&self) -> &Value {
        &self.conflist
    }

    /// ADD for the pod: runs each plugin in order in the pod's network namespace `netns` (interface
    /// [`IFNAME`]), caches the final result and returns the pod's IPs. A failed ADD is followed by a DEL of
    /// every plugin (the spec's advice), whose own failure is only logged. Call [`Network::del`] before adding
    /// a pod again: IPAM refuses a second address for the same pod.
    pub async fn add(&self, pod_uid: &str, netns: &Path) -> Result<Attachment, CniError> {
        check_pod_uid(pod_uid)?;
        let types = plugin_types(&self.conflist)?;
        let mut prev: Option<Value> = None;
        for (index, plugin) in types.iter().enumerate() {
            let config = plugin_config(&self.conflist, index, prev.as_ref())?;
            let outcome = self
                .exec(plugin, Command::Add, pod_uid, Some(netns), &config)
                .await
                .and_then(|stdout| parse_result(plugin, Command::Add, pod_uid, &stdout));
            match outcome {
                Ok(result) => prev = Some(result),
                Err(e) => return Err(self.undo_add(pod_uid, netns, e).await),
            }
        }
        let Some(result) = prev else { return Err(CniError::BadConfig("no plugins".into())) };
        let last = types.last().map(String::as_str).unwrap_or_default();
        let ips = match parse_ips(&result) {
            Ok(ips) => ips,
            Err(reason) => {
                let e = CniError::BadResult {
                    plugin: last.to_string(),
                    command: Command::Add.as_str(),
                    pod: pod_uid.to_string(),
                    reason,
                };
                return Err(self.undo_add(pod_uid, netns, e).await);
            }
        };
        if let Err(e) = self.write_cache(pod_uid, &result) {
            return Err(self.undo_add(pod_uid, netns, e).await);
        }
        tracing::debug!(pod = pod_uid, ?ips, "CNI ADD done");
        Ok(Attachment { ips, result })
    }

    /// DEL for the pod, in reverse plugin order, with the cached ADD result as `prevResult` (none when there
    /// is no cache). `netns` is passed on only while it is still a network namespace: when the file is gone
    /// or unmounted, `CNI_NETNS` is left out (the spec allows that for DEL) and the plugins release what they
    /// hold outside it (the IPAM lease). Idempotent: a second DEL succeeds. Removes the cached result.
    pub async fn del(&self, pod_uid: &str, netns: Option<&Path>) -> Result<(), CniError> {
        check_pod_uid(pod_uid)?;
        let types = plugin_types(&self.conflist)?;
        let prev = match self.read_cache(pod_uid) {
            Ok(cached) => cached,
            Err(e) => {
                // DEL must still release what it can; the spec lets prevResult be omitted.
                tracing::warn!(pod = pod_uid, error = %e, "unreadable CNI result cache; DEL without prevResult");
                None
            }
        };
        let netns = netns.filter(|p| is_netns(p));
        self.del_all(&types, pod_uid, netns, prev.as_ref()).await?;
        match std::fs::remove_file(self.cache_path(pod_uid)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(format!("remove {}", self.cache_path(pod_uid).display()))(e)),
        }
    }

    /// The cached ADD result of the pod, if any (for an agent restart). An unreadable or corrupt cache is an
    /// error, not `None`.
    pub fn cached(&self, pod_uid: &str) -> Result<Option<Attachment>, CniError> {
        check_pod_uid(pod_uid)?;
        let Some(result) = self.read_cache(pod_uid)? else { return Ok(None) };
        let ips = parse_ips(&result).map_err(|reason| CniError::BadCache { path: self.cache_path(pod_uid), reason })?;
        Ok(Some(Attachment { ips, result }))
    }

    async fn del_all(
        &self,
        types: &[String],
        pod_uid: &str,
        netns: Option<&Path>,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        for (index, plugin) in types.iter().enumerate().rev() {
            let config = plugin_config(&self.conflist, index, prev)?;
            self.exec(plugin, Command::Del, pod_uid, netns, &config).await?;
        }
        Ok(())
    }

    /// DEL of every plugin after a failed ADD; returns the ADD's error.
    async fn undo_add(&self, pod_uid: &str, netns: &Path, error: CniError) -> CniError {
        tracing::warn!(pod = pod_uid, error = %error, "CNI ADD failed; running DEL");
        if let Ok(types) = plugin_types(&self.conflist) {
            let netns = Some(netns).filter(|p| is_netns(p));
            if let Err(e) = self.del_all(&types, pod_uid, netns, None).await {
                tracing::warn!(pod = pod_uid, error = %e, "CNI DEL after a failed ADD failed");
            }
        }
        error
    }

    /// Runs one plugin; its stdout on success.
    async fn exec(
        &self,
        plugin: &str,
        command: Command,
        pod_uid: &str,
        netns: Option<&Path>,
        config: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let missing = || CniError::MissingPlugin { plugin: plugin.to_string(), bin_dir: self.bin_dir.clone() };
        // `type` names a file in the bin dir, never a path.
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(missing());
        }
        let program = self.bin_dir.join(plugin);
        if !program.is_file() {
            return Err(missing());
        }
        let mut cmd = tokio::process::Command::new(&program);
        cmd.env_clear()
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", pod_uid)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(netns) = netns {
            cmd.env("CNI_NETNS", netns);
        }
        // Kept open until the child is spawned: the child joins the namespace through this descriptor.
        let host_netns = match &self.host_netns {
            Some(path) => Some(
                std::fs::File::open(path)
                    .map_err(io_error(format!("open host network namespace {}", path.display())))?,
            ),
            None => None,
        };
        if let Some(file) = &host_netns {
            let fd = file.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and only makes the setns system call
            // (async-signal-safe); `fd` stays open in the child until exec (the file outlives `spawn`).
            unsafe {
                cmd.pre_exec(move || {
                    let fd = BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
                });
            }
        }
        let context = || format!("run CNI plugin {} ({}) for pod {pod_uid}", program.display(), command.as_str());
        let mut child = cmd.spawn().map_err(io_error(context()))?;
        drop(host_netns);
        let stdin = serde_json::to_vec(config).expect("a JSON value serializes");
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let write = async move {
            let r = pipe.write_all(&stdin).await;
            drop(pipe); // EOF
            r
        };
        // A plugin that hangs is killed (the child is dropped with the timed-out future).
        let run = async { tokio::join!(write, child.wait_with_output()) };
        let (written, output) = tokio::time::timeout(self.timeout, run).await.map_err(|_| CniError::Timeout {
            plugin: plugin.to_string(),
            command: command.as_str(),
            pod: pod_uid.to_string(),
            after: self.timeout,
        })?;
        let output = output.map_err(io_error(context()))?;
        if !output.status.success() {
            return Err(plugin_error(plugin, command, pod_uid, output.status, &output.stdout, &output.stderr));
        }
        // A plugin that succeeded without reading all its config is odd but not an error of ours.
        if let Err(e) = written {
            tracing::debug!(plugin, error = %e, "CNI plugin did not read all of its config");
        }
        if !output.stderr.is_empty() {
            tracing::debug!(plugin, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "CNI plugin stderr");
        }
        Ok(output.stdout)
    }

    fn cache_path(&self, pod_uid: &str) -> PathBuf {
        self.cache_dir.join(format!("{pod_uid}.json"))
    }

    fn write_cache(&self, pod_uid: &str, result: &Value) -> Result<(), CniError> {
        let entry = json!({
            "containerId": pod_uid,
            "ifName": IFNAME,
            "networkName": self.conflist.get("name").cloned().unwrap_or(Value::Null),
            "result": result,
        });
        let path = self.cache_path(pod_uid);
        std::fs::create_dir_all(&self.cache_dir).map_err(io_error(format!("create {}", self.cache_dir.display())))?;
        // Written aside then renamed: a crash never leaves half a file.
        let tmp = self.cache_dir.join(format!(".{pod_uid}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&entry).expect("a JSON value serializes"))
            .map_err(io_error(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_error(format!("rename {} to {}", tmp.display(), path.display())))
    }

    /// The cached result of the pod's ADD.
    fn read_cache(&self, pod_uid: &str) -> Result<Option<Value>, CniError> {
        let path = self.cache_path(pod_uid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("read {}", path.display()))(e)),
        };
        let mut entry: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CniError::BadCache { path: path.clone(), reason: e.to_string() })?;
        match entry.get_mut("result").map(Value::take) {
            Some(result @ Value::Object(_)) => Ok(Some(result)),
            _ => Err(CniError::BadCache { path, reason: "no \"result\" object".into() }),
        }
    }
}

/// keel's bridge network configuration list.
pub fn bridge_conflist(bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "keel",
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir.to_string_lossy(),
            },
        }],
    })
}

/// The `type` of each plugin of the list, checked to be there.
fn plugin_types(conflist: &Value) -> Result<Vec<String>, CniError> {
    for key in ["name", "cniVersion"] {
        if !conflist.get(key).is_some_and(Value::is_string) {
            return Err(CniError::BadConfig(format!("the list has no {key:?} string")));
        }
    }
    let plugins = match conflist.get("plugins").and_then(Value::as_array) {
        Some(p) if !p.is_empty() => p,
        _ => return Err(CniError::BadConfig("the list has no \"plugins\"".into())),
    };
    plugins
        .iter()
        .enumerate()
        .map(|(i, p)| match p.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => Ok(t.to_string()),
            _ => Err(CniError::BadConfig(format!("plugin {i} has no \"type\""))),
        })
        .collect()
}

/// The config a plugin reads on stdin: its object from the list with the list's `name` and `cniVersion`
/// injected, and `prevResult` when given.
fn plugin_config(conflist: &Value, index: usize, prev: Option<&Value>) -> Result<Value, CniError> {
    let Some(Value::Object(plugin)) = conflist.get("plugins").and_then(|p| p.get(index)) else {
        return Err(CniError::BadConfig(format!("plugin {index} is not an object")));
    };
    let mut config = plugin.clone();
    for key in ["name", "cniVersion"] {
        config.insert(key.into(), conflist.get(key).cloned().unwrap_or(Value::Null));
    }
    match prev {
        Some(prev) => config.insert("prevResult".into(), prev.clone()),
        None => config.remove("prevResult"),
    };
    Ok(Value::Object(config))
}

/// A plugin's ADD output: a JSON object.
fn parse_result(plugin: &str, command: Command, pod_uid: &str, stdout: &[u8]) -> Result<Value, CniError> {
    let bad = |reason: String| CniError::BadResult {
        plugin: plugin.to_string(),
        command: command.as_str(),
        pod: pod_uid.to_string(),
        reason,
    };
    match serde_json::from_slice::<Value>(stdout) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad(format!("not a JSON object: {}", String::from_utf8_lossy(stdout).trim()))),
        Err(e) => Err(bad(format!("{e}: {:?}", String::from_utf8_lossy(stdout).trim()))),
    }
}

/// The addresses of a result's `ips[].address` ("10.244.1.5/24" → 10.244.1.5).
fn parse_ips(result: &Value) -> Result<Vec<IpAddr>, String> {
    let ips = match result.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(ips)) => ips,
        Some(other) => return Err(format!("\"ips\" is not a list: {other}")),
    };
    ips.iter()
        .map(|ip| {
            let address = ip.get("address").and_then(Value::as_str).ok_or_else(|| format!("no address in {ip}"))?;
            let (addr, prefix) = address.split_once('/').ok_or_else(|| format!("address {address:?} is not a CIDR"))?;
            let addr: IpAddr = addr.parse().map_err(|_| format!("bad IP in address {address:?}"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u8>() {
                Ok(p) if p <= max => Ok(addr),
                _ => Err(format!("bad prefix length in address {address:?}")),
            }
        })
        .collect()
}

/// A failed plugin's error: the `{code, msg, details}` object it printed on stdout, or its raw output.
fn plugin_error(
    plugin: &str,
    command: Command,
    pod_uid: &str,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> CniError {
    let parsed = serde_json::from_slice::<Value>(stdout).ok().filter(Value::is_object);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let (code, mut msg, details) = match &parsed {
        Some(e) => (e.get("code").and_then(Value::as_i64), text(e.get("msg")), text(e.get("details"))),
        None => (None, String::from_utf8_lossy(stdout).trim().to_string(), String::new()),
    };
    if msg.is_empty() {
        msg = format!("exited with {status} and no message");
    }
    CniError::PluginFailed(Box::new(PluginFailure {
        plugin: plugin.to_string(),
        command: command.as_str(),
        pod: pod_uid.to_string(),
        code,
        msg,
        details,
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }))
}

/// The CNI container id rule (also keeps the uid usable as a file name).
fn check_pod_uid(pod_uid: &str) -> Result<(), CniError> {
    let mut chars = pod_uid.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(CniError::BadPodUid(pod_uid.to_string()))
    }
}

/// Whether `path` is a mounted network namespace file (on nsfs), not a leftover placeholder.
fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as u64 == 0x6e73_6673)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;

    /// Tests that start processes hold this: a script written by one test while another forks could be held
    /// open by the fork's child ("text file busy" on exec).
    static SPAWN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[test]
    fn bridge_conflist_has_keels_shape() {
        let list = bridge_conflist("keel0", "10.244.1.0/24", Path::new("/var/lib/keel/cni/ipam"));
        let want = json!({
            "cniVersion": "1.0.0",
            "name": "keel",
            "plugins": [{
                "type": "bridge", "bridge": "keel0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.244.1.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": "/var/lib/keel/cni/ipam",
                },
            }],
        });
        assert_eq!(list, want);
        let net = Network::bridge("/usr/lib/cni".into(), Path::new("/d/cni"), "keel0", "10.244.1.0/24", None);
        assert_eq!(net.conflist()["plugins"][0]["ipam"]["dataDir"], "/d/cni/ipam");
        assert_eq!(net.cache_path("u1"), Path::new("/d/cni/results/u1.json"));
    }

    fn two_plugin_list() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "net1",
            "plugins": [
                {"type": "bridge", "name": "ignored", "cniVersion": "0.3.1", "bridge": "b0"},
                {"type": "portmap", "capabilities": {"portMappings": true}, "prevResult": {"stale": true}},
            ],
        })
    }

    #[test]
    fn plugin_config_injects_name_version_and_prev_result() {
        let list = two_plugin_list();
        assert_eq!(
            plugin_config(&list, 0, None).unwrap(),
            json!({"type": "bridge", "name": "net1", "cniVersion": "1.0.0", "bridge": "b0"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(
            plugin_config(&list, 1, Some(&prev)).unwrap(),
            json!({"type": "portmap", "name": "net1", "cniVersion": "1.0.0",
                   "capabilities": {"portMappings": true}, "prevResult": prev})
        );
        // A prevResult written in the list itself is never passed on.
        assert!(plugin_config(&list, 1, None).unwrap().get("prevResult").is_none());
        assert!(matches!(plugin_config(&list, 2, None), Err(CniError::BadConfig(_))));
    }

    #[test]
    fn plugin_types_checks_the_list() {
        assert_eq!(plugin_types(&two_plugin_list()).unwrap(), ["bridge", "portmap"]);
        let bad = [
            json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}),
            json!({"name": "n", "plugins": [{"type": "bridge"}]}),
            json!({"name": "n", "cniVersion": "1.0.0", "plugins": []}),
            json!({"name": "n", "cniVersion": "1.0.0"}),
            json!({"name": "n", "cniVersion": "1.0.0", "plugins": [{"bridge": "b0"}]}),
        ];
        for list in bad {
            assert!(matches!(plugin_types(&list), Err(CniError::BadConfig(_))), "{list}");
        }
    }

    #[test]
    fn parse_ips_reads_addresses_without_prefix() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/n"}],
            "ips": [
                {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0},
                {"address": "fd00:10:244::5/64", "interface": 0},
            ],
        });
        assert_eq!(
            parse_ips(&result).unwrap(),
            ["10.244.1.5".parse::<IpAddr>().unwrap(), "fd00:10:244::5".parse().unwrap()]
        );
        assert_eq!(parse_ips(&json!({"cniVersion": "1.0.0"})).unwrap(), Vec::<IpAddr>::new());
        for bad in [
            json!({"ips": "10.0.0.1/24"}),
            json!({"ips": [{"gateway": "10.0.0.1"}]}),
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": [{"address": "10.0.0.300/24"}]}),
            json!({"ips": [{"address": "10.0.0.1/33"}]}),
            json!({"ips": [{"address": "fd00::1/129"}]}),
        ] {
            assert!(parse_ips(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_result_wants_a_json_object() {
        assert!(parse_result("bridge", Command::Add, "u", br#"{"cniVersion":"1.0.0"}"#).is_ok());
        for bad in [&b""[..], b"[]", b"oops"] {
            let e = parse_result("bridge", Command::Add, "u", bad).unwrap_err();
            assert!(e.to_string().starts_with("CNI ADD of pod u: plugin bridge returned a bad result: "), "{e}");
        }
    }

    fn exit(code: i32) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn plugin_error_reads_the_error_object() {
        let stdout = br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range is full"}"#;
        let e = plugin_error("host-local", Command::Add, "u1", exit(1), stdout, b"a log line\n");
        match &e {
            CniError::PluginFailed(f) => {
                let PluginFailure { plugin, command, code, msg, details, stderr, .. } = f.as_ref();
                assert_eq!((plugin.as_str(), *command, *code), ("host-local", "ADD", Some(11)));
                assert_eq!(
                    (msg.as_str(), details.as_str(), stderr.as_str()),
                    ("failed to allocate", "range is full", "a log line")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "CNI ADD of pod u1: plugin host-local failed (code 11): failed to allocate; details: range is full; \
             stderr: a log line"
        );
        let e = plugin_error("bridge", Command::Del, "u1", exit(2), b"panic: oops\n", b"");
        assert_eq!(e.to_string(), "CNI DEL of pod u1: plugin bridge failed: panic: oops");
        let e = plugin_error("bridge", Command::Del, "u1", exit(2), b"", b"");
        assert_eq!(e.to_string(), "CNI DEL of pod u1: plugin bridge failed: exited with exit status: 2 and no message");
    }

    #[test]
    fn pod_uids_follow_the_container_id_rule() {
        for ok in ["0b8c5a4e-1f2d-4c3b-9a8e-7d6f5e4c3b2a", "pod-a", "a.b_c"] {
            assert!(check_pod_uid(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".", "..", "a/b", "a b", "../x"] {
            assert!(matches!(check_pod_uid(bad), Err(CniError::BadPodUid(_))), "{bad}");
        }
    }

    /// A fake plugin: records its stdin, its environment and the call, then behaves per `body`.
    fn fake_plugin(bin: &Path, log: &Path, name: &str, body: &str) {
        let script = format!(
            "#!/bin/sh\nn=${{0##*/}}\ncat > '{log}/'$n.$CNI_COMMAND.stdin\nenv > '{log}/'$n.$CNI_COMMAND.env\n\
             echo $n $CNI_COMMAND >> '{log}/calls'\n{body}\n",
            log = log.display()
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["bin", "log", "state"] {
                std::fs::create_dir(dir.path().join(sub)).unwrap();
            }
            let f = Fake { dir };
            let add_only = |out: &str| format!("[ $CNI_COMMAND = ADD ] && echo '{out}'; exit 0");
            f.plugin("one", &add_only(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24"}]}"#));
            f.plugin(
                "two",
                &add_only(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24"},{"address":"fd00::5/64"}]}"#),
            );
            f.plugin(
                "fail",
                "[ $CNI_COMMAND = DEL ] && exit 0\n\
                 echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no luck\",\"details\":\"none left\"}'\n\
                 echo boom >&2; exit 1",
            );
            f.plugin("garbage", "[ $CNI_COMMAND = ADD ] && echo 'not json'; exit 0");
            f
        }
        fn plugin(&self, name: &str, body: &str) {
            fake_plugin(&self.path("bin"), &self.path("log"), name, body);
        }
        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }
        fn network(&self, plugins: &[&str]) -> Network {
            let list = json!({
                "cniVersion": "1.0.0",
                "name": "fake",
                "plugins": plugins.iter().map(|p| json!({"type": p, "opt": p})).collect::<Vec<_>>(),
            });
            Network::new(self.path("bin"), list, self.path("state/results"), None)
        }
        fn calls(&self) -> Vec<String> {
            let calls = std::fs::read_to_string(self.path("log/calls")).unwrap_or_default();
            std::fs::remove_file(self.path("log/calls")).ok();
            calls.lines().map(String::from).collect()
        }
        fn stdin(&self, plugin: &str, command: &str) -> Value {
            serde_json::from_slice(&std::fs::read(self.path(&format!("log/{plugin}.{command}.stdin"))).unwrap())
                .unwrap()
        }
        fn env(&self, plugin: &str, command: &str) -> BTreeSet<String> {
            let env = std::fs::read_to_string(self.path(&format!("log/{plugin}.{command}.env"))).unwrap();
            env.lines().map(String::from).collect()
        }
    }

    #[tokio::test]
    async fn add_chains_results_and_del_runs_in_reverse_with_the_cached_result() {
        let _spawn = SPAWN.lock().await;
        let fake = Fake::new();
        let net = fake.network(&["one", "two"]);
        // A regular file, not a namespace: passed to ADD as it is, left out of DEL.
        let netns = fake.path("netns");
        std::fs::write(&netns, "").unwrap();

        let a = net.add("pod-1", &netns).await.unwrap();
        assert_eq!(a.ips, ["10.0.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        assert_eq!(fake.calls(), ["one ADD", "two ADD"]);
        let one_out = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24"}]});
        assert_eq!(
            fake.stdin("one", "ADD"),
            json!({"type": "one", "opt": "one", "name": "fake", "cniVersion": "1.0.0"})
        );
        assert_eq!(
            fake.stdin("two", "ADD"),
            json!({"type": "two", "opt": "two", "name": "fake", "cniVersion": "1.0.0", "prevResult": one_out})
        );
        let env = fake.env("one", "ADD");
        let cni: BTreeSet<&str> = env.iter().filter(|l| l.starts_with("CNI_")).map(String::as_str).collect();
        let bin = fake.path("bin");
        let want = [
            "CNI_COMMAND=ADD".to_string(),
            "CNI_CONTAINERID=pod-1".into(),
            "CNI_IFNAME=eth0".into(),
            format!("CNI_NETNS={}", netns.display()),
            format!("CNI_PATH={}", bin.display()),
        ];
        assert_eq!(cni, want.iter().map(String::as_str).collect());
        assert!(env.iter().any(|l| l.starts_with("PATH=")));
        assert!(!env.iter().any(|l| l.starts_with("HOME=") || l.starts_with("CARGO")), "{env:?}");

        assert_eq!(net.cached("pod-1").unwrap(), Some(a.clone()));
        let cache: Value =
            serde_json::from_slice(&std::fs::read(fake.path("state/results/pod-1.json")).unwrap()).unwrap();
        assert_eq!(cache["result"], a.result);
        assert_eq!(cache["containerId"], "pod-1");

        net.del("pod-1", Some(&netns)).await.unwrap();
        assert_eq!(fake.calls(), ["two DEL", "one DEL"]);
        for plugin in ["one", "two"] {
            assert_eq!(fake.stdin(plugin, "DEL")["prevResult"], a.result);
            let env = fake.env(plugin, "DEL");
            assert!(env.contains("CNI_COMMAND=DEL") && env.contains("CNI_CONTAINERID=pod-1"), "{env:?}");
            assert!(!env.iter().any(|l| l.starts_with("CNI_NETNS")), "{env:?}");
        }
        assert_eq!(net.cached("pod-1").unwrap(), None);
        assert!(!fake.path("state/results/pod-1.json").exists());

        // Again: still succeeds, now without prevResult.
        net.del("pod-1", None).await.unwrap();
        assert_eq!(fake.calls(), ["two DEL", "one DEL"]);
        assert!(fake.stdin("one", "DEL").get("prevResult").is_none());
    }

    #[tokio::test]
    async fn failed_add_is_undone_and_reported() {
        let _spawn = SPAWN.lock().await;
        let fake = Fake::new();
        let netns = fake.path("netns");
        let e = fake.network(&["one", "fail", "two"]).add("pod-2", &netns).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "CNI ADD of pod pod-2: plugin fail failed (code 11): no luck; details: none left; stderr: boom"
        );
        assert_eq!(fake.calls(), ["one ADD", "fail ADD", "two DEL", "fail DEL", "one DEL"]);
        assert!(!fake.path("state/results/pod-2.json").exists());

        let e = fake.network(&["one", "garbage"]).add("pod-3", &netns).await.unwrap_err();
        assert!(matches!(&e, CniError::BadResult { plugin, .. } if plugin == "garbage"), "{e}");
        assert_eq!(fake.calls(), ["one ADD", "garbage ADD", "garbage DEL", "one DEL"]);

        let e = fake.network(&["one", "nope"]).add("pod-4", &netns).await.unwrap_err();
        assert_eq!(e.to_string(), format!("CNI plugin \"nope\" not found in {}", fake.path("bin").display()));
        let e = fake.network(&["../bin/one"]).del("pod-4", None).await.unwrap_err();
        assert!(matches!(e, CniError::MissingPlugin { .. }), "{e}");

        let net = fake.network(&["one"]);
        std::fs::create_dir_all(fake.path("state/results")).unwrap();
        std::fs::write(fake.path("state/results/pod-5.json"), "{").unwrap();
        assert!(matches!(net.cached("pod-5"), Err(CniError::BadCache { .. })));
        // DEL goes on without the unreadable cache, and removes it.
        net.del("pod-5", None).await.unwrap();
        assert_eq!(net.cached("pod-5").unwrap(), None);
        assert!(matches!(net.add("../x", &netns).await, Err(CniError::BadPodUid(_))));
    }

    #[tokio::test]
    async fn a_plugin_that_hangs_is_killed_and_the_call_fails() {
        let _spawn = SPAWN.lock().await;
        let fake = Fake::new();
        fake.plugin(
            "hang",
            "[ $CNI_COMMAND = DEL ] && exit 0\necho $$ > \"$(dirname $0)/../log/hang.pid\"\nexec sleep 600",
        );
        let netns = fake.path("netns");
        let net = fake.network(&["one", "hang"]).with_timeout(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let e = net.add("pod-6", &netns).await.unwrap_err();
        assert!(matches!(&e, CniError::Timeout { plugin, command: "ADD", .. } if plugin == "hang"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
        // Undone as any failed ADD, and the plugin's process is gone.
        assert_eq!(fake.calls(), ["one ADD", "hang ADD", "hang DEL", "one DEL"]);
        let pid: i32 = std::fs::read_to_string(fake.path("log/hang.pid")).unwrap().trim().parse().unwrap();
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie that nobody waits for any more.
            if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the hanging plugin {pid} still runs");
    }

    // ---- the real plugins, in network namespaces of the test's own ----

    /// Namespace files mounted by the test; unmounted and removed on drop.
    struct NetnsFiles(Vec<PathBuf>);

    impl NetnsFiles {
        /// A new network namespace bind-mounted on `path`, made on a fresh thread (which inherits the test
        /// thread's namespaces, the root ones) so that no other thread changes namespace.
        fn create(&mut self, path: PathBuf) -> PathBuf {
            std::fs::write(&path, "").unwrap();
            self.0.push(path.clone());
            let target = path.clone();
            std::thread::spawn(move || -> nix::Result<()> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
            })
            .join()
            .unwrap()
            .unwrap();
            path
        }

        fn remove(path: &Path) {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(path);
        }
    }

    impl Drop for NetnsFiles {
        fn drop(&mut self) {
            for p in &self.0 {
                NetnsFiles::remove(p);
            }
        }
    }

    fn run(args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn run_ok(args: &[&str]) -> String {
        let (ok, text) = run(args);
        assert!(ok, "{args:?}: {text}");
        text
    }

    /// The interface names of a network namespace (`None`: the test's own, the root one).
    fn links(netns: Option<&Path>) -> BTreeSet<String> {
        let net = netns.map(|p| format!("--net={}", p.display()));
        let mut args = vec![];
        if let Some(net) = &net {
            args.extend(["nsenter", net.as_str()]);
        }
        args.extend(["ip", "-o", "link", "show"]);
        run_ok(&args)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }

    fn ping_command() -> Vec<&'static str> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        if std::env::split_paths(&path).any(|d| d.join("ping").is_file()) {
            vec!["ping"]
        } else {
            vec!["busybox", "ping"]
        }
    }

    #[tokio::test]
    async fn bridge_plugins_connect_pods_inside_a_private_host_namespace() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { nix::libc::geteuid() } == 0;
        if !root || !Path::new("/usr/lib/cni/bridge").is_file() {
            eprintln!("skipped: needs root and the CNI plugins in /usr/lib/cni");
            return;
        }
        let _spawn = SPAWN.lock().await;
        let root_links_before = links(None);
        let tmp = tempfile::tempdir().unwrap();
        // Dropped before `tmp`: unmounts the namespace files.
        let mut ns = NetnsFiles(Vec::new());
        let host = ns.create(tmp.path().join("host"));
        let pod_a = ns.create(tmp.path().join("pod-a"));
        let pod_b = ns.create(tmp.path().join("pod-b"));
        let state = tmp.path().join("cni");
        let net = Network::bridge("/usr/lib/cni".into(), &state, "keeltest0", "10.250.7.0/24", Some(host.clone()));

        let a = net.add("pod-a", &pod_a).await.unwrap();
        let b = net.add("pod-b", &pod_b).await.unwrap();
        assert_eq!((a.ips.len(), b.ips.len()), (1, 1), "{a:?} {b:?}");
        let (ip_a, ip_b) = (a.ips[0].to_string(), b.ips[0].to_string());
        assert_ne!(ip_a, ip_b);
        for ip in [&ip_a, &ip_b] {
            assert!(ip.starts_with("10.250.7.") && ip != "10.250.7.1", "{ip}");
            assert!(state.join("ipam/keel").join(ip).is_file(), "no lease file for {ip}");
        }
        for (pod, ip) in [(&pod_a, &ip_a), (&pod_b, &ip_b)] {
            let addr = run_ok(&["nsenter", &format!("--net={}", pod.display()), "ip", "-o", "addr", "show", "eth0"]);
            assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
        }
        let host_net = format!("--net={}", host.display());
        let bridge = run_ok(&["nsenter", &host_net, "ip", "-o", "addr", "show", "keeltest0"]);
        assert!(bridge.contains("inet 10.250.7.1/24"), "{bridge}");
        let mut ping = vec!["nsenter".to_string(), format!("--net={}", pod_a.display())];
        ping.extend(ping_command().into_iter().map(String::from));
        ping.extend(["-c1", "-W2", &ip_b].map(String::from));
        run_ok(&ping.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(net.cached("pod-a").unwrap(), Some(a));

        // Pod B's namespace is gone before its DEL; pod A's is still there.
        NetnsFiles::remove(&pod_b);
        assert!(!pod_b.exists());
        net.del("pod-b", Some(&pod_b)).await.unwrap();
        net.del("pod-a", Some(&pod_a)).await.unwrap();
        let eth0 = run(&["nsenter", &format!("--net={}", pod_a.display()), "ip", "link", "show", "eth0"]);
        assert!(!eth0.0, "eth0 still in pod A: {}", eth0.1);
        net.del("pod-b", None).await.unwrap();
        net.del("pod-a", Some(&pod_a)).await.unwrap();
        for ip in [&ip_a, &ip_b] {
            assert!(!state.join("ipam/keel").join(ip).exists(), "lease for {ip} not released");
        }
        assert_eq!(net.cached("pod-a").unwrap(), None);
        assert_eq!(net.cached("pod-b").unwrap(), None);
        // The host ends of both veths go (pod B's with its namespace, asynchronously).
        let mut host_links = links(Some(&host));
        for _ in 0..50 {
            if host_links.iter().all(|l| l == "lo" || l == "keeltest0") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            host_links = links(Some(&host));
        }
        assert_eq!(host_links, BTreeSet::from(["lo".to_string(), "keeltest0".to_string()]));

        drop(ns);
        drop(tmp);
        assert_eq!(links(None), root_links_before, "interfaces appeared or vanished in the root namespace");
    }
}
