//! The official Python `kubernetes` client (PyPI, 33.x for Kubernetes 1.33) against three stacked masters:
//! tests/python/deployment_client.py creates, lists, patches (strategic merge), watches and deletes a
//! Deployment through one master, and kubectl through the other masters sees the patched Deployment, then
//! its deletion.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel_tests::masters::Api;
use keel_tests::{Cluster, Options};
use serde_json::{json, Value};

const NAMESPACE: &str = "py-client";
/// How long the script may take from start to end (it takes a few seconds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/deployment_client.py")
}

fn deployment(api: &Api) -> Value {
    let out = api.ok(&["-n", NAMESPACE, "get", "deployment", "web", "-o", "json"], None).unwrap();
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_kubernetes_client_drives_a_deployment() {
    let installed = Command::new("python3").args(["-c", "import kubernetes"]).output();
    assert!(
        installed.as_ref().is_ok_and(|o| o.status.success()),
        "the Python kubernetes client is not installed (deploy/install-deps.sh installs it): {installed:?}"
    );
    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    let apis: Vec<Api> = (0..3).map(|i| c.api(i)).collect();
    for api in &apis {
        api.wait_ready(Duration::from_secs(60)).await.unwrap();
    }

    // The script talks to master 1 with its own kubeconfig; it stops before the delete until told to go on.
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(script())
        .arg(&apis[0].kubeconfig)
        .args(["--namespace", NAMESPACE, "--pause-before-delete"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut output = Vec::new();
    let deadline = started + SCRIPT_TIMEOUT;
    let paused = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let done = line.starts_with("PAUSED");
                output.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if paused {
        // What the client patched through master 1, kubectl sees through masters 2 and 3.
        for other in &apis[1..] {
            let d = deployment(&apis[0].at(other));
            let at = format!("through the master on port {}", other.port);
            assert_eq!(d["spec"]["replicas"], 3, "{at}: {d}");
            assert_eq!(d["metadata"]["labels"], json!({"app": "py-web", "tier": "backend", "patched": "yes"}), "{at}");
            let images: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["image"].as_str().unwrap())
                .collect();
            assert_eq!(images, ["registry.local/web:2", "registry.local/proxy:1"], "{at}");
            assert_eq!(d["metadata"]["generation"], 2, "{at}");
        }
        child.stdin.as_mut().unwrap().write_all(b"go on\n").unwrap();
    } else {
        let _ = child.kill();
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stdout_reader.join().unwrap();
    output.extend(lines.try_iter());
    let stderr = stderr_reader.join().unwrap();
    let report = format!("stdout:\n{}\nstderr:\n{stderr}", output.join("\n"));
    assert!(paused, "the script never reached the patched state (within {SCRIPT_TIMEOUT:?}):\n{report}");
    assert!(status.success(), "the Python client failed ({status}):\n{report}");
    eprintln!("the Python client's run took {:?}:\n{report}", started.elapsed());

    // Its delete is seen everywhere; the namespace it made stays.
    for other in &apis[1..] {
        let b = apis[0].at(other);
        let left = b.ok(&["-n", NAMESPACE, "get", "deployments", "-o", "name"], None).unwrap();
        assert!(left.trim().is_empty(), "deployments left: {left}");
        b.ok(&["get", "namespace", NAMESPACE], None).unwrap();
    }
}
