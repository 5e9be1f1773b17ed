//! One run: hosts, members, clients and watchers, faults while they run, then healing, final reads, a
//! convergence check across members, and every checker over what was recorded.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{HashKvRequest, StatusRequest};
use serde::Serialize;

use crate::history::{Call, Op, Outcome};
use crate::hosts::{self, HostError, Network};
use crate::lazyfs::{self, LazyFsError};
use crate::lease::{self, Lease};
use crate::members::{self, Member, Server};
use crate::nemesis::{self, Action, Fault, Injected};
use crate::traffic::{self, ClientConfig, Clock, Rng, WatchFrom};
use crate::{linearizability, patch, reconfig, revisions, watch};

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("io")]
    Io(#[from] std::io::Error),
    #[error("work dir {0} is not empty (members would start on an earlier run's data)")]
    WorkDirInUse(PathBuf),
    #[error("the cluster did not become healthy: {0}")]
    Unhealthy(String),
    #[error(transparent)]
    Disk(#[from] LazyFsError),
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub server: Server,
    pub members: usize,
    pub duration: Duration,
    pub faults: Vec<Fault>,
    /// Up to this many different faults at once (1: one at a time).
    pub together: usize,
    /// How long each round of faults lasts before it is healed.
    pub fault_duration: Duration,
    /// Time between the end of one fault and the start of the next.
    pub interval: Duration,
    pub clients: u32,
    pub keys: u64,
    pub seed: u64,
    /// More flags for every member's server (tuning, say).
    pub member_args: Vec<String>,
    /// Data dirs, logs, the recorded history and the report go here.
    pub work: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct FaultReport {
    #[serde(flatten)]
    pub injected: Injected,
    /// The longest stretch with no acknowledged write (ms), from the last one before the fault until a second
    /// after it was healed (reads do not count).
    pub unavailable_ms: Option<f64>,
    /// Fault began → first acknowledged write (ms).
    pub first_write_ms: Option<f64>,
    /// Fault began → a majority of members name a leader other than the one before (ms); none if the
    /// leader did not change.
    pub new_leader_ms: Option<f64>,
}

/// Per kind of fault, over all its injections: p50 and p99 in ms.
#[derive(Debug, Serialize)]
pub struct FaultSummary {
    pub count: usize,
    pub first_write_ms: [Option<f64>; 2],
    pub unavailable_ms: [Option<f64>; 2],
    pub new_leader_ms: [Option<f64>; 2],
}

fn percentiles(mut v: Vec<f64>) -> [Option<f64>; 2] {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize]);
    [at(0.5), at(0.99)]
}

fn summarize(faults: &[FaultReport]) -> std::collections::BTreeMap<String, FaultSummary> {
    let mut kinds: std::collections::BTreeMap<String, Vec<&FaultReport>> = Default::default();
    for f in faults {
        let name: Vec<String> = f.injected.faults.iter().map(|f| format!("{f:?}")).collect();
        kinds.entry(name.join("+")).or_default().push(f);
    }
    kinds
        .into_iter()
        .map(|(k, fs)| {
            let col = |get: fn(&FaultReport) -> Option<f64>| percentiles(fs.iter().filter_map(|f| get(f)).collect());
            let s = FaultSummary {
                count: fs.len(),
                first_write_ms: col(|f| f.first_write_ms),
                unavailable_ms: col(|f| f.unavailable_ms),
                new_leader_ms: col(|f| f.new_leader_ms),
            };
            (k, s)
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub members: usize,
    pub seconds: f64,
    pub ops: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    /// Unknown outcomes the watches could not settle (see `patch.rs`).
    pub unknown_after_watches: usize,
    pub watch_events: usize,
    pub faults: Vec<FaultReport>,
    /// p50 / p99 per kind of fault.
    pub summary: std::collections::BTreeMap<String, FaultSummary>,
    pub linearizability_violations: Vec<String>,
    pub undecided_keys: Vec<String>,
    pub revision_violations: Vec<String>,
    /// Leases granted (and followed) in the run.
    pub leases: usize,
    pub lease_violations: Vec<String>,
    pub watch_violations: Vec<String>,
    /// Every member answered HashKV with the same hash at the same revision after healing.
    pub converged: bool,
    pub convergence: String,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.linearizability_violations.is_empty()
            && self.undecided_keys.is_empty()
            && self.revision_violations.is_empty()
            && self.watch_violations.is_empty()
            && self.lease_violations.is_empty()
            && self.converged
    }
}

/// Runs the whole thing; namespaces and processes are gone when it returns, whatever happened.
pub fn run(cfg: &RunConfig) -> Result<RunReport, ChaosError> {
    hosts::remove_stale();
    // Members on an old run's data dirs would replay its history into this one's.
    if std::fs::read_dir(&cfg.work).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ChaosError::WorkDirInUse(cfg.work.clone()));
    }
    std::fs::create_dir_all(&cfg.work)?;
    let net = Network::create(cfg.members)?;
    let client_ns = net.client.ns.clone();
    // Every thread of this runtime lives in the clients' namespace, so every socket the clients open does.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || hosts::enter(&client_ns).expect("enter the clients' network namespace"))
        .build()?;
    let initial = members::initial_cluster(&net.hosts);
    // A power cut loses unsynced writes only where the data dirs are on LazyFS (slower: only then).
    let on_lazyfs = cfg.faults.iter().any(|f| f.loses_unsynced());
    let mut members = Vec::new();
    for (i, h) in net.hosts.iter().enumerate() {
        let m = Member::new(i, h.clone(), &cfg.work, &initial).with_args(&cfg.member_args);
        members.push(if on_lazyfs {
            let disk = lazyfs::mount(&cfg.work.join(format!("disk{i}")), &cfg.work.join(format!("fs{i}")))?;
            m.on_disk(disk)
        } else {
            m
        });
    }
    let cfg2 = cfg.clone();
    let result = rt.block_on(async move {
        match tokio::spawn(drive(cfg2, members)).await {
            Ok(r) => r,
            Err(e) => Err(ChaosError::Unhealthy(format!("the run panicked: {e}"))),
        }
    });
    drop(rt);
    drop(net);
    result
}

