//! `keel server kubeconfig --user NAME [--group G]`: a kubeconfig for a user of the cluster, with a client
//! certificate (CN the user, O the group) signed by the cluster CA. The key never leaves this
//! machine: a CertificateSigningRequest for the `kubernetes.io/kube-apiserver-client` signer carries only
//! the request; the admin kubeconfig approves it, as `kubectl certificate approve` would, and the signed
//! certificate comes back in its status.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use serde_json::{json, Value};

use crate::join::call;
use crate::token::{client_config, ClientArgs};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The user's name (the certificate's CN; what RBAC bindings name).
    #[arg(long)]
    user: String,
    /// The user's group (the certificate's O): at most one, which RBAC bindings may name.
    #[arg(long = "group")]
    group: Option<String>,
    /// How long the certificate is valid (at most a year).
    #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

/// The CA certificates of a client configuration, as PEM.
fn ca_pem(config: &kube::Config) -> anyhow::Result<String> {
    let certs = config.root_cert.as_ref().context("the kubeconfig names no certificate authority")?;
    let mut out = String::new();
    for der in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(out)
}

pub async fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<()> {
    if args.user.is_empty() {
        bail!("--user must name someone");
    }
    let config = client_config(&args.client).await?;
    let (server, ca) = (config.cluster_url.to_string(), ca_pem(&config)?);
    let client = kube::Client::try_from(config).context("cannot build an API client")?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("cannot make a key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, args.user.as_str());
    if let Some(g) = &args.group {
        params.distinguished_name.push(rcgen::DnType::OrganizationName, g.as_str());
    }
    let request = params.serialize_request(&key).context("cannot make a certificate request")?;
    let request = request.pem().context("cannot encode the certificate request")?;
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let name =
        format!("keel-user-{}-{suffix}", args.user.replace(|c: char| !c.is_ascii_alphanumeric(), "-").to_lowercase());
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["digital signature", "key encipherment", "client auth"],
            "expirationSeconds": args.ttl.as_secs().max(600),
        },
    });
    let mut created = call(&client, "POST", CSRS, Some(csr)).await.context("cannot make the certificate request")?;
    let now = jiff::Timestamp::now().to_string();
    created["status"]["conditions"] = json!([{
        "type": "Approved", "status": "True", "reason": "KeelServerKubeconfig",
        "message": "Approved by keel server kubeconfig.", "lastUpdateTime": now, "lastTransitionTime": now,
    }]);
    let mut answer = call(&client, "PUT", &format!("{CSRS}/{name}/approval"), Some(created))
        .await
        .context("cannot approve the certificate request")?;
    for _ in 0..50 {
        if answer.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = call(&client, "GET", &format!("{CSRS}/{name}"), None).await?;
    }
    let cert = answer.pointer("/status/certificate").and_then(Value::as_str).context("the request was not signed")?;
    let cert = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(cert)?)?;
    let text = keel_apiserver::tls::client_certificate_kubeconfig(
        "keel",
        server.trim_end_matches('/'),
        &ca,
        &args.user,
        &cert,
        &key.serialize_pem(),
    );
    print!("{text}");
    Ok(())
}
