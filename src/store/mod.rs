//! The store: a revisioned key-value space shaped on etcd's semantics - one global revision that every write bumps;
//! get; list by prefix at a revision with limit/continue; create-if-absent; update and delete guarded by the object's
//! modification revision (compare-and-swap); watch from a revision (every event, in order, no gaps); compaction.
//! Only the API server uses it (the process wiring opens it). Backends: [`embedded`] (redb, the default) and, with
//! the `etcd` feature, `etcd` (several API servers on one etcd).
//! The [`conformance`] suite is what any backend must pass.

pub mod conformance;
pub mod embedded;
pub mod encrypted;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
mod etcd_watch;
pub mod fanout;
pub mod layout;
pub mod snapshot;

use std::sync::Arc;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("watcher fell behind and was closed")]
    WatcherTooSlow,
    #[error("store backend: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stored value with etcd's revision bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Arc<[u8]>,
    /// Revision at which the key was (last) created.
    pub create_revision: i64,
    /// Revision of the last write to the key - the object's resourceVersion.
    pub mod_revision: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change. For a delete, `kv` holds the last value with `mod_revision` set to the deleting revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// One page of a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: i64,
    /// Keys after the last one returned (0 when complete).
    pub remaining: usize,
}

/// Events of a watch, in revision order. An `Err` ends the stream; dropping it ends the watch.
pub type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Event>> + Send>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of a key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix`, in key order, as of `revision` (0 = current), starting after `start_after`, at most
    /// `limit` of them (0 = all).
    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult>;

    /// As [`Store::list`], except that `remaining` need only be 0 when no key follows the page and more than 0 when
    /// some do: a backend may skip counting them (a paged list knows how many are left from its first page).
    async fn list_more(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        self.list(prefix, revision, start_after, limit).await
    }

    /// Creates a key that must not exist. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64>;

    /// Replaces a key whose `mod_revision` must equal `expected` (0 = unconditional). Returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64>;

    /// Deletes a key whose `mod_revision` must equal `expected` (0 = unconditional). Returns the deleting revision
    /// and the deleted value.
    async fn delete(&self, key: &str, expected: i64) -> Result<(i64, KeyValue)>;

    /// Streams every change under `prefix` with a revision greater than `after`.
    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream>;

    /// The current global revision.
    async fn revision(&self) -> Result<i64>;

    /// Forgets history at and before `revision`: watching or listing from there is then `Compacted`.
    async fn compact(&self, revision: i64) -> Result<()>;
}

/// Allows conformance tests and callers to hold any backend.
pub type DynStore = Arc<dyn Store>;