struct Status {
    member_id: u64,
    leader: u64,
    revision: i64,
}

async fn status(url: &str) -> Option<Status> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()?;
    let r = tokio::time::timeout(Duration::from_millis(500), MaintenanceClient::new(ch).status(StatusRequest {}))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let h = r.header?;
    Some(Status { member_id: h.member_id, leader: r.leader, revision: h.revision })
}

/// Waits until every member answers and they agree on a leader; returns the leader's index.
async fn wait_healthy(urls: &[String], within: Duration) -> Result<usize, ChaosError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut all = Vec::new();
        for u in urls {
            all.push(status(u).await);
        }
        if all.iter().all(Option::is_some) {
            let all: Vec<Status> = all.into_iter().flatten().collect();
            let leader = all[0].leader;
            if leader != 0 && all.iter().all(|s| s.leader == leader) {
                if let Some(i) = all.iter().position(|s| s.member_id == leader) {
                    return Ok(i);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ChaosError::Unhealthy(format!("no agreed leader within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The member that says it leads (None while there is none).
async fn leader(urls: &[String]) -> Option<usize> {
    for (i, u) in urls.iter().enumerate() {
        if let Some(s) = status(u).await {
            if s.leader != 0 && s.leader == s.member_id {
                return Some(i);
            }
        }
    }
    None
}

async fn drive(cfg: RunConfig, mut members: Vec<Member>) -> Result<RunReport, ChaosError> {
    let urls: Vec<String> = members.iter().map(Member::client_url).collect();
    for m in members.iter_mut() {
        m.start(&cfg.server, "new")?;
    }
    wait_healthy(&urls, Duration::from_secs(60)).await?;

    let clock = Clock::new();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for id in 0..cfg.clients {
        let c = ClientConfig {
            id,
            url: urls[id as usize % urls.len()].clone(),
            keys: cfg.keys,
            seed: cfg.seed,
            timeout: Duration::from_secs(2),
        };
        clients.push(tokio::spawn(traffic::kv_client(c, clock.clone(), stop.clone())));
    }
    // Watchers run on until the members have converged, so that they see every change of the run.
    let (stop_watchers, watchers_stop) = tokio::sync::watch::channel(false);
    // Two from revision 1 over every key (leased ones too), one "from now" over the plain keys.
    let watchers: Vec<_> = [
        (1000, "chaos", WatchFrom::Start),
        (1001, "chaos", WatchFrom::Start),
        (1002, traffic::KEY_PREFIX, WatchFrom::Now),
    ]
    .into_iter()
    .map(|(id, prefix, from)| {
        tokio::spawn(traffic::watcher(id, urls.clone(), prefix, from, clock.clone(), watchers_stop.clone()))
    })
    .collect();
    let lease_clients: Vec<_> = (0..2u32)
        .map(|i| {
            tokio::spawn(traffic::lease_client(
                2000 + i,
                urls[i as usize % urls.len()].clone(),
                clock.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let leaders = tokio::spawn(watch_leaders(urls.clone(), clock.clone(), stop.clone()));

    // Rounds of faults until the time is up.
    let mut rng = Rng::new(cfg.seed);
    let mut injected = Vec::new();
    let end = tokio::time::Instant::now() + cfg.duration;
    while tokio::time::Instant::now() + cfg.interval + cfg.fault_duration < end && !cfg.faults.is_empty() {
        tokio::time::sleep(cfg.interval).await;
        let Some(leader) = leader(&urls).await else { continue };
        let round = nemesis::plan_round(&cfg.faults, cfg.together, members.len(), leader, &mut rng);
        let lasts = tokio::time::Instant::now() + cfg.fault_duration;
        let mut delayers = Vec::new();
        for (slot, (_, action)) in round.iter().enumerate() {
            delayers.extend(nemesis::inject(action, slot, &mut members)?);
        }
        // The faults are in place from here (loading nftables rules takes a few ms per member).
        let start = clock.now();
        // A replacement goes as far as it can while the round's other faults last, and finishes after
        // they are healed.
        let mut replacements: Vec<reconfig::Replacement> = round
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Replace(i) => Some(reconfig::Replacement::new(*i)),
                _ => None,
            })
            .collect();
        for r in replacements.iter_mut() {
            let _ = r.advance(&mut members, &cfg.server, lasts).await;
        }
        tokio::time::sleep_until(lasts).await;
        for (slot, (_, action)) in round.iter().enumerate().rev() {
            nemesis::heal(action, slot, &mut members, &cfg.server)?;
        }
        // The rules that queued packets are gone: release what is still held.
        drop(delayers);
        let mut problems = Vec::new();
        for r in replacements.iter_mut().filter(|r| !r.done) {
            let until = tokio::time::Instant::now() + Duration::from_secs(20);
            if let Err(e) = r.advance(&mut members, &cfg.server, until).await {
                problems.push(e);
            }
        }
        let mut hit: Vec<String> =
            round.iter().flat_map(|(_, a)| a.targets(members.len())).map(|i| members[i].name.clone()).collect();
        hit.sort();
        hit.dedup();
        let faults = round.iter().map(|(f, _)| *f).collect();
        injected.push(Injected { faults, members: hit, start, end: clock.now(), problems });
    }
    tokio::time::sleep(end.saturating_duration_since(tokio::time::Instant::now())).await;

    let _ = stop_tx.send(true);
    let leaders = leaders.await.unwrap_or_default();
    let mut history: Vec<Op> = Vec::new();
    for c in clients {
        history.extend(c.await.unwrap_or_default());
    }
    let mut leases: Vec<Lease> = Vec::new();
    for c in lease_clients {
        let (ops, ls) = c.await.unwrap_or_default();
        history.extend(ops);
        leases.extend(ls);
    }

    // Heal, then read every key once more (a lost write shows up here), then compare the members.
    for m in members.iter_mut() {
        nemesis::clear_network_faults(m);
        if m.is_paused() {
            m.resume();
        }
        m.start(&cfg.server, "existing")?;
    }
    wait_healthy(&urls, Duration::from_secs(30)).await?;
    history.extend(final_reads(&cfg, &urls, &clock).await);
    let leftover = wait_leases_gone(&leases, &urls, &clock).await;
    let (converged, convergence, final_revision) = converge(&urls).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_watchers.send(true);
    let mut streams = Vec::new();
    for w in watchers {
        streams.extend(w.await.unwrap_or_default());
    }
    let covered = final_revision.is_some_and(|r| patch::watched_upto(&streams) >= r);

    std::fs::write(cfg.work.join("history.json"), serde_json::to_vec(&history).unwrap_or_default())?;
    std::fs::write(cfg.work.join("watches.json"), serde_json::to_vec(&streams).unwrap_or_default())?;
    std::fs::write(cfg.work.join("leases.json"), serde_json::to_vec(&leases).unwrap_or_default())?;
    let leased: HashSet<String> = leases.iter().flat_map(|l| l.keys.iter().cloned()).collect();

    let settled = patch::settle_unknowns(&history, &streams, covered);
    let lin = linearizability::check(&settled, linearizability::DEFAULT_BUDGET);
    for (i, v) in lin.violations.iter().enumerate() {
        std::fs::write(
            cfg.work.join(format!("violation-{i}.json")),
            serde_json::to_vec_pretty(&v.ops).unwrap_or_default(),
        )?;
    }
    let faults: Vec<FaultReport> = injected.iter().map(|f| fault_report(f.clone(), &history, &leaders)).collect();
    let report = RunReport {
        summary: summarize(&faults),
        members: cfg.members,
        seconds: cfg.duration.as_secs_f64(),
        ops: history.len(),
        acknowledged: history.iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count(),
        unknown: history.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        unknown_after_watches: settled.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        watch_events: streams.iter().flat_map(|s| &s.responses).map(|r| r.events.len()).sum(),
        faults,
        linearizability_violations: lin
            .violations
            .iter()
            .enumerate()
            .map(|(i, v)| format!("key {}: not linearizable; {} ops in violation-{i}.json", v.key, v.ops.len()))
            .collect(),
        undecided_keys: lin.undecided,
        revision_violations: capped(
            revisions::check(&settled)
                .into_iter()
                .chain(revisions::serializable_reads(&settled, &streams))
                .map(|v| v.what)
                .collect(),
        ),
        leases: leases.len(),
        lease_violations: capped(
            lease::check(&leases, &streams, &leftover)
                .into_iter()
                .map(|v| format!("lease {:x}: {}", v.lease, v.what))
                .collect(),
        ),
        watch_violations: capped(
            watch::check(&streams, &history, &leased)
                .into_iter()
                .map(|v| format!("{} (watcher {}): {}", v.guarantee, v.client, v.detail))
                .collect(),
        ),
        converged,
        convergence,
    };
    std::fs::write(cfg.work.join("report.json"), serde_json::to_vec_pretty(&report).unwrap_or_default())?;
    Ok(report)
}

/// The first few of a long list of violations, and how many more there were.
fn capped(mut v: Vec<String>) -> Vec<String> {
    const SHOWN: usize = 30;
    if v.len() > SHOWN {
        let more = v.len() - SHOWN;
        v.truncate(SHOWN);
        v.push(format!("… and {more} more"));
    }
    v
}

async fn final_reads(cfg: &RunConfig, urls: &[String], clock: &Clock) -> Vec<Op> {
    let mut out = Vec::new();
    for k in 0..cfg.keys {
        let key = format!("{}{k}", traffic::KEY_PREFIX);
        for attempt in 0..10 {
            let url = &urls[attempt % urls.len()];
            let c = ClientConfig { id: u32::MAX, url: url.clone(), keys: 0, seed: 0, timeout: Duration::from_secs(2) };
            let invoke = clock.now();
            if let Ok(r) = traffic::get_once(&c, &key).await {
                out.push(Op {
                    client: u32::MAX,
                    key: key.clone(),
                    call: Call::Get { serializable: false },
                    invoke,
                    complete: clock.now(),
                    outcome: Outcome::Ok(r),
                });
                break;
            }
        }
    }
    out
}

/// Waits until every lease has had time to expire (its last known refresh plus its TTL, plus room for a
/// leader change, in which a new leader renews every lease once) and its keys are gone; returns the leased
/// keys still there at the deadline.
async fn wait_leases_gone(leases: &[Lease], urls: &[String], clock: &Clock) -> Vec<String> {
    const SLACK: u64 = 15_000_000_000;
    let longest = leases.iter().flat_map(|l| &l.refreshes).filter_map(|r| r.ttl).max().unwrap_or(0).max(0) as u64;
    let last = leases.iter().map(Lease::alive_until).max().unwrap_or(0);
    let deadline = last.max(clock.now()) + longest * 1_000_000_000 + SLACK;
    let mut left = Vec::new();
    for attempt in 0.. {
        let url = &urls[attempt % urls.len()];
        if let Ok(keys) = traffic::keys_under(url, traffic::LEASE_PREFIX).await {
            left = keys;
            if left.is_empty() {
                break;
            }
        }
        if clock.now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    left
}

/// Waits until the members agree on a revision, then compares their HashKV there.
async fn converge(urls: &[String]) -> (bool, String, Option<i64>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut revs = Vec::new();
        for u in urls {
            revs.push(status(u).await.map(|s| s.revision));
        }
        if let Some(Some(r)) = revs.first().copied() {
            if revs.iter().all(|x| *x == Some(r)) {
                let mut hashes = Vec::new();
                for u in urls {
                    hashes.push(hash_kv(u, r).await);
                }
                let ok = hashes.iter().all(|h| h.is_some() && *h == hashes[0]);
                return (ok, format!("revision {r}: hashes {hashes:?}"), Some(r));
            }
        }
        last = format!("revisions {revs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (false, format!("members did not reach one revision: {last}"), None)
}

async fn hash_kv(url: &str, revision: i64) -> Option<u32> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string()).ok()?.connect().await.ok()?;
    let r = MaintenanceClient::new(ch).hash_kv(HashKvRequest { revision }).await.ok()?;
    Some(r.into_inner().hash)
}

fn fault_report(f: Injected, history: &[Op], leaders: &[(u64, Option<u64>)]) -> FaultReport {
    let ms = |ns: u64| ns as f64 / 1e6;
    let ok = |o: &&Op| matches!(o.outcome, Outcome::Ok(_));
    // The longest stretch without an acknowledged write, from the last one before the fault until a second
    // after it was healed.
    let window_end = f.end + 1_000_000_000;
    let mut acks: Vec<u64> =
        history.iter().filter(|o| ok(o) && o.is_write() && o.complete <= window_end).map(|o| o.complete).collect();
    acks.sort_unstable();
    let from = acks.partition_point(|&t| t <= f.start).saturating_sub(1);
    let unavailable =
        acks.get(from..).filter(|a| a.len() >= 2).map(|a| a.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
    let first_write =
        history.iter().filter(ok).filter(|o| o.is_write() && o.invoke >= f.start).map(|o| o.complete).min();
    let before = leaders.iter().rev().find(|(t, l)| *t <= f.start && l.is_some()).and_then(|(_, l)| *l);
    let new_leader = leaders
        .iter()
        .find(|(t, l)| *t > f.start && l.is_some() && *l != before)
        // Only a change while the fault lasted or within a second of its end counts.
        .filter(|(t, _)| *t <= window_end)
        .map(|(t, _)| ms(t - f.start));
    FaultReport {
        unavailable_ms: unavailable.map(ms),
        first_write_ms: first_write.map(|w| ms(w - f.start)),
        new_leader_ms: new_leader,
        injected: f,
    }
}

/// Samples, every 50 ms, which leader a majority of members name (None: no majority names one).
async fn watch_leaders(
    urls: Vec<String>,
    clock: Clock,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(u64, Option<u64>)> {
    let clients: Vec<MaintenanceClient<tonic::transport::Channel>> = urls
        .iter()
        .map(|u| {
            let ch = tonic::transport::Endpoint::from_shared(u.clone())
                .expect("member URLs are valid")
                .connect_timeout(Duration::from_millis(100))
                .connect_lazy();
            MaintenanceClient::new(ch)
        })
        .collect();
    let mut samples = Vec::new();
    while !*stop.borrow() {
        let t = clock.now();
        let asks = clients.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let r = tokio::time::timeout(Duration::from_millis(150), c.status(StatusRequest {})).await;
                r.ok().and_then(|r| r.ok()).map(|r| r.into_inner().leader).filter(|&l| l != 0)
            }
        });
        let seen: Vec<Option<u64>> = futures::future::join_all(asks).await;
        let majority =
            seen.iter().flatten().find(|&&l| seen.iter().filter(|&&s| s == Some(l)).count() > urls.len() / 2).copied();
        samples.push((t, majority));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

/// Re-runs the linearizability check over a run's saved `history.json` and `watches.json` (e.g. with another
/// budget, or after a checker fix). Returns the keys that are not linearizable and those left undecided.
pub fn recheck(work: &std::path::Path, budget: u64) -> Result<linearizability::Report, ChaosError> {
    let read = |name: &str| std::fs::read(work.join(name));
    let bad = |e: serde_json::Error| ChaosError::Io(std::io::Error::other(e));
    let history: Vec<Op> = serde_json::from_slice(&read("history.json")?).map_err(bad)?;
    let streams: Vec<watch::Stream> = serde_json::from_slice(&read("watches.json")?).map_err(bad)?;
    // The final reads come last and are the store's final state: the watches covered the run if they reached
    // the highest revision any client was told.
    let last = history.iter().filter_map(|o| match &o.outcome {
        Outcome::Ok(r) => Some(r.revision()),
        _ => None,
    });
    let covered = patch::watched_upto(&streams) >= last.max().unwrap_or(0);
    Ok(linearizability::check(&patch::settle_unknowns(&history, &streams, covered), budget))
}
