use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn at(seconds: i64) -> String {
    let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    (t + jiff::SignedDuration::from_secs(seconds)).to_string()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn sts(replicas: i32, extra: Value) -> StatefulSet {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "sts-uid", "generation": 2},
        "spec": {
            "replicas": replicas,
            "serviceName": "web-svc",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "web:1"}]}
            },
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn parallel(replicas: i32) -> StatefulSet {
    sts(replicas, json!({"spec": {"podManagementPolicy": "Parallel"}}))
}

fn with_image(set: &StatefulSet, image: &str) -> StatefulSet {
    let mut s = set.clone();
    s.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    s
}

/// The update revision's name and the revision as stored.
fn revision(set: &StatefulSet) -> (String, ControllerRevision) {
    let p = plan(set, &[], &[], now());
    (p.revision.name, p.revision.create.unwrap())
}

/// Member `ordinal` at `revision`, Running and Ready since it was created.
fn member(ordinal: i32, revision: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("web-{ordinal}"), "namespace": "ns", "creationTimestamp": at(0),
            "labels": {"app": "web", "controller-revision-hash": revision,
                       POD_NAME: format!("web-{ordinal}"), POD_INDEX: ordinal.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "sts-uid", "controller": true}]
        },
        "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at(0)}]}
    }))
    .unwrap()
}

fn unready(mut p: Pod) -> Pod {
    p.status.as_mut().unwrap().conditions = None;
    p
}

fn pending(mut p: Pod) -> Pod {
    p.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Pending".into()), ..Default::default() });
    p
}

fn failed(mut p: Pod) -> Pod {
    p.status.as_mut().unwrap().phase = Some("Failed".into());
    p
}

fn terminating(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(now()));
    p
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
}

fn members(ordinals: std::ops::Range<i32>, revision: &str) -> Vec<Pod> {
    ordinals.map(|o| member(o, revision)).collect()
}

#[test]
fn ordered_ready_creates_one_ordinal_at_a_time() {
    let s = sts(3, json!({}));
    let (rev, _) = revision(&s);
    assert_eq!(names(&plan(&s, &[], &[], now()).create), ["web-0"]);
    assert_eq!(names(&plan(&s, &[member(0, &rev)], &[], now()).create), ["web-1"]);
    // web-1 exists but is not Ready yet: wait.
    assert!(plan(&s, &[member(0, &rev), unready(member(1, &rev))], &[], now()).create.is_empty());
    assert!(plan(&s, &[member(0, &rev), pending(member(1, &rev))], &[], now()).create.is_empty());
    // A lower ordinal that is gone comes back first.
    assert_eq!(names(&plan(&s, &[member(1, &rev)], &[], now()).create), ["web-0"]);
}

#[test]
fn parallel_creates_every_missing_ordinal_at_once() {
    let s = parallel(3);
    let (rev, _) = revision(&s);
    assert_eq!(names(&plan(&s, &[], &[], now()).create), ["web-0", "web-1", "web-2"]);
    assert_eq!(names(&plan(&s, &[unready(member(1, &rev))], &[], now()).create), ["web-0", "web-2"]);
}

#[test]
fn min_ready_seconds_holds_the_next_ordinal() {
    let s = sts(2, json!({"spec": {"minReadySeconds": 900}}));
    let (rev, _) = revision(&s);
    let p = plan(&s, &[member(0, &rev)], &[], now());
    assert!(p.create.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(300)));
}

#[test]
fn ordinals_start_where_the_spec_says() {
    let s = sts(2, json!({"spec": {"ordinals": {"start": 5}, "podManagementPolicy": "Parallel"}}));
    let (rev, _) = revision(&s);
    let p = plan(&s, &[member(0, &rev)], &[], now());
    assert_eq!(names(&p.create), ["web-5", "web-6"]);
    assert_eq!(p.delete, ["web-0"]);
    assert_eq!(p.create[1].metadata.labels.as_ref().unwrap()[POD_INDEX], "6");
}

