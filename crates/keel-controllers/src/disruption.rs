//! Zone disruption, pure: kube-controller-manager's node lifecycle controller (`ComputeZoneState`,
//! `handleDisruption`, `setLimiterInZone`, the per-zone `RateLimitedTimedQueue` of nodes waiting for their
//! NoExecute taint) on an injected clock.
//!
//! Nodes are grouped into zones by their `topology.kubernetes.io/region` and `…/zone` labels (the beta
//! `failure-domain` labels when those are missing; one zone "" without either). Each pass counts a zone's
//! Ready and not-Ready nodes:
//! - **FullDisruption**: no node Ready; **PartialDisruption**: more than 2 not Ready and at least
//!   `--unhealthy-zone-threshold` (0.55) of them; **Normal** otherwise.
//! - A node that is not Ready gets its NoExecute taint (which evicts its pods) only when its zone's token
//!   bucket allows: `--node-eviction-rate` (0.1 nodes/s) when Normal or FullDisruption, when
//!   PartialDisruption `--secondary-node-eviction-rate` (0.01) if the zone has more than
//!   `--large-cluster-size-threshold` (50) nodes and none otherwise.
//! - When **every** zone is fully disrupted, the likelier fault is on the masters' side (the nodes lost
//!   them, not their machines): "master disruption mode" stops tainting altogether and lifts the NoExecute
//!   taints already set, while conditions still go Unknown. When a zone has a Ready node again the mode ends:
//!   every node gets a fresh grace period and each zone the rate of its state.
//!
//! Nodes labelled `node.kubernetes.io/exclude-disruption` are not counted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;

pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
const BETA_ZONE_LABEL: &str = "failure-domain.beta.kubernetes.io/zone";
const BETA_REGION_LABEL: &str = "failure-domain.beta.kubernetes.io/region";
/// Nodes with this label are left out of a zone's counts.
pub const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// The flags of `keel server` that govern evictions, with kube-controller-manager's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisruptionSettings {
    /// `--unhealthy-zone-threshold`: the share of not-Ready nodes (more than 2) that makes a zone partially
    /// disrupted.
    pub unhealthy_zone_threshold: f32,
    /// `--large-cluster-size-threshold`: above this many nodes a partially disrupted zone still evicts, at
    /// the secondary rate.
    pub large_cluster_size_threshold: u32,
    /// `--node-eviction-rate`: nodes per second given their NoExecute taint in a healthy zone.
    pub node_eviction_rate: f32,
    /// `--secondary-node-eviction-rate`: the same in a large, partially disrupted zone.
    pub secondary_node_eviction_rate: f32,
}

impl Default for DisruptionSettings {
    fn default() -> Self {
        DisruptionSettings {
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// A node's zone, as Kubernetes keys it (`region:\0:zone`; "" when it has neither label).
pub fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str, beta: &str| {
        labels.and_then(|l| l.get(k).or_else(|| l.get(beta))).map(String::as_str).unwrap_or_default().to_string()
    };
    let (zone, region) = (get(ZONE_LABEL, BETA_ZONE_LABEL), get(REGION_LABEL, BETA_REGION_LABEL));
    if zone.is_empty() && region.is_empty() {
        return String::new();
    }
    format!("{region}:\0:{zone}")
}

/// A zone key as people read it: `""`, or `"region/zone"`.
pub fn zone_name(key: &str) -> String {
    format!("{:?}", key.replace(":\0:", "/"))
}

/// Whether a node counts towards its zone's state.
pub fn counted(node: &Node) -> bool {
    !node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(EXCLUDE_DISRUPTION))
}

/// A zone's state from its Ready and not-Ready node counts (kube-controller-manager's `ComputeZoneState`).
pub fn zone_state(ready: usize, not_ready: usize, unhealthy_threshold: f32) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f32 / (ready + not_ready) as f32 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Nodes per second given their NoExecute taint in a zone of `size` nodes in `state`.
pub fn eviction_rate(state: ZoneState, size: usize, s: &DisruptionSettings) -> f32 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption | ZoneState::Initial => s.node_eviction_rate,
        ZoneState::PartialDisruption if size > s.large_cluster_size_threshold as usize => {
            s.secondary_node_eviction_rate
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// client-go's token bucket with a burst of 1 (`flowcontrol.NewTokenBucketRateLimiter(qps, 1)`); a rate of
/// 0 never lets anything through.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket: the first call passes at once.
    pub fn new(qps: f32, now: Instant) -> TokenBucket {
        TokenBucket { qps, tokens: if qps > 0.0 { 1.0 } else { 0.0 }, last: now }
    }

    pub fn qps(&self) -> f32 {
        self.qps
    }

    fn refill(&mut self, now: Instant) {
        if self.qps > 0.0 {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(self.qps)).min(1.0);
        }
        self.last = now;
    }

