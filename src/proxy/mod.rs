//! The service proxy (kube-proxy's role), a userspace proxy in every node agent: it listens on each Service's
//! ClusterIP:port, on its load balancer addresses, and for NodePort and LoadBalancer Services on the node's address at
//! each node port, and forwards
//! TCP connections and UDP datagrams to the Service's endpoints (from its EndpointSlices: ready endpoints, or serving
//! terminating ones when none is ready), round robin, or by client address with `sessionAffinity: ClientIP`.
//! Endpoints are looked up per connection, so a change is followed as soon as the informer has it; connections to an
//! endpoint that went away are left to finish (draining). Listeners follow Services being added, changed and
//! removed. A ClusterIP that is not a local address is added to the loopback device when running as root; without
//! root only node ports (and ClusterIPs in 127.0.0.0/8) can be served, which is logged once per address.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::api::core::Service;
use crate::api::other::EndpointSlice;
use crate::client::informer::{Cache, Change};

pub mod dns;

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn service_of(slice: &EndpointSlice) -> &str {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .map_or("", String::as_str)
}

/// Which Service port a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    ns: String,
    service: String,
    port_name: String,
    protocol: String,
    /// ClientIP session affinity timeout.
    affinity: Option<Duration>,
}

/// What the proxy knows: Services and EndpointSlices (shared informer caches), and its round-robin and affinity state.
pub struct Tables {
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    next: Mutex<HashMap<Target, usize>>,
    sticky: Mutex<HashMap<(Target, IpAddr), (SocketAddr, Instant)>>,
    /// Addresses the proxy added to the loopback device (root), removed when no Service uses them.
    added: Mutex<HashSet<IpAddr>>,
}

impl Tables {
    pub fn new(services: Cache<Service>, slices: Cache<EndpointSlice>) -> Arc<Self> {
        Arc::new(Tables {
            services,
            slices,
            next: Mutex::default(),
            sticky: Mutex::default(),
            added: Mutex::default(),
        })
    }

    /// Removes the addresses the proxy added to the loopback device (the node stops; another node agent on the
    /// machine that serves the same Services adds them again).
    pub async fn release_addresses(&self) {
        let added: Vec<IpAddr> = self
            .added
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for ip in added {
            remove_local(ip).await;
        }
    }

    /// The endpoints of a Service port now: ready ones, else serving terminating ones.
    fn endpoints(&self, t: &Target) -> Vec<SocketAddr> {
        let mut ready = Vec::new();
        let mut serving = Vec::new();
        for slice in self.slices.list_namespace(&t.ns) {
            if service_of(&slice) != t.service {
                continue;
            }
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == t.port_name
                        && p.protocol.as_deref().unwrap_or("TCP") == t.protocol
                })
                .and_then(|p| p.port)
            else {
                continue;
            };
            for e in &slice.endpoints {
                let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                let addr = SocketAddr::new(ip, port as u16);
                let c = e.conditions.clone().unwrap_or_default();
                if c.ready != Some(false) {
                    ready.push(addr);
                } else if c.serving == Some(true) && c.terminating == Some(true) {
                    serving.push(addr);
                }
            }
        }
        let mut out = if ready.is_empty() { serving } else { ready };
        out.sort();
        out
    }

    /// The endpoint for a new connection (or datagram flow) from `client`.
    fn pick(&self, t: &Target, client: IpAddr) -> Option<SocketAddr> {
        let eps = self.endpoints(t);
        if eps.is_empty() {
            return None;
        }
        if let Some(timeout) = t.affinity {
            let mut sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
            let key = (t.clone(), client);
            if let Some((addr, at)) = sticky.get(&key) {
                if at.elapsed() < timeout && eps.contains(addr) {
                    let addr = *addr;
                    sticky.insert(key, (addr, Instant::now()));
                    return Some(addr);
                }
            }
            let addr = self.round_robin(t, &eps);
            sticky.insert(key, (addr, Instant::now()));
            return Some(addr);
        }
        Some(self.round_robin(t, &eps))
    }

    fn round_robin(&self, t: &Target, eps: &[SocketAddr]) -> SocketAddr {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let i = next.entry(t.clone()).or_insert(0);
        let addr = eps[*i % eps.len()];
        *i = i.wrapping_add(1);
        addr
    }

    /// Every (address, protocol) -> Service port the proxy should serve, given the Services now.
    fn wanted(&self, node_ip: IpAddr) -> HashMap<(SocketAddr, String), Target> {
        let mut out = HashMap::new();
        for svc in self.services.list() {
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
            if ty == "ExternalName" {
                continue;
            }
            let ip = spec.cluster_ip.as_deref().unwrap_or("");
            let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                let config = spec.session_affinity_config.as_ref().map(|c| &c.0);
                Duration::from_secs(
                    config
                        .and_then(|c| c["clientIP"]["timeoutSeconds"].as_u64())
                        .unwrap_or(10800),
                )
            });
            let lb_ips: Vec<IpAddr> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect();
            for p in spec.ports.iter().flatten() {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                if protocol != "TCP" && protocol != "UDP" {
                    continue;
                }
                let target = Target {
                    ns: svc.metadata.namespace().to_string(),
                    service: svc.metadata.name().to_string(),
                    port_name: p.name.clone().unwrap_or_default(),
                    protocol: protocol.clone(),
                    affinity,
                };
                let port = p.port as u16;
                if let Ok(addr) = ip.parse::<IpAddr>() {
                    out.insert(
                        (SocketAddr::new(addr, port), protocol.clone()),
                        target.clone(),
                    );
                }
                if ty == "LoadBalancer" {
                    for addr in &lb_ips {
                        out.insert(
                            (SocketAddr::new(*addr, port), protocol.clone()),
                            target.clone(),
                        );
                    }
                }
                if let Some(np) = p
                    .node_port
                    .filter(|_| ty == "NodePort" || ty == "LoadBalancer")
                {
                    out.insert(
                        (SocketAddr::new(node_ip, np as u16), protocol.clone()),
                        target.clone(),
                    );
                }
            }
        }
        out
    }
}

