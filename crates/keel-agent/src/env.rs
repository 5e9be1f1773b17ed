//! A container's environment and the `$(VAR)` references in its command, args and env values, pure: `env`
//! values, `valueFrom` (configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef) and `envFrom`, resolved
//! against ConfigMaps and Secrets the worker fetched beforehand. A missing required source is the error the
//! kubelet reports as CreateContainerConfigError.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, Service};

/// The ConfigMaps (data and binaryData) and Secrets (decoded) of the pod's namespace that its containers
/// and volumes refer to, by name; absent when the API has none of that name.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// The Services whose variables the containers get ([`visible_services`]).
    pub services: Vec<Service>,
    /// Service-account tokens of projected volumes, by `<volume>/<path>`.
    pub tokens: HashMap<String, Vec<u8>>,
    /// Where the volume of each claim the pod mounts is on this node, or why it cannot be mounted yet.
    pub claims: HashMap<String, Result<std::path::PathBuf, String>>,
}

/// The Services a pod's containers get variables for, as the kubelet chooses them: the `kubernetes`
/// Service of `default` always, and every Service of the pod's namespace unless `enableServiceLinks` is
/// false; a name in the pod's namespace wins over `default`'s.
pub fn visible_services(pod: &Pod, all: &[Service]) -> Vec<Service> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut by_name: BTreeMap<String, Service> = BTreeMap::new();
    for s in all {
        let (ns, name) = (s.metadata.namespace.as_deref().unwrap_or(""), s.metadata.name.clone().unwrap_or_default());
        let master = ns == "default" && name == "kubernetes" && !by_name.contains_key(&name);
        if master || (links && ns == namespace) {
            by_name.insert(name, s.clone());
        }
    }
    by_name.into_values().collect()
}

/// The Docker-links-style variables of `services` (kubelet's `envvars.FromServices`): for a Service
/// `web-db` with cluster IP 10.96.0.5 and port 5432/TCP named `pg`, `WEB_DB_SERVICE_HOST=10.96.0.5`,
/// `WEB_DB_SERVICE_PORT=5432`, `WEB_DB_SERVICE_PORT_PG=5432`, `WEB_DB_PORT=tcp://10.96.0.5:5432`, and
/// `WEB_DB_PORT_5432_TCP{,_PROTO,_PORT,_ADDR}`. Services without a cluster IP (headless, ExternalName) get
/// none.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let upper = |s: &str| s.to_ascii_uppercase().replace('-', "_");
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = upper(service.metadata.name.as_deref().unwrap_or_default());
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        vars.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        vars.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                vars.push((format!("{name}_SERVICE_PORT_{}", upper(port_name)), port.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        vars.push((format!("{name}_PORT"), format!("{}://{host}:{}", proto(first).to_ascii_lowercase(), first.port)));
        for port in ports {
            let (p, number) = (proto(port), port.port);
            let prefix = format!("{name}_PORT_{number}_{}", p.to_ascii_uppercase());
            vars.push((prefix.clone(), format!("{}://{host}:{number}", p.to_ascii_lowercase())));
            vars.push((format!("{prefix}_PROTO"), p.to_ascii_lowercase()));
            vars.push((format!("{prefix}_PORT"), number.to_string()));
            vars.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    vars
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The names of ConfigMaps and Secrets a container's environment needs.
pub fn referenced(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            config_maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            config_maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// The value of a downward-API field path of the pod.
pub fn field(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(",")),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    }
}

/// `$(NAME)` replaced by the value of NAME in `vars` (left as is when unknown); `$$` escapes a `$`.
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's own environment (before the image's), in order: envFrom, then env (later wins).
pub fn resolve(pod: &Pod, container: &Container, sources: &Sources) -> Result<Vec<(String, String)>, String> {
    // The Services' variables first: the container's own override them and may refer to them.
    let mut vars: Vec<(String, String)> = service_env(&sources.services);
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| match vars.iter_mut().find(|(n, _)| *n == k) {
        Some(entry) => entry.1 = v,
        None => vars.push((k, v)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, kind, name) = if let Some(r) = &from.config_map_ref {
            (sources.config_maps.get(&r.name), r.optional, "configmap", &r.name)
        } else if let Some(r) = &from.secret_ref {
            (sources.secrets.get(&r.name), r.optional, "secret", &r.name)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), text(v));
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("{kind} \"{name}\" not found")),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &vars),
            Some(from) => {
                if let Some(r) = &from.config_map_key_ref {
                    match sources.config_maps.get(&r.name).map(|d| d.get(&r.key)) {
                        Some(Some(v)) => text(v),
                        _ if r.optional == Some(true) => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                        Some(None) => return Err(format!("couldn't find key {} in ConfigMap {}", r.key, r.name)),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match sources.secrets.get(&r.name).map(|d| d.get(&r.key)) {
                        Some(Some(v)) => text(v),
                        _ if r.optional == Some(true) => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                        Some(None) => return Err(format!("couldn't find key {} in Secret {}", r.key, r.name)),
                    }
                } else if let Some(r) = &from.field_ref {
                    field(pod, &r.field_path).ok_or_else(|| format!("unsupported fieldPath {:?}", r.field_path))?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field(container, &r.resource)?
                } else {
                    continue;
                }
            }
        };
        set(&mut vars, var.name.clone(), value);
    }
    Ok(vars)
}

