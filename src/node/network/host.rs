//! `host` pod networking: pods share the host's network namespace, and each gets its own loopback address, the
//! node's pod CIDR moved into 127.0.0.0/8 (10.244.3.0/24 -> 127.244.3.0/24). A pod binds its `POD_IP`, so replicas of
//! one Deployment can all listen on the same port, and two nodes on one machine never hand out the same address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{parse_cidr, NetworkError, PodNetwork};

pub struct HostNetwork {
    base: u32,
    size: u32,
    cidr: String,
    held: Mutex<BTreeMap<u32, String>>,
}

impl HostNetwork {
    pub fn new(pod_cidr: &str) -> Result<Self, NetworkError> {
        let (net, len) = parse_cidr(pod_cidr)?;
        let moved = (u32::from(net) & 0x00ff_ffff) | (127 << 24);
        Ok(HostNetwork {
            base: moved,
            size: 1 << (32 - len),
            cidr: format!("{}/{len}", Ipv4Addr::from(moved)),
            held: Mutex::default(),
        })
    }

    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// The node's own address in its pod range (`.1`, never given to a pod): where it serves cluster DNS.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
}

impl PodNetwork for HostNetwork {
    fn name(&self) -> &'static str {
        "host"
    }

    fn setup(&self, uid: &str) -> Result<Ipv4Addr, NetworkError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ip, _)) = held.iter().find(|(_, u)| *u == uid) {
            return Ok(Ipv4Addr::from(*ip));
        }
        // .0 is the network, .1 the gateway by convention, the last the broadcast address.
        for offset in 2..self.size - 1 {
            let ip = self.base + offset;
            if let std::collections::btree_map::Entry::Vacant(e) = held.entry(ip) {
                e.insert(uid.to_string());
                return Ok(Ipv4Addr::from(ip));
            }
        }
        Err(NetworkError::Exhausted(self.cidr.clone()))
    }

    fn teardown(&self, uid: &str) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, u| u != uid);
    }

    fn adopt(&self, uid: &str, ip: Ipv4Addr) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(u32::from(ip), uid.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_unique_loopback_addresses_and_reuses_released_ones() {
        let n = HostNetwork::new("10.244.3.0/24").unwrap();
        assert_eq!(n.cidr(), "127.244.3.0/24");
        let a = n.setup("a").unwrap();
        let b = n.setup("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 244, 3, 2));
        assert_eq!(b, Ipv4Addr::new(127, 244, 3, 3));
        assert_eq!(n.setup("a").unwrap(), a, "idempotent");
        n.teardown("a");
        assert_eq!(n.setup("c").unwrap(), a);
        n.adopt("d", Ipv4Addr::new(127, 244, 3, 4));
        assert_eq!(n.setup("e").unwrap(), Ipv4Addr::new(127, 244, 3, 5));
        assert!(HostNetwork::new("10.0.0.0/31").is_err());
        let tiny = HostNetwork::new("10.1.1.0/30").unwrap();
        tiny.setup("x").unwrap();
        assert!(matches!(tiny.setup("y"), Err(NetworkError::Exhausted(_))));
    }
}
