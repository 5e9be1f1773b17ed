//! What the clients did and saw: one [`Op`] per request, with the times it was invoked and completed and its
//! outcome. Times are nanoseconds on one monotonic clock shared by all clients of a run.

use serde::{Deserialize, Serialize};

/// A single-key request (the linearizability check partitions the history by key, which is sound only for
/// operations that touch one key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    Put {
        value: String,
    },
    /// A range read of the one key (linearizable, or serializable when `serializable`).
    Get {
        serializable: bool,
    },
    Delete,
    /// A transaction: if the key's value is `expect` (`None`: the key is absent), put `value`.
    CompareAndSwap {
        expect: Option<String>,
        value: String,
    },
}

/// What a completed request returned. `revision` is the response header's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Return {
    Put {
        revision: i64,
    },
    /// The value read (`None`: the key is absent) and its mod revision (0 when absent).
    Get {
        value: Option<String>,
        mod_revision: i64,
        revision: i64,
    },
    Delete {
        deleted: bool,
        revision: i64,
    },
    CompareAndSwap {
        succeeded: bool,
        revision: i64,
    },
}

impl Return {
    /// The store's revision when it answered.
    pub fn revision(&self) -> i64 {
        match self {
            Return::Put { revision }
            | Return::Get { revision, .. }
            | Return::Delete { revision, .. }
            | Return::CompareAndSwap { revision, .. } => *revision,
        }
    }

    /// Whether the request changed the store (and so created a new revision).
    pub fn modified(&self) -> bool {
        match self {
            Return::Put { .. } => true,
            Return::Get { .. } => false,
            Return::Delete { deleted, .. } => *deleted,
            Return::CompareAndSwap { succeeded, .. } => *succeeded,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok(Return),
    /// Known not to have taken effect (e.g. refused before anything was proposed).
    Failed,
    /// May or may not have taken effect (a timeout, a dropped connection): a checker must allow both.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    pub key: String,
    pub call: Call,
    pub invoke: u64,
    /// When the outcome arrived (for `Unknown`, when the client gave up: the request may still take effect
    /// at any later time).
    pub complete: u64,
    pub outcome: Outcome,
}

impl Op {
    pub fn is_write(&self) -> bool {
        !matches!(self.call, Call::Get { .. })
    }
}
