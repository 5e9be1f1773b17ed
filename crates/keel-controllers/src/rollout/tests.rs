use super::*;
use k8s_openapi::api::apps::v1::{DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn t0() -> Timestamp {
    "2025-01-01T00:00:00Z".parse().expect("timestamp")
}

fn app_labels() -> BTreeMap<String, String> {
    [("app".to_string(), "web".to_string())].into()
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(app_labels()), ..ObjectMeta::default() }),
        spec: Some(PodSpec {
            containers: vec![Container { name: "app".into(), image: Some(image.into()), ..Container::default() }],
            ..PodSpec::default()
        }),
    }
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-web".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(app_labels()), ..LabelSelector::default() },
            template: template(image),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn spec_mut(d: &mut Deployment) -> &mut DeploymentSpec {
    d.spec.as_mut().expect("spec")
}

/// A spec change as the API server records it: the generation goes up.
fn edit(d: &mut Deployment, change: impl FnOnce(&mut DeploymentSpec)) {
    change(spec_mut(d));
    d.metadata.generation = Some(d.metadata.generation.unwrap_or(0) + 1);
}

fn rolling(d: &mut Deployment, max_surge: IntOrString, max_unavailable: IntOrString) {
    spec_mut(d).strategy = Some(DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(max_surge),
            max_unavailable: Some(max_unavailable),
        }),
    });
}

