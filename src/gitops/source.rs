//! Git sources (libgit2 through the `git2` crate): open a repository from a local path (a directory inside a
//! repository works) or a `file://` URL, resolve a target revision to a commit, read the manifests under a path at a
//! commit, and write revert commits for rollbacks. Nothing here talks to the cluster.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Signature, TreeWalkMode, TreeWalkResult};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("repository {0}: {1}")]
    Open(String, git2::Error),
    #[error("{repo}: revision {rev:?}: {source}")]
    Revision {
        repo: String,
        rev: String,
        source: git2::Error,
    },
    #[error("{0}: {1}")]
    Git(String, git2::Error),
    #[error("{0}")]
    Refused(String),
    #[error("repository URL {0:?}: only local paths and file:// URLs are supported so far (https and ssh come with remote sources)")]
    Unsupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An opened source: the repository and the path of the app inside it.
pub struct Source {
    pub repo: Repository,
    /// The app's directory relative to the repository root ("" for the root).
    pub path: String,
    /// Where to watch for changes (the repository's git directory).
    pub git_dir: PathBuf,
}

/// A file of the app at one commit.
#[derive(Debug, Clone)]
pub struct File {
    /// Path relative to the repository root.
    pub path: String,
    pub content: Vec<u8>,
}

/// One commit's view of the app.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub commit: String,
    pub author: String,
    pub message: String,
    pub files: Vec<File>,
}

/// Opens `repo_url` (a path or `file://` URL); `path` (from the Application) is joined to whatever directory inside
/// the repository the URL names.
pub fn open(repo_url: &str, path: Option<&str>) -> Result<Source> {
    let local = if let Some(p) = repo_url.strip_prefix("file://") {
        PathBuf::from(p)
    } else if repo_url.contains("://") || repo_url.starts_with("git@") {
        return Err(Error::Unsupported(repo_url.into()));
    } else {
        PathBuf::from(repo_url)
    };
    let repo = Repository::discover(&local).map_err(|e| Error::Open(repo_url.into(), e))?;
    let root = repo
        .workdir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo.path().to_path_buf());
    let canonical = local.canonicalize().unwrap_or(local.clone());
    let root_c = root.canonicalize().unwrap_or(root.clone());
    let inner = canonical
        .strip_prefix(&root_c)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut full = PathBuf::from(inner);
    if let Some(p) = path.filter(|p| !p.is_empty() && *p != ".") {
        full = full.join(p);
    }
    let git_dir = repo.path().to_path_buf();
    Ok(Source {
        repo,
        path: full.to_string_lossy().trim_matches('/').to_string(),
        git_dir,
    })
}

impl Source {
    /// The commit `rev` names (branch, tag or commit); the current HEAD when none is given.
    pub fn resolve(&self, rev: Option<&str>) -> Result<Oid> {
        let spec = rev.filter(|r| !r.is_empty()).unwrap_or("HEAD");
        let obj = self
            .repo
            .revparse_single(spec)
            .map_err(|source| Error::Revision {
                repo: self.git_dir.display().to_string(),
                rev: spec.into(),
                source,
            })?;
        let commit = obj.peel_to_commit().map_err(|source| Error::Revision {
            repo: self.git_dir.display().to_string(),
            rev: spec.into(),
            source,
        })?;
        Ok(commit.id())
    }

    fn git<T>(&self, r: std::result::Result<T, git2::Error>) -> Result<T> {
        r.map_err(|e| Error::Git(self.git_dir.display().to_string(), e))
    }

