//! kube-controller-manager's clusterrole-aggregation controller: an aggregated ClusterRole (`admin`, `edit`,
//! `view`, or a user's with an `aggregationRule`) holds in its `rules` every rule of the ClusterRoles its
//! selectors pick, so `kubectl get clusterrole admin -o yaml` shows what it grants. (The API server's RBAC
//! resolves aggregation itself, so a permission never waits for this loop.)

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use keel_api::selector::LabelSelector;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::reconciling::{changes, reconciled, retry, store_and_changes};
use crate::Error;

/// The rules `role` aggregates: for each of its selectors in turn, the rules of the ClusterRoles it picks
/// (by name, itself excepted), each rule once. `None` for a role without an aggregationRule.
pub fn aggregated_rules(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let rule = role.aggregation_rule.as_ref()?;
    let mut sorted: Vec<&ClusterRole> =
        all.iter().map(Arc::as_ref).filter(|r| r.name_any() != role.name_any()).collect();
    sorted.sort_by_key(|r| r.name_any());
    let mut out: Vec<PolicyRule> = Vec::new();
    for selector in rule.cluster_role_selectors.iter().flatten() {
        let Ok(selector) = LabelSelector::from_api(selector) else { continue };
        if selector.is_empty() {
            continue;
        }
        for picked in sorted.iter().filter(|r| selector.matches(&r.labels().clone())) {
            for rule in picked.rules.iter().flatten() {
                if !out.contains(rule) {
                    out.push(rule.clone());
                }
            }
        }
    }
    Some(out)
}

struct Context {
    client: Client,
    roles: Store<ClusterRole>,
}

async fn reconcile(role: Arc<ClusterRole>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(rules) = aggregated_rules(&role, &ctx.roles.state()) else { return Ok(Action::await_change()) };
    if role.rules.clone().unwrap_or_default() == rules {
        return Ok(Action::await_change());
    }
    let api: Api<ClusterRole> = Api::all(ctx.client.clone());
    let patch = json!({"rules": rules});
    api.patch(&role.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(role = role.name_any(), rules = rules.len(), "aggregated ClusterRole updated");
    Ok(Action::await_change())
}

/// Keeps every aggregated ClusterRole's rules; any ClusterRole's change looks at all of them again.
pub async fn run(client: Client) -> Result<(), Error> {
    let (roles, role_changes) = store_and_changes(Api::<ClusterRole>::all(client.clone())).await;
    let ctx = Arc::new(Context { client: client.clone(), roles });
    Controller::new(Api::<ClusterRole>::all(client), watcher::Config::default())
        .reconcile_all_on(changes(&role_changes))
        .run(reconcile, retry, ctx)
        .for_each(reconciled)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn aggregated_roles_collect_the_rules_of_the_roles_they_pick() {
        let all = vec![
            role(json!({"metadata": {"name": "view"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-view": "true"}}]}})),
            role(json!({"metadata": {"name": "b-pods", "labels": {"to-view": "true"}},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})),
            role(json!({"metadata": {"name": "a-svc", "labels": {"to-view": "true"}},
                "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
                          {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})),
            role(
                json!({"metadata": {"name": "other"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
            ),
        ];
        let rules = aggregated_rules(&all[0], &all).unwrap();
        let resources: Vec<String> = rules.iter().map(|r| r.resources.clone().unwrap()[0].clone()).collect();
        assert_eq!(resources, ["services", "pods"], "by name, each rule once");
        assert_eq!(aggregated_rules(&all[3], &all), None);
    }
}
