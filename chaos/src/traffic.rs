//! Clients that drive a store through the etcd API and record what they did and saw: single-key puts,
//! deletes, compare-and-swap transactions, linearizable and serializable reads against one member each;
//! lease clients that grant, keep alive, revoke and let expire leases with keys on them; and watchers that
//! follow every change from revision 1 (resuming from where they were when a stream breaks) or from "now".
//! Every written value is unique (`c<client>-<n>`), so a read or an event names the write it came from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::request_op::Request as TxnOp;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::history::{Call, Op, Outcome, Return};
use crate::lease::{Lease, Refresh as LeaseRefresh, Revoke as LeaseRevoke};
use crate::watch::{Event, Response, Stream};

/// One clock for every client of a run: nanoseconds since the run began.
#[derive(Clone)]
pub struct Clock(Arc<Instant>);

impl Clock {
    pub fn new() -> Clock {
        Clock(Arc::new(Instant::now()))
    }
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Keys the traffic touches: few, so that operations contend.
pub const KEY_PREFIX: &str = "chaos/";

fn key(i: u64) -> String {
    format!("{KEY_PREFIX}{i}")
}

fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("member URLs are valid")
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// Small, fast, deterministic per client (the run's seed plus the client id): a run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub struct ClientConfig {
    pub id: u32,
    pub url: String,
    pub keys: u64,
    pub seed: u64,
    pub timeout: Duration,
}

/// Runs one KV client until `stop` says so; returns its history.
pub async fn kv_client(cfg: ClientConfig, clock: Clock, stop: tokio::sync::watch::Receiver<bool>) -> Vec<Op> {
    let mut kv = KvClient::new(channel(&cfg.url));
    let mut rng = Rng::new(cfg.seed ^ u64::from(cfg.id));
    let mut history = Vec::new();
    let mut last_seen: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut n = 0u64;
    while !*stop.borrow() {
        let k = key(rng.below(cfg.keys));
        n += 1;
        let value = format!("c{}-{n}", cfg.id);
        let call = match rng.below(20) {
            0..=7 => Call::Put { value },
            8..=10 => Call::Get { serializable: false },
            11..=12 => Call::Get { serializable: true },
            13..=14 => Call::Delete,
            _ => Call::CompareAndSwap { expect: last_seen.get(&k).cloned().flatten(), value },
        };
        let invoke = clock.now();
        let result = tokio::time::timeout(cfg.timeout, send(&mut kv, &k, &call)).await;
        let complete = clock.now();
        let outcome = match result {
            Ok(Ok(r)) => {
                if let Return::Get { value, .. } = &r {
                    last_seen.insert(k.clone(), value.clone());
                }
                Outcome::Ok(r)
            }
            // An error or a timeout: the request may still take effect.
            _ => Outcome::Unknown,
        };
        let failed = !matches!(outcome, Outcome::Ok(_));
        history.push(Op { client: cfg.id, key: k, call, invoke, complete, outcome });
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    history
}

async fn send(kv: &mut KvClient<Channel>, k: &str, call: &Call) -> Result<Return, tonic::Status> {
    let key = k.as_bytes().to_vec();
    let revision = |h: Option<keel_proto::etcdserverpb::ResponseHeader>| h.map_or(0, |h| h.revision);
    Ok(match call {
        Call::Put { value } => {
            let r = kv.put(PutRequest { key, value: value.clone().into_bytes(), ..Default::default() }).await?;
            Return::Put { revision: revision(r.into_inner().header) }
        }
        Call::Get { serializable } => {
            let r =
                kv.range(RangeRequest { key, serializable: *serializable, ..Default::default() }).await?.into_inner();
            let kv = r.kvs.first();
            Return::Get {
                value: kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                mod_revision: kv.map_or(0, |kv| kv.mod_revision),
                revision: revision(r.header),
            }
        }
        Call::Delete => {
            let r = kv.delete_range(DeleteRangeRequest { key, ..Default::default() }).await?.into_inner();
            Return::Delete { deleted: r.deleted > 0, revision: revision(r.header) }
        }
        Call::CompareAndSwap { expect, value } => {
            let compare = match expect {
                Some(v) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Value(v.clone().into_bytes())),
                    range_end: vec![],
                },
                // Absent: its version is 0.
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Version(0)),
                    range_end: vec![],
                },
            };
            let put = RequestOp {
                request: Some(TxnOp::RequestPut(PutRequest {
                    key,
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })),
            };
            let r =
                kv.txn(TxnRequest { compare: vec![compare], success: vec![put], failure: vec![] }).await?.into_inner();
            Return::CompareAndSwap { succeeded: r.succeeded, revision: revision(r.header) }
        }
    })
}

