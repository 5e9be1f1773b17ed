//! Per-kind rules: decoding checks against the k8s-openapi types, defaulting and validation. (Being written.)
