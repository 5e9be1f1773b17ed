//! ControllerRevisions as the DaemonSet and StatefulSet controllers keep them, pure: one revision per pod
//! template the owner has had, named `<owner>-<hash>`, holding `{"spec":{"template":{…,"$patch":"replace"}}}`
//! (the strategic merge patch `kubectl rollout undo` applies to go back to it), numbered 1, 2, … in the order
//! the templates became current; a template that becomes current again (a rollback) takes the next number.
//! Old revisions beyond `revisionHistoryLimit` go, except those a pod still runs.
//!
//! Kubernetes hashes the revision's data bytes; keel hashes the template the same way the Deployment
//! controller does ([`crate::rollout::pod_template_hash`]), so equal templates get equal hashes and a
//! collision count changes the hash.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{json, Value};

use crate::pods;
use crate::rollout::{equal_ignore_hash, pod_template_hash};

/// The label on revisions (and on pods) that names the template they carry.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// Old revisions kept when `revisionHistoryLimit` is not set.
pub const DEFAULT_HISTORY_LIMIT: i32 = 10;
/// Kubernetes truncates the owner's name to this many characters in a revision's name.
const MAX_PREFIX: usize = 223;

/// The revision that records the owner's current template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    /// Its name, `<owner>-<hash>`.
    pub name: String,
    /// Its `controller-revision-hash`.
    pub hash: String,
    /// Its number (after `renumber`, or of `create`).
    pub number: i64,
    /// The revision to create, when none records the template yet.
    pub create: Option<ControllerRevision>,
    /// Set when an existing revision becomes current again (a rollback): its new number.
    pub renumber: Option<i64>,
    /// A revision of that name records another template (or belongs to another owner): count a collision
    /// in the owner's `status.collisionCount` and hash again; nothing else should happen in this pass.
    pub collided: bool,
}

/// The data a revision of `template` holds.
pub fn data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(fields) = t.as_object_mut() {
        fields.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision records (`None` when its data holds none).
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// `<owner>-<hash>`, the owner's name cut to 223 characters.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(MAX_PREFIX).collect();
    format!("{prefix}-{hash}")
}

/// The revisions `revisions` holds whose controller is the object with uid `owner_uid`.
pub fn owned<'a>(owner_uid: &str, revisions: &'a [ControllerRevision]) -> Vec<&'a ControllerRevision> {
    revisions.iter().filter(|r| pods::controller_of(&r.metadata).is_some_and(|c| c.uid == owner_uid)).collect()
}

/// The revision for `template`: an owned one that records it (the highest numbered, if several do), renumbered
/// when a later one exists; otherwise a new one numbered after the highest. `all` are every revision listed
/// (to see a name taken by another owner), `collision_count` the owner's `status.collisionCount`.
pub fn current(
    owner_api_version: &str,
    owner_kind: &str,
    owner: &ObjectMeta,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    all: &[ControllerRevision],
) -> Current {
    let uid = owner.uid.as_deref().unwrap_or_default();
    let mine = owned(uid, all);
    let highest = mine.iter().map(|r| r.revision).max().unwrap_or(0);
    let recording = mine
        .iter()
        .filter(|r| template_of(r).is_some_and(|t| equal_ignore_hash(&t, template)))
        .max_by_key(|r| r.revision);
    if let Some(found) = recording {
        let name = found.metadata.name.clone().unwrap_or_default();
        let hash = found
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH))
            .cloned()
            .unwrap_or_else(|| name.rsplit('-').next().unwrap_or_default().to_string());
        let renumber = (found.revision < highest).then_some(highest + 1);
        return Current {
            name,
            hash,
            number: renumber.unwrap_or(found.revision),
            create: None,
            renumber,
            collided: false,
        };
    }
    let owner_name = owner.name.as_deref().unwrap_or_default();
    // No count and a count of 0 hash alike (the status may or may not hold the 0).
    let hash = pod_template_hash(template, collision_count.filter(|c| *c != 0));
    let name = revision_name(owner_name, &hash);
    if all.iter().any(|r| r.metadata.name.as_deref() == Some(name.as_str())) {
        return Current { name, hash, collided: true, ..Current::default() };
    }
    let mut labels: BTreeMap<String, String> =
        template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: owner.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![pods::controller_reference(owner_api_version, owner_kind, owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data(template))),
        revision: highest + 1,
    };
    Current { name, hash, number: highest + 1, create: Some(revision), renumber: None, collided: false }
}

