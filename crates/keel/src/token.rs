//! `keel server token create|list|delete`: bootstrap tokens (kube-system Secrets, as kubeadm keeps them)
//! made, listed and revoked through the API with an admin kubeconfig. A master joins with one:
//! `keel server token create --for master --print-join-command` prints the whole `keel server --join`
//! line, CA pin included.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use keel_apiserver::bootstrap_tokens::{self, Token, CLUSTER_INFO, NAMESPACE};
use serde_json::Value;

use crate::join::call;

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Bootstrap tokens, for joining the cluster (`keel server --join <url> --join-token ...`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a kubeconfig for a user, with a client certificate the cluster CA signed (CN the user, O the
    /// group): the request goes through a CertificateSigningRequest the admin kubeconfig approves.
    Kubeconfig(crate::user::KubeconfigArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print it (or, with --print-join-command, the command that joins with it).
    Create(CreateArgs),
    /// The tokens: ids, expiry, groups and descriptions (never their secrets).
    List(ClientArgs),
    /// Revoke a token at once (given its id or the whole token).
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// An admin kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// What a token lets its holder do.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Add a master (a store member) to the cluster: `keel server --join`.
    Master,
    /// Add a node: `keel agent --join` (the token may only ask for a node client certificate).
    Node,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// What the token is for.
    #[arg(long = "for", value_enum)]
    purpose: Purpose,
    /// How long the token is valid ("0" for ever).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Shown by `keel server token list`.
    #[arg(long, default_value = "")]
    description: String,
    /// Print the `keel server --join` command (with the cluster CA's pin) instead of the token alone.
    #[arg(long)]
    print_join_command: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The token's id (the 6 characters before the dot) or the whole token.
    token: String,
}

pub fn run(command: ServerCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        match command {
            ServerCommand::Token(TokenCommand::Create(args)) => create(args).await,
            ServerCommand::Token(TokenCommand::List(args)) => list(args).await,
            ServerCommand::Token(TokenCommand::Delete(args)) => delete(args).await,
            ServerCommand::Kubeconfig(args) => crate::user::kubeconfig(args).await,
        }
    })
}

pub async fn client_config(args: &ClientArgs) -> anyhow::Result<kube::Config> {
    match &args.kubeconfig {
        Some(path) => crate::server::client_config(path).await,
        None => kube::Config::from_kubeconfig(&Default::default()).await.context("cannot read the kubeconfig"),
    }
}

fn secrets_path() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/secrets")
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let config = client_config(&args.client).await?;
    let cluster_url = config.cluster_url.clone();
    let client = kube::Client::try_from(config).context("cannot build an API client")?;
    let token = Token::generate().context("cannot make a token")?;
    let expires = if args.ttl.is_zero() {
        None
    } else {
        let ttl = jiff::SignedDuration::try_from(args.ttl).context("--ttl is too long")?;
        Some(jiff::Timestamp::now().checked_add(ttl).context("--ttl is too long")?)
    };
    let groups = match args.purpose {
        Purpose::Master => [bootstrap_tokens::MASTERS_GROUP],
        Purpose::Node => [bootstrap_tokens::NODES_GROUP],
    };
    let description =
        if args.description.is_empty() { "made by keel server token create".to_string() } else { args.description };
    let secret = token.secret(expires, &description, &groups);
    call(&client, "POST", &secrets_path(), Some(secret)).await.context("cannot store the token")?;
    if !args.print_join_command {
        println!("{token}");
        return Ok(());
    }
    let path = format!("/api/v1/namespaces/kube-public/configmaps/{CLUSTER_INFO}");
    let info = call(&client, "GET", &path, None).await.context("cannot read cluster-info")?;
    let ca = crate::join::cluster_info_ca(&info)?;
    let ca_hash = keel_apiserver::tls::ca_cert_hash(&ca).context("the cluster's CA")?;
    let endpoints =
        call(&client, "GET", "/api/v1/namespaces/default/endpoints/kubernetes", None).await.unwrap_or_default();
    let url = join_url(&cluster_url, &endpoints, &info);
    match args.purpose {
        Purpose::Master => {
            println!("keel server --join {url} --join-token {token} --join-ca-hash {ca_hash}");
            eprintln!("(add the new master's own flags: --name, --data-dir, its API, client and peer addresses)");
        }
        Purpose::Node => {
            println!("keel agent --join {url} --join-token {token} --join-ca-hash {ca_hash}");
            eprintln!("(add the node's own flags: --node-name, --data-dir, --pod-cidr, containerd's socket)");
        }
    }
    Ok(())
}

