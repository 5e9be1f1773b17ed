//! The namespace controller's decisions, pure: what a Terminating namespace's status conditions say about
//! the content still in it, and which `spec.finalizers` remain once its content is gone. The loop that
//! deletes the content and applies these is [`crate::namespace`].
//!
//! The conditions and their wording are kube-controller-manager's (`kubectl describe namespace` shows them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The finalizer the namespace controller owns in a namespace's `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// What a pass over a Terminating namespace found, after it asked for everything in it to be deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Content {
    /// Objects still present, by resource as kube-controller-manager names it (`pods.`, `deployments.apps`).
    pub remaining: BTreeMap<String, usize>,
    /// Objects still held, by finalizer.
    pub finalizers: BTreeMap<String, usize>,
    /// Deletions or lists that failed (their messages).
    pub failures: Vec<String>,
    /// Why the API's resources could not all be discovered, when they could not.
    pub discovery_failure: Option<String>,
}

impl Content {
    /// Counts one object still in the namespace.
    pub fn count(&mut self, resource: &str, finalizers: &[String]) {
        *self.remaining.entry(resource.to_string()).or_default() += 1;
        for f in finalizers {
            *self.finalizers.entry(f.clone()).or_default() += 1;
        }
    }

    /// Nothing is left and nothing failed: the namespace can be finalized.
    pub fn is_empty(&self) -> bool {
        self.remaining.is_empty() && self.failures.is_empty() && self.discovery_failure.is_none()
    }
}

/// A resource's name in the conditions' messages: `resource.group` (the core group is empty: `pods.`).
pub fn resource_name(group: &str, plural: &str) -> String {
    format!("{plural}.{group}")
}

/// Whether the namespace is being deleted.
pub fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
}

/// `spec.finalizers` without the namespace controller's own: what the finalize subresource is sent once the
/// namespace is empty. `None` when ours is not there (the namespace was finalized already).
pub fn finalized(ns: &Namespace) -> Option<Vec<String>> {
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return None;
    }
    Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect())
}

