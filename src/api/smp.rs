//! Strategic merge patch, the one merge engine of Capstan: the API server's `application/strategic-merge-patch+json`
//! and kustomize's strategic-merge patches both run it. Lists merge by Kubernetes' merge keys (or, for a custom
//! object, its schema's list-map keys), with the `$patch` (`delete`, `replace`, `merge`), `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives.

use serde_json::{Map, Value};

/// A patch that cannot be applied, with why.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid patch: {0}")]
pub struct Invalid(pub String);

pub type Result<T, E = Invalid> = std::result::Result<T, E>;

thread_local! {
    /// While a custom object is patched: its schema's lists by field name (`x-kubernetes-list-type: map` with its
    /// first key; other lists atomic), in place of the built-in kinds' merge keys.
    static LIST_KEYS: std::cell::RefCell<Option<std::collections::HashMap<String, Option<&'static str>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a patch of a custom object, on this thread) with the list keys of the object's schema.
pub fn with_list_keys<T>(
    keys: Option<std::collections::HashMap<String, Option<&'static str>>>,
    f: impl FnOnce() -> T,
) -> T {
    let before = LIST_KEYS.with(|k| std::mem::replace(&mut *k.borrow_mut(), keys));
    let out = f();
    LIST_KEYS.with(|k| *k.borrow_mut() = before);
    out
}

/// The merge key of a list field, by field name, as Kubernetes' types declare it (None = atomic list).
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    if let Some(found) = LIST_KEYS.with(|k| {
        k.borrow()
            .as_ref()
            .map(|keys| keys.get(field).copied().flatten())
    }) {
        return found;
    }
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "taints" => "key",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of primitives that merge as sets.
fn primitive_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

thread_local! {
    /// While kustomize patches: keyed list items the patch names come first, in the patch's order (kustomize's
    /// merge prepends), instead of the API server's append.
    static PREPEND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Strategic merge patch as kustomize merges: items of keyed lists that the patch names come first, in its order,
/// then the others as they were.
pub fn strategic_merge_prepending(target: &mut Value, patch: &Value) -> Result<()> {
    let before = PREPEND.with(|p| p.replace(true));
    let out = strategic_merge(target, patch);
    PREPEND.with(|p| p.set(before));
    out
}

/// Strategic merge patch.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<()> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => smp_object(t, p),
        _ => Err(Invalid(
            "a strategic merge patch must be a JSON object".into(),
        )),
    }
}

fn smp_object(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<()> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        target.clear();
        for (k, v) in patch {
            if k != "$patch" {
                target.insert(k.clone(), v.clone());
            }
        }
        return Ok(());
    }
    let mut orders = Vec::new();
    let mut retain: Option<Vec<String>> = None;
    for (k, v) in patch {
        if k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.clone()));
            continue;
        }
        if k == "$retainKeys" {
            retain = Some(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect(),
            );
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let Some(Value::Array(list)) = target.get_mut(field) {
                let remove: Vec<&Value> = v.as_array().into_iter().flatten().collect();
                list.retain(|x| !remove.contains(&x));
            }
            continue;
        }
        if v.is_null() {
            target.remove(k);
            continue;
        }
        match (target.get_mut(k), v) {
            (Some(Value::Object(t)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(k);
                } else {
                    smp_object(t, p)?;
                }
            }
            (Some(Value::Array(t)), Value::Array(p)) => smp_list(k, t, p)?,
            (_, Value::Object(p)) => {
                let mut fresh = Map::new();
                smp_object(&mut fresh, p)?;
                target.insert(k.clone(), Value::Object(fresh));
            }
            (_, Value::Array(p)) => {
                let mut fresh = Vec::new();
                smp_list(k, &mut fresh, p)?;
                target.insert(k.clone(), Value::Array(fresh));
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = target.get_mut(&field) {
            reorder(
                &field,
                list,
                order.as_array().map(Vec::as_slice).unwrap_or(&[]),
            );
        }
    }
    if let Some(keys) = retain {
        target.retain(|k, _| keys.contains(k));
    }
    Ok(())
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
}

fn smp_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> Result<()> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    if primitive_set(field) {
        for p in patch {
            if !target.contains(p) {
                target.push(p.clone());
            }
        }
        return Ok(());
    }
    let mut all: Vec<Value> = target.clone();
    all.extend(patch.iter().cloned());
    let Some(key) = merge_key(field, &all) else {
        *target = patch.to_vec();
        return Ok(());
    };
    for p in patch {
        let Some(kv) = key_of(p, key) else {
            return Err(Invalid(format!(
                "{field}: an element has no merge key {key:?}"
            )));
        };
        let pos = target.iter().position(|t| key_of(t, key) == Some(kv));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let (Some(t), Some(po)) = (target[i].as_object_mut(), p.as_object()) {
                    smp_object(t, po)?;
                }
            }
            (None, false) => {
                let mut fresh = Map::new();
                if let Some(po) = p.as_object() {
                    smp_object(&mut fresh, po)?;
                }
                target.push(Value::Object(fresh));
            }
        }
    }
    if PREPEND.with(|p| p.get()) {
        let named: Vec<&Value> = patch
            .iter()
            .filter(|p| p.get("$patch").and_then(Value::as_str) != Some("delete"))
            .filter_map(|p| key_of(p, key))
            .collect();
        let rank = |t: &Value| {
            key_of(t, key)
                .and_then(|k| named.iter().position(|n| *n == k))
                .unwrap_or(usize::MAX)
        };
        target.sort_by_key(|t| rank(t));
    }
    Ok(())
}

fn reorder(field: &str, list: &mut [Value], order: &[Value]) {
    let key = if primitive_set(field) {
        None
    } else {
        merge_key(field, list)
    };
    let pos = |v: &Value| -> usize {
        let probe = match key {
            Some(k) => v.get(k),
            None => Some(v),
        };
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k) == probe,
                None => Some(o) == probe,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| pos(v));
}
