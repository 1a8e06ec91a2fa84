//! Pod volumes on the node (the kubelet's volume manager): each volume of a pod becomes a directory (or file) on the
//! node - `emptyDir` under the pod's directory (a tmpfs for `medium: Memory` when running as root), `hostPath` as
//! given (checked or created per its `type`), `configMap` and `secret` projected as files (keys or `items`, with
//! `defaultMode`/`mode`) and rewritten atomically when the object changes, and `persistentVolumeClaim` as the bound
//! volume's path. Each container's `volumeMounts` then become bind mounts (with `subPath` and `readOnly`) that the
//! runtime sets up in the container's own mount namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Shared;
use crate::api::registry;

/// One bind mount for a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Projected files: relative path -> (content, mode if not the default).
pub type Files = BTreeMap<String, (Vec<u8>, Option<u32>)>;

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn kind(plural: &str) -> &'static registry::KindInfo {
    registry::lookup(plural).expect("registered kind")
}

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
pub async fn prepare(shared: &Shared, pod: &Value) -> Result<BTreeMap<String, PathBuf>, String> {
    let uid = s(pod, "/metadata/uid");
    let ns = s(pod, "/metadata/namespace");
    let mut out = BTreeMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = s(v, "/name").to_string();
        let path = if let Some(e) = v.get("emptyDir") {
            let dir = volume_dir(shared, uid, "empty-dir", &name);
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| format!("volume {name:?}: {e}"))?;
                if e["medium"] == "Memory" {
                    mount_tmpfs(&dir, e["sizeLimit"].as_str());
                }
            }
            dir
        } else if let Some(h) = v.get("hostPath") {
            host_path(&name, s(h, "/path"), s(h, "/type"))?
        } else if let Some(c) = v.get("configMap") {
            let obj = lookup(shared, "configmaps", ns, s(c, "/name")).await?;
            let dir = volume_dir(shared, uid, "configmap", &name);
            match obj {
                Some(o) => project(&dir, &files_of(&o, c, false)?, mode_of(c))?,
                None if c["optional"] == true => project(&dir, &BTreeMap::new(), mode_of(c))?,
                None => return Err(format!("configmap \"{}\" not found", s(c, "/name"))),
            }
            dir
        } else if let Some(sec) = v.get("secret") {
            let obj = lookup(shared, "secrets", ns, s(sec, "/secretName")).await?;
            let dir = volume_dir(shared, uid, "secret", &name);
            match obj {
                Some(o) => project(&dir, &files_of(&o, sec, true)?, mode_of(sec))?,
                None if sec["optional"] == true => project(&dir, &BTreeMap::new(), mode_of(sec))?,
                None => return Err(format!("secret \"{}\" not found", s(sec, "/secretName"))),
            }
            dir
        } else if let Some(pvc) = v.get("persistentVolumeClaim") {
            claim_path(shared, ns, s(pvc, "/claimName")).await?
        } else {
            // Other volume types are stored, not mounted (the API server warned when they were set).
            continue;
        };
        out.insert(name, path);
    }
    Ok(out)
}

/// The bind mounts of one container, from its volumeMounts and the prepared volumes.
pub fn mounts_for(
    container: &Value,
    volumes: &BTreeMap<String, PathBuf>,
    pod: &Value,
) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = s(m, "/name");
        let Some(base) = volumes.get(name) else {
            let declared = pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == name);
            if declared {
                continue;
            }
            return Err(format!(
                "volumeMount {name:?}: no volume of that name in the pod"
            ));
        };
        let sub = s(m, "/subPath");
        if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
            return Err(format!(
                "volumeMount {name:?}: subPath {sub:?} must be a relative path inside the volume"
            ));
        }
        let source = if sub.is_empty() {
            base.clone()
        } else {
            base.join(sub)
        };
        if !sub.is_empty() && !source.exists() {
            std::fs::create_dir_all(&source).map_err(|e| format!("subPath {sub:?}: {e}"))?;
        }
        out.push(Mount {
            source,
            target: PathBuf::from(s(m, "/mountPath")),
            read_only: m["readOnly"] == true,
        });
    }
    Ok(out)
}

