//! Addresses for LoadBalancer Services and Ingresses without a cloud, as k3s's ServiceLB gives them: every
//! Ready node's InternalIP, since every node's Service proxy serves a LoadBalancer Service's ports on its
//! own address and every node's ingress serves every Ingress. Written to `status.loadBalancer.ingress`
//! (what `kubectl get svc` shows as EXTERNAL-IP and `kubectl get ingress` as ADDRESS), kept current as
//! nodes come, go and fail. Services with a `loadBalancerClass` and Ingresses of another class belong to
//! someone else and are left alone.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::reconciling::{changes, reconciled, retry, store_and_changes};
use crate::Error;

/// The IngressClass the nodes serve.
const INGRESS_CLASS: &str = "keel";

/// The Ready nodes' InternalIPs, sorted.
pub fn node_addresses(nodes: &[Node]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// `status.loadBalancer.ingress` for these addresses (`ipMode: VIP` for Services: the proxy takes the
/// traffic to them as addressed to the Service).
pub fn ingress_points(ips: &[String], vip_mode: bool) -> Value {
    Value::Array(
        ips.iter().map(|ip| if vip_mode { json!({"ip": ip, "ipMode": "VIP"}) } else { json!({"ip": ip}) }).collect(),
    )
}

/// Whether a Service is ours to give addresses to.
pub fn wants_addresses(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none())
}

/// Whether an Ingress is ours (class `keel`, or none: keel is the default class).
pub fn ingress_is_ours(ingress: &Ingress) -> bool {
    let class = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    class.is_none_or(|c| c == INGRESS_CLASS)
}

struct Context {
    client: Client,
    nodes: Store<Node>,
}

fn nodes_now(ctx: &Context) -> Vec<Node> {
    ctx.nodes.state().iter().map(|n| Node::clone(n)).collect()
}

/// Makes `status.loadBalancer.ingress` of `name` (now `current`) the addresses of the Ready nodes;
/// returns whether it wrote.
async fn set_addresses<K>(api: Api<K>, name: &str, current: Value, ctx: &Context, vip_mode: bool) -> Result<bool, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let wanted = ingress_points(&node_addresses(&nodes_now(ctx)), vip_mode);
    if current == wanted || (current.is_null() && wanted.as_array().is_some_and(Vec::is_empty)) {
        return Ok(false);
    }
    let patch = json!({"status": {"loadBalancer": {"ingress": wanted}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(name, addresses = %wanted, "load balancer addresses set");
    Ok(true)
}

async fn reconcile_service(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    if wants_addresses(&service) {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &service.namespace().unwrap_or_default());
        let status = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        let current = serde_json::to_value(status).unwrap_or(Value::Null);
        set_addresses(api, &service.name_any(), current, &ctx, true).await?;
    }
    Ok(Action::await_change())
}

async fn reconcile_ingress(ingress: Arc<Ingress>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ingress_is_ours(&ingress) {
        let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ingress.namespace().unwrap_or_default());
        let status = ingress.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        let current = serde_json::to_value(status).unwrap_or(Value::Null);
        set_addresses(api, &ingress.name_any(), current, &ctx, false).await?;
    }
    Ok(Action::await_change())
}

/// Runs both loops until the leadership ends.
pub async fn run(client: Client) -> Result<(), Error> {
    // Every node change (a heartbeat included) looks at every Service and Ingress again; a look that
    // changes nothing writes nothing.
    let (nodes, node_changes) = store_and_changes(Api::<Node>::all(client.clone())).await;
    let ctx = Arc::new(Context { client: client.clone(), nodes });
    let services = Controller::new(Api::<Service>::all(client.clone()), watcher::Config::default())
        .reconcile_all_on(changes(&node_changes))
        .run(reconcile_service, retry, ctx.clone())
        .for_each(reconciled);
    let ingresses = Controller::new(Api::<Ingress>::all(client), watcher::Config::default())
        .reconcile_all_on(changes(&node_changes))
        .run(reconcile_ingress, retry, ctx)
        .for_each(reconciled);
    tokio::join!(services, ingresses);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ip: &str, ready: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": ip}, "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}],
            "conditions": [{"type": "Ready", "status": ready}]}}))
        .unwrap()
    }

    #[test]
    fn ready_nodes_give_the_addresses() {
        let nodes = [node("10.0.0.12", "True"), node("10.0.0.11", "True"), node("10.0.0.13", "Unknown")];
        let ips = node_addresses(&nodes);
        assert_eq!(ips, ["10.0.0.11", "10.0.0.12"]);
        assert_eq!(ingress_points(&ips, true)[0], json!({"ip": "10.0.0.11", "ipMode": "VIP"}));
        assert_eq!(ingress_points(&ips, false)[1], json!({"ip": "10.0.0.12"}));
    }

    #[test]
    fn only_our_services_and_ingresses() {
        let svc = |spec: Value| -> Service { serde_json::from_value(json!({"spec": spec})).unwrap() };
        assert!(wants_addresses(&svc(json!({"type": "LoadBalancer"}))));
        assert!(!wants_addresses(&svc(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}))));
        assert!(!wants_addresses(&svc(json!({"type": "NodePort"}))));
        let ing = |spec: Value| -> Ingress { serde_json::from_value(json!({"spec": spec})).unwrap() };
        assert!(ingress_is_ours(&ing(json!({}))) && ingress_is_ours(&ing(json!({"ingressClassName": "keel"}))));
        assert!(!ingress_is_ours(&ing(json!({"ingressClassName": "nginx"}))));
    }
}
