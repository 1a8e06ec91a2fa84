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

/// Leaf paths whose values differ between two objects (added, changed or removed): the two are walked together,
/// descending only where both have the same shape; where shapes differ every leaf of both sides changed.
pub fn changed(old: &Value, new: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    diff(Some(old), Some(new), None, &mut Vec::new(), &mut out);
    out
}

/// `changed(&tracked(old, status), &tracked(new, status))` without copying the objects: the top level is filtered
/// as [`tracked`] does and each tracked field is walked in place.
pub fn changed_tracked(old: &Value, new: &Value, status: bool) -> FieldSet {
    fn meta<'v>(v: &'v Value, f: &str) -> Option<&'v Value> {
        v["metadata"].get(f).filter(|x| !x.is_null())
    }
    let keep = |k: &str| match k {
        "apiVersion" | "kind" => false,
        "metadata" => true,
        "status" => status,
        _ => !status,
    };
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    let keys = old.as_object().into_iter().flatten().map(|(k, _)| k);
    let fresh = new.as_object().into_iter().flatten().map(|(k, _)| k);
    for k in keys.chain(fresh.filter(|k| old.get(k.as_str()).is_none())) {
        if !keep(k) {
            continue;
        }
        path.push(format!("f:{k}"));
        if k == "metadata" {
            for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                path.push(format!("f:{f}"));
                diff(meta(old, f), meta(new, f), Some(f), &mut path, &mut out);
                path.pop();
            }
        } else {
            diff(old.get(k), new.get(k), Some(k), &mut path, &mut out);
        }
        path.pop();
    }
    out
}

