//! The audit log (`capstan server --audit-log FILE`): one JSON line per request, as Kubernetes' `audit.k8s.io/v1`
//! Event at the `Metadata` level - who (user, groups, impersonated user, source address, user agent) did what
//! (verb, request URI, the object's resource, namespace and name) with which result (the response code), when.
//! Bodies are never logged, so neither are Secrets' values. Lines are written by a thread of their own (a request
//! never waits for the disk; if the writer falls 10,000 events behind, further events are counted and dropped),
//! and the file is rotated by size (`--audit-log-maxsize` MB, `--audit-log-maxbackup` old files kept as
//! `FILE.1`, `FILE.2`, ...).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

#[cfg(test)]
use serde_json::Value;

use super::authn::Identity;
use crate::api::rbac::Attributes;

tokio::task_local! {
    /// Annotations a request's handlers add to its audit event (a Pod Security `audit` violation).
    pub static ANNOTATIONS: std::cell::RefCell<Vec<(String, String)>>;
}

/// Adds an annotation to the audit event of the request being served (nothing when no audit log is kept).
pub fn annotate(key: &str, value: String) {
    let _ = ANNOTATIONS.try_with(|a| a.borrow_mut().push((key.to_string(), value)));
}

/// Where and how the audit log is kept.
#[derive(Debug, Clone)]
pub struct Options {
    pub path: PathBuf,
    /// Rotate when the file passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub max_backups: u32,
}

/// The audit log's writer.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

/// What one request was, for its audit event.
pub struct Request<'a> {
    pub who: Option<&'a Identity>,
    /// The authenticated user when `who` is someone it impersonates.
    pub impersonator: Option<&'a Identity>,
    pub uri: &'a str,
    pub attributes: &'a Attributes,
    pub source: Option<std::net::IpAddr>,
    pub user_agent: Option<&'a str>,
    pub received: chrono::DateTime<chrono::Utc>,
    pub code: u16,
    /// Annotations (a Pod Security `audit` violation).
    pub annotations: Vec<(String, String)>,
}

impl AuditLog {
    /// Opens (appending) the log and starts its writer thread.
    pub fn open(opts: Options) -> std::io::Result<AuditLog> {
        if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_private(&opts.path)?;
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(10_000);
        std::thread::Builder::new()
            .name("capstan-audit".into())
            .spawn(move || write_loop(rx, file, &opts))?;
        Ok(AuditLog {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Records one request.
    pub fn record(&self, r: &Request<'_>) {
        if self.tx.try_send(event(r)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "the audit log writer is behind; events dropped"
                );
            }
        }
    }
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// How long the writer gathers events before it writes them.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

fn write_loop(rx: mpsc::Receiver<Vec<u8>>, file: std::fs::File, opts: &Options) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::BufWriter::new(file);
    while let Ok(first) = rx.recv() {
        // Gather what arrives in the next moments, so a busy server costs one wake-up and one write per batch
        // instead of one per request (while this thread sleeps, senders do not have to wake it).
        std::thread::sleep(BATCH_WINDOW);
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for line in batch {
            if size > 0 && size + line.len() as u64 > opts.max_bytes {
                let _ = out.flush();
                match rotate(opts) {
                    Ok(f) => {
                        out = std::io::BufWriter::new(f);
                        size = 0;
                    }
                    Err(e) => {
                        tracing::warn!(path = %opts.path.display(), "rotating the audit log: {e}")
                    }
                }
            }
            if out.write_all(&line).is_ok() {
                size += line.len() as u64;
            }
        }
        let _ = out.flush();
    }
}

/// Shifts `FILE.n` to `FILE.n+1` (the oldest beyond `max_backups` goes), `FILE` to `FILE.1`; a new `FILE`.
fn rotate(opts: &Options) -> std::io::Result<std::fs::File> {
    let name = |i: u32| PathBuf::from(format!("{}.{i}", opts.path.display()));
    if opts.max_backups == 0 {
        std::fs::remove_file(&opts.path)?;
    } else {
        let _ = std::fs::remove_file(name(opts.max_backups));
        for i in (1..opts.max_backups).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&opts.path, name(1))?;
    }
    open_private(&opts.path)
}

#[derive(serde::Serialize)]
struct UserInfo {
    username: String,
    groups: Vec<String>,
}

fn user(who: &Identity) -> UserInfo {
    let (username, groups) = who.user_info();
    UserInfo { username, groups }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef<'a> {
    resource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_group: &'a str,
    api_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subresource: &'a str,
}

#[derive(serde::Serialize)]
struct ResponseStatus {
    metadata: Empty,
    code: u16,
}

#[derive(serde::Serialize)]
struct Empty {}

