//! Which master runs the control loops (docs/adr/002-control-loop-leadership-and-fencing.md).
//!
//! One key, [`LEADER_KEY`], names the leader; its mod revision is the leader's fencing token, which every
//! write of its loops carries ([`Storage::fenced`]). Stacked, the master whose store member leads Raft
//! claims the key for its term (a write that succeeds only if the stored term is lower, so a deposed
//! leader's late claim changes nothing); external, the masters race to create the key with a lease, keep it
//! alive while they lead, and revoke it on a clean shutdown. An external leader also writes its API address
//! in the key: the others dial it, and when it refuses connections (no process listens there: it died, and
//! its host did not) they revoke its lease at once instead of waiting out the TTL. A leader that is merely
//! silent (paused, partitioned, its machine gone) is left to the lease: a connection refused is the only
//! sign taken as certain, and fencing keeps even a wrong guess safe.
//!
//! [`spawn`] runs the campaign and an observer of the key, and publishes this master's [`Role`]; while this
//! master leads, it also renews the coordination.k8s.io Lease `kube-system/keel-controller-manager` (for
//! people and tools that look there, as they do for kube-controller-manager), with fenced writes.

use std::time::Duration;

use keel_api::meta::{self, Fresh};
use keel_api::resources;
use serde_json::{json, Value};
use tokio::sync::watch;

pub use crate::storage::LEADER_KEY;
use crate::storage::{Change, Storage, StorageError, Watched};

/// This master's part in running the control loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Another master leads (`leader`, when known), or none does yet.
    Follower { leader: Option<String> },
    /// This master leads; its loops' writes carry `fence`, the leader key's mod revision.
    Leader { fence: i64 },
}

/// How a master campaigns.
#[derive(Debug, Clone)]
pub enum Campaign {
    /// Stacked: lead while the master's own store member leads Raft (`Some(term)`).
    Raft(watch::Receiver<Option<u64>>),
    /// External: hold the leader key under a lease of `ttl` seconds, naming the API `address` in it.
    Lease { ttl: i64, address: String },
}

/// The leader key's value: the term, zero-padded so that values sort as terms do (0 for leased keys), and
/// the holder's name.
pub fn key_value(term: u64, holder: &str) -> String {
    format!("{term:020} {holder}")
}

/// An external leader's key value: [`key_value`], then on a line of its own the API address it serves on.
pub fn key_value_at(holder: &str, address: &str) -> String {
    format!("{}\n{address}", key_value(0, holder))
}

/// The holder named by a leader key's value.
pub fn holder(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let first = text.split('\n').next()?;
    let (_, name) = first.split_once(' ')?;
    Some(name.to_string())
}

/// The API address a leader key's value names, if any.
pub fn holder_address(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    text.split_once('\n').map(|(_, address)| address.to_string())
}

/// How often a follower dials an external leader's API, how long it waits, and how many refusals in a row
/// mean the leader's process is gone.
const DIAL_EVERY: Duration = Duration::from_millis(150);
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);
const REFUSALS: u32 = 2;

/// What the observer last saw of the leader key: its holder and mod revision (`None`: no key).
type Observed = Option<(String, i64)>;

/// The role, from what this master claims (`Some(fence)`) and what the store shows. A claim stands until
/// the key is seen rewritten after it; the observer may not have seen the claim's own write yet.
pub fn role(claim: Option<i64>, observed: &Observed) -> Role {
    match (claim, observed) {
        (Some(fence), Some((_, revision))) if *revision <= fence => Role::Leader { fence },
        (Some(fence), None) => Role::Leader { fence },
        (_, observed) => Role::Follower { leader: observed.as_ref().map(|(name, _)| name.clone()) },
    }
}

