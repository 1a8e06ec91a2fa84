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
    #[error("repository URL {0:?} is a remote; it is fetched into a mirror, not opened in place")]
    Unsupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a remote asks of us to let us in, from the Secret an Application names in `spec.source.secretRef` (keys as
/// Flux names them): `username` and `password` (a token works as the password) for https; `identity` (a private key,
/// PEM or OpenSSH), optional `identity.pub` and `passphrase`, and `known_hosts` (required: the host key is checked)
/// for ssh; `ca.crt` to trust an https server's private certificate authority.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Where they came from (`namespace/name`), for error messages.
    pub origin: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity: Option<String>,
    pub identity_pub: Option<String>,
    pub passphrase: Option<String>,
    pub known_hosts: Option<String>,
    pub ca_cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret values themselves.
        write!(f, "Credentials({})", self.origin)
    }
}

/// An opened source: the repository and the path of the app inside it.
pub struct Source {
    pub repo: Repository,
    /// The app's directory relative to the repository root ("" for the root).
    pub path: String,
    /// Where to watch for changes (the repository's git directory).
    pub git_dir: PathBuf,
    /// For a remote: its URL (the repository above is a local mirror fetched from it).
    pub remote: Option<String>,
    /// For a remote: what to authenticate with and which servers to trust.
    pub credentials: Option<Credentials>,
}

/// Whether a repoURL names a remote (fetched into a mirror) rather than a local repository (watched in place).
pub fn is_remote(url: &str) -> bool {
    url.contains("://") || url.starts_with("git@")
}

/// Opens (creating it if needed) the local mirror of remote `url` under `cache`.
pub fn open_remote(url: &str, path: Option<&str>, cache: &Path) -> Result<Source> {
    let tail: String = url
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = cache.join(format!("{tail}-{:08x}", crc32fast::hash(url.as_bytes())));
    let repo = match Repository::open_bare(&dir) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Refused(format!("creating the mirror {}: {e}", dir.display()))
            })?;
            let r = Repository::init_bare(&dir).map_err(|e| Error::Open(url.into(), e))?;
            r.remote("origin", url)
                .map_err(|e| Error::Open(url.into(), e))?;
            r
        }
    };
    let path = path
        .filter(|p| !p.is_empty() && *p != ".")
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    Ok(Source {
        git_dir: dir,
        repo,
        path,
        remote: Some(url.to_string()),
        credentials: None,
    })
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
    /// The app's directory, relative to the repository root ("" for the root).
    pub root: String,
    pub files: Vec<File>,
    /// The repository (render plugins copy the whole commit from it).
    pub git_dir: PathBuf,
    /// When a kustomization is under the app's path: every other file of the commit (up to 1 MiB each), for the
    /// bases, generator files and env files it may name anywhere in the repository.
    pub others: Vec<File>,
}

/// Opens a local repository at `repo_url` (a path); `path` (from the Application) is joined to whatever directory
/// inside the repository the URL names.
pub fn open(repo_url: &str, path: Option<&str>) -> Result<Source> {
    if is_remote(repo_url) {
        return Err(Error::Unsupported(repo_url.into()));
    }
    let local = PathBuf::from(repo_url);
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
        remote: None,
        credentials: None,
    })
}

