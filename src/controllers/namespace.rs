//! The namespace controller (kube-controller-manager's namespace controller): when a Namespace is being deleted and
//! still carries the `kubernetes` finalizer, it deletes everything in it - every namespaced kind - and once nothing
//! is left, removes the finalizer through `namespaces/{name}/finalize`, which lets the API server remove the
//! Namespace. Like Kubernetes it starts a moment after the deletion, so a client deleting a namespace together with
//! its content (`kubectl delete -f`) deletes each object itself first.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::core::Namespace;
use crate::api::meta::now;
use crate::api::registry::{self, KindInfo};
use crate::api::Resource;
use crate::client::{resource_path, Client};
use crate::runtime::Action;

use crate::api::core::NAMESPACE_FINALIZER as FINALIZER;

use super::Result;

pub struct Context {
    pub client: Client,
    /// How long after the deletion the controller starts emptying the namespace (Kubernetes: a few seconds).
    pub delay: Duration,
    /// The kinds to empty a namespace of (every namespaced kind of the registry).
    pub kinds: Vec<&'static KindInfo>,
}

impl Context {
    pub fn new(client: Client) -> Self {
        Context {
            client,
            delay: Duration::from_secs(2),
            kinds: registry::KINDS.iter().filter(|k| k.namespaced).collect(),
        }
    }
}

fn ours(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// One reconcile of one Namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action> {
    let Some(deleted_at) = ns.metadata.deletion_timestamp else {
        return Ok(Action::await_change());
    };
    if !ours(&ns) {
        return Ok(Action::await_change());
    }
    let start = deleted_at + chrono::Duration::from_std(ctx.delay).unwrap_or_default();
    if let Ok(wait) = (start - now()).to_std() {
        if !wait.is_zero() {
            return Ok(Action::requeue(wait));
        }
    }
    let name = ns.metadata.name();
    let mut left = 0usize;
    // Custom kinds too: those of the CRDs the cluster serves now (one version of each).
    if let Err(e) = crate::client::discovery::learn(&ctx.client).await {
        tracing::debug!("discovery: {e}");
    }
    let custom = registry::custom_storage_kinds()
        .into_iter()
        .filter(|k| k.namespaced);
    let kinds: Vec<&'static KindInfo> = ctx.kinds.iter().copied().chain(custom).collect();
    for kind in &kinds {
        let list = match ctx.client.list(kind, Some(name), "").await {
            Ok(l) => l,
            Err(e) if e.code() == Some(404) || e.code() == Some(405) => continue,
            Err(e) => return Err(e.into()),
        };
        for item in list["items"].as_array().into_iter().flatten() {
            left += 1;
            let Some(n) = item["metadata"]["name"].as_str() else {
                continue;
            };
            // Already being deleted: wait for it (its own finalizers and grace periods run their course).
            if item["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            match ctx.client.delete(kind, Some(name), n, "Background").await {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) || e.code() == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if left > 0 {
        tracing::debug!(namespace = %name, left, "namespace not empty yet");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let remaining: Vec<&String> = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .into_iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .collect();
    let body = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": ns.metadata.resource_version},
        "spec": {"finalizers": remaining}});
    let path = format!(
        "{}/finalize",
        resource_path(Namespace::info(), None, Some(name))
    );
    match ctx
        .client
        .request(
            reqwest::Method::PUT,
            &path,
            Some(("application/json", body.to_string().into_bytes())),
            None,
        )
        .await
    {
        Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
        // A newer version (or already gone): the next look decides.
        Err(e) if e.code() == Some(404) => {}
        Err(e) if e.code() == Some(409) => return Ok(Action::requeue(Duration::from_millis(100))),
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(finalizers: Option<Vec<&str>>, deleting: bool) -> Namespace {
        let mut v = json!({"metadata": {"name": "shop"}, "spec": {}});
        if let Some(f) = finalizers {
            v["spec"]["finalizers"] = json!(f);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    fn ctx() -> Arc<Context> {
        crate::sys::init_crypto();
        // Nothing listens there: a reconcile that should not talk to the API server fails if it does.
        Arc::new(Context::new(
            Client::new("https://127.0.0.1:1", "t", None).unwrap(),
        ))
    }

    #[tokio::test]
    async fn live_namespaces_and_ones_without_our_finalizer_are_left_alone() {
        let action = reconcile(Arc::new(ns(Some(vec!["kubernetes"]), false)), ctx())
            .await
            .unwrap();
        assert_eq!(action, Action::await_change());
        let action = reconcile(Arc::new(ns(Some(vec!["other"]), true)), ctx())
            .await
            .unwrap();
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn emptying_waits_for_the_delay_after_the_deletion() {
        let mut n = ns(Some(vec!["kubernetes"]), true);
        n.metadata.deletion_timestamp = Some(now());
        let action = reconcile(Arc::new(n), ctx()).await.unwrap();
        match action {
            Action::Requeue(d) => assert!(d <= Duration::from_secs(2) && !d.is_zero(), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }
}
