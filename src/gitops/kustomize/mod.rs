//! Kustomize, built as `kubectl kustomize` builds: a `kustomization.yaml` (or a `Component`) accumulates its
//! `resources` (files, and directories with their own kustomization), runs its generators (`configMapGenerator`,
//! `secretGenerator`, `generators`), adds its `components`, then runs its transformers in kustomize's order
//! (`patchesStrategicMerge`, `patches`, `namespace`, `namePrefix`, `nameSuffix`, `commonLabels`/`labels`,
//! `commonAnnotations`, `patchesJson6902`, `replicas`, `images`, `replacements`, then `transformers`). When the whole
//! tree is built, generated names get their content hash, references follow every rename (kustomize's name
//! references, from `defaults.yaml` and `configurations`), `vars` are substituted, and the output is sorted as
//! `sortOptions` (or the caller) asks. Remote resources, Helm charts and exec plugins are refused, naming the file
//! and the field.
//!
//! Everything reads from a map of paths (a commit's tree, or a directory read by `capstan kustomize`), so a
//! kustomization may refer to bases anywhere in it, never outside.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::manifest;

mod fieldspec;
mod generator;
mod output;
mod patch;
mod refs;
mod replacements;
mod resource;
mod transform;
mod vars;

pub use output::{to_yaml, Reorder};
pub use resource::{Id, Res};

use fieldspec::Config;

/// The names a kustomization file may have, in kustomize's order of preference.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields of a kustomization this implementation carries out.
const SUPPORTED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "components",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "imageTags",
    "replicas",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "generators",
    "transformers",
    "validators",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "replacements",
    "vars",
    "configurations",
    "crds",
    "sortOptions",
    "buildMetadata",
    "openapi",
];

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

/// How a build runs: the output order (a kustomization's `sortOptions` wins) and whether files outside a
/// kustomization's directory may be read (`--load-restrictor=LoadRestrictionsNone`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub reorder: Reorder,
    pub load_anywhere: bool,
}

impl Default for Options {
    /// GitOps' builds: in the order the kustomization gives (it applies in dependency order itself), files only
    /// from in or below each kustomization.
    fn default() -> Self {
        Options {
            reorder: Reorder::None,
            load_anywhere: false,
        }
    }
}

/// The kustomization file of a directory, if it has one.
pub fn kustomization_in(tree: &Tree, dir: &str) -> Option<String> {
    FILE_NAMES
        .iter()
        .map(|n| join(dir, n))
        .find(|p| tree.contains_key(p))
}

/// Builds the kustomization in `dir` as GitOps does; every problem is reported, each naming its file.
pub fn build(tree: &Tree, dir: &str) -> Result<Vec<Res>, Vec<Problem>> {
    build_with(tree, dir, &Options::default())
}

/// Builds the kustomization in `dir`.
pub fn build_with(tree: &Tree, dir: &str, opts: &Options) -> Result<Vec<Res>, Vec<Problem>> {
    let mut ctx = Ctx {
        tree,
        opts,
        stack: Vec::new(),
        top: dir.to_string(),
        record_transformers: false,
    };
    let top = ctx
        .single_kustomization(dir)
        .map_err(|e| vec![Problem::in_file(if dir.is_empty() { "." } else { dir }, e)])?;
    // The directory built may hold a Component itself.
    let component = tree
        .get(&top)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| parse_kustomization(t).ok())
        .is_some_and(|v| v["kind"] == "Component");
    let k = Kustomization::read(tree, dir, &top, component)?;
    ctx.record_transformers = strings(&k.k["buildMetadata"], "buildMetadata")
        .unwrap_or_default()
        .iter()
        .any(|w| w == "transformerAnnotations");
    let mut acc = ctx.target(&k, Acc::new())?;
    let fail = |e: String| vec![k.err("resources", e)];
    refs::add_hashes(&mut acc.res);
    refs::fix_references(&mut acc.res, &acc.config).map_err(fail)?;
    vars::resolve(&mut acc.res, &acc.vars, &acc.config).map_err(fail)?;
    acc.res.retain(|r| {
        r.object["metadata"]["annotations"]["config.kubernetes.io/local-config"] != "true"
    });
    transform::build_metadata(&k, &mut acc.res, dir);
    let order = output::order_of(&k.k["sortOptions"], opts.reorder)
        .map_err(|e| vec![k.err("sortOptions", e)])?;
    output::sort(&mut acc.res, &order);
    Ok(acc.res)
}

