//! Image pulls from OCI registries (oci-client): the top manifest (an index or a manifest) is resolved by
//! reference, then the manifest for this platform, its config and its layers are fetched and stored like an
//! imported archive ([`Containerd::store_image`]). Registries named as insecure are spoken to over plain
//! HTTP; credentials (imagePullSecrets) are not supported yet: pulls are anonymous.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use super::{BlobSource, Containerd, ImageInfo, RuntimeError};
use crate::image::{self, Descriptor};

/// The manifest media types a pull accepts.
const ACCEPTED: [&str; 4] =
    [image::MEDIA_OCI_INDEX, image::MEDIA_DOCKER_LIST, image::MEDIA_OCI_MANIFEST, image::MEDIA_DOCKER_MANIFEST];

/// A registry client.
#[derive(Clone)]
pub struct Registry {
    client: oci_client::Client,
}

impl Registry {
    /// A client that uses HTTPS except for the `insecure` registries (`host:port`), which get plain HTTP.
    pub fn new(insecure: Vec<String>) -> Registry {
        // reqwest is built without a crypto provider (no aws-lc): ring is the process's.
        rustls::crypto::ring::default_provider().install_default().ok();
        let config = ClientConfig { protocol: ClientProtocol::HttpsExcept(insecure), ..Default::default() };
        Registry { client: oci_client::Client::new(config) }
    }
}

/// The blobs of one image in a registry: manifests through the manifests endpoint, the rest as blobs.
struct RegistryBlobs<'a> {
    registry: &'a Registry,
    reference: &'a Reference,
    name: &'a str,
}

impl BlobSource for RegistryBlobs<'_> {
    async fn blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, RuntimeError> {
        let failed = |e: oci_client::errors::OciDistributionError| RuntimeError::Image {
            image: self.name.to_string(),
            message: format!("cannot fetch {}: {e}", descriptor.digest),
        };
        let manifest = image::is_index(&descriptor.media_type)
            || descriptor.media_type == image::MEDIA_OCI_MANIFEST
            || descriptor.media_type == image::MEDIA_DOCKER_MANIFEST;
        if manifest {
            let by_digest = self.reference.clone_with_digest(descriptor.digest.clone());
            let (bytes, _) = self
                .registry
                .client
                .pull_manifest_raw(&by_digest, &RegistryAuth::Anonymous, &ACCEPTED)
                .await
                .map_err(failed)?;
            return Ok(bytes.to_vec());
        }
        let mut out = Vec::with_capacity(usize::try_from(descriptor.size).unwrap_or(0).min(1 << 26));
        self.registry.client.pull_blob(self.reference, descriptor.digest.as_str(), &mut out).await.map_err(failed)?;
        Ok(out)
    }
}

impl Containerd {
    /// Pulls image `name` (normalized, e.g. `registry:5000/app:1`) into the content store, unpacks it and
    /// records it under that name.
    pub async fn pull(&self, registry: &Registry, name: &str) -> Result<ImageInfo, RuntimeError> {
        let bad = |message: String| RuntimeError::Image { image: name.to_string(), message };
        let reference: Reference = name.parse().map_err(|e| bad(format!("not an image reference: {e}")))?;
        let (bytes, digest) = registry
            .client
            .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &ACCEPTED)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
            .ok_or_else(|| bad("the registry's manifest names no mediaType".into()))?;
        if !ACCEPTED.contains(&media_type.as_str()) {
            return Err(bad(format!("unsupported manifest type {media_type}")));
        }
        let top = Descriptor {
            media_type,
            digest,
            size: bytes.len() as i64,
            platform: None,
            annotations: Default::default(),
        };
        let source = RegistryBlobs { registry, reference: &reference, name };
        let lease = self.lease().await?;
        let stored = self.store_image(&lease, name, &top, &source).await;
        self.drop_lease(&lease).await;
        stored?;
        self.image(name).await?.ok_or_else(|| bad("stored but not found".into()))
    }
}
