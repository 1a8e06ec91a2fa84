//! Local repositories followed through one file watcher for all of them (one inotify instance and its thread, however
//! many repositories: the kernel allows a user only 128 instances, but many thousands of watches). A write under a
//! repository's `HEAD`, `packed-refs` or `refs/` wakes the apps that follow it, and the count of writes seen tells a
//! look whether git needs reading again.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::Watcher;

use crate::runtime::queue::WorkQueue;

/// A watched repository: the apps that follow it, and the writes seen in it so far.
#[derive(Default)]
struct Repo {
    apps: BTreeSet<String>,
    writes: u64,
}

/// What the watcher's callback shares with the controller.
#[derive(Default)]
struct Shared {
    repos: HashMap<PathBuf, Repo>,
    queue: Option<WorkQueue>,
}

/// The watcher, and which repository each app follows.
#[derive(Default)]
pub(super) struct Watches {
    shared: Arc<Mutex<Shared>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Which repository each app follows now (app key -> git dir), so a look that changes nothing costs one lookup.
    following: Mutex<HashMap<String, PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an event can move a branch: a write, not a read (our own reads of HEAD and refs must not wake us: that
/// would loop), and not a lock file or the index.
fn is_write(ev: &notify::Event) -> bool {
    let writes = matches!(
        ev.kind,
        notify::EventKind::Create(_)
            | notify::EventKind::Modify(_)
            | notify::EventKind::Remove(_)
            | notify::EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write
            ))
    );
    writes
        && ev.paths.iter().any(|p| {
            let s = p.to_string_lossy();
            !s.ends_with(".lock") && !s.ends_with("/index")
        })
}

impl Watches {
    /// The one watcher, started on first use.
    fn started(
        &self,
    ) -> notify::Result<std::sync::MutexGuard<'_, Option<notify::RecommendedWatcher>>> {
        let mut w = lock(&self.watcher);
        if w.is_none() {
            let shared = self.shared.clone();
            *w = Some(notify::recommended_watcher(
                move |res: notify::Result<notify::Event>| {
                    let Ok(ev) = res else { return };
                    if !is_write(&ev) {
                        return;
                    }
                    let mut s = lock(&shared);
                    let mut woken: BTreeSet<String> = BTreeSet::new();
                    for p in &ev.paths {
                        // The repository is the nearest watched directory above the path.
                        let dir = p
                            .ancestors()
                            .find(|a| s.repos.contains_key(*a))
                            .map(Path::to_path_buf);
                        if let Some(repo) = dir.and_then(|d| s.repos.get_mut(&d)) {
                            repo.writes += 1;
                            woken.extend(repo.apps.iter().cloned());
                        }
                    }
                    if let Some(q) = &s.queue {
                        for k in &woken {
                            q.add(k);
                        }
                    }
                },
            )?);
        }
        Ok(w)
    }

    /// Watches the repository's HEAD, packed-refs and refs (not its objects) for the app `key`; any change there
    /// queues the apps that follow it.
    pub fn watch(&self, queue: &WorkQueue, key: &str, git_dir: &Path) {
        // The simulation has no file watcher (its events come from another thread, at times of the kernel's
        // choosing): there a new commit is noticed through a refresh or the periodic look.
        if crate::sys::clock::simulated() {
            return;
        }
        let before = {
            let mut following = lock(&self.following);
            if following.get(key).is_some_and(|d| d == git_dir) {
                return;
            }
            following.insert(key.to_string(), git_dir.to_path_buf())
        };
        if let Some(before) = before {
            self.leave(key, &before);
        }
        {
            let mut s = lock(&self.shared);
            s.queue.get_or_insert_with(|| queue.clone());
            if let Some(repo) = s.repos.get_mut(git_dir) {
                repo.apps.insert(key.to_string());
                return;
            }
        }
        let added = self.started().and_then(|mut w| {
            let w = w.as_mut().expect("started");
            w.watch(git_dir, notify::RecursiveMode::NonRecursive)?;
            w.watch(&git_dir.join("refs"), notify::RecursiveMode::Recursive)
        });
        match added {
            Ok(()) => {
                let mut s = lock(&self.shared);
                s.repos
                    .entry(git_dir.to_path_buf())
                    .or_default()
                    .apps
                    .insert(key.to_string());
            }
            Err(e) => {
                tracing::warn!(app = key, "watching {}: {e}", git_dir.display());
                // Try again on the next look.
                lock(&self.following).remove(key);
            }
        }
    }

    /// The write count of the repository `key` follows (None when it is not watched).
    pub fn writes(&self, key: &str) -> Option<u64> {
        let dir = lock(&self.following).get(key).cloned()?;
        lock(&self.shared).repos.get(&dir).map(|r| r.writes)
    }

    /// Stops following for a deleted app (and stops watching a repository nobody follows).
    pub fn unwatch(&self, key: &str) {
        if let Some(dir) = lock(&self.following).remove(key) {
            self.leave(key, &dir);
        }
    }

    fn leave(&self, key: &str, dir: &Path) {
        let empty = {
            let mut s = lock(&self.shared);
            let Some(repo) = s.repos.get_mut(dir) else {
                return;
            };
            repo.apps.remove(key);
            let empty = repo.apps.is_empty();
            if empty {
                s.repos.remove(dir);
            }
            empty
        };
        if empty {
            if let Some(w) = lock(&self.watcher).as_mut() {
                let _ = w.unwatch(&dir.join("refs"));
                let _ = w.unwatch(dir);
            }
        }
    }
}
