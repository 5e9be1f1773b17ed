//! Service-account tokens, as kube-apiserver issues and checks them: JWTs signed (ES256) with the
//! cluster's one service-account key, created by the first master and kept in the store, so that every
//! master issues and accepts the same tokens; published with its `kid` in the OIDC discovery documents
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`). A token names its service account (and the pod
//! or secret it is bound to, by uid); it authenticates only while that service account, and the object it
//! is bound to, still exist with those uids, so deleting a pod invalidates its tokens at once.
//!
//! `serviceaccounts/token` (TokenRequest, `kubectl create token`) issues them; `tokenreviews` checks one.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keel_api::status::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

use crate::auth::{User, AUTHENTICATED};
use crate::storage::{Storage, StorageError};

/// The issuer of every token, and the audience the API itself accepts (kubeadm's default
/// `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Where the signing key lives in the store.
const KEY: &str = "/keel/service-account-key";
/// The shortest token a TokenRequest may ask for, and the default (kube-apiserver's).
const MIN_EXPIRATION: i64 = 600;
const DEFAULT_EXPIRATION: i64 = 3600;
/// The longest (kube-apiserver's `--service-account-max-token-expiration` unset: 2^32 s is its cap).
const MAX_EXPIRATION: i64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Store(#[from] StorageError),
    #[error("the service-account key is damaged: {0}")]
    Damaged(String),
}

/// The cluster's signing key, its `kid`, and the JWK that publishes it.
pub struct ServiceAccountKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl std::fmt::Debug for ServiceAccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeys").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// An object a token is bound to: `kind`, name and uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
}

