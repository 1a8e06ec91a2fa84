//! The embedded backend: a write-ahead log for durability, redb for checkpoints, an in-memory index for reads and
//! watches - the shape of etcd itself (WAL + bbolt). One writer thread takes every pending write, checks them in
//! order against the current state, appends them to the WAL with ONE fdatasync (group commit: concurrent writers
//! share it), then publishes them. A write is acknowledged only after that sync, so it survives `kill -9`. About once
//! a second the accumulated changes are committed to redb (durably) and the WAL is truncated; at start the WAL is
//! replayed over the last checkpoint. History since the last compaction is kept in memory for watches and for lists
//! at older revisions; after a restart, history starts at the stored revision.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::fanout;
use super::{Error, Event, EventType, KeyValue, ListResult, Result, Store, WatchStream};
use file::{open_redb, read_all, worth_compacting};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The on-disk format this build writes (META `format`): a store of a newer format is refused at open, one of an
/// older format is upgraded. Format 1: `kv` maps a key to create revision, mod revision (little-endian i64s) and
/// the value; `meta` holds `revision` and `format`.
pub const FORMAT: i64 = 1;

/// How many events of history to keep before compacting automatically.
const HISTORY_MAX: usize = 100_000;
/// How many to keep after an automatic compaction.
const HISTORY_KEEP: usize = 80_000;
/// The history is bounded by bytes too (keys and values it holds, shared ones counted each time): a busy cluster of
/// large objects must not hold 100,000 of them.
const HISTORY_MAX_BYTES: usize = 32 << 20;
/// How many bytes to keep after an automatic compaction.
const HISTORY_KEEP_BYTES: usize = 24 << 20;

/// What an event of the history holds, in bytes (for [`HISTORY_MAX_BYTES`]).
fn event_bytes(e: &Event) -> usize {
    e.kv.key.len() + e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()) + 64
}
/// The most writes committed in one transaction.
const BATCH_MAX: usize = 1024;

struct State {
    current: BTreeMap<String, KeyValue>,
    history: VecDeque<Arc<Event>>,
    /// The bytes `history` holds ([`event_bytes`]).
    history_bytes: usize,
    revision: i64,
    compacted: i64,
}

impl State {
    /// Drops the oldest event of the history; compacted moves past it.
    fn drop_oldest(&mut self) {
        if let Some(e) = self.history.pop_front() {
            self.history_bytes = self.history_bytes.saturating_sub(event_bytes(&e));
            self.compacted = self.compacted.max(e.revision());
        }
    }
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

/// The embedded store. Cheap to share: every handle points at the same state.
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    fanout: Arc<fanout::Fanout>,
    /// Writes waiting for the next commit, and whether some caller is committing (the leader).
    queue: std::sync::Mutex<Queue>,
    durable: std::sync::Mutex<Durable>,
    /// How committed events reach the watchers.
    publish: Publish,
}

/// How committed events reach the watchers: through a publisher thread (woken from outside the async runtime, they
/// spread over all its workers instead of piling onto the committing one), or by the committing caller itself - the
/// deterministic simulation, where nothing may happen on another thread.
enum Publish {
    Thread(std::sync::mpsc::Sender<Vec<Arc<Event>>>),
    Inline(Arc<fanout::Fanout>),
}

impl Publish {
    fn send(&self, batch: Vec<Arc<Event>>) {
        match self {
            Publish::Thread(tx) => {
                let _ = tx.send(batch);
            }
            Publish::Inline(fanout) => fanout.publish(&batch),
        }
    }
}

