//! Rendering: every manifest of a snapshot becomes a desired object, named by file and line for errors. A
//! `kustomization.yaml` is reported as unsupported (never silently ignored) until kustomize support lands.

use serde_json::Value;

use super::source::Snapshot;
use crate::api::manifest;
use crate::api::registry::KindInfo;

/// One object the repository asks for.
#[derive(Debug, Clone)]
pub struct Desired {
    pub file: String,
    pub line: usize,
    pub kind: &'static KindInfo,
    pub object: Value,
}

impl Desired {
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        if self.kind.namespaced {
            self.object["metadata"]["namespace"].as_str()
        } else {
            None
        }
    }
    /// `Kind/namespace/name` (or `Kind/name`), as history and errors name objects.
    pub fn id(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{ns}/{}", self.kind.kind, self.name()),
            None => format!("{}/{}", self.kind.kind, self.name()),
        }
    }
    /// Where it was written: `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Every object of the snapshot, with namespaces filled in; or every problem found (all files are read, so a commit
/// reports all its errors at once).
pub fn render(snap: &Snapshot, default_ns: &str) -> Result<Vec<Desired>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in &snap.files {
        let base = f.path.rsplit('/').next().unwrap_or("");
        if base == "kustomization.yaml" || base == "kustomization.yml" {
            errors.push(format!(
                "{}: kustomize is not supported yet; the directory must hold plain manifests",
                f.path
            ));
            continue;
        }
        let text = match std::str::from_utf8(&f.content) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: not UTF-8 text: {e}", f.path));
                continue;
            }
        };
        match manifest::parse(&f.path, text) {
            Ok(docs) => {
                for d in docs {
                    let mut object = d.object;
                    if d.kind.namespaced && object["metadata"]["namespace"].as_str().is_none() {
                        object["metadata"]["namespace"] = Value::String(default_ns.to_string());
                    }
                    let line = manifest::doc_line(text, d.index);
                    if object["metadata"]["name"]
                        .as_str()
                        .is_none_or(str::is_empty)
                    {
                        errors.push(format!("{}:{line}: metadata.name is required", f.path));
                        continue;
                    }
                    out.push(Desired {
                        file: f.path.clone(),
                        line,
                        kind: d.kind,
                        object,
                    });
                }
            }
            Err(manifest::Error::Document { file, doc, message }) => {
                errors.push(format!(
                    "{file}:{}: document {doc}: {message}",
                    manifest::doc_line(text, doc)
                ));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    // The same object twice is a mistake in the repository, not something to resolve by order.
    let mut seen = std::collections::HashMap::new();
    for d in &out {
        if let Some(first) = seen.insert(d.id(), d.at()) {
            errors.push(format!("{}: {} is also defined at {first}", d.at(), d.id()));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Apply order: an explicit `capstan.io/sync-wave` first, then Namespaces, then configuration and storage, then
/// Services, then workloads, then everything else.
pub fn order_key(d: &Desired) -> (i64, u8) {
    let wave = d.object["metadata"]["annotations"]["capstan.io/sync-wave"]
        .as_str()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let rank = match d.kind.kind {
        "Namespace" => 0,
        "StorageClass" | "PersistentVolume" => 1,
        "ConfigMap" | "Secret" | "ServiceAccount" | "PersistentVolumeClaim" => 2,
        "Service" | "Endpoints" | "EndpointSlice" => 3,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job"
        | "CronJob"
        | "Pod" => 4,
        _ => 5,
    };
    (wave, rank)
}

#[cfg(test)]
mod tests {
    use super::super::source::File;
    use super::*;

    fn snap(files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            commit: "c".into(),
            author: "a".into(),
            message: "m".into(),
            files: files
                .iter()
                .map(|(p, c)| File {
                    path: p.to_string(),
                    content: c.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn renders_orders_and_reports_every_problem() {
        let ok = snap(&[
            ("app/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"),
            ("app/b.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, annotations: {capstan.io/sync-wave: \"-1\"}}\n"),
        ]);
        let mut docs = render(&ok, "shop").unwrap();
        assert_eq!(docs[0].namespace(), Some("shop"));
        assert_eq!(docs[1].namespace(), None);
        assert_eq!(docs[1].at(), "app/a.yaml:5");
        docs.sort_by_key(order_key);
        let order: Vec<&str> = docs.iter().map(|d| d.kind.kind).collect();
        assert_eq!(order, ["Deployment", "Namespace", "ConfigMap"]);

        let bad = snap(&[
            ("x/kustomization.yaml", "resources: []\n"),
            ("x/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v9\nkind: Widget\nmetadata: {name: w}\n"),
            ("x/b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
            ("x/c.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
        ]);
        let errs = render(&bad, "default").unwrap_err();
        assert!(errs[0].contains("kustomize is not supported"), "{errs:?}");
        assert!(
            errs[1].starts_with("x/a.yaml:5: document 2:") && errs[1].contains("Widget"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("x/c.yaml:1: ConfigMap/default/c is also defined at x/b.yaml:1"),
            "{errs:?}"
        );
    }
}
