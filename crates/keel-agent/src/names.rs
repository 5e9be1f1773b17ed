//! How the agent names what it makes in containerd and on disk, and the labels that carry a container's
//! identity (pod, container name, attempt), so that the agent can rebuild its view from containerd alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const LABEL_POD_UID: &str = "io.keel.pod.uid";
pub const LABEL_POD_NAME: &str = "io.keel.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.keel.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.keel.container.name";
pub const LABEL_CONTAINER_ATTEMPT: &str = "io.keel.container.attempt";

/// A pod as the agent's names need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A pod's hostname, as the kubelet sets it: `spec.hostname` when given, else the pod's name cut to 63
/// characters (a DNS label).
pub fn pod_hostname(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let given = pod.spec.as_ref().and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty());
    let mut name = given.unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The containerd id of attempt `attempt` of container `container` of the pod with `uid`:
/// `k<16 hex>-<attempt>`. runc keeps its state per id under one directory for every containerd on the
/// machine, so ids are unique machine-wide (a hash of the pod uid), and within containerd's id grammar.
pub fn container_id(uid: &str, container: &str, attempt: u32) -> String {
    let mut h = Sha256::new();
    h.update(uid.as_bytes());
    h.update([0]);
    h.update(container.as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("k{hex}-{attempt}")
}

/// The attempt a container id names (the number after the last `-` of `k<hex>-<attempt>`), also from a
/// status's `containerd://<id>`.
pub fn attempt_of(container_id: &str) -> Option<u32> {
    let id = container_id.strip_prefix("containerd://").unwrap_or(container_id);
    id.rsplit_once('-')?.1.parse().ok()
}

/// The labels of a container.
pub fn container_labels(pod: &PodRef, container: &str, attempt: u32) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_UID.to_string(), pod.uid.clone()),
        (LABEL_POD_NAME.to_string(), pod.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), pod.namespace.clone()),
        (LABEL_CONTAINER_NAME.to_string(), container.to_string()),
        (LABEL_CONTAINER_ATTEMPT.to_string(), attempt.to_string()),
    ])
}

/// The pod's directory under the agent's data dir: its namespace files live in `ns/`.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

/// The log file of one attempt of a container, as the kubelet lays them out:
/// `<log-dir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log`.
pub fn log_path(log_dir: &Path, pod: &PodRef, container: &str, attempt: u32) -> PathBuf {
    log_dir.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid)).join(container).join(format!("{attempt}.log"))
}

/// The cgroup (relative to each hierarchy's root) of a container of this node.
pub fn cgroup_path(node: &str, container_id: &str) -> String {
    format!("/keel/{node}/{container_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_distinct_and_in_containerds_grammar() {
        let a = container_id("6f1c-uid", "web", 0);
        assert_eq!(a, container_id("6f1c-uid", "web", 0));
        assert_ne!(a, container_id("6f1c-uid", "web", 1));
        assert_ne!(a, container_id("6f1c-uid", "sidecar", 0));
        assert_ne!(a, container_id("other-uid", "web", 0));
        assert!(a.starts_with('k') && a.len() <= 76, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{a}");
        assert!(a.ends_with("-0"));
    }

    #[test]
    fn attempts_are_read_back_from_ids() {
        assert_eq!(attempt_of(&container_id("u", "app", 7)), Some(7));
        assert_eq!(attempt_of(&format!("containerd://{}", container_id("u", "app", 0))), Some(0));
        assert_eq!(attempt_of("containerd://"), None);
        assert_eq!(attempt_of("k123-x"), None);
    }

    #[test]
    fn a_pods_hostname_is_its_spec_hostname_or_its_name_as_a_label() {
        let pod = |name: &str, hostname: Option<&str>| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name}, "spec": {"containers": [], "hostname": hostname},
            }))
            .unwrap()
        };
        assert_eq!(pod_hostname(&pod("web-0", None)), "web-0");
        assert_eq!(pod_hostname(&pod("web-0", Some("db-0"))), "db-0");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(pod_hostname(&pod(&long, None)), "a".repeat(62), "cut to 63, no trailing dash");
    }

    #[test]
    fn log_paths_follow_the_kubelet_layout() {
        let pod = PodRef { namespace: "default".into(), name: "web-1".into(), uid: "u1".into() };
        assert_eq!(
            log_path(Path::new("/var/log/pods"), &pod, "app", 2),
            PathBuf::from("/var/log/pods/default_web-1_u1/app/2.log")
        );
    }
}
