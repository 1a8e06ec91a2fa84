//! Pod volumes on the node (the kubelet's volume manager): each volume of a pod becomes a directory (or file) on the
//! node - `emptyDir` under the pod's directory (a tmpfs for `medium: Memory` when running as root), `hostPath` as
//! given (checked or created per its `type`), `configMap` and `secret` projected as files (keys or `items`, with
//! `defaultMode`/`mode`) and rewritten atomically when the object changes, `projected` volumes (those sources plus
//! `downwardAPI` fields and `serviceAccountToken`s the node asks the API server for, renewed before they expire),
//! `downwardAPI` volumes, and `persistentVolumeClaim` as the bound
//! volume's path. Each container's `volumeMounts` then become bind mounts (with `subPath` and `readOnly`) that the
//! runtime sets up in the container's own mount namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::env::{config_map_bytes, secret_bytes, Lookup};
use super::{ConfigError, Shared};
use crate::api::core::{
    Container, DownwardApiVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    ProjectedKeys, Volume, VolumeProjection,
};
use crate::client::Api;

/// One bind mount for a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    /// Skipped (not refused) when the process runtime, without root, cannot create its target on the host: the
    /// ServiceAccount volume every pod gets, which non-root pods then simply do not see.
    #[serde(default)]
    pub optional: bool,
}

/// Projected files: relative path -> (content, mode if not the default).
pub type Files = BTreeMap<String, (Vec<u8>, Option<u32>)>;

/// Where a pod's volumes of one type live on the node.
fn volume_dir(shared: &Shared, uid: &str, ty: &str, name: &str) -> PathBuf {
    shared
        .pods_dir
        .join(uid)
        .join("volumes")
        .join(ty)
        .join(name)
}

/// Makes every volume of the pod ready on the node; returns volume name -> host path. An error names the volume and
/// why (a missing ConfigMap, an unbound claim, a hostPath of the wrong type), and the container waits.
pub async fn prepare(shared: &Shared, pod: &Pod) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(path) = prepare_one(shared, pod, v).await? {
            out.insert(v.name.clone(), path);
        }
    }
    Ok(out)
}

/// One volume's host path; `None` for types that are stored, not mounted (the API server warned when they were set).
async fn prepare_one(
    shared: &Shared,
    pod: &Pod,
    v: &Volume,
) -> Result<Option<PathBuf>, ConfigError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let ns = pod.metadata.namespace();
    let name = &v.name;
    let path = if let Some(e) = &v.empty_dir {
        let dir = volume_dir(shared, uid, "empty-dir", name);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(ConfigError::io(format!("volume {name:?}")))?;
            if e.medium.as_deref() == Some("Memory") {
                mount_tmpfs(&dir, e.size_limit.as_ref().map(|q| q.0.as_str()));
            }
            // Writable by whatever user the containers run as, as the kubelet makes it.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
        }
        dir
    } else if let Some(h) = &v.host_path {
        host_path(name, &h.path, h.type_.as_deref().unwrap_or(""))?
    } else if let Some(c) = &v.config_map {
        let cm_name = c.name.as_deref().unwrap_or("");
        let data = match shared.config_map(ns, cm_name).await? {
            Some(cm) => Some(config_map_bytes(&cm)?),
            None => None,
        };
        let source = Projected {
            kind: "configmap",
            name: cm_name,
            items: c.items.as_deref(),
            optional: c.optional.unwrap_or(false),
            default_mode: c.default_mode,
        };
        let dir = volume_dir(shared, uid, "configmap", name);
        source.write(&dir, data)?;
        dir
    } else if let Some(sec) = &v.secret {
        let secret_name = sec.secret_name.as_deref().unwrap_or("");
        let data = match shared.secret(ns, secret_name).await? {
            Some(s) => Some(secret_bytes(&s)?),
            None => None,
        };
        let source = Projected {
            kind: "secret",
            name: secret_name,
            items: sec.items.as_deref(),
            optional: sec.optional.unwrap_or(false),
            default_mode: sec.default_mode,
        };
        let dir = memory_dir(volume_dir(shared, uid, "secret", name))?;
        source.write(&dir, data)?;
        dir
    } else if let Some(p) = &v.projected {
        let dir = memory_dir(volume_dir(shared, uid, "projected", name))?;
        let mode = p.default_mode.map_or(0o644, |m| m as u32);
        let mut files = Files::new();
        for source in p.sources.iter().flatten() {
            files.extend(source_files(shared, pod, source).await?);
        }
        project(&dir, &files, mode)?;
        dir
    } else if let Some(d) = &v.downward_api {
        let dir = volume_dir(shared, uid, "downward-api", name);
        let mode = d.default_mode.map_or(0o644, |m| m as u32);
        project(&dir, &downward_files(pod, d.items.as_deref())?, mode)?;
        dir
    } else if let Some(pvc) = &v.persistent_volume_claim {
        claim_path(shared, ns, &pvc.claim_name).await?
    } else {
        return Ok(None);
    };
    Ok(Some(path))
}