/// The deletion conditions for `content`, each keeping its lastTransitionTime from `existing` when its
/// status did not change. Conditions of other types in `existing` are kept.
pub fn conditions(content: &Content, existing: &[NamespaceCondition], now: &Time) -> Vec<NamespaceCondition> {
    let mut wanted = Vec::new();
    wanted.push(match &content.discovery_failure {
        Some(e) => cond("NamespaceDeletionDiscoveryFailure", true, "DiscoveryFailed", format!("Discovery failed: {e}")),
        None => cond(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
    });
    wanted.push(cond(
        "NamespaceDeletionGroupVersionParsingFailure",
        false,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed".into(),
    ));
    wanted.push(if content.failures.is_empty() {
        cond(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        )
    } else {
        cond("NamespaceDeletionContentFailure", true, "ContentDeletionFailed", content.failures.join(", "))
    });
    wanted.push(if content.remaining.is_empty() {
        cond("NamespaceContentRemaining", false, "ContentRemoved", "All content successfully removed".into())
    } else {
        let each: Vec<String> =
            content.remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        cond(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", each.join(", ")),
        )
    });
    wanted.push(if content.finalizers.is_empty() {
        cond(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let each: Vec<String> =
            content.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        cond(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!("Some content in the namespace has finalizers remaining: {}", each.join(", ")),
        )
    });

    let ours = |t: &str| wanted.iter().any(|c| c.type_ == t);
    let mut out: Vec<NamespaceCondition> = existing.iter().filter(|c| !ours(&c.type_)).cloned().collect();
    for mut c in wanted {
        let before = existing.iter().find(|e| e.type_ == c.type_);
        c.last_transition_time = match before {
            Some(b) if b.status == c.status => b.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        out.push(c);
    }
    out
}

/// Whether two condition lists say the same (so the status needs no write).
pub fn same_conditions(a: &[NamespaceCondition], b: &[NamespaceCondition]) -> bool {
    let key = |c: &NamespaceCondition| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone());
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

fn cond(type_: &str, status: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn ns(finalizers: &[&str], deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                deletion_timestamp: deleting.then(|| at("2026-11-24T10:00:00Z")),
                ..Default::default()
            },
            spec: Some(NamespaceSpec { finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()) }),
            status: None,
        }
    }

    fn find<'a>(cs: &'a [NamespaceCondition], t: &str) -> &'a NamespaceCondition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn only_our_finalizer_is_removed_and_only_once() {
        assert_eq!(finalized(&ns(&["kubernetes", "example.com/x"], true)), Some(vec!["example.com/x".to_string()]));
        assert_eq!(finalized(&ns(&["kubernetes"], true)), Some(vec![]));
        assert_eq!(finalized(&ns(&["example.com/x"], true)), None);
        assert_eq!(finalized(&ns(&[], true)), None);
        assert!(terminating(&ns(&[], true)));
        assert!(!terminating(&ns(&[], false)));
    }

    #[test]
    fn remaining_content_and_finalizers_are_named_as_kubernetes_names_them() {
        let mut content = Content::default();
        content.count(&resource_name("", "pods"), &[]);
        content.count(&resource_name("", "pods"), &[]);
        content.count(&resource_name("apps", "deployments"), &["example.com/hold".into()]);
        assert!(!content.is_empty());
        let cs = conditions(&content, &[], &at("2026-11-24T10:00:01Z"));
        let remaining = find(&cs, "NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: deployments.apps has 1 resource instances, pods. has 2 resource instances")
        );
        let held = find(&cs, "NamespaceFinalizersRemaining");
        assert_eq!(
            (held.status.as_str(), held.message.as_deref()),
            (
                "True",
                Some(
                    "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                )
            )
        );
        assert_eq!(find(&cs, "NamespaceDeletionContentFailure").status, "False");
        assert_eq!(cs.len(), 5);
    }

    #[test]
    fn an_empty_namespace_reports_everything_removed() {
        let content = Content::default();
        assert!(content.is_empty());
        let cs = conditions(&content, &[], &at("2026-11-24T10:00:01Z"));
        assert!(cs.iter().all(|c| c.status == "False"), "{cs:?}");
        assert_eq!(find(&cs, "NamespaceContentRemaining").reason.as_deref(), Some("ContentRemoved"));
    }

    #[test]
    fn failures_keep_the_namespace_and_are_reported() {
        let content = Content { failures: vec!["pods: the server is unavailable".into()], ..Default::default() };
        assert!(!content.is_empty());
        let cs = conditions(&content, &[], &at("2026-11-24T10:00:01Z"));
        let failed = find(&cs, "NamespaceDeletionContentFailure");
        assert_eq!((failed.status.as_str(), failed.reason.as_deref()), ("True", Some("ContentDeletionFailed")));
        let discovery = Content { discovery_failure: Some("timeout".into()), ..Default::default() };
        assert!(!discovery.is_empty());
        let cs = conditions(&discovery, &[], &at("2026-11-24T10:00:01Z"));
        assert_eq!(find(&cs, "NamespaceDeletionDiscoveryFailure").status, "True");
    }

    #[test]
    fn transition_times_move_only_when_a_status_changes_and_other_conditions_stay() {
        let mut content = Content::default();
        content.count("pods.", &[]);
        let first = conditions(&content, &[], &at("2026-11-24T10:00:01Z"));
        let mut existing = first.clone();
        existing.push(NamespaceCondition { type_: "Other".into(), status: "True".into(), ..Default::default() });

        // Fewer pods, same status: nothing moves, and the text is the same too.
        let again = conditions(&content, &existing, &at("2026-11-24T10:00:05Z"));
        assert!(same_conditions(&again, &existing));
        assert_eq!(find(&again, "NamespaceContentRemaining").last_transition_time, Some(at("2026-11-24T10:00:01Z")));
        assert_eq!(find(&again, "Other").status, "True");

        // All gone: that condition flips and gets the new time; the others keep theirs.
        let done = conditions(&Content::default(), &existing, &at("2026-11-24T10:00:09Z"));
        assert!(!same_conditions(&done, &existing));
        assert_eq!(find(&done, "NamespaceContentRemaining").last_transition_time, Some(at("2026-11-24T10:00:09Z")));
        assert_eq!(
            find(&done, "NamespaceDeletionContentFailure").last_transition_time,
            Some(at("2026-11-24T10:00:01Z"))
        );
    }
}