/// Why a service address could not be made local.
#[derive(Debug, thiserror::Error)]
pub enum NotLocal {
    #[error("{0} is not a local address and adding it needs root")]
    NeedsRoot(IpAddr),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Netlink(#[from] crate::sys::netlink::Error),
    #[cfg(not(target_os = "linux"))]
    #[error("{0} is not a local address")]
    Unsupported(IpAddr),
}

/// Makes `ip` a local address if it is not one (root only: added to the loopback device). Returns whether it was
/// added (and so is to be removed when no longer served).
async fn ensure_local(ip: IpAddr) -> Result<bool, NotLocal> {
    if ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok() {
        return Ok(false);
    }
    if !crate::sys::is_root() {
        return Err(NotLocal::NeedsRoot(ip));
    }
    #[cfg(target_os = "linux")]
    {
        crate::sys::netlink::add_local(ip).await?;
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(NotLocal::Unsupported(ip))
    }
}

async fn remove_local(ip: IpAddr) {
    #[cfg(target_os = "linux")]
    if let Err(e) = crate::sys::netlink::remove_local(ip).await {
        tracing::debug!(%ip, "removing a service address: {e}");
    }
}

/// Runs the proxy until its informers stop: listeners follow the Services.
pub async fn run(
    tables: Arc<Tables>,
    services: broadcast::Sender<Change<Service>>,
    node_ip: IpAddr,
) {
    let mut changes = services.subscribe();
    tables.services.wait_synced().await;
    let mut running: HashMap<(SocketAddr, String), (Target, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut failed: HashSet<(SocketAddr, String)> = HashSet::new();
    loop {
        let wanted = tables.wanted(node_ip);
        running.retain(|key, (target, task)| {
            let keep = wanted.get(key) == Some(target);
            if !keep {
                task.abort();
            }
            keep
        });
        // Addresses this proxy added and no Service uses any more go again.
        let in_use: HashSet<IpAddr> = wanted.keys().map(|(a, _)| a.ip()).collect();
        let unused: Vec<IpAddr> = {
            let mut added = tables.added.lock().unwrap_or_else(|e| e.into_inner());
            let unused = added
                .iter()
                .filter(|ip| !in_use.contains(ip))
                .copied()
                .collect();
            added.retain(|ip| in_use.contains(ip));
            unused
        };
        for ip in unused {
            remove_local(ip).await;
        }
        for (key, target) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let (addr, proto) = key.clone();
            match ensure_local(addr.ip()).await {
                Ok(true) => {
                    tables
                        .added
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(addr.ip());
                }
                Ok(false) => {}
                Err(why) => {
                    if failed.insert(key.clone()) {
                        tracing::warn!(service = %format!("{}/{}", target.ns, target.service), %addr, "cannot serve: {why}");
                    }
                    continue;
                }
            }
            let task = match proto.as_str() {
                "UDP" => match tokio::net::UdpSocket::bind(addr).await {
                    Ok(sock) => tokio::spawn(udp(Arc::new(sock), tables.clone(), target.clone())),
                    Err(e) => {
                        if failed.insert(key.clone()) {
                            tracing::info!(%addr, "not serving UDP here: {e}");
                        }
                        continue;
                    }
                },
                _ => match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => tokio::spawn(tcp(l, tables.clone(), target.clone())),
                    Err(e) => {
                        // Another node agent on this machine may serve it already.
                        if failed.insert(key.clone()) {
                            tracing::info!(%addr, "not serving TCP here: {e}");
                        }
                        continue;
                    }
                },
            };
            failed.remove(&key);
            tracing::debug!(%addr, %proto, service = %target.service, "proxying");
            running.insert(key, (target, task));
        }
        // Wait for a Service change (a burst is handled at once); retry failed addresses now and then.
        match tokio::time::timeout(Duration::from_secs(10), changes.recv()).await {
            Ok(Err(broadcast::error::RecvError::Closed)) => break,
            _ => while changes.try_recv().is_ok() {},
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

async fn tcp(listener: tokio::net::TcpListener, tables: Arc<Tables>, target: Target) {
    loop {
        let Ok((mut inbound, client)) = listener.accept().await else {
            continue;
        };
        let tables = tables.clone();
        let target = target.clone();
        tokio::spawn(async move {
            // Try a few endpoints: one that just went away should not fail the client.
            for _ in 0..3 {
                let Some(ep) = tables.pick(&target, client.ip()) else {
                    tracing::debug!(service = %target.service, "no endpoints: connection closed");
                    return;
                };
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(ep),
                )
                .await
                {
                    Ok(Ok(mut outbound)) => {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                        {
                            tracing::debug!(endpoint = %ep, "connection ended: {e}");
                        }
                        return;
                    }
                    _ => {
                        tracing::debug!(endpoint = %ep, service = %target.service, "endpoint refused a connection")
                    }
                }
            }
        });
    }
}

/// UDP flows by client: the upstream socket and when it was last used.
type Flows = Arc<Mutex<HashMap<SocketAddr, (Arc<tokio::net::UdpSocket>, Instant)>>>;

async fn udp(sock: Arc<tokio::net::UdpSocket>, tables: Arc<Tables>, target: Target) {
    // One upstream socket per client flow; flows idle for a minute are closed.
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .map(|(u, _)| u.clone());
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(ep) = tables.pick(&target, client.ip()) else {
                    continue;
                };
                let bind: SocketAddr = if ep.is_ipv4() {
                    "0.0.0.0:0".parse().expect("address")
                } else {
                    "[::]:0".parse().expect("address")
                };
                let Ok(u) = tokio::net::UdpSocket::bind(bind).await else {
                    continue;
                };
                if u.connect(ep).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                let (reply_to, back, flows2) = (sock.clone(), u.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(60), back.recv(&mut b)).await
                    {
                        let _ = reply_to.send_to(&b[..m], client).await;
                    }
                    flows2
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&client);
                });
                u
            }
        };
        flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client, (upstream.clone(), Instant::now()));
        let _ = upstream.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn wanted_listeners_cover_cluster_ips_and_node_ports() {
        let services = Cache::of([
            typed(
                serde_json::json!({"metadata": {"name": "web", "namespace": "n", "resourceVersion": "1"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            ),
            typed(
                serde_json::json!({"metadata": {"name": "headless", "namespace": "n", "resourceVersion": "1"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
        ]);
        let t = Tables::new(services, Cache::of([]));
        let w = t.wanted("127.0.0.1".parse().unwrap());
        let keys: HashSet<String> = w.keys().map(|(a, p)| format!("{a}/{p}")).collect();
        let want: HashSet<String> = [
            "10.96.0.5:80/TCP",
            "127.0.0.1:30080/TCP",
            "10.96.0.5:53/UDP",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(keys, want);
        let target = &w[&("10.96.0.5:80".parse().unwrap(), "TCP".to_string())];
        assert_eq!(target.affinity, Some(Duration::from_secs(10800)));
    }

    #[test]
    fn picks_rotate_and_stick_with_affinity() {
        let slices = Cache::of([typed(
            serde_json::json!({"metadata": {"name": "web-0", "namespace": "n", "resourceVersion": "1",
                "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.3"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}}]}),
        )]);
        let t = Tables::new(Cache::of([]), slices);
        let mut target = Target {
            ns: "n".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: "TCP".into(),
            affinity: None,
        };
        let client: IpAddr = "127.0.0.9".parse().unwrap();
        let picks: HashSet<SocketAddr> = (0..4).filter_map(|_| t.pick(&target, client)).collect();
        assert_eq!(
            picks.len(),
            2,
            "round robin over the ready endpoints only: {picks:?}"
        );
        target.affinity = Some(Duration::from_secs(60));
        let first = t.pick(&target, client).unwrap();
        assert!((0..5).all(|_| t.pick(&target, client) == Some(first)));
    }
}
