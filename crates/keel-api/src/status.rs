//! Errors as the Kubernetes API reports them: an HTTP code and a `Status` object (reason, message,
//! details with the causes of a 422), worded as kube-apiserver words them, so that kubectl and the client
//! libraries show users what they are used to. Internal errors get a generic message; their detail belongs
//! in the server's log, not in the response.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusCause, StatusDetails};

use crate::resources::Resource;
use crate::validation::Cause;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} {name:?} not found")]
    NotFound { resource: GroupResource, name: String },
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: GroupResource, name: String },
    /// An update or delete whose resourceVersion (or precondition) no longer matches.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {detail}")]
    Conflict { resource: GroupResource, name: String, detail: String },
    /// A server-side apply that would change fields other managers manage: the causes are (reason,
    /// message, field) triples.
    #[error("{}", .0.message)]
    ApplyConflict(Box<FieldConflicts>),
    /// An admission webhook's refusal (its code, at least 400, and reason), or its failure to answer.
    #[error("{message}")]
    Webhook { code: u16, reason: String, message: String },
    #[error("{}", invalid_message(kind, resource, name, causes))]
    Invalid { kind: String, resource: GroupResource, name: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    /// Refused for what the object or its namespace is (a namespace being terminated, say).
    #[error("{0}")]
    Forbidden(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 405 for a reason of the object's (a create of a custom object whose definition is being deleted).
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A watch or list from a revision that was compacted away (410; clients relist).
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: i64, oldest: i64 },
    #[error("the request is too large")]
    TooLarge,
    #[error("the server could not find the requested resource")]
    UnknownPath,
    #[error("the server is currently unable to handle the request")]
    Unavailable,
    /// Refused for now, to be tried again (an eviction a disruption budget does not allow): the causes are
    /// (reason, message) pairs.
    #[error("{message}")]
    TooManyRequests { message: String, causes: Vec<(String, String)> },
    #[error(
        "the server was unable to return a response in the time allotted, but may still be processing the request"
    )]
    Timeout,
    /// The detail is for the server's log; the client sees a generic message.
    #[error("Internal error occurred: the server could not complete the request")]
    Internal(String),
    /// The store refused the request for what it is ("etcdserver: request is too large"). kube-apiserver
    /// passes such an etcd error through as it is: a 500 whose message is etcd's, with no reason
    /// (`responsewriters.ErrorToAPIStatus` on an error that is not a Status).
    #[error("{0}")]
    StoreRefused(String),
}

/// What an [`ApiError::ApplyConflict`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflicts {
    pub resource: GroupResource,
    pub name: String,
    pub message: String,
    /// (reason, message, field) of each conflicting field.
    pub causes: Vec<(String, String, String)>,
}

