//! kube-controller-manager's tokencleaner: a bootstrap token's Secret (`kube-system`, type
//! `bootstrap.kubernetes.io/token`) is deleted once its `expiration` has passed, so that `keel server token
//! list` and the store keep only the tokens that still work (the API server refuses an expired token
//! before that anyway).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::reconciling::{reconciled, retry};
use crate::Error;

const NAMESPACE: &str = "kube-system";
const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// When a token's Secret is to go: `None` without an expiration (or one that cannot be read: the API server
/// refuses that token, and kube's cleaner leaves it too), else how long from `now` (zero: now).
pub fn time_left(secret: &Secret, now: jiff::Timestamp) -> Option<Duration> {
    let expiration = secret.data.as_ref()?.get("expiration")?;
    let at: jiff::Timestamp = std::str::from_utf8(&expiration.0).ok()?.parse().ok()?;
    let left = at.duration_since(now);
    Some(if left.is_negative() { Duration::ZERO } else { left.unsigned_abs() })
}

async fn reconcile(secret: Arc<Secret>, client: Arc<Client>) -> Result<Action, Error> {
    let Some(left) = time_left(&secret, jiff::Timestamp::now()) else { return Ok(Action::await_change()) };
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    let name = secret.name_any();
    let api: Api<Secret> = Api::namespaced((*client).clone(), NAMESPACE);
    // Only the Secret that expired (not a new one of the same name).
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: secret.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(secret = name, "deleted an expired bootstrap token"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Deletes bootstrap tokens as they expire.
pub async fn run(client: Client) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    Controller::new(secrets, watcher::Config::default().fields(&format!("type={SECRET_TYPE}")))
        .run(reconcile, retry, Arc::new(client))
        .for_each(reconciled)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expiration: Option<&str>) -> Secret {
        let mut data = std::collections::BTreeMap::new();
        if let Some(at) = expiration {
            data.insert("expiration".to_string(), k8s_openapi::ByteString(at.as_bytes().to_vec()));
        }
        Secret { data: Some(data), type_: Some(SECRET_TYPE.into()), ..Default::default() }
    }

    #[test]
    fn tokens_go_when_they_expire() {
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        assert_eq!(time_left(&token(None), now), None);
        assert_eq!(time_left(&token(Some("not a time")), now), None);
        assert_eq!(time_left(&token(Some("2026-12-07T11:00:00Z")), now), Some(Duration::ZERO));
        assert_eq!(time_left(&token(Some("2026-12-07T12:00:30Z")), now), Some(Duration::from_secs(30)));
    }
}
