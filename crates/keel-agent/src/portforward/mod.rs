//! `pods/portforward`, the agent's side (the kubelet's): a SPDY/3.1 session ([`spdy`]) in which the client
//! opens, for each connection it forwards, an error stream and a data stream (headers `streamtype`,
//! `port`, `requestid`); every stream is answered with a SYN_REPLY, and once both streams of a request are
//! there, the pod's port is dialled (inside the pod's network namespace, by the [`Dial`] given) and bytes
//! are relayed both ways. The session runs over the legacy `SPDY/3.1` upgrade or tunnelled in a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`, kubectl's default): the transport is the caller's, as a byte stream in
//! and frames out.
//!
//! As the kubelet ends a request: when the pod closes the connection, FIN on the data stream then on the
//! error stream; when the port cannot be dialled, the reason on the error stream, then FIN on both (kubectl
//! reports it and stops). A client FIN on the data stream half-closes the pod connection; a reset aborts
//! it. spdystream does no flow control, so none is enforced here.

pub mod spdy;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use spdy::{Frame, Reader, Writer, CANCEL};

/// How much of the pod's output goes in one DATA frame.
const CHUNK: usize = 32 * 1024;

/// Dials a port of the pod.
pub type Dial = Arc<dyn Fn(u16) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> + Send + Sync>;

/// What the client sends on a data stream, for the pod connection.
enum Inbound {
    Data(Vec<u8>),
    Fin,
    Reset,
}

/// One forwarded connection being set up: its streams as they arrive.
#[derive(Default)]
struct Request {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
}

/// Serves one session: frames read from `input`, frames to send on `output` (encoded, in order), the
/// pod's ports dialled by `dial`; `pod` names the pod in error messages. Returns when the client goes away.
pub async fn serve<R: AsyncRead + Unpin>(input: R, output: mpsc::Sender<Vec<u8>>, dial: Dial, pod: String) {
    let (frames, mut to_encode) = mpsc::channel::<Frame>(64);
    let encoder = tokio::spawn(async move {
        let mut writer = Writer::default();
        while let Some(frame) = to_encode.recv().await {
            if output.send(writer.encode(&frame)).await.is_err() {
                return;
            }
        }
    });
    let mut reader = Reader::new(input);
    let mut requests: HashMap<String, Request> = HashMap::new();
    let mut data_streams: HashMap<u32, mpsc::Sender<Inbound>> = HashMap::new();
    loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, pod, "port-forward session ended");
                break;
            }
        };
        match frame {
            Frame::SynStream { id, headers, .. } => {
                let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                let port = header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
                let (Some(kind @ ("error" | "data")), Some(port), Some(request_id)) =
                    (header("streamtype"), port, header("requestid"))
                else {
                    let _ = frames.send(Frame::RstStream { id, status: CANCEL }).await;
                    continue;
                };
                if frames.send(Frame::SynReply { id }).await.is_err() {
                    break;
                }
                let request = requests.entry(request_id.to_string()).or_default();
                request.port = port;
                match kind {
                    "error" => request.error = Some(id),
                    _ => request.data = Some(id),
                }
                if let Request { port, error: Some(error), data: Some(data) } = *request {
                    requests.remove(request_id);
                    let (tx, rx) = mpsc::channel(16);
                    data_streams.insert(data, tx);
                    tokio::spawn(forward(port, error, data, rx, frames.clone(), dial.clone(), pod.clone()));
                }
            }
            Frame::Data { id, fin, data } => {
                if let Some(tx) = data_streams.get(&id) {
                    let mut gone = !data.is_empty() && tx.send(Inbound::Data(data)).await.is_err();
                    if fin {
                        gone |= tx.send(Inbound::Fin).await.is_err();
                    }
                    if gone {
                        data_streams.remove(&id);
                    }
                }
            }
            Frame::RstStream { id, .. } => {
                if let Some(tx) = data_streams.remove(&id) {
                    let _ = tx.send(Inbound::Reset).await;
                }
            }
            Frame::Ping(id) => {
                let _ = frames.send(Frame::Ping(id)).await;
            }
            Frame::GoAway => break,
            Frame::SynReply { .. } | Frame::Ignored => {}
        }
    }
    for (_, tx) in data_streams.drain() {
        let _ = tx.try_send(Inbound::Reset);
    }
    drop(frames);
    let _ = encoder.await;
}