    /// The manifests (`*.yaml`, `*.yml`, `*.json`, and `kustomization.yaml` so it can be reported) under the app's
    /// path at `commit`, sorted by path.
    pub fn snapshot(&self, commit: Oid) -> Result<Snapshot> {
        let c = self.git(self.repo.find_commit(commit))?;
        let tree = self.git(c.tree())?;
        let sub = if self.path.is_empty() {
            tree
        } else {
            let entry = self.git(tree.get_path(Path::new(&self.path)))?;
            self.git(self.git(entry.to_object(&self.repo))?.peel_to_tree())?
        };
        let mut files = Vec::new();
        let mut failure = None;
        self.git(sub.walk(TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(ObjectType::Blob) {
                return TreeWalkResult::Ok;
            }
            let name = entry.name().unwrap_or("");
            if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
                return TreeWalkResult::Ok;
            }
            let rel = if self.path.is_empty() {
                format!("{dir}{name}")
            } else {
                format!("{}/{dir}{name}", self.path)
            };
            match entry.to_object(&self.repo).and_then(|o| o.peel_to_blob()) {
                Ok(b) => files.push(File {
                    path: rel,
                    content: b.content().to_vec(),
                }),
                Err(e) => {
                    failure = Some(e);
                    return TreeWalkResult::Abort;
                }
            }
            TreeWalkResult::Ok
        }))?;
        if let Some(e) = failure {
            return Err(Error::Git(self.git_dir.display().to_string(), e));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let author = c.author();
        Ok(Snapshot {
            commit: commit.to_string(),
            author: format!(
                "{} <{}>",
                author.name().unwrap_or(""),
                author.email().unwrap_or("")
            ),
            message: c.summary().unwrap_or("").to_string(),
            files,
        })
    }

    /// Commits reachable from `head`, newest first (at most `limit`).
    pub fn log(&self, head: Oid, limit: usize) -> Result<Vec<Oid>> {
        let mut walk = self.git(self.repo.revwalk())?;
        self.git(walk.push(head))?;
        Ok(walk.filter_map(|o| o.ok()).take(limit).collect())
    }

    /// Writes a commit on the branch HEAD points to whose content under the app's path equals that of `target`
    /// (everything else as at HEAD), updates the work tree if there is one, and returns the new commit. Refuses -
    /// changing nothing - when the work tree has uncommitted changes or HEAD is not a branch.
    pub fn revert_to(&self, target: Oid, message: &str) -> Result<Oid> {
        let head_ref = self.git(self.repo.head())?;
        if !head_ref.is_branch() {
            return Err(Error::Refused(
                "HEAD is not on a branch; a rollback commit needs one".into(),
            ));
        }
        if !self.repo.is_bare() {
            let mut opts = git2::StatusOptions::new();
            opts.include_untracked(false).include_ignored(false);
            let statuses = self.git(self.repo.statuses(Some(&mut opts)))?;
            if !statuses.is_empty() {
                let first: Vec<String> = statuses
                    .iter()
                    .take(3)
                    .filter_map(|s| s.path().map(String::from))
                    .collect();
                return Err(Error::Refused(format!(
                    "the work tree has uncommitted changes ({}); commit or stash them first",
                    first.join(", ")
                )));
            }
        }
        let head = self.git(head_ref.peel_to_commit())?;
        let target_commit = self.git(self.repo.find_commit(target))?;
        let head_tree = self.git(head.tree())?;
        let target_tree = self.git(target_commit.tree())?;
        let new_tree = if self.path.is_empty() {
            target_tree
        } else {
            let sub = match target_tree.get_path(Path::new(&self.path)) {
                Ok(e) => Some(self.git(self.git(e.to_object(&self.repo))?.peel_to_tree())?),
                Err(_) => None,
            };
            let oid = self.replace_subtree(&head_tree, &self.path, sub.as_ref().map(|t| t.id()))?;
            self.git(self.repo.find_tree(oid))?
        };
        let sig = self
            .repo
            .signature()
            .or_else(|_| Signature::now("Capstan", "capstan@localhost"))
            .map_err(|e| Error::Git(self.git_dir.display().to_string(), e))?;
        let oid =
            self.git(
                self.repo
                    .commit(Some("HEAD"), &sig, &sig, message, &new_tree, &[&head]),
            )?;
        if !self.repo.is_bare() {
            let mut co = git2::build::CheckoutBuilder::new();
            co.force();
            self.git(self.repo.checkout_head(Some(&mut co)))?;
        }
        Ok(oid)
    }

    /// A copy of `tree` with the subtree at `path` replaced by `with` (removed when None).
    fn replace_subtree(&self, tree: &git2::Tree, path: &str, with: Option<Oid>) -> Result<Oid> {
        let (first, rest) = match path.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (path, None),
        };
        let mut builder = self.git(self.repo.treebuilder(Some(tree)))?;
        let child = match rest {
            None => with,
            Some(rest) => {
                let sub = match tree.get_name(first) {
                    Some(e) => self.git(self.git(e.to_object(&self.repo))?.peel_to_tree())?,
                    None => {
                        let empty = self.git(self.git(self.repo.treebuilder(None))?.write())?;
                        self.git(self.repo.find_tree(empty))?
                    }
                };
                Some(self.replace_subtree(&sub, rest, with)?)
            }
        };
        match child {
            Some(oid) => {
                self.git(builder.insert(first, oid, 0o040000))?;
            }
            None => {
                let _ = builder.remove(first);
            }
        }
        self.git(builder.write())
    }
}
