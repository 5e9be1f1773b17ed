//! The whole-cluster mode's run (issue 22, item 4): starts the launcher's cluster (`deploy/local-cluster.sh`,
//! real agents on containerd, every machine a host of its own), drives Deployments, StatefulSets and Jobs
//! through `keel lb` as users do, breaks masters, store members, nodes and links between them
//! ([`crate::cluster_faults`]), and checks what was seen ([`crate::cluster_checks`]):
//!
//! - (a) no acknowledged API write lost, resourceVersions that only grow;
//! - (b) no StatefulSet pod identity running twice at once, as the nodes' containerds show it;
//! - (c) every workload converged to its spec after the last fault, no Deployment pod created past maxSurge;
//! - (d) no pod of the untouched sample app evicted, restarted or recreated by a control-plane fault;
//! - (e) per fault: the time until the control loops act (a Deployment's ReplicaSet appears) and how long
//!   the API did not answer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::cluster_checks::{
    self as checks, ApiWrite, FinalState, ObjectKey, PodSighting, PodSnapshot, SurgeSample, WorkloadState, WriteKind,
    WriteOutcome,
};
use crate::cluster_faults::{self as faults, Action, ClusterFault, Host, Leaders, Procs, Topology};
use crate::hosts::HostError;
use crate::traffic::Rng;

/// The namespace the traffic's workloads live in.
const NS: &str = "chaos";
/// Where the control loops' pulse Deployments go (checker e).
const PULSE_NS: &str = "chaos-pulse";
/// The sample app's namespace: never touched by the traffic (checker d).
const STEADY_NS: &str = "sample";
/// The label every write of the traffic sets to its own marker.
const MARKER: &str = "chaos-marker";
/// A write without an answer after this is of unknown outcome.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClusterRunError {
    #[error("the work dir {0} is not empty")]
    WorkDirInUse(PathBuf),
    #[error("deploy/local-cluster.sh failed ({status}); its output is in {log}")]
    Launch { status: String, log: PathBuf },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    #[error("the admin kubeconfig: {0}")]
    Kubeconfig(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Clone)]
pub struct ClusterRunConfig {
    /// The repository (its deploy/ scripts).
    pub repo: PathBuf,
    pub keel: PathBuf,
    pub masters: usize,
    pub nodes: usize,
    pub external_store: bool,
    pub duration: Duration,
    pub faults: Vec<ClusterFault>,
    pub fault_duration: Duration,
    pub interval: Duration,
    pub clients: usize,
    pub seed: u64,
    /// How long the workloads have to converge after the last fault.
    pub converge_within: Duration,
    pub work: PathBuf,
}

/// One fault, and what was measured around it.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: usize,
    pub fault: ClusterFault,
    pub leaders: Leaders,
    pub action: Action,
    /// ms since the start.
    pub injected: u64,
    pub healed: u64,
    /// When every master answered /readyz and every node was Ready again (ms since the start).
    pub recovered: Option<u64>,
    /// From the injection until a Deployment created then had its ReplicaSet (the control loops acting).
    pub control_acting_ms: Option<u64>,
    /// How long the API (through keel lb) did not answer, from the injection to the recovery: in all, and
    /// the longest stretch.
    pub api_unavailable_ms: u64,
    pub api_longest_outage_ms: u64,
    /// Sample-app pods disturbed across this fault (violations for control-plane faults).
    pub disturbed: Vec<String>,
    /// With the traffic held after the recovery: how long until every workload matched its spec (None: not
    /// within the bound; then `not_converged` says which).
    pub converged_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_converged: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Violations {
    pub lost_writes: Vec<String>,
    pub duplicate_identities: Vec<String>,
    pub surge: Vec<String>,
    pub not_converged: Vec<String>,
    pub disturbed_by_control_plane: Vec<String>,
}

impl Violations {
    pub fn count(&self) -> usize {
        self.lost_writes.len()
            + self.duplicate_identities.len()
            + self.surge.len()
            + self.not_converged.len()
            + self.disturbed_by_control_plane.len()
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub masters: usize,
    pub nodes: usize,
    pub external_store: bool,
    pub duration_s: u64,
    pub writes: usize,
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    pub node_sightings: usize,
    /// The API probe through keel lb (every 200 ms): how many, and how many got no answer within 2 s.
    pub api_probes: usize,
    pub api_probes_failed: usize,
    pub rounds: Vec<RoundReport>,
    /// From the end of the last fault until every workload matched its spec.
    pub converged_after_ms: Option<u64>,
    pub violations: Violations,
}

impl ClusterReport {
    pub fn ok(&self) -> bool {
        self.violations.count() == 0
    }

