//! What a resource request asks, read off its query and headers: selectors, paging, resourceVersion
//! semantics, watch options, dry run, field validation, delete options, and the representation wanted
//! (plain JSON or a Table). Errors are the 400/406/415 Status responses kube-apiserver gives.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use keel_api::meta::Propagation;
use keel_api::paths::Target;
use keel_api::selector::{FieldSelector, LabelSelector};
use keel_api::status::ApiError;
use serde_json::Value;

/// The largest request body accepted (kube-apiserver's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

pub use keel_api::admit::FieldValidation;

/// A Table row's `object`: none, the object's metadata (the default), or the whole object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// The query parameters of a resource request.
#[derive(Debug, Default)]
pub struct Params {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    pub limit: i64,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub grace_period: Option<i64>,
    pub propagation: Option<Propagation>,
    pub include_object: IncludeObject,
    /// `fieldManager`: who the write's fields are recorded for (required for server-side apply).
    pub field_manager: Option<String>,
    /// `force`: a server-side apply takes over fields other managers have.
    pub force: bool,
    /// The manager of writes without `fieldManager`: the client's User-Agent up to its first `/`, as
    /// kube-apiserver names it (`kubectl`, `kube-rs`, `OpenAPI-Generator`).
    pub user_agent: String,
}

/// The field manager of a write that names none: the User-Agent up to its first `/` (kube-apiserver's
/// `prefixFromUserAgent`), at most 128 characters.
pub fn user_agent_manager(headers: &HeaderMap) -> String {
    let agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    agent.split('/').next().unwrap_or("").chars().take(128).collect()
}

/// A boolean query parameter, spelled as Go's `strconv.ParseBool` reads it (the Python client sends
/// `watch=True`); a bare `?watch` is true.
fn boolean(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(bad(format!("invalid value for {name}: {v:?}"))),
    }
}

fn integer(name: &str, v: &str) -> Result<i64, ApiError> {
    v.parse().map_err(|_| bad(format!("invalid value for {name}: {v:?}: not an integer")))
}

impl Params {
    /// Parses the raw query of a request to `target` (field selectors are checked against its resource).
    pub fn parse(query: Option<&str>, target: &Target) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "labelSelector" if !v.is_empty() => {
                    p.labels = Some(LabelSelector::parse(&v).map_err(|e| bad(format!("unable to parse requirement: {e}")))?)
                }
                "fieldSelector" if !v.is_empty() => {
                    let fs = FieldSelector::parse(&v).map_err(|e| bad(format!("invalid field selector: {e}")))?;
                    if let Some(f) = fs.fields().find(|f| !target.resource.supports_field(f)) {
                        return Err(bad(format!(
                            "field label not supported: {f}"
                        )));
                    }
                    p.fields = Some(fs);
                }
                "limit" => p.limit = integer("limit", &v)?.max(0),
                "continue" if !v.is_empty() => p.continue_token = Some(v.into_owned()),
                "resourceVersion" if !v.is_empty() => p.resource_version = Some(v.into_owned()),
                "resourceVersionMatch" if !v.is_empty() => {
                    if !matches!(v.as_ref(), "NotOlderThan" | "Exact") {
                        return Err(bad(format!(
                            "resourceVersionMatch: Unsupported value: {v:?}: supported values: \"Exact\", \"NotOlderThan\""
                        )));
                    }
                    p.resource_version_match = Some(v.into_owned())
                }
                "watch" => p.watch = boolean("watch", &v)?,
                "allowWatchBookmarks" => p.bookmarks = boolean("allowWatchBookmarks", &v)?,
                "timeoutSeconds" => p.timeout = Some(Duration::from_secs(integer("timeoutSeconds", &v)?.max(0) as u64)),
                "fieldManager" if !v.is_empty() => {
                    if v.chars().count() > 128 || v.chars().any(|c| c.is_control()) {
                        return Err(bad(format!(
                            "fieldManager: Invalid value: {v:?}: must be at most 128 printable characters"
                        )));
                    }
                    p.field_manager = Some(v.into_owned());
                }
                "force" => p.force = boolean("force", &v)?,
                "dryRun" if !v.is_empty() => {
                    if v != "All" {
                        return Err(bad(format!("dryRun: Unsupported value: {v:?}: supported values: \"All\"")));
                    }
                    p.dry_run = true;
                }
                "fieldValidation" if !v.is_empty() => {
                    p.field_validation = match v.as_ref() {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        other => {
                            return Err(bad(format!(
                                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
                            )))
                        }
                    }
                }
                "gracePeriodSeconds" => p.grace_period = Some(integer("gracePeriodSeconds", &v)?),
                "propagationPolicy" if !v.is_empty() => p.propagation = Some(Propagation::parse(&v)?),
                "includeObject" => {
                    p.include_object = match v.as_ref() {
                        "None" => IncludeObject::None,
                        "" | "Metadata" => IncludeObject::Metadata,
                        "Object" => IncludeObject::Object,
                        other => return Err(bad(format!("includeObject: unsupported value {other:?}"))),
                    }
                }
                _ => {}
            }
        }
        if p.limit > 0 && p.watch {
            p.limit = 0;
        }
        if p.continue_token.is_some() && p.resource_version.as_deref().is_some_and(|rv| rv != "0") {
            return Err(bad("specifying resource version is not allowed when using continue"));
        }
        Ok(p)
    }

    /// The resourceVersion asked for, as a store revision (`None` when absent or "0").
    pub fn revision(&self) -> Result<Option<i64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("0") => Ok(None),
            Some(rv) => parse_revision(rv).map(Some),
        }
    }
}

