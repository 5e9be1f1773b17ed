//! A pod's volumes: emptyDir (a directory of the pod, or tmpfs for medium Memory), hostPath, configMap,
//! secret and projected (a service-account token, configMap and secret keys, downward-API fields: the
//! `kube-api-access` volume) (secrets and projected on a tmpfs of their own; files written atomically, kubelet-style: a `..data` symlink swapped onto a new directory, each key
//! a symlink through it, so a container never sees a half-written update). Which mounts a container gets is
//! pure ([`container_mounts`]); [`prepare`] does the IO.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use crate::env::Sources;

/// One bind mount into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Where a volume of the pod lives on the node.
pub fn volume_dir(pod_dir: &Path, volume: &Volume) -> PathBuf {
    if let Some(h) = &volume.host_path {
        return PathBuf::from(&h.path);
    }
    let kind = if volume.persistent_volume_claim.is_some() {
        // A link to the claim's volume, wherever it lives on the node.
        "pvc"
    } else if volume.config_map.is_some() {
        "configmap"
    } else if volume.secret.is_some() {
        "secret"
    } else if volume.projected.is_some() {
        "projected"
    } else {
        "empty-dir"
    };
    pod_dir.join("volumes").join(kind).join(&volume.name)
}

/// The files every container of a pod gets: /etc/hosts, /etc/hostname, /etc/resolv.conf.
pub fn pod_files(pod_dir: &Path) -> [(PathBuf, &'static str); 3] {
    [
        (pod_dir.join("etc-hosts"), "/etc/hosts"),
        (pod_dir.join("etc-hostname"), "/etc/hostname"),
        (pod_dir.join("etc-resolv.conf"), "/etc/resolv.conf"),
    ]
}

fn relative(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

/// The bind mounts of `container`: its volumeMounts (with subPath), then the pod's /etc files.
pub fn container_mounts(pod: &Pod, container: &Container, pod_dir: &Path) -> Result<Vec<BindMount>, String> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .and_then(|vs| vs.iter().find(|v| v.name == m.name))
            .ok_or_else(|| format!("volumeMount {:?}: the pod has no volume of that name", m.name))?;
        if volume.empty_dir.is_none()
            && volume.host_path.is_none()
            && volume.config_map.is_none()
            && volume.secret.is_none()
            && volume.projected.is_none()
            && volume.persistent_volume_claim.is_none()
        {
            return Err(format!(
                "volume {:?}: only emptyDir, hostPath, configMap, secret, projected and persistentVolumeClaim volumes are supported",
                m.name
            ));
        }
        let mut source = volume_dir(pod_dir, volume);
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if !relative(sub) {
                return Err(format!(
                    "volumeMount {:?}: subPath {sub:?} must be a relative path within the volume",
                    m.name
                ));
            }
            source = source.join(sub);
        }
        let read_only = m.read_only.unwrap_or(false)
            || volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.projected.is_some();
        out.push(BindMount { source, destination: m.mount_path.clone(), read_only });
    }
    for (source, destination) in pod_files(pod_dir) {
        if !out.iter().any(|m| m.destination == destination) {
            out.push(BindMount { source, destination: destination.into(), read_only: false });
        }
    }
    Ok(out)
}

/// The names of ConfigMaps and Secrets the pod's volumes use.
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.config_map {
            config_maps.push(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            config_maps.extend(source.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(source.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    (config_maps, secrets)
}

/// The files of a configMap or secret volume: relative path → (content, mode).
pub fn projected_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, String> {
    let mode = default_mode.unwrap_or(0o644) as u32;
    let mut files = BTreeMap::new();
    match items {
        None => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone(), mode));
            }
        }
        Some(items) => {
            for item in items {
                let value = data.get(&item.key).ok_or_else(|| format!("{what}: no key {:?}", item.key))?;
                if !relative(&item.path) || item.path.starts_with("..") {
                    return Err(format!("{what}: item path {:?} must be relative and not start with ..", item.path));
                }
                files.insert(item.path.clone(), (value.clone(), item.mode.map_or(mode, |m| m as u32)));
            }
        }
    }
    Ok(files)
}

