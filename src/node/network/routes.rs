//! Routes to the pods of other machines (flannel's role), for the `bridge` pod network. Every Node announces its pod
//! CIDR, its InternalIP and (for VXLAN) its tunnel endpoint's MAC; the agent keeps, for each node on another machine:
//!
//! - `vxlan` (default): a VXLAN device `capstan.1` (VNI 1, UDP 8472, no learning) holding this node's CIDR's `.0`;
//!   per peer a permanent ARP entry `<peer CIDR>.0 -> <peer MAC>`, a forwarding entry `<peer MAC> -> <peer
//!   InternalIP>` and the route `<peer CIDR> via <peer CIDR>.0 dev capstan.1 onlink`;
//! - `host-gw`: the route `<peer CIDR> via <peer InternalIP>` (machines on one L2 segment).
//!
//! Nodes whose InternalIP is an address of this machine are skipped: their bridges are local, reached through their
//! connected routes. Routes carry protocol number 67, so routes of nodes that left while the agent was away are
//! found and removed. The device is made only once there is a peer, so single-machine clusters never have one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::packet_route::neighbour::NeighbourFlags;
use rtnetlink::packet_route::route::{RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::api::core::Node;
use crate::api::network::{self, Backend};
use crate::sys::netlink::{errno, link_index};

use super::NetworkError;

/// The VXLAN device (one per machine).
pub const VXLAN_DEVICE: &str = "capstan.1";
/// The routing protocol number on every route this module adds.
const PROTOCOL: u8 = 67;

/// Another node's pod CIDR and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub net: Ipv4Addr,
    pub len: u8,
    pub address: Ipv4Addr,
    /// Its VXLAN endpoint's MAC (vxlan only).
    pub mac: Option<[u8; 6]>,
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()
}

/// The nodes on other machines that this node routes to: every node but `me` with a pod CIDR and an IPv4 InternalIP
/// that is not an address of this machine (`local`); for vxlan, only those that announced their MAC.
pub fn peers(
    nodes: &[Arc<Node>],
    me: &str,
    local: &[IpAddr],
    backend: Backend,
) -> BTreeMap<String, Peer> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name();
        if name == me {
            continue;
        }
        let Some(cidr) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
            continue;
        };
        let Ok((net, len)) = crate::sys::parse_cidr(cidr) else {
            continue;
        };
        let Some(address) = internal_ip(n) else {
            continue;
        };
        if local.contains(&IpAddr::V4(address)) || address.is_loopback() {
            continue;
        }
        let mac = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(network::VTEP_MAC_ANNOTATION))
            .and_then(|m| network::parse_mac(m));
        if backend == Backend::Vxlan && mac.is_none() {
            continue;
        }
        out.insert(
            name.to_string(),
            Peer {
                net,
                len,
                address,
                mac,
            },
        );
    }
    out
}

fn sys(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |e| NetworkError::system(what, e)
}

/// The routes this node keeps, and the kernel state behind them.
pub struct Routes {
    handle: Handle,
    backend: Backend,
    name: String,
    /// This node's pod CIDR.
    net: Ipv4Addr,
    /// This node's InternalIP (the VXLAN device's local address).
    address: Ipv4Addr,
    /// The VXLAN device, once made.
    vxlan: Option<u32>,
    applied: BTreeMap<String, Peer>,
}

