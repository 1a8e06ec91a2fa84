//! The endpoints controllers (Endpoints and EndpointSlice): for every Service with a selector, the pods it selects
//! that have an address, with each Service port's `targetPort` resolved per pod (a number, or a container port's
//! name). Endpoints lists ready pods under `addresses` and the others under `notReadyAddresses` (terminating pods
//! left out unless `publishNotReadyAddresses`); EndpointSlices (`discovery.k8s.io/v1`, labelled
//! `kubernetes.io/service-name`, owned by the Service) carry every pod with its ready/serving/terminating conditions.
//! Pods whose ports resolve differently go in separate subsets and slices, as in Kubernetes. Services without a
//! selector are left to whoever manages their endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::pods::{is_ready, phase};
use crate::api::core::Pod;
use crate::api::registry;
use crate::api::selector::Selector;
use crate::client::informer::Cache;
use crate::client::Api;
use crate::client::Client;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MANAGER: &str = "capstan-endpoints";

pub struct Context {
    pub client: Client,
    pub pods: Cache<Pod>,
    pub endpoints: Cache,
    pub slices: Cache,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn selector_of(svc: &Value) -> Option<Selector> {
    let m = svc["spec"]["selector"]
        .as_object()
        .filter(|m| !m.is_empty())?;
    let labels: BTreeMap<String, String> = m
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    Some(Selector::from_map(&labels))
}

/// The pod's port for a Service port's `targetPort` (defaulting to `port`), or None when a named port is missing.
pub fn resolve_port(svc_port: &Value, pod: &Pod) -> Option<i64> {
    match &svc_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => match name.parse::<i64>() {
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
                            == svc_port["protocol"].as_str().unwrap_or("TCP")
                })
                .map(|p| i64::from(p.container_port)),
        },
        _ => svc_port["port"].as_i64(),
    }
}

/// One pod as an endpoint.
struct Member<'p> {
    pod: &'p Pod,
    ready: bool,
    terminating: bool,
}

