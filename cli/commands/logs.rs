//! `capstan logs`: a container's log with kubectl's options (tail, since, previous, follow).

use anyhow::{anyhow, bail, Result};
use capstan::client::Client;
use clap::Args;
use futures::StreamExt;

use super::*;

#[derive(Args)]
pub struct LogsArgs {
    /// The pod (`NAME` or `pod/NAME`).
    pub pod: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long)]
    pub container: Option<String>,
    #[arg(short, long)]
    pub follow: bool,
    /// The previous instance of the container.
    #[arg(short, long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<i64>,
    #[arg(long)]
    pub timestamps: bool,
    /// Only lines newer than this (e.g. 30s, 5m, 1h).
    #[arg(long)]
    pub since: Option<String>,
}

fn parse_since(s: &str) -> Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--since {s:?}: expected e.g. 30s, 5m or 1h"))?;
    Ok(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("--since {s:?}: expected e.g. 30s, 5m or 1h"),
    })
}

pub async fn logs(client: &Client, a: LogsArgs) -> Result<()> {
    let name = a
        .pod
        .strip_prefix("pod/")
        .or(a.pod.strip_prefix("pods/"))
        .unwrap_or(&a.pod);
    let ns = a.namespace.as_deref().unwrap_or("default");
    let pods = resolve_kind("pods")?;
    let mut path = format!(
        "{}/log?",
        capstan::client::resource_path(pods, Some(ns), Some(name))
    );
    if let Some(c) = &a.container {
        path.push_str(&format!("container={}&", url_encode(c)));
    }
    if a.follow {
        path.push_str("follow=true&");
    }
    if a.previous {
        path.push_str("previous=true&");
    }
    if a.timestamps {
        path.push_str("timestamps=true&");
    }
    if let Some(t) = a.tail.filter(|t| *t >= 0) {
        path.push_str(&format!("tailLines={t}&"));
    }
    if let Some(s) = &a.since {
        path.push_str(&format!("sinceSeconds={}&", parse_since(s)?));
    }
    let resp = client.open(path.trim_end_matches(['&', '?'])).await?;
    let mut body = resp.bytes_stream();
    use std::io::Write;
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}
