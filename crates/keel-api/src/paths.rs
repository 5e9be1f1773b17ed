//! Request paths → what they address: `/api/v1/namespaces/{ns}/pods/{name}/status` is the `status`
//! subresource of one pod. The group version prefix (`/api/v1`, `/apis/{group}/{version}`) is the router's;
//! this parses the segments after it, as kube-apiserver's request-info resolver does.

use std::sync::Arc;

use crate::custom::{Catalog, Served};
use crate::resources::{self, Resource};
use crate::status::ApiError;

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static Resource,
    /// The served version of a custom resource (`None` for built-in ones).
    pub custom: Option<Arc<Served>>,
    /// The namespace in the path (`None` for cluster-scoped resources and all-namespace lists).
    pub namespace: Option<String>,
    /// The object's name (`None` for a collection).
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The store key of the addressed object (a collection has none).
    pub fn key(&self) -> Option<String> {
        let name = self.name.as_deref()?;
        Some(self.resource.key(self.namespace.as_deref().unwrap_or(""), name))
    }
}

/// Parses `rest`, the path after the group version, for `group`/`version`: a built-in resource, or a
/// custom one of `catalog`.
pub fn parse(catalog: &Catalog, group: &str, version: &str, rest: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(ApiError::UnknownPath);
    }
    let find = |plural: &str| match resources::find(group, version, plural) {
        Some(r) => Ok((r, None)),
        None => {
            catalog.find(group, version, plural).map(|s| (s.resource, Some(s.clone()))).ok_or(ApiError::UnknownPath)
        }
    };
    // namespaces/{ns}/{plural}[/{name}[/{sub}]] when {plural} is a namespaced resource of this group
    // version; otherwise the segments name a cluster-scoped object (namespaces/{name}/status included).
    if segments.len() >= 3 && segments[0] == "namespaces" {
        if let Ok((resource, custom)) = find(segments[2]) {
            if resource.namespaced {
                return target(resource, custom, Some(segments[1]), &segments[3..]);
            }
        }
    }
    let (resource, custom) = find(segments[0])?;
    if resource.namespaced && segments.len() > 1 {
        // `/api/v1/pods/web`: namespaced objects are only addressed within their namespace.
        return Err(ApiError::UnknownPath);
    }
    target(resource, custom, None, &segments[1..])
}

fn target(
    resource: &'static Resource,
    custom: Option<Arc<Served>>,
    namespace: Option<&str>,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] if resource.subresources.contains(sub) => (Some(*name), Some(*sub)),
        _ => return Err(ApiError::UnknownPath),
    };
    Ok(Target {
        resource,
        custom,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(t: &Target) -> (&str, Option<&str>, Option<&str>, Option<&str>) {
        (t.resource.plural, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref())
    }

    #[test]
    fn collections_objects_and_subresources() {
        let t = parse(&Catalog::default(), "", "v1", "pods").unwrap();
        assert_eq!(parts(&t), ("pods", None, None, None));
        let t = parse(&Catalog::default(), "", "v1", "namespaces/default/pods").unwrap();
        assert_eq!(parts(&t), ("pods", Some("default"), None, None));
        let t = parse(&Catalog::default(), "", "v1", "namespaces/default/pods/web/status").unwrap();
        assert_eq!(parts(&t), ("pods", Some("default"), Some("web"), Some("status")));
        assert_eq!(t.key().unwrap(), "/registry/pods/default/web");
        let t = parse(&Catalog::default(), "apps", "v1", "namespaces/a/deployments/web/scale").unwrap();
        assert_eq!(parts(&t), ("deployments", Some("a"), Some("web"), Some("scale")));
    }

    #[test]
    fn namespaces_themselves() {
        let t = parse(&Catalog::default(), "", "v1", "namespaces").unwrap();
        assert_eq!(parts(&t), ("namespaces", None, None, None));
        let t = parse(&Catalog::default(), "", "v1", "namespaces/kube-system").unwrap();
        assert_eq!(parts(&t), ("namespaces", None, Some("kube-system"), None));
        assert_eq!(t.key().unwrap(), "/registry/namespaces/kube-system");
        let t = parse(&Catalog::default(), "", "v1", "namespaces/kube-system/status").unwrap();
        assert_eq!(parts(&t), ("namespaces", None, Some("kube-system"), Some("status")));
        let t = parse(&Catalog::default(), "", "v1", "namespaces/kube-system/finalize").unwrap();
        assert_eq!(parts(&t), ("namespaces", None, Some("kube-system"), Some("finalize")));
        let t = parse(&Catalog::default(), "", "v1", "nodes/n1/status").unwrap();
        assert_eq!(parts(&t), ("nodes", None, Some("n1"), Some("status")));
    }

    #[test]
    fn unknown_paths() {
        for (g, v, rest) in [
            ("", "v1", "widgets"),
            ("", "v1", "pods/web"),
            ("", "v1", "namespaces/default/pods/web/nope"),
            ("", "v1", "namespaces/default/pods/web/status/more"),
            ("", "v1", "namespaces/default/deployments"),
            ("apps", "v1", "namespaces/default/pods"),
            ("", "v1", "namespaces//pods"),
            ("", "v1", "namespaces/default/configmaps/.."),
        ] {
            assert_eq!(parse(&Catalog::default(), g, v, rest), Err(ApiError::UnknownPath), "{g}/{v}/{rest}");
        }
    }
}
