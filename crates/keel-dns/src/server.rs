//! Serving: hickory-server's UDP and TCP server with a handler that answers cluster names from the
//! current [`Zone`] and passes every other query, as it came, to the node's upstream resolvers (the
//! first that answers within [`UPSTREAM_TIMEOUT`]), relaying their answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::Name;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

use crate::zone::{Answer, Zone};

/// How long an upstream resolver may take.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers from the zone, forwards the rest.
pub struct Handler {
    pub zone: watch::Receiver<Arc<Zone>>,
    pub upstream: Vec<SocketAddr>,
}

/// `query` (a whole DNS message) sent to each of `upstream` in turn over UDP; the first answer.
async fn forward(query: &[u8], upstream: &[SocketAddr]) -> Option<Message> {
    for server in upstream {
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
        let Ok(socket) = tokio::net::UdpSocket::bind(bind).await else { continue };
        if socket.send_to(query, server).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == *server => match Message::from_vec(&buf[..n]) {
                Ok(message) => return Some(message),
                Err(e) => tracing::debug!(%server, error = %e, "an upstream answer did not parse"),
            },
            _ => tracing::debug!(%server, "no answer from an upstream resolver"),
        }
    }
    None
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(&mut response, builder.build_no_records(metadata), request).await;
        };
        let qname: Name = query.name().clone().into();
        let answer = self.zone.borrow().answer(&qname, query.query_type());
        match answer {
            Answer::Records(records) => {
                metadata.authoritative = true;
                let sent = builder.build(metadata, records.iter(), [], [], []);
                send(&mut response, sent, request).await
            }
            Answer::NoData => {
                metadata.authoritative = true;
                send(&mut response, builder.build_no_records(metadata), request).await
            }
            Answer::NxDomain => {
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                send(&mut response, builder.build_no_records(metadata), request).await
            }
            Answer::NotOurs => match forward(request.as_slice(), &self.upstream).await {
                Some(upstream) => {
                    metadata.response_code = upstream.metadata.response_code;
                    metadata.authoritative = upstream.metadata.authoritative;
                    let sent = builder.build(
                        metadata,
                        upstream.answers.iter(),
                        upstream.authorities.iter(),
                        [],
                        upstream.additionals.iter(),
                    );
                    send(&mut response, sent, request).await
                }
                None => {
                    metadata.response_code = ResponseCode::ServFail;
                    send(&mut response, builder.build_no_records(metadata), request).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS answer");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header { metadata, counts: Default::default() })
        }
    }
}
