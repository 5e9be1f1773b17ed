//! The resource endpoints (`/api/v1/…`, `/apis/{group}/{version}/…`): create, get, list, update, patch,
//! delete and deletecollection of every served kind, their status and scale subresources and pod binding,
//! with lists and gets as JSON or Tables. Watches are `crate::watch`'s. The rules are `keel-api`'s; this
//! module reads requests, runs the read-check-write cycle against the store (compare-and-swap, retried for
//! requests that did not name a resourceVersion) and writes responses.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::sync::Arc;

use keel_api::admit::{self, Admitted};
use keel_api::apply::{self, fields::Shape, Writer};
use keel_api::custom::Served;
use keel_api::kinds::{self, Hook};
use keel_api::meta::{self, Deletion, Fresh};
use keel_api::paths::{self, Target};
use keel_api::resources::{self, Resource};
use keel_api::status::{ApiError, GroupResource};
use keel_api::validation::Cause;
use keel_api::{strategic_merge, table};
use serde_json::{json, Value};

use crate::allocator;
use crate::auth::User;
use crate::request::{self, IncludeObject, Output, Params};
use crate::storage::{Read, StorageError, Stored};
use crate::{AppState, Failure};

/// How many times a write that raced another is retried before answering 409.
const WRITE_ATTEMPTS: usize = 8;

pub(crate) async fn core(
    State(state): State<AppState>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // The client's connection, for a subresource that upgrades it (pods/exec).
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let user = parts.extensions.remove::<User>();
    serve(state, "", "v1", &rest, method, query, parts.headers, body, upgrade, user)
        .await
        .unwrap_or_else(|e| e.into_response())
}

pub(crate) async fn grouped(
    State(state): State<AppState>,
    method: Method,
    Path((group, version, rest)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let user = parts.extensions.remove::<User>();
    serve(state, &group, &version, &rest, method, query, parts.headers, body, None, user)
        .await
        .unwrap_or_else(|e| e.into_response())
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    state: AppState,
    group: &str,
    version: &str,
    rest: &str,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    user: Option<User>,
) -> Result<Response, Failure> {
    let target = match paths::parse(&state.custom.catalog(), group, version, rest) {
        // A custom resource this master does not serve yet may be one a CRD just created through another
        // master defines: read the definitions again before answering 404.
        Err(ApiError::UnknownPath) if !resources::builtin_group(group) => {
            if !state.custom.refresh_before_not_found(&state.storage, group).await {
                return Err(ApiError::Unavailable.into());
            }
            paths::parse(&state.custom.catalog(), group, version, rest)?
        }
        other => other?,
    };
    let mut params = Params::parse(query.as_deref(), &target)?;
    params.user_agent = request::user_agent_manager(&headers);
    let mut state = state;
    if let Some(fence) = request::fence(&headers)? {
        state.storage = state.storage.fenced(fence);
    }
    let call = Call { state, target, params, user };
    if call.target.resource.stored_as.is_some() && method != Method::GET {
        return converted_write(call, method, &headers, body).await;
    }
    let sub = call.target.subresource.as_deref();
    let response = match (method, call.target.name.is_some(), sub) {
        (Method::GET, false, None) if call.params.watch => {
            crate::watch::serve(&call.state, &call.target, &call.params, request::output(&headers)?).await?
        }
        (Method::GET, false, None) => call.list(request::output(&headers)?).await?,
        (Method::POST, false, None) => call.create(request::object_body(&headers, body).await?).await?,
        (Method::DELETE, false, None) => call.delete_collection(request::read(body).await?.as_ref()).await?,
        (Method::GET, true, None | Some("status")) => call.get(request::output(&headers)?).await?,
        (Method::GET, true, Some("scale")) => call.get_scale().await?,
        (Method::PUT, true, None | Some("status" | "scale" | "finalize" | "approval")) => {
            call.update(request::object_body(&headers, body).await?).await?
        }
        (Method::PATCH, true, None | Some("status" | "scale" | "approval")) => {
            let media = request::content_type(&headers);
            call.patch(&media, request::read(body).await?.as_ref()).await?
        }
        (Method::DELETE, true, None) => call.delete(request::read(body).await?.as_ref()).await?,
        (Method::POST, true, Some("binding")) => call.bind(request::object_body(&headers, body).await?).await?,
        (Method::POST, true, Some("eviction")) if call.resource().kind == "Pod" => {
            call.evict(request::object_body(&headers, body).await?).await?
        }
        (Method::POST, true, Some("token")) if call.resource().kind == "ServiceAccount" => {
            call.token_request(request::object_body(&headers, body).await?).await?
        }
        (Method::GET, true, Some("log")) => {
            let namespace = call.target.namespace.as_deref().unwrap_or("default");
            crate::node_proxy::pod_log(&call.state, namespace, call.name(), query.as_deref()).await
        }
        (Method::GET | Method::POST, true, Some("portforward")) => {
            let namespace = call.target.namespace.as_deref().unwrap_or("default");
            crate::node_proxy::pod_port_forward(&call.state, namespace, call.name(), &headers, upgrade).await
        }
        (Method::GET | Method::POST, true, Some("exec")) => {
            let namespace = call.target.namespace.as_deref().unwrap_or("default");
            crate::node_proxy::pod_exec(&call.state, namespace, call.name(), query.as_deref(), &headers, upgrade).await
        }
        _ => return Err(ApiError::MethodNotAllowed.into()),
    };
    Ok(response)
}

/// A write to a resource stored as another version of a built-in one (events.k8s.io/v1 Events): the body
/// converted, written as that resource is (its admission, its store keys), the answer converted back.
async fn converted_write(call: Call, method: Method, headers: &HeaderMap, body: Body) -> Result<Response, Failure> {
    let shown = call.target.resource;
    let (group, version) =
        shown.stored_as.and_then(|v| v.split_once('/')).unwrap_or(("", shown.stored_as.unwrap_or("")));
    let storage = resources::find(group, version, shown.plural).ok_or(ApiError::UnknownPath)?;
    let stored = Call { target: Target { resource: storage, ..call.target.clone() }, ..call };
    let response = match (method, stored.target.name.is_some(), stored.target.subresource.as_deref()) {
        (Method::POST, false, None) => {
            let object = request::object_body(headers, body).await?;
            stored.create(kinds::to_storage(shown, &object)).await?
        }
        (Method::PUT, true, None) => {
            let object = request::object_body(headers, body).await?;
            stored.update(kinds::to_storage(shown, &object)).await?
        }
        (Method::PATCH, true, None) => {
            let media = request::content_type(headers);
            if !matches!(
                media.as_str(),
                "application/json-patch+json"
                    | "application/merge-patch+json"
                    | "application/strategic-merge-patch+json"
            ) {
                return Err(
                    ApiError::UnsupportedMediaType(format!("{media} is not supported for {}", shown.plural)).into()
                );
            }
            let patch = request::parse_json(request::read(body).await?.as_ref())?;
            stored
                .write(None, false, |_, old| {
                    let patched = apply_patch(&media, &kinds::from_storage(shown, old), &patch, shown.kind)?;
                    Ok(kinds::to_storage(shown, &patched))
                })
                .await?
        }
        (Method::DELETE, true, None) => stored.delete(request::read(body).await?.as_ref()).await?,
        (Method::DELETE, false, None) => stored.delete_collection(request::read(body).await?.as_ref()).await?,
        _ => return Err(ApiError::MethodNotAllowed.into()),
    };
    // The answer (an object, a list of them, or a Status) as the requested version shows it.
    let (parts, answer) = response.into_parts();
    let bytes = axum::body::to_bytes(answer, usize::MAX).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    };
    match v.get("kind").and_then(Value::as_str) {
        Some(k) if k == storage.kind => v = kinds::from_storage(shown, &v),
        Some(k) if k == format!("{}List", storage.kind) => {
            for item in v.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
                *item = kinds::from_storage(shown, item);
            }
            v["apiVersion"] = json!(shown.api_version());
        }
        _ => {}
    }
    Ok(Response::from_parts(parts, Body::from(v.to_string())))
}

