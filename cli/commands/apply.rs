//! `capstan apply` (client-side and server-side): manifests from files, directories or stdin, each document applied with its file and position named on error.

use std::path::PathBuf;

use anyhow::{bail, Result};
use capstan::api::manifest;
use capstan::client::Client;
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct ApplyArgs {
    /// Files or directories of manifests.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Take ownership of conflicting fields.
    #[arg(long)]
    pub force_conflicts: bool,
}

/// Dry-runs every document, then applies them all: a bad document leaves nothing half-applied.
async fn apply_docs(
    client: &Client,
    docs: Vec<manifest::Document>,
    ns: Option<&str>,
    apply: bool,
    manager: &str,
    force: bool,
) -> Result<usize> {
    // Namespaces first, so objects in them can be checked.
    let mut docs = docs;
    docs.sort_by_key(|d| if d.kind.kind == "Namespace" { 0 } else { 1 });
    for d in &docs {
        if d.name().is_empty() {
            bail!(
                "{}: document {}: metadata.name is required",
                d.file,
                d.index
            );
        }
    }
    for phase in ["dry-run", "apply"] {
        for d in &docs {
            if phase == "dry-run"
                && d.kind.kind != "Namespace"
                && docs.iter().any(|x| x.kind.kind == "Namespace")
            {
                // Objects in namespaces this same set creates cannot be dry-run before those exist.
                let target_ns = d.namespace().or(ns).unwrap_or("default");
                if docs
                    .iter()
                    .any(|x| x.kind.kind == "Namespace" && x.name() == target_ns)
                {
                    continue;
                }
            }
            let target_ns = if d.kind.namespaced {
                Some(d.namespace().or(ns).unwrap_or("default"))
            } else {
                None
            };
            let mut obj = d.object.clone();
            if let (Some(n), true) = (target_ns, d.kind.namespaced) {
                obj["metadata"]["namespace"] = Value::String(n.to_string());
            }
            let dry = phase == "dry-run";
            let res = if apply {
                let mut path = format!(
                    "{}?fieldManager={manager}&fieldValidation=Strict{}",
                    capstan::client::resource_path(d.kind, target_ns, Some(d.name())),
                    if force { "&force=true" } else { "" }
                );
                if dry {
                    path.push_str("&dryRun=All");
                }
                client
                    .request(
                        reqwest::Method::PATCH,
                        &path,
                        Some(("application/apply-patch+yaml", obj.to_string().into_bytes())),
                        None,
                    )
                    .await
            } else {
                let mut path = format!(
                    "{}?fieldManager={manager}&fieldValidation=Strict",
                    capstan::client::resource_path(d.kind, target_ns, None)
                );
                if dry {
                    path.push_str("&dryRun=All");
                }
                client
                    .request(
                        reqwest::Method::POST,
                        &path,
                        Some(("application/json", obj.to_string().into_bytes())),
                        None,
                    )
                    .await
            };
            match res {
                Ok(_) if dry => {}
                Ok(_) => {
                    let what = if d.kind.group.is_empty() {
                        d.kind.singular.to_string()
                    } else {
                        format!("{}.{}", d.kind.singular, d.kind.group)
                    };
                    println!(
                        "{what}/{} {}",
                        d.name(),
                        if apply {
                            "serverside-applied"
                        } else {
                            "created"
                        }
                    );
                }
                Err(e) => bail!(
                    "{}: document {} ({} {}): {e}",
                    d.file,
                    d.index,
                    d.kind.kind,
                    d.name()
                ),
            }
        }
    }
    Ok(docs.len())
}

pub async fn apply(client: &Client, a: ApplyArgs, server_side: bool) -> Result<()> {
    let mut docs = Vec::new();
    for f in &a.files {
        docs.extend(crate::manifests::read(f)?);
    }
    let manager = if server_side {
        "capstan"
    } else {
        "capstan-create"
    };
    apply_docs(
        client,
        docs,
        a.namespace.as_deref(),
        server_side,
        manager,
        a.force_conflicts,
    )
    .await?;
    Ok(())
}
