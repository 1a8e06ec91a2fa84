//! `host` pod networking: pods share the host's network namespace, and each gets its own loopback address, the
//! node's pod CIDR moved into 127.0.0.0/8 (10.244.3.0/24 -> 127.244.3.0/24). A pod binds its `POD_IP`, so replicas of
//! one Deployment can all listen on the same port, and two nodes on one machine never hand out the same address.

use std::net::Ipv4Addr;

use async_trait::async_trait;

use crate::sys::parse_cidr;

use super::{Attachment, Ipam, NetworkError, PodNetwork};

pub struct HostNetwork {
    ipam: Ipam,
}

impl HostNetwork {
    pub fn new(pod_cidr: &str) -> Result<Self, NetworkError> {
        let (net, len) = parse_cidr(pod_cidr)?;
        let moved = (u32::from(net) & 0x00ff_ffff) | (127 << 24);
        Ok(HostNetwork {
            ipam: Ipam::new(Ipv4Addr::from(moved), len),
        })
    }
}

#[async_trait]
impl PodNetwork for HostNetwork {
    fn name(&self) -> &'static str {
        "host"
    }

    fn cidr(&self) -> String {
        self.ipam.cidr()
    }

    fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    async fn setup(&self, uid: &str) -> Result<Attachment, NetworkError> {
        Ok(Attachment {
            ip: self.ipam.allocate(uid)?,
            netns: None,
        })
    }

    async fn teardown(&self, uid: &str) {
        self.ipam.release(uid);
    }

    fn adopt(&self, uid: &str, ip: Ipv4Addr) -> Attachment {
        self.ipam.hold(uid, ip);
        Attachment { ip, netns: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allocates_unique_loopback_addresses() {
        let n = HostNetwork::new("10.244.3.0/24").unwrap();
        assert_eq!(n.cidr(), "127.244.3.0/24");
        assert_eq!(n.gateway(), Ipv4Addr::new(127, 244, 3, 1));
        let a = n.setup("a").await.unwrap().ip;
        let b = n.setup("b").await.unwrap().ip;
        assert_eq!(a, Ipv4Addr::new(127, 244, 3, 2));
        assert_eq!(b, Ipv4Addr::new(127, 244, 3, 3));
        assert_eq!(n.setup("a").await.unwrap().ip, a, "idempotent");
        n.teardown("a").await;
        assert_eq!(
            n.setup("c").await.unwrap().ip,
            Ipv4Addr::new(127, 244, 3, 4)
        );
        n.adopt("d", Ipv4Addr::new(127, 244, 3, 5));
        assert_eq!(
            n.setup("e").await.unwrap().ip,
            Ipv4Addr::new(127, 244, 3, 6)
        );
        assert!(HostNetwork::new("10.0.0.0/31").is_err());
        let tiny = HostNetwork::new("10.1.1.0/30").unwrap();
        tiny.setup("x").await.unwrap();
        assert!(matches!(
            tiny.setup("y").await,
            Err(NetworkError::Exhausted(_))
        ));
    }
}
