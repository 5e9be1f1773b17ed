//! Serving: hickory-server's UDP and TCP server with a handler that answers cluster names from the
//! current [`Zone`] and passes every other query, as it came, to the node's upstream resolvers (the
//! first that answers within [`UPSTREAM_TIMEOUT`]; over TCP again when its answer came truncated),
//! relaying their answer.

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

/// `query` (a whole DNS message) sent to each of `upstream` in turn over UDP; the first answer. An answer
/// that came truncated is asked for again over TCP, as a stub resolver would (the truncated one is kept if
/// TCP fails: the client then sees the flag and retries itself).
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
                Ok(message) if message.metadata.truncation => {
                    return Some(forward_tcp(query, *server).await.unwrap_or(message));
                }
                Ok(message) => return Some(message),
                Err(e) => tracing::debug!(%server, error = %e, "an upstream answer did not parse"),
            },
            _ => tracing::debug!(%server, "no answer from an upstream resolver"),
        }
    }
    None
}

/// `query` sent to `server` over TCP (each message after its two-byte length); its answer.
async fn forward_tcp(query: &[u8], server: SocketAddr) -> Option<Message> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
        stream.write_all(&[&len.to_be_bytes()[..], query].concat()).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await?;
        Message::from_vec(&answer).map_err(std::io::Error::other)
    };
    match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
        Ok(Ok(message)) => Some(message),
        Ok(Err(e)) => {
            tracing::debug!(%server, error = %e, "no answer over TCP from an upstream resolver");
            None
        }
        Err(_) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `example.org` A, id 0x1234, recursion desired.
    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(b"\x07example\x03org\x00\x00\x01\x00\x01");
        q
    }

    /// An upstream on loopback that answers over UDP truncated (TC) and over TCP whole (marked AA), on the
    /// same port.
    async fn truncating_upstream() -> SocketAddr {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let mut answer = buf[..n].to_vec();
                answer[2] |= 0x80 | 0x02; // QR, TC
                let _ = udp.send_to(&answer, from).await;
            }
        });
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut stream, _)) = tcp.accept().await {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).await.unwrap();
                let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut answer).await.unwrap();
                answer[2] |= 0x80 | 0x04; // QR, AA
                stream.write_all(&[&len[..], &answer].concat()).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_truncated_upstream_answer_is_asked_again_over_tcp() {
        let upstream = truncating_upstream().await;
        let answer = forward(&query(), &[upstream]).await.expect("an answer");
        assert!(!answer.metadata.truncation && answer.metadata.authoritative, "{:?}", answer.metadata);
        assert_eq!(answer.metadata.id, 0x1234);
    }
}
