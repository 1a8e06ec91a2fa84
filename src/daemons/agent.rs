//! The node process part (`capstan agent`, and the node inside `capstan up`): the node agent (kubelet) and, beside
//! it on the same shared Service and EndpointSlice informers, the service proxy and cluster DNS - started in that
//! order (DNS listens on the pod network's gateway, known once the agent has its pod CIDR) and stopped in reverse.

use std::future::Future;
use std::sync::Arc;

use crate::api::core::{Node, Service};
use crate::api::other::EndpointSlice;
use crate::client::informer::Informer;
use crate::client::Client;
use crate::node::{runtime::ContainerRuntime, Agent, Config, Error};
use crate::proxy;

type ClusterNetwork = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    Informer<Node>,
);

/// With the bridge pod network, starts following the Nodes for routes to other machines' pods and masquerade.
fn cluster_network(
    client: &Client,
    agent: &Agent,
    address: &std::net::IpAddr,
    remove_on_exit: bool,
) -> Option<ClusterNetwork> {
    #[cfg(target_os = "linux")]
    {
        let net = agent.network();
        if net.name() != "bridge" {
            return None;
        }
        let (network_addr, _) = crate::sys::parse_cidr(&net.cidr()).ok()?;
        let own = crate::node::network::cluster::Own {
            name: agent.name().to_string(),
            address: *address,
            pod_cidr: net.cidr(),
            bridge: crate::node::network::bridge::bridge_name(network_addr),
        };
        let nodes = Informer::<Node>::all(client);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::node::network::cluster::run(
            nodes.shared(),
            own,
            remove_on_exit,
            async move {
                let _ = stopped.await;
            },
        ));
        Some((stop, task, nodes))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (client, agent, address, remove_on_exit);
        None
    }
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    client: Client,
    cfg: Config,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let stop_pods = cfg.stop_pods_on_exit;
    let address = cfg.address;
    let agent = Agent::prepare(client.clone(), cfg, runtime).await?;
    let services = Informer::<Service>::all(&client);
    let slices = Informer::<EndpointSlice>::all(&client);
    let tables = proxy::Tables::new(services.cache.clone(), slices.cache.clone());
    let proxy_task = tokio::spawn(proxy::run(
        tables.clone(),
        services.changes.clone(),
        address,
    ));
    let cluster_net = cluster_network(&client, &agent, &address, stop_pods);
    let dns_ip = agent.gateway();
    let (dns, dns_task) = match tokio::net::UdpSocket::bind((dns_ip, 53)).await {
        Ok(sock) => {
            tracing::info!(address = %dns_ip, "serving cluster DNS");
            (
                Some(dns_ip),
                Some(tokio::spawn(proxy::dns::serve(sock, tables.clone()))),
            )
        }
        Err(e) => {
            tracing::info!(address = %dns_ip, "not serving cluster DNS: {e} (port 53 needs root); pods use the machine's resolver");
            (None, None)
        }
    };
    let result = agent.run(services.cache.clone(), dns, shutdown).await;
    if let Some((stop, task, _nodes)) = cluster_net {
        let _ = stop.send(());
        let _ = task.await;
    }
    proxy_task.abort();
    if let Some(t) = dns_task {
        t.abort();
    }
    if stop_pods {
        // The node stops with its pods: the service addresses it put on interfaces go too.
        tables.release_addresses().await;
    }
    result
}