/// The masters a joiner should name (comma-separated, it tries each): the kubeconfig's, unless that is this
/// machine's loopback (a local load balancer); then the live masters of the `kubernetes` Endpoints, else
/// the one in cluster-info.
fn join_url(cluster_url: &http::Uri, endpoints: &Value, cluster_info: &Value) -> String {
    let loopback = cluster_url.host().is_some_and(|h| {
        h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    let live = || {
        let subset = endpoints["subsets"].as_array()?.first()?;
        let port = u16::try_from(subset["ports"].as_array()?.first()?["port"].as_u64()?).ok()?;
        let urls: Vec<String> = subset["addresses"]
            .as_array()?
            .iter()
            .filter_map(|a| a["ip"].as_str()?.parse::<std::net::IpAddr>().ok())
            .map(|ip| format!("https://{}", std::net::SocketAddr::new(ip, port)))
            .collect();
        (!urls.is_empty()).then(|| urls.join(","))
    };
    let from_info = || {
        let text = cluster_info["data"]["kubeconfig"].as_str()?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(text).ok()?;
        kubeconfig.clusters.first()?.cluster.as_ref()?.server.clone()
    };
    let url = if loopback { live().or_else(from_info) } else { None };
    url.unwrap_or_else(|| cluster_url.to_string()).trim_end_matches('/').to_string()
}

async fn list(args: ClientArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_from(client_config(&args).await?).context("cannot build an API client")?;
    let secrets = call(&client, "GET", &secrets_path(), None).await.context("cannot list the tokens")?;
    println!("{:<8}  {:<22}  {:<36}  DESCRIPTION", "TOKEN-ID", "EXPIRES", "EXTRA-GROUPS");
    for secret in secrets["items"].as_array().into_iter().flatten() {
        if secret["type"] != bootstrap_tokens::SECRET_TYPE {
            continue;
        }
        let field = |k| bootstrap_tokens::data(secret, k).unwrap_or_default();
        let expires = bootstrap_tokens::data(secret, "expiration").unwrap_or_else(|| "<never>".to_string());
        let groups = field("auth-extra-groups");
        let groups = if groups.is_empty() { "<none>".to_string() } else { groups };
        println!("{:<8}  {expires:<22}  {groups:<36}  {}", field("token-id"), field("description"));
    }
    Ok(())
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let id = args.token.split('.').next().unwrap_or_default();
    if id.len() != 6 || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        anyhow::bail!("{:?} is not a token id (6 characters of [a-z0-9]) or a token", args.token);
    }
    let client = kube::Client::try_from(client_config(&args.client).await?).context("cannot build an API client")?;
    let path = format!("{}/{}{id}", secrets_path(), bootstrap_tokens::SECRET_PREFIX);
    call(&client, "DELETE", &path, None).await.with_context(|| format!("cannot delete bootstrap token {id:?}"))?;
    println!("bootstrap token {id:?} deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn joiners_are_told_a_master_they_can_reach() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let info =
            json!({"data": {"kubeconfig": keel_apiserver::tls::cluster_kubeconfig("https://10.0.0.1:6443", ca)}});
        let url = |u: &str, endpoints: &Value| join_url(&u.parse().unwrap(), endpoints, &info);
        let none = Value::Null;
        assert_eq!(url("https://127.0.0.1:6443", &none), "https://10.0.0.1:6443");
        assert_eq!(url("https://localhost:6443/", &none), "https://10.0.0.1:6443");
        assert_eq!(url("https://[::1]:6443", &none), "https://10.0.0.1:6443");
        assert_eq!(url("https://master.example:6443", &none), "https://master.example:6443");
        let live =
            json!({"subsets": [{"addresses": [{"ip": "fd00::2"}, {"ip": "fd00::3"}], "ports": [{"port": 7443}]}]});
        assert_eq!(url("https://127.0.0.1:6443", &live), "https://[fd00::2]:7443,https://[fd00::3]:7443");
        assert_eq!(url("https://master.example:6443", &live), "https://master.example:6443");
    }
}