pub fn parse_revision(rv: &str) -> Result<i64, ApiError> {
    rv.parse::<i64>().ok().filter(|r| *r > 0).ok_or_else(|| bad(format!("invalid resource version: {rv:?}")))
}

/// The representation a client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
    /// meta.k8s.io PartialObjectMetadata(List): each object's metadata only (kube-rs's metadata watches).
    Metadata,
}

/// The first representation of `Accept` keel serves: JSON, a meta.k8s.io Table, or metadata only.
pub fn output(headers: &HeaderMap) -> Result<Output, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).filter(|a| !a.trim().is_empty())
    else {
        return Ok(Output::Json);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "*/*" | "application/*") {
            continue;
        }
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        match (get("as"), get("g"), get("v")) {
            (None, ..) => return Ok(Output::Json),
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => return Ok(Output::Table),
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1" | "v1beta1"),
            ) => return Ok(Output::Metadata),
            _ => continue,
        }
    }
    Err(ApiError::NotAcceptable(
        "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io, \
         application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io, \
         application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
            .into(),
    ))
}

/// The body of a create, update or binding as a JSON object, from any encoding kube-apiserver reads:
/// JSON, YAML, or Kubernetes protobuf (which kubectl's typed `create` commands send).
pub async fn object_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let media = content_type(headers);
    let bytes = read(body).await?;
    match media.as_str() {
        "" | "application/json" => parse_json(&bytes),
        "application/yaml" => parse_yaml(&bytes),
        keel_protobuf::MEDIA_TYPE => {
            keel_protobuf::decode(&bytes).map_err(|e| bad(format!("the protobuf body could not be decoded: {e}")))
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/yaml, {} (got {media})",
            keel_protobuf::MEDIA_TYPE
        ))),
    }
}

/// The header by which the control loops' leader fences its writes (docs/adr/002): the mod revision of the
/// leader key when it was elected. A fence can only make writes fail, so any authenticated client may send it.
pub const FENCE_HEADER: &str = "keel-fence";

/// The request's fencing token, if it carries one.
pub fn fence(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(FENCE_HEADER) else { return Ok(None) };
    v.to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|r| *r > 0)
        .map(Some)
        .ok_or_else(|| bad(format!("{FENCE_HEADER}: expected a positive revision")))
}

/// The media type of the body, lower case, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ApiError::TooLarge)
}

pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("couldn't get version/kind; json parse error: {e}")))
}

