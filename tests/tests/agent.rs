//! The node agent end to end, as root with a real containerd of the test's own: `keel agent` registers its
//! Node and renews its Lease; a pod the scheduler binds to it runs as a containerd task in the pod's own
//! namespaces (hostname = pod name) and is reported Running and Ready; a crashing container restarts with a
//! growing back-off (CrashLoopBackOff); a restarted agent adopts the running containers; restartPolicy Never ends the pod Failed with the exit code; a memory
//! limit ends in OOMKilled; init containers run in order first; two containers share localhost and volumes,
//! with env and files from ConfigMaps and Secrets, and get an address over CNI (in a network namespace the test
//! made as the node's host); deleting a
//! pod stops its container (SIGTERM, SIGKILL after the grace period) and leaves nothing behind in containerd
//! or on disk. Containers' logs are CRI lines written by the shim's logger, and stock `kubectl logs` (-c,
//! --tail, --timestamps, --limit-bytes, -f, --previous) reads them through the master and the agent's
//! HTTPS endpoint. securityContext (user, group, read-only root, capabilities) and CPU/memory limits reach
//! the containers and their cgroups; secret volumes are on tmpfs.

use std::time::{Duration, Instant};

use keel_tests::agent::{cluster_with_agent, condition, Netns, BUSYBOX};
use keel_tests::masters::{json, Api};
use keel_tests::wait_for;
use serde_json::Value;

