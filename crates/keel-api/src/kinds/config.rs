//! ConfigMaps and Secrets: their keys, their size (1 MiB at most), the keys each secret type needs, a
//! secret's `stringData` folded into `data` (as the API server converts it), and the immutability of those
//! marked `immutable`. ServiceAccounts have nothing of their own to check.

use serde_json::{json, Value};

use super::fields::*;
use crate::validation::Cause;

/// Data of a ConfigMap or a Secret may take at most this many bytes.
const MAX_SIZE: usize = 1024 * 1024;

/// `SetDefaults_Secret` (type Opaque) and the conversion of `stringData`: its entries, base64-encoded,
/// replace those of `data`, and it is not stored.
pub fn default_secret(object: &mut Value) {
    let Some(obj) = object.as_object_mut() else { return };
    default_str(obj, "type", "Opaque");
    let Some(Value::Object(plain)) = obj.remove("stringData") else { return };
    let Some(data) = ensure_obj(obj, "data") else { return };
    for (k, v) in plain {
        let text = v.as_str().unwrap_or_default().to_string();
        data.insert(k, json!(base64::encode(text.as_bytes())));
    }
}

pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    match kind {
        "ConfigMap" => config_map(object),
        "Secret" => secret(object),
        _ => vec![],
    }
}

fn config_map(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let data = str_map(object, "data");
    let binary = str_map(object, "binaryData");
    let mut total = 0;
    for (k, v) in &data {
        c.extend(config_key(k).iter().map(|e| Cause::invalid(key("data", k), k, e)));
        if binary.contains_key(k) {
            c.push(Cause::invalid(key("data", k), k, "duplicate of key present in binaryData"));
        }
        total += v.len();
    }
    for (k, v) in &binary {
        c.extend(config_key(k).iter().map(|e| Cause::invalid(key("binaryData", k), k, e)));
        total += base64::decoded_len(v);
    }
    if total > MAX_SIZE {
        c.push(Cause::too_long("", MAX_SIZE));
    }
    c
}

fn secret(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let data = str_map(object, "data");
    let mut total = 0;
    for (k, v) in &data {
        c.extend(config_key(k).iter().map(|e| Cause::invalid(key("data", k), k, e)));
        total += base64::decoded_len(v);
    }
    for k in str_map(object, "stringData").keys() {
        c.extend(config_key(k).iter().map(|e| Cause::invalid(key("stringData", k), k, e)));
    }
    if total > MAX_SIZE {
        c.push(Cause::too_long("data", MAX_SIZE));
    }
    let need = |k: &str, c: &mut Vec<Cause>| {
        if !data.contains_key(k) {
            c.push(required(key("data", k), ""));
        }
    };
    match str_of(object, "type") {
        "kubernetes.io/service-account-token" => {
            let annotations = object.get("metadata").map(|m| str_map(m, "annotations")).unwrap_or_default();
            if annotations.get("kubernetes.io/service-account.name").is_none_or(String::is_empty) {
                c.push(required("metadata.annotations[kubernetes.io/service-account.name]", ""));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let k = if t == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            need(k, &mut c);
            if let Some(v) = data.get(k) {
                let parsed =
                    base64::decode(v).and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
                if let Err(e) = parsed {
                    c.push(Cause::invalid(key("data", k), "<secret contents redacted>", &e));
                }
            }
        }
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            need("username", &mut c);
            need("password", &mut c);
        }
        "kubernetes.io/ssh-auth" => need("ssh-privatekey", &mut c),
        "kubernetes.io/tls" => {
            need("tls.key", &mut c);
            need("tls.crt", &mut c);
        }
        _ => {}
    }
    c
}

const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

/// ConfigMaps and Secrets marked immutable stay so, data and all; a secret's type never changes.
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    if kind == "Secret" {
        immutable(old, new, "type", "", &mut c);
    }
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            c.push(forbidden("immutable", IMMUTABLE_SET));
        }
        let fields: &[&str] = if kind == "Secret" { &["data"] } else { &["data", "binaryData"] };
        for f in fields {
            if str_map(old, f) != str_map(new, f) {
                c.push(forbidden(*f, IMMUTABLE_SET));
            }
        }
    }
    c
}

