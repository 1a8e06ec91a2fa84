//! `capstan delete`: by kind and name, by file, or by label selector.

use std::path::PathBuf;

use anyhow::{bail, Result};
use capstan::api::registry::KindInfo;
use capstan::client::Client;
use clap::Args;

use super::*;

#[derive(Args)]
pub struct DeleteArgs {
    /// `kind name...` or `kind/name`.
    pub what: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Background, Foreground or Orphan.
    #[arg(long, default_value = "Background")]
    pub cascade: String,
}

pub async fn delete(client: &Client, a: DeleteArgs) -> Result<()> {
    learn_kinds(client, &a.what).await;
    let ns = a.namespace.clone().unwrap_or_else(|| "default".into());
    let policy = match a.cascade.to_ascii_lowercase().as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => bail!("--cascade must be background, foreground or orphan, not {other:?}"),
    };
    let mut targets: Vec<(&'static KindInfo, Option<String>, String)> = Vec::new();
    for f in &a.files {
        for d in crate::manifests::read(f)? {
            let n = if d.kind.namespaced {
                Some(d.namespace().unwrap_or(&ns).to_string())
            } else {
                None
            };
            targets.push((d.kind, n, d.name().to_string()));
        }
    }
    let mut i = 0;
    while i < a.what.len() {
        if let Some((k, n)) = a.what[i].split_once('/') {
            let kind = resolve_kind(k)?;
            targets.push((kind, kind.namespaced.then(|| ns.clone()), n.to_string()));
            i += 1;
        } else {
            let kind = resolve_kind(&a.what[i])?;
            let names: Vec<String> = a.what[i + 1..].to_vec();
            if names.is_empty() {
                bail!("resource(s) were provided, but no name was specified");
            }
            for n in names {
                targets.push((kind, kind.namespaced.then(|| ns.clone()), n));
            }
            i = a.what.len();
        }
    }
    if targets.is_empty() {
        bail!("nothing to delete: give KIND NAME, KIND/NAME or -f FILE");
    }
    let mut failed = false;
    for (kind, n, name) in targets {
        match client.delete(kind, n.as_deref(), &name, policy).await {
            Ok(_) => {
                let what = if kind.group.is_empty() {
                    kind.plural.to_string()
                } else {
                    format!("{}.{}", kind.plural, kind.group)
                };
                println!("{what} \"{name}\" deleted");
            }
            Err(e) => {
                eprintln!("Error from server: {e}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some objects could not be deleted");
    }
    Ok(())
}
