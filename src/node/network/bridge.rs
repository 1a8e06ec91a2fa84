//! `bridge` pod networking (root, Linux), spoken to the kernel over rtnetlink: the node owns a bridge named after its
//! pod CIDR (`cs-244-0` for 10.244.0.0/24) holding the range's gateway address `.1`; every pod gets a network
//! namespace of its own (bind-mounted at `/run/capstan/netns/<pod uid>` so it outlives the agent), joined to the
//! bridge by a veth pair: `eth0` inside with the pod's address and a default route through the gateway, `vethXXXXXXXX`
//! outside. The host has a connected route to each node's range, and forwarding is switched on, so pods of different
//! nodes on one machine reach each other; the node reaches its pods for probes, logs and the service proxy.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::sys::netlink::{errno, link_index};
use crate::sys::parse_cidr;

use super::{Attachment, Ipam, NetworkError, PodNetwork};

/// Where pods' network namespaces are bind-mounted.
pub const NETNS_DIR: &str = "/run/capstan/netns";

pub struct BridgeNetwork {
    ipam: Ipam,
    bridge: String,
    bridge_index: u32,
    handle: Handle,
}

/// The bridge of a node with pod CIDR `net`: its second and third octets (`cs-244-0`), short enough for a link name.
pub fn bridge_name(net: Ipv4Addr) -> String {
    let o = net.octets();
    format!("cs-{}-{}", o[1], o[2])
}

/// The host side of a pod's veth pair: `veth` and eight hex digits of the pod's uid.
fn host_link(uid: &str) -> String {
    format!("veth{:08x}", crc32fast::hash(uid.as_bytes()))
}

fn netns_path(uid: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(uid)
}

fn sys(what: &str) -> impl FnOnce(rtnetlink::Error) -> NetworkError + '_ {
    move |e| NetworkError::system(what, e)
}

fn connect() -> Result<Handle, NetworkError> {
    crate::sys::netlink::connect().map_err(|e| NetworkError::system("opening a netlink socket", e))
}

