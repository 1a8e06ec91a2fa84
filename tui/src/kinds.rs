//! The kinds the TUI lists: their names and short names for `:` command mode, and the columns of their tables,
//! each a function from an object (and the store, for lookups across kinds) to a cell. Columns follow what
//! `kubectl get` shows, plus a progress bar for rollouts.

use serde_json::Value;

use crate::state::{at, str_at, Store};
use capstan_present::columns;

/// The text kubectl shows in `column` of `cols` for `v` (the API server's Table code).
fn kubectl(cols: &columns::Columns, v: &Value, column: &str) -> String {
    columns::text(cols, v, column)
}

/// How a cell should look; drawing maps tones to colours (or to nothing on terminals without them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Busy,
    Bad,
    Dim,
}

pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            tone: Tone::Plain,
        }
    }
    fn tone(text: impl Into<String>, tone: Tone) -> Cell {
        Cell {
            text: text.into(),
            tone,
        }
    }
}

/// What cells are computed from.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub now: chrono::DateTime<chrono::Utc>,
    /// Secrets' values shown (otherwise counted only).
    pub reveal: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(store: &'a Store, now: chrono::DateTime<chrono::Utc>, reveal: bool) -> Self {
        Ctx { store, now, reveal }
    }
}

pub struct Column {
    pub name: &'static str,
    pub width: u16,
    pub cell: fn(&Value, &Ctx) -> Cell,
}

pub struct Kind {
    /// The plural resource name, as the API and the store know it.
    pub resource: &'static str,
    pub title: &'static str,
    /// What `:` accepts besides the resource name.
    pub aliases: &'static [&'static str],
    pub namespaced: bool,
    pub columns: &'static [Column],
}

/// The age of a timestamp as kubectl prints it (`45s`, `3h20m`, `4d`): the same function as the API server's tables.
pub fn age(ts: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "-".into();
    };
    capstan_units::human_duration((now - t.with_timezone(&chrono::Utc)).num_seconds())
}

fn int(v: &Value, p: &str) -> i64 {
    at(v, p).and_then(Value::as_i64).unwrap_or(0)
}

fn name(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/metadata/name"))
}
fn namespace(v: &Value, _: &Ctx) -> Cell {
    Cell::tone(str_at(v, "/metadata/namespace"), Tone::Dim)
}
fn created(v: &Value, c: &Ctx) -> Cell {
    Cell::tone(
        age(str_at(v, "/metadata/creationTimestamp"), c.now),
        Tone::Dim,
    )
}