fn pod_yaml(name: &str, restart_policy: &str, command: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {command:?}]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_runs_on_containerd_and_its_deletion_leaves_nothing_behind() {
    let (_c, api, containerd, mut agent) = cluster_with_agent(&[]).await;

    // The node registers Ready, with containerd's version, and holds a Lease.
    let node = wait_for("node Ready", Duration::from_secs(30), || {
        let out = api.kubectl(&["get", "node", "agent-1", "-o", "json"], None).unwrap();
        let node: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (condition(&node, "Ready") == "True", node)
    })
    .await;
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap();
    assert!(runtime.starts_with("containerd://1."), "{runtime}");
    assert_eq!(node["status"]["addresses"][0], serde_json::json!({"type": "InternalIP", "address": "127.0.0.1"}));
    assert!(node["status"]["allocatable"]["memory"].as_str().unwrap().ends_with("Ki"));
    // The agent's HTTPS endpoint: its port, and its certificate's SHA-256 for the API server to pin.
    assert_eq!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], agent.port);
    let fingerprint = node["metadata"]["annotations"]["keel.dev/agent-cert-sha256"].as_str().unwrap_or_default();
    assert!(fingerprint.len() == 64 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()), "{node}");
    let lease = wait_for("node lease", Duration::from_secs(30), || {
        let out = api.kubectl(&["get", "lease", "-n", "kube-node-lease", "agent-1", "-o", "json"], None).unwrap();
        let lease: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (lease["spec"]["holderIdentity"] == "agent-1", lease)
    })
    .await;
    let first_renewal = lease["spec"]["renewTime"].as_str().unwrap().to_string();

    // A pod bound by the scheduler runs: Running, Ready, a containerd task, its output in its log file.
    api.ok(
        &["apply", "-f", "-"],
        Some(&pod_yaml("web", "Always", "echo started as $(hostname); echo on stderr >&2; exec sleep 3600")),
    )
    .unwrap();
    let pod = wait_for("pod Running and Ready", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "web"]);
        (pod["status"]["phase"] == "Running" && condition(&pod, "Ready") == "True", pod)
    })
    .await;
    assert_eq!(pod["spec"]["nodeName"], "agent-1");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["name"], "app");
    assert_eq!(status["ready"], true);
    assert_eq!(status["restartCount"], 0);
    assert!(status["state"]["running"]["startedAt"].is_string(), "{status}");
    assert!(status["imageID"].as_str().unwrap().starts_with("keel.test/busybox:1@sha256:"), "{status}");
    let container_id = status["containerID"].as_str().unwrap().strip_prefix("containerd://").unwrap().to_string();
    let tasks = containerd.ctr_ok(&["tasks", "ls"]).unwrap();
    assert!(tasks.lines().any(|l| l.starts_with(&container_id) && l.contains("RUNNING")), "{tasks}");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log = agent.log_dir.join(format!("default_web_{uid}/app/0.log"));
    let output = wait_for("the container's output in its log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("started as web") && text.contains("on stderr"), text)
    })
    .await;
    // The shim's logger (`keel container-log`) wrote CRI lines: time, stream, tag, content.
    let lines: Vec<Vec<&str>> = output.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{output}");
    for fields in &lines {
        assert!(fields[0].ends_with('Z') && fields[0].parse::<jiff::Timestamp>().is_ok(), "{output}");
    }
    assert!(lines.iter().any(|f| f[1..] == ["stdout", "F", "started as web"]), "{output}");
    assert!(lines.iter().any(|f| f[1..] == ["stderr", "F", "on stderr"]), "{output}");

    // kill -9 of the agent leaves the container running; the restarted agent adopts it (same container,
    // no restart) and reports the pod as before.
    agent.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks = containerd.ctr_ok(&["tasks", "ls"]).unwrap();
    assert!(tasks.lines().any(|l| l.starts_with(&container_id) && l.contains("RUNNING")), "{tasks}");
    agent.restart(&api, &containerd, &[]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = json(&api, &["get", "pod", "web"]);
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["containerID"], format!("containerd://{container_id}"), "{status}");
    assert_eq!(status["restartCount"], 0);
    assert_eq!(condition(&pod, "Ready"), "True");
    assert_eq!(containerd.ctr_ok(&["containers", "ls", "-q"]).unwrap().trim(), container_id);

    // Deletion: sh ignores SIGTERM as PID 1, so the container is killed when the 2 s grace period ends; then
    // the pod object goes and nothing of it is left.
    let asked = Instant::now();
    api.ok(&["delete", "pod", "web", "--grace-period=2", "--wait=false"], None).unwrap();
    wait_for("pod gone", Duration::from_secs(30), || {
        let out = api.kubectl(&["get", "pod", "web", "-o", "name"], None).unwrap();
        (!out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(asked.elapsed() >= Duration::from_secs(2), "the grace period was not waited for");
    assert_eq!(containerd.ctr_ok(&["containers", "ls", "-q"]).unwrap().trim(), "");
    assert_eq!(containerd.ctr_ok(&["tasks", "ls", "-q"]).unwrap().trim(), "");
    let snapshots = containerd.ctr_ok(&["snapshots", "ls"]).unwrap();
    assert!(!snapshots.contains(&container_id), "{snapshots}");
    assert!(!agent.data_dir.join("pods").join(uid).exists());
    assert!(!agent.log_dir.join(format!("default_web_{uid}")).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(uid), "the pod's namespace files are still mounted");

    // The Lease was renewed meanwhile (every 10 s).
    wait_for("lease renewed", Duration::from_secs(20), || {
        let lease = json(&api, &["get", "lease", "-n", "kube-node-lease", "agent-1"]);
        (lease["spec"]["renewTime"].as_str() != Some(&first_renewal), lease["spec"].clone())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_back_off_oom_kills_and_init_containers() {
    let (_c, api, _containerd, agent) = cluster_with_agent(&["--backoff-base", "1s", "--backoff-max", "4s"]).await;

    api.ok(&["apply", "-f", "-"], Some(&pod_yaml("crash", "Always", "echo crashing; exit 3"))).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&pod_yaml("once", "Never", "exit 7"))).unwrap();
    let oom = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hungry
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["tail", "/dev/zero"]
    resources:
      limits: {{memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: staged
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
  - name: first
    image: {BUSYBOX}
    command: ["sh", "-c", "echo one > /work/steps"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: {BUSYBOX}
    command: ["sh", "-c", "echo two >> /work/steps"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sh", "-c", "cat /work/steps; exec sleep 3600"]
    volumeMounts: [{{name: work, mountPath: /work}}]
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&oom)).unwrap();

    // restartPolicy Never: Failed, with the exit code and reason.
    let once = wait_for("pod once Failed", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "once"]);
        (pod["status"]["phase"] == "Failed", pod)
    })
    .await;
    let terminated = &once["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 7, "{once}");
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(once["status"]["containerStatuses"][0]["restartCount"], 0);

    // restartPolicy Always: restarts, in CrashLoopBackOff between them, the last exit in lastState.
    let mut saw_backoff = false;
    let crash = wait_for("pod crash restarted 3 times", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "crash"]);
        let status = &pod["status"]["containerStatuses"][0];
        let backing_off = status["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        saw_backoff |= backing_off;
        // Taken while backing off, not in the moment a new attempt runs (Ready then, briefly).
        (status["restartCount"].as_i64().unwrap_or(0) >= 3 && backing_off, pod)
    })
    .await;
    assert!(saw_backoff, "CrashLoopBackOff was never reported");
    let status = &crash["status"]["containerStatuses"][0];
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    // Only the logs of the attempts kept (the latest and the one before) stay on disk.
    let logs = agent.log_dir.join(format!("default_crash_{}/app", crash["metadata"]["uid"].as_str().unwrap()));
    let restarts = status["restartCount"].as_u64().unwrap();
    wait_for("old attempts' logs removed", Duration::from_secs(10), || {
        let mut files: Vec<String> = std::fs::read_dir(&logs)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        files.sort();
        (!files.contains(&"0.log".to_string()) && files.contains(&format!("{restarts}.log")), files)
    })
    .await;
    assert_eq!(crash["status"]["phase"], "Running");
    assert_eq!(condition(&crash, "Ready"), "False");

    // Over its memory limit, the container is OOM-killed and reported so.
    let hungry = wait_for("pod hungry Failed", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "hungry"]);
        (pod["status"]["phase"] == "Failed", pod)
    })
    .await;
    let terminated = &hungry["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{hungry}");
    assert_eq!(terminated["exitCode"], 137);

    // Init containers run in order, to completion, before the app container.
    let staged = wait_for("pod staged Running", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "staged"]);
        (pod["status"]["phase"] == "Running" && condition(&pod, "Ready") == "True", pod)
    })
    .await;
    assert_eq!(condition(&staged, "Initialized"), "True");
    let inits = staged["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for init in inits {
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    }
    let output = wait_for("the app's output", Duration::from_secs(10), || {
        let text = api.ok(&["logs", "staged"], None).unwrap_or_default();
        (text.contains("two"), text)
    })
    .await;
    assert_eq!(output, "one\ntwo\n");

    api.ok(&["delete", "pod", "crash", "once", "hungry", "staged", "--grace-period=1"], None).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_containers_share_localhost_and_volumes_with_config_from_the_api() {
    // The node's "host" network is a namespace of the test's own: the CNI bridge and the pods' veths go
    // there, never into the machine's network.
    let host = Netns::create().unwrap();
    let netns = host.path().display().to_string();
    let (_c, api, _containerd, agent) =
        cluster_with_agent(&["--pod-cidr", "10.244.7.0/24", "--cni-netns", &netns, "--cni-bridge", "keeltest0"]).await;
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: site
data:
  index.html: "<h1>served by web</h1>"
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: s3cret
---
apiVersion: v1
kind: Pod
metadata:
  name: pair
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {{}}
  - name: site
    configMap:
      name: site
      items: [{{key: index.html, path: index.html}}]
  containers:
  - name: web
    image: {BUSYBOX}
    command: ["sh", "-c", "echo \"$GREETING from $POD ($PASSWORD)\" > /shared/greeting; exec httpd -f -p 8080 -h /www"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: site, key: greeting}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: POD
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: site, mountPath: /www}}
  - name: client
    image: {BUSYBOX}
    command: ["sh", "-c", "until wget -q -O /shared/fetched http://localhost:8080/index.html; do sleep 0.2; done; echo fetched: $(cat /shared/fetched); echo greeting: $(cat /shared/greeting); echo hostname: $(cat /etc/hostname); exec sleep 3600"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
---
apiVersion: v1
kind: Pod
metadata:
  name: broken
spec:
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    env:
    - name: MISSING
      valueFrom: {{configMapKeyRef: {{name: absent, key: k}}}}
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&manifest)).unwrap();
    let pod = wait_for("pod pair Running and Ready", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "pair"]);
        (pod["status"]["phase"] == "Running" && condition(&pod, "Ready") == "True", pod)
    })
    .await;
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log = agent.log_dir.join(format!("default_pair_{uid}/client/0.log"));
    let output = wait_for("the client's output", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("hostname:"), text)
    })
    .await;
    assert!(output.contains("fetched: <h1>served by web</h1>"), "{output}");
    assert!(output.contains("greeting: hello from pair (s3cret)"), "{output}");
    assert!(output.contains("hostname: pair"), "{output}");

    // The pod has an address of the node's CIDR, in status and /etc/hosts, and answers on it from the host.
    let pod = json(&api, &["get", "pod", "pair"]);
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.244.7."), "{pod}");
    assert_eq!(pod["status"]["podIPs"][0]["ip"], ip.as_str());
    let hosts = std::fs::read_to_string(agent.data_dir.join(format!("pods/{uid}/etc-hosts"))).unwrap();
    assert!(hosts.contains(&format!("{ip}\tpair")), "{hosts}");
    let fetched = host.exec(&["busybox", "wget", "-q", "-O", "-", &format!("http://{ip}:8080/index.html")]).unwrap();
    assert_eq!(String::from_utf8_lossy(&fetched.stdout), "<h1>served by web</h1>", "{fetched:?}");

    // A missing ConfigMap keeps the container from starting, with the kubelet's reason, and the pod waits.
    let broken = wait_for("pod broken reports its config error", Duration::from_secs(30), || {
        let pod = json(&api, &["get", "pod", "broken"]);
        let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
        (reason == "CreateContainerConfigError", pod)
    })
    .await;
    let waiting = &broken["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["message"], "configmap \"absent\" not found", "{waiting}");
    assert_eq!(broken["status"]["phase"], "Pending");

    // Deleting the pod releases its address.
    api.ok(&["delete", "pod", "pair", "broken", "--grace-period=1"], None).unwrap();
    let leases = agent.data_dir.join("cni/ipam/keel");
    wait_for("the pod's address released", Duration::from_secs(30), || {
        let held =
            std::fs::read_dir(&leases).map(|d| d.flatten().any(|e| e.file_name() == ip.as_str())).unwrap_or(false);
        (!held, held)
    })
    .await;
}