impl Routes {
    pub fn new(
        backend: Backend,
        name: &str,
        pod_cidr: &str,
        address: IpAddr,
    ) -> Result<Self, NetworkError> {
        let (net, _) = crate::sys::parse_cidr(pod_cidr)?;
        let IpAddr::V4(address) = address else {
            return Err(NetworkError::Unsupported(format!(
                "routes between machines need an IPv4 node address, not {address}"
            )));
        };
        let handle = crate::sys::netlink::connect()
            .map_err(|e| NetworkError::system("opening a netlink socket", e))?;
        Ok(Routes {
            handle,
            backend,
            name: name.to_string(),
            net,
            address,
            vxlan: None,
            applied: BTreeMap::new(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Brings the kernel in line with `want`: new and changed peers added, departed ones removed, and (on the first
    /// call) routes of an earlier run that no peer accounts for removed.
    pub async fn sync(&mut self, want: BTreeMap<String, Peer>) -> Result<(), NetworkError> {
        if !want.is_empty() && self.backend == Backend::Vxlan && self.vxlan.is_none() {
            self.vxlan = Some(self.make_vxlan().await?);
        }
        let gone: Vec<(String, Peer)> = self
            .applied
            .iter()
            .filter(|(name, p)| want.get(*name) != Some(*p))
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        for (name, peer) in gone {
            self.remove(&peer).await;
            self.applied.remove(&name);
            tracing::info!(node = %name, cidr = %format!("{}/{}", peer.net, peer.len), "removed the route to a node's pods");
        }
        for (name, peer) in want {
            if self.applied.contains_key(&name) {
                continue;
            }
            self.add(&peer).await?;
            tracing::info!(node = %name, cidr = %format!("{}/{}", peer.net, peer.len), via = %peer.address, backend = %self.backend, "routing to a node's pods");
            self.applied.insert(name, peer);
        }
        Ok(())
    }

    /// Removes routes carrying this module's protocol number that no current peer accounts for (left by an earlier
    /// run, for nodes that went away meanwhile).
    pub async fn remove_strays(&self) {
        let mut all = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut strays = Vec::new();
        while let Ok(Some(r)) = all.try_next().await {
            if r.header.protocol != RouteProtocol::Other(PROTOCOL) {
                continue;
            }
            let dest = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(
                    rtnetlink::packet_route::route::RouteAddress::Inet(d),
                ) => Some(*d),
                _ => None,
            });
            if !self.applied.values().any(|p| Some(p.net) == dest) {
                strays.push(r);
            }
        }
        for r in strays {
            if let Err(e) = self.handle.route().del(r).execute().await {
                tracing::debug!("removing a stray route: {e}");
            }
        }
    }

    /// The VXLAN device: made (or found), addressed with this node's `.0` and up.
    async fn make_vxlan(&self) -> Result<u32, NetworkError> {
        let mac = network::vtep_mac(&self.name);
        let index = match link_index(&self.handle, VXLAN_DEVICE)
            .await
            .map_err(sys("finding the VXLAN device"))?
        {
            Some(i) => i,
            None => {
                let link = LinkVxlan::new(VXLAN_DEVICE, network::VXLAN_VNI)
                    .port(network::VXLAN_PORT)
                    .local(self.address)
                    .learning(false)
                    .mtu(1450)
                    .address(mac.to_vec())
                    .build();
                match self.handle.link().add(link).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(NetworkError::system("creating the VXLAN device", e)),
                }
                link_index(&self.handle, VXLAN_DEVICE)
                    .await
                    .map_err(sys("finding the VXLAN device"))?
                    .ok_or_else(|| {
                        NetworkError::system("creating the VXLAN device", "it vanished")
                    })?
            }
        };
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(self.net), 32)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(NetworkError::system("addressing the VXLAN device", e)),
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(sys("bringing the VXLAN device up"))?;
        tracing::info!(device = VXLAN_DEVICE, mac = %network::format_mac(&mac), local = %self.address, "pod network between machines: vxlan");
        Ok(index)
    }

    fn route(&self, peer: &Peer) -> rtnetlink::packet_route::route::RouteMessage {
        let b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(peer.net, peer.len)
            .protocol(RouteProtocol::Other(PROTOCOL));
        match (self.backend, self.vxlan) {
            (Backend::Vxlan, Some(dev)) => {
                b.gateway(peer.net).output_interface(dev).onlink().build()
            }
            _ => b.gateway(peer.address).build(),
        }
    }

    async fn add(&self, peer: &Peer) -> Result<(), NetworkError> {
        let cidr = format!("{}/{}", peer.net, peer.len);
        if let (Backend::Vxlan, Some(dev), Some(mac)) = (self.backend, self.vxlan, peer.mac) {
            let neighbours = self.handle.neighbours();
            neighbours
                .add(dev, IpAddr::V4(peer.net))
                .link_layer_address(&mac)
                .replace()
                .execute()
                .await
                .map_err(sys(format!("adding the ARP entry for {cidr}")))?;
            neighbours
                .add_bridge(dev, &mac)
                .destination(IpAddr::V4(peer.address))
                .flags(NeighbourFlags::Own)
                .replace()
                .execute()
                .await
                .map_err(sys(format!("adding the forwarding entry for {cidr}")))?;
        }
        self.handle
            .route()
            .add(self.route(peer))
            .replace()
            .execute()
            .await
            .map_err(sys(format!(
                "adding the route to {cidr} via {}",
                peer.address
            )))
    }

    async fn remove(&self, peer: &Peer) {
        if let Err(e) = self.handle.route().del(self.route(peer)).execute().await {
            tracing::debug!(cidr = %peer.net, "removing a route: {e}");
        }
        if let (Some(dev), Some(mac)) = (self.vxlan, peer.mac) {
            let mut entries = self.handle.neighbours().get().execute();
            let mut drop = Vec::new();
            while let Ok(Some(n)) = entries.try_next().await {
                use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
                let ours = n.header.ifindex == dev
                    && n.attributes.iter().any(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(l) => l.as_slice() == mac,
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => {
                            *d == peer.net
                        }
                        _ => false,
                    });
                if ours {
                    drop.push(n);
                }
            }
            for n in drop {
                let _ = self.handle.neighbours().del(n).execute().await;
            }
        }
    }

