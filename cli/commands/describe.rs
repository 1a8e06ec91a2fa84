//! `capstan describe`: an object's fields and the Events about it.

use anyhow::{bail, Result};
use capstan::api::registry::{self};
use capstan::client::Client;
use clap::Args;
use serde_json::Value;

use crate::output;

use super::*;

#[derive(Args)]
pub struct DescribeArgs {
    /// `kind name` or `kind/name`.
    pub what: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn describe(client: &Client, a: DescribeArgs) -> Result<()> {
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
    print!("{}", output::describe(&obj));
    // Events about the object.
    if let Some(ev_kind) = registry::lookup("events") {
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
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
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("Events:  <none>");
            } else {
                println!("Events:");
                for e in items {
                    println!(
                        "  {}\t{}\t{}",
                        e["type"].as_str().unwrap_or(""),
                        e["reason"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}
