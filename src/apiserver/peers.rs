//! The API servers of one cluster find each other through the store, as Kubernetes' lease endpoint reconciler does:
//! every server holds a Lease `kube-system/apiserver-<hash>` (label `apiserver.kubernetes.io/identity:
//! kube-apiserver`, its address in an annotation) and renews it every few seconds; after each renewal it rewrites
//! the `default/kubernetes` Endpoints and EndpointSlices to list the address of every server whose Lease is live.
//! A server that dies drops out within one lease duration, so pods and node agents that follow those Endpoints
//! (agents learn their fail-over targets there) only see live servers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::error::Result;
use super::handlers::{self, Query};
use super::Server;
use crate::api::registry;

/// The label every API server's Lease carries (Kubernetes' `apiserver.kubernetes.io/identity`).
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// The annotation holding the address (`IP:PORT`) a server is reached at.
pub const ENDPOINT_ANNOTATION: &str = "capstan.dev/apiserver-endpoint";
const NAMESPACE: &str = "kube-system";

/// How one server announces itself.
#[derive(Clone, Debug)]
pub struct Announcement {
    /// The address other machines reach this server at.
    pub address: IpAddr,
    pub port: u16,
    /// How long the announcement holds without renewal.
    pub lease: Duration,
    /// How often it is renewed.
    pub renew: Duration,
}

