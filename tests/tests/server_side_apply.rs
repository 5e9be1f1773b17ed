//! Server-side apply and managed fields (issue 25, item 2), with stock kubectl and kube-rs: every write
//! records its manager's fields; two appliers of one field conflict (409 naming the field and the manager)
//! until one forces; a field an applier drops goes; apply creates; client-side apply upgrades to
//! server-side and back; custom objects merge by their schema's list types.

use std::time::Duration;

use keel_tests::masters::json;
use keel_tests::{Cluster, Options};

fn deployment(replicas: u32, extra_label: bool) -> String {
    let label = if extra_label { "\n    tier: web" } else { "" };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web{label}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: web, image: httpd}}]\n"
    )
}

fn managers(object: &serde_json::Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}/{}", e["manager"].as_str().unwrap_or(""), e["operation"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn appliers_conflict_force_and_drop_fields_with_kubectl() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let show = ["get", "deployment", "web", "--show-managed-fields"];

    // Apply creates, its fields the applier's.
    let out = api.ok(&["apply", "--server-side", "-f", "-"], Some(&deployment(2, true))).unwrap();
    assert!(out.contains("serverside-applied"), "{out}");
    let d = json(&api, &show);
    assert!(managers(&d).contains(&"kubectl/Apply".to_string()), "{:?}", managers(&d));
    let fields = d["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["operation"] == "Apply").unwrap();
    assert_eq!(
        fields["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."],
        serde_json::json!({})
    );

    // A second manager setting the same field to another value conflicts, naming both.
    let other = ["apply", "--server-side", "--field-manager=other", "-f", "-"];
    let refused = api.kubectl(&other, Some(&deployment(3, false))).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("conflict with \"kubectl\" using apps/v1: .spec.replicas"), "{err}");
    // Forced, it takes the field over.
    let forced = ["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-"];
    api.ok(&forced, Some(&deployment(3, false))).unwrap();
    let d = json(&api, &show);
    assert_eq!(d["spec"]["replicas"], 3);
    let by = |m: &str| {
        d["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == m).cloned().unwrap()
    };
    assert!(by("other")["fieldsV1"]["f:spec"].get("f:replicas").is_some());
    assert!(by("kubectl")["fieldsV1"]["f:spec"].get("f:replicas").is_none());

    // An update takes the fields it changes: kubectl scale, then an apply of other replicas conflicts with it.
    api.ok(&["scale", "deployment", "web", "--replicas=5"], None).unwrap();
    let refused = api.kubectl(&other, Some(&deployment(3, false))).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("with subresource \"scale\" using apps/v1: .spec.replicas"), "{err}");

    // A field the applier no longer applies goes (no one else manages it); replicas, the scaler's now, is
    // taken back by force.
    api.ok(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&deployment(3, false))).unwrap();
    let d = json(&api, &show);
    assert!(d["metadata"]["labels"].get("tier").is_none(), "{}", d["metadata"]["labels"]);
    assert_eq!(d["metadata"]["labels"]["app"], "web");

    // Ports are told apart by number and protocol (DNS serves 53 over UDP and TCP): applied again, with
    // another target on one of them, both stay, each its own item.
    let dns = |target: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: dns}}\nspec:\n  selector: {{app: dns}}\n  ports:\n  \
             - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}\n  - {{name: dns-tcp, port: 53, protocol: TCP, \
             targetPort: {target}}}\n"
        )
    };
    api.ok(&["apply", "--server-side", "-f", "-"], Some(&dns(53))).unwrap();
    api.ok(&["apply", "--server-side", "-f", "-"], Some(&dns(5353))).unwrap();
    let svc = json(&api, &["get", "service", "dns", "--show-managed-fields"]);
    let ports: Vec<(String, String, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["protocol"].as_str().unwrap().into(),
                p["targetPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("dns".into(), "UDP".into(), 53), ("dns-tcp".into(), "TCP".into(), 5353)], "{svc}");
    let applied =
        svc["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["operation"] == "Apply").unwrap();
    let keys: Vec<&String> = applied["fieldsV1"]["f:spec"]["f:ports"].as_object().unwrap().keys().collect();
    assert!(keys.contains(&&"k:{\"port\":53,\"protocol\":\"UDP\"}".to_string()), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_side_apply_upgrades_to_server_side_and_custom_objects_merge_by_their_schema() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();

    // Client-side apply, then server-side, then client-side again.
    api.ok(&["apply", "-f", "-"], Some(&deployment(2, true))).unwrap();
    let out = api.ok(&["apply", "--server-side", "-f", "-"], Some(&deployment(2, false))).unwrap();
    assert!(out.contains("serverside-applied"), "{out}");
    let d = json(&api, &["get", "deployment", "web", "--show-managed-fields"]);
    assert!(managers(&d).contains(&"kubectl/Apply".to_string()), "{:?}", managers(&d));
    assert!(d["metadata"]["labels"].get("tier").is_none(), "the upgrade hands the applied fields over: {d}");
    api.ok(&["apply", "-f", "-"], Some(&deployment(4, false))).unwrap();
    assert_eq!(json(&api, &["get", "deployment", "web"])["spec"]["replicas"], 4);

    // A custom resource whose list is keyed by name: two appliers' items live side by side.
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: routes.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: routes, kind: Route}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              owner: {type: string}
              rules:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    to: {type: string}
"#;
    api.ok(&["apply", "-f", "-"], Some(crd)).unwrap();
    let route = |rule: &str, owner: &str| {
        format!("apiVersion: example.com/v1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  owner: {owner}\n  rules: [{{name: {rule}, to: {rule}-svc}}]\n")
    };
    api.ok(&["apply", "--server-side", "--field-manager=team-a", "-f", "-"], Some(&route("a", "ops"))).unwrap();
    api.ok(&["apply", "--server-side", "--field-manager=team-b", "-f", "-"], Some(&route("b", "ops"))).unwrap();
    let r = json(&api, &["get", "route", "r"]);
    let names: Vec<&str> = r["spec"]["rules"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    let refused = api
        .kubectl(&["apply", "--server-side", "--field-manager=team-b", "-f", "-"], Some(&route("b", "dev")))
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Apply failed with 1 conflict") && err.contains(".spec.owner"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_patch_apply_creates_updates_and_forces() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};

    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let client = api.client().await;
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "default");
    let cm = |v: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": v}});
    let mine = PatchParams::apply("my-operator");
    let created = cms.patch("settings", &mine, &Patch::Apply(cm("fast"))).await.unwrap();
    assert_eq!(created.data.unwrap()["mode"], "fast");
    let theirs = PatchParams::apply("their-operator");
    let err = cms.patch("settings", &theirs, &Patch::Apply(cm("slow"))).await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"), "{s:?}"),
        other => panic!("{other}"),
    }
    let forced = cms.patch("settings", &theirs.force(), &Patch::Apply(cm("slow"))).await.unwrap();
    assert_eq!(forced.data.unwrap()["mode"], "slow");
    let managers: Vec<String> =
        forced.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"their-operator".to_string()), "{managers:?}");

    // An apply must name its field manager.
    let request = http::Request::patch("/api/v1/namespaces/default/configmaps/settings")
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&cm("x")).unwrap())
        .unwrap();
    match client.request::<serde_json::Value>(request).await.unwrap_err() {
        kube::Error::Api(s) => assert!(s.code == 422 && s.message.contains("fieldManager"), "{s:?}"),
        other => panic!("{other}"),
    }
}
