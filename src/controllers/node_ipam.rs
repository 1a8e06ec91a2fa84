//! The node IPAM controller (kube-controller-manager's node-ipam): gives each Node a `spec.podCIDR` - the next free
//! /24 of the cluster CIDR (10.244.0.0/16 by default) - so pod addresses are unique across the cluster. It never
//! changes a CIDR once set. In the same write it announces the pod network on the Node (`api::network`): the
//! backend that carries pod traffic between machines and the cluster and Service ranges, which agents read.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;

use crate::api::core::Node;
use crate::api::network::{
    Backend, BACKEND_ANNOTATION, CLUSTER_CIDR_ANNOTATION, SERVICE_CIDR_ANNOTATION,
};
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

use super::{Error, Result};

pub struct Context {
    pub client: Client,
    pub nodes: Cache<Node>,
    /// The cluster CIDR's network address; /16 split into /24s.
    pub cluster: Ipv4Addr,
    /// Blocks handed out by this controller that the cache does not show yet.
    /// node name -> block, until the cache shows it.
    pub allocated: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The annotations every Node carries (`api::network`).
    pub announce: std::collections::BTreeMap<String, String>,
}

impl Context {
    pub fn new(client: Client, nodes: Cache<Node>) -> Self {
        Context {
            client,
            nodes,
            cluster: Ipv4Addr::new(10, 244, 0, 0),
            allocated: Default::default(),
            announce: Default::default(),
        }
    }

    /// Announces `backend` and the cluster and Service ranges on every Node.
    pub fn announcing(mut self, backend: Backend, service_cidr: &str) -> Self {
        self.announce = [
            (BACKEND_ANNOTATION, backend.to_string()),
            (CLUSTER_CIDR_ANNOTATION, format!("{}/16", self.cluster)),
            (SERVICE_CIDR_ANNOTATION, service_cidr.to_string()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self
    }

    /// The announcements `node` lacks or holds with another value.
    fn missing(&self, node: &Node) -> serde_json::Map<String, serde_json::Value> {
        let have = node.metadata.annotations.as_ref();
        self.announce
            .iter()
            .filter(|(k, v)| have.and_then(|a| a.get(*k)) != Some(*v))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect()
    }
}

/// The first /24 of `cluster`/16 that no node holds.
pub fn next_free(cluster: Ipv4Addr, taken: &HashSet<String>) -> Option<String> {
    let [a, b, _, _] = cluster.octets();
    (0..=255u8)
        .map(|c| format!("{a}.{b}.{c}.0/24"))
        .find(|cidr| !taken.contains(cidr))
}

/// The node's `spec.podCIDR`, if it has one.
fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.pod_cidr.as_deref()
}

pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action> {
    let announce = ctx.missing(&node);
    if pod_cidr(&node).is_some() {
        // The cache shows this node's block: the cache alone accounts for it from now on (a node deleted and
        // registered again gets a block anew).
        ctx.allocated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node.metadata.name());
        if !announce.is_empty() {
            let patch = json!({"metadata": {"annotations": announce}});
            Api::<Node>::all(&ctx.client)
                .patch(node.metadata.name(), &Patch::Merge(patch))
                .await?;
        }
        return Ok(Action::await_change());
    }
    let name = node.metadata.name();
    let mut taken: HashSet<String> = ctx
        .nodes
        .list()
        .iter()
        .filter_map(|n| pod_cidr(n).map(String::from))
        .collect();
    {
        let mut allocated = ctx.allocated.lock().unwrap_or_else(|e| e.into_inner());
        // Once the cache shows a block, the cache alone accounts for it (and frees it with its node).
        allocated.retain(|_, c| !taken.contains(c));
        if allocated.contains_key(name) {
            // Given already; the cache has not caught up. Never a second block for one node.
            return Ok(Action::requeue(std::time::Duration::from_millis(200)));
        }
        taken.extend(allocated.values().cloned());
    }
    let cidr = next_free(ctx.cluster, &taken)
        .ok_or_else(|| Error::Exhausted(format!("{}/16", ctx.cluster)))?;
    // Conditional on the version read: a node that changed meanwhile (say, got its block) is a conflict.
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version, "annotations": announce},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    let patched = Api::<Node>::all(&ctx.client)
        .patch(name, &Patch::Merge(patch))
        .await;
    match patched {
        Ok(_) => {}
        Err(e) if e.code() == Some(409) => {
            return Ok(Action::requeue(std::time::Duration::from_millis(100)))
        }
        Err(e) => return Err(e.into()),
    }
    ctx.allocated
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), cidr.clone());
    tracing::info!(node = name, %cidr, "allocated pod CIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_lowest_free_block() {
        let net = Ipv4Addr::new(10, 244, 0, 0);
        let mut taken = HashSet::new();
        assert_eq!(next_free(net, &taken).unwrap(), "10.244.0.0/24");
        taken.insert("10.244.0.0/24".to_string());
        taken.insert("10.244.2.0/24".to_string());
        assert_eq!(next_free(net, &taken).unwrap(), "10.244.1.0/24");
        let all: HashSet<String> = (0..=255).map(|c| format!("10.244.{c}.0/24")).collect();
        assert!(next_free(net, &all).is_none());
    }
}
