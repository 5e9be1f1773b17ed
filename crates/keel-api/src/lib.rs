//! The rules of the Kubernetes API that keel's API server applies, as plain functions without IO: label and
//! field selectors (parsing and matching), resource quantities, strategic merge patches, the table of
//! served resources, errors as `Status` objects, and the validation of names, labels and annotations —
//! with Kubernetes' own wording, so that clients see the messages they know.

pub mod admit;
pub mod agent_api;
pub mod apply;
pub mod custom;
pub mod kinds;
pub mod meta;
pub mod openapi;
pub mod paths;
pub mod quantity;
pub mod quota;
pub mod resource_metrics;
pub mod resources;
pub mod selector;
pub mod services;
pub mod status;
pub mod strategic_merge;
pub mod table;
pub mod validation;
pub mod webhooks;
