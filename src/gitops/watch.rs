//! Local repositories followed through file watchers: one watcher per repository, shared by every app that follows
//! it; a write under its refs wakes those apps, and the count of writes seen tells a look whether git needs reading
//! again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use notify::Watcher;

use crate::runtime::queue::WorkQueue;

/// A watched repository and the apps that follow it.
pub(super) struct RepoWatch {
    _watcher: notify::RecommendedWatcher,
    apps: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// Writes seen in the repository so far: a look that finds the count unchanged need not read git again.
    writes: Arc<std::sync::atomic::AtomicU64>,
}

/// The watchers, and which repository each app follows.
#[derive(Default)]
pub(super) struct Watches {
    watchers: Mutex<HashMap<std::path::PathBuf, RepoWatch>>,
    /// Which repository each app follows now (app key -> git dir), so a look that changes nothing costs one lookup.
    following: Mutex<HashMap<String, std::path::PathBuf>>,
}

impl Watches {
    /// Watches the repository's HEAD, packed-refs and refs (not its objects: few inotify watches per repository,
    /// one watcher per repository however many apps follow it); any change there queues the apps.
    pub fn watch(&self, queue: &WorkQueue, key: &str, git_dir: &std::path::Path) {
        let before = {
            let mut following = self.following.lock().unwrap_or_else(|e| e.into_inner());
            if following.get(key).is_some_and(|d| d == git_dir) {
                return;
            }
            following.insert(key.to_string(), git_dir.to_path_buf())
        };
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rw) = before.as_ref().and_then(|d| w.get(d)) {
            rw.apps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
        }
        if let Some(rw) = w.get(git_dir) {
            rw.apps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_string());
            return;
        }
        let apps: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
        apps.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string());
        let queue = queue.clone();
        let followers = apps.clone();
        let writes: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let counted = writes.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                // Only writes move a branch. Reads (our own, of HEAD and refs) must not wake us: that would loop.
                let writes = matches!(
                    ev.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(_)
                        | notify::EventKind::Remove(_)
                        | notify::EventKind::Access(notify::event::AccessKind::Close(
                            notify::event::AccessMode::Write
                        ))
                );
                let relevant = writes
                    && ev.paths.iter().any(|p| {
                        let s = p.to_string_lossy();
                        !s.ends_with(".lock") && !s.ends_with("/index")
                    });
                if relevant {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    for k in followers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                        queue.add(k);
                    }
                }
            }
        });
        let started = watcher.and_then(|mut watcher| {
            watcher.watch(git_dir, notify::RecursiveMode::NonRecursive)?;
            watcher.watch(&git_dir.join("refs"), notify::RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        match started {
            Ok(watcher) => {
                w.insert(
                    git_dir.to_path_buf(),
                    RepoWatch {
                        _watcher: watcher,
                        apps,
                        writes,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(app = key, "watching {}: {e}", git_dir.display());
                // Try again on the next look.
                self.following
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(key);
            }
        }
    }

    /// The write count of the repository `key` follows (None when it has no watcher).
    pub fn writes(&self, key: &str) -> Option<u64> {
        let dir = self
            .following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()?;
        let w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.get(&dir)
            .map(|rw| rw.writes.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Stops following for a deleted app (and drops watchers nobody needs).
    pub fn unwatch(&self, key: &str) {
        self.following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|_, rw| {
            let mut apps = rw.apps.lock().unwrap_or_else(|e| e.into_inner());
            apps.remove(key);
            !apps.is_empty()
        });
    }
}
