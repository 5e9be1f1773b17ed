//! etcdctl 3.4's per-endpoint calls (`endpoint status`, `endpoint hashkv`, `defrag`, `move-leader`) dial
//! each endpoint as its own gRPC target and send the endpoint as given, scheme included, as the request's
//! `:authority` (`http://10.0.0.1:2379`). grpc-go's server (etcd's) takes it; the `h2` crate behind tonic
//! resets the stream as malformed (PROTOCOL_ERROR), so those commands failed against keel whenever the
//! endpoints were written with `http://`, as etcd's docs write them.
//!
//! [`AuthorityFix`] sits under the gRPC server on each client connection and rewrites the client's half of
//! HTTP/2: every header block is decoded (HPACK, with the client's dynamic table) and encoded again for the
//! server (with a table of its own, so both sides of each table stay in step), and an `:authority` that
//! carries a scheme loses it. Every other frame passes unchanged; a connection that does not open with the
//! HTTP/2 preface (TLS, HTTP/1) passes untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts unless it says otherwise (h2's default, HTTP/2's minimum).
const MAX_FRAME: usize = 16_384;
/// The most header block this rewrites at once (h2 refuses bigger header lists anyway).
const MAX_BLOCK: usize = 1 << 20;

enum Mode {
    /// Waiting for the 24 bytes of the preface.
    Preface,
    Frames,
    /// Not HTTP/2 with prior knowledge, or broken: bytes pass as they come.
    Passthrough,
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    fragment: Vec<u8>,
}

/// The client-to-server half of an HTTP/2 connection, rewritten as the module says.
pub struct Rewriter {
    mode: Mode,
    input: BytesMut,
    output: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
        }
    }
}

impl Rewriter {
    /// Takes bytes from the client; what is ready for the server is in [`Rewriter::output`].
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                    return;
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    let preface = self.input.split_to(PREFACE.len());
                    self.output.extend_from_slice(&preface);
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.input.len() < 9 {
                        return;
                    }
                    let len =
                        usize::from(self.input[0]) << 16 | usize::from(self.input[1]) << 8 | usize::from(self.input[2]);
                    if self.input.len() < 9 + len {
                        return;
                    }
                    let frame = self.input.split_to(9 + len);
                    if let Err(frame) = self.frame(frame) {
                        // Not something to rewrite safely: hand it and everything after to the server as is
                        // (which then judges the connection).
                        self.output.extend_from_slice(&frame);
                        self.mode = Mode::Passthrough;
                    }
                }
            }
        }
    }

    /// What is ready for the server.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    fn frame(&mut self, frame: BytesMut) -> Result<(), BytesMut> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        match (kind, &mut self.block) {
            (HEADERS, None) => {
                let mut payload = &frame[9..];
                if flags & PADDED != 0 {
                    let Some((&pad, rest)) = payload.split_first() else { return Err(frame) };
                    if usize::from(pad) > rest.len() {
                        return Err(frame);
                    }
                    payload = &rest[..rest.len() - usize::from(pad)];
                }
                if flags & PRIORITY != 0 {
                    if payload.len() < 5 {
                        return Err(frame);
                    }
                    payload = &payload[5..];
                }
                let block = Block { stream, end_stream: flags & END_STREAM != 0, fragment: payload.to_vec() };
                if flags & END_HEADERS != 0 {
                    self.emit(block).map_err(|()| frame)
                } else {
                    self.block = Some(block);
                    Ok(())
                }
            }
            (CONTINUATION, Some(block))
                if block.stream == stream && block.fragment.len() + frame.len() <= MAX_BLOCK =>
            {
                block.fragment.extend_from_slice(&frame[9..]);
                if flags & END_HEADERS != 0 {
                    let block = self.block.take().expect("gathering");
                    self.emit(block).map_err(|()| frame)
                } else {
                    Ok(())
                }
            }
            // Anything else while a block is open, or a CONTINUATION without one: a protocol error the server
            // must see.
            (_, Some(_)) | (CONTINUATION, None) => Err(frame),
            (_, None) => {
                self.output.extend_from_slice(&frame);
                Ok(())
            }
        }
    }

    /// Decodes a whole header block, fixes its `:authority`, and writes it encoded again as HEADERS (and
    /// CONTINUATION) frames.
    fn emit(&mut self, block: Block) -> Result<(), ()> {
        let headers = self.decoder.decode(&block.fragment).map_err(|_| ())?;
        let headers: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, value)| {
                let value = if name == b":authority" { without_scheme(value) } else { value };
                (name, value)
            })
            .collect();
        let encoded = self.encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let chunks: Vec<&[u8]> = if encoded.is_empty() { vec![&[][..]] } else { encoded.chunks(MAX_FRAME).collect() };
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let (kind, mut flags) =
                if i == 0 { (HEADERS, if block.end_stream { END_STREAM } else { 0 }) } else { (CONTINUATION, 0) };
            if last {
                flags |= END_HEADERS;
            }
            let len = chunk.len();
            self.output.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            self.output.put_u32(block.stream);
            self.output.put_slice(chunk);
        }
        Ok(())
    }
}

