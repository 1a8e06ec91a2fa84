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
    /// legacy order (Namespaces and other cluster-wide kinds first, webhooks last).
    #[arg(long, default_value = "legacy")]
    pub reorder: String,
}

/// kustomize's legacy order: these kinds first, in this order ...
const FIRST: &[&str] = &[
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
/// ... these last, everything else in between.
const LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

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
    if !matches!(a.reorder.as_str(), "legacy" | "none") {
        bail!("--reorder must be legacy or none, not {:?}", a.reorder);
    }
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
    if kustomize::kustomization_in(&tree, &rel).is_none() {
        bail!(
            "unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '{}'",
            dir.display()
        );
    }
    let mut built = kustomize::build(&tree, &rel).map_err(|problems| {
        anyhow!(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    })?;
    if a.reorder == "legacy" {
        let rank = |k: &str| match (
            FIRST.iter().position(|f| *f == k),
            LAST.iter().position(|l| *l == k),
        ) {
            (Some(i), _) => i,
            (None, Some(i)) => FIRST.len() + 1 + i,
            (None, None) => FIRST.len(),
        };
        built.sort_by(|x, y| {
            let key = |r: &kustomize::Res| {
                (
                    rank(r.kind.kind),
                    r.kind.api_version(),
                    r.kind.kind.to_string(),
                    r.object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            };
            key(x).cmp(&key(y))
        });
    }
    // Keys in alphabetical order, as kustomize prints them.
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let docs: Vec<String> = built
        .iter()
        .map(|r| serde_yaml_ng::to_string(&sorted(&r.object)))
        .collect::<Result<_, _>>()?;
    print!("{}", docs.join("---\n"));
    Ok(())
}
