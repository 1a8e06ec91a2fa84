//! Manifest files on disk for `capstan apply|create|delete -f`: a file, or every `*.yaml`, `*.yml` and `*.json` below a
//! directory (hidden entries skipped), parsed by `capstan::api::manifest`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capstan::api::manifest::{self, Document};

/// Files under a path: the file itself, or every manifest below a directory, sorted.
pub fn files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let p = entry.with_context(|| dir.display().to_string())?.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every document under `path`.
pub fn read(path: &Path) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    for f in files(path)? {
        let text = std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
        out.extend(manifest::parse(&f.display().to_string(), &text)?);
    }
    Ok(out)
}
