//! The Endpoints and EndpointSlice controllers' decision, pure: given a Service with a selector and the pods
//! it selects, the Endpoints object (ready addresses, not-ready addresses, the ports each pod serves the
//! Service's ports on) and the one EndpointSlice per IP family that Kubernetes' controllers would write.
//! Pods without an IP yet, and finished pods, are left out; pods being deleted are left out of Endpoints and
//! shown `terminating` in slices.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";

/// The pods a Service's selector finds that can be endpoints, and whether each is ready.
struct Candidate<'p> {
    pod: &'p Pod,
    ip: String,
    ready: bool,
    terminating: bool,
}

fn candidates<'p>(service: &Service, pods: &'p [Pod]) -> Vec<Candidate<'p>> {
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut out: Vec<Candidate<'p>> = pods
        .iter()
        .filter(|p| !matches!(pods::phase(p), Some("Succeeded" | "Failed")))
        .filter_map(|pod| {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty())?;
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let ready = publish_not_ready || (pods::is_ready(pod) && !terminating);
            Some(Candidate { pod, ip, ready, terminating })
        })
        .collect();
    out.sort_by(|a, b| a.ip.cmp(&b.ip).then_with(|| a.pod.metadata.name.cmp(&b.pod.metadata.name)));
    out
}

/// The port `pod` serves `port` on: a number as is, a name looked up among the pod's container ports.
fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports.as_ref()?.iter().find_map(|p| {
                let same =
                    p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol;
                same.then_some(p.container_port)
            })
        }),
    }
}

fn service_ports(service: &Service) -> &[ServicePort] {
    service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default()
}

