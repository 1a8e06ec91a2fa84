//! Images without a registry: `capstan image build` packs files - a directory, or single files such as a static
//! binary - into one image, written as an OCI image layout tarball (`oci-layout`, `index.json`, `blobs/sha256/...`)
//! that also carries a Docker-archive `manifest.json`, so containerd's import and `docker load` both take it. The
//! layer is an uncompressed tar with owners and times zeroed, so the same input always gives the same digests.

pub mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {0:?}: {1}")]
    Reference(String, String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `name[:tag]` (the tag defaults to `latest`); digests (`@sha256:`) are not taken here.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let bad = |why: &str| ImageError::Reference(s.to_string(), why.to_string());
        if s.contains('@') {
            return Err(bad("digests are not supported here; give name[:tag]"));
        }
        // A colon after the last slash separates the tag (one before it is a host's port).
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        {
            return Err(bad(
                "names are lowercase letters, digits and . _ - / (with an optional host:port/)",
            ));
        }
        if tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(bad("tags are 1-128 letters, digits, . _ and -"));
        }
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// What goes into an image.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    pub reference: String,
    /// A directory whose content becomes the image's root.
    pub from_dir: Option<PathBuf>,
    /// Single files: (source on this machine, absolute path in the image).
    pub add: Vec<(PathBuf, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
}

/// The digests of what was built.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub reference: Reference,
    pub manifest: String,
    pub config: String,
    pub layer: String,
}

fn sha256(data: &[u8]) -> String {
    crate::sys::sha256_hex(data)
}

/// The OCI digest of `data`: `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256(data))
}

/// The architecture as OCI names it.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

/// Adds `src` (a file, symlink or directory, recursively) at `dest` (relative, no leading slash).
fn add_path(layer: &mut tar::Builder<Vec<u8>>, src: &Path, dest: &str) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(src).map_err(io(src))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(io(src))?;
        let mut h = header(dest, 0, 0o777, tar::EntryType::Symlink);
        h.set_link_name(&target).map_err(io(src))?;
        h.set_cksum();
        layer.append(&h, std::io::empty()).map_err(io(src))?;
    } else if meta.is_dir() {
        if !dest.is_empty() {
            let h = header(&format!("{dest}/"), 0, mode, tar::EntryType::Directory);
            layer.append(&h, std::io::empty()).map_err(io(src))?;
        }
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(io(src))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for name in entries {
            let name = name.to_string_lossy().into_owned();
            let child = if dest.is_empty() {
                name.clone()
            } else {
                format!("{dest}/{name}")
            };
            add_path(layer, &src.join(&name), &child)?;
        }
    } else if meta.is_file() {
        let data = std::fs::read(src).map_err(io(src))?;
        let h = header(dest, data.len() as u64, mode, tar::EntryType::Regular);
        layer.append(&h, data.as_slice()).map_err(io(src))?;
    } else {
        return Err(ImageError::Invalid(format!(
            "{}: only files, directories and symlinks go into an image",
            src.display()
        )));
    }
    Ok(())
}

/// Parent directories of `dest` not yet in the layer.
fn add_parents(
    layer: &mut tar::Builder<Vec<u8>>,
    dest: &str,
    seen: &mut Vec<String>,
) -> Result<(), ImageError> {
    let parts: Vec<&str> = dest.split('/').collect();
    for i in 1..parts.len() {
        let dir = parts[..i].join("/");
        if !seen.contains(&dir) {
            let h = header(&format!("{dir}/"), 0, 0o755, tar::EntryType::Directory);
            layer
                .append(&h, std::io::empty())
                .map_err(|e| ImageError::Invalid(e.to_string()))?;
            seen.push(dir);
        }
    }
    Ok(())
}

/// Refuses a build with nothing to put in the image, no entrypoint, or a malformed `--env`.
fn check_spec(spec: &BuildSpec) -> Result<(), ImageError> {
    if spec.from_dir.is_none() && spec.add.is_empty() {
        return Err(ImageError::Invalid(
            "nothing to put in the image: give --from-dir DIR or --add SRC:DEST".into(),
        ));
    }
    if spec.entrypoint.is_empty() && spec.cmd.is_empty() {
        return Err(ImageError::Invalid(
            "the image needs something to run: an entrypoint (the command after --) and/or a default command (--cmd WORD)".into(),
        ));
    }
    if let Some(e) = spec.env.iter().find(|e| !e.contains('=')) {
        return Err(ImageError::Invalid(format!(
            "--env {e:?}: expected KEY=VALUE"
        )));
    }
    Ok(())
}

