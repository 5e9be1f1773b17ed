//! Which master a new connection goes to, and when a master counts as gone: pure state, no IO, no clock.
//!
//! Every master is probed on its own (`/readyz`); a probe either gets an HTTP answer (ready or not) or none
//! (refused, reset, timed out). A master that does not answer [`DOWN_AFTER`] probes in a row — or refuses
//! a connection outright, which is what a killed process on a live host does — is **down**: the proxy closes
//! the connections it carries, so that their clients (watches above all) reconnect through another master at
//! once instead of waiting on a dead socket. New connections stick to one master while it is ready (so a
//! client's requests and watches see one master's view), and move only when it stops being ready.

use std::collections::HashMap;

/// Probes without an answer, in a row, after which a master is down.
pub const DOWN_AFTER: u32 = 2;

/// What a master looked like at its last probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet.
    Unknown,
    /// `/readyz` answered 200.
    Ready,
    /// It answers, but not ready (its store cannot reach a Raft leader, say).
    Unready,
    /// No answer.
    Down,
}

/// One probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP answer; `true` when it was 200.
    Answered(bool),
    /// Connection refused: nothing listens there.
    Refused,
    /// No answer in time, or the connection broke.
    Silent,
}

/// A change the proxy acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The master went down: close the connections it carries.
    Down(String),
    /// The master answers again.
    Up(String),
}

#[derive(Debug, Clone)]
struct Member {
    health: Health,
    silent: u32,
}

/// The masters (as `host:port`, in the order they were given) and their health.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    order: Vec<String>,
    members: HashMap<String, Member>,
    current: Option<String>,
}

impl Pool {
    pub fn new(servers: &[String]) -> Pool {
        let mut pool = Pool::default();
        pool.set_servers(servers);
        pool
    }

    /// Replaces the list of masters; those still listed keep their health. Returns the masters no longer
    /// listed (the proxy closes their connections: a master that left the cluster must not keep clients).
    /// An empty list changes nothing (never strand the clients with no master at all).
    pub fn set_servers(&mut self, servers: &[String]) -> Vec<String> {
        let mut wanted: Vec<String> = Vec::new();
        for s in servers {
            if !s.is_empty() && !wanted.contains(s) {
                wanted.push(s.clone());
            }
        }
        if wanted.is_empty() {
            return Vec::new();
        }
        let removed: Vec<String> = self.order.iter().filter(|s| !wanted.contains(s)).cloned().collect();
        for s in &removed {
            self.members.remove(s);
        }
        for s in &wanted {
            self.members.entry(s.clone()).or_insert(Member { health: Health::Unknown, silent: 0 });
        }
        if self.current.as_ref().is_some_and(|c| removed.contains(c)) {
            self.current = None;
        }
        self.order = wanted;
        removed
    }

    pub fn servers(&self) -> &[String] {
        &self.order
    }

    pub fn health(&self, server: &str) -> Option<Health> {
        self.members.get(server).map(|m| m.health)
    }

    /// The master new connections prefer, if one has been used.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Where to dial a new connection, best first: the current master while it is ready, then ready ones,
    /// not yet probed ones, unready ones, and down ones last (a probe may be wrong; trying costs little
    /// when nothing else is left). Within a rank, the masters after the current one come first, so that
    /// clients leaving a master do not all pile onto the first of the list.
    pub fn candidates(&self) -> Vec<String> {
        let start = self.current.as_ref().and_then(|c| self.order.iter().position(|s| s == c)).unwrap_or(0);
        let n = self.order.len();
        let rotated = (0..n).map(|i| &self.order[(start + i) % n]);
        let rank = |s: &String| match self.members[s].health {
            Health::Ready => 0,
            Health::Unknown => 1,
            Health::Unready => 2,
            Health::Down => 3,
        };
        let mut list: Vec<(usize, usize, String)> = rotated.enumerate().map(|(i, s)| (rank(s), i, s.clone())).collect();
        // The current master goes first only when it is ready; otherwise it is ranked like the others but
        // after them within its rank.
        if let Some(c) = &self.current {
            if let Some(entry) = list.iter_mut().find(|(_, _, s)| s == c) {
                if entry.0 != 0 {
                    entry.1 = n;
                }
            }
        }
        list.sort();
        list.into_iter().map(|(_, _, s)| s).collect()
    }

    /// A connection to `server` was made: it becomes the current master.
    pub fn connected(&mut self, server: &str) {
        if self.members.contains_key(server) {
            self.current = Some(server.to_string());
        }
    }

    /// A dial to `server` failed as a probe would have.
    pub fn dial_failed(&mut self, server: &str, how: Probe) -> Option<Transition> {
        self.observe(server, how)
    }

