//! `vars` (deprecated in kustomize in favour of `replacements`, still built as kustomize builds them): a var names a
//! field of one object (`objref`, `fieldref.fieldpath`, `metadata.name` by default); once the whole tree is built,
//! `$(NAME)` in the fields the `varReference` configuration lists (container commands, args and env values, ...)
//! is replaced by that field's value. `$$(NAME)` stays `$(NAME)`.

use serde_json::Value;

use super::fieldspec::{walk, Config};
use super::resource::Res;

/// One var.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Var {
    name: String,
    api_version: String,
    kind: String,
    obj_name: String,
    namespace: String,
    field_path: String,
}

impl Var {
    pub(super) fn parse(v: &Value) -> Result<Var, String> {
        let name = v["name"]
            .as_str()
            .ok_or("every var needs a name")?
            .to_string();
        let o = &v["objref"];
        let s = |x: &Value| x.as_str().unwrap_or("").to_string();
        Ok(Var {
            api_version: s(&o["apiVersion"]),
            kind: s(&o["kind"]),
            obj_name: o["name"]
                .as_str()
                .ok_or_else(|| format!("var {name}: objref needs a name"))?
                .to_string(),
            namespace: s(&o["namespace"]),
            field_path: v["fieldref"]["fieldpath"]
                .as_str()
                .unwrap_or("metadata.name")
                .to_string(),
            name,
        })
    }
}

/// Adds a var; two of one name are an error (kustomize's words).
pub(super) fn add(vars: &mut Vec<Var>, v: Var) -> Result<(), String> {
    if vars.iter().any(|o| o.name == v.name) {
        return Err(format!("var '{}' already encountered", v.name));
    }
    vars.push(v);
    Ok(())
}

/// The value at a dotted field path (`spec.ports[0].port`).
pub(super) fn at_path<'v>(obj: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = obj;
    for part in path.split('.') {
        let (field, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = cur.get(idx.parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// Binds a var to the one object it names among those its kustomization has accumulated (kustomize binds at the
/// level that declares the var, so a same-named object elsewhere in the tree does not make it ambiguous).
pub(super) fn bind(res: &mut [Res], v: &Var) -> Result<(), String> {
    let (group, version) = match v.api_version.split_once('/') {
        Some((g, ver)) => (g.to_string(), ver.to_string()),
        None => (String::new(), v.api_version.clone()),
    };
    let found: Vec<usize> = (0..res.len())
        .filter(|&i| {
            res[i].all_ids().iter().any(|id| {
                id.selected(&group, &version, &v.kind)
                    && id.name == v.obj_name
                    && (v.namespace.is_empty() || id.effective_namespace() == v.namespace)
            })
        })
        .collect();
    match found.len() {
        0 => Ok(()),
        1 => {
            res[found[0]].vars.push(v.name.clone());
            Ok(())
        }
        n => Err(format!(
            "found {n} resId matches for var {} (unable to disambiguate)",
            v.name
        )),
    }
}

/// Replaces `$(NAME)` everywhere the var reference field specs reach.
pub(super) fn resolve(res: &mut [Res], vars: &[Var], config: &Config) -> Result<(), String> {
    if vars.is_empty() {
        return Ok(());
    }
    let mut values: Vec<(String, Value)> = Vec::new();
    for v in vars {
        let Some(r) = res.iter().find(|r| r.vars.contains(&v.name)) else {
            return Err(format!(
                "var '{}' cannot be mapped to a field in the set of known resources",
                v.name
            ));
        };
        let value = at_path(&r.object, &v.field_path).ok_or_else(|| {
            format!(
                "field specified in var '{}' not found in corresponding resource",
                v.name
            )
        })?;
        values.push((v.name.clone(), value.clone()));
    }
    for r in res.iter_mut() {
        let id = r.id();
        for fs in config.var_reference.iter().filter(|f| f.applies_to(&id)) {
            walk(&mut r.object, &fs.path, false, &mut |slot| {
                expand_value(slot, &values);
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn expand_value(slot: &mut Value, values: &[(String, Value)]) {
    match slot {
        Value::String(s) => {
            // A field that is just `$(NAME)` takes the value with its type.
            if let Some(name) = s.strip_prefix("$(").and_then(|x| x.strip_suffix(')')) {
                if let Some((_, v)) = values.iter().find(|(n, _)| n == name) {
                    if !v.is_string() && !v.is_object() && !v.is_array() {
                        *slot = v.clone();
                        return;
                    }
                }
            }
            *s = expand(s, values);
        }
        Value::Array(items) => items.iter_mut().for_each(|i| expand_value(i, values)),
        Value::Object(m) => m.values_mut().for_each(|i| expand_value(i, values)),
        _ => {}
    }
}

/// Kubernetes' `$(VAR)` expansion: known names replaced, `$$` an escaped `$`, anything else left as written.
fn expand(s: &str, values: &[(String, Value)]) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some((_, v)) = values.iter().find(|(n, _)| n == name) {
                        match v {
                            Value::String(x) => out.push_str(x),
                            other => out.push_str(&other.to_string()),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_known_names_and_keeps_the_rest() {
        let v = vec![("A".to_string(), json!("x")), ("N".to_string(), json!(3))];
        assert_eq!(expand("$(A)-$(B)-$$(A)", &v), "x-$(B)-$(A)");
        let mut n = json!("$(N)");
        expand_value(&mut n, &v);
        assert_eq!(n, json!(3));
        assert_eq!(
            at_path(
                &json!({"spec": {"ports": [{"port": 80}]}}),
                "spec.ports[0].port"
            ),
            Some(&json!(80))
        );
    }
}