/// The image's one layer, a deterministic tar: the `--from-dir` tree at the root, then each `--add` at its
/// destination (with its parent directories).
fn layer_of(spec: &BuildSpec) -> Result<Vec<u8>, ImageError> {
    let mut layer = tar::Builder::new(Vec::new());
    layer.mode(tar::HeaderMode::Deterministic);
    if let Some(dir) = &spec.from_dir {
        if !dir.is_dir() {
            return Err(ImageError::Invalid(format!(
                "--from-dir {}: not a directory",
                dir.display()
            )));
        }
        add_path(&mut layer, dir, "")?;
    }
    let mut seen = Vec::new();
    for (src, dest) in &spec.add {
        let Some(rel) = dest
            .strip_prefix('/')
            .filter(|d| !d.is_empty() && !d.split('/').any(|p| p == ".."))
        else {
            return Err(ImageError::Invalid(format!(
                "--add {}:{dest}: the destination must be an absolute path in the image",
                src.display()
            )));
        };
        add_parents(&mut layer, rel, &mut seen)?;
        add_path(&mut layer, src, rel)?;
    }
    layer
        .into_inner()
        .map_err(|e| ImageError::Invalid(format!("writing the layer: {e}")))
}

/// The image config's `config`: environment, entrypoint, command and working directory.
fn run_config(spec: &BuildSpec) -> Value {
    let mut body = json!({"Env": spec.env});
    if !spec.entrypoint.is_empty() {
        body["Entrypoint"] = json!(spec.entrypoint);
    }
    if !spec.cmd.is_empty() {
        body["Cmd"] = json!(spec.cmd);
    }
    if let Some(w) = &spec.workdir {
        body["WorkingDir"] = json!(w);
    }
    body
}

/// Builds the image and writes the OCI layout tarball to `out`.
pub fn build(spec: &BuildSpec, out: impl Write) -> Result<Built, ImageError> {
    let reference = Reference::parse(&spec.reference)?;
    check_spec(spec)?;
    let layer = layer_of(spec)?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": run_config(spec),
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "capstan image build"}],
    }))
    .expect("JSON");
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    }))
    .expect("JSON");
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": reference.to_string(),
                "org.opencontainers.image.ref.name": reference.tag}}],
    }))
    .expect("JSON");
    let docker = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [reference.to_string()],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]))
    .expect("JSON");
    let mut archive = tar::Builder::new(out);
    let mut file = |path: &str, data: &[u8]| -> Result<(), ImageError> {
        let h = header(path, data.len() as u64, 0o644, tar::EntryType::Regular);
        archive
            .append(&h, data)
            .map_err(|e| ImageError::Invalid(format!("writing the image archive: {e}")))
    };
    file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file("index.json", &index)?;
    file("manifest.json", &docker)?;
    file(&format!("blobs/sha256/{layer_digest}"), &layer)?;
    file(&format!("blobs/sha256/{config_digest}"), &config)?;
    file(&format!("blobs/sha256/{manifest_digest}"), &manifest)?;
    archive
        .into_inner()
        .map_err(|e| ImageError::Invalid(format!("writing the image archive: {e}")))?;
    Ok(Built {
        reference,
        manifest: format!("sha256:{manifest_digest}"),
        config: format!("sha256:{config_digest}"),
        layer: format!("sha256:{layer_digest}"),
    })
}

/// Reads an OCI layout tarball back: every file by path (for checks and for importing).
pub fn read_archive(
    data: &[u8],
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, ImageError> {
    let mut out = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(data);
    for e in a
        .entries()
        .map_err(|e| ImageError::Invalid(format!("not a tar archive: {e}")))?
    {
        let mut e = e.map_err(|e| ImageError::Invalid(format!("reading the archive: {e}")))?;
        let path = e
            .path()
            .map_err(|e| ImageError::Invalid(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf)
            .map_err(|e| ImageError::Invalid(format!("reading {path}: {e}")))?;
        out.insert(path, buf);
    }
    Ok(out)
}

/// Checks an OCI layout's index, manifest and blobs against their digests; returns the image's config.
pub fn verify(files: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<Value, ImageError> {
    let blob = |digest: &str| -> Result<&Vec<u8>, ImageError> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::Invalid(format!("digest {digest:?} is not sha256")))?;
        let data = files
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| ImageError::Invalid(format!("blob {digest} is missing")))?;
        if sha256(data) != hex {
            return Err(ImageError::Invalid(format!(
                "blob {digest} does not match its digest"
            )));
        }
        Ok(data)
    };
    let index: Value = serde_json::from_slice(
        files
            .get("index.json")
            .ok_or_else(|| ImageError::Invalid("no index.json: not an OCI image layout".into()))?,
    )
    .map_err(|e| ImageError::Invalid(format!("index.json: {e}")))?;
    let m = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| ImageError::Invalid("index.json names no manifest".into()))?;
    let manifest: Value = serde_json::from_slice(blob(m)?)
        .map_err(|e| ImageError::Invalid(format!("manifest: {e}")))?;
    for l in manifest["layers"].as_array().into_iter().flatten() {
        blob(l["digest"].as_str().unwrap_or(""))?;
    }
    let config = blob(manifest["config"]["digest"].as_str().unwrap_or(""))?;
    serde_json::from_slice(config).map_err(|e| ImageError::Invalid(format!("config: {e}")))
}