/// One resource request being served.
pub(crate) struct Call {
    pub state: AppState,
    pub target: Target,
    pub params: Params,
    /// Who asked (`None`: the masters' own calls through their router).
    pub user: Option<User>,
}

/// The object in a stored value, with its resourceVersion (the key's mod revision).
pub(crate) fn object(stored: &Stored) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&stored.value)
        .map_err(|e| ApiError::Internal(format!("stored object {} is not JSON: {e}", stored.key)))?;
    set_resource_version(&mut v, stored.mod_revision);
    Ok(v)
}

/// The object in a stored value as `target`'s version serves it: a custom object stored through another
/// version of its definition is shown as this one's (conversion `None`: only `apiVersion` differs).
pub(crate) fn served_object(target: &Target, stored: &Stored) -> Result<Value, ApiError> {
    let mut v = object(stored)?;
    if target.resource.stored_as.is_some() {
        v = kinds::from_storage(target.resource, &v);
    }
    if target.custom.is_some() {
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), json!(target.resource.api_version()));
        }
    }
    Ok(v)
}

pub(crate) fn set_resource_version(v: &mut Value, revision: i64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

pub(crate) fn encode(v: &Value) -> Result<Vec<u8>, ApiError> {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(|e| ApiError::Internal(format!("cannot encode an object: {e}")))
}

pub(crate) fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response();
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

/// A `Status` of success, as kube-apiserver answers a delete of most kinds.
fn success(resource: &Resource, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": resource.group, "kind": resource.plural, "uid": uid},
    })
}

/// How a resource's objects are shown as table rows: by the kind's printer, or by a custom resource's
/// printer columns.
#[derive(Clone)]
pub(crate) enum Printer {
    Kind(&'static str),
    Custom(Arc<Served>),
}

impl Printer {
    pub(crate) fn of(target: &Target) -> Printer {
        match &target.custom {
            Some(c) => Printer::Custom(c.clone()),
            None => Printer::Kind(target.resource.kind),
        }
    }

    fn definitions(&self) -> Vec<Value> {
        match self {
            Printer::Kind(kind) => table::column_definitions(kind),
            Printer::Custom(c) => keel_api::custom::columns::definitions(&c.columns),
        }
    }

    fn cells(&self, object: &Value, now: jiff::Timestamp) -> Vec<Value> {
        match self {
            Printer::Kind(kind) => table::cells(kind, object, now),
            Printer::Custom(c) => keel_api::custom::columns::cells(&c.columns, object, now),
        }
    }
}

/// A Table row for `object`.
pub(crate) fn row(printer: &Printer, object: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let mut row = json!({"cells": printer.cells(object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_default(),
            })
        }
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

pub(crate) fn table(printer: &Printer, rows: Vec<Value>, list_meta: Value) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": printer.definitions(),
        "rows": rows,
    })
}

/// Whether `object` passes the request's label and field selectors.
pub(crate) fn selected(params: &Params, object: &Value) -> bool {
    params.labels.as_ref().is_none_or(|s| s.matches(&meta::labels(object)))
        && params.fields.as_ref().is_none_or(|s| s.matches(|f| meta::field(object, f)))
}

/// A continue token: where the next page starts and the revision the list is read at.
fn continue_token(revision: i64, next_key: &str, prefix: &str) -> String {
    let start = next_key.strip_prefix(prefix).unwrap_or(next_key);
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn parse_continue(token: &str, prefix: &str) -> Result<(i64, String), ApiError> {
    let invalid = || ApiError::BadRequest("continue key is not valid: incorrect encoded start resourceVersion".into());
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| invalid())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = v.get("rv").and_then(Value::as_i64).filter(|r| *r > 0).ok_or_else(invalid)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(invalid)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(invalid());
    }
    Ok((rv, format!("{prefix}{start}")))
}