/// `[██████░░░░]` for `done` of `want`.
pub fn bar(done: i64, want: i64, width: usize) -> String {
    let filled = if want <= 0 {
        width
    } else {
        ((done.clamp(0, want) as usize) * width) / want as usize
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn condition<'a>(v: &'a Value, ty: &str) -> Option<&'a Value> {
    at(v, "/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

// Applications.
fn app_sync(v: &Value, _: &Ctx) -> Cell {
    let s = str_at(v, "/status/sync/status");
    let tone = match s {
        "Synced" => Tone::Good,
        "OutOfSync" | "Unknown" => Tone::Busy,
        _ => Tone::Bad,
    };
    Cell::tone(if s.is_empty() { "-" } else { s }, tone)
}
pub fn health_tone(s: &str) -> Tone {
    match s {
        "Healthy" => Tone::Good,
        "Progressing" | "Suspended" => Tone::Busy,
        "" | "Unknown" => Tone::Dim,
        _ => Tone::Bad,
    }
}
fn app_health(v: &Value, _: &Ctx) -> Cell {
    let s = str_at(v, "/status/health/status");
    Cell::tone(if s.is_empty() { "-" } else { s }, health_tone(s))
}
pub fn short_sha(s: &str) -> String {
    s.chars().take(7).collect()
}
fn app_revision(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(short_sha(str_at(v, "/status/sync/revision")))
}
fn app_last_sync(v: &Value, c: &Ctx) -> Cell {
    let t = str_at(v, "/status/operationState/finishedAt");
    Cell::tone(
        if t.is_empty() {
            "-".into()
        } else {
            age(t, c.now)
        },
        Tone::Dim,
    )
}
fn app_window(v: &Value, _: &Ctx) -> Cell {
    match v
        .pointer("/status/syncWindow/open")
        .and_then(Value::as_bool)
    {
        None => Cell::tone("-", Tone::Dim),
        Some(true) => Cell::tone("open", Tone::Good),
        Some(false) => {
            // "sync window: deny (0 17 * * 5 for 64h) until 2026-12-07T09:00:00Z" -> "deny until 12-07 09:00"
            let m = str_at(v, "/status/syncWindow/message");
            let text = match m.split_once(" until ") {
                Some((_, t)) if t.len() >= 16 => {
                    format!("deny until {} {}", &t[5..10], &t[11..16])
                }
                _ => m.trim_start_matches("sync window: ").to_string(),
            };
            Cell::tone(text, Tone::Busy)
        }
    }
}
fn app_repo(v: &Value, _: &Ctx) -> Cell {
    Cell::tone(str_at(v, "/spec/source/repoURL"), Tone::Dim)
}

// SyncRecords: the history of an Application.
fn rec_seq(v: &Value, _: &Ctx) -> Cell {
    Cell::tone(int(v, "/spec/sequence").to_string(), Tone::Dim)
}
fn rec_commit(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(short_sha(str_at(v, "/spec/revision")))
}
fn rec_author(v: &Value, _: &Ctx) -> Cell {
    let a = str_at(v, "/spec/author");
    Cell::plain(a.split(" <").next().unwrap_or(a))
}
fn rec_message(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/spec/message").lines().next().unwrap_or(""))
}
fn rec_age(v: &Value, c: &Ctx) -> Cell {
    let t = str_at(v, "/spec/finishedAt");
    let t = if t.is_empty() {
        str_at(v, "/metadata/creationTimestamp")
    } else {
        t
    };
    Cell::tone(age(t, c.now), Tone::Dim)
}
fn rec_trigger(v: &Value, _: &Ctx) -> Cell {
    let t = str_at(v, "/spec/trigger");
    let tone = if t.contains("drift") || t.contains("heal") || t.contains("rollback") {
        Tone::Busy
    } else {
        Tone::Plain
    };
    Cell::tone(t, tone)
}
fn rec_result(v: &Value, _: &Ctx) -> Cell {
    let r = str_at(v, "/spec/result");
    let tone = match r {
        "Succeeded" => Tone::Good,
        "Running" | "" => Tone::Busy,
        _ => Tone::Bad,
    };
    Cell::tone(r, tone)
}
fn rec_health(v: &Value, _: &Ctx) -> Cell {
    let h = str_at(v, "/spec/health");
    Cell::tone(if h.is_empty() { "-" } else { h }, health_tone(h))
}
fn rec_changes(v: &Value, _: &Ctx) -> Cell {
    let n = |f: &str| {
        at(v, &format!("/spec/{f}"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    Cell::plain(format!(
        "+{} ~{} -{}",
        n("created"),
        n("updated"),
        n("pruned")
    ))
}

/// A `ready/wanted` cell: good when all are ready.
fn ratio_cell(text: String) -> Cell {
    let all = text.split_once('/').is_some_and(|(r, w)| r == w);
    Cell::tone(text, if all { Tone::Good } else { Tone::Busy })
}

// Deployments. Cells kubectl also shows come from the API server's Table code (`capstan_present::columns`); the
// rollout bar, revision and status are the TUI's own. Ages and durations use the TUI's clock (`Ctx::now`).
fn dep_ready(v: &Value, _: &Ctx) -> Cell {
    ratio_cell(kubectl(&columns::DEPLOYMENT, v, "Ready"))
}
fn dep_updated(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::DEPLOYMENT, v, "Up-to-date"))
}
fn dep_available(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::DEPLOYMENT, v, "Available"))
}
fn dep_progress(v: &Value, _: &Ctx) -> Cell {
    let want = int(v, "/spec/replicas");
    let updated = int(v, "/status/updatedReplicas");
    let available = int(v, "/status/availableReplicas");
    let total = int(v, "/status/replicas");
    let done = updated.min(available);
    let stalled =
        condition(v, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded");
    let complete = done >= want
        && total <= want
        && int(v, "/status/observedGeneration") >= int(v, "/metadata/generation");
    let tone = if stalled {
        Tone::Bad
    } else if complete {
        Tone::Good
    } else {
        Tone::Busy
    };
    Cell::tone(format!("{} {done}/{want}", bar(done, want, 10)), tone)
}
/// A Deployment's revision: its annotation, else the highest of its ReplicaSets' (what `rollout history` lists).
pub fn deployment_revision(store: &Store, d: &Value) -> String {
    let own = str_at(
        d,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    );
    if !own.is_empty() {
        return own.to_string();
    }
    let uid = str_at(d, "/metadata/uid");
    store
        .objects("replicasets")
        .filter(|rs| {
            at(rs, "/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
        })
        .filter_map(|rs| {
            str_at(
                rs,
                "/metadata/annotations/deployment.kubernetes.io~1revision",
            )
            .parse::<i64>()
            .ok()
        })
        .max()
        .map(|r| r.to_string())
        .unwrap_or_default()
}
fn dep_revision(v: &Value, c: &Ctx) -> Cell {
    Cell::plain(deployment_revision(c.store, v))
}
fn dep_status(v: &Value, _: &Ctx) -> Cell {
    if let Some(c) = condition(v, "Progressing") {
        let reason = c["reason"].as_str().unwrap_or("");
        let tone = match reason {
            "ProgressDeadlineExceeded" => Tone::Bad,
            "NewReplicaSetAvailable" => Tone::Good,
            _ => Tone::Busy,
        };
        return Cell::tone(reason, tone);
    }
    Cell::tone("-", Tone::Dim)
}

// ReplicaSets.
fn rs_desired(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::REPLICASET, v, "Desired"))
}
fn rs_current(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::REPLICASET, v, "Current"))
}
fn rs_ready(v: &Value, _: &Ctx) -> Cell {
    let want = kubectl(&columns::REPLICASET, v, "Desired");
    let ready = kubectl(&columns::REPLICASET, v, "Ready");
    let tone = if ready == want {
        Tone::Good
    } else {
        Tone::Busy
    };
    Cell::tone(ready, tone)
}
fn rs_owner(v: &Value, _: &Ctx) -> Cell {
    Cell::tone(str_at(v, "/metadata/ownerReferences/0/name"), Tone::Dim)
}