/// The image of the running binary (see [`self_spec`]), which the examples run on the containerd runtime.
pub const SELF_IMAGE: &str = concat!("capstan.local/capstan:", env!("CARGO_PKG_VERSION"));

/// What goes into [`SELF_IMAGE`]: this executable at `/usr/local/bin/capstan` and every shared library it has
/// loaded (read from `/proc/self/maps`), at the same paths, with the dynamic loader also where the executable's
/// interpreter path expects it.
pub fn self_spec() -> Result<BuildSpec, ImageError> {
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(io(Path::new("/proc/self/maps")))?;
    let mut add = vec![(exe.clone(), "/usr/local/bin/capstan".to_string())];
    let mut seen = std::collections::BTreeSet::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let file = Path::new(path);
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !path.starts_with('/') || !name.contains(".so") || !seen.insert(path.to_string()) {
            continue;
        }
        add.push((file.to_path_buf(), path.to_string()));
        // The loader asks for sonames (libz.so.1), which are links to the files mapped (libz.so.1.2.13).
        if let (Some(dir), Ok(real)) = (file.parent(), file.canonicalize()) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let link = entry.path();
                if link != file
                    && link.is_symlink()
                    && link.canonicalize().ok().as_ref() == Some(&real)
                {
                    add.push((link.clone(), link.display().to_string()));
                }
            }
        }
        if name.starts_with("ld-linux") {
            for dir in ["/lib64", "/lib"] {
                if Path::new(dir).join(name).exists() {
                    add.push((file.to_path_buf(), format!("{dir}/{name}")));
                }
            }
        }
    }
    Ok(BuildSpec {
        reference: SELF_IMAGE.to_string(),
        add,
        entrypoint: vec!["/usr/local/bin/capstan".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..Default::default()
    })
}

/// Blobs by digest (`sha256:...`) and the images they make up: (name, manifest digest). What an import or a
/// registry pull hands to a runtime's image store.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub blobs: std::collections::BTreeMap<String, Vec<u8>>,
    pub images: Vec<(String, String)>,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a manifest's media type is an index (a list of per-platform manifests).
pub fn is_index(media_type: &str, body: &Value) -> bool {
    media_type == OCI_INDEX
        || media_type == DOCKER_LIST
        || (media_type.is_empty() && body.get("manifests").is_some())
}

/// The digest of this machine's platform in an index, if it has one.
pub fn pick_platform(index: &Value) -> Option<String> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| {
            let p = &m["platform"];
            p.is_null() || (p["os"] == "linux" && p["architecture"] == oci_arch())
        })
        .and_then(|m| m["digest"].as_str().map(String::from))
}

