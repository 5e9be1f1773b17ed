//! How one member sees another over the Raft transport, pure: reachable or not, when to try it again, and
//! what is worth a log line.
//!
//! openraft 0.9 retries replication and heartbeats to a failing follower as fast as its loop turns unless the
//! transport answers `Unreachable` (then it sleeps for [`backoff`] between tries), and every read-index round
//! calls every voter again; it logs each failure. A member whose port is held by another program (a foreign
//! gRPC server answering `Unimplemented`, a plain HTTP server, a refused connection) made a leader log about
//! 300 lines a second. Here a peer is:
//! - **reachable** until a call fails in a way that retrying at once cannot fix (see [`classify`]), or until
//!   calls have kept timing out for [`SOFT_FAILURES_FOR`];
//! - then **unreachable**: one line when that happens, one summary every [`SUMMARY_EVERY`] while it lasts,
//!   one line when a call succeeds again; calls are let through at most once per growing delay (100 ms
//!   doubling up to 1 s, [`retry_delay`]), the others fail at once without touching the network.

use std::time::{Duration, Instant};

/// Consecutive timeouts for this long make a peer unreachable (a slow peer misses a heartbeat now and then).
pub const SOFT_FAILURES_FOR: Duration = Duration::from_secs(1);
/// While a peer stays unreachable, a summary line this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The peer is not there or is not a member of this cluster: refused or reset connections, a server that
    /// does not serve `keel.raft.RaftPeer`, another cluster's member, an answer that does not decode.
    Hard(String),
    /// The call ran out of time or was cancelled: the peer may only be slow.
    Soft(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Hard(r) | Failure::Soft(r) => r,
        }
    }
}

/// A failed gRPC call to a peer's `RaftPeer` service, by its status code. A working member answers every Raft
/// RPC with OK (its errors travel in the payload), so any other code but a timeout or a cancellation means
/// the peer cannot take part.
pub fn classify(code: tonic::Code, reason: String) -> Failure {
    match code {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Failure::Soft(reason),
        _ => Failure::Hard(reason),
    }
}

/// The delay before the `n`th retry (from 0) of an unreachable peer: 100 ms doubling, at most 1 s.
pub fn retry_delay(n: u32) -> Duration {
    FIRST_DELAY.saturating_mul(1u32 << n.min(16)).min(MAX_DELAY)
}

/// [`retry_delay`] as the endless sequence openraft's `RaftNetwork::backoff` returns.
pub fn backoff() -> impl Iterator<Item = Duration> + Send + 'static {
    (0u32..).map(retry_delay)
}

/// What to log about a peer, when its state changes or a summary is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Unreachable { reason: String },
    StillUnreachable { for_: Duration, failed: u64, reason: String },
    ReachableAgain { after: Duration, failed: u64 },
}

#[derive(Debug, Clone)]
enum State {
    Reachable {
        /// The first of the current run of soft failures, and how many.
        soft: Option<(Instant, u64)>,
    },
    Unreachable {
        since: Instant,
        failed: u64,
        reason: String,
        reported: Instant,
        /// Failures since it became unreachable that set the next delay.
        retries: u32,
        next_call: Instant,
    },
}

/// One peer's health as seen by this member's transport.
#[derive(Debug, Clone)]
pub struct PeerHealth {
    state: State,
}

impl Default for PeerHealth {
    fn default() -> Self {
        PeerHealth { state: State::Reachable { soft: None } }
    }
}

impl PeerHealth {
    pub fn is_unreachable(&self) -> bool {
        matches!(self.state, State::Unreachable { .. })
    }

    /// Whether a call may go out now; false while an unreachable peer waits for its next try.
    pub fn may_call(&self, now: Instant) -> bool {
        match &self.state {
            State::Reachable { .. } => true,
            State::Unreachable { next_call, .. } => now >= *next_call,
        }
    }

    /// A call succeeded.
    pub fn succeeded(&mut self, now: Instant) -> Option<Report> {
        let report = match &self.state {
            State::Unreachable { since, failed, .. } => {
                Some(Report::ReachableAgain { after: now.saturating_duration_since(*since), failed: *failed })
            }
            State::Reachable { .. } => None,
        };
        self.state = State::Reachable { soft: None };
        report
    }

