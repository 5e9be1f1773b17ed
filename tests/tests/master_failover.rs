//! kill -9 of masters while stock kubectl works against another one: no write kubectl saw acknowledged is
//! lost, a master keeps serving `resourceVersion=0` reads (from its own store member, no read index) while
//! the store elects a leader, and linearizable writes and reads resume after the election. Stacked masters
//! (each with its store member, so killing the leader master kills the Raft leader) and masters on an
//! external store (killing a master leaves the store alone: the other masters see no failure at all).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_tests::masters::{Api, ExternalMasters};
use keel_tests::{Cluster, Options};
use serde_json::Value;

/// Where the workload's ConfigMaps go, and the label that marks them.
const NAMESPACE: &str = "default";
const LABEL: &str = "written-by=failover-test";
/// A kubectl call that takes longer than this fails (and is retried) instead of stalling a loop.
const REQUEST_TIMEOUT: &str = "--request-timeout=5s";
/// The longest a master may go without answering a `resourceVersion=0` list while its own member is up.
/// Generous: it is a liveness bound ("keeps serving"), not a latency target; one kubectl run is ~0.2 s.
const MAX_STALE_READ_GAP: Duration = Duration::from_secs(3);

/// One kubectl call a loop made: when it finished and whether kubectl exited 0.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: Instant,
    ok: bool,
}

/// What one loop's calls came to, in order.
type Log = Arc<Mutex<Vec<Outcome>>>;

