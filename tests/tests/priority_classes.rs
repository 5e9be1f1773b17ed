//! PriorityClasses and PodTemplates with stock kubectl (issue 25, item 5): the system classes exist, a
//! pod's class (or the default class) gives it its priority, a class that does not exist refuses the pod,
//! user classes are bounded as in Kubernetes; PodTemplates are stored and printed; events.k8s.io/v1 Events
//! are the core Events in another version.

use std::time::Duration;

use keel_tests::masters::json;
use keel_tests::{wait_for, Cluster, Options};

fn pod(name: &str, class: Option<&str>) -> String {
    let class = class.map(|c| format!("  priorityClassName: {c}\n")).unwrap_or_default();
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{class}  containers: [{{name: c, image: busybox}}]\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_take_their_priority_from_their_class() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    wait_for("the system classes", Duration::from_secs(30), || {
        let out = api.ok(&["get", "priorityclasses"], None).unwrap_or_default();
        (
            out.contains("system-node-critical")
                && out.contains("2000001000")
                && out.contains("system-cluster-critical"),
            out,
        )
    })
    .await;

    api.ok(&["create", "priorityclass", "high", "--value=1000", "--preemption-policy=Never"], None).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&pod("urgent", Some("high")))).unwrap();
    let p = json(&api, &["get", "pod", "urgent"]);
    assert_eq!((p["spec"]["priority"].as_i64(), p["spec"]["preemptionPolicy"].as_str()), (Some(1000), Some("Never")));
    api.ok(&["apply", "-f", "-"], Some(&pod("critical", Some("system-node-critical")))).unwrap();
    assert_eq!(json(&api, &["get", "pod", "critical"])["spec"]["priority"], 2_000_001_000);
    let refused = api.kubectl(&["apply", "-f", "-"], Some(&pod("lost", Some("nope")))).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no PriorityClass with name nope was found"), "{err}");
    let huge = api.kubectl(&["create", "priorityclass", "huge", "--value=2000000000"], None).unwrap();
    let err = String::from_utf8_lossy(&huge.stderr);
    assert!(err.contains("maximum allowed value of a user defined priority is 1000000000"), "{err}");
    let immutable = api.kubectl(&["patch", "priorityclass", "high", "-p", r#"{"value": 5}"#], None).unwrap();
    assert!(String::from_utf8_lossy(&immutable.stderr).contains("field is immutable"), "{immutable:?}");

    // The default class goes to pods that name none.
    api.ok(&["create", "priorityclass", "usual", "--value=7", "--global-default"], None).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&pod("plain", None))).unwrap();
    let p = json(&api, &["get", "pod", "plain"]);
    assert_eq!((p["spec"]["priority"].as_i64(), p["spec"]["priorityClassName"].as_str()), (Some(7), Some("usual")));
    let table = api.ok(&["get", "priorityclass", "usual"], None).unwrap();
    assert!(table.contains("GLOBAL-DEFAULT") && table.contains("true"), "{table}");

    // PodTemplates are kept as sent and printed as kubectl knows them.
    let template = "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: tpl}\ntemplate:\n  metadata: {labels: {app: web}}\n  spec: {containers: [{name: web, image: httpd}]}\n";
    api.ok(&["apply", "-f", "-"], Some(template)).unwrap();
    let table = api.ok(&["get", "podtemplates"], None).unwrap();
    assert!(table.contains("tpl") && table.contains("httpd") && table.contains("app=web"), "{table}");
    let stored = json(&api, &["get", "podtemplate", "tpl"]);
    assert_eq!(stored["template"]["spec"]["restartPolicy"], "Always", "defaulted as a template");

    // events.k8s.io/v1 Events are the core Events in another version: written in one, read in both.
    let event = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: pulled.1}\nregarding: {kind: Pod, name: urgent, namespace: default}\nnote: image pulled\nreason: Pulled\ntype: Normal\naction: Pull\nreportingController: keel.test/agent\nreportingInstance: n1\neventTime: \"2026-12-07T12:00:00.000000Z\"\n";
    api.ok(&["create", "-f", "-"], Some(event)).unwrap();
    let core = json(&api, &["get", "events.v1.", "pulled.1"]);
    assert_eq!(
        (core["message"].as_str(), core["involvedObject"]["name"].as_str()),
        (Some("image pulled"), Some("urgent"))
    );
    let v1 = json(&api, &["get", "events.v1.events.k8s.io", "pulled.1"]);
    assert_eq!((v1["apiVersion"].as_str(), v1["note"].as_str()), (Some("events.k8s.io/v1"), Some("image pulled")));
    api.ok(&["patch", "events.v1.events.k8s.io", "pulled.1", "--type=merge", "-p", r#"{"note":"pulled again"}"#], None)
        .unwrap();
    assert_eq!(json(&api, &["get", "events.v1.", "pulled.1"])["message"], "pulled again");
    api.ok(&["delete", "events.v1.events.k8s.io", "pulled.1"], None).unwrap();
}
