//! Where objects live in the key space, laid out as Kubernetes' API server lays them out in etcd, so `etcdctl get
//! --prefix /registry/pods/` finds what a Kubernetes user expects: `/registry/<resource>/<namespace>/<name>` for the
//! built-in groups (with Kubernetes' historical names: Services under `services/specs`, Endpoints under
//! `services/endpoints`, Nodes under `minions`, ReplicationControllers under `controllers`), and
//! `/registry/<group>/<resource>/...` for the others (custom resources, aggregated kinds, Capstan's own).
//!
//! Stores written before this layout (`/registry/<group or core>/<resource>/...`) are rewritten once at start
//! ([`upgrade`]); the key [`LAYOUT_KEY`] records the layout a store is in.

use super::{DynStore, Result};

/// The key recording the layout (value [`LAYOUT`]).
pub const LAYOUT_KEY: &str = concat!("/", "capstan/layout");
/// This layout's number.
pub const LAYOUT: &str = "2";

/// Groups whose resources are stored without the group in the key, as Kubernetes stores its built-in groups.
const FLAT_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "storage.k8s.io",
    "certificates.k8s.io",
    "networking.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "admissionregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "events.k8s.io",
];

/// The key prefix of a resource's objects (ending in `/`).
pub fn prefix(group: &str, plural: &str) -> String {
    if !FLAT_GROUPS.contains(&group) {
        return format!("/registry/{group}/{plural}/");
    }
    let name = match (group, plural) {
        ("", "services") => "services/specs",
        ("", "endpoints") => "services/endpoints",
        ("", "nodes") => "minions",
        ("", "replicationcontrollers") => "controllers",
        ("networking.k8s.io", "ingresses") => "ingress",
        _ => plural,
    };
    format!("/registry/{name}/")
}

/// The key under the first layout (`/registry/<group or core>/<resource>/`) a key of that layout maps to now.
fn upgraded(old: &str) -> Option<String> {
    let rest = old.strip_prefix("/registry/")?;
    let (group, rest) = rest.split_once('/')?;
    let (plural, rest) = rest.split_once('/')?;
    let group = if group == "core" { "" } else { group };
    Some(format!("{}{rest}", prefix(group, plural)))
}

/// Brings a store to this layout: a store without [`LAYOUT_KEY`] that holds keys of the first layout has each of
/// them moved (created at the new key, then deleted at the old: a failure part way leaves both, and the next start
/// finishes the move); then the layout is recorded. Returns how many keys moved.
pub async fn upgrade(store: &DynStore) -> Result<usize> {
    if store.get(LAYOUT_KEY).await?.is_some() {
        return Ok(0);
    }
    let all = store.list("/registry/", 0, None, 0).await?;
    let mut moved = 0;
    for kv in &all.kvs {
        let Some(new) = upgraded(&kv.key).filter(|n| *n != kv.key) else {
            continue;
        };
        // Only first-layout keys: their group segment is `core` or a group with a dot or a known flat group.
        let first = kv.key["/registry/".len()..].split('/').next().unwrap_or("");
        if first != "core" && !first.contains('.') && !FLAT_GROUPS.contains(&first) {
            continue;
        }
        match store.create(&new, kv.value.to_vec()).await {
            Ok(_) | Err(super::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        store.delete(&kv.key, kv.mod_revision).await?;
        moved += 1;
    }
    match store.create(LAYOUT_KEY, LAYOUT.as_bytes().to_vec()).await {
        Ok(_) | Err(super::Error::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    if moved > 0 {
        tracing::info!(moved, "moved the store's keys to Kubernetes' layout");
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keys_are_laid_out_as_kubernetes_lays_them_out() {
        assert_eq!(prefix("", "pods"), "/registry/pods/");
        assert_eq!(prefix("", "services"), "/registry/services/specs/");
        assert_eq!(prefix("", "endpoints"), "/registry/services/endpoints/");
        assert_eq!(prefix("", "nodes"), "/registry/minions/");
        assert_eq!(prefix("apps", "deployments"), "/registry/deployments/");
        assert_eq!(
            prefix("gitops.capstan.io", "applications"),
            "/registry/gitops.capstan.io/applications/"
        );
        assert_eq!(
            upgraded("/registry/core/pods/default/web-1").as_deref(),
            Some("/registry/pods/default/web-1")
        );
        assert_eq!(
            upgraded("/registry/apps/deployments/default/web").as_deref(),
            Some("/registry/deployments/default/web")
        );
    }

    #[tokio::test]
    async fn a_store_of_the_first_layout_is_moved_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore =
            Arc::new(super::super::embedded::Embedded::open(&dir.path().join("s.redb")).unwrap());
        store
            .create("/registry/core/pods/default/a", b"pod".to_vec())
            .await
            .unwrap();
        store
            .create("/registry/core/nodes/n1", b"node".to_vec())
            .await
            .unwrap();
        store
            .create(
                "/registry/gitops.capstan.io/applications/default/x",
                b"app".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(upgrade(&store).await.unwrap(), 2);
        assert_eq!(
            &*store
                .get("/registry/pods/default/a")
                .await
                .unwrap()
                .unwrap()
                .value,
            b"pod"
        );
        assert_eq!(
            &*store
                .get("/registry/minions/n1")
                .await
                .unwrap()
                .unwrap()
                .value,
            b"node"
        );
        assert!(store
            .get("/registry/core/pods/default/a")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get("/registry/gitops.capstan.io/applications/default/x")
            .await
            .unwrap()
            .is_some());
        // Recorded: a second start moves nothing.
        assert_eq!(upgrade(&store).await.unwrap(), 0);
    }
}
