use super::*;
use serde_json::{json, Value};

fn t0() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> jiff::Timestamp {
    t0() + jiff::SignedDuration::from_secs(secs)
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// A Job as the API server stores it, with `extra` merged in.
fn job(extra: Value) -> Job {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "job-uid"},
        "spec": {
            "parallelism": 1, "completions": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}},
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/controller-uid": "job-uid", "job-name": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    });
    merge(&mut j, extra);
    serde_json::from_value(j).unwrap()
}

/// A pod of the Job in `phase`, with `extra` merged in.
fn pod(name: &str, phase: &str, extra: Value) -> Pod {
    let mut p = json!({
        "metadata": {
            "name": name, "namespace": "default",
            "labels": {"batch.kubernetes.io/controller-uid": "job-uid", "job-name": "pi"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job-uid",
                "controller": true, "blockOwnerDeletion": true}],
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    });
    merge(&mut p, extra);
    serde_json::from_value(p).unwrap()
}

/// A pod that finished (`phase`) at `secs` after t0.
fn finished_pod(name: &str, phase: &str, secs: i64) -> Pod {
    let exit = if phase == "Succeeded" { 0 } else { 1 };
    pod(
        name,
        phase,
        json!({"status": {"containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": exit, "finishedAt": Time(at(secs))}}}]}}),
    )
}

fn indexed_pod(name: &str, phase: &str, index: i32) -> Pod {
    pod(name, phase, json!({"metadata": {"annotations": {COMPLETION_INDEX: index.to_string()}}}))
}

