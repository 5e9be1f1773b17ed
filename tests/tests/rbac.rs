//! RBAC on every request, with stock kubectl against a master: the default roles are in place; a Role and
//! a RoleBinding made with `kubectl create role|rolebinding` let a user do exactly what they name, where
//! they name it; `kubectl auth can-i` (and `--list`) and `kubectl auth whoami` answer as kube-apiserver's;
//! denials are 403 in its words; nobody grants what they do not hold; only who may `impersonate` may
//! `--as`. The non-admin user is a bootstrap token's (`system:bootstrap:<id>`), the only other credential a
//! cluster has until service-account tokens.

use std::time::Duration;

use keel_tests::masters::{json, Api};
use keel_tests::{wait_for, Cluster, Options};

const ID: &str = "rbac01";
const TOKEN: &str = "rbac01.0123456789abcdef";
const USER: &str = "system:bootstrap:rbac01";

/// kubectl as the token's user: (exit status, stdout, stderr).
fn as_user(api: &Api, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--token", TOKEN];
    all.extend(args);
    let out = api.kubectl(&all, None).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_and_bindings_decide_what_a_user_may_do() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bootstrap-token-{ID}, namespace: kube-system}}\n\
         type: bootstrap.kubernetes.io/token\nstringData: {{token-id: {ID}, token-secret: 0123456789abcdef, \
         usage-bootstrap-authentication: \"true\"}}\n"
    );
    api.ok(&["apply", "-f", "-"], Some(&secret)).unwrap();
    for ns in ["a", "b"] {
        api.ok(&["create", "namespace", ns], None).unwrap();
    }

    // The defaults: cluster-admin for system:masters, the aggregated user-facing roles.
    wait_for("the default roles", Duration::from_secs(30), || {
        let out = api.ok(&["get", "clusterroles", "-o", "name"], None).unwrap_or_default();
        (
            ["cluster-admin", "admin", "edit", "view", "system:basic-user"]
                .iter()
                .all(|r| out.contains(&format!("/{r}\n"))),
            out,
        )
    })
    .await;
    // The aggregated roles show what they grant (kube-controller-manager's aggregation controller).
    wait_for("admin aggregated", Duration::from_secs(30), || {
        let admin = json(&api, &["get", "clusterrole", "admin"]);
        let rules = admin["rules"].as_array().map_or(0, Vec::len);
        (rules > 20 && admin["rules"].to_string().contains("rolebindings"), rules)
    })
    .await;
    let table = api.ok(&["get", "clusterrolebinding", "cluster-admin", "-o", "wide"], None).unwrap();
    assert!(table.contains("ClusterRole/cluster-admin") && table.contains("system:masters"), "{table}");

    // Nothing yet but discovery and asking about oneself.
    let (ok, _, err) = as_user(&api, &["get", "pods", "-n", "a"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            r#"pods is forbidden: User "{USER}" cannot list resource "pods" in API group "" in the namespace "a""#
        )),
        "{err}"
    );
    let (ok, out, _) = as_user(&api, &["auth", "whoami"]);
    assert!(ok && out.contains(USER) && out.contains("system:bootstrappers"), "{out}");

    // A Role in namespace a, bound to the user there.
    api.ok(&["create", "role", "pod-reader", "-n", "a", "--verb=get,list,watch", "--resource=pods"], None).unwrap();
    api.ok(&["create", "rolebinding", "read-pods", "-n", "a", "--role=pod-reader", &format!("--user={USER}")], None)
        .unwrap();
    wait_for("the binding takes effect", Duration::from_secs(10), || {
        (as_user(&api, &["get", "pods", "-n", "a"]).0, ())
    })
    .await;
    let row = api.ok(&["get", "rolebinding", "read-pods", "-n", "a", "-o", "wide"], None).unwrap();
    assert!(row.contains("Role/pod-reader") && row.contains(USER), "{row}");
    for (args, allowed) in [
        (vec!["list", "pods", "-n", "a"], true),
        (vec!["get", "pods/web", "-n", "a"], true),
        (vec!["watch", "pods", "-n", "a"], true),
        (vec!["delete", "pods", "-n", "a"], false),
        (vec!["list", "pods", "-n", "b"], false),
        (vec!["list", "secrets", "-n", "a"], false),
        (vec!["list", "pods", "--all-namespaces"], false),
        (vec!["create", "selfsubjectaccessreviews"], true),
    ] {
        let mut all = vec!["auth", "can-i"];
        all.extend(&args);
        let (ok, out, _) = as_user(&api, &all);
        assert_eq!((ok, out.trim()), (allowed, if allowed { "yes" } else { "no" }), "can-i {args:?}");
    }
    let (_, list, _) = as_user(&api, &["auth", "can-i", "--list", "-n", "a"]);
    assert!(list.lines().any(|l| l.starts_with("pods ") && l.contains("[get list watch]")), "{list}");
    assert!(list.contains("selfsubjectaccessreviews.authorization.k8s.io"), "{list}");
    let (ok, _, err) = as_user(&api, &["get", "secrets", "-n", "b"]);
    assert!(!ok && err.contains("cannot list resource \"secrets\""), "{err}");
    // The admin answers for others too (SubjectAccessReview through impersonation).
    let (ok, out) = {
        let out = api.kubectl(&["auth", "can-i", "list", "pods", "-n", "a", "--as", USER], None).unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert!(ok && out == "yes", "{out}");
    // A LocalSubjectAccessReview asks within its namespace only.
    let review = |kind: &str, ns: &str, user: &str, groups: &str, attributes: &str| {
        let text = format!(
            "apiVersion: authorization.k8s.io/v1\nkind: {kind}\nmetadata: {{namespace: {ns}}}\nspec: {{user: {user:?}, groups: [{groups}], resourceAttributes: {{{attributes}}}}}\n"
        );
        api.kubectl(&["create", "-f", "-", "-o", "json"], Some(&text)).unwrap()
    };
    let allowed = |out: std::process::Output| -> bool {
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["status"]["allowed"] == true
    };
    assert!(allowed(review("LocalSubjectAccessReview", "a", USER, "", "verb: list, resource: pods")));
    assert!(!allowed(review("LocalSubjectAccessReview", "a", USER, "", "verb: list, resource: secrets")));
    let out = review("LocalSubjectAccessReview", "a", USER, "", "verb: list, resource: pods, namespace: b");
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.resourceAttributes.namespace"), "{out:?}");
    // Access reviews answer for nodes as requests are decided: a node may read the Secret of a pod bound to it,
    // and no other.
    api.ok(&["create", "secret", "generic", "used", "-n", "a", "--from-literal=k=v"], None).unwrap();
    api.ok(&["create", "secret", "generic", "unused", "-n", "a", "--from-literal=k=v"], None).unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: bound, namespace: a}\nspec: {nodeName: n1, containers: [{name: c, image: busybox}], volumes: [{name: s, secret: {secretName: used}}]}\n";
    api.ok(&["create", "-f", "-"], Some(pod)).unwrap();
    let node = |secret: &str| {
        let attributes = format!("verb: get, resource: secrets, namespace: a, name: {secret}");
        allowed(review("SubjectAccessReview", "a", "system:node:n1", "system:nodes", &attributes))
    };
    wait_for("the node authorizer sees the pod", Duration::from_secs(10), || (node("used"), ())).await;
    assert!(!node("unused"));

    // Nobody grants what they do not hold: the user may make roles and bindings in a, but only of what
    // they may do themselves.
    api.ok(&["create", "role", "rbac-maker", "-n", "a", "--verb=create", "--resource=roles,rolebindings"], None)
        .unwrap();
    api.ok(&["create", "rolebinding", "make-rbac", "-n", "a", "--role=rbac-maker", &format!("--user={USER}")], None)
        .unwrap();
    wait_for("the second binding takes effect", Duration::from_secs(10), || {
        (as_user(&api, &["auth", "can-i", "create", "roles", "-n", "a"]).0, ())
    })
    .await;
    let (ok, _, err) = as_user(&api, &["create", "role", "secrets", "-n", "a", "--verb=get", "--resource=secrets"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            r#"roles.rbac.authorization.k8s.io "secrets" is forbidden: user "{USER}" (groups=["system:bootstrappers" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#
        )) && err.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#),
        "{err}"
    );
    let (ok, _, err) = as_user(&api, &["create", "role", "pods-too", "-n", "a", "--verb=get,list", "--resource=pods"]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        as_user(&api, &["create", "rolebinding", "admin-too", "-n", "a", "--clusterrole=admin", "--user=eve"]);
    assert!(!ok && err.contains("is attempting to grant RBAC permissions not currently held"), "{err}");
    let (ok, _, err) =
        as_user(&api, &["create", "rolebinding", "readers", "-n", "a", "--role=pod-reader", "--user=eve"]);
    assert!(ok, "binding what one holds is fine: {err}");
    assert!(json(&api, &["get", "rolebindings", "-n", "a"])["items"].as_array().unwrap().len() == 3);

    // Only who may impersonate may act as someone else.
    let (ok, _, err) = as_user(&api, &["get", "pods", "-n", "a", "--as", "admin"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            r#"users "admin" is forbidden: User "{USER}" cannot impersonate resource "users" in API group "" at the cluster scope"#
        )),
        "{err}"
    );
    let whoami = api.ok(&["auth", "whoami", "--as", "eve", "--as-group", "team"], None).unwrap();
    assert!(whoami.contains("eve") && whoami.contains("[team system:authenticated]"), "{whoami}");

    // A bad role is refused in kube-apiserver's words, and changes nothing.
    let bad = api
        .kubectl(
            &["create", "-f", "-"],
            Some("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: bad, namespace: a}\nrules: [{apiGroups: [\"\"], resources: [pods]}]\n"),
        )
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("rules[0].verbs: Required value: verbs must contain at least one value"), "{err}");
    assert!(api.kubectl(&["get", "role", "bad", "-n", "a"], None).unwrap().status.code() == Some(1));
}

