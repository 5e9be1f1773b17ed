//! `kubectl exec` end to end, as root with a real containerd: stock kubectl upgrades `pods/exec` to a
//! WebSocket (`v5.channel.k8s.io`) on the master, which joins it to the agent's HTTPS endpoint, where the
//! command runs in the running container through containerd's `Tasks.Exec`. Covered: stdout and stderr
//! apart, the exit code, stdin (large enough that input and output must flow at once), a terminal with
//! its size, the process killed when kubectl goes away, and the errors kubectl shows.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use keel_tests::agent::{cluster_with_agent, pod_ready, BUSYBOX};
use keel_tests::masters::Api;
use keel_tests::wait_for;

/// kubectl's exit code, stdout and stderr.
fn kubectl(api: &Api, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["--server", &api.url()])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Written from a thread: kubectl's output must be read meanwhile.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_runs_commands_in_a_running_container() {
    let (_c, api, _containerd, _agent) = cluster_with_agent(&[]).await;
    let pods = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    env: [{{name: GREETING, value: hello-from-env}}]
  - name: side
    image: {BUSYBOX}
    command: ["sh", "-c", "echo side > /tmp/who; exec sleep 3600"]
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
    pod_ready(&api, "shell", Duration::from_secs(60)).await;

    // The command runs in the container named, with the container's own environment.
    let (code, out, err) = kubectl(&api, &["exec", "shell", "-c", "app", "--", "sh", "-c", "echo $GREETING"], None);
    assert_eq!((code, text(&out).as_str()), (0, "hello-from-env\n"), "{err}");
    let (code, out, err) = kubectl(&api, &["exec", "shell", "-c", "side", "--", "cat", "/tmp/who"], None);
    assert_eq!((code, text(&out).as_str()), (0, "side\n"), "{err}");

    // stdout and stderr apart, and the exit code is kubectl's.
    let (code, out, err) =
        kubectl(&api, &["exec", "shell", "-c", "app", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3"], None);
    assert_eq!((code, text(&out).as_str()), (3, "to-out\n"), "{err}");
    assert!(err.contains("to-err") && err.contains("command terminated with exit code 3"), "{err}");

    // stdin, to its end: 1 MiB through cat and back while it flows, then counted.
    let input: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let (code, out, err) = kubectl(&api, &["exec", "-i", "shell", "-c", "app", "--", "cat"], Some(&input));
    assert_eq!(code, 0, "{err}");
    assert!(out == input, "cat gave back {} bytes of {}", out.len(), input.len());
    let (code, out, err) =
        kubectl(&api, &["exec", "-i", "shell", "-c", "app", "--", "sh", "-c", "wc -c; echo end"], Some(b"12345"));
    assert_eq!((code, text(&out).replace(' ', "").as_str()), (0, "5\nend\n"), "{err}");

    // A terminal (kubectl gets one from script(1)) with kubectl's size; its exit code too.
    let line = format!(
        "stty cols 123 rows 45; kubectl --kubeconfig {} --server {} exec -it shell -c app -- sh -c 'tty; stty size; exit 4'",
        api.kubeconfig.display(),
        api.url()
    );
    let out = Command::new("script").args(["-qec", &line, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("/dev/pts/") && shown.contains("45 123"), "{shown}");

    // kubectl gone, the process it ran goes too.
    let mut sleeper = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["--server", &api.url(), "exec", "shell", "-c", "app", "--", "sleep", "4321"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ps = || text(&kubectl(&api, &["exec", "shell", "-c", "app", "--", "ps", "-o", "args"], None).1);
    wait_for("the exec'd sleep to run", Duration::from_secs(20), || (ps().contains("sleep 4321"), ps())).await;
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    wait_for("the exec'd sleep to be killed", Duration::from_secs(20), || (!ps().contains("sleep 4321"), ps())).await;

    // Errors as kubectl shows Kubernetes'.
    let (code, _, err) = kubectl(&api, &["exec", "shell", "-c", "nope", "--", "ls"], None);
    assert!(code != 0 && err.contains("container nope is not valid for pod shell"), "{err}");
    let (code, _, err) = kubectl(&api, &["exec", "shell", "-c", "app", "--", "/no/such/binary"], None);
    assert!(code != 0 && err.contains("/no/such/binary"), "{err}");
    let (code, _, err) = kubectl(&api, &["exec", "nowhere", "--", "ls"], None);
    assert!(code != 0 && err.contains("pod nowhere does not have a host assigned"), "{err}");
    let (code, _, err) = kubectl(&api, &["exec", "ghost", "--", "ls"], None);
    assert!(code != 0 && err.contains("pods \"ghost\" not found"), "{err}");
    // Without an upgrade there is no exec.
    let (code, _, err) = kubectl(
        &api,
        &["get", "--raw", "/api/v1/namespaces/default/pods/shell/exec?command=ls&stdout=true&container=app"],
        None,
    );
    assert!(code != 0 && err.contains("Upgrade request required"), "{err}");

    // Nothing of the execs is left on the node.
    let (code, out, err) = kubectl(&api, &["exec", "shell", "-c", "app", "--", "ps", "-o", "args"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text(&out).lines().filter(|l| !l.contains("ps -o args")).count(), 2, "{}", text(&out));
}
