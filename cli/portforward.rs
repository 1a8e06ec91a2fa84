//! `capstan port-forward POD [LOCAL:]REMOTE...`: listens on this machine and carries each connection to the pod's
//! port over the API server's `pods/portforward` WebSocket (`v4.channel.k8s.io`: channel 0 data, 1 errors, each
//! opened by the port number), one WebSocket per connection.

use anyhow::{anyhow, Context, Result};
use capstan::client::Client;
use clap::Args;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Args)]
pub struct PortForwardArgs {
    /// The pod (`NAME` or `pod/NAME`).
    pub pod: String,
    /// `[LOCAL:]REMOTE` port pairs (LOCAL 0 or left out of `:REMOTE`: any free port).
    #[arg(required = true)]
    pub ports: Vec<String>,
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
}

fn parse_pair(p: &str) -> Result<(u16, u16)> {
    let bad = || anyhow!("{p:?}: expected [LOCAL:]REMOTE, ports 1-65535 (LOCAL may be 0 or empty)");
    let (local, remote) = match p.split_once(':') {
        Some((l, r)) => (
            if l.is_empty() {
                0
            } else {
                l.parse().map_err(|_| bad())?
            },
            r,
        ),
        None => (p.parse().map_err(|_| bad())?, p),
    };
    let remote: u16 = remote.parse().map_err(|_| bad())?;
    if remote == 0 {
        return Err(bad());
    }
    Ok((local, remote))
}

pub async fn run(client: &Client, a: PortForwardArgs) -> Result<()> {
    let pod = a.pod.strip_prefix("pod/").unwrap_or(&a.pod).to_string();
    let pairs = a
        .ports
        .iter()
        .map(|p| parse_pair(p))
        .collect::<Result<Vec<_>>>()?;
    let mut tasks = Vec::new();
    for (local, remote) in pairs {
        let listener = tokio::net::TcpListener::bind((a.address, local))
            .await
            .with_context(|| format!("listening on {}:{local}", a.address))?;
        let addr = listener.local_addr()?;
        println!("Forwarding from {addr} -> {remote}");
        let path = format!(
            "{}{}/pods/{pod}/portforward?ports={remote}",
            concat!("/", "api/v1/namespaces/"),
            a.namespace
        );
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (client, path) = (client.clone(), path.clone());
                tokio::spawn(async move {
                    if let Err(e) = carry(&client, &path, conn).await {
                        eprintln!("capstan: port-forward to port {remote}: {e:#}");
                    }
                });
            }
        }));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = futures::future::join_all(tasks) => {}
    }
    Ok(())
}

/// One local connection to the pod's port, until either side closes.
async fn carry(client: &Client, path: &str, conn: tokio::net::TcpStream) -> Result<()> {
    let (ws, _) = client.websocket(path, &["v4.channel.k8s.io"]).await?;
    let (mut tx, mut rx) = ws.split();
    let (mut r, mut w) = conn.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buf[..n]);
            if tx.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    };
    let down = async {
        // The first message on each channel is the port number.
        let mut opened = [false, false];
        while let Some(Ok(m)) = rx.next().await {
            let data = match m {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, rest)) = data.split_first() else {
                continue;
            };
            let ch = channel as usize;
            if ch > 1 {
                continue;
            }
            if !opened[ch] {
                opened[ch] = true;
                continue;
            }
            if ch == 0 {
                if w.write_all(rest).await.is_err() {
                    break;
                }
            } else if !rest.is_empty() {
                return Err(anyhow!("{}", String::from_utf8_lossy(rest)));
            }
        }
        let _ = w.shutdown().await;
        Ok(())
    };
    tokio::select! {
        r = down => r,
        _ = up => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pairs_parse_like_kubectls() {
        assert_eq!(parse_pair("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_pair("9000:80").unwrap(), (9000, 80));
        assert_eq!(parse_pair(":80").unwrap(), (0, 80));
        assert!(parse_pair("80:0").is_err());
        assert!(parse_pair("x").is_err());
    }
}
