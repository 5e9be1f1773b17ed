//! The node agent's HTTPS API as both ends see it (the agent serves it, the API server calls it): the
//! paths, the query of a container's logs (Kubernetes' `PodLogOptions`, which the kubelet's
//! `/containerLogs` takes too) with its parsing and validation, the query of an exec (`PodExecOptions`, in
//! the API's names from clients and in the kubelet's names to agents) and the channels of its WebSocket
//! protocol, the Node annotation that publishes the agent's certificate, and the common name of the API
//! server's client certificate. No IO.

use std::fmt::Write as _;

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::validation::{Cause, CauseType};

/// The port an agent listens on by default (the kubelet's).
pub const DEFAULT_PORT: u16 = 10250;

/// The Node annotation holding the SHA-256 of the agent's (self-signed) serving certificate, in lowercase
/// hex: the API server pins it instead of trusting a CA for agents.
pub const CERT_ANNOTATION: &str = "keel.dev/agent-cert-sha256";

/// The common name of the client certificate the API server presents to agents (signed by the cluster CA).
pub const APISERVER_CLIENT_NAME: &str = "keel-apiserver";

/// The route of a container's logs, in axum's syntax.
pub const CONTAINER_LOGS_ROUTE: &str = "/containerLogs/{namespace}/{pod}/{container}";

/// The route of an exec in a running container, in axum's syntax (the kubelet's `/exec`).
pub const EXEC_ROUTE: &str = "/exec/{namespace}/{pod}/{container}";

/// The WebSocket subprotocol of exec (client-go's `StreamProtocolV5Name`): each binary message starts with
/// its channel's byte; [`CLOSE_CHANNEL`] followed by a channel's byte ends that channel.
pub const EXEC_PROTOCOL: &str = "v5.channel.k8s.io";
/// The client's input to the process.
pub const STDIN_CHANNEL: u8 = 0;
/// The process's stdout (with a terminal: all its output).
pub const STDOUT_CHANNEL: u8 = 1;
pub const STDERR_CHANNEL: u8 = 2;
/// The server's final `Status` (JSON): how the process ended, or why it could not run.
pub const ERROR_CHANNEL: u8 = 3;
/// The client's terminal size changes (JSON `{"Width": w, "Height": h}`).
pub const RESIZE_CHANNEL: u8 = 4;
/// A message `[CLOSE_CHANNEL, c]` closes channel `c` (v5): the client's end of its input.
pub const CLOSE_CHANNEL: u8 = 255;

/// The lowercase hex SHA-256 of a certificate's DER bytes, as [`CERT_ANNOTATION`] carries it.
pub fn cert_fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The path of a container's logs (each segment percent-encoded), without the query.
pub fn container_logs_path(namespace: &str, pod: &str, container: &str) -> String {
    let segment = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20");
    format!("/containerLogs/{}/{}/{}", segment(namespace), segment(pod), segment(container))
}

/// The path of an exec in a container (each segment percent-encoded), without the query.
pub fn exec_path(namespace: &str, pod: &str, container: &str) -> String {
    format!("/exec/{}/{}/{}", segment(namespace), segment(pod), segment(container))
}

fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The agent's port-forward endpoint (the kubelet's path), upgraded to SPDY/3.1 or to a WebSocket that
/// tunnels it.
pub const PORT_FORWARD_ROUTE: &str = "/portForward/{namespace}/{pod}";

/// The WebSocket subprotocol of port-forward's SPDY tunnelled in a WebSocket (KEP-4006), kubectl's default.
pub const PORT_FORWARD_WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The `X-Stream-Protocol-Version` of port-forward over the legacy SPDY/3.1 upgrade.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// The path of a pod's port-forward endpoint on its agent.
pub fn port_forward_path(namespace: &str, pod: &str) -> String {
    format!("/portForward/{}/{}", segment(namespace), segment(pod))
}

/// What an exec asks for (Kubernetes' `PodExecOptions` without the container).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments (not run in a shell).
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    /// Never with `tty` (a terminal has one output).
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// Reads the query of `pods/exec` as clients send it (`command`, repeated, `stdin`, `stdout`, `stderr`,
    /// `tty`; `container` is the caller's), with the API server's and the kubelet's checks and messages.
    pub fn from_api_query(query: &str) -> Result<ExecOptions, String> {
        ExecOptions::read(query, ["stdin", "stdout", "stderr"])
    }

    /// Reads the query an agent gets ([`ExecOptions::to_agent_query`]'s: the kubelet's `input`, `output`,
    /// `error`).
    pub fn from_agent_query(query: &str) -> Result<ExecOptions, String> {
        ExecOptions::read(query, ["input", "output", "error"])
    }

    fn read(query: &str, [stdin, stdout, stderr]: [&str; 3]) -> Result<ExecOptions, String> {
        let mut o = ExecOptions::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "tty" => o.tty = boolean(&v),
                k if k == stdin => o.stdin = boolean(&v),
                k if k == stdout => o.stdout = boolean(&v),
                k if k == stderr => o.stderr = boolean(&v),
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal has a single output; the kubelet drops stderr rather than refusing.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }

    /// The query (without the `?`) of the agent's exec: the kubelet's parameter names.
    pub fn to_agent_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for c in &self.command {
            q.append_pair("command", c);
        }
        for (name, on) in [("input", self.stdin), ("output", self.stdout), ("error", self.stderr), ("tty", self.tty)] {
            if on {
                q.append_pair(name, "1");
            }
        }
        q.finish()
    }
}

