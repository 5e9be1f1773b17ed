//! The container logger (`keel container-log`): what containerd's runc shim runs for a task whose stdout is
//! a `binary://` URI. It reads the container's stdout and stderr pipes, writes CRI lines (each with the time
//! it was read and its stream) to the attempt's log file, and rotates that file by size: `N.log` becomes
//! `N.log.1`, `N.log.1` becomes `N.log.2`, … keeping at most `max_files` files.
//!
//! The shim's side of the contract (containerd 1.6 `pkg/process/io.go`, `NewBinaryIO`): the program is the
//! URI's path, its arguments the query's keys and values, its environment only `CONTAINER_ID` and
//! `CONTAINER_NAMESPACE`; fd 3 is the stdout pipe, fd 4 the stderr pipe, and fd 5 is closed (or written to)
//! once the logger is ready; the container starts after that. When the task is deleted the shim closes its
//! ends of the pipes, sends SIGTERM and waits (12 s, then SIGKILL): the logger ignores SIGTERM and drains the
//! pipes to their end, so no output is lost.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::cri::{self, Splitter, Stream};

/// The program's argument: where and how to write one attempt's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The current file, `<container dir>/<attempt>.log`.
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Keep at most this many files (the current one included).
    pub max_files: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("invalid container-log argument {0:?}: want <max bytes>:<max files>:<path>")]
    Spec(String),
    #[error("file descriptor {0} (from the shim) is not open")]
    MissingFd(i32),
    #[error("cannot open the log file {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot write the log file {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("cannot read the container's {stream}: {source}")]
    Read { stream: &'static str, source: io::Error },
}

impl Spec {
    /// `<max bytes>:<max files>:<path>`.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.max_bytes, self.max_files, self.path.display())
    }

    pub fn parse(s: &str) -> Result<Spec, LoggerError> {
        let bad = || LoggerError::Spec(s.to_string());
        let mut parts = s.splitn(3, ':');
        let max_bytes: u64 = parts.next().and_then(|p| p.parse().ok()).filter(|n| *n > 0).ok_or_else(bad)?;
        let max_files: u32 = parts.next().and_then(|p| p.parse().ok()).filter(|n| *n > 0).ok_or_else(bad)?;
        let path = parts.next().filter(|p| Path::new(p).is_absolute()).ok_or_else(bad)?;
        Ok(Spec { path: PathBuf::from(path), max_bytes, max_files })
    }
}

/// The subcommand of the `keel` binary that runs the logger, which is also the one key of the `binary://`
/// URI's query (the shim passes each key and its value as two arguments, in no set order).
pub const SUBCOMMAND: &str = "container-log";

/// `s` percent-encoded but for RFC 3986's unreserved characters (and `/` if `keep_slash`).
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stdout (and stderr) of a task whose output `program` (the `keel` binary, an absolute path) logs as
/// `spec` says: `binary://<program>?container-log=<spec>`.
pub fn binary_uri(program: &Path, spec: &Spec) -> String {
    format!(
        "binary://{}?{SUBCOMMAND}={}",
        percent_encode(&program.to_string_lossy(), true),
        percent_encode(&spec.encode(), false)
    )
}

/// The `n`th rotated file of `path` (`N.log.n`).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A log file that rotates by size, written in whole lines.
#[derive(Debug)]
pub struct RotatingFile {
    spec: Spec,
    file: File,
    size: u64,
    pending: Vec<u8>,
}

