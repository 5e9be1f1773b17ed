//! CustomResourceDefinitions (issue 25, item 1), with stock kubectl on three stacked masters and with a
//! kube-rs operator: a CRD applied from YAML is served at once by every master; its objects are validated
//! against the schema (types, enum, CEL rules: 422 naming the field), defaulted and pruned, listed with the
//! printer columns (and in `kubectl get all`), watched, scaled through `/scale`, their status written
//! through `/status`, what they own garbage-collected with them; deleting the CRD deletes them.

use std::time::Duration;

use keel_tests::masters::json;
use keel_tests::{wait_for, Cluster, Options};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - {rule: "self.replicas <= 10", message: "at most 10 replicas"}
            properties:
              size: {type: string, enum: [small, large]}
              replicas: {type: integer, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_resource_is_served_validated_scaled_and_goes_with_its_definition() {
    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    for i in 0..3 {
        c.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let (first, other) = (c.api(0), c.api(1));
    first.ok(&["apply", "-f", "-"], Some(CRD)).unwrap();
    let crd = json(&first, &["get", "crd", "widgets.example.com"]);
    let established = crd["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Established");
    assert!(established, "{crd}");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");

    // Another master serves it at once (it reads the definitions again rather than answer 404).
    other.ok(&["apply", "-f", "-"], Some(&widget("small-one", "{size: small}"))).unwrap();
    let w = json(&first, &["get", "widget", "small-one"]);
    assert_eq!(w["spec"]["replicas"], 1, "defaulted: {w}");
    assert_eq!(w["metadata"]["generation"], 1);

    // Validation: types and enums, and CEL rules, with the field named.
    let bad = first.kubectl(&["apply", "-f", "-"], Some(&widget("bad", "{size: huge, replicas: many}"))).unwrap();
    let err = stderr(&bad);
    assert!(err.contains("spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\""), "{err}");
    assert!(
        err.contains("spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer"),
        "{err}"
    );
    let cel = first.kubectl(&["apply", "-f", "-"], Some(&widget("big", "{size: large, replicas: 11}"))).unwrap();
    assert!(stderr(&cel).contains("spec: Invalid value: \"object\": at most 10 replicas"), "{}", stderr(&cel));
    // Unknown fields: refused under kubectl's strict validation, pruned (with a warning) without it.
    let strict = first.kubectl(&["apply", "-f", "-"], Some(&widget("extra", "{size: small, colour: red}"))).unwrap();
    assert!(stderr(&strict).contains("unknown field \"spec.colour\""), "{}", stderr(&strict));
    let loose = first
        .kubectl(&["apply", "--validate=false", "-f", "-"], Some(&widget("extra", "{size: small, colour: red}")))
        .unwrap();
    assert!(loose.status.success(), "{}", stderr(&loose));
    assert!(json(&first, &["get", "widget", "extra"])["spec"].get("colour").is_none(), "pruned");

    // Printer columns, short names and categories.
    let table = first.ok(&["get", "wd"], None).unwrap();
    assert!(table.contains("SIZE") && table.contains("REPLICAS") && table.contains("small-one"), "{table}");
    let all = first.ok(&["get", "all"], None).unwrap();
    assert!(all.contains("widget.example.com/small-one"), "{all}");

    // Watched, scaled, status through its subresource; every version serves the same objects.
    let watch_out = c.dir.path().join("watch.out");
    let mut watcher = first.kubectl_background(&["get", "widgets", "--watch", "-o", "name"], &watch_out).unwrap();
    first.ok(&["scale", "widget", "small-one", "--replicas=3"], None).unwrap();
    let scale = first.ok(&["get", "--raw", "/apis/example.com/v1/namespaces/default/widgets/small-one/scale"], None);
    let scale: serde_json::Value = serde_json::from_str(&scale.unwrap()).unwrap();
    assert_eq!(scale["spec"]["replicas"], 3);
    first
        .ok(
            &[
                "patch",
                "widget",
                "small-one",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"replicas":3}}"#,
            ],
            None,
        )
        .unwrap();
    let old = json(&first, &["get", "widgets.v1beta1.example.com", "small-one"]);
    assert_eq!(old["apiVersion"], "example.com/v1beta1");
    assert_eq!((old["spec"]["replicas"].as_i64(), old["status"]["replicas"].as_i64()), (Some(3), Some(3)));
    assert_eq!(old["metadata"]["generation"], 2, "status writes leave the generation");
    wait_for("the watch to see the widget", Duration::from_secs(10), || {
        let seen = std::fs::read_to_string(&watch_out).unwrap_or_default();
        (seen.contains("widget.example.com/small-one"), seen)
    })
    .await;
    let _ = watcher.kill();
    let _ = watcher.wait();

    // Garbage collection: what a custom object owns goes with it.
    let uid = json(&first, &["get", "widget", "extra"])["metadata"]["uid"].as_str().unwrap().to_string();
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  ownerReferences:\n  - {{apiVersion: example.com/v1, kind: Widget, name: extra, uid: {uid}}}\n"
    );
    first.ok(&["apply", "-f", "-"], Some(&owned)).unwrap();
    first.ok(&["delete", "widget", "extra"], None).unwrap();
    wait_for("the garbage collector to delete what the widget owned", Duration::from_secs(60), || {
        let out = first.kubectl(&["get", "configmap", "owned"], None).unwrap();
        (!out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;

    // The APIServices list every group version served, built-in ones as Local; one for an aggregated API
    // server is kept and shown not available (keel does not proxy them).
    let services = first.ok(&["get", "apiservices"], None).unwrap();
    assert!(
        services.lines().any(|l| l.starts_with("v1.apps ") && l.contains("Local") && l.contains("True")),
        "{services}"
    );
    let aggregated = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1beta1.metrics.k8s.io}\nspec: {group: metrics.k8s.io, version: v1beta1, groupPriorityMinimum: 100, versionPriority: 100, service: {namespace: kube-system, name: metrics-server}}\n";
    first.ok(&["apply", "-f", "-"], Some(aggregated)).unwrap();
    let shown = first.ok(&["get", "apiservice", "v1beta1.metrics.k8s.io"], None).unwrap();
    assert!(shown.contains("kube-system/metrics-server") && shown.contains("False"), "{shown}");

    // Deleting the definition deletes its objects, then it goes.
    first.ok(&["delete", "crd", "widgets.example.com", "--timeout=60s"], None).unwrap();
    wait_for("the definition to go", Duration::from_secs(30), || {
        let out = first.kubectl(&["get", "crd", "widgets.example.com"], None).unwrap();
        (!out.status.success(), stderr(&out))
    })
    .await;
    let raw = first.kubectl(&["get", "--raw", "/apis/example.com/v1/namespaces/default/widgets"], None).unwrap();
    assert!(!raw.status.success(), "no longer served");
    let leftovers = first.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"], None).unwrap();
    assert!(!leftovers.contains("small-one"));
}

mod operator {
    //! A small operator built with kube-rs (`#[derive(CustomResource)]`, its controller run outside the
    //! cluster), as against Kubernetes.

    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams, PostParams};
    use kube::runtime::controller::Action;
    use kube::runtime::{watcher, Controller};
    use kube::{Api, Client, CustomResource, CustomResourceExt, ResourceExt};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use keel_tests::{wait_for, Cluster, Options};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "keel.example", version = "v1", kind = "Echo", namespaced, status = "EchoStatus")]
    pub struct EchoSpec {
        pub message: String,
        pub times: i32,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    pub struct EchoStatus {
        pub echoed: String,
    }

    async fn reconcile(echo: Arc<Echo>, client: Arc<Client>) -> Result<Action, kube::Error> {
        let api: Api<Echo> = Api::namespaced((*client).clone(), &echo.namespace().unwrap_or_default());
        let echoed = vec![echo.spec.message.as_str(); echo.spec.times.max(0) as usize].join(" ");
        let patch = serde_json::json!({"status": {"echoed": echoed}});
        api.patch_status(&echo.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(Action::await_change())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_kube_rs_operator_reconciles_its_custom_objects() {
        let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
        let api = c.api(0);
        api.wait_ready(Duration::from_secs(60)).await.unwrap();
        let client = api.client().await;

        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &Echo::crd()).await.unwrap();
        let echoes: Api<Echo> = Api::namespaced(client.clone(), "default");
        let controller = tokio::spawn(
            Controller::new(echoes.clone(), watcher::Config::default())
                .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(client.clone()))
                .for_each(|_| async {}),
        );
        let echo = Echo::new("hello", EchoSpec { message: "hi".into(), times: 3 });
        echoes.create(&PostParams::default(), &echo).await.unwrap();
        let status = |e: Option<Echo>| e.and_then(|e| e.status).map(|s| s.echoed).unwrap_or_default();
        let mut seen = String::new();
        for _ in 0..100 {
            seen = status(echoes.get_opt("hello").await.unwrap());
            if seen == "hi hi hi" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, "hi hi hi");
        // A change of spec is reconciled again.
        let patch = serde_json::json!({"spec": {"times": 1}});
        echoes.patch("hello", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        wait_for("the operator to reconcile the change", Duration::from_secs(10), || {
            let out = api.ok(&["get", "echo", "hello", "-o", "jsonpath={.status.echoed}"], None).unwrap_or_default();
            (out == "hi", out)
        })
        .await;
        controller.abort();
    }
}