fn with_status(mut j: Job, status: Option<JobStatus>) -> Job {
    j.status = status;
    j
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

fn types(status: &JobStatus) -> Vec<(String, String)> {
    status.conditions.iter().flatten().map(|c| (c.type_.clone(), c.status.clone())).collect()
}

#[test]
fn creates_up_to_parallelism_and_no_more_than_the_remaining_completions() {
    let j = job(json!({"spec": {"parallelism": 2, "completions": 5}}));
    assert_eq!(plan(&j, &[], t0()).create, 2);
    assert_eq!(plan(&j, &[pod("a", "Running", json!({}))], t0()).create, 1);
    let done: Vec<Pod> = (0..4).map(|i| finished_pod(&format!("s{i}"), "Succeeded", 1)).collect();
    assert_eq!(plan(&j, &done, t0()).create, 1);
    let big = job(json!({"spec": {"parallelism": 2000, "completions": 2000}}));
    assert_eq!(plan(&big, &[], t0()).create, BURST);
}

#[test]
fn a_first_pass_sets_the_start_time_and_counts() {
    let j = job(json!({"spec": {"parallelism": 2, "completions": 4}}));
    let ready = pod("a", "Running", json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
    let p = plan(&j, &[ready, pod("b", "Pending", json!({}))], t0());
    let status = p.status.unwrap();
    assert_eq!(status.start_time, Some(Time(t0())));
    assert_eq!((status.active, status.ready, status.terminating), (Some(2), Some(1), Some(0)));
    assert_eq!((status.succeeded, status.failed), (None, None));
    assert!(status.conditions.is_none());
    assert_eq!(status.uncounted_terminated_pods, Some(Default::default()));
}

#[test]
fn the_status_is_written_only_when_it_changes() {
    let j = job(json!({"spec": {"parallelism": 1, "completions": 3}}));
    let pods = [pod("a", "Running", json!({})), finished_pod("b", "Succeeded", 1)];
    let first = plan(&j, &pods, t0());
    let mut j = with_status(j, first.status);
    assert_eq!(plan(&j, &pods, at(5)).status, None);
    // An empty uncountedTerminatedPods the server dropped is no change either.
    j.status.as_mut().unwrap().uncounted_terminated_pods = None;
    assert_eq!(plan(&j, &pods, at(5)).status, None);
}

#[test]
fn completes_when_the_completions_succeeded() {
    let j = job(json!({"spec": {"completions": 2, "parallelism": 2}}));
    let pods = [finished_pod("a", "Succeeded", 1), finished_pod("b", "Succeeded", 2)];
    let p = plan(&j, &pods, at(3));
    assert_eq!(p.create, 0);
    let status = p.status.unwrap();
    assert_eq!(types(&status), [("SuccessCriteriaMet".into(), "True".into()), ("Complete".into(), "True".into())]);
    let complete = condition(&status, "Complete").unwrap();
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(complete.message.as_deref(), Some("Reached expected number of succeeded pods"));
    assert_eq!(complete.last_transition_time, Some(Time(at(3))));
    assert_eq!(status.completion_time, Some(Time(at(3))));
    assert_eq!(status.succeeded, Some(2));
    assert_eq!(p.events, [Note::normal("Completed", "Job completed")]);
    // A finished Job is left alone.
    let done = with_status(j, Some(status));
    assert_eq!(plan(&done, &pods, at(10)), Plan::default());
}

#[test]
fn completion_stops_the_pods_still_running_and_waits_for_them() {
    let j = job(json!({"spec": {"completions": 1, "parallelism": 2}}));
    let pods = [finished_pod("a", "Succeeded", 1), pod("b", "Running", json!({}))];
    let p = plan(&j, &pods, at(2));
    assert_eq!(p.delete, ["b"]);
    let status = p.status.unwrap();
    assert_eq!(types(&status), [("SuccessCriteriaMet".into(), "True".into())]);
    assert_eq!((status.active, status.terminating), (None, Some(1)));
    assert!(p.events.is_empty());
    // Next pass: b is terminating; then it is gone.
    let j = with_status(j, Some(status));
    let terminating = pod("b", "Running", json!({"metadata": {"deletionTimestamp": Time(at(2))}}));
    let p = plan(&j, &[pods[0].clone(), terminating], at(3));
    assert!(p.delete.is_empty() && p.status.is_none());
    let p = plan(&j, &pods[..1], at(4));
    let status = p.status.unwrap();
    assert_eq!(condition(&status, "Complete").unwrap().status, "True");
    assert_eq!(status.completion_time, Some(Time(at(4))));
    // Pods stopped after success are not failures.
    assert_eq!(status.failed, None);
}

#[test]
fn a_work_queue_starts_no_more_pods_after_a_success_and_completes_when_all_finish() {
    let j = job(json!({"spec": {"completions": null, "parallelism": 3}}));
    assert_eq!(plan(&j, &[], t0()).create, 3);
    let pods = [finished_pod("a", "Succeeded", 1), pod("b", "Running", json!({}))];
    let p = plan(&j, &pods, at(2));
    assert_eq!((p.create, p.delete.len()), (0, 0));
    assert!(condition(p.status.as_ref().unwrap(), "Complete").is_none());
    let pods = [finished_pod("a", "Succeeded", 1), finished_pod("b", "Succeeded", 3)];
    let status = plan(&j, &pods, at(4)).status.unwrap();
    assert_eq!(condition(&status, "Complete").unwrap().status, "True");
    assert_eq!(status.succeeded, Some(2));
}

#[test]
fn failing_past_the_backoff_limit_fails_the_job() {
    let j = job(json!({"spec": {"backoffLimit": 1}}));
    let pods = [finished_pod("a", "Failed", 1), finished_pod("b", "Failed", 20)];
    let p = plan(&j, &pods, at(100));
    assert_eq!(p.create, 0);
    let status = p.status.unwrap();
    assert_eq!(types(&status), [("FailureTarget".into(), "True".into()), ("Failed".into(), "True".into())]);
    let failed = condition(&status, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failed.message.as_deref(), Some("Job has reached the specified backoff limit"));
    assert_eq!(status.failed, Some(2));
    assert_eq!(status.completion_time, None);
    assert_eq!(p.events, [Note::warning("BackoffLimitExceeded", "Job has reached the specified backoff limit")]);
}

#[test]
fn a_failing_job_stops_its_pods_counts_them_failed_and_fails_once_they_are_gone() {
    let j = job(json!({"spec": {"backoffLimit": 0, "parallelism": 2, "completions": 3}}));
    let pods = [finished_pod("a", "Failed", 1), pod("b", "Running", json!({}))];
    let p = plan(&j, &pods, at(2));
    assert_eq!(p.delete, ["b"]);
    let status = p.status.unwrap();
    assert_eq!(types(&status), [("FailureTarget".into(), "True".into())]);
    assert_eq!(status.failed, Some(2));
    let j = with_status(j, Some(status));
    let p = plan(&j, &pods[..1], at(3));
    let status = p.status.unwrap();
    assert_eq!(condition(&status, "Failed").unwrap().reason.as_deref(), Some("BackoffLimitExceeded"));
    // The stored count outlives the deleted pod.
    assert_eq!(status.failed, Some(2));
}

#[test]
fn restarts_in_place_count_toward_the_backoff_limit() {
    let j = job(json!({"spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure"}}}}));
    let restarted = |n: i32| {
        pod(
            "a",
            "Running",
            json!({"status": {"containerStatuses": [{"name": "c", "image": "busybox",
            "imageID": "", "ready": true, "restartCount": n}]}}),
        )
    };
    assert!(condition(plan(&j, &[restarted(1)], t0()).status.as_ref().unwrap(), "FailureTarget").is_none());
    let p = plan(&j, &[restarted(2)], t0());
    assert_eq!(p.delete, ["a"]);
    let target = condition(p.status.as_ref().unwrap(), "FailureTarget").unwrap().clone();
    assert_eq!(target.reason.as_deref(), Some("BackoffLimitExceeded"));
}

