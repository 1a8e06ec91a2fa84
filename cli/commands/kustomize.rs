//! `capstan kustomize DIR`: what a kustomization directory builds to, printed as YAML documents - what GitOps would
//! apply from it, so a team can look at an overlay's output before committing it (as `kubectl kustomize` shows it).
//! Runs locally; needs no cluster.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use capstan::gitops::kustomize;
use clap::Args;

#[derive(Args)]
pub struct KustomizeArgs {
    /// The directory holding a kustomization.yaml.
    pub dir: PathBuf,
    /// `none`: print resources in the order the kustomization accumulates them; `legacy` (default): kustomize's
    /// legacy order (Namespaces and other cluster-wide kinds first, webhooks last). A kustomization's `sortOptions`
    /// wins over this flag, as in kubectl.
    #[arg(long, default_value = "legacy")]
    pub reorder: String,
    /// `LoadRestrictionsRootOnly` (default): files a kustomization reads must be in or below its directory;
    /// `LoadRestrictionsNone`: anywhere in the tree being built.
    #[arg(long, default_value = "LoadRestrictionsRootOnly")]
    pub load_restrictor: String,
}

/// The directory the build reads from: the closest common ancestor of `dir` and everything its kustomizations
/// refer to (followed through the kustomizations of the directories they name), so only what the build can reach is
/// read - not a whole repository with its build outputs.
fn root_of(dir: &Path) -> PathBuf {
    let mut root = dir.to_path_buf();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if seen.contains(&d) || seen.len() > 10_000 {
            continue;
        }
        seen.push(d.clone());
        let Some(text) = kustomize::FILE_NAMES
            .iter()
            .find_map(|n| std::fs::read_to_string(d.join(n)).ok())
        else {
            continue;
        };
        let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mut refs = Vec::new();
        strings_in(&v, &mut refs);
        for r in refs {
            if r.starts_with('/') || r.contains('\n') || r.contains("://") || r.len() > 4096 {
                continue;
            }
            let Ok(p) = d.join(&r).canonicalize() else {
                continue;
            };
            while !p.starts_with(&root) {
                match root.parent() {
                    Some(up) => root = up.to_path_buf(),
                    None => break,
                }
            }
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    root
}

/// Every string in a value (the paths a kustomization may name are among them).
fn strings_in(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings_in(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| strings_in(x, out)),
        _ => {}
    }
}

fn load(root: &Path, at: &Path, tree: &mut kustomize::Tree) -> Result<()> {
    for entry in std::fs::read_dir(at).with_context(|| format!("reading {}", at.display()))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        if path.is_dir() && !path.is_symlink() {
            load(root, &path, tree)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            if let Ok(content) = std::fs::read(&path) {
                tree.insert(rel.to_string_lossy().into_owned(), content);
            }
        }
    }
    Ok(())
}

pub fn kustomize(a: KustomizeArgs) -> Result<()> {
    let reorder = match a.reorder.as_str() {
        "legacy" => kustomize::Reorder::Legacy,
        "none" => kustomize::Reorder::None,
        other => bail!("--reorder must be legacy or none, not {other:?}"),
    };
    let load_anywhere = match a.load_restrictor.as_str() {
        "LoadRestrictionsRootOnly" | "rootOnly" => false,
        "LoadRestrictionsNone" | "none" => true,
        other => bail!(
            "--load-restrictor must be LoadRestrictionsRootOnly or LoadRestrictionsNone, not {other:?}"
        ),
    };
    let dir = a
        .dir
        .canonicalize()
        .with_context(|| format!("{}", a.dir.display()))?;
    if !kustomize::FILE_NAMES.iter().any(|n| dir.join(n).is_file()) {
        bail!(
            "unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '{}'",
            dir.display()
        );
    }
    let root = root_of(&dir);
    let mut tree = kustomize::Tree::new();
    load(&root, &root, &mut tree)?;
    let rel = dir
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let opts = kustomize::Options {
        reorder,
        load_anywhere,
    };
    let built = kustomize::build_with(&tree, &rel, &opts).map_err(|problems| {
        anyhow!(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    })?;
    print!("{}", kustomize::to_yaml(&built));
    Ok(())
}