/// A reference as containerd and Docker store it: `busybox` is `docker.io/library/busybox:latest`, a name without a
/// registry host is on docker.io, and a missing tag is `latest`.
pub fn normalize(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (name, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    match (tag, digest) {
        (_, Some(d)) => format!("{name}@{d}"),
        (Some(t), None) => format!("{name}:{t}"),
        (None, None) => format!("{name}:latest"),
    }
}

/// Reads an image archive - an OCI image layout (what `capstan image build`, `docker save` of Docker 25+ and
/// `ctr export` write) or a Docker archive (`manifest.json` with `RepoTags`, older `docker save`) - into blobs and
/// named images. Every blob is checked against its digest.
// Long by design: the two archive formats are told apart and read in one pass over the files, so every blob is
// digest-checked once whatever format refers to it.
pub fn load(files: std::collections::BTreeMap<String, Vec<u8>>) -> Result<Loaded, ImageError> {
    let mut out = Loaded::default();
    for (path, data) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            if sha256(data) != hex {
                return Err(ImageError::Invalid(format!(
                    "{path} does not match its digest"
                )));
            }
            out.blobs.insert(format!("sha256:{hex}"), data.clone());
        }
    }
    let docker: Option<Value> = files
        .get("manifest.json")
        .map(|d| serde_json::from_slice(d))
        .transpose()
        .map_err(|e| ImageError::Invalid(format!("manifest.json: {e}")))?;
    if let Some(index) = files.get("index.json") {
        let index: Value = serde_json::from_slice(index)
            .map_err(|e| ImageError::Invalid(format!("index.json: {e}")))?;
        for (i, m) in index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut digest = m["digest"].as_str().unwrap_or("").to_string();
            let body = out.blobs.get(&digest).ok_or_else(|| {
                ImageError::Invalid(format!("index.json names blob {digest}, which is missing"))
            })?;
            let body: Value = serde_json::from_slice(body)
                .map_err(|e| ImageError::Invalid(format!("manifest {digest}: {e}")))?;
            if is_index(m["mediaType"].as_str().unwrap_or(""), &body) {
                digest = pick_platform(&body).ok_or_else(|| {
                    ImageError::Invalid(format!(
                        "image index {digest} has no manifest for linux/{}",
                        oci_arch()
                    ))
                })?;
            }
            let annotations = &m["annotations"];
            let name = annotations["io.containerd.image.name"]
                .as_str()
                .map(String::from)
                .or_else(|| {
                    // A Docker archive beside the layout names the same images in the same order.
                    docker.as_ref()?[i]["RepoTags"][0].as_str().map(String::from)
                })
                .or_else(|| {
                    annotations["org.opencontainers.image.ref.name"]
                        .as_str()
                        .filter(|r| r.contains('/') || r.contains(':'))
                        .map(String::from)
                })
                .ok_or_else(|| {
                    ImageError::Invalid(format!(
                        "index.json entry {i} has no image name (annotation io.containerd.image.name)"
                    ))
                })?;
            out.images.push((normalize(&name), digest));
        }
    } else if let Some(docker) = docker {
        for (i, entry) in docker.as_array().into_iter().flatten().enumerate() {
            let blob = |path: &str| -> Result<(String, &Vec<u8>), ImageError> {
                let data = files.get(path).ok_or_else(|| {
                    ImageError::Invalid(format!("manifest.json entry {i}: {path} is missing"))
                })?;
                Ok((digest(data), data))
            };
            let (config_digest, config) = blob(entry["Config"].as_str().unwrap_or(""))?;
            let mut layers = Vec::new();
            for l in entry["Layers"].as_array().into_iter().flatten() {
                let (digest, data) = blob(l.as_str().unwrap_or(""))?;
                let media = if data.starts_with(&[0x1f, 0x8b]) {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar"
                };
                layers.push(json!({"mediaType": media, "digest": digest, "size": data.len()}));
                out.blobs.insert(digest, data.clone());
            }
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": config_digest, "size": config.len()},
                "layers": layers,
            }))
            .expect("JSON");
            out.blobs.insert(config_digest, config.clone());
            let manifest_digest = digest(&manifest);
            out.blobs.insert(manifest_digest.clone(), manifest);
            for tag in entry["RepoTags"].as_array().into_iter().flatten() {
                if let Some(t) = tag.as_str() {
                    out.images.push((normalize(t), manifest_digest.clone()));
                }
            }
        }
    } else {
        return Err(ImageError::Invalid(
            "neither index.json nor manifest.json: not an OCI image layout or Docker archive"
                .into(),
        ));
    }
    if out.images.is_empty() {
        return Err(ImageError::Invalid("the archive names no image".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_default_their_tag_and_refuse_what_registries_refuse() {
        assert_eq!(
            Reference::parse("capstan/demo-app").unwrap().to_string(),
            "capstan/demo-app:latest"
        );
        assert_eq!(Reference::parse("localhost:5000/app:v2").unwrap().tag, "v2");
        assert_eq!(
            Reference::parse("localhost:5000/app").unwrap().tag,
            "latest"
        );
        assert!(Reference::parse("App").is_err());
        assert!(Reference::parse("app@sha256:00").is_err());
        assert!(Reference::parse("app:").is_err());
    }

    #[test]
    fn a_build_is_reproducible_and_its_layout_verifies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/bin")).unwrap();
        std::fs::write(dir.path().join("root/bin/app"), "#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("app", dir.path().join("root/bin/alias")).unwrap();
        std::fs::write(dir.path().join("extra"), "x").unwrap();
        let spec = BuildSpec {
            reference: "test/app:v1".into(),
            from_dir: Some(dir.path().join("root")),
            add: vec![(dir.path().join("extra"), "/etc/extra.conf".into())],
            entrypoint: vec!["/bin/app".into()],
            env: vec!["A=1".into()],
            ..Default::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let built = build(&spec, &mut a).unwrap();
        assert_eq!(
            build(&spec, &mut b).unwrap(),
            built,
            "same input, same digests"
        );
        assert_eq!(a, b);
        let files = read_archive(&a).unwrap();
        let config = verify(&files).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/bin/app"]));
        assert_eq!(config["rootfs"]["diff_ids"][0], json!(built.layer));
        let layer = &files[&format!("blobs/sha256/{}", &built.layer[7..])];
        let entries = read_archive(layer).unwrap();
        assert!(
            entries.contains_key("bin/app") && entries.contains_key("etc/extra.conf"),
            "{:?}",
            entries.keys()
        );
        let docker: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(docker[0]["RepoTags"][0], "test/app:v1");
        let mut broken = files.clone();
        broken.insert(
            format!("blobs/sha256/{}", &built.layer[7..]),
            b"tampered".to_vec(),
        );
        assert!(verify(&broken)
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        assert!(build(
            &BuildSpec {
                reference: "x".into(),
                ..Default::default()
            },
            Vec::new()
        )
        .is_err());
    }

    #[test]
    fn references_normalize_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            normalize("capstan.local/capstan:0.1.0"),
            "capstan.local/capstan:0.1.0"
        );
        assert_eq!(normalize("localhost/app"), "localhost/app:latest");
        assert_eq!(normalize("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(
            normalize("app@sha256:abc"),
            "docker.io/library/app@sha256:abc"
        );
    }

    fn sample() -> (Vec<u8>, Built) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let mut tar = Vec::new();
        let built = build(
            &BuildSpec {
                reference: "team/app:v1".into(),
                add: vec![(dir.path().join("f"), "/f".into())],
                entrypoint: vec!["/f".into()],
                ..Default::default()
            },
            &mut tar,
        )
        .unwrap();
        (tar, built)
    }

    #[test]
    fn archives_load_as_oci_layouts_and_as_docker_archives() {
        let (tar, built) = sample();
        let files = read_archive(&tar).unwrap();
        // The OCI layout: the image named by its annotation, normalized.
        let oci = load(files.clone()).unwrap();
        assert_eq!(
            oci.images,
            [("docker.io/team/app:v1".to_string(), built.manifest.clone())]
        );
        // The same archive without index.json is a Docker archive: a manifest is made for it over the same blobs.
        let mut docker = files.clone();
        docker.remove("index.json");
        let d = load(docker).unwrap();
        assert_eq!(d.images[0].0, "docker.io/team/app:v1");
        let manifest: Value = serde_json::from_slice(&d.blobs[&d.images[0].1]).unwrap();
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
        assert_eq!(manifest["layers"][0]["digest"], built.layer.as_str());
        assert_eq!(manifest["config"]["digest"], built.config.as_str());
        // A tampered blob and a missing name are refused.
        let mut bad = files.clone();
        bad.insert(format!("blobs/sha256/{}", &built.layer[7..]), b"x".to_vec());
        assert!(load(bad)
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        let mut unnamed = files;
        unnamed.insert(
            "index.json".into(),
            serde_json::to_vec(&json!({"manifests": [{"digest": built.manifest,
                "mediaType": OCI_MANIFEST}]}))
            .unwrap(),
        );
        unnamed.remove("manifest.json");
        assert!(load(unnamed)
            .unwrap_err()
            .to_string()
            .contains("no image name"));
    }

    #[test]
    fn an_index_resolves_to_this_platform() {
        let index = json!({"manifests": [
            {"digest": "sha256:other", "platform": {"os": "linux", "architecture": "s390x-not-this"}},
            {"digest": "sha256:mine", "platform": {"os": "linux", "architecture": oci_arch()}},
        ]});
        assert_eq!(pick_platform(&index).as_deref(), Some("sha256:mine"));
        assert!(is_index(OCI_INDEX, &index));
        assert!(is_index("", &index));
        assert!(!is_index(OCI_MANIFEST, &json!({"layers": []})));
    }
}