/// `keel server kubeconfig --user U --group G` makes a kubeconfig with a client certificate the cluster CA
/// signed (through a CertificateSigningRequest); stock kubectl authenticates with it as U in G, and gets
/// what RBAC grants G. A request `kubectl certificate approve` approves is signed the same way; a denied
/// one never is.
#[tokio::test(flavor = "multi_thread")]
async fn users_authenticate_with_client_certificates_the_cluster_signed() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let out = std::process::Command::new(keel_tests::keel_bin())
        .args(["server", "kubeconfig", "--user", "carol", "--group", "ops", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = c.dir.path().join("carol.kubeconfig");
    std::fs::write(&kubeconfig, &out.stdout).unwrap();
    let carol = Api { kubeconfig, port: api.port };
    let whoami = carol.ok(&["auth", "whoami"], None).unwrap();
    assert!(whoami.contains("carol") && whoami.contains("[ops system:authenticated]"), "{whoami}");
    let denied = carol.kubectl(&["get", "nodes"], None).unwrap();
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains(r#"User "carol" cannot list resource "nodes""#),
        "{denied:?}"
    );
    api.ok(&["create", "clusterrolebinding", "ops-view", "--clusterrole=view", "--group=ops"], None).unwrap();
    wait_for("ops may view", Duration::from_secs(10), || {
        (carol.kubectl(&["get", "pods", "-A"], None).unwrap().status.success(), ())
    })
    .await;
    let csrs = api.ok(&["get", "csr"], None).unwrap();
    assert!(csrs.contains("kubernetes.io/kube-apiserver-client") && csrs.contains("Approved,Issued"), "{csrs}");

    // kubectl certificate approve / deny.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "dave");
    let request = params.serialize_request(&key).unwrap().pem().unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(request);
    for name in ["dave", "mallory"] {
        let csr = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\n\
             spec: {{request: {b64}, signerName: kubernetes.io/kube-apiserver-client, usages: [client auth]}}\n"
        );
        api.ok(&["apply", "-f", "-"], Some(&csr)).unwrap();
    }
    let pending = api.ok(&["get", "csr", "dave"], None).unwrap();
    assert!(pending.contains("Pending") && pending.contains("admin"), "the requestor is who asked: {pending}");
    api.ok(&["certificate", "approve", "dave"], None).unwrap();
    api.ok(&["certificate", "deny", "mallory"], None).unwrap();
    let dave = json(&api, &["get", "csr", "dave"]);
    assert!(dave["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()), "{dave}");
    let mallory = json(&api, &["get", "csr", "mallory"]);
    assert!(mallory["status"].get("certificate").is_none(), "{mallory}");
    assert_eq!(mallory["status"]["conditions"][0]["type"], "Denied");
}