/// `http://host:port/` → `host:port`; anything without `://` unchanged.
fn without_scheme(value: Vec<u8>) -> Vec<u8> {
    let Some(at) = value.windows(3).position(|w| w == b"://") else { return value };
    let mut rest = value[at + 3..].to_vec();
    while rest.last() == Some(&b'/') {
        rest.pop();
    }
    rest
}

/// A client connection whose incoming bytes go through a [`Rewriter`]; writes pass straight through.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    /// Where reads from the client land before the rewriter takes them (one per connection).
    scratch: Vec<u8>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix { inner, rewriter: Rewriter::default(), scratch: vec![0; 16 * 1024], eof: false }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let out = this.rewriter.output();
            if !out.is_empty() {
                let n = out.len().min(buf.remaining());
                buf.put_slice(&out[..n]);
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Nothing to rewrite on this connection: the client's bytes go straight to the caller.
            if matches!(this.rewriter.mode, Mode::Passthrough) && this.rewriter.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The client is done: whatever is still gathered goes out as it came.
                    this.eof = true;
                    let rest = this.rewriter.input.split();
                    this.rewriter.output.extend_from_slice(&rest);
                }
                Poll::Ready(Ok(())) => this.rewriter.feed(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Splits what the rewriter produced back into frames: (kind, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    fn headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn encode(enc: &mut loona_hpack::Encoder<'static>, h: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        enc.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    #[test]
    fn an_authority_with_a_scheme_loses_it_and_the_tables_stay_in_step() {
        let mut client = loona_hpack::Encoder::new();
        let mut server = loona_hpack::Decoder::new();
        let mut r = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // The same header list twice: the second block indexes the first one's entries in the client's table.
        for stream in [1, 3] {
            input.extend(frame(HEADERS, END_HEADERS, stream, &encode(&mut client, &headers("http://127.0.0.1:2379"))));
            input.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        // Fed in small pieces, as a socket may deliver them.
        for piece in input.chunks(7) {
            r.feed(piece);
        }
        let out = r.output().split();
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let fs = frames(&out[PREFACE.len()..]);
        assert_eq!(fs.len(), 5, "{fs:?}");
        for (kind, flags, stream, payload) in [&fs[1], &fs[3]] {
            assert_eq!((*kind, *flags & END_HEADERS), (HEADERS, END_HEADERS));
            assert!(*stream == 1 || *stream == 3);
            let got = server.decode(payload).unwrap();
            assert_eq!(got, headers("127.0.0.1:2379"));
        }
        assert_eq!(fs[2], (0x0, END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
    }

    #[test]
    fn continuations_padding_and_priority_are_gathered_and_plain_authorities_kept() {
        let mut client = loona_hpack::Encoder::new();
        let block = encode(&mut client, &headers("127.0.0.1:2379"));
        let (a, b) = block.split_at(block.len() / 2);
        // HEADERS with padding (3 bytes) and a priority, then a CONTINUATION with the rest.
        let mut first = vec![3u8];
        first.extend_from_slice(&[0, 0, 0, 0, 16]);
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0, 0]);
        let mut r = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &first));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
        r.feed(&input);
        let out = r.output().split();
        let fs = frames(&out[PREFACE.len()..]);
        assert_eq!(fs.len(), 1);
        assert_eq!((fs[0].0, fs[0].1, fs[0].2), (HEADERS, END_STREAM | END_HEADERS, 5));
        assert_eq!(loona_hpack::Decoder::new().decode(&fs[0].3).unwrap(), headers("127.0.0.1:2379"));
    }

    #[test]
    fn what_is_not_http2_passes_untouched() {
        let mut r = Rewriter::default();
        r.feed(b"GET / HTTP/1.1\r\nHost: http://x\r\n\r\n");
        assert_eq!(&r.output().split()[..], b"GET / HTTP/1.1\r\nHost: http://x\r\n\r\n");
        // A CONTINUATION out of place goes to the server as is, for it to refuse.
        let mut r = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b"xyz"));
        r.feed(&input);
        assert_eq!(&r.output().split()[..], &input[..]);
        assert_eq!(without_scheme(b"https://a:1/".to_vec()), b"a:1");
        assert_eq!(without_scheme(b"a:1".to_vec()), b"a:1");
    }
}
