//! Kustomize, the part teams use: a `kustomization.yaml` with `resources` (files and directories holding their own
//! kustomization), `namespace`, `namePrefix`/`nameSuffix`, `commonLabels` and `labels`, `commonAnnotations`, `images`,
//! `replicas`, and `configMapGenerator`/`secretGenerator` (literals, files, env files, merge/replace behaviours, the
//! content-hash name suffix). Names changed by a prefix, a suffix or a hash are followed into the objects that refer to
//! them (pod volumes and env, StatefulSet `serviceName`, Ingress backends, role bindings, autoscaler targets), as
//! kustomize does. Any other field (`patches`, `components`, `helmCharts`, remote resources, ...) is reported as
//! unsupported, naming the file and the field - never ignored.
//!
//! Everything reads from a commit's tree (a map of repository-relative paths), so a kustomization may refer to bases
//! anywhere in the repository (`../base`), never outside it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::manifest;
use crate::api::registry::KindInfo;

mod generator;
mod refs;
mod transform;

use refs::{content_hash, follow_renames};

/// The names a kustomization file may have, in kustomize's order of preference.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields this implementation carries out.
const SUPPORTED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
];

/// One object produced by a build, with where it was written (generated objects name their kustomization).
#[derive(Debug, Clone)]
pub struct Res {
    pub file: String,
    pub line: usize,
    pub kind: &'static KindInfo,
    pub object: Value,
    /// Its name before this build's prefixes and suffixes (what generator `behavior: merge` and `replicas` match).
    pub(super) origin: String,
    /// A generated ConfigMap or Secret that still needs its content-hash suffix.
    pub(super) hash: bool,
}

impl Res {
    pub(super) fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }
    pub(super) fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

/// One problem found building a kustomization, with where it is: the file, the line when known, and the field of
/// the kustomization it concerns. Shown as `file:line: field: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    fn in_file(file: &str, message: impl std::fmt::Display) -> Self {
        Problem {
            file: file.to_string(),
            line: None,
            field: None,
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Problem {}

/// A commit's files by repository-relative path.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// The kustomization file of a directory, if it has one.
pub fn kustomization_in(tree: &Tree, dir: &str) -> Option<String> {
    FILE_NAMES
        .iter()
        .map(|n| join(dir, n))
        .find(|p| tree.contains_key(p))
}

/// Builds the kustomization in `dir`; every problem is reported, each naming its file.
pub fn build(tree: &Tree, dir: &str) -> Result<Vec<Res>, Vec<Problem>> {
    let mut stack = Vec::new();
    let mut out = level(tree, dir, &mut stack)?;
    // Hash suffixes last, over the final content and name, and followed into every reference.
    let mut renames = Vec::new();
    for r in out.iter_mut().filter(|r| r.hash) {
        let old = r.name().to_string();
        let new = format!("{old}-{}", content_hash(&r.object));
        r.object["metadata"]["name"] = json!(new);
        renames.push((r.kind.kind, r.namespace().map(str::to_string), old, new));
        r.hash = false;
    }
    follow_renames(&mut out, &renames);
    Ok(out)
}

fn level(tree: &Tree, dir: &str, stack: &mut Vec<String>) -> Result<Vec<Res>, Vec<Problem>> {
    let Some(kfile) = kustomization_in(tree, dir) else {
        return Err(vec![Problem::in_file(
            dir,
            "no kustomization.yaml in this directory (a directory listed in resources needs one)",
        )]);
    };
    if stack.contains(&kfile) {
        return Err(vec![Problem::in_file(
            &kfile,
            format!("resources form a cycle: {} -> {kfile}", stack.join(" -> ")),
        )]);
    }
    stack.push(kfile.clone());
    let result = level_of(tree, dir, &kfile, stack);
    stack.pop();
    result
}

/// One kustomization file being built: where it is, its text (for the line of each error) and its fields.
struct Kustomization<'t> {
    dir: &'t str,
    file: &'t str,
    text: &'t str,
    k: Value,
}