/// `at` as a symlink to `target` (replaced if it pointed elsewhere); mounts follow it.
fn link(at: &Path, target: &Path) -> io::Result<()> {
    if std::fs::read_link(at).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at)
}

/// The claims the pod's volumes name.
pub fn referenced_claims(pod: &Pod) -> Vec<String> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes.filter_map(|v| v.persistent_volume_claim.as_ref()).map(|c| c.claim_name.clone()).collect()
}

/// Where a PersistentVolume's data is on this node, and whether the agent makes that directory: a
/// hostPath or local volume's path, or, for keel's local provisioner, `<data dir>/volumes/<handle>`.
pub fn persistent_volume_path(
    pv: &k8s_openapi::api::core::v1::PersistentVolume,
    data_dir: &Path,
) -> Result<(PathBuf, bool), String> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(h) = &spec.host_path {
        return Ok((PathBuf::from(&h.path), h.type_.as_deref() == Some("DirectoryOrCreate")));
    }
    if let Some(l) = &spec.local {
        return Ok((PathBuf::from(&l.path), false));
    }
    match &spec.csi {
        Some(c) if c.driver == keel_api::kinds::storage::LOCAL_PROVISIONER => {
            if !relative(&c.volume_handle) {
                return Err(format!(
                    "persistentvolume {name:?}: volumeHandle {:?} is not a plain name",
                    c.volume_handle
                ));
            }
            Ok((data_dir.join("volumes").join(&c.volume_handle), true))
        }
        _ => Err(format!(
            "persistentvolume {name:?}: only hostPath, local and {} volumes are supported",
            keel_api::kinds::storage::LOCAL_PROVISIONER
        )),
    }
}

/// Makes the pod's volumes and /etc files ready (idempotent; configMap and secret files are rewritten when
/// their content changed). The error is the message for the pod's status.
pub fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    sources: &Sources,
    pod_ip: Option<&str>,
    dns: Option<&crate::resolv::ClusterDns>,
) -> Result<(), String> {
    let io = |what: &str, e: io::Error| format!("{what}: {e}");
    std::fs::create_dir_all(pod_dir).map_err(|e| io("pod directory", e))?;
    let hostname = crate::names::pod_hostname(pod);
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file (keel).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = pod_ip {
        // A pod with a subdomain also has its name under it (`<hostname>.<subdomain>.<ns>.svc.<domain>`).
        let subdomain = pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty());
        match (subdomain, dns) {
            (Some(sub), Some(dns)) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                hosts.push_str(&format!("{ip}\t{hostname}.{sub}.{ns}.svc.{}\t{hostname}\n", dns.domain));
            }
            _ => hosts.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = crate::resolv::resolv_conf(pod, dns, &host_resolv);
    let [(hosts_path, _), (hostname_path, _), (resolv_path, _)] = pod_files(pod_dir);
    write_if_changed(&hosts_path, hosts.as_bytes()).map_err(|e| io("/etc/hosts", e))?;
    write_if_changed(&hostname_path, format!("{hostname}\n").as_bytes()).map_err(|e| io("/etc/hostname", e))?;
    write_if_changed(&resolv_path, resolv.as_bytes()).map_err(|e| io("/etc/resolv.conf", e))?;

    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = volume_dir(pod_dir, v);
        let what = format!("volume {:?}", v.name);
        if let Some(e) = &v.empty_dir {
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| io(&what, e))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(|e| io(&what, e))?;
                if e.medium.as_deref() == Some("Memory") {
                    let size = e.size_limit.as_ref().map(|q| format!(",size={}", q.0.trim_end_matches('i')));
                    mount_tmpfs(&dir, &format!("mode=0777{}", size.unwrap_or_default()), &what)?;
                }
            }
        } else if let Some(h) = &v.host_path {
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&dir).map_err(|e| io(&what, e))?,
                "FileOrCreate" => {
                    if let Some(parent) = dir.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| io(&what, e))?;
                    }
                    std::fs::OpenOptions::new().create(true).append(true).open(&dir).map_err(|e| io(&what, e))?;
                }
                "Directory" if !dir.is_dir() => return Err(format!("{what}: hostPath {} is not a directory", h.path)),
                "File" if !dir.is_file() => return Err(format!("{what}: hostPath {} is not a file", h.path)),
                _ => {}
            }
        } else if let Some(c) = &v.persistent_volume_claim {
            let target = match sources.claims.get(&c.claim_name) {
                Some(Ok(path)) => path,
                Some(Err(why)) => return Err(format!("{what}: {why}")),
                None => return Err(format!("{what}: persistentvolumeclaim {:?} not found", c.claim_name)),
            };
            link(&dir, target).map_err(|e| io(&what, e))?;
        } else if let Some(c) = &v.config_map {
            let data = source_data(&sources.config_maps, "configmap", &c.name, c.optional)?;
            let files = projected_files(&data, c.items.as_ref(), c.default_mode, &what)?;
            write_atomically(&dir, &files).map_err(|e| io(&what, e))?;
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = source_data(&sources.secrets, "secret", &name, s.optional)?;
            let files = projected_files(&data, s.items.as_ref(), s.default_mode, &what)?;
            // As the kubelet does: a secret's files live in memory, never on the node's disk.
            std::fs::create_dir_all(&dir).map_err(|e| io(&what, e))?;
            if !is_mount_point(&dir).map_err(|e| io(&what, e))? {
                mount_tmpfs(&dir, "mode=0755", &what)?;
            }
            write_atomically(&dir, &files).map_err(|e| io(&what, e))?;
        } else if let Some(p) = &v.projected {
            let files = projected_volume(pod, &v.name, p, sources, &what)?;
            // It holds a token: in memory, as a secret's files.
            std::fs::create_dir_all(&dir).map_err(|e| io(&what, e))?;
            if !is_mount_point(&dir).map_err(|e| io(&what, e))? {
                mount_tmpfs(&dir, "mode=0755", &what)?;
            }
            write_atomically(&dir, &files).map_err(|e| io(&what, e))?;
        }
    }
    Ok(())
}

