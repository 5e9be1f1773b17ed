//! The CRI log format (what the kubelet's log reader parses, `parseCRILog`): one line per piece of output,
//! `<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <bytes>\n`, `F` ending a line of the container's
//! output and `P` a part of one that goes on in the next line (a line longer than [`MAX_LINE`], or the
//! container's last bytes before a pause). Encoding, splitting output into lines, and parsing; no IO.

use jiff::Timestamp;

/// The longest piece of output in one log line (containerd's CRI default, `max_container_log_line_size`);
/// longer output lines are split into `P` parts.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A time as the CRI format writes it: UTC, RFC 3339 with up to nine fractional digits and no trailing
/// zeros (Go's `time.RFC3339Nano`), e.g. `2026-11-24T15:04:05.12Z`.
pub fn format_time(t: Timestamp) -> String {
    let mut s = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        s.push('.');
        s.push_str(fraction.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Appends one log line to `out`.
pub fn encode(out: &mut Vec<u8>, time: Timestamp, stream: Stream, partial: bool, content: &[u8]) {
    out.extend_from_slice(format_time(time).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Cuts one stream's output into log-line contents: at each newline (dropped; the line is full), and
/// every [`MAX_LINE`] bytes of a longer line (a partial line).
#[derive(Debug, Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// Takes the next output bytes; calls `emit(partial, content)` for each line they complete.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            match data.iter().take(room + 1).position(|b| *b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&data[..i]);
                    emit(false, &self.pending);
                    self.pending.clear();
                    data = &data[i + 1..];
                }
                None if data.len() > room => {
                    self.pending.extend_from_slice(&data[..room]);
                    emit(true, &self.pending);
                    self.pending.clear();
                    data = &data[room..];
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                }
            }
        }
    }

    /// The stream ended: what is left becomes a last, full line.
    pub fn finish(&mut self, mut emit: impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(false, &self.pending);
            self.pending.clear();
        }
    }
}

/// One parsed log line (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// None for a line that is not in the CRI format (written by something else): its whole text is the
    /// content of a full line.
    pub time: Option<Timestamp>,
    pub stream: Option<Stream>,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Why a line is not a CRI log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no timestamp")]
    Timestamp,
    #[error("unknown stream {0:?}")]
    Stream(String),
    #[error("no tag")]
    Tag,
}

fn field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|b| *b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Parses a CRI log line (without its newline). As the kubelet does, the tag may carry `:`-separated
/// parts, of which the first is `F` or `P`, and a line may end right after its tag (empty content).
pub fn parse(line: &[u8]) -> Result<Line<'_>, ParseError> {
    let (time, rest) = field(line).ok_or(ParseError::Timestamp)?;
    let time: Timestamp = std::str::from_utf8(time).ok().and_then(|t| t.parse().ok()).ok_or(ParseError::Timestamp)?;
    let (stream, rest) = field(rest).ok_or(ParseError::Tag)?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(ParseError::Stream(String::from_utf8_lossy(other).into_owned())),
    };
    let (tag, content) = field(rest).unwrap_or((rest, b""));
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError::Tag),
    };
    Ok(Line { time: Some(time), stream: Some(stream), partial, content })
}

/// [`parse`], with a line in another format read as a full line of unknown time and stream.
pub fn parse_lenient(line: &[u8]) -> Line<'_> {
    parse(line).unwrap_or(Line { time: None, stream: None, partial: false, content: line })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn times_are_rfc3339_nano_without_trailing_zeros() {
        assert_eq!(format_time(ts("2026-11-24T15:04:05Z")), "2026-11-24T15:04:05Z");
        assert_eq!(format_time(ts("2026-11-24T15:04:05.120Z")), "2026-11-24T15:04:05.12Z");
        assert_eq!(format_time(ts("2026-11-24T15:04:05.000000001Z")), "2026-11-24T15:04:05.000000001Z");
        assert_eq!(format_time(ts("2026-11-24T16:04:05.5+01:00")), "2026-11-24T15:04:05.5Z");
    }

    #[test]
    fn lines_encode_and_parse_back() {
        let mut out = Vec::new();
        encode(&mut out, ts("2026-11-24T15:04:05.25Z"), Stream::Stderr, false, b"hello world");
        encode(&mut out, ts("2026-11-24T15:04:06Z"), Stream::Stdout, true, b"");
        assert_eq!(out, b"2026-11-24T15:04:05.25Z stderr F hello world\n2026-11-24T15:04:06Z stdout P \n");
        let lines: Vec<Line> =
            out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| parse(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            Line {
                time: Some(ts("2026-11-24T15:04:05.25Z")),
                stream: Some(Stream::Stderr),
                partial: false,
                content: b"hello world"
            }
        );
        assert!(lines[1].partial && lines[1].content.is_empty());
    }

    #[test]
    fn parsing_follows_the_kubelet() {
        // Another runtime's offset and a tag with extra parts; content may hold spaces; no content at all.
        let l = parse(b"2026-11-24T16:04:05.1+01:00 stdout F:x a  b").unwrap();
        assert_eq!((l.time, l.partial, l.content), (Some(ts("2026-11-24T15:04:05.1Z")), false, &b"a  b"[..]));
        assert_eq!(parse(b"2026-11-24T15:04:05Z stdout F").unwrap().content, b"");
        assert_eq!(parse(b"yesterday stdout F x"), Err(ParseError::Timestamp));
        assert_eq!(parse(b"2026-11-24T15:04:05Z stdin F x"), Err(ParseError::Stream("stdin".into())));
        assert_eq!(parse(b"2026-11-24T15:04:05Z stdout X x"), Err(ParseError::Tag));
        assert_eq!(parse(b"2026-11-24T15:04:05Z stdout"), Err(ParseError::Tag));
        let raw = parse_lenient(b"plain text");
        assert_eq!((raw.time, raw.partial, raw.content), (None, false, &b"plain text"[..]));
    }

    fn split(chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |p, content| out.push((p, content.to_vec())));
        }
        s.finish(|p, content| out.push((p, content.to_vec())));
        out
    }

    #[test]
    fn output_is_cut_at_newlines_across_chunks() {
        assert_eq!(
            split(&[b"one\ntw", b"o\n\nthr", b"ee"]),
            vec![(false, b"one".to_vec()), (false, b"two".to_vec()), (false, b"".to_vec()), (false, b"three".to_vec())]
        );
        assert!(split(&[b""]).is_empty());
    }

    #[test]
    fn long_lines_are_cut_into_partial_lines_of_16_kib() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split(&[&input[..100], &input[100..]]);
        assert_eq!(
            out.iter().map(|(p, c)| (*p, c.len())).collect::<Vec<_>>(),
            [(true, MAX_LINE), (true, MAX_LINE), (false, 10)]
        );
        // A line of exactly the maximum is one full line.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(split(&[&exact]).iter().map(|(p, c)| (*p, c.len())).collect::<Vec<_>>(), [(false, MAX_LINE)]);
    }
}
