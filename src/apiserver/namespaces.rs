//! What the API server itself does for Namespaces (as kube-apiserver does): a Namespace being deleted stays, in
//! phase Terminating, until its `spec.finalizers` are empty - the namespace controller empties it and then removes
//! the `kubernetes` finalizer through the `namespaces/{name}/finalize` subresource, and that write removes it. The
//! emptying itself is the controller's work (`controllers::namespace`), never the API server's.

use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::{Query, Target};
use super::Server;

pub use crate::api::core::NAMESPACE_FINALIZER as FINALIZER;

/// The Namespaces as the store's watch last told (name -> terminating), so a create does not read its Namespace
/// from the store each time (kube-apiserver's namespace lifecycle admission reads an informer the same way). A
/// Namespace not in it yet is read from the store.
#[derive(Default)]
pub struct NamespaceCache {
    known: std::sync::RwLock<std::collections::HashMap<String, bool>>,
    synced: std::sync::atomic::AtomicBool,
}

impl NamespaceCache {
    /// Some(terminating) when known.
    pub fn lookup(&self, ns: &str) -> Option<bool> {
        if !self.synced.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ns)
            .copied()
    }

    fn set(&self, name: String, value: Option<bool>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(t) => {
                known.insert(name, t);
            }
            None => {
                known.remove(&name);
            }
        }
    }
}

fn terminating(raw: &[u8]) -> bool {
    serde_json::from_slice::<Value>(raw)
        .is_ok_and(|v| v.pointer("/metadata/deletionTimestamp").is_some())
}

/// Whether a Namespace being deleted has nothing left holding it (metadata and spec finalizers both empty).
pub fn finalized(ns: &Value) -> bool {
    let empty = |v: &Value| v.as_array().is_none_or(|a| a.is_empty());
    empty(&ns["metadata"]["finalizers"]) && empty(&ns["spec"]["finalizers"])
}

impl Server {
    /// Keeps [`Server::namespaces`] following the store: a list, then a watch from its revision (a list again after
    /// any interruption).
    pub async fn follow_namespaces(self) {
        use futures::StreamExt;
        let kind = crate::api::registry::lookup("namespaces").expect("served");
        let prefix = super::handlers::key(kind, None, None);
        loop {
            let listed = match self.store.list(&prefix, 0, None, 0).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("listing namespaces: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            {
                let mut known = self
                    .namespaces
                    .known
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                known.clear();
                for kv in &listed.kvs {
                    let name = kv.key.rsplit('/').next().unwrap_or("").to_string();
                    known.insert(name, terminating(&kv.value));
                }
            }
            self.namespaces
                .synced
                .store(true, std::sync::atomic::Ordering::Release);
            match self.store.watch(&prefix, listed.revision).await {
                Ok(mut events) => {
                    while let Some(Ok(ev)) = events.next().await {
                        let name = ev.kv.key.rsplit('/').next().unwrap_or("").to_string();
                        let value = match ev.kind {
                            crate::store::EventType::Put => Some(terminating(&ev.kv.value)),
                            crate::store::EventType::Delete => None,
                        };
                        self.namespaces.set(name, value);
                    }
                }
                Err(e) => tracing::debug!("watching namespaces: {e}"),
            }
            self.namespaces
                .synced
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// `PUT namespaces/{name}/finalize`: replaces the Namespace's `spec.finalizers` and nothing else; a terminating
    /// Namespace left with no finalizer is removed by that write.
    pub async fn finalize_namespace(
        &self,
        t: &Target,
        body: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let name = t.name.as_deref().unwrap_or("");
        let (mut current, _) = self.get_object(t.kind, None, name).await?;
        let finalizers = match &body["spec"]["finalizers"] {
            Value::Null => json!([]),
            f @ Value::Array(_) => f.clone(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "spec.finalizers must be a list of strings, got {other}"
                )))
            }
        };
        if !current["spec"].is_object() {
            current["spec"] = json!({});
        }
        current["spec"]["finalizers"] = finalizers;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
            current["metadata"]["resourceVersion"] = json!(rv);
        }
        let plain = Target {
            sub: None,
            ..t.clone()
        };
        self.update(&plain, current, q, warnings).await
    }
}
