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

/// What `get` was asked for: kinds (`deploy,svc`) with optional names, or `kind/name`.
type Targets = Vec<(&'static KindInfo, Option<String>)>;

fn targets(what: &[String]) -> Result<Targets> {
    let mut targets = Vec::new();
    let mut i = 0;
    while i < what.len() {
        let w = &what[i];
        if let Some((k, n)) = w.split_once('/') {
            targets.push((resolve_kind(k)?, Some(n.to_string())));
            i += 1;
            continue;
        }
        let kinds = expand(w)?;
        let names: Vec<String> = what[i + 1..]
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
    Ok(targets)
}

/// Prints one kind as the server's Table (kubectl's columns); returns whether it printed anything.
async fn print_table(
    client: &Client,
    a: &GetArgs,
    kind: &'static KindInfo,
    name: Option<&str>,
    ns: Option<&str>,
    query: &str,
    (multi, first): (bool, bool),
) -> Result<bool> {
    let base = capstan::client::resource_path(kind, ns, name);
    let path = if name.is_none() && !query.is_empty() {
        format!("{base}?{query}")
    } else {
        base
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
        return Ok(false);
    }
    if !first {
        println!();
    }
    let wide = a.output.as_deref() == Some("wide");
    print!(
        "{}",
        output::render_table(
            &table,
            kind,
            wide,
            a.all_namespaces && kind.namespaced,
            multi
        )
    );
    if rows == 0 {
        let where_ = ns.map(|n| format!(" in {n} namespace")).unwrap_or_default();
        eprintln!("No resources found{where_}.");
    }
    Ok(true)
}

/// Prints objects as YAML, JSON or `kind/name` lines.
fn print_objects(format: &str, mut items: Vec<Value>, single: bool) -> Result<()> {
    match format {
        "yaml" | "json" => {
            let out = if items.len() == 1 && single {
                items.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
            };
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", serde_yaml_ng::to_string(&out)?);
            }
        }
        _ => {
            for item in &items {
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
                println!("{res}/{}", item["metadata"]["name"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(())
}

/// `--watch`: prints each change of the first target as a row of kubectl's cells.
async fn watch(
    client: &Client,
    kind: &'static KindInfo,
    name: Option<&str>,
    ns: Option<&str>,
) -> Result<()> {
    let list = client.list(kind, ns, "limit=1").await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let q = name
        .map(|n| format!("fieldSelector=metadata.name%3D{n}"))
        .unwrap_or_default();
    let mut stream = client.watch_once(kind, ns, &q, &rv).await?;
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
    Ok(())
}

pub async fn get(client: &Client, a: GetArgs) -> Result<()> {
    learn_kinds(client, &a.what).await;
    let ns = if a.all_namespaces {
        None
    } else {
        Some(a.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let targets = targets(&a.what)?;
    let format = a.output.as_deref().unwrap_or("");
    let multi = targets.len() > 1;
    let mut first = true;
    let mut all_items = Vec::new();
    let query = a
        .selector
        .as_ref()
        .map(|l| format!("labelSelector={}", url_encode(l)))
        .unwrap_or_default();
    for (kind, name) in &targets {
        let ns_for = if kind.namespaced { ns.as_deref() } else { None };
        match (format, name) {
            ("yaml" | "json" | "name", Some(n)) => {
                all_items.push(client.get(kind, ns_for, n).await?)
            }
            ("yaml" | "json" | "name", None) => {
                let list = client.list(kind, ns_for, &query).await?;
                for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                    item["apiVersion"] = Value::String(kind.api_version());
                    item["kind"] = Value::String(kind.kind.to_string());
                    all_items.push(item);
                }
            }
            _ => {
                let printed = print_table(
                    client,
                    &a,
                    kind,
                    name.as_deref(),
                    ns_for,
                    &query,
                    (multi, first),
                )
                .await?;
                first &= !printed;
            }
        }
    }
    if matches!(format, "yaml" | "json" | "name") {
        print_objects(format, all_items, targets.iter().all(|(_, n)| n.is_some()))?;
    }
    if a.watch {
        let (kind, name) = targets.first().ok_or_else(|| anyhow!("nothing to watch"))?;
        let ns_for = if kind.namespaced { ns.as_deref() } else { None };
        watch(client, kind, name.as_deref(), ns_for).await?;
    }
    Ok(())
}