/// What a reader of a container's logs asks for (Kubernetes' `PodLogOptions` without the container, which
/// is in the path on the agent's side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send what the container writes next.
    pub follow: bool,
    /// The logs of the previous instance of the container (before its last restart).
    pub previous: bool,
    /// Only lines written in the last this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines written at or after this time.
    pub since_time: Option<Timestamp>,
    /// Each line prefixed with the time it was written (RFC 3339 with nanoseconds) and a space.
    pub timestamps: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<i64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<i64>,
}

/// A query that cannot be read (400) or whose values are out of range (422, with one cause per field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogOptionsError {
    #[error("{0}")]
    Unreadable(String),
    #[error("{}", .0.iter().map(Cause::to_string).collect::<Vec<_>>().join(", "))]
    Invalid(Vec<Cause>),
}

/// A query boolean as Kubernetes reads one: absent is false; `0`, `f`, `false`, `n`, `no` (any case) are
/// false; anything else, the empty string included, is true.
fn boolean(value: &str) -> bool {
    !["0", "f", "false", "n", "no"].iter().any(|f| value.eq_ignore_ascii_case(f))
}

fn integer(name: &str, value: &str) -> Result<i64, LogOptionsError> {
    value
        .trim()
        .parse()
        .map_err(|_| LogOptionsError::Unreadable(format!("{name}: invalid value {value:?}: not an integer")))
}

