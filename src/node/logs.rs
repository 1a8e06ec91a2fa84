//! Container logs in the CRI file format the kubelet uses (`<RFC3339Nano> <stream> <P|F> <text>` per line), written by
//! the shim with size-based rotation and read back for `pods/log` with Kubernetes' options: `tailLines`,
//! `sinceSeconds`, `timestamps`, `limitBytes` and `follow`. Files live under `<pod dir>/logs/<container>/<n>.log`,
//! one per container instance (n = restart count), so `previous` is the file before the current one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// Where logs of one container instance go.
pub fn log_path(pod_dir: &Path, container: &str, restart: u32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{restart}.log"))
}

/// Appends CRI-format lines to a file, rotating it to `.1`, `.2`, ... when it passes `max_bytes`.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl LogWriter {
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes: max_bytes.max(1024),
            max_files: max_files.max(1),
        })
    }

    /// Writes one line of `stream` output (`partial` when the line had no newline yet).
    pub fn write_line(&mut self, stream: &str, text: &[u8], partial: bool) -> std::io::Result<()> {
        let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(format!("{ts} {stream} {tag} ").as_bytes());
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        // With max_files = 1 the current file is all that is kept.
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(name(keep));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&self.path, name(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub time: DateTime<Utc>,
    pub stream: String,
    pub partial: bool,
    pub text: String,
}

pub fn parse_line(raw: &str) -> Option<Line> {
    let mut parts = raw.splitn(4, ' ');
    let time = DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&Utc);
    let stream = parts.next()?.to_string();
    let partial = parts.next()? == "P";
    let text = parts.next().unwrap_or("").to_string();
    Some(Line {
        time,
        stream,
        partial,
        text,
    })
}

/// What to read, as `pods/log` asks for it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tail_lines: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
}

impl Options {
    /// Renders one line as the API returns it.
    pub fn render(&self, l: &Line, out: &mut Vec<u8>) {
        if self.timestamps {
            out.extend_from_slice(
                l.time
                    .to_rfc3339_opts(SecondsFormat::Nanos, true)
                    .as_bytes(),
            );
            out.push(b' ');
        }
        out.extend_from_slice(l.text.as_bytes());
        if !l.partial {
            out.push(b'\n');
        }
    }

    pub fn wanted(&self, l: &Line) -> bool {
        self.since.is_none_or(|s| l.time >= s)
    }
}

/// Files holding one instance's log, oldest first (rotated ones, then the live file).
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in (1..100).rev() {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if p.exists() {
            out.push(p);
        }
    }
    out.push(path.to_path_buf());
    out
}

/// Reads what is in the files now, applying the options; returns the bytes and the live file's read offset (to
/// follow from).
pub fn read(path: &Path, opts: &Options) -> std::io::Result<(Vec<u8>, u64)> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for f in files_of(path) {
        let Ok(file) = File::open(&f) else { continue };
        let mut reader = BufReader::new(file);
        let mut buf = String::new();
        let mut pos = 0u64;
        loop {
            buf.clear();
            let n = reader.read_line(&mut buf)?;
            if n == 0 || !buf.ends_with('\n') {
                break;
            }
            pos += n as u64;
            if let Some(l) = parse_line(buf.trim_end_matches('\n')) {
                if opts.wanted(&l) {
                    lines.push(l);
                }
            }
        }
        if f == path {
            offset = pos;
        }
    }
    if let Some(t) = opts.tail_lines {
        let skip = lines.len().saturating_sub(t);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for l in &lines {
        opts.render(l, &mut out);
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    Ok((out, offset))
}

/// Reads complete lines appended to `path` after `offset`; returns them and the new offset. A file that shrank
/// (rotated) is read from its start.
pub fn read_from(path: &Path, offset: u64, opts: &Options) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::new();
    file.take(4 << 20).read_to_end(&mut data)?;
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for raw in data[..complete].split(|b| *b == b'\n') {
        if let Some(l) = std::str::from_utf8(raw).ok().and_then(parse_line) {
            if opts.wanted(&l) {
                opts.render(&l, &mut out);
            }
        }
    }
    Ok((out, start + complete as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_tails_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let p = log_path(dir.path(), "app", 0);
        let mut w = LogWriter::open(&p, 1024, 3).unwrap();
        for i in 0..100 {
            w.write_line("stdout", format!("line {i}").as_bytes(), false)
                .unwrap();
        }
        // Rotation kept at most 3 files.
        assert!(files_of(&p).len() <= 3);
        assert!(!PathBuf::from(format!("{}.3", p.display())).exists());
        let (all, off) = read(&p, &Options::default()).unwrap();
        let text = String::from_utf8(all).unwrap();
        assert!(text.ends_with("line 99\n"));
        assert_eq!(off, std::fs::metadata(&p).unwrap().len());
        let (tail, _) = read(
            &p,
            &Options {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(String::from_utf8(tail).unwrap(), "line 98\nline 99\n");
        w.write_line("stderr", b"late", false).unwrap();
        let (more, _) = read_from(&p, off, &Options::default()).unwrap();
        assert_eq!(more, b"late\n");
    }

    #[test]
    fn timestamps_and_since_follow_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(
            &p,
            "2026-01-01T00:00:00.5Z stdout F old\n2026-01-01T00:01:00.000000001Z stdout P par\n2026-01-01T00:01:00.2Z stdout F tial\n",
        )
        .unwrap();
        let opts = Options {
            since: Some("2026-01-01T00:00:30Z".parse().unwrap()),
            ..Default::default()
        };
        let (out, _) = read(&p, &opts).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "partial\n");
        let opts = Options {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        let (out, _) = read(&p, &opts).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-01-01T00:01:00.200000000Z tial\n"
        );
    }
}
