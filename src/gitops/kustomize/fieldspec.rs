//! Field specs: which field of which kinds a transformer edits (`path: spec/template/metadata/labels`, `kind:
//! Deployment`, `create: true`), kustomize's defaults (`defaults.yaml`) merged with a kustomization's
//! `configurations` files, and the walk that reaches those fields in an object (lists on the way are walked
//! element by element, as kustomize does).

use serde::Deserialize;
use serde_json::Value;

use super::resource::Id;

/// One field of some kinds.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct FieldSpec {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub path: String,
    pub create: bool,
}

impl FieldSpec {
    pub fn applies_to(&self, id: &Id) -> bool {
        id.selected(&self.group, &self.version, &self.kind)
    }
}

/// A kind whose name other objects refer to, and the fields holding those references.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NameRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub field_specs: Vec<FieldSpec>,
}

/// The field specs of every built-in transformer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Config {
    pub name_prefix: Vec<FieldSpec>,
    pub name_suffix: Vec<FieldSpec>,
    pub common_labels: Vec<FieldSpec>,
    /// Extra fields for every `labels` entry.
    pub labels: Vec<FieldSpec>,
    pub template_labels: Vec<FieldSpec>,
    pub volume_claim_template_labels: Vec<FieldSpec>,
    pub common_annotations: Vec<FieldSpec>,
    pub namespace: Vec<FieldSpec>,
    pub var_reference: Vec<FieldSpec>,
    pub name_reference: Vec<NameRef>,
    pub images: Vec<FieldSpec>,
    pub replicas: Vec<FieldSpec>,
}

const DEFAULTS: &str = include_str!("defaults.yaml");

impl Config {
    /// kustomize's defaults.
    pub fn defaults() -> Config {
        serde_yaml_ng::from_str(DEFAULTS).expect("defaults.yaml is a transformer configuration")
    }

    /// Adds a `configurations` file's specs as kustomize does: the file's specs go in first, then each spec already
    /// here only if none of the file's covers it - same path, and of a kind the spec selects. So a file giving
    /// `metadata/name` for kind `Foo` replaces the default `metadata/name` of every kind (prefixes then apply to
    /// `Foo` alone), while one for another path adds to the defaults.
    pub fn merge_configuration(&mut self, file: &Config) {
        fn under(ours: &mut Vec<FieldSpec>, theirs: &[FieldSpec]) {
            ours.retain(|d| {
                !theirs.iter().any(|x| {
                    x.path == d.path
                        && (d.group.is_empty() || d.group == x.group)
                        && (d.version.is_empty() || d.version == x.version)
                        && (d.kind.is_empty() || d.kind == x.kind)
                })
            });
        }
        under(&mut self.name_prefix, &file.name_prefix);
        under(&mut self.name_suffix, &file.name_suffix);
        under(&mut self.common_labels, &file.common_labels);
        under(&mut self.labels, &file.labels);
        under(&mut self.template_labels, &file.template_labels);
        under(
            &mut self.volume_claim_template_labels,
            &file.volume_claim_template_labels,
        );
        under(&mut self.common_annotations, &file.common_annotations);
        under(&mut self.namespace, &file.namespace);
        under(&mut self.var_reference, &file.var_reference);
        under(&mut self.images, &file.images);
        under(&mut self.replicas, &file.replicas);
        self.merge(file);
    }

    /// Adds another configuration's specs (those already present are kept once).
    pub fn merge(&mut self, o: &Config) {
        fn add(into: &mut Vec<FieldSpec>, from: &[FieldSpec]) {
            for f in from {
                if !into.contains(f) {
                    into.push(f.clone());
                }
            }
        }
        add(&mut self.name_prefix, &o.name_prefix);
        add(&mut self.name_suffix, &o.name_suffix);
        add(&mut self.common_labels, &o.common_labels);
        add(&mut self.labels, &o.labels);
        add(&mut self.template_labels, &o.template_labels);
        add(
            &mut self.volume_claim_template_labels,
            &o.volume_claim_template_labels,
        );
        add(&mut self.common_annotations, &o.common_annotations);
        add(&mut self.namespace, &o.namespace);
        add(&mut self.var_reference, &o.var_reference);
        add(&mut self.images, &o.images);
        add(&mut self.replicas, &o.replicas);
        for n in &o.name_reference {
            match self
                .name_reference
                .iter_mut()
                .find(|m| m.kind == n.kind && m.group == n.group && m.version == n.version)
            {
                Some(m) => add(&mut m.field_specs, &n.field_specs),
                None => self.name_reference.push(n.clone()),
            }
        }
    }
}