/// Starts campaigning as `identity`; the receiver follows this master's role until `shutdown` turns true
/// (an external leader then resigns).
pub fn spawn(
    storage: Storage,
    identity: String,
    campaign: Campaign,
    shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Role> {
    let (observed_tx, observed_rx) = watch::channel::<Observed>(None);
    let (claim_tx, claim_rx) = watch::channel::<Option<i64>>(None);
    let (role_tx, role_rx) = watch::channel(Role::Follower { leader: None });
    let (storage_for_lease, identity_for_lease) = (storage.clone(), identity.clone());
    tokio::spawn(observe(storage.clone(), observed_tx, shutdown.clone()));
    match campaign {
        Campaign::Raft(terms) => tokio::spawn(by_raft(storage, identity, terms, claim_tx, shutdown.clone())),
        Campaign::Lease { ttl, address } => tokio::spawn(by_lease(
            storage,
            identity,
            Held { ttl, address },
            observed_rx.clone(),
            claim_tx,
            shutdown.clone(),
        )),
    };
    tokio::spawn(publish(claim_rx, observed_rx, role_tx, shutdown.clone()));
    tokio::spawn(mirror_lease(storage_for_lease, identity_for_lease, role_rx.clone(), shutdown));
    role_rx
}

/// Where the leader shows itself to Kubernetes users: `kubectl -n kube-system get lease keel-controller-manager`.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "keel-controller-manager";
/// How often the leader renews the Lease, and the duration it states (kube-controller-manager's defaults).
const LEASE_RENEW: Duration = Duration::from_secs(2);
const LEASE_DURATION_SECONDS: i64 = 15;

/// Renews the Lease while this master leads, each write fenced by the leadership it holds.
async fn mirror_lease(
    storage: Storage,
    identity: String,
    mut role: watch::Receiver<Role>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let fence = tokio::select! {
            r = role.wait_for(|r| matches!(r, Role::Leader { .. })) => match r.as_deref() {
                Ok(Role::Leader { fence }) => *fence,
                _ => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let fenced = storage.fenced(fence);
        loop {
            match renew_lease(&fenced, &identity).await {
                Ok(()) => {}
                Err(StorageError::Fenced { .. }) => break,
                Err(e) => tracing::debug!(error = %e, "renewing the controller Lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(LEASE_RENEW) => {}
                _ = role.wait_for(|r| *r != Role::Leader { fence }) => break,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Kubernetes' MicroTime: RFC 3339 with microseconds, UTC.
fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The Lease after a renewal by `identity` at `now` (a new holder takes it: acquireTime, one more transition).
pub fn renewed(mut lease: Value, identity: &str, now: &str) -> Value {
    let spec = &mut lease["spec"];
    if spec["holderIdentity"].as_str() != Some(identity) {
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
        let taken_over = spec["holderIdentity"].as_str().is_some();
        spec["holderIdentity"] = json!(identity);
        spec["acquireTime"] = json!(now);
        spec["leaseTransitions"] = json!(if taken_over { transitions + 1 } else { transitions });
    }
    spec["renewTime"] = json!(now);
    spec["leaseDurationSeconds"] = json!(LEASE_DURATION_SECONDS);
    lease
}

async fn renew_lease(storage: &Storage, identity: &str) -> Result<(), StorageError> {
    let Some(leases) = resources::find("coordination.k8s.io", "v1", "leases") else { return Ok(()) };
    let key = leases.key(LEASE_NAMESPACE, LEASE_NAME);
    let now = jiff::Timestamp::now();
    let encode = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    match storage.get(&key).await {
        Ok(stored) => {
            let lease: Value = serde_json::from_slice(&stored.value).unwrap_or_else(|_| json!({}));
            let lease = renewed(lease, identity, &micro_time(now));
            storage.update(&key, encode(&lease), stored.mod_revision).await.map(drop)
        }
        Err(StorageError::NotFound) => {
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
                "spec": {"leaseTransitions": 0},
            });
            let fresh = Fresh { now, uid: uuid::Uuid::new_v4().to_string(), random: 0 };
            if meta::prepare_create(leases, &mut lease, Some(LEASE_NAMESPACE), &fresh).is_err() {
                return Ok(());
            }
            let lease = renewed(lease, identity, &micro_time(now));
            match storage.create(&key, encode(&lease)).await {
                Ok(_) | Err(StorageError::AlreadyExists) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Keeps the role up to date with the claim and the observed key.
async fn publish(
    mut claim: watch::Receiver<Option<i64>>,
    mut observed: watch::Receiver<Observed>,
    role_tx: watch::Sender<Role>,
    _shutdown: watch::Receiver<bool>,
) {
    // Runs until the campaign ends (its claim sender dropped), so that a resignation on shutdown is
    // published too; the observer may stop first.
    let mut observing = true;
    loop {
        let now = role(*claim.borrow_and_update(), &observed.borrow_and_update());
        role_tx.send_if_modified(|was| {
            if *was == now {
                return false;
            }
            tracing::info!(role = ?now, "control-loop leadership changed");
            *was = now;
            true
        });
        tokio::select! {
            r = claim.changed() => if r.is_err() { return },
            r = observed.changed(), if observing => if r.is_err() { observing = false },
        }
    }
}

/// Follows the leader key: reads it, then watches it from there; starts over after any error.
async fn observe(storage: Storage, tx: watch::Sender<Observed>, mut shutdown: watch::Receiver<bool>) {
    let follow = async {
        loop {
            if let Err(e) = follow_key(&storage, &tx).await {
                tracing::debug!(error = %e, "watching the leader key again");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = follow => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

async fn follow_key(storage: &Storage, tx: &watch::Sender<Observed>) -> Result<(), StorageError> {
    // The key as of one revision, then every change after that revision: nothing falls in between.
    let page = storage.list(LEADER_KEY, None, 1, 0).await?;
    let now = page.items.iter().find(|kv| kv.key == LEADER_KEY);
    tx.send_replace(now.and_then(|kv| holder(&kv.value).map(|h| (h, kv.mod_revision))));
    let mut watch = storage.watch(LEADER_KEY, page.revision + 1).await?;
    while let Some(next) = watch.next().await {
        if let Watched::Changes(changes) = next? {
            for change in changes.into_iter().filter(|c| key_of(c) == LEADER_KEY) {
                tx.send_replace(match change {
                    Change::Put { object, .. } => holder(&object.value).map(|h| (h, object.mod_revision)),
                    Change::Delete { .. } => None,
                });
            }
        }
    }
    Err(StorageError::Unavailable("the leader key's watch ended".into()))
}

fn key_of(change: &Change) -> &str {
    match change {
        Change::Put { object, .. } => &object.key,
        Change::Delete { previous, .. } => &previous.key,
    }
}

/// Stacked: claims the key in each term this master's member leads, and lets the claim go when it stops.
async fn by_raft(
    storage: Storage,
    identity: String,
    mut terms: watch::Receiver<Option<u64>>,
    claim: watch::Sender<Option<i64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let term = tokio::select! {
            t = terms.wait_for(Option::is_some) => match t { Ok(t) => t.expect("waited for Some"), Err(_) => return },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        // Claim over any earlier term, and over this master's own claim of this term (a lone member keeps
        // its term across a restart): anything that sorts at or below our value.
        let value = key_value(term, &identity);
        let bound = format!("{value}\0");
        match storage.put_if_below(LEADER_KEY, value.into_bytes(), bound.as_bytes()).await {
            Ok(Ok(fence)) => {
                tracing::info!(term, fence, "leading the control loops");
                claim.send_replace(Some(fence));
            }
            Ok(Err(now)) => {
                let holder = now.and_then(|kv| holder(&kv.value));
                tracing::info!(term, ?holder, "the leader key names a later term; not claiming it");
            }
            Err(e) => {
                tracing::debug!(error = %e, term, "claiming the leader key failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        tokio::select! {
            _ = terms.wait_for(|t| *t != Some(term)) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
        claim.send_replace(None);
    }
}

/// An external campaign's lease TTL and the API address the leader key names.
struct Held {
    ttl: i64,
    address: String,
}

/// Reads the leader key; when another master holds it and names its address, dials that address until it
/// refuses [`REFUSALS`] times in a row, then revokes the key's lease (the key goes with it) and returns.
/// Never returns while the holder answers, is silent, or names no address.
async fn depose_if_gone(storage: &Storage, identity: &str) {
    let key = match storage.list(LEADER_KEY, None, 1, 0).await {
        Ok(page) => page.items.into_iter().find(|kv| kv.key == LEADER_KEY),
        Err(_) => None,
    };
    let Some(kv) = key else { return std::future::pending().await };
    let (Some(holder), Some(address)) = (holder(&kv.value), holder_address(&kv.value)) else {
        return std::future::pending().await;
    };
    if holder == identity || kv.lease == 0 {
        return std::future::pending().await;
    }
    let mut refused = 0;
    loop {
        tokio::time::sleep(DIAL_EVERY).await;
        match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(&address)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            _ => refused = 0,
        }
        if refused >= REFUSALS {
            tracing::info!(
                leader = %holder,
                %address,
                "the control-loop leader's API refuses connections (its process is gone): revoking its lease"
            );
            match storage.revoke_lease(kv.lease).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "revoking the gone leader's lease failed; trying again"),
            }
        }
    }
}

/// External: creates the key under a lease when there is none, holds it while the lease lives, and
/// revokes the lease on shutdown (so that another master takes over at once).
async fn by_lease(
    storage: Storage,
    identity: String,
    held: Held,
    mut observed: watch::Receiver<Observed>,
    claim: watch::Sender<Option<i64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Held { ttl, address } = held;
    let every = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let attempt = async {
            let lease = storage.grant_lease(ttl).await?;
            match storage.create_leased(LEADER_KEY, key_value_at(&identity, &address).into_bytes(), lease).await {
                Ok(Ok(fence)) => Ok(Some((lease, fence))),
                Ok(Err(existing)) => {
                    let _ = storage.revoke_lease(lease).await;
                    // This master's own key (its claim dropped on a store error, or it restarted at once):
                    // take it up again while its lease lives; nobody else can have led since.
                    Ok(match existing {
                        Some(kv) if holder(&kv.value).as_deref() == Some(identity.as_str()) && kv.lease != 0 => {
                            match storage.keep_alive_once(kv.lease).await {
                                Ok(t) if t > 0 => Some((kv.lease, kv.mod_revision)),
                                _ => None,
                            }
                        }
                        _ => None,
                    })
                }
                Err(e) => {
                    let _ = storage.revoke_lease(lease).await;
                    Err(e)
                }
            }
        };
        match attempt.await {
            Ok(Some((lease, fence))) => {
                tracing::info!(fence, lease, "leading the control loops");
                claim.send_replace(Some(fence));
                let resigned = tokio::select! {
                    // Shutdown first: the observer stops with it, and its ending must not read as a loss.
                    biased;
                    _ = shutdown.wait_for(|s| *s) => true,
                    lost = storage.keep_alive(lease, ttl, every) => {
                        tracing::warn!(error = %lost, "lost the leader key's lease");
                        false
                    }
                    _ = observed.wait_for(|o| o.as_ref().is_some_and(|(_, rev)| *rev > fence)) => false,
                };
                if resigned || *shutdown.borrow() {
                    match storage.revoke_lease(lease).await {
                        Ok(()) => {
                            tracing::info!(lease, "resigned the control loops: the leader key's lease is revoked")
                        }
                        Err(e) => tracing::warn!(error = %e, "resigning: the lease could not be revoked; it runs out"),
                    }
                    claim.send_replace(None);
                    return;
                }
                claim.send_replace(None);
            }
            Ok(None) => {
                // Someone holds the key: wait until it is gone (deleted or expired with its lease), or until
                // its holder refuses connections (then revoke its lease).
                tokio::time::sleep(Duration::from_millis(100)).await;
                tokio::select! {
                    _ = observed.wait_for(Option::is_none) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(every * 3) => {}
                    _ = depose_if_gone(&storage, &identity) => {}
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "campaigning failed; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_leader_names_its_address_and_older_values_still_parse() {
        let v = key_value_at("m 2", "10.200.0.102:6443");
        assert_eq!(holder(v.as_bytes()).as_deref(), Some("m 2"));
        assert_eq!(holder_address(v.as_bytes()).as_deref(), Some("10.200.0.102:6443"));
        let old = key_value(0, "m1");
        assert_eq!(holder(old.as_bytes()).as_deref(), Some("m1"));
        assert_eq!(holder_address(old.as_bytes()), None);
    }

    #[test]
    fn key_values_sort_by_term() {
        assert!(key_value(9, "zeta") < key_value(10, "alpha"));
        assert!(key_value(10, "m1").as_bytes() > format!("{:020}", 10).as_bytes(), "the same term is not below");
        assert!(key_value(9, "m1").as_bytes() < format!("{:020}", 10).as_bytes());
        assert_eq!(holder(key_value(3, "m 2").as_bytes()).as_deref(), Some("m 2"));
        assert_eq!(holder(b"garbage"), None);
    }

    #[test]
    fn a_lease_renewed_by_a_new_holder_counts_a_transition() {
        let first = renewed(json!({"spec": {"leaseTransitions": 0}}), "m1", "t1");
        assert_eq!(
            first["spec"],
            json!({"holderIdentity": "m1", "acquireTime": "t1", "renewTime": "t1", "leaseTransitions": 0, "leaseDurationSeconds": 15})
        );
        let again = renewed(first, "m1", "t2");
        assert_eq!((&again["spec"]["acquireTime"], &again["spec"]["renewTime"]), (&json!("t1"), &json!("t2")));
        let taken = renewed(again, "m2", "t3");
        assert_eq!(taken["spec"]["holderIdentity"], "m2");
        assert_eq!((&taken["spec"]["acquireTime"], &taken["spec"]["leaseTransitions"]), (&json!("t3"), &json!(1)));
        assert!(micro_time(jiff::Timestamp::UNIX_EPOCH) == "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_claim_leads_until_the_key_is_rewritten_after_it() {
        let seen = |rev| Some(("m1".to_string(), rev));
        assert_eq!(role(Some(5), &None), Role::Leader { fence: 5 });
        assert_eq!(role(Some(5), &seen(3)), Role::Leader { fence: 5 }, "the observer lags behind the claim");
        assert_eq!(role(Some(5), &seen(5)), Role::Leader { fence: 5 });
        assert_eq!(role(Some(5), &seen(7)), Role::Follower { leader: Some("m1".into()) });
        assert_eq!(role(None, &seen(7)), Role::Follower { leader: Some("m1".into()) });
        assert_eq!(role(None, &None), Role::Follower { leader: None });
    }
}
