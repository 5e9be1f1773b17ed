//! `kubectl port-forward` end to end, as root with a real containerd: stock kubectl's SPDY/3.1 session —
//! tunnelled in a WebSocket (its default) and over the legacy SPDY upgrade — goes through the master to the
//! agent, which dials the pod's ports inside the pod's network namespace. Covered: an httpd in the pod
//! serves a page through the forwarded port, several ports at once, several connections one after the
//! other, and a port nothing listens on reported on its error stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel_tests::agent::{cluster_with_agent, pod_ready, BUSYBOX};
use keel_tests::masters::Api;
use keel_tests::{free_port, wait_for};

/// `kubectl port-forward` running in the background, its output to `log`; `websockets` false makes it
/// speak the legacy SPDY upgrade.
fn port_forward(api: &Api, ports: &[String], websockets: bool, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["--server", &api.url(), "port-forward", "pod/web"])
        .args(ports)
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", if websockets { "true" } else { "false" })
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// What an HTTP/1.0 GET of `/` on 127.0.0.1:`port` answers (empty when the connection fails).
fn get(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_port_forward_reaches_the_pods_ports() {
    let (c, api, _containerd, _agent) = cluster_with_agent(&[]).await;
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: ["sh", "-c", "mkdir -p /a /b && echo page-from-8080 > /a/index.html && echo page-from-8081 > /b/index.html && httpd -p 8081 -h /b && exec httpd -f -p 8080 -h /a"]
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&pod)).unwrap();
    pod_ready(&api, "web", Duration::from_secs(60)).await;

    for websockets in [true, false] {
        let (first, second, closed) = (free_port(), free_port(), free_port());
        let log = c.dir.path().join(format!("port-forward-{websockets}.log"));
        let ports = [format!("{first}:8080"), format!("{second}:8081")];
        let mut kubectl = port_forward(&api, &ports, websockets, &log);
        wait_for("kubectl to listen", Duration::from_secs(20), || {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            (out.contains(&format!("127.0.0.1:{second} -> 8081")), out)
        })
        .await;
        for _ in 0..3 {
            let page = get(first);
            assert!(page.contains("200 OK") && page.contains("page-from-8080"), "websockets={websockets}: {page:?}");
        }
        assert!(get(second).contains("page-from-8081"), "websockets={websockets}");
        kubectl.kill().unwrap();
        kubectl.wait().unwrap();

        // A port nothing listens on: kubectl shows the agent's error.
        let log = c.dir.path().join(format!("port-forward-closed-{websockets}.log"));
        let mut kubectl = port_forward(&api, &[format!("{closed}:9999")], websockets, &log);
        wait_for("kubectl to listen", Duration::from_secs(20), || {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            (out.contains(&format!("127.0.0.1:{closed} -> 9999")), out)
        })
        .await;
        assert_eq!(get(closed), "");
        wait_for("the error to be reported", Duration::from_secs(20), || {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            (out.contains("error forwarding port 9999 to pod default/web"), out)
        })
        .await;
        let _ = kubectl.kill();
        let _ = kubectl.wait();
    }
}
