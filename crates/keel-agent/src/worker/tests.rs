//! The worker's observe → plan → act glue, without root: a fake runtime and a fake pod network (the two
//! traits' in-memory doubles) and an API that records what it is sent.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::*;
use crate::image::ImageConfig;
use crate::runtime::ExecOutput;
use crate::sync::{ContainerState, ObservedContainer};

/// Containers in memory: a start makes a running one, a signal ends it (128 + the signal), and every call
/// is logged in order.
#[derive(Default)]
struct FakeRuntime {
    containers: Mutex<BTreeMap<String, ObservedContainer>>,
    calls: Mutex<Vec<String>>,
    /// The exit code of every exec (a hook's command).
    exec_code: Mutex<i32>,
}

impl FakeRuntime {
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn exit(&self, id: &str, code: i32) {
        if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
            c.state = ContainerState::Exited { code, finished_at: Some(jiff::Timestamp::now()) };
        }
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn containers(&self, pod_uid: Option<&str>) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let all = self.containers.lock().unwrap();
        Ok(all.values().filter(|c| pod_uid.is_none_or(|u| c.pod_uid == u)).cloned().collect())
    }

    async fn image(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Ok(Some(ImageInfo {
            name: name.to_string(),
            digest: "sha256:0123".into(),
            config: ImageConfig { cmd: vec!["sh".into()], ..ImageConfig::default() },
            chain_id: "sha256:4567".into(),
        }))
    }

    async fn pull(&self, _registry: &Registry, name: &str) -> Result<ImageInfo, RuntimeError> {
        Ok(self.image(name).await?.expect("every image is present"))
    }

    async fn create_start(
        &self,
        id: &str,
        labels: HashMap<String, String>,
        image: &ImageInfo,
        _spec: &oci_spec::runtime::Spec,
        _stdio: &str,
    ) -> Result<(), RuntimeError> {
        self.log(format!("start {id}"));
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let container = ObservedContainer {
            id: id.to_string(),
            pod_uid: label(names::LABEL_POD_UID),
            name: label(names::LABEL_CONTAINER_NAME),
            attempt: label(names::LABEL_CONTAINER_ATTEMPT).parse().unwrap_or(0),
            image: image.name.clone(),
            created_at: Some(jiff::Timestamp::now()),
            state: ContainerState::Running,
            oom_killed: false,
            probes: Default::default(),
        };
        self.containers.lock().unwrap().insert(id.to_string(), container);
        Ok(())
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        self.log(format!("kill {id} {signal}"));
        self.exit(id, 128 + signal as i32);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("remove {id}"));
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }

    async fn exec_sync(
        &self,
        id: &str,
        args: Vec<String>,
        _timeout: Duration,
        _scratch: &Path,
    ) -> Result<ExecOutput, RuntimeError> {
        self.log(format!("exec {id} {}", args.join(" ")));
        Ok(ExecOutput { code: Some(*self.exec_code.lock().unwrap()), output: String::new() })
    }
}

/// Pods attached in memory, each given the next address of 10.244.1.0/24.
#[derive(Default)]
struct FakeNetwork {
    attached: Mutex<BTreeMap<String, IpAddr>>,
    calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PodNetwork for FakeNetwork {
    fn ready(&self, uid: &str) -> Result<bool, NetworkError> {
        Ok(self.attached.lock().unwrap().contains_key(uid))
    }

    fn addresses(&self, uid: &str) -> Result<Option<Vec<IpAddr>>, NetworkError> {
        Ok(self.attached.lock().unwrap().get(uid).map(|ip| vec![*ip]))
    }

    async fn ensure(&self, uid: &str, hostname: &str) -> Result<(), NetworkError> {
        self.calls.lock().unwrap().push(format!("ensure {uid} {hostname}"));
        let mut attached = self.attached.lock().unwrap();
        let next = attached.len() as u8 + 2;
        attached.entry(uid.to_string()).or_insert(IpAddr::from([10, 244, 1, next]));
        Ok(())
    }

    async fn remove(&self, uid: &str) -> Result<(), NetworkError> {
        self.calls.lock().unwrap().push(format!("remove {uid}"));
        self.attached.lock().unwrap().remove(uid);
        Ok(())
    }
}

/// What the API was sent: (method, path and query, JSON body).
type Requests = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A client whose API answers every request with an object of the kind its path names, and records it.
fn recording_client() -> (Client, Requests) {
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().push((method, path.clone(), body));
            let answer = if path.contains("/events") {
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {}})
            } else {
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}})
            };
            let response = http::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .expect("a response");
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    (Client::new(service, "default"), requests)
}