#[test]
fn members_carry_a_stable_identity_and_their_claims() {
    let s = sts(
        1,
        json!({"spec": {
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}},
                                     {"metadata": {"name": "logs"}}],
            "template": {"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "config", "configMap": {"name": "cfg"}}]}}
        }}),
    );
    let p = plan(&s, &[], &[], now());
    let pod = &p.create[0];
    assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
    assert_eq!(pod.metadata.generate_name, None);
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels[POD_NAME], "web-0");
    assert_eq!(labels[POD_INDEX], "0");
    assert_eq!(labels[REVISION_HASH], p.revision.name);
    assert!(p.revision.name.starts_with("web-"));
    assert_eq!(labels["app"], "web");
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("StatefulSet", "sts-uid"));
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec["hostname"], "web-0");
    assert_eq!(spec["subdomain"], "web-svc");
    assert_eq!(
        spec["volumes"],
        json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
            {"name": "logs", "persistentVolumeClaim": {"claimName": "logs-web-0"}},
            {"name": "config", "configMap": {"name": "cfg"}}
        ])
    );
    let headless = sts(1, json!({"spec": {"serviceName": null}}));
    assert_eq!(plan(&headless, &[], &[], now()).create[0].spec.as_ref().unwrap().subdomain, None);
}

#[test]
fn scale_down_goes_from_the_highest_ordinal_one_at_a_time_when_all_are_healthy() {
    let s = sts(2, json!({}));
    let (rev, _) = revision(&s);
    let four = members(0..4, &rev);
    assert_eq!(plan(&s, &four, &[], now()).delete, ["web-3"]);
    // Waits while web-3 terminates.
    let leaving = [member(0, &rev), member(1, &rev), member(2, &rev), terminating(member(3, &rev))];
    assert!(plan(&s, &leaving, &[], now()).delete.is_empty());
    // An unhealthy member in range blocks the scale down.
    let sick = [member(0, &rev), unready(member(1, &rev)), member(2, &rev), member(3, &rev)];
    assert!(plan(&s, &sick, &[], now()).delete.is_empty());
    // The first unhealthy pod may go itself, but not behind another.
    let sick_top = [member(0, &rev), member(1, &rev), member(2, &rev), unready(member(3, &rev))];
    assert_eq!(plan(&s, &sick_top, &[], now()).delete, ["web-3"]);
    let two_sick = [member(0, &rev), member(1, &rev), unready(member(2, &rev)), unready(member(3, &rev))];
    assert!(plan(&s, &two_sick, &[], now()).delete.is_empty());
    // Parallel: every one beyond the range at once.
    assert_eq!(plan(&parallel(2), &four, &[], now()).delete, ["web-3", "web-2"]);
}

#[test]
fn failed_members_are_deleted_then_recreated() {
    let s = sts(3, json!({}));
    let (rev, _) = revision(&s);
    let pods = [member(0, &rev), failed(member(1, &rev)), member(2, &rev)];
    let p = plan(&s, &pods, &[], now());
    assert_eq!((p.delete.as_slice(), p.create.len()), (["web-1".to_string()].as_slice(), 0));
    let p = plan(&s, &[member(0, &rev), member(2, &rev)], &[], now());
    assert_eq!(names(&p.create), ["web-1"]);
    // Once deleted it is waited for, not deleted again.
    let pods = [member(0, &rev), terminating(failed(member(1, &rev))), member(2, &rev)];
    assert!(plan(&s, &pods, &[], now()).delete.is_empty());
}