impl BridgeNetwork {
    /// Makes sure the node's bridge exists, is up and holds the gateway address; switches on IPv4 forwarding.
    pub async fn new(pod_cidr: &str) -> Result<Self, NetworkError> {
        if !super::is_root() {
            return Err(NetworkError::Unsupported(
                "the bridge pod network needs root (run as root, or pass --network host)".into(),
            ));
        }
        let (net, len) = parse_cidr(pod_cidr)?;
        let ipam = Ipam::new(net, len);
        let bridge = bridge_name(net);
        let handle = connect()?;
        let index = match link_index(&handle, &bridge)
            .await
            .map_err(sys("finding the bridge"))?
        {
            Some(i) => i,
            None => {
                match handle
                    .link()
                    .add(LinkBridge::new(&bridge).up().build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => {
                        return Err(NetworkError::system(format!("creating bridge {bridge}"), e))
                    }
                }
                link_index(&handle, &bridge)
                    .await
                    .map_err(sys("finding the bridge"))?
                    .ok_or_else(|| NetworkError::system("creating bridge", "it vanished"))?
            }
        };
        match handle
            .address()
            .add(index, IpAddr::V4(ipam.gateway()), len)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(NetworkError::system(
                    format!("addressing bridge {bridge}"),
                    e,
                ))
            }
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(sys("bringing the bridge up"))?;
        if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
            tracing::warn!("could not switch on IPv4 forwarding ({e}): pods of different nodes may not reach each other");
        }
        std::fs::create_dir_all(NETNS_DIR).map_err(|e| NetworkError::system(NETNS_DIR, e))?;
        tracing::info!(%bridge, gateway = %ipam.gateway(), cidr = %ipam.cidr(), "pod network: bridge");
        Ok(BridgeNetwork {
            ipam,
            bridge,
            bridge_index: index,
            handle,
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    async fn attach(&self, uid: &str, ip: Ipv4Addr) -> Result<PathBuf, NetworkError> {
        let path = netns_path(uid);
        let host = host_link(uid);
        let peer = format!("cp{:08x}", crc32fast::hash(uid.as_bytes()));
        // Anything left of an earlier, interrupted attempt goes first.
        self.detach(uid).await;
        let p = path.clone();
        tokio::task::spawn_blocking(move || new_netns(&p))
            .await
            .map_err(|e| NetworkError::system("creating the pod's network namespace", e))??;
        let ns = std::fs::File::open(&path)
            .map_err(|e| NetworkError::system(path.display().to_string(), e))?;
        let links = self.handle.link();
        links
            .add(LinkVeth::new(&host, &peer).build())
            .execute()
            .await
            .map_err(sys("creating the pod's veth pair"))?;
        links
            .set(
                LinkUnspec::new_with_name(&peer)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(sys("moving the veth into the pod's namespace"))?;
        links
            .set(
                LinkUnspec::new_with_name(&host)
                    .controller(self.bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(sys("attaching the veth to the bridge"))?;
        let (gateway, len) = (self.ipam.gateway(), self.ipam.prefix_len());
        tokio::task::spawn_blocking(move || configure_inside(ns, &peer, ip, len, gateway))
            .await
            .map_err(|e| NetworkError::system("configuring the pod's namespace", e))??;
        Ok(path)
    }

    /// Drops the host's ARP entry for a pod's address, so a pod that gets the address later is reached at once.
    async fn forget_neighbour(&self, ip: Ipv4Addr) {
        use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        let mut all = self.handle.neighbours().get().execute();
        while let Ok(Some(n)) = all.try_next().await {
            let hit = n.header.ifindex == self.bridge_index
                && n.attributes.iter().any(|a| {
                    matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip)
                });
            if hit {
                if let Err(e) = self.handle.neighbours().del(n).execute().await {
                    tracing::debug!(%ip, "dropping the ARP entry: {e}");
                }
            }
        }
    }

    /// Removes a pod's veth pair and namespace, whatever of them exists.
    async fn detach(&self, uid: &str) {
        if let Ok(Some(i)) = link_index(&self.handle, &host_link(uid)).await {
            if let Err(e) = self.handle.link().del(i).execute().await {
                tracing::debug!(uid, "deleting the pod's veth: {e}");
            }
        }
        let path = netns_path(uid);
        if path.exists() {
            if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
                // SAFETY: a plain system call on a valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Creates a network namespace and bind-mounts it at `path`, from a thread of its own (unshare moves only the
/// calling thread, which then ends).
fn new_netns(path: &Path) -> Result<(), NetworkError> {
    let path = path.to_path_buf();
    std::thread::spawn(move || -> Result<(), NetworkError> {
        let err = |what: &str| NetworkError::system(what, std::io::Error::last_os_error());
        std::fs::File::create(&path)
            .map_err(|e| NetworkError::system(path.display().to_string(), e))?;
        let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| NetworkError::system("netns path", e))?;
        // SAFETY: system calls on valid C strings; they change only this thread, which ends right after.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(err("unshare(CLONE_NEWNET)"));
            }
            let src = c"/proc/thread-self/ns/net";
            if libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                let e = err("bind-mounting the pod's network namespace");
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| NetworkError::system("creating a network namespace", "the thread panicked"))?
}

/// Inside the pod's namespace (from a thread that joins it): `lo` up, the veth renamed `eth0` with the pod's
/// address and up, and the default route through the gateway.
fn configure_inside(
    ns: std::fs::File,
    peer: &str,
    ip: Ipv4Addr,
    len: u8,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let peer = peer.to_string();
    std::thread::spawn(move || -> Result<(), NetworkError> {
        // SAFETY: setns on an open namespace file; it moves only this thread, which ends right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetworkError::system(
                "joining the pod's network namespace",
                std::io::Error::last_os_error(),
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NetworkError::system("runtime", e))?;
        rt.block_on(async move {
            let handle = connect()?;
            let links = handle.link();
            let index = link_index(&handle, &peer)
                .await
                .map_err(sys("finding the pod's veth"))?
                .ok_or_else(|| {
                    NetworkError::system("finding the pod's veth", "not in the namespace")
                })?;
            links
                .set(LinkUnspec::new_with_index(index).name("eth0").build())
                .execute()
                .await
                .map_err(sys("naming eth0"))?;
            handle
                .address()
                .add(index, IpAddr::V4(ip), len)
                .execute()
                .await
                .map_err(sys("addressing eth0"))?;
            links
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(sys("bringing eth0 up"))?;
            links
                .set(LinkUnspec::new_with_name("lo").up().build())
                .execute()
                .await
                .map_err(sys("bringing lo up"))?;
            handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gateway)
                        .build(),
                )
                .execute()
                .await
                .map_err(sys("adding the default route"))?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| NetworkError::system("configuring the pod's namespace", "the thread panicked"))?
}

#[async_trait]
impl PodNetwork for BridgeNetwork {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn cidr(&self) -> String {
        self.ipam.cidr()
    }

    fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    async fn setup(&self, uid: &str) -> Result<Attachment, NetworkError> {
        let ip = self.ipam.allocate(uid)?;
        match self.attach(uid, ip).await {
            Ok(path) => Ok(Attachment {
                ip,
                netns: Some(path),
            }),
            Err(e) => {
                self.detach(uid).await;
                self.ipam.release(uid);
                Err(e)
            }
        }
    }

    async fn teardown(&self, uid: &str) {
        self.detach(uid).await;
        if let Some(ip) = self.ipam.address_of(uid) {
            self.forget_neighbour(ip).await;
        }
        self.ipam.release(uid);
    }

    fn adopt(&self, uid: &str, ip: Ipv4Addr) -> Attachment {
        self.ipam.hold(uid, ip);
        Attachment {
            ip,
            netns: Some(netns_path(uid)),
        }
    }

    async fn shutdown(&self) {
        if let Err(e) = self.handle.link().del(self.bridge_index).execute().await {
            tracing::debug!(bridge = %self.bridge, "removing the bridge: {e}");
        } else {
            tracing::info!(bridge = %self.bridge, "removed the pod network's bridge");
        }
    }

    async fn clean(&self, known: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
            return;
        };
        // Namespaces of every node on this machine share the directory: only this node's veths say which are ours.
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if known.contains(&uid) {
                continue;
            }
            let ours = match link_index(&self.handle, &host_link(&uid)).await {
                Ok(Some(i)) => {
                    let mut links = self.handle.link().get().match_index(i).execute();
                    matches!(links.try_next().await, Ok(Some(l)) if l.attributes.iter().any(|a|
                        matches!(a, rtnetlink::packet_route::link::LinkAttribute::Controller(c) if *c == self.bridge_index)))
                }
                _ => false,
            };
            if ours {
                tracing::info!(uid, "removing the network of a pod that no longer exists");
                self.detach(&uid).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_link_names() {
        assert_eq!(bridge_name(Ipv4Addr::new(10, 244, 0, 0)), "cs-244-0");
        assert!(bridge_name(Ipv4Addr::new(10, 255, 255, 0)).len() <= 15);
        let h = host_link("6f1c2a8e-0000-4000-8000-000000000000");
        assert!(h.starts_with("veth") && h.len() == 12);
        assert_ne!(h, host_link("another"));
    }
}