impl Announcement {
    /// Renewed every 5 s, good for 15 s (Kubernetes' master leases: 15 s, reconciled every 10 s).
    pub fn new(address: IpAddr, port: u16) -> Self {
        Announcement {
            address,
            port,
            lease: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }

    /// The Lease's name: one per address, so a server restarted at the same address takes its own Lease back.
    pub fn lease_name(&self) -> String {
        let hex = crate::sys::sha256_hex(self.endpoint().as_bytes());
        format!("apiserver-{}", &hex[..16])
    }

    fn endpoint(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }
}

fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Whether a Lease was renewed within its duration at `now`, and how long ago it ran out if not.
fn expired_for(lease: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::Duration> {
    let renewed = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&chrono::Utc);
    let secs = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(15);
    let end = renewed + chrono::Duration::seconds(secs);
    (now > end).then(|| now - end)
}

/// The live API servers' endpoints in `leases` (address, port), in order.
pub fn live_endpoints(
    leases: &[Value],
    now: chrono::DateTime<chrono::Utc>,
) -> BTreeSet<(IpAddr, u16)> {
    leases
        .iter()
        .filter(|l| expired_for(l, now).is_none())
        .filter_map(|l| l["metadata"]["annotations"][ENDPOINT_ANNOTATION].as_str())
        .filter_map(|e| e.parse::<std::net::SocketAddr>().ok())
        .map(|a| (a.ip(), a.port()))
        .collect()
}

/// The `kubernetes` Endpoints for `live`: one subset per port (servers normally share one).
pub fn endpoints_object(live: &BTreeSet<(IpAddr, u16)>) -> Value {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for (ip, port) in live {
        by_port.entry(*port).or_default().push(ip.to_string());
    }
    let subsets: Vec<Value> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({"addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets})
}

/// The `kubernetes` EndpointSlices for `live`: one per address family and port, the first named `kubernetes`.
pub fn slice_objects(live: &BTreeSet<(IpAddr, u16)>) -> Vec<Value> {
    let mut groups: BTreeMap<(&str, u16), Vec<String>> = BTreeMap::new();
    for (ip, port) in live {
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        groups
            .entry((family, *port))
            .or_default()
            .push(ip.to_string());
    }
    groups
        .iter()
        .enumerate()
        .map(|(i, ((family, port), ips))| {
            let name = if i == 0 {
                "kubernetes".to_string()
            } else {
                format!("kubernetes-{}-{port}", family.to_lowercase())
            };
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes",
                        "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
                "addressType": family,
                "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
        })
        .collect()
}

impl Server {
    /// Renews this server's Lease, then makes the `kubernetes` Endpoints and EndpointSlices list every live server.
    pub async fn announce(&self, a: &Announcement) -> Result<()> {
        let leases = registry::lookup("leases").expect("served");
        let now = crate::sys::clock::utc_now();
        let name = a.lease_name();
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": NAMESPACE,
                "labels": {IDENTITY_LABEL: "kube-apiserver"},
                "annotations": {ENDPOINT_ANNOTATION: a.endpoint()}},
            "spec": {"holderIdentity": name,
                "leaseDurationSeconds": a.lease.as_secs().max(1),
                "renewTime": micro_time(now)}});
        self.put_object(leases, Some(NAMESPACE), &name, lease)
            .await?;
        let mut q = Query::new();
        q.insert(
            "labelSelector".into(),
            format!("{IDENTITY_LABEL}=kube-apiserver"),
        );
        let (all, _, _, _) = self.list_objects(leases, Some(NAMESPACE), &q).await?;
        // Leases of servers gone for a while are removed (any server may; a conflict means another did).
        for gone in all
            .iter()
            .filter(|l| expired_for(l, now).is_some_and(|d| d > chrono::Duration::minutes(10)))
        {
            let gone_name = gone["metadata"]["name"].as_str().unwrap_or("");
            let rv = gone["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let key = handlers::key(leases, Some(NAMESPACE), Some(gone_name));
            let _ = self.store.delete(&key, rv).await;
        }
        let live = live_endpoints(&all, now);
        if live.is_empty() {
            return Ok(());
        }
        let endpoints = registry::lookup("endpoints").expect("served");
        self.put_object(
            endpoints,
            Some("default"),
            "kubernetes",
            endpoints_object(&live),
        )
        .await?;
        let slices = registry::by_kind("discovery.k8s.io/v1", "EndpointSlice").expect("served");
        let wanted = slice_objects(&live);
        for slice in &wanted {
            let name = slice["metadata"]["name"].as_str().unwrap_or("").to_string();
            self.put_object(slices, Some("default"), &name, slice.clone())
                .await?;
        }
        let mut q = Query::new();
        q.insert(
            "labelSelector".into(),
            "kubernetes.io/service-name=kubernetes,endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io".into(),
        );
        let (existing, _, _, _) = self.list_objects(slices, Some("default"), &q).await?;
        for old in existing {
            let old_name = old["metadata"]["name"].as_str().unwrap_or("");
            if !wanted.iter().any(|w| w["metadata"]["name"] == old_name) {
                let rv = old["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let key = handlers::key(slices, Some("default"), Some(old_name));
                let _ = self.store.delete(&key, rv).await;
            }
        }
        Ok(())
    }

    /// Announces this server every `a.renew` for as long as it runs.
    pub async fn keep_announcing(self, a: Announcement) {
        loop {
            tokio::time::sleep(a.renew).await;
            if let Err(e) = self.announce(&a).await {
                tracing::warn!("announcing this API server: {e}");
            }
        }
    }

    /// Creates or replaces the object `name` with `obj` (written as the API server itself), leaving it alone when
    /// nothing but its metadata would change.
    pub async fn put_object(
        &self,
        kind: &'static crate::api::registry::KindInfo,
        ns: Option<&str>,
        name: &str,
        obj: Value,
    ) -> Result<()> {
        let opts = handlers::WriteOpts {
            dry_run: false,
            validation: "Strict".into(),
            manager: "kube-apiserver".into(),
            subresource: String::new(),
        };
        match self.get_object(kind, ns, name).await {
            Ok((old, rv)) => {
                let same = obj.as_object().is_some_and(|o| {
                    o.iter()
                        .filter(|(k, _)| *k != "metadata")
                        .all(|(k, v)| old[k] == *v)
                }) && obj["metadata"]["labels"] == old["metadata"]["labels"]
                    && obj["metadata"]["annotations"].as_object().is_none_or(|a| {
                        a.iter()
                            .all(|(k, v)| old["metadata"]["annotations"][k] == *v)
                    });
                if same && kind.kind != "Lease" {
                    return Ok(());
                }
                let mut new = obj;
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                self.write(kind, ns, new, Some((&old, rv)), &opts, &mut Vec::new())
                    .await?;
            }
            Err(e) if e.code == 404 => {
                match self
                    .write(kind, ns, obj, None, &opts, &mut Vec::new())
                    .await
                {
                    // Another server made it in between: its next round, or ours, writes it again.
                    Err(e) if e.code == 409 => {}
                    other => {
                        other?;
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(endpoint: &str, renewed: chrono::DateTime<chrono::Utc>) -> Value {
        json!({"metadata": {"annotations": {ENDPOINT_ANNOTATION: endpoint}},
            "spec": {"renewTime": micro_time(renewed), "leaseDurationSeconds": 15}})
    }

    #[test]
    fn only_live_servers_are_listed_and_grouped_by_port() {
        let now = crate::sys::clock::utc_now();
        let leases = [
            lease("10.0.0.2:6443", now),
            lease("10.0.0.1:6443", now - chrono::Duration::seconds(5)),
            lease("10.0.0.3:6443", now - chrono::Duration::seconds(20)),
            lease("127.0.0.1:7443", now),
        ];
        let live = live_endpoints(&leases, now);
        let listed: Vec<String> = live.iter().map(|(ip, p)| format!("{ip}:{p}")).collect();
        assert_eq!(listed, ["10.0.0.1:6443", "10.0.0.2:6443", "127.0.0.1:7443"]);
        let ep = endpoints_object(&live);
        assert_eq!(ep["subsets"][0]["addresses"][1]["ip"], "10.0.0.2");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
        assert_eq!(ep["subsets"][1]["addresses"][0]["ip"], "127.0.0.1");
        let slices = slice_objects(&live);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0]["metadata"]["name"], "kubernetes");
        assert_eq!(slices[1]["metadata"]["name"], "kubernetes-ipv4-7443");
    }

    #[test]
    fn one_lease_per_address() {
        let a = Announcement::new("10.0.0.1".parse().unwrap(), 6443);
        let b = Announcement::new("10.0.0.2".parse().unwrap(), 6443);
        assert_ne!(a.lease_name(), b.lease_name());
        assert_eq!(
            a.lease_name(),
            Announcement::new(a.address, 6443).lease_name()
        );
        assert!(a.lease_name().starts_with("apiserver-"));
    }
}
