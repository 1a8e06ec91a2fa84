//! The pod network boundary (CNI's role): gives each pod an address when its sandbox is set up and takes it back
//! when the pod goes away. `host` (unprivileged, this module's default) hands out loopback addresses; `bridge` (root,
//! namespaces and veth pairs) comes with the services issue. Addresses come from the node's `spec.podCIDR`, which the
//! control plane allocates per node, so they are unique cluster-wide.

pub mod host;

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pod CIDR {0:?} is not an IPv4 /8-/30 network")]
    BadCidr(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
}

/// Sets up and tears down pod networking.
pub trait PodNetwork: Send + Sync {
    fn name(&self) -> &'static str;
    /// The address of pod `uid`, allocating one if it has none (idempotent).
    fn setup(&self, uid: &str) -> Result<Ipv4Addr, NetworkError>;
    /// Releases the pod's address.
    fn teardown(&self, uid: &str);
    /// Marks an address as held by `uid` (re-adoption after an agent restart).
    fn adopt(&self, uid: &str, ip: Ipv4Addr);
}

/// Parses `a.b.c.d/len` into (network, prefix length).
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), NetworkError> {
    let bad = || NetworkError::BadCidr(cidr.to_string());
    let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - len);
    Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
}
