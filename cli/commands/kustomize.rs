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

/// The directory the build may read from: the git repository `dir` is in (bases elsewhere in it are allowed, as in
/// GitOps), else `dir`'s parent.
fn root_of(dir: &Path) -> PathBuf {
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.join(".git").exists() {
            return d.to_path_buf();
        }
        at = d.parent();
    }
    dir.parent().unwrap_or(dir).to_path_buf()
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