#[test]
fn a_failed_pod_is_replaced_after_an_exponential_back_off() {
    let j = job(json!({"spec": {"backoffLimit": 6}}));
    let one = [finished_pod("a", "Failed", 0)];
    let p = plan(&j, &one, at(3));
    assert_eq!((p.create, p.requeue_after), (0, Some(Duration::from_secs(7))));
    assert_eq!(plan(&j, &one, at(10)).create, 1);
    let two = [finished_pod("a", "Failed", 0), finished_pod("b", "Failed", 15)];
    let p = plan(&j, &two, at(20));
    assert_eq!((p.create, p.requeue_after), (0, Some(Duration::from_secs(15))));
    assert_eq!(plan(&j, &two, at(35)).create, 1);
    // Many failures wait at most BACKOFF_MAX.
    let many: Vec<Pod> = (0..7).map(|i| finished_pod(&format!("f{i}"), "Failed", i)).collect();
    let big = job(json!({"spec": {"backoffLimit": 10}}));
    assert_eq!(plan(&big, &many, at(6)).requeue_after, Some(BACKOFF_MAX));
    // A success since the failures resets the back-off.
    let j = job(json!({"spec": {"completions": 2}}));
    let pods = [finished_pod("a", "Failed", 0), finished_pod("b", "Succeeded", 1)];
    assert_eq!(plan(&j, &pods, at(2)).create, 1);
}

#[test]
fn exceeding_the_active_deadline_fails_the_job() {
    let j = job(json!({"spec": {"activeDeadlineSeconds": 30}, "status": {"startTime": Time(t0())}}));
    let running = [pod("a", "Running", json!({}))];
    let p = plan(&j, &running, at(10));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    assert!(p.delete.is_empty());
    let p = plan(&j, &running, at(30));
    assert_eq!(p.delete, ["a"]);
    let target = condition(p.status.as_ref().unwrap(), "FailureTarget").unwrap().clone();
    assert_eq!(target.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(target.message.as_deref(), Some("Job was active longer than specified deadline"));
    let p = plan(&j, &[], at(30));
    let failed = condition(p.status.as_ref().unwrap(), "Failed").unwrap().clone();
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(p.events, [Note::warning("DeadlineExceeded", "Job was active longer than specified deadline")]);
}

#[test]
fn suspending_stops_the_pods_and_resuming_restarts_the_clock() {
    let j = job(json!({"spec": {"suspend": true, "parallelism": 2, "completions": 2}}));
    let fresh = plan(&j, &[], t0());
    assert_eq!(fresh.create, 0);
    let status = fresh.status.unwrap();
    assert_eq!(status.start_time, None);
    let suspended = condition(&status, "Suspended").unwrap().clone();
    assert_eq!((suspended.status.as_str(), suspended.reason.as_deref()), ("True", Some("JobSuspended")));
    assert_eq!(suspended.message.as_deref(), Some("Job suspended"));
    assert_eq!(fresh.events, [Note::normal("Suspended", "Job suspended")]);

    let running = job(json!({"spec": {"suspend": true, "completions": 2, "parallelism": 2},
        "status": {"startTime": Time(t0())}}));
    let p = plan(&running, &[pod("a", "Running", json!({})), pod("b", "Pending", json!({}))], at(5));
    let mut deleted = p.delete.clone();
    deleted.sort();
    assert_eq!(deleted, ["a", "b"]);
    assert_eq!(p.status.as_ref().unwrap().terminating, Some(2));

    let mut resumed = with_status(running, p.status);
    resumed.spec.as_mut().unwrap().suspend = Some(false);
    let p = plan(&resumed, &[], at(60));
    assert_eq!(p.create, 2);
    let status = p.status.unwrap();
    assert_eq!(status.start_time, Some(Time(at(60))));
    let c = condition(&status, "Suspended").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some("JobResumed")));
    assert_eq!(c.last_transition_time, Some(Time(at(60))));
    assert_eq!(p.events, [Note::normal("Resumed", "Job resumed")]);
}

