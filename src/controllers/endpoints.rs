//! The endpoints controllers (Endpoints and EndpointSlice): for every Service with a selector, the pods it selects
//! that have an address, with each Service port's `targetPort` resolved per pod (a number, or a container port's
//! name). Endpoints lists ready pods under `addresses` and the others under `notReadyAddresses` (terminating pods
//! left out unless `publishNotReadyAddresses`); EndpointSlices (`discovery.k8s.io/v1`, labelled
//! `kubernetes.io/service-name`, owned by the Service) carry every pod with its ready/serving/terminating conditions.
//! Pods whose ports resolve differently go in separate subsets and slices, as in Kubernetes. Services without a
//! selector are left to whoever manages their endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pods::{is_ready, phase};
use crate::api::core::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use crate::api::meta::ObjectMeta;
use crate::api::other::{Endpoint, EndpointConditions, EndpointSlice, EndpointSlicePort};
use crate::api::selector::Selector;
use crate::api::{IntOrString, Resource};
use crate::client::informer::Cache;
use crate::client::{Api, Client};
use crate::runtime::Action;

use super::Result;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MANAGER: &str = "capstan-endpoints";

pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub endpoints: Cache<Endpoints>,
    pub slices: Cache<EndpointSlice>,
}

fn selector_of(svc: &Service) -> Option<Selector> {
    let m = svc
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|m| !m.is_empty())?;
    Some(Selector::from_map(m))
}

/// The pod's port for a Service port's `targetPort` (defaulting to `port`), or None when a named port is missing.
pub fn resolve_port(svc_port: &ServicePort, pod: &Pod) -> Option<i64> {
    match &svc_port.target_port {
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP")
                            == svc_port.protocol.as_deref().unwrap_or("TCP")
                })
                .map(|p| i64::from(p.container_port)),
        },
        None => Some(i64::from(svc_port.port)),
    }
}

/// One pod as an endpoint.
struct Member<'p> {
    pod: &'p Pod,
    ready: bool,
    terminating: bool,
}

/// A resolved port: (name, number, protocol).
type PortSet = Vec<(String, i64, String)>;

