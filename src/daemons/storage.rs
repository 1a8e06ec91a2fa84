//! `capstan store`: snapshots and migration of the cluster's store.
//!
//! - `snapshot save FILE` asks a running server for a snapshot (through its API, so it works on both backends and
//!   needs no downtime) and keeps it only once it reads back whole;
//! - `snapshot restore FILE` writes one into a new data directory's embedded store, or into an empty etcd, with the
//!   servers stopped;
//! - `migrate --data-dir DIR --to etcd://...` copies a stopped server's embedded store into an empty etcd: every
//!   object, with resourceVersions that keep growing for clients that knew the old store. Start the server again
//!   with `--store etcd://...` on the same data directory: its keys and certificates are still there.

use std::path::{Path, PathBuf};

use crate::client::Client;
use crate::store::snapshot::{self, Snapshot, SnapshotError};

use super::server::StoreChoice;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: SnapshotError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("asking the server for a snapshot: {0}")]
    Client(Box<crate::client::Error>),
    #[error("{0}")]
    Store(String),
}

/// What a save, restore or migration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub keys: usize,
    pub revision: i64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Saves a snapshot of the cluster `client` reaches to `file` (written beside it first, checked, then renamed).
pub async fn save(client: &Client, file: &Path) -> Result<Summary, StorageError> {
    let resp = client
        .open(concat!("/", "capstan/v1/store/snapshot"))
        .await
        .map_err(|e| StorageError::Client(Box::new(e)))?;
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| StorageError::Store(format!("reading the snapshot: {e}")))?;
    let snap = snapshot::read(bytes.as_ref()).map_err(|source| StorageError::Snapshot {
        path: PathBuf::from("(the server's answer)"),
        source,
    })?;
    let partial = file.with_extension("partial");
    crate::sys::write_private(&partial, &bytes).map_err(io(&partial))?;
    std::fs::rename(&partial, file).map_err(io(file))?;
    Ok(Summary {
        keys: snap.entries.len(),
        revision: snap.revision,
    })
}

fn read(file: &Path) -> Result<Snapshot, StorageError> {
    let f = std::fs::File::open(file).map_err(io(file))?;
    snapshot::read(std::io::BufReader::new(f)).map_err(|source| StorageError::Snapshot {
        path: file.to_path_buf(),
        source,
    })
}

/// Restores the snapshot in `file` into `target`: the embedded store of `data_dir` (which must have none) or an
/// empty etcd.
pub async fn restore(
    file: &Path,
    target: &StoreChoice,
    data_dir: &Path,
) -> Result<Summary, StorageError> {
    let snap = read(file)?;
    write_into(&snap, target, data_dir).await
}

async fn write_into(
    snap: &Snapshot,
    target: &StoreChoice,
    data_dir: &Path,
) -> Result<Summary, StorageError> {
    let summary = Summary {
        keys: snap.entries.len(),
        revision: snap.revision,
    };
    match target {
        StoreChoice::Embedded => {
            std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
            let path = data_dir.join("store.redb");
            snapshot::restore_embedded(snap, &path)
                .map_err(|source| StorageError::Snapshot { path, source })?;
        }
        #[cfg(feature = "etcd")]
        StoreChoice::Etcd { url, .. } => {
            let etcd = super::server::connect_etcd(target)
                .await
                .map_err(|e| StorageError::Store(e.to_string()))?;
            snapshot::restore_etcd(snap, etcd)
                .await
                .map_err(|source| StorageError::Snapshot {
                    path: PathBuf::from(url),
                    source,
                })?;
        }
        #[cfg(not(feature = "etcd"))]
        StoreChoice::Etcd { url, .. } => {
            return Err(StorageError::Store(format!(
                "{url}: this capstan was built without etcd support (build with `--features etcd`)"
            )))
        }
    }
    Ok(summary)
}

/// Copies the embedded store of a stopped server's `data_dir` into the empty store `to`.
pub async fn migrate(data_dir: &Path, to: &StoreChoice) -> Result<Summary, StorageError> {
    if matches!(to, StoreChoice::Embedded) {
        return Err(StorageError::Store(
            "--to must name another store (etcd://HOST:PORT)".into(),
        ));
    }
    let path = data_dir.join("store.redb");
    if !path.exists() {
        return Err(StorageError::Store(format!(
            "{}: no embedded store here to migrate",
            path.display()
        )));
    }
    let snap = {
        let store = crate::store::embedded::Embedded::open(&path)
            .map_err(|e| StorageError::Store(e.to_string()))?;
        snapshot::take(&store)
            .await
            .map_err(|source| StorageError::Snapshot {
                path: path.clone(),
                source,
            })?
    };
    let summary = write_into(&snap, to, data_dir).await?;
    // The embedded store stays as it was (a way back); it is renamed so a server started without --store etcd
    // does not quietly carry on from the old state.
    let kept = data_dir.join("store.redb.migrated");
    std::fs::rename(&path, &kept).map_err(io(&path))?;
    Ok(summary)
}
