//! The garbage collector's ownership graph and its decisions, pure. Objects are known by uid with their
//! owner references, deletion mark and finalizers; [`Graph::decide`] says what the collector does about one
//! object, as Kubernetes' garbage collector does:
//! - a dependent whose owners are all gone is deleted (in the foreground if an owner is being deleted in the
//!   foreground); one with some owners left loses its references to the gone ones;
//! - an owner deleted with `propagationPolicy=Orphan` (finalizer `orphan`) has its reference removed from
//!   every dependent, then the finalizer;
//! - an owner deleted with `propagationPolicy=Foreground` (finalizer `foregroundDeletion`) has its dependents
//!   deleted, and keeps the finalizer until no dependent that blocks its deletion is left.
//!
//! "Gone" here means absent from the graph; the loop confirms it with a live read before deleting.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// One object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Which resource it is (an index into the loop's table of watched resources).
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Item {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    /// Delete this object: none of its owners is left. `confirm_gone` are the owners to confirm absent first.
    Delete {
        foreground: bool,
        confirm_gone: Vec<OwnerReference>,
    },
    /// Drop its references to these owners (by uid); others remain.
    DropOwners {
        owners: Vec<String>,
        confirm_gone: Vec<OwnerReference>,
    },
    /// An owner being orphaned: drop its reference from these dependents; when there are none, its finalizer.
    Orphan {
        dependents: Vec<String>,
    },
    /// An owner deleted in the foreground: delete these dependents (each in the foreground when it blocks);
    /// `done` when none that blocks is left, so its finalizer can go.
    Foreground {
        delete: Vec<(String, bool)>,
        done: bool,
    },
}

#[derive(Debug, Default)]
pub struct Graph {
    items: HashMap<String, Item>,
    /// Owner uid → uids of the objects that reference it (whether or not the owner is known).
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Item> {
        self.items.get(uid)
    }

    pub fn uids(&self) -> impl Iterator<Item = &String> {
        self.items.keys()
    }

