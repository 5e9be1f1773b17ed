//! Selectors as pod specs carry them, compiled once per pod into keel-api's [`Requirement`]s: a metav1
//! `LabelSelector` (matchLabels + matchExpressions) and node-selector terms (matchExpressions on labels with
//! In/NotIn/Exists/DoesNotExist/Gt/Lt, matchFields on `metadata.name`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use keel_api::selector::{LabelSelector, Operator, Requirement};

/// A compiled metav1 `LabelSelector`. Kubernetes treats a missing selector (and a malformed one) as
/// matching nothing, and an empty one as matching everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSelector {
    Nothing,
    Labels(LabelSelector),
}

impl PodSelector {
    pub fn compile(selector: Option<&metav1::LabelSelector>) -> PodSelector {
        match selector.map(LabelSelector::from_api) {
            Some(Ok(s)) => PodSelector::Labels(s),
            None | Some(Err(_)) => PodSelector::Nothing,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            PodSelector::Nothing => false,
            PodSelector::Labels(s) => s.matches(labels),
        }
    }

    /// Whether this is the selector that matches everything (`{}`).
    pub fn is_everything(&self) -> bool {
        matches!(self, PodSelector::Labels(s) if s.is_empty())
    }

    /// Adds `key in (value)` for each key the pod has a label for (topology spread's `matchLabelKeys`).
    pub fn and_label_keys(mut self, keys: &[String], labels: &BTreeMap<String, String>) -> PodSelector {
        if let PodSelector::Labels(s) = &mut self {
            for k in keys {
                if let Some(v) = labels.get(k) {
                    s.requirements.push(Requirement { key: k.clone(), op: Operator::In, values: vec![v.clone()] });
                }
            }
        }
        self
    }
}

/// One compiled node-selector term: every expression and field requirement must hold. A term with
/// neither (or a malformed one) matches no node, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    labels: Vec<Requirement>,
    /// `metadata.name` requirements: (negated, names).
    names: Vec<(bool, Vec<String>)>,
    valid: bool,
}

impl NodeTerm {
    pub fn compile(term: &NodeSelectorTerm) -> NodeTerm {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        let mut out =
            NodeTerm { labels: Vec::new(), names: Vec::new(), valid: !(exprs.is_empty() && fields.is_empty()) };
        for e in exprs {
            match node_requirement(e) {
                Some(r) => out.labels.push(r),
                None => out.valid = false,
            }
        }
        for f in fields {
            let values = f.values.clone().unwrap_or_default();
            match (f.key.as_str(), f.operator.as_str(), values.len()) {
                ("metadata.name", "In", 1) => out.names.push((false, values)),
                ("metadata.name", "NotIn", 1) => out.names.push((true, values)),
                _ => out.valid = false,
            }
        }
        out
    }

    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.valid
            && self.labels.iter().all(|r| r.matches(labels))
            && self.names.iter().all(|(negated, names)| names.iter().any(|n| n == node_name) != *negated)
    }
}

fn node_requirement(e: &NodeSelectorRequirement) -> Option<Requirement> {
    let values = e.values.clone().unwrap_or_default();
    let op = match e.operator.as_str() {
        "In" if !values.is_empty() => Operator::In,
        "NotIn" if !values.is_empty() => Operator::NotIn,
        "Exists" if values.is_empty() => Operator::Exists,
        "DoesNotExist" if values.is_empty() => Operator::DoesNotExist,
        "Gt" if values.len() == 1 && values[0].parse::<i64>().is_ok() => Operator::GreaterThan,
        "Lt" if values.len() == 1 && values[0].parse::<i64>().is_ok() => Operator::LessThan,
        _ => return None,
    };
    Some(Requirement { key: e.key.clone(), op, values })
}

/// Node-selector terms ORed together (`requiredDuringScheduling…nodeSelectorTerms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerms(pub Vec<NodeTerm>);

impl NodeTerms {
    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().any(|t| t.matches(node_name, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_match_labels_and_expressions() {
        let s: metav1::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap();
        let s = PodSelector::compile(Some(&s));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!PodSelector::compile(None).matches(&labels(&[])));
        assert!(PodSelector::compile(Some(&Default::default())).is_everything());
        let bad: metav1::LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}))
                .unwrap();
        assert_eq!(PodSelector::compile(Some(&bad)), PodSelector::Nothing);
    }

    #[test]
    fn node_term_operators() {
        let term = |v: serde_json::Value| NodeTerm::compile(&serde_json::from_value(v).unwrap());
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        assert!(term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}))
            .matches("n", &l));
        assert!(!term(json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}))
            .matches("n", &l));
        assert!(term(json!({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]})).matches("n", &l));
        assert!(term(json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]})).matches("n", &l));
        assert!(
            term(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]})).matches("n", &l)
        );
        assert!(
            !term(json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]})).matches("n", &l)
        );
        assert!(
            !term(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["x"]}]})).matches("n", &l)
        );
        assert!(term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}))
            .matches("n", &l));
        assert!(!term(json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n"]}]}))
            .matches("n", &l));
        assert!(!term(json!({})).matches("n", &l), "an empty term matches nothing");
    }
}