// Pods.
fn pod_ready(v: &Value, _: &Ctx) -> Cell {
    let text = kubectl(&columns::POD, v, "Ready");
    let all = text
        .split_once('/')
        .is_some_and(|(r, t)| r == t && t != "0");
    Cell::tone(text, if all { Tone::Good } else { Tone::Busy })
}
/// The STATUS column as kubectl computes it (the API server's Table code: a waiting or terminated reason wins over
/// the phase, init containers show as `Init:N/M`).
pub fn pod_status(v: &Value) -> String {
    columns::pod_status(v)
}
fn pod_status_cell(v: &Value, _: &Ctx) -> Cell {
    let s = pod_status(v);
    let tone = match s.as_str() {
        "Running" | "Succeeded" | "Completed" => Tone::Good,
        "Pending" | "ContainerCreating" | "Terminating" | "PodInitializing" => Tone::Busy,
        _ => Tone::Bad,
    };
    Cell::tone(s, tone)
}
fn pod_restarts(v: &Value, _: &Ctx) -> Cell {
    let text = kubectl(&columns::POD, v, "Restarts");
    let tone = if text != "0" { Tone::Busy } else { Tone::Plain };
    Cell::tone(text, tone)
}
fn pod_node(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/spec/nodeName"))
}
fn pod_ip(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/status/podIP"))
}

// Services.
fn svc_type(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/spec/type"))
}
fn svc_ip(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/spec/clusterIP"))
}
fn svc_external(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::SERVICE, v, "External-IP"))
}
fn svc_ports(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::SERVICE, v, "Port(s)"))
}