fn image_of(rs: &ReplicaSet) -> Option<&str> {
    rs.spec.as_ref()?.template.as_ref()?.spec.as_ref()?.containers.first()?.image.as_deref()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_of(rs: &ReplicaSet) -> ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn progressing(d: &Deployment) -> Option<DeploymentCondition> {
    conditions::get(d.status.as_ref()?, PROGRESSING).cloned()
}

fn progressing_reason(d: &Deployment) -> Option<String> {
    progressing(d).and_then(|c| c.reason)
}

/// What `kubectl rollout status` waits for: Ok(true) when done, an error on a timed-out rollout.
fn rollout_status(d: &Deployment) -> Result<bool, String> {
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Ok(false);
    }
    if let Some(c) = progressing(d).filter(|c| c.reason.as_deref() == Some(conditions::PROGRESS_DEADLINE_EXCEEDED)) {
        return Err(format!("deployment {:?} exceeded its progress deadline: {:?}", d.metadata.name, c.message));
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    Ok(updated >= replicas
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= updated)
}

/// The cluster as the controller sees it, with a crude ReplicaSet controller and kubelet.
struct Cluster {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    now: Timestamp,
    /// Pods removed by a scale-down stay terminating this many passes of [`Cluster::converge`] each.
    slow_termination: bool,
}

impl Cluster {
    fn new(d: Deployment) -> Cluster {
        Cluster { d, rss: Vec::new(), now: t0(), slow_termination: false }
    }

    fn plan(&self) -> Plan {
        plan(&self.d, &self.rss, self.now)
    }

    fn apply(&mut self, plan: &Plan) {
        if let Some(rs) = &plan.create {
            let mut rs = rs.clone();
            assert!(!self.rss.iter().any(|r| r.metadata.name == rs.metadata.name), "created twice");
            rs.metadata.creation_timestamp = Some(Time(self.now));
            rs.metadata.generation = Some(1);
            rs.metadata.resource_version = Some("1".into());
            rs.status = Some(ReplicaSetStatus::default());
            self.rss.push(rs);
        }
        for update in &plan.update {
            let rs = self.rss.iter_mut().find(|r| r.metadata.name.as_ref() == Some(&update.name)).expect("updated rs");
            update.apply(rs);
            rs.metadata.generation = Some(rs.metadata.generation.unwrap_or(0) + 1);
        }
        for name in &plan.delete {
            self.rss.retain(|r| r.metadata.name.as_ref() != Some(name));
        }
        if let Some(revision) = &plan.deployment_revision {
            self.d.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION.into(), revision.clone());
        }
        if let Some(status) = &plan.status {
            // Through JSON, as the API server would store it.
            let json = serde_json::to_string(status).expect("status json");
            self.d.status = Some(serde_json::from_str(&json).expect("status back"));
        }
    }

    fn reconcile(&mut self) -> Plan {
        let plan = self.plan();
        self.apply(&plan);
        plan
    }

    /// The ReplicaSet controller catches up with spec.replicas: new pods start unready, removed pods
    /// are the unavailable ones first.
    fn converge(&mut self) {
        for rs in &mut self.rss {
            let want = spec_replicas(rs);
            let generation = rs.metadata.generation;
            let status = rs.status.get_or_insert_with(ReplicaSetStatus::default);
            let terminating = status.terminating_replicas.unwrap_or(0);
            status.terminating_replicas = Some((terminating - 1).max(0));
            if status.replicas > want {
                if self.slow_termination {
                    status.terminating_replicas =
                        Some(status.terminating_replicas.unwrap_or(0) + status.replicas - want);
                }
                status.available_replicas = Some(status.available_replicas.unwrap_or(0).min(want));
                status.ready_replicas = Some(status.ready_replicas.unwrap_or(0).min(want));
            }
            status.replicas = want;
            status.observed_generation = generation;
        }
    }

    /// Up to `count` pods that are not yet available become ready and available.
    fn make_available(&mut self, mut count: i32) {
        for rs in &mut self.rss {
            let status = rs.status.get_or_insert_with(ReplicaSetStatus::default);
            let available = status.available_replicas.unwrap_or(0);
            let n = count.min(status.replicas - available).max(0);
            status.available_replicas = Some(available + n);
            status.ready_replicas = Some(status.ready_replicas.unwrap_or(0) + n);
            count -= n;
        }
    }

    fn tick(&mut self, seconds: i64) {
        self.now = self.now.checked_add(jiff::SignedDuration::from_secs(seconds)).expect("time");
    }

    fn available(&self) -> i32 {
        self.rss.iter().map(|rs| status_of(rs).available_replicas.unwrap_or(0)).sum()
    }

    fn total_spec(&self) -> i32 {
        self.rss.iter().map(spec_replicas).sum()
    }

    fn by_image(&self, image: &str) -> Vec<&ReplicaSet> {
        self.rss.iter().filter(|rs| image_of(rs) == Some(image)).collect()
    }

    /// Reconciles, converges and lets `per_step` pods become available until `kubectl rollout status`
    /// would succeed and a pass changes nothing; checks the rolling-update limits at every step, also on
    /// a second pass made before any status catches up.
    fn roll_out(&mut self, per_step: i32) -> usize {
        let limits = limits(&self.d);
        let replicas = self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let min_available = replicas - limits.max_unavailable;
        let start_available = self.available() >= min_available;
        for step in 0..500 {
            let first = self.reconcile();
            assert!(self.total_spec() <= replicas + limits.max_surge, "step {step}: surge exceeded: {first:?}");
            let second = self.reconcile();
            assert!(self.total_spec() <= replicas + limits.max_surge, "step {step}: surge exceeded: {second:?}");
            self.converge();
            if start_available {
                assert!(
                    self.available() >= min_available,
                    "step {step}: {} available: {first:?} {second:?}",
                    self.available()
                );
            }
            if first.is_empty() && second.is_empty() && rollout_status(&self.d) == Ok(true) {
                return step;
            }
            self.make_available(per_step);
            self.tick(5);
        }
        panic!("rollout did not finish: {:?} {:?}", self.d.status, self.rss);
    }
}

fn replica_set(name: &str, image: &str, replicas: i32, available: i32, revision: i64, age_seconds: i64) -> ReplicaSet {
    let mut labels = app_labels();
    labels.insert(POD_TEMPLATE_HASH.into(), name.rsplit('-').next().unwrap_or_default().into());
    let mut template = template(image);
    template.metadata.as_mut().expect("metadata").labels = Some(labels.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(labels.clone()),
            annotations: Some([(REVISION.to_string(), revision.to_string())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: "uid-web".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            creation_timestamp: Some(Time(t0().checked_sub(jiff::SignedDuration::from_secs(age_seconds)).expect("t"))),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels), ..LabelSelector::default() },
            template: Some(template),
            ..ReplicaSetSpec::default()
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            available_replicas: Some(available),
            ready_replicas: Some(available),
            observed_generation: Some(1),
            ..ReplicaSetStatus::default()
        }),
    }
}

