use super::*;
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z, a Thursday.
fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

const MIN: i64 = 60;
const DAY: i64 = 86_400;

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

/// A CronJob created at t0, every five minutes, as the API server stores it, with `extra` merged in.
fn cron_job(extra: Value) -> CronJob {
    let mut cj = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "default", "uid": "cj-uid", "creationTimestamp": Time(t0())},
        "spec": {
            "schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {
                "metadata": {"labels": {"app": "hello"}, "annotations": {"note": "x"}},
                "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "c", "image": "busybox"}]}}},
            },
        },
    });
    merge(&mut cj, extra);
    serde_json::from_value(cj).unwrap()
}

/// A Job of the CronJob that started at `started` seconds after t0 and maybe finished.
fn job(name: &str, started: i64, finished: Option<(&str, i64)>) -> Job {
    let mut j = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "hello", "uid": "cj-uid",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"template": {}},
        "status": {"startTime": Time(at(started))},
    });
    if let Some((kind, when)) = finished {
        merge(
            &mut j,
            json!({"status": {"conditions": [{"type": kind, "status": "True",
            "lastTransitionTime": Time(at(when))}]}}),
        );
        if kind == "Complete" {
            merge(&mut j, json!({"status": {"completionTime": Time(at(when))}}));
        }
    }
    serde_json::from_value(j).unwrap()
}

fn active_ref(name: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": name, "namespace": "default", "uid": format!("uid-{name}")})
}

fn reasons(p: &Plan) -> Vec<&str> {
    p.events.iter().map(|e| e.reason.as_str()).collect()
}

fn utc(s: &str) -> Schedule {
    Schedule::parse(s, None).unwrap()
}

#[test]
fn finds_the_most_recent_and_the_next_scheduled_time() {
    let s = utc("*/5 * * * *");
    assert_eq!(s.most_recent(t0(), at(12 * MIN)).unwrap(), Some(at(10 * MIN)));
    assert_eq!(s.most_recent(t0(), at(4 * MIN)).unwrap(), None);
    assert_eq!(s.most_recent(at(10 * MIN), at(12 * MIN)).unwrap(), None);
    assert_eq!(s.next_after(t0(), at(12 * MIN)).unwrap(), at(15 * MIN));
    assert_eq!(s.next_after(t0(), at(15 * MIN)).unwrap(), at(20 * MIN));
    assert_eq!(s.count(t0(), at(12 * MIN), 100).unwrap(), 2);
    assert_eq!(s.count(t0(), at(DAY), 100).unwrap(), 100);
    // Sub-second clocks do not matter.
    assert_eq!(s.most_recent(t0(), at(10 * MIN) + SignedDuration::from_millis(300)).unwrap(), Some(at(10 * MIN)));
}

#[test]
fn descriptors_and_weekdays_read_as_in_kubernetes() {
    assert_eq!(utc("@hourly").next_after(t0(), at(30 * MIN)).unwrap(), at(60 * MIN));
    assert_eq!(utc("@daily").next_after(t0(), at(1)).unwrap(), at(DAY));
    assert_eq!(utc("@midnight").next_after(t0(), at(1)).unwrap(), at(DAY));
    // 2026-01-04 is the first Sunday, 2026-02-01 the first of the next month, 2027-01-01 the next year.
    assert_eq!(utc("@weekly").next_after(t0(), t0()).unwrap(), at(3 * DAY));
    assert_eq!(utc("@monthly").next_after(t0(), t0()).unwrap(), at(31 * DAY));
    assert_eq!(utc("@yearly").next_after(t0(), t0()).unwrap(), at(365 * DAY));
    assert_eq!(utc("@annually").next_after(t0(), t0()).unwrap(), at(365 * DAY));
    assert_eq!(utc("0 0 * * MON").next_after(t0(), t0()).unwrap(), at(4 * DAY));
    // Both day fields restricted: either matches (the 1st, or a Monday).
    assert_eq!(utc("0 0 1 * mon").next_after(t0(), t0()).unwrap(), at(4 * DAY));
    assert_eq!(utc("5/15 * * * *").next_after(t0(), t0()).unwrap(), at(5 * MIN));
    assert_eq!(utc("30 2 * jan,jul sun").next_after(t0(), t0()).unwrap(), at(3 * DAY + 150 * MIN));
}

