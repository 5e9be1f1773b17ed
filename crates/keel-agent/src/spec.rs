//! The OCI runtime spec of one container of a pod, pure: the process (command and args over the image's
//! entrypoint and cmd, env, working dir, user), the pod's shared namespaces joined by path, resources as
//! cgroup limits, and securityContext basics. oci-spec's defaults are overridden where they differ from what
//! containerd gives a Kubernetes container (hostname, noNewPrivileges, capabilities).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use keel_api::quantity::Quantity;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::image::ImageConfig;
use crate::volumes::BindMount;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {container}: {message}")]
    Invalid { container: String, message: String },
    #[error("{0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Where a pod's shared namespaces are (bind-mounted files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    pub net: PathBuf,
    pub uts: PathBuf,
    pub ipc: PathBuf,
}

impl SandboxPaths {
    pub fn under(ns_dir: &Path) -> SandboxPaths {
        SandboxPaths { net: ns_dir.join("net"), uts: ns_dir.join("uts"), ipc: ns_dir.join("ipc") }
    }
}

/// containerd's default capability set for a container (the CRI plugin's and `ctr run`'s).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The process arguments as Kubernetes defines them: `command` replaces the image's Entrypoint (and drops its
/// Cmd), `args` replaces its Cmd.
pub fn arguments(container: &Container, image: &ImageConfig) -> Vec<String> {
    match (&container.command, &container.args) {
        (Some(command), args) if !command.is_empty() => command.iter().chain(args.iter().flatten()).cloned().collect(),
        (_, Some(args)) if !args.is_empty() => image.entrypoint.iter().chain(args).cloned().collect(),
        _ => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The environment: the image's, then HOSTNAME, then the container's own (`env` resolved by
/// [`crate::env::resolve`]); later names win, as in the kubelet.
pub fn environment(own: &[(String, String)], image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    set("HOSTNAME", hostname);
    for (k, v) in own {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn quantity(container: &Container, kind: &str, name: &str) -> Result<Option<Quantity>, SpecError> {
    let resources = container.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        _ => resources.and_then(|r| r.requests.as_ref()),
    };
    match map.and_then(|m| m.get(name)) {
        None => Ok(None),
        Some(q) => Quantity::parse(&q.0).map(Some).map_err(|e| SpecError::Invalid {
            container: container.name.clone(),
            message: format!("{kind}.{name} {:?}: {e}", q.0),
        }),
    }
}

/// The numeric user of an image's `User` ("1000", "1000:1000"); names need the rootfs' /etc/passwd (later).
fn image_user(user: &str) -> (Option<u32>, Option<u32>) {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    (u.parse().ok(), g.parse().ok())
}

/// What a container's spec is made from besides the pod and the image.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// The container's own environment, resolved.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<BindMount>,
}

/// The runtime spec for `container` of `pod`.
pub fn container_spec(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    extras: &Extras,
    sandbox: &SandboxPaths,
    cgroup: &str,
) -> Result<Spec, SpecError> {
    let invalid = |message: String| SpecError::Invalid { container: container.name.clone(), message };
    // $(VAR) in command and args refers to the container's environment.
    let args: Vec<String> = arguments(container, image).iter().map(|a| crate::env::expand(a, &extras.env)).collect();
    if args.is_empty() {
        return Err(invalid("no command: neither the container nor its image gives one".into()));
    }
    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let security = container.security_context.as_ref();
    let (image_uid, image_gid) = image_user(&image.user);
    let uid = security
        .and_then(|s| s.run_as_user)
        .or(pod_security.and_then(|s| s.run_as_user))
        .map(|u| u as u32)
        .or(image_uid)
        .unwrap_or(0);
    let gid = security
        .and_then(|s| s.run_as_group)
        .or(pod_security.and_then(|s| s.run_as_group))
        .map(|g| g as u32)
        .or(image_gid)
        .unwrap_or(0);
    let privileged = security.and_then(|s| s.privileged).unwrap_or(false);
    let mut caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    if let Some(c) = security.and_then(|s| s.capabilities.as_ref()) {
        // As containerd applies them: a drop of ALL first, then the adds, then the other drops.
        let all = |names: &Option<Vec<String>>| names.iter().flatten().any(|n| n.eq_ignore_ascii_case("ALL"));
        if all(&c.drop) {
            caps.clear();
        }
        if all(&c.add) {
            caps = all_capabilities();
        }
        for name in c.add.iter().flatten().filter(|n| !n.eq_ignore_ascii_case("ALL")) {
            caps.insert(capability(name).map_err(&invalid)?);
        }
        for name in c.drop.iter().flatten().filter(|n| !n.eq_ignore_ascii_case("ALL")) {
            caps.remove(&capability(name).map_err(&invalid)?);
        }
    }
    if privileged {
        caps = all_capabilities();
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let hostname = crate::names::pod_hostname(pod);
    let working_dir = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| (!image.working_dir.is_empty()).then(|| image.working_dir.clone()))
        .unwrap_or_else(|| "/".into());
    let no_new_privileges = security.and_then(|s| s.allow_privilege_escalation) == Some(false);
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(environment(&extras.env, image, &hostname))
        .cwd(working_dir)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .capabilities(capabilities)
        .no_new_privileges(no_new_privileges)
        .build()?;

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(limit) = quantity(container, "limits", "memory")? {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit.value()).build()?);
    }
    let cpu_request = quantity(container, "requests", "cpu")?;
    let cpu_limit = quantity(container, "limits", "cpu")?;
    if cpu_request.is_some() || cpu_limit.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        // A limit alone is also the request (as the API server defaults it).
        if let Some(m) = cpu_request.as_ref().or(cpu_limit.as_ref()).map(Quantity::milli_value) {
            cpu = cpu.shares((m * 1024 / 1000).max(2) as u64);
        }
        if let Some(m) = cpu_limit.as_ref().map(Quantity::milli_value) {
            cpu = cpu.quota((m * 100).max(1000)).period(100_000u64);
        }
        resources = resources.cpu(cpu.build()?);
    }

    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(security.and_then(|s| s.read_only_root_filesystem).unwrap_or(false))
            .build()?,
    ));
    spec.set_annotations(None);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &extras.mounts {
        let options =
            vec!["rbind".to_string(), "rprivate".to_string(), if m.read_only { "ro" } else { "rw" }.to_string()];
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.destination))
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));
    let linux = spec.linux_mut().as_mut().expect("the default spec has a linux section");
    let joined = |typ: LinuxNamespaceType, path: &Path| -> Result<LinuxNamespace, SpecError> {
        Ok(LinuxNamespaceBuilder::default().typ(typ).path(path.to_path_buf()).build()?)
    };
    linux.set_namespaces(Some(vec![
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid).build()?,
        LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount).build()?,
        joined(LinuxNamespaceType::Network, &sandbox.net)?,
        joined(LinuxNamespaceType::Uts, &sandbox.uts)?,
        joined(LinuxNamespaceType::Ipc, &sandbox.ipc)?,
    ]));
    linux.set_resources(Some(resources.build()?));
    linux.set_cgroups_path(Some(PathBuf::from(cgroup)));
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    Ok(spec)
}

