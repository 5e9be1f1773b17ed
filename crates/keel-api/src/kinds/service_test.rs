use serde_json::json;

use super::*;
use crate::kinds;

fn svc(spec: Value) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec});
    kinds::default("Service", &mut s);
    s
}

fn fields(causes: &[Cause]) -> Vec<&str> {
    causes.iter().map(|c| c.field.as_str()).collect()
}

#[test]
fn service_defaults() {
    let s = svc(
        json!({"selector": {"app": "web"}, "ports": [{"port": 80}, {"name": "named", "port": 443, "targetPort": "https"}]}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert!(spec.get("externalTrafficPolicy").is_none());
    assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
    assert_eq!(spec["ports"][1]["targetPort"], "https");
    assert_eq!(kinds::decode("Service", &s), Ok(vec![]));
    let lb =
        svc(json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": 0}]}));
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], 80);
    assert!(validate("Service", &lb).is_empty());
    let ext = svc(json!({"type": "ExternalName", "externalName": "db.example.com."}));
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());
    assert_eq!(validate("Service", &ext), vec![]);
}

#[test]
fn service_ports() {
    let s = svc(json!({"selector": {"app": "web"}, "ports": [
        {"port": 80}, {"name": "Web", "port": 0}, {"name": "dup", "port": 81, "protocol": "ICMP", "targetPort": "8080"},
        {"name": "dup", "port": 82, "nodePort": 30080}, {"name": "again", "port": 82}]}));
    let c = validate("Service", &s);
    assert_eq!(
        fields(&c),
        [
            "spec.ports[0].name",
            "spec.ports[1].name",
            "spec.ports[1].port",
            "spec.ports[1].targetPort",
            "spec.ports[2].protocol",
            "spec.ports[2].targetPort",
            "spec.ports[3].name",
            "spec.ports[3].nodePort",
            "spec.ports[4]",
        ]
    );
    assert_eq!(c[0].message, "Required value");
    assert_eq!(c[2].message, "Invalid value: 0: must be between 1 and 65535, inclusive");
    assert_eq!(c[5].message, "Invalid value: \"8080\": must contain at least one letter (a-z)");
    assert_eq!(c[7].message, "Forbidden: may not be used when `type` is 'ClusterIP'");
    assert_eq!(c[8].message, "Duplicate value: \"82/TCP\"");
    let none = svc(json!({"selector": {"app": "web"}}));
    assert_eq!(fields(&validate("Service", &none)), ["spec.ports"]);
    let headless = svc(json!({"clusterIP": "None", "selector": {"app": "web"}}));
    assert!(validate("Service", &headless).is_empty());
}

#[test]
fn service_types_ips_and_policies() {
    let s = svc(json!({"type": "Magic", "ports": [{"port": 80}]}));
    assert_eq!(
        validate("Service", &s)[0].message,
        "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
    );
    let s = svc(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
    assert_eq!(
        validate("Service", &s)[0].message,
        "Invalid value: \"None\": may not be set to 'None' for NodePort services"
    );
    let s = svc(
        json!({"clusterIP": "10.0.0.300", "clusterIPs": ["10.0.0.300"], "externalIPs": ["x"], "ports": [{"port": 80}],
        "externalTrafficPolicy": "Local", "loadBalancerSourceRanges": ["10.0.0.0/8"], "selector": {"app": "a b"}}),
    );
    let c = validate("Service", &s);
    assert_eq!(
        fields(&c),
        [
            "spec.selector[app]",
            "spec.clusterIPs[0]",
            "spec.externalIPs[0]",
            "spec.externalTrafficPolicy",
            "spec.loadBalancerSourceRanges",
        ]
    );
    assert_eq!(
        c[1].message,
        "Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
    );
    assert_eq!(c[3].message, "Invalid value: \"Local\": may only be set for externally-accessible services");
    let s = svc(json!({"type": "ExternalName", "ports": [], "clusterIP": "10.0.0.1"}));
    assert_eq!(fields(&validate("Service", &s)), ["spec.clusterIPs", "spec.externalName"]);
    let mut s = svc(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
    s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(86401);
    assert_eq!(validate("Service", &s)[0].message, "Invalid value: 86401: must be greater than 0 and less than 86400");
}

#[test]
fn cluster_ip_may_not_change() {
    let mut old = svc(json!({"ports": [{"port": 80}]}));
    old["spec"]["clusterIP"] = json!("10.96.0.10");
    old["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
    assert!(validate_update("Service", &old, &old).is_empty());
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.96.0.11");
    new["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
    let c = validate_update("Service", &old, &new);
    assert_eq!(fields(&c), ["spec.clusterIPs[0]"]);
    assert_eq!(c[0].message, "Invalid value: [\"10.96.0.11\"]: may not change once set");
    new["spec"]["type"] = json!("ExternalName");
    assert!(validate_update("Service", &old, &new).is_empty());
    let lb = svc(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{"port": 80}]}));
    let mut unclassed = lb.clone();
    unclassed["spec"].as_object_mut().unwrap().remove("loadBalancerClass");
    let c = validate_update("Service", &lb, &unclassed);
    assert_eq!(c[0].to_string(), "spec.loadBalancerClass: Invalid value: null: may not change once set");
}

#[test]
fn endpoints_and_slices() {
    let mut ep = json!({"subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 8080}]},
        {"ports": [{"name": "a", "port": 1}, {"port": 70000}]},
        {"notReadyAddresses": [{"ip": "nope", "hostname": "Web"}]}]});
    kinds::default("Endpoints", &mut ep);
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    let c = validate("Endpoints", &ep);
    assert_eq!(
        fields(&c),
        [
            "subsets[1]",
            "subsets[1].ports[1].name",
            "subsets[1].ports[1].port",
            "subsets[2].notReadyAddresses[0].ip",
            "subsets[2].notReadyAddresses[0].hostname",
        ]
    );

    let mut slice = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}},
        {"addresses": ["fd00::1"]}, {"addresses": []}], "ports": [{"port": 80}, {"name": "http", "port": 8080}]});
    kinds::default("EndpointSlice", &mut slice);
    assert_eq!(slice["ports"][0], json!({"port": 80, "name": "", "protocol": "TCP"}));
    assert_eq!(kinds::decode("EndpointSlice", &slice), Ok(vec![]));
    let c = validate("EndpointSlice", &slice);
    assert_eq!(fields(&c), ["endpoints[1].addresses[0]", "endpoints[2].addresses"]);
    assert_eq!(c[0].message, "Invalid value: \"fd00::1\": must be a valid IPv4 address");
    let mut bad = slice.clone();
    bad["addressType"] = json!("IPv5");
    assert_eq!(fields(&validate("EndpointSlice", &bad))[0], "addressType");
    let c = validate_update("EndpointSlice", &slice, &bad);
    assert_eq!(c[0].message, "Invalid value: \"IPv5\": field is immutable");
}
