//! Dynamic admission (`admissionregistration.k8s.io/v1`): which webhooks of the Mutating- and
//! ValidatingWebhookConfigurations a request goes to (rules by operation, group, version, resource and
//! scope; namespace and object selectors), the `AdmissionReview` sent to each, and what its answer means
//! (allowed, with a JSON patch and warnings; or denied, in kube-apiserver's words). Pure: the API server
//! calls the webhooks.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1 as reg;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::selector::LabelSelector;
use crate::status::ApiError;
use crate::validation::Cause;

/// Where a webhook is called.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Url(String),
    Service { namespace: String, name: String, path: String, port: u16 },
}

/// One webhook of a configuration, ready to match and call.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub configuration: String,
    pub name: String,
    pub mutating: bool,
    pub endpoint: Endpoint,
    /// PEM certificates that may sign the webhook's serving certificate.
    pub ca_bundle: Vec<u8>,
    pub rules: Vec<reg::RuleWithOperations>,
    /// `failurePolicy: Ignore`: a webhook that cannot be called lets the request through.
    pub ignore_failures: bool,
    pub namespace_selector: Option<LabelSelector>,
    pub object_selector: Option<LabelSelector>,
    pub side_effects: String,
    pub timeout_seconds: u64,
    /// `matchPolicy: Exact`: only the versions its rules name (by default, `Equivalent`, a request through
    /// another version of the same resource matches too, converted to the version the rules name).
    pub exact: bool,
    /// A mutating webhook's `reinvocationPolicy: IfNeeded`: called once more when a later webhook changed
    /// the object after it.
    pub reinvoke: bool,
}

/// What a request is, as webhooks are matched against it and told of it.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// CREATE, UPDATE or DELETE.
    pub operation: &'a str,
    pub resource: &'a Resource,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    /// The labels of the request's namespace (or of the Namespace itself being written), when known.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    pub dry_run: bool,
    pub user: &'a str,
    pub groups: &'a [String],
    /// The other versions the same resource is served at (a custom resource's other served versions),
    /// whose objects are the same but for `apiVersion`.
    pub equivalent_versions: &'a [&'static str],
}

/// Every webhook of the configurations (objects as stored), mutating ones first, each kind in the order of
/// its configurations' names, as kube-apiserver orders them.
pub fn webhooks(mutating: &[Value], validating: &[Value]) -> Vec<Webhook> {
    let mut out = Vec::new();
    for (configurations, is_mutating) in [(mutating, true), (validating, false)] {
        let mut sorted: Vec<&Value> = configurations.iter().collect();
        sorted.sort_by_key(|c| crate::meta::name(c).to_string());
        for c in sorted {
            let configuration = crate::meta::name(c).to_string();
            for w in c.get("webhooks").and_then(Value::as_array).into_iter().flatten() {
                let Ok(hook) = serde_json::from_value::<reg::ValidatingWebhook>(w.clone()) else { continue };
                if let Some(mut webhook) = read(configuration.clone(), is_mutating, hook) {
                    webhook.reinvoke = is_mutating && w.get("reinvocationPolicy") == Some(&json!("IfNeeded"));
                    out.push(webhook);
                }
            }
        }
    }
    out
}

/// A webhook (the mutating and validating kinds share these fields).
fn read(configuration: String, mutating: bool, w: reg::ValidatingWebhook) -> Option<Webhook> {
    let endpoint = match (&w.client_config.url, &w.client_config.service) {
        (Some(url), _) => Endpoint::Url(url.clone()),
        (None, Some(s)) => Endpoint::Service {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            path: s.path.clone().unwrap_or_else(|| "/".into()),
            port: s.port.unwrap_or(443) as u16,
        },
        (None, None) => return None,
    };
    let selector = |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
        s.as_ref().and_then(|s| LabelSelector::from_api(s).ok())
    };
    Some(Webhook {
        configuration,
        name: w.name,
        mutating,
        endpoint,
        ca_bundle: w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default(),
        rules: w.rules.unwrap_or_default(),
        ignore_failures: w.failure_policy.as_deref() == Some("Ignore"),
        namespace_selector: selector(&w.namespace_selector),
        object_selector: selector(&w.object_selector),
        side_effects: w.side_effects,
        timeout_seconds: w.timeout_seconds.unwrap_or(10).clamp(1, 30) as u64,
        exact: w.match_policy.as_deref() == Some("Exact"),
        reinvoke: false,
    })
}

fn listed(list: &Option<Vec<String>>, value: &str) -> bool {
    list.iter().flatten().any(|x| x == "*" || x == value)
}

impl Webhook {
    /// Whether the request goes to this webhook.
    pub fn matches(&self, a: &Attributes) -> bool {
        self.matched_version(a).is_some()
    }

