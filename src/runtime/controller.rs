//! The reconcile loop: informers feed a work queue with the keys of changed objects (the primary kind's own, and
//! owners' keys for the kinds it owns or watches); workers take keys and call `reconcile(obj, ctx) -> Action` with
//! the newest cached object. Errors come back with backoff; `Action::requeue` asks for a later look. Level
//! triggered: the event that woke a key is never passed on - only the current state.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use super::queue::{Backoff, WorkQueue};
use crate::api::registry::KindInfo;
use crate::client::informer::{Cache, Change, Informer};
use crate::client::Client;

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the object (or something it owns or watches) changes.
    AwaitChange,
    /// Look again after this long even if nothing changes.
    Requeue(Duration),
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }
    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

/// Maps an object of a secondary kind to the keys of primary objects to reconcile.
pub type Mapper = Arc<dyn Fn(&Value) -> Vec<String> + Send + Sync>;

/// The key of an object: `namespace/name` (`/name` when cluster-scoped).
pub fn key_of(obj: &Value) -> String {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{ns}/{name}")
}

/// A controller for one primary kind.
pub struct Controller {
    client: Client,
    kind: &'static KindInfo,
    namespace: Option<String>,
    queue: WorkQueue,
    secondary: Vec<(Source, Mapper)>,
    primary: Option<(Cache, tokio::sync::broadcast::Sender<Change>)>,
    workers: usize,
}

/// Where a secondary kind's changes come from: an informer of the controller's own, or one shared with others.
enum Source {
    Kind(&'static KindInfo),
    Shared(Cache, tokio::sync::broadcast::Sender<Change>),
}

impl Controller {
    pub fn new(client: Client, kind: &'static KindInfo) -> Self {
        Controller {
            client,
            kind,
            namespace: None,
            queue: WorkQueue::new(Backoff::default()),
            secondary: Vec::new(),
            primary: None,
            workers: 2,
        }
    }

    /// Only watch one namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.queue = WorkQueue::new(backoff);
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Reconciles the owner when an object of `child` whose controller ownerReference names the primary kind
    /// changes.
    pub fn owns(self, child: &'static KindInfo) -> Self {
        let owner_kind = self.kind.kind;
        let mapper: Mapper = Arc::new(move |obj: &Value| owner_keys(obj, owner_kind));
        self.watches(child, mapper)
    }

    /// Reconciles the primary objects `mapper` names whenever an object of `kind` changes.
    pub fn watches(mut self, kind: &'static KindInfo, mapper: Mapper) -> Self {
        self.secondary.push((Source::Kind(kind), mapper));
        self
    }

    /// Uses an informer the caller shares for the primary kind (instead of starting one).
    pub fn primary_shared(mut self, informer: &Informer) -> Self {
        self.primary = Some((informer.cache.clone(), informer.changes.clone()));
        self
    }

    /// Reconciles the primary objects `mapper` names whenever an object of a shared informer's kind changes.
    pub fn watches_shared(mut self, informer: &Informer, mapper: Mapper) -> Self {
        self.secondary.push((
            Source::Shared(informer.cache.clone(), informer.changes.clone()),
            mapper,
        ));
        self
    }

    /// Like [`owns`](Self::owns), fed by an informer the caller shares (and can read from in reconcile).
    pub fn owns_shared(mut self, informer: &Informer) -> Self {
        let owner_kind = self.kind.kind;
        let mapper: Mapper = Arc::new(move |obj: &Value| owner_keys(obj, owner_kind));
        self.secondary.push((
            Source::Shared(informer.cache.clone(), informer.changes.clone()),
            mapper,
        ));
        self
    }

