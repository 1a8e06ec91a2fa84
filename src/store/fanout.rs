//! How committed events reach a store's watchers (the embedded store's, and the etcd store's shared watch): each
//! watcher registers the key prefix it watches and gets its own queue; a published event is queued only for the watchers whose prefix it falls under. A write wakes
//! the watchers it concerns and no others (with one channel for everything, a Lease renewal woke every watch of
//! pods - 1,000 watchers made that 1,000 wake-ups per write). A watcher more than [`QUEUE`] events behind is dropped
//! and told it was too slow, as a lagging watch always was.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::store::{Error, Event, Result, WatchStream};

/// Events one watcher may have waiting before it is dropped as too slow. Memory grows only with what is queued.
pub const QUEUE: usize = 1 << 16;

struct Sub {
    tx: mpsc::Sender<Arc<Event>>,
    lagged: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
}

/// Every watcher's queue, by the prefix it watches.
#[derive(Default)]
pub struct Fanout {
    subs: Mutex<BTreeMap<String, Vec<Sub>>>,
}

/// One watcher's end.
pub struct Receiver {
    rx: mpsc::Receiver<Arc<Event>>,
    lagged: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
}

/// What a watcher receives next.
pub enum Recv {
    Event(Arc<Event>),
    /// It fell [`QUEUE`] events behind and was dropped.
    Lagged,
    /// What fed the queues failed ([`Fanout::fail_all`]): the watcher must watch again.
    Failed,
    /// The store is gone.
    Closed,
}

impl Fanout {
    /// A queue for the events under `prefix` published from now on.
    pub fn subscribe(&self, prefix: &str) -> Receiver {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(prefix.to_string())
            .or_default()
            .push(Sub {
                tx,
                lagged: lagged.clone(),
                failed: failed.clone(),
            });
        Receiver { rx, lagged, failed }
    }

    /// Ends every watcher with [`Recv::Failed`] after what it was already sent (the feed behind the queues broke:
    /// what was published may have a gap, so the watchers start again from what they saw).
    pub fn fail_all(&self) {
        let subs = std::mem::take(&mut *self.subs.lock().unwrap_or_else(|e| e.into_inner()));
        for s in subs.into_values().flatten() {
            s.failed.store(true, Ordering::Release);
        }
    }