/// The name references an OpenAPI definitions file (kustomize's `crds` field) declares: a property marked
/// `x-kubernetes-object-ref-kind` (and `-api-version`) holds, in its `name`, the name of an object of that kind -
/// reached from each top-level kind (a definition with `apiVersion` and `kind` properties) through `$ref`s.
pub fn from_openapi_definitions(defs: &serde_json::Value) -> Config {
    let mut config = Config::default();
    let Some(all) = defs.as_object() else {
        return config;
    };
    type Defs = serde_json::Map<String, serde_json::Value>;
    fn schema_of<'a>(all: &'a Defs, name: &str) -> Option<&'a serde_json::Value> {
        all.get(name).map(|d| d.get("Schema").unwrap_or(d))
    }
    fn walk_props(
        schema: &serde_json::Value,
        path: &str,
        depth: usize,
        all: &Defs,
        found: &mut Vec<(String, String, String)>,
    ) {
        if depth > 16 {
            return;
        }
        for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
            let here = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            if let Some(kind) = prop["x-kubernetes-object-ref-kind"].as_str() {
                let version = prop["x-kubernetes-object-ref-api-version"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                found.push((kind.to_string(), version, format!("{here}/name")));
                continue;
            }
            if let Some(r) = prop["$ref"].as_str() {
                if let Some(s) = schema_of(all, r) {
                    walk_props(s, &here, depth + 1, all, found);
                }
            } else {
                walk_props(prop, &here, depth + 1, all, found);
            }
        }
    }
    for (name, def) in all {
        let schema = def.get("Schema").unwrap_or(def);
        let props = &schema["properties"];
        if props.get("apiVersion").is_none() || props.get("kind").is_none() {
            continue;
        }
        let kind = name.rsplit('.').next().unwrap_or(name);
        let mut found = Vec::new();
        walk_props(schema, "", 0, all, &mut found);
        for (target, version, path) in found {
            let (group, version) = match version.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), version),
            };
            config.merge(&Config {
                name_reference: vec![NameRef {
                    group,
                    version,
                    kind: target,
                    field_specs: vec![FieldSpec {
                        kind: kind.to_string(),
                        path,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            });
        }
    }
    config
}

/// One step of a path: a field, and whether the path says it holds a list (`containers[]`).
#[derive(Debug, Clone)]
struct Seg {
    field: String,
    seq: bool,
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'/') => {
                cur.push('/');
                chars.next();
            }
            '/' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| Seg {
            field: s.strip_suffix("[]").unwrap_or(&s).to_string(),
            seq: s.ends_with("[]"),
        })
        .collect()
}

/// What a walk does at each field it reaches (a created field arrives as null; left null, it is removed again).
pub type Visit<'f> = &'f mut dyn FnMut(&mut Value) -> Result<(), String>;

/// Calls `f` at every field `path` reaches in `v`, creating missing maps on the way (and the field) when `create`.
pub fn walk(v: &mut Value, path: &str, create: bool, f: Visit) -> Result<(), String> {
    walk_segs(v, &segments(path), create, f)
}

fn walk_segs(v: &mut Value, segs: &[Seg], create: bool, f: Visit) -> Result<(), String> {
    let Some((seg, rest)) = segs.split_first() else {
        return f(v);
    };
    match v {
        Value::Array(items) => {
            for i in items {
                walk_segs(i, segs, create, f)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            if m.get(&seg.field).is_some_and(|c| !c.is_null()) {
                return walk_segs(m.get_mut(&seg.field).unwrap(), rest, create, f);
            }
            // Lists are never made up.
            if !create || seg.seq {
                return Ok(());
            }
            let fresh = if rest.is_empty() {
                Value::Null
            } else {
                Value::Object(Default::default())
            };
            m.insert(seg.field.clone(), fresh);
            let slot = m.get_mut(&seg.field).unwrap();
            walk_segs(slot, rest, create, f)?;
            if slot.is_null() || slot.as_object().is_some_and(|o| o.is_empty()) && !rest.is_empty()
            {
                m.remove(&seg.field);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_for_one_kind_replaces_the_default_for_every_kind_on_that_path() {
        // As `kubectl kustomize` does: `metadata/name` for kind Foo only prefixes Foo; another path adds.
        let file: Config =
            serde_yaml_ng::from_str("namePrefix: [{path: metadata/name, kind: Foo}]").unwrap();
        let mut c = Config::defaults();
        c.merge_configuration(&file);
        assert!(c
            .name_prefix
            .iter()
            .all(|f| f.path != "metadata/name" || f.kind == "Foo"));
        let other: Config =
            serde_yaml_ng::from_str("namePrefix: [{path: data/x, kind: ConfigMap}]").unwrap();
        let mut c = Config::defaults();
        c.merge_configuration(&other);
        assert!(c
            .name_prefix
            .iter()
            .any(|f| f.path == "metadata/name" && f.kind.is_empty()));
        assert!(c.name_prefix.iter().any(|f| f.path == "data/x"));
    }
    use serde_json::json;

    #[test]
    fn walks_lists_on_the_way_and_creates_only_when_asked() {
        let mut v =
            json!({"spec": {"containers": [{"image": "a"}, {"image": "b"}, {"name": "c"}]}});
        let mut seen = Vec::new();
        walk(&mut v, "spec/containers[]/image", false, &mut |x| {
            seen.push(x.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![json!("a"), json!("b")]);
        walk(&mut v, "spec/template/metadata/labels", true, &mut |x| {
            *x = json!({"a": "b"});
            Ok(())
        })
        .unwrap();
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"],
            json!({"a": "b"})
        );
        let mut w = json!({"metadata": {}});
        walk(&mut w, "metadata/annotations/x\\/y", false, &mut |_| Ok(())).unwrap();
        assert_eq!(w, json!({"metadata": {}}));
        assert!(Config::defaults().name_reference.len() > 10);
    }
}