impl Source {
    /// The commit `rev` names (branch, tag or commit); the current HEAD when none is given.
    pub fn resolve(&self, rev: Option<&str>) -> Result<Oid> {
        let rev = rev.filter(|r| !r.is_empty());
        if self.remote.is_some() {
            // Branches of a remote live under refs/remotes/origin in the mirror; its default branch is origin/HEAD.
            let branch = format!("refs/remotes/origin/{}", rev.unwrap_or("HEAD"));
            if let Ok(r) = self.repo.find_reference(&branch) {
                if let Ok(c) = r.resolve().and_then(|r| r.peel_to_commit()) {
                    return Ok(c.id());
                }
            }
        }
        let spec = rev.unwrap_or("HEAD");
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
            tree.clone()
        } else {
            let entry = self.git(tree.get_path(Path::new(&self.path)))?;
            self.git(self.git(entry.to_object(&self.repo))?.peel_to_tree())?
        };
        let mut files = Vec::new();
        let mut failure = None;
        let mut kustomized = false;
        self.git(sub.walk(TreeWalkMode::PreOrder, |_, entry| {
            if entry
                .name()
                .is_some_and(|n| super::kustomize::FILE_NAMES.contains(&n))
            {
                kustomized = true;
                return TreeWalkResult::Abort;
            }
            TreeWalkResult::Ok
        }))
        .or_else(|e| if kustomized { Ok(()) } else { Err(e) })?;
        let mut others = Vec::new();
        if kustomized {
            self.git(tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
                if entry.kind() != Some(ObjectType::Blob) {
                    return TreeWalkResult::Ok;
                }
                let path = format!("{dir}{}", entry.name().unwrap_or(""));
                let inside = self.path.is_empty() || path.starts_with(&format!("{}/", self.path));
                if inside && manifest_name(&path) {
                    return TreeWalkResult::Ok;
                }
                if let Ok(b) = entry.to_object(&self.repo).and_then(|o| o.peel_to_blob()) {
                    if b.size() <= 1 << 20 {
                        others.push(File {
                            path,
                            content: b.content().to_vec(),
                        });
                    }
                }
                TreeWalkResult::Ok
            }))?;
        }
        self.git(sub.walk(TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(ObjectType::Blob) {
                return TreeWalkResult::Ok;
            }
            let name = entry.name().unwrap_or("");
            if !manifest_name(name) {
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
            root: self.path.clone(),
            files,
            git_dir: self.git_dir.clone(),
            others,
        })
    }

    /// Callbacks for talking to the remote: credentials from the Secret (one try each: a refused credential is an
    /// error, not a loop), host keys checked against `known_hosts`, a private CA trusted for https, and a push whose
    /// reference the remote rejects noted. What went wrong is left in `failure` for [`Source::explain`].
    fn callbacks<'a>(
        &'a self,
        failure: &'a std::cell::RefCell<Option<String>>,
    ) -> git2::RemoteCallbacks<'a> {
        let mut cb = git2::RemoteCallbacks::new();
        let creds = self.credentials.clone().unwrap_or_default();
        let tried = std::cell::Cell::new(0u32);
        let origin = if creds.origin.is_empty() {
            "none: the Application names no secretRef".to_string()
        } else {
            creds.origin.clone()
        };
        let for_creds = creds.clone();
        let origin_c = origin.clone();
        cb.credentials(move |_url, user_from_url, allowed| {
            tried.set(tried.get() + 1);
            let c = &for_creds;
            let refused = |what: &str| {
                failure.replace(Some(format!(
                    "the remote refused {what} (credentials: {origin_c})"
                )));
                git2::Error::from_str("authentication failed")
            };
            if tried.get() > 2 {
                return Err(refused("the credentials"));
            }
            let user = c.username.as_deref().or(user_from_url).unwrap_or("git");
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                if let Some(key) = &c.identity {
                    return git2::Cred::ssh_key_from_memory(
                        user,
                        c.identity_pub.as_deref(),
                        key,
                        c.passphrase.as_deref(),
                    );
                }
                return Err(refused(
                    "us: it asks for an ssh key and the secret has no identity",
                ));
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                if let (Some(u), Some(p)) = (&c.username, &c.password) {
                    return git2::Cred::userpass_plaintext(u, p);
                }
                return Err(refused(
                    "us: it asks for a username and password and the secret has none",
                ));
            }
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(user);
            }
            Err(refused("every kind of credential we can offer"))
        });
        cb.certificate_check(move |cert, host| {
            if let Some(key) = cert.as_hostkey() {
                return check_host_key(&creds, host, key).map_err(|why| {
                    let why = why.to_string();
                    failure.replace(Some(why.clone()));
                    git2::Error::from_str(&why)
                });
            }
            if let (Some(x509), Some(ca)) = (cert.as_x509(), creds.ca_cert.as_deref()) {
                return check_x509(ca, host, x509.data()).map_err(|why| {
                    let why = why.to_string();
                    failure.replace(Some(why.clone()));
                    git2::Error::from_str(&why)
                });
            }
            Ok(git2::CertificateCheckStatus::CertificatePassthrough)
        });
        cb.push_update_reference(move |r, status| {
            if let Some(s) = status {
                failure.replace(Some(format!(
                    "the remote refused the rollback commit: {r}: {s}"
                )));
                return Err(git2::Error::from_str("push rejected"));
            }
            Ok(())
        });
        cb
    }

    /// A git result, its error replaced by what the callbacks found out when they know better.
    fn explain<T>(
        &self,
        r: std::result::Result<T, git2::Error>,
        failure: &std::cell::RefCell<Option<String>>,
    ) -> Result<T> {
        let why = failure.borrow_mut().take();
        match (r, why) {
            (Ok(v), None) => Ok(v),
            (_, Some(why)) => Err(Error::Refused(format!(
                "{}: {why}",
                self.remote.as_deref().unwrap_or("remote")
            ))),
            (Err(e), None) => Err(Error::Git(
                self.remote.as_deref().unwrap_or("remote").to_string(),
                e,
            )),
        }
    }

    /// Fetches every branch and tag of the remote into the mirror, and notes its default branch as origin/HEAD.
    pub fn fetch(&self) -> Result<()> {
        let mut remote = self.git(self.repo.find_remote("origin"))?;
        let failure = std::cell::RefCell::new(None);
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(self.callbacks(&failure));
        let fetched = remote.fetch(
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            Some(&mut opts),
            None,
        );
        drop(opts);
        self.explain(fetched, &failure)?;
        // The advertised HEAD stays known after the fetch's connection closes.
        let default = remote
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().map(String::from));
        if let Some(b) = default {
            let short = b.trim_start_matches("refs/heads/");
            let target = format!("refs/remotes/origin/{short}");
            self.git(self.repo.reference_symbolic(
                "refs/remotes/origin/HEAD",
                &target,
                true,
                "default branch",
            ))?;
        }
        Ok(())
    }

    /// The remote's branch `rev` names (or its default branch).
    fn remote_branch(&self, rev: Option<&str>) -> Result<String> {
        if let Some(b) = rev.filter(|r| !r.is_empty()) {
            if self
                .repo
                .find_reference(&format!("refs/remotes/origin/{b}"))
                .is_ok()
            {
                return Ok(b.to_string());
            }
            return Err(Error::Refused(format!(
                "{b:?} is not a branch of the remote; a rollback needs one"
            )));
        }
        let head = self.git(self.repo.find_reference("refs/remotes/origin/HEAD"))?;
        let target = head
            .symbolic_target()
            .ok_or_else(|| Error::Refused("the remote's default branch is unknown".into()))?;
        Ok(target
            .trim_start_matches("refs/remotes/origin/")
            .to_string())
    }

    /// For a remote: writes the rollback commit on top of the branch and pushes it (a rejected push changes
    /// nothing on the remote and fails).
    pub fn revert_remote(&self, branch: Option<&str>, target: Oid, message: &str) -> Result<Oid> {
        let branch = self.remote_branch(branch)?;
        let tip = self.resolve(Some(&branch))?;
        let head = self.git(self.repo.find_commit(tip))?;
        let oid = self.revert_commit(&head, target, message, None)?;
        let mut remote = self.git(self.repo.find_remote("origin"))?;
        let refspec = format!("{oid}:refs/heads/{branch}");
        let failure = std::cell::RefCell::new(None);
        let mut opts = git2::PushOptions::new();
        opts.remote_callbacks(self.callbacks(&failure));
        let pushed = remote.push(&[refspec.as_str()], Some(&mut opts));
        drop(opts);
        self.explain(pushed, &failure)?;

        self.fetch()?;
        Ok(oid)
    }

    /// A unified diff of the app's path from `from` (none: an empty tree) to `to`.
    pub fn diff(&self, from: Option<Oid>, to: Oid) -> Result<String> {
        let tree_of = |oid: Oid| -> Result<git2::Tree<'_>> {
            let c = self.git(self.repo.find_commit(oid))?;
            self.git(c.tree())
        };
        let old = from.map(tree_of).transpose()?;
        let new = tree_of(to)?;
        let mut opts = git2::DiffOptions::new();
        if !self.path.is_empty() {
            opts.pathspec(&self.path);
        }
        let diff = self.git(self.repo.diff_tree_to_tree(
            old.as_ref(),
            Some(&new),
            Some(&mut opts),
        ))?;
        let mut out = String::new();
        self.git(diff.print(git2::DiffFormat::Patch, |_, _, line| {
            let text = String::from_utf8_lossy(line.content());
            match line.origin() {
                c @ ('+' | '-' | ' ') => {
                    out.push(c);
                    out.push_str(&text);
                }
                _ => out.push_str(&text),
            }
            if !out.ends_with('\n') {
                out.push('\n');
            }
            true
        }))?;
        Ok(out)
    }

    /// A commit's header (`commit`, `Author`, `Date`, message) and what it changed in the app's path against its
    /// first parent.
    pub fn show(&self, rev: Oid) -> Result<String> {
        let c = self.git(self.repo.find_commit(rev))?;
        let parent = c.parent_ids().next();
        let author = c.author();
        let when = chrono::DateTime::from_timestamp(author.when().seconds(), 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let mut out = format!(
            "commit {rev}\nAuthor: {} <{}>\nDate:   {when}\n\n",
            author.name().unwrap_or(""),
            author.email().unwrap_or("")
        );
        for l in c.message().unwrap_or("").lines() {
            out.push_str(&format!("    {l}\n"));
        }
        out.push('\n');
        let diff = self.diff(parent, rev)?;
        if diff.is_empty() {
            out.push_str("(no change under the application's path)\n");
        }
        out.push_str(&diff);
        Ok(out)
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
        let oid = self.revert_commit(&head, target, message, Some("HEAD"))?;
        if !self.repo.is_bare() {
            let mut co = git2::build::CheckoutBuilder::new();
            co.force();
            self.git(self.repo.checkout_head(Some(&mut co)))?;
        }
        Ok(oid)
    }

    /// A commit on top of `head` whose app path holds what it held at `target`; `update_ref` moves that ref to it.
    fn revert_commit(
        &self,
        head: &git2::Commit,
        target: Oid,
        message: &str,
        update_ref: Option<&str>,
    ) -> Result<Oid> {
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
        self.git(
            self.repo
                .commit(update_ref, &sig, &sig, message, &new_tree, &[head]),
        )
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

/// Why a server's identity is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("ssh to {host} needs known_hosts in the secret ({origin}) so the server's key can be checked")]
    NoKnownHosts { host: String, origin: String },
    #[error("{0} offered no host key")]
    NoHostKey(String),
    #[error("the host key of {0} does not match known_hosts: refusing to connect")]
    KeyMismatch(String),
    #[error("{0} is not in known_hosts")]
    UnknownHost(String),
    #[error("ca.crt: {0}")]
    BadCa(String),
    #[error("ca.crt holds no PEM certificate")]
    EmptyCa,
    #[error("{host}: {reason}")]
    BadName { host: String, reason: String },
    #[error("the certificate of {host} is not trusted by ca.crt: {reason}")]
    Certificate { host: String, reason: String },
}

/// Checks an ssh server's host key against the `known_hosts` of the credentials (plain and hashed host entries).
fn check_host_key(
    creds: &Credentials,
    host: &str,
    key: &git2::cert::CertHostkey<'_>,
) -> std::result::Result<git2::CertificateCheckStatus, Untrusted> {
    use base64::Engine;
    let Some(known) = creds.known_hosts.as_deref() else {
        return Err(Untrusted::NoKnownHosts {
            host: host.to_string(),
            origin: if creds.origin.is_empty() {
                "no secretRef".to_string()
            } else {
                creds.origin.clone()
            },
        });
    };
    let Some(raw) = key.hostkey() else {
        return Err(Untrusted::NoHostKey(host.to_string()));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut host_listed = false;
    for line in known.lines() {
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(k)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if hosts.starts_with('#') || !hosts_match(hosts, host) {
            continue;
        }
        host_listed = true;
        if b64.decode(k).is_ok_and(|k| k == raw) {
            return Ok(git2::CertificateCheckStatus::CertificateOk);
        }
    }
    Err(if host_listed {
        Untrusted::KeyMismatch(host.to_string())
    } else {
        Untrusted::UnknownHost(host.to_string())
    })
}

/// Whether a known_hosts host field (`a,b`, `[a]:2222`, `|1|salt|hash`) names `host`.
fn hosts_match(field: &str, host: &str) -> bool {
    use base64::Engine;
    field.split(',').any(|pattern| {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            let b64 = base64::engine::general_purpose::STANDARD;
            let Some((salt, hash)) = hashed.split_once('|') else {
                return false;
            };
            let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
                return false;
            };
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
            return ring::hmac::verify(&key, host.as_bytes(), &hash).is_ok();
        }
        let name = pattern
            .strip_prefix('[')
            .and_then(|p| p.split_once("]:"))
            .map_or(pattern, |(h, _)| h);
        name == host
    })
}

/// Checks an https server's certificate against the private CA of the credentials (webpki, through rustls).
fn check_x509(
    ca_pem: &[u8],
    host: &str,
    der: &[u8],
) -> std::result::Result<git2::CertificateCheckStatus, Untrusted> {
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| Untrusted::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| Untrusted::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(Untrusted::EmptyCa);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| Untrusted::BadCa(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
        Untrusted::BadName {
            host: host.to_string(),
            reason: e.to_string(),
        }
    })?;
    verifier
        .verify_server_cert(
            &rustls::pki_types::CertificateDer::from(der.to_vec()),
            &[],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| git2::CertificateCheckStatus::CertificateOk)
        .map_err(|e| Untrusted::Certificate {
            host: host.to_string(),
            reason: e.to_string(),
        })
}

/// Whether a file name is one the app reads as manifests.
fn manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}
