//! Recording Events (core/v1) the way Kubernetes components do: one Event per occurrence, naming the object it is
//! about, a reason from Kubernetes' vocabulary (Scheduled, Started, Killing, BackOff, ScalingReplicaSet, ...) and the
//! reporting component. Recording is best effort: a failed Event never fails the work it describes.

use serde_json::{json, Value};

use super::Client;
use crate::api::meta::{format_time, now, ObjectMeta};
use crate::api::registry::{self, KindInfo};
use crate::api::Resource;

/// Records an Event about `obj` (any namespaced or cluster-scoped object with apiVersion/kind set, or a Pod).
pub async fn record(
    client: &Client,
    obj: &Value,
    component: &str,
    ty: &str,
    reason: &str,
    message: &str,
) {
    let Some(events) = registry::lookup("events") else {
        return;
    };
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let t = format_time(&now());
    let mut involved = json!({"apiVersion": api_version, "kind": kind, "name": name,
        "uid": obj.pointer("/metadata/uid"), "resourceVersion": obj.pointer("/metadata/resourceVersion")});
    if obj.pointer("/metadata/namespace").is_some() {
        involved["namespace"] = json!(ns);
    }
    let ev = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": ty, "source": {"component": component},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1, "reportingComponent": component});
    if let Err(e) = client.create(events, Some(ns), &ev).await {
        tracing::debug!(reason, error = %e, "recording an event failed");
    }
}

/// [`record`] in the background: for controllers that must not wait on an Event.
pub fn spawn_record(
    client: &Client,
    obj: Value,
    component: &'static str,
    ty: &'static str,
    reason: &'static str,
    message: String,
) {
    let client = client.clone();
    tokio::spawn(async move { record(&client, &obj, component, ty, reason, &message).await });
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
        kind: &KindInfo,
        meta: &ObjectMeta,
        ty: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let mut about = json!({"apiVersion": kind.api_version(), "kind": kind.kind,
            "metadata": {"name": meta.name, "uid": meta.uid, "resourceVersion": meta.resource_version}});
        if kind.namespaced {
            about["metadata"]["namespace"] = json!(meta.namespace);
        }
        spawn_record(&self.client, about, self.component, ty, reason, message);
    }
}