    /// The report as a short Markdown summary: one line per fault kind and the violations.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} masters ({}), {} nodes, {} s: {} writes ({} acknowledged, {} refused, {} unknown), {} API probes ({} unanswered), {} rounds of faults\n\n",
            self.masters,
            if self.external_store { "external store" } else { "stacked store" },
            self.nodes,
            self.duration_s,
            self.writes,
            self.acked,
            self.refused,
            self.unknown,
            self.api_probes,
            self.api_probes_failed,
            self.rounds.len()
        );
        s.push_str("| fault | rounds | control loops acting p50 / max ms | API unavailable p50 / max ms | longest outage max ms | recovered p50 ms | converged p50 / max ms | disturbed pods |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut kinds: Vec<ClusterFault> = self.rounds.iter().map(|r| r.fault).collect();
        kinds.sort();
        kinds.dedup();
        for k in kinds {
            let rounds: Vec<&RoundReport> = self.rounds.iter().filter(|r| r.fault == k).collect();
            let acting: Vec<u64> = rounds.iter().filter_map(|r| r.control_acting_ms).collect();
            let unavailable: Vec<u64> = rounds.iter().map(|r| r.api_unavailable_ms).collect();
            let recovered: Vec<u64> =
                rounds.iter().filter_map(|r| r.recovered.map(|t| t.saturating_sub(r.healed))).collect();
            let longest = rounds.iter().map(|r| r.api_longest_outage_ms).max().unwrap_or(0);
            let disturbed: usize = rounds.iter().map(|r| r.disturbed.len()).sum();
            let converged: Vec<u64> = rounds.iter().filter_map(|r| r.converged_ms).collect();
            let unconverged = rounds.len() - converged.len();
            s.push_str(&format!(
                "| {} | {} | {} / {} | {} / {} | {} | {} | {} / {}{} | {} |\n",
                serde_json::to_value(k).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                rounds.len(),
                fmt_opt(percentile(&acting, 50)),
                fmt_opt(acting.iter().max().copied()),
                fmt_opt(percentile(&unavailable, 50)),
                fmt_opt(unavailable.iter().max().copied()),
                longest,
                fmt_opt(percentile(&recovered, 50)),
                fmt_opt(percentile(&converged, 50)),
                fmt_opt(converged.iter().max().copied()),
                if unconverged > 0 { format!(" ({unconverged} never)") } else { String::new() },
                disturbed
            ));
        }
        s.push_str(&format!(
            "\nconverged after the last fault in: {}\nviolations: {} lost writes, {} duplicate StatefulSet identities, {} surge, {} not converged, {} pods disturbed by control-plane faults\n",
            self.converged_after_ms.map_or("never (within the bound)".to_string(), |ms| format!("{ms} ms")),
            self.violations.lost_writes.len(),
            self.violations.duplicate_identities.len(),
            self.violations.surge.len(),
            self.violations.not_converged.len(),
            self.violations.disturbed_by_control_plane.len()
        ));
        for (what, list) in [
            ("lost write", &self.violations.lost_writes),
            ("duplicate identity", &self.violations.duplicate_identities),
            ("surge", &self.violations.surge),
            ("not converged", &self.violations.not_converged),
            ("disturbed", &self.violations.disturbed_by_control_plane),
        ] {
            for v in list.iter().take(20) {
                s.push_str(&format!("- {what}: {v}\n"));
            }
        }
        s
    }
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

/// The p-th percentile (nearest rank) of `v`.
pub fn percentile(v: &[u64], p: usize) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = (p * s.len()).div_ceil(100).max(1);
    Some(s[rank - 1])
}

/// Milliseconds since the run's start.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// What the observers and the traffic record while the run goes.
#[derive(Default)]
struct Recorded {
    writes: Vec<ApiWrite>,
    /// (ms, answered) of the API probe.
    probes: Vec<(u64, bool)>,
    sightings: Vec<PodSighting>,
    surge: Vec<SurgeSample>,
}

/// Runs the whole thing: cluster up, traffic and faults, checks, cluster down. The cluster is stopped
/// whatever happens.
pub fn run(cfg: &ClusterRunConfig) -> Result<ClusterReport, ClusterRunError> {
    if std::fs::read_dir(&cfg.work).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ClusterRunError::WorkDirInUse(cfg.work.clone()));
    }
    std::fs::create_dir_all(&cfg.work)?;
    let cluster_dir = cfg.work.join("cluster");
    let launched =
        launcher(cfg, &cluster_dir, &["--masters", &cfg.masters.to_string(), "--nodes", &cfg.nodes.to_string()]);
    let result = match launched {
        Ok(()) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(drive(cfg, &cluster_dir)),
        Err(e) => Err(e),
    };
    let topo = topology(cfg);
    faults::clear_partitions(&topo);
    let _ = launcher(cfg, &cluster_dir, &["stop"]);
    let report = result?;
    std::fs::write(cfg.work.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(cfg.work.join("report.md"), report.summary())?;
    Ok(report)
}

/// Runs `deploy/local-cluster.sh args…` detached, on this run's cluster dir, its output in the work dir.
fn launcher(cfg: &ClusterRunConfig, cluster_dir: &Path, args: &[&str]) -> Result<(), ClusterRunError> {
    let log = cfg.work.join(if args == ["stop"] { "launcher-stop.log" } else { "launcher.log" });
    let out = std::fs::File::create(&log)?;
    let mut cmd = Command::new("bash");
    cmd.arg(cfg.repo.join("deploy/local-cluster.sh")).args(args);
    if cfg.external_store && args != ["stop"] {
        cmd.arg("--external-store");
    }
    let status = cmd
        .env("KEEL", &cfg.keel)
        .env("KEEL_CLUSTER_DETACH", "1")
        .env("KEEL_CLUSTER_DIR", cluster_dir)
        .current_dir(&cfg.repo)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()?;
    if !status.success() {
        return Err(ClusterRunError::Launch { status: status.to_string(), log });
    }
    Ok(())
}

/// The launcher's layout (deploy/hosts.sh): nodes at .11.., masters at .101.., store members at .151...
fn topology(cfg: &ClusterRunConfig) -> Topology {
    let at = |base: usize, n: usize| (0..n).map(|i| Ipv4Addr::new(10, 200, 0, (base + i) as u8)).collect();
    Topology {
        masters: at(101, cfg.masters),
        stores: if cfg.external_store { at(151, 3) } else { vec![] },
        nodes: at(11, cfg.nodes),
    }
}

