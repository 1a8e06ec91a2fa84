//! References between objects: names changed by a prefix, a suffix or a content hash are followed into the
//! objects that refer to them (pod volumes and env, StatefulSet `serviceName`, Ingress backends, role bindings,
//! autoscaler targets), and kustomize's content hash itself.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::transform::pod_spec;
use super::Res;

/// The elements of the list at `pointer`, if there is one (nothing is created).
pub(super) fn items<'v>(v: &'v mut Value, pointer: &str) -> impl Iterator<Item = &'v mut Value> {
    v.pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

pub(super) type Rename = (&'static str, Option<String>, String, String);

/// Follows renamed objects into the references other objects hold to them.
pub(super) fn follow_renames(out: &mut [Res], renames: &[Rename]) {
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
pub(super) fn content_hash(obj: &Value) -> String {
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
