//! The watcher and informer cache: list, then watch from the list's resourceVersion; on a dropped connection resume
//! from the last resourceVersion seen (bookmarks included); on 410 Expired relist. The cache has one writer (the
//! informer task) and cheap cloneable readers. Objects are decoded once, on arrival: an `Informer<Pod>` hands out
//! `Arc<Pod>`; an `Informer<Value>` (for components that are generic over kinds) keeps JSON. Cached objects have no
//! `managedFields` (as client-go's informers strip them): no controller reads them, and they were most of a cached
//! pod's memory. An update sent without them keeps the stored ones.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::broadcast;

use super::Client;
use crate::api::registry::KindInfo;
use crate::api::{Object, Resource};

/// What changed in the cache.
#[derive(Debug)]
pub enum Change<K = Value> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
    /// The cache was rebuilt from a full list.
    Resynced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

/// A read handle on the cache: `namespace/name` -> object.
pub struct Cache<K = Value> {
    inner: Arc<RwLock<BTreeMap<String, Arc<K>>>>,
    synced: Arc<crate::sys::flag::Flag>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K: Object> Cache<K> {
    /// A cache holding fixed objects, already synced (for tests of code that reads caches).
    pub fn of(objects: impl IntoIterator<Item = K>) -> Cache<K> {
        let map = objects
            .into_iter()
            .map(|o| (o.key(), Arc::new(o)))
            .collect();
        Cache {
            inner: Arc::new(RwLock::new(map)),
            synced: Arc::new(crate::sys::flag::Flag::new(true)),
        }
    }

    /// The object `ns/name` (shared: the cache never copies objects out).
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }
    /// Every object (shared handles, cheap to take even for thousands of objects).
    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
    /// The objects of one namespace.
    pub fn list_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        let prefix = format!("{ns}/");
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
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
        self.synced.is_set()
    }
    /// Waits for the first full list (controllers must not act on a cache that is still empty for lack of it).
    pub async fn wait_synced(&self) {
        self.synced.wait().await;
    }
}

/// A cloneable view of a running informer - its cache and its change feed - for components that share one.
pub struct Shared<K = Value> {
    pub cache: Cache<K>,
    pub changes: broadcast::Sender<Change<K>>,
}

impl<K> Clone for Shared<K> {
    fn clone(&self) -> Self {
        Shared {
            cache: self.cache.clone(),
            changes: self.changes.clone(),
        }
    }
}

