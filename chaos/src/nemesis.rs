//! Faults. [`plan`] decides, without IO, what a fault does to which members (given who leads and a random
//! source); [`inject`] and [`heal`] carry it out: kill -9 (restart on heal), power cuts (kill -9, then the
//! member's unsynced writes dropped by its `lazyfs.rs` mount), SIGSTOP (SIGCONT on heal),
//! partitions and random packet loss as nftables tables inside the members' namespaces, a slow link as a
//! tc token-bucket filter on the members' interfaces, delay with jitter through NFQUEUE (`delay.rs`).
//!
//! tc netem, the usual way to delay packets, is not available: the kernel of this project's CI machines
//! has no `sch_netem` ("Specified qdisc kind is unknown"); it has `nfnetlink_queue`.

use std::time::Duration;

use serde::Serialize;

use crate::delay::Delayer;
use crate::hosts::{run_in, HostError};
use crate::members::{Member, Server};
use crate::traffic::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
pub enum Fault {
    /// kill -9 of a random member.
    KillMember,
    KillLeader,
    /// kill -9 of a majority (the leader among them): nothing can be written until they are back.
    KillMajority,
    /// SIGSTOP of the leader.
    PauseLeader,
    /// The leader cut off from every other member (clients still reach it).
    IsolateLeader,
    /// Two sides: the leader with a minority, the rest a majority.
    PartitionLeaderMinority,
    /// Two sides that each see one member in the middle, which sees everyone.
    Bridge,
    /// A slow link on every member: 4 Mbit/s with up to 100 ms of queueing.
    Slow,
    /// 15% of packets dropped at random, each way, on every member.
    Loss,
    /// Every packet a member sends held 40 ms ± 20 ms (so 80 ms ± 40 ms round trips between members).
    Delay,
    /// A power cut on a random member: kill -9, and every write it had not fsynced is lost (its data dir is
    /// on a [`crate::lazyfs`] mount).
    CrashMember,
    /// A power cut on every member at once, unsynced writes lost: only what was fsynced survives, and that
    /// must include every acknowledged write.
    CrashAll,
    /// A random member (the leader, maybe) removed from the cluster, then added back as a new member — a
    /// learner on an empty data dir — and promoted once it has caught up.
    ReplaceMember,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Fault::KillMember,
        Fault::KillLeader,
        Fault::KillMajority,
        Fault::PauseLeader,
        Fault::IsolateLeader,
        Fault::PartitionLeaderMinority,
        Fault::Bridge,
        Fault::Slow,
        Fault::Loss,
        Fault::Delay,
        Fault::CrashMember,
        Fault::CrashAll,
        Fault::ReplaceMember,
    ];

    /// Whether the members' data dirs must be on LazyFS mounts for this fault.
    pub fn loses_unsynced(self) -> bool {
        matches!(self, Fault::CrashMember | Fault::CrashAll)
    }
}

/// What a fault does, by member index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Kill(Vec<usize>),
    /// kill -9, then the writes these members had not fsynced are dropped.
    Crash(Vec<usize>),
    Pause(Vec<usize>),
    /// `blocked[i]`: the members member i exchanges no packets with (symmetric).
    Partition(Vec<Vec<usize>>),
    /// Drop this percentage of packets at random, each way, on every member.
    Loss(u32),
    /// A token-bucket filter with these arguments on every member's interface.
    Shape(Vec<String>),
    /// Hold every packet each member sends for this long, give or take the jitter (`delay.rs`).
    Delay {
        delay: Duration,
        jitter: Duration,
    },
    /// Remove this member and add it back as a new one (carried out by `reconfig.rs`, not [`inject`]).
    Replace(usize),
}

impl Action {
    /// The members it hits (every member for netem).
    pub fn targets(&self, n: usize) -> Vec<usize> {
        match self {
            Action::Kill(v) | Action::Crash(v) | Action::Pause(v) => v.clone(),
            Action::Replace(i) => vec![*i],
            Action::Partition(b) => (0..b.len()).filter(|&i| !b[i].is_empty()).collect(),
            Action::Loss(_) | Action::Shape(_) | Action::Delay { .. } => (0..n).collect(),
        }
    }
}