/// The files one source of a projected volume contributes: a Secret's or ConfigMap's keys, downward API fields, or
/// a ServiceAccount token.
async fn source_files(
    shared: &Shared,
    pod: &Pod,
    source: &VolumeProjection,
) -> Result<Files, ConfigError> {
    let ns = pod.metadata.namespace();
    if let Some(c) = &source.config_map {
        let name = c.name.as_deref().unwrap_or("");
        let data = match shared.config_map(ns, name).await? {
            Some(cm) => Some(config_map_bytes(&cm)?),
            None => None,
        };
        return Projected::of("configmap", c).present(data);
    }
    if let Some(c) = &source.secret {
        let name = c.name.as_deref().unwrap_or("");
        let data = match shared.secret(ns, name).await? {
            Some(s) => Some(secret_bytes(&s)?),
            None => None,
        };
        return Projected::of("secret", c).present(data);
    }
    if let Some(d) = &source.downward_api {
        return downward_files(pod, d.items.as_deref());
    }
    if let Some(t) = &source.service_account_token {
        check_relative(&t.path)?;
        let token = shared.tokens.token_for(shared, pod, t).await?;
        return Ok(Files::from([(t.path.clone(), (token.into_bytes(), None))]));
    }
    // clusterTrustBundle and podCertificate projections are not served.
    Ok(Files::new())
}

fn check_relative(path: &str) -> Result<(), ConfigError> {
    if path.is_empty() || path.split('/').any(|p| p == "..") || path.starts_with('/') {
        return Err(ConfigError::Invalid(format!(
            "items path {path:?} must be relative, without .."
        )));
    }
    Ok(())
}

/// Downward API items: pod fields (`fieldRef`; all labels or annotations as `key="value"` lines) as files.
fn downward_files(
    pod: &Pod,
    items: Option<&[DownwardApiVolumeFile]>,
) -> Result<Files, ConfigError> {
    let mut out = Files::new();
    for item in items.into_iter().flatten() {
        let path = item.path.as_str();
        check_relative(path)?;
        let mode = item.mode.map(|m| m as u32);
        let Some(field) = item.field_ref.as_ref().map(|f| f.field_path.as_str()) else {
            // resourceFieldRef needs a container's resources; only fieldRef is projected.
            continue;
        };
        let map = match field {
            "metadata.labels" => Some(pod.metadata.labels.as_ref()),
            "metadata.annotations" => Some(pod.metadata.annotations.as_ref()),
            _ => None,
        };
        let text = match map {
            Some(m) => m
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect::<String>(),
            None => super::env::field_ref(pod, field)?,
        };
        out.insert(path.to_string(), (text.into_bytes(), mode));
    }
    Ok(out)
}

/// The bind mounts of one container, from its volumeMounts and the prepared volumes.
pub fn mounts_for(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    pod: &Pod,
) -> Result<Vec<Mount>, ConfigError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let name = &m.name;
        let Some(base) = volumes.get(name) else {
            let declared = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| &v.name == name);
            if declared {
                continue;
            }
            return Err(ConfigError::Invalid(format!(
                "volumeMount {name:?}: no volume of that name in the pod"
            )));
        };
        let sub = m.sub_path.as_deref().unwrap_or("");
        if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "volumeMount {name:?}: subPath {sub:?} must be a relative path inside the volume"
            )));
        }
        let source = if sub.is_empty() {
            base.clone()
        } else {
            base.join(sub)
        };
        if !sub.is_empty() && !source.exists() {
            std::fs::create_dir_all(&source)
                .map_err(ConfigError::io(format!("subPath {sub:?}")))?;
        }
        out.push(Mount {
            source,
            optional: name.starts_with(crate::api::tokens::SERVICE_ACCOUNT_VOLUME)
                && m.mount_path.trim_end_matches('/') == crate::api::tokens::SERVICE_ACCOUNT_MOUNT,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only == Some(true),
        });
    }
    Ok(out)
}