/// What a build has accumulated: its objects, the transformer configuration its kustomizations asked for, and
/// their vars.
struct Acc {
    res: Vec<Res>,
    config: Config,
    vars: Vec<vars::Var>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            res: Vec::new(),
            config: Config::defaults(),
            vars: Vec::new(),
        }
    }

    /// Adds an object, refusing one whose id is already taken.
    fn add(&mut self, r: Res) -> Result<(), String> {
        let id = r.id();
        if let Some(have) = self.res.iter().find(|o| o.id().same(&id)) {
            return Err(format!(
                "may not add resource with an already registered id: {id} (from {}, already from {})",
                r.file, have.file
            ));
        }
        self.res.push(r);
        Ok(())
    }

    /// Takes in what a base built.
    fn absorb(&mut self, other: Acc) -> Result<(), String> {
        for r in other.res {
            self.add(r)?;
        }
        self.config.merge(&other.config);
        for v in other.vars {
            vars::add(&mut self.vars, v)?;
        }
        Ok(())
    }
}

/// The state of one build.
struct Ctx<'t> {
    tree: &'t Tree,
    opts: &'t Options,
    /// Kustomization files being built, outermost first (to refuse cycles).
    stack: Vec<String>,
    /// The directory the build started in (origin annotations are relative to it).
    top: String,
    /// Whether transformers record themselves on the objects (`buildMetadata: [transformerAnnotations]`).
    record_transformers: bool,
}

fn missing(dir: &str) -> Problem {
    Problem::in_file(
        if dir.is_empty() { "." } else { dir },
        "unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory",
    )
}

impl<'t> Ctx<'t> {
    /// Builds a kustomization (or a component onto `acc`).
    fn target(&mut self, k: &Kustomization<'t>, acc: Acc) -> Result<Acc, Vec<Problem>> {
        if self.stack.contains(&k.file.to_string()) {
            return Err(vec![Problem::in_file(
                &k.file,
                format!(
                    "resources form a cycle: {} -> {}",
                    self.stack.join(" -> "),
                    k.file
                ),
            )]);
        }
        self.stack.push(k.file.to_string());
        let out = self.target_of(k, acc);
        self.stack.pop();
        out
    }

    fn target_of(&mut self, k: &Kustomization<'t>, mut acc: Acc) -> Result<Acc, Vec<Problem>> {
        let mut errors = Vec::new();
        for field in ["resources", "bases"] {
            self.resources(k, field, &mut acc, &mut errors)?;
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for f in strings(&k.k["configurations"], "configurations")
            .map_err(|e| vec![k.err("configurations", e)])?
        {
            let text = k.load(self, "configurations", &f)?;
            let c: Config = serde_yaml_ng::from_str(text)
                .map_err(|e| vec![k.err("configurations", format!("{f}: {e}"))])?;
            acc.config.merge_configuration(&c);
        }
        for f in strings(&k.k["crds"], "crds").map_err(|e| vec![k.err("crds", e)])? {
            let text = k.load(self, "crds", &f)?;
            let defs: Value = serde_yaml_ng::from_str(text)
                .map_err(|e| vec![k.err("crds", format!("{f}: {e}"))])?;
            acc.config
                .merge(&fieldspec::from_openapi_definitions(&defs));
        }
        k.generators(self, &mut acc)?;
        for c in
            strings(&k.k["components"], "components").map_err(|e| vec![k.err("components", e)])?
        {
            let dir = resolve(&k.dir, &c)
                .ok_or_else(|| vec![k.err("components", format!("{c}: leaves the repository"))])?;
            if self.tree.contains_key(&dir) {
                return Err(vec![k.err(
                    "components",
                    format!("accumulating components: must build at directory: '/{dir}': file is not directory"),
                )]);
            }
            let kfile = kustomization_in(self.tree, &dir).ok_or_else(|| vec![missing(&dir)])?;
            let sub = Kustomization::read(self.tree, &dir, &kfile, true)?;
            acc = self.target(&sub, acc)?;
        }
        k.transform(self, &mut acc)?;
        for v in k.k["vars"].as_array().into_iter().flatten() {
            let v = vars::Var::parse(v).map_err(|e| vec![k.err("vars", e)])?;
            vars::bind(&mut acc.res, &v).map_err(|e| vec![k.err("vars", e)])?;
            vars::add(&mut acc.vars, v).map_err(|e| vec![k.err("vars", e)])?;
        }
        Ok(acc)
    }

    /// `resources` (and the older `bases`): files read as manifests, directories built as kustomizations of their
    /// own. Problems with single entries go to `errors`; a malformed list ends the build here.
    fn resources(
        &mut self,
        k: &Kustomization<'t>,
        field: &str,
        acc: &mut Acc,
        errors: &mut Vec<Problem>,
    ) -> Result<(), Vec<Problem>> {
        for entry in strings(&k.k[field], field).map_err(|e| vec![k.err(field, e)])? {
            if entry.contains("://")
                || entry.starts_with("github.com/")
                || entry.starts_with("git@")
            {
                errors.push(k.err(
                    field,
                    format!("{entry}: remote resources are not supported; vendor them into the repository"),
                ));
                continue;
            }
            let Some(path) = resolve(&k.dir, &entry) else {
                errors.push(k.err(field, format!("{entry}: leaves the repository")));
                continue;
            };
            if self.tree.contains_key(&path) {
                if let Err(e) = self.restrict(k, &path) {
                    errors.push(k.err(field, e));
                    continue;
                }
                match read_manifests(self.tree, &path) {
                    Ok(rs) => {
                        for r in rs {
                            if let Err(e) = acc.add(r) {
                                errors.push(k.err(field, format!("accumulating resources: {e}")));
                            }
                        }
                    }
                    Err(mut e) => errors.append(&mut e),
                }
            } else if is_dir(self.tree, &path) {
                let kfile = self
                    .single_kustomization(&path)
                    .map_err(|e| vec![k.err(field, e)])?;
                let sub = Kustomization::read(self.tree, &path, &kfile, false)?;
                let built = self.target(&sub, Acc::new()).map_err(|mut e| {
                    for p in &mut e {
                        if !p.message.starts_with("accumulating resources") {
                            p.message = format!("accumulating resources: {}", p.message);
                        }
                    }
                    e
                })?;
                if let Err(e) = acc.absorb(built) {
                    errors.push(k.err(field, format!("accumulating resources: {e}")));
                }
            } else {
                errors.push(k.err(
                    field,
                    format!("accumulating resources: {entry}: no such file or directory"),
                ));
            }
        }
        Ok(())
    }

    /// The one kustomization file of a directory.
    fn single_kustomization(&self, dir: &str) -> Result<String, String> {
        let found: Vec<String> = FILE_NAMES
            .iter()
            .map(|n| join(dir, n))
            .filter(|p| self.tree.contains_key(p))
            .collect();
        match found.len() {
            0 => Err(format!(
                "accumulating resources: unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '/{dir}'"
            )),
            1 => Ok(found.into_iter().next().unwrap()),
            _ => Err(format!("Found multiple kustomization files under: /{dir}")),
        }
    }

    /// Files a kustomization reads must be in or below its directory (unless the build says otherwise).
    fn restrict(&self, k: &Kustomization, path: &str) -> Result<(), String> {
        if self.opts.load_anywhere || k.dir.is_empty() || path.starts_with(&format!("{}/", k.dir)) {
            return Ok(());
        }
        Err(format!(
            "security; file '/{path}' is not in or below '/{}'",
            k.dir
        ))
    }
}

/// One kustomization file being built: where it is, its text (for the line of each error) and its fields.
struct Kustomization<'t> {
    dir: String,
    file: String,
    text: &'t str,
    k: Value,
}