/// Decides what `fault` does in a cluster of `n` members led by `leader`.
pub fn plan(fault: Fault, n: usize, leader: usize, rng: &mut Rng) -> Action {
    let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    match fault {
        Fault::KillMember => Action::Kill(vec![rng.below(n as u64) as usize]),
        Fault::KillLeader => Action::Kill(vec![leader]),
        Fault::KillMajority => {
            let mut v = vec![leader];
            v.extend(pick(&others, n / 2, rng));
            v.sort();
            Action::Kill(v)
        }
        Fault::PauseLeader => Action::Pause(vec![leader]),
        Fault::IsolateLeader => split(n, &[leader]),
        Fault::PartitionLeaderMinority => {
            let mut minority = vec![leader];
            minority.extend(pick(&others, ((n - 1) / 2).saturating_sub(1), rng));
            split(n, &minority)
        }
        Fault::Bridge => {
            // Order the members at random; the middle one sees both halves, the halves not each other.
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let half = n / 2;
            let (left, right) = (&order[..half], &order[n - half..]);
            let mut blocked = vec![Vec::new(); n];
            for &a in left {
                for &b in right {
                    if a != b {
                        blocked[a].push(b);
                        blocked[b].push(a);
                    }
                }
            }
            Action::Partition(blocked)
        }
        Fault::Slow => {
            Action::Shape(["rate", "4mbit", "burst", "32kbit", "latency", "100ms"].map(String::from).to_vec())
        }
        Fault::Loss => Action::Loss(15),
        Fault::Delay => Action::Delay { delay: Duration::from_millis(40), jitter: Duration::from_millis(20) },
        Fault::CrashMember => Action::Crash(vec![rng.below(n as u64) as usize]),
        Fault::CrashAll => Action::Crash((0..n).collect()),
        Fault::ReplaceMember => Action::Replace(rng.below(n as u64) as usize),
    }
}

/// The faults of one round: one, or with `together` > 1 up to that many different ones at once, each
/// planned against the same leader. Only one slows the links (one qdisc per interface).
pub fn plan_round(faults: &[Fault], together: usize, n: usize, leader: usize, rng: &mut Rng) -> Vec<(Fault, Action)> {
    let k = 1 + rng.below(together.max(1) as u64) as usize;
    let mut chosen: Vec<Fault> = Vec::new();
    for _ in 0..k {
        let f = faults[rng.below(faults.len() as u64) as usize];
        if !chosen.contains(&f) {
            chosen.push(f);
        }
    }
    chosen.into_iter().map(|f| (f, plan(f, n, leader, rng))).collect()
}

fn pick(from: &[usize], k: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v = from.to_vec();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v.truncate(k);
    v
}

/// `side` against everyone else.
fn split(n: usize, side: &[usize]) -> Action {
    let blocked = (0..n).map(|a| (0..n).filter(|b| side.contains(&a) != side.contains(b)).collect()).collect();
    Action::Partition(blocked)
}

/// How long a fault lasts before it is healed, unless the run says otherwise.
pub const FAULT_DURATION: Duration = Duration::from_millis(1500);

/// One round of faults (one, or several at once), for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub faults: Vec<Fault>,
    pub members: Vec<String>,
    /// Nanoseconds on the run's clock.
    pub start: u64,
    pub end: u64,
    /// What went wrong carrying the faults out (a membership change the cluster refused, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Carries out `action`; `slot` tells apart the nftables tables (and queues) of faults injected together.
/// Returns the threads that hold delayed packets: drop them after [`heal`], which lets the packets go.
pub fn inject(action: &Action, slot: usize, members: &mut [Member]) -> Result<Vec<Delayer>, HostError> {
    let mut delayers = Vec::new();
    match action {
        Action::Replace(_) => {}
        Action::Delay { delay, jitter } => {
            for (i, m) in members.iter().enumerate() {
                delayers.push(Delayer::start(&m.host.ns, slot as u16, *delay, *jitter, (slot * 100 + i) as u64)?);
                run_in(&m.host.ns, "iptables", &queue_rule("-A", slot).each_ref().map(String::as_str))?;
            }
        }
        Action::Kill(v) => v.iter().for_each(|&i| members[i].kill()),
        Action::Crash(v) => {
            for &i in v {
                members[i]
                    .crash()
                    .map_err(|source| HostError::Spawn { command: format!("crash {}", members[i].name), source })?;
            }
        }
        Action::Pause(v) => v.iter().for_each(|&i| members[i].pause()),
        Action::Partition(blocked) => {
            for (i, b) in blocked.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
                let addrs: Vec<String> = b.iter().map(|&j| members[j].host.addr.to_string()).collect();
                let set = addrs.join(", ");
                let (input, output) = (format!("ip saddr {{ {set} }} drop;"), format!("ip daddr {{ {set} }} drop;"));
                nft_table(&members[i], slot, &input, &output)?;
            }
        }
        Action::Loss(pct) => {
            let input = format!("iifname \"eth0\" numgen random mod 100 < {pct} drop;");
            let output = format!("oifname \"eth0\" numgen random mod 100 < {pct} drop;");
            for m in members.iter() {
                nft_table(m, slot, &input, &output)?;
            }
        }
        Action::Shape(args) => {
            for m in members.iter() {
                let mut a = vec!["qdisc", "replace", "dev", "eth0", "root", "tbf"];
                a.extend(args.iter().map(String::as_str));
                run_in(&m.host.ns, "tc", &a)?;
            }
        }
    }
    Ok(delayers)
}

