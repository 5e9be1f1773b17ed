//! SPDY/3.1 framing, as kubectl's port-forward speaks it (moby/spdystream's framer): 8-byte frame headers
//! (control frames: version 3, type, flags, 24-bit length; data frames: stream id, flags, length),
//! SYN_STREAM/SYN_REPLY header blocks of length-prefixed name/value pairs, compressed by one zlib stream
//! per direction for the whole connection with SPDY/3's preset dictionary and a sync flush per block.
//! Only what a port-forward server needs is decoded; other control frames are skipped.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// SPDY/3's zlib dictionary for header blocks (the protocol's constant, 1423 bytes).
const DICTIONARY: &[u8; 1423] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\
\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\
\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-contr\
ol\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\
\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\
\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\
\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\
\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\
\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pra\
gma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05rang\
e\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\
\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\
\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10\
www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\
\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06\
public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101201202\
205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Author\
itative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 For\
bidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Fe\
b Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTch\
unked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/pla\
in,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf\
-,*,enq=0.";

/// `FIN`: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is cancelled.
pub const CANCEL: u32 = 5;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// The largest frame payload accepted (SPDY's 24-bit length).
const MAX_LENGTH: usize = (1 << 24) - 1;

/// One frame, as far as a port-forward server cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        id: u32,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// SETTINGS, WINDOW_UPDATE, HEADERS, …: nothing to do (spdystream does no flow control).
    Ignored,
}

/// Reads frames from a byte stream, inflating header blocks with the connection's one zlib stream.
pub struct Reader<R> {
    inner: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Reader<R> {
        Reader { inner, inflate: Decompress::new(true) }
    }

    /// The next frame; `None` when the stream ends between frames.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.inner.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if length > MAX_LENGTH {
            return Err(invalid("frame too large"));
        }
        let mut payload = vec![0u8; length];
        self.inner.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data { id, fin: flags & FLAG_FIN != 0, data: payload }));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize| -> io::Result<u32> {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| invalid("short frame"))
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                let id = word(0)? & 0x7fff_ffff;
                let block = payload.get(10..).ok_or_else(|| invalid("short SYN_STREAM"))?;
                let headers = parse_block(&self.inflate_block(block)?)?;
                Frame::SynStream { id, fin: flags & FLAG_FIN != 0, headers }
            }
            SYN_REPLY => {
                let id = word(0)? & 0x7fff_ffff;
                self.inflate_block(&payload[4..])?;
                Frame::SynReply { id }
            }
            RST_STREAM => Frame::RstStream { id: word(0)? & 0x7fff_ffff, status: word(4)? },
            PING => Frame::Ping(word(0)?),
            GOAWAY => Frame::GoAway,
            _ => Frame::Ignored,
        }))
    }

    /// Inflates one header block: the client's compressor was flushed after it, so all of it is here.
    fn inflate_block(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut used = 0;
        loop {
            let before = self.inflate.total_in();
            let result = self.inflate.decompress_vec(&block[used..], &mut out, FlushDecompress::Sync);
            used += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) if used >= block.len() && out.len() < out.capacity() => return Ok(out),
                Ok(Status::BufError) if out.len() < out.capacity() => return Err(invalid("truncated header block")),
                Ok(_) => out.reserve(out.capacity()),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| invalid(&e.to_string()))?;
                }
                Err(e) => return Err(invalid(&format!("header block: {e}"))),
            }
            if out.len() > MAX_LENGTH {
                return Err(invalid("header block too large"));
            }
        }
    }
}

/// Encodes frames, deflating header blocks with the connection's one zlib stream.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(DICTIONARY).expect("a fresh zlib stream takes a dictionary");
        Writer { deflate }
    }
}