impl Call {
    fn resource(&self) -> &'static Resource {
        self.target.resource
    }

    fn group_resource(&self) -> GroupResource {
        self.resource().into()
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    fn key(&self) -> String {
        self.target.key().unwrap_or_default()
    }

    /// A storage error as the API reports it for this request's object.
    pub(crate) fn store_error(&self, e: StorageError) -> ApiError {
        store_error(self.resource(), self.name(), e)
    }

    fn invalid(&self, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(self.resource(), name, causes)
    }

    fn conflict(&self) -> ApiError {
        ApiError::Conflict {
            resource: self.group_resource(),
            name: self.name().to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        }
    }

    /// Decodes against the kind's type; unknown fields are refused, warned about or ignored as asked.
    async fn get(&self, output: Output) -> Result<Response, ApiError> {
        let read =
            if self.params.resource_version.as_deref() == Some("0") { Read::Serializable } else { Read::Linearizable };
        let stored = self.state.storage.read(&self.key(), read).await.map_err(|e| self.store_error(e))?;
        let v = served_object(&self.target, &stored)?;
        Ok(match output {
            Output::Json => json_response(StatusCode::OK, &v, &[]),
            Output::Metadata => json_response(StatusCode::OK, &meta::partial(&v), &[]),
            Output::Table => {
                let now = jiff::Timestamp::now();
                let printer = Printer::of(&self.target);
                let rows = vec![row(&printer, &v, self.params.include_object, now)];
                let t = table(&printer, rows, json!({"resourceVersion": stored.mod_revision.to_string()}));
                json_response(StatusCode::OK, &t, &[])
            }
        })
    }

    /// The objects of a list request that pass its selectors, a page at a time, at one revision.
    pub(crate) async fn select(&self) -> Result<(Vec<Value>, i64, Option<String>, Option<i64>), ApiError> {
        let prefix = self.resource().prefix(self.target.namespace.as_deref());
        let (mut revision, mut start) = match &self.params.continue_token {
            Some(t) => {
                let (rv, start) = parse_continue(t, &prefix)?;
                (rv, Some(start))
            }
            None => (
                self.params
                    .revision()?
                    .filter(|_| self.params.resource_version_match.as_deref() == Some("Exact"))
                    .unwrap_or(0),
                None,
            ),
        };
        let read = if self.params.resource_version.as_deref() == Some("0") && self.params.continue_token.is_none() {
            Read::Serializable
        } else {
            Read::Linearizable
        };
        let filtered = self.params.labels.is_some() || self.params.fields.is_some();
        let limit = self.params.limit;
        let mut items = Vec::new();
        loop {
            let page =
                self.state.storage.list_read(&prefix, start.as_deref(), limit, revision, read).await.map_err(|e| {
                    match e {
                        StorageError::Compacted { requested } => ApiError::Gone { requested, oldest: requested },
                        e => self.store_error(e),
                    }
                })?;
            revision = page.revision;
            let last = page.items.last().map(|s| format!("{}\0", s.key));
            for stored in &page.items {
                let mut v = served_object(&self.target, stored)?;
                if selected(&self.params, &v) {
                    if let Some(m) = v.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    items.push(v);
                }
            }
            let more = page.remaining > 0;
            match (more, last) {
                (true, Some(next)) if limit > 0 && (items.len() as i64) < limit => start = Some(next),
                (true, Some(next)) if limit > 0 => {
                    let remaining = (!filtered).then_some(page.remaining);
                    return Ok((items, revision, Some(continue_token(revision, &next, &prefix)), remaining));
                }
                _ => return Ok((items, revision, None, None)),
            }
        }
    }

    async fn list(&self, output: Output) -> Result<Response, ApiError> {
        let (items, revision, cont, remaining) = self.select().await?;
        let mut list_meta = json!({"resourceVersion": revision.to_string()});
        if let Some(c) = cont {
            list_meta["continue"] = json!(c);
        }
        if let Some(r) = remaining {
            list_meta["remainingItemCount"] = json!(r);
        }
        let kind = self.resource().kind;
        let body = match output {
            Output::Json => json!({
                "kind": format!("{kind}List"),
                "apiVersion": self.resource().api_version(),
                "metadata": list_meta,
                "items": items,
            }),
            Output::Metadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_meta,
                "items": items.iter().map(meta::partial).collect::<Vec<_>>(),
            }),
            Output::Table => {
                let now = jiff::Timestamp::now();
                let printer = Printer::of(&self.target);
                let rows = items.iter().map(|o| row(&printer, o, self.params.include_object, now)).collect();
                table(&printer, rows, list_meta)
            }
        };
        Ok(json_response(StatusCode::OK, &body, &[]))
    }

    async fn create(&self, object: Value) -> Result<Response, ApiError> {
        self.create_managed(object, false).await
    }

    /// A create; `applied`: the object is a server-side apply's, its managed fields already set.
    async fn create_managed(&self, object: Value, applied: bool) -> Result<Response, ApiError> {
        let resource = self.resource();
        let kind = kinds::of(resource);
        let fresh = Fresh {
            now: jiff::Timestamp::now(),
            uid: uuid::Uuid::new_v4().to_string(),
            random: uuid::Uuid::new_v4().as_u64_pair().0,
        };
        let facts = admit::Facts {
            service_account_automounts: match kind.has(Hook::MountServiceAccountToken) {
                true => self.service_account_automounts(&object).await?,
                false => None,
            },
            priority_class: match kind.has(Hook::ResolvePriorityClass) {
                true => self.priority_class(&object).await?,
                false => None,
            },
            default_ingress_class: match kind.has(Hook::DefaultIngressClass) {
                true => self.default_ingress_class().await?,
                false => None,
            },
            default_storage_class: match kind.has(Hook::DefaultStorageClass) {
                true => self.default_storage_class().await?,
                false => None,
            },
            limit_ranges: match kind.has(Hook::LimitRanger) {
                true => self.limit_ranges().await?,
                false => vec![],
            },
            definitions: self.definitions(kind).await?,
        };
        let Admitted { mut object, warnings } = admit::create(&self.admission(), object, &fresh, &facts)?;
        if !applied {
            let now = meta::timestamp(fresh.now);
            apply::record_update(None, &mut object, &self.writer(&self.manager(), &now));
        }
        let mut warnings = warnings;
        warnings.extend(self.call_webhooks("CREATE", Some(&mut object), None).await?);
        if kind.has(Hook::SignCertificates) {
            crate::certificates::set_requester(&mut object, self.user.as_ref());
            crate::certificates::auto_approve(&mut object);
            crate::certificates::sign_if_approved(
                self.state.authority.as_deref(),
                self.state.signing_duration,
                &mut object,
            )?;
        }
        let name = meta::name(&object).to_string();
        let namespace = self.target.namespace.as_deref();
        crate::rbac::admit(self.user.as_ref(), self.state.rbac.as_ref(), resource, namespace, &object, None)?;
        if let Some(ns) = self.target.namespace.as_deref() {
            self.check_namespace(ns).await?;
        }
        if self.params.dry_run {
            if let Some(ns) = namespace {
                crate::quota::charges(&self.state.storage, resource, ns, &object, None, false).await?;
            }
            return Ok(json_response(StatusCode::CREATED, &object, &warnings));
        }
        let key = resource.key(self.target.namespace.as_deref().unwrap_or(""), &name);
        let reserved = if kind.has(Hook::AllocateServiceAddresses) {
            let owner = key.trim_start_matches("/registry/");
            allocator::allocate(&self.state.storage, &mut object, &self.state.service_cidr, owner).await?
        } else {
            vec![]
        };
        let revision = match self.store_new(&key, &object).await {
            Ok(r) => r,
            Err(e) => {
                allocator::release(&self.state.storage, &reserved).await;
                return Err(e);
            }
        };
        set_resource_version(&mut object, revision);
        self.refresh_custom(kind).await;
        Ok(json_response(StatusCode::CREATED, &object, &warnings))
    }

    /// Stores a new object with what it charges the namespace's quotas, in one transaction; decided again
    /// when a quota changed meanwhile.
    async fn store_new(&self, key: &str, object: &Value) -> Result<i64, ApiError> {
        let resource = self.resource();
        let name = meta::name(object);
        for attempt in 0..WRITE_ATTEMPTS {
            let charges = match self.target.namespace.as_deref() {
                Some(ns) => crate::quota::charges(&self.state.storage, resource, ns, object, None, attempt > 0).await?,
                None => vec![],
            };
            let stored = match charges.is_empty() {
                true => self.state.storage.create(key, encode(object)?).await,
                false => self.state.storage.create_with(key, encode(object)?, charges).await,
            };
            match stored {
                Err(StorageError::Conflict { .. }) => continue,
                other => return other.map_err(|e| store_error(resource, name, e)),
            }
        }
        Err(self.conflict())
    }

    /// The admission webhooks that match this request (none for the webhook configurations themselves, as
    /// in Kubernetes): mutating ones change `object` — which is then checked again — validating ones may
    /// refuse it. The warnings they gave.
    async fn call_webhooks(
        &self,
        operation: &str,
        object: Option<&mut Value>,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let hooks = self.state.webhooks.all();
        if hooks.is_empty() || self.resource().group == "admissionregistration.k8s.io" {
            return Ok(vec![]);
        }
        let namespace_labels = match (self.resource().kind, self.target.namespace.as_deref()) {
            ("Namespace", _) => object.as_deref().or(old).map(meta::labels),
            (_, Some(ns)) => {
                let key = format!("/registry/namespaces/{ns}");
                match self.read_own_first(&key).await {
                    Ok(stored) => Some(meta::labels(&self::object(&stored)?)),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let (user, groups) = match &self.user {
            Some(u) => (u.name.clone(), u.groups.clone()),
            None => ("system:apiserver".to_string(), vec!["system:masters".to_string()]),
        };
        let name = object.as_deref().or(old).map(meta::name).unwrap_or_default().to_string();
        let resource = self.resource();
        let equivalent_versions: Vec<&'static str> = match self.target.custom {
            Some(_) => (self.state.custom.catalog().resources())
                .filter(|r| r.group == resource.group && r.plural == resource.plural && r.version != resource.version)
                .map(|r| r.version)
                .collect(),
            None => vec![],
        };
        let attributes = keel_api::webhooks::Attributes {
            operation,
            resource: self.resource(),
            subresource: self.target.subresource.as_deref(),
            namespace: self.target.namespace.as_deref(),
            name: &name,
            object: None,
            old_object: old,
            namespace_labels,
            dry_run: self.params.dry_run,
            user: &user,
            groups: &groups,
            equivalent_versions: &equivalent_versions,
        };
        let before = object.as_deref().cloned();
        let mut changed = before.clone();
        let warnings = crate::webhooks::admit(&hooks, &self.state.storage, &attributes, &mut changed).await?;
        if let (Some(object), Some(mut changed)) = (object, changed) {
            if Some(&changed) != before.as_ref() {
                admit::revalidate(&self.admission(), &mut changed, old)?;
                *object = changed;
            }
        }
        Ok(warnings)
    }

    /// For [`Hook::AcceptNames`]: every CustomResourceDefinition, to check a definition's names against.
    async fn definitions(&self, kind: &kinds::Kind) -> Result<Vec<Value>, ApiError> {
        if !kind.has(Hook::AcceptNames) {
            return Ok(vec![]);
        }
        let page = self.state.storage.list(&self.resource().prefix(None), None, 0, 0).await;
        page.map_err(|e| self.store_error(e))?.items.iter().map(object).collect()
    }

    /// After a write of a CustomResourceDefinition or a webhook configuration: this master serves (or
    /// calls) what it now says before it answers.
    async fn refresh_custom(&self, kind: &kinds::Kind) {
        let refreshed = if kind.has(Hook::AcceptNames) {
            self.state.custom.refresh(&self.state.storage).await
        } else if self.resource().group == "admissionregistration.k8s.io" {
            self.state.webhooks.refresh(&self.state.storage).await
        } else {
            return;
        };
        if let Err(e) = refreshed {
            tracing::warn!(error = %e, resource = self.resource().plural, "cannot read the definitions again");
        }
    }

    /// New objects need their namespace, and not one being deleted. The namespace is read from this master's
    /// own store member; when it is not there yet (a follower a little behind a namespace just created), a
    /// linearizable read decides, as kube-apiserver's admission falls back to a live lookup on a cache miss.
    async fn check_namespace(&self, ns: &str) -> Result<(), ApiError> {
        let namespaces = resources::find("", "v1", "namespaces").ok_or(ApiError::UnknownPath)?;
        let key = namespaces.key("", ns);
        let stored = self.read_own_first(&key).await.map_err(|e| store_error(namespaces, ns, e))?;
        let v = object(&stored)?;
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::Forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                self.group_resource(),
                self.name()
            )));
        }
        Ok(())
    }

    /// `key` as this master's own store member has it, or, when it is not there (a follower a little behind
    /// an object just created), as a linearizable read finds it.
    async fn read_own_first(&self, key: &str) -> Result<Stored, StorageError> {
        match self.state.storage.read(key, Read::Serializable).await {
            Err(StorageError::NotFound) => self.state.storage.read(key, Read::Linearizable).await,
            other => other,
        }
    }

    /// For the ServiceAccount admission of a new pod: whether its service account (when it exists) lets its
    /// token be mounted; `None` when the cluster issues no tokens.
    async fn service_account_automounts(&self, pod: &Value) -> Result<Option<bool>, ApiError> {
        if self.state.service_accounts.is_none() {
            return Ok(None);
        }
        let account = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
        let key = format!("/registry/serviceaccounts/{}/{account}", self.target.namespace.as_deref().unwrap_or(""));
        Ok(Some(match self.state.storage.get(&key).await {
            Ok(stored) => object(&stored)?.get("automountServiceAccountToken").and_then(Value::as_bool).unwrap_or(true),
            Err(StorageError::NotFound) => true,
            Err(e) => return Err(self.store_error(e)),
        }))
    }

    /// For the Priority admission of a new pod: the PriorityClass it names (`Err(name)` if there is none of
    /// that name), or else the one marked `globalDefault`, if any.
    async fn priority_class(
        &self,
        pod: &Value,
    ) -> Result<Option<Result<kinds::scheduling::PodClass, String>>, ApiError> {
        let classes = resources::find("scheduling.k8s.io", "v1", "priorityclasses").ok_or(ApiError::UnknownPath)?;
        let of = |class: &Value| kinds::scheduling::PodClass {
            name: meta::name(class).to_string(),
            value: class.get("value").and_then(Value::as_i64).unwrap_or(0),
            preemption_policy: class.get("preemptionPolicy").and_then(Value::as_str).map(str::to_string),
        };
        match pod.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            // Read from this master's own member (a class just created is looked up again linearizably), as
            // the namespace check reads: pod creates pay no read index for it.
            Some(name) => match self.read_own_first(&classes.key("", name)).await {
                Ok(stored) => Ok(Some(Ok(of(&object(&stored)?)))),
                Err(StorageError::NotFound) => Ok(Some(Err(name.to_string()))),
                Err(e) => Err(store_error(classes, name, e)),
            },
            None => {
                let page = self.state.storage.list_read(&classes.prefix(None), None, 0, 0, Read::Serializable).await;
                let listed = page.map_err(|e| store_error(classes, "", e))?.items;
                for stored in &listed {
                    let class = object(stored)?;
                    if class.get("globalDefault").and_then(Value::as_bool) == Some(true) {
                        return Ok(Some(Ok(of(&class))));
                    }
                }
                Ok(None)
            }
        }
    }

    /// For the LimitRanger admission: the namespace's LimitRanges, as this master's own member has them.
    async fn limit_ranges(&self) -> Result<Vec<Value>, ApiError> {
        let Some(ns) = self.target.namespace.as_deref() else { return Ok(vec![]) };
        let ranges = resources::find("", "v1", "limitranges").ok_or(ApiError::UnknownPath)?;
        let page = self.state.storage.list_read(&ranges.prefix(Some(ns)), None, 0, 0, Read::Serializable).await;
        page.map_err(|e| store_error(ranges, "", e))?.items.iter().map(object).collect()
    }

    /// For the DefaultStorageClass admission of a new claim: the cluster's default StorageClass.
    async fn default_storage_class(&self) -> Result<Option<String>, ApiError> {
        let classes = resources::find("storage.k8s.io", "v1", "storageclasses").ok_or(ApiError::UnknownPath)?;
        let page = self.state.storage.list_read(&classes.prefix(None), None, 0, 0, Read::Serializable).await;
        let listed = page.map_err(|e| store_error(classes, "", e))?.items;
        let listed = listed.iter().map(object).collect::<Result<Vec<_>, _>>()?;
        Ok(kinds::storage::default_class(&listed))
    }

    /// For the DefaultIngressClass admission of a new Ingress: the cluster's default IngressClass.
    async fn default_ingress_class(&self) -> Result<Option<String>, ApiError> {
        let classes = resources::find("networking.k8s.io", "v1", "ingressclasses").ok_or(ApiError::UnknownPath)?;
        let page = self.state.storage.list_read(&classes.prefix(None), None, 0, 0, Read::Serializable).await;
        let listed = page.map_err(|e| store_error(classes, "", e))?.items;
        let listed = listed.iter().map(object).collect::<Result<Vec<_>, _>>()?;
        Ok(kinds::networking::default_class(&listed))
    }

    /// Who this call's write is recorded for.
    fn manager(&self) -> String {
        match (&self.params.field_manager, self.params.user_agent.as_str(), &self.user) {
            (Some(m), ..) => m.clone(),
            (None, "", Some(user)) => user.name.clone(),
            (None, agent, _) => agent.to_string(),
        }
    }

    /// This call's writer, for managed fields.
    fn writer<'a>(&'a self, manager: &'a str, now: &'a str) -> Writer<'a> {
        let shape = match &self.target.custom {
            Some(c) => Shape::Custom(Some(&c.schema)),
            None => Shape::Builtin(self.resource().kind),
        };
        Writer {
            manager,
            api_version: self.resource().api_version(),
            subresource: self.target.subresource.as_deref().unwrap_or(""),
            now,
            shape,
            status_subresource: self.resource().subresources.contains(&"status"),
        }
    }

    /// The admission request of this call.
    fn admission(&self) -> admit::Request<'_> {
        admit::Request {
            resource: self.resource(),
            namespace: self.target.namespace.as_deref(),
            field_validation: self.params.field_validation,
            custom: self.target.custom.as_deref(),
        }
    }

    /// `serviceaccounts/{name}/token`: a TokenRequest answered with a token for the service account,
    /// bound to the pod or secret it names (which must exist).
    async fn token_request(&self, body: Value) -> Result<Response, ApiError> {
        let keys = self.state.service_accounts.as_ref().ok_or(ApiError::Unavailable)?;
        let sa = object(&self.state.storage.get(&self.key()).await.map_err(|e| self.store_error(e))?)?;
        let bound = match body.pointer("/spec/boundObjectRef") {
            Some(r) if r.is_object() => {
                let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
                let name = r.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let plural = match kind.as_str() {
                    "Pod" => "pods",
                    "Secret" => "secrets",
                    _ => "",
                };
                let key = format!("/registry/{plural}/{}/{name}", self.target.namespace.as_deref().unwrap_or(""));
                let uid = match self.state.storage.get(&key).await {
                    Ok(stored) => object(&stored)?.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string),
                    Err(StorageError::NotFound) => None,
                    Err(e) => return Err(self.store_error(e)),
                };
                Some((kind, name, uid))
            }
            _ => None,
        };
        let answer = crate::service_accounts::token_request(keys, &sa, &body, bound, jiff::Timestamp::now())?;
        Ok(json_response(StatusCode::CREATED, &answer, &[]))
    }

    async fn get_scale(&self) -> Result<Response, ApiError> {
        let stored = self.state.storage.get(&self.key()).await.map_err(|e| self.store_error(e))?;
        Ok(json_response(StatusCode::OK, &self.scale_of(&object(&stored)?), &[]))
    }

    /// The Scale of an object: a workload's replicas, or where a custom resource's scale paths point.
    fn scale_of(&self, object: &Value) -> Value {
        match self.target.custom.as_ref().and_then(|c| c.scale.as_ref()) {
            Some(paths) => paths.scale(object),
            None => meta::scale(object),
        }
    }

    /// The object with the replicas `scale` asks for.
    fn scaled(&self, object: &Value, scale: &Value) -> Result<Value, ApiError> {
        match self.target.custom.as_ref().and_then(|c| c.scale.as_ref()) {
            Some(paths) => paths.apply(object, scale),
            None => meta::apply_scale(object, scale),
        }
    }

    /// PUT: the body replaces the object (or its status, or its replicas through a Scale).
    async fn update(&self, body: Value) -> Result<Response, ApiError> {
        let precondition = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
            .map(request::parse_revision)
            .transpose()?;
        self.write(precondition, false, |call, old| match call.target.subresource.as_deref() {
            Some("scale") => {
                meta::check_type(call.resource(), &body, "Scale")?;
                call.scaled(old, &body)
            }
            Some("finalize") => {
                let mut new = old.clone();
                new["spec"]["finalizers"] = body.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
                Ok(new)
            }
            _ => Ok(body.clone()),
        })
        .await
    }

    /// PATCH: JSON patch, JSON merge patch or strategic merge patch, applied to the current object (or
    /// its Scale) and stored as an update.
    async fn patch(&self, media: &str, body: &[u8]) -> Result<Response, ApiError> {
        let patch = match media {
            "application/json-patch+json" | "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                request::parse_json(body)?
            }
            "application/apply-patch+yaml" => return self.server_side_apply(body).await,
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other})"
                )))
            }
        };
        let scale = self.target.subresource.as_deref() == Some("scale");
        if self.target.custom.is_some() && !scale && media == "application/strategic-merge-patch+json" {
            return Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                    .into(),
            ));
        }
        let kind = if scale { "Scale" } else { self.resource().kind };
        let media = media.to_string();
        self.write(None, false, |call, old| {
            let base = if scale { call.scale_of(old) } else { old.clone() };
            let patched = apply_patch(&media, &base, &patch, kind)?;
            let before = base.pointer("/metadata/resourceVersion");
            if patched.pointer("/metadata/resourceVersion").is_some_and(|rv| Some(rv) != before) {
                return Err(call.conflict());
            }
            if scale {
                call.scaled(old, &patched)
            } else {
                Ok(patched)
            }
        })
        .await
    }

    /// PATCH with `application/apply-patch+yaml`: the configuration merged into the object (created if
    /// there is none) under the request's field manager, conflicts refused unless `force`.
    async fn server_side_apply(&self, body: &[u8]) -> Result<Response, ApiError> {
        let Some(manager) = self.params.field_manager.clone() else {
            return Err(ApiError::Invalid {
                kind: "PatchOptions".into(),
                resource: keel_api::status::GroupResource { group: "meta.k8s.io".into(), resource: "".into() },
                name: String::new(),
                causes: vec![Cause {
                    kind: keel_api::validation::CauseType::Required,
                    field: "fieldManager".into(),
                    message: "Required value: is required for apply patch".into(),
                }],
            });
        };
        if self.target.subresource.as_deref().is_some_and(|s| s != "status") {
            return Err(ApiError::MethodNotAllowed);
        }
        let mut config = apply::parse_config(body)?;
        meta::check_type(self.resource(), &config, self.resource().kind)?;
        match meta::str_at(&config, &["metadata", "name"]) {
            Some(n) if !n.is_empty() && n != self.name() => {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    self.name()
                )))
            }
            _ => config["metadata"]["name"] = json!(self.name()),
        }
        let now = meta::timestamp(jiff::Timestamp::now());
        let force = self.params.force;
        let exists = match self.state.storage.get(&self.key()).await {
            Ok(_) => true,
            Err(StorageError::NotFound) => false,
            Err(e) => return Err(self.store_error(e)),
        };
        if !exists && self.target.subresource.is_none() {
            let object = apply::new_object(&config, &self.writer(&manager, &now));
            match self.create_managed(object, true).await {
                Err(ApiError::AlreadyExists { .. }) => {} // created meanwhile: apply to it
                other => return other,
            }
        }
        self.write(None, true, |call, old| {
            let writer = call.writer(&manager, &now);
            apply::apply(Some(old), &config, &writer, force)
                .map_err(|conflicts| apply::conflict_error(call.resource(), call.name(), &conflicts))
        })
        .await
    }

    /// The read-modify-write cycle of updates and patches: `change` turns the current object (with its
    /// resourceVersion) into the requested one; the result is checked and stored if the object is still at
    /// the revision read, else read again (unless the request named a resourceVersion: then 409).
    async fn write(
        &self,
        precondition: Option<i64>,
        applied: bool,
        mut change: impl FnMut(&Call, &Value) -> Result<Value, ApiError>,
    ) -> Result<Response, ApiError> {
        let resource = self.resource();
        let key = self.key();
        let sub = match self.target.subresource.as_deref() {
            Some("status") => Some("status"),
            Some("approval") => Some("approval"),
            _ => None,
        };
        for attempt in 0..WRITE_ATTEMPTS {
            let stored = self.state.storage.get(&key).await.map_err(|e| self.store_error(e))?;
            if precondition.is_some_and(|rv| rv != stored.mod_revision) {
                return Err(self.conflict());
            }
            let current = object(&stored)?;
            let requested = change(self, &current)?;
            let mut old = current.clone();
            if let Some(m) = old.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let kind = kinds::of(resource);
            let facts = admit::Facts { definitions: self.definitions(kind).await?, ..Default::default() };
            let now = jiff::Timestamp::now();
            let Admitted { object: mut new, mut warnings } =
                admit::update(&self.admission(), sub, &old, requested, &facts, now)?;
            if new == old {
                return Ok(self.updated(&current, &warnings));
            }
            if !applied {
                let now = meta::timestamp(now);
                apply::record_update(Some(&old), &mut new, &self.writer(&self.manager(), &now));
            }
            warnings.extend(self.call_webhooks("UPDATE", Some(&mut new), Some(&old)).await?);
            let namespace = self.target.namespace.as_deref();
            crate::rbac::admit(self.user.as_ref(), self.state.rbac.as_ref(), resource, namespace, &new, Some(&old))?;
            if kind.has(Hook::SignCertificates) {
                crate::certificates::sign_if_approved(
                    self.state.authority.as_deref(),
                    self.state.signing_duration,
                    &mut new,
                )?;
            }
            if self.params.dry_run {
                set_resource_version(&mut new, stored.mod_revision);
                return Ok(self.updated(&new, &warnings));
            }
            let charges = match self.target.namespace.as_deref() {
                Some(ns) if sub.is_none() && !meta::deletion_complete(&new) => {
                    crate::quota::charges(&self.state.storage, resource, ns, &new, Some(&old), attempt > 0).await?
                }
                _ => vec![],
            };
            let result = if meta::deletion_complete(&new) {
                self.state.storage.delete(&key, Some(stored.mod_revision)).await.map(|(_, rev)| rev)
            } else if charges.is_empty() {
                self.state.storage.update(&key, encode(&new)?, stored.mod_revision).await
            } else {
                self.state.storage.update_with(&key, encode(&new)?, stored.mod_revision, charges).await
            };
            match result {
                Ok(revision) => {
                    set_resource_version(&mut new, revision);
                    self.refresh_custom(kind).await;
                    return Ok(self.updated(&new, &warnings));
                }
                // Only a quota changed: decide again, whatever the request's precondition.
                Err(StorageError::Conflict { current }) if current == stored.mod_revision => continue,
                Err(StorageError::Conflict { .. }) if precondition.is_none() => continue,
                Err(StorageError::Conflict { .. }) => return Err(self.conflict()),
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Err(self.conflict())
    }

    fn updated(&self, object: &Value, warnings: &[String]) -> Response {
        let body =
            if self.target.subresource.as_deref() == Some("scale") { self.scale_of(object) } else { object.clone() };
        json_response(StatusCode::OK, &body, warnings)
    }

    async fn delete(&self, body: &[u8]) -> Result<Response, ApiError> {
        let opts = request::delete_options(&self.params, body)?;
        let resource = self.resource();
        let key = self.key();
        for _ in 0..WRITE_ATTEMPTS {
            let stored = self.state.storage.get(&key).await.map_err(|e| self.store_error(e))?;
            let current = object(&stored)?;
            let uid = meta::str_at(&current, &["metadata", "uid"]).unwrap_or("").to_string();
            if let Some(want) = &opts.precondition_uid {
                if *want != uid {
                    return Err(self.precondition_failed(format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    )));
                }
            }
            if let Some(rv) = opts.precondition_rv {
                if rv != stored.mod_revision {
                    return Err(self.precondition_failed(format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        stored.mod_revision
                    )));
                }
            }
            if current.pointer("/metadata/deletionTimestamp").is_none() {
                self.call_webhooks("DELETE", None, Some(&current)).await?;
            }
            let now = jiff::Timestamp::now();
            let kind = kinds::of(resource);
            let decision = if kind.has(Hook::FinalizeNamespace) {
                namespace_deletion(&current, now)
            } else if kind.has(Hook::CleanUpCustomObjects) {
                let marked = kinds::apiextensions::terminating(&current, &meta::timestamp(now));
                meta::delete(&marked, resource, opts.grace_period, opts.propagation, now)
            } else {
                meta::delete(&current, resource, opts.grace_period, opts.propagation, now)
            };
            let result = match &decision {
                _ if opts.dry_run => Ok(stored.mod_revision),
                Deletion::Now => self.state.storage.delete(&key, Some(stored.mod_revision)).await.map(|(_, r)| r),
                Deletion::Mark(marked) => self.state.storage.update(&key, encode(marked)?, stored.mod_revision).await,
                Deletion::Pending => Ok(stored.mod_revision),
            };
            match result {
                Ok(revision) => {
                    if kind.has(Hook::AllocateServiceAddresses) && decision == Deletion::Now && !opts.dry_run {
                        allocator::release(&self.state.storage, &allocator::held(&current)).await;
                    }
                    self.refresh_custom(kind).await;
                    return Ok(match decision {
                        Deletion::Now if kind.has(Hook::GracefulDelete) => json_response(StatusCode::OK, &current, &[]),
                        Deletion::Now => json_response(StatusCode::OK, &success(resource, self.name(), &uid), &[]),
                        Deletion::Mark(mut marked) => {
                            set_resource_version(&mut marked, revision);
                            json_response(StatusCode::ACCEPTED, &marked, &[])
                        }
                        Deletion::Pending => json_response(StatusCode::ACCEPTED, &current, &[]),
                    });
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Err(self.conflict())
    }

    fn precondition_failed(&self, detail: String) -> ApiError {
        ApiError::Conflict { resource: self.group_resource(), name: self.name().to_string(), detail }
    }

    /// Deletes every object of the collection that the selectors pick, as single deletes would.
    async fn delete_collection(&self, body: &[u8]) -> Result<Response, ApiError> {
        let (items, revision, _, _) = self.select().await?;
        let mut deleted = Vec::new();
        for item in items {
            let name = meta::name(&item).to_string();
            let target = Target { name: Some(name), ..self.target.clone() };
            let call = Call {
                state: self.state.clone(),
                target,
                params: Params { ..self.params_for_item() },
                user: self.user.clone(),
            };
            match call.delete(body).await {
                Ok(_) => deleted.push(item),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": format!("{}List", self.resource().kind),
            "apiVersion": self.resource().api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        });
        Ok(json_response(StatusCode::OK, &list, &[]))
    }

    fn params_for_item(&self) -> Params {
        Params {
            grace_period: self.params.grace_period,
            propagation: self.params.propagation,
            dry_run: self.params.dry_run,
            ..Params::default()
        }
    }

    /// pods/{name}/eviction (a policy/v1 Eviction): the pod deleted, with the eviction's delete options, once
    /// the PodDisruptionBudget that picks it (if any) has a disruption to give, which is used up first (a
    /// compare-and-swap of the budget's status, so concurrent evictions never take the same one); else 429.
    async fn evict(&self, eviction: Value) -> Result<Response, ApiError> {
        let named = meta::str_at(&eviction, &["metadata", "name"]).unwrap_or_default();
        if !named.is_empty() && named != self.name() {
            return Err(ApiError::BadRequest("name in URL does not match name in Eviction object".into()));
        }
        let budgets = resources::find("policy", "v1", "poddisruptionbudgets").ok_or(ApiError::UnknownPath)?;
        let namespace = self.target.namespace.as_deref().unwrap_or_default();
        let mut used = false;
        for _ in 0..WRITE_ATTEMPTS {
            let pod = object(&self.state.storage.get(&self.key()).await.map_err(|e| self.store_error(e))?)?;
            let page = self.state.storage.list(&budgets.prefix(Some(namespace)), None, 0, 0).await;
            let stored = page.map_err(|e| self.store_error(e))?.items;
            let listed = stored.iter().map(object).collect::<Result<Vec<_>, _>>()?;
            let Some(i) = kinds::policy::eviction(&pod, &listed)? else {
                used = true;
                break;
            };
            let now = meta::timestamp(jiff::Timestamp::now());
            let taken = kinds::policy::use_disruption(&listed[i], self.name(), &now);
            match self.state.storage.update(&stored[i].key, encode(&taken)?, stored[i].mod_revision).await {
                Ok(_) => {
                    used = true;
                    break;
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(budgets, meta::name(&taken), e)),
            }
        }
        if !used {
            return Err(self.conflict());
        }
        let options = match eviction.get("deleteOptions").filter(|o| o.is_object()) {
            Some(o) => serde_json::to_vec(o).map_err(|e| ApiError::Internal(e.to_string()))?,
            None => Vec::new(),
        };
        self.delete(&options).await?;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        Ok(json_response(StatusCode::CREATED, &status, &[]))
    }

    /// pods/{name}/binding: assigns the pod to a node, once.
    async fn bind(&self, binding: Value) -> Result<Response, ApiError> {
        let node = meta::str_at(&binding, &["target", "name"]).unwrap_or("").to_string();
        if node.is_empty() {
            return Err(self.invalid(self.name(), vec![Cause::required("target.name")]));
        }
        let pod = self.name().to_string();
        let key = self.key();
        for _ in 0..WRITE_ATTEMPTS {
            let stored = self.state.storage.get(&key).await.map_err(|e| self.store_error(e))?;
            let mut v = object(&stored)?;
            if let Some(existing) = meta::str_at(&v, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
                return Err(self.precondition_failed(format!("pod {pod} is already assigned to node {existing:?}")));
            }
            if v.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(
                    self.precondition_failed(format!("pod {pod} is being deleted, cannot be assigned to a host"))
                );
            }
            v["spec"]["nodeName"] = json!(node);
            let now = meta::timestamp(jiff::Timestamp::now());
            let conditions = v["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conditions.push(
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}),
            );
            v["status"]["conditions"] = json!(conditions);
            match self.state.storage.update(&key, encode(&v)?, stored.mod_revision).await {
                Ok(_) => {
                    let status =
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                    return Ok(json_response(StatusCode::CREATED, &status, &[]));
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Err(self.conflict())
    }
}

/// A namespace's delete marks it Terminating; its contents go, then it does (`crate::namespaces`).
fn namespace_deletion(ns: &Value, now: jiff::Timestamp) -> Deletion {
    // The namespace controller empties a Terminating namespace and then removes the `kubernetes`
    // finalizer from spec.finalizers; with none there (and no metadata finalizers), it goes now.
    let done = meta::unheld(ns);
    if ns.pointer("/metadata/deletionTimestamp").is_some() {
        return if done { Deletion::Now } else { Deletion::Pending };
    }
    if done {
        return Deletion::Now;
    }
    let mut marked = ns.clone();
    marked["metadata"]["deletionTimestamp"] = json!(meta::timestamp(now));
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    marked["status"]["phase"] = json!("Terminating");
    Deletion::Mark(marked)
}

pub(crate) fn store_error(resource: &Resource, name: &str, e: StorageError) -> ApiError {
    let gr: GroupResource = resource.into();
    match e {
        StorageError::NotFound => ApiError::NotFound { resource: gr, name: name.to_string() },
        StorageError::AlreadyExists => ApiError::AlreadyExists { resource: gr, name: name.to_string() },
        StorageError::Conflict { .. } => ApiError::Conflict {
            resource: gr,
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        },
        StorageError::Compacted { requested } => ApiError::Gone { requested, oldest: requested },
        StorageError::Fenced { fence, current } => ApiError::Conflict {
            resource: gr,
            name: name.to_string(),
            detail: format!(
                "this write was fenced: it was made by the control-loop leader of fence {fence}, \
                 and the leader key is now at revision {current}"
            ),
        },
        StorageError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            ApiError::Unavailable
        }
        StorageError::Refused { code, message } => {
            tracing::info!(?code, %message, "the store refused a request");
            ApiError::StoreRefused(message)
        }
        StorageError::Internal(detail) => ApiError::Internal(detail),
    }
}

/// Applies a patch of media type `media` to `base` (an object of `kind`).
fn apply_patch(media: &str, base: &Value, patch: &Value, kind: &str) -> Result<Value, ApiError> {
    match media {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("the JSON patch is not valid: {e}")))?;
            let mut out = base.clone();
            json_patch::patch(&mut out, &ops)
                .map_err(|e| ApiError::BadRequest(format!("the JSON patch could not be applied: {e}")))?;
            Ok(out)
        }
        "application/merge-patch+json" => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest("a JSON merge patch must be an object".into()));
            }
            let mut out = base.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        _ => strategic_merge::apply(base, patch, kind)
            .map_err(|e| ApiError::BadRequest(format!("the strategic merge patch could not be applied: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_under_the_prefix() {
        let prefix = "/registry/configmaps/default/";
        let t = continue_token(42, "/registry/configmaps/default/b\0", prefix);
        assert_eq!(parse_continue(&t, prefix).unwrap(), (42, "/registry/configmaps/default/b\0".to_string()));
        assert_eq!(parse_continue("!!", prefix).unwrap_err().code(), 400);
        let evil = base64::engine::general_purpose::URL_SAFE.encode(r#"{"rv":3,"start":"../../secrets/x"}"#);
        assert_eq!(parse_continue(&evil, prefix).unwrap_err().code(), 400);
    }

    #[test]
    fn patches() {
        let base = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}});
        let merged =
            apply_patch("application/merge-patch+json", &base, &json!({"data": {"k": null, "n": "m"}}), "ConfigMap")
                .unwrap();
        assert_eq!(merged["data"], json!({"n": "m"}));
        let patched = apply_patch(
            "application/json-patch+json",
            &base,
            &json!([{"op": "replace", "path": "/data/k", "value": "w"}]),
            "ConfigMap",
        )
        .unwrap();
        assert_eq!(patched["data"]["k"], "w");
        let failed = apply_patch(
            "application/json-patch+json",
            &base,
            &json!([{"op": "test", "path": "/data/k", "value": "z"}]),
            "ConfigMap",
        );
        assert_eq!(failed.unwrap_err().code(), 400);
        assert_eq!(
            apply_patch("application/merge-patch+json", &base, &json!([1]), "ConfigMap").unwrap_err().code(),
            400
        );
    }
}