/// A Deployment of `replicas` running `image`, rolled out completely.
fn settled(replicas: i32, image: &str) -> Cluster {
    let mut cluster = Cluster::new(deployment(replicas, image));
    cluster.roll_out(replicas.max(1));
    cluster
}

#[test]
fn first_reconcile_creates_the_replica_set_with_all_replicas() {
    let d = deployment(3, "nginx:1");
    let plan = plan(&d, &[], t0());
    let rs = plan.create.expect("a replica set");
    let hash = pod_template_hash(&template("nginx:1"), None);
    assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
    assert_eq!(rs.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(spec_replicas(&rs), 3);
    let mut labels = app_labels();
    labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
    assert_eq!(rs.metadata.labels.as_ref(), Some(&labels));
    let spec = rs.spec.as_ref().expect("spec");
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels));
    assert_eq!(spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref()), Some(&labels));
    let owner = &rs.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str()),
        ("apps/v1", "Deployment", "web")
    );
    assert_eq!((owner.uid.as_str(), owner.controller, owner.block_owner_deletion), ("uid-web", Some(true), Some(true)));
    assert_eq!(annotation(&rs, REVISION), Some("1"));
    assert_eq!(annotation(&rs, DESIRED_REPLICAS), Some("3"));
    assert_eq!(annotation(&rs, MAX_REPLICAS), Some("4"));
    assert_eq!(plan.deployment_revision.as_deref(), Some("1"));
    assert!(plan.update.is_empty() && plan.delete.is_empty());

    let status = plan.status.expect("status");
    assert_eq!(status.observed_generation, Some(1));
    let progressing = conditions::get(&status, PROGRESSING).expect("progressing");
    assert_eq!((progressing.status.as_str(), progressing.reason.as_deref()), (TRUE, Some("NewReplicaSetCreated")));
    assert_eq!(progressing.message, Some(format!("Created new replica set \"web-{hash}\"")));
    let available = conditions::get(&status, AVAILABLE).expect("available");
    assert_eq!((available.status.as_str(), available.reason.as_deref()), (FALSE, Some("MinimumReplicasUnavailable")));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(601)));
}

#[test]
fn first_rollout_completes_and_reports_it() {
    let cluster = settled(3, "nginx:1");
    let status = cluster.d.status.clone().expect("status");
    assert_eq!(
        (status.replicas, status.updated_replicas, status.ready_replicas, status.available_replicas),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(status.unavailable_replicas, Some(0));
    assert_eq!(progressing_reason(&cluster.d).as_deref(), Some("NewReplicaSetAvailable"));
    let available = conditions::get(&status, AVAILABLE).expect("available");
    assert_eq!(available.reason.as_deref(), Some("MinimumReplicasAvailable"));
    assert_eq!(available.message.as_deref(), Some("Deployment has minimum availability."));
    assert_eq!(cluster.plan(), Plan::default());
}

fn rolling_update(max_surge: IntOrString, max_unavailable: IntOrString, per_step: i32) {
    let mut cluster = settled(10, "nginx:1");
    rolling(&mut cluster.d, max_surge, max_unavailable);
    cluster.roll_out(10);
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    let steps = cluster.roll_out(per_step);
    assert!(steps > 1, "a rolling update takes several steps");
    let old = cluster.by_image("nginx:1");
    let new = cluster.by_image("nginx:2");
    assert_eq!((old.len(), new.len()), (1, 1));
    assert_eq!((spec_replicas(old[0]), status_of(old[0]).replicas), (0, 0));
    assert_eq!((spec_replicas(new[0]), status_of(new[0]).available_replicas), (10, Some(10)));
    assert_eq!(annotation(new[0], REVISION), Some("2"));
    assert_eq!(cluster.d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).map(String::as_str), Some("2"));
    assert_eq!(progressing_reason(&cluster.d).as_deref(), Some("NewReplicaSetAvailable"));
}

#[test]
fn rolling_update_with_default_limits_keeps_availability_and_surge() {
    rolling_update(IntOrString::String("25%".into()), IntOrString::String("25%".into()), 2);
}

#[test]
fn rolling_update_without_surge() {
    rolling_update(IntOrString::Int(0), IntOrString::Int(1), 1);
}

#[test]
fn rolling_update_without_unavailability() {
    rolling_update(IntOrString::Int(1), IntOrString::Int(0), 1);
}

