//! The watcher and informer cache: list, then watch from the list's resourceVersion; on a dropped connection resume
//! from the last resourceVersion seen (bookmarks included); on 410 Expired relist. The cache has one writer (the
//! informer task) and cheap cloneable readers.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;

use super::Client;
use crate::api::registry::KindInfo;

/// What changed in the cache.
#[derive(Clone, Debug)]
pub enum Change {
    Applied(Arc<Value>),
    Deleted(Arc<Value>),
    /// The cache was rebuilt from a full list.
    Resynced,
}

/// A read handle on the cache: `namespace/name` -> object.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<RwLock<BTreeMap<String, Arc<Value>>>>,
    synced: tokio::sync::watch::Receiver<bool>,
}

fn cache_key(v: &Value) -> String {
    let ns = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{ns}/{name}")
}

impl Cache {
    /// A cache holding fixed objects, already synced (for tests of code that reads caches).
    pub fn of(objects: impl IntoIterator<Item = Value>) -> Cache {
        let map = objects
            .into_iter()
            .map(|o| (cache_key(&o), Arc::new(o)))
            .collect();
        let (tx, synced) = tokio::sync::watch::channel(true);
        drop(tx);
        Cache {
            inner: Arc::new(RwLock::new(map)),
            synced,
        }
    }

    /// The object `ns/name` (shared: the cache never copies objects out).
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }
    /// Every object (shared handles, cheap to take even for thousands of objects).
    pub fn list(&self) -> Vec<Arc<Value>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the first full list has arrived.
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }
    /// Waits for the first full list (controllers must not act on a cache that is still empty for lack of it).
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// A cloneable view of a running informer - its cache and its change feed - for components that share one.
#[derive(Clone)]
pub struct Shared {
    pub cache: Cache,
    pub changes: broadcast::Sender<Change>,
}

/// Runs a list+watch loop for one kind, keeping `cache` current and announcing changes.
pub struct Informer {
    pub cache: Cache,
    pub changes: broadcast::Sender<Change>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Informer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    /// Wakes `wake` on every change (and on a lagged feed) until the informer stops.
    pub fn notify_on_change(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<()> {
        let mut rx = self.changes.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

impl Informer {
    /// A view to hand to other components; the informer keeps running while this `Informer` lives.
    pub fn shared(&self) -> Shared {
        Shared {
            cache: self.cache.clone(),
            changes: self.changes.clone(),
        }
    }

    pub fn start(
        client: Client,
        kind: &'static KindInfo,
        namespace: Option<String>,
        query: String,
    ) -> Self {
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let cache = Cache {
            inner: Arc::default(),
            synced,
        };
        let (changes, _) = broadcast::channel(1024);
        let c = cache.clone();
        let tx = changes.clone();
        let task = tokio::spawn(async move {
            let mut rv = String::new();
            loop {
                if rv.is_empty() {
                    match client.list(kind, namespace.as_deref(), &query).await {
                        Ok(list) => {
                            let mut map = BTreeMap::new();
                            for item in list["items"].as_array().into_iter().flatten() {
                                let mut item = item.clone();
                                item["apiVersion"] = Value::String(kind.api_version());
                                item["kind"] = Value::String(kind.kind.to_string());
                                map.insert(cache_key(&item), Arc::new(item));
                            }
                            *c.inner.write().unwrap_or_else(|e| e.into_inner()) = map;
                            rv = list
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string();
                            synced_tx.send_replace(true);
                            let _ = tx.send(Change::Resynced);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, kind = kind.kind, "list failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
                let mut stream = match client
                    .watch_once(kind, namespace.as_deref(), &query, &rv)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        if e.code() == Some(410) {
                            rv.clear();
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                while let Some(ev) = stream.next().await {
                    let Ok((ty, obj)) = ev else { break };
                    if ty != "ERROR" {
                        if let Some(v) = obj
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                        {
                            rv = v.to_string();
                        }
                    }
                    match ty.as_str() {
                        "ADDED" | "MODIFIED" => {
                            let obj = Arc::new(obj);
                            c.inner
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(cache_key(&obj), obj.clone());
                            let _ = tx.send(Change::Applied(obj));
                        }
                        "DELETED" => {
                            c.inner
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&cache_key(&obj));
                            let _ = tx.send(Change::Deleted(Arc::new(obj)));
                        }
                        "BOOKMARK" => {}
                        "ERROR" => {
                            if obj.get("code").and_then(Value::as_u64) == Some(410) {
                                rv.clear();
                            }
                            break;
                        }
                        _ => {}
                    }
                }
            }
        });
        Informer {
            cache,
            changes,
            task,
        }
    }
}
