//! Images in containerd: storing an archive's or a registry's blobs in the content store (with the garbage
//! collection labels containerd's own client sets: a manifest refers to its config and layers, a config to its
//! unpacked snapshot), naming the image, and unpacking its layers into the snapshotter on the client side -
//! prepare a snapshot on the parent layer, apply the layer through the diff service, commit it under its chain id -
//! since containerd 1.6 has no transfer service. All of it under a lease, so nothing is collected half-made.
//! [`ContainerdRuntime::resolve`] applies `imagePullPolicy`.

use std::collections::HashMap;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLease, DeleteRequest as DeleteLease,
    GetImageRequest, Image, InfoRequest, ReadContentRequest, UpdateImageRequest,
    WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use serde_json::Value;

use super::{failed, Containerd, ContainerdRuntime};
use crate::image::Loaded;
use crate::node::runtime::RuntimeError;

/// An image ready to run: its name, manifest digest, config, and the chain id of its top layer's snapshot.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub digest: String,
    pub chain: String,
    pub config: Value,
}

/// The chain ids of an image's layers (OCI image spec: `chain(n) = sha256(chain(n-1) + " " + diff_id(n))`).
pub fn chain_ids(config: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for diff in config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let diff = diff.as_str().unwrap_or("");
        let next = match out.last() {
            None => diff.to_string(),
            Some(parent) => crate::image::digest(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn media_type(manifest: &Value) -> String {
    manifest["mediaType"]
        .as_str()
        .unwrap_or(crate::image::OCI_MANIFEST)
        .to_string()
}

fn parse(what: &str, data: &[u8]) -> Result<Value, RuntimeError> {
    serde_json::from_slice(data).map_err(|e| RuntimeError::Start(format!("{what}: {e}")))
}

impl Containerd {
    async fn lease(&self) -> Result<String, RuntimeError> {
        let expire = chrono::Utc::now() + chrono::Duration::hours(1);
        let id = format!("capstan-{}", uuid::Uuid::new_v4());
        LeasesClient::new(self.channel.clone())
            .create(self.req(CreateLease {
                id: id.clone(),
                labels: HashMap::from([(
                    "containerd.io/gc.expire".to_string(),
                    expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )]),
            }))
            .await
            .map_err(failed("creating a lease"))?;
        Ok(id)
    }

    async fn drop_lease(&self, id: &str) {
        let _ = LeasesClient::new(self.channel.clone())
            .delete(self.req(DeleteLease {
                id: id.into(),
                sync: false,
            }))
            .await;
    }

    async fn has_blob(&self, digest: &str) -> bool {
        ContentClient::new(self.channel.clone())
            .info(self.req(InfoRequest {
                digest: digest.into(),
            }))
            .await
            .is_ok()
    }

    /// Reads a blob from the content store.
    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.req(ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(failed(format!("reading {digest}")))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(failed(format!("reading {digest}")))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    /// Writes a blob (with its garbage-collection labels) unless the store has it.
    async fn write_blob(
        &self,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), RuntimeError> {
        const CHUNK: usize = 1 << 20;
        let total = data.len() as i64;
        let r#ref = format!("capstan-{digest}");
        let mut msgs: Vec<WriteContentRequest> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| WriteContentRequest {
                action: 1, // write
                r#ref: r#ref.clone(),
                total,
                expected: digest.into(),
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            })
            .collect();
        msgs.push(WriteContentRequest {
            action: 2, // commit
            r#ref,
            total,
            expected: digest.into(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        // Another writer of the same blob (a parallel import) holds its ref for a while: wait for it to finish.
        let mut attempts = 0;
        loop {
            match self.write_once(msgs.clone(), lease).await {
                Ok(()) => return Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) if s.code() == Code::Unavailable && attempts < 600 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if self.has_blob(digest).await {
                        return Ok(());
                    }
                }
                Err(s) => return Err(failed(format!("writing {digest}"))(s)),
            }
        }
    }

    async fn write_once(
        &self,
        msgs: Vec<WriteContentRequest>,
        lease: &str,
    ) -> Result<(), containerd_client::tonic::Status> {
        let mut responses = ContentClient::new(self.channel.clone())
            .write(self.leased(tokio_stream::iter(msgs), lease))
            .await?
            .into_inner();
        while responses.message().await?.is_some() {}
        Ok(())
    }

    async fn snapshot_exists(&self, key: &str) -> bool {
        self.snapshots()
            .stat(self.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.into(),
            }))
            .await
            .is_ok()
    }

    /// Unpacks the layers of `manifest` into the snapshotter; returns the top layer's chain id.
    async fn unpack(
        &self,
        manifest: &Value,
        config: &Value,
        lease: &str,
    ) -> Result<String, RuntimeError> {
        let chains = chain_ids(config);
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        if chains.len() != layers.len() || chains.is_empty() {
            return Err(RuntimeError::Start(format!(
                "the image has {} layers and {} diff ids in its config",
                layers.len(),
                chains.len()
            )));
        }
        let mut parent = String::new();
        for (layer, chain) in layers.iter().zip(&chains) {
            if !self.snapshot_exists(chain).await {
                let key = format!("capstan-extract-{}-{chain}", uuid::Uuid::new_v4());
                let mounts = self
                    .snapshots()
                    .prepare(self.leased(
                        PrepareSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            key: key.clone(),
                            parent: parent.clone(),
                            labels: HashMap::new(),
                        },
                        lease,
                    ))
                    .await
                    .map_err(failed(format!("preparing a snapshot for layer {chain}")))?
                    .into_inner()
                    .mounts;
                let digest = layer["digest"].as_str().unwrap_or("").to_string();
                let applied = DiffClient::new(self.channel.clone())
                    .apply(self.leased(
                        ApplyRequest {
                            diff: Some(Descriptor {
                                media_type: layer["mediaType"].as_str().unwrap_or("").into(),
                                digest: digest.clone(),
                                size: layer["size"].as_i64().unwrap_or(0),
                                annotations: HashMap::new(),
                            }),
                            mounts,
                            ..Default::default()
                        },
                        lease,
                    ))
                    .await;
                let committed = match applied {
                    Ok(_) => {
                        self.snapshots()
                            .commit(self.leased(
                                CommitSnapshotRequest {
                                    snapshotter: self.snapshotter.clone(),
                                    name: chain.clone(),
                                    key: key.clone(),
                                    labels: HashMap::new(),
                                },
                                lease,
                            ))
                            .await
                    }
                    Err(s) => Err(s),
                };
                if let Err(s) = committed {
                    let _ = self
                        .snapshots()
                        .remove(self.req(RemoveSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            key,
                        }))
                        .await;
                    // Another unpack of the same layer won the race: its snapshot serves as well.
                    if s.code() != Code::AlreadyExists {
                        return Err(failed(format!("unpacking layer {digest}"))(s));
                    }
                }
            }
            parent = chain.clone();
        }
        Ok(parent)
    }

    /// Stores the images of `loaded` (an imported archive or a pull) and unpacks them.
    pub async fn store(&self, loaded: &Loaded) -> Result<Vec<Resolved>, RuntimeError> {
        let lease = self.lease().await?;
        let result = self.store_leased(loaded, &lease).await;
        self.drop_lease(&lease).await;
        result
    }

    async fn store_leased(
        &self,
        loaded: &Loaded,
        lease: &str,
    ) -> Result<Vec<Resolved>, RuntimeError> {
        let blob = |d: &str| {
            loaded
                .blobs
                .get(d)
                .ok_or_else(|| RuntimeError::Start(format!("blob {d} is missing")))
        };
        let mut out = Vec::new();
        for (name, digest) in &loaded.images {
            let manifest_data = blob(digest)?;
            let manifest = parse(&format!("manifest {digest}"), manifest_data)?;
            let config_digest = manifest["config"]["digest"].as_str().unwrap_or("");
            let config = parse(&format!("config {config_digest}"), blob(config_digest)?)?;
            let chains = chain_ids(&config);
            let top = chains.last().cloned().unwrap_or_default();
            let mut manifest_labels = HashMap::from([(
                "containerd.io/gc.ref.content.config".to_string(),
                config_digest.to_string(),
            )]);
            for (i, l) in manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let d = l["digest"].as_str().unwrap_or("");
                manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.into());
                if !self.has_blob(d).await {
                    self.write_blob(d, blob(d)?, HashMap::new(), lease).await?;
                }
            }
            self.write_blob(
                config_digest,
                blob(config_digest)?,
                HashMap::from([(
                    format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                    top.clone(),
                )]),
                lease,
            )
            .await?;
            self.write_blob(digest, manifest_data, manifest_labels, lease)
                .await?;
            let chain = self.unpack(&manifest, &config, lease).await?;
            let image = Image {
                name: name.clone(),
                target: Some(Descriptor {
                    media_type: media_type(&manifest),
                    digest: digest.clone(),
                    size: manifest_data.len() as i64,
                    annotations: HashMap::new(),
                }),
                ..Default::default()
            };
            let mut images = ImagesClient::new(self.channel.clone());
            match images
                .create(self.leased(
                    CreateImageRequest {
                        image: Some(image.clone()),
                        source_date_epoch: None,
                    },
                    lease,
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {
                    images
                        .update(self.req(UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                            source_date_epoch: None,
                        }))
                        .await
                        .map_err(failed(format!("updating image {name}")))?;
                }
                Err(s) => return Err(failed(format!("creating image {name}"))(s)),
            }
            out.push(Resolved {
                name: name.clone(),
                digest: digest.clone(),
                chain,
                config,
            });
        }
        Ok(out)
    }

    /// The manifest digest image `name` points at, if containerd has it.
    pub async fn image_digest(&self, name: &str) -> Result<Option<(String, String)>, RuntimeError> {
        match ImagesClient::new(self.channel.clone())
            .get(self.req(GetImageRequest { name: name.into() }))
            .await
        {
            Ok(r) => Ok(r
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(|t| (t.digest, t.media_type))),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(failed(format!("looking up image {name}"))(s)),
        }
    }

    /// Opens a stored image: its manifest (this platform's, from an index), config, and unpacked snapshot (unpacking
    /// it if the snapshot went).
    async fn open(&self, name: &str, digest: &str, media: &str) -> Result<Resolved, RuntimeError> {
        let mut digest = digest.to_string();
        let mut manifest = parse(
            &format!("manifest {digest}"),
            &self.read_blob(&digest).await?,
        )?;
        if crate::image::is_index(media, &manifest) {
            digest = crate::image::pick_platform(&manifest).ok_or_else(|| {
                RuntimeError::Pull(format!(
                    "image {name:?} has no manifest for linux/{}",
                    crate::image::oci_arch()
                ))
            })?;
            manifest = parse(
                &format!("manifest {digest}"),
                &self.read_blob(&digest).await?,
            )?;
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or("");
        let config = parse(
            &format!("config {config_digest}"),
            &self.read_blob(config_digest).await?,
        )?;
        let top = chain_ids(&config).last().cloned().unwrap_or_default();
        let chain = if self.snapshot_exists(&top).await {
            top
        } else {
            let lease = self.lease().await?;
            let r = self.unpack(&manifest, &config, &lease).await;
            self.drop_lease(&lease).await;
            r?
        };
        Ok(Resolved {
            name: name.to_string(),
            digest,
            chain,
            config,
        })
    }
}

