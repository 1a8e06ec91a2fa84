//! Patches: strategic merge (the API server's engine, [`crate::api::smp`]) and JSON 6902, inline or from files,
//! applied to the objects a `target` selects (group, version, kind, name, namespace as anchored regular
//! expressions; `labelSelector`, `annotationSelector`) or, without a target, to the one object the patch names.
//! The legacy `patchesStrategicMerge` and `patchesJson6902` read into the same form.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{json, Value};

use super::resource::{Id, Res};
use super::{output, Ctx, Kustomization, Problem};
use crate::api::selector::Selector;
use crate::api::smp;

/// Which objects a patch is for.
#[derive(Debug, Default, Clone)]
pub(super) struct Target {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Option<Selector>,
    annotations: Option<Selector>,
}

fn anchored(v: &Value, field: &str) -> Result<Option<Regex>, String> {
    match v[field].as_str().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(p) => Regex::new(&format!("^(?:{p})$"))
            .map(Some)
            .map_err(|e| format!("target {field}: {e}")),
    }
}

impl Target {
    pub(super) fn parse(v: &Value) -> Result<Target, String> {
        let sel = |f: &str| -> Result<Option<Selector>, String> {
            match v[f].as_str().filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => Selector::parse(s)
                    .map(Some)
                    .map_err(|e| format!("target {f}: {e}")),
            }
        };
        Ok(Target {
            group: anchored(v, "group")?,
            version: anchored(v, "version")?,
            kind: anchored(v, "kind")?,
            name: anchored(v, "name")?,
            namespace: anchored(v, "namespace")?,
            labels: sel("labelSelector")?,
            annotations: sel("annotationSelector")?,
        })
    }

    /// Whether it selects an object by any id it has had (replacements choose so).
    pub(super) fn selects_any(&self, r: &Res) -> bool {
        let m = |re: &Option<Regex>, s: &str| re.as_ref().is_none_or(|re| re.is_match(s));
        r.all_ids().iter().any(|id| {
            m(&self.group, &id.group)
                && m(&self.version, &id.version)
                && m(&self.kind, &id.kind)
                && m(&self.name, &id.name)
                && m(&self.namespace, id.effective_namespace())
        }) && self.selects_labels(r)
    }

    fn selects_labels(&self, r: &Res) -> bool {
        let strings = |f: &str| -> BTreeMap<String, String> {
            r.meta_map(f)
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or("").to_string()))
                .collect()
        };
        self.labels
            .as_ref()
            .is_none_or(|s| s.matches(&strings("labels")))
            && self
                .annotations
                .as_ref()
                .is_none_or(|s| s.matches(&strings("annotations")))
    }

    /// Whether it selects an object (by its current id or the one it was read with).
    pub(super) fn selects(&self, r: &Res) -> bool {
        let m = |re: &Option<Regex>, s: &str| re.as_ref().is_none_or(|re| re.is_match(s));
        let (cur, org) = (r.id(), r.org_id());
        let by_id = m(&self.group, &cur.group)
            && m(&self.version, &cur.version)
            && m(&self.kind, &cur.kind)
            && (m(&self.name, &org.name) || m(&self.name, &cur.name))
            && (m(&self.namespace, org.effective_namespace())
                || m(&self.namespace, cur.effective_namespace()));
        let strings = |f: &str| -> BTreeMap<String, String> {
            r.meta_map(f)
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or("").to_string()))
                .collect()
        };
        by_id
            && self
                .labels
                .as_ref()
                .is_none_or(|s| s.matches(&strings("labels")))
            && self
                .annotations
                .as_ref()
                .is_none_or(|s| s.matches(&strings("annotations")))
    }
}

#[derive(Debug, Clone)]
enum Body {
    Strategic(Value),
    Json(Value),
}

/// One patch, ready to apply.
#[derive(Debug, Clone)]
pub(super) struct Patch {
    body: Body,
    target: Option<Target>,
    allow_name_change: bool,
    allow_kind_change: bool,
}

impl Patch {
    /// A patch for the one object it names itself (no target, name and kind kept).
    fn by_own_id(body: Body) -> Patch {
        Patch {
            body,
            target: None,
            allow_name_change: false,
            allow_kind_change: false,
        }
    }

