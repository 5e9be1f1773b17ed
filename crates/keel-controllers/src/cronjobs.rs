//! The CronJob controller's decision, pure: given a CronJob and the Jobs it controls, whether a scheduled
//! time has come to start a Job (and which), which Jobs to delete (replaced ones, and finished ones beyond
//! the history limits), the status to report, the events worth recording and when to look again. It follows
//! Kubernetes' cronjob_controllerv2.
//!
//! Schedules are the standard five cron fields or a descriptor (`@hourly`, `@daily`, `@midnight`,
//! `@weekly`, `@monthly`, `@yearly`, `@annually`, `@every <duration>`), evaluated with croner in the
//! CronJob's `timeZone` (UTC when it has none; zones come from the system's time zone database).

use std::time::Duration;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDateTime, Cron, CronDateTime, Resolution, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::events::reference;
use crate::jobs::{self, Note};
use crate::pods;

/// The annotation that records, on each Job, the time it was scheduled for (RFC 3339, in the zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this get a TooManyMissedTimes warning.
pub const MAX_MISSED: usize = 100;
/// Wake up this long after a scheduled time, for clock skew (Kubernetes' nextScheduleDelta).
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
pub const DEFAULT_SUCCESSFUL_HISTORY: i32 = 3;
pub const DEFAULT_FAILED_HISTORY: i32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid timeZone: {zone:?}: {reason}")]
    UnknownTimeZone { zone: String, reason: String },
    #[error("unparseable schedule: {schedule:?} : {reason}")]
    Unparseable { schedule: String, reason: String },
    /// Parses, but never (or no longer) fires, like "0 0 30 2 *".
    #[error("invalid schedule: {schedule} : {reason}")]
    Invalid { schedule: String, reason: String },
}

impl ScheduleError {
    /// The Event reason Kubernetes records it under.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::UnknownTimeZone { .. } => "UnknownTimeZone",
            ScheduleError::Unparseable { .. } => "UnparseableSchedule",
            ScheduleError::Invalid { .. } => "InvalidSchedule",
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The Job to start.
    pub create: Option<Job>,
    /// Jobs (names) to delete, with their pods in the background: replaced ones first, then finished ones
    /// beyond the history limits.
    pub delete: Vec<String>,
    /// The status to write, when it differs from the stored one (the loop adds the created Job to
    /// `active`).
    pub status: Option<CronJobStatus>,
    /// Look again after this long: just after the next scheduled time.
    pub requeue_after: Option<Duration>,
    /// What to record as Events.
    pub events: Vec<Note>,
}

