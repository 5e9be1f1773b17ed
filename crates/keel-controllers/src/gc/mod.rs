//! The garbage collector's loop: metadata watches of every listable resource the API serves (found by
//! discovery, events aside) keep a [`graph::Graph`] of owners and dependents, and each object whose
//! decision may have changed is acted on: dependents of deleted owners are deleted, orphaned owners let their
//! dependents go, foreground deletions wait for their blocking dependents. Nothing is deleted before every
//! watch has listed once, and an owner missing from the graph is confirmed gone by a live read first.

pub mod graph;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::ignore_gone;
use crate::Error;
use graph::{Decision, Graph, Item, FOREGROUND, ORPHAN};

struct Update {
    resource: usize,
    event: Event<PartialObjectMeta<DynamicObject>>,
}

struct Collector {
    client: Client,
    discovery: Discovery,
    /// Every resource watched so far (an index is a resource for good; one no longer served has its watch
    /// stopped).
    resources: Vec<(ApiResource, ApiCapabilities)>,
    watches: Vec<Option<tokio::task::JoinHandle<()>>>,
    graph: Graph,
    /// Per resource: listed at least once; the uids seen during a relist in progress.
    synced: Vec<bool>,
    relisting: Vec<Option<HashSet<String>>>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
}

/// How often discovery is run again, so that resources served since (custom resources) are watched too,
/// as kube's garbage collector resyncs its monitors.
const REDISCOVER_EVERY: Duration = Duration::from_secs(10);

pub async fn run(client: Client) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::channel::<Update>(4096);
    let mut gc = Collector {
        discovery: Discovery::new(client.clone()),
        client,
        resources: Vec::new(),
        watches: Vec::new(),
        graph: Graph::default(),
        synced: Vec::new(),
        relisting: Vec::new(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
    };
    gc.rediscover(&tx).await?;
    tracing::info!(resources = gc.resources.len(), "garbage collector watching");
    let mut rediscover = tokio::time::interval(REDISCOVER_EVERY);
    rediscover.tick().await;
    loop {
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else { return Ok(()) };
                gc.observe(update);
                while let Ok(more) = rx.try_recv() {
                    gc.observe(more);
                }
                if gc.synced.iter().all(|s| *s) {
                    gc.drain().await;
                }
            }
            _ = rediscover.tick() => {
                if let Err(e) = gc.rediscover(&tx).await {
                    tracing::debug!(error = %e, "garbage collector discovery failed; it retries");
                }
            }
        }
    }
}