    /// The version the request goes to this webhook as: its own when the rules name it, else (under
    /// `matchPolicy: Equivalent`) the first equivalent version they name; `None` if it does not go.
    pub fn matched_version<'v>(&self, a: &Attributes<'v>) -> Option<&'v str> {
        let own = std::iter::once(a.resource.version);
        let others = a.equivalent_versions.iter().copied().filter(|_| !self.exact);
        let version = own.chain(others).find(|v| self.ruled(a, v))?;
        self.selected(a).then_some(version)
    }

    /// Whether a rule takes the request, as if made through `version`.
    fn ruled(&self, a: &Attributes, version: &str) -> bool {
        self.rules.iter().any(|r| {
            let scope = r.scope.as_deref().unwrap_or("*");
            let in_scope = match scope {
                "Cluster" => !a.resource.namespaced,
                "Namespaced" => a.resource.namespaced,
                _ => true,
            };
            // "*" is every resource (not its subresources), "*/*" every resource and subresource, "pods/*"
            // every subresource of pods, "*/status" every status.
            let resources = r.resources.iter().flatten().any(|x| match (x.split_once('/'), a.subresource) {
                (None, None) => x == "*" || x == a.resource.plural,
                (Some((res, sub)), Some(s)) => (res == "*" || res == a.resource.plural) && (sub == "*" || sub == s),
                _ => false,
            });
            listed(&r.operations, a.operation)
                && listed(&r.api_groups, a.resource.group)
                && listed(&r.api_versions, version)
                && resources
                && in_scope
        })
    }

    /// Whether the webhook's object and namespace selectors take the request.
    fn selected(&self, a: &Attributes) -> bool {
        let labels = |o: Option<&Value>| o.map(crate::meta::labels);
        if let Some(selector) = &self.object_selector {
            let either = [labels(a.object), labels(a.old_object)];
            if !either.iter().flatten().any(|l| selector.matches(l)) {
                return false;
            }
        }
        if let (Some(selector), Some(ns_labels)) = (&self.namespace_selector, &a.namespace_labels) {
            // Cluster-scoped objects other than Namespaces are not in a namespace: the selector does not apply.
            if (a.resource.namespaced || a.resource.kind == "Namespace") && !selector.matches(ns_labels) {
                return false;
            }
        }
        true
    }

    /// A dry-run request may only go to webhooks without side effects.
    pub fn refuses_dry_run(&self, a: &Attributes) -> Option<ApiError> {
        (a.dry_run && !matches!(self.side_effects.as_str(), "None" | "NoneOnDryRun"))
            .then(|| ApiError::BadRequest(format!("admission webhook {:?} does not support dry run", self.name)))
    }
}

/// The `AdmissionReview` a webhook is sent, of a request made through `a.resource` and shown as `version`
/// of it (its objects converted to that version already).
pub fn review(a: &Attributes, version: &str, uid: &str) -> Value {
    let r = a.resource;
    let gvk = json!({"group": r.group, "version": version, "kind": r.kind});
    let gvr = json!({"group": r.group, "version": version, "resource": r.plural});
    let asked_gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let asked_gvr = json!({"group": r.group, "version": r.version, "resource": r.plural});
    let mut request = json!({
        "uid": uid,
        "kind": gvk, "resource": gvr, "requestKind": asked_gvk, "requestResource": asked_gvr,
        "name": a.name,
        "operation": a.operation,
        "userInfo": {"username": a.user, "groups": a.groups},
        "object": a.object.cloned().unwrap_or(Value::Null),
        "oldObject": a.old_object.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": match a.operation {
            "CREATE" => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
            "UPDATE" => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
            _ => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
        },
    });
    if let Some(ns) = a.namespace {
        request["namespace"] = json!(ns);
    }
    if let Some(sub) = a.subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// What a webhook answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Let through, with the JSON patch a mutating webhook gave (its operations) and warnings.
    Allowed {
        patch: Option<Value>,
        warnings: Vec<String>,
    },
    Denied(ApiError),
}

/// Reads a webhook's answer to the review of `uid`; `Err` says why the answer is not a valid one (a call
/// failure, under the webhook's failure policy).
pub fn verdict(webhook: &Webhook, answer: &Value, uid: &str) -> Result<Verdict, String> {
    let response = answer.get("response").ok_or("the response has no \"response\"")?;
    if answer.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || answer.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err("expected an admission.k8s.io/v1 AdmissionReview".into());
    }
    if response.get("uid").and_then(Value::as_str) != Some(uid) {
        return Err(format!("expected response.uid={uid:?}"));
    }
    let warnings = response
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
        let status = response.get("status").unwrap_or(&Value::Null);
        let code = status.get("code").and_then(Value::as_u64).filter(|c| *c >= 400).unwrap_or(400) as u16;
        let denied = format!("admission webhook {:?} denied the request", webhook.name);
        let message = match status.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            Some(m) => format!("{denied}: {m}"),
            None => format!("{denied} without explanation"),
        };
        let reason = status.get("reason").and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Verdict::Denied(ApiError::Webhook { code, reason, message }));
    }
    let patch = match response.get("patch").and_then(Value::as_str) {
        None => None,
        Some(_) if !webhook.mutating => return Err("validating webhook may not return a patch".into()),
        Some(encoded) => {
            if response.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
                return Err("the patch must be of patchType JSONPatch".into());
            }
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("the patch is not base64: {e}"))?;
            Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("the patch is not JSON: {e}"))?)
        }
    };
    Ok(Verdict::Allowed { patch, warnings })
}

