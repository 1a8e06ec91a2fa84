//! The embedded backend: redb for durability, an in-memory index for reads and watches. One writer thread takes
//! every pending write, checks them in order against the current state, commits them in ONE redb transaction with
//! an fsync (group commit: concurrent writers share it), then publishes them. A write is acknowledged only after
//! its fsync, so it survives `kill -9`. History since the last compaction is kept in memory for watches and for
//! lists at older revisions; after a restart, history starts at the stored revision.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use super::{Error, Event, EventType, KeyValue, ListResult, Result, Store, WatchStream};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// How many events of history to keep before compacting automatically.
const HISTORY_MAX: usize = 100_000;
/// How many to keep after an automatic compaction.
const HISTORY_KEEP: usize = 80_000;
/// The most writes committed in one transaction.
const BATCH_MAX: usize = 1024;

struct State {
    current: BTreeMap<String, KeyValue>,
    history: VecDeque<Arc<Event>>,
    revision: i64,
    compacted: i64,
}

enum Op {
    Create(String, Vec<u8>),
    Update(String, Vec<u8>, i64),
    Delete(String, i64),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<(i64, Option<KeyValue>)>>,
}

/// The redb-backed store.
pub struct Embedded {
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<Event>>,
    writes: std::sync::mpsc::Sender<Request>,
}

fn backend<E: std::fmt::Display>(e: E) -> Error {
    Error::Backend(e.to_string())
}

