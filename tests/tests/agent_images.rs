//! Image pulls on a real agent and containerd (as root), from Debian's docker-registry on loopback (plain
//! HTTP, `--insecure-registry`) holding the busybox test image that skopeo pushed: a pod's image is pulled
//! and run, with the registry's digest as its imageID and Pulling/Pulled events; pull policy Always pulls
//! again; an image the registry does not have gives ErrImagePull then ImagePullBackOff, and the agent goes on.

use std::time::Duration;

use keel_tests::agent::{cluster_with_agent, condition, pod_ready, sleeping_pod as pod, LocalRegistry};
use keel_tests::masters::json;
use keel_tests::wait_for;
use serde_json::Value;

fn events(api: &keel_tests::masters::Api, pod: &str) -> Vec<Value> {
    let list = json(api, &["get", "events", "--field-selector", &format!("involvedObject.name={pod}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_pulled_from_a_registry_and_bad_ones_back_off() {
    let registry = LocalRegistry::start().await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let image = registry.push_busybox(scratch.path(), "keel/busybox:1").unwrap();
    let (_c, api, containerd, _agent) =
        cluster_with_agent(&["--insecure-registry", &registry.addr, "--backoff-base", "1s", "--backoff-max", "4s"])
            .await;

    api.ok(&["apply", "-f", "-"], Some(&pod("pulled", &image, "IfNotPresent"))).unwrap();
    let missing = format!("{}/keel/nothing:1", registry.addr);
    api.ok(&["apply", "-f", "-"], Some(&pod("missing", &missing, "IfNotPresent"))).unwrap();

    let pulled = pod_ready(&api, "pulled", Duration::from_secs(60)).await;
    // The imageID carries the registry's digest, the same as the image's in the archive it came from.
    let image_id = pulled["status"]["containerStatuses"][0]["imageID"].as_str().unwrap().to_string();
    let digest = image_id.split_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
    assert!(image_id.starts_with(&format!("{image}@sha256:")), "{image_id}");
    let listed = containerd.ctr_ok(&["images", "ls"]).unwrap();
    let imported = listed.lines().find(|l| l.starts_with("keel.test/busybox:1 ")).unwrap();
    assert!(imported.contains(&digest), "{listed}");
    let reasons: Vec<String> =
        events(&api, "pulled").iter().map(|e| e["reason"].as_str().unwrap_or("").into()).collect();
    assert!(reasons.contains(&"Pulling".to_string()) && reasons.contains(&"Pulled".to_string()), "{reasons:?}");

    // Always pulls again even though the image is present.
    api.ok(&["apply", "-f", "-"], Some(&pod("always", &image, "Always"))).unwrap();
    pod_ready(&api, "always", Duration::from_secs(60)).await;
    let pulled_again = events(&api, "always").iter().any(|e| {
        e["reason"] == "Pulled" && e["message"].as_str().unwrap_or("").starts_with("Successfully pulled image")
    });
    assert!(pulled_again, "{:?}", events(&api, "always"));

    // A missing image: ErrImagePull, then ImagePullBackOff between retries; the agent keeps serving.
    let mut seen = std::collections::BTreeSet::new();
    wait_for("ErrImagePull and ImagePullBackOff", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "missing"]);
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        if let Some(reason) = waiting["reason"].as_str() {
            seen.insert(reason.to_string());
        }
        (seen.contains("ErrImagePull") && seen.contains("ImagePullBackOff"), (seen.clone(), waiting.clone()))
    })
    .await;
    let failed = events(&api, "missing");
    assert!(
        failed
            .iter()
            .any(|e| e["reason"] == "Failed" && e["message"].as_str().unwrap_or("").contains("keel/nothing:1")),
        "{failed:?}"
    );
    let node = json(&api, &["get", "node", "agent-1"]);
    assert_eq!(condition(&node, "Ready"), "True");
    assert_eq!(condition(&json(&api, &["get", "pod", "pulled"]), "Ready"), "True");
}
