//! `kubectl exec` on the agent: a process started in a running container (`Tasks.Exec`) and wired to a
//! WebSocket speaking `v5.channel.k8s.io` (the channels are [`keel_api::agent_api`]'s).
//!
//! The process's stdio are FIFOs under `<data>/exec/<id>/` that the runc shim opens. Our read ends of
//! stdout and stderr are open before the shim's write ends, with a write end of our own held until the
//! process has started, so a read sees the end of the output only once the shim has closed its end (the
//! process and whatever it left holding its output are done). Our end of stdin is opened read-write, so
//! that it needs no reader yet; at the end of the input it is closed and the shim closes the write end it
//! holds itself (`CloseIO`), so the process reads the end once it has read the rest. Input goes
//! through a task of its own, so a process that reads no input never stops its output from flowing.
//!
//! With a terminal, the command starts at the size the client sends first (the OCI process's
//! `consoleSize`), and later sizes resize it.
//!
//! The session ends once the process has exited and its output is drained (or [`DRAIN`] after its exit,
//! when something it left behind keeps the output open): the final `Status` goes on the error channel, as
//! the kubelet writes it, and the WebSocket is closed. A client that goes away kills the process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use keel_api::agent_api::{self, ExecOptions};
use nix::sys::stat::Mode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::runtime::{Containerd, ExecIo};

/// How long output may still arrive after the process has exited.
const DRAIN: Duration = Duration::from_secs(2);
/// How long a client with a terminal may take to send its size before the command starts without it.
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(1);
/// How long the client may take to answer the closing of the WebSocket.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// The most read from an output at once (one message).
const CHUNK: usize = 32 * 1024;
/// SIGKILL.
const KILL: u32 = 9;

/// Runs execs in this node's containers.
#[derive(Clone)]
pub struct Runner {
    runtime: Containerd,
    /// Where each exec's FIFOs are made (a directory per exec, removed at its end).
    scratch: PathBuf,
}

/// A message from the client, by its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Stdin(Bytes),
    Resize {
        width: u32,
        height: u32,
    },
    /// The end of the client's input.
    CloseStdin,
    /// Anything else (an empty message, another channel, a resize that is not JSON).
    Ignored,
}

/// Reads a binary message from the client.
pub(crate) fn decode(message: &Bytes) -> Inbound {
    let Some((&channel, _)) = message.split_first() else { return Inbound::Ignored };
    match channel {
        agent_api::STDIN_CHANNEL => Inbound::Stdin(message.slice(1..)),
        agent_api::RESIZE_CHANNEL => {
            let size: Value = serde_json::from_slice(&message[1..]).unwrap_or_default();
            let dimension = |name: &str| size[name].as_u64().and_then(|v| u32::try_from(v).ok());
            match (dimension("Width"), dimension("Height")) {
                (Some(width), Some(height)) => Inbound::Resize { width, height },
                _ => Inbound::Ignored,
            }
        }
        agent_api::CLOSE_CHANNEL if message.get(1) == Some(&agent_api::STDIN_CHANNEL) => Inbound::CloseStdin,
        _ => Inbound::Ignored,
    }
}

/// A message on `channel`.
pub(crate) fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message.into()
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The process exited with this status.
    Exited(u32),
    /// It could not be run (or waited for).
    Failed(String),
}

/// The `Status` the error channel carries at the end, as the kubelet writes it: Success; Failure with
/// reason NonZeroExitCode and the code as an `ExitCode` cause (kubectl exits with it); or an internal
/// error.
pub(crate) fn status(command: &[String], ended: &Ended) -> Value {
    match ended {
        Ended::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Ended::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Ended::Failed(message) => {
            let message = format!("error executing command in container: {message}");
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {message}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            })
        }
    }
}

/// The FIFOs of one exec and our ends of them.
struct Fifos {
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: Option<pipe::Receiver>,
    /// Write ends held until the shim has opened its own (so no read sees an early end).
    keep: Vec<pipe::Sender>,
    io: ExecIo,
}

fn fifo(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(std::io::Error::from)?;
    Ok(path)
}

