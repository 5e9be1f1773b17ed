//! `metrics.k8s.io/v1beta1`, what metrics-server serves and `kubectl top` and the HorizontalPodAutoscaler
//! read, served by the masters themselves: `nodes` and `pods` (all, in a namespace, or by name; label and
//! field selectors). Nothing is stored: each request reads the Nodes or Pods it names and asks their
//! nodes' agents for their summaries (`/stats/summary`, reached as `node_proxy` reaches agents: the Node's
//! InternalIP and daemonEndpoints port, the API server's client certificate, the agent's certificate
//! pinned by its Node's annotation), all at once. An agent gives CPU as a rate over its last sampling
//! window, so the answer needs no second scrape. Nodes whose agent does not answer, and pods without
//! complete figures yet, are left out, as metrics-server leaves them out; a get of one is a 404. The
//! objects' shape is `keel_api::resource_metrics`'.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt as _;
use keel_api::meta;
use keel_api::resource_metrics::{self as metrics, Summary};
use keel_api::resources;
use keel_api::selector::{FieldSelector, LabelSelector};
use keel_api::status::{ApiError, GroupResource};
use serde_json::Value;

use crate::node_proxy::{agent_of, NodeClient};
use crate::{AppState, Failure};

/// How long one agent may take to give its summary.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest summary read from an agent.
const MAX_SUMMARY: usize = 32 << 20;

/// What a request addresses.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Nodes(Option<&'a str>),
    /// Pods of a namespace (`None`: every namespace), or one by name.
    Pods(Option<&'a str>, Option<&'a str>),
}

fn parse(rest: &str) -> Option<Request<'_>> {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["nodes"] => Some(Request::Nodes(None)),
        ["nodes", name] => Some(Request::Nodes(Some(name))),
        ["pods"] => Some(Request::Pods(None, None)),
        ["namespaces", ns, "pods"] => Some(Request::Pods(Some(ns), None)),
        ["namespaces", ns, "pods", name] => Some(Request::Pods(Some(ns), Some(name))),
        _ => None,
    }
}

/// The selectors of `?labelSelector=&fieldSelector=`.
fn selectors(query: Option<&str>) -> Result<(Option<LabelSelector>, Option<FieldSelector>), ApiError> {
    let mut labels = None;
    let mut fields = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "labelSelector" => {
                labels = Some(
                    LabelSelector::parse(&v)
                        .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?,
                )
            }
            "fieldSelector" => {
                fields = Some(
                    FieldSelector::parse(&v)
                        .map_err(|e| ApiError::BadRequest(format!("invalid field selector: {e}")))?,
                )
            }
            _ => {}
        }
    }
    Ok((labels, fields))
}

fn selected(object: &Value, labels: &Option<LabelSelector>, fields: &Option<FieldSelector>) -> bool {
    labels.as_ref().is_none_or(|s| s.matches(&meta::labels(object)))
        && fields.as_ref().is_none_or(|s| s.matches(|f| meta::field(object, f)))
}

fn not_found(kind: &str, name: &str) -> ApiError {
    let resource = format!("{}metrics", kind.to_ascii_lowercase());
    ApiError::NotFound { resource: GroupResource { group: metrics::GROUP.into(), resource }, name: name.into() }
}

/// `GET /apis/metrics.k8s.io/v1beta1/{*rest}`.
pub(crate) async fn serve(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(&state, &rest, query.as_deref()).await.unwrap_or_else(|e| Failure(e).into_response())
}