// Nodes.
fn node_status(v: &Value, _: &Ctx) -> Cell {
    let text = kubectl(&columns::NODE, v, "Status");
    let tone = if text.starts_with("Ready") {
        Tone::Good
    } else {
        Tone::Bad
    };
    Cell::tone(text, tone)
}
pub use capstan_units::{bytes, millicores};
fn node_requests(c: &Ctx, node: &str) -> (i64, i64, usize) {
    let u = c.store.usage(node);
    (u.cpu, u.memory, u.pods)
}
fn node_cpu(v: &Value, c: &Ctx) -> Cell {
    let cap = millicores(str_at(v, "/status/allocatable/cpu"));
    let (used, _, _) = node_requests(c, str_at(v, "/metadata/name"));
    Cell::plain(format!("{used}m/{}", cap))
}
fn node_memory(v: &Value, c: &Ctx) -> Cell {
    let cap = bytes(str_at(v, "/status/allocatable/memory"));
    let (_, used, _) = node_requests(c, str_at(v, "/metadata/name"));
    Cell::plain(format!("{}Mi/{}Mi", used >> 20, cap >> 20))
}
fn node_pods(v: &Value, c: &Ctx) -> Cell {
    let (_, _, n) = node_requests(c, str_at(v, "/metadata/name"));
    Cell::plain(format!("{n}/{}", str_at(v, "/status/allocatable/pods")))
}
fn node_conditions(v: &Value, _: &Ctx) -> Cell {
    let bad: Vec<&str> = at(v, "/status/conditions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|c| c["type"] != "Ready" && c["status"] == "True")
                .filter_map(|c| c["type"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if bad.is_empty() {
        Cell::tone("-", Tone::Dim)
    } else {
        Cell::tone(bad.join(","), Tone::Bad)
    }
}

// Events.
fn ev_last(v: &Value, c: &Ctx) -> Cell {
    let t = [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| str_at(v, p))
    .find(|t| !t.is_empty())
    .unwrap_or("");
    Cell::tone(age(t, c.now), Tone::Dim)
}
fn ev_type(v: &Value, _: &Ctx) -> Cell {
    let t = kubectl(&columns::EVENT, v, "Type");
    let tone = if t == "Warning" {
        Tone::Bad
    } else {
        Tone::Plain
    };
    Cell::tone(t, tone)
}
fn ev_reason(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::EVENT, v, "Reason"))
}
fn ev_object(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::EVENT, v, "Object"))
}
fn ev_message(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::EVENT, v, "Message"))
}

// Jobs and CronJobs.
fn job_completions(v: &Value, _: &Ctx) -> Cell {
    let text = kubectl(&columns::JOB, v, "Completions");
    let done = text
        .split_once('/')
        .is_some_and(|(d, w)| w.split(' ').next() == Some(d));
    Cell::tone(text, if done { Tone::Good } else { Tone::Busy })
}
fn job_status(v: &Value, _: &Ctx) -> Cell {
    let text = kubectl(&columns::JOB, v, "Status");
    let tone = match text.as_str() {
        "Complete" => Tone::Good,
        "Failed" => Tone::Bad,
        _ => Tone::Busy,
    };
    Cell::tone(text, tone)
}
fn job_duration(v: &Value, c: &Ctx) -> Cell {
    let start = str_at(v, "/status/startTime");
    let end = str_at(v, "/status/completionTime");
    let (Ok(s), e) = (
        chrono::DateTime::parse_from_rfc3339(start),
        chrono::DateTime::parse_from_rfc3339(end),
    ) else {
        return Cell::tone("-", Tone::Dim);
    };
    let end = e.map(|e| e.with_timezone(&chrono::Utc)).unwrap_or(c.now);
    let secs = (end - s.with_timezone(&chrono::Utc)).num_seconds().max(0);
    Cell::plain(if secs < 120 {
        format!("{secs}s")
    } else {
        format!("{}m", secs / 60)
    })
}
fn cj_schedule(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::CRONJOB, v, "Schedule"))
}
fn cj_suspend(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::CRONJOB, v, "Suspend"))
}
fn cj_active(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::CRONJOB, v, "Active"))
}
fn cj_last(v: &Value, c: &Ctx) -> Cell {
    let t = str_at(v, "/status/lastScheduleTime");
    Cell::tone(
        if t.is_empty() {
            "<none>".into()
        } else {
            age(t, c.now)
        },
        Tone::Dim,
    )
}