impl RotatingFile {
    pub fn open(spec: Spec) -> io::Result<RotatingFile> {
        if let Some(dir) = spec.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&spec.path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { spec, file, size, pending: Vec::new() })
    }

    /// Queues one encoded line (newline included); rotates first if it would not fit in the current file.
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        let used = self.size + self.pending.len() as u64;
        if used > 0 && used + line.len() as u64 > self.spec.max_bytes {
            self.flush()?;
            self.rotate()?;
        }
        self.pending.extend_from_slice(line);
        Ok(())
    }

    /// Writes the queued lines.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        // Whatever happened, the bytes are not written twice (a full disk drops output rather than block
        // the container on a full pipe).
        self.size += self.pending.len() as u64;
        self.pending.clear();
        result
    }

    fn rotate(&mut self) -> io::Result<()> {
        let path = &self.spec.path;
        if self.spec.max_files <= 1 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.spec.max_files - 1).rev() {
                match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
            self.file = OpenOptions::new().create(true).append(true).open(path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Copies one stream into the file as CRI lines until the stream ends. Output keeps being read (and
/// dropped) when the file cannot be written, so that the container never blocks on a full pipe; the first
/// write error is returned at the end.
fn copy(mut input: impl Read, stream: Stream, file: &Mutex<RotatingFile>, path: &Path) -> Result<(), LoggerError> {
    let mut splitter = Splitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    let mut encoded = Vec::with_capacity(cri::MAX_LINE + 64);
    let mut first_error: Option<io::Error> = None;
    let mut write = |data: Option<&[u8]>, splitter: &mut Splitter| {
        let now = jiff::Timestamp::now();
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let mut result = Ok(());
        let mut emit = |partial: bool, content: &[u8]| {
            encoded.clear();
            cri::encode(&mut encoded, now, stream, partial, content);
            if result.is_ok() {
                result = file.line(&encoded);
            }
        };
        match data {
            Some(data) => splitter.push(data, &mut emit),
            None => splitter.finish(&mut emit),
        }
        let result = result.and_then(|()| file.flush());
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    };
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => write(Some(&buf[..n]), &mut splitter),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                write(None, &mut splitter);
                return Err(LoggerError::Read { stream: stream.as_str(), source });
            }
        }
    }
    write(None, &mut splitter);
    match first_error {
        Some(source) => Err(LoggerError::Write { path: path.display().to_string(), source }),
        None => Ok(()),
    }
}

/// Logs `stdout` and `stderr` to the file of `spec` until both end; `ready` is called once the file is
/// open.
pub fn run(
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    spec: Spec,
    ready: impl FnOnce(),
) -> Result<(), LoggerError> {
    let path = spec.path.clone();
    let file =
        RotatingFile::open(spec).map_err(|source| LoggerError::Open { path: path.display().to_string(), source })?;
    ready();
    let file = Arc::new(Mutex::new(file));
    let (f, p) = (file.clone(), path.clone());
    let err_thread = std::thread::spawn(move || copy(stderr, Stream::Stderr, &f, &p));
    let out = copy(stdout, Stream::Stdout, &file, &path);
    let err = err_thread.join().unwrap_or_else(|_| {
        Err(LoggerError::Read { stream: "stderr", source: io::Error::other("the stderr thread panicked") })
    });
    out.and(err)
}

/// Takes an inherited file descriptor (checking that it is open).
fn inherited(fd: i32) -> Result<File, LoggerError> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only reads the descriptor's flags; an unknown descriptor gives -1 (EBADF).
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0 {
        return Err(LoggerError::MissingFd(fd));
    }
    // SAFETY: the descriptor is open (checked above) and nothing else in this process owns it: the shim
    // passed it to this process for its sole use.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The logger as the shim runs it: `spec` is its argument; the pipes and the ready signal are fds 3, 4, 5.
