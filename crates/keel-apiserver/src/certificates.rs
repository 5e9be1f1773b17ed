//! CertificateSigningRequests, as kube-apiserver and kube-controller-manager's signer handle them: the
//! requester (user, groups) is recorded at create, whatever the body says; once approved (`kubectl
//! certificate approve`), a request to one of the client signers is signed by the cluster CA in the same
//! write, so `status.certificate` appears with the Approved condition. A request the signer will not sign
//! (a node certificate that does not name a node) gets a Failed condition instead.

use std::time::Duration;

use keel_api::kinds::certificates::{self, CLIENT_SIGNER, KUBELET_SIGNER};
use keel_api::status::ApiError;
use serde_json::{json, Value};

use crate::auth::User;
use crate::tls::Authority;

/// The longest certificate the signers issue unless told otherwise (kube-controller-manager's
/// `--cluster-signing-duration`: a year).
pub const DEFAULT_SIGNING_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The shortest `spec.expirationSeconds` honoured (kube-controller-manager's).
const MIN_EXPIRATION: Duration = Duration::from_secs(600);

/// Records who asks: `spec.username`, `groups` (and no uid: keel's users have none).
pub fn set_requester(csr: &mut Value, user: Option<&User>) {
    let Some(user) = user else { return };
    if let Some(spec) = csr.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("username".into(), json!(user.name));
        spec.insert("groups".into(), json!(user.groups));
        spec.remove("uid");
    }
}

/// kube-controller-manager's csrapproving for node client certificates: a request to the kubelet signer
/// for `system:node:<name>` in `system:nodes` is approved at once when a node join token asks (a new
/// node) or when that node itself asks (a renewal).
pub fn auto_approve(csr: &mut Value) {
    let signer = csr.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or_default();
    let requester = csr.pointer("/spec/username").and_then(Value::as_str).unwrap_or_default().to_string();
    let groups: Vec<&str> =
        csr.pointer("/spec/groups").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let Some((name, orgs)) = certificates::request_pem(csr).as_deref().and_then(subject) else { return };
    let for_a_node = signer == KUBELET_SIGNER && name.starts_with("system:node:") && orgs == ["system:nodes"];
    let joining = groups.contains(&crate::bootstrap_tokens::NODES_GROUP);
    let renewing = groups.contains(&"system:nodes") && requester == name;
    if !for_a_node || !(joining || renewing) {
        return;
    }
    let now = jiff::Timestamp::now().to_string();
    let (reason, message) = if joining {
        ("AutoApproved", "Auto approving kubelet client certificate after SubjectAccessReview.")
    } else {
        ("AutoApproved", "Auto approving self kubelet client certificate after SubjectAccessReview.")
    };
    csr["status"]["conditions"] = json!([{"type": "Approved", "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now}]);
}

/// Signs `csr` if it is approved, not denied, not yet signed, and for a signer keel signs for: valid for its
/// `expirationSeconds` (at least 10 minutes), at most `longest`.
pub fn sign_if_approved(authority: Option<&Authority>, longest: Duration, csr: &mut Value) -> Result<(), ApiError> {
    let signer = csr.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or_default().to_string();
    let signed = csr.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
    if signed
        || !certificates::has_condition(csr, "Approved")
        || certificates::has_condition(csr, "Denied")
        || certificates::has_condition(csr, "Failed")
        || ![CLIENT_SIGNER, KUBELET_SIGNER].contains(&signer.as_str())
    {
        return Ok(());
    }
    let Some(authority) = authority else { return Ok(()) };
    let pem = certificates::request_pem(csr).unwrap_or_default();
    let validity = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map_or(longest, |s| Duration::from_secs(s).max(MIN_EXPIRATION).min(longest));
    let refusal = match subject(&pem) {
        None => Some("the request cannot be parsed".to_string()),
        // The signer (rcgen) keeps one value per attribute of a subject: more groups would be lost.
        Some((_, groups)) if groups.len() > 1 => {
            Some(format!("keel signs certificates with at most one organization (group), not {groups:?}"))
        }
        Some((name, groups)) if signer == KUBELET_SIGNER => {
            (!name.starts_with("system:node:") || groups != ["system:nodes"]).then(|| {
                format!("a node client certificate must name system:node:<name> in the group system:nodes, not {name:?} in {groups:?}")
            })
        }
        Some(_) => None,
    };
    let now = jiff::Timestamp::now().to_string();
    let status = csr.as_object_mut().and_then(|o| o.get_mut("status")).filter(|s| s.is_object());
    let Some(status) = status else { return Ok(()) };
    match refusal {
        Some(message) => {
            let failed = json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                "message": message, "lastUpdateTime": now, "lastTransitionTime": now});
            match status.get_mut("conditions").and_then(Value::as_array_mut) {
                Some(list) => list.push(failed),
                None => status["conditions"] = json!([failed]),
            }
        }
        None => {
            use base64::Engine as _;
            let cert = authority
                .sign_client_request(&pem, validity)
                .map_err(|e| ApiError::BadRequest(format!("cannot sign the request: {e}")))?;
            status["certificate"] = json!(base64::engine::general_purpose::STANDARD.encode(cert));
        }
    }
    Ok(())
}

/// The subject a PEM certificate request asks for: its CN and Os.
fn subject(pem: &str) -> Option<(String, Vec<String>)> {
    use rustls::pki_types::pem::PemObject as _;
    use x509_parser::prelude::FromDer as _;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).ok()?;
    let subject = &req.certification_request_info.subject;
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    Some((name, subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect()))
}