/// Pods grouped by how the Service's ports resolve on them.
fn groups<'p>(
    svc: &Value,
    pods: &'p [Arc<Pod>],
) -> BTreeMap<Vec<(String, i64, String)>, Vec<Member<'p>>> {
    let ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let mut out: BTreeMap<Vec<(String, i64, String)>, Vec<Member<'p>>> = BTreeMap::new();
    for pod in pods {
        if pod_ip(pod).is_none() || matches!(phase(pod), "Succeeded" | "Failed") {
            continue;
        }
        let resolved: Vec<(String, i64, String)> = ports
            .iter()
            .filter_map(|p| {
                resolve_port(p, pod).map(|n| {
                    (
                        s(p, "/name").to_string(),
                        n,
                        p["protocol"].as_str().unwrap_or("TCP").to_string(),
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

fn target_ref(pod: &Pod) -> Value {
    json!({"kind": "Pod", "namespace": pod.metadata.namespace, "name": pod.metadata.name,
        "uid": pod.metadata.uid})
}

/// The pod's DNS host name under this Service (hostname and subdomain set, subdomain naming the Service).
fn hostname_for(svc: &Value, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let h = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc["metadata"]["name"].as_str()).then(|| h.to_string())
}

/// The Endpoints object for a Service.
pub fn endpoints_for(svc: &Value, pods: &[Arc<Pod>]) -> Value {
    let publish_all = svc["spec"]["publishNotReadyAddresses"].as_bool() == Some(true);
    let mut subsets = Vec::new();
    for (ports, members) in groups(svc, pods) {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for m in members {
            if m.terminating && !publish_all {
                continue;
            }
            let mut a = json!({"ip": pod_ip(m.pod), "targetRef": target_ref(m.pod)});
            if let Some(n) = super::pods::node_name(m.pod) {
                a["nodeName"] = json!(n);
            }
            if let Some(h) = hostname_for(svc, m.pod) {
                a["hostname"] = json!(h);
            }
            if m.ready || publish_all {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let sort = |v: &mut Vec<Value>| v.sort_by(|a, b| s(a, "/ip").cmp(s(b, "/ip")));
        sort(&mut ready);
        sort(&mut not_ready);
        let mut subset = json!({"ports": ports.iter().map(|(n, p, proto)| {
            let mut port = json!({"port": p, "protocol": proto});
            if !n.is_empty() { port["name"] = json!(n); }
            port
        }).collect::<Vec<_>>()});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
    }
    let mut labels = svc["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    let mut ep = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": svc["metadata"]["name"], "namespace": svc["metadata"]["namespace"], "labels": labels}});
    if !subsets.is_empty() {
        ep["subsets"] = json!(subsets);
    }
    ep
}

/// The EndpointSlices for a Service (one per distinct port set), named `<service>-<n>`.
pub fn slices_for(svc: &Value, pods: &[Arc<Pod>]) -> Vec<Value> {
    let name = s(svc, "/metadata/name");
    let mut out = Vec::new();
    let mut all = groups(svc, pods);
    if all.is_empty() {
        // A Service with no endpoints still has its (empty) slice, as in Kubernetes.
        all.insert(Vec::new(), Vec::new());
    }
    for (i, (ports, members)) in all.into_iter().enumerate() {
        let mut endpoints: Vec<Value> = members
            .iter()
            .map(|m| {
                let mut e = json!({"addresses": [pod_ip(m.pod)],
                    "conditions": {"ready": m.ready && !m.terminating, "serving": m.ready, "terminating": m.terminating},
                    "targetRef": target_ref(m.pod)});
                if let Some(n) = super::pods::node_name(m.pod) {
                    e["nodeName"] = json!(n);
                }
                if let Some(h) = hostname_for(svc, m.pod) {
                    e["hostname"] = json!(h);
                }
                e
            })
            .collect();
        endpoints.sort_by(|a, b| s(a, "/addresses/0").cmp(s(b, "/addresses/0")));
        out.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-{i}"), "namespace": svc["metadata"]["namespace"],
                "labels": {SERVICE_NAME_LABEL: name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                    "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>()}));
    }
    out
}

/// Whether `live` already says what `want` says (the fields this controller writes).
fn same(want: &Value, live: Option<&Value>, fields: &[&str]) -> bool {
    live.is_some_and(|l| fields.iter().all(|f| want.get(*f) == l.get(*f)))
}

/// One reconcile of one Service.
pub async fn reconcile(svc: Arc<Value>, ctx: Arc<Context>) -> Result<Action> {
    let Some(selector) = selector_of(&svc) else {
        return Ok(Action::await_change());
    };
    if svc["metadata"]["deletionTimestamp"].is_string() {
        return Ok(Action::await_change());
    }
    let ns = s(&svc, "/metadata/namespace").to_string();
    let name = s(&svc, "/metadata/name").to_string();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_namespace(&ns)
        .into_iter()
        .filter(|p| selector.matches(&p.metadata.labels()))
        .collect();
    let ep_kind = registry::lookup("endpoints").expect("endpoints kind");
    let slice_kind = registry::lookup("endpointslices").expect("endpointslices kind");

    let ep = endpoints_for(&svc, &pods);
    let live = ctx.endpoints.get(&ns, &name);
    if !same(&ep, live.as_deref(), &["subsets"]) {
        ctx.client
            .apply(ep_kind, Some(&ns), &name, &ep, MANAGER, true)
            .await?;
    }
    let slices = slices_for(&svc, &pods);
    let mut keep = Vec::new();
    for sl in &slices {
        let sn = s(sl, "/metadata/name").to_string();
        let live = ctx.slices.get(&ns, &sn);
        if !same(sl, live.as_deref(), &["endpoints", "ports"]) {
            ctx.client
                .apply(slice_kind, Some(&ns), &sn, sl, MANAGER, true)
                .await?;
        }
        keep.push(sn);
    }
    // Slices of port sets that no longer exist.
    let stale: Vec<String> = ctx
        .slices
        .list()
        .iter()
        .filter(|sl| {
            s(sl, "/metadata/namespace") == ns
                && s(
                    sl,
                    &format!("/metadata/labels/{}", SERVICE_NAME_LABEL.replace('/', "~1")),
                ) == name
                && s(
                    sl,
                    "/metadata/labels/endpointslice.kubernetes.io~1managed-by",
                ) == MANAGED_BY
                && !keep.iter().any(|k| k == s(sl, "/metadata/name"))
        })
        .map(|sl| s(sl, "/metadata/name").to_string())
        .collect();
    Api::<crate::api::other::EndpointSlice>::namespaced(&ctx.client, &ns)
        .delete_all(&stale)
        .await?;
    Ok(Action::await_change())
}

/// Maps a pod to the Services of its namespace whose selector matches it (now, or - when it changed labels - the
/// ones that list it).
pub fn pod_mapper(services: Cache) -> crate::runtime::controller::Mapper<Pod> {
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

/// Maps an Endpoints or EndpointSlice to its Service (so a hand edit is put right).
pub fn owner_mapper() -> crate::runtime::controller::Mapper {
    Arc::new(|obj: &Value| {
        let ns = s(obj, "/metadata/namespace");
        let name = match s(obj, "/kind") {
            "EndpointSlice" => s(obj, "/metadata/labels/kubernetes.io~1service-name"),
            _ => s(obj, "/metadata/name"),
        };
        if name.is_empty() {
            Vec::new()
        } else {
            vec![format!("{ns}/{name}")]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let svc = json!({"metadata": {"name": "web", "namespace": "n", "uid": "s"},
            "spec": {"selector": {"app": "a"}, "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}});
        let pods = vec![
            pod("a", "10.0.0.2", true, "web", 8080),
            pod("b", "10.0.0.1", false, "web", 8080),
            pod("c", "10.0.0.3", true, "web", 9090),
            pod("d", "10.0.0.4", true, "other", 1),
        ];
        let ep = endpoints_for(&svc, &pods);
        let subsets = ep["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2, "{ep}");
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(subsets[1]["addresses"][0]["targetRef"]["name"], "c");
        let slices = slices_for(&svc, &pods);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0]["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slices[0]["endpoints"][0]["conditions"]["ready"], false);
        assert_eq!(slices[0]["endpoints"][1]["conditions"]["ready"], true);
        assert_eq!(resolve_port(&json!({"port": 80}), &pods[0]), Some(80));
        assert_eq!(
            resolve_port(&json!({"port": 80, "targetPort": 8081}), &pods[0]),
            Some(8081)
        );
    }
}