/// What a token says, as kube-apiserver's bound tokens say it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ServiceAccountKeys {
    /// The keys from a PKCS#8 PEM ECDSA P-256 private key.
    pub fn from_pem(pem: &str) -> Result<ServiceAccountKeys, KeyError> {
        use rcgen::PublicKeyData as _;
        let damaged = |e: &dyn std::fmt::Display| KeyError::Damaged(e.to_string());
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| damaged(&e))?;
        let raw = pair.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(KeyError::Damaged("not an uncompressed P-256 point".into()));
        }
        let (x, y) = (b64url(&raw[1..33]), b64url(&raw[33..]));
        let kid = b64url(&sha2::Sha256::digest(pair.subject_public_key_info()));
        Ok(ServiceAccountKeys {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| damaged(&e))?,
            decoding: DecodingKey::from_ec_components(&x, &y).map_err(|e| damaged(&e))?,
            jwk: json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "x": x, "y": y}),
            kid,
        })
    }

    /// The cluster's keys: made and stored by the first master to get here, read by every other.
    pub async fn load(storage: &Storage) -> Result<ServiceAccountKeys, KeyError> {
        loop {
            match storage.get(KEY).await {
                Ok(stored) => {
                    let v: Value =
                        serde_json::from_slice(&stored.value).map_err(|e| KeyError::Damaged(e.to_string()))?;
                    let pem = v["privateKeyPem"].as_str().ok_or_else(|| KeyError::Damaged("no key".into()))?;
                    return ServiceAccountKeys::from_pem(pem);
                }
                Err(StorageError::NotFound) => {
                    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(|e| KeyError::Damaged(e.to_string()))?;
                    let record = json!({"privateKeyPem": pair.serialize_pem()});
                    match storage.create(KEY, record.to_string().into_bytes()).await {
                        Ok(_) | Err(StorageError::AlreadyExists) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("cannot sign a token: {e}")))
    }

    /// The claims of a token this cluster signed, unexpired, for `audience`; why not otherwise.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|d| d.claims).map_err(|e| e.to_string())
    }

    /// `/.well-known/openid-configuration`, the JWKS at `https://<advertise>/openid/v1/jwks`.
    pub fn openid_configuration(&self, advertise: &str) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("https://{advertise}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }
}

/// Whether a bearer token is shaped as a JWT (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The user of a service account.
pub fn user(namespace: &str, name: &str) -> User {
    User {
        name: crate::rbac::service_account_user(namespace, name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED.into(),
        ],
    }
}

/// The uid of a stored object and whether it is being deleted; `None` when it does not exist.
async fn stored_uid(storage: &Storage, key: &str) -> Result<Option<(String, bool)>, String> {
    match storage.get(key).await {
        Ok(stored) => {
            let v: Value = serde_json::from_slice(&stored.value).map_err(|e| e.to_string())?;
            let uid = v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
            Ok(Some((uid, v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()))))
        }
        Err(StorageError::NotFound) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Who a token for `audience` authenticates as, once its service account and the object it is bound to
/// still exist with the uids it names; why not otherwise.
pub async fn authenticate(
    keys: &ServiceAccountKeys,
    storage: &Storage,
    token: &str,
    audience: &str,
) -> Result<(User, Claims), String> {
    let claims = keys.verify(token, audience)?;
    let k = &claims.kubernetes;
    let sa_key = format!("/registry/serviceaccounts/{}/{}", k.namespace, k.serviceaccount.name);
    match stored_uid(storage, &sa_key).await? {
        Some((uid, _)) if uid == k.serviceaccount.uid => {}
        Some(_) => return Err(format!("service account {}/{} was recreated", k.namespace, k.serviceaccount.name)),
        None => return Err(format!("service account {}/{} does not exist", k.namespace, k.serviceaccount.name)),
    }
    for (plural, bound) in [("pods", &k.pod), ("secrets", &k.secret)] {
        let Some(bound) = bound else { continue };
        match stored_uid(storage, &format!("/registry/{plural}/{}/{}", k.namespace, bound.name)).await? {
            Some((uid, _)) if uid == bound.uid => {}
            _ => return Err(format!("the {plural} {}/{} the token is bound to is gone", k.namespace, bound.name)),
        }
    }
    Ok((user(&k.namespace, &k.serviceaccount.name), claims))
}

/// The TokenRequest a client sent for service account `sa` (its stored object): checked and answered with
/// a token. `bound` resolves a `boundObjectRef` (kind, name) to the object's uid, `None` if it does not
/// exist.
pub fn token_request(
    keys: &ServiceAccountKeys,
    sa: &Value,
    request: &Value,
    bound_uid: Option<(String, String, Option<String>)>,
    now: jiff::Timestamp,
) -> Result<Value, ApiError> {
    let namespace = sa.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let name = sa.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let uid = sa.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let spec = request.get("spec").cloned().unwrap_or(json!({}));
    let invalid = |field: &str, value: String, detail: &str| ApiError::Invalid {
        kind: "TokenRequest".into(),
        resource: keel_api::status::GroupResource { group: "authentication.k8s.io".into(), resource: String::new() },
        name: name.to_string(),
        causes: vec![keel_api::validation::Cause::invalid(field, &value, detail)],
    };
    let expiration = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_EXPIRATION);
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            expiration.to_string(),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            expiration.to_string(),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_string()]);
    let (mut pod, mut secret) = (None, None);
    if let Some((kind, bound_name, bound)) = bound_uid {
        let uid = bound.ok_or_else(|| {
            invalid("spec.boundObjectRef", bound_name.clone(), &format!("the {} does not exist", kind.to_lowercase()))
        })?;
        let wanted = spec.pointer("/boundObjectRef/uid").and_then(Value::as_str).unwrap_or_default();
        if !wanted.is_empty() && wanted != uid {
            return Err(ApiError::Conflict {
                resource: keel_api::status::GroupResource { group: String::new(), resource: "serviceaccounts".into() },
                name: name.to_string(),
                detail: format!("the UID in the bound object reference ({wanted}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
            });
        }
        let r = Some(Ref { name: bound_name, uid });
        match kind.as_str() {
            "Pod" => pod = r,
            "Secret" => secret = r,
            other => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    other.to_string(),
                    "supported values: \"Pod\", \"Secret\"",
                ))
            }
        }
    }
    let iat = now.as_second();
    let claims = Claims {
        iss: ISSUER.to_string(),
        sub: crate::rbac::service_account_user(namespace, name),
        aud: audiences.clone(),
        exp: iat + expiration,
        iat,
        nbf: iat,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaims {
            namespace: namespace.to_string(),
            serviceaccount: Ref { name: name.to_string(), uid: uid.to_string() },
            pod,
            secret,
        },
    };
    let token = keys.sign(&claims)?;
    let expires = jiff::Timestamp::from_second(claims.exp).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ServiceAccountKeys {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        ServiceAccountKeys::from_pem(&pair.serialize_pem()).unwrap()
    }

    fn sa() -> Value {
        json!({"metadata": {"name": "robot", "namespace": "a", "uid": "sa-uid"}})
    }

    #[test]
    fn tokens_carry_their_claims_and_expire() {
        let keys = keys();
        let now = jiff::Timestamp::now();
        let answer = token_request(&keys, &sa(), &json!({}), None, now).unwrap();
        let token = answer["status"]["token"].as_str().unwrap();
        assert!(looks_like_jwt(token));
        let claims = keys.verify(token, ISSUER).unwrap();
        assert_eq!(claims.sub, "system:serviceaccount:a:robot");
        assert_eq!(claims.exp - claims.iat, DEFAULT_EXPIRATION);
        assert_eq!(claims.kubernetes.serviceaccount.uid, "sa-uid");
        assert_eq!(answer["spec"]["audiences"], json!([ISSUER]));
        // Another audience is not the API's.
        let other = token_request(&keys, &sa(), &json!({"spec": {"audiences": ["vault"]}}), None, now).unwrap();
        let other = other["status"]["token"].as_str().unwrap();
        assert!(
            keys.verify(other, ISSUER).unwrap_err().contains("InvalidAudience"),
            "{:?}",
            keys.verify(other, ISSUER)
        );
        assert!(keys.verify(other, "vault").is_ok());
        // Expired, or signed by another cluster: refused.
        let old = token_request(&keys, &sa(), &json!({}), None, now - jiff::SignedDuration::from_hours(2)).unwrap();
        assert!(keys.verify(old["status"]["token"].as_str().unwrap(), ISSUER).unwrap_err().contains("Expired"));
        assert!(self::keys().verify(token, ISSUER).is_err());
        // Too short; bound to a pod that does not exist.
        let short = token_request(&keys, &sa(), &json!({"spec": {"expirationSeconds": 60}}), None, now).unwrap_err();
        assert!(short.to_string().contains("may not specify a duration less than 10 minutes"), "{short}");
        let bound = Some(("Pod".to_string(), "web".to_string(), None));
        assert_eq!(token_request(&keys, &sa(), &json!({}), bound, now).unwrap_err().code(), 422);
        let bound = Some(("Pod".to_string(), "web".to_string(), Some("pod-uid".to_string())));
        let answer = token_request(&keys, &sa(), &json!({}), bound, now).unwrap();
        let claims = keys.verify(answer["status"]["token"].as_str().unwrap(), ISSUER).unwrap();
        assert_eq!(claims.kubernetes.pod, Some(Ref { name: "web".into(), uid: "pod-uid".into() }));
    }

    #[test]
    fn the_jwks_publishes_the_key_by_its_kid() {
        let keys = keys();
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], keys.kid());
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        let header = jsonwebtoken::decode_header(
            token_request(&keys, &sa(), &json!({}), None, jiff::Timestamp::now()).unwrap()["status"]["token"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header.kid.as_deref(), Some(keys.kid()));
        assert_eq!(keys.openid_configuration("10.0.0.1:6443")["jwks_uri"], "https://10.0.0.1:6443/openid/v1/jwks");
    }
}
