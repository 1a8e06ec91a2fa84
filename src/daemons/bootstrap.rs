//! The objects every cluster starts with, seeded once by the process that starts the API server (before it serves):
//! the four built-in namespaces and the default `local-path` StorageClass. Later: the `kubernetes` Service and the
//! default RBAC roles. Request handlers never create objects on their own.

use serde_json::{json, Value};

use crate::controllers::volumes::{DEFAULT_CLASS, LOCAL_PATH};

/// The built-in namespaces.
pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What a new cluster holds before anyone writes to it.
pub fn objects() -> Vec<Value> {
    let mut out: Vec<Value> = NAMESPACES
        .iter()
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .collect();
    // A directory per claim on the node's disk; the default class.
    out.push(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_PATH, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bootstrap_object_is_a_known_kind_with_a_name() {
        for o in objects() {
            let av = o["apiVersion"].as_str().unwrap();
            let k = o["kind"].as_str().unwrap();
            assert!(crate::api::registry::by_kind(av, k).is_some(), "{av} {k}");
            assert!(o["metadata"]["name"].is_string());
        }
    }
}