pub fn run_for_shim(spec: &str) -> Result<(), LoggerError> {
    let spec = Spec::parse(spec)?;
    // The shim's SIGTERM means "the task is being deleted": the pipes end soon, and are read to their end.
    // SAFETY: setting a signal's disposition to "ignore" runs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGTERM, nix::sys::signal::SigHandler::SigIgn);
    }
    let stdout = inherited(3)?;
    let stderr = inherited(4)?;
    let ready = inherited(5)?;
    run(stdout, stderr, spec, move || drop(ready))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::cri::parse;

    fn spec(dir: &Path, max_bytes: u64, max_files: u32) -> Spec {
        Spec { path: dir.join("app/0.log"), max_bytes, max_files }
    }

    #[test]
    fn specs_round_trip_and_bad_ones_are_refused() {
        let s = Spec { path: "/var/log/keel/pods/ns_p_u/app/3.log".into(), max_bytes: 10 << 20, max_files: 5 };
        assert_eq!(s.encode(), "10485760:5:/var/log/keel/pods/ns_p_u/app/3.log");
        assert_eq!(Spec::parse(&s.encode()).unwrap(), s);
        // Colons in the path are kept.
        assert_eq!(Spec::parse("1:1:/a:b").unwrap().path, PathBuf::from("/a:b"));
        for bad in ["", "10:5", "x:5:/p", "10:0:/p", "0:5:/p", "10:5:relative"] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_uri_names_the_program_and_carries_the_spec_encoded() {
        let s = Spec { path: "/var/log/keel/pods/default_web 1_u/app/0.log".into(), max_bytes: 100, max_files: 2 };
        assert_eq!(
            binary_uri(Path::new("/usr/local/bin/keel"), &s),
            "binary:///usr/local/bin/keel?container-log=100%3A2%3A%2Fvar%2Flog%2Fkeel%2Fpods%2Fdefault_web%201_u%2Fapp%2F0.log"
        );
    }

    #[test]
    fn both_streams_become_cri_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), 1 << 20, 5);
        let mut ready = false;
        run(&b"out one\nout two\nno newline"[..], &b"err one\n"[..], s.clone(), || ready = true).unwrap();
        assert!(ready);
        let text = std::fs::read(&s.path).unwrap();
        let lines: Vec<_> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| parse(l).unwrap()).collect();
        let of = |stream| lines.iter().filter(|l| l.stream == Some(stream)).map(|l| l.content).collect::<Vec<_>>();
        assert_eq!(of(Stream::Stdout), [&b"out one"[..], b"out two", b"no newline"]);
        assert_eq!(of(Stream::Stderr), [&b"err one"[..]]);
        assert!(lines.iter().all(|l| !l.partial && l.time.is_some()));
    }

    #[test]
    fn files_rotate_by_size_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), 200, 3);
        // 20 lines of about 50 bytes: several rotations; only 3 files are kept.
        let input: String = (0..20).map(|i| format!("line {i:02}\n")).collect();
        run(std::io::Cursor::new(input.into_bytes()), &b""[..], s.clone(), || {}).unwrap();
        let names: Vec<String> = {
            let mut n: Vec<String> = std::fs::read_dir(dir.path().join("app"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names, ["0.log", "0.log.1", "0.log.2"]);
        let mut all = Vec::new();
        for p in [rotated(&s.path, 2), rotated(&s.path, 1), s.path.clone()] {
            let text = std::fs::read(&p).unwrap();
            assert!(text.len() <= 200, "{} has {} bytes", p.display(), text.len());
            all.extend(
                text.split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| String::from_utf8(parse(l).unwrap().content.to_vec()).unwrap()),
            );
        }
        // The newest lines survive, in order.
        assert_eq!(all.last().map(String::as_str), Some("line 19"));
        let numbers: Vec<u32> = all.iter().map(|l| l[5..].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    }

    #[test]
    fn one_file_is_truncated_instead_of_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), 100, 1);
        let input: String = (0..10).map(|i| format!("line {i}\n")).collect();
        run(std::io::Cursor::new(input.into_bytes()), &b""[..], s.clone(), || {}).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("app")).unwrap().count(), 1);
        let text = String::from_utf8(std::fs::read(&s.path).unwrap()).unwrap();
        assert!(text.len() <= 100 && text.contains("line 9"), "{text}");
    }

    #[test]
    fn an_existing_file_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), 1 << 20, 5);
        run(&b"first\n"[..], &b""[..], s.clone(), || {}).unwrap();
        run(&b"second\n"[..], &b""[..], s.clone(), || {}).unwrap();
        let text = String::from_utf8(std::fs::read(&s.path).unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