    /// Records a probe of `server`; returns the transition it caused, if any.
    pub fn observe(&mut self, server: &str, probe: Probe) -> Option<Transition> {
        let member = self.members.get_mut(server)?;
        let before = member.health;
        match probe {
            Probe::Answered(ready) => {
                member.silent = 0;
                member.health = if ready { Health::Ready } else { Health::Unready };
            }
            Probe::Refused => {
                member.silent = DOWN_AFTER;
                member.health = Health::Down;
            }
            Probe::Silent => {
                member.silent = member.silent.saturating_add(1);
                if member.silent >= DOWN_AFTER {
                    member.health = Health::Down;
                }
            }
        }
        match (before == Health::Down, member.health == Health::Down) {
            (false, true) => Some(Transition::Down(server.to_string())),
            (true, false) => Some(Transition::Up(server.to_string())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new(&(1..=n).map(|i| format!("m{i}:6443")).collect::<Vec<_>>())
    }

    #[test]
    fn a_new_pool_tries_the_masters_in_order() {
        let p = pool(3);
        assert_eq!(p.candidates(), ["m1:6443", "m2:6443", "m3:6443"]);
        assert_eq!(p.health("m2:6443"), Some(Health::Unknown));
    }

    #[test]
    fn connections_stick_to_the_current_master_while_it_is_ready() {
        let mut p = pool(3);
        for s in ["m1:6443", "m2:6443", "m3:6443"] {
            p.observe(s, Probe::Answered(true));
        }
        p.connected("m2:6443");
        assert_eq!(p.candidates()[0], "m2:6443");
        assert_eq!(p.candidates(), ["m2:6443", "m3:6443", "m1:6443"]);
        p.observe("m2:6443", Probe::Answered(false));
        assert_eq!(p.candidates(), ["m3:6443", "m1:6443", "m2:6443"], "an unready current master goes last");
        p.connected("m3:6443");
        p.observe("m2:6443", Probe::Answered(true));
        assert_eq!(p.candidates()[0], "m3:6443", "no move back when the old one recovers");
    }

    #[test]
    fn a_refused_connection_is_down_at_once_and_silence_after_two_probes() {
        let mut p = pool(3);
        assert_eq!(p.observe("m1:6443", Probe::Refused), Some(Transition::Down("m1:6443".into())));
        assert_eq!(p.observe("m2:6443", Probe::Silent), None);
        assert_eq!(p.health("m2:6443"), Some(Health::Unknown), "one silent probe is not enough");
        assert_eq!(p.observe("m2:6443", Probe::Silent), Some(Transition::Down("m2:6443".into())));
        assert_eq!(p.observe("m2:6443", Probe::Silent), None, "down once");
        assert_eq!(p.candidates(), ["m3:6443", "m1:6443", "m2:6443"]);
        assert_eq!(p.observe("m2:6443", Probe::Answered(false)), Some(Transition::Up("m2:6443".into())));
        assert_eq!(p.health("m2:6443"), Some(Health::Unready));
        p.observe("m1:6443", Probe::Answered(true));
        assert_eq!(p.candidates(), ["m1:6443", "m3:6443", "m2:6443"], "ready before unknown before unready");
    }

    #[test]
    fn an_answer_resets_the_silent_count() {
        let mut p = pool(1);
        p.observe("m1:6443", Probe::Silent);
        p.observe("m1:6443", Probe::Answered(true));
        assert_eq!(p.observe("m1:6443", Probe::Silent), None);
        assert_eq!(p.health("m1:6443"), Some(Health::Ready), "health stays until the master counts as down");
    }

    #[test]
    fn new_lists_keep_known_health_and_report_removed_masters() {
        let mut p = pool(2);
        p.observe("m1:6443", Probe::Answered(true));
        p.connected("m1:6443");
        let removed = p.set_servers(&["m2:6443".into(), "m3:6443".into(), "m2:6443".into()]);
        assert_eq!(removed, ["m1:6443"]);
        assert_eq!(p.servers(), ["m2:6443", "m3:6443"]);
        assert_eq!(p.current(), None, "the removed master is no longer current");
        p.observe("m3:6443", Probe::Answered(true));
        assert_eq!(p.set_servers(&["m3:6443".into(), "m2:6443".into()]), Vec::<String>::new());
        assert_eq!(p.health("m3:6443"), Some(Health::Ready));
        assert_eq!(p.set_servers(&[]), Vec::<String>::new(), "an empty list is ignored");
        assert_eq!(p.servers(), ["m3:6443", "m2:6443"]);
        assert_eq!(p.observe("unknown:1", Probe::Refused), None);
    }

    #[test]
    fn down_masters_are_still_tried_last() {
        let mut p = pool(2);
        p.observe("m1:6443", Probe::Refused);
        p.observe("m2:6443", Probe::Refused);
        assert_eq!(p.candidates().len(), 2);
    }
}