// ConfigMaps and Secrets.
fn data_count(v: &Value, _: &Ctx) -> Cell {
    let n = |f: &str| v.get(f).and_then(Value::as_object).map_or(0, |m| m.len());
    Cell::plain((n("data") + n("binaryData") + n("stringData")).to_string())
}
fn secret_type(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/type"))
}
fn secret_keys(v: &Value, c: &Ctx) -> Cell {
    let keys: Vec<String> = v
        .get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, val)| {
                    if c.reveal {
                        use base64::Engine;
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(val.as_str().unwrap_or(""))
                            .unwrap_or_default();
                        format!("{k}={}", String::from_utf8_lossy(&raw))
                    } else {
                        format!("{k}=••••")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Cell::tone(keys.join(" "), Tone::Dim)
}

// StatefulSets and DaemonSets.
fn sts_ready(v: &Value, _: &Ctx) -> Cell {
    ratio_cell(kubectl(&columns::STATEFULSET, v, "Ready"))
}
fn ds_desired(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::DAEMONSET, v, "Desired"))
}
fn ds_ready(v: &Value, _: &Ctx) -> Cell {
    let want = kubectl(&columns::DAEMONSET, v, "Desired");
    let ready = kubectl(&columns::DAEMONSET, v, "Ready");
    let tone = if ready == want {
        Tone::Good
    } else {
        Tone::Busy
    };
    Cell::tone(ready, tone)
}
fn ds_updated(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(kubectl(&columns::DAEMONSET, v, "Up-to-date"))
}
fn ns_status(v: &Value, _: &Ctx) -> Cell {
    Cell::plain(str_at(v, "/status/phase"))
}

macro_rules! col {
    ($name:expr, $w:expr, $f:expr) => {
        Column {
            name: $name,
            width: $w,
            cell: $f,
        }
    };
}

pub static KINDS: &[Kind] = &[
    Kind {
        resource: "applications",
        title: "Applications",
        aliases: &["apps", "app", "application"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 16, name),
            col!("SYNC", 10, app_sync),
            col!("HEALTH", 11, app_health),
            col!("REVISION", 8, app_revision),
            col!("LAST SYNC", 9, app_last_sync),
            col!("WINDOW", 22, app_window),
            col!("REPO", 30, app_repo),
        ],
    },
    Kind {
        resource: "syncrecords",
        title: "History",
        aliases: &["history", "hist", "syncrecord"],
        namespaced: true,
        columns: &[
            col!("#", 3, rec_seq),
            col!("COMMIT", 7, rec_commit),
            col!("AUTHOR", 12, rec_author),
            col!("MESSAGE", 28, rec_message),
            col!("AGE", 4, rec_age),
            col!("TRIGGER", 9, rec_trigger),
            col!("RESULT", 9, rec_result),
            col!("HEALTH", 11, rec_health),
            col!("CHANGES", 9, rec_changes),
        ],
    },
    Kind {
        resource: "deployments",
        title: "Deployments",
        aliases: &["deploy", "deployment", "dp"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 18, name),
            col!("READY", 6, dep_ready),
            col!("UP-TO-DATE", 10, dep_updated),
            col!("AVAILABLE", 9, dep_available),
            col!("ROLLOUT", 16, dep_progress),
            col!("REV", 3, dep_revision),
            col!("STATUS", 24, dep_status),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "replicasets",
        title: "ReplicaSets",
        aliases: &["rs", "replicaset"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 24, name),
            col!("DESIRED", 7, rs_desired),
            col!("CURRENT", 7, rs_current),
            col!("READY", 5, rs_ready),
            col!("OWNER", 16, rs_owner),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "pods",
        title: "Pods",
        aliases: &["po", "pod"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 28, name),
            col!("READY", 5, pod_ready),
            col!("STATUS", 17, pod_status_cell),
            col!("RESTARTS", 8, pod_restarts),
            col!("NODE", 10, pod_node),
            col!("IP", 15, pod_ip),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "services",
        title: "Services",
        aliases: &["svc", "service"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 18, name),
            col!("TYPE", 12, svc_type),
            col!("CLUSTER-IP", 15, svc_ip),
            col!("EXTERNAL-IP", 15, svc_external),
            col!("PORTS", 20, svc_ports),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "nodes",
        title: "Nodes",
        aliases: &["no", "node"],
        namespaced: false,
        columns: &[
            col!("NAME", 14, name),
            col!("STATUS", 12, node_status),
            col!("CPU REQ/ALLOC", 14, node_cpu),
            col!("MEM REQ/ALLOC", 16, node_memory),
            col!("PODS", 7, node_pods),
            col!("PRESSURE", 14, node_conditions),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "events",
        title: "Events",
        aliases: &["ev", "event"],
        namespaced: true,
        columns: &[
            col!("LAST", 4, ev_last),
            col!("TYPE", 7, ev_type),
            col!("REASON", 17, ev_reason),
            col!("OBJECT", 28, ev_object),
            col!("MESSAGE", 40, ev_message),
        ],
    },
    Kind {
        resource: "jobs",
        title: "Jobs",
        aliases: &["job"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 24, name),
            col!("STATUS", 9, job_status),
            col!("COMPLETIONS", 11, job_completions),
            col!("DURATION", 8, job_duration),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "cronjobs",
        title: "CronJobs",
        aliases: &["cj", "cronjob"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 18, name),
            col!("SCHEDULE", 14, cj_schedule),
            col!("SUSPEND", 7, cj_suspend),
            col!("ACTIVE", 6, cj_active),
            col!("LAST SCHEDULE", 13, cj_last),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "statefulsets",
        title: "StatefulSets",
        aliases: &["sts", "statefulset"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 20, name),
            col!("READY", 6, sts_ready),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "daemonsets",
        title: "DaemonSets",
        aliases: &["ds", "daemonset"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 20, name),
            col!("DESIRED", 7, ds_desired),
            col!("READY", 5, ds_ready),
            col!("UP-TO-DATE", 10, ds_updated),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "configmaps",
        title: "ConfigMaps",
        aliases: &["cm", "configmap"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 28, name),
            col!("DATA", 4, data_count),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "secrets",
        title: "Secrets",
        aliases: &["secret", "sec"],
        namespaced: true,
        columns: &[
            col!("NAMESPACE", 10, namespace),
            col!("NAME", 20, name),
            col!("TYPE", 20, secret_type),
            col!("DATA", 4, data_count),
            col!("VALUES", 30, secret_keys),
            col!("AGE", 4, created),
        ],
    },
    Kind {
        resource: "namespaces",
        title: "Namespaces",
        aliases: &["ns", "namespace"],
        namespaced: false,
        columns: &[
            col!("NAME", 24, name),
            col!("STATUS", 10, ns_status),
            col!("AGE", 4, created),
        ],
    },
];

