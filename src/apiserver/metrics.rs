//! `metrics.k8s.io/v1beta1`, served by the API server itself (k3s ships metrics-server for it; here it is built in
//! and registered as the local APIService `v1beta1.metrics.k8s.io`): NodeMetrics and PodMetrics, read on request
//! from every node agent's `/stats` (the usage its sampler measured over the last window). This is what
//! `kubectl top nodes` and `kubectl top pods` ask for. Also `/metrics`, the process's own numbers in Prometheus'
//! text format.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::Query;
use super::Server;
use crate::api::registry;
use crate::api::selector::Selector;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The discovery document of the group-version.
pub fn resource_list() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]})
}

/// CPU in nanocores and memory in KiB, as metrics-server writes quantities.
fn usage(u: &Value) -> Value {
    let cpu = u["cpuNanoCores"].as_u64().unwrap_or(0);
    let mem = u["memoryWorkingSetBytes"].as_u64().unwrap_or(0);
    json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", mem / 1024)})
}

fn window(u: &Value) -> String {
    let w = u["windowSeconds"].as_f64().unwrap_or(0.0);
    format!("{}s", w.round() as u64)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A request under `/apis/metrics.k8s.io/v1beta1/` (the segments after it).
pub enum Request<'a> {
    Nodes(Option<&'a str>),
    Pods {
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    },
}

impl<'a> Request<'a> {
    pub fn parse(rest: &'a [&'a str]) -> Option<Request<'a>> {
        Some(match rest {
            ["nodes"] => Request::Nodes(None),
            ["nodes", n] => Request::Nodes(Some(n)),
            ["pods"] => Request::Pods {
                namespace: None,
                name: None,
            },
            ["namespaces", ns, "pods"] => Request::Pods {
                namespace: Some(ns),
                name: None,
            },
            ["namespaces", ns, "pods", n] => Request::Pods {
                namespace: Some(ns),
                name: Some(n),
            },
            _ => return None,
        })
    }
}

impl Server {
    /// Every node (with its labels) and what its agent's `/stats` says (None: not reachable now).
    async fn node_stats(&self) -> Result<Vec<(Value, Option<Value>)>> {
        let nodes = registry::lookup("nodes").expect("served");
        let (items, _, _, _) = self.list_objects(nodes, None, &Query::new()).await?;
        let http = self.agent_http()?;
        let asks = items.into_iter().map(|node| {
            let http = http.clone();
            async move {
                let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
                let stats = match self.agent_address(&name).await {
                    Ok(host) => {
                        let got = http
                            .get(format!("https://{host}/stats"))
                            .timeout(std::time::Duration::from_secs(3))
                            .send()
                            .await;
                        match got {
                            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                            _ => None,
                        }
                    }
                    Err(_) => None,
                };
                (node, stats)
            }
        });
        Ok(futures::future::join_all(asks).await)
    }

    /// Answers a `metrics.k8s.io` request.
    pub async fn metrics(&self, req: Request<'_>, q: &Query) -> Result<Value> {
        let selector = Selector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let labels = |obj: &Value| -> std::collections::BTreeMap<String, String> {
            serde_json::from_value(obj["metadata"]["labels"].clone()).unwrap_or_default()
        };
        let stats = self.node_stats().await?;
        match req {
            Request::Nodes(name) => {
                let mut items = Vec::new();
                for (node, s) in &stats {
                    let n = node["metadata"]["name"].as_str().unwrap_or("");
                    let Some(u) = s.as_ref().map(|s| &s["node"]).filter(|u| u.is_object()) else {
                        continue;
                    };
                    if name.is_some_and(|want| want != n) || !selector.matches(&labels(node)) {
                        continue;
                    }
                    items.push(json!({"kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                        "metadata": {"name": n, "creationTimestamp": now(), "labels": node["metadata"]["labels"]},
                        "timestamp": u["timestamp"], "window": window(u), "usage": usage(u)}));
                }
                match name {
                    Some(n) => items
                        .pop()
                        .ok_or_else(|| ApiError::not_found(&format!("nodes.{GROUP}"), n)),
                    None => Ok(
                        json!({"kind": "NodeMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"),
                        "metadata": {}, "items": items}),
                    ),
                }
            }
            Request::Pods { namespace, name } => {
                let pods = registry::lookup("pods").expect("served");
                let (all, _, _, _) = self.list_objects(pods, namespace, &Query::new()).await?;
                let pod_labels: std::collections::HashMap<(String, String), Value> = all
                    .iter()
                    .map(|p| {
                        let key = (
                            p["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                            p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        );
                        (key, p.clone())
                    })
                    .collect();
                let mut items = Vec::new();
                for p in stats
                    .iter()
                    .filter_map(|(_, s)| s.as_ref()?["pods"].as_array().cloned())
                    .flatten()
                {
                    let (ns, n) = (
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or(""),
                    );
                    if namespace.is_some_and(|want| want != ns)
                        || name.is_some_and(|want| want != n)
                    {
                        continue;
                    }
                    let Some(pod) = pod_labels.get(&(ns.to_string(), n.to_string())) else {
                        continue;
                    };
                    if !selector.matches(&labels(pod)) {
                        continue;
                    }
                    let containers: Vec<Value> = p["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| json!({"name": c["name"], "usage": usage(c)}))
                        .collect();
                    let first = &p["containers"][0];
                    items.push(json!({"kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                        "metadata": {"name": n, "namespace": ns, "creationTimestamp": now(),
                            "labels": pod["metadata"]["labels"]},
                        "timestamp": first["timestamp"], "window": window(first), "containers": containers}));
                }
                match name {
                    Some(n) => items
                        .pop()
                        .ok_or_else(|| ApiError::not_found(&format!("pods.{GROUP}"), n)),
                    None => Ok(
                        json!({"kind": "PodMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"),
                        "metadata": {}, "items": items}),
                    ),
                }
            }
        }
    }
}

/// `/metrics` in Prometheus' text format (authorized as the non-resource URL `/metrics`, as Kubernetes does):
/// the store's revision and what the process adds ([`Server::metrics`]: the controllers' work queues).
pub async fn prometheus(State(server): State<Server>) -> Response {
    let mut text = String::from("# HELP capstan_store_revision The store's newest revision.\n");
    text.push_str("# TYPE capstan_store_revision gauge\n");
    if let Ok(revision) = server.store.revision().await {
        text.push_str(&format!("capstan_store_revision {revision}\n"));
    }
    if let Some(more) = &server.metrics {
        text.push_str(&more());
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