    /// Applies it: to every object its target selects, or to the one object a strategic merge patch names.
    pub(super) fn apply(&self, res: &mut Vec<Res>) -> Result<(), String> {
        let chosen: Vec<usize> = match &self.target {
            Some(t) => (0..res.len()).filter(|&i| t.selects(&res[i])).collect(),
            None => {
                let Body::Strategic(p) = &self.body else {
                    return Err("a JSON 6902 patch needs a target".into());
                };
                vec![unique_target(res, p)?]
            }
        };
        let mut deleted = Vec::new();
        for i in chosen {
            match &self.body {
                Body::Strategic(p) => {
                    if p["$patch"] == "delete" {
                        deleted.push(i);
                        continue;
                    }
                    self.strategic(&mut res[i], p)?;
                }
                Body::Json(ops) => self.json(&mut res[i], ops)?,
            }
        }
        for i in deleted.into_iter().rev() {
            res.remove(i);
        }
        Ok(())
    }

    fn strategic(&self, r: &mut Res, p: &Value) -> Result<(), String> {
        let mut p = p.clone();
        if self.target.is_some() || !self.allow_name_change {
            // A patch chosen by target edits what it selects, whatever name it carries.
            if let Some(m) = p["metadata"].as_object_mut() {
                if !self.allow_name_change {
                    m.remove("name");
                }
                if m.is_empty() {
                    p.as_object_mut().map(|o| o.remove("metadata"));
                }
            }
        }
        if !self.allow_kind_change {
            if let Some(o) = p.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
        }
        self.changing(r, |obj| {
            smp::strategic_merge_prepending(obj, &p).map_err(|e| e.to_string())
        })
    }

    /// A JSON 6902 patch may change anything, the name and kind too (the old id is kept for references).
    fn json(&self, r: &mut Res, ops: &Value) -> Result<(), String> {
        let patch: json_patch::Patch = serde_json::from_value(ops.clone())
            .map_err(|e| format!("not a JSON 6902 patch: {e}"))?;
        let free = Patch {
            allow_name_change: true,
            allow_kind_change: true,
            ..self.clone()
        };
        free.changing(r, |obj| {
            json_patch::patch(obj, &patch).map_err(|e| e.to_string())
        })
    }

    /// Runs an edit, keeping the name and kind unless the options allow changing them (a changed id is recorded).
    fn changing(
        &self,
        r: &mut Res,
        edit: impl FnOnce(&mut Value) -> Result<(), String>,
    ) -> Result<(), String> {
        let before = r.id();
        let (name, kind, api) = (
            r.object["metadata"]["name"].clone(),
            r.object["kind"].clone(),
            r.object["apiVersion"].clone(),
        );
        edit(&mut r.object)?;
        if !self.allow_name_change {
            r.object["metadata"]["name"] = name;
        }
        if !self.allow_kind_change {
            r.object["kind"] = kind;
            r.object["apiVersion"] = api;
        }
        if r.id() != before {
            let now = std::mem::replace(&mut r.object, Value::Null);
            let mut old = now.clone();
            old["metadata"]["name"] = json!(before.name);
            old["kind"] = json!(before.kind);
            r.object = old;
            r.store_prev();
            r.object = now;
        }
        Ok(())
    }
}

/// The one object a strategic merge patch without target names (by kind, name and, if it has one, namespace).
fn unique_target(res: &[Res], p: &Value) -> Result<usize, String> {
    let api = p["apiVersion"].as_str().unwrap_or("");
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    let pid = Id {
        group: group.into(),
        version: version.into(),
        kind: p["kind"].as_str().unwrap_or("").into(),
        name: p["metadata"]["name"].as_str().unwrap_or("").into(),
        namespace: p["metadata"]["namespace"].as_str().unwrap_or("").into(),
    };
    let matches = |id: &Id| {
        id.kind == pid.kind
            && id.name == pid.name
            && id.group == pid.group
            && (pid.namespace.is_empty() || id.effective_namespace() == pid.effective_namespace())
    };
    let found: Vec<usize> = (0..res.len())
        .filter(|&i| res[i].all_ids().iter().any(matches))
        .collect();
    match found.len() {
        1 => Ok(found[0]),
        0 => Err(format!("no resource matches strategic merge patch \"{pid}\": no matches for Id {pid}; failed to find unique target for patch {pid}")),
        _ => Err(format!("multiple matches for Id {pid}; failed to find unique target for patch {pid}")),
    }
}

/// The patches a text holds: a JSON 6902 list, or strategic merge documents (an empty text holds none).
fn bodies(text: &str, source: &str) -> Result<Vec<Body>, String> {
    let docs = output::yaml_docs(text).map_err(|e| format!("{source}: {e}"))?;
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Array(_) => out.push(Body::Json(d)),
            Value::Object(_) => out.push(Body::Strategic(d)),
            Value::Null => {}
            _ => {
                return Err(format!(
                    "{source}: a patch must be a mapping or a list of operations"
                ))
            }
        }
    }
    Ok(out)
}

