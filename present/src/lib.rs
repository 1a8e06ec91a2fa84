//! How Capstan shows one object to a person, shared by `capstan describe` and the terminal UI's describe page, so
//! the two never disagree: the object's identity and labels, the fields people look for on common kinds (replicas,
//! node, IP, phase, Service type, schedule, GitOps sync and health), data with Secret values masked unless asked
//! for, conditions, container states, and the Events about it. It works on JSON objects, as any kind may be shown.
//! [`columns`] holds the table columns per kind, kubectl's, for the API server's Tables and the TUI's lists.

pub mod columns;

use serde_json::Value;

/// The string at a JSON pointer ("" when absent or not a string).
fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `k=v, k=v` of a string map, or `<none>`.
fn pairs(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

/// Fields shown when the object has them, with their labels.
const FIELDS: &[(&str, &str)] = &[
    ("Replicas", "/spec/replicas"),
    ("Node", "/spec/nodeName"),
    ("IP", "/status/podIP"),
    ("Phase", "/status/phase"),
    ("Type", "/spec/type"),
    ("Cluster IP", "/spec/clusterIP"),
    ("Schedule", "/spec/schedule"),
    ("Repository", "/spec/source/repoURL"),
    ("Sync", "/status/sync/status"),
    ("Health", "/status/health/status"),
    ("Revision", "/status/sync/revision"),
];

/// When an Event happened, for ordering (its last time, else its event time, else its creation).
pub fn event_time(v: &Value) -> &str {
    [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| text(v, p))
    .find(|t| !t.is_empty())
    .unwrap_or("")
}

/// A `data`/`stringData` value as shown: Secret values masked unless `reveal`, then decoded.
fn shown(secret: bool, reveal: bool, field: &str, v: &Value) -> String {
    match (secret, reveal) {
        (true, false) => "••••".to_string(),
        (true, true) if field == "data" => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .unwrap_or_default();
            String::from_utf8_lossy(&raw).into_owned()
        }
        _ => v.as_str().unwrap_or("").to_string(),
    }
}

/// The describe view of `obj`, one line per entry; `events` are the Events about it, oldest first.
pub fn describe(obj: &Value, events: &[&Value], reveal: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |k: &str, v: String| out.push(format!("{:<16}{v}", format!("{k}:")));
    field("Name", text(obj, "/metadata/name").into());
    let ns = text(obj, "/metadata/namespace");
    if !ns.is_empty() {
        field("Namespace", ns.into());
    }
    field("Kind", text(obj, "/kind").into());
    field("Created", text(obj, "/metadata/creationTimestamp").into());
    field("Labels", pairs(obj.pointer("/metadata/labels")));
    field("Annotations", pairs(obj.pointer("/metadata/annotations")));
    if let Some(owner) = obj.pointer("/metadata/ownerReferences/0") {
        field(
            "Controlled By",
            format!("{}/{}", text(owner, "/kind"), text(owner, "/name")),
        );
    }
    for (label, p) in FIELDS {
        if let Some(v) = obj.pointer(p) {
            field(
                label,
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
    }
    let secret = text(obj, "/kind") == "Secret";
    for (label, name) in [("Data", "data"), ("String Data", "stringData")] {
        if let Some(m) = obj.get(name).and_then(Value::as_object) {
            out.push(format!("{label}:"));
            for (k, v) in m {
                out.push(format!("  {k}: {}", shown(secret, reveal, name, v)));
            }
        }
    }
    if let Some(conds) = obj.pointer("/status/conditions").and_then(Value::as_array) {
        out.push("Conditions:".into());
        out.push(format!(
            "  {:<22}{:<8}{:<28}MESSAGE",
            "TYPE", "STATUS", "REASON"
        ));
        for c in conds {
            out.push(format!(
                "  {:<22}{:<8}{:<28}{}",
                text(c, "/type"),
                text(c, "/status"),
                text(c, "/reason"),
                text(c, "/message")
            ));
        }
    }
    if let Some(cs) = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        out.push("Containers:".into());
        for c in cs {
            let state = c["state"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            out.push(format!(
                "  {}: {state}, ready={}, restarts={}",
                text(c, "/name"),
                c["ready"],
                c["restartCount"]
            ));
        }
    }
    out.push("Events:".into());
    if events.is_empty() {
        out.push("  <none>".into());
    }
    for e in events {
        out.push(format!(
            "  {:<8}{:<20}{}",
            text(e, "/type"),
            text(e, "/reason"),
            text(e, "/message")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_unless_revealed_and_events_listed() {
        let secret = json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"},
            "data": {"token": "aHVudGVyMg=="}});
        let hidden = describe(&secret, &[], false);
        assert!(hidden.contains(&"  token: ••••".to_string()), "{hidden:?}");
        assert!(hidden.contains(&"  <none>".to_string()));
        let ev = json!({"type": "Normal", "reason": "Created", "message": "made"});
        let shown = describe(&secret, &[&ev], true);
        assert!(shown.contains(&"  token: hunter2".to_string()), "{shown:?}");
        assert!(shown
            .iter()
            .any(|l| l.contains("Created") && l.ends_with("made")));
        assert_eq!(shown[0], "Name:           s");
    }

    #[test]
    fn pods_show_their_node_phase_conditions_and_containers() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "state": {"running": {}}, "ready": true, "restartCount": 2}]}});
        let lines = describe(&pod, &[], false);
        assert!(
            lines.contains(&"Labels:         app=web".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"Node:           n1".to_string()));
        assert!(lines.contains(&"Phase:          Running".to_string()));
        assert!(lines.contains(&"  c: running, ready=true, restarts=2".to_string()));
    }
}
