//! CertificateSigningRequests (`certificates.k8s.io/v1`): what kube-apiserver's validation checks of them
//! (a PEM certificate request, a qualified signer name, known usages, a life of at least ten minutes; the
//! spec never changes), and the signers keel's masters sign for.

use serde_json::{json, Value};

use super::fields::*;
use crate::validation::{self, Cause};

/// Client certificates for users (`kubectl`), signed once approved.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// Client certificates for nodes (`system:node:<name>` in `system:nodes`).
pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

const USAGES: [&str; 22] = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
];

/// The PEM text of a request's `spec.request` (base64 of the PEM in the API).
pub fn request_pem(csr: &Value) -> Option<String> {
    use base64::Engine as _;
    let b64 = csr.pointer("/spec/request").and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether a condition of `type_` is true.
pub fn has_condition(csr: &Value, type_: &str) -> bool {
    csr.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some(type_) && c.get("status").and_then(Value::as_str) != Some("False")
    })
}

pub fn validate(csr: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = value_at(csr, "spec");
    match request_pem(csr) {
        None if str_of(spec, "request").is_empty() => c.push(required("spec.request", "")),
        None => c.push(invalid("spec.request", &json!("<bytes>"), "must be base64-encoded PEM")),
        Some(pem) if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") => {
            c.push(invalid("spec.request", &json!("<bytes>"), "PEM block type must be CERTIFICATE REQUEST"))
        }
        Some(_) => {}
    }
    let signer = str_of(spec, "signerName");
    if signer.is_empty() {
        c.push(required("spec.signerName", ""));
    } else {
        let (domain, path) = signer.split_once('/').unwrap_or((signer, ""));
        if path.is_empty() || !validation::dns1123_subdomain(domain).is_empty() {
            c.push(invalid(
                "spec.signerName",
                &json!(signer),
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            ));
        }
    }
    if let Some(seconds) = int_of(spec, "expirationSeconds") {
        if seconds < 600 {
            c.push(invalid_int(
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    let usages = arr_of(spec, "usages");
    if usages.is_empty() {
        c.push(required("spec.usages", ""));
    }
    for (i, u) in usages.iter().enumerate() {
        let u = u.as_str().unwrap_or_default();
        if !USAGES.contains(&u) {
            c.push(Cause::not_supported(index("spec.usages", i), u, &USAGES));
        }
    }
    c
}

pub fn validate_update(old: &Value, new: &Value) -> Vec<Cause> {
    if old.get("spec") == new.get("spec") {
        return vec![];
    }
    vec![Cause {
        kind: validation::CauseType::Invalid,
        field: "spec".into(),
        message: "Invalid value: \"<spec>\": field is immutable".into(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(request: &str, signer: &str, usages: Value) -> Value {
        use base64::Engine as _;
        let request = base64::engine::general_purpose::STANDARD.encode(request);
        json!({"spec": {"request": request, "signerName": signer, "usages": usages}})
    }

    #[test]
    fn requests_are_checked() {
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n";
        assert!(validate(&csr(pem, CLIENT_SIGNER, json!(["client auth"]))).is_empty());
        let bad = csr("hello", "signer", json!(["client auth", "flying"]));
        let messages: Vec<String> = validate(&bad).iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("spec.request: Invalid value"), "{messages:?}");
        assert!(messages[1].contains("example.com/signer-name"), "{messages:?}");
        assert!(messages[2].starts_with("spec.usages[1]: Unsupported value: \"flying\""), "{messages:?}");
        let mut approved = csr(pem, CLIENT_SIGNER, json!(["client auth"]));
        assert!(!has_condition(&approved, "Approved"));
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        assert!(has_condition(&approved, "Approved"));
    }
}