    /// A call failed.
    pub fn failed(&mut self, now: Instant, failure: Failure) -> Option<Report> {
        match &mut self.state {
            State::Reachable { soft } => {
                let (first, count) = soft.get_or_insert((now, 0));
                *count += 1;
                let (first, count) = (*first, *count);
                let lasting = now.saturating_duration_since(first) >= SOFT_FAILURES_FOR;
                if matches!(failure, Failure::Soft(_)) && !lasting {
                    return None;
                }
                let reason = failure.reason().to_string();
                self.state = State::Unreachable {
                    since: first,
                    failed: count,
                    reason: reason.clone(),
                    reported: now,
                    retries: 0,
                    next_call: now + retry_delay(0),
                };
                Some(Report::Unreachable { reason })
            }
            State::Unreachable { since, failed, reason, reported, retries, next_call } => {
                *failed += 1;
                *retries = retries.saturating_add(1);
                *next_call = now + retry_delay(*retries);
                *reason = failure.reason().to_string();
                if now.saturating_duration_since(*reported) < SUMMARY_EVERY {
                    return None;
                }
                *reported = now;
                Some(Report::StillUnreachable {
                    for_: now.saturating_duration_since(*since),
                    failed: *failed,
                    reason: reason.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard() -> Failure {
        Failure::Hard("Unimplemented: unknown service keel.raft.RaftPeer".into())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_hard_failure_reports_once_and_a_success_reports_the_return_once() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        assert_eq!(h.succeeded(t0), None);
        assert_eq!(h.failed(t0, hard()), Some(Report::Unreachable { reason: hard().reason().into() }));
        assert!(h.is_unreachable());
        for i in 1..200 {
            assert_eq!(h.failed(t0 + ms(100 * i), hard()), None, "call {i}");
        }
        assert_eq!(h.succeeded(t0 + ms(20_000)), Some(Report::ReachableAgain { after: ms(20_000), failed: 200 }));
        assert!(!h.is_unreachable());
        assert_eq!(h.succeeded(t0 + ms(20_100)), None);
    }

    #[test]
    fn a_summary_every_thirty_seconds_while_unreachable() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        h.failed(t0, hard());
        let mut summaries = Vec::new();
        for i in 1..=650 {
            if let Some(r) = h.failed(t0 + ms(100 * i), Failure::Hard("connection refused".into())) {
                summaries.push((i, r));
            }
        }
        assert_eq!(summaries.len(), 2, "{summaries:?}");
        assert_eq!(
            summaries[0],
            (300, Report::StillUnreachable { for_: ms(30_000), failed: 301, reason: "connection refused".into() })
        );
        assert_eq!(summaries[1].0, 600);
    }

    #[test]
    fn timeouts_make_a_peer_unreachable_only_when_they_last() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        let soft = || Failure::Soft("DeadlineExceeded: Timeout expired".into());
        for i in 0..10 {
            assert_eq!(h.failed(t0 + ms(50 * i), soft()), None);
        }
        // A success ends the run: the next timeouts start a new one.
        h.succeeded(t0 + ms(500));
        assert_eq!(h.failed(t0 + ms(1_100), soft()), None);
        assert!(!h.is_unreachable());
        assert_eq!(h.failed(t0 + ms(2_000), soft()), None);
        let r = h.failed(t0 + ms(2_100), soft());
        assert_eq!(r, Some(Report::Unreachable { reason: "DeadlineExceeded: Timeout expired".into() }));
        // Counted from the run's first failure.
        assert_eq!(h.succeeded(t0 + ms(3_100)), Some(Report::ReachableAgain { after: ms(2_000), failed: 3 }));
    }

    #[test]
    fn an_unreachable_peer_is_called_at_most_once_per_growing_delay() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        assert!(h.may_call(t0));
        h.failed(t0, hard());
        assert!(!h.may_call(t0 + ms(99)));
        assert!(h.may_call(t0 + ms(100)));
        h.failed(t0 + ms(100), hard());
        assert!(!h.may_call(t0 + ms(299)));
        assert!(h.may_call(t0 + ms(300)));
        let mut at = t0 + ms(300);
        for _ in 0..10 {
            h.failed(at, hard());
            at += ms(1_000);
        }
        // The last failure was 1 s ago, and the delay is at its cap.
        assert!(!h.may_call(at - ms(1)));
        assert!(h.may_call(at));
        h.succeeded(at);
        assert!(h.may_call(at));
    }

    #[test]
    fn the_delay_doubles_from_100_ms_to_at_most_1_s() {
        let delays: Vec<u64> = backoff().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(retry_delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn only_timeouts_and_cancellations_are_soft() {
        for code in [tonic::Code::DeadlineExceeded, tonic::Code::Cancelled] {
            assert!(matches!(classify(code, String::new()), Failure::Soft(_)), "{code:?}");
        }
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Unimplemented,
            tonic::Code::PermissionDenied,
            tonic::Code::Unknown,
            tonic::Code::Internal,
            tonic::Code::InvalidArgument,
        ] {
            assert!(matches!(classify(code, String::new()), Failure::Hard(_)), "{code:?}");
        }
    }
}
