//! A node joins with one command (issue 24, item 3), as root with a real containerd: `keel server token
//! create --for node --print-join-command` prints `keel agent --join … --join-token … --join-ca-hash …`;
//! the agent checks the CA against the pin (a wrong pin: it refuses to send the token and exits), gets a
//! client certificate for `system:node:<name>` through an auto-approved CertificateSigningRequest, keeps
//! it in its own kubeconfig, and runs pods with it. The node's identity is not an admin's: it reads only
//! the Secrets its pods use and changes only its own Node; the token alone reaches nothing else.

use std::process::Command;
use std::time::Duration;

use keel_tests::agent::{pod_ready, sleeping_pod, Agent, Containerd, BUSYBOX};
use keel_tests::masters::{join_command, Api};
use keel_tests::{keel_bin, wait_for, Cluster, Options};

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_with_a_token_and_runs_pods_as_itself() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let containerd = Containerd::start().await.unwrap();
    containerd.import_busybox().unwrap();

    let (url, token, ca_hash) = join_command(&api, "node");

    // The token alone: nothing but joining.
    let denied = api.kubectl(&["--token", &token, "get", "pods"], None).unwrap();
    assert!(!denied.status.success());

    // A wrong pin: the agent refuses to send the token, and stops.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let refused = Command::new(keel_bin())
        .args(["agent", "--node-name", "impostor", "--join", &url, "--join-token", &token, "--join-ca-hash", &wrong])
        .arg("--data-dir")
        .arg(c.dir.path().join("impostor"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing to send it the join token"), "{refused:?}");

    // The right one: the node joins, with an identity of its own, and runs a pod.
    let flags = ["--join", url.as_str(), "--join-token", token.as_str(), "--join-ca-hash", ca_hash.as_str()];
    let agent = Agent::start(&api, &containerd, "joined", &flags).unwrap();
    wait_for("the joined node Ready", Duration::from_secs(60), || {
        let out = api.ok(&["get", "node", "joined", "--no-headers"], None).unwrap_or_default();
        (out.split_whitespace().nth(1) == Some("Ready"), out)
    })
    .await;
    api.ok(&["apply", "-f", "-"], Some(&sleeping_pod("on-joined", BUSYBOX, "IfNotPresent"))).unwrap();
    pod_ready(&api, "on-joined", Duration::from_secs(60)).await;
    let csrs = api.ok(&["get", "csr"], None).unwrap();
    let id = token.split('.').next().unwrap();
    assert!(
        csrs.lines().any(|l| l.contains("kube-apiserver-client-kubelet")
            && l.contains(&format!("system:bootstrap:{id}"))
            && l.contains("Approved,Issued")),
        "{csrs}"
    );
    let node = Api { kubeconfig: agent.data_dir.join("node.kubeconfig"), port: api.port };
    let whoami = node.ok(&["auth", "whoami"], None).unwrap();
    assert!(whoami.contains("system:node:joined") && whoami.contains("system:nodes"), "{whoami}");
    let escalate = node
        .kubectl(&["create", "clusterrolebinding", "mine", "--clusterrole=cluster-admin", "--user=me"], None)
        .unwrap();
    assert!(!escalate.status.success(), "a node is no admin");
    // The node authorizer: a node reads the Secrets its pods use and no other, and changes only its own
    // Node.
    api.ok(&["create", "secret", "generic", "unused", "--from-literal=k=v"], None).unwrap();
    let secret = node.kubectl(&["get", "secret", "unused"], None).unwrap();
    assert!(String::from_utf8_lossy(&secret.stderr).contains("cannot get resource \"secrets\""), "{secret:?}");
    let listed = node.kubectl(&["get", "secrets", "-A"], None).unwrap();
    assert!(!listed.status.success(), "{listed:?}");
    api.ok(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata: {name: other}\n")).unwrap();
    let other = node.kubectl(&["label", "node", "other", "stolen=yes"], None).unwrap();
    assert!(!other.status.success(), "{other:?}");
    node.ok(&["label", "node", "joined", "mine=yes"], None).unwrap();
    let mode = std::fs::metadata(agent.data_dir.join("node.kubeconfig")).map(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);
}

/// The client certificate in a node's kubeconfig.
fn node_certificate(agent: &Agent) -> String {
    let text = std::fs::read_to_string(agent.data_dir.join("node.kubeconfig")).unwrap_or_default();
    let line = text.lines().find(|l| l.trim_start().starts_with("client-certificate-data:")).unwrap_or_default();
    line.trim().to_string()
}

/// A node renews its certificate at 70–90% of its life (certificates of 40 s here), with a request of its
/// own that the masters approve, and goes on working, in the same process and after a restart, once the
/// certificate it joined with has expired (an expired certificate is refused on every request).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_renews_its_certificate_before_it_expires() {
    let options = Options {
        masters: true,
        extra_args: vec!["--cluster-signing-duration".into(), "40s".into()],
        ..Default::default()
    };
    let c = Cluster::start_with(1, options).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let containerd = Containerd::start().await.unwrap();
    containerd.import_busybox().unwrap();
    let joined_at = std::time::Instant::now();
    let mut agent = Agent::start(&api, &containerd, "renewing", &[]).unwrap();
    wait_for("the node Ready", Duration::from_secs(60), || {
        let out = api.ok(&["get", "node", "renewing", "--no-headers"], None).unwrap_or_default();
        (out.split_whitespace().nth(1) == Some("Ready"), out)
    })
    .await;
    let first = node_certificate(&agent);
    assert!(!first.is_empty());
    // The first kubeconfig, kept: its certificate expires 40 s after the join.
    let old = c.dir.path().join("old.kubeconfig");
    std::fs::copy(agent.data_dir.join("node.kubeconfig"), &old).unwrap();

    wait_for("a renewed certificate", Duration::from_secs(60), || {
        let now = node_certificate(&agent);
        (!now.is_empty() && now != first, now)
    })
    .await;
    let csrs = api.ok(&["get", "csr"], None).unwrap();
    assert!(
        csrs.lines().any(|l| l.contains("system:node:renewing") && l.contains("Approved,Issued")),
        "the node asked for its renewal itself: {csrs}"
    );

    // Past the first certificate's life: refused, while the node goes on with its new one.
    let expired = joined_at + Duration::from_secs(45);
    tokio::time::sleep(expired.saturating_duration_since(std::time::Instant::now())).await;
    let stale = Api { kubeconfig: old, port: api.port };
    let refused = stale.kubectl(&["auth", "whoami"], None).unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"), "{refused:?}");
    api.ok(&["apply", "-f", "-"], Some(&sleeping_pod("after-expiry", BUSYBOX, "IfNotPresent"))).unwrap();
    pod_ready(&api, "after-expiry", Duration::from_secs(60)).await;

    // A restarted agent starts from the renewed certificate.
    agent.restart(&api, &containerd, &[]).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&sleeping_pod("after-restart", BUSYBOX, "IfNotPresent"))).unwrap();
    pod_ready(&api, "after-restart", Duration::from_secs(60)).await;
    let node = Api { kubeconfig: agent.data_dir.join("node.kubeconfig"), port: api.port };
    assert!(node.ok(&["auth", "whoami"], None).unwrap().contains("system:node:renewing"));
}
