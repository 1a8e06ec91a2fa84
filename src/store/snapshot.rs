//! Snapshots of a whole store, the same for both backends: every key with its value (as stored: encrypted values
//! stay encrypted) and revisions, read at one revision. The file is JSON lines - a header, one line per key, and a
//! trailer with the SHA-256 of everything before it - so a truncated or edited snapshot is refused by line, never
//! half restored.
//!
//! Restoring writes into an empty store only: into a new embedded store the keys keep their revisions exactly; into
//! etcd they are written afresh and the store carries on from the snapshot's revision (see `etcd::continue_from`),
//! so resourceVersions only grow for clients of the old store. Migration from the embedded store to etcd is a
//! snapshot of one restored into the other.

use std::io::{BufRead, Write};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{KeyValue, Store};

/// What the header's `format` says.
pub const MAGIC: &str = "capstan-store-snapshot";
/// The snapshot format this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("line {line}: {what}")]
    Bad { line: usize, what: String },
    #[error("the snapshot ends early (no trailer line): truncated?")]
    Truncated,
    #[error("the snapshot's checksum does not match: it was changed or damaged")]
    Checksum,
    #[error("reading the store: {0}")]
    Store(#[from] super::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    revision: i64,
    keys: usize,
    created: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    value: String,
    create: i64,
    #[serde(rename = "mod")]
    modified: i64,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    sha256: String,
}

/// A snapshot read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The store revision it was taken at.
    pub revision: i64,
    pub entries: Vec<KeyValue>,
}

/// Keys a snapshot leaves out: bookkeeping of one backend, not the cluster's data.
fn excluded(key: &str) -> bool {
    key == concat!("/", "capstan/revision-offset")
}

/// Reads every key of `store` at one revision.
pub async fn take(store: &dyn Store) -> Result<Snapshot, SnapshotError> {
    let all = store.list("", 0, None, 0).await?;
    let entries = all
        .kvs
        .into_iter()
        .filter(|kv| !excluded(&kv.key))
        .collect();
    Ok(Snapshot {
        revision: all.revision,
        entries,
    })
}