/// limits.cpu and requests.cpu in whole cores (rounded up), memory in bytes, as the downward API gives them.
fn resource_field(container: &Container, resource: &str) -> Result<String, String> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let resources = container.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let Some(q) = map.and_then(|m| m.get(name)) else { return Ok("0".into()) };
    let q = keel_api::quantity::Quantity::parse(&q.0).map_err(|e| format!("{resource}: {e}"))?;
    Ok(match name {
        "cpu" => ((q.milli_value() + 999) / 1000).to_string(),
        _ => q.value().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app",
                "resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}},
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "S_"}],
                "env": [
                    {"name": "PLAIN", "value": "x"},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                    {"name": "GREETING", "value": "hi $(POD) in $(S_mode), $$(POD) $(NOPE)"}]}]},
            "status": {"hostIP": "10.0.0.1", "podIP": "10.244.1.5"},
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        Sources {
            config_maps: HashMap::from([("settings".into(), BTreeMap::from([("mode".into(), "fast".into())]))]),
            secrets: HashMap::from([("creds".into(), BTreeMap::from([("password".into(), "s3cret".into())]))]),
            services: vec![],
            tokens: HashMap::new(),
            claims: HashMap::new(),
        }
    }

    fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap()
    }

    #[test]
    fn services_give_the_kubelets_variables() {
        let all = vec![
            service(
                "default",
                "kubernetes",
                json!({"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}),
            ),
            service(
                "shop",
                "web-db",
                json!({"clusterIP": "10.96.0.5",
                "ports": [{"name": "pg", "port": 5432}, {"name": "metrics", "port": 9187, "protocol": "UDP"}]}),
            ),
            service("shop", "headless", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            service("other", "elsewhere", json!({"clusterIP": "10.96.0.9", "ports": [{"port": 80}]})),
        ];
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"namespace": "shop"}, "spec": {"containers": []}})).unwrap();
        let visible = visible_services(&pod, &all);
        let names: Vec<&str> = visible.iter().map(|s| s.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["headless", "kubernetes", "web-db"]);
        let env: BTreeMap<String, String> = service_env(&visible).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
        assert_eq!(env["WEB_DB_SERVICE_PORT_PG"], "5432");
        assert_eq!(env["WEB_DB_PORT_9187_UDP"], "udp://10.96.0.5:9187");
        assert_eq!(env["WEB_DB_PORT_9187_UDP_PROTO"], "udp");
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS") || k.starts_with("ELSEWHERE")));
        let unlinked: Pod = serde_json::from_value(
            json!({"metadata": {"namespace": "shop"}, "spec": {"containers": [], "enableServiceLinks": false}}),
        )
        .unwrap();
        let names: Vec<String> =
            visible_services(&unlinked, &all).iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["kubernetes"]);
    }

    #[test]
    fn every_kind_of_value_is_resolved_and_expanded() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(referenced(c), (vec!["settings".to_string()], vec!["creds".to_string()]));
        let env: BTreeMap<String, String> = resolve(&p, c, &sources()).unwrap().into_iter().collect();
        assert_eq!(env["S_mode"], "fast");
        assert_eq!(env["PLAIN"], "x");
        assert_eq!(env["FROM_CM"], "fast");
        assert_eq!(env["FROM_SECRET"], "s3cret");
        assert_eq!(env["POD"], "web");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["NODE"], "n1");
        assert_eq!(env["CPU"], "2");
        assert_eq!(env["MEM"], (64 * 1024 * 1024).to_string());
        assert_eq!(env["GREETING"], "hi web in fast, $(POD) $(NOPE)");
    }

    #[test]
    fn a_missing_source_is_an_error_unless_optional() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut s = sources();
        s.secrets.clear();
        assert_eq!(resolve(&p, c, &s).unwrap_err(), "secret \"creds\" not found");
        let mut s = sources();
        s.config_maps.get_mut("settings").unwrap().clear();
        assert_eq!(resolve(&p, c, &s).unwrap_err(), "couldn't find key mode in ConfigMap settings");
    }

    #[test]
    fn fields_of_the_downward_api() {
        let p = pod();
        assert_eq!(field(&p, "status.podIP").as_deref(), Some("10.244.1.5"));
        assert_eq!(field(&p, "metadata.annotations['none']").as_deref(), Some(""));
        assert_eq!(field(&p, "spec.bogus"), None);
    }
}