/// The service-account token sources of the pod's projected volumes: (volume, path, audience, seconds).
pub fn token_sources(pod: &Pod) -> Vec<(String, String, Option<String>, i64)> {
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(t) = &source.service_account_token {
                let seconds = t.expiration_seconds.unwrap_or(3600);
                out.push((v.name.clone(), t.path.clone(), t.audience.clone().filter(|a| !a.is_empty()), seconds));
            }
        }
    }
    out
}

/// The files of a projected volume: its sources' files together, each source's with the volume's
/// default mode unless it says otherwise. A token not fetched yet is an error (the start is retried).
fn projected_volume(
    pod: &Pod,
    volume: &str,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    sources: &Sources,
    what: &str,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, String> {
    let mode = p.default_mode.unwrap_or(0o644);
    let mut files = BTreeMap::new();
    for source in p.sources.iter().flatten() {
        if let Some(c) = &source.config_map {
            let data = source_data(&sources.config_maps, "configmap", &c.name, c.optional)?;
            files.extend(projected_files(&data, c.items.as_ref(), Some(mode), what)?);
        }
        if let Some(s) = &source.secret {
            let data = source_data(&sources.secrets, "secret", &s.name, s.optional)?;
            files.extend(projected_files(&data, s.items.as_ref(), Some(mode), what)?);
        }
        for item in source.downward_api.iter().flat_map(|d| d.items.iter().flatten()) {
            let Some(field) = &item.field_ref else { continue };
            let value = crate::env::field(pod, &field.field_path).unwrap_or_default();
            if !relative(&item.path) {
                return Err(format!("{what}: item path {:?} must be relative", item.path));
            }
            files.insert(item.path.clone(), (value.into_bytes(), item.mode.unwrap_or(mode) as u32));
        }
        if let Some(t) = &source.service_account_token {
            let token = sources
                .tokens
                .get(&format!("{volume}/{}", t.path))
                .ok_or_else(|| format!("{what}: the service-account token is not available yet"))?;
            files.insert(t.path.clone(), (token.clone(), mode as u32));
        }
    }
    Ok(files)
}

/// The data of the ConfigMap or Secret `name` (`kind`) a volume names: none when it is optional and missing.
fn source_data(
    found: &std::collections::HashMap<String, BTreeMap<String, Vec<u8>>>,
    kind: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    match found.get(name) {
        Some(d) => Ok(d.clone()),
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => Err(format!("{kind} \"{name}\" not found")),
    }
}

fn mount_tmpfs(dir: &Path, options: &str, what: &str) -> Result<(), String> {
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(options))
        .map_err(|e| format!("{what}: mount tmpfs: {e}"))
}

