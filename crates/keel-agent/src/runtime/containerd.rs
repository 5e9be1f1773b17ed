//! containerd through its native gRPC API (containerd-client): images in the content store, unpacked into
//! overlayfs snapshots; containers and their tasks (runc); exits as events. Every call carries the agent's
//! containerd namespace, so the agent sees only what it made.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    ApplyRequest, Container, CreateContainerRequest, CreateImageRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetImageRequest, GetRequest, Image, InfoRequest, ListContainersRequest, ReadContentRequest,
    StartRequest, SubscribeRequest, UpdateImageRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::{Descriptor as CdDescriptor, Mount};
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::image::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::names;
use crate::sync::{ContainerState, ObservedContainer};

mod exec;
mod pull;

pub use exec::{ExecIo, ExecOutput};
pub use pull::Registry;

/// Where the blobs of an image being stored come from (an archive, a registry).
pub(super) trait BlobSource {
    async fn blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, RuntimeError>;
}

/// The blobs of an OCI layout tar, read into memory.
struct ArchiveBlobs {
    archive: String,
    blobs: HashMap<String, Vec<u8>>,
}

impl BlobSource for ArchiveBlobs {
    async fn blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, RuntimeError> {
        self.blobs.get(&descriptor.digest).cloned().ok_or_else(|| RuntimeError::Image {
            image: self.archive.clone(),
            message: format!("lacks blob {}", descriptor.digest),
        })
    }
}

const SNAPSHOTTER: &str = "overlayfs";
const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to containerd at {socket}: {source}")]
    Connect { socket: String, source: tonic::transport::Error },
    #[error("containerd {call}: {status}", status = .status.message())]
    Call { call: &'static str, status: Status },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("exec in container {id}: {message}")]
    Exec { id: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl RuntimeError {
    /// containerd itself is down or restarting (not a fault of the container).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::Connect { .. })
            || matches!(self, RuntimeError::Call { status, .. } if status.code() == Code::Unavailable)
    }
}

fn call(name: &'static str) -> impl FnOnce(Status) -> RuntimeError {
    move |status| RuntimeError::Call { call: name, status }
}

/// Ok(None) for NotFound.
fn found<T>(r: Result<T, Status>, name: &'static str) -> Result<Option<T>, RuntimeError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(RuntimeError::Call { call: name, status: s }),
    }
}

/// An image present in containerd, resolved for running containers.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub name: String,
    /// The digest of the image's target (index or manifest): the container status's imageID.
    pub digest: String,
    pub config: ImageConfig,
    /// The snapshot of the top layer.
    pub chain_id: String,
}

