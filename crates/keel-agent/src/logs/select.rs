//! What a log request gets out of parsed CRI lines, as the kubelet's reader decides it: the last `tailLines`
//! lines, those written since a time, each prefixed with its time if asked, the `P` parts of a line joined
//! into one, and no more than `limitBytes` bytes. No IO.

use jiff::Timestamp;

use super::cri::{format_time, Line};

/// Counts the lines of output in log lines: a full line ends one; partial parts belong to the next full
/// line, and trailing parts count as one more (unfinished) line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounter {
    full: u64,
    open: bool,
}

impl LineCounter {
    pub fn push(&mut self, line: &Line) {
        if line.partial {
            self.open = true;
        } else {
            self.full += 1;
            self.open = false;
        }
    }

    pub fn total(&self) -> u64 {
        self.full + u64::from(self.open)
    }
}

/// How many output lines to skip to keep the last `tail` of `total` (all of them without a tail).
pub fn lines_to_skip(total: u64, tail: Option<u64>) -> u64 {
    tail.map_or(0, |n| total.saturating_sub(n))
}

/// Turns log lines into the bytes a request gets.
#[derive(Debug, Clone)]
pub struct Printer {
    since: Option<Timestamp>,
    timestamps: bool,
    /// Bytes still allowed (None: no limit).
    remaining: Option<u64>,
    /// Output lines still to skip (the part before the tail).
    skip: u64,
    at_line_start: bool,
}

impl Printer {
    pub fn new(since: Option<Timestamp>, timestamps: bool, limit_bytes: Option<u64>, skip_lines: u64) -> Printer {
        Printer { since, timestamps, remaining: limit_bytes, skip: skip_lines, at_line_start: true }
    }

    /// Whether the byte limit has been reached (nothing more will be printed).
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Appends what `line` contributes to `out`. Returns false once the byte limit is reached.
    pub fn print(&mut self, line: &Line, out: &mut Vec<u8>) -> bool {
        if self.done() {
            return false;
        }
        if self.skip > 0 {
            if !line.partial {
                self.skip -= 1;
            }
            return true;
        }
        if let (Some(since), Some(time)) = (self.since, line.time) {
            if time < since {
                return true;
            }
        }
        let start = out.len();
        if self.timestamps && self.at_line_start {
            if let Some(time) = line.time {
                out.extend_from_slice(format_time(time).as_bytes());
                out.push(b' ');
            }
        }
        out.extend_from_slice(line.content);
        if !line.partial {
            out.push(b'\n');
        }
        self.at_line_start = !line.partial;
        if let Some(remaining) = &mut self.remaining {
            let written = (out.len() - start) as u64;
            if written >= *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
                return false;
            }
            *remaining -= written;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::cri::{parse, Stream};

    fn line(time: &str, partial: bool, content: &'static str) -> Line<'static> {
        Line { time: Some(time.parse().unwrap()), stream: Some(Stream::Stdout), partial, content: content.as_bytes() }
    }

    fn lines() -> Vec<Line<'static>> {
        vec![
            line("2026-01-01T00:00:01Z", false, "one"),
            line("2026-01-01T00:00:02Z", true, "tw"),
            line("2026-01-01T00:00:03Z", false, "o"),
            line("2026-01-01T00:00:04Z", false, "three"),
            line("2026-01-01T00:00:05Z", true, "fou"),
        ]
    }

    fn print(p: &mut Printer, lines: &[Line]) -> String {
        let mut out = Vec::new();
        for l in lines {
            if !p.print(l, &mut out) {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn partial_lines_join_and_count_as_one() {
        let mut counter = LineCounter::default();
        lines().iter().for_each(|l| counter.push(l));
        assert_eq!(counter.total(), 4);
        assert_eq!(print(&mut Printer::new(None, false, None, 0), &lines()), "one\ntwo\nthree\nfou");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(lines_to_skip(4, Some(2)), 2);
        assert_eq!(lines_to_skip(4, Some(10)), 0);
        assert_eq!(lines_to_skip(4, None), 0);
        assert_eq!(print(&mut Printer::new(None, false, None, 2), &lines()), "three\nfou");
        assert_eq!(print(&mut Printer::new(None, false, None, 4), &lines()), "");
    }

    #[test]
    fn timestamps_prefix_each_output_line_once() {
        let out = print(&mut Printer::new(None, true, None, 0), &lines()[..3]);
        assert_eq!(out, "2026-01-01T00:00:01Z one\n2026-01-01T00:00:02Z two\n");
        // A line in another format has no time to print.
        let raw = crate::logs::cri::parse_lenient(b"raw");
        assert_eq!(print(&mut Printer::new(None, true, None, 0), &[raw]), "raw\n");
    }

    #[test]
    fn since_drops_older_lines() {
        let since = "2026-01-01T00:00:03Z".parse().unwrap();
        assert_eq!(print(&mut Printer::new(Some(since), false, None, 0), &lines()), "o\nthree\nfou");
    }

    #[test]
    fn the_byte_limit_cuts_anywhere_and_stops() {
        let mut p = Printer::new(None, false, Some(6), 0);
        assert_eq!(print(&mut p, &lines()), "one\ntw");
        assert!(p.done());
        let mut exact = Printer::new(None, false, Some(4), 0);
        assert_eq!(print(&mut exact, &lines()), "one\n");
        assert!(exact.done());
    }

    #[test]
    fn printing_parsed_file_lines() {
        let text = b"2026-01-01T00:00:01.5Z stdout F hello\n2026-01-01T00:00:02Z stderr F oops\n";
        let parsed: Vec<Line> =
            text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| parse(l).unwrap()).collect();
        let out = print(&mut Printer::new(None, true, None, 0), &parsed);
        assert_eq!(out, "2026-01-01T00:00:01.5Z hello\n2026-01-01T00:00:02Z oops\n");
    }
}