impl LogOptions {
    /// Reads a query string (without the `?`); keys it does not know (`container`, `stream`,
    /// `insecureSkipTLSVerifyBackend`) are left to the caller.
    pub fn parse(query: &str) -> Result<LogOptions, LogOptionsError> {
        let mut o = LogOptions::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "follow" => o.follow = boolean(&v),
                "previous" => o.previous = boolean(&v),
                "timestamps" => o.timestamps = boolean(&v),
                "sinceSeconds" => o.since_seconds = Some(integer("sinceSeconds", &v)?),
                "tailLines" => o.tail_lines = Some(integer("tailLines", &v)?),
                "limitBytes" => o.limit_bytes = Some(integer("limitBytes", &v)?),
                "sinceTime" if !v.is_empty() => {
                    o.since_time = Some(
                        v.parse()
                            .map_err(|e| LogOptionsError::Unreadable(format!("sinceTime: invalid value {v:?}: {e}")))?,
                    )
                }
                _ => {}
            }
        }
        let causes = o.problems();
        if !causes.is_empty() {
            return Err(LogOptionsError::Invalid(causes));
        }
        Ok(o)
    }

    /// Kubernetes' checks of `PodLogOptions` (`ValidatePodLogOptions`), with its messages.
    pub fn problems(&self) -> Vec<Cause> {
        let invalid = |field: &str, value: i64, detail: &str| Cause {
            kind: CauseType::Invalid,
            field: field.to_string(),
            message: format!("Invalid value: {value}: {detail}"),
        };
        let mut causes = Vec::new();
        if let Some(n) = self.tail_lines.filter(|n| *n < 0) {
            causes.push(invalid("tailLines", n, "must be greater than or equal to 0"));
        }
        if let Some(n) = self.limit_bytes.filter(|n| *n < 1) {
            causes.push(invalid("limitBytes", n, "must be greater than 0"));
        }
        match (self.since_seconds, self.since_time) {
            (Some(_), Some(_)) => causes.push(Cause {
                kind: CauseType::Forbidden,
                field: String::new(),
                message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            }),
            (Some(n), None) if n < 1 => causes.push(invalid("sinceSeconds", n, "must be greater than 0")),
            _ => {}
        }
        causes
    }

    /// The query string (without the `?`) that [`LogOptions::parse`] reads back; only what is set.
    pub fn to_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, on) in [("follow", self.follow), ("previous", self.previous), ("timestamps", self.timestamps)] {
            if on {
                q.append_pair(name, "true");
            }
        }
        for (name, value) in
            [("sinceSeconds", self.since_seconds), ("tailLines", self.tail_lines), ("limitBytes", self.limit_bytes)]
        {
            if let Some(v) = value {
                q.append_pair(name, &v.to_string());
            }
        }
        if let Some(t) = self.since_time {
            q.append_pair("sinceTime", &t.to_string());
        }
        q.finish()
    }

    /// The earliest time a line may have been written to be sent (from `sinceTime` or `sinceSeconds`
    /// before `now`).
    pub fn since(&self, now: Timestamp) -> Option<Timestamp> {
        self.since_time
            .or_else(|| self.since_seconds.and_then(|s| now.checked_sub(jiff::SignedDuration::from_secs(s)).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips() {
        let o = LogOptions {
            follow: true,
            previous: true,
            since_seconds: None,
            since_time: Some("2026-01-02T03:04:05.5Z".parse().unwrap()),
            timestamps: true,
            tail_lines: Some(10),
            limit_bytes: Some(4096),
        };
        let q = o.to_query();
        assert_eq!(LogOptions::parse(&q).unwrap(), o, "{q}");
        assert_eq!(LogOptions::parse("").unwrap(), LogOptions::default());
        assert_eq!(LogOptions::default().to_query(), "");
    }

    #[test]
    fn booleans_and_unknown_keys_read_as_kubernetes_reads_them() {
        let o = LogOptions::parse("follow&timestamps=1&previous=False&container=app&stream=All").unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert!(!LogOptions::parse("follow=no").unwrap().follow);
        assert!(LogOptions::parse("follow=yes").unwrap().follow);
    }

    #[test]
    fn bad_values_are_unreadable_or_invalid_with_kubernetes_messages() {
        assert!(
            matches!(LogOptions::parse("tailLines=ten"), Err(LogOptionsError::Unreadable(m)) if m.contains("tailLines"))
        );
        assert!(matches!(LogOptions::parse("sinceTime=yesterday"), Err(LogOptionsError::Unreadable(_))));
        let Err(LogOptionsError::Invalid(causes)) = LogOptions::parse("tailLines=-1&limitBytes=0&sinceSeconds=0")
        else {
            panic!("not invalid")
        };
        let text: Vec<String> = causes.iter().map(Cause::to_string).collect();
        assert_eq!(
            text,
            [
                "tailLines: Invalid value: -1: must be greater than or equal to 0",
                "limitBytes: Invalid value: 0: must be greater than 0",
                "sinceSeconds: Invalid value: 0: must be greater than 0",
            ]
        );
        let Err(LogOptionsError::Invalid(causes)) = LogOptions::parse("sinceSeconds=5&sinceTime=2026-01-02T03:04:05Z")
        else {
            panic!("not invalid")
        };
        assert!(causes[0].message.contains("at most one of `sinceTime` or `sinceSeconds`"));
    }

    #[test]
    fn exec_queries_read_as_the_api_server_and_the_kubelet_read_them() {
        let o = ExecOptions::from_api_query(
            "command=sh&command=-c&command=echo+hi&container=app&stdin=true&stdout=true&tty=true&stderr=true",
        )
        .unwrap();
        // A terminal has no stderr.
        let want = ExecOptions {
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(o, want);
        assert_eq!(ExecOptions::from_agent_query(&o.to_agent_query()).unwrap(), o);
        assert_eq!(o.to_agent_query(), "command=sh&command=-c&command=echo+hi&input=1&output=1&tty=1");
        assert_eq!(ExecOptions::from_api_query("stdout=true").unwrap_err(), "you must specify at least 1 command");
        assert_eq!(
            ExecOptions::from_api_query("command=ls&stdout=false&tty=true").unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        // The API's names mean nothing to an agent, and the other way round.
        assert!(ExecOptions::from_agent_query("command=ls&stdout=1").is_err());
        assert_eq!(exec_path("a b", "web", "app"), "/exec/a%20b/web/app");
    }

    #[test]
    fn since_is_the_time_or_now_minus_the_seconds() {
        let now: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let o = LogOptions { since_seconds: Some(5), ..Default::default() };
        assert_eq!(o.since(now), Some("2026-01-02T03:04:00Z".parse().unwrap()));
        assert_eq!(LogOptions::default().since(now), None);
    }

    #[test]
    fn paths_encode_their_segments_and_fingerprints_are_hex() {
        assert_eq!(container_logs_path("default", "web-1", "app"), "/containerLogs/default/web-1/app");
        assert_eq!(container_logs_path("a b", "c/d", "e"), "/containerLogs/a%20b/c%2Fd/e");
        let fp = cert_fingerprint(b"");
        assert_eq!(fp, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