fn config(dir: &Path) -> Config {
    Config {
        node_name: "n1".into(),
        node_ip: "10.200.0.11".into(),
        pod_cidr: Some("10.244.1.0/24".into()),
        cni_bin_dir: dir.join("cni-bin"),
        cni_bridge: "keel0".into(),
        cni_netns: None,
        insecure_registries: vec![],
        containerd_socket: dir.join("containerd.sock"),
        containerd_namespace: "keel".into(),
        data_dir: dir.join("data"),
        log_dir: dir.join("logs"),
        container_logger: None,
        log_max_bytes: 1 << 20,
        log_max_files: 2,
        cpu: "2".into(),
        memory: "4Gi".into(),
        max_pods: 110,
        labels: BTreeMap::new(),
        settings: sync::Settings::default(),
        resync: Duration::from_secs(10),
        housekeeping_interval: Duration::from_secs(10),
        listen: "127.0.0.1:0".parse().unwrap(),
        client_ca: vec![],
        dns: None,
        services: None,
    }
}

struct Node {
    shared: Arc<Shared>,
    runtime: Arc<FakeRuntime>,
    network: Arc<FakeNetwork>,
    requests: Requests,
    _dir: tempfile::TempDir,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (client, requests) = recording_client();
    let runtime = Arc::new(FakeRuntime::default());
    let network = Arc::new(FakeNetwork::default());
    let shared = Arc::new(Shared::new(client, runtime.clone(), network.clone(), config(dir.path())));
    Node { shared, runtime, network, requests, _dir: dir }
}

impl Node {
    /// The requests whose method is `method` and whose path contains `path`, with their bodies.
    fn sent(&self, method: &str, path: &str) -> Vec<Value> {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|(m, p, _)| m == method && p.contains(path)).map(|(_, _, b)| b.clone()).collect()
    }

    /// The reasons of the events recorded so far (they are written in the background).
    async fn event_reasons(&self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.sent("POST", "/events").iter().map(|e| e["reason"].as_str().unwrap_or_default().to_string()).collect()
    }
}

fn pod(lifecycle: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "5"},
        "spec": {
            "nodeName": "n1",
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "busybox", "lifecycle": lifecycle}],
        },
    }))
    .unwrap()
}

/// One sync as the worker's loop makes it.
async fn sync(node: &Node, pod: &Pod, memory: &mut Memory, reported: &mut Option<PodStatus>) {
    sync_pod(&node.shared, pod, memory, reported).await.expect("the sync works");
}

