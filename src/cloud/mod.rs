//! The cloud controller manager's service controller: LoadBalancer Services get an external address from a
//! [`Provider`] and it is written to `status.loadBalancer.ingress`. The built-in `local` provider hands out addresses
//! from a configured pool (like k3s's ServiceLB or MetalLB): by default `127.97.0.0/24`, so the node proxies can serve
//! them without privileges. `spec.loadBalancerIP` is honoured when it is in the pool and free; a Service that stops
//! being a LoadBalancer (or is deleted) gives its address back; Services with a `loadBalancerClass` belong to
//! another implementation and are left alone.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::registry;
use crate::client::informer::Cache;
use crate::client::Client;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

/// Where load balancer addresses come from.
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// An address for `svc`, given the addresses other Services hold; `Err` says why none can be given.
    fn assign(&self, svc: &Value, taken: &HashSet<String>) -> Result<String, String>;
}

/// The `local` provider: an IPv4 pool.
pub struct LocalPool {
    net: u32,
    size: u32,
    cidr: String,
}

impl LocalPool {
    pub fn new(cidr: &str) -> Result<Self, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("load balancer pool {cidr:?}: expected ADDRESS/PREFIX"))?;
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("load balancer pool {cidr:?}: {addr:?} is not an IPv4 address"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| format!("load balancer pool {cidr:?}: the prefix must be 8 to 30"))?;
        let mask = u32::MAX << (32 - len);
        Ok(LocalPool {
            net: u32::from(ip) & mask,
            size: 1 << (32 - len),
            cidr: cidr.to_string(),
        })
    }
}

impl Provider for LocalPool {
    fn name(&self) -> &'static str {
        "local"
    }

    fn assign(&self, svc: &Value, taken: &HashSet<String>) -> Result<String, String> {
        let in_pool = |ip: &str| {
            ip.parse::<Ipv4Addr>()
                .is_ok_and(|a| u32::from(a).wrapping_sub(self.net) < self.size)
        };
        if let Some(want) = svc["spec"]["loadBalancerIP"]
            .as_str()
            .filter(|w| !w.is_empty())
        {
            if !in_pool(want) {
                return Err(format!(
                    "spec.loadBalancerIP {want} is not in the pool {}",
                    self.cidr
                ));
            }
            if taken.contains(want) {
                return Err(format!("spec.loadBalancerIP {want} is already in use"));
            }
            return Ok(want.to_string());
        }
        // Keep what it has.
        if let Some(have) = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
            if in_pool(have) && !taken.contains(have) {
                return Ok(have.to_string());
            }
        }
        (1..self.size - 1)
            .map(|i| Ipv4Addr::from(self.net + i).to_string())
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| format!("the pool {} is exhausted", self.cidr))
    }
}

pub struct Context {
    pub client: Client,
    pub services: Cache,
    pub provider: Arc<dyn Provider>,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// One reconcile of one Service.
pub async fn reconcile(svc: Arc<Value>, ctx: Arc<Context>) -> Result<Action, Error> {
    let kind = registry::lookup("services").expect("services kind");
    let ns = s(&svc, "/metadata/namespace").to_string();
    let name = s(&svc, "/metadata/name").to_string();
    let has = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|i| !i.is_empty());
    let ours = s(&svc, "/spec/type") == "LoadBalancer"
        && svc["spec"]["loadBalancerClass"].is_null()
        && svc["metadata"]["deletionTimestamp"].is_null();
    if !ours {
        if has && svc["spec"]["loadBalancerClass"].is_null() {
            ctx.client
                .patch_status(kind, Some(&ns), &name, &json!({"loadBalancer": {}}))
                .await?;
        }
        return Ok(Action::await_change());
    }
    let uid = s(&svc, "/metadata/uid");
    let taken: HashSet<String> = ctx
        .services
        .list()
        .iter()
        .filter(|o| s(o, "/metadata/uid") != uid && s(o, "/spec/type") == "LoadBalancer")
        .flat_map(|o| {
            o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|i| i["ip"].as_str().map(String::from))
        .collect();
    let me = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "uid": uid}});
    match ctx.provider.assign(&svc, &taken) {
        Ok(ip) => {
            if svc["status"]["loadBalancer"]["ingress"][0]["ip"] != ip.as_str() {
                ctx.client
                    .patch_status(
                        kind,
                        Some(&ns),
                        &name,
                        &json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}),
                    )
                    .await?;
                crate::client::events::spawn_record(
                    &ctx.client,
                    me,
                    "service-controller",
                    "Normal",
                    "EnsuredLoadBalancer",
                    format!("Ensured load balancer {ip} ({})", ctx.provider.name()),
                );
            }
        }
        Err(why) => {
            crate::client::events::spawn_record(
                &ctx.client,
                me,
                "service-controller",
                "Warning",
                "SyncLoadBalancerFailed",
                format!("Error syncing load balancer: {why}"),
            );
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_pool_keeps_honours_and_refuses() {
        let pool = LocalPool::new("127.97.0.0/24").unwrap();
        let svc = |lb_ip: Option<&str>, have: Option<&str>| {
            let mut v = json!({"spec": {"type": "LoadBalancer"}});
            if let Some(ip) = lb_ip {
                v["spec"]["loadBalancerIP"] = json!(ip);
            }
            if let Some(ip) = have {
                v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
            }
            v
        };
        let none = HashSet::new();
        assert_eq!(pool.assign(&svc(None, None), &none).unwrap(), "127.97.0.1");
        let taken: HashSet<String> = ["127.97.0.1".to_string()].into();
        assert_eq!(pool.assign(&svc(None, None), &taken).unwrap(), "127.97.0.2");
        assert_eq!(
            pool.assign(&svc(None, Some("127.97.0.9")), &taken).unwrap(),
            "127.97.0.9"
        );
        assert_eq!(
            pool.assign(&svc(Some("127.97.0.5"), None), &taken).unwrap(),
            "127.97.0.5"
        );
        assert!(pool
            .assign(&svc(Some("127.97.0.1"), None), &taken)
            .unwrap_err()
            .contains("in use"));
        assert!(pool
            .assign(&svc(Some("10.0.0.1"), None), &none)
            .unwrap_err()
            .contains("not in the pool"));
    }
}