    /// The queue (for tests and for components that enqueue keys themselves).
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Runs until `shutdown` resolves.
    pub async fn run<K, C, F, Fut, E>(
        self,
        reconcile: F,
        ctx: Arc<C>,
        shutdown: impl Future<Output = ()>,
    ) where
        K: DeserializeOwned + Send + Sync + 'static,
        C: Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let mut tasks = Vec::new();
        let own: Mapper = Arc::new(|obj: &Value| vec![key_of(obj)]);
        let mut informers = Vec::new();
        let cache = match self.primary {
            Some((cache, changes)) => {
                tasks.push(feed(
                    cache.clone(),
                    changes.subscribe(),
                    own,
                    self.queue.clone(),
                ));
                cache
            }
            None => {
                let primary = Informer::start(
                    self.client.clone(),
                    self.kind,
                    self.namespace.clone(),
                    String::new(),
                );
                tasks.push(feed(
                    primary.cache.clone(),
                    primary.changes.subscribe(),
                    own,
                    self.queue.clone(),
                ));
                let cache = primary.cache.clone();
                informers.push(primary);
                cache
            }
        };
        let mut shared: Vec<Cache> = Vec::new();
        for (source, mapper) in self.secondary {
            match source {
                Source::Kind(kind) => {
                    let inf = Informer::start(
                        self.client.clone(),
                        kind,
                        self.namespace.clone(),
                        String::new(),
                    );
                    tasks.push(feed(
                        inf.cache.clone(),
                        inf.changes.subscribe(),
                        mapper,
                        self.queue.clone(),
                    ));
                    informers.push(inf);
                }
                Source::Shared(cache, changes) => {
                    shared.push(cache.clone());
                    tasks.push(feed(cache, changes.subscribe(), mapper, self.queue.clone()));
                }
            }
        }
        // Act only on a complete picture: every informer has listed once.
        for c in informers
            .iter()
            .map(|i| i.cache.clone())
            .chain(shared.iter().cloned())
            .chain([cache.clone()])
        {
            c.wait_synced().await;
        }
        let reconcile = Arc::new(reconcile);
        for _ in 0..self.workers {
            tasks.push(tokio::spawn(worker(
                self.queue.clone(),
                cache.clone(),
                self.kind,
                reconcile.clone(),
                ctx.clone(),
            )));
        }
        shutdown.await;
        self.queue.shutdown();
        for t in tasks {
            t.abort();
        }
        drop(informers);
    }
}

/// The keys of the owners of kind `owner_kind` named by an object's controller ownerReference.
pub fn owner_keys(obj: &Value, owner_kind: &str) -> Vec<String> {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|o| o["controller"] == true && o["kind"] == owner_kind)
        .filter_map(|o| o["name"].as_str().map(|n| format!("{ns}/{n}")))
        .collect()
}

/// Forwards an informer's changes into the queue as keys.
fn feed(
    cache: Cache,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
    mapper: Mapper,
    queue: WorkQueue,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let all = |cache: &Cache| {
            for obj in cache.list() {
                for k in mapper(&obj) {
                    queue.add(&k);
                }
            }
        };
        all(&cache);
        loop {
            match changes.recv().await {
                Ok(Change::Applied(obj)) | Ok(Change::Deleted(obj)) => {
                    let keys = mapper(&obj);
                    tracing::trace!(object = %key_of(&obj), ?keys, "change mapped");
                    for k in keys {
                        queue.add(&k);
                    }
                }
                Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    all(&cache)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

async fn worker<K, C, F, Fut, E>(
    queue: WorkQueue,
    cache: Cache,
    kind: &'static KindInfo,
    reconcile: Arc<F>,
    ctx: Arc<C>,
) where
    K: DeserializeOwned + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    while let Some(key) = queue.next().await {
        let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        let Some(obj) = cache.get(ns, name) else {
            // Gone: nothing to reconcile (owned objects are cleaned up through their ownerReferences).
            queue.forget(&key);
            queue.done(&key);
            continue;
        };
        let span = tracing::info_span!("reconcile", kind = kind.kind, namespace = ns, name = name);
        let typed: K = match K::deserialize(obj.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "cannot decode object; not retrying");
                queue.done(&key);
                continue;
            }
        };
        // A panicking reconcile is a bug, but it must not take the worker (and the key) down with it.
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            reconcile(Arc::new(typed), ctx.clone()).instrument(span.clone()),
        ))
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(parent: &span, "reconcile panicked; retrying with backoff");
                queue.add_rate_limited(&key);
                queue.done(&key);
                continue;
            }
        };
        match result {
            Ok(Action::AwaitChange) => queue.forget(&key),
            Ok(Action::Requeue(after)) => {
                queue.forget(&key);
                queue.add_after(&key, after);
            }
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, failures = queue.failures(&key) + 1, "reconcile failed; retrying");
                queue.add_rate_limited(&key);
            }
        }
        queue.done(&key);
    }
}
