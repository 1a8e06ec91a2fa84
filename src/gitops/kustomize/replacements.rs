//! `replacements` (and the `ReplacementTransformer`): copy one field of a source object (selected by group,
//! version, kind, name, namespace; `fieldPath` defaults to `metadata.name`) into fields of target objects
//! (`select`/`reject`, `fieldPaths` like `spec.template.spec.containers.[name=web].image`, with `delimiter`,
//! `index` and `create` options), inline or from files.

use serde_json::{json, Value};

use super::patch::Target;
use super::resource::Res;
use super::{Ctx, Kustomization, Problem};

/// Loads the replacements a kustomization lists (inline, or `path:` files holding one or a list).
pub(super) fn load(k: &Kustomization, ctx: &Ctx, list: &Value) -> Result<Vec<Value>, Vec<Problem>> {
    let mut out = Vec::new();
    for r in list.as_array().into_iter().flatten() {
        if let Some(p) = r["path"].as_str() {
            let text = k.load(ctx, "replacements", p)?;
            for d in super::output::yaml_docs(text).map_err(|e| vec![k.err("replacements", e)])? {
                match d {
                    Value::Array(items) => out.extend(items),
                    Value::Null => {}
                    other => out.push(other),
                }
            }
        } else {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// Applies replacements in order.
pub(super) fn apply(res: &mut [Res], list: &[Value]) -> Result<(), String> {
    for r in list {
        let targets = r["targets"].as_array().filter(|t| !t.is_empty());
        let (Some(source), Some(targets)) = (r.get("source").filter(|s| !s.is_null()), targets)
        else {
            return Err("replacements must specify a source and at least one target".into());
        };
        let value = source_value(res, source)?;
        for t in targets {
            target(res, &value, t)?;
        }
    }
    Ok(())
}

fn source_value(res: &[Res], source: &Value) -> Result<Value, String> {
    let sel = Target::parse(source)?;
    let found: Vec<&Res> = res.iter().filter(|r| sel.selects_any(r)).collect();
    let described = || serde_json::to_string(source).unwrap_or_default();
    let r = match found.len() {
        1 => found[0],
        0 => return Err(format!("nothing selected by {}", described())),
        _ => return Err(format!("multiple matches for selector {}", described())),
    };
    let path = source["fieldPath"].as_str().unwrap_or("metadata.name");
    let mut obj = r.object.clone();
    let mut got = Vec::new();
    reach(&mut obj, &split(path), false, &mut |v| got.push(v.clone()))?;
    let v = got
        .into_iter()
        .next()
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            format!(
                "fieldPath `{path}` is missing for replacement source {}",
                r.id()
            )
        })?;
    let o = &source["options"];
    match o["delimiter"].as_str().filter(|d| !d.is_empty()) {
        None => Ok(v),
        Some(d) => {
            let s = scalar_text(&v).ok_or("delimiter option can only be used with scalar nodes")?;
            let parts: Vec<&str> = s.split(d).collect();
            let i = o["index"].as_i64().unwrap_or(0);
            if i < 0 || i as usize >= parts.len() {
                return Err(format!("options.index {i} is out of bounds for value {s}"));
            }
            Ok(json!(parts[i as usize]))
        }
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn target(res: &mut [Res], value: &Value, t: &Value) -> Result<(), String> {
    let select = t
        .get("select")
        .filter(|s| !s.is_null())
        .ok_or("target must specify resources to select")?;
    let sel = Target::parse(select)?;
    let rejects: Vec<Target> = t["reject"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Target::parse)
        .collect::<Result<_, _>>()?;
    let paths: Vec<String> = match t["fieldPaths"].as_array() {
        Some(p) if !p.is_empty() => p
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => vec!["metadata.name".into()],
    };
    let o = &t["options"];
    let create = o["create"] == true;
    for r in res.iter_mut() {
        if !sel.selects_any(r) || rejects.iter().any(|x| x.selects_any(r)) {
            continue;
        }
        for p in &paths {
            let mut hits = 0;
            let mut err = None;
            reach(&mut r.object, &split(p), create, &mut |slot| {
                hits += 1;
                if let Err(e) = set(slot, value, o) {
                    err = Some(e);
                }
            })?;
            if let Some(e) = err {
                return Err(e);
            }
            if hits == 0 {
                return Err(if create {
                    format!("unable to find or create field \"{p}\" in replacement target")
                } else {
                    format!("unable to find field \"{p}\" in replacement target")
                });
            }
        }
    }
    Ok(())
}

/// Sets a target field: a scalar keeps its type (its text becomes the source's), anything else takes the value.
fn set(slot: &mut Value, value: &Value, o: &Value) -> Result<(), String> {
    let mut value = value.clone();
    if let Some(d) = o["delimiter"].as_str().filter(|d| !d.is_empty()) {
        // A field just created is an empty string to split.
        let cur = if slot.is_null() {
            String::new()
        } else {
            scalar_text(slot).ok_or("delimiter option can only be used with scalar nodes")?
        };
        let v = scalar_text(&value).unwrap_or_default();
        let mut parts: Vec<String> = cur.split(d).map(str::to_string).collect();
        let i = o["index"].as_i64().unwrap_or(0);
        if i < 0 {
            parts.insert(0, v);
        } else if i as usize >= parts.len() {
            parts.push(v);
        } else {
            parts[i as usize] = v;
        }
        value = json!(parts.join(d));
    }
    *slot = match (&*slot, scalar_text(&value)) {
        (Value::String(_), Some(text)) => json!(text),
        (Value::Number(_) | Value::Bool(_), Some(text)) => serde_json::from_str(&text)
            .ok()
            .filter(|v: &Value| v.is_number() || v.is_boolean())
            .unwrap_or(json!(text)),
        _ => value,
    };
    Ok(())
}

/// Splits a field path on dots outside brackets.
fn split(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            '.' if depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Calls `f` at each field a path reaches (`[key=value]` picks list elements, a number indexes, `*` takes all),
/// creating what is missing when `create`.
fn reach(
    v: &mut Value,
    segs: &[String],
    create: bool,
    f: &mut dyn FnMut(&mut Value),
) -> Result<(), String> {
    let Some((seg, rest)) = segs.split_first() else {
        f(v);
        return Ok(());
    };
    if let Some(inner) = seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let (k, want) = inner.split_once('=').unwrap_or((inner, ""));
        if v.is_null() && create {
            *v = json!([]);
        }
        let Some(items) = v.as_array_mut() else {
            return Ok(());
        };
        let mut any = false;
        for it in items.iter_mut() {
            let matches = match &it[k] {
                Value::String(s) => s == want,
                other => scalar_text(other).is_some_and(|t| t == want),
            };
            if matches {
                any = true;
                reach(it, rest, create, f)?;
            }
        }
        if !any && create {
            items.push(json!({ k: want }));
            let last = items.last_mut().unwrap();
            reach(last, rest, create, f)?;
        }
        return Ok(());
    }
    if let Some(items) = v.as_array_mut() {
        if seg == "*" {
            for it in items {
                reach(it, rest, create, f)?;
            }
        } else if let Ok(i) = seg.parse::<usize>() {
            if let Some(it) = items.get_mut(i) {
                reach(it, rest, create, f)?;
            }
        }
        return Ok(());
    }
    if v.is_null() && create {
        *v = json!({});
    }
    let Some(m) = v.as_object_mut() else {
        return Ok(());
    };
    if seg == "*" {
        for it in m.values_mut() {
            reach(it, rest, create, f)?;
        }
        return Ok(());
    }
    match m.get_mut(seg.as_str()) {
        Some(child) => reach(child, rest, create, f),
        None if create => {
            m.insert(seg.clone(), Value::Null);
            reach(m.get_mut(seg.as_str()).unwrap(), rest, create, f)
        }
        None => Ok(()),
    }
}