#[test]
fn rolling_update_goes_from_the_highest_ordinal_down_one_at_a_time() {
    let old_set = sts(3, json!({}));
    let (old, old_rev) = revision(&old_set);
    let mut s = with_image(&old_set, "web:2");
    s.status = Some(StatefulSetStatus { current_revision: Some(old.clone()), ..Default::default() });
    let (new, _) = revision(&s);
    let revisions = [old_rev.clone()];
    assert_eq!(plan(&s, &members(0..3, &old), &revisions, now()).delete, ["web-2"]);
    // web-2 is gone: it comes back at the new revision.
    let p = plan(&s, &[member(0, &old), member(1, &old)], &revisions, now());
    assert_eq!(names(&p.create), ["web-2"]);
    assert_eq!(p.create[0].metadata.labels.as_ref().unwrap()[REVISION_HASH], new);
    assert_eq!(p.create[0].spec.as_ref().unwrap().containers[0].image.as_deref(), Some("web:2"));
    // Not ready yet: wait.
    let waiting = [member(0, &old), member(1, &old), unready(member(2, &new))];
    assert!(plan(&s, &waiting, &revisions, now()).delete.is_empty());
    // Ready: next.
    let next = [member(0, &old), member(1, &old), member(2, &new)];
    assert_eq!(plan(&s, &next, &revisions, now()).delete, ["web-1"]);
}

#[test]
fn a_partition_holds_the_lower_ordinals_at_the_current_revision() {
    let old_set = sts(3, json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}}}));
    let (old, old_rev) = revision(&old_set);
    let mut s = with_image(&old_set, "web:2");
    s.status = Some(StatefulSetStatus { current_revision: Some(old.clone()), ..Default::default() });
    let (new, _) = revision(&s);
    let revisions = [old_rev];
    let done = [member(0, &old), member(1, &old), member(2, &new)];
    let p = plan(&s, &done, &revisions, now());
    assert!(p.delete.is_empty());
    let status = p.status.unwrap();
    assert_eq!((status.current_replicas, status.updated_replicas), (Some(2), Some(1)));
    assert_eq!(status.current_revision.as_deref(), Some(old.as_str()));
    assert_eq!(status.update_revision.as_deref(), Some(new.as_str()));
    // A member below the partition that is lost comes back at the current revision, with its template.
    let p = plan(&s, &[member(0, &old), member(2, &new)], &revisions, now());
    assert_eq!(names(&p.create), ["web-1"]);
    assert_eq!(p.create[0].metadata.labels.as_ref().unwrap()[REVISION_HASH], old);
    assert_eq!(p.create[0].spec.as_ref().unwrap().containers[0].image.as_deref(), Some("web:1"));
}

#[test]
fn on_delete_replaces_nothing_but_recreates_at_the_update_revision() {
    let old_set = sts(2, json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}));
    let (old, old_rev) = revision(&old_set);
    let mut s = with_image(&old_set, "web:2");
    s.status = Some(StatefulSetStatus { current_revision: Some(old.clone()), ..Default::default() });
    let (new, _) = revision(&s);
    let revisions = [old_rev];
    assert!(plan(&s, &members(0..2, &old), &revisions, now()).delete.is_empty());
    let p = plan(&s, &[member(1, &old)], &revisions, now());
    assert_eq!(p.create[0].metadata.labels.as_ref().unwrap()[REVISION_HASH], new);
}

#[test]
fn status_counts_and_the_current_revision_follows_a_finished_rollout() {
    let old_set = sts(3, json!({"spec": {"minReadySeconds": 300}}));
    let (old, old_rev) = revision(&old_set);
    let mut s = with_image(&old_set, "web:2");
    s.status = Some(StatefulSetStatus { current_revision: Some(old.clone()), ..Default::default() });
    let (new, _) = revision(&s);
    let revisions = [old_rev];
    let mut recent = member(2, &new);
    recent.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
        Some(Time(now() - jiff::SignedDuration::from_secs(100)));
    let pods = [member(0, &old), unready(member(1, &new)), recent];
    let status = plan(&s, &pods, &revisions, now()).status.unwrap();
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.available_replicas, Some(1));
    assert_eq!(status.current_replicas, Some(1));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.current_revision.as_deref(), Some(old.as_str()));
    assert_eq!(status.update_revision.as_deref(), Some(new.as_str()));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.collision_count, Some(0));

    let all_new = members(0..3, &new);
    let mut done = s.clone();
    let status = plan(&done, &all_new, &revisions, now()).status.unwrap();
    assert_eq!(status.current_revision.as_deref(), Some(new.as_str()));
    assert_eq!((status.current_replicas, status.updated_replicas), (Some(3), Some(3)));
    done.status = Some(status);
    assert_eq!(plan(&done, &all_new, &revisions, now()).status, None);
}