async fn answer(state: &AppState, rest: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let request = parse(rest).ok_or(ApiError::UnknownPath)?;
    let (labels, fields) = selectors(query)?;
    let now = jiff::Timestamp::now().to_string();
    match request {
        Request::Nodes(name) => {
            let nodes = match name {
                Some(n) => vec![crate::node_proxy::read_object(state, "nodes", "", n)
                    .await
                    .map_err(|_| not_found("Node", n))?],
                None => list(state, "nodes", None).await?,
            };
            let nodes: Vec<Value> = nodes.into_iter().filter(|n| selected(n, &labels, &fields)).collect();
            let names: Vec<String> = nodes.iter().map(name_of).collect();
            let summaries = summaries(state, &nodes).await;
            let items: Vec<Value> = nodes
                .iter()
                .zip(&names)
                .filter_map(|(node, n)| metrics::node_metrics(node, &summaries.get(n)?.node, &now))
                .collect();
            match name {
                Some(n) => {
                    items.into_iter().next().map(|m| Json(m).into_response()).ok_or_else(|| not_found("Node", n))
                }
                None => Ok(Json(metrics::list("NodeMetrics", items)).into_response()),
            }
        }
        Request::Pods(namespace, name) => {
            let pods = match (namespace, name) {
                (Some(ns), Some(n)) => {
                    vec![crate::node_proxy::read_object(state, "pods", ns, n).await.map_err(|_| not_found("Pod", n))?]
                }
                (ns, _) => list(state, "pods", ns).await?,
            };
            let pods: Vec<Value> = pods.into_iter().filter(|p| selected(p, &labels, &fields)).collect();
            let mut node_names: Vec<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
            node_names.sort_unstable();
            node_names.dedup();
            let mut nodes = Vec::new();
            for n in node_names {
                if let Ok(node) = crate::node_proxy::read_object(state, "nodes", "", n).await {
                    nodes.push(node);
                }
            }
            let summaries = summaries(state, &nodes).await;
            let items: Vec<Value> = pods
                .iter()
                .filter_map(|pod| {
                    let summary = summaries.get(pod["spec"]["nodeName"].as_str()?)?;
                    let uid = pod["metadata"]["uid"].as_str()?;
                    let stats = summary.pods.iter().find(|p| p.pod_ref.uid == uid)?;
                    metrics::pod_metrics(pod, stats, &now)
                })
                .collect();
            match name {
                Some(n) => items.into_iter().next().map(|m| Json(m).into_response()).ok_or_else(|| not_found("Pod", n)),
                None => Ok(Json(metrics::list("PodMetrics", items)).into_response()),
            }
        }
    }
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

async fn list(state: &AppState, plural: &str, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let resource =
        resources::find("", "v1", plural).ok_or_else(|| ApiError::Internal(format!("no resource {plural}")))?;
    let page = state
        .storage
        .list(&resource.prefix(namespace), None, 0, 0)
        .await
        .map_err(|e| crate::resources::store_error(resource, "", e))?;
    page.items.iter().map(crate::resources::object).collect()
}

/// The summaries of the agents of `nodes` that answered, by node name.
async fn summaries(state: &AppState, nodes: &[Value]) -> BTreeMap<String, Summary> {
    let Some(client) = state.node_client.as_deref() else { return BTreeMap::new() };
    let calls = nodes.iter().map(|node| async move {
        let name = name_of(node);
        match tokio::time::timeout(AGENT_TIMEOUT, summary(client, node)).await {
            Ok(Ok(s)) => Some((name, s)),
            Ok(Err(e)) => {
                tracing::debug!(node = %name, error = %e, "no resource summary from the node's agent");
                None
            }
            Err(_) => {
                tracing::debug!(node = %name, "the node's agent gave no resource summary in time");
                None
            }
        }
    });
    futures::future::join_all(calls).await.into_iter().flatten().collect()
}

async fn summary(client: &NodeClient, node: &Value) -> Result<Summary, String> {
    let agent = agent_of(node).map_err(|e| format!("{e:?}"))?;
    let response = client.get(&agent, metrics::SUMMARY_PATH).await.map_err(|e| format!("{e:?}"))?;
    if !response.status().is_success() {
        return Err(format!("the agent answered {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_SUMMARY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_metrics_api() {
        assert_eq!(parse("nodes"), Some(Request::Nodes(None)));
        assert_eq!(parse("nodes/n1"), Some(Request::Nodes(Some("n1"))));
        assert_eq!(parse("pods"), Some(Request::Pods(None, None)));
        assert_eq!(parse("namespaces/default/pods"), Some(Request::Pods(Some("default"), None)));
        assert_eq!(parse("namespaces/default/pods/web"), Some(Request::Pods(Some("default"), Some("web"))));
        assert_eq!(parse("namespaces/default"), None);
        assert_eq!(parse("nodes/n1/status"), None);
    }

    #[test]
    fn selectors_and_the_not_found_wording() {
        let (labels, fields) = selectors(Some("labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dx")).unwrap();
        let pod = serde_json::json!({"metadata": {"name": "x", "labels": {"app": "web"}}});
        assert!(selected(&pod, &labels, &fields));
        let other = serde_json::json!({"metadata": {"name": "y", "labels": {"app": "web"}}});
        assert!(!selected(&other, &labels, &fields));
        assert!(selectors(Some("labelSelector=a%20in")).is_err());
        assert_eq!(not_found("Pod", "web").to_string(), "podmetrics.metrics.k8s.io \"web\" not found");
    }
}