fn problems<'a>(k: &'a Kustomization, field: &str) -> impl Fn(String) -> Vec<Problem> + 'a {
    let field = field.to_string();
    move |e| vec![k.err(&field, e)]
}

/// `patchesStrategicMerge`: files (or inline texts) of strategic merge patches, each for the object it names.
pub(super) fn legacy_strategic(k: &Kustomization, ctx: &Ctx) -> Result<Vec<Patch>, Vec<Problem>> {
    let mut out = Vec::new();
    let err = problems(k, "patchesStrategicMerge");
    for entry in k.k["patchesStrategicMerge"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let s = entry
            .as_str()
            .ok_or_else(|| err("every entry must be a string".into()))?;
        let text = if s.contains('\n') || s.trim_start().starts_with('{') {
            s
        } else {
            k.load(ctx, "patchesStrategicMerge", s)?
        };
        let found = bodies(text, s).map_err(&err)?;
        if found.is_empty() {
            return Err(err(format!("patch appears to be empty: {s}")));
        }
        for b in found {
            out.push(Patch::by_own_id(b));
        }
    }
    Ok(out)
}

/// `patches` (and the legacy `patchesJson6902`): entries with `path` or `patch`, `target` and `options`.
pub(super) fn patches(
    k: &Kustomization,
    ctx: &Ctx,
    list: &Value,
    field: &str,
) -> Result<Vec<Patch>, Vec<Problem>> {
    let mut out = Vec::new();
    let err = problems(k, field);
    for entry in list.as_array().into_iter().flatten() {
        out.extend(
            entry_patches(k, ctx, entry, field).map_err(|e| e.into_iter().collect::<Vec<_>>())?,
        );
    }
    if !list.is_null() && !list.is_array() {
        return Err(err("must be a list".into()));
    }
    Ok(out)
}

fn entry_patches(
    k: &Kustomization,
    ctx: &Ctx,
    entry: &Value,
    field: &str,
) -> Result<Vec<Patch>, Vec<Problem>> {
    let err = problems(k, field);
    let (text, source) = match (entry["path"].as_str(), entry["patch"].as_str()) {
        (Some(_), Some(_)) => return Err(err("a patch has either path or patch, not both".into())),
        (Some(p), None) => (k.load(ctx, field, p)?, p.to_string()),
        (None, Some(t)) => (t, "inline patch".to_string()),
        (None, None) => return Err(err("every patch needs a path or a patch".into())),
    };
    let target = match entry.get("target").filter(|t| !t.is_null()) {
        Some(t) => Some(Target::parse(t).map_err(&err)?),
        None => None,
    };
    let options = &entry["options"];
    let mut out = Vec::new();
    for b in bodies(text, &source).map_err(&err)? {
        if matches!(b, Body::Json(_)) && target.is_none() {
            return Err(err(format!("{source}: a JSON 6902 patch needs a target")));
        }
        out.push(Patch {
            body: b,
            target: target.clone(),
            allow_name_change: options["allowNameChange"] == true,
            allow_kind_change: options["allowKindChange"] == true,
        });
    }
    Ok(out)
}

/// The patches of a built-in patch transformer configured as an object.
pub(super) fn from_builtin(
    k: &Kustomization,
    ctx: &Ctx,
    c: &Value,
) -> Result<Vec<Patch>, Vec<Problem>> {
    match c["kind"].as_str().unwrap_or("") {
        "PatchStrategicMergeTransformer" => {
            let mut out = Vec::new();
            for p in c["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let text = k.load(ctx, "transformers", p)?;
                for b in bodies(text, p).map_err(problems(k, "transformers"))? {
                    out.push(Patch::by_own_id(b));
                }
            }
            if let Some(t) = c["patches"].as_str() {
                for b in bodies(t, "patches").map_err(problems(k, "transformers"))? {
                    out.push(Patch::by_own_id(b));
                }
            }
            Ok(out)
        }
        "PatchJson6902Transformer" => {
            let mut e = c.clone();
            if let Some(op) = c["jsonOp"].as_str() {
                e["patch"] = json!(op);
            }
            entry_patches(k, ctx, &e, "transformers")
        }
        _ => entry_patches(k, ctx, c, "transformers"),
    }
}
