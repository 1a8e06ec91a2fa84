//! `port-forward` on the agent's endpoint (`/portForward/{namespace}/{pod}?ports=P&ports=Q`): the API server relays
//! the client's WebSocket here. For the i-th port, channel 2i carries data and 2i+1 errors, each opened by the port
//! number (2 bytes, little-endian), as Kubernetes frames it. Each port is a TCP connection from this machine to the
//! pod's address (the pod's network namespace is reached through its address on either pod network).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exec::{received, send};
use super::pod::PodState;
use super::server::error;
use super::Shared;
use crate::api::exec::{forwarded_ports, Framing, PORTFORWARD_PROTOCOLS};

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    Path((ns, pod)): Path<(String, String)>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let ports = match forwarded_ports(uri.query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let dir = match super::server::pod_dir(&shared, &ns, &pod) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let Some(ip) = PodState::load(&dir)
        .map(|s| s.ip)
        .filter(|ip| !ip.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("pod {pod} has no address yet (is it running?)"),
        );
    };
    ws.protocols(PORTFORWARD_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let framing = Framing::of(
                socket
                    .protocol()
                    .and_then(|p| p.to_str().ok())
                    .unwrap_or(PORTFORWARD_PROTOCOLS[0]),
            );
            run(socket, framing, ip, ports).await
        })
        .into_response()
}

/// What the pod's side of a port says.
enum FromPod {
    Data(usize, Vec<u8>),
    Closed(usize),
}

async fn run(mut socket: WebSocket, framing: Framing, ip: String, ports: Vec<u16>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FromPod>(64);
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, err) = ((2 * i) as u8, (2 * i + 1) as u8);
        let prefix = port.to_le_bytes();
        if send(&mut socket, framing, data, &prefix).await.is_err()
            || send(&mut socket, framing, err, &prefix).await.is_err()
        {
            return;
        }
        match tokio::net::TcpStream::connect((ip.as_str(), *port)).await {
            Ok(conn) => {
                let (mut r, w) = conn.into_split();
                writers.push(Some(w));
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                let _ = tx.send(FromPod::Closed(i)).await;
                                return;
                            }
                            Ok(n) => {
                                if tx.send(FromPod::Data(i, buf[..n].to_vec())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => {
                writers.push(None);
                let msg = format!("error forwarding port {port} to pod at {ip}: {e}");
                let _ = send(&mut socket, framing, err, msg.as_bytes()).await;
            }
        }
    }
    drop(tx);
    let mut open = writers.iter().filter(|w| w.is_some()).count();
    while open > 0 {
        tokio::select! {
            from_pod = rx.recv() => match from_pod {
                Some(FromPod::Data(i, data)) => {
                    if send(&mut socket, framing, (2 * i) as u8, &data).await.is_err() {
                        break;
                    }
                }
                Some(FromPod::Closed(i)) => {
                    if writers.get_mut(i).and_then(Option::take).is_some() {
                        open -= 1;
                    }
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(m)) => {
                    let Some((channel, data)) = received(framing, &m) else { continue };
                    let i = (channel / 2) as usize;
                    if channel % 2 != 0 || data.is_empty() {
                        continue;
                    }
                    if let Some(Some(w)) = writers.get_mut(i) {
                        if w.write_all(&data).await.is_err() {
                            writers[i] = None;
                            open -= 1;
                        }
                    }
                }
            },
        }
    }
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    // Finish the closing handshake, reading what the client still sends: a socket closed with unread bytes is
    // reset, and the reset would throw away what was just sent (an error message, the last data) before the client
    // reads it.
    let drain = async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}
