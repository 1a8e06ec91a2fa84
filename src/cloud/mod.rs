//! The cloud controller manager's service controller: LoadBalancer Services get an external address from a
//! [`Provider`] and it is written to `status.loadBalancer.ingress`. The built-in `local` provider hands out addresses
//! from a configured pool (like k3s's ServiceLB or MetalLB): by default `127.97.0.0/24`, so the node proxies can serve
//! them without privileges. `spec.loadBalancerIP` is honoured when it is in the pool and free; a Service that stops
//! being a LoadBalancer (or is deleted) gives its address back; Services with a `loadBalancerClass` belong to
//! another implementation and are left alone.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;

use crate::api::core::Service;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

/// Why a provider cannot give a Service an address (the SyncLoadBalancerFailed Event says this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAddress {
    #[error("spec.loadBalancerIP {ip} is not in the pool {pool}")]
    OutsidePool { ip: String, pool: String },
    #[error("spec.loadBalancerIP {0} is already in use")]
    InUse(String),
    #[error("the pool {0} is exhausted")]
    Exhausted(String),
}

/// Where load balancer addresses come from.
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// An address for `svc`, given the addresses other Services hold; `Err` says why none can be given.
    fn assign(&self, svc: &Service, taken: &HashSet<String>) -> Result<String, NoAddress>;
}

/// The first address in `status.loadBalancer.ingress`, if any.
fn ingress_ip(svc: &Service) -> Option<&str> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .as_deref()
}

/// The `local` provider: an IPv4 pool.
pub struct LocalPool {
    net: u32,
    size: u32,
    cidr: String,
}

impl LocalPool {
    pub fn new(cidr: &str) -> Result<Self, crate::sys::BadCidr> {
        let (ip, len) = crate::sys::parse_cidr_in(cidr, 8, 30)?;
        let len = u32::from(len);
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

    fn assign(&self, svc: &Service, taken: &HashSet<String>) -> Result<String, NoAddress> {
        let in_pool = |ip: &str| {
            ip.parse::<Ipv4Addr>()
                .is_ok_and(|a| u32::from(a).wrapping_sub(self.net) < self.size)
        };
        if let Some(want) = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .filter(|w| !w.is_empty())
        {
            if !in_pool(want) {
                return Err(NoAddress::OutsidePool {
                    ip: want.to_string(),
                    pool: self.cidr.clone(),
                });
            }
            if taken.contains(want) {
                return Err(NoAddress::InUse(want.to_string()));
            }
            return Ok(want.to_string());
        }
        // Keep what it has.
        if let Some(have) = ingress_ip(svc) {
            if in_pool(have) && !taken.contains(have) {
                return Ok(have.to_string());
            }
        }
        (1..self.size - 1)
            .map(|i| Ipv4Addr::from(self.net + i).to_string())
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| NoAddress::Exhausted(self.cidr.clone()))
    }
}

pub struct Context {
    pub client: Client,
    pub services: Cache<Service>,
    pub provider: Arc<dyn Provider>,
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// One reconcile of one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = Api::<Service>::beside(&ctx.client, svc.as_ref());
    let name = svc.metadata.name();
    let write = |lb: serde_json::Value| {
        let api = api.clone();
        async move {
            api.patch_status(name, &Patch::Merge(json!({"status": {"loadBalancer": lb}})))
                .await
        }
    };
    let has = ingress_ip(&svc).is_some();
    let other_class = svc
        .spec
        .as_ref()
        .is_some_and(|s| s.load_balancer_class.is_some());
    let ours = is_load_balancer(&svc) && !other_class && svc.metadata.deletion_timestamp.is_none();
    if !ours {
        if has && !other_class {
            write(json!({"ingress": null})).await?;
        }
        return Ok(Action::await_change());
    }
    let uid = svc.metadata.uid.as_deref();
    let taken: HashSet<String> = ctx
        .services
        .list()
        .iter()
        .filter(|o| o.metadata.uid.as_deref() != uid && is_load_balancer(o))
        .filter_map(|o| ingress_ip(o).map(String::from))
        .collect();
    let recorder = Recorder::new(&ctx.client, "service-controller");
    match ctx.provider.assign(&svc, &taken) {
        Ok(ip) => {
            if ingress_ip(&svc) != Some(ip.as_str()) {
                write(json!({"ingress": [{"ip": ip, "ipMode": "VIP"}]})).await?;
                recorder.normal(
                    svc.as_ref(),
                    "EnsuredLoadBalancer",
                    format!("Ensured load balancer {ip} ({})", ctx.provider.name()),
                );
            }
        }
        Err(why) => recorder.warning(
            svc.as_ref(),
            "SyncLoadBalancerFailed",
            format!("Error syncing load balancer: {why}"),
        ),
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
            serde_json::from_value::<Service>(v).unwrap()
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
        assert_eq!(
            pool.assign(&svc(Some("127.97.0.1"), None), &taken)
                .unwrap_err(),
            NoAddress::InUse("127.97.0.1".into())
        );
        assert!(pool
            .assign(&svc(Some("10.0.0.1"), None), &none)
            .unwrap_err()
            .to_string()
            .contains("not in the pool"));
    }
}