/// Keys put with leases: never written twice, deleted only when their lease ends.
pub const LEASE_PREFIX: &str = "chaos-lease/";

/// Runs one lease client until `stop`: every 300 ms a new lease (TTL 2–3 s) with two keys put on it, which
/// is then let expire at once, kept alive a few times and let expire, or kept alive and revoked. Returns
/// the puts (for the KV history) and what was done with each lease.
pub async fn lease_client(
    id: u32,
    url: String,
    clock: Clock,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<Op>, Vec<Lease>) {
    let ch = channel(&url);
    let mut rng = Rng::new(u64::from(id) << 32);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let fate = rng.below(3);
        let rounds = 1 + rng.below(4);
        let ttl = 2 + rng.below(2) as i64;
        tasks.spawn(one_lease(id, n, ttl, fate, rounds, ch.clone(), clock.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (mut ops, mut leases) = (Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        if let Ok((o, l)) = r {
            ops.extend(o);
            leases.extend(l);
        }
    }
    (ops, leases)
}

#[allow(clippy::too_many_arguments)]
async fn one_lease(
    client: u32,
    n: u64,
    ttl: i64,
    fate: u64,
    rounds: u64,
    ch: Channel,
    clock: Clock,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<Op>, Option<Lease>) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let mut leases = LeaseClient::new(ch.clone());
    let mut kv = KvClient::new(ch);
    let invoke = clock.now();
    let granted = tokio::time::timeout(TIMEOUT, leases.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await;
    let complete = clock.now();
    // An unanswered grant leaves no id to follow (and no key is put on it).
    let Ok(Ok(g)) = granted else { return (vec![], None) };
    let g = g.into_inner();
    let mut lease = Lease {
        client,
        id: g.id,
        refreshes: vec![LeaseRefresh { invoke, complete, ttl: Some(g.ttl) }],
        keys: vec![],
        revoke: None,
    };
    let mut ops = Vec::new();
    for k in 0..2 {
        let key = format!("{LEASE_PREFIX}c{client}-{n}-{k}");
        let value = format!("l{client}-{n}-{k}");
        let put = PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            lease: g.id,
            ..Default::default()
        };
        let invoke = clock.now();
        let r = tokio::time::timeout(TIMEOUT, kv.put(put)).await;
        let outcome = match r {
            Ok(Ok(r)) => Outcome::Ok(Return::Put { revision: r.into_inner().header.map_or(0, |h| h.revision) }),
            // Refused: the lease is unknown (expired already), nothing was written.
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => Outcome::Failed,
            _ => Outcome::Unknown,
        };
        lease.keys.push(key.clone());
        ops.push(Op { client, key, call: Call::Put { value }, invoke, complete: clock.now(), outcome });
    }
    // fate 0: let it expire now; 1: keep it alive `rounds` times, then let it expire; 2: …, then revoke.
    let rounds = if fate == 0 { 0 } else { rounds };
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(ttl as u64 * 1000 / 3)).await;
        if *stop.borrow() {
            return (ops, Some(lease));
        }
        let invoke = clock.now();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.send(LeaseKeepAliveRequest { id: g.id }).await;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let mut s = leases.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            s.message().await
        })
        .await;
        let ttl = match answer {
            Ok(Ok(Some(r))) => Some(r.ttl),
            _ => None,
        };
        drop(tx);
        lease.refreshes.push(LeaseRefresh { invoke, complete: clock.now(), ttl });
    }
    if fate == 2 && !*stop.borrow() {
        let invoke = clock.now();
        let r = tokio::time::timeout(TIMEOUT, leases.lease_revoke(LeaseRevokeRequest { id: g.id })).await;
        let revision = match r {
            Ok(Ok(r)) => Some(r.into_inner().header.map_or(0, |h| h.revision)),
            _ => None,
        };
        lease.revoke = Some(LeaseRevoke { invoke, complete: clock.now(), revision });
    }
    (ops, Some(lease))
}

