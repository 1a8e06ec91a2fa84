//! `capstan get`: lists and single objects in kubectl's columns (or YAML/JSON/names), optionally watching.

use anyhow::{anyhow, Result};
use capstan::api::registry::{self, KindInfo};
use capstan::client::Client;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use crate::output;

use super::*;

#[derive(Args)]
pub struct GetArgs {
    /// Kinds (comma-separated: `deploy,svc`) optionally followed by a name, or `kind/name`.
    #[arg(required = true)]
    pub what: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output: wide, yaml, json, name.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Watch for changes after listing.
    #[arg(short, long)]
    pub watch: bool,
}

pub async fn get(client: &Client, a: GetArgs) -> Result<()> {
    let ns = if a.all_namespaces {
        None
    } else {
        Some(a.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let mut targets: Vec<(&'static KindInfo, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < a.what.len() {
        let w = &a.what[i];
        if let Some((k, n)) = w.split_once('/') {
            targets.push((resolve_kind(k)?, Some(n.to_string())));
            i += 1;
        } else {
            let kinds = expand(w)?;
            let names: Vec<String> = a.what[i + 1..]
                .iter()
                .take_while(|x| !x.contains('/'))
                .cloned()
                .collect();
            i += 1 + names.len();
            if names.is_empty() {
                targets.extend(kinds.into_iter().map(|k| (k, None)));
            } else {
                for k in kinds {
                    targets.extend(names.iter().map(|n| (k, Some(n.clone()))));
                }
            }
        }
    }
    let format = a.output.as_deref().unwrap_or("");
    let multi = targets.len() > 1;
    let mut first = true;
    let mut all_items = Vec::new();
    for (kind, name) in &targets {
        let ns_for = if kind.namespaced { ns.as_deref() } else { None };
        let mut query = String::new();
        if let Some(l) = &a.selector {
            query = format!("labelSelector={}", url_encode(l));
        }
        match format {
            "yaml" | "json" | "name" => match name {
                Some(n) => all_items.push(client.get(kind, ns_for, n).await?),
                None => {
                    let list = client.list(kind, ns_for, &query).await?;
                    for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                        item["apiVersion"] = Value::String(kind.api_version());
                        item["kind"] = Value::String(kind.kind.to_string());
                        all_items.push(item);
                    }
                }
            },
            _ => {
                let path = match name {
                    Some(n) => capstan::client::resource_path(kind, ns_for, Some(n)),
                    None if query.is_empty() => capstan::client::resource_path(kind, ns_for, None),
                    None => format!(
                        "{}?{query}",
                        capstan::client::resource_path(kind, ns_for, None)
                    ),
                };
                let table = client
                    .request(
                        reqwest::Method::GET,
                        &path,
                        None,
                        Some(output::TABLE_ACCEPT),
                    )
                    .await?;
                let rows = table["rows"].as_array().map_or(0, Vec::len);
                if rows == 0 && multi {
                    continue;
                }
                if !first {
                    println!();
                }
                first = false;
                print!(
                    "{}",
                    output::render_table(
                        &table,
                        kind,
                        format == "wide",
                        a.all_namespaces && kind.namespaced,
                        multi
                    )
                );
                if rows == 0 {
                    eprintln!(
                        "No resources found{}.",
                        ns_for
                            .map(|n| format!(" in {n} namespace"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    match format {
        "yaml" | "json" => {
            let out = if all_items.len() == 1 && targets.iter().all(|(_, n)| n.is_some()) {
                all_items.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": all_items})
            };
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", serde_yaml_ng::to_string(&out)?);
            }
        }
        "name" => {
            for item in &all_items {
                let kind = registry::by_kind(
                    item["apiVersion"].as_str().unwrap_or(""),
                    item["kind"].as_str().unwrap_or(""),
                );
                let res = kind
                    .map(|k| {
                        if k.group.is_empty() {
                            k.singular.to_string()
                        } else {
                            format!("{}.{}", k.singular, k.group)
                        }
                    })
                    .unwrap_or_default();
                println!(
                    "{res}/{}",
                    item.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                );
            }
        }
        _ => {}
    }
    if a.watch {
        let (kind, name) = targets.first().ok_or_else(|| anyhow!("nothing to watch"))?;
        let ns_for = if kind.namespaced { ns.as_deref() } else { None };
        let list = client.list(kind, ns_for, "limit=1").await?;
        let rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let q = name
            .as_ref()
            .map(|n| format!("fieldSelector=metadata.name%3D{n}"))
            .unwrap_or_default();
        let mut stream = client.watch_once(kind, ns_for, &q, &rv).await?;
        while let Some(ev) = stream.next().await {
            let (ty, obj) = ev?;
            if ty == "BOOKMARK" {
                continue;
            }
            let cells = (kind.columns.cells)(&obj);
            let text: Vec<String> = cells
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| c.to_string())
                })
                .collect();
            println!("{ty}\t{}", text.join("\t"));
        }
    }
    Ok(())
}