impl Fifos {
    fn make(dir: &Path, options: &ExecOptions) -> std::io::Result<Fifos> {
        std::fs::create_dir_all(dir)?;
        let mut keep = Vec::new();
        let mut output = |name: &str| -> std::io::Result<(pipe::Receiver, String)> {
            let path = fifo(dir, name)?;
            let receiver = pipe::OpenOptions::new().open_receiver(&path)?;
            keep.push(pipe::OpenOptions::new().open_sender(&path)?);
            Ok((receiver, path.display().to_string()))
        };
        let (stdout, stdout_path) = output("stdout")?;
        // A terminal has one output; without one the shim needs both paths.
        let (stderr, stderr_path) = match options.tty {
            true => (None, String::new()),
            false => output("stderr").map(|(r, p)| (Some(r), p))?,
        };
        let (stdin, stdin_path) = match options.stdin {
            true => {
                let path = fifo(dir, "stdin")?;
                let sender = pipe::OpenOptions::new().read_write(true).open_sender(&path)?;
                (Some(sender), path.display().to_string())
            }
            false => (None, String::new()),
        };
        let io = ExecIo { stdin: stdin_path, stdout: stdout_path, stderr: stderr_path, terminal: options.tty };
        Ok(Fifos { stdin, stdout, stderr, keep, io })
    }
}

/// Reads the next chunk of an output that may be absent or ended: None once it has ended.
async fn read_output(output: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    let receiver = output.as_mut()?;
    match receiver.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

impl Runner {
    pub fn new(runtime: Containerd, scratch: PathBuf) -> Runner {
        Runner { runtime, scratch }
    }

    /// The task writing the client's input to the process. At its end (the client's input ended, or the
    /// client went away) the shim is told to close its own write end of the FIFO (`CloseIO`), so the
    /// process reads the end of its input once it has read the rest.
    fn spawn_input(&self, mut stdin: pipe::Sender, container_id: &str, exec_id: &str) -> mpsc::Sender<Bytes> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let (runtime, id, exec) = (self.runtime.clone(), container_id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
            drop(stdin);
            runtime.exec_close_stdin(&id, &exec).await.ok();
        });
        tx
    }

    /// Runs `options.command` in container `container_id` over `socket`, to its end.
    pub async fn serve(&self, container_id: String, options: ExecOptions, mut socket: WebSocket) {
        let exec_id = format!("e{}", uuid::Uuid::new_v4().simple());
        let dir = self.scratch.join(&exec_id);
        let ended = match self.session(&container_id, &exec_id, &options, &dir, &mut socket).await {
            Ok(ended) => ended,
            Err(message) => Ended::Failed(message),
        };
        tracing::debug!(container = %container_id, exec = %exec_id, ?ended, "exec ended");
        let status = serde_json::to_vec(&status(&options.command, &ended)).expect("a status serializes");
        let _ = socket.send(Message::Binary(frame(agent_api::ERROR_CHANNEL, &status))).await;
        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
        // Let the client answer the close (its last reads are done by then).
        let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = socket.recv().await {} }).await;
        std::fs::remove_dir_all(&dir).ok();
    }

    async fn session(
        &self,
        container_id: &str,
        exec_id: &str,
        options: &ExecOptions,
        dir: &Path,
        socket: &mut WebSocket,
    ) -> Result<Ended, String> {
        let fifos = Fifos::make(dir, options).map_err(|e| format!("cannot make the exec's pipes: {e}"))?;
        let mut process = self
            .runtime
            .exec_process(container_id, options.command.clone(), options.tty)
            .await
            .map_err(|e| e.to_string())?;
        // A terminal starts at the client's size (its first message), so the command sees it at once.
        let mut early = Vec::new();
        let mut client = true;
        if options.tty {
            let size;
            (size, early, client) = first_size(socket).await;
            if let Some((width, height)) = size {
                let console = oci_spec::runtime::BoxBuilder::default().width(width).height(height).build();
                process.set_console_size(console.ok());
            }
        }
        self.runtime.exec_start(container_id, exec_id, &process, &fifos.io).await.map_err(|e| e.to_string())?;
        let Fifos { stdin, stdout, mut stderr, keep, .. } = fifos;
        drop(keep);
        let mut stdout = Some(stdout);
        let mut input = stdin.map(|stdin| self.spawn_input(stdin, container_id, exec_id));
        let mut wait = {
            let (runtime, id, exec) = (self.runtime.clone(), container_id.to_string(), exec_id.to_string());
            tokio::spawn(async move { runtime.exec_wait(&id, &exec).await })
        };
        let mut exit: Option<Result<u32, String>> = None;
        let mut pending: Option<Bytes> = None;
        for message in early {
            match message {
                Inbound::Stdin(data) => {
                    if let Some(tx) = &input {
                        tx.send(data).await.ok();
                    }
                }
                Inbound::CloseStdin => input = None,
                _ => {}
            }
        }
        let drain = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(drain);
        let (mut out_buf, mut err_buf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        while exit.is_none() || stdout.is_some() || stderr.is_some() {
            tokio::select! {
                n = read_output(&mut stdout, &mut out_buf), if stdout.is_some() => match n {
                    Some(n) if options.stdout && client => {
                        client = socket.send(Message::Binary(frame(agent_api::STDOUT_CHANNEL, &out_buf[..n]))).await.is_ok();
                    }
                    Some(_) => {}
                    None => stdout = None,
                },
                n = read_output(&mut stderr, &mut err_buf), if stderr.is_some() => match n {
                    Some(n) if options.stderr && client => {
                        client = socket.send(Message::Binary(frame(agent_api::STDERR_CHANNEL, &err_buf[..n]))).await.is_ok();
                    }
                    Some(_) => {}
                    None => stderr = None,
                },
                waited = &mut wait, if exit.is_none() => {
                    exit = Some(match waited {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("waiting for the process failed: {e}")),
                    });
                    drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                }
                () = &mut drain, if exit.is_some() => break,
                permit = reserve(input.clone()), if pending.is_some() => match permit {
                    Some(permit) => {
                        permit.send(pending.take().unwrap_or_default());
                    }
                    None => pending = None,
                },
                message = socket.recv(), if client && pending.is_none() => match message {
                    Some(Ok(Message::Binary(message))) => match decode(&message) {
                        Inbound::Stdin(data) => {
                            if let Some(tx) = &input {
                                if let Err(mpsc::error::TrySendError::Full(data)) = tx.try_send(data) {
                                    pending = Some(data);
                                }
                            }
                        }
                        Inbound::Resize { width, height } if options.tty => {
                            if let Err(e) = self.runtime.exec_resize(container_id, exec_id, width, height).await {
                                tracing::debug!(error = %e, "resizing an exec's terminal failed");
                            }
                        }
                        Inbound::CloseStdin => input = None,
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => client = false,
                    Some(Ok(_)) => {}
                },
            }
            if !client && exit.is_none() {
                // Nobody is there for the output: the process goes (as containerd's CRI kills it).
                self.runtime.exec_kill(container_id, exec_id, KILL).await.ok();
                input = None;
            }
        }
        drop(input);
        self.runtime.exec_delete(container_id, exec_id).await.ok();
        match exit {
            Some(Ok(code)) => Ok(Ended::Exited(code)),
            Some(Err(message)) => Err(message),
            None => Err("the exec ended before its process".into()),
        }
    }
}