#[test]
fn every_counts_periods_from_the_last_schedule() {
    let s = utc("@every 1m30s");
    let since = t0() + SignedDuration::from_millis(400);
    assert_eq!(s.most_recent(since, at(80)).unwrap(), None);
    assert_eq!(s.most_recent(since, at(200)).unwrap(), Some(at(180)));
    assert_eq!(s.next_after(since, at(200)).unwrap(), at(270));
    assert_eq!(s.next_after(since, at(10)).unwrap(), at(90));
    assert_eq!(s.count(since, at(200), 100).unwrap(), 2);
    assert!(Schedule::parse("@every 2h", None).is_ok());
    assert_eq!(utc("@every 100ms").next_after(t0(), t0()).unwrap(), at(1));
    let bad = Schedule::parse("@every soon", None).unwrap_err();
    assert_eq!(bad.reason(), "UnparseableSchedule");
}

#[test]
fn bad_schedules_are_reported_and_start_nothing() {
    for s in ["not a schedule", "* * * *", "0 0 * * * *", "@fortnightly", "61 * * * *", "0 0 L * *", "0 0 * * 5#2"] {
        let e = Schedule::parse(s, None).unwrap_err();
        assert_eq!(e.reason(), "UnparseableSchedule", "{s}: {e}");
    }
    let cj = cron_job(json!({"spec": {"schedule": "every day"}}));
    let p = plan(&cj, &[], at(DAY));
    assert_eq!((p.create.is_none(), p.requeue_after), (true, None));
    assert_eq!(reasons(&p), ["UnparseableSchedule"]);
    assert!(p.events[0].warning);
    assert!(p.events[0].message.starts_with("unparseable schedule: \"every day\" : "), "{}", p.events[0].message);
    // Parses, never fires.
    let cj = cron_job(json!({"spec": {"schedule": "0 0 30 2 *"}}));
    let p = plan(&cj, &[], at(DAY));
    assert_eq!(reasons(&p), ["InvalidSchedule"]);
    assert!(p.create.is_none());
}

#[test]
fn time_zones_come_from_the_spec_or_a_tz_prefix() {
    for zone in [None, Some("UTC"), Some("Etc/UTC")] {
        let s = Schedule::parse("0 9 * * *", zone).unwrap();
        assert_eq!(s.next_after(t0(), t0()).unwrap(), at(9 * 3600));
    }
    // 09:00 in Tokyo is midnight UTC.
    let tokyo = Schedule::parse("0 9 * * *", Some("Asia/Tokyo")).unwrap();
    assert_eq!(tokyo.next_after(t0(), t0()).unwrap(), at(DAY));
    let prefixed = Schedule::parse("TZ=Asia/Tokyo 0 9 * * *", None).unwrap();
    assert_eq!(prefixed.next_after(t0(), t0()).unwrap(), at(DAY));
    // Noon in New York: 17:00 UTC in winter, 16:00 UTC in summer.
    let ny = Schedule::parse("0 12 * * *", Some("America/New_York")).unwrap();
    assert_eq!(ny.next_after(t0(), t0()).unwrap(), at(17 * 3600));
    let july: Timestamp = "2026-07-01T00:00:00Z".parse().unwrap();
    assert_eq!(ny.next_after(t0(), july).unwrap(), "2026-07-01T16:00:00Z".parse().unwrap());

    let e = Schedule::parse("0 9 * * *", Some("Mars/Olympus_Mons")).unwrap_err();
    assert_eq!(e.reason(), "UnknownTimeZone");
    let cj = cron_job(json!({"spec": {"timeZone": "Mars/Olympus_Mons"}}));
    let p = plan(&cj, &[], at(DAY));
    assert_eq!(reasons(&p), ["UnknownTimeZone"]);
    assert!(p.create.is_none());
}

