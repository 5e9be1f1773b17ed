//! `keel server --join`: a new master's store member added to a running cluster through its API
//! (keel-apiserver's `/keel/v1/members`), then promoted once it has caught up.
//!
//! With a join token (`keel server token create --for master`), the first contact is kubeadm's token
//! discovery: the cluster's CA is read anonymously from `kube-public/cluster-info` over a TLS connection
//! that is not yet verified, checked against the pin printed with the token (`--join-ca-hash`), and only
//! then is the token sent, over a connection that verifies the master with that CA. A master presenting
//! another CA never sees the token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use keel_apiserver::bootstrap_tokens::{Token, CLUSTER_INFO};
use serde_json::{json, Value};

/// How a joining master proves itself to the cluster.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An existing master's admin kubeconfig.
    Kubeconfig(PathBuf),
    /// A bootstrap token for masters and the pin of the cluster's CA.
    Token { token: Token, ca_hash: String },
}

/// `--join-token`'s parser: a bootstrap token's form, or a clear error.
pub fn parse_token(s: &str) -> Result<Token, String> {
    Token::parse(s.trim()).ok_or_else(|| "a join token has the form [a-z0-9]{6}.[a-z0-9]{16}".to_string())
}

/// `--join-ca-hash`'s parser: `sha256:` and 64 hex digits (as `keel server token create` prints it).
pub fn parse_ca_hash(s: &str) -> Result<String, String> {
    let hex = s.trim().strip_prefix("sha256:").ok_or("a CA hash starts with sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a CA hash is sha256: and 64 hex digits".to_string());
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// A request to the API through `client`; the JSON it answered.
pub async fn call(client: &kube::Client, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .context("building a request")?;
    Ok(client.request::<Value>(request).await?)
}

/// The CA (PEM) in `cluster-info`'s kubeconfig.
pub fn cluster_info_ca(cluster_info: &Value) -> anyhow::Result<String> {
    let text = cluster_info["data"]["kubeconfig"].as_str().context("cluster-info has no kubeconfig")?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).context("cluster-info's kubeconfig is not valid")?;
    let data = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("cluster-info names no CA")?;
    let pem =
        base64::engine::general_purpose::STANDARD.decode(data.trim()).context("cluster-info's CA is not base64")?;
    String::from_utf8(pem).context("cluster-info's CA is not PEM")
}

/// The cluster's CA as the master at `url` presents it in `cluster-info`, if it is the one `ca_hash` pins.
pub async fn discover_ca(url: &http::Uri, ca_hash: &str) -> anyhow::Result<String> {
    let mut config = kube::Config::new(url.clone());
    // Not verified yet: what is read here is trusted only once its hash matches the pin.
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(config).context("cannot build an API client")?;
    let path = format!("/api/v1/namespaces/kube-public/configmaps/{CLUSTER_INFO}");
    let info = call(&client, "GET", &path, None).await.with_context(|| format!("cannot read {path} from {url}"))?;
    let ca = cluster_info_ca(&info)?;
    let presented = keel_apiserver::tls::ca_cert_hash(&ca).context("cluster-info's CA is not a certificate")?;
    if presented != ca_hash {
        anyhow::bail!(
            "the master at {url} presents a CA whose hash is {presented}, not --join-ca-hash {ca_hash}: refusing \
             to send it the join token"
        );
    }
    Ok(ca)
}

/// A client of the master at `url` with `credentials`.
pub async fn client(url: &str, credentials: &Credentials) -> anyhow::Result<kube::Client> {
    let uri: http::Uri = url.parse().with_context(|| format!("--join {url:?} is not a URL"))?;
    let config = match credentials {
        Credentials::Kubeconfig(path) => {
            let mut kc = crate::server::client_config(path).await?;
            kc.cluster_url = uri;
            kc
        }
        Credentials::Token { token, ca_hash } => {
            let ca = discover_ca(&uri, ca_hash).await?;
            let text = keel_apiserver::tls::kubeconfig("keel", url, &ca, "join", &token.to_string());
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).context("the join kubeconfig")?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .context("the join kubeconfig")?
        }
    };
    kube::Client::try_from(config).context("cannot build an API client")
}

fn peer_urls(member: &Value) -> Vec<String> {
    member["peerURLs"].as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_string)).collect()
}

