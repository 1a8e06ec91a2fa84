//! Rendering: every manifest of a snapshot becomes a desired object, named by file and line for errors; directories
//! with a `kustomization.yaml` are built by [`super::kustomize`].

use serde_json::Value;

use super::kustomize;
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
/// reports all its errors at once). A directory holding a kustomization is built with kustomize (its files are its
/// own, not read as plain manifests); every other file is a plain manifest.
pub fn render(snap: &Snapshot, default_ns: &str) -> Result<Vec<Desired>, Vec<String>> {
    // Custom objects may come with their CRDs in the same commit.
    let pending = manifest::kinds_of_crds(
        snap.files
            .iter()
            .chain(&snap.others)
            .filter_map(|f| std::str::from_utf8(&f.content).ok()),
    );
    manifest::with_pending(pending, || render_all(snap, default_ns))
}

/// The objects of one text - a render plugin's output - all or nothing, each named by `file` and its line.
pub fn from_text(file: &str, text: &str, default_ns: &str) -> Result<Vec<Desired>, Vec<String>> {
    let pending = manifest::kinds_of_crds(std::iter::once(text));
    manifest::with_pending(pending, || {
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        match manifest::parse(file, text) {
            Ok(docs) => {
                for d in docs {
                    let line = manifest::doc_line(text, d.index);
                    push(
                        &mut out,
                        &mut errors,
                        default_ns,
                        file.to_string(),
                        line,
                        d.kind,
                        d.object,
                    );
                }
            }
            Err(manifest::Error::Document { file, doc, message }) => errors.push(format!(
                "{file}:{}: document {doc}: {message}",
                manifest::doc_line(text, doc)
            )),
            Err(e) => errors.push(e.to_string()),
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    })
}

fn render_all(snap: &Snapshot, default_ns: &str) -> Result<Vec<Desired>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let inside = |p: &str| snap.root.is_empty() || p.starts_with(&format!("{}/", snap.root));
    let mut kdirs: Vec<String> = Vec::new();
    for f in snap.files.iter().chain(&snap.others) {
        let (dir, base) = f.path.rsplit_once('/').unwrap_or(("", &f.path));
        if inside(&f.path) && kustomize::FILE_NAMES.contains(&base) {
            kdirs.push(dir.to_string());
        }
    }
    kdirs.sort();
    // Only the outermost: a kustomization below another is the outer one's business (or nobody's).
    let mut outer: Vec<String> = Vec::new();
    for d in kdirs {
        if !outer.iter().any(|o| under(&d, o)) {
            outer.push(d);
        }
    }
    if !outer.is_empty() {
        let tree: kustomize::Tree = snap
            .files
            .iter()
            .chain(&snap.others)
            .map(|f| (f.path.clone(), f.content.clone()))
            .collect();
        for dir in &outer {
            match kustomize::build(&tree, dir) {
                Ok(built) => {
                    for r in built {
                        match manifest::kind_of(&r.object) {
                            Ok(kind) => push(
                                &mut out,
                                &mut errors,
                                default_ns,
                                r.file,
                                r.line,
                                kind,
                                r.object,
                            ),
                            Err(e) => errors.push(format!("{}:{}: {e}", r.file, r.line)),
                        }
                    }
                }
                Err(e) => errors.extend(e.iter().map(ToString::to_string)),
            }
        }
    }
    for f in &snap.files {
        if outer.iter().any(|o| under(&f.path, o)) {
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
                    let line = manifest::doc_line(text, d.index);
                    push(
                        &mut out,
                        &mut errors,
                        default_ns,
                        f.path.clone(),
                        line,
                        d.kind,
                        d.object,
                    );
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

/// Whether `path` is `dir` or below it (every path is below the root, "").
fn under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
}

/// Adds one rendered object, its namespace defaulted; a nameless object is an error at its line.
fn push(
    out: &mut Vec<Desired>,
    errors: &mut Vec<String>,
    default_ns: &str,
    file: String,
    line: usize,
    kind: &'static KindInfo,
    mut object: Value,
) {
    if kind.namespaced && object["metadata"]["namespace"].as_str().is_none() {
        object["metadata"]["namespace"] = Value::String(default_ns.to_string());
    }
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        errors.push(format!("{file}:{line}: metadata.name is required"));
        return;
    }
    out.push(Desired {
        file,
        line,
        kind,
        object,
    });
}

/// Apply order: an explicit `capstan.io/sync-wave` first, then Namespaces, then configuration and storage, then
/// Services, then workloads, then everything else.
pub fn order_key(d: &Desired) -> (i64, u8) {
    let wave = d.object["metadata"]["annotations"]["capstan.io/sync-wave"]
        .as_str()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let rank = match d.kind.kind {
        "Namespace" | "CustomResourceDefinition" => 0,
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

    fn files(list: &[(&str, &str)]) -> Vec<File> {
        list.iter()
            .map(|(p, c)| File {
                path: p.to_string(),
                content: c.as_bytes().to_vec(),
            })
            .collect()
    }

    fn snap(root: &str, list: &[(&str, &str)], others: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            git_dir: std::path::PathBuf::new(),
            commit: "c".into(),
            author: "a".into(),
            message: "m".into(),
            root: root.into(),
            files: files(list),
            others: files(others),
        }
    }

    #[test]
    fn renders_orders_and_reports_every_problem() {
        let ok = snap("app", &[
            ("app/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"),
            ("app/b.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, annotations: {capstan.io/sync-wave: \"-1\"}}\n"),
        ], &[]);
        let mut docs = render(&ok, "shop").unwrap();
        assert_eq!(docs[0].namespace(), Some("shop"));
        assert_eq!(docs[1].namespace(), None);
        assert_eq!(docs[1].at(), "app/a.yaml:5");
        docs.sort_by_key(order_key);
        let order: Vec<&str> = docs.iter().map(|d| d.kind.kind).collect();
        assert_eq!(order, ["Deployment", "Namespace", "ConfigMap"]);

        let bad = snap("x", &[
            ("x/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v9\nkind: Widget\nmetadata: {name: w}\n"),
            ("x/b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
            ("x/c.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
        ], &[]);
        let errs = render(&bad, "default").unwrap_err();
        assert!(
            errs[0].starts_with("x/a.yaml:5: document 2:") && errs[0].contains("Widget"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("x/c.yaml:1: ConfigMap/default/c is also defined at x/b.yaml:1"),
            "{errs:?}"
        );
    }

    #[test]
    fn kustomized_directories_are_built_and_the_rest_read_plain() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let s = snap(
            "env",
            &[
                ("env/plain/cm.yaml", cm),
                (
                    "env/prod/kustomization.yaml",
                    "resources: [../../base, extra.yaml]\nnamePrefix: prod-\n",
                ),
                ("env/prod/extra.yaml", cm),
                (
                    "env/prod/nested/kustomization.yaml",
                    "resources: [nothing.yaml]\n",
                ),
            ],
            &[
                (
                    "base/kustomization.yaml",
                    "resources: [cm.yaml]\nnamespace: base\n",
                ),
                (
                    "base/cm.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
                ),
            ],
        );
        let docs = render(&s, "team").unwrap();
        let ids: Vec<String> = docs.iter().map(Desired::id).collect();
        assert_eq!(
            ids,
            [
                "ConfigMap/base/prod-b",
                "ConfigMap/team/prod-c",
                "ConfigMap/team/c"
            ]
        );
        assert_eq!(docs[0].at(), "base/cm.yaml:1");

        let s = snap(
            "",
            &[("kustomization.yaml", "resources: [gone.yaml]\n")],
            &[],
        );
        let errs = render(&s, "default").unwrap_err();
        assert!(
            errs[0].contains(
                "kustomization.yaml:1: resources: accumulating resources: gone.yaml: no such file"
            ),
            "{errs:?}"
        );
    }
}