fn host_path(name: &str, path: &str, ty: &str) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).ok();
    let bad = |what: &str| {
        Err(ConfigError::Invalid(format!(
            "volume {name:?}: hostPath type check failed: {path} is not {what}"
        )))
    };
    match ty {
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(&p)
                .map_err(ConfigError::io(format!("volume {name:?}: creating {path}")))?;
        }
        "FileOrCreate" if meta.is_none() => {
            if let Some(parent) = p.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::File::create(&p)
                .map_err(ConfigError::io(format!("volume {name:?}: creating {path}")))?;
        }
        "Directory" | "DirectoryOrCreate" if !meta.as_ref().is_some_and(|m| m.is_dir()) => {
            return bad("a directory")
        }
        "File" | "FileOrCreate" if !meta.as_ref().is_some_and(|m| m.is_file()) => {
            return bad("a file")
        }
        "Socket" | "CharDevice" | "BlockDevice" => {
            use std::os::unix::fs::FileTypeExt;
            let ft = meta.as_ref().map(|m| m.file_type());
            let ok = match ty {
                "Socket" => ft.is_some_and(|f| f.is_socket()),
                "CharDevice" => ft.is_some_and(|f| f.is_char_device()),
                _ => ft.is_some_and(|f| f.is_block_device()),
            };
            if !ok {
                return bad(&format!("a {ty}"));
            }
        }
        _ => {}
    }
    Ok(p)
}

async fn claim_path(shared: &Shared, ns: &str, claim: &str) -> Result<PathBuf, ConfigError> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(&shared.client, ns)
        .get_opt(claim)
        .await?
        .ok_or_else(|| ConfigError::NotFound {
            kind: "persistentvolumeclaim",
            name: claim.to_string(),
        })?;
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !bound || volume.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "persistentvolumeclaim \"{claim}\" is not bound"
        )));
    }
    let pv = Api::<PersistentVolume>::all(&shared.client)
        .get(volume)
        .await
        .map_err(|e| ConfigError::Invalid(format!("persistentvolume \"{volume}\": {e}")))?;
    let spec = pv.spec.as_ref();
    let path = [
        spec.and_then(|s| s.host_path.as_ref())
            .map(|h| h.path.as_str()),
        spec.and_then(|s| s.local.as_ref())
            .and_then(|l| l.0.get("path"))
            .and_then(|p| p.as_str()),
    ]
    .into_iter()
    .flatten()
    .find(|p| !p.is_empty())
    .ok_or_else(|| {
        ConfigError::Invalid(format!(
            "persistentvolume \"{volume}\" has no hostPath or local path this node can mount"
        ))
    })?;
    let p = PathBuf::from(path);
    if !p.exists() {
        std::fs::create_dir_all(&p).map_err(ConfigError::io(format!(
            "persistentvolume \"{volume}\": {path}"
        )))?;
    }
    Ok(p)
}

impl<'a> Projected<'a> {
    /// A Secret or ConfigMap source of a projected volume.
    fn of(kind: &'static str, keys: &'a ProjectedKeys) -> Self {
        Projected {
            kind,
            name: keys.name.as_deref().unwrap_or(""),
            items: keys.items.as_deref(),
            optional: keys.optional.unwrap_or(false),
            default_mode: None,
        }
    }
}

/// A ConfigMap or Secret volume: which object, which keys, and how the files are written.
struct Projected<'a> {
    /// `configmap` or `secret`, as messages name them.
    kind: &'static str,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
    default_mode: Option<i32>,
}

