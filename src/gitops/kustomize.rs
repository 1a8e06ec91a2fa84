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

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::api::manifest;
use crate::api::registry::{self, KindInfo};

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
    origin: String,
    /// A generated ConfigMap or Secret that still needs its content-hash suffix.
    hash: bool,
}

impl Res {
    fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

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
pub fn build(tree: &Tree, dir: &str) -> Result<Vec<Res>, Vec<String>> {
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

fn level(tree: &Tree, dir: &str, stack: &mut Vec<String>) -> Result<Vec<Res>, Vec<String>> {
    let Some(kfile) = kustomization_in(tree, dir) else {
        return Err(vec![format!(
            "{dir}: no kustomization.yaml in this directory (a directory listed in resources needs one)"
        )]);
    };
    if stack.contains(&kfile) {
        return Err(vec![format!(
            "{kfile}: resources form a cycle: {} -> {kfile}",
            stack.join(" -> ")
        )]);
    }
    stack.push(kfile.clone());
    let result = level_of(tree, dir, &kfile, stack);
    stack.pop();
    result
}

fn level_of(
    tree: &Tree,
    dir: &str,
    kfile: &str,
    stack: &mut Vec<String>,
) -> Result<Vec<Res>, Vec<String>> {
    let text = text_of(tree, kfile).map_err(|e| vec![e])?;
    let k: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}", l.line()))
            .unwrap_or_default();
        vec![format!("{kfile}{at}: not valid YAML: {e}")]
    })?;
    let Some(fields) = k.as_object() else {
        return Err(vec![format!("{kfile}: a kustomization must be a mapping")]);
    };
    let mut errors = Vec::new();
    let field_err =
        |field: &str, msg: String| format!("{kfile}:{}: {field}: {msg}", key_line(text, field));
    for key in fields.keys() {
        if !SUPPORTED.contains(&key.as_str()) {
            errors.push(field_err(
                key,
                format!(
                    "not supported by Capstan's kustomize (supported: {})",
                    SUPPORTED[3..].join(", ")
                ),
            ));
        }
    }
    if let Some(kind) = k["kind"].as_str().filter(|k| *k != "Kustomization") {
        errors.push(field_err(
            "kind",
            format!("{kind} is not supported (only Kustomization)"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Resources: files read as manifests, directories built as kustomizations of their own.
    let mut out: Vec<Res> = Vec::new();
    for field in ["bases", "resources"] {
        for entry in strings(&k[field], field).map_err(|e| vec![field_err(field, e)])? {
            if entry.contains("://")
                || entry.starts_with("github.com/")
                || entry.starts_with("git@")
            {
                errors.push(field_err(
                    field,
                    format!("{entry}: remote resources are not supported; vendor them into the repository"),
                ));
                continue;
            }
            let path = match resolve(dir, &entry) {
                Some(p) => p,
                None => {
                    errors.push(field_err(field, format!("{entry}: leaves the repository")));
                    continue;
                }
            };
            if tree.contains_key(&path) {
                match read_manifests(tree, &path) {
                    Ok(mut rs) => out.append(&mut rs),
                    Err(mut e) => errors.append(&mut e),
                }
            } else if is_dir(tree, &path) {
                match level(tree, &path, stack) {
                    Ok(mut rs) => out.append(&mut rs),
                    Err(mut e) => errors.append(&mut e),
                }
            } else {
                errors.push(field_err(
                    field,
                    format!("{entry}: no such file or directory"),
                ));
            }
        }
    }

    // Generators add (or merge into, or replace) ConfigMaps and Secrets.
    let options = &k["generatorOptions"];
    for (field, kind) in [
        ("configMapGenerator", "ConfigMap"),
        ("secretGenerator", "Secret"),
    ] {
        let Some(list) = k.get(field) else { continue };
        let Some(list) = list.as_array() else {
            errors.push(field_err(field, "must be a list".into()));
            continue;
        };
        for g in list {
            match generate(tree, dir, kfile, kind, g, options) {
                Ok(res) => {
                    if let Err(e) = place_generated(&mut out, res, g) {
                        errors.push(field_err(field, e));
                    }
                }
                Err(e) => errors.push(field_err(field, e)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Transformers, in kustomize's order: namespace, names, labels, annotations, images, replicas.
    if let Some(ns) = k.get("namespace") {
        let Some(ns) = ns.as_str() else {
            return Err(vec![field_err("namespace", "must be a string".into())]);
        };
        set_namespace(&mut out, ns);
    }
    let prefix = k["namePrefix"].as_str().unwrap_or("");
    let suffix = k["nameSuffix"].as_str().unwrap_or("");
    let mut renames = Vec::new();
    for r in &mut out {
        r.origin = r.name().to_string();
        if (prefix.is_empty() && suffix.is_empty())
            || matches!(
                r.kind.kind,
                "Namespace" | "CustomResourceDefinition" | "APIService"
            )
        {
            continue;
        }
        let old = r.name().to_string();
        let new = format!("{prefix}{old}{suffix}");
        r.object["metadata"]["name"] = json!(new);
        renames.push((r.kind.kind, r.namespace().map(str::to_string), old, new));
    }
    follow_renames(&mut out, &renames);

    if let Some(labels) = k.get("commonLabels") {
        let labels = string_map(labels).map_err(|e| vec![field_err("commonLabels", e)])?;
        for r in &mut out {
            add_labels(r, &labels, true, true);
        }
    }
    if let Some(list) = k.get("labels") {
        let Some(list) = list.as_array() else {
            return Err(vec![field_err("labels", "must be a list".into())]);
        };
        for entry in list {
            let pairs = string_map(&entry["pairs"]).map_err(|e| vec![field_err("labels", e)])?;
            let selectors = entry["includeSelectors"].as_bool().unwrap_or(false);
            let templates = selectors || entry["includeTemplates"].as_bool().unwrap_or(false);
            for r in &mut out {
                add_labels(r, &pairs, selectors, templates);
            }
        }
    }
    if let Some(annotations) = k.get("commonAnnotations") {
        let annotations =
            string_map(annotations).map_err(|e| vec![field_err("commonAnnotations", e)])?;
        for r in &mut out {
            merge_into(&mut r.object["metadata"], "annotations", &annotations);
            if let Some(t) = template_meta(&mut r.object, r.kind.kind) {
                merge_into(t, "annotations", &annotations);
            }
        }
    }
    if let Some(images) = k.get("images") {
        let Some(images) = images.as_array() else {
            return Err(vec![field_err("images", "must be a list".into())]);
        };
        for (i, img) in images.iter().enumerate() {
            let Some(name) = img["name"].as_str() else {
                return Err(vec![field_err(
                    "images",
                    format!("entry {}: name is required", i + 1),
                )]);
            };
            for r in &mut out {
                if let Some(spec) = pod_spec(&mut r.object, r.kind.kind) {
                    set_images(spec, name, img);
                }
            }
        }
    }
    if let Some(replicas) = k.get("replicas") {
        let Some(replicas) = replicas.as_array() else {
            return Err(vec![field_err("replicas", "must be a list".into())]);
        };
        for (i, entry) in replicas.iter().enumerate() {
            let (Some(name), Some(count)) = (entry["name"].as_str(), entry["count"].as_i64())
            else {
                return Err(vec![field_err(
                    "replicas",
                    format!("entry {}: name and an integer count are required", i + 1),
                )]);
            };
            let mut found = false;
            for r in out.iter_mut().filter(|r| {
                matches!(
                    r.kind.kind,
                    "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
                ) && (r.origin == name || r.name() == name)
            }) {
                r.object["spec"]["replicas"] = json!(count);
                found = true;
            }
            if !found {
                return Err(vec![field_err(
                    "replicas",
                    format!("{name}: no Deployment, ReplicaSet, StatefulSet or ReplicationController of that name"),
                )]);
            }
        }
    }
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

fn text_of<'t>(tree: &'t Tree, path: &str) -> Result<&'t str, String> {
    let bytes = tree
        .get(path)
        .ok_or_else(|| format!("{path}: no such file"))?;
    std::str::from_utf8(bytes).map_err(|e| format!("{path}: not UTF-8 text: {e}"))
}

fn read_manifests(tree: &Tree, path: &str) -> Result<Vec<Res>, Vec<String>> {
    let text = text_of(tree, path).map_err(|e| vec![e])?;
    let docs = manifest::parse(path, text).map_err(|e| {
        vec![match e {
            manifest::Error::Document { file, doc, message } => format!(
                "{file}:{}: document {doc}: {message}",
                manifest::doc_line(text, doc)
            ),
            e => e.to_string(),
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

fn strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
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

fn string_map(v: &Value) -> Result<Map<String, Value>, String> {
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
fn resolve(dir: &str, rel: &str) -> Option<String> {
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

/// One ConfigMap or Secret from a generator entry.
fn generate(
    tree: &Tree,
    dir: &str,
    kfile: &str,
    kind: &str,
    g: &Value,
    options: &Value,
) -> Result<Res, String> {
    let known = [
        "name",
        "namespace",
        "behavior",
        "literals",
        "files",
        "envs",
        "env",
        "type",
        "options",
        "immutable",
    ];
    if let Some(bad) = g
        .as_object()
        .and_then(|m| m.keys().find(|k| !known.contains(&k.as_str())))
    {
        return Err(format!("{bad} is not supported in a generator"));
    }
    let name = g["name"].as_str().ok_or("every generator needs a name")?;
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    let mut binary: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut put = |key: String, value: Vec<u8>, from: &str| -> Result<(), String> {
        if data.contains_key(&key) || binary.contains_key(&key) {
            return Err(format!("{name}: key {key} is given twice ({from})"));
        }
        match String::from_utf8(value) {
            Ok(s) => {
                data.insert(key, s);
            }
            Err(e) => {
                binary.insert(key, e.into_bytes());
            }
        }
        Ok(())
    };
    for lit in strings(&g["literals"], "literals")? {
        let (k, v) = lit
            .split_once('=')
            .ok_or_else(|| format!("{name}: literal {lit:?} is not KEY=VALUE"))?;
        put(k.to_string(), unquote(v).as_bytes().to_vec(), "literals")?;
    }
    let mut envs = strings(&g["envs"], "envs")?;
    if let Some(env) = g["env"].as_str() {
        envs.push(env.to_string());
    }
    for env in envs {
        let path = resolve(dir, &env).ok_or_else(|| format!("{env}: leaves the repository"))?;
        let text = text_of(tree, &path)?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{path}:{}: not KEY=VALUE", n + 1))?;
            put(k.trim().to_string(), unquote(v).as_bytes().to_vec(), &path)?;
        }
    }
    for file in strings(&g["files"], "files")? {
        let (key, rel) = match file.split_once('=') {
            Some((k, p)) => (k.to_string(), p.to_string()),
            None => (
                file.rsplit('/').next().unwrap_or(&file).to_string(),
                file.clone(),
            ),
        };
        let path = resolve(dir, &rel).ok_or_else(|| format!("{rel}: leaves the repository"))?;
        let bytes = tree
            .get(&path)
            .ok_or_else(|| format!("{name}: file {rel} ({path}) does not exist"))?;
        put(key, bytes.clone(), &path)?;
    }
    let own = &g["options"];
    let opt = |key: &str| {
        if own.get(key).is_some() {
            &own[key]
        } else {
            &options[key]
        }
    };
    let mut meta = json!({"name": name});
    if let Some(ns) = g["namespace"].as_str() {
        meta["namespace"] = json!(ns);
    }
    for key in ["labels", "annotations"] {
        let mut merged = if options[key].is_null() {
            Map::new()
        } else {
            string_map(&options[key])?
        };
        if !own[key].is_null() {
            merged.extend(string_map(&own[key])?);
        }
        if !merged.is_empty() {
            meta[key] = Value::Object(merged);
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut object = json!({"apiVersion": "v1", "kind": kind, "metadata": meta});
    if kind == "Secret" {
        let mut all: Map<String, Value> = data
            .into_iter()
            .map(|(k, v)| (k, json!(b64.encode(v))))
            .collect();
        all.extend(binary.into_iter().map(|(k, v)| (k, json!(b64.encode(v)))));
        object["type"] = json!(g["type"].as_str().unwrap_or("Opaque"));
        object["data"] = Value::Object(all);
    } else {
        object["data"] = json!(data);
        if !binary.is_empty() {
            object["binaryData"] = Value::Object(
                binary
                    .into_iter()
                    .map(|(k, v)| (k, json!(b64.encode(v))))
                    .collect(),
            );
        }
    }
    if g["immutable"].as_bool() == Some(true) || opt("immutable").as_bool() == Some(true) {
        object["immutable"] = json!(true);
    }
    let info =
        registry::by_kind("v1", kind).ok_or_else(|| format!("{kind} is not a known kind"))?;
    Ok(Res {
        file: kfile.to_string(),
        line: 1,
        kind: info,
        object,
        origin: name.to_string(),
        hash: opt("disableNameSuffixHash").as_bool() != Some(true),
    })
}

/// Strips one pair of matching quotes, as kustomize does for literal and env-file values.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Adds a generated object per its `behavior`: create (the default; the name must be new), merge or replace (an
/// object of that name must come from the resources).
fn place_generated(out: &mut Vec<Res>, mut res: Res, g: &Value) -> Result<(), String> {
    let behavior = g["behavior"].as_str().unwrap_or("create");
    let name = res.origin.clone();
    let ns = res.namespace().map(str::to_string);
    let existing = out.iter_mut().find(|r| {
        r.kind.kind == res.kind.kind
            && (r.origin == name || r.name() == name)
            && (ns.is_none() || r.namespace() == ns.as_deref())
    });
    match (behavior, existing) {
        ("create", None) => out.push(res),
        ("create", Some(r)) => {
            return Err(format!(
                "{name}: a {} of that name already comes from {} (use behavior: merge or replace)",
                res.kind.kind, r.file
            ));
        }
        ("merge", Some(r)) => {
            for field in ["data", "binaryData"] {
                if let Some(Value::Object(new)) = res.object.get(field).cloned() {
                    let target = r.object.get_mut(field).and_then(Value::as_object_mut);
                    match target {
                        Some(t) => t.extend(new),
                        None => r.object[field] = Value::Object(new),
                    }
                }
            }
            for key in ["labels", "annotations"] {
                if let Some(Value::Object(m)) = res.object["metadata"].get(key).cloned() {
                    merge_into(&mut r.object["metadata"], key, &m);
                }
            }
            r.hash |= res.hash;
        }
        ("replace", Some(r)) => {
            res.object["metadata"]["name"] = r.object["metadata"]["name"].clone();
            if let Some(ns) = r.namespace() {
                res.object["metadata"]["namespace"] = json!(ns);
            }
            res.origin = r.origin.clone();
            *r = res;
        }
        ("merge" | "replace", None) => {
            return Err(format!(
                "{name}: behavior {behavior} needs a {} of that name from the resources",
                res.kind.kind
            ));
        }
        (other, _) => {
            return Err(format!(
                "{name}: behavior {other:?} is not one of create, merge, replace"
            ));
        }
    }
    Ok(())
}

fn set_namespace(out: &mut [Res], ns: &str) {
    let accounts: Vec<String> = out
        .iter()
        .filter(|r| r.kind.kind == "ServiceAccount")
        .map(|r| r.name().to_string())
        .collect();
    for r in out.iter_mut() {
        if r.kind.namespaced {
            r.object["metadata"]["namespace"] = json!(ns);
        }
        // Bindings follow the ServiceAccounts of this build into the namespace.
        if !matches!(r.kind.kind, "RoleBinding" | "ClusterRoleBinding") {
            continue;
        }
        {
            for s in items(&mut r.object, "/subjects") {
                if s["kind"] == "ServiceAccount"
                    && s["name"]
                        .as_str()
                        .is_some_and(|n| accounts.iter().any(|a| a == n))
                {
                    s["namespace"] = json!(ns);
                }
            }
        }
    }
}

/// Adds labels to an object; with `selectors`, to the selectors that must keep matching it; with `templates`, to the
/// pod (and job) templates.
fn add_labels(r: &mut Res, labels: &Map<String, Value>, selectors: bool, templates: bool) {
    merge_into(&mut r.object["metadata"], "labels", labels);
    let kind = r.kind.kind;
    if templates {
        if let Some(t) = template_meta(&mut r.object, kind) {
            merge_into(t, "labels", labels);
        }
        if kind == "CronJob" {
            merge_into(
                &mut r.object["spec"]["jobTemplate"]["metadata"],
                "labels",
                labels,
            );
        }
    }
    if !selectors {
        return;
    }
    match kind {
        "Service" => merge_into(&mut r.object["spec"], "selector", labels),
        "ReplicationController" => merge_into(&mut r.object["spec"], "selector", labels),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            merge_into(&mut r.object["spec"]["selector"], "matchLabels", labels)
        }
        "Job" | "PodDisruptionBudget"
            if r.object["spec"]["selector"]["matchLabels"].is_object() =>
        {
            merge_into(&mut r.object["spec"]["selector"], "matchLabels", labels)
        }
        "NetworkPolicy" if r.object["spec"]["podSelector"]["matchLabels"].is_object() => {
            merge_into(&mut r.object["spec"]["podSelector"], "matchLabels", labels)
        }
        _ => {}
    }
}

fn merge_into(parent: &mut Value, key: &str, add: &Map<String, Value>) {
    if add.is_empty() {
        return;
    }
    if !parent.is_object() {
        *parent = json!({});
    }
    let slot = &mut parent[key];
    if !slot.is_object() {
        *slot = json!({});
    }
    if let Some(m) = slot.as_object_mut() {
        for (k, v) in add {
            m.insert(k.clone(), v.clone());
        }
    }
}

/// The pod template's metadata of a workload (created when the template has none).
fn template_meta<'v>(obj: &'v mut Value, kind: &str) -> Option<&'v mut Value> {
    let t = match kind {
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "StatefulSet"
        | "DaemonSet"
        | "Job" => obj.pointer_mut("/spec/template")?,
        "CronJob" => obj.pointer_mut("/spec/jobTemplate/spec/template")?,
        _ => return None,
    };
    let t = t.as_object_mut()?;
    Some(t.entry("metadata").or_insert_with(|| json!({})))
}

/// The pod spec of a pod or a workload.
fn pod_spec<'v>(obj: &'v mut Value, kind: &str) -> Option<&'v mut Value> {
    let spec = match kind {
        "Pod" => obj.pointer_mut("/spec")?,
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "StatefulSet"
        | "DaemonSet"
        | "Job" => obj.pointer_mut("/spec/template/spec")?,
        "CronJob" => obj.pointer_mut("/spec/jobTemplate/spec/template/spec")?,
        _ => return None,
    };
    spec.is_object().then_some(spec)
}

/// Splits an image reference into its name and the rest (`:tag`, `@digest` or both).
fn split_image(image: &str) -> (&str, &str) {
    let head = &image[..image.find('@').unwrap_or(image.len())];
    let slash = head.rfind('/').map_or(0, |i| i + 1);
    let name_end = head[slash..].rfind(':').map_or(head.len(), |c| slash + c);
    image.split_at(name_end)
}

fn set_images(spec: &mut Value, name: &str, img: &Value) {
    for list in ["/initContainers", "/containers", "/ephemeralContainers"] {
        for c in items(spec, list) {
            let Some(image) = c["image"].as_str() else {
                continue;
            };
            let (current, rest) = split_image(image);
            if current != name {
                continue;
            }
            let new_name = img["newName"].as_str().unwrap_or(current);
            let new = if let Some(d) = img["digest"].as_str() {
                format!("{new_name}@{d}")
            } else if let Some(t) = img["newTag"].as_str() {
                format!("{new_name}:{t}")
            } else if let Some(t) = img["newTag"].as_i64() {
                format!("{new_name}:{t}")
            } else {
                format!("{new_name}{rest}")
            };
            c["image"] = json!(new);
        }
    }
}

/// The elements of the list at `pointer`, if there is one (nothing is created).
fn items<'v>(v: &'v mut Value, pointer: &str) -> impl Iterator<Item = &'v mut Value> {
    v.pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

type Rename = (&'static str, Option<String>, String, String);

/// Follows renamed objects into the references other objects hold to them.
fn follow_renames(out: &mut [Res], renames: &[Rename]) {
    if renames.is_empty() {
        return;
    }
    // (kind, old name) -> [(namespace, new name)]
    type Targets<'a> = Vec<(Option<&'a str>, &'a str)>;
    let mut by_name: HashMap<(&str, &str), Targets> = HashMap::new();
    for (kind, ns, old, new) in renames {
        by_name
            .entry((kind, old.as_str()))
            .or_default()
            .push((ns.as_deref(), new.as_str()));
    }
    for r in out.iter_mut() {
        let own_ns = r.namespace().map(str::to_string);
        let kind = r.kind.kind;
        visit_refs(&mut r.object, kind, &mut |target, ref_ns, slot| {
            let Some(old) = slot.as_str() else { return };
            let Some(candidates) = by_name.get(&(target, old)) else {
                return;
            };
            let want = ref_ns.or(own_ns.as_deref());
            let pick = candidates
                .iter()
                .find(|(ns, _)| ns.is_none() || *ns == want)
                .or_else(|| (candidates.len() == 1).then(|| &candidates[0]));
            if let Some((_, new)) = pick {
                *slot = json!(new);
            }
        });
    }
}

/// A visitor of references: (kind referred to, namespace the reference names if any, the name's slot).
type Visit<'f> = &'f mut dyn FnMut(&str, Option<&str>, &mut Value);

/// Calls the visitor with the name at `pointer` under `v`, if there is one.
fn name_at(v: &mut Value, pointer: &str, kind: &str, f: Visit) {
    if let Some(slot) = v.pointer_mut(pointer) {
        f(kind, None, slot);
    }
}

/// Calls `f` for each reference to another object that `obj` holds (nothing is created where there is none).
fn visit_refs(obj: &mut Value, kind: &str, f: Visit) {
    if let Some(spec) = pod_spec(obj, kind) {
        pod_refs(spec, f);
    }
    match kind {
        "StatefulSet" => {
            name_at(obj, "/spec/serviceName", "Service", f);
            for c in items(obj, "/spec/volumeClaimTemplates") {
                name_at(c, "/spec/storageClassName", "StorageClass", f);
            }
        }
        "Ingress" => {
            name_at(obj, "/spec/defaultBackend/service/name", "Service", f);
            for t in items(obj, "/spec/tls") {
                name_at(t, "/secretName", "Secret", f);
            }
            for rule in items(obj, "/spec/rules") {
                for p in items(rule, "/http/paths") {
                    name_at(p, "/backend/service/name", "Service", f);
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            match obj["roleRef"]["kind"].as_str() {
                Some("Role") => name_at(obj, "/roleRef/name", "Role", f),
                Some("ClusterRole") => name_at(obj, "/roleRef/name", "ClusterRole", f),
                _ => {}
            }
            for s in items(obj, "/subjects") {
                if s["kind"] == "ServiceAccount" {
                    let ns = s["namespace"].as_str().map(str::to_string);
                    if let Some(slot) = s.pointer_mut("/name") {
                        f("ServiceAccount", ns.as_deref(), slot);
                    }
                }
            }
        }
        "HorizontalPodAutoscaler" => {
            let target = obj["spec"]["scaleTargetRef"]["kind"].as_str().unwrap_or("");
            if let Some(k) = [
                "Deployment",
                "StatefulSet",
                "ReplicaSet",
                "ReplicationController",
            ]
            .into_iter()
            .find(|k| *k == target)
            {
                name_at(obj, "/spec/scaleTargetRef/name", k, f);
            }
        }
        "PersistentVolumeClaim" => {
            name_at(obj, "/spec/volumeName", "PersistentVolume", f);
            name_at(obj, "/spec/storageClassName", "StorageClass", f);
        }
        "ServiceAccount" => {
            for list in ["/secrets", "/imagePullSecrets"] {
                for s in items(obj, list) {
                    name_at(s, "/name", "Secret", f);
                }
            }
        }
        _ => {}
    }
}

fn pod_refs(spec: &mut Value, f: Visit) {
    name_at(spec, "/serviceAccountName", "ServiceAccount", f);
    for s in items(spec, "/imagePullSecrets") {
        name_at(s, "/name", "Secret", f);
    }
    for list in ["/initContainers", "/containers", "/ephemeralContainers"] {
        for c in items(spec, list) {
            for e in items(c, "/env") {
                name_at(e, "/valueFrom/configMapKeyRef/name", "ConfigMap", f);
                name_at(e, "/valueFrom/secretKeyRef/name", "Secret", f);
            }
            for e in items(c, "/envFrom") {
                name_at(e, "/configMapRef/name", "ConfigMap", f);
                name_at(e, "/secretRef/name", "Secret", f);
            }
        }
    }
    for v in items(spec, "/volumes") {
        name_at(v, "/configMap/name", "ConfigMap", f);
        name_at(v, "/secret/secretName", "Secret", f);
        name_at(
            v,
            "/persistentVolumeClaim/claimName",
            "PersistentVolumeClaim",
            f,
        );
        for s in items(v, "/projected/sources") {
            name_at(s, "/configMap/name", "ConfigMap", f);
            name_at(s, "/secret/name", "Secret", f);
        }
    }
}

/// Kustomize's content hash of a generated ConfigMap or Secret: SHA-256 over a canonical JSON of kind, name, data (and
/// binaryData, type, immutable), the first ten hex digits with the letters kustomize substitutes so that no suffix
/// reads as a number - so a name here is the name `kubectl kustomize` gives.
fn content_hash(obj: &Value) -> String {
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    let kind = obj["kind"].as_str().unwrap_or("");
    m.insert("kind", json!(kind));
    m.insert("name", obj["metadata"]["name"].clone());
    let sorted = |v: &Value| -> Value {
        let b: BTreeMap<String, Value> = v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        json!(b)
    };
    m.insert("data", sorted(&obj["data"]));
    if kind == "Secret" {
        m.insert("type", obj["type"].clone());
    } else if obj["binaryData"].as_object().is_some_and(|b| !b.is_empty()) {
        m.insert("binaryData", sorted(&obj["binaryData"]));
    }
    if obj["immutable"] == json!(true) {
        m.insert("immutable", json!(true));
    }
    // Go's encoder escapes these three inside strings; so must we for the same digest.
    let text = serde_json::to_string(&m)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Tree {
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      serviceAccountName: runner\n      containers:\n      - name: web\n        image: nginx:1.25\n        envFrom:\n        - configMapRef: {name: settings}\n      volumes:\n      - name: cfg\n        configMap: {name: settings}\n      - name: tls\n        secret: {secretName: certs}\n";
    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: runner\n";

    fn find<'a>(out: &'a [Res], kind: &str) -> &'a Value {
        &out.iter().find(|r| r.kind.kind == kind).unwrap().object
    }

    #[test]
    fn overlay_on_a_base_renames_labels_and_generates() {
        let t = tree(&[
            ("base/kustomization.yaml", "resources:\n- deploy.yaml\n- svc.yaml\nconfigMapGenerator:\n- name: settings\n  literals:\n  - MODE=base\n  - COLOR=blue\n"),
            ("base/deploy.yaml", DEPLOY),
            ("base/svc.yaml", SVC),
            ("prod/kustomization.yaml", "resources:\n- ../base\nnamespace: shop\nnamePrefix: prod-\nnameSuffix: -v2\ncommonLabels:\n  env: prod\ncommonAnnotations:\n  team: core\nimages:\n- name: nginx\n  newName: mirror/nginx\n  newTag: \"1.27\"\nreplicas:\n- name: web\n  count: 4\nconfigMapGenerator:\n- name: settings\n  behavior: merge\n  literals: [MODE=prod]\n  files: [conf/app.properties]\nsecretGenerator:\n- name: certs\n  envs: [secret.env]\n  type: kubernetes.io/tls\n"),
            ("prod/conf/app.properties", "level=debug\n"),
            ("prod/secret.env", "# certs\ntls.crt=\"CERT\"\ntls.key=KEY\n"),
        ]);
        let out = build(&t, "prod").unwrap();
        assert_eq!(out.len(), 5, "{out:#?}");
        let d = find(&out, "Deployment");
        assert_eq!(d["metadata"]["name"], "prod-web-v2");
        assert_eq!(d["metadata"]["namespace"], "shop");
        assert_eq!(d["metadata"]["labels"]["env"], "prod");
        assert_eq!(d["metadata"]["annotations"]["team"], "core");
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            json!({"app": "web", "env": "prod"})
        );
        assert_eq!(d["spec"]["template"]["metadata"]["labels"]["env"], "prod");
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["team"],
            "core"
        );
        assert_eq!(d["spec"]["replicas"], 4);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "mirror/nginx:1.27");
        assert_eq!(pod["serviceAccountName"], "prod-runner-v2");

        let cm = find(&out, "ConfigMap");
        let cm_name = cm["metadata"]["name"].as_str().unwrap();
        assert!(
            cm_name.starts_with("prod-settings-v2-")
                && cm_name.len() == "prod-settings-v2-".len() + 10,
            "{cm_name}"
        );
        assert_eq!(
            cm["data"],
            json!({"COLOR": "blue", "MODE": "prod", "app.properties": "level=debug\n"})
        );
        assert_eq!(cm["metadata"]["namespace"], "shop");
        assert_eq!(
            pod["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            cm_name
        );
        assert_eq!(pod["volumes"][0]["configMap"]["name"], cm_name);

        let s = find(&out, "Secret");
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert_eq!(s["data"]["tls.crt"], "Q0VSVA==");
        assert_eq!(
            pod["volumes"][1]["secret"]["secretName"],
            s["metadata"]["name"]
        );

        let svc = find(&out, "Service");
        assert_eq!(
            svc["spec"]["selector"],
            json!({"app": "web", "env": "prod"})
        );
        let at = |kind: &str| {
            let r = out.iter().find(|r| r.kind.kind == kind).unwrap();
            (r.file.clone(), r.line)
        };
        assert_eq!(at("Service"), ("base/svc.yaml".to_string(), 1));
        assert_eq!(at("ServiceAccount"), ("base/svc.yaml".to_string(), 9));
    }

    #[test]
    fn a_changed_literal_changes_the_hash_and_the_hash_is_kustomizes() {
        let a = tree(&[(
            "k/kustomization.yaml",
            "configMapGenerator:\n- name: my-configmap\n  literals: [foo=bar]\n",
        )]);
        let b = tree(&[(
            "k/kustomization.yaml",
            "configMapGenerator:\n- name: my-configmap\n  literals: [foo=baz]\n",
        )]);
        let na = build(&a, "k").unwrap()[0].object["metadata"]["name"].clone();
        let nb = build(&b, "k").unwrap()[0].object["metadata"]["name"].clone();
        assert_ne!(na, nb);
        // The example of kustomize's generatorOptions reference: the same name kustomize gives.
        let doc = json!({"kind": "ConfigMap", "metadata": {"name": "my-application-properties"},
            "data": {"application.properties": "# application.properties\nFOO=Bar"}});
        assert_eq!(content_hash(&doc), "f7mm6mhf59");
        let c = tree(&[("k/kustomization.yaml", "generatorOptions:\n  disableNameSuffixHash: true\nconfigMapGenerator:\n- name: plain\n  literals: [foo=bar]\n")]);
        assert_eq!(
            build(&c, "k").unwrap()[0].object["metadata"]["name"],
            "plain"
        );
    }

    #[test]
    fn unsupported_and_wrong_input_is_named() {
        let t = tree(&[
            ("k/kustomization.yaml", "resources:\n- missing.yaml\n- https://example.invalid/x\n- ../../out\npatches:\n- path: p.yaml\n"),
        ]);
        let errs = build(&t, "k").unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("k/kustomization.yaml:5: patches: not supported")),
            "{errs:?}"
        );
        let t = tree(&[(
            "k/kustomization.yaml",
            "resources:\n- missing.yaml\n- https://example.invalid/x\n- ../../out\n",
        )]);
        let errs = build(&t, "k").unwrap_err();
        assert!(
            errs[0].contains("k/kustomization.yaml:1: resources: missing.yaml: no such file"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("remote resources are not supported"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("../../out: leaves the repository"),
            "{errs:?}"
        );

        let cyc = tree(&[
            ("a/kustomization.yaml", "resources: [../b]\n"),
            ("b/kustomization.yaml", "resources: [../a]\n"),
        ]);
        assert!(build(&cyc, "a").unwrap_err()[0].contains("cycle"));

        let dup = tree(&[
            (
                "k/kustomization.yaml",
                "resources: [cm.yaml]\nconfigMapGenerator:\n- name: c\n  literals: [a=b]\n",
            ),
            (
                "k/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
            ),
        ]);
        assert!(build(&dup, "k").unwrap_err()[0].contains("already comes from k/cm.yaml"));
        let bad_yaml = tree(&[("k/kustomization.yaml", "resources: [a\n")]);
        assert!(build(&bad_yaml, "k").unwrap_err()[0].starts_with("k/kustomization.yaml:"));
    }

    #[test]
    fn images_match_by_name_whatever_the_tag() {
        assert_eq!(split_image("nginx:1.25"), ("nginx", ":1.25"));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", "")
        );
        assert_eq!(
            split_image("localhost:5000/app:v1"),
            ("localhost:5000/app", ":v1")
        );
        assert_eq!(split_image("app@sha256:abc"), ("app", "@sha256:abc"));
        let mut spec = json!({"containers": [{"image": "app:v1"}, {"image": "other"}], "initContainers": [{"image": "app"}]});
        set_images(&mut spec, "app", &json!({"digest": "sha256:feed"}));
        assert_eq!(spec["containers"][0]["image"], "app@sha256:feed");
        assert_eq!(spec["containers"][1]["image"], "other");
        assert_eq!(spec["initContainers"][0]["image"], "app@sha256:feed");
    }
}
