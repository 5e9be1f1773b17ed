//! Errors of the store library.

use std::path::PathBuf;

/// What can go wrong opening or running a store member.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb at {path}")]
    Db {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot i/o")]
    SnapshotIo(#[source] std::io::Error),
    #[error("data is corrupt: {0}")]
    Corrupt(String),
    #[error("data dir {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

impl From<StoreError> for openraft::StorageError<crate::types::NodeId> {
    fn from(e: StoreError) -> Self {
        openraft::StorageIOError::write(&e).into()
    }
}