#[test]
fn rolling_update_first_step_creates_surge_and_scales_old_down_by_max_unavailable() {
    let mut cluster = settled(10, "nginx:1");
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    let plan = cluster.plan();
    assert_eq!(plan.create.as_ref().map(spec_replicas), Some(3));
    assert_eq!(plan.create.as_ref().and_then(|rs| annotation(rs, REVISION)), Some("2"));
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].replicas, 8);
}

#[test]
fn rolling_update_with_unhealthy_old_pods_removes_those_first() {
    // 10 old pods, 4 of them unavailable: they go without waiting for new pods.
    let mut d = deployment(10, "nginx:2");
    d.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
    let old = replica_set("web-old", "nginx:1", 10, 6, 1, 100);
    let plan = plan(&d, &[old], t0());
    assert_eq!(plan.create.as_ref().map(spec_replicas), Some(3));
    // maxScaledDown = 13 - 8 - 3 = 2 unhealthy pods go, and no available one (6 < 8).
    assert_eq!(plan.update.iter().map(|u| (u.name.as_str(), u.replicas)).collect::<Vec<_>>(), [("web-old", 8)]);
}

#[test]
fn recreate_never_runs_old_and_new_pods_together() {
    let mut d = deployment(3, "nginx:1");
    spec_mut(&mut d).strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    let mut cluster = Cluster::new(d);
    cluster.roll_out(3);
    cluster.slow_termination = true;
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    for step in 0..50 {
        let plan = cluster.reconcile();
        let old_pods: i32 = cluster
            .by_image("nginx:1")
            .iter()
            .map(|rs| {
                let s = status_of(rs);
                s.replicas + s.terminating_replicas.unwrap_or(0)
            })
            .sum();
        let new_wanted: i32 = cluster.by_image("nginx:2").iter().map(|rs| spec_replicas(rs)).sum();
        assert!(old_pods == 0 || new_wanted == 0, "step {step}: {old_pods} old pods while new wants {new_wanted}");
        cluster.converge();
        let new_pods: i32 = cluster.by_image("nginx:2").iter().map(|rs| status_of(rs).replicas).sum();
        assert!(old_pods == 0 || new_pods == 0, "step {step}");
        if plan.is_empty() && rollout_status(&cluster.d) == Ok(true) {
            let new = cluster.by_image("nginx:2");
            assert_eq!(spec_replicas(new[0]), 3);
            assert_eq!(spec_replicas(cluster.by_image("nginx:1")[0]), 0);
            return;
        }
        cluster.make_available(3);
        cluster.tick(5);
    }
    panic!("recreate did not finish: {:?}", cluster.rss);
}

#[test]
fn recreate_creates_the_new_replica_set_with_all_replicas_once_old_pods_are_gone() {
    let mut d = deployment(4, "nginx:2");
    spec_mut(&mut d).strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    let mut old = replica_set("web-old", "nginx:1", 4, 4, 1, 100);
    let first = plan(&d, std::slice::from_ref(&old), t0());
    assert!(first.create.is_none());
    assert_eq!(first.update.iter().map(|u| u.replicas).collect::<Vec<_>>(), [0]);
    first.update[0].apply(&mut old);
    // Not yet observed: the old pods still run.
    assert!(plan(&d, std::slice::from_ref(&old), t0()).create.is_none());
    old.status = Some(ReplicaSetStatus { replicas: 0, observed_generation: Some(2), ..ReplicaSetStatus::default() });
    let third = plan(&d, &[old], t0());
    assert_eq!(third.create.as_ref().map(spec_replicas), Some(4));
    assert_eq!(third.create.as_ref().and_then(|rs| annotation(rs, MAX_REPLICAS)), Some("4"));
}