/// Undoes `action` (injected in `slot`): killed members restart on their data dirs, paused ones continue,
/// rules and qdiscs go.
pub fn heal(action: &Action, slot: usize, members: &mut [Member], server: &Server) -> Result<(), HostError> {
    match action {
        Action::Replace(_) => {}
        Action::Kill(v) | Action::Crash(v) => {
            for &i in v {
                members[i]
                    .start(server, "existing")
                    .map_err(|source| HostError::Spawn { command: format!("restart {}", members[i].name), source })?;
            }
        }
        Action::Pause(v) => v.iter().for_each(|&i| members[i].resume()),
        Action::Delay { .. } => {
            for m in members.iter() {
                let _ = run_in(&m.host.ns, "iptables", &queue_rule("-D", slot).each_ref().map(String::as_str));
            }
        }
        Action::Partition(_) | Action::Loss(_) => {
            for m in members.iter() {
                let _ = run_in(&m.host.ns, "nft", &["delete", "table", "inet", &table(slot)]);
            }
        }
        Action::Shape(_) => {
            for m in members.iter() {
                let _ = run_in(&m.host.ns, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            }
        }
    }
    Ok(())
}

/// Most faults injected together in one round.
pub const MAX_TOGETHER: usize = 4;

/// Appends (`-A`) or deletes (`-D`) the iptables rule that queues a member's outgoing packets to the
/// delaying thread of `slot` (this kernel has NFQUEUE for x_tables, not nftables' `queue`; with `bypass`,
/// packets pass when no thread listens).
fn queue_rule(op: &str, slot: usize) -> [String; 9] {
    let q = slot.to_string();
    [op, "OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", &q, "--queue-bypass"].map(String::from)
}

fn table(slot: usize) -> String {
    format!("chaos{slot}")
}

/// Removes any partition rules and qdiscs from `m`'s namespace (nothing to remove is fine).
pub fn clear_network_faults(m: &Member) {
    for slot in 0..MAX_TOGETHER {
        let _ = run_in(&m.host.ns, "nft", &["delete", "table", "inet", &table(slot)]);
    }
    let _ = run_in(&m.host.ns, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
    let _ = run_in(&m.host.ns, "iptables", &["-F", "OUTPUT"]);
}

/// Loads an nftables table of the harness's own (one per slot) into `m`'s namespace, with these rules on
/// incoming and outgoing packets.
fn nft_table(m: &Member, slot: usize, input: &str, output: &str) -> Result<(), HostError> {
    load_nft_table(&m.host.ns, &table(slot), input, output)
}

/// Loads table `name` (inet) into namespace `ns`, with `input` and `output` as the rules of its two
/// chains (accept by default); `nft -f` applies it in one transaction.
pub fn load_nft_table(ns: &str, name: &str, input: &str, output: &str) -> Result<(), HostError> {
    let rules = format!(
        "table inet {name} {{\n  chain input {{ type filter hook input priority 0; policy accept; {input} }}\n  chain output {{ type filter hook output priority 0; policy accept; {output} }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{ns}-{name}.conf"));
    std::fs::write(&file, rules)
        .map_err(|source| HostError::Spawn { command: format!("write {}", file.display()), source })?;
    let r = run_in(ns, "nft", &["-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symmetric(b: &[Vec<usize>]) -> bool {
        (0..b.len()).all(|i| b[i].iter().all(|&j| b[j].contains(&i) && i != j))
    }

    #[test]
    fn partitions_are_symmetric_and_leave_the_leader_on_the_minority_side() {
        for n in [3, 5] {
            for seed in 0..50 {
                let mut rng = Rng::new(seed);
                let leader = seed as usize % n;
                for fault in [Fault::IsolateLeader, Fault::PartitionLeaderMinority, Fault::Bridge] {
                    let Action::Partition(b) = plan(fault, n, leader, &mut rng) else { panic!("{fault:?}") };
                    assert!(symmetric(&b), "{fault:?} {b:?}");
                    if fault != Fault::Bridge {
                        // The leader sees fewer than half of the others.
                        let sees = n - 1 - b[leader].len();
                        assert!(sees < n / 2, "{fault:?} n={n}: leader sees {sees}");
                    } else {
                        // Exactly one member sees everyone and some pairs are cut.
                        assert_eq!(b.iter().filter(|x| x.is_empty()).count(), 1, "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn kill_majority_takes_the_leader_and_a_majority() {
        for n in [3, 5] {
            let mut rng = Rng::new(n as u64);
            let Action::Kill(v) = plan(Fault::KillMajority, n, 1, &mut rng) else { panic!() };
            assert!(v.contains(&1));
            assert_eq!(v.len(), n / 2 + 1);
            let mut d = v.clone();
            d.dedup();
            assert_eq!(d, v);
        }
    }
}