#[derive(Default)]
struct Queue {
    pending: Vec<Request>,
    leader: bool,
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
        Self::open_with(path, false)
    }

    /// Opens the store for the deterministic simulation: the caller that commits a write also publishes it (no
    /// publisher thread), so watchers hear of writes in an order fixed by the simulation's single thread.
    pub fn open_inline(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, inline: bool) -> Result<Self> {
        // Every stored object (Secrets included) is in this file: only its owner reads it.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(backend)?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(backend)?;
        }
        let in_use = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Backend(format!(
                "{} is in use by another process (a running capstan server?)",
                path.display()
            )),
            other => Error::Backend(format!("{}: {other}", path.display())),
        };
        // Read (and compacted) through redb's default cache - a small one took 18 s at 150,000 pods - then reopened.
        let started = std::time::Instant::now();
        let mut db = Database::create(path).map_err(in_use)?;
        Self::check_format(&db, path)?;
        let (mut current, mut revision, live) = read_all(&db)?;
        let loaded = started.elapsed();
        // Space freed since the last start goes back to the file system once that is worth a rewrite.
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if worth_compacting(size, live) {
            if let Err(e) = db.compact() {
                tracing::warn!(error = %e, "compacting the store file at open");
            }
        }
        drop(db);
        let compact_ms = (started.elapsed() - loaded).as_millis() as u64;
        tracing::info!(
            objects = current.len(),
            file_mb = size >> 20,
            live_mb = live >> 20,
            load_ms = loaded.as_millis() as u64,
            compact_ms,
            "store file read"
        );
        let db = open_redb(path).map_err(in_use)?;
        // Replay what the WAL segments hold beyond the checkpoint.
        let mut replayed = BTreeMap::new();
        for (_, seg) in segments(path) {
            let Ok(bytes) = std::fs::read(&seg) else {
                continue;
            };
            let replay = wal::decode_all(&bytes).map_err(|c| {
                Error::Backend(format!(
                    "WAL segment {} is damaged at byte {} (valid records follow at byte {}): refusing to start \
                     rather than drop the acknowledged writes after it. Restore a snapshot (`capstan store snapshot \
                     restore`), or truncate the segment to {} bytes to keep only what precedes the damage",
                    seg.display(),
                    c.offset,
                    c.next_valid,
                    c.offset
                ))
            })?;
            if replay.torn > 0 {
                tracing::warn!(segment = %seg.display(), bytes = replay.torn,
                    "dropped a torn last write (never acknowledged) from the WAL");
            }
            for rec in replay.records {
                if rec.revision <= revision {
                    continue;
                }
                revision = rec.revision;
                match rec.kv {
                    Some(kv) => {
                        current.insert(rec.key.clone(), kv.clone());
                        replayed.insert(rec.key, Some(kv));
                    }
                    None => {
                        current.remove(&rec.key);
                        replayed.insert(rec.key, None);
                    }
                }
            }
        }
        let durable = Durable::open(db, path, replayed, revision)?;
        let state = RwLock::new(State {
            current,
            history: VecDeque::new(),
            history_bytes: 0,
            revision,
            compacted: revision,
        });
        let fanout = Arc::new(fanout::Fanout::default());
        let publish = if inline {
            Publish::Inline(fanout.clone())
        } else {
            let (publish, published) = std::sync::mpsc::channel::<Vec<Arc<Event>>>();
            let to = fanout.clone();
            std::thread::Builder::new()
                .name("capstan-store-publish".into())
                .spawn(move || {
                    for batch in published {
                        to.publish(&batch);
                    }
                })
                .map_err(backend)?;
            Publish::Thread(publish)
        };
        let inner = Inner {
            state,
            fanout,
            publish,
            queue: std::sync::Mutex::new(Queue::default()),
            durable: std::sync::Mutex::new(durable),
        };
        Ok(Embedded {
            inner: Arc::new(inner),
        })
    }

    /// Writes `entries` (with their revisions) and the store revision `revision` into a new store at `path`: a
    /// restored snapshot. Refused when a store exists there.
    pub fn load(path: &Path, entries: &[KeyValue], revision: i64) -> Result<()> {
        if path.exists() || !segments(path).is_empty() {
            return Err(Error::Backend(format!(
                "{} exists: restore only into a data directory without a store",
                path.display()
            )));
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::Backend(format!("{}: {e}", path.display())))?;
        }
        let db = open_redb(path).map_err(backend)?;
        Self::check_format(&db, path)?;
        let mut w = db.begin_write().map_err(backend)?;
        w.set_durability(Durability::Immediate).map_err(backend)?;
        {
            let mut kv = w.open_table(KV).map_err(backend)?;
            for e in entries {
                kv.insert(
                    e.key.as_str(),
                    encode(e.create_revision, e.mod_revision, &e.value).as_slice(),
                )
                .map_err(backend)?;
            }
            let mut meta = w.open_table(META).map_err(backend)?;
            meta.insert("revision", revision).map_err(backend)?;
        }
        w.commit().map_err(backend)
    }

    /// Checks the store's format (refusing a newer one) and records this build's in a new or older store.
    fn check_format(db: &Database, path: &Path) -> Result<()> {
        let w = db.begin_write().map_err(backend)?;
        w.open_table(KV).map_err(backend)?;
        {
            let mut meta = w.open_table(META).map_err(backend)?;
            let found = meta.get("format").map_err(backend)?.map(|v| v.value());
            match found {
            Some(f) if f > FORMAT => {
                return Err(Error::Backend(format!(
                    "{} is in store format {f}, written by a newer capstan; this one reads formats up to {FORMAT}:                      upgrade capstan (nothing was changed)",
                    path.display()
                )))
            }
            Some(f) if f == FORMAT => {}
            _ => {
                meta.insert("format", FORMAT).map_err(backend)?;
            }
        }
        }
        w.commit().map_err(backend)
    }

    /// Group commit without a hand-off: the first writer to find no commit in progress becomes the leader and
    /// commits everything queued (its own write included) until the queue is empty; writers arriving meanwhile just
    /// wait for their answer. A single client never waits for another thread; many share each sync. A leader that
    /// has served several rounds passes the rest to a blocking thread, so no caller waits long for others.
    async fn submit(&self, op: Op) -> Result<(i64, Option<KeyValue>)> {
        let (reply, rx) = oneshot::channel();
        let lead = {
            let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.pending.push(Request { op, reply });
            !std::mem::replace(&mut q.leader, true)
        };
        if lead {
            let inner = self.inner.clone();
            if !inner.drain(LEADER_ROUNDS) {
                tokio::task::spawn_blocking(move || inner.drain(usize::MAX));
            }
        }
        rx.await.map_err(|_| Error::Closed)?
    }
}