/// How [`collect`] sees a value: an object to descend into, a keyed list (by which key), or a leaf.
enum Shape {
    Object,
    Keyed(&'static str),
    Leaf,
}

fn shape(v: &Value, field: Option<&str>) -> Shape {
    match v {
        Value::Object(m) if !m.is_empty() => Shape::Object,
        Value::Array(items) if !items.is_empty() => match field.and_then(|f| merge_key(f, items)) {
            Some(key) => Shape::Keyed(key),
            None => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

fn diff(
    old: Option<&Value>,
    new: Option<&Value>,
    field: Option<&str>,
    path: &mut Vec<String>,
    out: &mut FieldSet,
) {
    let (a, b) = match (old, new) {
        (None, None) => return,
        (Some(v), None) | (None, Some(v)) => return collect(v, field, path, out),
        (Some(a), Some(b)) => (a, b),
    };
    match (shape(a, field), shape(b, field)) {
        (Shape::Object, Shape::Object) => {
            let (am, bm) = (a.as_object().into_iter().flatten(), b.as_object());
            for (k, av) in am {
                path.push(format!("f:{k}"));
                diff(Some(av), bm.and_then(|m| m.get(k)), Some(k), path, out);
                path.pop();
            }
            for (k, bv) in b.as_object().into_iter().flatten() {
                if a.get(k).is_none() {
                    path.push(format!("f:{k}"));
                    collect(bv, Some(k), path, out);
                    path.pop();
                }
            }
        }
        (Shape::Keyed(ka), Shape::Keyed(kb)) => {
            fn items<'v>(v: &'v Value, key: &str) -> (usize, BTreeMap<String, &'v Value>) {
                let all = v.as_array().map_or(&[][..], Vec::as_slice);
                (all.len(), all.iter().map(|i| (keyed(i, key), i)).collect())
            }
            let ((an, ai), (bn, bi)) = (items(a, ka), items(b, kb));
            if ai.len() != an || bi.len() != bn {
                // Items sharing a key (invalid, but storable): compare as whole field sets.
                return changed_by_sets(a, b, field, path, out);
            }
            for (k, av) in &ai {
                path.push(k.clone());
                match bi.get(k) {
                    Some(bv) => diff(Some(av), Some(bv), None, path, out),
                    None => keyed_item(av, path, out),
                }
                path.pop();
            }
            for (k, bv) in &bi {
                if !ai.contains_key(k) {
                    path.push(k.clone());
                    keyed_item(bv, path, out);
                    path.pop();
                }
            }
        }
        (Shape::Leaf, Shape::Leaf) => {
            if a != b {
                out.insert(path.clone());
            }
        }
        _ => {
            collect(a, field, path, out);
            collect(b, field, path, out);
        }
    }
}

/// The paths of a keyed list item present on one side only: the item itself (`.`) and its leaves.
fn keyed_item(item: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
    let mut dot = path.clone();
    dot.push(".".into());
    out.insert(dot);
    collect(item, None, path, out);
}

/// [`changed`] by building both sides' field sets and comparing them, under `path`.
fn changed_by_sets(
    old: &Value,
    new: &Value,
    field: Option<&str>,
    path: &[String],
    out: &mut FieldSet,
) {
    let (mut a, mut b) = (FieldSet::new(), FieldSet::new());
    collect(old, field, &mut Vec::new(), &mut a);
    collect(new, field, &mut Vec::new(), &mut b);
    let under = |p: &Vec<String>| {
        let mut full = path.to_vec();
        full.extend(p.iter().cloned());
        full
    };
    for p in a.symmetric_difference(&b) {
        out.insert(under(p));
    }
    for p in a.intersection(&b) {
        if p.last().map(String::as_str) != Some(".") && resolve(old, p) != resolve(new, p) {
            out.insert(under(p));
        }
    }
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

impl Owner {
    /// A new entry for an Update by `manager` that changed `changed` fields.
    fn update(
        manager: &str,
        subresource: &str,
        api_version: &str,
        changed: &FieldSet,
        time: &str,
    ) -> Owner {
        Owner {
            manager: manager.to_string(),
            operation: "Update".into(),
            subresource: subresource.to_string(),
            api_version: api_version.to_string(),
            fields: changed.clone(),
            time: time.to_string(),
        }
    }
}

/// Reads managedFields from an object.
pub fn owners(obj: &Value) -> Vec<Owner> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(owner_of)
        .collect()
}

/// One managedFields entry, read.
fn owner_of(e: &Value) -> Owner {
    let text = |k: &str, default: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    Owner {
        manager: text("manager", ""),
        operation: text("operation", "Update"),
        subresource: text("subresource", ""),
        api_version: text("apiVersion", ""),
        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        time: text("time", ""),
    }
}

/// One managedFields entry, written.
fn entry_of(o: &Owner) -> Value {
    let mut e = serde_json::json!({
        "manager": o.manager, "operation": o.operation, "apiVersion": o.api_version,
        "time": o.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&o.fields),
    });
    if !o.subresource.is_empty() {
        e["subresource"] = Value::String(o.subresource.clone());
    }
    e
}

/// Writes managedFields into an object (dropping managers that own nothing).
pub fn set_owners(obj: &mut Value, owners: &[Owner]) {
    let entries: Vec<Value> = owners
        .iter()
        .filter(|o| !o.fields.is_empty())
        .map(entry_of)
        .collect();
    put_entries(obj, entries);
}

fn put_entries(obj: &mut Value, entries: Vec<Value>) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Whether a fieldsV1 tree holds `path` as one of its leaves.
fn holds_leaf(tree: &Value, path: &[String]) -> bool {
    let mut cur = tree;
    for el in path {
        match cur.get(el.as_str()) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    !path.is_empty() && cur.as_object().is_none_or(|m| m.is_empty())
}

/// `set_owners(obj, owners(prev))` after [`record_update`], reading and rewriting only the entries the update
/// changes (the updating manager's, and those that owned a changed field): the others are kept as stored.
pub fn update_owners(
    obj: &mut Value,
    prev: &Value,
    (manager, subresource, api_version): (&str, &str, &str),
    changed: &FieldSet,
    time: &str,
) {
    let before = prev.pointer("/metadata/managedFields");
    if changed.is_empty() {
        if obj.pointer("/metadata/managedFields") != before {
            set_owners(obj, &owners(prev));
        }
        return;
    }
    let text = |e: &Value, k: &str, default: &'static str| -> String {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let mut entries = Vec::new();
    let mut mine = false;
    for e in before.and_then(Value::as_array).into_iter().flatten() {
        let is_mine = text(e, "manager", "") == manager
            && text(e, "operation", "Update") == "Update"
            && text(e, "subresource", "") == subresource;
        let tree = e.get("fieldsV1").unwrap_or(&Value::Null);
        if is_mine && !mine {
            mine = true;
            let mut o = owner_of(e);
            o.fields.extend(changed.iter().cloned());
            o.time = time.to_string();
            entries.push(entry_of(&o));
        } else if !is_mine && changed.iter().any(|p| holds_leaf(tree, p)) {
            let mut o = owner_of(e);
            o.fields.retain(|p| !changed.contains(p));
            if !o.fields.is_empty() {
                entries.push(entry_of(&o));
            }
        } else if tree.as_object().is_some_and(|m| !m.is_empty()) {
            entries.push(e.clone());
        }
    }
    if !mine {
        entries.push(entry_of(&Owner::update(
            manager,
            subresource,
            api_version,
            changed,
            time,
        )));
    }
    put_entries(obj, entries);
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
        None => owners.push(Owner::update(
            manager,
            subresource,
            api_version,
            changed,
            time,
        )),
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

    /// A random object of the shapes field sets care about: nested objects, keyed lists (sometimes with a duplicate
    /// key), atomic lists and scalars, from a small vocabulary so two draws overlap.
    fn random_value(r: &mut u64, depth: u32, field: &str) -> Value {
        let mut next = |n: u64| {
            *r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*r >> 33) % n
        };
        let names = ["a", "b", "c"];
        if matches!(field, "containers" | "conditions" | "ports" | "env") && depth > 0 {
            let key = match field {
                "conditions" => "type",
                "ports" => "containerPort",
                _ => "name",
            };
            let len = next(4);
            let mut seed = next(1 << 30);
            return Value::Array(
                (0..len)
                    .map(|_| {
                        // Items always carry their key (an item without one is refused by validation, and the
                        // old comparison resolved it to whichever item came first).
                        let mut item = match random_value(&mut seed, depth - 1, "") {
                            Value::Object(m) => Value::Object(m),
                            other => json!({"x": other}),
                        };
                        if let Value::Object(m) = &mut item {
                            match next(10) {
                                0 if field == "ports" => {
                                    m.insert(key.into(), json!(90));
                                    m.insert("protocol".into(), json!("UDP"));
                                }
                                _ if field == "ports" => {
                                    m.insert(key.into(), json!(80 + next(3)));
                                }
                                _ => {
                                    m.insert(key.into(), json!(names[next(3) as usize]));
                                }
                            }
                        }
                        item
                    })
                    .collect(),
            );
        }
        match if depth == 0 { 3 + next(3) } else { next(6) } {
            0..=2 => {
                let fields = ["x", "y", "containers", "conditions", "ports", "env", "spec"];
                let mut m = Map::new();
                for _ in 0..next(4) {
                    let f = fields[next(fields.len() as u64) as usize];
                    let mut seed = next(1 << 30);
                    m.insert(f.into(), random_value(&mut seed, depth - 1, f));
                }
                Value::Object(m)
            }
            3 => json!(names[next(3) as usize]),
            4 => json!([next(2), next(2)]),
            _ => match next(3) {
                0 => Value::Null,
                1 => json!({}),
                _ => json!(next(3)),
            },
        }
    }

    /// Changes a value here and there: a field dropped, replaced, or descended into.
    fn mutate(v: &Value, r: &mut u64, depth: u32) -> Value {
        *r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let roll = (*r >> 33) % 8;
        match v {
            Value::Object(m) if roll < 6 => Value::Object(
                m.iter()
                    .filter(|_| roll != 0)
                    .map(|(k, x)| {
                        let mut seed = r.wrapping_add(k.len() as u64);
                        (k.clone(), mutate(x, &mut seed, depth))
                    })
                    .collect(),
            ),
            Value::Array(items) if roll < 6 => {
                Value::Array(items.iter().map(|x| mutate(x, r, depth)).collect())
            }
            _ if roll == 7 => {
                let mut seed = *r;
                random_value(&mut seed, depth, "spec")
            }
            _ => v.clone(),
        }
    }

    /// A drawn value as an object with the top-level fields tracking treats apart (metadata, status, kind).
    fn as_object(v: &Value) -> Value {
        let mut o = Map::new();
        for (i, (k, x)) in v.as_object().into_iter().flatten().enumerate() {
            let name = match i % 4 {
                0 => "metadata",
                1 => "status",
                2 => "kind",
                _ => k.as_str(),
            };
            let x = if name == "metadata" {
                json!({"name": "n", "labels": x, "ownerReferences": null, "annotations": {"k": k}})
            } else {
                x.clone()
            };
            o.insert(name.into(), x);
        }
        Value::Object(o)
    }

    #[test]
    fn updating_only_the_touched_managed_fields_entries_equals_rewriting_them_all() {
        let mut r = 11u64;
        for run in 0..300u64 {
            let mut seed = run.wrapping_mul(40503);
            let mut cur = as_object(&random_value(&mut seed, 4, ""));
            for step in 0..12u64 {
                let mut next = as_object(&mutate(&cur, &mut r, 3));
                if let (Some(m), Some(f)) = (
                    next.get_mut("metadata").and_then(Value::as_object_mut),
                    cur.pointer("/metadata/managedFields"),
                ) {
                    m.insert("managedFields".into(), f.clone());
                }
                let manager = ["a", "b", "c"][((run + step * 7) % 3) as usize];
                let sub = if (run + step) % 4 == 0 { "status" } else { "" };
                let changed = changed_tracked(&cur, &next, sub == "status");
                let mut want = next.clone();
                let mut owners = owners(&cur);
                record_update(&mut owners, manager, sub, "v1", &changed, "t");
                set_owners(&mut want, &owners);
                update_owners(&mut next, &cur, (manager, sub, "v1"), &changed, "t");
                assert_eq!(next, want, "run {run} step {step}");
                cur = next;
            }
        }
    }

    #[test]
    fn changed_fields_by_walking_both_objects_equal_those_by_comparing_whole_field_sets() {
        let mut r = 7u64;
        for case in 0..5_000u64 {
            let mut seed = case.wrapping_mul(2654435761);
            let old = random_value(&mut seed, 4, "");
            let new = if case % 3 == 0 {
                random_value(&mut seed, 4, "")
            } else {
                mutate(&old, &mut r, 3)
            };
            let mut want = FieldSet::new();
            changed_by_sets(&old, &new, None, &[], &mut want);
            assert_eq!(changed(&old, &new), want, "case {case}: {old} -> {new}");
            assert!(changed(&old, &old).is_empty());
            // As whole objects: some draws' fields moved under the top-level names tracking treats apart.
            let (o, n) = (as_object(&old), as_object(&new));
            for status in [false, true] {
                let mut want = changed(&tracked(&o, status), &tracked(&n, status));
                want.remove(&Vec::new()); // the root of an empty side, which no fieldsV1 tree can hold
                assert_eq!(
                    changed_tracked(&o, &n, status),
                    want,
                    "case {case} status={status}: {o} -> {n}"
                );
            }
        }
    }

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