/// Adds this master's member as a learner through the first of the masters at `urls` that answers (unless
/// an earlier attempt did), and points `config` at the cluster as it now is.
pub async fn add_member(
    urls: &[String],
    credentials: &Credentials,
    config: &mut keel_store::StoreConfig,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for url in urls {
        match add_member_through(url, credentials, config).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(%url, error = format!("{e:#}"), "cannot join through this master");
                failures.push(format!("{e:#}"));
            }
        }
    }
    anyhow::bail!("cannot join through any master given to --join: {}", failures.join("; "))
}

async fn add_member_through(
    url: &str,
    credentials: &Credentials,
    config: &mut keel_store::StoreConfig,
) -> anyhow::Result<()> {
    let client = client(url, credentials).await?;
    let path = keel_apiserver::MEMBERS_PATH;
    let mine = config.initial_advertise_peer_urls.clone();
    let listed =
        call(&client, "GET", path, None).await.with_context(|| format!("cannot list the members through {url}"))?;
    let mut members = listed["members"].as_array().cloned().unwrap_or_default();
    if !members.iter().any(|m| peer_urls(m) == mine) {
        if let Some(other) = members.iter().find(|m| m["name"] == config.name.as_str()) {
            anyhow::bail!(
                "the cluster has a member named {:?} already, with peer URLs {:?}",
                config.name,
                peer_urls(other)
            );
        }
        let added = call(&client, "POST", path, Some(json!({"peerURLs": mine, "isLearner": true})))
            .await
            .with_context(|| format!("cannot add this member through {url}"))?;
        tracing::info!(id = %added["member"]["id"], "added to the cluster as a learner");
        members = added["members"].as_array().cloned().unwrap_or_default();
    }
    let mut cluster = Vec::new();
    for m in &members {
        let urls = peer_urls(m);
        let name = if urls == mine {
            config.name.clone()
        } else {
            m["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map_or_else(|| format!("member-{}", m["id"].as_str().unwrap_or("")), str::to_string)
        };
        cluster.extend(urls.into_iter().map(|u| format!("{name}={u}")));
    }
    config.initial_cluster = keel_store::config::parse_initial_cluster(&cluster.join(","))?;
    config.initial_cluster_state = keel_store::ClusterState::Existing;
    Ok(())
}

/// Promotes this master's member to a voter once the store allows it (it has caught up), asking through
/// this master's own API; gives up after ten minutes.
pub async fn promote(config: kube::Config, mine: Vec<String>) {
    let Ok(client) = kube::Client::try_from(config) else { return };
    let path = keel_apiserver::MEMBERS_PATH;
    for _ in 0..600 {
        let listed = call(&client, "GET", path, None).await;
        let me = listed.ok().and_then(|l| l["members"].as_array()?.iter().find(|m| peer_urls(m) == mine).cloned());
        match me {
            Some(m) if m["isLearner"] == false => {
                tracing::info!(id = %m["id"], "this master's store member is a voter");
                return;
            }
            Some(m) => {
                let id = m["id"].as_str().unwrap_or_default();
                match call(&client, "POST", &format!("{path}/{id}/promote"), None).await {
                    Ok(_) => {
                        tracing::info!(%id, "promoted this master's store member to a voter");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "not promoted yet"),
                }
            }
            None => tracing::debug!("this master's member is not listed yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!("this master's store member is still a learner after ten minutes: promote it by hand");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_before_anything_is_dialed() {
        assert!(parse_token("abcdef.0123456789abcdef").is_ok());
        assert!(parse_token("abcdef0123456789abcdef").unwrap_err().contains("[a-z0-9]{6}"));
        let hex = "AB".repeat(32);
        assert_eq!(parse_ca_hash(&format!("sha256:{hex}")).unwrap(), format!("sha256:{}", "ab".repeat(32)));
        assert!(parse_ca_hash(&hex).unwrap_err().contains("sha256:"));
        assert!(parse_ca_hash("sha256:abc").is_err());
    }

    #[test]
    fn the_ca_is_read_from_cluster_info() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let text = keel_apiserver::tls::cluster_kubeconfig("https://10.0.0.1:6443", pem);
        assert_eq!(cluster_info_ca(&json!({"data": {"kubeconfig": text}})).unwrap(), pem);
        assert!(cluster_info_ca(&json!({"data": {}})).is_err());
    }
}
