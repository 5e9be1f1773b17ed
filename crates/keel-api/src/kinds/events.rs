//! `events.k8s.io/v1` Events, stored as the core `v1` Events they are another version of (as in
//! Kubernetes: one resource, two versions): converted field by field each way — `involvedObject` is
//! `regarding`, `message` is `note`, `source` is `deprecatedSource`, `firstTimestamp`/`lastTimestamp`/`count`
//! are the `deprecated…` ones, `reportingComponent` is `reportingController`.

use serde_json::{Map, Value};

/// (core/v1 name, events.k8s.io/v1 name) of the fields that differ.
const RENAMED: [(&str, &str); 6] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];
const REPORTER: (&str, &str) = ("reportingComponent", "reportingController");
const SAME: [&str; 7] = ["metadata", "reason", "type", "action", "related", "reportingInstance", "eventTime"];

fn convert(event: &Value, api_version: &str, to_events: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from("Event"));
    let Some(m) = event.as_object() else { return Value::Object(out) };
    for (core, v1) in RENAMED.iter().chain([&REPORTER]) {
        let (from, to) = if to_events { (core, v1) } else { (v1, core) };
        if let Some(v) = m.get(*from) {
            out.insert(to.to_string(), v.clone());
        }
    }
    for k in SAME.iter().chain(["series"].iter()) {
        if let Some(v) = m.get(*k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// A stored core/v1 Event as events.k8s.io/v1 shows it.
pub fn from_core(event: &Value) -> Value {
    convert(event, "events.k8s.io/v1", true)
}

/// An events.k8s.io/v1 Event as the core/v1 Event it is stored as.
pub fn to_core(event: &Value) -> Value {
    convert(event, "v1", false)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_convert_both_ways() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "a"}, "regarding": {"kind": "Pod", "name": "p"},
            "note": "pulled", "reason": "Pulled", "type": "Normal", "action": "Pull",
            "reportingController": "keel.dev/agent", "reportingInstance": "n1", "eventTime": "2026-12-07T12:00:00.000000Z"});
        let core = to_core(&v1);
        assert_eq!((core["apiVersion"].as_str(), core["message"].as_str()), (Some("v1"), Some("pulled")));
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["reportingComponent"], "keel.dev/agent");
        assert_eq!(from_core(&core), v1);
    }
}
