//! `keel agent --join <masters> --join-token T --join-ca-hash H`: a node's identity of its own. The cluster
//! CA is read anonymously from `cluster-info` and checked against the pin before the token is sent; a key
//! made here and a CertificateSigningRequest for `system:node:<name>` in `system:nodes` (the kubelet
//! signer) go to the first master that answers; the masters approve a node token's request at once and
//! sign it; the certificate and key are kept in the node's kubeconfig (0600), which the agent uses from
//! then on (the token is needed only once).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use keel_apiserver::bootstrap_tokens::Token;
use serde_json::{json, Value};

use crate::join::call;

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// Makes `path`, the node's kubeconfig, unless it is there already.
pub async fn credentials(
    masters: &[String],
    token: &Token,
    ca_hash: &str,
    node: &str,
    path: &Path,
) -> anyhow::Result<()> {
    if path.exists() {
        tracing::info!(kubeconfig = %path.display(), "the node has its credentials already");
        return Ok(());
    }
    let mut last = None;
    for url in masters {
        match ask(url, token, ca_hash, node).await {
            Ok(text) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                }
                write_private(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(%url, node, kubeconfig = %path.display(), "joined: the node has a client certificate");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(%url, error = %format!("{e:#}"), "cannot join through this master");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--join names no master")))
}

/// The node's kubeconfig, from the master at `url`.
async fn ask(url: &str, token: &Token, ca_hash: &str, node: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse().with_context(|| format!("--join {url:?} is not a URL"))?;
    let ca = crate::join::discover_ca(&uri, ca_hash).await?;
    let client = crate::join::client(
        url,
        &crate::join::Credentials::Token { token: token.clone(), ca_hash: ca_hash.to_string() },
    )
    .await?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("cannot make a key")?;
    let user = format!("system:node:{node}");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, user.as_str());
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key).context("cannot make a certificate request")?;
    let request = request.pem().context("cannot encode the certificate request")?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("node-csr-{}", &suffix[..12]);
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "key encipherment", "client auth"],
        },
    });
    let mut answer = call(&client, "POST", CSRS, Some(csr)).await.context("cannot ask for a node certificate")?;
    for _ in 0..50 {
        if signed(&answer).is_some() || failed(&answer).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = call(&client, "GET", &format!("{CSRS}/{name}"), None).await?;
    }
    if let Some(why) = failed(&answer) {
        bail!("the node certificate was refused: {why}");
    }
    let cert = signed(&answer).context("the node certificate request was not approved (is the token a node token?)")?;
    let cert = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(cert)?)?;
    Ok(keel_apiserver::tls::client_certificate_kubeconfig("keel", url, &ca, &user, &cert, &key.serialize_pem()))
}

fn signed(csr: &Value) -> Option<&str> {
    csr.pointer("/status/certificate").and_then(Value::as_str).filter(|c| !c.is_empty())
}

fn failed(csr: &Value) -> Option<String> {
    csr.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().find_map(|c| {
        matches!(c["type"].as_str(), Some("Denied" | "Failed")).then(|| c["message"].as_str().unwrap_or("").to_string())
    })
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