impl<'t> Kustomization<'t> {
    /// Reads and parses the file, refusing fields this implementation does not carry out and a kind other than
    /// the one expected (a Component where `component`, else a Kustomization).
    fn read(tree: &'t Tree, dir: &str, file: &str, component: bool) -> Result<Self, Vec<Problem>> {
        let text = text_of(tree, file).map_err(|e| vec![e])?;
        let k = parse_kustomization(text).map_err(|(line, e)| {
            vec![Problem {
                line,
                ..Problem::in_file(file, format!("not valid YAML: {e}"))
            }]
        })?;
        if !k.is_object() && !k.is_null() {
            return Err(vec![Problem::in_file(
                file,
                "a kustomization must be a mapping",
            )]);
        }
        let mut k = if k.is_null() {
            Value::Object(Map::new())
        } else {
            k
        };
        // Field names match whatever their case, as kustomize's decoder matches them.
        if let Some(m) = k.as_object_mut() {
            let keys: Vec<String> = m.keys().cloned().collect();
            for key in keys {
                if SUPPORTED.contains(&key.as_str()) {
                    continue;
                }
                if let Some(canon) = SUPPORTED.iter().find(|s| s.eq_ignore_ascii_case(&key)) {
                    if !m.contains_key(*canon) {
                        let v = m.remove(&key).unwrap_or(Value::Null);
                        m.insert(canon.to_string(), v);
                    }
                }
            }
        }
        let this = Kustomization {
            dir: dir.to_string(),
            file: file.to_string(),
            text,
            k,
        };
        let mut errors: Vec<Problem> = this
            .k
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, _)| key)
            .filter(|key| !SUPPORTED.contains(&key.as_str()))
            .map(|key| {
                this.err(
                    key,
                    match key.as_str() {
                        "helmCharts" | "helmChartInflationGenerator" | "helmGlobals" => {
                            "Helm charts are not supported by Capstan's kustomize; render the chart into the repository".to_string()
                        }
                        _ => format!("json: unknown field \"{key}\" (not a kustomization field Capstan knows)"),
                    },
                )
            })
            .collect();
        let kind = this.k["kind"].as_str().unwrap_or("Kustomization");
        let api = this.k["apiVersion"].as_str().unwrap_or("");
        let path = format!("/{dir}");
        match (component, kind) {
            (false, "Component") => errors.push(this.err(
                "kind",
                format!("accumulating resources: expected kind != 'Component' for path '{path}'"),
            )),
            (true, "Component") => {
                if !api.is_empty() && api != "kustomize.config.k8s.io/v1alpha1" {
                    errors.push(this.err(
                        "apiVersion",
                        "apiVersion for Component should be kustomize.config.k8s.io/v1alpha1",
                    ));
                }
            }
            (true, other) => errors.push(this.err(
                "kind",
                format!("accumulating components: accumulateDirectory: \"expected kind 'Component' for path '{path}' but got '{other}'"),
            )),
            (false, "Kustomization") => {}
            (false, other) => errors.push(this.err(
                "kind",
                format!("kind should be Kustomization or Component, not {other}"),
            )),
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(this)
    }

    /// An error about one of its fields, with the line of that field.
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> Problem {
        Problem {
            line: Some(key_line(self.text, field)),
            field: Some(field.to_string()),
            ..Problem::in_file(&self.file, msg)
        }
    }

    /// The text of a file the kustomization names (relative to its directory), within the load restrictions.
    fn load<'c>(&self, ctx: &Ctx<'c>, field: &str, rel: &str) -> Result<&'c str, Vec<Problem>> {
        let path = resolve(&self.dir, rel)
            .ok_or_else(|| vec![self.err(field, format!("{rel}: leaves the repository"))])?;
        ctx.restrict(self, &path)
            .map_err(|e| vec![self.err(field, e)])?;
        text_of(ctx.tree, &path).map_err(|e| vec![self.err(field, e.message)])
    }
}

