//! The etcd store's shared watch: one etcd watch per store over every object's key ([`SHARED`]), its recent events kept
//! in memory and handed to the store's watchers through per-watcher queues ([`super::fanout`]) - what
//! kube-apiserver's watch cache does. Without it each API watch (every informer of every component, every kubectl
//! `-w`) was a watch of its own in etcd: etcd sent each event once per watcher, reading its previous value each
//! time, and the API server decoded it as often.
//!
//! A watch from a revision the memory does not cover (before the shared watch began, or trimmed from its bounded
//! history, or compacted by this store), or one asked for while the shared watch is down, is served by a watch of
//! its own in etcd, as before. When the shared watch breaks (etcd restarted, the connection lost), every watcher it
//! fed ends with an error - the API server then tells its clients to watch again from what they saw - and it is
//! opened again from the last revision it saw, keeping its history; from a compacted revision it starts afresh.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::etcd::Etcd;
use super::fanout::{Fanout, Feed};
use super::{Event, Result, WatchStream};

/// The keys the shared watch follows: the API's objects (`/registry/<resource>/...`), as kube-apiserver's watch
/// cache follows them. Watches of other keys are etcd's own.
pub const SHARED: &str = concat!("/", "registry/");

/// Events kept in memory before the oldest are dropped.
const HISTORY_MAX: usize = 100_000;
/// Bytes of events kept (keys, values and previous values).
const HISTORY_MAX_BYTES: usize = 32 << 20;

fn event_bytes(e: &Event) -> usize {
    e.kv.key.len() + e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()) + 64
}

struct State {
    history: VecDeque<Arc<Event>>,
    bytes: usize,
    /// Every event after this revision is in `history` (while `live`).
    first: i64,
    /// The latest revision the shared watch delivered.
    last: i64,
    /// The shared watch is open.
    live: bool,
}

/// One store's shared watch.
pub struct Shared {
    state: Mutex<State>,
    fanout: Fanout,
    /// Dropped with the store: the task following etcd then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Shared {
    /// Opens the shared watch at etcd's current revision and starts following it.
    pub async fn start(etcd: Etcd) -> Result<Arc<Shared>> {
        let (from, stream) = etcd.open_shared(None).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                history: VecDeque::new(),
                bytes: 0,
                first: from,
                last: from,
                live: true,
            }),
            fanout: Fanout::default(),
            _stop: stop,
        });
        tokio::spawn(follow(Arc::downgrade(&shared), etcd, stream, stopped));
        Ok(shared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch of the keys under `prefix` changed after `after` (0: from now), when memory covers it.
    pub fn watch(&self, prefix: &str, after: i64) -> Option<WatchStream> {
        if !prefix.starts_with(SHARED) {
            return None;
        }
        let s = self.lock();
        if !s.live || (after != 0 && after < s.first) {
            return None;
        }
        let backlog: VecDeque<Arc<Event>> = if after == 0 {
            VecDeque::new()
        } else {
            // The history is in revision order: start at the first event past `after`.
            let from = s.history.partition_point(|e| e.revision() <= after);
            s.history
                .range(from..)
                .filter(|e| e.kv.key.starts_with(prefix))
                .cloned()
                .collect()
        };
        // Subscribing under the lock: an event is either in the backlog or published after this.
        let live = self.fanout.subscribe(prefix);
        Some(Feed::new(backlog, live, s.last.max(after)).into_stream())
    }

    /// Forgets what this store compacted: watching from there is then etcd's to answer (410 Gone).
    pub fn compacted(&self, revision: i64) {
        let mut s = self.lock();
        while s.history.front().is_some_and(|e| e.revision() <= revision) {
            let e = s.history.pop_front().expect("checked");
            s.bytes = s.bytes.saturating_sub(event_bytes(&e));
        }
        s.first = s.first.max(revision);
    }

    /// Keeps and publishes events the shared watch delivered.
    fn record(&self, events: Vec<Arc<Event>>) {
        {
            let mut s = self.lock();
            for e in &events {
                s.bytes += event_bytes(e);
                s.last = s.last.max(e.revision());
                s.history.push_back(e.clone());
            }
            while s.history.len() > HISTORY_MAX || s.bytes > HISTORY_MAX_BYTES {
                let Some(e) = s.history.pop_front() else {
                    break;
                };
                s.bytes = s.bytes.saturating_sub(event_bytes(&e));
                s.first = s.first.max(e.revision());
            }
        }
        self.fanout.publish(&events);
    }

    /// The shared watch broke: its watchers end, new watches go to etcd until it is open again. Returns the last
    /// revision it delivered.
    fn down(&self) -> i64 {
        let last = {
            let mut s = self.lock();
            s.live = false;
            s.last
        };
        self.fanout.fail_all();
        last
    }

    /// Open again from `from` (the history kept when that follows on from the last revision delivered).
    fn up(&self, from: i64) {
        let mut s = self.lock();
        if from != s.last {
            s.history.clear();
            s.bytes = 0;
            s.first = from;
            s.last = from;
        }
        s.live = true;
    }
}

/// Ends the watchers when the task following etcd ends for any reason (its runtime shut down, too).
struct Down(Weak<Shared>);

impl Drop for Down {
    fn drop(&mut self) {
        if let Some(s) = self.0.upgrade() {
            s.down();
        }
    }
}

async fn follow(
    weak: Weak<Shared>,
    etcd: Etcd,
    mut stream: etcd_client::WatchStream,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let _down = Down(weak.clone());
    loop {
        loop {
            let resp = tokio::select! {
                _ = &mut stop => return,
                r = stream.message() => r,
            };
            let resp = match resp {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the etcd store's shared watch failed");
                    break;
                }
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                tracing::warn!(reason = resp.cancel_reason(), "etcd ended the shared watch");
                break;
            }
            let events: Vec<Arc<Event>> = resp
                .events()
                .iter()
                .filter_map(|e| etcd.event(e))
                .map(Arc::new)
                .collect();
            if events.is_empty() {
                continue;
            }
            let Some(shared) = weak.upgrade() else { return };
            shared.record(events);
        }
        let Some(shared) = weak.upgrade() else { return };
        let last = shared.down();
        drop(shared);
        // Open again, after the last revision delivered (or afresh when etcd compacted past it).
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            match etcd.open_shared(Some(last)).await {
                Ok((from, s)) => {
                    let Some(shared) = weak.upgrade() else { return };
                    shared.up(from);
                    stream = s;
                    tracing::info!(
                        revision = from,
                        "the etcd store's shared watch is open again"
                    );
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "reopening the etcd store's shared watch"),
            }
        }
    }
}