impl ContainerdRuntime {
    /// The image a container runs, by `imagePullPolicy`: `Always` pulls; `IfNotPresent` pulls when containerd does
    /// not have it; `Never` never pulls.
    pub async fn resolve(
        &self,
        reference: &str,
        policy: &str,
        logins: &[(String, crate::image::registry::Credentials)],
    ) -> Result<Resolved, RuntimeError> {
        let name = crate::image::normalize(reference);
        let mut cache = self.images.lock().await;
        if policy != "Always" {
            if let Some((digest, media)) = self.client.image_digest(&name).await? {
                if let Some(hit) = cache.get(&name).filter(|r| r.digest == digest) {
                    return Ok(hit.clone());
                }
                let opened = self.client.open(&name, &digest, &media).await?;
                cache.insert(name.clone(), opened.clone());
                return Ok(opened);
            }
            if policy == "Never" {
                return Err(RuntimeError::NeverPull(format!(
                    "Container image \"{reference}\" is not present with pull policy of Never"
                )));
            }
        }
        let login = crate::image::registry::credentials_for(&name, logins);
        let loaded = self.registry.pull(&name, login).await.map_err(|e| {
            RuntimeError::Pull(format!("failed to pull and unpack image \"{name}\": {e}"))
        })?;
        let stored =
            self.client.store(&loaded).await.map_err(|e| {
                RuntimeError::Pull(format!("failed to unpack image \"{name}\": {e}"))
            })?;
        let image = stored
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::Pull(format!("pulling \"{name}\" gave no image")))?;
        cache.insert(name, image.clone());
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let config = serde_json::json!({"rootfs": {"diff_ids": ["sha256:a", "sha256:b"]}});
        let ids = chain_ids(&config);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], crate::image::digest(b"sha256:a sha256:b"));
    }
}
