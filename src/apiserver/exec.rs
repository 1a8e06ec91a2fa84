//! `pods/exec` (`kubectl exec`, `kubectl cp`): the API server checks the request against the pod (which container,
//! whether it runs), opens a WebSocket to the agent of the pod's node with the same remote-command subprotocol, then
//! upgrades the client's connection and relays messages both ways unchanged. The channel protocol itself is spoken
//! by the agent (`node::exec`). WebSocket only: kubectl 1.30 and later try it first; SPDY is refused with a
//! message saying so. `pods/portforward` is served the same way for clients of the channel protocol, and as SPDY
//! for kubectl (`portforward_spdy`).

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::error::ApiError;
use super::logs::pick_container;
use super::Server;
use crate::api::exec::{Options, PORTFORWARD_PROTOCOLS, PROTOCOLS};
use crate::api::registry;
use crate::api::spdy::PORTFORWARD_TUNNEL;

type Result<T> = std::result::Result<T, ApiError>;

/// Whether `path` names a pod's exec subresource; returns (namespace, pod).
pub fn exec_target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.trim_end_matches('/').split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(ns), Some("pods"), Some(name), Some("exec"), None) => Some((ns, name)),
        _ => None,
    }
}

impl Server {
    /// Why an exec into `container` of `pod` cannot work now, if it cannot: the container is not running (by the
    /// pod's status), or its node's agent cannot be reached.
    async fn exec_trouble(&self, pod: &Value, container: &str, node: &str) -> Option<ApiError> {
        let running = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["name"] == container && c["state"].get("running").is_some());
        if !running {
            return Some(ApiError::bad_request(format!(
                "container {container} is not running (pods/exec needs a running container)"
            )));
        }
        let host = match self.agent_address(node).await {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        let reached = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(&host),
        )
        .await;
        match reached {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("reaching the agent of node {node} at {host}: {e}"),
            )),
            Err(_) => Some(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("reaching the agent of node {node} at {host}: timed out"),
            )),
        }
    }

    pub async fn pod_exec(&self, mut parts: Parts, ns: &str, name: &str) -> Result<Response> {
        let mut opts = Options::parse(parts.uri.query().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let pods = registry::lookup("pods").expect("pods");
        let (pod, _) = self.get_object(pods, Some(ns), name).await?;
        let container = pick_container(&pod, opts.container.as_deref())?;
        opts.container = Some(container.clone());
        let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade connection: pod {name} is not scheduled yet"
            )));
        };
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(_) => {
                // kubectl falls back to SPDY when its WebSocket attempt fails, whatever the reason: say what is
                // wrong with the pod or its node first, so the real cause is not hidden behind the refusal.
                if let Some(e) = self.exec_trouble(&pod, &container, node_name).await {
                    return Err(e);
                }
                return Err(ApiError::bad_request(format!(
                    "pods/exec is served over WebSocket ({}); SPDY upgrades are not supported",
                    PROTOCOLS.join(", ")
                )));
            }
        };
        let asked = asked_protocols(&parts.headers, &PROTOCOLS);
        if asked.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pods/exec: none of the requested subprotocols is spoken here (want one of {})",
                PROTOCOLS.join(", ")
            )));
        }
        let path = format!("/exec/{ns}/{name}/{container}?{}", opts.query());
        self.relay_to_agent(ws, node_name, &path, asked, PROTOCOLS[1])
            .await
    }

    /// `pods/portforward`: over WebSocket with Kubernetes' channel protocol (the agent of the pod's node connects
    /// to the pod's ports; messages are relayed both ways unchanged), or as kubectl speaks it, SPDY tunnelled in a
    /// WebSocket or on the upgraded connection itself (`portforward_spdy`).
    pub async fn pod_portforward(
        &self,
        mut parts: Parts,
        ns: &str,
        name: &str,
    ) -> Result<Response> {
        let asked = asked_protocols(&parts.headers, &PORTFORWARD_PROTOCOLS);
        let tunnel = !asked_protocols(&parts.headers, &[PORTFORWARD_TUNNEL]).is_empty();
        let spdy_upgrade = parts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
        let query = parts.uri.query().unwrap_or("").to_string();
        if ws.is_ok() && !asked.is_empty() {
            crate::api::exec::forwarded_ports(&query).map_err(ApiError::bad_request)?;
        }
        let pods = registry::lookup("pods").expect("pods");
        let (pod, _) = self.get_object(pods, Some(ns), name).await?;
        if pod
            .pointer(concat!("/", "status/phase"))
            .and_then(Value::as_str)
            != Some("Running")
        {
            return Err(ApiError::bad_request(format!(
                "unable to forward ports: pod {name} is not running"
            )));
        }
        let Some(node_name) = pod
            .pointer(concat!("/", "spec/nodeName"))
            .and_then(Value::as_str)
        else {
            return Err(ApiError::bad_request(format!(
                "unable to forward ports: pod {name} is not scheduled yet"
            )));
        };
        let target = super::portforward_spdy::Target {
            namespace: ns.to_string(),
            pod: name.to_string(),
            node: node_name.to_string(),
        };
        match ws {
            Ok(ws) if !asked.is_empty() => {
                let path = format!("/portForward/{ns}/{name}?{query}");
                self.relay_to_agent(ws, node_name, &path, asked, PORTFORWARD_PROTOCOLS[0])
                    .await
            }
            Ok(ws) if tunnel => {
                let server = self.clone();
                Ok(ws
                    .protocols([PORTFORWARD_TUNNEL])
                    .on_upgrade(move |socket| {
                        super::portforward_spdy::serve(
                            server,
                            super::portforward_spdy::Transport::WebSocket(Box::new(socket)),
                            target,
                        )
                    })
                    .into_response())
            }
            Err(_) if spdy_upgrade => self.spdy_upgrade(parts, target),
            _ => Err(ApiError::bad_request(format!(
                "pods/portforward: ask for one of the WebSocket subprotocols {}, {PORTFORWARD_TUNNEL}, or an \
                 SPDY/3.1 upgrade",
                PORTFORWARD_PROTOCOLS.join(", ")
            ))),
        }
    }

    /// Answers an `Upgrade: SPDY/3.1` port-forward (kubectl before 1.31): 101, then the SPDY session on the
    /// connection itself.
    fn spdy_upgrade(
        &self,
        mut parts: Parts,
        target: super::portforward_spdy::Target,
    ) -> Result<Response> {
        const VERSION: &str = "portforward.k8s.io";
        let offered = parts
            .headers
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(str::trim))
            .any(|v| v == VERSION);
        if !offered {
            return Err(ApiError::bad_request(format!(
                "pods/portforward over SPDY: X-Stream-Protocol-Version must offer {VERSION}"
            )));
        }
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(ApiError::bad_request(
                "pods/portforward: this connection cannot be upgraded",
            ));
        };
        let server = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let io = hyper_util::rt::TokioIo::new(upgraded);
                    super::portforward_spdy::serve(
                        server,
                        super::portforward_spdy::Transport::Upgraded(io),
                        target,
                    )
                    .await
                }
                Err(e) => tracing::warn!("port-forward: SPDY upgrade failed: {e}"),
            }
        });
        Response::builder()
            .status(axum::http::StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", VERSION)
            .body(axum::body::Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Opens a WebSocket to `path` on the agent of `node_name` offering `asked`, then upgrades the client's
    /// connection with the subprotocol the agent chose and relays messages both ways.
    async fn relay_to_agent(
        &self,
        ws: WebSocketUpgrade,
        node_name: &str,
        path: &str,
        asked: Vec<String>,
        fallback: &str,
    ) -> Result<Response> {
        let (agent, chosen) = self.agent_socket(node_name, path, &asked).await?;
        let chosen = chosen.unwrap_or_else(|| fallback.to_string());
        Ok(ws
            .protocols([chosen])
            .on_upgrade(move |client| relay(client, agent))
            .into_response())
    }

    /// A WebSocket to `path` on the agent of `node_name` (over the cluster's TLS), offering the subprotocols `asked`;
    /// with the subprotocol the agent chose.
    pub(super) async fn agent_socket(
        &self,
        node_name: &str,
        path: &str,
        asked: &[String],
    ) -> Result<(AgentSocket, Option<String>)> {
        let host = self.agent_address(node_name).await?;
        let url = format!("wss://{host}{path}");
        let mut req = url
            .into_client_request()
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            asked
                .join(", ")
                .parse()
                .map_err(|_| ApiError::new(500, "InternalError", "bad subprotocol"))?,
        );
        let unreachable = |e: String| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("reaching the agent of node {node_name}: {e}"),
            )
        };
        let tls = self.agent_tls.clone().ok_or_else(|| {
            ApiError::internal("this API server has no credentials for node agents")
        })?;
        let (h, _) = host.rsplit_once(':').unwrap_or((host.as_str(), ""));
        let h = h.trim_matches(['[', ']']).to_string();
        let tcp = tokio::net::TcpStream::connect(host.as_str())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let server_name =
            rustls::pki_types::ServerName::try_from(h).map_err(|e| unreachable(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (agent, resp) = match tokio_tungstenite::client_async(req, stream).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(r)) => {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let code = r.status().as_u16();
                return Err(ApiError::new(
                    if code == 404 { 404 } else { 400 },
                    if code == 404 {
                        "NotFound"
                    } else {
                        "BadRequest"
                    },
                    format!("unable to upgrade connection: {}", body.trim()),
                ));
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let chosen = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        Ok((agent, chosen))
    }
}