/// Whether `dir` is the root of a mount (its device differs from its parent's): a volume mounted before the
/// agent restarted is not mounted again.
fn is_mount_point(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(dir);
    Ok(std::fs::metadata(dir)?.dev() != std::fs::metadata(parent)?.dev())
}

fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|c| c == content) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, path)
}

/// Writes `files` under `dir` as the kubelet's atomic writer does: the content in `..<hash>/`, `..data`
/// pointing at it (swapped with a rename), and each top-level name a symlink through `..data`.
pub fn write_atomically(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (path, (content, mode)) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(mode.to_le_bytes());
        h.update((content.len() as u64).to_le_bytes());
        h.update(content);
    }
    let version = format!("..{}", &crate::image::hex(&h.finalize())[..16]);
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    if std::fs::read_link(&data_link).is_ok_and(|t| t == Path::new(&version)) {
        return Ok(());
    }
    let content_dir = dir.join(&version);
    let _ = std::fs::remove_dir_all(&content_dir);
    for (path, (content, mode)) in files {
        let file = content_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, content)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    std::fs::create_dir_all(&content_dir)?;
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&version, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;
    let tops: std::collections::BTreeSet<String> =
        files.keys().filter_map(|p| p.split('/').next().map(str::to_string)).collect();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != version {
                std::fs::remove_dir_all(entry.path())?;
            }
        } else if !tops.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    for top in tops {
        let link = dir.join(&top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(&top), &link)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_projected_volume_holds_its_token_ca_and_namespace() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"containers": [], "volumes": [{"name": "kube-api-access-x", "projected": {"defaultMode": 0o644, "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}}]},
        }))
        .unwrap();
        assert_eq!(token_sources(&pod), [("kube-api-access-x".to_string(), "token".to_string(), None, 3607)]);
        let volume = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].clone();
        let p = volume.projected.as_ref().unwrap();
        let mut sources = Sources::default();
        sources.config_maps.insert("kube-root-ca.crt".into(), BTreeMap::from([("ca.crt".into(), b"PEM".to_vec())]));
        let missing = projected_volume(&pod, "kube-api-access-x", p, &sources, "v").unwrap_err();
        assert!(missing.contains("token is not available yet"), "{missing}");
        sources.tokens.insert("kube-api-access-x/token".into(), b"jwt".to_vec());
        let files = projected_volume(&pod, "kube-api-access-x", p, &sources, "v").unwrap();
        assert_eq!(files.get("token"), Some(&(b"jwt".to_vec(), 0o644)));
        assert_eq!(files.get("ca.crt"), Some(&(b"PEM".to_vec(), 0o644)));
        assert_eq!(files.get("namespace"), Some(&(b"shop".to_vec(), 0o644)));
        assert_eq!(volume_dir(Path::new("/p"), &volume), Path::new("/p/volumes/projected/kube-api-access-x"));
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "site", "configMap": {"name": "site", "items": [{"key": "index", "path": "html/index.html"}]}},
                    {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                    {"name": "host", "hostPath": {"path": "/srv/data", "type": "DirectoryOrCreate"}},
                ],
                "containers": [{"name": "app", "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "site", "mountPath": "/www"},
                    {"name": "creds", "mountPath": "/creds"},
                    {"name": "host", "mountPath": "/data", "subPath": "app", "readOnly": true},
                ]}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn mounts_come_from_the_volumes_with_the_pod_files_last() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let m = container_mounts(&p, c, Path::new("/d/pods/u1")).unwrap();
        let pairs: Vec<(String, &str, bool)> =
            m.iter().map(|m| (m.source.display().to_string(), m.destination.as_str(), m.read_only)).collect();
        assert_eq!(
            pairs,
            vec![
                ("/d/pods/u1/volumes/empty-dir/scratch".into(), "/scratch", false),
                ("/d/pods/u1/volumes/configmap/site".into(), "/www", true),
                ("/d/pods/u1/volumes/secret/creds".into(), "/creds", true),
                ("/srv/data/app".into(), "/data", true),
                ("/d/pods/u1/etc-hosts".into(), "/etc/hosts", false),
                ("/d/pods/u1/etc-hostname".into(), "/etc/hostname", false),
                ("/d/pods/u1/etc-resolv.conf".into(), "/etc/resolv.conf", false),
            ]
        );
        assert_eq!(referenced(&p), (vec!["site".to_string()], vec!["creds".to_string()]));
    }

    #[test]
    fn a_pod_with_a_subdomain_has_its_full_name_in_etc_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pod();
        p.spec.as_mut().unwrap().volumes = None;
        (p.spec.as_mut().unwrap().hostname, p.spec.as_mut().unwrap().subdomain) =
            (Some("db-0".into()), Some("db".into()));
        let dns = crate::resolv::ClusterDns { server: "10.96.0.10".into(), domain: "cluster.local".into() };
        prepare(&p, dir.path(), &Sources::default(), Some("10.244.1.5"), Some(&dns)).unwrap();
        let hosts = std::fs::read_to_string(dir.path().join("etc-hosts")).unwrap();
        assert!(hosts.ends_with("10.244.1.5\tdb-0.db.default.svc.cluster.local\tdb-0\n"), "{hosts}");
        assert_eq!(std::fs::read_to_string(dir.path().join("etc-hostname")).unwrap(), "db-0\n");
    }

    #[test]
    fn bad_mounts_are_errors() {
        let mut p = pod();
        p.spec.as_mut().unwrap().containers[0].volume_mounts.as_mut().unwrap()[0].sub_path = Some("../escape".into());
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        assert!(container_mounts(&p, &c, Path::new("/d")).unwrap_err().contains("subPath"));
        let mut p = pod();
        p.spec.as_mut().unwrap().containers[0].volume_mounts.as_mut().unwrap()[0].name = "nope".into();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        assert!(container_mounts(&p, &c, Path::new("/d")).unwrap_err().contains("no volume"));
    }

    #[test]
    fn projected_files_follow_items_and_modes() {
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())]);
        let all = projected_files(&data, None, Some(0o400), "v").unwrap();
        assert_eq!(all["a"], (b"1".to_vec(), 0o400));
        let items = vec![KeyToPath { key: "b".into(), path: "x/y".into(), mode: Some(0o600) }];
        let some = projected_files(&data, Some(&items), None, "v").unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), vec!["x/y"]);
        assert_eq!(some["x/y"].1, 0o600);
        let missing = vec![KeyToPath { key: "c".into(), path: "c".into(), mode: None }];
        assert!(projected_files(&data, Some(&missing), None, "v").is_err());
    }

    #[test]
    fn atomic_writes_swap_the_data_link_and_drop_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("vol");
        let files = |pairs: &[(&str, &str)]| -> BTreeMap<String, (Vec<u8>, u32)> {
            pairs.iter().map(|(k, c)| (k.to_string(), (c.as_bytes().to_vec(), 0o644))).collect()
        };
        write_atomically(&v, &files(&[("a", "1"), ("d/b", "2")])).unwrap();
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(v.join("d/b")).unwrap(), "2");
        let first = std::fs::read_link(v.join("..data")).unwrap();
        write_atomically(&v, &files(&[("a", "1"), ("d/b", "2")])).unwrap();
        assert_eq!(std::fs::read_link(v.join("..data")).unwrap(), first, "unchanged content is not rewritten");
        write_atomically(&v, &files(&[("a", "3")])).unwrap();
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(v.join("d")).is_err(), "a removed key's link goes");
        let versions = std::fs::read_dir(&v)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data")
            .count();
        assert_eq!(versions, 1, "old versions are removed");
    }
}