    /// Removes every route and the VXLAN device (the node stops with its pods).
    pub async fn shutdown(&mut self) {
        let peers: Vec<Peer> = std::mem::take(&mut self.applied).into_values().collect();
        for p in &peers {
            self.remove(p).await;
        }
        if let Some(dev) = self.vxlan.take() {
            if let Err(e) = self.handle.link().del(dev).execute().await {
                tracing::debug!("removing the VXLAN device: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::core::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, ip: &str, mac: bool) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.spec = Some(NodeSpec {
            pod_cidr: cidr.map(String::from),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        });
        if mac {
            n.metadata.annotations = Some(
                [(
                    network::VTEP_MAC_ANNOTATION.to_string(),
                    network::format_mac(&network::vtep_mac(name)),
                )]
                .into(),
            );
        }
        Arc::new(n)
    }

    #[test]
    fn peers_are_the_other_machines_nodes_with_a_cidr_and_an_address() {
        let nodes = vec![
            node("me", Some("10.1.0.0/24"), "192.168.5.2", true),
            node("b", Some("10.1.1.0/24"), "192.168.5.3", true),
            node("no-cidr", None, "192.168.5.4", true),
            node("same-machine", Some("10.1.2.0/24"), "192.168.5.2", true),
            node("loopback", Some("10.1.3.0/24"), "127.0.0.1", true),
            node("no-mac", Some("10.1.4.0/24"), "192.168.5.5", false),
            node("bad-ip", Some("10.1.5.0/24"), "not-an-ip", true),
        ];
        let local = [IpAddr::from([192, 168, 5, 2])];
        let vx = peers(&nodes, "me", &local, Backend::Vxlan);
        assert_eq!(vx.keys().collect::<Vec<_>>(), ["b"]);
        let b = &vx["b"];
        assert_eq!(
            (b.net, b.len, b.address),
            (
                Ipv4Addr::new(10, 1, 1, 0),
                24,
                Ipv4Addr::new(192, 168, 5, 3)
            )
        );
        assert_eq!(b.mac, Some(network::vtep_mac("b")));
        // host-gw needs no MAC.
        let gw = peers(&nodes, "me", &local, Backend::HostGw);
        assert_eq!(gw.keys().collect::<Vec<_>>(), ["b", "no-mac"]);
    }
}
