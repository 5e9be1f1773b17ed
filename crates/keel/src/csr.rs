//! A client certificate through the API: a key made on this machine, a CertificateSigningRequest for the
//! subject (CN, optional O) and signer, optionally approved with the caller's own rights (as `kubectl
//! certificate approve`), and the signed certificate read back from its status. The key never leaves.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::join::call;

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// What to ask for.
pub struct Request<'a> {
    /// The CSR object's name.
    pub name: String,
    pub common_name: &'a str,
    pub organization: Option<&'a str>,
    pub signer: &'a str,
    pub expiration_seconds: Option<u64>,
    /// Approve it with the client's own rights (a signer that approves by itself needs none).
    pub approve: bool,
}

/// The signed certificate and its key (PEM).
pub async fn client_certificate(client: &kube::Client, r: Request<'_>) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("cannot make a key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, r.common_name);
    if let Some(o) = r.organization {
        params.distinguished_name.push(rcgen::DnType::OrganizationName, o);
    }
    let request = params.serialize_request(&key).context("cannot make a certificate request")?;
    let request = request.pem().context("cannot encode the certificate request")?;
    let mut spec = json!({
        "request": base64::engine::general_purpose::STANDARD.encode(&request),
        "signerName": r.signer,
        "usages": ["digital signature", "key encipherment", "client auth"],
    });
    if let Some(seconds) = r.expiration_seconds {
        spec["expirationSeconds"] = json!(seconds.max(600));
    }
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": r.name}, "spec": spec});
    let mut answer = call(client, "POST", CSRS, Some(csr)).await.context("cannot make the certificate request")?;
    if r.approve {
        let now = jiff::Timestamp::now().to_string();
        answer["status"]["conditions"] = json!([{
            "type": "Approved", "status": "True", "reason": "KeelApprove",
            "message": "Approved by keel.", "lastUpdateTime": now, "lastTransitionTime": now,
        }]);
        answer = call(client, "PUT", &format!("{CSRS}/{}/approval", r.name), Some(answer))
            .await
            .context("cannot approve the certificate request")?;
    }
    for _ in 0..50 {
        if signed(&answer).is_some() || refused(&answer).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = call(client, "GET", &format!("{CSRS}/{}", r.name), None).await?;
    }
    if let Some(why) = refused(&answer) {
        bail!("the certificate request was refused: {why}");
    }
    let cert = signed(&answer).context("the certificate request was not approved")?;
    let cert = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(cert)?)?;
    Ok((cert, key.serialize_pem()))
}

fn signed(csr: &Value) -> Option<&str> {
    csr.pointer("/status/certificate").and_then(Value::as_str).filter(|c| !c.is_empty())
}

fn refused(csr: &Value) -> Option<String> {
    csr.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().find_map(|c| {
        matches!(c["type"].as_str(), Some("Denied" | "Failed")).then(|| c["message"].as_str().unwrap_or("").to_string())
    })
}

/// A random suffix for object names.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}
