//! The reconcile loop: informers feed a work queue with the keys of changed objects (the primary kind's own, and
//! owners' keys for the kinds it owns or watches); workers take keys and call `reconcile(obj, ctx) -> Action` with
//! the newest cached object. Errors come back with backoff; `Action::requeue` asks for a later look. Level
//! triggered: the event that woke a key is never passed on - only the current state.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::queue::{Backoff, WorkQueue};
use crate::api::registry::KindInfo;
use crate::api::{Object, Resource};
use crate::client::informer::{Cache, Change, Informer, Shared};
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
pub type Mapper<S = Value> = Arc<dyn Fn(&S) -> Vec<String> + Send + Sync>;

/// The key of an object: `namespace/name` (`/name` when cluster-scoped).
pub fn key_of(obj: &impl Object) -> String {
    obj.key()
}

/// A source of keys for the queue: an informer (the controller's own or a shared one) and how its objects map to
/// primary keys. Type-erased, so one controller can watch secondaries of several kinds.
struct Feed {
    start: Box<StartFeed>,
}

/// Starts a feed with the controller's client, namespace and queue.
type StartFeed = dyn FnOnce(&Client, Option<&str>, WorkQueue) -> Started + Send;

/// A running feed: its task, a future that resolves once its cache has listed, and the informer it owns (if any).
struct Started {
    task: tokio::task::JoinHandle<()>,
    synced: futures::future::BoxFuture<'static, ()>,
    _informer: Option<Box<dyn Send>>,
}

impl Feed {
    fn shared<S: Object>(shared: Shared<S>, mapper: Mapper<S>) -> Feed {
        Feed {
            start: Box::new(move |_, _, queue| {
                let cache = shared.cache.clone();
                Started {
                    task: feed(
                        shared.cache.clone(),
                        shared.changes.subscribe(),
                        mapper,
                        queue,
                    ),
                    synced: Box::pin(async move { cache.wait_synced().await }),
                    _informer: None,
                }
            }),
        }
    }

    fn own<S: Resource>(mapper: Mapper<S>) -> Feed {
        Feed {
            start: Box::new(move |client, ns, queue| {
                let inf = Informer::<S>::scoped(client, ns, "");
                let mut started = (Feed::shared(inf.shared(), mapper).start)(client, ns, queue);
                started._informer = Some(Box::new(inf));
                started
            }),
        }
    }
}

/// A controller for one primary kind `K` (a typed kind, or `Value` with the kind given at run time).
pub struct Controller<K: Object> {
    client: Client,
    kind: &'static KindInfo,
    namespace: Option<String>,
    queue: WorkQueue,
    primary: Option<Shared<K>>,
    secondary: Vec<Feed>,
    workers: usize,
    /// The controller's name in the work-queue metrics.
    name: Option<String>,
}

impl<K: Resource> Controller<K> {
    pub fn new(client: Client) -> Self {
        Self::for_kind(client, K::info())
    }
}

impl Controller<Value> {
    /// A controller whose primary objects are kept as JSON (for a kind without a Rust type of its own yet).
    pub fn dynamic(client: Client, kind: &'static KindInfo) -> Self {
        Self::for_kind(client, kind)
    }
}

impl<K: Object> Controller<K> {
    fn for_kind(client: Client, kind: &'static KindInfo) -> Self {
        Controller {
            client,
            kind,
            namespace: None,
            queue: WorkQueue::new(Backoff::default()),
            primary: None,
            secondary: Vec::new(),
            workers: 2,
            name: None,
        }
    }

    /// Names the controller in the work-queue metrics (by default its primary kind's plural).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
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

    /// Reconciles the owner when an object of kind `C` whose controller ownerReference names the primary kind
    /// changes (with an informer of its own).
    pub fn owns<C: Resource>(mut self) -> Self {
        self.secondary.push(Feed::own::<C>(owner_mapper(self.kind)));
        self
    }

    /// Reconciles the primary objects `mapper` names whenever an object of kind `S` changes (with an informer of
    /// its own).
    pub fn watches<S: Resource>(mut self, mapper: Mapper<S>) -> Self {
        self.secondary.push(Feed::own(mapper));
        self
    }

    /// Uses an informer the caller shares for the primary kind (instead of starting one).
    pub fn primary_shared(mut self, informer: &Informer<K>) -> Self {
        self.primary = Some(informer.shared());
        self
    }

    /// Reconciles the primary objects `mapper` names whenever an object of a shared informer's kind changes.
    pub fn watches_shared<S: Object>(mut self, informer: &Informer<S>, mapper: Mapper<S>) -> Self {
        self.secondary.push(Feed::shared(informer.shared(), mapper));
        self
    }

    /// Like [`owns`](Self::owns), fed by an informer the caller shares (and can read from in reconcile).
    pub fn owns_shared<C: Object>(mut self, informer: &Informer<C>) -> Self {
        self.secondary
            .push(Feed::shared(informer.shared(), owner_mapper(self.kind)));
        self
    }

    /// The queue (for tests and for components that enqueue keys themselves).
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Runs until `shutdown` resolves.
    pub async fn run<C, F, Fut, E>(
        self,
        reconcile: F,
        ctx: Arc<C>,
        shutdown: impl Future<Output = ()>,
    ) where
        C: Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.queue
            .register(self.name.as_deref().unwrap_or(self.kind.plural));
        let ns = self.namespace.as_deref();
        let own_primary;
        let primary = match self.primary {
            Some(shared) => shared,
            None => {
                own_primary = Informer::<K>::for_kind(&self.client, self.kind, ns, "");
                own_primary.shared()
            }
        };
        let own: Mapper<K> = Arc::new(|obj: &K| vec![obj.key()]);
        let cache = primary.cache.clone();
        let mut started = vec![(Feed::shared(primary, own).start)(
            &self.client,
            ns,
            self.queue.clone(),
        )];
        for feed in self.secondary {
            started.push((feed.start)(&self.client, ns, self.queue.clone()));
        }
        // Act only on a complete picture: every informer has listed once.
        let mut tasks = Vec::new();
        let mut informers = Vec::new();
        for s in started {
            s.synced.await;
            tasks.push(s.task);
            informers.push(s._informer);
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

/// Maps an object of kind `C` to the key of its controller when that controller is of kind `owner`.
fn owner_mapper<C: Object>(owner: &'static KindInfo) -> Mapper<C> {
    let owner_kind = owner.kind;
    Arc::new(move |obj: &C| owner_keys(obj, owner_kind))
}

/// The keys of the owners of kind `owner_kind` named by an object's controller ownerReference.
pub fn owner_keys(obj: &impl Object, owner_kind: &str) -> Vec<String> {
    match obj.controller_owner() {
        Some((kind, name)) if kind == owner_kind => vec![format!("{}/{name}", obj.namespace())],
        _ => Vec::new(),
    }
}

/// Forwards an informer's changes into the queue as keys.
fn feed<S: Object>(
    cache: Cache<S>,
    mut changes: tokio::sync::broadcast::Receiver<Change<S>>,
    mapper: Mapper<S>,
    queue: WorkQueue,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let all = |cache: &Cache<S>| {
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
                    tracing::trace!(object = %obj.key(), ?keys, "change mapped");
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
    cache: Cache<K>,
    kind: &'static KindInfo,
    reconcile: Arc<F>,
    ctx: Arc<C>,
) where
    K: Object,
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
        // A panicking reconcile is a bug, but it must not take the worker (and the key) down with it.
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            reconcile(obj, ctx.clone()).instrument(span.clone()),
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