/// How many commits a leading caller makes before handing the queue to a blocking thread.
const LEADER_ROUNDS: usize = 4;

impl Inner {
    /// Commits queued writes, at most `rounds` batches. Returns true when the queue was emptied (leadership
    /// released), false when the caller must keep draining elsewhere.
    fn drain(&self, rounds: usize) -> bool {
        for _ in 0..rounds {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.pending.is_empty() {
                    q.leader = false;
                    return true;
                }
                let n = q.pending.len().min(BATCH_MAX);
                q.pending.drain(..n).collect::<Vec<_>>()
            };
            let mut d = self.durable.lock().unwrap_or_else(|e| e.into_inner());
            commit(batch, &mut d, &self.state, &self.publish);
            d.maybe_checkpoint();
        }
        false
    }
}

/// The compare-and-swap check of an update or delete: the key must exist, at `expected` unless that is 0.
fn guard(key: &str, current: Option<KeyValue>, expected: i64) -> Result<KeyValue> {
    match current {
        None => Err(Error::NotFound(key.to_string())),
        Some(prev) if expected != 0 && prev.mod_revision != expected => Err(Error::Conflict {
            key: key.to_string(),
            expected,
            actual: prev.mod_revision,
        }),
        Some(prev) => Ok(prev),
    }
}

/// One group commit: check each write in order, persist the batch with one sync, publish, acknowledge.
fn commit(batch: Vec<Request>, db: &mut Durable, state: &RwLock<State>, publish: &Publish) {
    let (outcomes, revision) = check(&batch, state);
    // Persist the successful ones with one sync.
    if let Err(e) = db.append(outcomes.iter().flatten(), revision) {
        tracing::error!(error = %e, "store commit failed");
        for req in batch {
            let _ = req.reply.send(Err(e.clone()));
        }
        return;
    }
    // Publish, then acknowledge.
    let published = apply(state, &outcomes, revision);
    if !published.is_empty() {
        publish.send(published);
    }
    for (req, outcome) in batch.into_iter().zip(outcomes) {
        let _ = req
            .reply
            .send(outcome.map(|ev| (ev.kv.mod_revision, ev.prev)));
    }
}