/// Parses a kustomization, accepting repeated top-level `apiVersion`/`kind` keys (the later wins), as kustomize does.
fn parse_kustomization(text: &str) -> Result<Value, (Option<usize>, String)> {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().contains("duplicate") => {
            let mut seen = std::collections::HashSet::new();
            let mut lines: Vec<&str> = text.lines().collect();
            for i in (0..lines.len()).rev() {
                let key = lines[i].split(':').next().unwrap_or("");
                if matches!(key, "apiVersion" | "kind") && !seen.insert(key) {
                    lines.remove(i);
                }
            }
            serde_yaml_ng::from_str(&lines.join("\n"))
                .map_err(|e| (e.location().map(|l| l.line()), e.to_string()))
        }
        Err(e) => Err((e.location().map(|l| l.line()), e.to_string())),
    }
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

/// The objects of a manifest file (any kind: custom resources of CRDs not installed yet build too).
fn read_manifests(tree: &Tree, path: &str) -> Result<Vec<Res>, Vec<Problem>> {
    let text = text_of(tree, path).map_err(|e| vec![e])?;
    // A key twice in one mapping is an error, as in kustomize (the JSON reading would keep the last).
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        use serde::Deserialize;
        if let Err(e) = serde_yaml_ng::Value::deserialize(de) {
            if e.to_string().contains("duplicate") {
                return Err(vec![Problem {
                    line: e.location().map(|l| l.line()),
                    ..Problem::in_file(path, output::yaml_error(e))
                }]);
            }
            break;
        }
    }
    let docs = manifest::parse_any(path, text).map_err(|e| {
        vec![match e {
            manifest::Error::Document { file, doc, message } => Problem {
                line: Some(manifest::doc_line(text, doc)),
                ..Problem::in_file(&file, format!("document {doc}: {message}"))
            },
            other => Problem::in_file(path, other),
        }]
    })?;
    Ok(docs
        .into_iter()
        .map(|(index, mut object)| {
            // Labels and annotations are strings (`happy: true` reads as "true").
            for f in ["labels", "annotations"] {
                if let Some(m) = object
                    .get_mut("metadata")
                    .and_then(|m| m.get_mut(f))
                    .and_then(Value::as_object_mut)
                {
                    for v in m.values_mut() {
                        if !v.is_string() && !v.is_null() && !v.is_object() && !v.is_array() {
                            *v = Value::String(v.to_string());
                        }
                    }
                }
            }
            Res::new(path, manifest::doc_line(text, index), object)
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
    if v.is_null() {
        return Ok(Map::new());
    }
    let Some(m) = v.as_object() else {
        return Err("must be a map of strings".into());
    };
    let mut out = Map::new();
    for (k, v) in m {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            Value::Null => String::new(),
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

/// `path` relative to directory `from` (both repository-relative), with `..` where needed.
pub(super) fn relative(from: &str, path: &str) -> String {
    let a: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let b: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<&str> = vec![".."; a.len() - common];
    out.extend(&b[common..]);
    out.join("/")
}

#[cfg(test)]
mod tests;
