//! What every namespace gets, as kube-controller-manager's serviceaccount and root-ca-cert-publisher
//! controllers give it: the `default` ServiceAccount, and the ConfigMap `kube-root-ca.crt` holding the
//! cluster's CA (what a pod's `kube-api-access` volume mounts as `ca.crt`). Either one deleted comes back; a
//! namespace being deleted gets neither.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::reconciling::{reconciled, retry};
use crate::Error;

pub const DEFAULT: &str = "default";
pub const ROOT_CA: &str = "kube-root-ca.crt";

struct Context {
    client: Client,
    ca_pem: String,
}

/// The CA's certificates (DER) as PEM.
pub fn pem(certificates: &[Vec<u8>]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for der in certificates {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Active");
    if !active {
        return Ok(Action::await_change());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if accounts.get_opt(DEFAULT).await?.is_none() {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": DEFAULT}})).expect("valid");
        match accounts.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(namespace = name, "default service account created"),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let current = maps.get_opt(ROOT_CA).await?;
    let wanted = ctx.ca_pem.as_str();
    match current {
        Some(cm) if cm.data.as_ref().and_then(|d| d.get("ca.crt")).map(String::as_str) == Some(wanted) => {}
        Some(_) => {
            let patch = json!({"data": {"ca.crt": wanted}});
            maps.patch(ROOT_CA, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        None => {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": ROOT_CA, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": wanted},
            }))
            .expect("valid");
            match maps.create(&PostParams::default(), &cm).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

/// Keeps every namespace's `default` ServiceAccount and `kube-root-ca.crt` (with `ca_pem`).
pub async fn run(client: Client, ca_pem: String) -> Result<(), Error> {
    let ctx = Arc::new(Context { client: client.clone(), ca_pem });
    let to_namespace = |namespace: Option<String>| namespace.map(|ns| ObjectRef::<Namespace>::new(&ns));
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
            move |sa: ServiceAccount| to_namespace(sa.namespace()),
        )
        .watches(
            Api::<ConfigMap>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA}")),
            move |cm: ConfigMap| to_namespace(cm.namespace()),
        )
        .run(reconcile, retry, ctx)
        .for_each(reconciled)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn certificates_are_written_as_pem() {
        let pem = super::pem(&[vec![0u8; 100]]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nAAAA"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(pem.lines().count(), 5);
    }
}