/// A containerd (socket, namespace).
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl Containerd {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd, RuntimeError> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|source| RuntimeError::Connect { socket: socket.display().to_string(), source })?;
        Ok(Containerd { channel, namespace: namespace.to_string() })
    }

    /// Connects, retrying until `within` has passed (containerd may still be starting).
    pub async fn connect_retrying(
        socket: &Path,
        namespace: &str,
        within: Duration,
    ) -> Result<Containerd, RuntimeError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let result = match Containerd::connect(socket, namespace).await {
                Ok(c) => c.version().await.map(|_| c),
                Err(e) => Err(e),
            };
            match result {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => tracing::debug!(error = %e, "containerd not ready yet"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert("containerd-namespace", self.namespace.parse().expect("a namespace is ASCII"));
        req
    }

    fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut req = self.request(msg);
        req.metadata_mut().insert("containerd-lease", lease.parse().expect("a lease id is ASCII"));
        req
    }

    /// containerd's version, e.g. `1.6.20~ds1`.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let v = VersionClient::new(self.channel.clone()).version(()).await.map_err(call("Version"))?;
        Ok(v.into_inner().version)
    }

    // ---- images ----

    /// The image named `name` (normalized), if containerd has it, with its config for this platform.
    pub async fn image(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let got =
            ImagesClient::new(self.channel.clone()).get(self.request(GetImageRequest { name: name.to_string() })).await;
        let Some(got) = found(got, "Images.Get")? else { return Ok(None) };
        let target = got
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| RuntimeError::Image { image: name.to_string(), message: "has no target".into() })?;
        let bad = |message: String| RuntimeError::Image { image: name.to_string(), message };
        let mut manifest_digest = target.digest.clone();
        if image::is_index(&target.media_type) {
            let index: Index = serde_json::from_slice(&self.read(&target.digest).await?)
                .map_err(|e| bad(format!("unreadable index: {e}")))?;
            let chosen = image::pick_platform(&index, image::host_architecture())
                .ok_or_else(|| bad(format!("has no linux/{} manifest", image::host_architecture())))?;
            manifest_digest = chosen.digest.clone();
        }
        let manifest: Manifest = serde_json::from_slice(&self.read(&manifest_digest).await?)
            .map_err(|e| bad(format!("unreadable manifest: {e}")))?;
        let config = ImageConfig::parse(&self.read(&manifest.config.digest).await?)
            .map_err(|e| bad(format!("unreadable config: {e}")))?;
        let chain_id = image::chain_ids(&config.diff_ids).pop().ok_or_else(|| bad("has no layers".into()))?;
        Ok(Some(ImageInfo { name: name.to_string(), digest: target.digest, config, chain_id }))
    }

    async fn read(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request(ReadContentRequest { digest: digest.to_string(), offset: 0, size: 0 }))
            .await
            .map_err(call("Content.Read"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(call("Content.Read"))? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    async fn has_blob(&self, digest: &str) -> Result<bool, RuntimeError> {
        let info = ContentClient::new(self.channel.clone())
            .info(self.request(InfoRequest { digest: digest.to_string() }))
            .await;
        Ok(found(info, "Content.Info")?.is_some())
    }

    /// Writes one blob into the content store (a no-op when it is there), with its GC labels.
    async fn write_blob(
        &self,
        lease: &str,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let reference = format!("keel-{}-{}", digest.replace(':', "-"), uuid::Uuid::new_v4().simple());
        let total = data.len() as i64;
        let mut messages: Vec<WriteContentRequest> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: digest.to_string(),
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            })
            .collect();
        messages.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: digest.to_string(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        let result = async {
            let mut responses = ContentClient::new(self.channel.clone())
                .write(self.leased(futures::stream::iter(messages), lease))
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok::<(), Status>(())
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(RuntimeError::Call { call: "Content.Write", status: s }),
        }
    }

    /// Imports the images of an OCI image-layout tar (each manifest named by its `io.containerd.image.name`
    /// annotation) and unpacks them for this platform. Returns the names imported.
    pub async fn import_oci_archive(&self, path: &Path) -> Result<Vec<String>, RuntimeError> {
        let bad = |message: String| RuntimeError::Image { image: path.display().to_string(), message };
        let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
        let mut index_json = None;
        let mut archive = tar::Archive::new(std::fs::File::open(path)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            if name == "index.json" {
                index_json = Some(data);
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{hex}"), data);
            }
        }
        let index: Index = serde_json::from_slice(&index_json.ok_or_else(|| bad("has no index.json".into()))?)
            .map_err(|e| bad(format!("unreadable index.json: {e}")))?;
        let source = ArchiveBlobs { archive: path.display().to_string(), blobs };
        let lease = self.lease().await?;
        let mut names = Vec::new();
        let result = async {
            for top in &index.manifests {
                let Some(name) = top.annotations.get("io.containerd.image.name") else { continue };
                self.store_image(&lease, name, top, &source).await?;
                names.push(name.clone());
            }
            Ok::<(), RuntimeError>(())
        }
        .await;
        self.drop_lease(&lease).await;
        result.map(|()| names)
    }

    /// Stores image `name` whose top descriptor (index or manifest) is `top`, its blobs read from `source`:
    /// the manifest for this platform, its config and layers (each with containerd's GC labels), unpacked
    /// into snapshots, then the image record.
    pub(super) async fn store_image(
        &self,
        lease: &str,
        name: &str,
        top: &Descriptor,
        source: &impl BlobSource,
    ) -> Result<(), RuntimeError> {
        let bad = |message: String| RuntimeError::Image { image: name.to_string(), message };
        let top_bytes = source.blob(top).await?;
        // The manifest for this platform (through an index if there is one).
        let mut manifest_desc = top.clone();
        let mut index_labels = HashMap::new();
        if image::is_index(&top.media_type) {
            let nested: Index =
                serde_json::from_slice(&top_bytes).map_err(|e| bad(format!("unreadable index {}: {e}", top.digest)))?;
            manifest_desc = image::pick_platform(&nested, image::host_architecture())
                .ok_or_else(|| bad(format!("no linux/{} manifest", image::host_architecture())))?
                .clone();
            index_labels.insert("containerd.io/gc.ref.content.m.0".to_string(), manifest_desc.digest.clone());
        }
        let manifest_bytes =
            if image::is_index(&top.media_type) { source.blob(&manifest_desc).await? } else { top_bytes.clone() };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| bad(format!("unreadable manifest {}: {e}", manifest_desc.digest)))?;
        let config_bytes = source.blob(&manifest.config).await?;
        let config = ImageConfig::parse(&config_bytes).map_err(|e| bad(format!("unreadable config: {e}")))?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "the manifest has {} layers but the config {} diff ids",
                manifest.layers.len(),
                config.diff_ids.len()
            )));
        }
        let chains = image::chain_ids(&config.diff_ids);
        for layer in &manifest.layers {
            if !self.has_blob(&layer.digest).await? {
                self.write_blob(lease, &layer.digest, &source.blob(layer).await?, HashMap::new()).await?;
            }
        }
        let top_chain = chains.last().cloned().ok_or_else(|| bad("the image has no layers".into()))?;
        let config_labels = HashMap::from([(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top_chain)]);
        self.write_blob(lease, &manifest.config.digest, &config_bytes, config_labels).await?;
        let mut manifest_labels =
            HashMap::from([("containerd.io/gc.ref.content.config".to_string(), manifest.config.digest.clone())]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
        }
        self.write_blob(lease, &manifest_desc.digest, &manifest_bytes, manifest_labels).await?;
        if image::is_index(&top.media_type) {
            self.write_blob(lease, &top.digest, &top_bytes, index_labels).await?;
        }
        self.unpack(lease, &manifest, &config).await?;
        self.put_image(name, top).await
    }

    async fn lease(&self) -> Result<String, RuntimeError> {
        use containerd_client::services::v1::CreateRequest;
        let id = format!("keel-{}", uuid::Uuid::new_v4().simple());
        let expire = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire.to_string())]);
        LeasesClient::new(self.channel.clone())
            .create(self.request(CreateRequest { id: id.clone(), labels }))
            .await
            .map_err(call("Leases.Create"))?;
        Ok(id)
    }

    async fn drop_lease(&self, id: &str) {
        use containerd_client::services::v1::DeleteRequest;
        let r = LeasesClient::new(self.channel.clone())
            .delete(self.request(DeleteRequest { id: id.to_string(), sync: false }))
            .await;
        if let Err(e) = r {
            tracing::warn!(lease = id, error = %e.message(), "cannot delete a containerd lease (it expires)");
        }
    }

    async fn put_image(&self, name: &str, target: &Descriptor) -> Result<(), RuntimeError> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(CdDescriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let created = images
            .create(self.request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(call("Images.Update"))?;
                Ok(())
            }
            Err(s) => Err(RuntimeError::Call { call: "Images.Create", status: s }),
        }
    }

    /// Applies each layer onto a snapshot named by its chain id (skipping the ones present).
    async fn unpack(&self, lease: &str, manifest: &Manifest, config: &ImageConfig) -> Result<(), RuntimeError> {
        let chains = image::chain_ids(&config.diff_ids);
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mut parent = String::new();
        for ((layer, diff_id), chain) in manifest.layers.iter().zip(&config.diff_ids).zip(&chains) {
            let stat = snapshots
                .stat(self.request(StatSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: chain.clone() }))
                .await;
            if found(stat, "Snapshots.Stat")?.is_none() {
                let key = format!("extract-{}-{chain}", uuid::Uuid::new_v4().simple());
                let mounts = snapshots
                    .prepare(self.leased(
                        PrepareSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key: key.clone(),
                            parent: parent.clone(),
                            labels: HashMap::new(),
                        },
                        lease,
                    ))
                    .await
                    .map_err(call("Snapshots.Prepare"))?
                    .into_inner()
                    .mounts;
                let applied = DiffClient::new(self.channel.clone())
                    .apply(self.leased(
                        ApplyRequest {
                            diff: Some(CdDescriptor {
                                media_type: layer.media_type.clone(),
                                digest: layer.digest.clone(),
                                size: layer.size,
                                annotations: HashMap::new(),
                            }),
                            mounts,
                            payloads: HashMap::new(),
                            sync_fs: false,
                        },
                        lease,
                    ))
                    .await
                    .map_err(call("Diff.Apply"))?
                    .into_inner()
                    .applied;
                if applied.as_ref().map(|d| d.digest.as_str()) != Some(diff_id.as_str()) {
                    return Err(RuntimeError::Image {
                        image: layer.digest.clone(),
                        message: format!("layer unpacked to {applied:?}, the config says {diff_id}"),
                    });
                }
                let committed = snapshots
                    .commit(self.leased(
                        CommitSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                        lease,
                    ))
                    .await;
                if let Err(s) = committed {
                    // Another unpack committed the same layer first.
                    let _ = snapshots
                        .remove(self.request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key }))
                        .await;
                    if s.code() != Code::AlreadyExists {
                        return Err(RuntimeError::Call { call: "Snapshots.Commit", status: s });
                    }
                }
            }
            parent = chain.clone();
        }
        Ok(())
    }

    // ---- containers ----

    /// Creates the container `id` on `image` with `spec` and starts its task, stdout and stderr going to
    /// `stdio`: a file's path (which must exist; the shim appends both streams to it) or a `binary://` URI
    /// (a logger program the shim runs).
    pub async fn create_start(
        &self,
        id: &str,
        labels: HashMap<String, String>,
        image: &ImageInfo,
        spec: &oci_spec::runtime::Spec,
        stdio: &str,
    ) -> Result<u32, RuntimeError> {
        let spec_json = serde_json::to_vec(spec).expect("a runtime spec serializes");
        let container = Container {
            id: id.to_string(),
            labels,
            image: image.name.clone(),
            runtime: Some(Runtime { name: RUNTIME.into(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: spec_json }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.to_string(),
            created_at: None,
            updated_at: None,
            extensions: HashMap::new(),
            sandbox: String::new(),
        };
        // The container record first: it holds the snapshot against containerd's garbage collector.
        let created = ContainersClient::new(self.channel.clone())
            .create(self.request(CreateContainerRequest { container: Some(container) }))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(RuntimeError::Call { call: "Containers.Create", status: s }),
        }
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let prepared = snapshots
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.to_string(),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await;
        let mounts: Vec<Mount> = match prepared {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => {
                use containerd_client::services::v1::snapshots::MountsRequest;
                snapshots
                    .mounts(self.request(MountsRequest { snapshotter: SNAPSHOTTER.into(), key: id.to_string() }))
                    .await
                    .map_err(call("Snapshots.Mounts"))?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err(RuntimeError::Call { call: "Snapshots.Prepare", status: s }),
        };
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(self.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: stdio.to_string(),
                stderr: stdio.to_string(),
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await
            .map_err(call("Tasks.Create"))?;
        let started = tasks
            .start(self.request(StartRequest { container_id: id.to_string(), exec_id: String::new() }))
            .await
            .map_err(call("Tasks.Start"))?;
        Ok(started.into_inner().pid)
    }

    /// The containers of one pod (by its uid label), or of every pod, with their tasks' states.
    pub async fn containers(&self, pod_uid: Option<&str>) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let filters = match pod_uid {
            Some(uid) => vec![format!("labels.\"{}\"=={uid}", names::LABEL_POD_UID)],
            None => vec![],
        };
        let list = ContainersClient::new(self.channel.clone())
            .list(self.request(ListContainersRequest { filters }))
            .await
            .map_err(call("Containers.List"))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(list.len());
        let mut tasks = TasksClient::new(self.channel.clone());
        for c in list {
            let task = tasks.get(self.request(GetRequest { container_id: c.id.clone(), exec_id: String::new() })).await;
            let state = match found(task, "Tasks.Get")?.and_then(|t| t.into_inner().process) {
                None => ContainerState::Created,
                Some(p) => process_state(&p),
            };
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            out.push(ObservedContainer {
                id: c.id.clone(),
                pod_uid: label(names::LABEL_POD_UID),
                name: label(names::LABEL_CONTAINER_NAME),
                attempt: label(names::LABEL_CONTAINER_ATTEMPT).parse().unwrap_or(0),
                image: c.image.clone(),
                created_at: c.created_at.as_ref().and_then(timestamp),
                state,
                oom_killed: false,
                probes: Default::default(),
            });
        }
        Ok(out)
    }

    /// Signals a container's task; a task that is gone or already stopped is not an error.
    pub async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        self.exec_kill(id, "", signal).await
    }

    /// Removes a stopped container: its task, its record and its snapshot (each may be gone already).
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let deleted = TasksClient::new(self.channel.clone())
            .delete(self.request(DeleteTaskRequest { container_id: id.to_string() }))
            .await;
        found(deleted, "Tasks.Delete")?;
        let deleted = ContainersClient::new(self.channel.clone())
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        found(deleted, "Containers.Delete")?;
        let removed = SnapshotsClient::new(self.channel.clone())
            .remove(self.request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: id.to_string() }))
            .await;
        found(removed, "Snapshots.Remove")?;
        Ok(())
    }

    /// The ids of containers whose task exited or was OOM-killed, as they happen.
    pub async fn exits(&self) -> Result<impl Stream<Item = Result<String, RuntimeError>>, RuntimeError> {
        let filters = vec!["topic==\"/tasks/exit\"".to_string(), "topic==\"/tasks/oom\"".to_string()];
        let namespace = self.namespace.clone();
        let stream = EventsClient::new(self.channel.clone())
            .subscribe(SubscribeRequest { filters })
            .await
            .map_err(call("Events.Subscribe"))?
            .into_inner();
        Ok(stream.filter_map(move |envelope| {
            let namespace = namespace.clone();
            async move {
                let envelope = match envelope {
                    Ok(e) => e,
                    Err(s) => return Some(Err(RuntimeError::Call { call: "Events.Subscribe", status: s })),
                };
                if envelope.namespace != namespace {
                    return None;
                }
                let value = envelope.event?.value;
                let id = match envelope.topic.as_str() {
                    "/tasks/exit" => containerd_client::events::TaskExit::decode(value.as_slice()).ok()?.container_id,
                    "/tasks/oom" => containerd_client::events::TaskOom::decode(value.as_slice()).ok()?.container_id,
                    _ => return None,
                };
                Some(Ok(id))
            }
        }))
    }
}

fn timestamp(t: &prost_types::Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.seconds, t.nanos).ok()
}

fn process_state(p: &containerd_client::types::v1::Process) -> ContainerState {
    use containerd_client::types::v1::Status as S;
    match S::try_from(p.status).unwrap_or(S::Unknown) {
        S::Created => ContainerState::Created,
        S::Running | S::Paused | S::Pausing => ContainerState::Running,
        S::Stopped => {
            ContainerState::Exited { code: p.exit_status as i32, finished_at: p.exited_at.as_ref().and_then(timestamp) }
        }
        S::Unknown => ContainerState::Unknown,
    }
}