#[test]
fn starts_a_job_at_its_scheduled_time() {
    let cj = cron_job(json!({}));
    let p = plan(&cj, &[], at(5 * MIN + 1));
    let job = p.create.unwrap();
    let minutes = at(5 * MIN).as_second() / 60;
    assert_eq!(job.metadata.name, Some(format!("hello-{minutes}")));
    assert_eq!(job.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "hello");
    let annotations = job.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["note"], "x");
    assert_eq!(annotations[SCHEDULED_TIMESTAMP], "2026-01-01T00:05:00Z");
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("CronJob", "cj-uid", Some(true)));
    assert_eq!(job.spec.unwrap().template.spec.unwrap().restart_policy.as_deref(), Some("OnFailure"));
    assert_eq!(p.status.unwrap().last_schedule_time, Some(Time(at(5 * MIN))));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5 * 60 - 1) + NEXT_SCHEDULE_DELTA));
    assert!(p.events.is_empty());
}

#[test]
fn a_job_is_named_for_its_scheduled_minute_and_stamped_in_its_zone() {
    assert_eq!(job_name("hello", at(5 * MIN)), "hello-29453765");
    let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
    let job = job_for(&cron_job(json!({})), t0(), &tokyo);
    assert_eq!(job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP], "2026-01-01T09:00:00+09:00");
}

#[test]
fn waits_for_the_next_scheduled_time() {
    let cj = cron_job(json!({}));
    let p = plan(&cj, &[], at(2 * MIN));
    assert!(p.create.is_none() && p.status.is_none() && p.events.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3 * 60) + NEXT_SCHEDULE_DELTA));
}

#[test]
fn a_scheduled_time_is_started_once() {
    let done = cron_job(json!({"status": {"lastScheduleTime": Time(at(5 * MIN))}}));
    assert!(plan(&done, &[], at(6 * MIN)).create.is_none());
    // Started, but the status was not written (the Job exists, finished or not).
    let name = job_name("hello", at(5 * MIN));
    let p = plan(&cron_job(json!({})), &[job(&name, 5 * MIN, Some(("Complete", 6 * MIN)))], at(7 * MIN));
    assert!(p.create.is_none());
}

#[test]
fn too_many_missed_times_warn_and_still_start_the_latest() {
    let cj = cron_job(json!({"spec": {"schedule": "* * * * *"}}));
    let p = plan(&cj, &[], at(2 * DAY + 30));
    assert_eq!(reasons(&p), ["TooManyMissedTimes"]);
    assert!(p.events[0].warning);
    assert_eq!(p.status.unwrap().last_schedule_time, Some(Time(at(2 * DAY))));
    assert!(p.create.is_some());
    // A starting deadline limits the count.
    let cj = cron_job(json!({"spec": {"schedule": "* * * * *", "startingDeadlineSeconds": 600}}));
    let p = plan(&cj, &[], at(2 * DAY + 30));
    assert!(p.events.is_empty());
    assert!(p.create.is_some());
}

#[test]
fn a_time_missed_by_more_than_the_starting_deadline_is_skipped() {
    let late = cron_job(json!({"spec": {"startingDeadlineSeconds": 60}}));
    let p = plan(&late, &[], at(7 * MIN));
    assert!(p.create.is_none() && p.status.is_none());
    assert_eq!(reasons(&p), ["MissSchedule"]);
    assert_eq!(p.events[0].message, "Missed scheduled time to start a job: Thu, 01 Jan 2026 00:05:00 +0000");
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3 * 60) + NEXT_SCHEDULE_DELTA));
    let in_time = cron_job(json!({"spec": {"startingDeadlineSeconds": 200}}));
    assert!(plan(&in_time, &[], at(7 * MIN)).create.is_some());
}