/// A WebSocket to a node agent.
pub(super) type AgentSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The WebSocket subprotocols the client offered that are among `known`, in its order.
fn asked_protocols(headers: &axum::http::HeaderMap, known: &[&str]) -> Vec<String> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| known.contains(&p.as_str()))
        .collect()
}

/// Copies messages between kubectl and the agent until either side closes.
async fn relay(client: axum::extract::ws::WebSocket, agent: AgentSocket) {
    let (mut c_tx, mut c_rx) = client.split();
    let (mut a_tx, mut a_rx) = agent.split();
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            let m = match m {
                Message::Binary(b) => tungstenite::Message::Binary(b),
                Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
                Message::Close(_) => break,
                _ => continue,
            };
            if a_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = a_tx.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = a_rx.next().await {
            let m = match m {
                tungstenite::Message::Binary(b) => Message::Binary(b),
                tungstenite::Message::Text(t) => Message::Text(t.as_str().into()),
                tungstenite::Message::Close(_) => break,
                _ => continue,
            };
            if c_tx.send(m).await.is_err() {
                break;
            }
        }
        // A normal closure (1000): kubectl reads anything else as the stream failing.
        let _ = c_tx
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    };
    // The command's end (the agent closing) ends the session; so does kubectl going away.
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_paths_are_recognised() {
        assert_eq!(
            exec_target("/api/v1/namespaces/demo/pods/web-0/exec"),
            Some(("demo", "web-0"))
        );
        assert_eq!(exec_target("/api/v1/namespaces/demo/pods/web-0/log"), None);
        assert_eq!(exec_target("/api/v1/namespaces/demo/pods/web-0"), None);
    }
}
