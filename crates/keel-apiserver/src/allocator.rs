//! Cluster IPs and node ports for Services, reserved in the store: one key per address or port, created
//! only if absent, so two masters can never hand out the same one. A reservation is released when its
//! Service is deleted (or when the create it was made for fails).

use keel_api::services::{self, ClusterIp, ServiceCidr};
use keel_api::status::ApiError;
use serde_json::{json, Value};

use crate::storage::{Storage, StorageError};

const IPS: &str = "/keel/allocations/service-ips/";
const NODE_PORTS: &str = "/keel/allocations/node-ports/";
/// Random picks before giving up on a nearly full range.
const TRIES: usize = 64;

fn random() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

fn unavailable(e: StorageError) -> ApiError {
    tracing::warn!(error = %e, "cannot reserve a service address");
    match e {
        StorageError::Refused { message, .. } => ApiError::StoreRefused(message),
        StorageError::Internal(detail) => ApiError::Internal(detail),
        _ => ApiError::Unavailable,
    }
}

/// The reservation keys a Service holds.
pub fn held(service: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) =
        service.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
    {
        keys.push(format!("{IPS}{ip}"));
    }
    for port in service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = port.get("nodePort").and_then(Value::as_u64) {
            keys.push(format!("{NODE_PORTS}{n}"));
        }
    }
    keys
}

async fn reserve(storage: &Storage, key: &str, owner: &str) -> Result<bool, ApiError> {
    match storage.create(key, json!({"owner": owner}).to_string().into_bytes()).await {
        Ok(_) => Ok(true),
        Err(StorageError::AlreadyExists) => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

/// Gives a new Service its cluster IP and node ports, reserving each; returns the keys reserved (release
/// them if the Service is not stored after all). Requested addresses or ports already taken are 422s.
pub async fn allocate(
    storage: &Storage,
    service: &mut Value,
    range: &ServiceCidr,
    owner: &str,
) -> Result<Vec<String>, ApiError> {
    let mut reserved = Vec::new();
    let result = allocate_into(storage, service, range, owner, &mut reserved).await;
    if result.is_err() {
        release(storage, &reserved).await;
    }
    result.map(|()| reserved)
}

async fn allocate_into(
    storage: &Storage,
    service: &mut Value,
    range: &ServiceCidr,
    owner: &str,
    reserved: &mut Vec<String>,
) -> Result<(), ApiError> {
    let name = keel_api::meta::name(service).to_string();
    let invalid = |causes| ApiError::Invalid {
        kind: "Service".into(),
        resource: keel_api::status::GroupResource { group: String::new(), resource: "services".into() },
        name: name.clone(),
        causes,
    };
    match services::cluster_ip(service, range).map_err(invalid)? {
        ClusterIp::NotApplicable => {}
        ClusterIp::Headless => services::set_cluster_ip(service, "None"),
        ClusterIp::Requested(ip) => {
            let key = format!("{IPS}{ip}");
            if !reserve(storage, &key, owner).await? {
                return Err(invalid(vec![keel_api::validation::Cause::invalid(
                    "spec.clusterIPs",
                    &ip.to_string(),
                    "failed to allocate IP: provided IP is already allocated",
                )]));
            }
            reserved.push(key);
            services::set_cluster_ip(service, &ip.to_string());
        }
        ClusterIp::Allocate => {
            let mut chosen = None;
            for _ in 0..TRIES {
                let ip = range.candidate(random());
                let key = format!("{IPS}{ip}");
                if reserve(storage, &key, owner).await? {
                    reserved.push(key);
                    chosen = Some(ip);
                    break;
                }
            }
            let ip = chosen.ok_or_else(|| {
                invalid(vec![keel_api::validation::Cause::invalid(
                    "spec.clusterIPs",
                    "",
                    "failed to allocate IP: range is full",
                )])
            })?;
            services::set_cluster_ip(service, &ip.to_string());
        }
    }
    if !services::wants_node_ports(service) {
        return Ok(());
    }
    let count = service.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
    for i in 0..count {
        let requested = service["spec"]["ports"][i].get("nodePort").and_then(Value::as_u64).filter(|p| *p != 0);
        let port = match requested {
            Some(p) => {
                let key = format!("{NODE_PORTS}{p}");
                if !reserve(storage, &key, owner).await? {
                    return Err(invalid(vec![keel_api::validation::Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &p.to_string(),
                        "provided port is already allocated",
                    )]));
                }
                reserved.push(key);
                p
            }
            None => {
                let mut chosen = None;
                for _ in 0..TRIES {
                    let p = services::node_port_candidate(random());
                    let key = format!("{NODE_PORTS}{p}");
                    if reserve(storage, &key, owner).await? {
                        reserved.push(key);
                        chosen = Some(u64::from(p));
                        break;
                    }
                }
                chosen.ok_or_else(|| {
                    invalid(vec![keel_api::validation::Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        "",
                        "failed to allocate a node port: range is full",
                    )])
                })?
            }
        };
        service["spec"]["ports"][i]["nodePort"] = json!(port);
    }
    Ok(())
}

/// Frees reservations (best effort: a leftover only makes one address or port unavailable).
pub async fn release(storage: &Storage, keys: &[String]) {
    for key in keys {
        if let Err(e) = storage.delete(key, None).await {
            if !matches!(e, StorageError::NotFound) {
                tracing::warn!(%key, error = %e, "cannot release a service reservation");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_keys_and_carry_over() {
        let old = json!({"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                                  "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        assert_eq!(held(&old), ["/keel/allocations/service-ips/10.96.0.10", "/keel/allocations/node-ports/30080"]);
        assert!(held(&json!({"spec": {"clusterIP": "None"}})).is_empty());
        let mut new = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        keel_api::kinds::carry_over_addresses(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
    }
}