    /// Takes a token if there is one.
    pub fn try_accept(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A bucket of another rate (`RateLimitedTimedQueue.SwapLimiter`): empty if this one was, so a swap is
    /// no way around the wait.
    pub fn swap(&mut self, qps: f32, now: Instant) {
        if qps == self.qps {
            return;
        }
        self.refill(now);
        let saturated = self.tokens < 1.0;
        *self = TokenBucket::new(qps, now);
        if saturated {
            self.tokens = 0.0;
        }
    }
}

/// One zone: its state and the nodes waiting, in order, for their NoExecute taint.
#[derive(Debug, Clone)]
struct Zone {
    state: ZoneState,
    bucket: TokenBucket,
    waiting: VecDeque<String>,
}

/// A change worth an event and a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Every zone is fully disrupted: NoExecute taints are lifted and no node is tainted.
    EnteredMasterDisruption,
    /// A zone has a Ready node again.
    ExitedMasterDisruption,
    ZoneChanged {
        zone: String,
        state: ZoneState,
    },
}

/// The zones of the cluster as the node lifecycle controller tracks them between passes.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: BTreeMap<String, Zone>,
}

impl Zones {
    /// One pass's counts per zone (Ready, not Ready) → the zones' new states and rates
    /// (`handleDisruption`).
    pub fn observe(
        &mut self,
        counts: &BTreeMap<String, (usize, usize)>,
        settings: &DisruptionSettings,
        now: Instant,
    ) -> Vec<Transition> {
        let new: BTreeMap<&String, ZoneState> = counts
            .iter()
            .map(|(k, (ready, not_ready))| (k, zone_state(*ready, *not_ready, settings.unhealthy_zone_threshold)))
            .collect();
        let all_are_full = new.values().all(|s| *s == ZoneState::FullDisruption);
        self.zones.retain(|k, _| counts.contains_key(k));
        for k in counts.keys() {
            self.zones.entry(k.clone()).or_insert_with(|| Zone {
                state: ZoneState::Initial,
                bucket: TokenBucket::new(settings.node_eviction_rate, now),
                waiting: VecDeque::new(),
            });
        }
        let all_were_full = self.zones.values().all(|z| z.state == ZoneState::FullDisruption);
        if all_are_full && all_were_full {
            return Vec::new();
        }
        if all_are_full {
            for z in self.zones.values_mut() {
                z.bucket.swap(0.0, now);
                z.state = ZoneState::FullDisruption;
            }
            return vec![Transition::EnteredMasterDisruption];
        }
        let size = |k: &String| counts.get(k).map_or(0, |(r, n)| r + n);
        let mut out = Vec::new();
        if all_were_full {
            out.push(Transition::ExitedMasterDisruption);
        }
        for (k, z) in self.zones.iter_mut() {
            let state = new[k];
            if z.state == state && !all_were_full {
                continue;
            }
            z.bucket.swap(eviction_rate(state, size(k), settings), now);
            let first_look = z.state == ZoneState::Initial && state == ZoneState::Normal;
            if z.state != state && !all_were_full && !first_look {
                out.push(Transition::ZoneChanged { zone: k.clone(), state });
            }
            z.state = state;
        }
        out
    }

