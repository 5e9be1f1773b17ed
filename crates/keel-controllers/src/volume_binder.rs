//! The persistent volume controller's loop (the decisions are [`crate::volumes`]): on every change of a
//! claim, a volume or a class, and every 2 s, each claim and volume is looked at again — claims bound,
//! volumes provisioned, phases set, released volumes deleted per their reclaim policy — and the two
//! protection controllers let go of a claim no pod uses any more, and of a volume no longer bound.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use keel_api::kinds::storage::{PVC_PROTECTION, PV_PROTECTION};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::events;
use crate::reconciling::store_and_changes;
use crate::volumes::{claim_step, volume_step, ClaimStep, VolumeStep};
use crate::Error;

const COMPONENT: &str = "persistentvolume-controller";
const PASS: Duration = Duration::from_secs(2);

struct Binder {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    /// The last event recorded for a claim (by uid), so a waiting claim is told once.
    told: HashMap<String, String>,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let (claims, claim_changes) = store_and_changes(Api::<PersistentVolumeClaim>::all(client.clone())).await;
    let (volumes, volume_changes) = store_and_changes(Api::<PersistentVolume>::all(client.clone())).await;
    let (classes, _) = store_and_changes(Api::<StorageClass>::all(client.clone())).await;
    let (mut claim_rx, mut volume_rx) = (claim_changes.subscribe(), volume_changes.subscribe());
    let mut binder = Binder { client, claims, volumes, classes, told: HashMap::new() };
    let mut tick = tokio::time::interval(PASS);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = claim_rx.recv() => {}
            _ = volume_rx.recv() => {}
        }
        if let Err(e) = binder.pass().await {
            tracing::debug!(error = %e, "volume binding pass failed; the next one tries again");
        }
    }
}

impl Binder {
    async fn pass(&mut self) -> Result<(), Error> {
        let claims: Vec<PersistentVolumeClaim> = self.claims.state().iter().map(|c| (**c).clone()).collect();
        let volumes: Vec<PersistentVolume> = self.volumes.state().iter().map(|v| (**v).clone()).collect();
        let classes: Vec<StorageClass> = self.classes.state().iter().map(|c| (**c).clone()).collect();
        let live: std::collections::HashSet<&str> = claims.iter().filter_map(|c| c.metadata.uid.as_deref()).collect();
        self.told.retain(|uid, _| live.contains(uid.as_str()));
        for claim in &claims {
            let step = claim_step(claim, &volumes, &classes);
            if let Err(e) = self.act_on_claim(claim, &volumes, step).await {
                tracing::debug!(claim = %claim.name_any(), error = %e, "claim not settled yet");
            }
            if claim.metadata.deletion_timestamp.is_some() && claim.finalizers().iter().any(|f| f == PVC_PROTECTION) {
                self.release_claim_if_unused(claim).await?;
            }
        }
        for pv in &volumes {
            match volume_step(pv, &claims) {
                VolumeStep::Nothing => {}
                VolumeStep::Phase(phase) => self.set_volume_phase(pv, phase).await?,
                VolumeStep::Delete => {
                    let api: Api<PersistentVolume> = Api::all(self.client.clone());
                    crate::error::ignore_gone(api.delete(&pv.name_any(), &DeleteParams::default()).await.map(drop))?;
                    tracing::info!(volume = %pv.name_any(), "released volume deleted (reclaim policy Delete)");
                }
            }
            // kube's pv-protection: a volume being deleted is kept while a claim still holds it.
            if pv.metadata.deletion_timestamp.is_some()
                && !crate::volumes::claimed(pv, &claims)
                && pv.finalizers().iter().any(|f| f == PV_PROTECTION)
            {
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                let left: Vec<&String> = pv.finalizers().iter().filter(|f| *f != PV_PROTECTION).collect();
                let patch = json!({"metadata": {"finalizers": left, "resourceVersion": pv.resource_version()}});
                crate::error::ignore_gone(
                    api.patch(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop),
                )?;
            }
        }
        Ok(())
    }