#[test]
fn rollback_by_template_makes_the_old_replica_set_new_again() {
    let mut cluster = settled(4, "nginx:1");
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    cluster.roll_out(2);
    assert_eq!(cluster.rss.len(), 2);
    let first_name = cluster.by_image("nginx:1")[0].metadata.name.clone().expect("name");

    // `kubectl rollout undo`: the old ReplicaSet's template, hash label removed, back in the Deployment.
    edit(&mut cluster.d, |s| s.template = template("nginx:1"));
    let plan = cluster.plan();
    assert!(plan.create.is_none(), "the old replica set is reused");
    assert_eq!(plan.deployment_revision.as_deref(), Some("3"));
    let update = plan.update.iter().find(|u| u.name == first_name).expect("old rs updated");
    assert_eq!(update.annotations.get(REVISION).map(String::as_str), Some("3"));
    assert_eq!(update.annotations.get(REVISION_HISTORY).map(String::as_str), Some("1"));
    assert_eq!(update.replicas, 1, "grows by maxSurge");

    cluster.roll_out(2);
    assert_eq!(cluster.rss.len(), 2);
    let back = cluster.by_image("nginx:1");
    assert_eq!((back[0].metadata.name.as_ref(), spec_replicas(back[0])), (Some(&first_name), 4));
    assert_eq!(annotation(back[0], REVISION), Some("3"));
    assert_eq!(spec_replicas(cluster.by_image("nginx:2")[0]), 0);
}

#[test]
fn revision_history_limit_deletes_the_oldest_empty_replica_sets() {
    let mut d = deployment(3, "nginx:5");
    spec_mut(&mut d).revision_history_limit = Some(2);
    let mut owned: Vec<ReplicaSet> =
        (1..=4).map(|r| replica_set(&format!("web-r{r}"), &format!("nginx:{r}"), 0, 0, r, 1000 - r * 10)).collect();
    owned.push(replica_set("web-r5", "nginx:5", 3, 3, 5, 10));
    let mut cluster = Cluster::new(d);
    cluster.rss = owned.clone();
    // The first pass records the complete status; cleanup needs a complete rollout as read.
    assert!(cluster.reconcile().delete.is_empty());
    assert_eq!(cluster.plan().delete, ["web-r1", "web-r2"]);

    // An old ReplicaSet that still has a pod is kept (and not replaced by a younger one).
    cluster.rss = owned;
    cluster.rss[0].status.as_mut().expect("status").replicas = 1;
    assert_eq!(cluster.plan().delete, ["web-r2"]);
}

#[test]
fn paused_deployment_rolls_nothing_out_but_scales() {
    let mut cluster = settled(4, "nginx:1");
    edit(&mut cluster.d, |s| {
        s.paused = Some(true);
        s.template = template("nginx:2");
    });
    let plan = cluster.reconcile();
    assert!(plan.create.is_none() && plan.update.is_empty() && plan.delete.is_empty());
    let condition = progressing(&cluster.d).expect("progressing");
    assert_eq!((condition.status.as_str(), condition.reason.as_deref()), (UNKNOWN, Some("DeploymentPaused")));
    assert_eq!(condition.message.as_deref(), Some("Deployment is paused"));
    assert_eq!(plan.requeue_after, None);

    edit(&mut cluster.d, |s| s.replicas = Some(6));
    let plan = cluster.reconcile();
    assert!(plan.create.is_none());
    assert_eq!(plan.update.iter().map(|u| u.replicas).collect::<Vec<_>>(), [6]);
    assert_eq!(plan.update[0].annotations.get(DESIRED_REPLICAS).map(String::as_str), Some("6"));

    edit(&mut cluster.d, |s| s.paused = Some(false));
    let plan = cluster.reconcile();
    assert!(plan.create.is_some(), "resumed: the rollout starts");
    assert_eq!(progressing_reason(&cluster.d).as_deref(), Some("NewReplicaSetCreated"));
    cluster.roll_out(3);
    assert_eq!(spec_replicas(cluster.by_image("nginx:2")[0]), 6);
}

#[test]
fn resuming_a_stalled_rollout_reports_deployment_resumed() {
    let mut cluster = settled(4, "nginx:1");
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    cluster.reconcile();
    cluster.converge();
    edit(&mut cluster.d, |s| s.paused = Some(true));
    cluster.reconcile();
    assert_eq!(progressing_reason(&cluster.d).as_deref(), Some("DeploymentPaused"));
    cluster.tick(3600);
    edit(&mut cluster.d, |s| s.paused = Some(false));
    let plan = cluster.reconcile();
    let condition = progressing(&cluster.d).expect("progressing");
    assert_eq!((condition.status.as_str(), condition.reason.as_deref()), (UNKNOWN, Some("DeploymentResumed")));
    assert_eq!(condition.last_update_time, Some(Time(cluster.now)), "time paused does not count");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(601)));
}