impl Projected<'_> {
    /// Projects the object's keys (`data`: None when the object does not exist) into `dir`.
    fn write(
        &self,
        dir: &Path,
        data: Option<BTreeMap<String, Vec<u8>>>,
    ) -> Result<(), ConfigError> {
        let mode = self.default_mode.map_or(0o644, |m| m as u32);
        project(dir, &self.present(data)?, mode)
    }

    /// The files of the object (`data`: None when it does not exist, which only an optional source may be).
    fn present(&self, data: Option<BTreeMap<String, Vec<u8>>>) -> Result<Files, ConfigError> {
        match data {
            Some(d) => self.files(d),
            None if self.optional => Ok(Files::new()),
            None => Err(ConfigError::NotFound {
                kind: self.kind,
                name: self.name.to_string(),
            }),
        }
    }

    /// The files the object projects: every key, or only `items` (key -> path, optional mode).
    fn files(&self, all: BTreeMap<String, Vec<u8>>) -> Result<Files, ConfigError> {
        let Some(items) = self.items else {
            return Ok(all.into_iter().map(|(k, v)| (k, (v, None))).collect());
        };
        let mut out = BTreeMap::new();
        for item in items {
            let Some(bytes) = all.get(&item.key) else {
                if self.optional {
                    continue;
                }
                return Err(ConfigError::Invalid(format!(
                    "key {:?} not found in {} \"{}\"",
                    item.key, self.kind, self.name
                )));
            };
            let path = &item.path;
            if path.split('/').any(|p| p == "..") || path.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "items path {path:?} must be relative, without .."
                )));
            }
            out.insert(path.clone(), (bytes.clone(), item.mode.map(|m| m as u32)));
        }
        Ok(out)
    }
}

/// Writes projected files the way the kubelet does, so a running container sees a change all at once: the files go
/// into a fresh `..<stamp>` directory, the `..data` link is swapped to it atomically, and each top-level name is a
/// link through `..data`. Nothing is rewritten when nothing changed.
pub fn project(dir: &Path, files: &Files, default_mode: u32) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, source: std::io::Error| ConfigError::Io {
        what: format!("projecting {}: {what}", dir.display()),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    let data = dir.join("..data");
    // Unchanged?
    if data.exists() {
        let same = files
            .iter()
            .all(|(p, (bytes, _))| std::fs::read(data.join(p)).ok().as_ref() == Some(bytes))
            && count_files(&data) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh).map_err(|e| io("creating", e))?;
    for (path, (bytes, mode)) in files {
        let f = fresh.join(path);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(path, e))?;
        }
        std::fs::write(&f, bytes).map_err(|e| io(path, e))?;
        std::fs::set_permissions(
            &f,
            std::fs::Permissions::from_mode(mode.unwrap_or(default_mode)),
        )
        .map_err(|e| io(path, e))?;
    }
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io("linking", e))?;
    std::fs::rename(&tmp, &data).map_err(|e| io("swapping ..data", e))?;
    // Top-level names: a link per first path component; names no longer projected go.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(String::from))
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link).map_err(|e| io(t, e))?;
        }
    }
    for entry in std::fs::read_dir(dir)
        .map_err(|e| io("listing", e))?
        .flatten()
    {
        let n = entry.file_name().to_string_lossy().to_string();
        if !n.starts_with("..") && !tops.contains(&n) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// A tmpfs for a memory-backed emptyDir (root only; otherwise it stays a plain directory).
/// A volume directory in memory (a tmpfs, as root), as the kubelet keeps Secret and projected volumes: their
/// contents never reach the node's disk.
fn memory_dir(dir: PathBuf) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(&dir).map_err(ConfigError::io(format!("volume {}", dir.display())))?;
    // Not yet a mount point (new, or the machine restarted): its own device once mounted.
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if device(&dir) == dir.parent().and_then(device) {
        mount_tmpfs(&dir, None);
    }
    Ok(dir)
}

fn mount_tmpfs(dir: &Path, size: Option<&str>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        tracing::debug!(dir = %dir.display(), "a memory-backed volume is a plain directory without root");
        return;
    }
    let bytes = size
        .and_then(crate::api::parse_quantity_millis)
        .map(|m| m / 1000)
        .filter(|b| *b > 0);
    let opts = match bytes {
        Some(b) => format!("size={b}"),
        None => String::new(),
    };
    let (Ok(target), Ok(fs), Ok(data)) = (
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()),
        std::ffi::CString::new("tmpfs"),
        std::ffi::CString::new(opts),
    ) else {
        return;
    };
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        tracing::warn!(dir = %dir.display(), "tmpfs for emptyDir: {}", std::io::Error::last_os_error());
    }
}

