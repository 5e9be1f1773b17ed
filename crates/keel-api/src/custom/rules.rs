//! `x-kubernetes-validations`: CEL rules on a schema node, compiled once when the CRD is read and run on
//! every write of a custom object with `self` bound to the node's value (and `oldSelf` to its stored value,
//! for transition rules, which run only on updates where there was one), with the `cel` crate. A rule
//! that does not hold, or fails to evaluate, is a cause with the rule's message (or `failed rule: …`),
//! its reason, and its field path under the node's.

use std::sync::Arc;

use serde_json::Value;

use crate::validation::{Cause, CauseType};

/// One compiled rule.
#[derive(Clone)]
pub struct Rule {
    pub rule: String,
    pub message: Option<String>,
    pub reason: CauseType,
    /// `fieldPath`, relative to the node (`.spec.replicas`, without the leading dot when joined).
    pub field_path: Option<String>,
    /// Whether the rule reads `oldSelf` (a transition rule).
    pub transition: bool,
    program: Arc<cel::Program>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("rule", &self.rule).field("message", &self.message).finish()
    }
}

const REASONS: [&str; 4] = ["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"];

impl Rule {
    /// Reads one entry of `x-kubernetes-validations` found at `at`; a rule that does not compile is a cause.
    pub fn parse(v: &Value, at: &str) -> Result<Rule, Cause> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let Some(rule) = text("rule") else { return Err(Cause::required(format!("{at}.rule"))) };
        let program = cel::Program::compile(&rule).map_err(|e| {
            let first = e.errors.first().map(|e| e.msg.clone()).unwrap_or_else(|| "syntax error".into());
            Cause::invalid(format!("{at}.rule"), &rule, &format!("compilation failed: {first}"))
        })?;
        let reason = match text("reason").as_deref() {
            None | Some("FieldValueInvalid") => CauseType::Invalid,
            Some("FieldValueForbidden") => CauseType::Forbidden,
            Some("FieldValueRequired") => CauseType::Required,
            Some("FieldValueDuplicate") => CauseType::Duplicate,
            Some(other) => return Err(Cause::not_supported(format!("{at}.reason"), other, &REASONS)),
        };
        let transition = program.references().has_variable("oldSelf");
        Ok(Rule {
            message: text("message"),
            reason,
            field_path: text("fieldPath"),
            transition,
            program: Arc::new(program),
            rule,
        })
    }
}

/// Runs `rules` on `value` (at `path`), `old` being its stored value on an update.
pub fn evaluate(rules: &[Rule], value: &Value, old: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    for rule in rules {
        if rule.transition && old.is_none() {
            continue;
        }
        let mut context = cel::Context::default();
        let bound = context.add_variable("self", value.clone()).and_then(|()| match old {
            Some(o) => context.add_variable("oldSelf", o.clone()),
            None => Ok(()),
        });
        let detail = match bound
            .map_err(|e| e.to_string())
            .and_then(|()| rule.program.execute(&context).map_err(|e| format!("{e} evaluating rule: {}", rule.rule)))
        {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => {
                rule.message.clone().unwrap_or_else(|| format!("failed rule: {}", rule.rule))
            }
            Ok(other) => format!("rule {:?} evaluated to {other:?}, not a bool", rule.rule),
            Err(e) => e,
        };
        let field = match rule.field_path.as_deref().map(|f| f.trim_start_matches('.')) {
            Some(f) if path.is_empty() => f.to_string(),
            Some(f) => format!("{path}.{f}"),
            None => path.to_string(),
        };
        let message = match rule.reason {
            CauseType::Invalid => format!("Invalid value: {:?}: {detail}", super::schema::json_type(value)),
            CauseType::Forbidden => format!("Forbidden: {detail}"),
            CauseType::Required => format!("Required value: {detail}"),
            _ => format!("Duplicate value: {detail}"),
        };
        causes.push(Cause { kind: rule.reason, field, message });
    }
    causes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(v: Value) -> Rule {
        Rule::parse(&v, "x").unwrap()
    }

    #[test]
    fn rules_hold_or_name_their_field() {
        let rules = vec![
            rule(
                json!({"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas",
                "fieldPath": ".replicas"}),
            ),
            rule(json!({"rule": "self.name.startsWith('w')"})),
        ];
        assert!(evaluate(&rules, &json!({"replicas": 1, "maxReplicas": 2, "name": "web"}), None, "spec").is_empty());
        let causes = evaluate(&rules, &json!({"replicas": 3, "maxReplicas": 2, "name": "db"}), None, "spec");
        let shown: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            [
                "spec.replicas: Invalid value: \"object\": replicas must not exceed maxReplicas",
                "spec: Invalid value: \"object\": failed rule: self.name.startsWith('w')",
            ]
        );
    }

    #[test]
    fn transition_rules_run_only_on_updates() {
        let rules =
            vec![rule(json!({"rule": "self >= oldSelf", "message": "may only grow", "reason": "FieldValueForbidden"}))];
        assert!(evaluate(&rules, &json!(1), None, "spec.size").is_empty());
        assert!(evaluate(&rules, &json!(3), Some(&json!(2)), "spec.size").is_empty());
        let causes = evaluate(&rules, &json!(1), Some(&json!(2)), "spec.size");
        assert_eq!(causes[0].to_string(), "spec.size: Forbidden: may only grow");
        assert_eq!(causes[0].kind, CauseType::Forbidden);
    }

    #[test]
    fn bad_rules_are_refused_when_read() {
        assert!(Rule::parse(&json!({"rule": "self.a =="}), "x").unwrap_err().message.contains("compilation failed"));
        assert_eq!(Rule::parse(&json!({}), "x").unwrap_err().to_string(), "x.rule: Required value");
    }
}