async fn drive(cfg: &ClusterRunConfig, cluster_dir: &Path) -> Result<ClusterReport, ClusterRunError> {
    let topo = topology(cfg);
    let client = admin_client(&cluster_dir.join("admin.kubeconfig")).await?;
    let clock = Clock(Instant::now());
    for ns in [NS, PULSE_NS] {
        let api: Api<Namespace> = Api::all(client.clone());
        api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?).await?;
    }
    let recorded: Arc<Mutex<Recorded>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = vec![
        tokio::spawn(probe_api(client.clone(), clock, recorded.clone(), stop.clone())),
        tokio::spawn(watch_nodes(cfg.nodes, clock, recorded.clone(), stop.clone())),
        tokio::spawn(sample_surge(client.clone(), clock, recorded.clone(), stop.clone())),
    ];
    let traffic_end = Instant::now() + cfg.duration;
    // Held after each fault's recovery, so that the workloads can be seen converging (checker c).
    let (hold, hold_rx) = tokio::sync::watch::channel(false);
    let mut traffic = Vec::new();
    for c in 0..cfg.clients {
        traffic.push(tokio::spawn(traffic_client(
            client.clone(),
            c,
            cfg.seed,
            clock,
            recorded.clone(),
            traffic_end,
            hold_rx.clone(),
        )));
    }

    let mut procs = Procs::new(cluster_dir);
    let mut rng = Rng::new(cfg.seed ^ 0xfa17);
    let mut rounds = Vec::new();
    let mut order: Vec<ClusterFault> = Vec::new();
    let kubeconfig = cluster_dir.join("m1/admin.kubeconfig");
    // Faults while the traffic runs, leaving room for the last one to end before the traffic does.
    while !cfg.faults.is_empty() && Instant::now() + cfg.interval + cfg.fault_duration < traffic_end {
        tokio::time::sleep(cfg.interval).await;
        if order.is_empty() {
            order = cfg.faults.clone();
            // A new order every pass, from the seed.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let fault = order.pop().expect("not empty");
        let round = rounds.len();
        let leaders = find_leaders(&client, &topo).await;
        let action = faults::plan(fault, &topo, &leaders, &mut rng);
        let before = steady_pods(&client).await;
        let mut problems = Vec::new();
        let injected = clock.ms();
        let t0 = Instant::now();
        if let Err(e) = tokio::task::block_in_place(|| faults::inject(&action, &mut procs)) {
            problems.push(format!("inject: {e}"));
        }
        eprintln!("[{:>6} ms] round {round}: {fault:?} {action:?}", injected);
        let pulse = tokio::spawn(control_acting(client.clone(), round, t0));
        tokio::time::sleep(cfg.fault_duration).await;
        if let Err(e) = tokio::task::block_in_place(|| faults::heal(&action, &mut procs)) {
            problems.push(format!("heal: {e}"));
        }
        let healed = clock.ms();
        let recovered = recovery(&client, &topo, &kubeconfig, Duration::from_secs(90)).await.then(|| clock.ms());
        if recovered.is_none() {
            problems.push("the cluster did not recover within 90 s".to_string());
        }
        let control_acting_ms = match tokio::time::timeout(Duration::from_secs(60), pulse).await {
            Ok(Ok(ms)) => ms,
            _ => None,
        };
        // Converged: the traffic held (and its writes in flight done), every workload matches its spec.
        hold.send_replace(true);
        let held = Instant::now();
        let (converged_ms, not_converged) = converge(&client, Duration::from_secs(90)).await;
        let converged_ms = converged_ms.map(|_| held.elapsed().as_millis() as u64);
        hold.send_replace(false);
        // Settled: a pod a fault disturbed has been seen so by now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = steady_pods(&client).await;
        let disturbed = match (&before, &after) {
            (Some(b), Some(a)) => checks::disturbed_pods(b, a).into_iter().map(|v| v.what).collect(),
            _ => {
                problems.push("could not list the sample app's pods around the fault".to_string());
                vec![]
            }
        };
        let (api_unavailable_ms, api_longest_outage_ms) = {
            let r = recorded.lock().expect("not poisoned");
            outage(&r.probes, injected, recovered.unwrap_or(clock.ms()))
        };
        eprintln!(
            "[{:>6} ms] round {round}: healed at {healed}, recovered {recovered:?}, control loops acting after {control_acting_ms:?} ms, API out {api_unavailable_ms} ms, converged after {converged_ms:?} ms {not_converged:?}, disturbed {disturbed:?} {problems:?}",
            clock.ms()
        );
        rounds.push(RoundReport {
            round,
            fault,
            leaders,
            action,
            injected,
            healed,
            recovered,
            control_acting_ms,
            api_unavailable_ms,
            api_longest_outage_ms,
            disturbed,
            converged_ms,
            not_converged,
            problems,
        });
    }
    for t in traffic {
        let _ = t.await;
    }
    // (c) convergence within the bound, after the last fault too.
    let (converged_after_ms, mut not_converged) = converge(&client, cfg.converge_within).await;
    for round in &rounds {
        not_converged.extend(
            round.not_converged.iter().map(|n| format!("after round {} ({:?}): {n}", round.round, round.fault)),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let end = final_state(&client).await?;
    let r = std::mem::take(&mut *recorded.lock().expect("not poisoned"));
    std::fs::write(cfg.work.join("writes.json"), serde_json::to_vec(&writes_json(&r.writes))?)?;

    let mut violations = Violations {
        lost_writes: checks::lost_writes(&r.writes, &end).into_iter().map(|v| v.what).collect(),
        duplicate_identities: checks::duplicate_identities(&r.sightings).into_iter().map(|v| v.what).collect(),
        surge: checks::surge_violations(&r.surge, 5000).into_iter().map(|v| v.what).collect(),
        not_converged,
        disturbed_by_control_plane: vec![],
    };
    for round in &rounds {
        if round.fault.control_plane_only() {
            violations
                .disturbed_by_control_plane
                .extend(round.disturbed.iter().map(|d| format!("round {} ({:?}): {d}", round.round, round.fault)));
        }
    }
    let count = |f: fn(&WriteOutcome) -> bool| r.writes.iter().filter(|w| f(&w.outcome)).count();
    Ok(ClusterReport {
        masters: cfg.masters,
        nodes: cfg.nodes,
        external_store: cfg.external_store,
        duration_s: cfg.duration.as_secs(),
        writes: r.writes.len(),
        acked: count(|o| matches!(o, WriteOutcome::Acked { .. })),
        refused: count(|o| *o == WriteOutcome::Refused),
        unknown: count(|o| *o == WriteOutcome::Unknown),
        node_sightings: r.sightings.len(),
        api_probes: r.probes.len(),
        api_probes_failed: r.probes.iter().filter(|(_, ok)| !ok).count(),
        rounds,
        converged_after_ms,
        violations,
    })
}

/// Polls the workloads until they all match their specs: (ms taken, None if not within `within`), and
/// what had not converged at the last look.
async fn converge(client: &Client, within: Duration) -> (Option<u64>, Vec<String>) {
    let start = Instant::now();
    let mut not_converged = vec!["the workloads could not be listed".to_string()];
    while start.elapsed() < within {
        // Writes sent just before the hold may still be in flight: look from the second round on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Ok(states)) = tokio::time::timeout(Duration::from_secs(5), workload_states(client)).await {
            not_converged = checks::not_converged(&states);
            if not_converged.is_empty() {
                return (Some(start.elapsed().as_millis() as u64), vec![]);
            }
        }
    }
    (None, not_converged)
}

fn writes_json(writes: &[ApiWrite]) -> serde_json::Value {
    writes
        .iter()
        .map(|w| {
            json!({
                "object": format!("{}/{}", w.key.resource, w.key.name),
                "kind": format!("{:?}", w.kind),
                "marker": w.marker,
                "invoked": w.invoked,
                "completed": w.completed,
                "outcome": format!("{:?}", w.outcome),
            })
        })
        .collect()
}

async fn admin_client(kubeconfig: &Path) -> Result<Client, ClusterRunError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| ClusterRunError::Kubeconfig(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| ClusterRunError::Kubeconfig(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(15));
    // One request per write, so that what is recorded is what the API answered: kube's default retry of a
    // 503 or 504 would send a create again after a first attempt of unknown outcome had taken effect, and
    // record the second attempt's 409 as "refused, changed nothing" (a false lost write, seen in CI).
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

/// The sum and the longest stretch of failed probes in [from, to] (each probe stands for the time until
/// the next one).
fn outage(probes: &[(u64, bool)], from: u64, to: u64) -> (u64, u64) {
    let inside: Vec<&(u64, bool)> = probes.iter().filter(|(t, _)| *t >= from && *t <= to).collect();
    let (mut total, mut longest, mut run_start) = (0, 0, None);
    for (i, (t, ok)) in inside.iter().enumerate() {
        let next = inside.get(i + 1).map_or(*t, |n| n.0);
        if !ok {
            total += next - t;
            let s = *run_start.get_or_insert(*t);
            longest = longest.max(next - s);
        } else {
            run_start = None;
        }
    }
    (total, longest)
}

/// Every 200 ms, a list through keel lb, as any client would: answered within 2 s or not.
async fn probe_api(client: Client, clock: Clock, rec: Arc<Mutex<Recorded>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let api: Api<Namespace> = Api::all(client);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let at = clock.ms();
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(2), api.list(&ListParams::default().limit(1))).await,
            Ok(Ok(_))
        );
        rec.lock().expect("not poisoned").probes.push((at, ok));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Which containers run on each node, from its containerd (`ctr`, over the node's socket: no network, so
/// partitions do not blind it): a sighting per running pod container of the traffic's namespace every
/// second, and one "not running" when it is gone.
async fn watch_nodes(nodes: usize, clock: Clock, rec: Arc<Mutex<Recorded>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut labels: HashMap<String, Option<(String, String, String)>> = HashMap::new();
    let mut running: HashSet<(usize, String)> = HashSet::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for n in 0..nodes {
            let sock = format!("/run/keel-local-cluster/node-{}.sock", n + 1);
            let Some(tasks) = ctr(&sock, &["tasks", "ls"]).await else { continue };
            let at = clock.ms();
            let mut now: HashSet<String> = HashSet::new();
            for line in tasks.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.len() < 3 || cols[2] != "RUNNING" {
                    continue;
                }
                let id = cols[0].to_string();
                if !labels.contains_key(&id) {
                    let info = ctr(&sock, &["containers", "info", &id]).await;
                    labels.insert(id.clone(), info.as_deref().and_then(pod_of));
                }
                if let Some(Some((ns, name, uid))) = labels.get(&id) {
                    if ns == NS {
                        now.insert(uid.clone());
                        rec.lock().expect("not poisoned").sightings.push(PodSighting {
                            at,
                            namespace: ns.clone(),
                            name: name.clone(),
                            uid: uid.clone(),
                            node: format!("node-{}", n + 1),
                            running: true,
                        });
                    }
                }
            }
            let gone: Vec<(usize, String)> =
                running.iter().filter(|(node, uid)| *node == n && !now.contains(uid)).cloned().collect();
            for (node, uid) in gone {
                running.remove(&(node, uid.clone()));
                let (ns, name) = labels
                    .values()
                    .flatten()
                    .find(|(_, _, u)| *u == uid)
                    .map(|(ns, name, _)| (ns.clone(), name.clone()))
                    .unwrap_or_default();
                rec.lock().expect("not poisoned").sightings.push(PodSighting {
                    at,
                    namespace: ns,
                    name,
                    uid,
                    node: format!("node-{}", node + 1),
                    running: false,
                });
            }
            running.extend(now.into_iter().map(|uid| (n, uid)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn ctr(sock: &str, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("ctr")
        .args(["--address", sock, "--namespace", "keel"])
        .args(args)
        .output()
        .await
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (namespace, pod, uid) from `ctr containers info`'s labels (the agent's io.keel.pod.* labels).
fn pod_of(info: &str) -> Option<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    let l = v.get("Labels")?;
    let get = |k: &str| l.get(k).and_then(|x| x.as_str()).map(String::from);
    Some((get("io.keel.pod.namespace")?, get("io.keel.pod.name")?, get("io.keel.pod.uid")?))
}

/// Every second, each Deployment of the traffic with its active pods (checker c's maxSurge).
async fn sample_surge(
    client: Client,
    clock: Clock,
    rec: Arc<Mutex<Recorded>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let (deps, rss, pods): (Api<Deployment>, Api<ReplicaSet>, Api<Pod>) =
        (Api::namespaced(client.clone(), NS), Api::namespaced(client.clone(), NS), Api::namespaced(client, NS));
    let mut seen: HashSet<String> = HashSet::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lp = ListParams::default();
        let (Ok(Ok(d)), Ok(Ok(r)), Ok(Ok(p))) = (
            tokio::time::timeout(Duration::from_secs(3), deps.list(&lp)).await,
            tokio::time::timeout(Duration::from_secs(3), rss.list(&lp)).await,
            tokio::time::timeout(Duration::from_secs(3), pods.list(&lp)).await,
        ) else {
            continue;
        };
        let at = clock.ms();
        let owner = |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.and_then(|v| v.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone()))
        };
        let rs_to_dep: HashMap<String, String> =
            r.items.iter().filter_map(|rs| Some((rs.uid()?, owner(rs.metadata.owner_references.as_ref())?))).collect();
        let mut active: HashMap<String, Vec<String>> = HashMap::new();
        for pod in &p.items {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
            if pod.metadata.deletion_timestamp.is_some() || phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            let Some(dep) = owner(pod.metadata.owner_references.as_ref()).and_then(|rs| rs_to_dep.get(&rs)) else {
                continue;
            };
            active.entry(dep.clone()).or_default().push(pod.uid().unwrap_or_default());
        }
        let mut r = rec.lock().expect("not poisoned");
        for dep in &d.items {
            let uid = dep.uid().unwrap_or_default();
            let spec = dep.spec.as_ref();
            let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
            let max_surge = spec
                .and_then(|s| s.strategy.as_ref())
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_surge.as_ref())
                .map_or(1, |s| match s {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => (*n).max(0) as u32,
                    // The traffic only sets integers.
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => 1,
                });
            let list = active.get(&uid).cloned().unwrap_or_default();
            let new_pods = list.iter().filter(|u| seen.insert((*u).clone())).count() as u32;
            r.surge.push(SurgeSample {
                at,
                key: key("deployments", &dep.name_any()),
                uid,
                replicas,
                max_surge,
                pods: list.len() as u32,
                new_pods,
            });
        }
    }
}

