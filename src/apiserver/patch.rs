//! Patches and field ownership: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (lists
//! merged by Kubernetes' merge keys, with the `$patch`, `$setElementOrder`, `$retainKeys` and
//! `$deleteFromPrimitiveList` directives), and server-side apply (field sets per manager in `managedFields`,
//! conflicts naming the managers, `force`, and pruning of fields a manager stopped applying).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid patch: {0}")]
    Invalid(String),
    #[error("{0}")]
    Conflicts(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::api::smp::{merge_key, with_list_keys};

/// Strategic merge patch (the shared engine in [`crate::api::smp`]).
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<()> {
    crate::api::smp::strategic_merge(target, patch).map_err(|e| Error::Invalid(e.0))
}

/// JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<()> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| Error::Invalid(format!("not a JSON patch: {e}")))?;
    // On a copy, all or nothing: the crate's own undo after a failed operation panics for some patches (a `move`
    // to the root followed by a failing operation - found by fuzzing), so its undo stack is not used.
    let mut patched = target.clone();
    json_patch::patch_unsafe(&mut patched, &p).map_err(|e| Error::Invalid(e.to_string()))?;
    *target = patched;
    Ok(())
}

// ---- field sets (server-side apply) ----

/// A set of field paths, each element `f:name` or `k:{"key":value}` (a keyed list item).
pub type FieldSet = BTreeSet<Vec<String>>;

