//! The embedded store's redb file: opened with a small page cache to run (reads are served from memory), read
//! whole at start.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{backend, decode, KV, META};
use crate::store::{KeyValue, Result};

/// redb's page cache. Reads are served from memory (`State`), so redb is read only at open and by checkpoints;
/// its default cache (1 GiB) kept most of the file resident for nothing: 16 MiB holds the pages checkpoints touch.
const REDB_CACHE_BYTES: usize = 16 << 20;

/// Free space the store file may hold beyond its live data before an open compacts it.
const COMPACT_SLACK: u64 = 64 << 20;

/// Whether a file of `size` bytes holding `live` bytes of keys and values is worth compacting: when more than half
/// of it is free and that is over [`COMPACT_SLACK`] (compacting 600 MB of live data at every start took seconds).
pub fn worth_compacting(size: u64, live: u64) -> bool {
    size > 2 * live + COMPACT_SLACK
}

pub fn open_redb(path: &Path) -> std::result::Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(path)
}

/// Every stored key and value, the checkpoint's revision, and the bytes they take (keys and values).
pub fn read_all(db: &Database) -> Result<(BTreeMap<String, KeyValue>, i64, u64)> {
    let (mut current, mut revision, mut live) = (BTreeMap::new(), 0, 0u64);
    let r = db.begin_read().map_err(backend)?;
    for item in r.open_table(KV).map_err(backend)?.iter().map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        live += (k.value().len() + v.value().len()) as u64;
        if let Some(kv) = decode(k.value(), v.value()) {
            current.insert(k.value().to_string(), kv);
        }
    }
    if let Some(v) = r
        .open_table(META)
        .map_err(backend)?
        .get("revision")
        .map_err(backend)?
    {
        revision = v.value();
    }
    Ok((current, revision, live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_file_mostly_free_and_by_more_than_the_slack_is_compacted() {
        let mb = 1 << 20;
        assert!(
            !worth_compacting(27 * mb, mb),
            "27 MB for 1 MB live: within the slack"
        );
        assert!(!worth_compacting(602 * mb, 578 * mb), "a full file");
        assert!(worth_compacting(200 * mb, mb), "199 MB free");
        assert!(
            !worth_compacting(1200 * mb, 600 * mb),
            "half free, but not more"
        );
        assert!(worth_compacting(1300 * mb, 600 * mb));
    }
}
