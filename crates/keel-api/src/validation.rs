//! Names, label keys and values, annotations: the checks of Kubernetes' apimachinery validation, with its
//! messages, returning every problem found as a [`Cause`] (the `details.causes` of a 422 `Status`).

use std::collections::BTreeMap;

/// Why a field is wrong, as Kubernetes names it in a `StatusCause`'s `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseType {
    Invalid,
    Required,
    Duplicate,
    TooLong,
    TooMany,
    NotSupported,
    Forbidden,
}

impl CauseType {
    /// The `reason` string of a `StatusCause`.
    pub fn reason(self) -> &'static str {
        match self {
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::Required => "FieldValueRequired",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::Forbidden => "FieldValueForbidden",
        }
    }
}

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: CauseType,
    /// The field's path, as Kubernetes writes it: `metadata.labels`, `spec.containers[0].name`.
    pub field: String,
    /// `Invalid value: "Foo": a lowercase RFC 1123 …` — without the field, which [`Cause::to_string`] adds.
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Cause {
        Cause { kind: CauseType::Invalid, field: field.into(), message: format!("Invalid value: {value:?}: {detail}") }
    }

    pub fn required(field: impl Into<String>) -> Cause {
        Cause { kind: CauseType::Required, field: field.into(), message: "Required value".to_string() }
    }

    pub fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause { kind: CauseType::Duplicate, field: field.into(), message: format!("Duplicate value: {value:?}") }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            kind: CauseType::NotSupported,
            field: field.into(),
            message: format!("Unsupported value: {value:?}: supported values: {}", quoted.join(", ")),
        }
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Cause {
        Cause {
            kind: CauseType::TooLong,
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub const DNS1123_LABEL_MAX: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// The most bytes all of an object's annotations may take, keys and values together.
pub const ANNOTATIONS_MAX: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && lower_alnum(b[0]) && lower_alnum(b[b.len() - 1]) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

/// Problems with `s` as an RFC 1123 label (namespace names, container and port names): empty means valid.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !label_shaped(s) {
        errs.push(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start \
             and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
             '{DNS1123_LABEL_FMT}')"
        ));
    }
    errs
}

/// Problems with `s` as an RFC 1123 subdomain (most object names): empty means valid.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(label_shaped) {
        errs.push(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '{DNS1123_SUBDOMAIN_FMT}')"
        ));
    }
    errs
}

fn name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// Problems with `s` as a qualified name (label and annotation keys: an optional DNS subdomain prefix and
/// `/`, then a name of at most 63 characters): empty means valid.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns1123_subdomain(prefix).into_iter().map(|e| format!("prefix part {e}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
                 with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                 validation is '{QUALIFIED_NAME_FMT}') with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part must be no more than {QUALIFIED_NAME_MAX} characters"));
    }
    if !name.is_empty() && !name_part_ok(name) {
        errs.push(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
             '{QUALIFIED_NAME_FMT}')"
        ));
    }
    errs
}

/// Problems with `s` as a label value (empty, or a name part of at most 63 characters): empty means valid.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !s.is_empty() && !name_part_ok(s) {
        errs.push(format!(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex \
             used for validation is '{LABEL_VALUE_FMT}')"
        ));
    }
    errs
}

/// Every problem with a `labels` map found at `field` (`metadata.labels`, `spec.selector.matchLabels`).
pub fn labels(map: &BTreeMap<String, String>, field: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (k, v) in map {
        causes.extend(qualified_name(k).iter().map(|e| Cause::invalid(field, k, e)));
        causes.extend(label_value(v).iter().map(|e| Cause::invalid(format!("{field}[{k}]"), v, e)));
    }
    causes
}

/// Every problem with an `annotations` map at `field`: keys are qualified names (compared lower-cased, as
/// Kubernetes does), and keys and values together take at most [`ANNOTATIONS_MAX`] bytes.
pub fn annotations(map: &BTreeMap<String, String>, field: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (k, v) in map {
        causes.extend(qualified_name(&k.to_lowercase()).iter().map(|e| Cause::invalid(field, k, e)));
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX {
        causes.push(Cause::too_long(field, ANNOTATIONS_MAX));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_and_subdomains() {
        for ok in ["a", "abc-123", "0", &"a".repeat(63)] {
            assert!(dns1123_label(ok).is_empty(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!dns1123_label(bad).is_empty(), "{bad}");
        }
        for ok in ["a", "a.b", "example.com", "my-app.v1", "0.1"] {
            assert!(dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "Foo", "a_b", "a.-b", &"a".repeat(254)] {
            assert!(!dns1123_subdomain(bad).is_empty(), "{bad}");
        }
        let labels = |n| vec!["a".repeat(63); n].join(".");
        assert!(dns1123_subdomain(&labels(3)).is_empty()); // 191 bytes
        assert!(!dns1123_subdomain(&labels(4)).is_empty()); // 255 > 253
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in ["app", "App_1.x", "example.com/app", "k8s.io/Name-1", "a"] {
            assert!(qualified_name(ok).is_empty(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a/b/c", "-a", "a-", "Example.com/a", "a b", &"a".repeat(64)] {
            assert!(!qualified_name(bad).is_empty(), "{bad}");
        }
        for ok in ["", "v1", "My_value.2", &"a".repeat(63)] {
            assert!(label_value(ok).is_empty(), "{ok}");
        }
        for bad in ["-", "a-", "a b", "a/b", &"a".repeat(64)] {
            assert!(!label_value(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn label_maps_report_each_bad_key_and_value_with_its_field() {
        let m: BTreeMap<String, String> =
            [("good", "v"), ("bad key", "v"), ("k", "bad value")].map(|(k, v)| (k.into(), v.into())).into();
        let causes = labels(&m, "metadata.labels");
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(causes[0].field, "metadata.labels");
        assert!(causes[0].message.starts_with("Invalid value: \"bad key\": name part must consist"), "{causes:?}");
        assert_eq!(causes[1].field, "metadata.labels[k]");
        assert_eq!(causes[1].kind.reason(), "FieldValueInvalid");
    }

    #[test]
    fn annotations_are_bounded_in_total() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), "x".repeat(ANNOTATIONS_MAX));
        assert_eq!(annotations(&m, "metadata.annotations")[0].kind, CauseType::TooLong);
        m.insert("a".to_string(), "x".repeat(100));
        m.insert("Example.COM/Key".to_string(), String::new());
        assert!(annotations(&m, "metadata.annotations").is_empty());
    }
}
