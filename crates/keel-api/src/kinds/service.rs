//! Services, Endpoints and EndpointSlices: `SetDefaults_Service` (session affinity, type, ports' protocol
//! and target port, traffic policies) and their validation. Cluster IPs are allocated elsewhere; only a
//! given one is checked here.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

use super::fields::*;
use super::pod::protocol;
use crate::validation::{self, Cause};

const IP_DETAIL: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];

pub fn default(kind: &str, object: &mut Value) {
    let Some(obj) = object.as_object_mut() else { return };
    match kind {
        "Service" => {
            let Some(spec) = ensure_obj(obj, "spec") else { return };
            default_str(spec, "sessionAffinity", "None");
            match spec.get("sessionAffinity").and_then(Value::as_str) {
                Some("None") => {
                    spec.remove("sessionAffinityConfig");
                }
                Some("ClientIP") => {
                    let timeout = spec.get("sessionAffinityConfig").and_then(|a| a.pointer("/clientIP/timeoutSeconds"));
                    if timeout.is_none_or(Value::is_null) {
                        spec.insert("sessionAffinityConfig".into(), json!({"clientIP": {"timeoutSeconds": 10800}}));
                    }
                }
                _ => {}
            }
            default_str(spec, "type", "ClusterIP");
            for port in each_obj_mut(spec, "ports") {
                default_str(port, "protocol", "TCP");
                let unset = match port.get("targetPort") {
                    None | Some(Value::Null) => true,
                    Some(v) => v.as_i64() == Some(0) || v.as_str() == Some(""),
                };
                if unset {
                    if let Some(p) = port.get("port").cloned() {
                        port.insert("targetPort".into(), p);
                    }
                }
            }
            let t = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
            if t == "NodePort" || t == "LoadBalancer" {
                default_str(spec, "externalTrafficPolicy", "Cluster");
            }
            if t == "NodePort" || t == "LoadBalancer" || t == "ClusterIP" {
                default_to(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if t == "LoadBalancer" {
                default_to(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
        }
        "Endpoints" => {
            for subset in each_obj_mut(obj, "subsets") {
                for port in each_obj_mut(subset, "ports") {
                    default_str(port, "protocol", "TCP");
                }
            }
        }
        "EndpointSlice" => {
            for port in each_obj_mut(obj, "ports") {
                default_to(port, "name", json!(""));
                default_to(port, "protocol", json!("TCP"));
            }
        }
        _ => {}
    }
}

pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    match kind {
        "Service" => service(object.get("spec").unwrap_or(&Value::Null)),
        "Endpoints" => endpoints(object),
        "EndpointSlice" => endpoint_slice(object),
        _ => vec![],
    }
}

fn service(spec: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let t = str_of(spec, "type");
    match t {
        "" => c.push(required("spec.type", "")),
        t if SERVICE_TYPES.contains(&t) => {}
        t => c.push(Cause::not_supported("spec.type", t, &SERVICE_TYPES)),
    }
    let cluster_ip = str_of(spec, "clusterIP");
    let headless = cluster_ip == "None";
    let ports = arr_of(spec, "ports");
    if ports.is_empty() && !headless && t != "ExternalName" {
        c.push(required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index("spec.ports", i);
        let name = str_of(port, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                c.push(required(child(&p, "name"), ""));
            }
        } else {
            c.extend(validation::dns1123_label(name).iter().map(|e| Cause::invalid(child(&p, "name"), name, e)));
            if !names.insert(name) {
                c.push(Cause::duplicate(child(&p, "name"), name));
            }
        }
        let number = int_of(port, "port").unwrap_or(0);
        if let Some(e) = port_num(number) {
            c.push(invalid_int(child(&p, "port"), number, e));
        }
        protocol(port, &p, &mut c);
        if let Some(target) = port.get("targetPort").filter(|v| !v.is_null()) {
            port_num_or_name(target, &child(&p, "targetPort"), &mut c);
        }
        if let Some(node_port) = int_of(port, "nodePort").filter(|n| *n != 0) {
            if t == "ClusterIP" {
                c.push(forbidden(child(&p, "nodePort"), "may not be used when `type` is 'ClusterIP'"));
            } else if let Some(e) = port_num(node_port) {
                c.push(invalid_int(child(&p, "nodePort"), node_port, e));
            }
        }
        if !keys.insert((number, str_of(port, "protocol"))) {
            c.push(Cause::duplicate(&p, &format!("{number}/{}", str_of(port, "protocol"))));
        }
        if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
            c.extend(validation::qualified_name(app).iter().map(|e| Cause::invalid(child(&p, "appProtocol"), app, e)));
        }
    }
    c.extend(validation::labels(&str_map(spec, "selector"), "spec.selector"));
    cluster_ips(spec, t, &mut c);
    if t == "ExternalName" {
        let name = str_of(spec, "externalName");
        if name.is_empty() {
            c.push(required("spec.externalName", ""));
        } else {
            let clean = name.strip_suffix('.').unwrap_or(name);
            c.extend(validation::dns1123_subdomain(clean).iter().map(|e| Cause::invalid("spec.externalName", name, e)));
        }
    }
    for (i, ip) in arr_of(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if ip.parse::<IpAddr>().is_err() {
            c.push(Cause::invalid(index("spec.externalIPs", i), ip, IP_DETAIL));
        }
    }
    match str_of(spec, "sessionAffinity") {
        "" => c.push(required("spec.sessionAffinity", "")),
        "ClientIP" => {
            let timeout = spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").and_then(Value::as_i64);
            match timeout {
                None => c.push(required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "")),
                Some(s) if !(1..=86400).contains(&s) => c.push(invalid_int(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    s,
                    "must be greater than 0 and less than 86400",
                )),
                Some(_) => {}
            }
        }
        "None" => {
            if has(spec, "sessionAffinityConfig") {
                c.push(forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"));
            }
        }
        a => c.push(Cause::not_supported("spec.sessionAffinity", a, &["ClientIP", "None"])),
    }
    traffic_policies(spec, t, &mut c);
    c
}

fn cluster_ips(spec: &Value, t: &str, c: &mut Vec<Cause>) {
    let cluster_ip = str_of(spec, "clusterIP");
    let ips: Vec<&str> = arr_of(spec, "clusterIPs").iter().map(|v| v.as_str().unwrap_or("")).collect();
    if t == "ExternalName" {
        if !cluster_ip.is_empty() || !ips.is_empty() {
            c.push(forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
        }
        return;
    }
    if let Some(first) = ips.first() {
        if *first != cluster_ip {
            c.push(invalid("spec.clusterIPs", value_at(spec, "clusterIPs"), "first value must match `clusterIP`"));
        }
    }
    let all: Vec<&str> = if ips.is_empty() && !cluster_ip.is_empty() { vec![cluster_ip] } else { ips };
    for (i, ip) in all.iter().enumerate() {
        let p = index("spec.clusterIPs", i);
        if *ip == "None" {
            if i > 0 || all.len() > 1 {
                c.push(Cause::invalid(&p, ip, "'None' must be the first and only value"));
            } else if t == "NodePort" || t == "LoadBalancer" {
                c.push(Cause::invalid(&p, ip, &format!("may not be set to 'None' for {t} services")));
            }
        } else if ip.parse::<IpAddr>().is_err() {
            c.push(Cause::invalid(&p, ip, IP_DETAIL));
        }
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").and_then(Value::as_str) {
        let supported = ["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !supported.contains(&policy) {
            c.push(Cause::not_supported("spec.ipFamilyPolicy", policy, &supported));
        }
    }
    let mut families = BTreeSet::new();
    for (i, f) in arr_of(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        let p = index("spec.ipFamilies", i);
        if f != "IPv4" && f != "IPv6" {
            c.push(Cause::not_supported(&p, f, &["IPv4", "IPv6"]));
        } else if !families.insert(f) {
            c.push(Cause::duplicate(&p, f));
        }
    }
}

fn traffic_policies(spec: &Value, t: &str, c: &mut Vec<Cause>) {
    let external = t == "NodePort" || t == "LoadBalancer";
    let etp = str_of(spec, "externalTrafficPolicy");
    if !external {
        if !etp.is_empty() {
            c.push(Cause::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        c.push(required("spec.externalTrafficPolicy", ""));
    } else if !TRAFFIC_POLICIES.contains(&etp) {
        c.push(Cause::not_supported("spec.externalTrafficPolicy", etp, &TRAFFIC_POLICIES));
    }
    match spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        None if t != "ExternalName" => c.push(required("spec.internalTrafficPolicy", "")),
        Some(p) if !TRAFFIC_POLICIES.contains(&p) => {
            c.push(Cause::not_supported("spec.internalTrafficPolicy", p, &TRAFFIC_POLICIES))
        }
        _ => {}
    }
    if let Some(n) = int_of(spec, "healthCheckNodePort").filter(|n| *n != 0) {
        if t != "LoadBalancer" || etp != "Local" {
            c.push(invalid_int(
                "spec.healthCheckNodePort",
                n,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    }
    let lb = t == "LoadBalancer";
    if !lb && has(spec, "allocateLoadBalancerNodePorts") {
        c.push(forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'"));
    } else if lb && !has(spec, "allocateLoadBalancerNodePorts") {
        c.push(required("spec.allocateLoadBalancerNodePorts", ""));
    }
    let ranges = arr_of(spec, "loadBalancerSourceRanges");
    if !lb && !ranges.is_empty() {
        c.push(forbidden("spec.loadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'"));
    }
    for (i, r) in ranges.iter().enumerate() {
        let r = r.as_str().unwrap_or("");
        if !is_cidr(r.trim()) {
            c.push(Cause::invalid(
                index("spec.loadBalancerSourceRanges", i),
                r,
                "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ",
            ));
        }
    }
}

/// Whether `s` is `address/prefix`.
pub fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else { return false };
    let Ok(bits) = bits.parse::<u8>() else { return false };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn endpoint_ports(ports: &[Value], path: &str, c: &mut Vec<Cause>) {
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(port, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                c.push(required(child(&p, "name"), ""));
            }
        } else {
            c.extend(validation::dns1123_label(name).iter().map(|e| Cause::invalid(child(&p, "name"), name, e)));
        }
        let n = int_of(port, "port").unwrap_or(0);
        if let Some(e) = port_num(n) {
            c.push(invalid_int(child(&p, "port"), n, e));
        }
        protocol(port, &p, c);
    }
}

fn endpoints(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for (i, subset) in arr_of(object, "subsets").iter().enumerate() {
        let sp = index("subsets", i);
        let (ready, not_ready) = (arr_of(subset, "addresses"), arr_of(subset, "notReadyAddresses"));
        if ready.is_empty() && not_ready.is_empty() {
            c.push(required(&sp, "must specify `addresses` or `notReadyAddresses`"));
        }
        for (list, addresses) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, a) in addresses.iter().enumerate() {
                let ap = index(&child(&sp, list), j);
                let ip = str_of(a, "ip");
                if ip.parse::<IpAddr>().is_err() {
                    c.push(Cause::invalid(child(&ap, "ip"), ip, IP_DETAIL));
                }
                let host = str_of(a, "hostname");
                if !host.is_empty() {
                    c.extend(
                        validation::dns1123_label(host).iter().map(|e| Cause::invalid(child(&ap, "hostname"), host, e)),
                    );
                }
                if let Some(node) = a.get("nodeName").and_then(Value::as_str) {
                    c.extend(
                        validation::dns1123_subdomain(node)
                            .iter()
                            .map(|e| Cause::invalid(child(&ap, "nodeName"), node, e)),
                    );
                }
            }
        }
        endpoint_ports(arr_of(subset, "ports"), &child(&sp, "ports"), &mut c);
    }
    c
}

fn endpoint_slice(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let address_type = str_of(object, "addressType");
    match address_type {
        "" => c.push(required("addressType", "")),
        "FQDN" | "IPv4" | "IPv6" => {}
        t => c.push(Cause::not_supported("addressType", t, &["FQDN", "IPv4", "IPv6"])),
    }
    for (i, e) in arr_of(object, "endpoints").iter().enumerate() {
        let ep = index("endpoints", i);
        let addresses = arr_of(e, "addresses");
        if addresses.is_empty() {
            c.push(required(child(&ep, "addresses"), "must contain at least 1 address"));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ap = index(&child(&ep, "addresses"), j);
            match address_type {
                "IPv4" if a.parse::<Ipv4Addr>().is_err() => {
                    c.push(Cause::invalid(&ap, a, "must be a valid IPv4 address"))
                }
                "IPv6" if a.parse::<Ipv6Addr>().is_err() => {
                    c.push(Cause::invalid(&ap, a, "must be a valid IPv6 address"))
                }
                "FQDN" => c.extend(validation::dns1123_subdomain(a).iter().map(|m| Cause::invalid(&ap, a, m))),
                _ => {}
            }
        }
        if let Some(host) = e.get("hostname").and_then(Value::as_str) {
            c.extend(validation::dns1123_label(host).iter().map(|m| Cause::invalid(child(&ep, "hostname"), host, m)));
        }
        if let Some(node) = e.get("nodeName").and_then(Value::as_str) {
            c.extend(
                validation::dns1123_subdomain(node).iter().map(|m| Cause::invalid(child(&ep, "nodeName"), node, m)),
            );
        }
    }
    let mut names = BTreeSet::new();
    for (i, port) in arr_of(object, "ports").iter().enumerate() {
        let p = index("ports", i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            c.extend(validation::dns1123_label(name).iter().map(|m| Cause::invalid(child(&p, "name"), name, m)));
        }
        if !names.insert(name) {
            c.push(Cause::duplicate(child(&p, "name"), name));
        }
        if let Some(n) = int_of(port, "port") {
            if let Some(e) = port_num(n) {
                c.push(invalid_int(child(&p, "port"), n, e));
            }
        }
        protocol(port, &p, &mut c);
    }
    c
}

pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    match kind {
        "Service" => {
            let (os, ns) = (value_at(old, "spec"), value_at(new, "spec"));
            let (oip, nip) = (str_of(os, "clusterIP"), str_of(ns, "clusterIP"));
            let external_name = str_of(os, "type") == "ExternalName" || str_of(ns, "type") == "ExternalName";
            if !external_name && !oip.is_empty() && !nip.is_empty() && oip != nip {
                let shown = ns.get("clusterIPs").cloned().unwrap_or_else(|| json!([nip]));
                c.push(invalid("spec.clusterIPs[0]", &shown, "may not change once set"));
            }
            let balanced = str_of(os, "type") == "LoadBalancer" && str_of(ns, "type") == "LoadBalancer";
            if balanced && value_at(os, "loadBalancerClass") != value_at(ns, "loadBalancerClass") {
                c.push(invalid("spec.loadBalancerClass", value_at(ns, "loadBalancerClass"), "may not change once set"));
            }
        }
        "EndpointSlice" => immutable(old, new, "addressType", "", &mut c),
        _ => {}
    }
    c
}

/// On update: a Service keeps the cluster IP and node ports it has unless the update names them (they
/// are immutable; kind-specific validation refuses changes).
pub fn carry_over_addresses(old: &Value, new: &mut Value) {
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if new.pointer(&format!("/spec/{field}")).is_none_or(|v| v.is_null() || v == "") {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                new["spec"][field] = v.clone();
            }
        }
    }
    let old_ports = old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if p.get("nodePort").is_some_and(|n| n.as_u64().unwrap_or(0) != 0) {
                continue;
            }
            let same =
                old_ports.iter().find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
}

#[cfg(test)]
#[path = "service_test.rs"]
mod tests;
