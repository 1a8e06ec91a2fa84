//! What a pod worker tells the API server about its pod - status, Events, and the final delete once its containers
//! are down - behind one trait, so the worker's state machine can be unit-tested with a recording double while the
//! agent uses the real client.

use async_trait::async_trait;
use serde_json::json;

use crate::api::core::{Pod, PodStatus};
use crate::api::Resource;
use crate::client::{Api, Client, Patch};

#[async_trait]
pub trait PodApi: Send + Sync {
    /// Writes the pod's status (strategic merge on the status subresource).
    async fn patch_status(
        &self,
        ns: &str,
        name: &str,
        status: &PodStatus,
    ) -> crate::client::Result<()>;
    /// Records an Event about the pod (best effort).
    async fn event(&self, pod: &Pod, ty: &str, reason: &str, message: &str);
    /// Removes the pod object for good (grace period 0, only if it is still the pod with `uid`).
    async fn delete_now(&self, ns: &str, name: &str, uid: &str) -> crate::client::Result<()>;
}

/// The real thing: the API server through the client.
pub struct ClientPodApi(pub Client);

#[async_trait]
impl PodApi for ClientPodApi {
    async fn patch_status(
        &self,
        ns: &str,
        name: &str,
        status: &PodStatus,
    ) -> crate::client::Result<()> {
        Api::<Pod>::namespaced(&self.0, ns)
            .patch_status(name, &Patch::Strategic(json!({ "status": status })))
            .await
            .map(drop)
    }

    async fn event(&self, pod: &Pod, ty: &str, reason: &str, message: &str) {
        crate::client::events::record(
            &self.0,
            Pod::info(),
            &pod.metadata,
            "kubelet",
            ty,
            reason,
            message,
        )
        .await
    }

    async fn delete_now(&self, ns: &str, name: &str, uid: &str) -> crate::client::Result<()> {
        let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid}});
        Api::<Pod>::namespaced(&self.0, ns)
            .delete_with(name, &body)
            .await
    }
}
