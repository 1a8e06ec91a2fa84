//! Recording Events (core/v1) the way Kubernetes components do: one Event per kind of occurrence (repeats counted on
//! it), naming the object it is about, a reason from Kubernetes' vocabulary (Scheduled, Started, Killing, BackOff, ScalingReplicaSet, ...) and the
//! reporting component. Recording is best effort: a failed Event never fails the work it describes.

use super::{Api, Client};
use crate::api::core::{Event, EventSource, ObjectReference};
use crate::api::meta::{now, ObjectMeta};
use crate::api::registry::KindInfo;
use crate::api::Resource;

/// The Event Kubernetes components write about the object of kind `kind` described by `meta`.
pub fn event_about(
    kind: &KindInfo,
    meta: &ObjectMeta,
    component: &str,
    ty: &str,
    reason: &str,
    message: &str,
) -> Event {
    let ns = match meta.namespace() {
        "" => "default",
        ns => ns,
    };
    let t = now();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", meta.name())),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(kind.api_version()),
            kind: Some(kind.kind.to_string()),
            name: Some(meta.name().to_string()),
            namespace: kind.namespaced.then(|| ns.to_string()),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        },
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(ty.to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        }),
        first_timestamp: Some(t),
        last_timestamp: Some(t),
        count: Some(1),
        reporting_component: Some(component.to_string()),
        ..Default::default()
    }
}

/// How long a recorded Event is counted again instead of written anew when it repeats (Kubernetes' correlator:
/// 10 minutes), and how many are remembered.
const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
const REMEMBERED: usize = 4096;

/// How many Events one component may write per second, and in one burst: the kubelet's defaults (`eventRecordQPS`
/// 50, `eventBurst` 100). Events beyond that are dropped, as client-go's broadcaster drops them when its queue is
/// full: scheduling 150,000 pods must not cost 150,000 more writes, while a cluster at a human pace loses none.
pub const EVENT_QPS: f64 = 50.0;
pub const EVENT_BURST: f64 = 100.0;

/// What a client (and its clones) knows about the Events it recorded. Kept per client, like client-go's
/// per-broadcaster correlator: one process's components (and the simulation's hosts) do not share it.
#[derive(Default)]
pub(crate) struct Recent {
    /// The Events recorded lately, by what makes two the same (Kubernetes' dedup key: source, object, type, reason,
    /// message): the name each was stored under, its count, and when it was last seen.
    seen: std::sync::Mutex<std::collections::HashMap<String, (String, i32, tokio::time::Instant)>>,
    /// Each component's token bucket ([`EVENT_QPS`], [`EVENT_BURST`]), and the Events it dropped.
    budgets: std::sync::Mutex<std::collections::HashMap<String, Budget>>,
}

/// A token bucket: `tokens` left at `at`.
struct Budget {
    tokens: f64,
    at: tokio::time::Instant,
    dropped: u64,
}

impl Recent {
    /// Takes one write from `component`'s budget; false (and the Event is dropped) when it is spent.
    fn take(&self, component: &str) -> bool {
        let now = tokio::time::Instant::now();
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let budget = b.entry(component.to_string()).or_insert(Budget {
            tokens: EVENT_BURST,
            at: now,
            dropped: 0,
        });
        let refill = now.duration_since(budget.at).as_secs_f64() * EVENT_QPS;
        budget.tokens = (budget.tokens + refill).min(EVENT_BURST);
        budget.at = now;
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            if budget.dropped > 0 {
                tracing::info!(
                    component,
                    dropped = budget.dropped,
                    "events were dropped: more than {EVENT_QPS} a second"
                );
                budget.dropped = 0;
            }
            return true;
        }
        budget.dropped += 1;
        false
    }
}

fn dedup_key(ev: &Event) -> String {
    let o = &ev.involved_object;
    format!(
        "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
        ev.reporting_component.as_deref().unwrap_or(""),
        o.kind.as_deref().unwrap_or(""),
        o.namespace.as_deref().unwrap_or(""),
        o.name.as_deref().unwrap_or(""),
        o.uid.as_deref().unwrap_or(""),
        ev.type_.as_deref().unwrap_or(""),
        ev.reason.as_deref().unwrap_or(""),
        ev.message.as_deref().unwrap_or("")
    )
}

