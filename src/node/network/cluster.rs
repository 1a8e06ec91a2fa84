//! The node's part in the cluster-wide pod network (`bridge` only): it reads what the control plane announced on
//! its Node (backend, cluster and Service CIDRs - `api::network`), masquerades its pods' traffic that leaves the
//! cluster, and keeps routes to every other machine's pods ([`super::routes`]) as Nodes come, change and go.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::api::core::Node;
use crate::api::network::{self, Backend};
use crate::client::informer::{Change, Shared};

use super::{masquerade, routes};

/// What this node is on the network.
#[derive(Debug, Clone)]
pub struct Own {
    pub name: String,
    pub address: IpAddr,
    pub pod_cidr: String,
    /// The node's bridge (names its masquerade table).
    pub bridge: String,
}

/// The announcements on the node's own Node: backend, and the ranges that are not masqueraded.
fn announced(node: &Node) -> Option<(Backend, Vec<String>)> {
    let a = node.metadata.annotations.as_ref()?;
    let backend = a
        .get(network::BACKEND_ANNOTATION)?
        .parse()
        .unwrap_or_else(|e| {
            tracing::warn!("{e}; using vxlan");
            Backend::Vxlan
        });
    let exempt = [
        network::CLUSTER_CIDR_ANNOTATION,
        network::SERVICE_CIDR_ANNOTATION,
    ]
    .iter()
    .filter_map(|k| a.get(*k).cloned())
    .collect();
    Some((backend, exempt))
}

/// Follows the Nodes until `stop` resolves; then, with `remove` (the node stops with its pods), takes its routes,
/// VXLAN device and masquerade table away.
pub async fn run(
    nodes: Shared<Node>,
    own: Own,
    remove: bool,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    let mut changes = nodes.changes.subscribe();
    nodes.cache.wait_synced().await;
    // The control plane announces the network in the write that gives the pod CIDR, which the agent has already
    // seen; an older control plane never does, and then only the defaults are known.
    let mut waited = Duration::ZERO;
    let (backend, exempt) = loop {
        if let Some(found) = nodes.cache.get("", &own.name).and_then(|n| announced(&n)) {
            break found;
        }
        if waited >= Duration::from_secs(10) {
            tracing::warn!(node = %own.name, "the control plane announced no pod network on this Node; using vxlan and masquerading only traffic leaving this node's pods' range");
            break (Backend::Vxlan, Vec::new());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    };
    let table = masquerade::table_name(&own.bridge);
    match masquerade::apply(&table, &own.pod_cidr, &exempt).await {
        Ok(()) => {
            tracing::info!(%table, exempt = ?exempt, "masquerading pod traffic that leaves the cluster")
        }
        Err(e) => tracing::warn!("pods cannot reach addresses outside the cluster: {e}"),
    }
    let mut routes = match routes::Routes::new(backend, &own.name, &own.pod_cidr, own.address) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("pods of other machines are not reachable: {e}");
            stop.await;
            return;
        }
    };
    let mut first = true;
    let mut retry = false;
    loop {
        let want = routes::peers(
            &nodes.cache.list(),
            &own.name,
            &crate::sys::local_addresses(),
            routes.backend(),
        );
        retry = match routes.sync(want).await {
            Ok(()) => false,
            Err(e) => {
                // Logged once per failure streak; tried again every second and on every change.
                if !retry {
                    tracing::warn!("routing to other machines' pods: {e}");
                }
                true
            }
        };
        if first {
            routes.remove_strays().await;
            first = false;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
            ev = changes.recv() => match ev {
                Ok(Change::Applied(_) | Change::Deleted(_) | Change::Resynced) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => { stop.await; break; }
            },
        }
    }
    if remove {
        routes.shutdown().await;
        masquerade::remove(&table).await;
    }
}