fn key(resource: &str, name: &str) -> ObjectKey {
    ObjectKey { resource: resource.into(), namespace: NS.into(), name: name.into() }
}

/// The time from `t0` until the control loops act: a Deployment created then (retried until the API
/// takes it) gets its ReplicaSet. None after 60 s.
async fn control_acting(client: Client, round: usize, t0: Instant) -> Option<u64> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), PULSE_NS);
    let rss: Api<ReplicaSet> = Api::namespaced(client, PULSE_NS);
    let name = format!("pulse-{round}");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"pulse": name}},
            "template": {"metadata": {"labels": {"pulse": name}}, "spec": {"containers": [{"name": "c", "image": "keel.test/busybox:1"}]}}
        }
    }))
    .ok()?;
    let deadline = t0 + Duration::from_secs(60);
    let mut created = false;
    let lp = ListParams::default().labels(&format!("pulse={name}"));
    let took = loop {
        if Instant::now() > deadline {
            break None;
        }
        if !created {
            match tokio::time::timeout(Duration::from_secs(2), deps.create(&PostParams::default(), &d)).await {
                Ok(Ok(_)) => created = true,
                Ok(Err(kube::Error::Api(e))) if e.code == 409 => created = true,
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(2), rss.list(&lp)).await {
            if !l.items.is_empty() {
                break Some(t0.elapsed().as_millis() as u64);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = deps.delete(&name, &DeleteParams::background()).await;
    took
}

/// The sample app's pods: uid → (name, restarts).
async fn steady_pods(client: &Client) -> Option<PodSnapshot> {
    let api: Api<Pod> = Api::namespaced(client.clone(), STEADY_NS);
    for _ in 0..20 {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(3), api.list(&ListParams::default())).await {
            return Some(
                l.items
                    .iter()
                    .map(|p| {
                        let restarts = p
                            .status
                            .as_ref()
                            .and_then(|s| s.container_statuses.as_ref())
                            .map_or(0, |c| c.iter().map(|c| c.restart_count.max(0) as u32).sum());
                        (p.uid().unwrap_or_default(), (format!("{STEADY_NS}/{}", p.name_any()), restarts))
                    })
                    .collect(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Until every master answers /readyz (asked on its own address, from the hosts' bridge) and every node is
/// Ready, or `within` passes.
async fn recovery(client: &Client, topo: &Topology, kubeconfig: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let nodes: Api<Node> = Api::all(client.clone());
    while Instant::now() < deadline {
        let mut ok = true;
        for ip in &topo.masters {
            if hub_command(
                "kubectl",
                &[
                    "--kubeconfig",
                    &kubeconfig.to_string_lossy(),
                    "--server",
                    &format!("https://{ip}:6443"),
                    "--request-timeout=2s",
                    "get",
                    "--raw",
                    "/readyz",
                ],
            )
            .await
            .is_none()
            {
                ok = false;
                break;
            }
        }
        if ok {
            if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(3), nodes.list(&ListParams::default())).await {
                let ready = l.items.iter().filter(|n| node_ready(n)).count();
                if ready == topo.nodes.len() {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A command on the hosts' bridge (where every host's address is reachable); its stdout when it succeeds.
async fn hub_command(program: &str, args: &[&str]) -> Option<String> {
    in_netns("khhub", program, args).await
}

/// `program args…` in host (namespace) `ns`, through the harness's [`crate::hosts::in_ns`].
async fn in_netns(ns: &str, program: &str, args: &[&str]) -> Option<String> {
    let mut cmd = crate::hosts::in_ns(ns, program);
    cmd.args(args).env("ETCDCTL_API", "3");
    let out = tokio::process::Command::from(cmd).output().await.ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Who leads now: the control loops (the masters' `/readyz?verbose`), the store (etcdctl endpoint status on
/// every member) and node-1's load balancer's master (its established connections).
async fn find_leaders(client: &Client, topo: &Topology) -> Leaders {
    let mut leaders = Leaders::default();
    if let Ok(req) = http::Request::get("/readyz?verbose").body(Vec::new()) {
        if let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await {
            leaders.control = control_leader(&text);
        }
    }
    let members: Vec<(Host, Ipv4Addr)> = if topo.stacked() {
        topo.masters.iter().enumerate().map(|(i, a)| (Host::Master(i), *a)).collect()
    } else {
        topo.stores.iter().enumerate().map(|(i, a)| (Host::Store(i), *a)).collect()
    };
    // Without a scheme: etcdctl 3.4 sends an endpoint given with one as the :authority of its per-endpoint
    // calls (`endpoint status`), which HTTP/2 servers other than grpc-go's refuse.
    let endpoints = members.iter().map(|(_, a)| format!("{a}:2379")).collect::<Vec<_>>().join(",");
    if let Some(out) =
        hub_command("etcdctl", &["--endpoints", &endpoints, "--command-timeout=2s", "endpoint", "status", "-w", "json"])
            .await
    {
        leaders.store = store_leader(&out, &members);
    }
    if let Some(out) = in_netns("kh1", "ss", &["-tnH", "state", "established", "( dport = :6443 )"]).await {
        leaders.agent_master = agent_master(&out, &topo.masters);
    }
    leaders
}

/// `m2` from `[+]controller-leader ok: m2 (this master)`.
fn control_leader(readyz: &str) -> Option<usize> {
    let line = readyz.lines().find(|l| l.contains("controller-leader ok: "))?;
    let name = line.split("controller-leader ok: ").nth(1)?.split_whitespace().next()?;
    name.strip_prefix('m')?.parse::<usize>().ok()?.checked_sub(1)
}

/// The member whose id is the leader etcdctl's `endpoint status -w json` reports.
fn store_leader(json: &str, members: &[(Host, Ipv4Addr)]) -> Option<Host> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    for e in v.as_array()? {
        let status = e.get("Status")?;
        let id = status.get("header")?.get("member_id")?.as_u64()?;
        if status.get("leader")?.as_u64()? == id {
            let endpoint = e.get("Endpoint")?.as_str()?;
            return members.iter().find(|(_, a)| endpoint.contains(&format!("{a}:"))).map(|(h, _)| *h);
        }
    }
    None
}

/// The master most of `ss -tnH`'s established connections to :6443 go to.
fn agent_master(ss: &str, masters: &[Ipv4Addr]) -> Option<usize> {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for line in ss.lines() {
        let Some(peer) = line.split_whitespace().nth(3) else { continue };
        let Some((ip, _)) = peer.rsplit_once(':') else { continue };
        if let Some(i) = masters.iter().position(|m| m.to_string() == ip) {
            *counts.entry(i).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(i, _)| i)
}

/// One traffic client: a Deployment, a StatefulSet and a Job of its own, created, scaled, updated and
/// deleted at random, each write recorded with its outcome.
async fn traffic_client(
    client: Client,
    c: usize,
    seed: u64,
    clock: Clock,
    rec: Arc<Mutex<Recorded>>,
    end: Instant,
    mut hold: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(c as u64 + 1));
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client, NS);
    let names = [format!("d{c}"), format!("s{c}"), format!("j{c}")];
    let mut exists = [false; 3];
    let mut last_rv: [u64; 3] = [0; 3];
    let mut seq = 0u64;
    while Instant::now() < end {
        // Held while the harness watches the workloads converge.
        if hold.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let o = rng.below(3) as usize;
        seq += 1;
        let marker = format!("c{c}-{seq}");
        let name = &names[o];
        let r = rng.below(10);
        let kind = if !exists[o] {
            WriteKind::Create
        } else if r < 8 {
            WriteKind::Update
        } else {
            WriteKind::Delete
        };
        let replicas = rng.below(3) as i64;
        let invoked = clock.ms();
        let outcome = match (o, kind) {
            (0, WriteKind::Create) => {
                let r = timed(deps.create(&PostParams::default(), &deployment(name, replicas, &marker))).await;
                spec_seen(&r, &rec, clock);
                answer(r)
            }
            (1, WriteKind::Create) => {
                write(sts.create(&PostParams::default(), &statefulset(name, replicas, &marker))).await
            }
            (_, WriteKind::Create) => write(jobs.create(&PostParams::default(), &job(name, &marker))).await,
            (0, WriteKind::Update) => {
                let r =
                    timed(deps.patch(name, &PatchParams::default(), &Patch::Merge(update(o, r, replicas, &marker))))
                        .await;
                spec_seen(&r, &rec, clock);
                answer(r)
            }
            (1, WriteKind::Update) => {
                write(sts.patch(name, &PatchParams::default(), &Patch::Merge(update(o, r, replicas, &marker)))).await
            }
            (_, WriteKind::Update) => {
                write(jobs.patch(name, &PatchParams::default(), &Patch::Merge(update(o, r, replicas, &marker)))).await
            }
            (0, WriteKind::Delete) => delete(deps.delete(name, &DeleteParams::background()), last_rv[o]).await,
            (1, WriteKind::Delete) => delete(sts.delete(name, &DeleteParams::background()), last_rv[o]).await,
            (_, WriteKind::Delete) => delete(jobs.delete(name, &DeleteParams::background()), last_rv[o]).await,
        };
        let completed = clock.ms();
        match (&outcome, kind) {
            (Answer::Acked(rv), WriteKind::Delete) => {
                exists[o] = false;
                last_rv[o] = last_rv[o].max(*rv);
            }
            (Answer::Acked(rv), _) => {
                exists[o] = true;
                last_rv[o] = last_rv[o].max(*rv);
            }
            (Answer::Refused(409), WriteKind::Create) => exists[o] = true,
            (Answer::Refused(404), _) => exists[o] = false,
            _ => {}
        }
        let key = key(["deployments", "statefulsets", "jobs"][o], name);
        let outcome = match outcome {
            Answer::Acked(rv) => WriteOutcome::Acked { resource_version: rv },
            Answer::Refused(_) => WriteOutcome::Refused,
            Answer::Unknown => WriteOutcome::Unknown,
        };
        let marker = if kind == WriteKind::Delete { String::new() } else { marker };
        rec.lock().expect("not poisoned").writes.push(ApiWrite { key, kind, marker, invoked, completed, outcome });
        tokio::time::sleep(Duration::from_millis(400 + rng.below(600))).await;
    }
}

enum Answer {
    Acked(u64),
    /// The API refused it (its status code): it changed nothing.
    Refused(u16),
    Unknown,
}

async fn write<K: Resource + DeserializeOwned>(f: impl std::future::Future<Output = kube::Result<K>>) -> Answer {
    answer(timed(f).await)
}

/// A write's result, or None when it did not answer within [`WRITE_TIMEOUT`].
async fn timed<K>(f: impl std::future::Future<Output = kube::Result<K>>) -> Option<kube::Result<K>> {
    tokio::time::timeout(WRITE_TIMEOUT, f).await.ok()
}

fn answer<K: Resource>(r: Option<kube::Result<K>>) -> Answer {
    match r {
        Some(Ok(obj)) => Answer::Acked(rv(obj.meta().resource_version.as_deref())),
        Some(Err(e)) => refused(&e),
        None => Answer::Unknown,
    }
}

/// A Deployment's spec as an acknowledged write left it: a look with no pods, so that the surge check
/// knows the replicas asked for even when they changed again before the next look at the pods.
fn spec_seen(r: &Option<kube::Result<Deployment>>, rec: &Arc<Mutex<Recorded>>, clock: Clock) {
    if let Some(Ok(d)) = r {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
        rec.lock().expect("not poisoned").surge.push(SurgeSample {
            at: clock.ms(),
            key: key("deployments", &d.name_any()),
            uid: d.uid().unwrap_or_default(),
            replicas,
            max_surge: 1,
            pods: 0,
            new_pods: 0,
        });
    }
}

async fn delete<K: Resource + DeserializeOwned>(
    f: impl std::future::Future<Output = kube::Result<either::Either<K, kube::core::Status>>>,
    last_known: u64,
) -> Answer {
    match tokio::time::timeout(WRITE_TIMEOUT, f).await {
        Ok(Ok(either::Either::Left(obj))) => Answer::Acked(rv(obj.meta().resource_version.as_deref()).max(last_known)),
        // A Status instead of the object: the object's last version is the last one this client knows.
        Ok(Ok(either::Either::Right(_))) => Answer::Acked(last_known),
        Ok(Err(e)) => refused(&e),
        Err(_) => Answer::Unknown,
    }
}

/// 4xx but 408 and 429: refused, nothing changed. Anything else (5xx, timeouts, broken connections): the
/// outcome is not known.
fn refused(e: &kube::Error) -> Answer {
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 408 && s.code != 429 => {
            Answer::Refused(s.code)
        }
        _ => Answer::Unknown,
    }
}

fn rv(s: Option<&str>) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A merge patch: the marker always; for Deployments and StatefulSets a new replica count (r < 4) or a new
/// pod template (a rollout, r < 7) or the marker alone.
fn update(o: usize, r: u64, replicas: i64, marker: &str) -> serde_json::Value {
    let meta = json!({"labels": {MARKER: marker}});
    match (o, r) {
        (0 | 1, 0..=3) => json!({"metadata": meta, "spec": {"replicas": replicas}}),
        (0 | 1, 4..=6) => {
            json!({"metadata": meta, "spec": {"template": {"metadata": {"annotations": {"chaos/rev": marker}}}}})
        }
        _ => json!({"metadata": meta}),
    }
}

fn pod_spec(command: &[&str], restart: &str) -> serde_json::Value {
    json!({
        "terminationGracePeriodSeconds": 2,
        "restartPolicy": restart,
        "containers": [{
            "name": "main",
            "image": "keel.test/busybox:1",
            "imagePullPolicy": "IfNotPresent",
            "command": command,
            "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}
        }]
    })
}

fn deployment(name: &str, replicas: i64, marker: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {MARKER: marker}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(&["sleep", "3600"], "Always")}
        }
    }))
    .expect("a valid Deployment")
}

fn statefulset(name: &str, replicas: i64, marker: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {MARKER: marker}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(&["sleep", "3600"], "Always")}
        }
    }))
    .expect("a valid StatefulSet")
}

