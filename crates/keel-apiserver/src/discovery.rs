//! `/version` and discovery (`/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`),
//! from `keel_api::resources`: what kubectl asks first, to pick its client version and learn the
//! resources, their short names and verbs.

use axum::extract::{Path, State};
use axum::Json;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use keel_api::resources::{Resource, RESOURCES, REVIEWS, VERBS};

/// The group versions discovery lists: those of stored resources, then the reviews' groups and the
/// resource metrics API's.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out = keel_api::resources::group_versions();
    for r in REVIEWS.iter().chain(keel_api::resource_metrics::RESOURCES) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
use keel_api::status::ApiError;

use crate::{AppState, Failure, KUBERNETES_MINOR};

pub async fn version() -> Json<Info> {
    Json(Info {
        major: "1".into(),
        minor: KUBERNETES_MINOR.into(),
        git_version: format!("v1.{KUBERNETES_MINOR}.0-keel.{}", env!("CARGO_PKG_VERSION")),
        git_commit: String::new(),
        git_tree_state: "clean".into(),
        build_date: String::new(),
        go_version: String::new(),
        compiler: "rustc".into(),
        platform: format!("{}/{}", std::env::consts::OS, go_arch()),
        ..Default::default()
    })
}

/// The architecture as Go (and so kubectl) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn core_versions(State(state): State<AppState>) -> Json<APIVersions> {
    Json(APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: state.advertise.clone(),
        }],
    })
}

/// A group with its versions, the preferred one first.
fn api_group(name: &str, versions: &[&str]) -> APIGroup {
    let versions: Vec<GroupVersionForDiscovery> = versions
        .iter()
        .map(|v| GroupVersionForDiscovery { group_version: format!("{name}/{v}"), version: v.to_string() })
        .collect();
    APIGroup {
        name: name.into(),
        preferred_version: versions.first().cloned(),
        versions,
        server_address_by_client_cidrs: None,
    }
}

/// Every group served: the built-in ones, then the custom ones.
fn all_groups(state: &AppState) -> Vec<APIGroup> {
    let builtin = group_versions().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, v)| api_group(g, &[v]));
    let custom =
        state.custom.catalog().groups().into_iter().map(|(g, versions)| api_group(g, &versions)).collect::<Vec<_>>();
    builtin.chain(custom).collect()
}

pub async fn groups(State(state): State<AppState>) -> Json<APIGroupList> {
    Json(APIGroupList { groups: all_groups(&state) })
}

pub async fn group(State(state): State<AppState>, Path(group): Path<String>) -> Result<Json<APIGroup>, Failure> {
    let find = |state: &AppState| all_groups(state).into_iter().find(|g| g.name == group);
    match find(&state) {
        Some(g) => Ok(Json(g)),
        None => {
            state.custom.refresh_before_not_found(&state.storage, &group).await;
            find(&state).map(Json).ok_or_else(|| ApiError::UnknownPath.into())
        }
    }
}

pub async fn core_resources() -> Json<APIResourceList> {
    Json(resource_list("", "v1"))
}

pub async fn group_resources(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
) -> Result<Json<APIResourceList>, Failure> {
    if group.is_empty() {
        return Err(ApiError::UnknownPath.into());
    }
    if group_versions().contains(&(group.as_str(), version.as_str())) {
        return Ok(Json(resource_list(&group, &version)));
    }
    let custom = |state: &AppState| {
        let catalog = state.custom.catalog();
        let resources: Vec<APIResource> =
            catalog.resources().filter(|r| r.group == group && r.version == version).flat_map(entries).collect();
        (!resources.is_empty()).then(|| APIResourceList { group_version: format!("{group}/{version}"), resources })
    };
    if let Some(list) = custom(&state) {
        return Ok(Json(list));
    }
    state.custom.refresh_before_not_found(&state.storage, &group).await;
    custom(&state).map(Json).ok_or_else(|| ApiError::UnknownPath.into())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A resource and its subresources, as discovery lists them.
fn entries(r: &Resource) -> Vec<APIResource> {
    let main = APIResource {
        name: r.plural.into(),
        singular_name: r.singular.into(),
        namespaced: r.namespaced,
        kind: r.kind.into(),
        verbs: strings(&VERBS),
        short_names: (!r.short_names.is_empty()).then(|| strings(r.short_names)),
        categories: (!r.categories.is_empty()).then(|| strings(r.categories)),
        ..Default::default()
    };
    let subs = r.subresources.iter().map(|sub| {
        let (kind, verbs): (&str, &[&str]) = match *sub {
            "scale" => ("Scale", &["get", "patch", "update"]),
            "binding" => ("Binding", &["create"]),
            "log" => ("Pod", &["get"]),
            "exec" => ("PodExecOptions", &["create", "get"]),
            "portforward" => ("PodPortForwardOptions", &["create", "get"]),
            "finalize" => (r.kind, &["update"]),
            "token" => ("TokenRequest", &["create"]),
            "eviction" => ("Eviction", &["create"]),
            _ => (r.kind, &["get", "patch", "update"]),
        };
        APIResource {
            name: format!("{}/{sub}", r.plural),
            singular_name: String::new(),
            namespaced: r.namespaced,
            kind: kind.into(),
            group: match *sub {
                "scale" => Some("autoscaling".to_string()),
                "token" => Some("authentication.k8s.io".to_string()),
                "eviction" => Some("policy".to_string()),
                _ => None,
            },
            version: matches!(*sub, "scale" | "token" | "eviction").then(|| "v1".to_string()),
            verbs: strings(verbs),
            ..Default::default()
        }
    });
    std::iter::once(main).chain(subs).collect()
}

fn resource_list(group: &str, version: &str) -> APIResourceList {
    let mut resources: Vec<APIResource> =
        RESOURCES.iter().filter(|r| r.group == group && r.version == version).flat_map(entries).collect();
    resources.extend(
        REVIEWS
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| APIResource { verbs: strings(&["create"]), ..entries(r).remove(0) }),
    );
    resources.extend(
        keel_api::resource_metrics::RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| APIResource { verbs: strings(keel_api::resource_metrics::VERBS), ..entries(r).remove(0) }),
    );
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    APIResourceList { group_version, resources }
}
