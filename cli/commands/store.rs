//! `capstan store`: snapshots of the cluster's store (`snapshot save` through a running server; `snapshot restore`
//! into a new data directory or an empty etcd) and `migrate` from the embedded store to etcd.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use capstan::client::Client;
use capstan::daemons::server::StoreChoice;
use capstan::daemons::storage;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Snapshots: `save FILE` (from a running server) and `restore FILE` (into a new store, servers stopped).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Copies a stopped server's embedded store (--data-dir) into an empty etcd; then start the server with
    /// `--store etcd://...` on the same data directory.
    Migrate {
        /// The store to copy into: etcd://HOST:PORT[,HOST:PORT...].
        #[arg(long)]
        to: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Saves every object of the cluster (values as stored; Secrets stay encrypted) to FILE.
    Save { file: PathBuf },
    /// Restores FILE into the embedded store of --data-dir (which must have none) or into an empty etcd (--store).
    Restore {
        file: PathBuf,
        /// `embedded` (the data directory) or etcd://HOST:PORT[,HOST:PORT...].
        #[arg(long, default_value = "embedded")]
        store: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// How to reach an etcd (`capstan server` and `capstan store` take the same flags).
#[derive(Args, Clone, Debug)]
pub struct EtcdArgs {
    /// A prefix for every key in etcd (several clusters on one etcd).
    #[arg(long, default_value = "")]
    pub etcd_prefix: String,
    /// The CA that signed etcd's serving certificate (PEM).
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// A client certificate for etcd (PEM), with --etcd-keyfile.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// The key of --etcd-certfile (PEM).
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
}

impl EtcdArgs {
    /// The store `store` names (`embedded` or `etcd://...`), with these flags.
    pub fn choice(&self, store: &str) -> Result<StoreChoice> {
        let mut choice = StoreChoice::parse(store).map_err(|e| anyhow!("{e}"))?;
        if let StoreChoice::Etcd {
            prefix,
            ca_file,
            cert_file,
            key_file,
            ..
        } = &mut choice
        {
            *prefix = self.etcd_prefix.clone();
            *ca_file = self.etcd_cafile.clone();
            *cert_file = self.etcd_certfile.clone();
            *key_file = self.etcd_keyfile.clone();
        }
        Ok(choice)
    }
}

/// Whether the command needs a running server (and so a kubeconfig).
pub fn store_needs_server(args: &StoreArgs) -> bool {
    matches!(
        args.command,
        StoreCommand::Snapshot {
            command: SnapshotCommand::Save { .. }
        }
    )
}

pub async fn store_save(client: &Client, args: StoreArgs) -> Result<()> {
    let StoreCommand::Snapshot {
        command: SnapshotCommand::Save { file },
    } = args.command
    else {
        return Err(anyhow!("internal: not a snapshot save"));
    };
    let s = storage::save(client, &file)
        .await
        .with_context(|| format!("saving a snapshot to {}", file.display()))?;
    println!(
        "saved {} keys at revision {} to {}",
        s.keys,
        s.revision,
        file.display()
    );
    Ok(())
}

pub async fn store_offline(data_dir: &Path, args: StoreArgs) -> Result<()> {
    match args.command {
        StoreCommand::Snapshot {
            command: SnapshotCommand::Restore { file, store, etcd },
        } => {
            let target = etcd.choice(&store)?;
            let s = storage::restore(&file, &target, data_dir)
                .await
                .with_context(|| format!("restoring {}", file.display()))?;
            let into = match &target {
                StoreChoice::Embedded => data_dir.join("store.redb").display().to_string(),
                StoreChoice::Etcd { url, .. } => url.clone(),
            };
            println!(
                "restored {} keys (revision {}) into {into}",
                s.keys, s.revision
            );
            Ok(())
        }
        StoreCommand::Migrate { to, etcd } => {
            let target = etcd.choice(&to)?;
            let s = storage::migrate(data_dir, &target)
                .await
                .with_context(|| format!("migrating {} to {to}", data_dir.display()))?;
            println!(
                "copied {} keys (revision {}) to {to}; the old store is kept as {}. Start the server with --store {to}",
                s.keys,
                s.revision,
                data_dir.join("store.redb.migrated").display()
            );
            Ok(())
        }
        StoreCommand::Snapshot {
            command: SnapshotCommand::Save { .. },
        } => Err(anyhow!("internal: a save needs the server")),
    }
}