fn keyed(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    if let Some(v) = item.get(key) {
        m.insert(key.to_string(), v.clone());
    }
    if key == "containerPort" || key == "port" {
        if let Some(p) = item.get("protocol") {
            m.insert("protocol".into(), p.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// The leaf paths set in `v` (fields of objects, items of keyed lists; atomic lists and scalars are leaves).
pub fn fields_of(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    collect(v, None, &mut path, &mut out);
    out
}

fn collect(v: &Value, field: Option<&str>, path: &mut Vec<String>, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                collect(child, Some(k), path, out);
                path.pop();
            }
        }
        Value::Array(items)
            if field.and_then(|f| merge_key(f, items)).is_some() && !items.is_empty() =>
        {
            let key = merge_key(field.unwrap_or(""), items).unwrap_or("name");
            for item in items {
                path.push(keyed(item, key));
                let mut dot = path.clone();
                dot.push(".".into());
                out.insert(dot);
                collect(item, None, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The fields tracked for ownership: everything but identity and server-set metadata, and (for the main resource)
/// not status.
pub fn tracked(obj: &Value, status: bool) -> Value {
    let mut out = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "status" if !status => {}
                "metadata" => {
                    let mut meta = Map::new();
                    for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(x) = v.get(f).filter(|x| !x.is_null()) {
                            meta.insert(f.into(), x.clone());
                        }
                    }
                    if !meta.is_empty() {
                        out.insert(k.clone(), Value::Object(meta));
                    }
                }
                _ if status && k != "status" => {}
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// Leaf paths whose values differ between two objects (added, changed or removed).
pub fn changed(old: &Value, new: &Value) -> FieldSet {
    let a = fields_of(old);
    let b = fields_of(new);
    let mut out = FieldSet::new();
    for p in a.symmetric_difference(&b) {
        out.insert(p.clone());
    }
    for p in a.intersection(&b) {
        if p.last().map(String::as_str) != Some(".") && resolve(old, p) != resolve(new, p) {
            out.insert(p.clone());
        }
    }
    out
}

/// Finds the value at a field path.
pub fn resolve<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        if el == "." {
            return Some(cur);
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur.as_array()?.iter().find(|item| {
                want.iter().all(|(wk, wv)| {
                    item.get(wk) == Some(wv) || (wk == "protocol" && item.get(wk).is_none())
                })
            })?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the value at a field path (no-op if absent).
pub fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for el in parent {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let want: Map<String, Value> = match serde_json::from_str(k) {
                Ok(w) => w,
                Err(_) => return,
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| want.iter().all(|(wk, wv)| item.get(wk) == Some(wv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(want), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            a.retain(|item| !want.iter().all(|(wk, wv)| item.get(wk) == Some(wv)));
        }
    }
}

/// Converts a field set to the `fieldsV1` tree.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let e = cur
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            cur = match e.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

/// Converts a `fieldsV1` tree back to leaf paths.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Renders a path the way Kubernetes prints conflicts: `.spec.replicas`, `.spec.containers[name="c"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    s
}

/// One manager's ownership, as kept in managedFields.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub fields: FieldSet,
    pub time: String,
}

/// Reads managedFields from an object.
pub fn owners(obj: &Value) -> Vec<Owner> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Owner {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .to_string(),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            time: e
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
        .collect()
}

/// Writes managedFields into an object (dropping managers that own nothing).
pub fn set_owners(obj: &mut Value, owners: &[Owner]) {
    let entries: Vec<Value> = owners
        .iter()
        .filter(|o| !o.fields.is_empty())
        .map(|o| {
            let mut e = serde_json::json!({
                "manager": o.manager, "operation": o.operation, "apiVersion": o.api_version,
                "time": o.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&o.fields),
            });
            if !o.subresource.is_empty() {
                e["subresource"] = Value::String(o.subresource.clone());
            }
            e
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Records an Update by `manager` that changed `changed` fields: it takes them from everyone else.
pub fn record_update(
    owners: &mut Vec<Owner>,
    manager: &str,
    subresource: &str,
    api_version: &str,
    changed: &FieldSet,
    time: &str,
) {
    if changed.is_empty() {
        return;
    }
    for o in owners.iter_mut() {
        if !(o.manager == manager && o.operation == "Update" && o.subresource == subresource) {
            o.fields.retain(|p| !changed.contains(p));
        }
    }
    match owners
        .iter_mut()
        .find(|o| o.manager == manager && o.operation == "Update" && o.subresource == subresource)
    {
        Some(o) => {
            o.fields.extend(changed.iter().cloned());
            o.time = time.to_string();
        }
        None => owners.push(Owner {
            manager: manager.to_string(),
            operation: "Update".into(),
            subresource: subresource.to_string(),
            api_version: api_version.to_string(),
            fields: changed.clone(),
            time: time.to_string(),
        }),
    }
    owners.retain(|o| !o.fields.is_empty());
}

/// Server-side apply of `config` by `manager` onto `current` (Null if the object does not exist yet). Returns the
/// new object with managedFields updated, or the conflicts.
// Long by design: server-side apply's four steps (conflicts, merge, prune, ownership) share the owners and field sets
// computed at the top; each step is marked by a comment.
pub fn apply(
    current: &Value,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    status: bool,
    time: &str,
) -> Result<Value> {
    let mut owners = owners(current);
    let cfg_fields = fields_of(&tracked(config, status));
    // Conflicts: fields this config sets to a different value that another manager owns.
    let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &cfg_fields {
        if p.last().map(String::as_str) == Some(".") {
            continue;
        }
        let same = resolve(current, p) == resolve(config, p);
        if same {
            continue;
        }
        for o in &owners {
            if o.manager != manager && o.fields.contains(p) {
                conflicts
                    .entry(o.manager.clone())
                    .or_default()
                    .push(display_path(p));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let mut n = 0;
        let mut lines = Vec::new();
        for (m, paths) in &conflicts {
            for p in paths {
                n += 1;
                lines.push(format!("- conflict with \"{m}\": {p}"));
            }
        }
        return Err(Error::Conflicts(format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            lines.join("\n")
        )));
    }
    // Merge the config in.
    let mut merged = if current.is_null() {
        Value::Object(Map::new())
    } else {
        current.clone()
    };
    let mut patch = config.clone();
    if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    strategic_merge(&mut merged, &patch)?;
    // Prune what this manager applied before but no longer does, unless someone else owns it too.
    let previous: FieldSet = owners
        .iter()
        .filter(|o| o.manager == manager && o.operation == "Apply")
        .flat_map(|o| o.fields.iter().cloned())
        .collect();
    let mut gone: Vec<&Vec<String>> = previous
        .iter()
        .filter(|p| !cfg_fields.contains(*p))
        .filter(|p| {
            !owners
                .iter()
                .any(|o| o.manager != manager && o.fields.contains(*p))
        })
        .collect();
    gone.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in gone {
        if p.last().map(String::as_str) == Some(".") {
            remove_path(&mut merged, &p[..p.len() - 1]);
        } else {
            remove_path(&mut merged, p);
        }
    }
    // Ownership: force takes the conflicting fields; everyone keeps the rest.
    if force {
        for o in owners.iter_mut() {
            if o.manager != manager {
                o.fields.retain(|p| {
                    !cfg_fields.contains(p) || resolve(current, p) == resolve(config, p)
                });
            }
        }
    }
    let subresource = if status { "status" } else { "" };
    owners.retain(|o| {
        !(o.manager == manager && o.operation == "Apply" && o.subresource == subresource)
    });
    owners.push(Owner {
        manager: manager.to_string(),
        operation: "Apply".into(),
        subresource: subresource.to_string(),
        api_version: api_version.to_string(),
        fields: cfg_fields,
        time: time.to_string(),
    });
    set_owners(&mut merged, &owners);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}]}});
        strategic_merge(&mut t, &p).unwrap();
        let cs = t["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[1]["image"], "y:2");
        assert_eq!(cs[0]["image"], "x:1");
    }

    #[test]
    fn strategic_merge_directives() {
        let mut t = json!({"metadata": {"finalizers": ["a"]},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"metadata": {"finalizers": ["b"]},
            "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                     "containers": [{"name": "a", "$patch": "delete"}],
                     "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        strategic_merge(&mut t, &p).unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            t["spec"]["containers"],
            json!([{"name": "b", "image": "y"}])
        );
        assert_eq!(t["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn apply_detects_conflicts_and_force_takes_ownership() {
        let cfg = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let obj = apply(&Value::Null, &cfg, "alice", "apps/v1", false, false, "t").unwrap();
        // bob changes replicas through an update
        let mut owners_now = owners(&obj);
        let mut changed_obj = obj.clone();
        changed_obj["spec"]["replicas"] = json!(5);
        record_update(
            &mut owners_now,
            "bob",
            "",
            "apps/v1",
            &changed(&tracked(&obj, false), &tracked(&changed_obj, false)),
            "t",
        );
        set_owners(&mut changed_obj, &owners_now);
        // alice re-applies replicas 2: conflict with bob
        let err = apply(&changed_obj, &cfg, "alice", "apps/v1", false, false, "t").unwrap_err();
        assert!(
            matches!(&err, Error::Conflicts(m) if m.contains("\"bob\"") && m.contains(".spec.replicas")),
            "{err:?}"
        );
        let forced = apply(&changed_obj, &cfg, "alice", "apps/v1", true, false, "t").unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
    }

    #[test]
    fn apply_prunes_fields_the_manager_dropped() {
        let cfg1 = json!({"metadata": {"name": "d", "labels": {"a": "1", "b": "2"}}});
        let obj = apply(&Value::Null, &cfg1, "m", "v1", false, false, "t").unwrap();
        let cfg2 = json!({"metadata": {"name": "d", "labels": {"a": "1"}}});
        let obj2 = apply(&obj, &cfg2, "m", "v1", false, false, "t").unwrap();
        assert_eq!(obj2["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 1}});
        let set = fields_of(&v);
        let tree = to_fields_v1(&set);
        assert!(tree["f:spec"]["f:containers"]
            .get("k:{\"name\":\"c\"}")
            .is_some());
        assert_eq!(from_fields_v1(&tree), set);
    }
}
