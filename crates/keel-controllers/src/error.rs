/// What a control loop can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("{0}")]
    Invalid(String),
}
