//! The pod network boundary (CNI's role): gives each pod an address when its sandbox is set up and takes it back
//! when the pod goes away. Two implementations sit behind [`PodNetwork`]:
//!
//! - `host` (unprivileged): pods share the host's network namespace and each gets its own loopback address;
//! - `bridge` (root, Linux): a network namespace per pod, joined by a veth pair to the node's bridge, with a real
//!   address from the node's pod CIDR and a default route through the bridge, so pods reach each other, the node and
//!   the pods of other nodes on the machine.
//!
//! Addresses come from the node's `spec.podCIDR`, which the control plane allocates per node, so they are unique
//! cluster-wide; [`Ipam`] hands them out and takes them back. Between machines, `cluster` keeps routes to the other
//! nodes' pod CIDRs (`routes`: VXLAN or host-gw) and masquerades traffic leaving the cluster (`masquerade`).

#[cfg(target_os = "linux")]
pub mod bridge;
#[cfg(target_os = "linux")]
pub mod cluster;
pub mod host;
pub mod masquerade;
#[cfg(target_os = "linux")]
pub mod routes;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pod CIDR: {0}")]
    BadCidr(#[from] crate::sys::BadCidr),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {message}")]
    System { what: String, message: String },
}

impl NetworkError {
    pub(crate) fn system(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        NetworkError::System {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// Which pod network a node uses (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// `bridge` when running as root on Linux, else `host`.
    #[default]
    Auto,
    Host,
    Bridge,
}

impl Mode {
    /// What `auto` comes to on this machine.
    pub fn resolve(self) -> Mode {
        match self {
            Mode::Auto if cfg!(target_os = "linux") && is_root() => Mode::Bridge,
            Mode::Auto => Mode::Host,
            m => m,
        }
    }
}

pub use crate::sys::is_root;

/// A pod's place on the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    /// The pod's network namespace, which its containers join (none: the host's).
    pub netns: Option<PathBuf>,
}

/// Sets up and tears down pod networking.
#[async_trait]
pub trait PodNetwork: Send + Sync {
    fn name(&self) -> &'static str;
    /// The range pods get addresses from.
    fn cidr(&self) -> String;
    /// The node's own address in its pod range (`.1`, never given to a pod): the pods' gateway, and where the node
    /// serves cluster DNS.
    fn gateway(&self) -> Ipv4Addr;
    /// Gives pod `uid` its address (and namespace), allocating one if it has none (idempotent).
    async fn setup(&self, uid: &str) -> Result<Attachment, NetworkError>;
    /// Releases the pod's address and removes what `setup` made.
    async fn teardown(&self, uid: &str);
    /// Marks an address as held by `uid` (re-adoption after an agent restart); returns its attachment.
    fn adopt(&self, uid: &str, ip: Ipv4Addr) -> Attachment;
    /// Removes what was set up for pods this node no longer knows (after an agent was away).
    async fn clean(&self, _known: &std::collections::HashSet<String>) {}
    /// Removes the node's own network when the node stops with all its pods gone.
    async fn shutdown(&self) {}
}

/// Opens the pod network of `mode` for a node with pod CIDR `pod_cidr`.
pub async fn open(
    mode: Mode,
    pod_cidr: &str,
) -> Result<std::sync::Arc<dyn PodNetwork>, NetworkError> {
    match mode.resolve() {
        Mode::Bridge => {
            #[cfg(target_os = "linux")]
            {
                Ok(std::sync::Arc::new(
                    bridge::BridgeNetwork::new(pod_cidr).await?,
                ))
            }
            #[cfg(not(target_os = "linux"))]
            {
                Err(NetworkError::Unsupported(
                    "the bridge network needs Linux".into(),
                ))
            }
        }
        _ => Ok(std::sync::Arc::new(host::HostNetwork::new(pod_cidr)?)),
    }
}

/// Address management for one range: `.0` is the network, `.1` the gateway, the last the broadcast address; pods
/// get the rest, the next free one after the last handed out (like CNI's host-local IPAM), so a released address is
/// not reused at once - a client or an ARP cache may still hold it for the pod that had it.
pub struct Ipam {
    base: u32,
    size: u32,
    len: u8,
    held: Mutex<(BTreeMap<u32, String>, u32)>,
}

impl Ipam {
    pub fn new(network: Ipv4Addr, len: u8) -> Self {
        Ipam {
            base: u32::from(network),
            size: 1 << (32 - len),
            len,
            held: Mutex::default(),
        }
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.len)
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BTreeMap<u32, String>, u32)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The address of `uid`, allocating the next free one.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, NetworkError> {
        let mut guard = self.lock();
        let (held, next) = &mut *guard;
        if let Some((ip, _)) = held.iter().find(|(_, u)| *u == uid) {
            return Ok(Ipv4Addr::from(*ip));
        }
        // `next` counts from the first usable address (`.2`).
        let usable = self.size - 3;
        for step in 0..usable {
            let index = (*next + step) % usable;
            let ip = self.base + 2 + index;
            if let std::collections::btree_map::Entry::Vacant(e) = held.entry(ip) {
                e.insert(uid.to_string());
                *next = index + 1;
                return Ok(Ipv4Addr::from(ip));
            }
        }
        Err(NetworkError::Exhausted(self.cidr()))
    }