impl<'t> Kustomization<'t> {
    /// Reads and parses the file, refusing fields and kinds this implementation does not carry out.
    fn read(tree: &'t Tree, dir: &'t str, file: &'t str) -> Result<Self, Vec<Problem>> {
        let text = text_of(tree, file).map_err(|e| vec![e])?;
        let k: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            vec![Problem {
                line: e.location().map(|l| l.line()),
                ..Problem::in_file(file, format!("not valid YAML: {e}"))
            }]
        })?;
        let Some(fields) = k.as_object() else {
            return Err(vec![Problem::in_file(
                file,
                "a kustomization must be a mapping",
            )]);
        };
        let this = Kustomization {
            dir,
            file,
            text,
            k: Value::Null,
        };
        let mut errors: Vec<Problem> = fields
            .keys()
            .filter(|key| !SUPPORTED.contains(&key.as_str()))
            .map(|key| {
                this.err(
                    key,
                    format!(
                        "not supported by Capstan's kustomize (supported: {})",
                        SUPPORTED[3..].join(", ")
                    ),
                )
            })
            .collect();
        if let Some(kind) = k["kind"].as_str().filter(|k| *k != "Kustomization") {
            errors.push(this.err(
                "kind",
                format!("{kind} is not supported (only Kustomization)"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Kustomization { k, ..this })
    }

    /// An error about one of its fields, with the line of that field.
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> Problem {
        Problem {
            line: Some(key_line(self.text, field)),
            field: Some(field.to_string()),
            ..Problem::in_file(self.file, msg)
        }
    }

    /// `resources` (and the older `bases`): files read as manifests, directories built as kustomizations of their
    /// own. Problems with single entries go to `errors`; a malformed list ends the build here.
    fn resources(
        &self,
        tree: &Tree,
        stack: &mut Vec<String>,
        errors: &mut Vec<Problem>,
    ) -> Result<Vec<Res>, Vec<Problem>> {
        let mut out: Vec<Res> = Vec::new();
        for field in ["bases", "resources"] {
            for entry in strings(&self.k[field], field).map_err(|e| vec![self.err(field, e)])? {
                if entry.contains("://")
                    || entry.starts_with("github.com/")
                    || entry.starts_with("git@")
                {
                    errors.push(self.err(
                        field,
                        format!("{entry}: remote resources are not supported; vendor them into the repository"),
                    ));
                    continue;
                }
                let Some(path) = resolve(self.dir, &entry) else {
                    errors.push(self.err(field, format!("{entry}: leaves the repository")));
                    continue;
                };
                let found = if tree.contains_key(&path) {
                    read_manifests(tree, &path)
                } else if is_dir(tree, &path) {
                    level(tree, &path, stack)
                } else {
                    errors.push(self.err(field, format!("{entry}: no such file or directory")));
                    continue;
                };
                match found {
                    Ok(mut rs) => out.append(&mut rs),
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
        Ok(out)
    }

    /// `configMapGenerator` and `secretGenerator`: each entry adds (or merges into, or replaces) an object.
    fn generators(&self, tree: &Tree, out: &mut Vec<Res>, errors: &mut Vec<Problem>) {
        let options = &self.k["generatorOptions"];
        for (field, kind) in [
            ("configMapGenerator", "ConfigMap"),
            ("secretGenerator", "Secret"),
        ] {
            let Some(list) = self.k.get(field) else {
                continue;
            };
            let Some(list) = list.as_array() else {
                errors.push(self.err(field, "must be a list"));
                continue;
            };
            for g in list {
                let placed = generator::generate(tree, self.dir, self.file, kind, g, options)
                    .and_then(|res| generator::place(out, res, g));
                if let Err(e) = placed {
                    errors.push(self.err(field, e));
                }
            }
        }
    }
}

/// One level of a build: the kustomization's resources and generated objects, then its transformers.
fn level_of(
    tree: &Tree,
    dir: &str,
    kfile: &str,
    stack: &mut Vec<String>,
) -> Result<Vec<Res>, Vec<Problem>> {
    let k = Kustomization::read(tree, dir, kfile)?;
    let mut errors = Vec::new();
    let mut out = k.resources(tree, stack, &mut errors)?;
    k.generators(tree, &mut out, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    k.transform(&mut out).map_err(|e| vec![e])?;
    Ok(out)
}

/// The line of a top-level key in a kustomization, for errors (1 when not found).
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(1, |n| n + 1)
}

pub(super) fn text_of<'t>(tree: &'t Tree, path: &str) -> Result<&'t str, Problem> {
    let bytes = tree
        .get(path)
        .ok_or_else(|| Problem::in_file(path, "no such file"))?;
    std::str::from_utf8(bytes).map_err(|e| Problem::in_file(path, format!("not UTF-8 text: {e}")))
}

fn read_manifests(tree: &Tree, path: &str) -> Result<Vec<Res>, Vec<Problem>> {
    let text = text_of(tree, path).map_err(|e| vec![e])?;
    let docs = manifest::parse(path, text).map_err(|e| {
        vec![match e {
            manifest::Error::Document { file, doc, message } => Problem {
                line: Some(manifest::doc_line(text, doc)),
                ..Problem::in_file(&file, format!("document {doc}: {message}"))
            },
            manifest::Error::Parse { file, message } => Problem::in_file(&file, message),
        }]
    })?;
    Ok(docs
        .into_iter()
        .map(|d| {
            let origin = d.name().to_string();
            Res {
                file: path.to_string(),
                line: manifest::doc_line(text, d.index),
                kind: d.kind,
                object: d.object,
                origin,
                hash: false,
            }
        })
        .collect())
}

pub(super) fn strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("every entry of {field} must be a string"))
            })
            .collect(),
        _ => Err("must be a list of strings".into()),
    }
}

pub(super) fn string_map(v: &Value) -> Result<Map<String, Value>, String> {
    let Some(m) = v.as_object() else {
        return Err("must be a map of strings".into());
    };
    let mut out = Map::new();
    for (k, v) in m {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            _ => return Err(format!("{k}: the value must be a string")),
        };
        out.insert(k.clone(), Value::String(s));
    }
    Ok(out)
}

/// `dir` joined with `rel`, `.` and `..` resolved; None when it climbs out of the repository.
pub(super) fn resolve(dir: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn is_dir(tree: &Tree, path: &str) -> bool {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    tree.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

#[cfg(test)]
mod tests;
