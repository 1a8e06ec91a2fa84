//! `capstan exec POD -- COMMAND...`: runs a command in a container over the API server's `pods/exec` WebSocket,
//! speaking the same remote-command channel protocol as kubectl (stdin 0, stdout 1, stderr 2, status 3, resize 4,
//! close 255). With `-t` the local terminal goes raw and its size follows the window. Exits with the command's code.

use anyhow::{anyhow, Result};
use capstan::api::exec::{Options, CLOSE, ERROR, PROTOCOLS, RESIZE, STDERR, STDIN, STDOUT};
use capstan::client::Client;
use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The container (default: the pod's only, or first, container).
    #[arg(long, short = 'c')]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// Run the command on a terminal (with -i: an interactive shell).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

fn size_frame() -> Option<Message> {
    let (w, h) = crossterm::terminal::size().ok()?;
    Some(frame(
        RESIZE,
        json!({"Width": w, "Height": h}).to_string().as_bytes(),
    ))
}

/// Restores the terminal when dropped.
struct Raw(bool);

impl Drop for Raw {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// The container kubectl picks when none is named: the `kubectl.kubernetes.io/default-container` annotation, else
/// the first (saying so when there are several).
async fn default_container(client: &Client, ns: &str, pod: &str) -> Result<Option<String>> {
    let kind = capstan::api::registry::lookup("pods").expect("pods");
    let p = client.get(kind, Some(ns), pod).await?;
    let names: Vec<String> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let annotated = p
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str)
        .map(String::from);
    let chosen = annotated.or_else(|| names.first().cloned());
    if names.len() > 1 {
        if let Some(c) = &chosen {
            eprintln!("Defaulted container \"{c}\" out of: {}", names.join(", "));
        }
    }
    Ok(chosen)
}

/// Runs the exec; returns the command's exit code.
pub async fn run(client: &Client, a: ExecArgs) -> Result<i32> {
    let tty = a.tty && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if a.tty && !tty {
        eprintln!("Unable to use a TTY - input is not a terminal");
    }
    let opts = Options {
        command: a.command.clone(),
        container: a.container.clone(),
        stdin: a.stdin,
        stdout: true,
        stderr: !tty,
        tty,
    };
    let mut query = opts.query();
    let container = match &a.container {
        Some(c) => Some(c.clone()),
        None => default_container(client, &a.namespace, &a.pod).await?,
    };
    if let Some(c) = &container {
        query.push_str(&format!(
            "&container={}",
            url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
        ));
    }
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/exec?{query}",
        a.namespace, a.pod
    );
    let (ws, protocol) = client.websocket(&path, &PROTOCOLS[..2]).await?;
    let v5 = protocol == PROTOCOLS[0];
    let (mut tx, mut rx) = ws.split();
    let _raw = Raw(tty && a.stdin && crossterm::terminal::enable_raw_mode().is_ok());
    if tty {
        if let Some(f) = size_frame() {
            tx.send(f).await?;
        }
    }
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(16);
    if a.stdin {
        let out = out_tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.send(frame(STDIN, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if v5 {
                let _ = out.send(frame(CLOSE, &[STDIN])).await;
            }
        });
    }
    if tty {
        let out = out_tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(f) = size_frame() {
                    if out.send(f).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(out_tx);
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status: Option<Value> = None;
    loop {
        tokio::select! {
            m = out_rx.recv() => {
                if let Some(m) = m {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    STDOUT => {
                        stdout.write_all(&b[1..]).await?;
                        stdout.flush().await?;
                    }
                    STDERR => {
                        stderr.write_all(&b[1..]).await?;
                        stderr.flush().await?;
                    }
                    ERROR => status = serde_json::from_slice(&b[1..]).ok(),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => return Err(anyhow!("the exec stream broke: {e}")),
                Some(Ok(_)) => {}
            },
        }
    }
    drop(_raw);
    let Some(st) = status else {
        return Err(anyhow!("the exec ended without a status"));
    };
    if st["status"] == "Success" {
        return Ok(0);
    }
    if st["reason"] == "NonZeroExitCode" {
        let code = st
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse().ok())
            .unwrap_or(1);
        return Ok(code);
    }
    Err(anyhow!(
        "{}",
        st["message"].as_str().unwrap_or("the command failed")
    ))
}
