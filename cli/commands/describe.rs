//! `capstan describe`: an object's fields and the Events about it, in the same view as the terminal UI's describe
//! page (`capstan-present`).

use anyhow::{bail, Result};
use capstan::api::registry::{self};
use capstan::client::Client;
use clap::Args;
use serde_json::Value;

use super::*;

#[derive(Args)]
pub struct DescribeArgs {
    /// `kind name` or `kind/name`.
    pub what: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn describe(client: &Client, a: DescribeArgs) -> Result<()> {
    learn_kinds(client, &a.what).await;
    let (kind, name) = match a.what.as_slice() {
        [one] if one.contains('/') => {
            let (k, n) = one.split_once('/').unwrap_or_default();
            (resolve_kind(k)?, n.to_string())
        }
        [k, n] => (resolve_kind(k)?, n.clone()),
        _ => bail!("usage: capstan describe KIND NAME"),
    };
    let ns = a.namespace.unwrap_or_else(|| "default".into());
    let obj = client
        .get(kind, kind.namespaced.then_some(ns.as_str()), &name)
        .await?;
    // Events about the object, oldest first.
    let mut events: Vec<Value> = Vec::new();
    if let Some(ev_kind) = registry::lookup("events") {
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("");
        let q = format!(
            "fieldSelector={}",
            url_encode(&format!(
                "involvedObject.name={name},involvedObject.uid={uid}"
            ))
        );
        if let Ok(list) = client
            .list(ev_kind, kind.namespaced.then_some(ns.as_str()), &q)
            .await
        {
            events = list["items"].as_array().cloned().unwrap_or_default();
        }
    }
    events.sort_by(|a, b| capstan_present::event_time(a).cmp(capstan_present::event_time(b)));
    let refs: Vec<&Value> = events.iter().collect();
    for line in capstan_present::describe(&obj, &refs, false) {
        println!("{line}");
    }
    Ok(())
}