#[tokio::test]
async fn a_pod_is_attached_started_reported_and_torn_down_after_its_deletion() {
    let node = node();
    let pod = pod(json!({"preStop": {"exec": {"command": ["sh", "-c", "sleep 1"]}}}));
    let (mut memory, mut reported) = (Memory::default(), None);
    sync(&node, &pod, &mut memory, &mut reported).await;

    // Attached first, then its one container started, and its status says so with the pod's address.
    let id = names::container_id("u1", "app", 0);
    assert_eq!(*node.network.calls.lock().unwrap(), ["ensure u1 web"]);
    assert_eq!(node.runtime.calls(), [format!("start {id}")]);
    let status = reported.clone().expect("a status was reported");
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.1.2"));
    assert_eq!(status.host_ip.as_deref(), Some("10.200.0.11"));
    let app = &status.container_statuses.as_ref().expect("container statuses")[0];
    assert!(app.state.as_ref().and_then(|s| s.running.as_ref()).is_some(), "{app:?}");
    assert_eq!(app.container_id.as_deref(), Some(format!("containerd://{id}").as_str()));
    let patches = node.sent("PATCH", "/namespaces/default/pods/web/status");
    assert_eq!(patches.last().map(|p| &p["status"]["podIP"]), Some(&json!("10.244.1.2")));
    assert_eq!(node.event_reasons().await, ["Pulled", "Created", "Started"]);

    // Nothing changed (the watch brought the status back, as the API stored it): a second sync does nothing
    // and reports nothing again.
    let mut pod = pod;
    pod.status = serde_json::from_value(patches.last().expect("a status patch")["status"].clone()).unwrap();
    let reported_before = node.sent("PATCH", "/status").len();
    sync(&node, &pod, &mut memory, &mut reported).await;
    assert_eq!(node.runtime.calls().len(), 1, "{:?}", node.runtime.calls());
    assert_eq!(node.sent("PATCH", "/status").len(), reported_before);

    // Deleted: the preStop hook runs before SIGTERM; once the container has stopped it is removed, the
    // pod detached, and the pod deleted for good (grace 0, on the uid's precondition).
    let mut deleting = pod.clone();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(30);
    sync(&node, &deleting, &mut memory, &mut reported).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node.runtime.calls()[1..], [format!("exec {id} sh -c sleep 1"), format!("kill {id} 15")]);
    sync(&node, &deleting, &mut memory, &mut reported).await;
    assert_eq!(node.runtime.calls()[3..], [format!("remove {id}")]);
    assert_eq!(node.network.calls.lock().unwrap()[1..], ["remove u1"]);
    let deletes = node.sent("DELETE", "/namespaces/default/pods/web");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["gracePeriodSeconds"], 0);
    assert_eq!(deletes[0]["preconditions"]["uid"], "u1");
}

#[tokio::test]
async fn a_post_start_hook_runs_after_the_start_and_its_failure_kills_the_container() {
    let node = node();
    let pod = pod(json!({"postStart": {"exec": {"command": ["touch", "/ready"]}}}));
    let (mut memory, mut reported) = (Memory::default(), None);
    sync(&node, &pod, &mut memory, &mut reported).await;
    let id = names::container_id("u1", "app", 0);
    assert_eq!(node.runtime.calls(), [format!("start {id}"), format!("exec {id} touch /ready")]);
    assert!(!node.event_reasons().await.contains(&"FailedPostStartHook".to_string()));

    // A hook that fails: the container is killed (and restarts after the back-off, as a crashed one).
    let node = self::node();
    *node.runtime.exec_code.lock().unwrap() = 1;
    let (mut memory, mut reported) = (Memory::default(), None);
    sync(&node, &pod, &mut memory, &mut reported).await;
    // The first restart comes at once, as the kubelet's; the next one waits for the back-off.
    let retry = names::container_id("u1", "app", 1);
    assert_eq!(
        node.runtime.calls(),
        [
            format!("start {id}"),
            format!("exec {id} touch /ready"),
            format!("kill {id} 9"),
            format!("start {retry}"),
            format!("exec {retry} touch /ready"),
            format!("kill {retry} 9")
        ]
    );
    let events = node.event_reasons().await;
    assert!(events.contains(&"FailedPostStartHook".to_string()), "{events:?}");
    sync(&node, &pod, &mut memory, &mut reported).await;
    assert_eq!(node.runtime.calls().len(), 6);
    let app = &reported.expect("a status").container_statuses.expect("statuses")[0];
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref());
    assert_eq!(waiting, Some("CrashLoopBackOff"), "{app:?}");
    assert!(app.last_state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 137), "{app:?}");
}