/// Checks each write of a batch against the current state plus the effects of the earlier writes in the batch;
/// returns each write's event (or why it fails) and the revision after the batch.
fn check(batch: &[Request], state: &RwLock<State>) -> (Vec<Result<Event>>, i64) {
    let s = state.read().unwrap_or_else(|e| e.into_inner());
    let mut revision = s.revision;
    let mut overlay: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    let mut outcomes: Vec<Result<Event>> = Vec::with_capacity(batch.len());
    let lookup = |overlay: &BTreeMap<String, Option<KeyValue>>, k: &str| -> Option<KeyValue> {
        match overlay.get(k) {
            Some(v) => v.clone(),
            None => s.current.get(k).cloned(),
        }
    };
    for req in batch {
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
            Op::Update(k, v, expected) => guard(k, lookup(&overlay, k), *expected).map(|prev| {
                revision += 1;
                let kv = KeyValue {
                    key: k.clone(),
                    value: Arc::from(v.as_slice()),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                };
                overlay.insert(k.clone(), Some(kv.clone()));
                Event {
                    kind: EventType::Put,
                    kv,
                    prev: Some(prev),
                }
            }),
            Op::Delete(k, expected) => guard(k, lookup(&overlay, k), *expected).map(|prev| {
                revision += 1;
                let mut kv = prev.clone();
                kv.mod_revision = revision;
                overlay.insert(k.clone(), None);
                Event {
                    kind: EventType::Delete,
                    kv,
                    prev: Some(prev),
                }
            }),
        };
        outcomes.push(outcome);
    }
    (outcomes, revision)
}

/// Applies a persisted batch to the live state and the watch history (trimmed past [`HISTORY_MAX`]); returns the
/// events to publish.
fn apply(state: &RwLock<State>, outcomes: &[Result<Event>], revision: i64) -> Vec<Arc<Event>> {
    let mut published = Vec::with_capacity(outcomes.len());
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
        s.history_bytes += event_bytes(&ev);
        s.history.push_back(ev.clone());
        published.push(ev);
    }
    s.revision = revision;
    if s.history.len() > HISTORY_MAX || s.history_bytes > HISTORY_MAX_BYTES {
        while !s.history.is_empty()
            && (s.history.len() > HISTORY_KEEP || s.history_bytes > HISTORY_KEEP_BYTES)
        {
            s.drop_oldest();
        }
    }
    published
}

/// How often accumulated changes are committed to redb.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// ... or after this many changed keys.
const CHECKPOINT_KEYS: usize = 20_000;

/// The WAL segment files of a store at `base` (`store.redb` -> `store.wal.00000001`, ...), oldest first.
fn segments(base: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let dir = base.parent().unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.",
        base.with_extension("wal")
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("wal")
    );
    let mut out: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let seq = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn segment_path(base: &Path, seq: u64) -> std::path::PathBuf {
    let wal = base.with_extension("wal");
    let mut name = wal
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{seq:08}"));
    wal.with_file_name(name)
}

/// Changes to commit to redb, and the WAL segments they make obsolete.
struct CheckpointJob {
    changes: BTreeMap<String, Option<KeyValue>>,
    revision: i64,
    obsolete: Vec<std::path::PathBuf>,
}

/// Commits changes to redb durably.
fn write_checkpoint(
    db: &Database,
    changes: &BTreeMap<String, Option<KeyValue>>,
    revision: i64,
) -> Result<()> {
    let mut w = db.begin_write().map_err(backend)?;
    w.set_durability(Durability::Immediate).map_err(backend)?;
    {
        let mut kv = w.open_table(KV).map_err(backend)?;
        for (k, v) in changes {
            match v {
                Some(v) => {
                    kv.insert(
                        k.as_str(),
                        encode(v.create_revision, v.mod_revision, &v.value).as_slice(),
                    )
                    .map_err(backend)?;
                }
                None => {
                    kv.remove(k.as_str()).map_err(backend)?;
                }
            }
        }
        let mut meta = w.open_table(META).map_err(backend)?;
        meta.insert("revision", revision).map_err(backend)?;
    }
    w.commit().map_err(backend)
}