#[test]
fn scaling_up_during_a_rollout_is_proportional() {
    let mut d = deployment(20, "nginx:2");
    d.metadata.annotations = Some([(REVISION.to_string(), "2".to_string())].into());
    let sized = |mut rs: ReplicaSet| {
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(DESIRED_REPLICAS.into(), "10".into());
        annotations.insert(MAX_REPLICAS.into(), "13".into());
        rs
    };
    let old = sized(replica_set("web-old", "nginx:1", 8, 8, 1, 100));
    let new = sized(replica_set("web-new", "nginx:2", 5, 2, 2, 50));
    let plan = plan(&d, &[old.clone(), new.clone()], t0());
    assert!(plan.create.is_none());
    let sizes: BTreeMap<&str, i32> = plan.update.iter().map(|u| (u.name.as_str(), u.replicas)).collect();
    // 20 + 25% surge = 25 pods: 8/13 and 5/13 of them.
    assert_eq!(sizes, [("web-new", 10), ("web-old", 15)].into());
    for update in &plan.update {
        assert_eq!(update.annotations.get(DESIRED_REPLICAS).map(String::as_str), Some("20"));
        assert_eq!(update.annotations.get(MAX_REPLICAS).map(String::as_str), Some("25"));
    }

    // Down to 5 (max 7): the older one gives up its share first.
    let mut d = deployment(5, "nginx:2");
    d.metadata.annotations = Some([(REVISION.to_string(), "2".to_string())].into());
    let plan = super::plan(&d, &[old, new], t0());
    let sizes: BTreeMap<&str, i32> = plan.update.iter().map(|u| (u.name.as_str(), u.replicas)).collect();
    assert_eq!(sizes, [("web-new", 3), ("web-old", 4)].into());
}

#[test]
fn scaling_a_single_active_replica_set_sets_it_to_replicas() {
    let mut cluster = settled(10, "nginx:1");
    edit(&mut cluster.d, |s| s.replicas = Some(4));
    let plan = cluster.plan();
    assert_eq!(plan.update.iter().map(|u| u.replicas).collect::<Vec<_>>(), [4]);
    cluster.roll_out(4);
    assert_eq!(cluster.d.status.as_ref().and_then(|s| s.replicas), Some(4));
}

#[test]
fn scaling_during_a_rollout_then_finishing_it() {
    let mut cluster = settled(10, "nginx:1");
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    for _ in 0..3 {
        cluster.reconcile();
        cluster.converge();
        cluster.make_available(2);
    }
    edit(&mut cluster.d, |s| s.replicas = Some(20));
    let plan = cluster.reconcile();
    assert!(plan.update.len() == 2, "both replica sets grow: {plan:?}");
    assert!(cluster.total_spec() <= 25);
    cluster.converge();
    cluster.roll_out(4);
    assert_eq!(spec_replicas(cluster.by_image("nginx:2")[0]), 20);
    assert_eq!(spec_replicas(cluster.by_image("nginx:1")[0]), 0);
}

#[test]
fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let mut cluster = settled(4, "nginx:1");
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    // The new pods never become available.
    for _ in 0..10 {
        cluster.reconcile();
        cluster.converge();
        cluster.tick(1);
    }
    let stalled = cluster.plan();
    assert!(stalled.is_empty(), "nothing more to do: {stalled:?}");
    let since = progressing(&cluster.d).and_then(|c| c.last_update_time).expect("progress time").0;
    let elapsed = cluster.now.as_second() - since.as_second();
    assert_eq!(stalled.requeue_after, Some(Duration::from_secs((600 - elapsed + 1) as u64)));
    assert_eq!(rollout_status(&cluster.d), Ok(false));

    cluster.tick(600);
    let plan = cluster.reconcile();
    let condition = progressing(&cluster.d).expect("progressing");
    assert_eq!((condition.status.as_str(), condition.reason.as_deref()), (FALSE, Some("ProgressDeadlineExceeded")));
    let new_name = cluster.by_image("nginx:2")[0].metadata.name.clone().expect("name");
    assert_eq!(condition.message, Some(format!("ReplicaSet \"{new_name}\" has timed out progressing.")));
    assert_eq!(plan.requeue_after, None);
    assert!(rollout_status(&cluster.d).is_err());
    assert!(cluster.plan().is_empty(), "the timeout is reported once");

    // Pods that become available later complete the rollout after all.
    cluster.roll_out(2);
    assert_eq!(progressing_reason(&cluster.d).as_deref(), Some("NewReplicaSetAvailable"));
}