/// How many TCP connections to 127.0.0.1:`port` are established (the server's ends, from /proc/net/tcp).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// kubectl's output (stdout, stderr) and whether it succeeded.
fn kubectl(api: &Api, args: &[&str]) -> (bool, String, String) {
    let out = api.kubectl(args, None).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_reads_containers_through_the_master_and_the_agent() {
    let (_c, api, _containerd, agent) = cluster_with_agent(&["--backoff-base", "1s", "--backoff-max", "2s"]).await;
    let pods = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: talk
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: talker
    image: {BUSYBOX}
    command: ["sh", "-c", "echo out-1; echo err-1 >&2; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"]
  - name: quiet
    image: {BUSYBOX}
    command: ["sh", "-c", "echo quiet here; exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: again
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sh", "-c", "n=$(cat /s/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /s/n; echo run-$n; if [ $n -eq 1 ]; then exit 1; fi; exec sleep 3600"]
    volumeMounts: [{{name: state, mountPath: /s}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: done
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sh", "-c", "echo all done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: nowhere
spec:
  nodeSelector: {{keel.test/nowhere: "true"}}
  containers:
  - name: app
    image: {BUSYBOX}
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&pods)).unwrap();
    wait_for("pod talk Running", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "talk"]);
        (pod["status"]["phase"] == "Running", pod["status"].clone())
    })
    .await;

    // Both streams of a container, through the master's pods/log and the agent's endpoint.
    let all = wait_for("talker's output", Duration::from_secs(10), || {
        let (ok, out, err) = kubectl(&api, &["logs", "talk", "-c", "talker"]);
        (ok && out.contains("tick-3"), format!("{out}{err}"))
    })
    .await;
    assert!(all.contains("out-1\n") && all.contains("err-1\n"), "{all}");
    assert_eq!(api.ok(&["logs", "talk", "-c", "quiet"], None).unwrap(), "quiet here\n");
    assert_eq!(api.ok(&["logs", "talk", "-c", "quiet", "--limit-bytes=5"], None).unwrap(), "quiet");

    // --tail keeps the last lines; --timestamps prefixes each with its RFC 3339 time.
    let tail = api.ok(&["logs", "talk", "-c", "talker", "--tail=2"], None).unwrap();
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick-")), "{tail}");
    let stamped = api.ok(&["logs", "talk", "-c", "quiet", "--timestamps"], None).unwrap();
    let (time, text) = stamped.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "quiet here");
    let time: jiff::Timestamp = time.parse().unwrap_or_else(|e| panic!("{stamped}: {e}"));
    assert!((jiff::Timestamp::now() - time).get_seconds() < 120, "{stamped}");

    // Without -c the API server wants a container of a two-container pod, as kube-apiserver does (kubectl
    // itself defaults to the first one).
    let (ok, _, err) = kubectl(&api, &["get", "--raw", "/api/v1/namespaces/default/pods/talk/log"]);
    assert!(
        !ok && err.contains("a container name must be specified for pod talk, choose one of: [talker quiet]"),
        "{err}"
    );
    let (ok, _, err) = kubectl(&api, &["logs", "talk", "-c", "nope"]);
    assert!(!ok && err.contains("container nope is not valid for pod talk"), "{err}");

    // -f streams what the container writes next; read a few new lines, then stop kubectl.
    let followed = agent.log_dir.with_file_name("follow.out");
    let last_tick = |text: &str| text.lines().filter_map(|l| l.strip_prefix("tick-")?.parse::<u64>().ok()).max();
    let before = last_tick(&api.ok(&["logs", "talk", "-c", "talker"], None).unwrap()).unwrap_or(0);
    let mut follower = api.kubectl_background(&["logs", "-f", "talk", "-c", "talker", "--tail=1"], &followed).unwrap();
    let streamed = wait_for("kubectl logs -f to stream new lines", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&followed).unwrap_or_default();
        (last_tick(&text).is_some_and(|t| t >= before + 5), text)
    })
    .await;
    assert!(established_to(agent.port) >= 1, "the follow goes through the agent's endpoint");
    let _ = follower.kill();
    let _ = follower.wait();
    let ticks: Vec<u64> = streamed.lines().filter_map(|l| l.strip_prefix("tick-")?.parse().ok()).collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "lines lost or repeated: {streamed}");
    // kubectl gone, the master drops its call to the agent and the agent stops reading.
    wait_for("the agent's connections closed", Duration::from_secs(10), || {
        let open = established_to(agent.port);
        (open == 0, open)
    })
    .await;

    // A container that exited: -f ends by itself once everything is sent.
    wait_for("pod done Succeeded", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "done"]);
        (pod["status"]["phase"] == "Succeeded", pod["status"].clone())
    })
    .await;
    let started = Instant::now();
    assert_eq!(api.ok(&["logs", "-f", "done"], None).unwrap(), "all done\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "logs -f of a finished container took {:?}",
        started.elapsed()
    );

    // --previous: the instance before the last restart.
    wait_for("pod again restarted and running", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "again"]);
        let status = &pod["status"]["containerStatuses"][0];
        (status["restartCount"] == 1 && status["state"]["running"].is_object(), pod["status"].clone())
    })
    .await;
    assert_eq!(api.ok(&["logs", "again"], None).unwrap(), "run-2\n");
    assert_eq!(api.ok(&["logs", "again", "--previous"], None).unwrap(), "run-1\n");
    let (ok, _, err) = kubectl(&api, &["logs", "done", "--previous"]);
    assert!(!ok && err.contains("previous terminated container \"app\" in pod \"done\" not found"), "{err}");

    // A pod that no node took has no logs to give.
    let (ok, _, err) = kubectl(&api, &["logs", "nowhere"]);
    assert!(!ok && err.contains("pod nowhere does not have a host assigned"), "{err}");
}