/// Standard base64 (with padding), for secret data.
mod base64 {
    use base64::Engine;

    const STANDARD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        STANDARD.decode(s).map_err(|e| format!("illegal base64 data: {e}"))
    }

    /// The length of what `s` decodes to.
    pub fn decoded_len(s: &str) -> usize {
        s.trim_end_matches('=').len() * 3 / 4
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "hello world", "\u{0}\u{ff}"] {
            let e = base64::encode(s.as_bytes());
            assert_eq!(base64::decode(&e).unwrap(), s.as_bytes(), "{s}");
            assert_eq!(base64::decoded_len(&e), s.len());
        }
        assert_eq!(base64::encode(b"hi"), "aGk=");
        assert!(base64::decode("a*b").is_err());
    }

    #[test]
    fn secrets_default_to_opaque_and_fold_string_data() {
        let mut s = json!({"data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "b": "hi"}});
        default_secret(&mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "bmV3", "keep": "eA==", "b": "aGk="}}));
        let mut s = json!({"type": "kubernetes.io/tls"});
        default_secret(&mut s);
        assert_eq!(s["type"], "kubernetes.io/tls");
    }

    #[test]
    fn config_map_keys_and_size() {
        let cm = json!({"data": {"good.key": "v", "bad/key": "v", "dup": "x"}, "binaryData": {"dup": "eA=="}});
        let c = validate("ConfigMap", &cm);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["data[bad/key]", "data[dup]"], "{c:?}");
        assert!(c[0].message.starts_with("Invalid value: \"bad/key\": a valid config key must consist"));
        assert_eq!(c[1].message, "Invalid value: \"dup\": duplicate of key present in binaryData");
        let big = json!({"data": {"a": "x".repeat(MAX_SIZE + 1)}});
        let c = validate("ConfigMap", &big);
        assert_eq!((c[0].field.as_str(), c[0].message.as_str()), ("", "Too long: may not be more than 1048576 bytes"));
        assert!(validate("ConfigMap", &json!({"metadata": {"name": "x"}})).is_empty());
    }

    #[test]
    fn secret_types_need_their_keys() {
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        let c = validate("Secret", &tls);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].field.as_str(), c[0].message.as_str()), ("data[tls.key]", "Required value"));
        let basic = json!({"type": "kubernetes.io/basic-auth", "data": {}});
        assert_eq!(validate("Secret", &basic).len(), 2);
        let basic = json!({"type": "kubernetes.io/basic-auth", "data": {"password": "eA=="}});
        assert!(validate("Secret", &basic).is_empty());
        let sa = json!({"type": "kubernetes.io/service-account-token", "metadata": {"annotations": {}}});
        assert_eq!(validate("Secret", &sa)[0].field, "metadata.annotations[kubernetes.io/service-account.name]");
        let docker =
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": base64::encode(b"{no")}});
        let c = validate("Secret", &docker);
        assert!(c[0].message.starts_with("Invalid value: \"<secret contents redacted>\": "), "{c:?}");
        let docker =
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": base64::encode(b"{}")}});
        assert!(validate("Secret", &docker).is_empty());
        let opaque = json!({"type": "Opaque", "data": {"a b": "eA=="}});
        assert_eq!(validate("Secret", &opaque)[0].field, "data[a b]");
    }

    #[test]
    fn immutable_objects_stay_so() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert!(validate_update("ConfigMap", &old, &old).is_empty());
        let c = validate_update("ConfigMap", &old, &json!({"immutable": false, "data": {"a": "2"}}));
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["immutable", "data"]);
        assert_eq!(c[0].message, "Forbidden: field is immutable when `immutable` is set");
        let mutable = json!({"data": {"a": "1"}});
        assert!(validate_update("ConfigMap", &mutable, &json!({"data": {}})).is_empty());
        let c = validate_update("Secret", &json!({"type": "Opaque"}), &json!({"type": "kubernetes.io/tls"}));
        assert_eq!(
            (c[0].field.as_str(), c[0].message.as_str()),
            ("type", "Invalid value: \"kubernetes.io/tls\": field is immutable")
        );
    }
}