/// An `audit.k8s.io/v1` Event, serialized straight from borrowed parts (a request pays for one small encode).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: &'static str,
    #[serde(rename = "requestURI")]
    request_uri: &'a str,
    verb: &'a str,
    user: Option<UserInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs")]
    source_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectRef<'a>>,
    response_status: ResponseStatus,
    request_received_timestamp: String,
    stage_timestamp: String,
    #[serde(skip_serializing_if = "no_annotations", serialize_with = "as_map")]
    annotations: &'a [(String, String)],
}

fn no_annotations(pairs: &&[(String, String)]) -> bool {
    pairs.is_empty()
}

fn as_map<S: serde::Serializer>(pairs: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// A unique id per event without a system call: a random start, then a counter mixed (splitmix64).
fn audit_id() -> String {
    use std::sync::OnceLock;
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(rand::random);
    let mut z = base.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let hi = z ^ (z >> 31);
    let lo = base ^ hi.rotate_left(17);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xfff,
        0x8000 | (lo >> 48) & 0x3fff,
        lo & 0xffff_ffff_ffff
    )
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The `audit.k8s.io/v1` Event of one request, as JSON.
pub fn event(r: &Request<'_>) -> Vec<u8> {
    let a = r.attributes;
    let path = r.uri.split('?').next().unwrap_or("");
    let object_ref = a.resource.as_ref().map(|res| ObjectRef {
        resource: &res.resource,
        namespace: &res.namespace,
        name: &res.name,
        api_group: &res.group,
        // The version is the path segment after the group (or `api/`).
        api_version: path
            .trim_start_matches('/')
            .split('/')
            .nth(if res.group.is_empty() { 1 } else { 2 })
            .unwrap_or(""),
        subresource: &res.subresource,
    });
    let (acting, impersonated) = match (r.impersonator, r.who) {
        (Some(real), Some(who)) => (Some(user(real)), Some(user(who))),
        (Some(real), None) => (Some(user(real)), None),
        (None, who) => (who.map(user), None),
    };
    let e = Event {
        kind: "Event",
        api_version: "audit.k8s.io/v1",
        level: "Metadata",
        audit_id: audit_id(),
        stage: "ResponseComplete",
        request_uri: r.uri,
        verb: &a.verb,
        user: acting,
        impersonated_user: impersonated,
        source_ips: r.source.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
        user_agent: r.user_agent,
        object_ref,
        response_status: ResponseStatus {
            metadata: Empty {},
            code: r.code,
        },
        request_received_timestamp: timestamp(r.received),
        stage_timestamp: timestamp(crate::sys::clock::utc_now()),
        annotations: &r.annotations,
    };
    let mut out = serde_json::to_vec(&e).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rbac::ResourceAttributes;

    fn request<'a>(who: &'a Identity, a: &'a Attributes, code: u16) -> Request<'a> {
        Request {
            who: Some(who),
            impersonator: None,
            uri: concat!("/", "api/v1/namespaces/b/secrets/db"),
            attributes: a,
            source: Some([127, 0, 0, 1].into()),
            user_agent: Some("kubectl/v1.32.0"),
            received: crate::sys::clock::utc_now(),
            code,
            annotations: vec![],
        }
    }

    #[test]
    fn events_name_who_what_and_the_outcome() {
        let alice = Identity::User {
            name: "alice".into(),
            groups: vec!["team-a".into()],
        };
        let a = Attributes {
            verb: "get".into(),
            resource: Some(ResourceAttributes {
                group: String::new(),
                resource: "secrets".into(),
                subresource: String::new(),
                namespace: "b".into(),
                name: "db".into(),
            }),
            path: String::new(),
        };
        let e: Value = serde_json::from_slice(&event(&request(&alice, &a, 403))).unwrap();
        assert_eq!(e["verb"], "get");
        assert_eq!(e["user"]["username"], "alice");
        assert_eq!(e["objectRef"]["resource"], "secrets");
        assert_eq!(e["objectRef"]["namespace"], "b");
        assert_eq!(e["objectRef"]["name"], "db");
        assert_eq!(e["objectRef"]["apiVersion"], "v1");
        assert_eq!(e["responseStatus"]["code"], 403);
        assert_eq!(e["sourceIPs"][0], "127.0.0.1");
    }

    #[test]
    fn audit_ids_are_unique_and_shaped_like_uuids() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| audit_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(20) {
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_its_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(Options {
            path: path.clone(),
            max_bytes: 2_000,
            max_backups: 2,
        })
        .unwrap();
        let who = Identity::Admin;
        let a = Attributes {
            verb: "list".into(),
            resource: None,
            path: concat!("/", "healthz").into(),
        };
        for _ in 0..100 {
            log.record(&request(&who, &a, 200));
        }
        drop(log);
        // The writer ends when the log is dropped; give it a moment to finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !path.with_extension("log.2").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        for p in [
            path.clone(),
            path.with_extension("log.1"),
            path.with_extension("log.2"),
        ] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 2_000, "{}: {}", p.display(), text.len());
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["kind"], "Event");
            }
        }
        assert!(!path.with_extension("log.3").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