async fn lookup(
    shared: &Shared,
    plural: &str,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, String> {
    match shared.client.get(kind(plural), Some(ns), name).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(404) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn host_path(name: &str, path: &str, ty: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).ok();
    let bad = |what: &str| {
        Err(format!(
            "volume {name:?}: hostPath type check failed: {path} is not {what}"
        ))
    };
    match ty {
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(&p)
                .map_err(|e| format!("volume {name:?}: creating {path}: {e}"))?;
        }
        "FileOrCreate" if meta.is_none() => {
            if let Some(parent) = p.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::File::create(&p)
                .map_err(|e| format!("volume {name:?}: creating {path}: {e}"))?;
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

async fn claim_path(shared: &Shared, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = lookup(shared, "persistentvolumeclaims", ns, claim)
        .await?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let volume = s(&pvc, "/spec/volumeName");
    if s(&pvc, "/status/phase") != "Bound" || volume.is_empty() {
        return Err(format!("persistentvolumeclaim \"{claim}\" is not bound"));
    }
    let pv = match shared
        .client
        .get(kind("persistentvolumes"), None, volume)
        .await
    {
        Ok(v) => v,
        Err(e) => return Err(format!("persistentvolume \"{volume}\": {e}")),
    };
    let path = [s(&pv, "/spec/hostPath/path"), s(&pv, "/spec/local/path")]
        .into_iter()
        .find(|p| !p.is_empty())
        .ok_or_else(|| {
            format!(
                "persistentvolume \"{volume}\" has no hostPath or local path this node can mount"
            )
        })?;
    let p = PathBuf::from(path);
    if !p.exists() {
        std::fs::create_dir_all(&p)
            .map_err(|e| format!("persistentvolume \"{volume}\": {path}: {e}"))?;
    }
    Ok(p)
}

fn mode_of(source: &Value) -> u32 {
    source["defaultMode"].as_u64().map_or(0o644, |m| m as u32)
}

/// The files a ConfigMap or Secret projects: every key, or only `items` (key -> path, optional mode).
fn files_of(obj: &Value, source: &Value, secret: bool) -> Result<Files, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let text_field = if secret { "stringData" } else { "data" };
    for (k, v) in obj[text_field].as_object().into_iter().flatten() {
        all.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
    }
    let binary_field = if secret { "data" } else { "binaryData" };
    for (k, v) in obj[binary_field].as_object().into_iter().flatten() {
        let bytes = b64
            .decode(v.as_str().unwrap_or(""))
            .map_err(|e| format!("key {k}: not base64: {e}"))?;
        all.insert(k.clone(), bytes);
    }
    let Some(items) = source["items"].as_array() else {
        return Ok(all.into_iter().map(|(k, v)| (k, (v, None))).collect());
    };
    let mut out = BTreeMap::new();
    for item in items {
        let key = s(item, "/key");
        let path = s(item, "/path");
        let Some(bytes) = all.get(key) else {
            if source["optional"] == true {
                continue;
            }
            return Err(format!(
                "key {key:?} not found in {} \"{}\"",
                if secret { "secret" } else { "configmap" },
                s(obj, "/metadata/name")
            ));
        };
        if path.split('/').any(|p| p == "..") || path.starts_with('/') {
            return Err(format!("items path {path:?} must be relative, without .."));
        }
        out.insert(
            path.to_string(),
            (bytes.clone(), item["mode"].as_u64().map(|m| m as u32)),
        );
    }
    Ok(out)
}

/// Writes projected files the way the kubelet does, so a running container sees a change all at once: the files go
/// into a fresh `..<stamp>` directory, the `..data` link is swapped to it atomically, and each top-level name is a
/// link through `..data`. Nothing is rewritten when nothing changed.
pub fn project(dir: &Path, files: &Files, default_mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, e: std::io::Error| format!("projecting {}: {what}: {e}", dir.display());
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
fn mount_tmpfs(dir: &Path, size: Option<&str>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        tracing::info!(dir = %dir.display(), "emptyDir medium Memory is a plain directory without root");
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

/// Unmounts what a pod's volumes mounted on the node (memory-backed emptyDirs) before its directory is removed.
pub fn release(pod_dir: &Path) {
    let empty = pod_dir.join("volumes").join("empty-dir");
    for e in std::fs::read_dir(&empty).into_iter().flatten().flatten() {
        if let Ok(c) = std::ffi::CString::new(e.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; failure (not a mount point) is harmless.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Keeps the ConfigMap and Secret volumes of this node's running pods up to date (every few seconds, as the kubelet
/// does within its sync period).
pub async fn refresh(shared: std::sync::Arc<Shared>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        for pod in shared.pods.list() {
            if s(&pod, "/status/phase") != "Running" {
                continue;
            }
            let has = pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v.get("configMap").is_some() || v.get("secret").is_some());
            if has {
                if let Err(e) = prepare(&shared, &pod).await {
                    tracing::debug!(pod = %s(&pod, "/metadata/name"), "refreshing volumes: {e}");
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
        let cm = serde_json::json!({"metadata": {"name": "c"}, "data": {"k1": "v1", "k2": "v2"}});
        let all = files_of(&cm, &serde_json::json!({}), false).unwrap();
        assert_eq!(all.len(), 2);
        let some = files_of(
            &cm,
            &serde_json::json!({"items": [{"key": "k2", "path": "dir/two", "mode": 256}]}),
            false,
        )
        .unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["dir/two"]);
        assert_eq!(some["dir/two"], (b"v2".to_vec(), Some(256)));
        assert!(files_of(
            &cm,
            &serde_json::json!({"items": [{"key": "nope", "path": "x"}]}),
            false
        )
        .is_err());
        let secret = serde_json::json!({"metadata": {"name": "s"}, "data": {"token": "c2VjcmV0"}});
        assert_eq!(
            files_of(&secret, &serde_json::json!({}), true).unwrap()["token"].0,
            b"secret"
        );
    }

    #[test]
    fn mounts_resolve_sub_paths_and_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let vols: BTreeMap<String, PathBuf> =
            [("data".to_string(), dir.path().to_path_buf())].into();
        let pod = serde_json::json!({"spec": {"volumes": [{"name": "data"}]}});
        let c = serde_json::json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "app", "readOnly": true}]});
        let m = mounts_for(&c, &vols, &pod).unwrap();
        assert_eq!(m[0].source, dir.path().join("app"));
        assert!(m[0].read_only);
        let bad = serde_json::json!({"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../etc"}]});
        assert!(mounts_for(&bad, &vols, &pod).is_err());
        let missing = serde_json::json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]});
        assert!(mounts_for(&missing, &vols, &pod)
            .unwrap_err()
            .contains("no volume"));
    }
}