fn job(name: &str, marker: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {MARKER: marker}},
        "spec": {
            "completions": 1,
            "backoffLimit": 6,
            "template": {"spec": pod_spec(&["sleep", "2"], "Never")}
        }
    }))
    .expect("a valid Job")
}

/// The traffic's workloads as they stand (checker c).
async fn workload_states(client: &Client) -> Result<Vec<WorkloadState>, kube::Error> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), NS).list(&lp).await? {
        let s = d.status.clone().unwrap_or_default();
        out.push(WorkloadState {
            key: key("deployments", &d.name_any()),
            generation: d.metadata.generation.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            want: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated: s.updated_replicas.unwrap_or(0),
            ready: s.available_replicas.unwrap_or(0),
            total: s.replicas.unwrap_or(0),
            complete: false,
        });
    }
    for st in Api::<StatefulSet>::namespaced(client.clone(), NS).list(&lp).await? {
        let s = st.status.clone().unwrap_or_default();
        out.push(WorkloadState {
            key: key("statefulsets", &st.name_any()),
            generation: st.metadata.generation.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            want: st.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            updated: s.updated_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            total: s.replicas,
            complete: false,
        });
    }
    for j in Api::<Job>::namespaced(client.clone(), NS).list(&lp).await? {
        let s = j.status.clone().unwrap_or_default();
        let complete =
            s.conditions.as_ref().is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
        out.push(WorkloadState {
            key: key("jobs", &j.name_any()),
            generation: j.metadata.generation.unwrap_or(0),
            observed_generation: j.metadata.generation.unwrap_or(0),
            want: j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1),
            updated: s.succeeded.unwrap_or(0),
            ready: s.succeeded.unwrap_or(0),
            total: s.active.unwrap_or(0),
            complete,
        });
    }
    Ok(out)
}

