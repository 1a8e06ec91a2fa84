//! Name references, once the whole tree is built: every field the `nameReference` configuration lists (pod volumes
//! and env, role bindings, StatefulSet `serviceName`, Ingress backends, ...) that names an object renamed by a
//! prefix, a suffix, a namespace or a content hash is changed to its new name, choosing among same-named objects
//! by namespace and by the prefixes and suffixes of the referring object, as kustomize does. Also the content hash
//! of generated ConfigMaps and Secrets.

use serde_json::{json, Value};

use super::fieldspec::{walk, Config};
use super::resource::{Id, Res};

/// Gives every generated object that asks for it its content-hash suffix.
pub(super) fn add_hashes(res: &mut [Res]) {
    for r in res.iter_mut().filter(|r| r.hash) {
        let new = format!("{}-{}", r.name(), content_hash(&r.object));
        r.store_prev();
        r.set_name(&new);
        r.hash = false;
    }
}

/// Kustomize's content hash of a ConfigMap or Secret: SHA-256 over the JSON of its kind, data (binaryData;
/// a Secret's type and stringData) and an empty name; the first ten hex digits with the
/// letters kustomize substitutes so that no suffix reads as a number.
pub(super) fn content_hash(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("");
    let or_empty = |v: &Value| if v.is_object() { v.clone() } else { json!("") };
    let mut m = serde_json::Map::new();
    m.insert("data".into(), or_empty(&obj["data"]));
    m.insert("kind".into(), json!(kind));
    // kustomize looks the name up by a path it never finds, so every hash has an empty name.
    m.insert("name".into(), json!(""));
    if kind == "Secret" {
        if obj["stringData"].is_object() {
            m.insert("stringData".into(), obj["stringData"].clone());
        }
        m.insert(
            "type".into(),
            obj["type"].as_str().map_or(json!(""), |t| json!(t)),
        );
    } else if obj["binaryData"].is_object() {
        m.insert("binaryData".into(), obj["binaryData"].clone());
    }
    // Go's encoder sorts keys and escapes these three inside strings; so must we for the same digest.
    let text = serde_json::to_string(&sorted(&Value::Object(m)))
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

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        o => o.clone(),
    }
}

/// Follows every rename into the fields that refer to the renamed objects.
pub(super) fn fix_references(res: &mut [Res], config: &Config) -> Result<(), String> {
    for target in &config.name_reference {
        for i in 0..res.len() {
            let referrer = res[i].id();
            for fs in target
                .field_specs
                .iter()
                .filter(|f| f.applies_to(&referrer))
            {
                let role_ref = fs.path.ends_with("roleRef/name").then(|| {
                    let rr = &res[i].object["roleRef"];
                    (
                        rr["apiGroup"].as_str().unwrap_or("").to_string(),
                        rr["kind"].as_str().unwrap_or("").to_string(),
                    )
                });
                let want = Want {
                    referrer: res[i].clone(),
                    group: &target.group,
                    version: &target.version,
                    kind: &target.kind,
                    role_ref,
                };
                let mut obj = std::mem::take(&mut res[i].object);
                let ctx = (&*res, i, &want);
                let out = walk(&mut obj, &fs.path, false, &mut |slot| set(slot, ctx));
                res[i].object = obj;
                out.map_err(|e| {
                    format!(
                        "updating name reference in '{}' field of '{referrer}': {e}",
                        fs.path
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// The kind of object a reference is to.
struct Want<'a> {
    /// The referring object as it was before the walk took its fields.
    referrer: Res,
    group: &'a str,
    version: &'a str,
    kind: &'a str,
    /// For `roleRef/name`: the roleRef's apiGroup and kind.
    role_ref: Option<(String, String)>,
}

type Ctx<'a> = (&'a [Res], usize, &'a Want<'a>);

fn set(slot: &mut Value, ctx: Ctx) -> Result<(), String> {
    match slot {
        Value::String(old) => {
            let all: Vec<usize> = (0..ctx.0.len()).collect();
            if let Some(j) = select(old, &all, ctx, false)? {
                *slot = json!(ctx.0[j].name());
            }
            Ok(())
        }
        Value::Array(items) => {
            for it in items {
                set(it, ctx)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            let Some(old) = m.get("name").and_then(Value::as_str).map(str::to_string) else {
                return Err("path config error; no 'name' field in node".into());
            };
            if m.get("namespace").is_some_and(|n| n.is_null() || n == "") {
                return Err(format!(
                    "Invalid Input: namespace is blank for resource {}",
                    ctx.2.referrer.id()
                ));
            }
            let candidates: Vec<usize> = match m.get("namespace").and_then(Value::as_str) {
                None => (0..ctx.0.len()).collect(),
                Some(ns) => {
                    let by_org: Vec<usize> = (0..ctx.0.len())
                        .filter(|&j| ctx.0[j].org_id().namespace == ns)
                        .collect();
                    if by_org.is_empty() {
                        (0..ctx.0.len())
                            .filter(|&j| ctx.0[j].namespace().unwrap_or("") == ns)
                            .collect()
                    } else {
                        by_org
                    }
                }
            };
            if let Some(j) = select(&old, &candidates, ctx, true)? {
                let r = &ctx.0[j];
                m.insert("name".into(), json!(r.name()));
                if let Some(ns) = r.namespace() {
                    m.insert("namespace".into(), json!(ns));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The object a reference by `old` name means, if it was renamed; an error when several could be meant.
fn select(
    old: &str,
    candidates: &[usize],
    (res, _me, want): Ctx,
    with_ns: bool,
) -> Result<Option<usize>, String> {
    let referrer = &want.referrer;
    let prev_selected =
        |j: usize, g: &str, k: &str| res[j].prev.iter().any(|id: &Id| id.selected(g, "", k));
    let mut c: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&j| res[j].prev.iter().any(|id| id.name == old))
        .filter(|&j| {
            res[j]
                .prev
                .iter()
                .any(|id| id.selected(want.group, want.version, want.kind))
        })
        .filter(|&j| match &want.role_ref {
            Some((g, k)) => prev_selected(j, g, k),
            None => true,
        })
        .filter(|&j| {
            !referrer.namespaced()
                || !res[j].namespaced()
                || res[j].kind() == "ServiceAccount"
                || res[j].id().effective_namespace() == referrer.id().effective_namespace()
        })
        .collect();
    if c.len() == 1 {
        return Ok(Some(c[0]));
    }
    let ends = |a: &[String], b: &[String], allow_empty: bool| {
        if allow_empty && (a.is_empty() || b.is_empty()) {
            return true;
        }
        let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
        if short.is_empty() {
            return long.is_empty();
        }
        long[long.len() - short.len()..] == *short
    };
    let fits = |j: usize, allow_empty: bool| {
        ends(&res[j].prefixes, &referrer.prefixes, allow_empty)
            && ends(&res[j].suffixes, &referrer.suffixes, allow_empty)
    };
    c.retain(|&j| fits(j, true));
    if c.len() > 1 {
        c.retain(|&j| fits(j, false));
    }
    match c.len() {
        0 => Ok(None),
        1 => Ok(Some(c[0])),
        _ => {
            let same = c.iter().all(|&j| {
                res[j].name() == res[c[0]].name()
                    && (!with_ns || res[j].namespace() == res[c[0]].namespace())
            });
            if same {
                return Ok(Some(c[0]));
            }
            let ids: Vec<String> = c.iter().map(|&j| res[j].id().to_string()).collect();
            Err(format!(
                "found multiple possible referrals: {}",
                ids.join(", ")
            ))
        }
    }
}
