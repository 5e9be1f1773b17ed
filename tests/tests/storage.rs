//! Persistent volumes on real nodes (issue 26, item 4), with stock kubectl: the default StorageClass
//! `local` provisions a directory on the node of a claim's first consumer; a StatefulSet's claim
//! templates make claims that outlive its pods, each pod coming back to the node its volume is on, with
//! its files; a claim in use survives `kubectl delete pvc` until its pod is gone, and its volume goes
//! with it (reclaim policy Delete); a static hostPath volume binds to a claim that fits it.

use std::time::Duration;

use keel_tests::agent::{TwoNodes, BUSYBOX};
use keel_tests::masters::json;
use keel_tests::wait_for;

fn stateful_set() -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: web}}\nspec:\n  serviceName: web\n  replicas: 2\n  \
         podManagementPolicy: Parallel\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
         spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: app\n        image: {BUSYBOX}\n        \
         imagePullPolicy: Never\n        command: [sh, -c, 'hostname >> /data/log; exec sleep 3600']\n        \
         volumeMounts: [{{name: data, mountPath: /data}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    \
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 64Mi}}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_get_local_volumes_that_outlive_their_pods() {
    let nodes = TwoNodes::start().await;
    let api = &nodes.api;
    wait_for("the default class", Duration::from_secs(30), || {
        let out = api.ok(&["get", "storageclass"], None).unwrap_or_default();
        (
            out.contains("local (default)")
                && out.contains("keel.dev/local-path")
                && out.contains("WaitForFirstConsumer"),
            out,
        )
    })
    .await;

    api.ok(&["apply", "-f", "-"], Some(&stateful_set())).unwrap();
    let running = |pod: &str| {
        let p = json(api, &["get", "pod", pod]);
        (p["status"]["phase"] == "Running", p)
    };
    let first = wait_for("web-0 running", Duration::from_secs(90), || running("web-0")).await;
    wait_for("web-1 running", Duration::from_secs(90), || running("web-1")).await;
    let node0 = first["spec"]["nodeName"].as_str().unwrap().to_string();
    let claim = json(api, &["get", "pvc", "data-web-0"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["spec"]["storageClassName"], "local");
    assert_eq!(claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"], node0.as_str());
    let volume = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = json(api, &["get", "pv", &volume]);
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
        node0.as_str()
    );
    let listed = api.ok(&["get", "pv,pvc"], None).unwrap();
    assert!(
        listed.contains("data-web-1") && listed.contains("Bound") && listed.contains("64Mi") && listed.contains("RWO"),
        "{listed}"
    );

    // Pods go; their claims stay, and each pod comes back to its volume's node, with its files.
    api.ok(&["delete", "pod", "web-0", "web-1", "--wait=false"], None).unwrap();
    let log = |pod: &str| api.ok(&["exec", pod, "--", "cat", "/data/log"], None).unwrap_or_default();
    wait_for("web-0 back, with both lines", Duration::from_secs(90), || {
        let text = log("web-0");
        (text.lines().filter(|l| *l == "web-0").count() == 2, text)
    })
    .await;
    assert_eq!(json(api, &["get", "pod", "web-0"])["spec"]["nodeName"], node0.as_str(), "back on its volume's node");
    wait_for("web-1 back, with both lines", Duration::from_secs(90), || {
        let text = log("web-1");
        (text.lines().filter(|l| *l == "web-1").count() == 2, text)
    })
    .await;

    // A claim in use is kept until its pod is gone; then it goes, and its volume with it.
    api.ok(&["delete", "pvc", "data-web-1", "--wait=false"], None).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = json(api, &["get", "pvc", "data-web-1"]);
    assert!(kept["metadata"]["deletionTimestamp"].is_string(), "{kept}");
    assert_eq!(kept["metadata"]["finalizers"], serde_json::json!(["kubernetes.io/pvc-protection"]));
    assert!(api.ok(&["get", "pvc", "data-web-1"], None).unwrap().contains("Terminating"));
    let volume1 = kept["spec"]["volumeName"].as_str().unwrap().to_string();
    let node1 = json(api, &["get", "pod", "web-1"])["spec"]["nodeName"].as_str().unwrap().to_string();
    let agent = if node1 == nodes.agent1.node { &nodes.agent1 } else { &nodes.agent2 };
    let dir1 = agent.data_dir.join("volumes").join(&volume1);
    assert!(dir1.join("log").exists(), "the volume's data on its node: {}", dir1.display());
    api.ok(&["scale", "statefulset", "web", "--replicas=1"], None).unwrap();
    wait_for("the claim gone with its pod", Duration::from_secs(60), || {
        let out = api.kubectl(&["get", "pvc", "data-web-1"], None).unwrap();
        (!out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    })
    .await;
    wait_for("its volume deleted", Duration::from_secs(60), || {
        let out = api.kubectl(&["get", "pv", &volume1], None).unwrap();
        (!out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    })
    .await;
    wait_for("its directory removed from its node", Duration::from_secs(30), || {
        (!dir1.exists(), dir1.display().to_string())
    })
    .await;

    // A static hostPath volume binds to a claim of its class that fits it.
    let dir = tempfile::tempdir().unwrap();
    let manual = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: manual}}\nspec:\n  capacity: {{storage: 1Gi}}\n  \
         accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  hostPath: {{path: {}}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: mine}}\nspec:\n  storageClassName: manual\n  \
         accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 500Mi}}}}\n",
        dir.path().display()
    );
    api.ok(&["apply", "-f", "-"], Some(&manual)).unwrap();
    wait_for("the static volume bound", Duration::from_secs(30), || {
        let c = json(api, &["get", "pvc", "mine"]);
        (c["status"]["phase"] == "Bound" && c["spec"]["volumeName"] == "manual", c)
    })
    .await;
    let table = api.ok(&["get", "pv", "manual"], None).unwrap();
    assert!(table.contains("Retain") && table.contains("Bound") && table.contains("default/mine"), "{table}");
    let bad = api.kubectl(&["create", "-f", "-"], Some("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bad}\nspec: {accessModes: [ReadWriteOnce]}\n")).unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("spec.resources[storage]: Required value"), "{bad:?}");
}
