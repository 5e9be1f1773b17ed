//! keel's Ingress controller, run by every node agent with a pod network (k3s ships Traefik as a
//! Deployment; keel serves Ingresses itself, on every node, so that any node's address reaches every
//! Ingress and losing a node loses no route): an HTTP proxy on the node's port 80 and an HTTPS one on
//! 443 (certificates by SNI from the Ingresses' TLS Secrets), routing by host and path to the ready
//! endpoints of the named Service ports.
//!
//! - [`routes`]: Ingresses (class `keel`, the default class) + Services + EndpointSlices → routes (pure);
//! - [`certs`]: the TLS Secrets → a rustls certificate resolver;
//! - [`proxy`]: the HTTP(S) serving and forwarding;
//! - [`run`]: watches of Ingresses and TLS Secrets beside the node's [`ServiceState`], the routes rebuilt
//!   on every change.

pub mod certs;
pub mod proxy;
pub mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use keel_proxy::{cloned, ServiceState};
use kube::runtime::watcher;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the {0} listener stopped: {1}")]
    Serve(&'static str, std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where plain HTTP is served (the node's address, port 80).
    pub http: SocketAddr,
    /// Where HTTPS is served (port 443).
    pub https: SocketAddr,
    /// The pods' network namespace (the agent's `--cni-netns`), or this process's.
    pub netns: Option<PathBuf>,
}

/// Serves the cluster's Ingresses on this node until the process ends.
pub async fn run(client: kube::Client, mut state: ServiceState, config: Config) -> Result<(), IngressError> {
    let (changed_tx, mut changed) = tokio::sync::watch::channel(());
    let ingresses = keel_proxy::follow::<Ingress>(client.clone(), watcher::Config::default(), changed_tx.clone()).await;
    let tls_only = watcher::Config::default().fields("type=kubernetes.io/tls");
    let secrets = keel_proxy::follow::<Secret>(client, tls_only, changed_tx).await;

    let certificates = Arc::new(certs::Certificates::default());
    let build = {
        let certificates = certificates.clone();
        move |state: &ServiceState| {
            let (services, slices) = state.snapshot();
            let routes = routes::Routes::build(&cloned(ingresses.state()), &services, &slices);
            let by_name: BTreeMap<(String, String), Secret> = cloned(secrets.state())
                .into_iter()
                .filter_map(|s| Some(((s.metadata.namespace.clone()?, s.metadata.name.clone()?), s)))
                .collect();
            certificates.update(&routes.tls, &by_name);
            Arc::new(routes)
        }
    };
    let (routes_tx, routes) = tokio::sync::watch::channel(build(&state));
    tokio::spawn(async move {
        loop {
            let more = tokio::select! {
                more = state.changed() => more,
                r = changed.changed() => {
                    tokio::time::sleep(keel_proxy::MIN_SYNC_INTERVAL).await;
                    r.is_ok()
                }
            };
            if !more {
                return;
            }
            routes_tx.send_replace(build(&state));
        }
    });

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let proxy = Arc::new(proxy::Proxy::new(routes));
    serve_in(config, proxy, acceptor).await
}

/// Runs the listeners, and every connection to the endpoints, on a runtime of their own inside the pods'
/// network namespace (a socket belongs to the namespace it is made in, and the endpoints are pod
/// addresses, routed only there).
async fn serve_in(
    config: Config,
    proxy: Arc<proxy::Proxy>,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<(), IngressError> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keel-ingress".into())
        .spawn(move || {
            let result = (|| {
                let enter = |e: std::io::Error| IngressError::Listen { addr: config.http, source: e };
                if let Some(ns) = &config.netns {
                    keel_proxy::netns::enter(ns).map_err(enter)?;
                }
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("keel-ingress")
                    .enable_all()
                    .build()
                    .map_err(enter)?;
                rt.block_on(async {
                    let listen = |addr: SocketAddr| async move {
                        tokio::net::TcpListener::bind(addr).await.map_err(|source| IngressError::Listen { addr, source })
                    };
                    let (http, https) = (listen(config.http).await?, listen(config.https).await?);
                    tracing::info!(http = %config.http, https = %config.https, "ingress serving");
                    tokio::select! {
                        r = proxy::serve(http, proxy.clone(), None) => r.map_err(|e| IngressError::Serve("http", e)),
                        r = proxy::serve(https, proxy, Some(acceptor)) => r.map_err(|e| IngressError::Serve("https", e)),
                    }
                })
            })();
            let _ = done_tx.send(result);
        })
        .map_err(|source| IngressError::Listen { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
    done.await.unwrap_or(Ok(()))
}