/// Watches `ar`'s objects' metadata, sending every event as resource `i`.
fn watch(client: &Client, i: usize, ar: &ApiResource, tx: &mpsc::Sender<Update>) -> tokio::task::JoinHandle<()> {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), ar);
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            match e {
                Ok(event) => {
                    if tx.send(Update { resource: i, event }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "garbage collector watch failed; it retries");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

impl Collector {
    /// Runs discovery: resources served since the last run are watched, those no longer served are not.
    async fn rediscover(&mut self, tx: &mpsc::Sender<Update>) -> Result<(), Error> {
        let discovery = Discovery::new(self.client.clone()).run().await?;
        let mut served = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let watchable = caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::WATCH);
                if watchable && caps.supports_operation(verbs::DELETE) && ar.kind != "Event" {
                    served.push((ar, caps));
                }
            }
        }
        let same = |a: &ApiResource, b: &ApiResource| a.api_version == b.api_version && a.plural == b.plural;
        for (i, (ar, _)) in self.resources.iter().enumerate() {
            if self.watches[i].is_some() && !served.iter().any(|(s, _)| same(s, ar)) {
                tracing::info!(resource = %ar.plural, group = %ar.group, "garbage collector stops watching");
                if let Some(w) = self.watches[i].take() {
                    w.abort();
                }
                self.synced[i] = true;
            }
        }
        let first = self.watches.is_empty();
        for (ar, caps) in served {
            let known = self.resources.iter().enumerate().any(|(i, (r, _))| same(r, &ar) && self.watches[i].is_some());
            if !known {
                let i = self.resources.len();
                if !first {
                    tracing::info!(resource = %ar.plural, group = %ar.group, "garbage collector starts watching");
                }
                self.watches.push(Some(watch(&self.client, i, &ar, tx)));
                self.resources.push((ar, caps));
                self.synced.push(false);
                self.relisting.push(None);
            }
        }
        self.discovery = discovery;
        Ok(())
    }

    fn mark(&mut self, uids: Vec<String>) {
        for uid in uids {
            if self.queued.insert(uid.clone()) {
                self.queue.push_back(uid);
            }
        }
    }

    fn observe(&mut self, Update { resource, event }: Update) {
        match event {
            Event::Init => self.relisting[resource] = Some(HashSet::new()),
            Event::InitApply(o) | Event::Apply(o) => {
                let meta = o.metadata;
                let uid = meta.uid.clone().unwrap_or_default();
                if let Some(seen) = self.relisting[resource].as_mut() {
                    seen.insert(uid.clone());
                }
                let item = Item {
                    resource,
                    namespace: meta.namespace,
                    name: meta.name.unwrap_or_default(),
                    uid,
                    owners: meta.owner_references.unwrap_or_default(),
                    deleting: meta.deletion_timestamp.is_some(),
                    finalizers: meta.finalizers.unwrap_or_default(),
                };
                let dirty = self.graph.upsert(item);
                self.mark(dirty);
            }
            Event::Delete(o) => {
                let dirty = self.graph.remove(o.metadata.uid.as_deref().unwrap_or_default());
                self.mark(dirty);
            }
            Event::InitDone => {
                let seen = self.relisting[resource].take().unwrap_or_default();
                let gone: Vec<String> = self
                    .graph
                    .uids()
                    .filter(|u| !seen.contains(*u) && self.graph.get(u).is_some_and(|i| i.resource == resource))
                    .cloned()
                    .collect();
                for uid in gone {
                    let dirty = self.graph.remove(&uid);
                    self.mark(dirty);
                }
                self.synced[resource] = true;
                // After a relist, look at everything again.
                let all: Vec<String> = self.graph.uids().cloned().collect();
                self.mark(all);
            }
        }
    }

    async fn drain(&mut self) {
        while let Some(uid) = self.queue.pop_front() {
            self.queued.remove(&uid);
            if let Err(e) = self.act(&uid).await {
                tracing::info!(%uid, error = %e, "garbage collection step failed");
            }
        }
    }

    fn api_for(&self, item: &Item) -> Api<DynamicObject> {
        let (ar, caps) = &self.resources[item.resource];
        match (&caps.scope, &item.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Whether the owner `r` of `dependent` is really gone (absent, or replaced by another uid). An owner
    /// whose kind the API does not serve counts as present: never delete on a guess.
    async fn confirmed_gone(&self, dependent: &Item, r: &OwnerReference) -> Result<bool, Error> {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let Some((ar, caps)) = self.discovery.resolve_gvk(&GroupVersionKind::gvk(group, version, &r.kind)) else {
            return Ok(false);
        };
        let api: Api<DynamicObject> = match (&caps.scope, &dependent.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        };
        Ok(match api.get_metadata_opt(&r.name).await? {
            None => true,
            Some(o) => o.metadata.uid.as_deref() != Some(r.uid.as_str()),
        })
    }

    async fn all_gone(&self, item: &Item, owners: &[OwnerReference]) -> Result<bool, Error> {
        for r in owners {
            if !self.confirmed_gone(item, r).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn delete(&self, item: &Item, foreground: bool) -> Result<(), Error> {
        let policy = if foreground { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(item.uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        tracing::debug!(name = %item.name, kind = %self.resources[item.resource].0.kind, foreground, "collecting");
        match self.api_for(item).delete(&item.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn drop_owners(&self, item: &Item, owners: &[String]) -> Result<(), Error> {
        let left: Vec<&OwnerReference> = item.owners.iter().filter(|o| !owners.contains(&o.uid)).collect();
        let patch = json!({"metadata": {"ownerReferences": left}});
        ignore_gone(
            self.api_for(item).patch(&item.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop),
        )
    }

    async fn remove_finalizer(&self, item: &Item, finalizer: &str) -> Result<(), Error> {
        let left: Vec<&String> = item.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": left}});
        ignore_gone(
            self.api_for(item).patch(&item.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop),
        )
    }

    async fn act(&self, uid: &str) -> Result<(), Error> {
        let Some(item) = self.graph.get(uid) else { return Ok(()) };
        match self.graph.decide(uid) {
            Decision::Nothing => Ok(()),
            Decision::Delete { foreground, confirm_gone } => {
                if self.all_gone(item, &confirm_gone).await? {
                    self.delete(item, foreground).await?;
                }
                Ok(())
            }
            Decision::DropOwners { owners, confirm_gone } => {
                if self.all_gone(item, &confirm_gone).await? {
                    self.drop_owners(item, &owners).await?;
                }
                Ok(())
            }
            Decision::Orphan { dependents } => {
                for d in dependents.iter().filter_map(|d| self.graph.get(d)) {
                    self.drop_owners(d, &[uid.to_string()]).await?;
                }
                if dependents.is_empty() {
                    self.remove_finalizer(item, ORPHAN).await?;
                }
                Ok(())
            }
            Decision::Foreground { delete, done } => {
                for (d, blocks) in &delete {
                    if let Some(d) = self.graph.get(d) {
                        self.delete(d, *blocks).await?;
                    }
                }
                if done {
                    self.remove_finalizer(item, FOREGROUND).await?;
                }
                Ok(())
            }
        }
    }
}
