//! The commands behind the CLI, one file per verb; what several verbs share (kind names, signals) is here.

use anyhow::{anyhow, bail, Result};
use capstan::api::registry::{self, KindInfo};

mod agent;
mod apply;
mod delete;
mod describe;
mod get;
mod kubeconfig;
mod kustomize;
mod logs;
mod secrets;
mod server;
mod shim;
mod store;
mod token;

pub use agent::*;
pub use apply::*;
pub use delete::*;
pub use describe::*;
pub use get::*;
pub use kubeconfig::*;
pub use kustomize::*;
pub use logs::*;
pub use secrets::*;
pub use server::*;
pub use shim::*;
pub use store::*;
pub use token::*;

fn resolve_kind(name: &str) -> Result<&'static KindInfo> {
    if name == "all" {
        bail!("internal: 'all' is expanded by the caller");
    }
    registry::lookup(name)
        .ok_or_else(|| anyhow!("the server doesn't have a resource type \"{name}\""))
}

/// Learns the cluster's custom kinds (from discovery) when a kind named in `what` (`ct`, `crontabs/x`, `all`) is not
/// a built-in one.
async fn learn_kinds(client: &capstan::client::Client, what: &[String]) {
    let unknown = what.iter().any(|w| {
        let kinds = w.split_once('/').map_or(w.as_str(), |(k, _)| k);
        kinds
            .split(',')
            .any(|k| k == "all" || registry::lookup(k).is_none())
    });
    if unknown {
        if let Err(e) = capstan::client::discovery::learn(client).await {
            tracing::debug!("discovery: {e}");
        }
    }
}

fn expand(kinds: &str) -> Result<Vec<&'static KindInfo>> {
    let mut out = Vec::new();
    for k in kinds.split(',').filter(|k| !k.is_empty()) {
        if k == "all" {
            let mut seen = std::collections::HashSet::new();
            out.extend(
                registry::all()
                    .into_iter()
                    .filter(|k| k.categories.contains(&"all"))
                    .filter(|k| seen.insert((k.group, k.plural))),
            );
        } else {
            out.push(resolve_kind(k)?);
        }
    }
    Ok(out)
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// A flag's seconds as a Duration (a clear error for negative or absurd values).
/// A Kubernetes-style duration flag value: `40s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub(crate) fn duration(text: &str, flag: &str) -> Result<std::time::Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| anyhow!("{flag}: {text:?} is not a duration (like 40s, 500ms or 2m)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(anyhow!(
                "{flag}: {text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    secs(seconds, flag)
}

pub(crate) fn secs(s: f64, flag: &str) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow!("{flag}: {s} is not a duration in seconds"))
}