/// The traffic's objects at the end: key → (resourceVersion, marker).
async fn final_state(client: &Client) -> Result<FinalState, ClusterRunError> {
    let mut end = FinalState::new();
    let lp = ListParams::default();
    let mut add = |resource: &str, items: Vec<(String, Option<String>, Option<String>)>| {
        for (name, rv_s, marker) in items {
            end.insert(key(resource, &name), (rv(rv_s.as_deref()), marker.unwrap_or_default()));
        }
    };
    fn fields<K: Resource>(k: &K) -> (String, Option<String>, Option<String>) {
        let m = k.meta();
        (
            m.name.clone().unwrap_or_default(),
            m.resource_version.clone(),
            m.labels.as_ref().and_then(|l| l.get(MARKER).cloned()),
        )
    }
    add(
        "deployments",
        Api::<Deployment>::namespaced(client.clone(), NS).list(&lp).await?.items.iter().map(fields).collect(),
    );
    add(
        "statefulsets",
        Api::<StatefulSet>::namespaced(client.clone(), NS).list(&lp).await?.items.iter().map(fields).collect(),
    );
    add("jobs", Api::<Job>::namespaced(client.clone(), NS).list(&lp).await?.items.iter().map(fields).collect());
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_are_read_from_what_the_cluster_prints() {
        let readyz = "[+]ping ok\n[+]etcd ok\n[+]controller-leader ok: m2 (this master)\n[+]node-lifecycle ok: normal\nreadyz check passed\n";
        assert_eq!(control_leader(readyz), Some(1));
        assert_eq!(control_leader("[+]controller-leader ok: none yet\n"), None);
        let masters: Vec<(Host, Ipv4Addr)> =
            (0..3).map(|i| (Host::Master(i), Ipv4Addr::new(10, 200, 0, 101 + i as u8))).collect();
        let status = r#"[{"Endpoint":"http://10.200.0.101:2379","Status":{"header":{"member_id":11,"revision":5},"leader":33}},
                        {"Endpoint":"http://10.200.0.103:2379","Status":{"header":{"member_id":33,"revision":5},"leader":33}}]"#;
        assert_eq!(store_leader(status, &masters), Some(Host::Master(2)));
        let ss = "0 0 10.200.0.11:40000 10.200.0.102:6443\n0 0 10.200.0.11:40002 10.200.0.102:6443\n0 0 10.200.0.11:40001 10.200.0.101:6443\n";
        let ips: Vec<Ipv4Addr> = masters.iter().map(|(_, a)| *a).collect();
        assert_eq!(agent_master(ss, &ips), Some(1));
    }

    #[test]
    fn outages_add_up_failed_probes_and_find_the_longest() {
        let probes = [(0, true), (200, false), (400, false), (600, true), (800, false), (1000, true)];
        assert_eq!(outage(&probes, 0, 1000), (600, 400));
        assert_eq!(outage(&probes, 700, 1000), (200, 200));
        assert_eq!(percentile(&[5, 1, 3], 50), Some(3));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn container_labels_name_the_pod() {
        let info = r#"{"ID":"k1-0","Labels":{"io.keel.pod.namespace":"chaos","io.keel.pod.name":"s0-0","io.keel.pod.uid":"u1"}}"#;
        assert_eq!(pod_of(info), Some(("chaos".into(), "s0-0".into(), "u1".into())));
        assert_eq!(pod_of("{}"), None);
    }
}