fn capability(name: &str) -> Result<Capability, String> {
    let full = if name.to_ascii_uppercase().starts_with("CAP_") {
        name.to_ascii_uppercase()
    } else {
        format!("CAP_{}", name.to_ascii_uppercase())
    };
    serde_json::from_value(serde_json::Value::String(full.clone())).map_err(|_| format!("unknown capability {name:?}"))
}

fn all_capabilities() -> HashSet<Capability> {
    CAPABILITY_NAMES.iter().filter_map(|n| capability(n).ok()).collect()
}

const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pod(container: Value) -> (Pod, Container) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [container]},
        }))
        .unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: String::new(),
            user: String::new(),
            diff_ids: vec!["sha256:x".into()],
        }
    }

    fn spec_json(container: Value) -> Value {
        let (p, c) = pod(container);
        let extras = Extras {
            env: crate::env::resolve(&p, &c, &Default::default()).unwrap(),
            mounts: vec![BindMount { source: "/d/v".into(), destination: "/data".into(), read_only: true }],
        };
        let s =
            container_spec(&p, &c, &image(), &extras, &SandboxPaths::under(Path::new("/d/ns")), "/keel/n1/k1").unwrap();
        serde_json::to_value(s).unwrap()
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = ImageConfig { entrypoint: vec!["/ep".into()], cmd: vec!["c1".into()], ..image() };
        let c = |v: Value| pod(v).1;
        assert_eq!(arguments(&c(json!({"name": "a"})), &img), vec!["/ep", "c1"]);
        assert_eq!(arguments(&c(json!({"name": "a", "args": ["x"]})), &img), vec!["/ep", "x"]);
        assert_eq!(arguments(&c(json!({"name": "a", "command": ["sleep"]})), &img), vec!["sleep"]);
        assert_eq!(
            arguments(&c(json!({"name": "a", "command": ["sh"], "args": ["-c", "x"]})), &img),
            vec!["sh", "-c", "x"]
        );
    }

    #[test]
    fn a_plain_container_joins_the_pods_namespaces_with_containerds_defaults() {
        let s = spec_json(
            json!({"name": "app", "image": "i", "command": ["sleep", "$(A)"], "env": [{"name": "A", "value": "1"}, {"name": "PATH", "value": "/x"}]}),
        );
        assert!(s.get("hostname").is_none(), "{s}");
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
        assert_eq!(s["process"]["args"], json!(["sleep", "1"]));
        let data = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(
            data,
            &json!({"destination": "/data", "type": "bind", "source": "/d/v", "options": ["rbind", "rprivate", "ro"]})
        );
        assert_eq!(s["process"]["env"], json!(["PATH=/x", "HOSTNAME=web", "A=1"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(s["process"]["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert_eq!(
            s["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/d/ns/net"},
                   {"type": "uts", "path": "/d/ns/uts"}, {"type": "ipc", "path": "/d/ns/ipc"}])
        );
        assert_eq!(s["linux"]["cgroupsPath"], "/keel/n1/k1");
        assert!(s["linux"]["maskedPaths"].as_array().is_some_and(|m| !m.is_empty()));
    }

    #[test]
    fn resources_and_security_context_reach_the_spec() {
        let s = spec_json(json!({"name": "app", "image": "i",
            "resources": {"limits": {"memory": "16Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}},
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}));
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 16 * 1024 * 1024);
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(s["process"]["user"], json!({"uid": 1000, "gid": 2000}));
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["process"]["capabilities"]["bounding"], json!(["CAP_NET_BIND_SERVICE"]));
        let p = spec_json(json!({"name": "app", "image": "i", "securityContext": {"privileged": true}}));
        assert!(p["process"]["capabilities"]["bounding"].as_array().unwrap().len() > 30);
        assert!(p["linux"].get("maskedPaths").is_none());
    }

    #[test]
    fn a_bad_capability_or_quantity_is_an_error() {
        let (p, c) = pod(json!({"name": "app", "securityContext": {"capabilities": {"add": ["FLY"]}}}));
        let e = container_spec(&p, &c, &image(), &Extras::default(), &SandboxPaths::under(Path::new("/n")), "/c")
            .unwrap_err();
        assert!(e.to_string().contains("unknown capability \"FLY\""), "{e}");
    }
}