#[test]
fn unchanged_status_is_not_written_again() {
    let mut cluster = settled(3, "nginx:1");
    let before = cluster.d.status.clone().expect("status");
    cluster.tick(3600);
    let plan = cluster.plan();
    assert_eq!(plan.status, None);
    assert!(plan.is_empty());
    // Zero counts written as absent (as Go clients do) are the same status.
    let mut d = deployment(0, "nginx:1");
    let first = super::plan(&d, &[], t0());
    let mut status = first.status.clone().expect("status");
    status.replicas = None;
    status.available_replicas = None;
    d.status = Some(status);
    d.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
    let rs = first.create.expect("rs");
    let again = super::plan(&d, &[rs], t0());
    assert_eq!(again.status.as_ref().map(|s| s.replicas), None, "{again:?}");
    assert_eq!(cluster.d.status, Some(before));
}

#[test]
fn conditions_keep_their_transition_time_while_their_status_holds() {
    let mut cluster = settled(4, "nginx:1");
    let available_since = conditions::get(cluster.d.status.as_ref().expect("status"), AVAILABLE)
        .and_then(|c| c.last_transition_time.clone());
    cluster.tick(100);
    edit(&mut cluster.d, |s| s.template = template("nginx:2"));
    cluster.roll_out(1);
    let status = cluster.d.status.as_ref().expect("status");
    assert_eq!(conditions::get(status, AVAILABLE).and_then(|c| c.last_transition_time.clone()), available_since);
}

#[test]
fn percentages_round_surge_up_and_unavailability_down() {
    let pct = |s: &str| IntOrString::String(s.into());
    assert_eq!(resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10), (3, 2));
    assert_eq!(resolve_fenceposts(None, None, 10), (3, 2));
    assert_eq!(resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 1), (1, 0));
    assert_eq!(resolve_fenceposts(Some(&pct("0%")), Some(&pct("0%")), 10), (0, 1));
    assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 10), (0, 1));
    assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&pct("bogus")), 10), (2, 2));
    assert_eq!(scaled_value(&pct("33%"), 10, true), Some(4));
    assert_eq!(scaled_value(&pct("33%"), 10, false), Some(3));
    assert_eq!(scaled_value(&pct("5"), 10, false), None);

    let mut d = deployment(10, "x");
    assert_eq!(limits(&d), Limits { max_surge: 3, max_unavailable: 2 });
    rolling(&mut d, IntOrString::Int(1), IntOrString::Int(50));
    assert_eq!(limits(&d), Limits { max_surge: 1, max_unavailable: 10 }, "never more than replicas");
    spec_mut(&mut d).replicas = Some(0);
    assert_eq!(limits(&d).max_unavailable, 0);
    spec_mut(&mut d).strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    assert_eq!(limits(&d), Limits { max_surge: 0, max_unavailable: 0 });
}

#[test]
fn a_deployment_being_deleted_gets_nothing() {
    let mut d = deployment(3, "nginx:1");
    d.metadata.deletion_timestamp = Some(Time(t0()));
    assert_eq!(plan(&d, &[], t0()), Plan::default());
}

#[test]
fn missing_and_invalid_fields_do_not_panic() {
    assert_eq!(plan(&Deployment::default(), &[], t0()), Plan::default());
    // No selector: nothing is owned or created, only the generation is recorded.
    let mut d = deployment(3, "nginx:1");
    spec_mut(&mut d).selector = LabelSelector::default();
    d.metadata.generation = Some(4);
    let plan = super::plan(&d, &[replica_set("web-a", "nginx:1", 3, 3, 1, 10)], t0());
    assert!(plan.create.is_none() && plan.update.is_empty());
    assert_eq!(plan.status.and_then(|s| s.observed_generation), Some(4));
    // Missing replicas means 1; a ReplicaSet with nothing in it is not ours and is left alone.
    let mut d = deployment(1, "nginx:1");
    spec_mut(&mut d).replicas = None;
    spec_mut(&mut d).strategy = Some(DeploymentStrategy::default());
    let plan = super::plan(&d, &[ReplicaSet::default()], t0());
    assert_eq!(plan.create.as_ref().map(spec_replicas), Some(1));
    assert!(plan.update.is_empty());
    // Nonsense numbers.
    let mut d = deployment(-5, "nginx:1");
    spec_mut(&mut d).progress_deadline_seconds = Some(i32::MAX);
    spec_mut(&mut d).revision_history_limit = Some(-1);
    let mut rs = replica_set("web-a", "nginx:0", i32::MAX, -3, 7, 10);
    rs.metadata.annotations = Some([(REVISION.to_string(), "x".to_string())].into());
    let plan = super::plan(&d, &[rs], t0());
    assert!(plan.requeue_after.is_none());
}

