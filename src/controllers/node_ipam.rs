//! The node IPAM controller (kube-controller-manager's node-ipam): gives each Node a `spec.podCIDR` - the next free
//! /24 of the cluster CIDR (10.244.0.0/16 by default: 256 nodes; `--cluster-cidr 10.0.0.0/12` holds 4,096) - so pod
//! addresses are unique across the cluster. It never
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
    /// The cluster CIDR (network address, prefix length), split into /24s.
    pub cluster: (Ipv4Addr, u8),
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
            cluster: (Ipv4Addr::new(10, 244, 0, 0), 16),
            allocated: Default::default(),
            announce: Default::default(),
        }
    }

    /// Announces `backend` and the cluster and Service ranges on every Node.
    pub fn announcing(mut self, backend: Backend, service_cidr: &str) -> Self {
        self.announce = [
            (BACKEND_ANNOTATION, backend.to_string()),
            (
                CLUSTER_CIDR_ANNOTATION,
                format!("{}/{}", self.cluster.0, self.cluster.1),
            ),
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

/// The first /24 of the cluster CIDR (network, prefix length) that no node holds (`taken`: the /24s' network
/// addresses as numbers).
pub fn next_free((net, prefix): (Ipv4Addr, u8), taken: &HashSet<u32>) -> Option<String> {
    let base = u32::from(net);
    let blocks = 1u32 << (24 - prefix.min(24));
    (0..blocks)
        .map(|i| base + (i << 8))
        .find(|b| !taken.contains(b))
        .map(|b| format!("{}/24", Ipv4Addr::from(b)))
}

/// A /24's network address as a number (None for anything else).
fn block(cidr: &str) -> Option<u32> {
    let (ip, len) = cidr.split_once('/')?;
    (len == "24").then_some(())?;
    ip.parse::<Ipv4Addr>().ok().map(u32::from)
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
    let mut taken: HashSet<u32> = ctx
        .nodes
        .list()
        .iter()
        .filter_map(|n| pod_cidr(n).and_then(block))
        .collect();
    {
        let mut allocated = ctx.allocated.lock().unwrap_or_else(|e| e.into_inner());
        // Once the cache shows a block, the cache alone accounts for it (and frees it with its node).
        allocated.retain(|_, c| block(c).is_some_and(|b| !taken.contains(&b)));
        if allocated.contains_key(name) {
            // Given already; the cache has not caught up. Never a second block for one node.
            return Ok(Action::requeue(std::time::Duration::from_millis(200)));
        }
        taken.extend(allocated.values().filter_map(|c| block(c)));
    }
    let cidr = next_free(ctx.cluster, &taken)
        .ok_or_else(|| Error::Exhausted(format!("{}/{}", ctx.cluster.0, ctx.cluster.1)))?;
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
        let net = (Ipv4Addr::new(10, 244, 0, 0), 16);
        let mut taken = HashSet::new();
        assert_eq!(next_free(net, &taken).unwrap(), "10.244.0.0/24");
        taken.insert(block("10.244.0.0/24").unwrap());
        taken.insert(block("10.244.2.0/24").unwrap());
        assert_eq!(next_free(net, &taken).unwrap(), "10.244.1.0/24");
        let all: HashSet<u32> = (0..=255)
            .filter_map(|c| block(&format!("10.244.{c}.0/24")))
            .collect();
        assert!(next_free(net, &all).is_none());
    }

    #[test]
    fn a_wider_cluster_cidr_holds_more_nodes() {
        let net = (Ipv4Addr::new(10, 32, 0, 0), 11);
        let all16: HashSet<u32> = (0..256u32)
            .map(|c| u32::from(Ipv4Addr::new(10, 32, 0, 0)) + (c << 8))
            .collect();
        assert_eq!(next_free(net, &all16).unwrap(), "10.33.0.0/24");
        let full: HashSet<u32> = (0..8192u32)
            .map(|c| u32::from(Ipv4Addr::new(10, 32, 0, 0)) + (c << 8))
            .collect();
        assert!(next_free(net, &full).is_none());
        assert_eq!(block("10.1.2.0/16"), None);
    }
}
