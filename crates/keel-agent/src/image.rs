//! Images, the pure part: references as Kubernetes writes them, chain ids, and what the agent reads from an
//! image's config and manifests. No IO: the containerd module fetches the bytes.

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The full name of an image reference as a pod writes it: `busybox` is `docker.io/library/busybox:latest`,
/// `registry:5000/app` is `registry:5000/app:latest`; digests and tags are kept.
pub fn normalize_reference(image: &str) -> String {
    let (first, rest) = match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        Some(_) => ("docker.io".to_string(), image.to_string()),
        None => ("docker.io".to_string(), format!("library/{image}")),
    };
    let last = rest.rsplit('/').next().unwrap_or(&rest);
    let tagged = rest.contains('@') || last.contains(':');
    format!("{first}/{rest}{}", if tagged { "" } else { ":latest" })
}

/// The chain id of each layer (the snapshot names): the first layer's is its diff id; each next one is
/// `sha256("<parent chain id> <diff id>")`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => {
                let digest = Sha256::digest(format!("{parent} {diff}").as_bytes());
                format!("sha256:{}", hex(&digest))
            }
        };
        out.push(next);
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A content descriptor as manifests and indexes carry them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// A single-platform manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What running a container needs from an image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct Run {
            entrypoint: Option<Vec<String>>,
            cmd: Option<Vec<String>>,
            env: Option<Vec<String>>,
            working_dir: String,
            user: String,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            config: Option<Run>,
            #[serde(default)]
            rootfs: RootFs,
        }
        let c: Config = serde_json::from_slice(bytes)?;
        let run = c.config.unwrap_or_default();
        Ok(ImageConfig {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir,
            user: run.user,
            diff_ids: c.rootfs.diff_ids,
        })
    }
}

/// The OCI name of this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The manifest for linux/`arch` in an index, if any.
pub fn pick_platform<'a>(index: &'a Index, arch: &str) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .or_else(|| index.manifests.iter().find(|d| d.platform.is_none()))
}

pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_as_docker_does() {
        assert_eq!(normalize_reference("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize_reference("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize_reference("someone/app"), "docker.io/someone/app:latest");
        assert_eq!(normalize_reference("keel.test/busybox:1"), "keel.test/busybox:1");
        assert_eq!(normalize_reference("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(normalize_reference("localhost/app:v2"), "localhost/app:v2");
        assert_eq!(normalize_reference("r.io/app@sha256:abc"), "r.io/app@sha256:abc");
    }

    #[test]
    fn chain_ids_hash_the_parent_and_the_diff_id() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], sha256_digest(b"sha256:a sha256:b"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn image_config_fields_are_read() {
        let c = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/w"},
               "rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
        )
        .unwrap();
        assert_eq!(c.cmd, vec!["sh"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.diff_ids, vec!["sha256:x"]);
    }
}
