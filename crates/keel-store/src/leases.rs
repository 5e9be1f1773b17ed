//! The lease operations of a [`Store`]: grants and revocations go through the Raft log; keep-alives and
//! remaining TTLs are answered by the leader's lessor (followers forward them); the leader revokes expired
//! leases (see `lessor` for the rules).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use keel_proto::raftpb::{apply_error::Code, write_request, write_response};

use crate::apply::KvView;
use crate::peer::NOT_LEADER;
use crate::store::{unexpected, ApiError, Leader, Store, REQUEST_TIMEOUT};

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How often the leader looks for expired leases.
const EXPIRY_CHECK: Duration = Duration::from_millis(200);
/// A revocation not applied after this long is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

impl Store {
    /// The shortest TTL granted: 1.5 election timeouts, in whole seconds (etcd's rule), so that a lease
    /// survives a failover.
    pub fn min_lease_ttl(&self) -> i64 {
        ((self.config().election_timeout.as_millis() as i64 * 3 / 2 + 999) / 1000).max(1)
    }

    pub async fn lease_grant(&self, req: LeaseGrantRequest) -> Result<LeaseGrantResponse, ApiError> {
        if req.ttl > MAX_LEASE_TTL {
            return Err(ApiError::LeaseTtlTooLarge);
        }
        if req.id < 0 {
            return Err(ApiError::Invalid("lease id must not be negative".into()));
        }
        let ttl = req.ttl.max(self.min_lease_ttl());
        for _ in 0..3 {
            let id = if req.id != 0 { req.id } else { rand::random_range(1..i64::MAX) };
            let r = self.write_checked(write_request::Request::LeaseGrant(LeaseGrantRequest { ttl, id })).await;
            match r {
                Ok((write_response::Response::LeaseGrant(mut g), rev)) => {
                    g.header = Some(self.header(rev));
                    return Ok(g);
                }
                Ok(_) => return Err(unexpected()),
                // A server-chosen id that happens to exist: choose again.
                Err(ApiError::Apply(e)) if req.id == 0 && e.code == Code::LeaseExists as i32 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Invalid("could not choose a free lease id".into()))
    }

    pub async fn lease_revoke(&self, req: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, ApiError> {
        match self.write_checked(write_request::Request::LeaseRevoke(req)).await? {
            (write_response::Response::LeaseRevoke(mut r), rev) => {
                r.header = Some(self.header(rev));
                Ok(r)
            }
            _ => Err(unexpected()),
        }
    }

    /// Keeps lease `id` alive for its TTL; returns the TTL, or 0 when the lease does not exist (any more).
    pub async fn lease_renew(&self, id: i64) -> Result<i64, ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.leader() {
                Leader::Me => {
                    // Not confirmed as leader: ask again whoever leads by then.
                    if let Ok(ttl) = self.renew_here(id).await {
                        return Ok(ttl.unwrap_or(0));
                    }
                }
                Leader::Peer(mut c) => match c.lease_renew(LeaseKeepAliveRequest { id }).await {
                    Ok(r) => return Ok(r.into_inner().ttl),
                    // Renewing is idempotent: any failure may be retried.
                    Err(s) => tracing::debug!(status = %s, "forwarded lease renewal failed"),
                },
                Leader::Unknown => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Renews on this member, which leads, once a quorum has confirmed that it still does: a leader cut
    /// off from the others (and replaced, unaware) must not acknowledge keep-alives, or a client would
    /// believe its lease alive while the new leader lets it expire (etcd's `ensureLeadership`). A new
    /// leader elected after the confirmation renews every lease for a full TTL, so the answer holds.
    pub(crate) async fn renew_here(&self, id: i64) -> Result<Option<i64>, NotLeading> {
        let term = self.term();
        if self.raft().get_read_log_id().await.is_err() || self.term() != term {
            return Err(NotLeading);
        }
        let now = Instant::now();
        let mut lessor = self.shared().lessor.lock().expect("lessor");
        lessor.lead(term, now);
        Ok(lessor.renew(id, now))
    }

    pub async fn lease_time_to_live(&self, req: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.leader() {
                Leader::Me => return self.time_to_live_here(&req),
                Leader::Peer(mut c) => match c.lease_time_to_live(req).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) if s.code() == NOT_LEADER || s.code() == tonic::Code::Unavailable => {}
                    Err(s) => return Err(ApiError::Invalid(s.message().to_string())),
                },
                Leader::Unknown => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Remaining and granted TTL from this member's lessor (it leads), and the lease's keys from its state.
    pub(crate) fn time_to_live_here(&self, req: &LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, ApiError> {
        let remaining = {
            let now = Instant::now();
            let mut lessor = self.shared().lessor.lock().expect("lessor");
            lessor.lead(self.term(), now);
            lessor.remaining(req.id, now)
        };
        let state = self.shared().current();
        let reader = state.reader();
        let header = Some(self.header(reader.revision()?));
        let Some((ttl, granted)) = remaining else {
            // etcd answers an unknown or expired lease with TTL -1.
            return Ok(LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, granted_ttl: 0, keys: vec![] });
        };
        let keys = if req.keys { reader.lease_keys(req.id)? } else { Vec::new() };
        Ok(LeaseTimeToLiveResponse { header, id: req.id, ttl, granted_ttl: granted, keys })
    }

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, ApiError> {
        self.linearize().await?;
        let state = self.shared().current();
        let reader = state.reader();
        let leases = reader.leases()?.into_iter().map(|(id, _)| LeaseStatus { id }).collect();
        Ok(LeaseLeasesResponse { header: Some(self.header(reader.revision()?)), leases })
    }
}

/// This member could not confirm that it leads.
#[derive(Debug)]
pub(crate) struct NotLeading;

/// While this member leads: renews every lease when it takes over, then revokes leases as they expire.
/// Each revocation is fenced to the term in which this member decided it: if it has been deposed by the
/// time the revocation reaches the log (or the retry forwards it to the next leader, whose lessor renewed
/// the lease on taking over), the state machine refuses it.
pub(crate) async fn expire_leases(store: Store, stop: tokio::sync::watch::Receiver<bool>) {
    let mut revoking: HashMap<i64, Instant> = HashMap::new();
    let mut ticker = crate::store::Ticker::new(EXPIRY_CHECK, stop);
    while ticker.next().await {
        let term = {
            let m = store.raft().metrics();
            let m = m.borrow();
            (m.state == openraft::ServerState::Leader).then_some(m.current_term)
        };
        let Some(term) = term else {
            store.shared().lessor.lock().expect("lessor").demote();
            revoking.clear();
            continue;
        };
        let now = Instant::now();
        let expired = {
            let mut lessor = store.shared().lessor.lock().expect("lessor");
            if lessor.lead(term, now) {
                tracing::info!(term, leases = lessor.len(), "leading: every lease renewed for its full TTL");
            }
            lessor.expired(now)
        };
        revoking.retain(|id, since| expired.contains(id) && now.duration_since(*since) < REVOKE_RETRY);
        for id in expired {
            if revoking.contains_key(&id) {
                continue;
            }
            revoking.insert(id, now);
            let store = store.clone();
            tokio::spawn(async move {
                let revoke = write_request::Request::LeaseRevoke(LeaseRevokeRequest { id });
                match store.write_fenced(revoke, term).await {
                    Ok(_) => tracing::debug!(lease = id, "revoked expired lease"),
                    Err(ApiError::Apply(e)) if e.code == Code::LeaseNotFound as i32 => {}
                    Err(ApiError::Apply(e)) if e.code == Code::Fenced as i32 => {
                        tracing::info!(lease = id, term, "expiry decided by a deposed leader: not revoked")
                    }
                    Err(e) => tracing::warn!(lease = id, error = %e, "cannot revoke expired lease yet"),
                }
            });
        }
    }
}
