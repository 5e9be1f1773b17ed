//! Bootstrap tokens, as Kubernetes keeps them (kubeadm's `kubeadm token create`): a token
//! `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`) is a Secret `kube-system/bootstrap-token-<id>` of
//! type `bootstrap.kubernetes.io/token`, so an admin lists and revokes them with kubectl. A request bearing
//! one is `system:bootstrap:<id>` in `system:bootstrappers` and the Secret's `auth-extra-groups`, while the
//! Secret exists, says `usage-bootstrap-authentication: "true"` and has not expired.
//!
//! Whoever joins with a token first learns the cluster's CA from the `kube-public/cluster-info` ConfigMap,
//! which anonymous users may read, and checks it against the CA hash printed with the token (kubeadm's
//! `--discovery-token-ca-cert-hash`, [`crate::tls::ca_cert_hash`]), so that a first contact cannot be
//! intercepted.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::auth::User;
use crate::storage::{Storage, StorageError};

/// The Secret type of a bootstrap token.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Where the Secrets live.
pub const NAMESPACE: &str = "kube-system";
/// A token's Secret is named this and its id.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Every bootstrap token's user is in this group.
pub const GROUP: &str = "system:bootstrappers";
/// The extra group of tokens that may add a master (a store member) to the cluster.
pub const MASTERS_GROUP: &str = "system:bootstrappers:keel:masters";
/// The extra group of node join tokens: it may ask for a node client certificate (`keel agent --join`).
pub const NODES_GROUP: &str = "system:bootstrappers:keel:nodes";
/// The ConfigMap in `kube-public` that tells a joiner the cluster's CA.
pub const CLUSTER_INFO: &str = "cluster-info";

/// A token, split into its public id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    /// The id only; secrets never go into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}.****)", self.id)
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Token {
    /// `s` if it has a bootstrap token's form (`[a-z0-9]{6}.[a-z0-9]{16}`).
    pub fn parse(s: &str) -> Option<Token> {
        let (id, secret) = s.split_once('.')?;
        (is_token_part(id, 6) && is_token_part(secret, 16))
            .then(|| Token { id: id.to_string(), secret: secret.to_string() })
    }

    /// A new token from the system's secure random source.
    pub fn generate() -> Result<Token, crate::tls::TlsError> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut chars = String::with_capacity(22);
        while chars.len() < 22 {
            let mut bytes = [0u8; 32];
            rustls::crypto::ring::default_provider()
                .secure_random
                .fill(&mut bytes)
                .map_err(|_| crate::tls::TlsError::Random)?;
            // 252 = 7 × 36: bytes above it are dropped so that every character is equally likely.
            chars.extend(bytes.iter().filter(|b| **b < 252).map(|b| ALPHABET[usize::from(*b % 36)] as char));
        }
        Ok(Token { id: chars[..6].to_string(), secret: chars[6..22].to_string() })
    }

    /// The name of this token's Secret.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The Secret that makes this token valid until `expires` (for ever if `None`) for a user in `groups`
    /// besides [`GROUP`] (each must start with `system:bootstrappers:`).
    pub fn secret(&self, expires: Option<jiff::Timestamp>, description: &str, groups: &[&str]) -> Value {
        let mut data = json!({
            "token-id": self.id,
            "token-secret": self.secret,
            "usage-bootstrap-authentication": "true",
        });
        if let Some(at) = expires {
            data["expiration"] = json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        if !description.is_empty() {
            data["description"] = json!(description);
        }
        if !groups.is_empty() {
            data["auth-extra-groups"] = json!(groups.join(","));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "stringData": data,
        })
    }
}

/// Why a token's Secret does not let it in (for the server's log; the client sees only 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no such token")]
    Unknown,
    #[error("the token's secret is not a bootstrap token ({0})")]
    Malformed(&'static str),
    #[error("the token's secret does not match")]
    WrongSecret,
    #[error("the token expired at {0}")]
    Expired(String),
    #[error("the token is not for authentication")]
    NotForAuthentication,
    #[error("the token is being deleted")]
    Deleted,
}

/// The decoded `data` entry `key` of a Secret.
pub fn data(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// Who `token` authenticates as, given its Secret `secret` (as stored) at time `now`; Kubernetes' bootstrap
/// token authenticator's rules.
pub fn user_of(secret: &Value, token: &Token, now: jiff::Timestamp) -> Result<User, Refusal> {
    if secret["type"] != SECRET_TYPE {
        return Err(Refusal::Malformed("type"));
    }
    if !secret["metadata"]["deletionTimestamp"].is_null() {
        return Err(Refusal::Deleted);
    }
    if data(secret, "token-id").as_deref() != Some(token.id.as_str()) {
        return Err(Refusal::Malformed("token-id"));
    }
    let stored = data(secret, "token-secret").ok_or(Refusal::Malformed("token-secret"))?;
    if !crate::auth::constant_time_eq(stored.as_bytes(), token.secret.as_bytes()) {
        return Err(Refusal::WrongSecret);
    }
    if let Some(expiration) = data(secret, "expiration") {
        let at: jiff::Timestamp = expiration.parse().map_err(|_| Refusal::Malformed("expiration"))?;
        if at <= now {
            return Err(Refusal::Expired(expiration));
        }
    }
    if data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(Refusal::NotForAuthentication);
    }
    let mut groups = vec![GROUP.to_string()];
    for group in data(secret, "auth-extra-groups").unwrap_or_default().split(',').map(str::trim) {
        if group.is_empty() {
            continue;
        }
        if !group.starts_with("system:bootstrappers:") {
            return Err(Refusal::Malformed("auth-extra-groups"));
        }
        groups.push(group.to_string());
    }
    Ok(User::authenticated(format!("system:bootstrap:{}", token.id), groups))
}

