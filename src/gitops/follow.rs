//! Health and drift from watches, not timers: one metadata-only informer per kind an app may own, limited to objects
//! carrying the app label, wakes the app whose instance annotation an object carries whenever it changes - a rollout
//! finishing, a status condition flipping, someone's `kubectl scale` - so the Application controller looks at that
//! app within milliseconds and an idle cluster costs nothing between changes. Custom kinds join as their CRDs are
//! served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::api::registry::KindInfo;
use crate::api::MetaOnly;
use crate::client::informer::{Change, Informer};
use crate::client::Client;
use crate::runtime::queue::WorkQueue;

use super::sync::{APP_ANNOTATION, APP_LABEL};

/// How often each app's objects changed as the informers saw them (plus a count of relists, which may hide
/// changes from any app), so a look at an app can tell whether anything happened since the last one.
#[derive(Default, Clone)]
pub struct Changes(Arc<Mutex<(u64, HashMap<String, u64>)>>);

impl Changes {
    fn bump(&self, app: &str) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *c.1.entry(app.to_string()).or_default() += 1;
    }

    fn bump_all(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
    }

    /// A number that grows whenever one of `app`'s objects may have changed.
    pub fn count(&self, app: &str) -> u64 {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.0 + c.1.get(app).copied().unwrap_or(0)
    }
}

/// The app key (`namespace/name`) an object belongs to, from its instance annotation.
fn app_of(o: &MetaOnly) -> Option<String> {
    o.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APP_ANNOTATION))
        .cloned()
}

/// Starts one informer of `kind` that queues the app of every object that changes.
fn follow(
    client: &Client,
    kind: &'static KindInfo,
    queue: &WorkQueue,
    counts: &Changes,
) -> (Informer<MetaOnly>, tokio::task::JoinHandle<()>) {
    let informer =
        Informer::<MetaOnly>::for_kind(client, kind, None, &format!("labelSelector={APP_LABEL}"));
    let mut changes = informer.changes.subscribe();
    let (queue, cache, counts) = (queue.clone(), informer.cache.clone(), counts.clone());
    let task = tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(Change::Applied(o)) | Ok(Change::Deleted(o)) => {
                    if let Some(app) = app_of(&o) {
                        counts.bump(&app);
                        queue.add(&app);
                    }
                }
                Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    counts.bump_all();
                    let mut apps: Vec<String> =
                        cache.list().iter().filter_map(|o| app_of(o)).collect();
                    apps.sort();
                    apps.dedup();
                    for a in apps {
                        queue.add(&a);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    (informer, task)
}

/// Follows every kind apps may own (custom kinds as they come and go) until dropped.
pub async fn run(client: Client, queue: WorkQueue, counts: Changes) {
    let mut followed: HashMap<String, (Informer<MetaOnly>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let kinds: Vec<&'static KindInfo> = super::sync::kinds().collect();
        let wanted: std::collections::HashSet<String> =
            kinds.iter().map(|k| k.qualified()).collect();
        followed.retain(|k, (_, task)| {
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        for k in kinds {
            followed
                .entry(k.qualified())
                .or_insert_with(|| follow(&client, k, &queue, &counts));
        }
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}
