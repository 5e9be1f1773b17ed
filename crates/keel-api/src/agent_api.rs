//! The node agent's HTTPS API as both ends see it (the agent serves it, the API server calls it): the
//! paths, the query of a container's logs (Kubernetes' `PodLogOptions`, which the kubelet's
//! `/containerLogs` takes too) with its parsing and validation, the Node annotation that publishes the
//! agent's certificate, and the common name of the API server's client certificate. No IO.

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