/// The durable side: the current WAL segment; checkpoints into redb run on their own thread, so writers never wait
/// for them. A checkpoint starts a new segment; the old ones are deleted once redb holds their changes.
struct Durable {
    base: std::path::PathBuf,
    wal: std::fs::File,
    seq: u64,
    pending: BTreeMap<String, Option<KeyValue>>,
    revision: i64,
    last_checkpoint: std::time::Instant,
    checkpoints: Option<std::sync::mpsc::Sender<CheckpointJob>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

impl Durable {
    /// Opens the store's durable side after recovery: `recovered` (replayed from old segments) is committed to redb
    /// now, and the old segments are removed.
    fn open(
        db: Database,
        base: &Path,
        recovered: BTreeMap<String, Option<KeyValue>>,
        revision: i64,
    ) -> Result<Self> {
        let old = segments(base);
        if !recovered.is_empty() {
            write_checkpoint(&db, &recovered, revision)?;
        }
        for (_, p) in &old {
            let _ = std::fs::remove_file(p);
        }
        let seq = old.last().map_or(1, |(s, _)| s + 1);
        let wal = Self::create_segment(base, seq)?;
        let (tx, rx) = std::sync::mpsc::channel::<CheckpointJob>();
        let handle = std::thread::Builder::new()
            .name("capstan-store-checkpoint".into())
            .spawn(move || {
                // After a failed checkpoint no segment is deleted again: the next start replays them all.
                let mut failed = false;
                for job in rx {
                    match write_checkpoint(&db, &job.changes, job.revision) {
                        Ok(()) if !failed => {
                            for p in job.obsolete {
                                let _ = std::fs::remove_file(p);
                            }
                        }
                        Ok(()) => {}
                        Err(e) => {
                            failed = true;
                            tracing::error!(error = %e, "store checkpoint failed; the WAL is kept");
                        }
                    }
                }
            })
            .map_err(backend)?;
        Ok(Durable {
            base: base.to_path_buf(),
            wal,
            seq,
            pending: BTreeMap::new(),
            revision,
            last_checkpoint: std::time::Instant::now(),
            checkpoints: Some(tx),
            checkpointer: Some(handle),
        })
    }

    fn create_segment(base: &Path, seq: u64) -> Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(segment_path(base, seq))
            .map_err(backend)?;
        // Make the new file's directory entry durable too.
        if let Some(dir) = base.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(f)
    }

    /// Appends events to the WAL and syncs once.
    fn append<'a>(&mut self, events: impl Iterator<Item = &'a Event>, revision: i64) -> Result<()> {
        use std::io::Write;
        let mut buf = Vec::new();
        for ev in events {
            let kv = (ev.kind == EventType::Put).then_some(&ev.kv);
            wal::encode(&mut buf, ev.revision(), &ev.kv.key, kv);
            self.pending.insert(ev.kv.key.clone(), kv.cloned());
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.wal.write_all(&buf).map_err(backend)?;
        self.wal.sync_data().map_err(backend)?;
        self.revision = revision;
        Ok(())
    }

    /// Starts a checkpoint when one is due: a new segment takes the next writes, and the checkpoint thread commits
    /// the accumulated changes and then deletes the older segments.
    fn maybe_checkpoint(&mut self) {
        let due = self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
            || self.pending.len() >= CHECKPOINT_KEYS;
        if !due || self.pending.is_empty() {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "starting a store checkpoint failed; will retry");
        }
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.last_checkpoint = std::time::Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let next = self.seq + 1;
        let wal = Self::create_segment(&self.base, next)?;
        let obsolete: Vec<std::path::PathBuf> = segments(&self.base)
            .into_iter()
            .filter(|(s, _)| *s < next)
            .map(|(_, p)| p)
            .collect();
        self.wal = wal;
        self.seq = next;
        let job = CheckpointJob {
            changes: std::mem::take(&mut self.pending),
            revision: self.revision,
            obsolete,
        };
        if let Some(tx) = &self.checkpoints {
            let _ = tx.send(job);
        }
        Ok(())
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        let _ = self.checkpoint();
        self.checkpoints.take();
        if let Some(h) = self.checkpointer.take() {
            let _ = h.join();
        }
    }
}

mod file;
pub mod wal;

