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
    let learning = tokio::spawn(learn_servers(client.clone(), slices.cache.clone()));
    let result = agent.run(services.cache.clone(), dns, shutdown).await;
    learning.abort();
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

/// The API servers the `kubernetes` EndpointSlices list, as URLs (`https://IP:PORT`).
pub fn api_servers(slices: &[Arc<EndpointSlice>]) -> Vec<String> {
    let mut urls = Vec::new();
    for s in slices.iter().filter(|s| {
        s.metadata.namespace() == "default"
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == "kubernetes")
    }) {
        let ports = s.ports.iter().flatten().filter_map(|p| p.port);
        for port in ports {
            for e in &s.endpoints {
                for a in &e.addresses {
                    let url = match a.parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V6(v6)) => format!("https://[{v6}]:{port}"),
                        _ => format!("https://{a}:{port}"),
                    };
                    if !urls.contains(&url) {
                        urls.push(url);
                    }
                }
            }
        }
    }
    urls
}

/// Keeps adding the API servers the cluster announces to the agent's fail-over targets (k3s agents learn theirs the
/// same way), so an agent told one server survives that server's loss.
async fn learn_servers(client: Client, slices: crate::client::informer::Cache<EndpointSlice>) {
    slices.wait_synced().await;
    loop {
        let found = api_servers(&slices.list());
        if !found.is_empty() {
            client.learn_servers(&found);
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