/// Runs a list+watch loop for one kind, keeping `cache` current and announcing changes.
pub struct Informer<K = Value> {
    pub cache: Cache<K>,
    pub changes: broadcast::Sender<Change<K>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K: Object> Shared<K> {
    /// Wakes `wake` on every change that `matters` (and on a lagged feed, and a resync) until the informer stops.
    pub fn notify_on_change(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
        matters: fn(&Change<K>) -> bool,
    ) -> tokio::task::JoinHandle<()> {
        let mut rx = self.changes.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(change) if !matters(&change) => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

impl Informer<Value> {
    /// An informer of any kind, holding JSON (for components that are generic over kinds).
    pub fn start(
        client: Client,
        kind: &'static KindInfo,
        namespace: Option<String>,
        query: String,
    ) -> Self {
        Self::start_kind(client, kind, namespace, query)
    }
}

impl<K: Resource> Informer<K> {
    /// An informer of `K` in every namespace.
    pub fn all(client: &Client) -> Self {
        Self::start_kind(client.clone(), K::info(), None, String::new())
    }

    /// An informer of `K`, limited to a namespace and/or by a selector query (`labelSelector=...`).
    pub fn scoped(client: &Client, namespace: Option<&str>, query: &str) -> Self {
        Self::start_kind(
            client.clone(),
            K::info(),
            namespace.map(String::from),
            query.to_string(),
        )
    }
}

impl<K: Object> Informer<K> {
    /// A view to hand to other components; the informer keeps running while this `Informer` lives.
    pub fn shared(&self) -> Shared<K> {
        Shared {
            cache: self.cache.clone(),
            changes: self.changes.clone(),
        }
    }

    /// An informer of objects of `kind`, decoded as `K`.
    pub fn for_kind(
        client: &Client,
        kind: &'static KindInfo,
        namespace: Option<&str>,
        query: &str,
    ) -> Self {
        Self::start_kind(
            client.clone(),
            kind,
            namespace.map(String::from),
            query.to_string(),
        )
    }

    fn start_kind(
        client: Client,
        kind: &'static KindInfo,
        namespace: Option<String>,
        query: String,
    ) -> Self {
        let synced = Arc::new(crate::sys::flag::Flag::new(false));
        let cache = Cache {
            inner: Arc::default(),
            synced: synced.clone(),
        };
        let (changes, _) = broadcast::channel(1024);
        let feed = Feed {
            client,
            kind,
            namespace,
            query,
            cache: cache.clone(),
            changes: changes.clone(),
            synced,
        };
        let task = tokio::spawn(feed.run());
        Informer {
            cache,
            changes,
            task,
        }
    }
}

/// What keeps an informer's cache: lists, then watches from the list's resourceVersion, and lists again when the
/// watch's history is gone (410).
struct Feed<K> {
    client: Client,
    kind: &'static KindInfo,
    namespace: Option<String>,
    query: String,
    cache: Cache<K>,
    changes: broadcast::Sender<Change<K>>,
    synced: Arc<crate::sys::flag::Flag>,
}

impl<K: Object> Feed<K> {
    async fn run(self) {
        let mut rv = String::new();
        loop {
            if rv.is_empty() {
                match self.list().await {
                    Some(v) => rv = v,
                    None => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let ns = self.namespace.as_deref();
            let mut stream = match self.client.watch_raw(self.kind, ns, &self.query, &rv).await {
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
                if !self.event(&ty, &obj, &mut rv) {
                    break;
                }
            }
        }
    }

    /// Lists into the cache (replacing it) and announces a resync; returns the list's resourceVersion.
    async fn list(&self) -> Option<String> {
        let mut list = match self
            .client
            .list(self.kind, self.namespace.as_deref(), &self.query)
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(error = %e, kind = self.kind.kind, "list failed; retrying");
                return None;
            }
        };
        let items = match list["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        };
        let map: BTreeMap<String, Arc<K>> = items
            .into_iter()
            .filter_map(|item| self.decode(item, "listed"))
            .map(|obj| (obj.key(), obj))
            .collect();
        *self.cache.inner.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.synced.set();
        let _ = self.changes.send(Change::Resynced);
        Some(
            list.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    }

    fn decode(&self, mut obj: Value, how: &str) -> Option<Arc<K>> {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        match K::decode(obj, self.kind) {
            Ok(o) => Some(Arc::new(o)),
            Err(e) => {
                tracing::warn!(error = %e, kind = self.kind.kind, "cannot decode a {how} object; skipping it");
                None
            }
        }
    }

    /// Applies one watch event to the cache and announces it; false when the watch must end (an ERROR event,
    /// which clears `rv` for a new list when the history is gone). The object is decoded once, from its text,
    /// straight into `K`.
    fn event(&self, ty: &str, text: &RawValue, rv: &mut String) -> bool {
        let decoded = match ty {
            "ADDED" | "MODIFIED" | "DELETED" => match K::decode_json(text.get(), self.kind) {
                Ok(o) => Some(Arc::new(o)),
                Err(e) => {
                    tracing::warn!(error = %e, kind = self.kind.kind, "cannot decode a watched object; skipping it");
                    None
                }
            },
            _ => None,
        };
        if ty != "ERROR" {
            let version = match &decoded {
                Some(o) => o.resource_version().map(str::to_string),
                None => resource_version_of(text),
            };
            if let Some(v) = version {
                *rv = v;
            }
        }
        let objects = || self.cache.inner.write().unwrap_or_else(|e| e.into_inner());
        match ty {
            "ADDED" | "MODIFIED" => {
                if let Some(obj) = decoded {
                    objects().insert(obj.key(), obj.clone());
                    let _ = self.changes.send(Change::Applied(obj));
                }
            }
            "DELETED" => {
                if let Some(obj) = decoded {
                    objects().remove(&obj.key());
                    let _ = self.changes.send(Change::Deleted(obj));
                }
            }
            "ERROR" => {
                #[derive(serde::Deserialize)]
                struct Status {
                    code: Option<u64>,
                }
                if serde_json::from_str::<Status>(text.get()).is_ok_and(|s| s.code == Some(410)) {
                    rv.clear();
                }
                return false;
            }
            _ => {}
        }
        true
    }
}

/// The resourceVersion in an object's JSON text (a BOOKMARK's, or an object that did not decode).
fn resource_version_of(text: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Obj {
        metadata: Option<Meta>,
    }
    serde_json::from_str::<Obj>(text.get())
        .ok()?
        .metadata?
        .resource_version
}
