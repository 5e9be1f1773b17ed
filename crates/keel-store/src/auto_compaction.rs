//! Automatic compaction: the leader regularly compacts the history it no longer needs to keep, so the store
//! never grows without bound. The decision is [`Planner::plan`], a pure function of time and revisions.
//!
//! Modes (etcd's `--auto-compaction-mode` / `--auto-compaction-retention`):
//! - `revision N`: keep the last N revisions;
//! - `periodic T`: keep the revisions of the last T (e.g. "1h", "30m", "90s").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    Revisions(i64),
    Periodic(Duration),
}

/// keel compacts by default, keeping the last 10 000 revisions (etcd does not compact unless asked; the
/// Kubernetes API server compacts every 5 minutes on its own, which composes with this).
pub const DEFAULT_AUTO_COMPACTION: AutoCompaction = AutoCompaction::Revisions(10_000);

impl AutoCompaction {
    /// Parses etcd's flag pair: mode "revision" or "periodic", retention "N" or a duration ("0" turns it off).
    pub fn parse(mode: &str, retention: &str) -> Result<Self, String> {
        let retention = retention.trim();
        if retention == "0" {
            return Ok(AutoCompaction::Off);
        }
        match mode {
            "revision" => retention
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .map(AutoCompaction::Revisions)
                .ok_or_else(|| format!("--auto-compaction-retention {retention:?}: revision mode needs a count")),
            "periodic" => parse_duration(retention).map(AutoCompaction::Periodic).ok_or_else(|| {
                format!("--auto-compaction-retention {retention:?}: periodic mode needs a duration like 1h, 30m, 90s")
            }),
            other => Err(format!("--auto-compaction-mode must be \"revision\" or \"periodic\", not {other:?}")),
        }
    }
}

/// "90s", "30m", "1h", "2d" or plain hours (etcd reads a bare number in periodic mode as hours).
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "" | "h" => n * 3600,
        "s" => n,
        "m" => n * 60,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Decides when and how far to compact.
#[derive(Debug)]
pub struct Planner {
    mode: AutoCompaction,
    /// (when, store revision) samples, oldest first (periodic mode).
    samples: VecDeque<(Instant, i64)>,
}

impl Planner {
    pub fn new(mode: AutoCompaction) -> Self {
        Planner { mode, samples: VecDeque::new() }
    }

    /// Called regularly on the leader: the revision to compact to now, if any.
    pub fn plan(&mut self, now: Instant, current: i64, compacted: i64) -> Option<i64> {
        let target = match self.mode {
            AutoCompaction::Off => return None,
            AutoCompaction::Revisions(keep) => {
                // Compact once a whole retention's worth has accumulated (history stays under twice the
                // retention): each compaction walks the history, so frequent small steps cost more than they save.
                let target = current - keep;
                (target - compacted >= keep).then_some(target)?
            }
            AutoCompaction::Periodic(keep) => {
                self.samples.push_back((now, current));
                let horizon = now.checked_sub(keep)?;
                // The newest sample at or before the horizon is what may go.
                let mut target = None;
                while let Some(&(t, rev)) = self.samples.front() {
                    if t > horizon {
                        break;
                    }
                    target = Some(rev);
                    self.samples.pop_front();
                }
                if let Some(rev) = target {
                    // Keep it as the oldest sample: later plans measure from it.
                    self.samples.push_front((horizon, rev));
                }
                target?
            }
        };
        (target > compacted).then_some(target)
    }

    /// This member stopped leading: samples are forgotten (a new leader starts its own).
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

/// While this member leads, compacts as the configured mode says (checked every second).
pub(crate) async fn run(store: crate::Store, stop: tokio::sync::watch::Receiver<bool>) {
    let mut planner = Planner::new(store.config().auto_compaction);
    if planner.mode == AutoCompaction::Off {
        return;
    }
    let mut ticker = crate::store::Ticker::new(Duration::from_secs(1), stop);
    while ticker.next().await {
        if !store.is_leader() {
            planner.reset();
            continue;
        }
        let (current, compacted) = {
            let state = store.shared().current();
            let reader = state.reader();
            match (reader.revision(), reader.compacted()) {
                (Ok(r), Ok(c)) => (r, c),
                _ => continue,
            }
        };
        let Some(target) = planner.plan(Instant::now(), current, compacted) else { continue };
        let req = keel_proto::etcdserverpb::CompactionRequest { revision: target, physical: false };
        match store.compact(req).await {
            Ok(_) => tracing::info!(revision = target, "auto-compaction"),
            Err(e) => tracing::debug!(revision = target, error = %e, "auto-compaction skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_etcds() {
        assert_eq!(AutoCompaction::parse("revision", "1000"), Ok(AutoCompaction::Revisions(1000)));
        assert_eq!(AutoCompaction::parse("periodic", "1h"), Ok(AutoCompaction::Periodic(Duration::from_secs(3600))));
        assert_eq!(AutoCompaction::parse("periodic", "2"), Ok(AutoCompaction::Periodic(Duration::from_secs(7200))));
        assert_eq!(AutoCompaction::parse("periodic", "0"), Ok(AutoCompaction::Off));
        assert!(AutoCompaction::parse("revision", "1h").is_err());
        assert!(AutoCompaction::parse("sometimes", "5").is_err());
    }

    #[test]
    fn revision_mode_keeps_the_last_n_in_steps() {
        let mut p = Planner::new(AutoCompaction::Revisions(100));
        let t = Instant::now();
        assert_eq!(p.plan(t, 50, 0), None);
        assert_eq!(p.plan(t, 150, 0), None, "less than a retention's worth to gain");
        assert_eq!(p.plan(t, 200, 0), Some(100));
        assert_eq!(p.plan(t, 250, 100), None);
        assert_eq!(p.plan(t, 1000, 100), Some(900));
    }

    #[test]
    fn periodic_mode_keeps_the_last_period() {
        let mut p = Planner::new(AutoCompaction::Periodic(Duration::from_secs(60)));
        let t = Instant::now();
        assert_eq!(p.plan(t, 10, 0), None);
        assert_eq!(p.plan(t + Duration::from_secs(30), 40, 0), None);
        // 61 s on: what existed 60 s ago (revision 10) may go.
        assert_eq!(p.plan(t + Duration::from_secs(61), 70, 0), Some(10));
        assert_eq!(p.plan(t + Duration::from_secs(95), 90, 10), Some(40));
        assert_eq!(p.plan(t + Duration::from_secs(96), 91, 40), None);
    }
}