#[test]
fn concurrency_policies_decide_what_happens_to_a_running_job() {
    let running = job("hello-old", 0, None);
    let status = json!({"status": {"active": [active_ref("hello-old")], "lastScheduleTime": Time(t0())}});

    let mut allow = status.clone();
    merge(&mut allow, json!({"spec": {"concurrencyPolicy": "Allow"}}));
    let p = plan(&cron_job(allow), std::slice::from_ref(&running), at(5 * MIN));
    assert!(p.create.is_some() && p.delete.is_empty());
    assert_eq!(p.status.unwrap().active.unwrap().len(), 1);

    let mut forbid = status.clone();
    merge(&mut forbid, json!({"spec": {"concurrencyPolicy": "Forbid"}}));
    let p = plan(&cron_job(forbid), std::slice::from_ref(&running), at(5 * MIN));
    assert!(p.create.is_none() && p.status.is_none());
    assert_eq!(reasons(&p), ["JobAlreadyActive"]);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5 * 60) + NEXT_SCHEDULE_DELTA));

    let mut replace = status;
    merge(&mut replace, json!({"spec": {"concurrencyPolicy": "Replace"}}));
    let p = plan(&cron_job(replace), &[running], at(5 * MIN));
    assert!(p.create.is_some());
    assert_eq!(p.delete, ["hello-old"]);
    assert_eq!(p.status.unwrap().active, None);
}

#[test]
fn a_suspended_cron_job_starts_nothing() {
    let cj = cron_job(json!({"spec": {"suspend": true}}));
    let p = plan(&cj, &[], at(DAY));
    assert_eq!(p, Plan::default());
}

#[test]
fn the_status_tracks_active_and_successful_jobs() {
    let cj = cron_job(json!({"status": {"active": [active_ref("a"), active_ref("gone")],
        "lastScheduleTime": Time(at(5 * MIN))}}));
    let jobs = [
        job("a", 0, Some(("Complete", 2 * MIN))),
        job("b", 60, Some(("Complete", 4 * MIN))),
        job("c", 5 * MIN, None),
        job("foreign", 0, None),
    ];
    let mut jobs = jobs.to_vec();
    jobs[3].metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let p = plan(&cj, &jobs, at(6 * MIN));
    assert_eq!(reasons(&p), ["SawCompletedJob", "MissingJob"]);
    assert_eq!(p.events[0].message, "Saw completed job: a, status: Complete");
    assert_eq!(p.events[1].message, "Active job went missing: gone");
    let status = p.status.unwrap();
    let active = status.active.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].name.as_deref(), Some("c"));
    assert_eq!(active[0].uid.as_deref(), Some("uid-c"));
    assert_eq!((active[0].kind.as_deref(), active[0].api_version.as_deref()), (Some("Job"), Some("batch/v1")));
    assert_eq!(status.last_successful_time, Some(Time(at(4 * MIN))));
    // Written only when it changes.
    let mut cj = cj;
    cj.status = Some(CronJobStatus { active: Some(active), ..cj.status.clone().unwrap() });
    cj.status.as_mut().unwrap().last_successful_time = Some(Time(at(4 * MIN)));
    let p = plan(&cj, &jobs, at(6 * MIN));
    assert_eq!(p.status, None);
    assert!(p.events.is_empty());
}

#[test]
fn finished_jobs_beyond_the_history_limits_are_deleted_oldest_first() {
    let cj = cron_job(json!({"status": {"lastScheduleTime": Time(at(5 * MIN))}}));
    let mut jobs: Vec<Job> = (1..=5).map(|i| job(&format!("ok-{i}"), i, Some(("Complete", i + 1)))).collect();
    jobs.extend((1..=3).map(|i| job(&format!("bad-{i}"), i, Some(("Failed", i + 1)))));
    jobs.push(job("running", 0, None));
    jobs.reverse();
    let p = plan(&cj, &jobs, at(6 * MIN));
    assert_eq!(p.delete, ["ok-1", "ok-2", "bad-1", "bad-2"]);
    let none_kept = cron_job(json!({"spec": {"successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 0},
        "status": {"lastScheduleTime": Time(at(5 * MIN))}}));
    assert_eq!(plan(&none_kept, &jobs, at(6 * MIN)).delete.len(), 8);
}

#[test]
fn a_cron_job_being_deleted_only_reports() {
    let cj = cron_job(json!({"metadata": {"deletionTimestamp": Time(at(DAY))},
        "status": {"active": [active_ref("a")]}}));
    let p = plan(&cj, &[job("a", 0, Some(("Failed", 10)))], at(DAY));
    assert!(p.create.is_none() && p.requeue_after.is_none());
    assert_eq!(p.status.unwrap().active, None);
}
