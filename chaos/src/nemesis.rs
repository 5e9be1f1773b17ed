//! Faults, injected one at a time: kill -9 of a member or of the leader (restarted after a while), a paused
//! leader (SIGSTOP, then SIGCONT), and a leader cut off from the other members by nftables rules inside its
//! own namespace. Each fault is recorded with when it began and ended.

use std::time::Duration;

use serde::Serialize;

use crate::hosts::run_in;
use crate::members::Member;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Fault {
    KillMember,
    KillLeader,
    PauseLeader,
    IsolateLeader,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::KillMember, Fault::KillLeader, Fault::PauseLeader, Fault::IsolateLeader];
}

/// One injected fault, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub fault: Fault,
    pub member: String,
    /// Nanoseconds on the run's clock.
    pub start: u64,
    pub end: u64,
}

/// How long a fault lasts before it is healed.
pub const FAULT_DURATION: Duration = Duration::from_millis(1500);

/// Cuts `m` off from `peers` (both directions) with an nftables table of its own.
pub fn isolate(m: &Member, peers: &[&Member]) -> Result<(), crate::hosts::HostError> {
    let addrs: Vec<String> = peers.iter().map(|p| p.host.addr.to_string()).collect();
    let set = addrs.join(", ");
    let rules = format!(
        "table inet chaos {{\n  chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n  chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{}-nft-{}.conf", m.host.ns, std::process::id()));
    std::fs::write(&file, rules)
        .map_err(|source| crate::hosts::HostError::Spawn { command: "write nft rules".into(), source })?;
    let r = run_in(&m.host.ns, "nft", &["-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    r
}

/// Undoes [`isolate`] (nothing to undo is fine).
pub fn heal(m: &Member) {
    let _ = run_in(&m.host.ns, "nft", &["delete", "table", "inet", "chaos"]);
}