    async fn tell(&mut self, claim: &PersistentVolumeClaim, type_: &str, reason: &str, message: &str) {
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let said = format!("{reason}: {message}");
        if self.told.get(&uid) != Some(&said) {
            self.told.insert(uid, said);
            events::record(&self.client, COMPONENT, claim, type_, reason, message).await;
        }
    }

    async fn act_on_claim(
        &mut self,
        claim: &PersistentVolumeClaim,
        volumes: &[PersistentVolume],
        step: ClaimStep,
    ) -> Result<(), Error> {
        let ns = claim.namespace().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        match step {
            ClaimStep::Nothing => {}
            ClaimStep::WaitForFirstConsumer => {
                let message = "waiting for first consumer to be created before binding";
                self.tell(claim, events::NORMAL, "WaitForFirstConsumer", message).await;
            }
            ClaimStep::NoMatch(message) => self.tell(claim, events::WARNING, "ProvisioningFailed", &message).await,
            ClaimStep::Lost => {
                let status = json!({"status": {"phase": "Lost"}});
                claims.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
                let message = "Bound claim has lost its PersistentVolume. Data on the volume is lost!";
                self.tell(claim, events::WARNING, "ClaimLost", message).await;
            }
            ClaimStep::Provision(pv) => {
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                match api.create(&PostParams::default(), &pv).await {
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    other => drop(other?),
                }
                let message = format!("Successfully provisioned volume {}", pv.name_any());
                self.tell(claim, events::NORMAL, "ProvisioningSucceeded", &message).await;
            }
            ClaimStep::Bind(name) => {
                let Some(pv) = volumes.iter().find(|v| v.name_any() == name) else { return Ok(()) };
                self.bind(claim, pv).await?;
            }
        }
        Ok(())
    }

    /// Binds the two: the volume names the claim (written first, at its resourceVersion, so two claims
    /// never take one volume), then the claim names the volume, then both statuses say Bound.
    async fn bind(&mut self, claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Result<(), Error> {
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let ns = claim.namespace().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let reference = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
            "name": claim.name_any(), "uid": claim.metadata.uid, "resourceVersion": claim.resource_version()});
        let names_it = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| r.uid == claim.metadata.uid);
        if !names_it {
            let patch = json!({"metadata": {"resourceVersion": pv.resource_version(),
                "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}}, "spec": {"claimRef": reference}});
            volumes.patch(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        let spec = pv.spec.clone().unwrap_or_default();
        if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(pv.name_any().as_str()) {
            let patch = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes"}}, "spec": {"volumeName": pv.name_any()}});
            claims.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        let status = json!({"status": {"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity}});
        claims.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        let phase = json!({"status": {"phase": "Bound"}});
        volumes.patch_status(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&phase)).await?;
        tracing::info!(claim = %format!("{ns}/{}", claim.name_any()), volume = %pv.name_any(), "claim bound");
        Ok(())
    }

    async fn set_volume_phase(&self, pv: &PersistentVolume, phase: &str) -> Result<(), Error> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let patch = json!({"status": {"phase": phase}});
        crate::error::ignore_gone(
            api.patch_status(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop),
        )
    }

    /// kube's pvc-protection controller: a claim being deleted keeps its finalizer while a pod that is not
    /// finished uses it (looked up live, not from a cache).
    async fn release_claim_if_unused(&self, claim: &PersistentVolumeClaim) -> Result<(), Error> {
        let ns = claim.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let in_use = pods.list(&ListParams::default()).await?.items.iter().any(|p| {
            let finished = matches!(crate::pods::phase(p), Some("Succeeded" | "Failed"));
            let volumes = p.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
            !finished
                && volumes
                    .iter()
                    .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim.name_any()))
        });
        if in_use {
            return Ok(());
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let left: Vec<&String> = claim.finalizers().iter().filter(|f| *f != PVC_PROTECTION).collect();
        let patch = json!({"metadata": {"finalizers": left, "resourceVersion": claim.resource_version()}});
        crate::error::ignore_gone(
            claims.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop),
        )?;
        tracing::info!(claim = %format!("{ns}/{}", claim.name_any()), "claim no pod uses released for deletion");
        Ok(())
    }
}