#[test]
fn a_condition_keeps_its_transition_time_while_its_status_holds() {
    let mut conditions = Vec::new();
    assert!(!set_condition(&mut conditions, "Suspended", "False", "JobResumed", "Job resumed", t0()));
    assert!(conditions.is_empty());
    assert!(set_condition(&mut conditions, "Suspended", "True", "JobSuspended", "Job suspended", t0()));
    assert!(!set_condition(&mut conditions, "Suspended", "True", "JobSuspended", "Job suspended", at(5)));
    assert!(set_condition(&mut conditions, "Suspended", "True", "Other", "why", at(9)));
    assert_eq!(conditions[0].last_transition_time, Some(Time(t0())));
    assert_eq!(conditions[0].last_probe_time, Some(Time(at(9))));
}

#[test]
fn adopts_matching_orphans_and_ignores_other_owners() {
    let j = job(json!({"spec": {"parallelism": 2, "completions": 2}}));
    let orphan = pod("orphan", "Running", json!({"metadata": {"ownerReferences": null}}));
    let mut foreign = pod("foreign", "Running", json!({}));
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let mut unrelated = pod("unrelated", "Running", json!({"metadata": {"ownerReferences": null}}));
    unrelated.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
    let p = plan(&j, &[orphan, foreign, unrelated], t0());
    assert_eq!(p.adopt, ["orphan"]);
    assert_eq!(p.create, 1);
}

#[test]
fn stored_counters_are_lower_bounds() {
    let j = job(json!({"spec": {"completions": 5}, "status": {"succeeded": 3, "failed": 2}}));
    let status = plan(&j, &[finished_pod("a", "Succeeded", 1)], at(100)).status.unwrap();
    assert_eq!((status.succeeded, status.failed), (Some(3), Some(2)));
}

#[test]
fn terminating_pods_are_replaced_unless_only_failed_pods_are() {
    let gone = pod("a", "Running", json!({"metadata": {"deletionTimestamp": Time(t0())}}));
    let j = job(json!({}));
    assert_eq!(plan(&j, std::slice::from_ref(&gone), t0()).create, 1);
    let j = job(json!({"spec": {"podReplacementPolicy": "Failed"}}));
    let p = plan(&j, &[gone], t0());
    assert_eq!(p.create, 0);
    assert_eq!(p.status.unwrap().terminating, Some(1));
}