/// Waits (at most [`FIRST_SIZE_WAIT`]) for the client's first terminal size: the size, the messages that
/// came before it, and whether the client is still there.
async fn first_size(socket: &mut WebSocket) -> (Option<(u32, u32)>, Vec<Inbound>, bool) {
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + FIRST_SIZE_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return (None, early, true),
            Ok(Some(Ok(Message::Binary(message)))) => match decode(&message) {
                Inbound::Resize { width, height } => return (Some((width, height)), early, true),
                Inbound::Ignored => {}
                other => early.push(other),
            },
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return (None, early, false),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Room for one more message of input, or None when there is no input (anymore).
async fn reserve(input: Option<mpsc::Sender<Bytes>>) -> Option<mpsc::OwnedPermit<Bytes>> {
    input?.reserve_owned().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_by_channel() {
        assert_eq!(decode(&Bytes::from_static(b"\x00hello")), Inbound::Stdin(Bytes::from_static(b"hello")));
        assert_eq!(
            decode(&Bytes::from_static(b"\x04{\"Width\":120,\"Height\":40}")),
            Inbound::Resize { width: 120, height: 40 }
        );
        assert_eq!(decode(&Bytes::from_static(b"\x04not json")), Inbound::Ignored);
        assert_eq!(decode(&Bytes::from_static(b"\xff\x00")), Inbound::CloseStdin);
        assert_eq!(decode(&Bytes::from_static(b"\xff\x01")), Inbound::Ignored);
        assert_eq!(decode(&Bytes::new()), Inbound::Ignored);
        assert_eq!(frame(1, b"out"), Bytes::from_static(b"\x01out"));
    }

    #[test]
    fn the_final_status_is_the_kubelets() {
        let command = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(status(&command, &Ended::Exited(0)), json!({"metadata": {}, "status": "Success"}));
        let failed = status(&command, &Ended::Exited(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"], json!([{"reason": "ExitCode", "message": "3"}]));
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let broken = status(&command, &Ended::Failed("no such file".into()));
        assert_eq!((broken["reason"].as_str(), broken["code"].as_i64()), (Some("InternalError"), Some(500)));
        assert_eq!(broken["message"], "Internal error occurred: error executing command in container: no such file");
    }
}