/// One pass over `cj`, which controls `jobs` (others in the list are ignored).
pub fn plan(cj: &CronJob, jobs: &[Job], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = cj.spec.as_ref() else { return plan };
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let uid = cj.metadata.uid.as_deref().unwrap_or_default();
    let owned: Vec<&Job> = jobs
        .iter()
        .filter(|j| pods::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    let old = cj.status.clone().unwrap_or_default();
    let mut status = old.clone();

    // What runs, what finished, what went missing.
    let old_active = old.active.clone().unwrap_or_default();
    let mut active = Vec::new();
    for job in &owned {
        let job_uid = job.metadata.uid.as_deref();
        match jobs::finished(job) {
            None => active.push(
                old_active
                    .iter()
                    .find(|r| r.uid.as_deref() == job_uid)
                    .cloned()
                    .unwrap_or_else(|| reference("batch/v1", "Job", &job.metadata)),
            ),
            Some(end) => {
                if old_active.iter().any(|r| r.uid.as_deref() == job_uid) {
                    let message = format!("Saw completed job: {}, status: {}", name_of(&job.metadata), end.type_);
                    plan.events.push(Note::normal("SawCompletedJob", message));
                }
                if end.type_ == "Complete" {
                    let at = job.status.as_ref().and_then(|s| s.completion_time.clone());
                    if at.as_ref().is_some_and(|t| status.last_successful_time.as_ref().is_none_or(|l| t.0 > l.0)) {
                        status.last_successful_time = at;
                    }
                }
            }
        }
    }
    for gone in old_active.iter().filter(|r| !owned.iter().any(|j| j.metadata.uid == r.uid)) {
        let message = format!("Active job went missing: {}", gone.name.as_deref().unwrap_or_default());
        plan.events.push(Note::normal("MissingJob", message));
    }
    active.sort_by(|a, b| a.name.cmp(&b.name));

    plan.delete = beyond_history(spec, &owned);
    let mut replaced = Vec::new();
    if cj.metadata.deletion_timestamp.is_none() {
        match Schedule::of(spec) {
            _ if spec.suspend == Some(true) => {}
            Err(e) => plan.events.push(Note::warning(e.reason(), e.to_string())),
            Ok(schedule) => {
                let since =
                    old.last_schedule_time.as_ref().or(cj.metadata.creation_timestamp.as_ref()).map_or(now, |t| t.0);
                match start(cj, spec, &schedule, &owned, &active, since, now) {
                    Ok(s) => {
                        plan.events.extend(s.events);
                        if let Some(job) = s.create {
                            plan.create = Some(job);
                            status.last_schedule_time = s.scheduled.map(Time);
                            if spec.concurrency_policy.as_deref() == Some("Replace") {
                                replaced = active.drain(..).filter_map(|r| r.name).collect();
                            }
                        }
                        plan.requeue_after = s.next.and_then(|next| {
                            Duration::try_from(next.duration_since(now)).ok().map(|d| d + NEXT_SCHEDULE_DELTA)
                        });
                    }
                    Err(e) => plan.events.push(Note::warning(e.reason(), e.to_string())),
                }
            }
        }
    }
    replaced.append(&mut plan.delete);
    plan.delete = replaced;
    status.active = if active.is_empty() { None } else { Some(active) };
    if status != old {
        plan.status = Some(status);
    }
    plan
}

/// What [`start`] decided.
struct Start {
    create: Option<Job>,
    scheduled: Option<Timestamp>,
    next: Option<Timestamp>,
    events: Vec<Note>,
}

/// Kubernetes' syncCronJob from the schedule on: the most recent unmet scheduled time, if it is still
/// within the starting deadline, not yet started, and allowed by the concurrency policy, gets a Job.
fn start(
    cj: &CronJob,
    spec: &CronJobSpec,
    schedule: &Schedule,
    owned: &[&Job],
    active: &[k8s_openapi::api::core::v1::ObjectReference],
    since: Timestamp,
    now: Timestamp,
) -> Result<Start, ScheduleError> {
    let mut s = Start { create: None, scheduled: None, next: Some(schedule.next_after(since, now)?), events: vec![] };
    let Some(t) = schedule.most_recent(since, now)? else { return Ok(s) };
    let deadline = spec.starting_deadline_seconds.map(SignedDuration::from_secs);
    // Kubernetes counts the missed times only within the starting deadline.
    let counted_from = deadline.map(|d| now - d).filter(|from| *from > since).unwrap_or(since);
    if schedule.count(counted_from, now, MAX_MISSED + 1)? > MAX_MISSED {
        s.events.push(Note::warning(
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
        ));
    }
    if deadline.is_some_and(|d| t + d < now) {
        let when = t.to_zoned(TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
        s.events.push(Note::warning("MissSchedule", format!("Missed scheduled time to start a job: {when}")));
        return Ok(s);
    }
    let name = job_name(&name_of(&cj.metadata), t);
    let started = owned.iter().any(|j| j.metadata.name.as_deref() == Some(name.as_str()))
        || cj.status.as_ref().and_then(|st| st.last_schedule_time.as_ref()).is_some_and(|l| l.0 == t);
    if started {
        return Ok(s);
    }
    if spec.concurrency_policy.as_deref() == Some("Forbid") && !active.is_empty() {
        s.events.push(Note::normal(
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid",
        ));
        return Ok(s);
    }
    s.create = Some(job_for(cj, t, &schedule.zone));
    s.scheduled = Some(t);
    Ok(s)
}

/// The Job for the time `scheduled`: named "<cronjob>-<minutes since the epoch>", with the template's
/// labels, annotations and spec, the scheduled time annotation, and controlled by the CronJob.
pub fn job_for(cj: &CronJob, scheduled: Timestamp, zone: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.to_string(), rfc3339(scheduled, zone));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name_of(&cj.metadata), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![pods::controller_reference("batch/v1", "CronJob", &cj.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Kubernetes' getJobName: the CronJob's name and the scheduled time in minutes since the epoch.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// Go's RFC 3339 in `zone`: "Z" for a zero offset.
fn rfc3339(t: Timestamp, zone: &TimeZone) -> String {
    let zoned = t.to_zoned(zone.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// Kubernetes' cleanupFinishedJobs: the oldest finished Jobs (by start time, then name) beyond
/// `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
fn beyond_history(spec: &CronJobSpec, owned: &[&Job]) -> Vec<String> {
    let mut victims = Vec::new();
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(DEFAULT_SUCCESSFUL_HISTORY)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(DEFAULT_FAILED_HISTORY)),
    ] {
        let mut done: Vec<&Job> =
            owned.iter().copied().filter(|j| jobs::finished(j).is_some_and(|c| c.type_ == kind)).collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        done.sort_by_key(|j| {
            let started = j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            (started.is_none(), started, name_of(&j.metadata))
        });
        victims.extend(done[..excess].iter().map(|j| name_of(&j.metadata)));
    }
    victims
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// A CronJob's schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    when: When,
    zone: TimeZone,
}

#[derive(Debug, Clone)]
enum When {
    Cron(Box<Cron>),
    /// `@every`: a fixed period from the last scheduled time (or the CronJob's creation).
    Every(SignedDuration),
}

impl Schedule {
    /// `spec.schedule` in `spec.timeZone`.
    pub fn of(spec: &CronJobSpec) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
    }

    /// `schedule` in the IANA zone `time_zone` (UTC when none). Like Kubernetes (robfig/cron), a schedule
    /// may itself begin with `TZ=<zone>` or `CRON_TZ=<zone>`; `time_zone` wins over it.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let unparseable = |reason: String| ScheduleError::Unparseable { schedule: schedule.to_string(), reason };
        let mut pattern = schedule.trim();
        let mut zone_name = time_zone;
        if let Some((prefix, rest)) = pattern.split_once(char::is_whitespace) {
            if let Some(z) = prefix.strip_prefix("CRON_TZ=").or_else(|| prefix.strip_prefix("TZ=")) {
                zone_name = zone_name.or(Some(z));
                pattern = rest.trim();
            }
        }
        let zone = match zone_name {
            None | Some("" | "UTC" | "Etc/UTC") => TimeZone::UTC,
            Some(name) => TimeZone::get(name)
                .map_err(|e| ScheduleError::UnknownTimeZone { zone: name.to_string(), reason: e.to_string() })?,
        };
        if pattern.is_empty() {
            return Err(unparseable("empty spec string".into()));
        }
        let five = match pattern {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            p => match p.strip_prefix("@every ") {
                Some(d) => {
                    let every = go_duration(d.trim()).ok_or_else(|| {
                        unparseable(format!("failed to parse duration {p}: time: invalid duration {:?}", d.trim()))
                    })?;
                    // robfig/cron: whole seconds, at least one.
                    let secs = i64::try_from(every.as_secs()).unwrap_or(i64::MAX).max(1);
                    return Ok(Schedule { when: When::Every(SignedDuration::from_secs(secs)), zone });
                }
                None if p.starts_with('@') => return Err(unparseable(format!("unrecognized descriptor: {p}"))),
                None => p,
            },
        };
        let fields: Vec<&str> = five.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(unparseable(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
        // croner's extensions (last day, nearest weekday, nth weekday) are not Kubernetes' cron.
        let dom_extension = fields[2].chars().any(|c| c.is_ascii_alphabetic());
        let dow_extension = fields[4].chars().any(|c| c == '#' || c.eq_ignore_ascii_case(&'l'));
        if dom_extension || dow_extension {
            return Err(unparseable(format!("unsupported day field in {five:?}")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .sloppy_ranges(true)
            .build()
            .parse(five)
            .map_err(|e| unparseable(e.to_string()))?;
        Ok(Schedule { when: When::Cron(Box::new(cron)), zone })
    }

    /// The time zone the schedule is read in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The latest scheduled time after `since` and at or before `now`.
    pub fn most_recent(&self, since: Timestamp, now: Timestamp) -> Result<Option<Timestamp>, ScheduleError> {
        let t = match &self.when {
            When::Every(period) => {
                let first = whole(since) + *period;
                if first > now {
                    return Ok(None);
                }
                first + periods(*period, now.duration_since(first).as_secs() / period.as_secs())
            }
            When::Cron(cron) => match cron.find_previous_occurrence(&self.at(whole(now)), true) {
                Ok(at) => at.0.timestamp(),
                Err(CronError::TimeSearchLimitExceeded) => return Ok(None),
                Err(e) => return Err(self.invalid(e)),
            },
        };
        Ok((t > since && t <= now).then_some(t))
    }

    /// The first scheduled time after `t` (for `@every`, counting periods from `since`).
    pub fn next_after(&self, since: Timestamp, t: Timestamp) -> Result<Timestamp, ScheduleError> {
        match &self.when {
            When::Every(period) => {
                let first = whole(since) + *period;
                if first > t {
                    return Ok(first);
                }
                Ok(first + periods(*period, t.duration_since(first).as_secs() / period.as_secs() + 1))
            }
            When::Cron(cron) => match cron.find_next_occurrence(&self.at(whole(t)), false) {
                Ok(at) => Ok(at.0.timestamp()),
                Err(e) => Err(self.invalid(e)),
            },
        }
    }

    /// How many scheduled times fall after `since` and at or before `now`, counting no further than `cap`.
    pub fn count(&self, since: Timestamp, now: Timestamp, cap: usize) -> Result<usize, ScheduleError> {
        let mut n = 0;
        let mut t = since;
        while n < cap {
            t = self.next_after(since, t)?;
            if t > now {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn at(&self, t: Timestamp) -> Moment {
        Moment(t.to_zoned(self.zone.clone()))
    }

    fn invalid(&self, e: CronError) -> ScheduleError {
        let schedule = match &self.when {
            When::Cron(c) => c.as_str().to_string(),
            When::Every(d) => format!("@every {d:?}"),
        };
        ScheduleError::Invalid { schedule, reason: e.to_string() }
    }
}

fn periods(period: SignedDuration, n: i64) -> SignedDuration {
    SignedDuration::from_secs(period.as_secs().saturating_mul(n))
}

fn whole(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// A Go duration ("1h30m", "90s", "1.5h", "500ms") as robfig/cron's `@every` reads it.
fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (unit, scale) =
            [("ns", 1e0), ("us", 1e3), ("µs", 1e3), ("μs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
                .into_iter()
                .find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        nanos += number * scale;
    }
    Some(Duration::from_nanos(nanos as u64))
}

/// A zoned time croner can search over.
#[derive(Debug, Clone)]
struct Moment(jiff::Zoned);

impl CronDateTime for Moment {
    fn to_civil(&self) -> CivilDateTime {
        let d = self.0.datetime();
        CivilDateTime::from_ymd_hms_opt(
            i32::from(d.year()),
            d.month() as u32,
            d.day() as u32,
            d.hour() as u32,
            d.minute() as u32,
            d.second() as u32,
        )
        .expect("a jiff civil time is a valid civil time")
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(self.0.weekday().to_sunday_zero_offset() as u32)
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let dt = jiff::civil::DateTime::new(
            i16::try_from(civil.year()).map_err(|_| CronError::InvalidDate)?,
            civil.month() as i8,
            civil.day() as i8,
            civil.hour() as i8,
            civil.minute() as i8,
            civil.second() as i8,
            0,
        )
        .map_err(|_| CronError::InvalidDate)?;
        let ambiguous = self.0.time_zone().to_ambiguous_zoned(dt);
        Ok(match ambiguous.offset() {
            jiff::tz::AmbiguousOffset::Unambiguous { .. } => {
                Resolution::Single(Moment(ambiguous.unambiguous().map_err(|_| CronError::InvalidTime)?))
            }
            jiff::tz::AmbiguousOffset::Fold { .. } => Resolution::Ambiguous(
                Moment(ambiguous.clone().earlier().map_err(|_| CronError::InvalidTime)?),
                Moment(ambiguous.later().map_err(|_| CronError::InvalidTime)?),
            ),
            jiff::tz::AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0.checked_add(SignedDuration::from_secs(seconds)).ok().map(Moment)
    }

    fn cmp_instant(&self, other: &Self) -> std::cmp::Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}

#[cfg(test)]
mod tests;
