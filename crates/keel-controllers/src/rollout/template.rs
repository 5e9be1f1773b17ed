//! Which ReplicaSet runs a Deployment's pod template: the `pod-template-hash` label value and the template
//! comparison that ignores it (Kubernetes' `ComputeHash` and `EqualIgnoreHash`).
//!
//! Kubernetes hashes a Go-specific dump of the template; keel hashes a canonical JSON rendering instead (keys
//! sorted, absent-equivalent values dropped), so the values differ from Kubernetes' but have the same
//! properties: stable for equal templates, changed by `status.collisionCount`, and a valid label value.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label that tells the ReplicaSets of one Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Kubernetes' `SafeEncodeString` alphabet: no vowels (no words), no 0/1/3 (no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Keys whose `{}` value means something (a volume source with every field defaulted), kept when comparing.
const MEANINGFUL_EMPTY: &[&str] = &["emptyDir", "downwardAPI", "configMap", "secret", "projected"];

/// The `pod-template-hash` of a template: FNV-1a (32 bits) of its canonical JSON, then of the collision count
/// (4 bytes, little endian) when there is one, written in decimal and mapped onto [`SAFE_ALPHABET`].
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    prune(&mut value);
    let mut text = String::new();
    write_canonical(&value, &mut text);
    let mut hash = fnv1a(FNV_OFFSET, text.as_bytes());
    if let Some(count) = collision_count {
        hash = fnv1a(hash, &(count as u32).to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

/// Kubernetes' `SafeEncodeString`: every byte becomes a letter of [`SAFE_ALPHABET`].
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// Whether two templates are the same once the `pod-template-hash` label is left out of both, with absent,
/// `null`, empty lists and empty maps treated alike (Kubernetes compares with semantic equality, where a nil
/// and an empty slice or map are equal).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    comparable(a) == comparable(b)
}

fn comparable(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    prune(&mut value);
    value
}

/// Drops `null`s, empty lists and empty maps from objects (except [`MEANINGFUL_EMPTY`] ones), innermost first.
/// Returns whether `value` itself is now empty.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            items.is_empty()
        }
        Value::Object(fields) => {
            fields
                .retain(|key, field| !prune(field) || (field.is_object() && MEANINGFUL_EMPTY.contains(&key.as_str())));
            fields.is_empty()
        }
        _ => false,
    }
}

/// JSON with object keys in sorted order, whatever order the map keeps them in.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&fields[key], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container { name: "app".into(), image: Some(image.into()), ..Default::default() }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0x811c_9dc5);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_template_and_collisions() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert!(!a.is_empty() && a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
        assert!(keel_api::validation::label_value(&a).is_empty());
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert_ne!(pod_template_hash(&template("nginx:1"), Some(1)), pod_template_hash(&template("nginx:1"), Some(2)));
    }

    #[test]
    fn safe_encode_maps_digits_like_kubernetes() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '9' is 57, 57 % 27 = 3 -> 'f'.
        assert_eq!(safe_encode("09"), "4f");
    }

    #[test]
    fn equality_ignores_the_hash_label_and_empty_values() {
        let plain = template("nginx:1");
        let mut hashed = plain.clone();
        let labels = hashed.metadata.as_mut().and_then(|m| m.labels.as_mut()).expect("labels");
        labels.insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignore_hash(&plain, &hashed));

        let mut empties = plain.clone();
        let spec = empties.spec.as_mut().expect("spec");
        spec.containers[0].env = Some(vec![]);
        spec.node_selector = Some(Default::default());
        assert!(equal_ignore_hash(&plain, &empties));
        assert_eq!(pod_template_hash(&plain, None), pod_template_hash(&empties, None));

        assert!(!equal_ignore_hash(&plain, &template("nginx:2")));
    }

    #[test]
    fn an_empty_dir_volume_is_not_an_absent_one() {
        use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
        let mut with_volume = template("nginx:1");
        with_volume.spec.as_mut().expect("spec").volumes = Some(vec![Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]);
        let mut with_bare_volume = template("nginx:1");
        with_bare_volume.spec.as_mut().expect("spec").volumes =
            Some(vec![Volume { name: "scratch".into(), ..Default::default() }]);
        assert!(!equal_ignore_hash(&with_volume, &with_bare_volume));
    }
}
