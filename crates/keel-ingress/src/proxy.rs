//! The HTTP side: every request is routed by its Host header and path ([`crate::routes`]) and sent over
//! HTTP/1.1 to one of its backend's endpoints, taken in turn (one that refuses is skipped for the next);
//! the client's address goes in `X-Forwarded-For`, with `X-Forwarded-Proto` and `X-Forwarded-Host`.
//! No route: 404. A route whose Service has no ready endpoint: 503. Every endpoint refusing: 502.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::routes::Routes;

/// How long connecting to an endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection shares.
pub struct Proxy {
    pub routes: watch::Receiver<Arc<Routes>>,
    next: AtomicUsize,
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

impl Proxy {
    pub fn new(routes: watch::Receiver<Arc<Routes>>) -> Proxy {
        Proxy { routes, next: AtomicUsize::new(0) }
    }

    /// Answers one request from `client` that came in over `scheme` ("http" or "https").
    pub async fn handle(&self, mut req: Request<Incoming>, client: SocketAddr, scheme: &'static str) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        let backend = self.routes.borrow().route(&host, &path).cloned();
        let Some(backend) = backend else {
            return text(StatusCode::NOT_FOUND, "404 page not found: no Ingress rule matches\n".into());
        };
        if backend.endpoints.is_empty() {
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("503: {} has no ready endpoint\n", backend.name));
        }
        let headers = req.headers_mut();
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {}", client.ip()),
            None => client.ip().to_string(),
        };
        for (name, value) in
            [("x-forwarded-for", forwarded_for), ("x-forwarded-proto", scheme.into()), ("x-forwarded-host", host)]
        {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        // Only the path and query go upstream (an absolute-form URI would confuse origin servers).
        if let Some(pq) = req.uri().path_and_query().cloned() {
            if let Ok(uri) = pq.as_str().parse() {
                *req.uri_mut() = uri;
            }
        }
        let count = backend.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for attempt in 0..count {
            let endpoint = backend.endpoints[(start + attempt) % count];
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await {
                Ok(Ok(s)) => s,
                _ => {
                    tracing::debug!(%endpoint, backend = backend.name, "endpoint refused; trying the next");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return match sender.send_request(req).await {
                Ok(resp) => resp.map(|b| b.boxed()),
                Err(e) => text(StatusCode::BAD_GATEWAY, format!("502: {endpoint} of {}: {e}\n", backend.name)),
            };
        }
        text(StatusCode::BAD_GATEWAY, format!("502: no endpoint of {} answered\n", backend.name))
    }
}

/// Serves HTTP/1.1 connections from `listener` (TLS first when `tls` is given) until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (proxy, tls) = (proxy.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, client, scheme).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).with_upgrades().await,
                    Err(e) => {
                        tracing::debug!(%client, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), service).with_upgrades().await,
            };
            if let Err(e) = served {
                tracing::debug!(%client, error = %e, "connection ended with an error");
            }
        });
    }
}