/// Unmounts what a pod's volumes mounted on the node (memory-backed emptyDirs, Secret and projected volumes) before
/// its directory is removed.
pub fn release(pod_dir: &Path) {
    for ty in ["empty-dir", "secret", "projected"] {
        let dir = pod_dir.join("volumes").join(ty);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(c) = std::ffi::CString::new(e.path().as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid NUL-terminated path; failure (not a mount point) is harmless.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Keeps the ConfigMap, Secret, projected and downward API volumes of this node's running pods up to date (every few
/// seconds, as the kubelet does within its sync period); ServiceAccount tokens are renewed once 80% of their life
/// has passed.
pub async fn refresh(shared: std::sync::Arc<Shared>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        for pod in shared.pods.list() {
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
                continue;
            }
            let projects = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.config_map.is_some()
                        || v.secret.is_some()
                        || v.projected.is_some()
                        || v.downward_api.is_some()
                });
            if projects {
                if let Err(e) = prepare(&shared, &pod).await {
                    tracing::debug!(pod = %pod.metadata.name(), "refreshing volumes: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_swap_atomically_and_drop_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cfg");
        let files = |pairs: &[(&str, &str)]| -> Files {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), None)))
                .collect()
        };
        project(&d, &files(&[("a.conf", "one"), ("nested/b", "two")]), 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("a.conf")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(d.join("nested/b")).unwrap(), "two");
        let first = std::fs::read_link(d.join("..data")).unwrap();
        project(&d, &files(&[("a.conf", "one"), ("nested/b", "two")]), 0o644).unwrap();
        assert_eq!(
            std::fs::read_link(d.join("..data")).unwrap(),
            first,
            "unchanged: not rewritten"
        );
        project(&d, &files(&[("a.conf", "changed")]), 0o600).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("a.conf")).unwrap(),
            "changed"
        );
        assert!(!d.join("nested").exists());
        assert!(!d.join(&first).exists(), "the old generation is gone");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("a.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn items_pick_keys_and_secrets_decode() {
        let cm: crate::api::core::ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "c"}, "data": {"k1": "v1", "k2": "v2"}}),
        )
        .unwrap();
        let data = config_map_bytes(&cm).unwrap();
        let source = |items: Option<&'static [KeyToPath]>| Projected {
            kind: "configmap",
            name: "c",
            items,
            optional: false,
            default_mode: None,
        };
        assert_eq!(source(None).files(data.clone()).unwrap().len(), 2);
        let two: &'static [KeyToPath] = Box::leak(Box::new([KeyToPath {
            key: "k2".into(),
            path: "dir/two".into(),
            mode: Some(256),
        }]));
        let some = source(Some(two)).files(data.clone()).unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["dir/two"]);
        assert_eq!(some["dir/two"], (b"v2".to_vec(), Some(256)));
        let nope: &'static [KeyToPath] = Box::leak(Box::new([KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }]));
        assert!(source(Some(nope)).files(data).is_err());
        let secret: crate::api::core::Secret = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "s"}, "data": {"token": "c2VjcmV0"}}),
        )
        .unwrap();
        assert_eq!(secret_bytes(&secret).unwrap()["token"], b"secret");
    }

    #[test]
    fn mounts_resolve_sub_paths_and_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let vols: BTreeMap<String, PathBuf> =
            [("data".to_string(), dir.path().to_path_buf())].into();
        let typed = |v: serde_json::Value| -> Container { serde_json::from_value(v).unwrap() };
        let pod: Pod = serde_json::from_value(
            serde_json::json!({"spec": {"containers": [], "volumes": [{"name": "data"}]}}),
        )
        .unwrap();
        let c = typed(
            serde_json::json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "app", "readOnly": true}]}),
        );
        let m = mounts_for(&c, &vols, &pod).unwrap();
        assert_eq!(m[0].source, dir.path().join("app"));
        assert!(m[0].read_only);
        let bad = typed(
            serde_json::json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../etc"}]}),
        );
        assert!(mounts_for(&bad, &vols, &pod).is_err());
        let missing = typed(
            serde_json::json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}),
        );
        assert!(mounts_for(&missing, &vols, &pod)
            .unwrap_err()
            .to_string()
            .contains("no volume"));
    }
}