/// One forwarded connection: the pod's port dialled, bytes relayed until either side is done.
async fn forward(
    port: u16,
    error: u32,
    data: u32,
    mut inbound: mpsc::Receiver<Inbound>,
    frames: mpsc::Sender<Frame>,
    dial: Dial,
    pod: String,
) {
    let fin = |id: u32| Frame::Data { id, fin: true, data: Vec::new() };
    let connection = match dial(port).await {
        Ok(c) => c,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod}: {e}");
            tracing::info!(pod, port, error = %e, "port-forward could not dial the pod");
            let _ = frames.send(Frame::Data { id: error, fin: false, data: message.into_bytes() }).await;
            let _ = frames.send(fin(error)).await;
            let _ = frames.send(fin(data)).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = connection.into_split();
    let mut buf = vec![0u8; CHUNK];
    let mut client_done = false;
    loop {
        tokio::select! {
            message = inbound.recv(), if !client_done => match message {
                Some(Inbound::Data(bytes)) => {
                    if to_pod.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Inbound::Fin) => {
                    let _ = to_pod.shutdown().await;
                    client_done = true;
                }
                Some(Inbound::Reset) | None => {
                    // The client is gone: drop the connection to the pod and end the error stream.
                    let _ = frames.send(fin(error)).await;
                    return;
                }
            },
            read = from_pod.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if frames.send(Frame::Data { id: data, fin: false, data: buf[..n].to_vec() }).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
    let _ = frames.send(fin(data)).await;
    let _ = frames.send(fin(error)).await;
}

/// Serves a session over a connection upgraded to SPDY/3.1 (the legacy transport).
pub async fn over_spdy<IO>(io: IO, dial: Dial, pod: String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    serve(read, tx, dial, pod).await;
    let _ = writer.await;
}

/// Serves a session tunnelled in a WebSocket: the SPDY bytes in binary messages, however the client split
/// them (kubectl sends a frame in several messages); each frame out is one binary message.
pub async fn over_websocket(socket: axum::extract::ws::WebSocket, dial: Dial, pod: String) {
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};

    let (mut sink, mut stream) = socket.split();
    let (mut pipe_in, pipe_out) = tokio::io::duplex(1 << 16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(bytes) => {
                    if pipe_in.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Text(_) | Message::Close(_) => return,
            }
        }
    });
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    serve(pipe_out, tx, dial, pod).await;
    reader.abort();
    let _ = writer.await;
}

/// Dials `port` on the loopback of the network namespace at `netns` (a pod's): from a thread of its own
/// that enters the namespace, as a socket keeps the namespace it was made in.
pub async fn dial_in(netns: std::path::PathBuf, port: u16) -> io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connected = (|| -> io::Result<std::net::TcpStream> {
            let ns = std::fs::File::open(&netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let timeout = std::time::Duration::from_secs(5);
            let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v4, timeout)
                .or_else(|e| std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e))
        })();
        let _ = tx.send(connected);
    });
    let stream = rx.await.map_err(|_| io::Error::other("the dialling thread died"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::spdy::tests::{client_deflate, syn_stream};
    use super::*;

    /// A client's session against a dialer to `target`: what the server sent, as frames.
    async fn session(target: std::net::SocketAddr, client: Vec<u8>) -> Vec<Frame> {
        let dial: Dial = Arc::new(move |port| {
            Box::pin(async move {
                match port {
                    80 => TcpStream::connect(target).await,
                    _ => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                }
            })
        });
        let (mut client_side, server_side) = tokio::io::duplex(1 << 16);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let server = tokio::spawn(serve(server_side, out_tx, dial, "default/web".into()));
        client_side.write_all(&client).await.unwrap();
        let mut sent = Vec::new();
        // Frames until the server has ended every request it was given (both FINs of each).
        let mut fins = 0;
        while fins < 2 {
            let Some(bytes) = tokio::time::timeout(std::time::Duration::from_secs(5), out_rx.recv()).await.unwrap()
            else {
                break;
            };
            sent.extend(bytes);
            let mut reader = Reader::new(&sent[..]);
            let mut frames = Vec::new();
            while let Ok(Some(f)) = reader.next().await {
                frames.push(f);
            }
            fins = frames.iter().filter(|f| matches!(f, Frame::Data { fin: true, .. })).count();
        }
        drop(client_side);
        let _ = server.await;
        let mut reader = Reader::new(&sent[..]);
        let mut frames = Vec::new();
        while let Ok(Some(f)) = reader.next().await {
            frames.push(f);
        }
        frames
    }

    #[tokio::test]
    async fn a_request_is_relayed_to_the_pod_and_ended_as_the_kubelet_ends_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"hello ").await.unwrap();
            s.write_all(&req).await.unwrap();
        });
        let mut d = client_deflate();
        let mut client = syn_stream(&mut d, 1, &[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
        client.extend(syn_stream(&mut d, 3, &[("streamtype", "data"), ("port", "80"), ("requestid", "0")]));
        client.extend(Writer::default().encode(&Frame::Data { id: 3, fin: false, data: b"world".to_vec() }));
        client.extend(Writer::default().encode(&Frame::Ping(1)));
        let frames = session(target, client).await;
        assert_eq!(frames[0], Frame::SynReply { id: 1 });
        assert_eq!(frames[1], Frame::SynReply { id: 3 });
        assert!(frames.contains(&Frame::Ping(1)));
        let echoed: Vec<u8> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data { id: 3, data, .. } => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(echoed, b"hello world");
        let ends: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data { id, fin: true, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(ends, [3, 1], "data stream first, then the error stream");
    }

    #[tokio::test]
    async fn a_port_that_cannot_be_dialled_is_reported_on_the_error_stream() {
        let mut d = client_deflate();
        let mut client = syn_stream(&mut d, 1, &[("streamtype", "error"), ("port", "81"), ("requestid", "4")]);
        client.extend(syn_stream(&mut d, 3, &[("streamtype", "data"), ("port", "81"), ("requestid", "4")]));
        client.extend(syn_stream(&mut d, 5, &[("streamtype", "data"), ("port", "nope"), ("requestid", "5")]));
        let frames = session("127.0.0.1:9".parse().unwrap(), client).await;
        let message = frames.iter().find_map(|f| match f {
            Frame::Data { id: 1, data, .. } if !data.is_empty() => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        });
        assert!(message.unwrap().starts_with("error forwarding port 81 to pod default/web: "));
        assert!(frames.contains(&Frame::RstStream { id: 5, status: CANCEL }), "{frames:?}");
    }
}