/// Records an Event about the object of kind `kind` described by `meta`; a failure is logged, never returned. The
/// same Event again within 10 minutes is counted on the one already stored (`count`, `lastTimestamp`) instead of
/// written anew, as Kubernetes' event correlator does - a crash loop is one Event with a growing count, not
/// thousands. A component over its budget ([`EVENT_QPS`]) drops the Event.
pub async fn record(
    client: &Client,
    kind: &KindInfo,
    meta: &ObjectMeta,
    component: &str,
    ty: &str,
    reason: &str,
    message: &str,
) {
    if !client.recent_events.take(component) {
        tracing::debug!(reason, "event dropped: over the component's event budget");
        return;
    }
    let ev = event_about(kind, meta, component, ty, reason, message);
    let ns = ev.metadata.namespace().to_string();
    let api = Api::<Event>::namespaced(client, &ns);
    let key = dedup_key(&ev);
    let seen = {
        let mut r = client
            .recent_events
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match r.get_mut(&key) {
            Some((name, count, at)) if at.elapsed() < REPEAT_WINDOW => {
                *count += 1;
                *at = tokio::time::Instant::now();
                Some((name.clone(), *count))
            }
            _ => None,
        }
    };
    if let Some((name, count)) = seen {
        let patch = super::Patch::Merge(serde_json::json!({"count": count,
            "lastTimestamp": ev.last_timestamp}));
        match api.patch(&name, &patch).await {
            Ok(_) => return,
            // Gone (expired, deleted): written anew below.
            Err(e) => tracing::debug!(reason, error = %e, "counting a repeated event failed"),
        }
    }
    match api.create(&ev).await {
        Ok(stored) => {
            let mut r = client
                .recent_events
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if r.len() >= REMEMBERED {
                r.retain(|_, (_, _, at)| at.elapsed() < REPEAT_WINDOW);
                if r.len() >= REMEMBERED {
                    r.clear();
                }
            }
            r.insert(
                key,
                (
                    stored.metadata.name().to_string(),
                    1,
                    tokio::time::Instant::now(),
                ),
            );
        }
        Err(e) => tracing::debug!(reason, error = %e, "recording an event failed"),
    }
}

/// Records Events for one component, in the background (a controller never waits on an Event, and a failed one
/// never fails its work).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
}

impl Recorder {
    pub fn new(client: &Client, component: &'static str) -> Self {
        Recorder {
            client: client.clone(),
            component,
        }
    }

    /// A `Normal` Event about `obj`.
    pub fn normal<K: Resource>(&self, obj: &K, reason: &'static str, message: String) {
        self.publish(K::info(), obj.meta(), "Normal", reason, message)
    }

    /// A `Warning` Event about `obj`.
    pub fn warning<K: Resource>(&self, obj: &K, reason: &'static str, message: String) {
        self.publish(K::info(), obj.meta(), "Warning", reason, message)
    }

    /// An Event about the object of kind `kind` described by `meta` (for a controller that works on one kind in the
    /// form of another, as the ReplicaSet controller does for ReplicationControllers).
    pub fn publish(
        &self,
        kind: &'static KindInfo,
        meta: &ObjectMeta,
        ty: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let client = self.client.clone();
        let component = self.component;
        // Only what the Event names: a copy of the whole metadata (managedFields, annotations) would be waste.
        let meta = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..Default::default()
        };
        tokio::spawn(
            async move { record(&client, kind, &meta, component, ty, reason, &message).await },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_component_writes_a_burst_then_its_rate_and_others_keep_their_own_budget() {
        let r = Recent::default();
        let burst = EVENT_BURST as usize;
        assert_eq!((0..burst).filter(|_| r.take("scheduler")).count(), burst);
        assert!(!r.take("scheduler"), "the burst is spent");
        assert!(r.take("kubelet"), "another component has its own budget");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let refilled = (0..burst).filter(|_| r.take("scheduler")).count();
        assert_eq!(refilled, EVENT_QPS as usize, "one second refills the rate");
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        let after_idle = (0..2 * burst).filter(|_| r.take("scheduler")).count();
        assert_eq!(
            after_idle, burst,
            "an idle hour refills no more than the burst"
        );
    }
}
