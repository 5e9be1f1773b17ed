//! A pod's place on the network, as the workers see it ([`PodNetwork`], narrow on purpose): its namespaces
//! (network, UTS, IPC: the CRI's pod sandbox) made and attached to the pod network, its addresses, and its
//! teardown. [`HostNetwork`] does it on this host: [`crate::sandbox`]'s namespace files and the CNI
//! plugins ([`crate::cni`]), when the node has a pod CIDR.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::spec::SandboxPaths;
use crate::{cni, names, sandbox};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Namespaces(#[from] std::io::Error),
    #[error("{0}")]
    Cni(#[from] cni::CniError),
}

#[async_trait::async_trait]
pub trait PodNetwork: Send + Sync {
    /// Whether the pod's namespaces exist and, on a pod network, are attached to it.
    fn ready(&self, uid: &str) -> Result<bool, NetworkError>;
    /// The pod's addresses once attached (None without a pod network, or before the attachment).
    fn addresses(&self, uid: &str) -> Result<Option<Vec<IpAddr>>, NetworkError>;
    /// Makes whatever of the pod's namespaces (with `hostname` in its UTS namespace) and attachment is
    /// missing.
    async fn ensure(&self, uid: &str, hostname: &str) -> Result<(), NetworkError>;
    /// Detaches the pod from the network and removes its namespaces (what is gone already is skipped).
    async fn remove(&self, uid: &str) -> Result<(), NetworkError>;
}

/// The pods' namespaces as files under the agent's data directory, attached through CNI.
pub struct HostNetwork {
    data_dir: PathBuf,
    cni: Option<cni::Network>,
}

impl HostNetwork {
    pub fn new(data_dir: PathBuf, cni: Option<cni::Network>) -> HostNetwork {
        HostNetwork { data_dir, cni }
    }
}

/// The files of a pod's namespaces, under the agent's data directory.
pub fn paths(data_dir: &std::path::Path, uid: &str) -> SandboxPaths {
    SandboxPaths::under(&sandbox::ns_dir(&names::pod_dir(data_dir, uid)))
}

#[async_trait::async_trait]
impl PodNetwork for HostNetwork {
    fn ready(&self, uid: &str) -> Result<bool, NetworkError> {
        let attached = match &self.cni {
            Some(cni) => cni.cached(uid)?.is_some(),
            None => true,
        };
        Ok(attached && sandbox::exists(&paths(&self.data_dir, uid)))
    }

    fn addresses(&self, uid: &str) -> Result<Option<Vec<IpAddr>>, NetworkError> {
        let Some(cni) = &self.cni else { return Ok(None) };
        Ok(cni.cached(uid)?.map(|a| a.ips))
    }

    async fn ensure(&self, uid: &str, hostname: &str) -> Result<(), NetworkError> {
        let paths = paths(&self.data_dir, uid);
        let netns = paths.net.clone();
        let fresh = !sandbox::exists(&paths);
        let hostname = hostname.to_string();
        tokio::task::spawn_blocking(move || sandbox::create(&paths, &hostname))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        if let Some(cni) = &self.cni {
            // New namespaces (the node restarted, or they were lost) have no interface: an attachment
            // cached for the old ones is released first, then the pod is attached again.
            if fresh && cni.cached(uid)?.is_some() {
                tracing::info!(pod_uid = uid, "pod namespaces made again; attaching the pod network again");
                cni.del(uid, None).await?;
            }
            if cni.cached(uid)?.is_none() {
                let attachment = cni.add(uid, &netns).await?;
                tracing::info!(pod_uid = uid, ips = ?attachment.ips, "pod network attached");
            }
        }
        Ok(())
    }

    async fn remove(&self, uid: &str) -> Result<(), NetworkError> {
        let paths = paths(&self.data_dir, uid);
        if let Some(cni) = &self.cni {
            cni.del(uid, Some(&paths.net)).await?;
        }
        sandbox::remove(&paths)?;
        Ok(())
    }
}
