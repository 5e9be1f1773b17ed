//! Processes run inside a running container (`Tasks.Exec`): exec probes and preStop hooks, and the
//! building blocks of `kubectl exec`. The process inherits the container's own process spec (env, working
//! directory, user, capabilities) with the command replaced.

use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use oci_spec::runtime::{Process, Spec};
use tonic::Code;

use super::{call, found, Containerd, RuntimeError};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// At most this much of an exec's output is kept (the kubelet's probe output limit).
const OUTPUT_LIMIT: u64 = 10 * 1024;

/// Where an exec'd process's stdio goes: paths (regular files or FIFOs) the shim opens; empty = none.
/// Without a terminal, stdout and stderr are both set or both empty (the shim fails on one empty path).
#[derive(Debug, Clone, Default)]
pub struct ExecIo {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// How a process run to its end ([`Containerd::exec_sync`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; None when it was killed for running past its timeout.
    pub code: Option<i32>,
    /// Its stdout and stderr, interleaved, cut at 10 KiB.
    pub output: String,
}

impl Containerd {
    /// The process spec of container `id` with `args` as its command.
    pub async fn exec_process(&self, id: &str, args: Vec<String>, terminal: bool) -> Result<Process, RuntimeError> {
        let fail = |message: String| RuntimeError::Exec { id: id.to_string(), message };
        let container = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(call("Containers.Get"))?
            .into_inner()
            .container
            .ok_or_else(|| fail("containerd returned no container".into()))?;
        let spec = container.spec.ok_or_else(|| fail("the container has no spec".into()))?;
        let spec: Spec = serde_json::from_slice(&spec.value)
            .map_err(|e| fail(format!("the container's spec is not a runtime spec: {e}")))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(args));
        process.set_terminal(Some(terminal));
        Ok(process)
    }

    /// Creates process `exec_id` in container `id` and starts it. A process that fails to start is deleted.
    pub async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        process: &Process,
        io: &ExecIo,
    ) -> Result<(), RuntimeError> {
        let spec = serde_json::to_vec(process).expect("a process spec serializes");
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal: io.terminal,
                spec: Some(prost_types::Any { type_url: PROCESS_TYPE_URL.into(), value: spec }),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(call("Tasks.Exec"))?;
        let started = tasks
            .start(self.request(StartRequest { container_id: id.to_string(), exec_id: exec_id.to_string() }))
            .await;
        if let Err(status) = started {
            self.exec_delete(id, exec_id).await.ok();
            return Err(RuntimeError::Call { call: "Tasks.Start", status });
        }
        Ok(())
    }

    /// Waits for process `exec_id` to end: its exit status.
    pub async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32, RuntimeError> {
        let waited = TasksClient::new(self.channel.clone())
            .wait(self.request(WaitRequest { container_id: id.to_string(), exec_id: exec_id.to_string() }))
            .await
            .map_err(call("Tasks.Wait"))?;
        Ok(waited.into_inner().exit_status)
    }

    /// Signals process `exec_id` of container `id` ("": its task); one that is gone or stopped is not an
    /// error.
    pub async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), RuntimeError> {
        let r = TasksClient::new(self.channel.clone())
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal,
                all: false,
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(RuntimeError::Call { call: "Tasks.Kill", status: s }),
        }
    }

    /// Forgets an ended process (it may be gone already).
    pub async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let deleted = TasksClient::new(self.channel.clone())
            .delete_process(
                self.request(DeleteProcessRequest { container_id: id.to_string(), exec_id: exec_id.to_string() }),
            )
            .await;
        found(deleted, "Tasks.DeleteProcess")?;
        Ok(())
    }

    /// Resizes the terminal of a process started with one.
    pub async fn exec_resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.request(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            }))
            .await
            .map_err(call("Tasks.ResizePty"))?;
        Ok(())
    }

    /// Closes the process's stdin (the client sent the end of its input).
    pub async fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel.clone())
            .close_io(self.request(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            }))
            .await
            .map_err(call("Tasks.CloseIO"))?;
        Ok(())
    }

    /// Runs `args` in container `id` to its end, or kills it once `timeout` has passed. Its output goes
    /// through a file under `scratch` (removed afterwards).
    pub async fn exec_sync(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
        scratch: &Path,
    ) -> Result<ExecOutput, RuntimeError> {
        let exec_id = format!("x{}", uuid::Uuid::new_v4().simple());
        let dir = scratch.join(&exec_id);
        std::fs::create_dir_all(&dir)?;
        let out = dir.join("out");
        std::fs::File::create(&out)?;
        let result = self.exec_to_end(id, &exec_id, args, timeout, &out).await;
        let output = read_limited(&out);
        std::fs::remove_dir_all(&dir).ok();
        Ok(ExecOutput { code: result?, output })
    }

    async fn exec_to_end(
        &self,
        id: &str,
        exec_id: &str,
        args: Vec<String>,
        timeout: Duration,
        out: &Path,
    ) -> Result<Option<i32>, RuntimeError> {
        let process = self.exec_process(id, args, false).await?;
        let path = out.display().to_string();
        let io = ExecIo { stdin: String::new(), stdout: path.clone(), stderr: path, terminal: false };
        self.exec_start(id, exec_id, &process, &io).await?;
        let code = match tokio::time::timeout(timeout, self.exec_wait(id, exec_id)).await {
            Ok(Ok(status)) => Some(status as i32),
            Ok(Err(e)) => {
                self.exec_delete(id, exec_id).await.ok();
                return Err(e);
            }
            Err(_) => {
                self.exec_kill(id, exec_id, 9).await?;
                tokio::time::timeout(Duration::from_secs(5), self.exec_wait(id, exec_id)).await.ok();
                None
            }
        };
        self.exec_delete(id, exec_id).await?;
        Ok(code)
    }
}

fn read_limited(path: &Path) -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        f.take(OUTPUT_LIMIT).read_to_end(&mut bytes).ok();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