fn in_prefix(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

/// The least key greater than every key starting with `prefix`: the prefix with its last character moved one up,
/// when that is an ASCII character below DEL (every prefix the API server uses ends with `/`); None otherwise.
fn prefix_end(prefix: &str) -> Option<String> {
    let last = *prefix.as_bytes().last()?;
    (last < 0x7f).then(|| format!("{}{}", &prefix[..prefix.len() - 1], (last + 1) as char))
}

impl Embedded {
    /// One page of a list (see [`Store::list`]); `count`: count the keys after it, rather than only see whether
    /// there are any.
    fn list_page(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
        count: bool,
    ) -> Result<ListResult> {
        let s = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let start = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let take = if limit == 0 { usize::MAX } else { limit };
        let from = match &start {
            Bound::Excluded(k) => Bound::Excluded(k.as_str()),
            Bound::Included(k) => Bound::Included(k.as_str()),
            Bound::Unbounded => Bound::Unbounded,
        };
        // The first key past every key under the prefix: the range then needs no look at each key (counting the
        // keys after a page touches only the tree's nodes, not every key's bytes).
        // (Not when the page starts past it: a range's start may not lie beyond its end.)
        let first = match &start {
            Bound::Excluded(k) | Bound::Included(k) => k.as_str(),
            Bound::Unbounded => prefix,
        };
        let end = prefix_end(prefix).filter(|e| first < e.as_str());
        let upper = match &end {
            Some(e) => Bound::Excluded(e.as_str()),
            None => Bound::Unbounded,
        };
        let under = |(k, _): &(&String, &KeyValue)| end.is_some() || in_prefix(k, prefix);
        if revision == 0 || revision >= s.revision {
            let mut range = s.current.range::<str, _>((from, upper)).take_while(under);
            let kvs: Vec<KeyValue> = range.by_ref().take(take).map(|(_, v)| v.clone()).collect();
            // Counting what follows walks every key left: only when asked.
            let remaining = if count {
                range.count()
            } else {
                usize::from(range.next().is_some())
            };
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
        // The keys written after `revision`, each with its state at `revision` (the value before its first later
        // write; None: it did not exist). Only those differ from the current state, so one page of a paged list
        // costs the page and the writes since the list began - not a copy of the whole range.
        let mut then: BTreeMap<&str, Option<&KeyValue>> = BTreeMap::new();
        for ev in s.history.iter().rev() {
            if ev.revision() <= revision {
                break;
            }
            if in_prefix(&ev.kv.key, prefix) {
                // Walking backwards, the last insert is the earliest event after `revision`.
                then.insert(&ev.kv.key, ev.prev.as_ref());
            }
        }
        let mut now = s
            .current
            .range::<str, _>((from, upper))
            .take_while(under)
            .map(|(k, v)| (k.as_str(), v))
            .peekable();
        let mut past = then.range::<&str, _>((from, Bound::Unbounded)).peekable();
        let mut kvs = Vec::new();
        let mut remaining = 0;
        loop {
            // Merge both in key order; where both have a key, its state at `revision` wins.
            let value = match (now.peek(), past.peek()) {
                (None, None) => break,
                (Some(_), None) if kvs.len() >= take => {
                    // Only keys unchanged since `revision` are left: count them (or see that there are some).
                    remaining += if count {
                        now.count()
                    } else {
                        usize::from(now.next().is_some())
                    };
                    break;
                }
                (Some((_, v)), None) => {
                    let v = Some(*v);
                    now.next();
                    v
                }
                (None, Some(_)) => past.next().and_then(|(_, v)| *v),
                (Some((kn, v)), Some((kp, _))) => {
                    if kn < *kp {
                        let v = Some(*v);
                        now.next();
                        v
                    } else {
                        if kn == *kp {
                            now.next();
                        }
                        past.next().and_then(|(_, v)| *v)
                    }
                }
            };
            let Some(v) = value else { continue };
            if kvs.len() < take {
                kvs.push(v.clone());
            } else {
                remaining += 1;
                if !count {
                    break;
                }
            }
        }
        Ok(ListResult {
            kvs,
            revision,
            remaining,
        })
    }
}

#[async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let s = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(s.current.get(key).cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        self.list_page(prefix, revision, start_after, limit, true)
    }

    async fn list_more(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        self.list_page(prefix, revision, start_after, limit, false)
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
            let s = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
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
            (
                backlog,
                self.inner.fanout.subscribe(prefix),
                s.revision.max(after),
            )
        };
        Ok(fanout::Feed::new(backlog, live, last).into_stream())
    }

    async fn revision(&self) -> Result<i64> {
        Ok(self
            .inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revision)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut s = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        if revision > s.revision {
            return Err(Error::Backend(format!(
                "cannot compact to future revision {revision}"
            )));
        }
        while s.history.front().is_some_and(|e| e.revision() <= revision) {
            s.drop_oldest();
        }
        s.compacted = s.compacted.max(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