/// Writes `snap` in the snapshot format.
pub fn write(snap: &Snapshot, out: &mut impl Write) -> Result<(), SnapshotError> {
    let mut hasher = Hashing {
        inner: out,
        data: Vec::new(),
    };
    let header = Header {
        format: MAGIC.into(),
        version: VERSION,
        revision: snap.revision,
        keys: snap.entries.len(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    line(&mut hasher, &header)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    for kv in &snap.entries {
        let entry = Entry {
            key: kv.key.clone(),
            value: b64.encode(&kv.value),
            create: kv.create_revision,
            modified: kv.mod_revision,
        };
        line(&mut hasher, &entry)?;
    }
    let sha256 = crate::sys::sha256_hex(&hasher.data);
    let out = hasher.inner;
    let mut trailer = serde_json::to_vec(&Trailer { sha256 }).map_err(std::io::Error::other)?;
    trailer.push(b'\n');
    out.write_all(&trailer)?;
    out.flush()?;
    Ok(())
}

/// A writer that keeps what passed through, for the trailer's checksum.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    data: Vec<u8>,
}

fn line<W: Write>(w: &mut Hashing<'_, W>, v: &impl Serialize) -> Result<(), SnapshotError> {
    let mut bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    w.inner.write_all(&bytes)?;
    w.data.extend_from_slice(&bytes);
    Ok(())
}

/// Reads a snapshot, checking its header, every line, the count and the checksum.
pub fn read(input: impl BufRead) -> Result<Snapshot, SnapshotError> {
    let mut lines = input.split(b'\n').enumerate();
    let mut seen: Vec<u8> = Vec::new();
    let bad = |line: usize, what: String| SnapshotError::Bad {
        line: line + 1,
        what,
    };
    let (n, first) = lines.next().ok_or(SnapshotError::Truncated)?;
    let first = first?;
    let header: Header = serde_json::from_slice(&first)
        .map_err(|e| bad(n, format!("not a capstan store snapshot header: {e}")))?;
    if header.format != MAGIC {
        return Err(bad(
            n,
            format!("format is {:?}, not {MAGIC:?}", header.format),
        ));
    }
    if header.version > VERSION {
        return Err(bad(
            n,
            format!(
                "snapshot format version {} is newer than this capstan reads ({VERSION})",
                header.version
            ),
        ));
    }
    seen.extend_from_slice(&first);
    seen.push(b'\n');
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut entries: Vec<KeyValue> = Vec::with_capacity(header.keys);
    for (n, raw) in lines {
        let raw = raw?;
        if entries.len() == header.keys {
            let trailer: Trailer = serde_json::from_slice(&raw)
                .map_err(|e| bad(n, format!("expected the trailer: {e}")))?;
            if trailer.sha256 != crate::sys::sha256_hex(&seen) {
                return Err(SnapshotError::Checksum);
            }
            return Ok(Snapshot {
                revision: header.revision,
                entries,
            });
        }
        let e: Entry = serde_json::from_slice(&raw).map_err(|e| bad(n, format!("{e}")))?;
        let value = b64
            .decode(&e.value)
            .map_err(|err| bad(n, format!("the value of {} is not base64: {err}", e.key)))?;
        if e.modified > header.revision || e.create > e.modified || e.create <= 0 {
            return Err(bad(
                n,
                format!(
                    "{}: revisions create {} / mod {} do not fit the snapshot's revision {}",
                    e.key, e.create, e.modified, header.revision
                ),
            ));
        }
        if entries.last().is_some_and(|last| last.key >= e.key) {
            return Err(bad(n, format!("{} is out of order or repeated", e.key)));
        }
        seen.extend_from_slice(&raw);
        seen.push(b'\n');
        entries.push(KeyValue {
            key: e.key,
            value: Arc::from(value),
            create_revision: e.create,
            mod_revision: e.modified,
        });
    }
    Err(SnapshotError::Truncated)
}

/// Writes a snapshot into a new embedded store at `path` (keys keep their revisions).
pub fn restore_embedded(snap: &Snapshot, path: &std::path::Path) -> Result<(), SnapshotError> {
    super::embedded::Embedded::load(path, &snap.entries, snap.revision)?;
    Ok(())
}

/// Writes a snapshot into an empty etcd store: it carries on from the snapshot's revision, and every key is created
/// (16 at a time). Returns how many keys were written.
#[cfg(feature = "etcd")]
pub async fn restore_etcd(
    snap: &Snapshot,
    mut store: super::etcd::Etcd,
) -> Result<usize, SnapshotError> {
    use futures::StreamExt;
    store.continue_from(snap.revision).await?;
    let store = Arc::new(store);
    let written = futures::stream::iter(snap.entries.iter().cloned())
        .map(|kv| {
            let store = store.clone();
            async move { store.create(&kv.key, kv.value.to_vec()).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let count = written.len();
    written.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Arc::from(format!("value of {key}").as_bytes()),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn sample() -> (Snapshot, Vec<u8>) {
        let snap = Snapshot {
            revision: 9,
            entries: vec![kv("/a", 3), kv("/b", 9)],
        };
        let mut out = Vec::new();
        write(&snap, &mut out).unwrap();
        (snap, out)
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let (snap, bytes) = sample();
        assert_eq!(read(bytes.as_slice()).unwrap(), snap);
    }

    #[test]
    fn truncated_or_changed_snapshots_are_refused_by_line() {
        let (_, bytes) = sample();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cut = lines[..3].join("\n") + "\n";
        assert!(matches!(
            read(cut.as_bytes()),
            Err(SnapshotError::Bad { line: 4, .. }) | Err(SnapshotError::Truncated)
        ));
        let edited = text.replace("\"mod\":3", "\"mod\":4");
        assert!(matches!(
            read(edited.as_bytes()),
            Err(SnapshotError::Checksum)
        ));
        let e = read("{\"nope\":1}\n".as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with("line 1:"), "{e}");
        let future = text.replace("\"version\":1", "\"version\":99");
        let e = read(future.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[tokio::test]
    async fn an_embedded_store_restored_from_a_snapshot_keeps_every_revision() {
        let dir = tempfile::tempdir().unwrap();
        let src = super::super::embedded::Embedded::open(&dir.path().join("a.redb")).unwrap();
        src.create("/x", b"1".to_vec()).await.unwrap();
        let r = src.create("/y", b"2".to_vec()).await.unwrap();
        src.update("/x", b"3".to_vec(), 0).await.unwrap();
        src.delete("/y", r).await.unwrap();
        let snap = take(&src).await.unwrap();
        assert_eq!(snap.revision, 4);
        let mut bytes = Vec::new();
        write(&snap, &mut bytes).unwrap();
        let back = read(bytes.as_slice()).unwrap();
        let target = dir.path().join("b.redb");
        restore_embedded(&back, &target).unwrap();
        // Restoring over an existing store is refused.
        assert!(restore_embedded(&back, &target).is_err());
        let restored = super::super::embedded::Embedded::open(&target).unwrap();
        assert_eq!(restored.revision().await.unwrap(), 4);
        let x = restored.get("/x").await.unwrap().unwrap();
        assert_eq!((x.create_revision, x.mod_revision), (1, 3));
        assert_eq!(&*x.value, b"3");
        assert!(restored.get("/y").await.unwrap().is_none());
        // The next write carries on after the snapshot's revision.
        assert_eq!(restored.create("/z", b"4".to_vec()).await.unwrap(), 5);
    }
}