#[test]
fn revisions_are_created_renumbered_and_trimmed_around_live_ones() {
    let s = sts(1, json!({"spec": {"revisionHistoryLimit": 1}}));
    let first = plan(&s, &[], &[], now());
    assert_eq!(first.revision.create.as_ref().unwrap().revision, 1);
    assert_eq!(first.status.unwrap().current_revision, Some(first.revision.name.clone()));

    let stored = |image: &str, number: i64| {
        let (_, mut r) = revision(&with_image(&s, image));
        r.revision = number;
        r
    };
    let revisions = [stored("web:1", 1), stored("web:2", 2), stored("web:3", 3), stored("web:4", 4)];
    let name = |i: usize| revisions[i].metadata.name.clone().unwrap();
    // Back to web:1 (a rollback): revision 1 becomes 5. A pod still runs web:2; web:3 is beyond the limit.
    let mut back = s.clone();
    back.status = Some(StatefulSetStatus { current_revision: Some(name(3)), ..Default::default() });
    let p = plan(&back, &[member(0, &name(1))], &revisions, now());
    assert_eq!((p.revision.name.clone(), p.revision.renumber), (name(0), Some(5)));
    assert!(p.revision.create.is_none());
    assert!(p.delete_revisions.is_empty(), "only web:3 is historic and the limit is 1");
    let p = plan(&back, &[member(0, &name(0))], &revisions, now());
    assert_eq!(p.delete_revisions, [name(1)]);
}

#[test]
fn orphans_named_as_members_are_adopted_and_mislabelled_members_fixed() {
    let s = sts(2, json!({}));
    let (rev, _) = revision(&s);
    let mut orphan = member(0, &rev);
    orphan.metadata.owner_references = None;
    let mut stranger = member(0, &rev);
    stranger.metadata.name = Some("webby-1".into());
    stranger.metadata.owner_references = None;
    let mut mislabelled = member(1, &rev);
    mislabelled.metadata.labels.as_mut().unwrap().remove(POD_NAME);
    let p = plan(&s, &[orphan, stranger, mislabelled], &[], now());
    assert_eq!(p.adopt, ["web-0"]);
    assert_eq!(p.relabel, [("web-1".to_string(), identity_labels("web", 1))]);
    assert!(p.create.is_empty());
}

#[test]
fn a_statefulset_being_deleted_only_reports() {
    let mut s = sts(3, json!({}));
    s.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&s, &[], &[], now());
    assert!(p.create.is_empty() && p.revision.create.is_none());
    assert_eq!(p.status.unwrap().replicas, 0);
}

#[test]
fn a_revision_name_collision_only_counts_it() {
    let s = sts(1, json!({}));
    let (_, mut clash) = revision(&s);
    clash.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let p = plan(&s, &[], &[clash], now());
    assert!(p.revision.collided && p.create.is_empty());
    assert_eq!(p.status.unwrap().collision_count, Some(1));
}

#[test]
fn ordinals_parse_only_from_canonical_member_names() {
    let named = |n: &str| Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(n.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(ordinal_of("web", &named("web-12")), Some(12));
    assert_eq!(ordinal_of("web", &named("web-012")), None);
    assert_eq!(ordinal_of("web", &named("web-1-0")), None);
    assert_eq!(ordinal_of("web-1", &named("web-1-0")), Some(0));
    assert_eq!(ordinal_of("web", &named("webx-0")), None);
    assert_eq!(claim_name("data", "web", 3), "data-web-3");
}