    /// Whether every zone is fully disrupted ("master disruption mode"): no NoExecute taints at all.
    pub fn master_disruption(&self) -> bool {
        !self.zones.is_empty() && self.zones.values().all(|z| z.state == ZoneState::FullDisruption)
    }

    pub fn state(&self, zone: &str) -> Option<ZoneState> {
        self.zones.get(zone).map(|z| z.state)
    }

    /// The nodes that now get their NoExecute taint, given those that want one per zone (not Ready and not
    /// yet tainted, in the order first seen): the queue keeps its order, drops the nodes no longer waiting,
    /// and lets nodes through as each zone's bucket allows.
    pub fn due(&mut self, wanting: &BTreeMap<String, Vec<String>>, now: Instant) -> BTreeSet<String> {
        let mut due = BTreeSet::new();
        for (k, z) in self.zones.iter_mut() {
            let want: &[String] = wanting.get(k).map(Vec::as_slice).unwrap_or_default();
            z.waiting.retain(|n| want.contains(n));
            for n in want {
                if !z.waiting.contains(n) {
                    z.waiting.push_back(n.clone());
                }
            }
            while !z.waiting.is_empty() && z.bucket.try_accept(now) {
                due.extend(z.waiting.pop_front());
            }
        }
        due
    }

    /// A line for `/readyz?verbose`: what the zones are in and what that does to evictions.
    pub fn summary(&self) -> String {
        if self.zones.is_empty() {
            return "no nodes".into();
        }
        let names = |f: &dyn Fn(&Zone) -> bool| {
            self.zones.iter().filter(|(_, z)| f(z)).map(|(k, _)| zone_name(k)).collect::<Vec<_>>().join(", ")
        };
        if self.master_disruption() {
            return format!("full disruption: evictions stopped in zone {}", names(&|_| true));
        }
        let troubled: Vec<String> = self
            .zones
            .iter()
            .filter(|(_, z)| matches!(z.state, ZoneState::PartialDisruption | ZoneState::FullDisruption))
            .map(|(k, z)| {
                let what = if z.state == ZoneState::FullDisruption { "full" } else { "partial" };
                format!("{what} disruption in zone {} (evictions at {}/s)", zone_name(k), z.bucket.qps())
            })
            .collect();
        if troubled.is_empty() {
            let n = self.zones.len();
            format!("normal ({n} zone{})", if n == 1 { "" } else { "s" })
        } else {
            troubled.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn counts(zones: &[(&str, usize, usize)]) -> BTreeMap<String, (usize, usize)> {
        zones.iter().map(|(k, r, n)| (k.to_string(), (*r, *n))).collect()
    }

    fn wanting(zone: &str, nodes: &[&str]) -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([(zone.to_string(), nodes.iter().map(|n| n.to_string()).collect())])
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn zone_states_as_compute_zone_state_decides() {
        assert_eq!(zone_state(0, 3, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 1, 0.55), ZoneState::Normal, "one of three silent");
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal, "2 not Ready is never partial");
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption, "3 of 5 = 0.6");
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal, "3 of 6 = 0.5");
        assert_eq!(zone_state(9, 11, 0.55), ZoneState::PartialDisruption, "11 of 20 = 0.55, at the threshold");
    }

    #[test]
    fn zones_come_from_the_topology_labels() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels}})).unwrap()
        };
        assert_eq!(zone_key(&node(json!({}))), "");
        let n = node(json!({REGION_LABEL: "eu", ZONE_LABEL: "eu-1", BETA_ZONE_LABEL: "old"}));
        assert_eq!(zone_key(&n), "eu:\0:eu-1");
        assert_eq!(zone_name(&zone_key(&n)), "\"eu/eu-1\"");
        assert_eq!(zone_key(&node(json!({BETA_ZONE_LABEL: "b"}))), ":\0:b");
        assert!(counted(&node(json!({}))));
        assert!(!counted(&node(json!({EXCLUDE_DISRUPTION: ""}))));
    }

    #[test]
    fn secondary_rate_only_in_large_partially_disrupted_zones() {
        let s = DisruptionSettings::default();
        assert_eq!(eviction_rate(ZoneState::Normal, 3, &s), 0.1);
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 50, &s), 0.0, "small: stop");
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 51, &s), 0.01, "large: slow down");
        assert_eq!(eviction_rate(ZoneState::FullDisruption, 10, &s), 0.1, "one zone down while others are up");
    }

    #[test]
    fn all_nodes_silent_is_master_disruption_no_taints_then_recovery() {
        let s = DisruptionSettings::default();
        let t0 = Instant::now();
        let mut z = Zones::default();
        assert_eq!(z.observe(&counts(&[("", 3, 0)]), &s, t0), vec![]);
        assert!(!z.master_disruption());
        assert_eq!(z.summary(), "normal (1 zone)");

        // Every node silent at once: master disruption, and nobody's turn ever comes.
        let t1 = t0 + secs(30);
        assert_eq!(z.observe(&counts(&[("", 0, 3)]), &s, t1), vec![Transition::EnteredMasterDisruption]);
        assert!(z.master_disruption());
        assert_eq!(z.state(""), Some(ZoneState::FullDisruption));
        assert_eq!(z.summary(), "full disruption: evictions stopped in zone \"\"");
        for i in 0..100 {
            let now = t1 + secs(i);
            assert_eq!(z.observe(&counts(&[("", 0, 3)]), &s, now), vec![], "no change while it lasts");
            assert!(z.due(&wanting("", &["a", "b", "c"]), now).is_empty());
        }

        // One node Ready again: out of the mode, and the zone back to its normal rate.
        let t2 = t1 + secs(200);
        let changes = z.observe(&counts(&[("", 1, 2)]), &s, t2);
        assert_eq!(changes, vec![Transition::ExitedMasterDisruption]);
        assert!(!z.master_disruption());
        assert_eq!(z.state(""), Some(ZoneState::Normal));
        let first = z.due(&wanting("", &["b", "c"]), t2);
        assert!(first.is_empty(), "the bucket was empty when the mode began: no burst on the way out");
        assert_eq!(z.due(&wanting("", &["b", "c"]), t2 + secs(10)), BTreeSet::from(["b".to_string()]));
    }

    #[test]
    fn one_node_of_three_silent_is_tainted_at_once_and_then_one_per_ten_seconds() {
        let s = DisruptionSettings::default();
        let t0 = Instant::now();
        let mut z = Zones::default();
        z.observe(&counts(&[("", 3, 0)]), &s, t0);
        assert_eq!(z.observe(&counts(&[("", 2, 1)]), &s, t0 + secs(1)), vec![]);
        assert_eq!(z.state(""), Some(ZoneState::Normal));
        assert_eq!(z.due(&wanting("", &["a"]), t0 + secs(1)), BTreeSet::from(["a".to_string()]));
        // Two more in a larger zone that stays Normal: one every 10 s, in the order they came.
        z.observe(&counts(&[("", 7, 3)]), &s, t0 + secs(2));
        let w = wanting("", &["b", "c"]);
        assert!(z.due(&w, t0 + secs(2)).is_empty());
        assert_eq!(z.due(&w, t0 + secs(11)), BTreeSet::from(["b".to_string()]));
        let w = wanting("", &["c"]);
        assert!(z.due(&w, t0 + secs(15)).is_empty());
        assert_eq!(z.due(&w, t0 + secs(21)), BTreeSet::from(["c".to_string()]));
    }

    #[test]
    fn a_node_ready_again_leaves_the_queue() {
        let s = DisruptionSettings::default();
        let t0 = Instant::now();
        let mut z = Zones::default();
        z.observe(&counts(&[("", 8, 2)]), &s, t0);
        assert_eq!(z.due(&wanting("", &["a", "b"]), t0).len(), 1);
        assert!(z.due(&wanting("", &[]), t0 + secs(5)).is_empty(), "b recovered");
        assert_eq!(z.due(&wanting("", &["c"]), t0 + secs(10)), BTreeSet::from(["c".to_string()]));
    }

    #[test]
    fn partial_disruption_stops_small_zones_and_slows_large_ones() {
        let s = DisruptionSettings::default();
        let t0 = Instant::now();
        let mut z = Zones::default();
        z.observe(&counts(&[("small", 10, 0), ("large", 60, 0)]), &s, t0);
        let changes = z.observe(&counts(&[("small", 4, 6), ("large", 20, 40)]), &s, t0 + secs(1));
        assert_eq!(
            changes,
            vec![
                Transition::ZoneChanged { zone: "large".into(), state: ZoneState::PartialDisruption },
                Transition::ZoneChanged { zone: "small".into(), state: ZoneState::PartialDisruption },
            ]
        );
        assert!(!z.master_disruption());
        let mut wanting = BTreeMap::new();
        wanting.insert("small".to_string(), vec!["s1".to_string()]);
        wanting.insert("large".to_string(), vec!["l1".to_string(), "l2".to_string()]);
        // The large zone's bucket was full: one now, the next after 100 s at 0.01/s; the small one never.
        assert_eq!(z.due(&wanting, t0 + secs(1)), BTreeSet::from(["l1".to_string()]));
        wanting.insert("large".to_string(), vec!["l2".to_string()]);
        assert!(z.due(&wanting, t0 + secs(60)).is_empty());
        assert_eq!(z.due(&wanting, t0 + secs(102)), BTreeSet::from(["l2".to_string()]));
        wanting.remove("large");
        assert!(z.due(&wanting, t0 + secs(10_000)).is_empty(), "s1 waits while its zone is disrupted");
        assert!(z.summary().contains("partial disruption in zone \"small\" (evictions at 0/s)"), "{}", z.summary());
    }

    #[test]
    fn one_zone_fully_down_while_another_is_up_evicts_at_the_normal_rate() {
        let s = DisruptionSettings::default();
        let t0 = Instant::now();
        let mut z = Zones::default();
        z.observe(&counts(&[("a", 3, 0), ("b", 3, 0)]), &s, t0);
        let changes = z.observe(&counts(&[("a", 0, 3), ("b", 3, 0)]), &s, t0 + secs(1));
        assert_eq!(changes, vec![Transition::ZoneChanged { zone: "a".into(), state: ZoneState::FullDisruption }]);
        assert!(!z.master_disruption());
        assert_eq!(z.due(&wanting("a", &["a1", "a2"]), t0 + secs(1)).len(), 1);
        // Then b goes down too: every zone is, so the mode starts.
        let changes = z.observe(&counts(&[("a", 0, 3), ("b", 0, 3)]), &s, t0 + secs(2));
        assert_eq!(changes, vec![Transition::EnteredMasterDisruption]);
        assert!(z.due(&wanting("a", &["a2"]), t0 + secs(100)).is_empty());
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_one_token() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.5, t0);
        assert!(b.try_accept(t0));
        assert!(!b.try_accept(t0 + secs(1)));
        assert!(b.try_accept(t0 + secs(2)));
        assert!(b.try_accept(t0 + secs(100)));
        assert!(!b.try_accept(t0 + secs(100)), "a burst of one");
        let mut never = TokenBucket::new(0.0, t0);
        assert!(!never.try_accept(t0 + secs(1_000_000)));
        let mut full = TokenBucket::new(0.1, t0);
        full.swap(1.0, t0);
        assert!(full.try_accept(t0), "a full bucket swaps to a full one");
    }
}
