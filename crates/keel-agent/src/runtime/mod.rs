//! The container runtime: what a pod's worker asks of it ([`ContainerRuntime`], narrow on purpose: the
//! containers of a pod, images, start, signal, remove, a command run to its end), and containerd, which
//! does it. The exec sessions, containerd's exit events and its version, which only the agent's server and
//! its start-up use, stay on [`Containerd`] itself.

pub mod containerd;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub use containerd::{Containerd, ExecIo, ExecOutput, ImageInfo, Registry, RuntimeError};

use crate::sync::ObservedContainer;

/// The containers and images of pods on this node, as the workers see them. The pod network is
/// [`crate::pod_network::PodNetwork`]'s.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// The containers of one pod (`pod_uid`), or of every pod, with their states.
    async fn containers(&self, pod_uid: Option<&str>) -> Result<Vec<ObservedContainer>, RuntimeError>;
    /// The image named `name` (normalized), if the runtime has it.
    async fn image(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError>;
    /// Pulls `name` (normalized) from its registry.
    async fn pull(&self, registry: &Registry, name: &str) -> Result<ImageInfo, RuntimeError>;
    /// Creates container `id` on `image` with `spec` and starts it, its output going to `stdio` (a log
    /// file's path or a logger's `binary://` URI).
    async fn create_start(
        &self,
        id: &str,
        labels: HashMap<String, String>,
        image: &ImageInfo,
        spec: &oci_spec::runtime::Spec,
        stdio: &str,
    ) -> Result<(), RuntimeError>;
    /// Signals a container (gone or stopped is not an error).
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError>;
    /// Removes a stopped container (gone is not an error).
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Runs `args` in running container `id` until it exits or `timeout` passes (then it is killed).
    async fn exec_sync(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
        scratch: &Path,
    ) -> Result<ExecOutput, RuntimeError>;
}

#[async_trait::async_trait]
impl ContainerRuntime for Containerd {
    async fn containers(&self, pod_uid: Option<&str>) -> Result<Vec<ObservedContainer>, RuntimeError> {
        Containerd::containers(self, pod_uid).await
    }

    async fn image(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Containerd::image(self, name).await
    }

    async fn pull(&self, registry: &Registry, name: &str) -> Result<ImageInfo, RuntimeError> {
        Containerd::pull(self, registry, name).await
    }

    async fn create_start(
        &self,
        id: &str,
        labels: HashMap<String, String>,
        image: &ImageInfo,
        spec: &oci_spec::runtime::Spec,
        stdio: &str,
    ) -> Result<(), RuntimeError> {
        Containerd::create_start(self, id, labels, image, spec, stdio).await.map(drop)
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        Containerd::kill(self, id, signal).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        Containerd::remove(self, id).await
    }

    async fn exec_sync(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
        scratch: &Path,
    ) -> Result<ExecOutput, RuntimeError> {
        Containerd::exec_sync(self, id, args, timeout, scratch).await
    }
}