/// The cgroup (v1 or v2) directory of `pid` for `controller` ("cpu", "memory"), as the host sees it.
fn cgroup_dir(pid: &str, controller: &str) -> std::path::PathBuf {
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in lines.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let v1 = controllers.split(',').any(|c| c == controller);
        if v1 || controllers.is_empty() {
            let root = if v1 { format!("/sys/fs/cgroup/{controllers}") } else { "/sys/fs/cgroup".into() };
            let dir = std::path::PathBuf::from(format!("{root}{path}"));
            if v1 || dir.join("cgroup.controllers").exists() {
                return dir;
            }
        }
    }
    panic!("no {controller} cgroup for {pid} in {lines}");
}

#[tokio::test(flavor = "multi_thread")]
async fn security_context_and_resources_reach_the_containers() {
    let (_c, api, containerd, _agent) = cluster_with_agent(&[]).await;
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: token
stringData:
  token: s3cret
---
apiVersion: v1
kind: Pod
metadata:
  name: confined
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000, runAsGroup: 3000}}
  volumes:
  - name: token
    secret: {{secretName: token, defaultMode: 0444}}
  containers:
  - name: user
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    securityContext: {{readOnlyRootFilesystem: true}}
    resources:
      limits: {{cpu: 500m, memory: 64Mi}}
    volumeMounts:
    - {{name: token, mountPath: /token}}
  - name: admin
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    securityContext:
      runAsUser: 0
      capabilities: {{drop: [ALL], add: [NET_ADMIN]}}
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&manifest)).unwrap();
    let pod = keel_tests::agent::pod_ready(&api, "confined", Duration::from_secs(60)).await;

    // The pod's user and group, and a root filesystem that cannot be written.
    let (ok, out, _) = kubectl(&api, &["exec", "confined", "-c", "user", "--", "id"]);
    assert!(ok && out.contains("uid=1000") && out.contains("gid=3000"), "{out}");
    let (ok, _, err) = kubectl(&api, &["exec", "confined", "-c", "user", "--", "touch", "/written"]);
    assert!(!ok && err.contains("Read-only file system"), "{err}");
    // A secret volume is on a tmpfs: its content never reaches the node's disk.
    let (ok, out, _) = kubectl(&api, &["exec", "confined", "-c", "user", "--", "cat", "/token/token"]);
    assert!(ok && out == "s3cret", "{out}");
    let (ok, out, _) = kubectl(&api, &["exec", "confined", "-c", "user", "--", "cat", "/proc/mounts"]);
    assert!(ok && out.lines().any(|l| l.starts_with("tmpfs /token tmpfs ")), "{out}");
    // Root with only the capability asked for: CAP_NET_ADMIN is bit 12.
    let (ok, out, _) = kubectl(&api, &["exec", "confined", "-c", "admin", "--", "cat", "/proc/1/status"]);
    assert!(ok, "{out}");
    let cap = |name: &str| out.lines().find(|l| l.starts_with(name)).map(|l| l.split_whitespace().nth(1).unwrap());
    assert_eq!(cap("Uid:"), Some("0"), "{out}");
    assert_eq!(cap("CapEff:"), Some("0000000000001000"), "{out}");
    assert_eq!(cap("CapBnd:"), Some("0000000000001000"), "{out}");

    // The limits are the container's cgroup's: 500m = 50 ms of CPU every 100 ms, 64 MiB of memory.
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    let user = statuses.iter().find(|s| s["name"] == "user").unwrap();
    let id = user["containerID"].as_str().unwrap().trim_start_matches("containerd://");
    let tasks = containerd.ctr_ok(&["tasks", "ls"]).unwrap();
    let pid = tasks.lines().find(|l| l.starts_with(id)).and_then(|l| l.split_whitespace().nth(1)).unwrap().to_string();
    let read =
        |dir: std::path::PathBuf, file: &str| std::fs::read_to_string(dir.join(file)).unwrap().trim().to_string();
    let cpu = cgroup_dir(&pid, "cpu");
    if cpu.join("cpu.max").exists() {
        assert_eq!(read(cpu, "cpu.max"), "50000 100000");
        assert_eq!(read(cgroup_dir(&pid, "memory"), "memory.max"), "67108864");
    } else {
        assert_eq!(read(cpu.clone(), "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(cpu, "cpu.cfs_period_us"), "100000");
        assert_eq!(read(cgroup_dir(&pid, "memory"), "memory.limit_in_bytes"), "67108864");
    }
}