/// A kind a CustomResourceDefinition defines, as the binary describes it: its columns are the CRD's printer columns,
/// whose cells the binary computes into each object's `__cells` (the TUI reads no JSONPath itself).
#[derive(Clone, Debug, PartialEq)]
pub struct CustomKind {
    /// `plural.group`: the key of its objects in the store.
    pub resource: String,
    /// The kind's name (`Certificate`).
    pub title: String,
    /// What `:` accepts: plural, singular, short names, the kind in lower case.
    pub aliases: Vec<String>,
    pub namespaced: bool,
    /// Printer column names (at most [`MAX_CUSTOM_COLUMNS`]).
    pub columns: Vec<String>,
}

/// Printer columns shown per custom kind.
pub const MAX_CUSTOM_COLUMNS: usize = 8;

fn custom_cell<const I: usize>(v: &Value, c: &Ctx) -> Cell {
    match v.get("__cells").and_then(|c| c.get(I)) {
        // Date columns hold timestamps: shown as ages, like kubectl shows them.
        Some(Value::String(s)) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            Cell::tone(age(s, c.now), Tone::Dim)
        }
        Some(Value::String(s)) => Cell::plain(s.clone()),
        Some(Value::Null) | None => Cell::tone("<none>", Tone::Dim),
        Some(other) => Cell::plain(other.to_string()),
    }
}

const CUSTOM_CELLS: [fn(&Value, &Ctx) -> Cell; MAX_CUSTOM_COLUMNS] = [
    custom_cell::<0>,
    custom_cell::<1>,
    custom_cell::<2>,
    custom_cell::<3>,
    custom_cell::<4>,
    custom_cell::<5>,
    custom_cell::<6>,
    custom_cell::<7>,
];

