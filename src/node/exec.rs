//! `exec` on the agent's endpoint (`/exec/{namespace}/{pod}/{container}`): the API server relays kubectl's
//! WebSocket here, speaking Kubernetes' remote-command channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`):
//! every binary message starts with a channel byte - 0 stdin, 1 stdout, 2 stderr, 3 the final status, 4 terminal
//! resize, and (v5) 255 to close a stream. The command runs in the container through the runtime
//! ([`super::runtime::ContainerRuntime::exec_session`]); its exit becomes a `Status` on channel 3, which is how
//! kubectl learns the exit code.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pod::PodState;
use super::runtime::ExecRequest;
use super::server::error;
use super::Shared;

use crate::api::exec::*;

/// The Status sent on channel 3 when the command ends: Success, or the exit code the way kubectl reads it.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({"metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
}

fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
}

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let opts = match Options::parse(uri.query().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let dir = match super::server::pod_dir(&shared, &ns, &pod) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let running = PodState::load(&dir)
        .and_then(|s| s.containers.get(&container).cloned())
        .and_then(|c| c.running);
    let alive = match &running {
        Some(i) => shared.runtime.alive(&i.handle).await,
        None => false,
    };
    let Some(instance) = running.filter(|_| alive) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("container \"{container}\" in pod \"{pod}\" is not running"),
        );
    };
    let req = ExecRequest {
        command: opts.command.clone(),
        stdin: opts.stdin,
        tty: opts.tty,
    };
    let runtime = shared.runtime.clone();
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let framing = Framing::of(
                socket
                    .protocol()
                    .and_then(|p| p.to_str().ok())
                    .unwrap_or(PROTOCOLS[1]),
            );
            match runtime.exec_session(&instance.handle, &req) {
                Ok(session) => run(socket, session, opts, framing).await,
                Err(e) => {
                    let mut socket = socket;
                    let message = if framing.status {
                        failure(&e.to_string()).to_string()
                    } else {
                        e.to_string()
                    };
                    let _ = send(&mut socket, framing, ERROR, message.as_bytes()).await;
                    let _ = socket.send(normal_close()).await;
                }
            }
        })
        .into_response()
}

/// A close with status 1000: kubectl reads anything else as the stream failing.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Sends `data` on `channel`, framed as the session's subprotocol frames it.
pub(super) async fn send(
    socket: &mut WebSocket,
    framing: Framing,
    channel: u8,
    data: &[u8],
) -> Result<(), axum::Error> {
    let (frame, text) = framing.encode(channel, data);
    let message = if text {
        Message::Text(String::from_utf8_lossy(&frame).into_owned().into())
    } else {
        Message::Binary(frame.into())
    };
    socket.send(message).await
}

/// The channel and data of a received message (None: not a data frame, or undecodable).
pub(super) fn received(framing: Framing, m: &Message) -> Option<(u8, Vec<u8>)> {
    match m {
        Message::Binary(b) => framing.decode(b, false),
        Message::Text(t) => framing.decode(t.as_bytes(), true),
        _ => None,
    }
}

/// Output of the command, by channel.
enum Out {
    Data(u8, Vec<u8>),
    Exited(i32),
}

async fn run(
    mut socket: WebSocket,
    session: super::runtime::ExecSession,
    opts: Options,
    framing: Framing,
) {
    let super::runtime::ExecSession {
        mut child,
        stdin,
        stdout,
        stderr,
        resize,
    } = session;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Out>(64);
    let mut readers = Vec::new();
    for (channel, stream, wanted) in [(STDOUT, stdout, opts.stdout), (STDERR, stderr, opts.stderr)]
    {
        let Some(mut stream) = stream else { continue };
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if wanted => {
                        if tx
                            .send(Out::Data(channel, buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
                }
                Err(_) => 1,
            };
            // Let the output readers drain first.
            for r in readers {
                let _ = r.await;
            }
            let _ = tx.send(Out::Exited(code)).await;
        });
    }
    drop(tx);
    let mut stdin = stdin;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Data(ch, data)) => {
                    if send(&mut socket, framing, ch, &data).await.is_err() {
                        break;
                    }
                }
                Some(Out::Exited(code)) => {
                    // v4 and v5 carry a Status; older protocols only an error message, none on success.
                    let status = if framing.status {
                        Some(exit_status(code).to_string())
                    } else {
                        (code != 0).then(|| format!("command terminated with non-zero exit code: exit status {code}"))
                    };
                    if let Some(status) = status {
                        let _ = send(&mut socket, framing, ERROR, status.as_bytes()).await;
                    }
                    let _ = socket.send(normal_close()).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(m)) => {
                    let Some((channel, data)) = received(framing, &m) else { continue };
                    match channel {
                    STDIN => {
                        if let Some(w) = stdin.as_mut() {
                            if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    RESIZE => {
                        if let (Some(r), Ok(size)) = (&resize, serde_json::from_slice::<Value>(&data)) {
                            let w = size["Width"].as_u64().unwrap_or(80) as u16;
                            let h = size["Height"].as_u64().unwrap_or(24) as u16;
                            r(w, h);
                        }
                    }
                    CLOSE if framing.v5 && data.first() == Some(&STDIN) => {
                        stdin = None;
                    }
                    _ => {}
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_repeated_commands_and_refuse_what_kubernetes_refuses() {
        let o =
            Options::parse("command=sh&command=-c&command=echo+hi&stdout=true&stderr=1&tty=false")
                .unwrap();
        assert_eq!(o.command, vec!["sh", "-c", "echo hi"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert_eq!(Options::parse(&o.query()).unwrap(), o);
        assert_eq!(
            Options::parse("stdout=true").unwrap_err(),
            crate::api::exec::OptionsError::NoCommand
        );
        assert!(Options::parse("command=ls")
            .unwrap_err()
            .to_string()
            .contains("stdin, stdout, stderr"));
        assert_eq!(exit_status(0)["status"], "Success");
        assert_eq!(exit_status(3)["details"]["causes"][0]["message"], "3");
    }
}
