//! The pod network as the Node objects announce it (flannel's way): the control plane writes the backend and the
//! cluster's ranges on every Node when it gives the node its pod CIDR, and each node agent writes the facts other
//! nodes need to reach its pods (for VXLAN, the MAC address of its tunnel endpoint). Agents read each other's Nodes
//! and keep routes to every other node's pod CIDR.

use std::str::FromStr;

/// The backend that carries pod traffic between machines (written by the control plane).
pub const BACKEND_ANNOTATION: &str = "capstan.io/pod-network-backend";
/// The cluster CIDR (written by the control plane): pod traffic leaving it is masqueraded.
pub const CLUSTER_CIDR_ANNOTATION: &str = "capstan.io/cluster-cidr";
/// The Service CIDR (written by the control plane): traffic to it is not masqueraded either.
pub const SERVICE_CIDR_ANNOTATION: &str = "capstan.io/service-cidr";
/// The MAC address of the node's VXLAN device (written by its agent).
pub const VTEP_MAC_ANNOTATION: &str = "capstan.io/vtep-mac";

/// The VXLAN network identifier and UDP port (flannel's: 1 and 8472).
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;

/// How a node's pod CIDR is reached from other machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// An overlay on UDP 8472: works across subnets and routers.
    #[default]
    Vxlan,
    /// A plain route to each node's pod CIDR via its InternalIP: machines on one L2 segment, no encapsulation.
    HostGw,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown pod network backend {0:?}: expected vxlan or host-gw")]
pub struct UnknownBackend(pub String);

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// The MAC address a node's VXLAN device gets: locally administered, unicast, and the same for a node name every
/// time (so a restarted agent keeps the address its peers hold in their forwarding tables).
pub fn vtep_mac(node: &str) -> [u8; 6] {
    let h = crate::sys::sha256_hex(node.as_bytes());
    let mut mac = [0x0a, 0, 0, 0, 0, 0];
    for (i, byte) in mac.iter_mut().enumerate().skip(1) {
        *byte = u8::from_str_radix(&h[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    mac
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_macs_are_stable_unicast_and_local() {
        let a = vtep_mac("node-a");
        assert_eq!(a, vtep_mac("node-a"));
        assert_ne!(a, vtep_mac("node-b"));
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
        assert_eq!(parse_mac(&format_mac(&a)), Some(a));
        assert_eq!(parse_mac("0a:00:00:00:00"), None);
        assert_eq!(parse_mac("0a:00:00:00:00:00:00"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }

    #[test]
    fn backends_parse_by_their_flag_names() {
        assert_eq!("vxlan".parse::<Backend>().unwrap(), Backend::Vxlan);
        assert_eq!("host-gw".parse::<Backend>().unwrap(), Backend::HostGw);
        let e = "udp".parse::<Backend>().unwrap_err().to_string();
        assert!(e.contains("\"udp\"") && e.contains("host-gw"), "{e}");
    }
}