fn custom_kinds() -> &'static std::sync::RwLock<Vec<&'static Kind>> {
    static CUSTOM: std::sync::OnceLock<std::sync::RwLock<Vec<&'static Kind>>> =
        std::sync::OnceLock::new();
    CUSTOM.get_or_init(Default::default)
}

/// Makes a custom kind listable (`:certificates`); the same description twice changes nothing.
pub fn register(k: &CustomKind) -> &'static Kind {
    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }
    let mut all = custom_kinds().write().unwrap_or_else(|e| e.into_inner());
    let same = |x: &&'static Kind| {
        x.resource == k.resource
            && x.title == k.title
            && x.namespaced == k.namespaced
            && x.aliases
                .iter()
                .copied()
                .eq(k.aliases.iter().map(String::as_str))
            && x.columns
                .iter()
                .map(|c| c.name)
                .eq(custom_column_names(k).iter().map(String::as_str))
    };
    if let Some(found) = all.iter().find(|x| same(x)) {
        return found;
    }
    let mut columns = Vec::new();
    if k.namespaced {
        columns.push(col!("NAMESPACE", 12, namespace));
    }
    columns.push(col!("NAME", 24, name));
    for (i, c) in k.columns.iter().take(MAX_CUSTOM_COLUMNS).enumerate() {
        let width = (c.len() as u16 + 2).clamp(8, 24);
        columns.push(Column {
            name: leak(&c.to_uppercase()),
            width,
            cell: CUSTOM_CELLS[i],
        });
    }
    columns.push(col!("AGE", 5, created));
    let kind: &'static Kind = Box::leak(Box::new(Kind {
        resource: leak(&k.resource),
        title: leak(&k.title),
        aliases: Box::leak(
            k.aliases
                .iter()
                .map(|a| leak(a))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        ),
        namespaced: k.namespaced,
        columns: Box::leak(columns.into_boxed_slice()),
    }));
    all.retain(|x| x.resource != k.resource);
    all.push(kind);
    kind
}

fn custom_column_names(k: &CustomKind) -> Vec<String> {
    let mut names = Vec::new();
    if k.namespaced {
        names.push("NAMESPACE".to_string());
    }
    names.push("NAME".into());
    names.extend(
        k.columns
            .iter()
            .take(MAX_CUSTOM_COLUMNS)
            .map(|c| c.to_uppercase()),
    );
    names.push("AGE".into());
    names
}

/// The kind `word` names (resource, short name or singular), if any; built-in kinds first, then custom ones.
pub fn lookup(word: &str) -> Option<&'static Kind> {
    let w = word.trim().to_lowercase();
    let hit = |k: &&Kind| k.resource == w || k.aliases.contains(&w.as_str());
    KINDS.iter().find(hit).or_else(|| {
        custom_kinds()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .find(|k| hit(k))
    })
}

pub fn by_resource(resource: &str) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.resource == resource)
        .or_else(|| {
            custom_kinds()
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied()
                .find(|k| k.resource == resource)
        })
        .unwrap_or(&KINDS[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_names_resolve_like_kubectl() {
        assert_eq!(lookup("deploy").unwrap().resource, "deployments");
        assert_eq!(lookup("po").unwrap().resource, "pods");
        assert_eq!(lookup("apps").unwrap().resource, "applications");
        assert_eq!(lookup(" SVC ").unwrap().resource, "services");
        assert!(lookup("nonsense").is_none());
    }

    #[test]
    fn pod_status_prefers_the_waiting_reason_and_ages_read_like_kubectl() {
        let p = json!({"status": {"phase": "Running", "containerStatuses": [
            {"ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&p), "CrashLoopBackOff");
        assert_eq!(
            pod_status(&json!({"metadata": {"deletionTimestamp": "x"}})),
            "Terminating"
        );
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(age("2026-01-01T11:59:30Z", now), "30s");
        assert_eq!(age("2026-01-01T11:00:00Z", now), "60m");
        assert_eq!(age("2025-12-30T12:00:00Z", now), "2d");
        assert_eq!(bar(1, 4, 8), "██░░░░░░");
        assert_eq!(millicores("250m") + millicores("1.5"), 1750);
        assert_eq!(bytes("64Mi"), 64 << 20);
    }
}