/// The ports of `service` as `pod` serves them (those it cannot serve left out).
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(service)
        .iter()
        .filter_map(|p| {
            Some(EndpointPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: target_port(p, pod)?,
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The DNS hostname `pod` gets under `service` (`<hostname>.<service>.<ns>.svc`): its `spec.hostname` when
/// its `spec.subdomain` names this Service, as for a StatefulSet's pods and their governing Service.
fn hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let same = spec.subdomain.is_some()
        && spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace;
    spec.hostname.clone().filter(|h| same && !h.is_empty())
}

/// Whether `service` gets Endpoints from this controller: it has a selector (a Service without one has its
/// Endpoints written by hand).
pub fn managed(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty())
        && service.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName")
}

/// The Endpoints of `service` (same name and namespace), its addresses grouped by the ports they serve.
pub fn endpoints(service: &Service, pods: &[Pod]) -> Endpoints {
    let mut by_ports: BTreeMap<String, (Vec<EndpointPort>, EndpointSubset)> = BTreeMap::new();
    for c in candidates(service, pods).into_iter().filter(|c| !c.terminating || c.ready) {
        let ports = endpoint_ports(service, c.pod);
        if ports.is_empty() && !service_ports(service).is_empty() {
            continue;
        }
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let (_, subset) = by_ports.entry(key).or_insert_with(|| {
            (ports.clone(), EndpointSubset { ports: (!ports.is_empty()).then(|| ports.clone()), ..Default::default() })
        });
        let address = EndpointAddress {
            ip: c.ip.clone(),
            node_name: c.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(c.pod)),
            hostname: hostname(service, c.pod),
        };
        let list = if c.ready { &mut subset.addresses } else { &mut subset.not_ready_addresses };
        list.get_or_insert_with(Vec::new).push(address);
    }
    let subsets: Vec<EndpointSubset> = by_ports.into_values().map(|(_, s)| s).collect();
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: service.metadata.labels.clone(),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The EndpointSlices of `service`: one per IP family its pods have (IPv4 when it has none), named
/// `<service>-ipv4` / `<service>-ipv6`, labelled with the Service's name and this controller.
pub fn slices(service: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let mut families: BTreeMap<&'static str, Vec<Endpoint>> = BTreeMap::new();
    let mut ports: Option<Vec<SlicePort>> = None;
    for c in candidates(service, pods) {
        let family = if c.ip.contains(':') { "IPv6" } else { "IPv4" };
        let served = endpoint_ports(service, c.pod);
        if served.is_empty() && !service_ports(service).is_empty() {
            continue;
        }
        ports.get_or_insert_with(|| {
            served
                .iter()
                .map(|p| SlicePort {
                    name: Some(p.name.clone().unwrap_or_default()),
                    port: Some(p.port),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect()
        });
        families.entry(family).or_default().push(Endpoint {
            addresses: vec![c.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(c.ready && !c.terminating),
                serving: Some(c.ready || (c.terminating && pods::is_ready(c.pod))),
                terminating: Some(c.terminating),
            }),
            node_name: c.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(c.pod)),
            zone: None,
            hostname: hostname(service, c.pod),
            deprecated_topology: None,
            hints: None,
        });
    }
    if families.is_empty() {
        families.insert("IPv4", Vec::new());
    }
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    let owner = pods::controller_reference("v1", "Service", &service.metadata);
    families
        .into_iter()
        .map(|(family, endpoints)| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{}", family.to_lowercase())),
                namespace: service.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: family.into(),
            endpoints,
            ports: ports.clone().or_else(|| Some(Vec::new())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(target_port: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target_port}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, container_port: Option<(&str, i32)>) -> Pod {
        let ports = container_port.map(|(n, p)| json!([{"name": n, "containerPort": p}])).unwrap_or(json!([]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_not_ready_pods_become_addresses_with_the_target_port() {
        let pods = [pod("b", Some("10.0.0.2"), true, None), pod("a", Some("10.0.0.1"), false, None)];
        let ep = endpoints(&service(json!(8080)), &pods);
        assert_eq!(ep.metadata.name.as_deref(), Some("web"));
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        let ips = |l: &Option<Vec<EndpointAddress>>| l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.1"]);
        let port = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("http"), 8080, Some("TCP")));
        let target = subsets[0].addresses.as_ref().unwrap()[0].target_ref.clone().unwrap();
        assert_eq!((target.kind.as_deref(), target.name.as_deref()), (Some("Pod"), Some("b")));
    }

    #[test]
    fn pods_without_an_ip_finished_or_being_deleted_are_left_out() {
        let mut going = pod("c", Some("10.0.0.3"), true, None);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut done = pod("d", Some("10.0.0.4"), false, None);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = [pod("a", None, true, None), going.clone(), done];
        assert_eq!(endpoints(&service(json!(80)), &pods).subsets, None);
        let slice = &slices(&service(json!(80)), &pods)[0];
        assert_eq!(slice.endpoints.len(), 1, "a terminating pod stays in the slice");
        let conditions = slice.endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn a_named_target_port_is_looked_up_per_pod_and_pods_without_it_are_left_out() {
        let pods = [pod("a", Some("10.0.0.1"), true, Some(("web", 8080))), pod("b", Some("10.0.0.2"), true, None)];
        let ep = endpoints(&service(json!("web")), &pods);
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 1);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
    }

    #[test]
    fn pods_serving_on_different_ports_get_different_subsets() {
        let pods = [
            pod("a", Some("10.0.0.1"), true, Some(("web", 8080))),
            pod("b", Some("10.0.0.2"), true, Some(("web", 9090))),
        ];
        let subsets = endpoints(&service(json!("web")), &pods).subsets.unwrap();
        let ports: Vec<i32> = subsets.iter().map(|s| s.ports.as_ref().unwrap()[0].port).collect();
        assert_eq!(ports.len(), 2);
        assert!(ports.contains(&8080) && ports.contains(&9090));
    }

    #[test]
    fn slices_are_named_and_labelled_for_their_service_and_owned_by_it() {
        let pods = [pod("a", Some("10.0.0.1"), true, None), pod("b", Some("fd00::2"), true, None)];
        let all = slices(&service(json!(80)), &pods);
        let names: Vec<_> = all.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["web-ipv4", "web-ipv6"]);
        let labels = all[0].metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_NAME], "web");
        assert_eq!(labels[MANAGED_BY], MANAGER);
        let owner = &all[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Service", "s1", Some(true)));
        assert_eq!(all[1].address_type, "IPv6");
        let empty = slices(&service(json!(80)), &[]);
        assert_eq!((empty.len(), empty[0].endpoints.len()), (1, 0));
    }

    #[test]
    fn a_pod_whose_subdomain_names_the_service_gets_its_hostname() {
        let named = |hostname: &str, subdomain: &str| {
            let mut p = pod(hostname, Some("10.0.0.1"), true, None);
            let spec = p.spec.as_mut().unwrap();
            (spec.hostname, spec.subdomain) = (Some(hostname.into()), Some(subdomain.into()));
            p
        };
        let web = service(json!(80));
        let slice = |p: Pod| slices(&web, &[p])[0].endpoints[0].hostname.clone();
        assert_eq!(slice(named("web-0", "web")), Some("web-0".into()));
        assert_eq!(slice(named("web-0", "other")), None, "another Service's pod");
        assert_eq!(slice(pod("a", Some("10.0.0.1"), true, None)), None, "no hostname");
        let mut elsewhere = named("web-0", "web");
        elsewhere.metadata.namespace = Some("other".into());
        assert_eq!(slice(elsewhere), None, "a pod of another namespace");
        let ep = endpoints(&web, &[named("web-0", "web")]);
        assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].hostname.as_deref(), Some("web-0"));
    }

    #[test]
    fn services_without_a_selector_are_not_managed() {
        let mut s = service(json!(80));
        assert!(managed(&s));
        s.spec.as_mut().unwrap().selector = None;
        assert!(!managed(&s));
    }
}
