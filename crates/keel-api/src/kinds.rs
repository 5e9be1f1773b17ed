//! Per-kind rules: decoding checks against the k8s-openapi types, defaulting and validation. (Being written.)

use crate::validation::Cause;
use serde_json::Value;

pub fn decode(_kind: &str, _object: &Value) -> Result<Vec<String>, String> {
    Ok(vec![])
}
pub fn default(_kind: &str, _object: &mut Value) {}
pub fn validate(_kind: &str, _object: &Value) -> Vec<Cause> {
    vec![]
}
pub fn validate_update(_kind: &str, _old: &Value, _new: &Value) -> Vec<Cause> {
    vec![]
}
