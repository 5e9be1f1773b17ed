//! Reading one attempt's log as a request asks for it: across its rotated files (oldest first), the last
//! lines, those since a time, with their times, up to a byte limit ([`super::select`] decides), and when
//! following, what is written next: the current file is polled every [`POLL`], a rotation is crossed (the
//! open file is read to its end, then the next newer one by inode), and the stream ends once the
//! container is no longer running and everything it wrote has been sent.
//!
//! The files are read with blocking IO on a thread of tokio's blocking pool; the bytes come out as a
//! [`Stream`] whose end is noticed (the reader stops) when the caller drops it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::Stream;
use jiff::Timestamp;

use super::cri;
use super::select::{lines_to_skip, LineCounter, Printer};
use super::writer::rotated;

/// How often a followed file is looked at for more output.
pub const POLL: Duration = Duration::from_millis(100);
/// How often a follower asks whether the container still runs.
const ALIVE_EVERY: u32 = 10;
/// Bytes sent in one piece at most (more piles up only while catching up).
const CHUNK: usize = 64 * 1024;
/// Rotated files looked for at most (more than anyone keeps).
const MAX_ROTATED: u32 = 1000;

/// What to read of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

/// Whether the container whose log is followed still runs (asked every second or so).
pub type Alive = Box<dyn FnMut() -> bool + Send>;

/// The files of the log at `path` (`N.log`) that exist, oldest first: `N.log.<k>` … `N.log.1`, `N.log`.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated_files: Vec<PathBuf> =
        (1..=MAX_ROTATED).map(|n| rotated(path, n)).take_while(|p| p.exists()).collect();
    rotated_files.reverse();
    if path.exists() {
        rotated_files.push(path.to_path_buf());
    }
    rotated_files
}

struct Open {
    reader: BufReader<File>,
    inode: u64,
}

fn open(path: &Path) -> io::Result<Open> {
    let file = File::open(path)?;
    let inode = file.metadata()?.ino();
    Ok(Open { reader: BufReader::new(file), inode })
}

fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Every file of the log, opened, oldest first; taken again if a rotation moved files meanwhile.
fn open_all(path: &Path) -> io::Result<Vec<Open>> {
    for _ in 0..5 {
        let paths = files(path);
        let mut opened = Vec::with_capacity(paths.len());
        for p in &paths {
            match open(p) {
                Ok(o) => opened.push(o),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        let steady =
            opened.len() == paths.len() && paths.iter().zip(&opened).all(|(p, o)| inode_of(p) == Some(o.inode));
        if steady {
            return Ok(opened);
        }
    }
    // Rotating faster than it can be listed: take what is there now.
    files(path).iter().filter_map(|p| open(p).ok()).map(Ok).collect()
}

/// Reads the complete lines that are in `file` now. A line without its newline at the end of the file is
/// being written: its bytes stay in `carry` until the rest comes.
fn read_lines(file: &mut Open, carry: &mut Vec<u8>, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<bool> {
    loop {
        let n = file.reader.read_until(b'\n', carry)?;
        if n == 0 || carry.last() != Some(&b'\n') {
            return Ok(true);
        }
        let line = &carry[..carry.len() - 1];
        let more = each(line);
        carry.clear();
        if !more {
            return Ok(false);
        }
    }
}

/// Sends what piled up in `out` (only once it is a [`CHUNK`], unless `force`); false once nobody wants it.
fn flush(send: &mut dyn FnMut(Vec<u8>) -> bool, out: &mut Vec<u8>, force: bool) -> bool {
    if out.is_empty() || (!force && out.len() < CHUNK) {
        return true;
    }
    send(std::mem::take(out))
}

/// The lines of `file` that are complete now, printed into `out` and sent as they pile up. Returns
/// (whether more is wanted, whether any line was read).
fn print_lines(
    file: &mut Open,
    carry: &mut Vec<u8>,
    printer: &mut Printer,
    out: &mut Vec<u8>,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> io::Result<(bool, bool)> {
    let mut got = false;
    let mut wanted = true;
    read_lines(file, carry, |l| {
        got = true;
        wanted = printer.print(&cri::parse_lenient(l), out) && flush(send, out, false);
        wanted
    })?;
    Ok((wanted, got))
}

/// The reading itself, blocking: `send` gets the bytes and returns false once nobody wants them (it is
/// also called with an empty piece now and then while following, to ask).
pub fn read_blocking(
    path: &Path,
    options: &ReadOptions,
    mut alive: Option<Alive>,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> io::Result<()> {
    let mut opened = open_all(path)?;
    let skip = match options.tail_lines {
        None => 0,
        Some(tail) => {
            let mut counter = LineCounter::default();
            let newest = opened.len().saturating_sub(1);
            for (i, file) in opened.iter_mut().enumerate() {
                let mut carry = Vec::new();
                read_lines(file, &mut carry, |l| {
                    counter.push(&cri::parse_lenient(l));
                    true
                })?;
                // A rotated file's last line counts even without its newline (it is printed); the current
                // file's unfinished one is not.
                if i < newest && !carry.is_empty() {
                    counter.push(&cri::parse_lenient(&carry));
                }
                file.reader.rewind()?;
            }
            lines_to_skip(counter.total(), Some(tail))
        }
    };
    let mut printer = Printer::new(options.since, options.timestamps, options.limit_bytes, skip);
    let mut out = Vec::new();
    let Some(mut current) = opened.pop() else {
        // No file at all (yet): nothing to send, even when following.
        return Ok(());
    };
    for mut file in opened {
        let mut carry = Vec::new();
        let (mut wanted, _) = print_lines(&mut file, &mut carry, &mut printer, &mut out, send)?;
        if wanted && !carry.is_empty() {
            // A rotated file is complete, even if its last line has no newline.
            wanted = printer.print(&cri::parse_lenient(&carry), &mut out);
        }
        if !wanted {
            flush(send, &mut out, true);
            return Ok(());
        }
    }
    let mut carry = Vec::new();
    let (wanted, _) = print_lines(&mut current, &mut carry, &mut printer, &mut out, send)?;
    if !flush(send, &mut out, true) || !wanted || !options.follow {
        return Ok(());
    }

    let mut polls = 0u32;
    let mut stopping = false;
    let mut rotation_seen = false;
    loop {
        let (wanted, got) = print_lines(&mut current, &mut carry, &mut printer, &mut out, send)?;
        if !flush(send, &mut out, true) || !wanted {
            return Ok(());
        }
        if got {
            continue;
        }
        if stopping {
            return Ok(());
        }
        if rotation_seen {
            // The open file was renamed away and read to its end since: it is complete, and the next
            // newer file follows.
            rotation_seen = false;
            if let Some(next) = next_newer(path, current.inode)? {
                if !carry.is_empty() && !printer.print(&cri::parse_lenient(&carry), &mut out) {
                    flush(send, &mut out, true);
                    return Ok(());
                }
                carry.clear();
                current = next;
                continue;
            }
        } else if inode_of(path).is_some_and(|i| i != current.inode) {
            // Rotated: one more read of the open file for what was written just before the rename.
            rotation_seen = true;
            continue;
        }
        // Asked at the first pause (a container that already stopped ends the follow at once), then
        // every second or so.
        let ask = polls.is_multiple_of(ALIVE_EVERY);
        polls += 1;
        if ask {
            if let Some(alive) = alive.as_mut() {
                if !alive() {
                    // One more read for what was written just before the end.
                    stopping = true;
                    continue;
                }
            }
            if !send(Vec::new()) {
                return Ok(());
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The file that follows the one with `inode` among the log's files (by age), opened.
fn next_newer(path: &Path, inode: u64) -> io::Result<Option<Open>> {
    let paths = files(path);
    let position = paths.iter().position(|p| inode_of(p) == Some(inode));
    let candidates: Vec<&PathBuf> = match position {
        Some(i) => paths[i + 1..].iter().collect(),
        // Our file was deleted (more rotations than files kept while we slept): the oldest left.
        None => paths.iter().collect(),
    };
    for p in candidates {
        match open(p) {
            Ok(o) => return Ok(Some(o)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// [`read_blocking`] on tokio's blocking pool, as a stream of byte chunks (empty chunks are skipped).
pub fn read(
    path: PathBuf,
    options: ReadOptions,
    alive: Option<Alive>,
) -> impl Stream<Item = io::Result<Vec<u8>>> + Send + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(8);
    tokio::task::spawn_blocking(move || {
        let mut send = |chunk: Vec<u8>| {
            if chunk.is_empty() {
                return !tx.is_closed();
            }
            tx.blocking_send(Ok(chunk)).is_ok()
        };
        if let Err(e) = read_blocking(&path, &options, alive, &mut send) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::logs::cri::{encode, Stream};

    fn line(t: u32, content: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let time: Timestamp = format!("2026-01-01T00:00:{t:02}Z").parse().unwrap();
        encode(&mut out, time, Stream::Stdout, false, content.as_bytes());
        out
    }

    fn write(path: &Path, lines: &[(u32, &str)]) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        for (t, c) in lines {
            f.write_all(&line(*t, c)).unwrap();
        }
    }

    fn read_all(path: &Path, options: &ReadOptions) -> String {
        let mut got = Vec::new();
        read_blocking(path, options, None, &mut |c| {
            got.extend(c);
            true
        })
        .unwrap();
        String::from_utf8(got).unwrap()
    }

    /// 0.log.2 (a, b), 0.log.1 (c), 0.log (d, e).
    fn rotated_log(dir: &Path) -> PathBuf {
        let path = dir.join("0.log");
        write(&rotated(&path, 2), &[(1, "a"), (2, "b")]);
        write(&rotated(&path, 1), &[(3, "c")]);
        write(&path, &[(4, "d"), (5, "e")]);
        path
    }

    #[test]
    fn the_files_are_read_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = rotated_log(dir.path());
        assert_eq!(files(&path), [rotated(&path, 2), rotated(&path, 1), path.clone()]);
        assert_eq!(read_all(&path, &ReadOptions::default()), "a\nb\nc\nd\ne\n");
        assert!(read_all(&dir.path().join("9.log"), &ReadOptions::default()).is_empty());
    }

    #[test]
    fn tail_since_timestamps_and_limit_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = rotated_log(dir.path());
        let o = |f: fn(&mut ReadOptions)| {
            let mut o = ReadOptions::default();
            f(&mut o);
            o
        };
        assert_eq!(read_all(&path, &o(|o| o.tail_lines = Some(3))), "c\nd\ne\n");
        assert_eq!(read_all(&path, &o(|o| o.tail_lines = Some(0))), "");
        assert_eq!(read_all(&path, &o(|o| o.since = Some("2026-01-01T00:00:02Z".parse().unwrap()))), "b\nc\nd\ne\n");
        assert_eq!(
            read_all(
                &path,
                &o(|o| {
                    o.tail_lines = Some(1);
                    o.timestamps = true
                })
            ),
            "2026-01-01T00:00:05Z e\n"
        );
        assert_eq!(read_all(&path, &o(|o| o.limit_bytes = Some(5))), "a\nb\nc");
    }

    #[test]
    fn a_line_being_written_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write(&path, &[(1, "whole")]);
        let half = line(2, "half");
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&half[..10]).unwrap();
        assert_eq!(read_all(&path, &ReadOptions::default()), "whole\n");
    }

    #[test]
    fn following_sends_new_lines_crosses_rotations_and_ends_when_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write(&path, &[(1, "first")]);
        let running = Arc::new(AtomicBool::new(true));
        let (p, r) = (path.clone(), running.clone());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(250));
            write(&p, &[(2, "second")]);
            std::thread::sleep(Duration::from_millis(250));
            // A rotation, as the logger makes it, then more lines in the new file.
            std::fs::rename(&p, rotated(&p, 1)).unwrap();
            write(&p, &[(3, "third")]);
            std::thread::sleep(Duration::from_millis(250));
            write(&p, &[(4, "fourth")]);
            r.store(false, Ordering::SeqCst);
        });
        let options = ReadOptions { follow: true, ..Default::default() };
        let r = running.clone();
        let alive: Alive = Box::new(move || r.load(Ordering::SeqCst));
        let mut got = Vec::new();
        let started = std::time::Instant::now();
        read_blocking(&path, &options, Some(alive), &mut |c| {
            got.extend(c);
            true
        })
        .unwrap();
        writer.join().unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "first\nsecond\nthird\nfourth\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn following_stops_when_nobody_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write(&path, &[(1, "only")]);
        let options = ReadOptions { follow: true, ..Default::default() };
        let mut calls = 0;
        read_blocking(&path, &options, None, &mut |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn the_stream_yields_the_log() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = rotated_log(dir.path());
        let chunks: Vec<Vec<u8>> = read(path, ReadOptions::default(), None).map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.concat(), b"a\nb\nc\nd\ne\n");
    }
}