/// The owned revisions to delete: the oldest beyond `limit` (default 10) other than `current` and those
/// `live` says a pod still uses, lowest number first.
pub fn trim(
    owned: &[&ControllerRevision],
    keep: &[&str],
    limit: Option<i32>,
    live: impl Fn(&ControllerRevision) -> bool,
) -> Vec<String> {
    let mut old: Vec<&ControllerRevision> =
        owned.iter().copied().filter(|r| !keep.contains(&r.metadata.name.as_deref().unwrap_or_default())).collect();
    let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT).max(0) as usize;
    let mut excess = old.len().saturating_sub(limit);
    old.sort_by_key(|r| r.revision);
    let mut delete = Vec::new();
    for r in old {
        if excess == 0 {
            break;
        }
        if live(r) {
            continue;
        }
        delete.push(r.metadata.name.clone().unwrap_or_default());
        excess -= 1;
    }
    delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    fn owner() -> ObjectMeta {
        ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("ns".into()),
            uid: Some("owner-uid".into()),
            ..Default::default()
        }
    }

    fn stored(image: &str, number: i64, uid: &str) -> ControllerRevision {
        let c = current("apps/v1", "DaemonSet", &owner(), &template(image), None, &[]);
        let mut r = c.create.unwrap();
        r.revision = number;
        r.metadata.owner_references.as_mut().unwrap()[0].uid = uid.into();
        r
    }

    #[test]
    fn a_new_template_gets_a_revision_numbered_after_the_highest() {
        let c = current("apps/v1", "DaemonSet", &owner(), &template("a:1"), None, &[]);
        let r = c.create.clone().unwrap();
        assert_eq!((c.number, r.revision), (1, 1));
        assert_eq!(c.name, format!("agent-{}", c.hash));
        assert_eq!(r.metadata.name.as_deref(), Some(c.name.as_str()));
        let labels = r.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "agent");
        assert_eq!(labels[REVISION_HASH], c.hash);
        let owner_ref = &r.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner_ref.kind.as_str(), owner_ref.uid.as_str(), owner_ref.controller),
            ("DaemonSet", "owner-uid", Some(true))
        );
        let data = &r.data.as_ref().unwrap().0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(data["spec"]["template"]["spec"]["containers"][0]["image"], "a:1");
        assert_eq!(template_of(&r), Some(template("a:1")));

        let existing = [stored("a:1", 1, "owner-uid"), stored("a:2", 4, "owner-uid")];
        let c = current("apps/v1", "DaemonSet", &owner(), &template("a:3"), None, &existing);
        assert_eq!(c.create.unwrap().revision, 5);
    }

    #[test]
    fn an_existing_revision_is_reused_and_renumbered_on_rollback() {
        let existing = [stored("a:1", 1, "owner-uid"), stored("a:2", 2, "owner-uid")];
        let c = current("apps/v1", "DaemonSet", &owner(), &template("a:2"), None, &existing);
        assert_eq!((c.create.is_none(), c.renumber, c.number), (true, None, 2));
        let c = current("apps/v1", "DaemonSet", &owner(), &template("a:1"), None, &existing);
        assert_eq!((c.create.is_none(), c.renumber, c.number), (true, Some(3), 3));
        assert_eq!(c.name, existing[0].metadata.name.clone().unwrap());
    }

    #[test]
    fn a_name_taken_by_another_template_or_owner_is_a_collision() {
        let foreign = [stored("a:1", 1, "someone-else")];
        let c = current("apps/v1", "DaemonSet", &owner(), &template("a:1"), None, &foreign);
        assert!(c.collided && c.create.is_none());
        let c2 = current("apps/v1", "DaemonSet", &owner(), &template("a:1"), Some(1), &foreign);
        assert!(!c2.collided);
        assert_ne!(c2.hash, c.hash);
    }

    #[test]
    fn trimming_keeps_the_limit_the_current_and_live_revisions() {
        let revs: Vec<ControllerRevision> = (1..=5).map(|i| stored(&format!("a:{i}"), i, "owner-uid")).collect();
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let name = |i: usize| revs[i].metadata.name.clone().unwrap();
        let current = name(4);
        assert_eq!(trim(&refs, &[&current], Some(2), |_| false), [name(0), name(1)]);
        let live = name(0);
        assert_eq!(trim(&refs, &[&current], Some(2), |r| r.metadata.name.as_ref() == Some(&live)), [name(1), name(2)]);
        assert!(trim(&refs, &[&current], None, |_| false).is_empty());
        assert_eq!(trim(&refs, &[&current], Some(0), |_| false).len(), 4);
    }
}