/// Where a watcher starts each of its watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// From revision 1, then each new watch from the revision after the last one seen: one unbroken view
    /// of every change.
    Start,
    /// From the current revision, each watch cancelled after 1–4 s and a new one made "from now".
    Now,
}

/// Follows every change under `prefix` with prev_kv, through the members in turn: when a stream breaks
/// (or, [`WatchFrom::Now`], is let go), a new one starts on the next member. Each stream is recorded on its
/// own, with the revision it starts from (for a watch from now, the one after the creation's header
/// revision).
pub async fn watcher(
    id: u32,
    urls: Vec<String>,
    prefix: &'static str,
    from: WatchFrom,
    clock: Clock,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Stream> {
    let mut streams = Vec::new();
    let mut next_rev = 1;
    let mut turn = id as usize;
    let mut rng = Rng::new(u64::from(id));
    let range_end = prefix_end(prefix.as_bytes());
    while !*stop.borrow() {
        let url = &urls[turn % urls.len()];
        turn += 1;
        let start_revision = if from == WatchFrom::Start { next_rev } else { 0 };
        let mut stream = Stream { client: id, prefix: prefix.into(), start_revision, prev_kv: true, responses: vec![] };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: range_end.clone(),
                start_revision,
                prev_kv: true,
                progress_notify: true,
                ..Default::default()
            })),
        };
        let _ = tx.send(create).await;
        let mut client = WatchClient::new(channel(url));
        let opened =
            tokio::time::timeout(Duration::from_secs(2), client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await;
        let lasts = match from {
            WatchFrom::Start => Duration::from_secs(1 << 30),
            WatchFrom::Now => Duration::from_millis(1000 + rng.below(3000)),
        };
        let let_go = tokio::time::sleep(lasts);
        tokio::pin!(let_go);
        if let Ok(Ok(resp)) = opened {
            let mut inbound = resp.into_inner();
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = stop.changed() => break,
                    _ = &mut let_go => break,
                };
                let Ok(Some(m)) = msg else { break };
                if m.canceled {
                    break;
                }
                let revision = m.header.map_or(0, |h| h.revision);
                if m.created && from == WatchFrom::Now {
                    stream.start_revision = revision + 1;
                }
                let events: Vec<Event> = m
                    .events
                    .iter()
                    .filter_map(|e| {
                        let kv = e.kv.as_ref()?;
                        let deleted = e.r#type == keel_proto::mvccpb::event::EventType::Delete as i32;
                        Some(Event {
                            key: String::from_utf8_lossy(&kv.key).into_owned(),
                            value: (!deleted).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                            mod_revision: kv.mod_revision,
                            prev_value: e.prev_kv.as_ref().map(|p| String::from_utf8_lossy(&p.value).into_owned()),
                        })
                    })
                    .collect();
                if let Some(last) = events.last() {
                    next_rev = last.mod_revision + 1;
                }
                if !events.is_empty() || !m.created {
                    stream.responses.push(Response { at: clock.now(), revision, events });
                }
            }
        }
        drop(tx);
        if !stream.responses.is_empty() {
            streams.push(stream);
        }
        if !*stop.borrow() && from == WatchFrom::Start {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    streams
}

fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The keys under `prefix` (a linearizable read).
pub async fn keys_under(url: &str, prefix: &str) -> Result<Vec<String>, tonic::Status> {
    let mut kv = KvClient::new(channel(url));
    let req = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        keys_only: true,
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(2), kv.range(req))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("timed out"))??;
    Ok(r.into_inner().kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect())
}

/// One linearizable read of `key` (the final reads after healing).
pub async fn get_once(cfg: &ClientConfig, key: &str) -> Result<Return, tonic::Status> {
    let mut kv = KvClient::new(channel(&cfg.url));
    tokio::time::timeout(cfg.timeout, send(&mut kv, key, &Call::Get { serializable: false }))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("timed out"))?
}