#[test]
fn replica_sets_of_other_controllers_are_ignored() {
    let d = deployment(2, "nginx:1");
    let mut foreign = replica_set("web-x", "nginx:1", 2, 2, 1, 10);
    foreign.metadata.owner_references.as_mut().expect("owners")[0].uid = "someone-else".into();
    let plan = plan(&d, &[foreign], t0());
    assert!(plan.create.is_some(), "not ours, so not the new replica set");
    assert!(plan.update.is_empty());
}

#[test]
fn a_hash_collision_bumps_the_collision_count() {
    let d = deployment(2, "nginx:1");
    let hash = pod_template_hash(&template("nginx:1"), None);
    let squatter = replica_set(&format!("web-{hash}"), "nginx:0", 0, 0, 1, 10);
    let mut cluster = Cluster::new(d);
    cluster.rss = vec![squatter];
    let plan = cluster.reconcile();
    assert!(plan.create.is_none());
    assert_eq!(plan.status.as_ref().and_then(|s| s.collision_count), Some(1));
    let plan = cluster.reconcile();
    let created = plan.create.expect("created under another name");
    assert_eq!(created.metadata.name, Some(format!("web-{}", pod_template_hash(&template("nginx:1"), Some(1)))));
    cluster.roll_out(2);
    assert_eq!(cluster.d.status.as_ref().and_then(|s| s.collision_count), Some(1));
}

#[test]
fn deployment_annotations_are_copied_to_the_new_replica_set() {
    let mut d = deployment(1, "nginx:1");
    d.metadata.annotations = Some(
        [
            ("team".to_string(), "a".to_string()),
            ("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string()),
            (REVISION.to_string(), "9".to_string()),
        ]
        .into(),
    );
    let rs = plan(&d, &[], t0()).create.expect("rs");
    assert_eq!(annotation(&rs, "team"), Some("a"));
    assert_eq!(annotation(&rs, "kubectl.kubernetes.io/last-applied-configuration"), None);
    assert_eq!(annotation(&rs, REVISION), Some("1"));
}

#[test]
fn a_replica_failure_is_reported() {
    use k8s_openapi::api::apps::v1::ReplicaSetCondition;
    let mut cluster = settled(2, "nginx:1");
    cluster.rss[0].status.as_mut().expect("status").conditions = Some(vec![ReplicaSetCondition {
        type_: REPLICA_FAILURE.into(),
        status: TRUE.into(),
        reason: Some("FailedCreate".into()),
        message: Some("quota exceeded".into()),
        last_transition_time: Some(Time(t0())),
    }]);
    cluster.reconcile();
    let failure = conditions::get(cluster.d.status.as_ref().expect("status"), REPLICA_FAILURE).expect("failure");
    assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
    cluster.rss[0].status.as_mut().expect("status").conditions = None;
    cluster.reconcile();
    assert!(conditions::get(cluster.d.status.as_ref().expect("status"), REPLICA_FAILURE).is_none());
}

#[test]
fn update_merge_patch_carries_the_precondition() {
    let update = ReplicaSetUpdate {
        name: "web-a".into(),
        resource_version: Some("42".into()),
        replicas: 3,
        min_ready_seconds: 0,
        annotations: [(REVISION.to_string(), "2".to_string())].into(),
    };
    assert_eq!(
        update.merge_patch(),
        serde_json::json!({
            "metadata": { "resourceVersion": "42", "annotations": { REVISION: "2" } },
            "spec": { "replicas": 3, "minReadySeconds": 0 },
        })
    );
}
