//! `keel agent --join <masters> --join-token T --join-ca-hash H`: a node's identity of its own. The cluster
//! CA is read anonymously from `cluster-info` and checked against the pin before the token is sent; a
//! CertificateSigningRequest for `system:node:<name>` in `system:nodes` (the kubelet signer) goes to the
//! first master that answers; the masters approve a node token's request at once and sign it; the
//! certificate and key are kept in the node's kubeconfig (0600), which the agent uses from then on (the
//! token is needed only once).

use std::path::Path;

use anyhow::Context;
use keel_apiserver::bootstrap_tokens::Token;

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
                keel_apiserver::server::write_private(path, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
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
    let credentials = crate::join::Credentials::Token { token: token.clone(), ca_hash: ca_hash.to_string() };
    let client = crate::join::client(url, &credentials).await?;
    let user = format!("system:node:{node}");
    let request = crate::csr::Request {
        name: format!("node-csr-{}", crate::csr::suffix()),
        common_name: &user,
        organization: Some("system:nodes"),
        signer: "kubernetes.io/kube-apiserver-client-kubelet",
        expiration_seconds: None,
        approve: false,
    };
    let (cert, key) = crate::csr::client_certificate(&client, request)
        .await
        .context("cannot get a node certificate (is the token a node token?)")?;
    Ok(keel_apiserver::tls::client_certificate_kubeconfig("keel", url, &ca, &user, &cert, &key))
}
