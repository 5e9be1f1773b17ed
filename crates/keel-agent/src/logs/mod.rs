//! Containers' logs: the CRI line format ([`cri`]), the logger containerd's shim runs for each container
//! ([`writer`], `keel container-log`), and reading a container's log for a request ([`reader`], with the
//! choices of [`select`]). Each attempt of a container writes `<log dir>/<ns>_<pod>_<uid>/<container>/
//! <attempt>.log` (rotated to `<attempt>.log.1` …); which attempt a request reads is decided here from
//! the pod's status, as the kubelet decides it.

pub mod cri;
pub mod reader;
pub mod select;
pub mod writer;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::names::attempt_of;

/// Removes the log files of the attempt of one of the pod's containers that `container_id` names (a
/// removed container's logs are not needed: `previous` reads the attempt before the latest, which is
/// kept). Ids of containers no longer in the spec are left alone (their logs go with the pod).
pub fn remove_attempt(log_dir: &std::path::Path, pod: &Pod, container_id: &str) -> std::io::Result<()> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let Some(attempt) = attempt_of(container_id) else { return Ok(()) };
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    let name = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .find(|name| crate::names::container_id(uid, name, attempt) == container_id);
    let Some(name) = name else { return Ok(()) };
    let pod_ref = crate::names::PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid.to_string(),
    };
    let current = crate::names::log_path(log_dir, &pod_ref, name, attempt);
    for file in reader::files(&current) {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether the pod's spec has a container (or init container) of this name.
pub fn has_container(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == name))
}

fn status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|s| s.name == container)
}

/// Which attempt of `container` a log request reads, from the pod's status as the kubelet chooses
/// (`validateContainerLogStatus`): the previous instance's (the last termination) when `previous`; else
/// the running one, the terminated one, or the last terminated. The error is the kubelet's message (a 400).
pub fn choose_attempt(pod: &Pod, container: &str, previous: bool) -> Result<u32, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = status(pod, container)
        .ok_or_else(|| format!("container {container:?} in pod {pod_name:?} is not available"))?;
    let state = status.state.clone().unwrap_or_default();
    let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let last_attempt = last.and_then(|t| t.container_id.as_deref()).and_then(attempt_of);
    let current = status.container_id.as_deref().and_then(attempt_of);
    let terminated = || format!("container {container:?} in pod {pod_name:?} is terminated");
    if previous {
        return last_attempt
            .ok_or_else(|| format!("previous terminated container {container:?} in pod {pod_name:?} not found"));
    }
    if state.running.is_some() {
        return current.ok_or_else(|| format!("container {container:?} in pod {pod_name:?} is not available"));
    }
    if let Some(t) = &state.terminated {
        return t.container_id.as_deref().and_then(attempt_of).or(last_attempt).ok_or_else(terminated);
    }
    if last.is_some() {
        return last_attempt.ok_or_else(terminated);
    }
    let reason = state.waiting.and_then(|w| w.reason).unwrap_or_default();
    let why = match reason.as_str() {
        "ErrImagePull" => "image can't be pulled".to_string(),
        "ImagePullBackOff" => "trying and failing to pull image".to_string(),
        _ => reason,
    };
    Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: {why}"))
}

/// The attempt of `container` that runs now, by the pod's status.
pub fn running_attempt(pod: &Pod, container: &str) -> Option<u32> {
    let status = status(pod, container)?;
    status.state.as_ref()?.running.as_ref()?;
    status.container_id.as_deref().and_then(attempt_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::container_id;

    fn pod(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "init"}]},
            "status": {"containerStatuses": statuses},
        }))
        .unwrap()
    }

    fn id(attempt: u32) -> String {
        format!("containerd://{}", container_id("u", "app", attempt))
    }

    #[test]
    fn a_removed_attempts_logs_go_and_the_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(serde_json::json!([]));
        let pod_ref = crate::names::PodRef { namespace: "default".into(), name: "web".into(), uid: "u".into() };
        let log = |attempt| crate::names::log_path(dir.path(), &pod_ref, "app", attempt);
        std::fs::create_dir_all(log(0).parent().unwrap()).unwrap();
        for path in [log(0), writer::rotated(&log(0), 1), log(1)] {
            std::fs::write(path, "x").unwrap();
        }
        remove_attempt(dir.path(), &p, &container_id("u", "app", 0)).unwrap();
        assert!(!log(0).exists() && !writer::rotated(&log(0), 1).exists());
        assert!(log(1).exists());
        // Unknown containers and ids are no error.
        remove_attempt(dir.path(), &p, &container_id("u", "gone", 1)).unwrap();
        remove_attempt(dir.path(), &p, "not-an-id").unwrap();
        assert!(log(1).exists());
    }

    #[test]
    fn containers_and_init_containers_are_known() {
        let p = pod(serde_json::json!([]));
        assert!(has_container(&p, "app") && has_container(&p, "init") && !has_container(&p, "other"));
    }

    #[test]
    fn a_running_container_after_a_restart() {
        let p = pod(serde_json::json!([{
            "name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 1, "containerID": id(1),
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": id(0)}},
        }]));
        assert_eq!(choose_attempt(&p, "app", false), Ok(1));
        assert_eq!(choose_attempt(&p, "app", true), Ok(0));
        assert_eq!(running_attempt(&p, "app"), Some(1));
    }

    #[test]
    fn a_crash_looping_container_shows_its_last_run_both_ways() {
        let p = pod(serde_json::json!([{
            "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 2, "containerID": id(2),
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": id(2)}},
        }]));
        assert_eq!(choose_attempt(&p, "app", false), Ok(2));
        assert_eq!(choose_attempt(&p, "app", true), Ok(2));
        assert_eq!(running_attempt(&p, "app"), None);
    }

    #[test]
    fn no_previous_or_not_started_yet_are_the_kubelets_errors() {
        let p = pod(serde_json::json!([{
            "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }]));
        assert_eq!(
            choose_attempt(&p, "app", false),
            Err("container \"app\" in pod \"web\" is waiting to start: ContainerCreating".into())
        );
        assert_eq!(
            choose_attempt(&p, "app", true),
            Err("previous terminated container \"app\" in pod \"web\" not found".into())
        );
        assert_eq!(choose_attempt(&p, "init", false), Err("container \"init\" in pod \"web\" is not available".into()));
    }

    #[test]
    fn a_terminated_container() {
        let p = pod(serde_json::json!([{
            "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "containerID": id(0),
            "state": {"terminated": {"exitCode": 0, "containerID": id(0)}},
        }]));
        assert_eq!(choose_attempt(&p, "app", false), Ok(0));
    }
}