    pub fn address_of(&self, uid: &str) -> Option<Ipv4Addr> {
        let guard = self.lock();
        guard
            .0
            .iter()
            .find(|(_, u)| *u == uid)
            .map(|(ip, _)| Ipv4Addr::from(*ip))
    }

    pub fn release(&self, uid: &str) {
        self.lock().0.retain(|_, u| u != uid);
    }

    pub fn hold(&self, uid: &str, ip: Ipv4Addr) {
        let mut guard = self.lock();
        guard.0.insert(u32::from(ip), uid.to_string());
        let index = u32::from(ip).wrapping_sub(self.base).wrapping_sub(2);
        if index < self.size - 3 {
            guard.1 = guard.1.max(index + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_moves_on_before_reusing_an_address_and_never_gives_out_the_gateway() {
        let (net, len) = crate::sys::parse_cidr("10.1.1.7/29").unwrap();
        assert_eq!(net, Ipv4Addr::new(10, 1, 1, 0));
        let ipam = Ipam::new(net, len);
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 1, 1, 1));
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 1, 2));
        assert_eq!(ipam.allocate("a").unwrap(), a, "idempotent");
        ipam.release("a");
        assert_eq!(
            ipam.allocate("b").unwrap(),
            Ipv4Addr::new(10, 1, 1, 3),
            "a released address waits its turn"
        );
        let rest: Vec<_> = ["c", "d", "e", "f"]
            .iter()
            .map(|u| ipam.allocate(u).unwrap())
            .collect();
        assert_eq!(rest[2], Ipv4Addr::new(10, 1, 1, 6));
        assert_eq!(rest[3], a, "wraps around to the freed one");
        assert!(matches!(
            ipam.allocate("x"),
            Err(NetworkError::Exhausted(_))
        ));
        assert_eq!(ipam.address_of("d"), Some(Ipv4Addr::new(10, 1, 1, 5)));
        // An adopted address counts as handed out.
        let fresh = Ipam::new(net, len);
        fresh.hold("old", Ipv4Addr::new(10, 1, 1, 4));
        assert_eq!(fresh.allocate("new").unwrap(), Ipv4Addr::new(10, 1, 1, 5));
    }

    #[test]
    fn auto_mode_is_bridge_only_for_root_on_linux() {
        let want = if cfg!(target_os = "linux") && is_root() {
            Mode::Bridge
        } else {
            Mode::Host
        };
        assert_eq!(Mode::Auto.resolve(), want);
        assert_eq!(Mode::Host.resolve(), Mode::Host);
    }
}