    /// Queues each event for the watchers it concerns, in order; forgets watchers that went away or fell behind.
    pub fn publish(&self, batch: &[Arc<Event>]) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        for ev in batch {
            for (prefix, list) in subs.iter_mut() {
                if !ev.kv.key.starts_with(prefix.as_str()) {
                    continue;
                }
                list.retain(|s| match s.tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lagged.store(true, Ordering::Release);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
        }
        subs.retain(|_, list| {
            list.retain(|s| !s.tx.is_closed());
            !list.is_empty()
        });
    }

    /// Watchers registered (for tests).
    #[cfg(test)]
    pub fn watchers(&self) -> usize {
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Recv {
        match self.rx.recv().await {
            Some(ev) => Recv::Event(ev),
            None if self.lagged.load(Ordering::Acquire) => Recv::Lagged,
            None if self.failed.load(Ordering::Acquire) => Recv::Failed,
            None => Recv::Closed,
        }
    }
}

/// One watcher's position: the events it is owed from history, then its live queue. Live events at or before `last`
/// (what the backlog or the caller's start already covers) are skipped: an event may be published after a watcher
/// subscribed and also be in the history it was given.
pub struct Feed {
    backlog: std::collections::VecDeque<Arc<Event>>,
    live: Receiver,
    last: i64,
    done: bool,
}

impl Feed {
    pub fn new(backlog: std::collections::VecDeque<Arc<Event>>, live: Receiver, last: i64) -> Feed {
        Feed {
            backlog,
            live,
            last,
            done: false,
        }
    }

    async fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        if let Some(ev) = self.backlog.pop_front() {
            return Some(Ok((*ev).clone()));
        }
        loop {
            match self.live.recv().await {
                Recv::Event(ev) if ev.revision() <= self.last => continue,
                Recv::Event(ev) => return Some(Ok((*ev).clone())),
                Recv::Lagged => {
                    self.done = true;
                    return Some(Err(Error::WatcherTooSlow));
                }
                Recv::Failed => {
                    self.done = true;
                    return Some(Err(Error::Backend(
                        "the store's watch was interrupted; watch again".into(),
                    )));
                }
                Recv::Closed => return None,
            }
        }
    }

    /// The feed as a watch stream.
    pub fn into_stream(self) -> WatchStream {
        Box::pin(futures::stream::unfold(self, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventType, KeyValue};

    fn ev(key: &str, rev: i64) -> Arc<Event> {
        Arc::new(Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.into(),
                value: Arc::from(&b"{}"[..]),
                create_revision: rev,
                mod_revision: rev,
            },
            prev: None,
        })
    }

    fn queued(r: &mut Receiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = r.rx.try_recv() {
            out.push(e.kv.key.clone());
        }
        out
    }

    #[test]
    fn an_event_reaches_only_the_watchers_of_its_prefix() {
        let f = Fanout::default();
        let mut pods = f.subscribe("/registry/pods/");
        let mut pods_a = f.subscribe("/registry/pods/a/");
        let mut leases = f.subscribe("/registry/leases/");
        let mut all = f.subscribe("/registry/");
        f.publish(&[
            ev("/registry/pods/a/x", 1),
            ev("/registry/leases/n/l", 2),
            ev("/registry/pods/b/y", 3),
        ]);
        assert_eq!(
            queued(&mut pods),
            ["/registry/pods/a/x", "/registry/pods/b/y"]
        );
        assert_eq!(queued(&mut pods_a), ["/registry/pods/a/x"]);
        assert_eq!(queued(&mut leases), ["/registry/leases/n/l"]);
        assert_eq!(
            queued(&mut all),
            [
                "/registry/pods/a/x",
                "/registry/leases/n/l",
                "/registry/pods/b/y"
            ]
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_after_what_it_was_sent() {
        let f = Fanout::default();
        let mut slow = f.subscribe("/k/");
        let batch: Vec<_> = (0..QUEUE as i64 + 1).map(|i| ev("/k/x", i + 1)).collect();
        f.publish(&batch);
        assert_eq!(f.watchers(), 0, "the slow watcher is forgotten");
        for _ in 0..QUEUE {
            assert!(matches!(slow.recv().await, Recv::Event(_)));
        }
        assert!(matches!(slow.recv().await, Recv::Lagged));
    }

    #[tokio::test]
    async fn watchers_that_went_away_are_forgotten_and_a_dropped_fanout_closes() {
        let f = Fanout::default();
        drop(f.subscribe("/a/"));
        let mut kept = f.subscribe("/b/");
        f.publish(&[ev("/c/z", 1)]);
        assert_eq!(f.watchers(), 1);
        drop(f);
        assert!(matches!(kept.recv().await, Recv::Closed));
    }

    #[tokio::test]
    async fn failing_ends_every_watcher_after_what_it_was_sent() {
        let f = Fanout::default();
        let mut a = f.subscribe("/a/");
        let mut b = f.subscribe("/b/");
        f.publish(&[ev("/a/x", 1)]);
        f.fail_all();
        assert_eq!(f.watchers(), 0);
        assert!(matches!(a.recv().await, Recv::Event(_)));
        assert!(matches!(a.recv().await, Recv::Failed));
        assert!(matches!(b.recv().await, Recv::Failed));
        // A feed turns it into an error ending the stream.
        let mut feed = Feed::new(Default::default(), f.subscribe("/c/"), 0).into_stream();
        f.publish(&[ev("/c/y", 2)]);
        f.fail_all();
        use futures::StreamExt;
        assert_eq!(feed.next().await.unwrap().unwrap().kv.key, "/c/y");
        assert!(matches!(feed.next().await, Some(Err(Error::Backend(_)))));
        assert!(feed.next().await.is_none());
    }
}