impl Writer {
    /// The bytes of `frame` (Data payloads longer than SPDY allows are the caller's to split).
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Data { id, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                out.push(if *fin { FLAG_FIN } else { 0 });
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
            Frame::SynReply { id } => {
                let block = self.deflate_block(&0u32.to_be_bytes());
                let mut payload = id.to_be_bytes().to_vec();
                payload.extend_from_slice(&block);
                control(SYN_REPLY, 0, &payload)
            }
            Frame::RstStream { id, status } => {
                control(RST_STREAM, 0, &[id.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway => control(GOAWAY, 0, &[0u8; 8]),
            Frame::SynStream { .. } | Frame::Ignored => Vec::new(),
        }
    }

    fn deflate_block(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut used = 0;
        loop {
            let before = self.deflate.total_in();
            let _ = self.deflate.compress_vec(&block[used..], &mut out, FlushCompress::Sync);
            used += (self.deflate.total_in() - before) as usize;
            if used >= block.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// The name/value pairs of an inflated header block (names lower-cased; several values joined by NUL
/// are kept as one).
fn parse_block(block: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut at = 0;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        let part = block.get(at..at + n).ok_or_else(|| invalid("short header block"))?;
        at += n;
        Ok(part)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut pairs = Vec::new();
    for _ in 0..count {
        let mut text = || -> io::Result<String> {
            let n = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            Ok(String::from_utf8_lossy(take(n)?).into_owned())
        };
        let name = text()?.to_ascii_lowercase();
        let value = text()?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("SPDY: {what}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SYN_STREAM as a client sends it (its own compressor, with the dictionary).
    pub fn syn_stream(deflate: &mut Compress, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            block.extend_from_slice(&(k.len() as u32).to_be_bytes());
            block.extend_from_slice(k.as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        let mut compressed = Vec::with_capacity(block.len() + 64);
        deflate.compress_vec(&block, &mut compressed, FlushCompress::Sync).unwrap();
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&compressed);
        control(SYN_STREAM, 0, &payload)
    }

    pub fn client_deflate() -> Compress {
        let mut d = Compress::new(Compression::best(), true);
        d.set_dictionary(DICTIONARY).unwrap();
        d
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY.iter() {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn a_syn_reply_is_encoded_as_go_s_framer_reads_it() {
        let mut w = Writer::default();
        let first = w.encode(&Frame::SynReply { id: 1 });
        let expected = [
            0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2,
            0x02, 0xa6, 0x23, 0x06, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        assert_eq!(first, expected);
        let second = w.encode(&Frame::SynReply { id: 3 });
        assert_eq!(&second[12..], &[0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff]);
    }

    #[tokio::test]
    async fn frames_are_read_back() {
        let mut deflate = client_deflate();
        let mut bytes = syn_stream(&mut deflate, 1, &[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
        bytes.extend(syn_stream(&mut deflate, 3, &[("streamType", "data"), ("port", "80"), ("requestID", "0")]));
        let mut w = Writer::default();
        bytes.extend(w.encode(&Frame::Data { id: 3, fin: true, data: b"GET /".to_vec() }));
        bytes.extend(w.encode(&Frame::Ping(7)));
        bytes.extend(w.encode(&Frame::RstStream { id: 3, status: CANCEL }));
        let mut r = Reader::new(&bytes[..]);
        let first = r.next().await.unwrap().unwrap();
        let Frame::SynStream { id: 1, headers, .. } = first else { panic!("{first:?}") };
        assert_eq!(headers[0], ("streamtype".to_string(), "error".to_string()));
        let Some(Frame::SynStream { id: 3, headers, .. }) = r.next().await.unwrap() else { panic!() };
        assert_eq!(headers[2], ("requestid".to_string(), "0".to_string()));
        assert_eq!(r.next().await.unwrap(), Some(Frame::Data { id: 3, fin: true, data: b"GET /".to_vec() }));
        assert_eq!(r.next().await.unwrap(), Some(Frame::Ping(7)));
        assert_eq!(r.next().await.unwrap(), Some(Frame::RstStream { id: 3, status: CANCEL }));
        assert_eq!(r.next().await.unwrap(), None);
    }
}
