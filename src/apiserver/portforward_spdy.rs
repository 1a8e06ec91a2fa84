//! `kubectl port-forward`: an SPDY/3.1 session, tunnelled in a WebSocket (subprotocol
//! `SPDY/3.1+portforward.k8s.io`, what kubectl 1.31 and later ask for) or on the connection itself after an
//! `Upgrade: SPDY/3.1` (older kubectl). For each connection kubectl accepts locally it opens two streams carrying the
//! same `requestID` and `port` headers: an error stream and a data stream. Each pair becomes one WebSocket to the
//! agent of the pod's node (`/portForward/{ns}/{pod}?ports=P`, Kubernetes' channel protocol): the agent's data
//! channel feeds the data stream, its error channel the error stream, and both streams end when the pod's side of the
//! connection closes (kubectl waits for both). The framing is `api::spdy`.

use std::collections::HashMap;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;

use super::Server;
use crate::api::exec::PORTFORWARD_PROTOCOLS;
use crate::api::spdy::{Codec, Frame, PROTOCOL_ERROR, REFUSED_STREAM};

/// The largest DATA frame sent.
const CHUNK: usize = 32 * 1024;

/// How the session's bytes travel: WebSocket binary messages, or the upgraded connection itself.
pub enum Transport {
    WebSocket(Box<axum::extract::ws::WebSocket>),
    Upgraded(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
}

impl Transport {
    /// The next bytes from kubectl; None when it has gone.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        use axum::extract::ws::Message;
        use tokio::io::AsyncReadExt;
        match self {
            Transport::WebSocket(ws) => loop {
                match ws.recv().await? {
                    Ok(Message::Binary(b)) => return Some(b.to_vec()),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            },
            Transport::Upgraded(io) => {
                let mut buf = vec![0u8; CHUNK];
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(buf)
                    }
                }
            }
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        use tokio::io::AsyncWriteExt;
        match self {
            Transport::WebSocket(ws) => ws
                .send(axum::extract::ws::Message::Binary(bytes.into()))
                .await
                .is_ok(),
            Transport::Upgraded(io) => io.write_all(&bytes).await.is_ok(),
        }
    }

    async fn close(&mut self) {
        use tokio::io::AsyncWriteExt;
        match self {
            Transport::WebSocket(ws) => {
                let _ = ws
                    .send(axum::extract::ws::Message::Close(Some(
                        axum::extract::ws::CloseFrame {
                            code: 1000,
                            reason: "".into(),
                        },
                    )))
                    .await;
            }
            Transport::Upgraded(io) => {
                let _ = io.shutdown().await;
            }
        }
    }
}

/// What a forwarded connection's task tells the session.
enum Out {
    Data(u32, Vec<u8>),
    Fin(u32),
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<u32>,
    error: Option<u32>,
}

/// Where the pod is: its name, namespace and node.
#[derive(Clone)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub node: String,
}

struct Session {
    server: Server,
    target: Target,
    codec: Codec,
    pairs: HashMap<String, Pair>,
    /// Per data stream: the sender to its connection's task (dropped when kubectl finishes or resets the stream).
    to_pod: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    /// Error stream -> its data stream, to end a connection when either is reset.
    error_of: HashMap<u32, u32>,
    out: mpsc::UnboundedSender<Out>,
}

