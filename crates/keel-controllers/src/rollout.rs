//! The Deployment controller's decisions, pure: given a Deployment and the ReplicaSets it owns, what to
//! create, scale and delete, and the status to report. (Being written.)