/// One YAML document as the JSON value it denotes (kube-apiserver converts YAML bodies to JSON first).
pub fn parse_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_yaml_ng::from_slice(bytes).map_err(|e| bad(format!("error converting YAML to JSON: yaml: {e}")))
}

/// A delete's options, from its body (DeleteOptions, optional) over the query's.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<i64>,
    pub dry_run: bool,
}

pub fn delete_options(params: &Params, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        grace_period: params.grace_period,
        propagation: params.propagation,
        dry_run: params.dry_run,
        ..Default::default()
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(o);
    }
    let v = parse_json(body)?;
    if let Some(g) = v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
        o.grace_period = Some(g.as_i64().ok_or_else(|| bad("gracePeriodSeconds: expected an integer"))?);
    }
    if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
        o.propagation = Some(Propagation::parse(p)?);
    } else if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
        o.propagation = Some(if orphan { Propagation::Orphan } else { Propagation::Background });
    }
    if let Some(uid) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
        o.precondition_uid = Some(uid.to_string());
    }
    if let Some(rv) = v.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
        o.precondition_rv = Some(parse_revision(rv)?);
    }
    if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
        o.dry_run |= d.iter().any(|x| x == "All");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn target(plural: &str) -> Target {
        keel_api::paths::parse(&Default::default(), "", "v1", &format!("namespaces/default/{plural}")).unwrap()
    }

    #[test]
    fn params() {
        let p = Params::parse(
            Some("labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1&limit=5&watch=1&allowWatchBookmarks=true&timeoutSeconds=30&fieldValidation=Strict"),
            &target("pods"),
        )
        .unwrap();
        assert!(p.labels.is_some() && p.fields.is_some() && p.watch && p.bookmarks);
        assert_eq!(p.limit, 0, "a watch is not paged");
        assert_eq!(p.timeout, Some(Duration::from_secs(30)));
        assert_eq!(p.field_validation, FieldValidation::Strict);
        let e = Params::parse(Some("fieldSelector=spec.nodeName%3Dn1"), &target("configmaps")).unwrap_err();
        assert_eq!(e.to_string(), "field label not supported: spec.nodeName");
        assert_eq!(Params::parse(Some("limit=x"), &target("pods")).unwrap_err().code(), 400);
        let python = Params::parse(Some("watch=True&allowWatchBookmarks=False"), &target("pods")).unwrap();
        assert!(python.watch && !python.bookmarks);
        assert_eq!(Params::parse(Some("watch=yes"), &target("pods")).unwrap_err().code(), 400);
        assert_eq!(Params::parse(Some("dryRun=Some"), &target("pods")).unwrap_err().code(), 400);
        assert_eq!(
            Params::parse(Some("resourceVersion=abc"), &target("pods")).unwrap().revision().unwrap_err().code(),
            400
        );
        assert_eq!(Params::parse(Some("resourceVersion=0"), &target("pods")).unwrap().revision().unwrap(), None);
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(output(&h).unwrap(), Output::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            ),
        );
        assert_eq!(output(&h).unwrap(), Output::Table);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io, application/json",
            ),
        );
        assert_eq!(output(&h).unwrap(), Output::Metadata);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;as=Other;v=v1;g=meta.k8s.io, application/json"),
        );
        assert_eq!(output(&h).unwrap(), Output::Json);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/vnd.kubernetes.protobuf"));
        assert_eq!(output(&h).unwrap_err().code(), 406);
    }

    #[test]
    fn delete_options_from_body_over_query() {
        let p = Params::parse(Some("gracePeriodSeconds=5"), &target("pods")).unwrap();
        let o = delete_options(&p, br#"{"propagationPolicy":"Foreground","preconditions":{"uid":"u"}}"#).unwrap();
        assert_eq!(o.grace_period, Some(5));
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        assert_eq!(o.precondition_uid.as_deref(), Some("u"));
        assert_eq!(delete_options(&p, b"{").unwrap_err().code(), 400);
        assert_eq!(delete_options(&p, br#"{"propagationPolicy":"Later"}"#).unwrap_err().code(), 400);
    }
}