/// The error for a webhook that could not be called (under `failurePolicy: Fail`).
pub fn call_failed(webhook: &Webhook, why: &str) -> ApiError {
    ApiError::Webhook {
        code: 500,
        reason: "InternalError".into(),
        message: format!("Internal error occurred: failed calling webhook {:?}: {why}", webhook.name),
    }
}

/// Defaults of a webhook configuration (kube's `SetDefaults_*`), in place.
pub fn default(configuration: &mut Value, mutating: bool) {
    for w in configuration.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(m) = w.as_object_mut() else { continue };
        m.entry("failurePolicy").or_insert_with(|| json!("Fail"));
        m.entry("matchPolicy").or_insert_with(|| json!("Equivalent"));
        m.entry("timeoutSeconds").or_insert_with(|| json!(10));
        m.entry("namespaceSelector").or_insert_with(|| json!({}));
        m.entry("objectSelector").or_insert_with(|| json!({}));
        if mutating {
            m.entry("reinvocationPolicy").or_insert_with(|| json!("Never"));
        }
        for r in m.get_mut("rules").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(r) = r.as_object_mut() {
                r.entry("scope").or_insert_with(|| json!("*"));
            }
        }
        if let Some(service) =
            m.get_mut("clientConfig").and_then(|c| c.get_mut("service")).and_then(Value::as_object_mut)
        {
            service.entry("port").or_insert_with(|| json!(443));
        }
    }
}

const SIDE_EFFECTS: [&str; 2] = ["None", "NoneOnDryRun"];
const FAILURE_POLICIES: [&str; 2] = ["Ignore", "Fail"];