/// `pods`, or `deployments.apps`: how Kubernetes names a resource in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl From<&Resource> for GroupResource {
    fn from(r: &Resource) -> Self {
        GroupResource { group: r.group.to_string(), resource: r.plural.to_string() }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

fn invalid_message(kind: &str, resource: &GroupResource, name: &str, causes: &[Cause]) -> String {
    let what = if resource.group.is_empty() { kind.to_string() } else { format!("{kind}.{}", resource.group) };
    let list: Vec<String> = causes.iter().map(Cause::to_string).collect();
    match list.as_slice() {
        [one] => format!("{what} {name:?} is invalid: {one}"),
        _ => format!("{what} {name:?} is invalid: [{}]", list.join(", ")),
    }
}

impl ApiError {
    /// A 422 for the object `name` of `resource`, naming every cause.
    pub fn invalid(resource: &Resource, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::Invalid { kind: resource.kind.to_string(), resource: resource.into(), name: name.to_string(), causes }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound { .. } | ApiError::UnknownPath => 404,
            ApiError::MethodNotAllowed | ApiError::NotAllowed(_) => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => 409,
            ApiError::Gone { .. } => 410,
            ApiError::TooLarge => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid { .. } => 422,
            ApiError::Internal(_) | ApiError::StoreRefused(_) => 500,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Unavailable => 503,
            ApiError::Timeout => 504,
            ApiError::Webhook { code, .. } => *code,
        }
    }

    /// The `reason` of the Status (Kubernetes' `StatusReason`; "" is `StatusReasonUnknown`, left out).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } | ApiError::UnknownPath => "NotFound",
            ApiError::MethodNotAllowed | ApiError::NotAllowed(_) => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => "Conflict",
            ApiError::Gone { .. } => "Expired",
            ApiError::TooLarge => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Internal(_) => "InternalError",
            ApiError::StoreRefused(_) => "",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Unavailable => "ServiceUnavailable",
            ApiError::Timeout => "Timeout",
            ApiError::Webhook { .. } => "",
        }
    }

    /// The `Status` object to send (with `kind: Status`, `apiVersion: v1` added by its serialisation).
    pub fn to_status(&self) -> Status {
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => Some(StatusDetails {
                name: Some(name.clone()),
                group: Some(resource.group.clone()).filter(|g| !g.is_empty()),
                kind: Some(resource.resource.clone()),
                ..Default::default()
            }),
            ApiError::Invalid { kind, resource, name, causes } => Some(StatusDetails {
                name: Some(name.clone()),
                group: Some(resource.group.clone()).filter(|g| !g.is_empty()),
                kind: Some(kind.clone()),
                causes: Some(
                    causes
                        .iter()
                        .map(|c| StatusCause {
                            field: Some(c.field.clone()),
                            message: Some(c.message.clone()),
                            reason: Some(c.kind.reason().to_string()),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ApiError::ApplyConflict(c) => Some(StatusDetails {
                name: Some(c.name.clone()),
                group: Some(c.resource.group.clone()).filter(|g| !g.is_empty()),
                kind: Some(c.resource.resource.clone()),
                causes: Some(
                    c.causes
                        .iter()
                        .map(|(reason, message, field)| StatusCause {
                            field: Some(field.clone()),
                            message: Some(message.clone()),
                            reason: Some(reason.clone()),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ApiError::TooManyRequests { causes, .. } => Some(StatusDetails {
                causes: Some(
                    causes
                        .iter()
                        .map(|(reason, message)| StatusCause {
                            field: None,
                            message: Some(message.clone()),
                            reason: Some(reason.clone()),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            _ => None,
        };
        let reason = match self {
            ApiError::Webhook { reason, .. } => reason.clone(),
            other => other.reason().to_string(),
        };
        Status {
            status: Some("Failure".to_string()),
            message: Some(self.to_string()),
            reason: Some(reason).filter(|r| !r.is_empty()),
            code: Some(i32::from(self.code())),
            details,
            metadata: ListMeta::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn deployments() -> GroupResource {
        find("apps", "v1", "deployments").unwrap().into()
    }

    #[test]
    fn messages_as_kube_apiserver_words_them() {
        let pods: GroupResource = find("", "v1", "pods").unwrap().into();
        let e = ApiError::NotFound { resource: pods.clone(), name: "web".into() };
        assert_eq!(e.to_string(), "pods \"web\" not found");
        assert_eq!((e.code(), e.reason()), (404, "NotFound"));
        let e = ApiError::AlreadyExists { resource: deployments(), name: "web".into() };
        assert_eq!(e.to_string(), "deployments.apps \"web\" already exists");
        let e = ApiError::Conflict {
            resource: pods,
            name: "web".into(),
            detail: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        };
        assert!(e.to_string().starts_with("Operation cannot be fulfilled on pods \"web\": the object has been"));
        assert_eq!(ApiError::Gone { requested: 5, oldest: 10 }.to_string(), "too old resource version: 5 (10)");
    }

    #[test]
    fn a_store_refusal_is_a_500_with_the_stores_words_and_no_reason() {
        let s = ApiError::StoreRefused("etcdserver: request is too large".into()).to_status();
        assert_eq!(s.code, Some(500));
        assert_eq!(s.message.as_deref(), Some("etcdserver: request is too large"));
        assert_eq!(s.reason, None);
        assert_eq!(s.status.as_deref(), Some("Failure"));
    }

    #[test]
    fn invalid_lists_each_cause_in_message_and_details() {
        let causes = vec![
            Cause::required("spec.template.spec.containers[0].name"),
            Cause::invalid("metadata.name", "Web", "a lowercase RFC 1123 subdomain must …"),
        ];
        let e = ApiError::Invalid { kind: "Deployment".into(), resource: deployments(), name: "Web".into(), causes };
        assert_eq!(
            e.to_string(),
            "Deployment.apps \"Web\" is invalid: [spec.template.spec.containers[0].name: Required value, \
             metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain must …]"
        );
        let s = e.to_status();
        assert_eq!(s.code, Some(422));
        let d = s.details.unwrap();
        assert_eq!((d.kind.as_deref(), d.group.as_deref()), (Some("Deployment"), Some("apps")));
        let causes = d.causes.unwrap();
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueRequired"));
        assert_eq!(causes[1].field.as_deref(), Some("metadata.name"));

        let one = ApiError::Invalid {
            kind: "ConfigMap".into(),
            resource: find("", "v1", "configmaps").unwrap().into(),
            name: "c".into(),
            causes: vec![Cause::required("metadata.name")],
        };
        assert_eq!(one.to_string(), "ConfigMap \"c\" is invalid: metadata.name: Required value");
    }

    #[test]
    fn the_status_object_serialises_as_kubernetes_sends_it() {
        let v = serde_json::to_value(ApiError::Internal("rocksdb: disk full".into()).to_status()).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["code"], 500);
        assert!(!v.to_string().contains("rocksdb"), "internal detail leaked: {v}");
    }
}