/// Pods grouped by how the Service's ports resolve on them.
fn groups<'p>(svc: &Service, pods: &'p [Arc<Pod>]) -> BTreeMap<PortSet, Vec<Member<'p>>> {
    let ports: &[ServicePort] = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[]);
    let mut out: BTreeMap<PortSet, Vec<Member<'p>>> = BTreeMap::new();
    for pod in pods {
        if pod_ip(pod).is_none() || matches!(phase(pod), "Succeeded" | "Failed") {
            continue;
        }
        let resolved: PortSet = ports
            .iter()
            .filter_map(|p| {
                resolve_port(p, pod).map(|n| {
                    (
                        p.name.clone().unwrap_or_default(),
                        n,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        // A pod none of whose ports resolve (a named port it lacks) is no endpoint of this Service.
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        out.entry(resolved).or_default().push(Member {
            pod,
            ready: is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        });
    }
    out
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's DNS host name under this Service (hostname and subdomain set, subdomain naming the Service).
fn hostname_for(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let h = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| h.to_string())
}

/// The Endpoints object for a Service.
pub fn endpoints_for(svc: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let publish_all = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true);
    let mut subsets = Vec::new();
    for (ports, members) in groups(svc, pods) {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for m in members {
            if m.terminating && !publish_all {
                continue;
            }
            let a = EndpointAddress {
                ip: pod_ip(m.pod).unwrap_or("").to_string(),
                hostname: hostname_for(svc, m.pod),
                node_name: super::pods::node_name(m.pod).map(String::from),
                target_ref: Some(target_ref(m.pod)),
            };
            if m.ready || publish_all {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        ready.sort_by(|a, b| a.ip.cmp(&b.ip));
        not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| EndpointPort {
                        name: (!n.is_empty()).then(|| n.clone()),
                        port: *p as i32,
                        protocol: Some(proto.clone()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        });
    }
    Endpoints {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(svc.metadata.labels()),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The EndpointSlices for a Service (one per distinct port set), named `<service>-<n>`.
pub fn slices_for(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
    let name = svc.metadata.name();
    let mut out = Vec::new();
    let mut all = groups(svc, pods);
    if all.is_empty() {
        // A Service with no endpoints still has its (empty) slice, as in Kubernetes.
        all.insert(Vec::new(), Vec::new());
    }
    for (i, (ports, members)) in all.into_iter().enumerate() {
        let mut endpoints: Vec<Endpoint> = members
            .iter()
            .map(|m| Endpoint {
                addresses: vec![pod_ip(m.pod).unwrap_or("").to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(m.ready && !m.terminating),
                    serving: Some(m.ready),
                    terminating: Some(m.terminating),
                }),
                hostname: hostname_for(svc, m.pod),
                node_name: super::pods::node_name(m.pod).map(String::from),
                target_ref: Some(target_ref(m.pod)),
                zone: None,
                hints: None,
            })
            .collect();
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let labels = BTreeMap::from([
            (SERVICE_NAME_LABEL.to_string(), name.to_string()),
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        ]);
        out.push(EndpointSlice {
            api_version: EndpointSlice::api_version(),
            kind: "EndpointSlice".into(),
            metadata: ObjectMeta {
                name: Some(format!("{name}-{i}")),
                namespace: svc.metadata.namespace.clone(),
                labels: Some(labels),
                owner_references: Some(vec![svc.controller_ref()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| EndpointSlicePort {
                        name: Some(n.clone()),
                        port: Some(*p as i32),
                        protocol: Some(proto.clone()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        });
    }
    out
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> &'a str {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map_or("", String::as_str)
}

/// One reconcile of one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action> {
    let Some(selector) = selector_of(&svc) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace().to_string();
    let name = svc.metadata.name().to_string();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_namespace(&ns)
        .into_iter()
        .filter(|p| selector.matches(&p.metadata.labels()))
        .collect();

    let ep = endpoints_for(&svc, &pods);
    let live = ctx.endpoints.get(&ns, &name);
    if live.is_none_or(|l| l.subsets != ep.subsets) {
        Api::<Endpoints>::namespaced(&ctx.client, &ns)
            .apply(&name, &ep, MANAGER, true)
            .await?;
    }
    let slices_api = Api::<EndpointSlice>::namespaced(&ctx.client, &ns);
    let mut keep = Vec::new();
    for sl in slices_for(&svc, &pods) {
        let sn = sl.metadata.name().to_string();
        let live = ctx.slices.get(&ns, &sn);
        if live.is_none_or(|l| l.endpoints != sl.endpoints || l.ports != sl.ports) {
            slices_api.apply(&sn, &sl, MANAGER, true).await?;
        }
        keep.push(sn);
    }
    // Slices of port sets that no longer exist.
    let stale: Vec<String> = ctx
        .slices
        .list_namespace(&ns)
        .iter()
        .filter(|sl| {
            label(&sl.metadata, SERVICE_NAME_LABEL) == name
                && label(&sl.metadata, MANAGED_BY_LABEL) == MANAGED_BY
                && !keep.iter().any(|k| k == sl.metadata.name())
        })
        .map(|sl| sl.metadata.name().to_string())
        .collect();
    slices_api.delete_all(&stale).await?;
    Ok(Action::await_change())
}

/// Maps a pod to the Services of its namespace whose selector matches it (now, or - when it changed labels - the
/// ones that list it).
pub fn pod_mapper(services: Cache<Service>) -> crate::runtime::controller::Mapper<Pod> {
    Arc::new(move |pod: &Pod| {
        let labels = pod.metadata.labels();
        services
            .list_namespace(pod.metadata.namespace())
            .iter()
            .filter(|svc| selector_of(svc).is_some_and(|sel| sel.matches(&labels)))
            .map(|svc| crate::runtime::key_of(svc.as_ref()))
            .collect()
    })
}

/// Maps an Endpoints object to its Service (so a hand edit is put right).
pub fn endpoints_owner() -> crate::runtime::controller::Mapper<Endpoints> {
    Arc::new(|ep: &Endpoints| vec![crate::runtime::key_of(ep)])
}

/// Maps an EndpointSlice to its Service (so a hand edit is put right).
pub fn slice_owner() -> crate::runtime::controller::Mapper<EndpointSlice> {
    Arc::new(|sl: &EndpointSlice| {
        let service = label(&sl.metadata, SERVICE_NAME_LABEL);
        if service.is_empty() {
            Vec::new()
        } else {
            vec![format!("{}/{service}", sl.metadata.namespace())]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Arc<Pod> {
        Arc::new(serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "n", "uid": format!("u-{name}"), "labels": {"app": "a"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        ).unwrap())
    }

    #[test]
    fn endpoints_resolve_named_ports_per_pod_and_split_by_readiness() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "n", "uid": "s"},
            "spec": {"selector": {"app": "a"}, "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}}))
        .unwrap();
        let pods = vec![
            pod("a", "10.0.0.2", true, "web", 8080),
            pod("b", "10.0.0.1", false, "web", 8080),
            pod("c", "10.0.0.3", true, "web", 9090),
            pod("d", "10.0.0.4", true, "other", 1),
        ];
        let ep = serde_json::to_value(endpoints_for(&svc, &pods)).unwrap();
        let subsets = ep["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2, "{ep}");
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(subsets[1]["addresses"][0]["targetRef"]["name"], "c");
        let slices = serde_json::to_value(slices_for(&svc, &pods)).unwrap();
        let slices = slices.as_array().unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0]["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slices[0]["endpoints"][0]["conditions"]["ready"], false);
        assert_eq!(slices[0]["endpoints"][1]["conditions"]["ready"], true);
        let port = |v: serde_json::Value| -> ServicePort { serde_json::from_value(v).unwrap() };
        assert_eq!(resolve_port(&port(json!({"port": 80})), &pods[0]), Some(80));
        assert_eq!(
            resolve_port(&port(json!({"port": 80, "targetPort": 8081})), &pods[0]),
            Some(8081)
        );
    }
}