/// Background kubectl loops against one master (which `target` names, an index into `apis`): a writer that
/// creates ConfigMaps one at a time, a reader of `resourceVersion=0` lists, and a reader of linearizable
/// lists. Each runs until `stop`.
struct Workload {
    stop: Arc<AtomicBool>,
    target: Arc<AtomicUsize>,
    /// Names of the ConfigMaps kubectl acknowledged (exit code 0).
    acked: Arc<Mutex<Vec<String>>>,
    writes: Log,
    stale_reads: Log,
    linearizable_reads: Log,
    /// The last failure of each loop, for assertion messages.
    last_errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

fn record(log: &Mutex<Vec<Outcome>>, ok: bool) {
    log.lock().unwrap().push(Outcome { at: Instant::now(), ok });
}

fn failure_text(out: &std::process::Output) -> String {
    format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
}

impl Workload {
    fn start(apis: Vec<Api>, target: usize, prefix: &str) -> Workload {
        let w = Workload {
            stop: Arc::new(AtomicBool::new(false)),
            target: Arc::new(AtomicUsize::new(target)),
            acked: Default::default(),
            writes: Default::default(),
            stale_reads: Default::default(),
            linearizable_reads: Default::default(),
            last_errors: Default::default(),
            threads: vec![],
        };
        let apis = Arc::new(apis);
        let mut threads = vec![];

        // The writer: one ConfigMap per kubectl create, each with a new name (a failed create's outcome is
        // unknown, so it is never retried under the same name and never counted).
        let (stop, tgt, acked, log, errors, apis_w) =
            (w.stop.clone(), w.target.clone(), w.acked.clone(), w.writes.clone(), w.last_errors.clone(), apis.clone());
        let prefix = prefix.to_string();
        threads.push(std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("{prefix}-{n:05}");
                let manifest = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{written-by: failover-test}}\ndata:\n  seq: \"{n}\"\n"
                );
                n += 1;
                let api = &apis_w[tgt.load(Ordering::Relaxed)];
                match api.kubectl(&[REQUEST_TIMEOUT, "-n", NAMESPACE, "create", "-f", "-"], Some(&manifest)) {
                    Ok(out) if out.status.success() => {
                        acked.lock().unwrap().push(name);
                        record(&log, true);
                    }
                    Ok(out) => {
                        errors.lock().unwrap().push(format!("create {name}: {}", failure_text(&out)));
                        record(&log, false);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("cannot run kubectl: {e:#}"),
                }
            }
        }));

        // The readers: the same list, from the master's own member and through the leader's read index.
        let raw = format!("/api/v1/namespaces/{NAMESPACE}/configmaps?resourceVersion=0");
        let readers: [(Log, Vec<String>); 2] = [
            (w.stale_reads.clone(), vec![REQUEST_TIMEOUT.into(), "get".into(), "--raw".into(), raw]),
            (
                w.linearizable_reads.clone(),
                ["-n", NAMESPACE, "get", "configmaps", "-l", LABEL, "-o", "name"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([REQUEST_TIMEOUT.to_string()])
                    .collect(),
            ),
        ];
        for (log, args) in readers {
            let (stop, tgt, errors, apis) = (w.stop.clone(), w.target.clone(), w.last_errors.clone(), apis.clone());
            threads.push(std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                while !stop.load(Ordering::Relaxed) {
                    match apis[tgt.load(Ordering::Relaxed)].kubectl(&args, None) {
                        Ok(out) => {
                            if !out.status.success() {
                                errors.lock().unwrap().push(format!("{args:?}: {}", failure_text(&out)));
                            }
                            record(&log, out.status.success());
                        }
                        Err(e) => panic!("cannot run kubectl: {e:#}"),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
        }
        Workload { threads, ..w }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until the writer has had `more` further creates acknowledged (a liveness check, 30 s at most).
    async fn wait_for_writes(&self, more: usize, what: &str) {
        let want = self.acked_count() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked_count() < want {
            assert!(
                Instant::now() < deadline,
                "writes through the master did not go on {what}; last errors: {:?}",
                self.recent_errors()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn recent_errors(&self) -> Vec<String> {
        let e = self.last_errors.lock().unwrap();
        e[e.len().saturating_sub(5)..].to_vec()
    }

    /// Stops the loops and returns the acknowledged names.
    fn stop(mut self) -> Finished {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a kubectl loop panicked");
        }
        let take = |m: &Mutex<Vec<Outcome>>| std::mem::take(&mut *m.lock().unwrap());
        Finished {
            acked: std::mem::take(&mut *self.acked.lock().unwrap()),
            writes: take(&self.writes),
            stale_reads: take(&self.stale_reads),
            linearizable_reads: take(&self.linearizable_reads),
            errors: std::mem::take(&mut *self.last_errors.lock().unwrap()),
        }
    }
}

/// What the loops recorded.
struct Finished {
    acked: Vec<String>,
    writes: Vec<Outcome>,
    stale_reads: Vec<Outcome>,
    linearizable_reads: Vec<Outcome>,
    errors: Vec<String>,
}

fn failures(log: &[Outcome]) -> usize {
    log.iter().filter(|o| !o.ok).count()
}

fn successes_after(log: &[Outcome], t: Instant) -> usize {
    log.iter().filter(|o| o.ok && o.at > t).count()
}

/// The longest time between two successful calls in `log` within [from, to] (the window's ends count as
/// successes, so a loop that stopped succeeding shows up).
fn longest_gap(log: &[Outcome], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = log.iter().filter(|o| o.ok && o.at > from && o.at < to).map(|o| o.at).collect();
    times.insert(0, from);
    times.push(to);
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Every acknowledged ConfigMap is in a linearizable list through `api`, with the data it was created with.
fn assert_has_all(api: &Api, acked: &[String], who: &str) {
    let out = api.ok(&["-n", NAMESPACE, "get", "configmaps", "-l", LABEL, "-o", "json"], None).unwrap();
    let list: Value = serde_json::from_str(&out).unwrap();
    let present: BTreeSet<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cm| {
            (cm["metadata"]["name"].as_str().unwrap_or("").to_string(), cm["data"]["seq"].as_str().unwrap_or("").into())
        })
        .collect();
    let names: BTreeSet<&str> = present.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !names.contains(n.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{who} lost {} of {} acknowledged ConfigMaps, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    for (name, seq) in &present {
        let index: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(seq, &index.to_string(), "{who}: ConfigMap {name} has the wrong data");
    }
}

/// Waits until member `i` has applied what the leader had when asked (the writes go on meanwhile, so the
/// members' revisions need not ever be equal at one instant).
async fn catch_up(c: &Cluster, i: usize) {
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let target = c.revision(leader).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.revision(i).await.unwrap_or(0) < target {
        assert!(Instant::now() < deadline, "m{} did not catch up to revision {target}", i + 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three stacked masters. Three rather than five: with three, two masters down at once leave no quorum, so
/// the killed follower is restarted (and must catch up and serve) before the leader is killed; five would
/// let both stay down, but five masters plus kubectl loops are too much for the 2-core machines this runs on
/// for a read-gap check to mean anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stacked_masters_survive_follower_and_leader_kills_under_kubectl() {
    let started = Instant::now();
    let mut c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    let apis: Vec<Api> = (0..3).map(|i| c.api(i)).collect();
    for api in &apis {
        api.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    // Every master's kubeconfig works against every master: use the first's for all.
    let apis: Vec<Api> = apis.iter().map(|a| apis[0].at(a)).collect();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    // X: a follower that kubectl talks to and that is never killed (unless leadership moves to it: see below).
    let x = (leader + 1) % 3;
    let work = Workload::start(apis.clone(), x, "cm");
    work.wait_for_writes(10, "before any kill").await;

    // 1. kill -9 a follower master that is not X: X and the leader keep a quorum.
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let follower = (0..3).find(|&i| i != leader && i != work.target.load(Ordering::Relaxed)).unwrap();
    eprintln!("killing follower master m{} (leader m{}, kubectl on m{})", follower + 1, leader + 1, x + 1);
    c.kill(follower);
    work.wait_for_writes(10, "with a follower master down").await;

    // It comes back, catches up from the log and serves what was written while it was down.
    c.restart(follower).unwrap();
    apis[follower].wait_ready(Duration::from_secs(30)).await.unwrap();
    catch_up(&c, follower).await;
    work.wait_for_writes(5, "after the follower master came back").await;

    // 2. kill -9 the leader master. If the restart moved leadership to X, kubectl moves to the other
    // follower first, so that it always works against a master that stays up.
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    if leader == work.target.load(Ordering::Relaxed) {
        let other = (0..3).find(|&i| i != leader).unwrap();
        eprintln!("leadership moved to m{}: kubectl moves to m{}", leader + 1, other + 1);
        work.target.store(other, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let x = work.target.load(Ordering::Relaxed);
    let acked_before = work.acked_count();
    eprintln!("killing leader master m{} (kubectl on m{}, {acked_before} creates acknowledged)", leader + 1, x + 1);
    let killed_at = Instant::now();
    c.kill(leader);
    let new_leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let elected_at = Instant::now();
    assert_ne!(new_leader, leader);
    eprintln!("m{} leads {:?} after the kill", new_leader + 1, elected_at - killed_at);
    work.wait_for_writes(10, "after the leader master was killed").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = Instant::now();
    let done = work.stop();

    eprintln!(
        "{} creates acknowledged ({} failed), {} rv=0 lists ({} failed), {} linearizable lists ({} failed); \
         some errors: {:?}",
        done.acked.len(),
        failures(&done.writes),
        done.stale_reads.len(),
        failures(&done.stale_reads),
        done.linearizable_reads.len(),
        failures(&done.linearizable_reads),
        &done.errors[done.errors.len().saturating_sub(5)..],
    );

    // The resourceVersion=0 lists kept being served through the kill and the election: X's member was up
    // the whole time, and such a list needs no leader.
    let window = (killed_at - Duration::from_secs(1), (elected_at + Duration::from_secs(2)).min(stopped_at));
    let failed: Vec<&Outcome> =
        done.stale_reads.iter().filter(|o| !o.ok && o.at > window.0 && o.at < window.1).collect();
    assert!(
        failed.is_empty(),
        "{} resourceVersion=0 lists through m{} failed around the election; errors: {:?}",
        failed.len(),
        x + 1,
        done.errors
    );
    let gap = longest_gap(&done.stale_reads, window.0, window.1);
    assert!(
        gap <= MAX_STALE_READ_GAP,
        "resourceVersion=0 lists through m{} stopped for {gap:?} around the election; errors: {:?}",
        x + 1,
        done.errors
    );
    // Writes and linearizable reads came back after the election.
    assert!(successes_after(&done.writes, elected_at) > 0);
    assert!(
        successes_after(&done.linearizable_reads, elected_at) > 0,
        "no linearizable list succeeded after the election; errors: {:?}",
        done.errors
    );

    // Nothing acknowledged is lost, through any surviving master (the restarted follower included).
    for i in c.running() {
        assert_has_all(&apis[i], &done.acked, &format!("master m{}", i + 1));
    }
    // The killed leader comes back with everything too.
    c.restart(leader).unwrap();
    apis[leader].wait_ready(Duration::from_secs(30)).await.unwrap();
    assert_has_all(&apis[leader], &done.acked, &format!("restarted leader master m{}", leader + 1));
    eprintln!("workload ran {:?}; whole test {:?}", stopped_at - killed_at, started.elapsed());
}

/// Three masters on a three-member external store: killing a master touches no store member, so kubectl
/// against another master sees no failure at all, and nothing it was told was written is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn masters_on_an_external_store_survive_a_master_kill_under_kubectl() {
    let store = Cluster::start(3).await.unwrap();
    let mut masters = ExternalMasters::start(&store, 3).unwrap();
    let apis: Vec<Api> = (0..3).map(|i| masters.api(i)).collect();
    for api in &apis {
        api.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let apis: Vec<Api> = apis.iter().map(|a| apis[0].at(a)).collect();
    let work = Workload::start(apis.clone(), 0, "ext");
    work.wait_for_writes(10, "before the kill").await;
    masters.kill(1);
    let killed_at = Instant::now();
    work.wait_for_writes(10, "after another master was killed").await;
    let done = work.stop();
    assert!(successes_after(&done.writes, killed_at) >= 10);
    assert_eq!(
        (failures(&done.writes), failures(&done.stale_reads), failures(&done.linearizable_reads)),
        (0, 0, 0),
        "kubectl against master 1 failed while master 2 was killed: {:?}",
        done.errors
    );
    for i in [0, 2] {
        assert_has_all(&apis[i], &done.acked, &format!("master {}", i + 1));
    }
}
