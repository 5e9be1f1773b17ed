//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the JSON object
//! the client would have sent had it spoken JSON. kubectl's typed commands (`create configmap|secret|
//! deployment|service|namespace|job|cronjob|serviceaccount`, `autoscale`, drain's eviction…) send protobuf
//! and do not fall back to JSON, so keel's API server turns their bodies into the JSON it works with.
//!
//! A body is the prefix `k8s\x00` and a `runtime.Unknown` envelope: `typeMeta` (apiVersion, kind) and `raw`,
//! the object's own protobuf encoding. The object is decoded against the descriptors of Kubernetes' 1.33
//! `.proto` files, compiled at build time (see build.rs), and rendered the way Kubernetes' Go types render
//! to JSON: field names as in the API, `Quantity` as a string, `Time`/`MicroTime` as RFC 3339, `IntOrString`
//! as a number or a string, bytes as base64, inline (embedded) structs merged into their parent, and
//! zero scalars dropped unless the Go field is a pointer (where an explicit zero means something, such as
//! `replicas: 0`) or its JSON tag lacks `omitempty`.

mod json;
mod schema;
mod time;

use prost_reflect::DynamicMessage;
use serde_json::Value;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const PREFIX: &[u8; 4] = b"k8s\x00";

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not a Kubernetes protobuf body.
    #[error("the body does not start with the Kubernetes protobuf prefix")]
    MissingPrefix,
    /// The `runtime.Unknown` envelope around the object is malformed.
    #[error("malformed protobuf envelope: {0}")]
    Envelope(String),
    /// The envelope names a kind that has no protobuf schema here.
    #[error("protobuf bodies of kind {kind:?} in {api_version:?} are not supported")]
    UnsupportedKind { api_version: String, kind: String },
    /// The envelope says the object is compressed or not protobuf.
    #[error("unsupported protobuf envelope: {0}")]
    UnsupportedEnvelope(String),
    /// The object does not match its schema.
    #[error("malformed protobuf {kind}: {message}")]
    Malformed { kind: String, message: String },
    /// The descriptors built into this crate could not be read (a build defect).
    #[error("the Kubernetes protobuf schema built into keel is unreadable: {0}")]
    Schema(String),
}

/// Decodes a Kubernetes protobuf body into the JSON object Kubernetes would have received as JSON,
/// including `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let envelope = body.strip_prefix(PREFIX).ok_or(Error::MissingPrefix)?;
    let schema = schema::Schema::get()?;
    let unknown =
        DynamicMessage::decode(schema.unknown.clone(), envelope).map_err(|e| Error::Envelope(e.to_string()))?;
    let envelope = schema::Envelope::read(&unknown)?;
    if !envelope.content_encoding.is_empty() {
        return Err(Error::UnsupportedEnvelope(format!("content encoding {:?}", envelope.content_encoding)));
    }
    if !envelope.content_type.is_empty() && envelope.content_type != MEDIA_TYPE {
        return Err(Error::UnsupportedEnvelope(format!("content type {:?}", envelope.content_type)));
    }
    let descriptor = schema.kind(&envelope.api_version, &envelope.kind).ok_or_else(|| Error::UnsupportedKind {
        api_version: envelope.api_version.clone(),
        kind: envelope.kind.clone(),
    })?;
    let malformed = |message: String| Error::Malformed { kind: envelope.kind.clone(), message };
    let object = DynamicMessage::decode(descriptor, envelope.raw.as_slice()).map_err(|e| malformed(e.to_string()))?;
    let mut value = json::message(schema, &object).map_err(malformed)?;
    if let Value::Object(map) = &mut value {
        map.insert("apiVersion".into(), Value::String(envelope.api_version.clone()));
        map.insert("kind".into(), Value::String(envelope.kind.clone()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bodies_without_the_prefix() {
        assert!(matches!(decode(b"{\"kind\":\"Pod\"}"), Err(Error::MissingPrefix)));
    }

    #[test]
    fn rejects_a_truncated_envelope() {
        assert!(matches!(decode(b"k8s\x00\x0a\x05\x0a"), Err(Error::Envelope(_))));
    }
}