    /// Adds or updates an object; returns the uids whose decisions may have changed.
    pub fn upsert(&mut self, item: Item) -> Vec<String> {
        let uid = item.uid.clone();
        let mut dirty = vec![uid.clone()];
        if let Some(old) = self.items.remove(&uid) {
            for o in &old.owners {
                self.unlink(&o.uid, &uid);
                // An owner that lost this dependent may be done orphaning or waiting.
                dirty.push(o.uid.clone());
            }
        }
        for o in &item.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
            dirty.push(o.uid.clone());
        }
        if item.deleting {
            dirty.extend(self.dependents_of(&uid));
        }
        self.items.insert(uid, item);
        dirty
    }

    /// Forgets an object; returns the uids whose decisions may have changed.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut dirty = self.dependents_of(uid);
        if let Some(old) = self.items.remove(uid) {
            for o in &old.owners {
                self.unlink(&o.uid, uid);
                dirty.push(o.uid.clone());
            }
        }
        dirty
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn decide(&self, uid: &str) -> Decision {
        let Some(item) = self.items.get(uid) else { return Decision::Nothing };
        let dependents: Vec<&Item> = self.dependents_of(uid).iter().filter_map(|d| self.items.get(d)).collect();
        if item.deleting && item.has_finalizer(ORPHAN) {
            return Decision::Orphan { dependents: dependents.iter().map(|d| d.uid.clone()).collect() };
        }
        if item.deleting && item.has_finalizer(FOREGROUND) {
            let blocks = |d: &Item| d.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            let delete = dependents.iter().filter(|d| !d.deleting).map(|d| (d.uid.clone(), blocks(d))).collect();
            let done = !dependents.iter().any(|d| blocks(d));
            return Decision::Foreground { delete, done };
        }
        if item.deleting || item.owners.is_empty() {
            return Decision::Nothing;
        }
        let mut gone = Vec::new();
        let mut waiting = Vec::new();
        let mut solid = 0;
        for o in &item.owners {
            match self.items.get(&o.uid) {
                None => gone.push(o.clone()),
                Some(owner) if owner.deleting && owner.has_finalizer(FOREGROUND) => waiting.push(o.clone()),
                Some(_) => solid += 1,
            }
        }
        if solid == 0 {
            return Decision::Delete { foreground: !waiting.is_empty(), confirm_gone: gone };
        }
        if gone.is_empty() && waiting.is_empty() {
            return Decision::Nothing;
        }
        let owners = gone.iter().chain(&waiting).map(|o| o.uid.clone()).collect();
        Decision::DropOwners { owners, confirm_gone: gone }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("n-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn item(uid: &str, owners: &[(&str, bool)]) -> Item {
        Item {
            resource: 0,
            namespace: Some("default".into()),
            name: format!("n-{uid}"),
            uid: uid.into(),
            owners: owners.iter().map(|(o, b)| owner_ref(o, *b)).collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    fn deleting(mut i: Item, finalizer: Option<&str>) -> Item {
        i.deleting = true;
        i.finalizers = finalizer.into_iter().map(String::from).collect();
        i
    }

    #[test]
    fn a_dependent_of_a_gone_owner_is_deleted_in_the_background() {
        let mut g = Graph::default();
        g.upsert(item("rs", &[]));
        g.upsert(item("pod", &[("rs", true)]));
        assert_eq!(g.decide("pod"), Decision::Nothing);
        let dirty = g.remove("rs");
        assert!(dirty.contains(&"pod".to_string()));
        assert_eq!(g.decide("pod"), Decision::Delete { foreground: false, confirm_gone: vec![owner_ref("rs", true)] });
    }

    #[test]
    fn a_dependent_with_an_owner_left_only_loses_the_gone_reference() {
        let mut g = Graph::default();
        g.upsert(item("a", &[]));
        g.upsert(item("cm", &[("a", false), ("b", false)]));
        assert_eq!(
            g.decide("cm"),
            Decision::DropOwners { owners: vec!["b".into()], confirm_gone: vec![owner_ref("b", false)] }
        );
    }

    #[test]
    fn orphaning_drops_references_then_the_finalizer() {
        let mut g = Graph::default();
        g.upsert(item("pod", &[("rs", true)]));
        g.upsert(deleting(item("rs", &[]), Some(ORPHAN)));
        assert_eq!(g.decide("rs"), Decision::Orphan { dependents: vec!["pod".into()] });
        // The pod is not deleted while its owner orphans it.
        assert_eq!(g.decide("pod"), Decision::Nothing);
        let dirty = g.upsert(item("pod", &[]));
        assert!(dirty.contains(&"rs".to_string()), "the owner looks again once its dependent lets go");
        assert_eq!(g.decide("rs"), Decision::Orphan { dependents: vec![] });
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_for_the_blocking_ones() {
        let mut g = Graph::default();
        g.upsert(item("p1", &[("rs", true)]));
        g.upsert(item("p2", &[("rs", false)]));
        let dirty = g.upsert(deleting(item("rs", &[]), Some(FOREGROUND)));
        assert!(dirty.contains(&"p1".to_string()) && dirty.contains(&"p2".to_string()));
        assert_eq!(
            g.decide("rs"),
            Decision::Foreground { delete: vec![("p1".into(), true), ("p2".into(), false)], done: false }
        );
        // A dependent of an owner deleted in the foreground goes in the foreground too.
        assert_eq!(g.decide("p1"), Decision::Delete { foreground: true, confirm_gone: vec![] });
        g.upsert(deleting(item("p1", &[("rs", true)]), None));
        assert_eq!(g.decide("rs"), Decision::Foreground { delete: vec![("p2".into(), false)], done: false });
        g.remove("p1");
        assert_eq!(g.decide("rs"), Decision::Foreground { delete: vec![("p2".into(), false)], done: true });
    }

    #[test]
    fn objects_without_owners_or_being_deleted_plainly_are_left_alone() {
        let mut g = Graph::default();
        g.upsert(item("x", &[]));
        g.upsert(deleting(item("y", &[("gone", true)]), None));
        assert_eq!(g.decide("x"), Decision::Nothing);
        assert_eq!(g.decide("y"), Decision::Nothing);
        assert_eq!(g.decide("unknown"), Decision::Nothing);
    }
}