fn encode(create: i64, modr: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modr.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Option<KeyValue> {
    if raw.len() < 16 {
        return None;
    }
    let create = i64::from_le_bytes(raw[0..8].try_into().ok()?);
    let modr = i64::from_le_bytes(raw[8..16].try_into().ok()?);
    Some(KeyValue {
        key: key.to_string(),
        value: Arc::from(&raw[16..]),
        create_revision: create,
        mod_revision: modr,
    })
}

impl Embedded {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(backend)?;
        let mut current = BTreeMap::new();
        let mut revision = 0;
        {
            let w = db.begin_write().map_err(backend)?;
            w.open_table(KV).map_err(backend)?;
            w.open_table(META).map_err(backend)?;
            w.commit().map_err(backend)?;
            let r = db.begin_read().map_err(backend)?;
            let kv = r.open_table(KV).map_err(backend)?;
            for item in kv.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                if let Some(kv) = decode(k.value(), v.value()) {
                    current.insert(k.value().to_string(), kv);
                }
            }
            let meta = r.open_table(META).map_err(backend)?;
            if let Some(v) = meta.get("revision").map_err(backend)? {
                revision = v.value();
            }
        }
        let state = Arc::new(RwLock::new(State {
            current,
            history: VecDeque::new(),
            revision,
            compacted: revision,
        }));
        let (events, _) = broadcast::channel(1 << 16);
        let (writes, rx) = std::sync::mpsc::channel::<Request>();
        let st = state.clone();
        let ev = events.clone();
        std::thread::Builder::new()
            .name("capstan-store-writer".into())
            .spawn(move || writer(db, st, ev, rx))
            .map_err(backend)?;
        Ok(Embedded {
            state,
            events,
            writes,
        })
    }

    async fn submit(&self, op: Op) -> Result<(i64, Option<KeyValue>)> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(Request { op, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

/// The writer loop: batch, check, commit once, publish, acknowledge.
fn writer(
    db: Database,
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<Event>>,
    rx: std::sync::mpsc::Receiver<Request>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Check each op against the current state plus the effects of earlier ops in this batch.
        let mut revision = state.read().unwrap_or_else(|e| e.into_inner()).revision;
        let mut overlay: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
        let mut outcomes: Vec<Result<Event>> = Vec::with_capacity(batch.len());
        {
            let s = state.read().unwrap_or_else(|e| e.into_inner());
            let lookup =
                |overlay: &BTreeMap<String, Option<KeyValue>>, k: &str| -> Option<KeyValue> {
                    match overlay.get(k) {
                        Some(v) => v.clone(),
                        None => s.current.get(k).cloned(),
                    }
                };
            for req in &batch {
                let outcome = match &req.op {
                    Op::Create(k, v) => match lookup(&overlay, k) {
                        Some(_) => Err(Error::AlreadyExists(k.clone())),
                        None => {
                            revision += 1;
                            let kv = KeyValue {
                                key: k.clone(),
                                value: Arc::from(v.as_slice()),
                                create_revision: revision,
                                mod_revision: revision,
                            };
                            overlay.insert(k.clone(), Some(kv.clone()));
                            Ok(Event {
                                kind: EventType::Put,
                                kv,
                                prev: None,
                            })
                        }
                    },
                    Op::Update(k, v, expected) => match lookup(&overlay, k) {
                        None => Err(Error::NotFound(k.clone())),
                        Some(prev) if *expected != 0 && prev.mod_revision != *expected => {
                            Err(Error::Conflict {
                                key: k.clone(),
                                expected: *expected,
                                actual: prev.mod_revision,
                            })
                        }
                        Some(prev) => {
                            revision += 1;
                            let kv = KeyValue {
                                key: k.clone(),
                                value: Arc::from(v.as_slice()),
                                create_revision: prev.create_revision,
                                mod_revision: revision,
                            };
                            overlay.insert(k.clone(), Some(kv.clone()));
                            Ok(Event {
                                kind: EventType::Put,
                                kv,
                                prev: Some(prev),
                            })
                        }
                    },
                    Op::Delete(k, expected) => match lookup(&overlay, k) {
                        None => Err(Error::NotFound(k.clone())),
                        Some(prev) if *expected != 0 && prev.mod_revision != *expected => {
                            Err(Error::Conflict {
                                key: k.clone(),
                                expected: *expected,
                                actual: prev.mod_revision,
                            })
                        }
                        Some(prev) => {
                            revision += 1;
                            let mut kv = prev.clone();
                            kv.mod_revision = revision;
                            overlay.insert(k.clone(), None);
                            Ok(Event {
                                kind: EventType::Delete,
                                kv,
                                prev: Some(prev),
                            })
                        }
                    },
                };
                outcomes.push(outcome);
            }
        }
        // Persist the successful ones in one transaction.
        let persisted = (|| -> Result<()> {
            if !outcomes.iter().any(|o| o.is_ok()) {
                return Ok(());
            }
            let mut w = db.begin_write().map_err(backend)?;
            w.set_durability(Durability::Immediate).map_err(backend)?;
            {
                let mut kv = w.open_table(KV).map_err(backend)?;
                for ev in outcomes.iter().flatten() {
                    match ev.kind {
                        EventType::Put => {
                            kv.insert(
                                ev.kv.key.as_str(),
                                encode(ev.kv.create_revision, ev.kv.mod_revision, &ev.kv.value)
                                    .as_slice(),
                            )
                            .map_err(backend)?;
                        }
                        EventType::Delete => {
                            kv.remove(ev.kv.key.as_str()).map_err(backend)?;
                        }
                    }
                }
                let mut meta = w.open_table(META).map_err(backend)?;
                meta.insert("revision", revision).map_err(backend)?;
            }
            w.commit().map_err(backend)
        })();
        if let Err(e) = persisted {
            tracing::error!(error = %e, "store commit failed");
            for req in batch {
                let _ = req.reply.send(Err(e.clone()));
            }
            continue;
        }
        // Publish, then acknowledge.
        {
            let mut s = state.write().unwrap_or_else(|e| e.into_inner());
            for ev in outcomes.iter().flatten() {
                match ev.kind {
                    EventType::Put => {
                        s.current.insert(ev.kv.key.clone(), ev.kv.clone());
                    }
                    EventType::Delete => {
                        s.current.remove(&ev.kv.key);
                    }
                }
                let ev = Arc::new(ev.clone());
                s.history.push_back(ev.clone());
                let _ = events.send(ev);
            }
            s.revision = revision;
            if s.history.len() > HISTORY_MAX {
                while s.history.len() > HISTORY_KEEP {
                    if let Some(e) = s.history.pop_front() {
                        s.compacted = e.revision();
                    }
                }
            }
        }
        for (req, outcome) in batch.into_iter().zip(outcomes) {
            let _ = req
                .reply
                .send(outcome.map(|ev| (ev.kv.mod_revision, ev.prev)));
        }
    }
}

/// One watcher's position: its backlog, then the live broadcast.
struct Feed {
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    last: i64,
    prefix: String,
    done: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        if let Some(ev) = self.backlog.pop_front() {
            return Some(Ok((*ev).clone()));
        }
        loop {
            match self.live.recv().await {
                Ok(ev) => {
                    if ev.revision() <= self.last || !in_prefix(&ev.kv.key, &self.prefix) {
                        continue;
                    }
                    return Some(Ok((*ev).clone()));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    return Some(Err(Error::WatcherTooSlow));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn in_prefix(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

#[async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(s.current.get(key).cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let start = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let take = if limit == 0 { usize::MAX } else { limit };
        if revision == 0 || revision >= s.revision {
            let mut kvs = Vec::new();
            let mut remaining = 0;
            for (k, v) in s.current.range((start, Bound::Unbounded)) {
                if !in_prefix(k, prefix) {
                    break;
                }
                if kvs.len() < take {
                    kvs.push(v.clone());
                } else {
                    remaining += 1;
                }
            }
            return Ok(ListResult {
                kvs,
                revision: s.revision,
                remaining,
            });
        }
        if revision < s.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: s.compacted,
            });
        }
        // Rebuild the prefix range as of `revision` by undoing later events.
        let mut view: BTreeMap<String, KeyValue> = s
            .current
            .range((Bound::Included(prefix.to_string()), Bound::Unbounded))
            .take_while(|(k, _)| in_prefix(k, prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ev in s.history.iter().rev() {
            if ev.revision() <= revision {
                break;
            }
            if !in_prefix(&ev.kv.key, prefix) {
                continue;
            }
            match &ev.prev {
                Some(p) => {
                    view.insert(p.key.clone(), p.clone());
                }
                None => {
                    view.remove(&ev.kv.key);
                }
            }
        }
        let mut kvs = Vec::new();
        let mut remaining = 0;
        for (_, v) in view.range((start, Bound::Unbounded)) {
            if kvs.len() < take {
                kvs.push(v.clone());
            } else {
                remaining += 1;
            }
        }
        Ok(ListResult {
            kvs,
            revision,
            remaining,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        Ok(self.submit(Op::Create(key.to_string(), value)).await?.0)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64> {
        Ok(self
            .submit(Op::Update(key.to_string(), value, expected))
            .await?
            .0)
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<(i64, KeyValue)> {
        let (rev, prev) = self.submit(Op::Delete(key.to_string(), expected)).await?;
        let prev = prev.ok_or_else(|| Error::NotFound(key.to_string()))?;
        Ok((rev, prev))
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream> {
        let (backlog, live, last) = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if after < s.compacted {
                return Err(Error::Compacted {
                    requested: after,
                    compacted: s.compacted,
                });
            }
            let backlog: VecDeque<Arc<Event>> = s
                .history
                .iter()
                .filter(|e| e.revision() > after && in_prefix(&e.kv.key, prefix))
                .cloned()
                .collect();
            // Subscribing under the lock: nothing is published between the backlog and the live feed.
            (backlog, self.events.subscribe(), s.revision.max(after))
        };
        let state = Feed {
            backlog,
            live,
            last,
            prefix: prefix.to_string(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut f| async move {
                let item = f.next().await?;
                Some((item, f))
            },
        )))
    }

    async fn revision(&self) -> Result<i64> {
        Ok(self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revision)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if revision > s.revision {
            return Err(Error::Backend(format!(
                "cannot compact to future revision {revision}"
            )));
        }
        while s.history.front().is_some_and(|e| e.revision() <= revision) {
            s.history.pop_front();
        }
        s.compacted = s.compacted.max(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store: crate::store::DynStore =
            Arc::new(Embedded::open(&dir.path().join("db")).unwrap());
        crate::store::conformance::run(store).await;
    }

    #[tokio::test]
    async fn data_and_revision_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let rev = {
            let s = Embedded::open(&path).unwrap();
            s.create("/a", b"1".to_vec()).await.unwrap();
            let r = s.update("/a", b"2".to_vec(), 0).await.unwrap();
            s.create("/b", b"x".to_vec()).await.unwrap();
            s.delete("/b", 0).await.unwrap();
            assert!(r > 0);
            s.revision().await.unwrap()
        };
        // The writer thread holds the database until its channel closes; wait for the file lock to go.
        let s = loop {
            match Embedded::open(&path) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        assert_eq!(s.revision().await.unwrap(), rev);
        let a = s.get("/a").await.unwrap().unwrap();
        assert_eq!(&*a.value, b"2");
        assert!(s.get("/b").await.unwrap().is_none());
        assert!(matches!(
            s.watch("/", rev - 1).await,
            Err(Error::Compacted { .. })
        ));
    }
}
