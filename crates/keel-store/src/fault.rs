//! Test-only fault hooks, compiled into debug builds only (release builds have none of this).
//!
//! `KEEL_FAULT_DIVERGE_KEY=<key>`: this member applies every put of `<key>` with the value `diverged`, so its
//! state silently departs from the others' (the divergence check must notice).

use std::sync::OnceLock;

use keel_proto::raftpb::{write_request, WriteRequest};

fn diverge_key() -> Option<&'static [u8]> {
    static KEY: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    KEY.get_or_init(|| std::env::var("KEEL_FAULT_DIVERGE_KEY").ok().map(String::into_bytes)).as_deref()
}

/// The request this member applies instead of `req`, when a fault is configured for it.
pub fn diverge(req: &WriteRequest) -> Option<WriteRequest> {
    let key = diverge_key()?;
    match &req.request {
        Some(write_request::Request::Put(p)) if p.key == key => {
            let mut r = req.clone();
            if let Some(write_request::Request::Put(p)) = &mut r.request {
                p.value = b"diverged".to_vec();
            }
            Some(r)
        }
        _ => None,
    }
}