/// Serves one port-forward session until kubectl goes away.
pub async fn serve(server: Server, mut transport: Transport, target: Target) {
    let (out, mut from_tasks) = mpsc::unbounded_channel();
    let mut s = Session {
        server,
        target,
        codec: Codec::new(),
        pairs: HashMap::new(),
        to_pod: HashMap::new(),
        error_of: HashMap::new(),
        out,
    };
    let mut inbuf = Vec::new();
    loop {
        let mut replies = Vec::new();
        tokio::select! {
            bytes = transport.recv() => {
                let Some(bytes) = bytes else { break };
                inbuf.extend(bytes);
                loop {
                    match s.codec.decode(&mut inbuf) {
                        Ok(Some(frame)) => {
                            if !s.handle(frame, &mut replies).await {
                                let bytes = encode_all(&mut s.codec, &replies);
                                transport.send(bytes).await;
                                transport.close().await;
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(pod = %s.target.pod, "port-forward: {e}");
                            replies.push(Frame::GoAway { last_good: 0, status: 1 });
                            let bytes = encode_all(&mut s.codec, &replies);
                            transport.send(bytes).await;
                            transport.close().await;
                            return;
                        }
                    }
                }
            }
            Some(out) = from_tasks.recv() => match out {
                Out::Data(stream, data) => {
                    for chunk in data.chunks(CHUNK) {
                        replies.push(Frame::Data { stream, fin: false, data: chunk.to_vec() });
                    }
                }
                Out::Fin(stream) => {
                    replies.push(Frame::Data { stream, fin: true, data: Vec::new() });
                }
            },
        }
        if !replies.is_empty() {
            let bytes = encode_all(&mut s.codec, &replies);
            if !transport.send(bytes).await {
                break;
            }
        }
    }
    // kubectl has gone: every connection's task ends as its sender drops.
}

fn encode_all(codec: &mut Codec, frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| codec.encode(f)).collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Session {
    /// Acts on one frame from kubectl, adding what to answer to `replies`; false ends the session.
    async fn handle(&mut self, frame: Frame, replies: &mut Vec<Frame>) -> bool {
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => self.open_stream(stream, &headers, replies),
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = self.to_pod.get(&stream) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        self.to_pod.remove(&stream);
                    }
                }
                if fin {
                    // kubectl's local connection ended: so does the pod's.
                    self.to_pod.remove(&stream);
                }
            }
            Frame::RstStream { stream, .. } => {
                let data = self.error_of.get(&stream).copied().unwrap_or(stream);
                self.to_pod.remove(&data);
            }
            Frame::Ping(id) => replies.push(Frame::Ping(id)),
            Frame::GoAway { .. } => return false,
            Frame::SynReply { .. }
            | Frame::Settings(_)
            | Frame::Headers { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown(_) => {}
        }
        true
    }

    fn open_stream(&mut self, stream: u32, headers: &[(String, String)], replies: &mut Vec<Frame>) {
        let kind = header(headers, "streamType").unwrap_or("");
        let port = header(headers, "port").and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port.filter(|p| *p > 0) else {
            tracing::warn!(pod = %self.target.pod, "port-forward: a stream without a valid port header");
            replies.push(Frame::RstStream {
                stream,
                status: PROTOCOL_ERROR,
            });
            return;
        };
        // Without a request id (the oldest kubectl), the streams of one port pair up in order.
        let id = header(headers, "requestID")
            .map(String::from)
            .unwrap_or_else(|| format!("port-{port}"));
        let pair = self.pairs.entry(id.clone()).or_default();
        pair.port = port;
        match kind {
            "data" if pair.data.is_none() => pair.data = Some(stream),
            "error" if pair.error.is_none() => pair.error = Some(stream),
            _ => {
                replies.push(Frame::RstStream {
                    stream,
                    status: REFUSED_STREAM,
                });
                return;
            }
        }
        replies.push(Frame::SynReply {
            stream,
            fin: false,
            headers: Vec::new(),
        });
        if let (Some(data), Some(error)) = (pair.data, pair.error) {
            let port = pair.port;
            self.pairs.remove(&id);
            let (tx, rx) = mpsc::channel(64);
            self.to_pod.insert(data, tx);
            self.error_of.insert(error, data);
            tokio::spawn(connection(
                self.server.clone(),
                self.target.clone(),
                port,
                (data, error),
                rx,
                self.out.clone(),
            ));
        }
    }
}

/// One forwarded connection: a WebSocket to the agent for `port`, relayed to the (data, error) streams until the pod
/// or kubectl closes it; then both streams end.
async fn connection(
    server: Server,
    target: Target,
    port: u16,
    (data, error): (u32, u32),
    mut from_kubectl: mpsc::Receiver<Vec<u8>>,
    out: mpsc::UnboundedSender<Out>,
) {
    let path = format!(
        "/portForward/{}/{}?ports={port}",
        target.namespace, target.pod
    );
    let asked = vec![PORTFORWARD_PROTOCOLS[0].to_string()];
    let agent = match server.agent_socket(&target.node, &path, &asked).await {
        Ok((agent, _)) => agent,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}: {}",
                target.pod, e.message
            );
            let _ = out.send(Out::Data(error, msg.into_bytes()));
            let _ = out.send(Out::Fin(error));
            let _ = out.send(Out::Fin(data));
            return;
        }
    };
    let (mut to_agent, mut from_agent) = agent.split();
    // Each channel opens with the port number (2 bytes), which kubectl's streams do not carry.
    let mut prefix_left = [2usize, 2usize];
    let mut sending = true;
    loop {
        tokio::select! {
            msg = from_agent.next() => {
                let bytes = match msg {
                    Some(Ok(tungstenite::Message::Binary(b))) => b,
                    Some(Ok(tungstenite::Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, rest)) = bytes.split_first() else { continue };
                let Some(left) = prefix_left.get_mut(channel as usize) else { continue };
                let skip = (*left).min(rest.len());
                *left -= skip;
                let rest = &rest[skip..];
                if rest.is_empty() {
                    continue;
                }
                let stream = if channel == 0 { data } else { error };
                if out.send(Out::Data(stream, rest.to_vec())).is_err() {
                    return;
                }
            }
            bytes = from_kubectl.recv(), if sending => match bytes {
                Some(bytes) => {
                    let mut framed = Vec::with_capacity(bytes.len() + 1);
                    framed.push(0u8);
                    framed.extend(bytes);
                    // The agent may have closed already (the pod refused the connection): what it said before
                    // closing is still to be read, so keep reading.
                    if to_agent.send(tungstenite::Message::Binary(framed.into())).await.is_err() {
                        sending = false;
                    }
                }
                None => {
                    // kubectl is done with the connection: ask the agent to close, and pass on what it still sends.
                    let _ = to_agent.close().await;
                    sending = false;
                }
            },
        }
    }
    let _ = out.send(Out::Fin(error));
    let _ = out.send(Out::Fin(data));
}
