//! `pods/log`: the API server checks the request against the pod (which container, whether it has started) and
//! streams the answer from the node agent that runs the pod, like kube-apiserver proxying to the kubelet. The agent
//! is found through the Node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::Value;

use super::error::ApiError;
use super::handlers::Query;
use super::Server;
use crate::api::registry;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The container a log request is for: the named one, or the only one.
pub fn pick_container(pod: &Value, asked: Option<&str>) -> Result<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| {
            pod.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match asked.filter(|s| !s.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let regular: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            match regular.as_slice() {
                [one] => Ok(one.to_string()),
                many => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                ))),
            }
        }
    }
}

impl Server {
    /// `host:port` of the agent of node `node_name` (its InternalIP and the endpoint it published).
    pub(crate) async fn agent_address(&self, node_name: &str) -> Result<String> {
        let nodes = registry::lookup("nodes").expect("nodes");
        let (node, _) = self.get_object(nodes, None, node_name).await?;
        let addr = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .map(str::to_string);
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64);
        let (Some(addr), Some(port)) = (addr, port) else {
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node_name} has no agent endpoint (it has not registered one yet)"),
            ));
        };
        Ok(if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        })
    }

    pub async fn pod_log(&self, ns: &str, name: &str, q: &Query) -> Result<Response> {
        let pods = registry::lookup("pods").expect("pods");
        let (pod, _) = self.get_object(pods, Some(ns), name).await?;
        let container = pick_container(&pod, q.get("container").map(String::as_str))?;
        let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet"
            )));
        };
        let host = self.agent_address(node_name).await?;
        let mut url = url::Url::parse(&format!(
            "https://{host}/containerLogs/{ns}/{name}/{container}"
        ))
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        for k in [
            "follow",
            "previous",
            "timestamps",
            "tailLines",
            "sinceSeconds",
            "sinceTime",
            "limitBytes",
        ] {
            if let Some(v) = q.get(k) {
                url.query_pairs_mut().append_pair(k, v);
            }
        }
        let resp = self.agent_http()?.get(url).send().await.map_err(|e| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("reaching the agent of node {node_name}: {e}"),
            )
        })?;
        let code = resp.status().as_u16();
        if code >= 400 {
            let text = resp.text().await.unwrap_or_default();
            let reason = match code {
                400 => "BadRequest",
                404 => "NotFound",
                _ => "InternalError",
            };
            return Err(ApiError::new(code, reason, text));
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            Body::from_stream(stream),
        )
            .into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_containers_like_kubernetes() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "app");
        assert!(pick_container(&one, Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("container nope is not valid for pod p"));
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "init"}]}});
        assert!(pick_container(&two, None)
            .unwrap_err()
            .to_string()
            .contains("choose one of: [a b]"));
        assert_eq!(pick_container(&two, Some("init")).unwrap(), "init");
    }
}