/// Who `token` authenticates as, reading its Secret from the store (a linearizable read: a revoked token
/// is refused at once).
pub async fn authenticate(storage: &Storage, token: &Token) -> Result<User, Refusal> {
    let key = format!("/registry/secrets/{NAMESPACE}/{}", token.secret_name());
    let stored = match storage.get(&key).await {
        Ok(stored) => stored,
        Err(StorageError::NotFound) => return Err(Refusal::Unknown),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a bootstrap token");
            return Err(Refusal::Unknown);
        }
    };
    let secret: Value = serde_json::from_slice(&stored.value).map_err(|_| Refusal::Malformed("not JSON"))?;
    user_of(&secret, token, jiff::Timestamp::now())
}

/// Creates `kube-public/cluster-info` (the cluster's CA and a master's address, in a kubeconfig without
/// users, as kubeadm writes it) unless it exists.
pub async fn ensure_cluster_info(storage: &Storage, server_url: &str, ca_pem: &str) -> Result<(), StorageError> {
    let kubeconfig = crate::tls::cluster_kubeconfig(server_url, ca_pem);
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CLUSTER_INFO, "namespace": "kube-public"},
        "data": {"kubeconfig": kubeconfig},
    });
    crate::namespaces::create_if_absent(storage, "configmaps", config_map).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(token: &Token, expires: Option<&str>, groups: &[&str]) -> Value {
        let expires = expires.map(|e| e.parse().unwrap());
        let mut secret = token.secret(expires, "for tests", groups);
        // As the API server stores it: stringData folded into data.
        let plain = secret.as_object_mut().unwrap().remove("stringData").unwrap();
        let encoded: serde_json::Map<String, Value> = plain
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap()))))
            .collect();
        secret["data"] = Value::Object(encoded);
        secret
    }

    fn now() -> jiff::Timestamp {
        "2026-12-07T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn tokens_have_kubernetes_form() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!((t.id.as_str(), t.secret.as_str()), ("abcdef", "0123456789abcdef"));
        assert_eq!(format!("{t:?}"), "Token(abcdef.****)");
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        for bad in ["abcdef0123456789abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123", ""] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
        let a = Token::generate().unwrap();
        assert!(Token::parse(&a.to_string()).is_some(), "{a}");
        assert_ne!(a, Token::generate().unwrap());
        assert_eq!(a.secret_name(), format!("bootstrap-token-{}", a.id));
    }

    #[test]
    fn a_valid_token_names_its_user_and_groups() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        let user = user_of(&stored(&t, Some("2026-12-08T10:00:00Z"), &[MASTERS_GROUP]), &t, now()).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(user.groups, [GROUP, MASTERS_GROUP, "system:authenticated"]);
        let forever = user_of(&stored(&t, None, &[]), &t, now()).unwrap();
        assert_eq!(forever.groups, [GROUP, "system:authenticated"]);
    }

    #[test]
    fn tokens_are_refused_as_kubernetes_refuses_them() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        let good = stored(&t, Some("2026-12-08T10:00:00Z"), &[]);
        let wrong = Token { secret: "0123456789abcdee".into(), ..t.clone() };
        assert_eq!(user_of(&good, &wrong, now()), Err(Refusal::WrongSecret));
        let expired = stored(&t, Some("2026-12-07T09:59:59Z"), &[]);
        assert!(matches!(user_of(&expired, &t, now()), Err(Refusal::Expired(_))));
        let mut opaque = good.clone();
        opaque["type"] = json!("Opaque");
        assert_eq!(user_of(&opaque, &t, now()), Err(Refusal::Malformed("type")));
        let mut deleting = good.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-07T09:00:00Z");
        assert_eq!(user_of(&deleting, &t, now()), Err(Refusal::Deleted));
        let mut signing_only = good.clone();
        signing_only["data"]["usage-bootstrap-authentication"] = json!("ZmFsc2U="); // "false"
        assert_eq!(user_of(&signing_only, &t, now()), Err(Refusal::NotForAuthentication));
        let other = Token { id: "zzzzzz".into(), ..t.clone() };
        assert_eq!(user_of(&good, &other, now()), Err(Refusal::Malformed("token-id")));
        let admins = stored(&t, None, &["system:masters"]);
        assert_eq!(user_of(&admins, &t, now()), Err(Refusal::Malformed("auth-extra-groups")));
    }
}
