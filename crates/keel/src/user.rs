//! `keel server kubeconfig --user NAME [--group G]`: a kubeconfig for a user of the cluster, with a client
//! certificate (CN the user, O the group) signed by the cluster CA. The key never leaves this
//! machine: a CertificateSigningRequest for the `kubernetes.io/kube-apiserver-client` signer carries only
//! the request; the admin kubeconfig approves it, as `kubectl certificate approve` would, and the signed
//! certificate comes back in its status.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::token::{client_config, ClientArgs};

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

pub async fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<()> {
    if args.user.is_empty() {
        bail!("--user must name someone");
    }
    let config = client_config(&args.client).await?;
    let server = config.cluster_url.to_string();
    let ca = keel_controllers::service_accounts::pem(config.root_cert.as_deref().unwrap_or_default());
    if ca.is_empty() {
        bail!("the kubeconfig names no certificate authority");
    }
    let client = kube::Client::try_from(config).context("cannot build an API client")?;
    let slug = args.user.replace(|c: char| !c.is_ascii_alphanumeric(), "-").to_lowercase();
    let request = crate::csr::Request {
        name: format!("keel-user-{slug}-{}", crate::csr::suffix()),
        common_name: &args.user,
        organization: args.group.as_deref(),
        signer: "kubernetes.io/kube-apiserver-client",
        expiration_seconds: Some(args.ttl.as_secs()),
        approve: true,
    };
    let (cert, key) = crate::csr::client_certificate(&client, request).await?;
    let server = server.trim_end_matches('/');
    print!("{}", keel_apiserver::tls::client_certificate_kubeconfig("keel", server, &ca, &args.user, &cert, &key));
    Ok(())
}
