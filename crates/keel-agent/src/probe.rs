//! Container probes, pure: when a probe runs next and what its outcomes add up to (the kubelet's rules:
//! `initialDelaySeconds` after the container started, then every `periodSeconds`; a result changes only
//! after `failureThreshold` failures or `successThreshold` successes in a row). No IO and no clock; the
//! prober ([`crate::prober`]) runs the probes and feeds the outcomes in.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    /// The container's probe of this kind.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => container.startup_probe.as_ref(),
            Kind::Liveness => container.liveness_probe.as_ref(),
            Kind::Readiness => container.readiness_probe.as_ref(),
        }
    }

    /// As the kubelet's events name it ("Liveness probe failed: …").
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    /// The result before the first decision: not ready, alive, not started (unknown).
    pub fn initial(self) -> Option<bool> {
        match self {
            Kind::Startup => None,
            Kind::Liveness => Some(true),
            Kind::Readiness => Some(false),
        }
    }
}

/// A probe's timing and thresholds, with Kubernetes' defaults (period 10 s, timeout 1 s, success 1,
/// failure 3) and floors (1 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let seconds =
            |v: Option<i32>, default: i32, floor: i32| Duration::from_secs(v.unwrap_or(default).max(floor) as u64);
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Timing {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// One probe of one container attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    kind: Kind,
    timing: Timing,
    result: Option<bool>,
    /// The last outcome and how many times in a row it came.
    last: Option<bool>,
    run: u32,
    next_at: Timestamp,
    finished: bool,
}

impl Tracker {
    pub fn new(kind: Kind, timing: Timing, started_at: Timestamp) -> Tracker {
        Tracker {
            kind,
            timing,
            result: kind.initial(),
            last: None,
            run: 0,
            next_at: started_at + timing.initial_delay,
            finished: false,
        }
    }

    /// When the probe runs next.
    pub fn due(&self) -> Timestamp {
        self.next_at
    }

    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// No more runs: the startup probe succeeded, or a liveness or startup probe failed (the container is
    /// being restarted; its next attempt gets new probes).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Takes one outcome at `now`; true when the result changed.
    pub fn record(&mut self, ok: bool, now: Timestamp) -> bool {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        self.next_at = now + self.timing.period;
        let threshold = if ok { self.timing.success_threshold } else { self.timing.failure_threshold };
        if self.run < threshold {
            return false;
        }
        let changed = self.result != Some(ok);
        self.result = Some(ok);
        match (self.kind, ok) {
            (Kind::Startup, true) => self.finished = true,
            (Kind::Startup | Kind::Liveness, false) => self.finished = true,
            _ => {}
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_and_floors() {
        let timing = Timing::of(&Probe::default());
        assert_eq!(timing.period, Duration::from_secs(10));
        assert_eq!(timing.timeout, Duration::from_secs(1));
        assert_eq!((timing.success_threshold, timing.failure_threshold), (1, 3));
        assert_eq!(timing.initial_delay, Duration::ZERO);
        let odd = Probe { period_seconds: Some(0), failure_threshold: Some(-2), ..Default::default() };
        assert_eq!(Timing::of(&odd).period, Duration::from_secs(1));
        assert_eq!(Timing::of(&odd).failure_threshold, 1);
    }

    #[test]
    fn first_run_waits_the_initial_delay_then_every_period() {
        let mut tracker = Tracker::new(Kind::Readiness, timing(1, 3), t(0));
        assert_eq!(tracker.due(), t(5));
        tracker.record(true, t(5));
        assert_eq!(tracker.due(), t(7));
    }

    #[test]
    fn liveness_fails_after_the_threshold_in_a_row() {
        let mut tracker = Tracker::new(Kind::Liveness, timing(1, 3), t(0));
        assert_eq!(tracker.result(), Some(true));
        assert!(!tracker.record(false, t(5)));
        assert!(!tracker.record(false, t(7)));
        // A success in between starts the count over.
        assert!(!tracker.record(true, t(9)));
        assert!(!tracker.record(false, t(11)));
        assert!(!tracker.record(false, t(13)));
        assert!(!tracker.finished());
        assert!(tracker.record(false, t(15)));
        assert_eq!(tracker.result(), Some(false));
        assert!(tracker.finished());
    }

    #[test]
    fn readiness_needs_successes_in_a_row_and_keeps_probing() {
        let mut tracker = Tracker::new(Kind::Readiness, timing(2, 1), t(0));
        assert_eq!(tracker.result(), Some(false));
        assert!(!tracker.record(true, t(5)));
        assert!(tracker.record(true, t(7)));
        assert_eq!(tracker.result(), Some(true));
        assert!(tracker.record(false, t(9)));
        assert_eq!(tracker.result(), Some(false));
        assert!(!tracker.finished());
        assert!(!tracker.record(false, t(11)), "no change, no news");
    }

    #[test]
    fn startup_is_unknown_until_it_succeeds_then_stops() {
        let mut tracker = Tracker::new(Kind::Startup, timing(1, 3), t(0));
        assert_eq!(tracker.result(), None);
        assert!(!tracker.record(false, t(5)));
        assert_eq!(tracker.result(), None);
        assert!(tracker.record(true, t(7)));
        assert_eq!(tracker.result(), Some(true));
        assert!(tracker.finished());
    }

    #[test]
    fn startup_failure_ends_it() {
        let mut tracker = Tracker::new(Kind::Startup, timing(1, 2), t(0));
        tracker.record(false, t(5));
        assert!(tracker.record(false, t(7)));
        assert_eq!(tracker.result(), Some(false));
        assert!(tracker.finished());
    }
}