/// Every problem with a webhook configuration.
pub fn validate(configuration: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut names = Vec::new();
    for (i, w) in configuration.get("webhooks").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        let text = |f: &str| w.get(f).and_then(Value::as_str).unwrap_or_default();
        let name = text("name");
        if name.is_empty() {
            causes.push(Cause::required(at("name")));
        } else if names.contains(&name) {
            causes.push(Cause::duplicate(at("name"), name));
        } else if name.split('.').count() < 3 || !crate::validation::dns1123_subdomain(name).is_empty() {
            causes.push(Cause::invalid(
                at("name"),
                name,
                "should be a domain with at least three segments separated by dots",
            ));
        }
        names.push(name);
        match text("sideEffects") {
            "" => causes.push(Cause::required(at("sideEffects"))),
            s if !SIDE_EFFECTS.contains(&s) => causes.push(Cause::not_supported(at("sideEffects"), s, &SIDE_EFFECTS)),
            _ => {}
        }
        let policy = text("failurePolicy");
        if !policy.is_empty() && !FAILURE_POLICIES.contains(&policy) {
            causes.push(Cause::not_supported(at("failurePolicy"), policy, &FAILURE_POLICIES));
        }
        let versions = w.get("admissionReviewVersions").and_then(Value::as_array);
        if !versions.is_some_and(|v| v.iter().any(|x| x == "v1")) {
            causes.push(Cause::invalid(at("admissionReviewVersions"), "", "must include at least one of v1"));
        }
        if let Some(t) = w.get("timeoutSeconds").and_then(Value::as_i64) {
            if !(1..=30).contains(&t) {
                causes.push(Cause::invalid(
                    at("timeoutSeconds"),
                    &t.to_string(),
                    "the timeout value must be between 1 and 30 seconds",
                ));
            }
        }
        let client = w.get("clientConfig").unwrap_or(&Value::Null);
        match (client.get("url").and_then(Value::as_str), client.get("service")) {
            (Some(_), Some(_)) | (None, None) => causes
                .push(Cause::required(format!("{}: exactly one of url or service is required", at("clientConfig")))),
            (Some(url), None) if !url.starts_with("https://") => {
                causes.push(Cause::invalid(at("clientConfig.url"), url, "'https' is the only allowed URL scheme"))
            }
            _ => {}
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configuration(rules: Value, object_selector: Value) -> Value {
        json!({"metadata": {"name": "policy"}, "webhooks": [{
            "name": "deny.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:9443/validate"},
            "rules": rules, "objectSelector": object_selector, "failurePolicy": "Ignore"}]})
    }

    fn attributes<'a>(resource: &'a Resource, object: &'a Value) -> Attributes<'a> {
        Attributes {
            operation: "CREATE",
            resource,
            subresource: None,
            namespace: Some("default"),
            name: "c",
            object: Some(object),
            old_object: None,
            namespace_labels: Some(BTreeMap::new()),
            dry_run: false,
            user: "admin",
            groups: &[],
            equivalent_versions: &[],
        }
    }

    #[test]
    fn requests_go_to_the_webhooks_whose_rules_and_selectors_match() {
        let rules =
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]);
        let hooks = webhooks(&[], &[configuration(rules.clone(), json!({"matchLabels": {"check": "yes"}}))]);
        assert_eq!(hooks.len(), 1);
        assert!(hooks[0].ignore_failures && !hooks[0].mutating);
        let cms = crate::resources::find("", "v1", "configmaps").unwrap();
        let labelled = json!({"metadata": {"labels": {"check": "yes"}}});
        let plain = json!({"metadata": {}});
        assert!(hooks[0].matches(&attributes(cms, &labelled)));
        assert!(!hooks[0].matches(&attributes(cms, &plain)));
        let secrets = crate::resources::find("", "v1", "secrets").unwrap();
        assert!(!hooks[0].matches(&attributes(secrets, &labelled)));
        let update = Attributes { operation: "UPDATE", ..attributes(cms, &labelled) };
        assert!(!hooks[0].matches(&update));
        let any = webhooks(
            &[],
            &[configuration(
                json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]),
                json!({}),
            )],
        );
        assert!(any[0].matches(&update));
        let status = Attributes { subresource: Some("status"), ..attributes(cms, &plain) };
        assert!(!any[0].matches(&status), "\"*\" is every resource, not its subresources");
    }

    #[test]
    fn a_request_through_an_equivalent_version_matches_unless_the_policy_is_exact() {
        let rules =
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v2"], "resources": ["configmaps"]}]);
        let mut exact = configuration(rules.clone(), json!({}));
        exact["webhooks"][0]["matchPolicy"] = json!("Exact");
        let hooks = webhooks(&[], &[configuration(rules, json!({})), exact]);
        let cms = crate::resources::find("", "v1", "configmaps").unwrap();
        let object = json!({"metadata": {}});
        let through_v1 = Attributes { equivalent_versions: &["v2"], ..attributes(cms, &object) };
        assert_eq!(hooks[0].matched_version(&through_v1), Some("v2"), "Equivalent, the default");
        assert_eq!(hooks[1].matched_version(&through_v1), None, "Exact");
        let review = review(&through_v1, "v2", "u");
        assert_eq!(review["request"]["kind"]["version"], "v2");
        assert_eq!(review["request"]["requestKind"]["version"], "v1");
    }

    #[test]
    fn answers_are_read_as_kube_apiserver_reads_them() {
        let hooks = webhooks(&[configuration(json!([]), json!({}))], &[]);
        let w = &hooks[0];
        let denied = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": false, "status": {"message": "no thanks"}}});
        let Verdict::Denied(e) = verdict(w, &denied, "u").unwrap() else { panic!() };
        assert_eq!(
            (e.code(), e.to_string()),
            (400, "admission webhook \"deny.example.com\" denied the request: no thanks".to_string())
        );
        use base64::Engine;
        let patch = base64::engine::general_purpose::STANDARD
            .encode(r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#);
        let allowed = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": patch, "warnings": ["careful"]}});
        let Verdict::Allowed { patch, warnings } = verdict(w, &allowed, "u").unwrap() else { panic!() };
        assert_eq!(patch.unwrap()[0]["op"], "add");
        assert_eq!(warnings, ["careful"]);
        assert!(verdict(w, &allowed, "other").is_err());
        assert_eq!(call_failed(w, "connection refused").code(), 500);
    }

    #[test]
    fn configurations_are_defaulted_and_checked() {
        let mut c = configuration(
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]),
            json!({}),
        );
        c["webhooks"][0].as_object_mut().unwrap().remove("failurePolicy");
        default(&mut c, true);
        assert_eq!(
            (c["webhooks"][0]["failurePolicy"].as_str(), c["webhooks"][0]["timeoutSeconds"].as_i64()),
            (Some("Fail"), Some(10))
        );
        assert_eq!(c["webhooks"][0]["rules"][0]["scope"], "*");
        assert!(validate(&c).is_empty(), "{:?}", validate(&c));
        c["webhooks"][0]["name"] = json!("short");
        c["webhooks"][0]["sideEffects"] = json!("Some");
        c["webhooks"][0]["clientConfig"]["url"] = json!("http://x");
        assert_eq!(validate(&c).len(), 3);
    }
}