#[test]
fn scaling_parallelism_down_deletes_the_least_established_pods() {
    let j = job(json!({"spec": {"parallelism": 1, "completions": 5}}));
    let ready = pod(
        "ready",
        "Running",
        json!({"spec": {"nodeName": "n"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    let p = plan(&j, &[ready, pod("pending", "Pending", json!({}))], t0());
    assert_eq!((p.delete.as_slice(), p.create), (&["pending".to_string()][..], 0));
}

#[test]
fn jobs_managed_elsewhere_or_being_deleted_are_left_alone() {
    let j = job(json!({"spec": {"managedBy": "example.com/other"}}));
    assert_eq!(plan(&j, &[], t0()), Plan::default());
    let j = job(json!({"metadata": {"deletionTimestamp": Time(t0())}}));
    assert_eq!(plan(&j, &[], t0()), Plan::default());
}

#[test]
fn indexed_jobs_create_the_missing_indexes() {
    let j = job(json!({"spec": {"completionMode": "Indexed", "completions": 4, "parallelism": 2}}));
    let p = plan(&j, &[], t0());
    assert_eq!((p.create, p.indexes.as_slice()), (2, &[0, 1][..]));
    let pods = [indexed_pod("p0", "Succeeded", 0), indexed_pod("p1", "Running", 1)];
    let p = plan(&j, &pods, t0());
    assert_eq!(p.indexes, [2]);
    let status = p.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(status.succeeded, Some(1));
    // Stored completed indexes count even when their pods are gone.
    let j = with_status(j, Some(JobStatus { completed_indexes: Some("0-2".into()), ..Default::default() }));
    let p = plan(&j, &[], t0());
    assert_eq!(p.indexes, [3]);
    let done = plan(&j, &[indexed_pod("p3", "Succeeded", 3)], t0()).status.unwrap();
    assert_eq!(done.completed_indexes.as_deref(), Some("0-3"));
    assert_eq!(condition(&done, "Complete").unwrap().status, "True");
}

#[test]
fn indexed_jobs_delete_repeated_and_invalid_indexes() {
    let j = job(json!({"spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2}}));
    let older = pod(
        "older",
        "Running",
        json!({"metadata": {"annotations": {COMPLETION_INDEX: "1"}},
        "spec": {"nodeName": "n"}}),
    );
    let pods = [older, indexed_pod("newer", "Pending", 1), indexed_pod("bad", "Running", 7)];
    let p = plan(&j, &pods, t0());
    let mut deleted = p.delete.clone();
    deleted.sort();
    assert_eq!(deleted, ["bad", "newer"]);
    assert_eq!(p.create, 0);
}

#[test]
fn an_indexed_pod_carries_its_index() {
    let j = job(json!({"spec": {"completionMode": "Indexed", "completions": 3}}));
    let p = pod_for(&j, Some(2));
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
    assert_eq!(p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX], "2");
    assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "2");
    let spec = p.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
    let env = &spec.containers[0].env.as_ref().unwrap()[0];
    assert_eq!(env.name, COMPLETION_INDEX_ENV);
    let path = &env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path;
    assert_eq!(path, "metadata.annotations['batch.kubernetes.io/job-completion-index']");
    let long = "x".repeat(60);
    assert_eq!(generate_name_with_index(&long, 12), format!("{}-12-", "x".repeat(54)));
}

#[test]
fn a_pod_comes_from_the_template_owned_by_the_job() {
    let j = job(json!({}));
    let p = pod_for(&j, None);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
    assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["job-name"], "pi");
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", "job-uid"));
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(p.spec.unwrap().restart_policy.as_deref(), Some("Never"));
}

#[test]
fn completed_indexes_read_and_write_as_intervals() {
    let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
    assert_eq!(format_indexes(&set), "0-2,4,6-7");
    assert_eq!(parse_indexes("0-2,4,6-7", 10), set);
    assert_eq!(parse_indexes("0-2,4,6-7", 5), [0, 1, 2, 4].into());
    assert_eq!(parse_indexes("", 5), BTreeSet::new());
    assert_eq!(parse_indexes("x,3", 5), [3].into());
}

#[test]
fn the_ttl_counts_from_the_finish() {
    let finished = json!({"spec": {"ttlSecondsAfterFinished": 100}, "status": {"conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": Time(t0())}]}});
    let j = job(finished.clone());
    assert_eq!(ttl_expired(&j, at(40)), Some(Ttl::After(Duration::from_secs(60))));
    assert_eq!(ttl_expired(&j, at(100)), Some(Ttl::Expired));
    let failed = job(json!({"spec": {"ttlSecondsAfterFinished": 0}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "lastTransitionTime": Time(t0())}]}}));
    assert_eq!(ttl_expired(&failed, t0()), Some(Ttl::Expired));
    assert_eq!(ttl_expired(&job(json!({"spec": {"ttlSecondsAfterFinished": 100}})), at(500)), None);
    assert_eq!(ttl_expired(&job(json!({"status": finished["status"]})), at(500)), None);
}
