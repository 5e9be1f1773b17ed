//! The data of a Raft snapshot as openraft handles it: a file that is read, written and seeked. A snapshot
//! built here is a RocksDB checkpoint, and its stream (the format of `StateDb::export`) is written only when
//! someone first reads it — a member that needs the snapshot — so building one stays cheap under heavy writes.

use std::future::Future;
use std::io::SeekFrom;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

/// Writes the snapshot file (once, on a blocking thread) and returns it open at its start.
pub type Export = Box<dyn FnOnce() -> std::io::Result<std::fs::File> + Send>;

/// A snapshot's data: an open file, or a file exported on first use.
pub struct SnapshotData {
    state: State,
    /// A seek asked for before the file was open.
    pending_seek: Option<SeekFrom>,
}

enum State {
    Open(tokio::fs::File),
    Lazy(Option<Export>),
    Exporting(JoinHandle<std::io::Result<std::fs::File>>),
}

impl SnapshotData {
    pub fn file(f: tokio::fs::File) -> Self {
        SnapshotData { state: State::Open(f), pending_seek: None }
    }

    /// Data that `export` writes the first time it is read or seeked.
    pub fn lazy(export: Export) -> Self {
        SnapshotData { state: State::Lazy(Some(export)), pending_seek: None }
    }

    /// The file, exporting it first if needed.
    pub async fn into_file(mut self) -> std::io::Result<tokio::fs::File> {
        std::future::poll_fn(|cx| self.poll_open(cx)).await?;
        match self.state {
            State::Open(f) => Ok(f),
            _ => unreachable!("poll_open returned ready"),
        }
    }

    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.state {
                State::Open(_) => return Poll::Ready(Ok(())),
                State::Lazy(export) => {
                    let export = export.take().expect("an export runs once");
                    self.state = State::Exporting(tokio::task::spawn_blocking(export));
                }
                State::Exporting(handle) => {
                    let f = ready!(Pin::new(handle).poll(cx)).map_err(std::io::Error::other)??;
                    self.state = State::Open(tokio::fs::File::from_std(f));
                }
            }
        }
    }

    fn open_file(&mut self) -> &mut tokio::fs::File {
        match &mut self.state {
            State::Open(f) => f,
            _ => unreachable!("poll_open returned ready"),
        }
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_open(cx))?;
        Pin::new(self.open_file()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_open(cx))?;
        Pin::new(self.open_file()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_open(cx))?;
        Pin::new(self.open_file()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_open(cx))?;
        Pin::new(self.open_file()).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        match &mut self.state {
            State::Open(f) => Pin::new(f).start_seek(position),
            _ => {
                self.pending_seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        ready!(self.poll_open(cx))?;
        if let Some(position) = self.pending_seek.take() {
            Pin::new(self.open_file()).start_seek(position)?;
        }
        Pin::new(self.open_file()).poll_complete(cx)
    }
}
