//! `capstan tui`: wires the `capstan-tui` crate to a cluster. One informer per kind feeds the TUI's store through
//! change events (so every view is live); a health probe reports lost and recovered connections; requests from the
//! TUI (delete, scale, restart, logs, a commit's diff, rollback by revert, sync) are carried out here with the
//! project's own client and GitOps code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use capstan::api::registry::{self, KindInfo};
use capstan::client::informer::{Change, Informer};
use capstan::client::Client;
use capstan_tui::{Event, Request};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub struct TuiArgs {
    /// The kind to open on (`deploy`, `po`, `apps`, ...; default: Applications).
    pub kind: Option<String>,
    /// Show one namespace (default: all; `n` cycles, `:ns NAME` switches).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Hide every action that changes the cluster or the repository.
    #[arg(long)]
    pub readonly: bool,
    /// Key bindings and defaults (YAML: `keys: {delete: ctrl-x}`, `readonly: true`). Default:
    /// $XDG_CONFIG_HOME/capstan/tui.yaml or ~/.config/capstan/tui.yaml, when present.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The kinds the TUI watches.
const WATCHED: &[&str] = &[
    "applications",
    "syncrecords",
    "deployments",
    "replicasets",
    "pods",
    "services",
    "nodes",
    "events",
    "jobs",
    "cronjobs",
    "statefulsets",
    "daemonsets",
    "configmaps",
    "secrets",
    "namespaces",
];

fn kind(plural: &str) -> Result<&'static KindInfo> {
    registry::lookup(plural).ok_or_else(|| anyhow!("unknown kind {plural:?}"))
}

fn default_config() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("capstan")
        .join("tui.yaml")
}

pub async fn run(client: Client, a: TuiArgs) -> Result<()> {
    let (path, must_exist) = match &a.config {
        Some(p) => (p.clone(), true),
        None => (default_config(), false),
    };
    let config = capstan_tui::Config::load(&path, must_exist)?;
    let keys = config.keymap(&path)?;
    let mut app = capstan_tui::App::new(keys, a.readonly || config.readonly, &client.base());
    app.namespace = a.namespace.clone();
    if let Some(k) = &a.kind {
        let kind = capstan_tui::kinds::lookup(k).ok_or_else(|| {
            anyhow!("unknown kind {k:?} (try deploy, po, svc, apps, no, ev, job, cj, cm, secret)")
        })?;
        app.pages = vec![capstan_tui::app::Page::Table(
            capstan_tui::app::TablePage::new(kind),
        )];
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(anyhow!("capstan tui needs a terminal"));
    }
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for plural in WATCHED {
        let info = kind(plural)?;
        tasks.push(tokio::spawn(forward(
            Informer::start(client.clone(), info, None, String::new()),
            plural,
            ev_tx.clone(),
        )));
    }
    tasks.push(tokio::spawn(custom_kinds(client.clone(), ev_tx.clone())));
    tasks.push(tokio::spawn(health(client.clone(), ev_tx.clone())));
    tasks.push(tokio::spawn(serve_requests(
        client.clone(),
        req_rx,
        ev_tx.clone(),
    )));
    let theme = capstan_tui::Theme {
        color: capstan_tui::colours_supported(),
    };
    let r = capstan_tui::run(app, theme, ev_rx, req_tx).await;
    for t in tasks {
        t.abort();
    }
    r.context("running the terminal UI")
}

/// A custom kind's printer columns (priority 0), from its CRD when this user may read it.
async fn printer_columns(client: &Client, k: &KindInfo) -> Vec<(String, PrinterPath)> {
    let Some(crds) = registry::lookup("customresourcedefinitions") else {
        return Vec::new();
    };
    let Ok(v) = client.get(crds, None, &k.qualified()).await else {
        return Vec::new();
    };
    let Ok(crd) = serde_json::from_value::<capstan::api::crd::CustomResourceDefinition>(v) else {
        return Vec::new();
    };
    crd.spec
        .versions
        .iter()
        .find(|v| v.name == k.version)
        .and_then(|v| v.additional_printer_columns.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .filter_map(|c| Some((c.name, PrinterPath::parse(&c.json_path).ok()?)))
        .take(capstan_tui::kinds::MAX_CUSTOM_COLUMNS)
        .collect()
}

type PrinterPath = capstan::api::crd::jsonpath::Path;

/// Follows the cluster's custom kinds (discovery, every 30 s): tells the TUI about them and runs an informer per
/// kind whose objects carry their printer-column cells.
async fn custom_kinds(client: Client, tx: mpsc::UnboundedSender<Event>) {
    let mut running: std::collections::HashMap<String, tokio::task::JoinHandle<()>> =
        std::collections::HashMap::new();
    loop {
        if capstan::client::discovery::learn(&client).await.is_ok() {
            let mut kinds = Vec::new();
            for k in registry::custom_storage_kinds() {
                let resource = k.qualified();
                let columns = printer_columns(&client, k).await;
                let mut aliases = vec![
                    k.plural.to_string(),
                    k.singular.to_string(),
                    k.kind.to_ascii_lowercase(),
                    resource.clone(),
                ];
                aliases.extend(k.short_names.iter().map(|s| s.to_string()));
                aliases.dedup();
                kinds.push(capstan_tui::kinds::CustomKind {
                    resource: resource.clone(),
                    title: k.kind.to_string(),
                    aliases,
                    namespaced: k.namespaced,
                    columns: columns.iter().map(|(n, _)| n.clone()).collect(),
                });
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(resource) {
                    let inf = Informer::start(client.clone(), k, None, String::new());
                    let paths: Vec<PrinterPath> = columns.into_iter().map(|(_, p)| p).collect();
                    let resource = slot.key().clone();
                    slot.insert(tokio::spawn(forward_custom(
                        inf,
                        resource,
                        paths,
                        tx.clone(),
                    )));
                }
            }
            if tx.send(Event::Kinds(kinds)).is_err() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
}

/// A custom object with its printer-column cells (`__cells`) for the TUI's table.
fn with_cells(obj: &Value, paths: &[PrinterPath]) -> Arc<Value> {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        let cells: Vec<Value> = paths.iter().map(|p| p.cell(obj)).collect();
        m.insert("__cells".into(), Value::Array(cells));
    }
    Arc::new(v)
}

/// [`forward`] for a custom kind, each object carrying its cells.
async fn forward_custom(
    inf: Informer,
    resource: String,
    paths: Vec<PrinterPath>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut changes = inf.changes.subscribe();
    let list = |inf: &Informer| Event::Listed {
        kind: resource.clone(),
        objects: inf
            .cache
            .list()
            .iter()
            .map(|o| with_cells(o, &paths))
            .collect(),
    };
    if inf.cache.synced() && tx.send(list(&inf)).is_err() {
        return;
    }
    loop {
        let ev = match changes.recv().await {
            Ok(Change::Applied(o)) => Event::Applied {
                kind: resource.clone(),
                object: with_cells(&o, &paths),
            },
            Ok(Change::Deleted(o)) => Event::Deleted {
                kind: resource.clone(),
                object: with_cells(&o, &paths),
            },
            Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                list(&inf)
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// Forwards an informer's changes as TUI events: the full list after each (re)list, single changes otherwise.
async fn forward(inf: Informer, plural: &'static str, tx: mpsc::UnboundedSender<Event>) {
    let mut changes = inf.changes.subscribe();
    let list = |inf: &Informer| Event::Listed {
        kind: plural.to_string(),
        objects: inf.cache.list(),
    };
    if inf.cache.synced() && tx.send(list(&inf)).is_err() {
        return;
    }
    loop {
        let ev = match changes.recv().await {
            Ok(Change::Applied(o)) => Event::Applied {
                kind: plural.into(),
                object: o,
            },
            Ok(Change::Deleted(o)) => Event::Deleted {
                kind: plural.into(),
                object: o,
            },
            Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                list(&inf)
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// Reports whether the API server answers, once a second.
async fn health(client: Client, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let state =
            match tokio::time::timeout(Duration::from_secs(2), client.open("/version")).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer in 2 s".to_string()),
            };
        if tx.send(Event::Connection(state)).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve_requests(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Request>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut logs: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(r) = rx.recv().await {
        match r {
            Request::Logs {
                stream,
                namespace,
                pod,
                container,
                previous,
            } => {
                let (client, tx) = (client.clone(), tx.clone());
                logs.insert(
                    stream,
                    tokio::spawn(async move {
                        let error = stream_logs(
                            &client, &tx, stream, &namespace, &pod, &container, previous,
                        )
                        .await
                        .err()
                        .map(|e| e.to_string());
                        let _ = tx.send(Event::LogEnd { stream, error });
                    }),
                );
            }
            Request::StopLogs { stream } => {
                if let Some(t) = logs.remove(&stream) {
                    t.abort();
                }
            }
            other => {
                let (client, tx) = (client.clone(), tx.clone());
                tokio::spawn(async move {
                    let ev = match carry_out(&client, other).await {
                        Ok(ev) => ev,
                        Err(e) => Event::Failure(format!("{e:#}")),
                    };
                    let _ = tx.send(ev);
                });
            }
        }
    }
}

async fn stream_logs(
    client: &Client,
    tx: &mpsc::UnboundedSender<Event>,
    stream: u64,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<()> {
    let mut path = format!(
        "{}/log?container={container}&tailLines=2000",
        capstan::client::resource_path(kind("pods")?, Some(ns), Some(pod))
    );
    path.push_str(if previous {
        "&previous=true"
    } else {
        "&follow=true"
    });
    let resp = client.open(&path).await?;
    let mut body = resp.bytes_stream();
    let mut partial = String::new();
    while let Some(chunk) = body.next().await {
        partial.push_str(&String::from_utf8_lossy(&chunk?));
        if let Some(end) = partial.rfind('\n') {
            let lines: Vec<String> = partial[..end].lines().map(String::from).collect();
            partial = partial[end + 1..].to_string();
            if tx.send(Event::Log { stream, lines }).is_err() {
                return Ok(());
            }
        }
    }
    if !partial.is_empty() {
        let _ = tx.send(Event::Log {
            stream,
            lines: vec![partial],
        });
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

async fn application(
    client: &Client,
    ns: &str,
    app: &str,
) -> Result<capstan::api::gitops::Application> {
    Ok(capstan::client::Api::namespaced(client, ns)
        .get(app)
        .await?)
}

async fn carry_out(client: &Client, r: Request) -> Result<Event> {
    let merge = "application/merge-patch+json";
    Ok(match r {
        Request::Delete {
            kind: k,
            namespace,
            name,
        } => {
            let ns = Some(namespace.as_str()).filter(|n| !n.is_empty());
            client.delete(kind(&k)?, ns, &name, "Background").await?;
            Event::Notice(format!("{k}/{name} deleted"))
        }
        Request::Scale {
            kind: k,
            namespace,
            name,
            replicas,
        } => {
            client
                .patch(
                    kind(&k)?,
                    Some(&namespace),
                    &name,
                    merge,
                    &json!({"spec": {"replicas": replicas}}),
                )
                .await?;
            Event::Notice(format!("{k}/{name} scaled to {replicas}"))
        }
        Request::RolloutRestart {
            kind: k,
            namespace,
            name,
        } => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            client
                .patch(
                    kind(&k)?,
                    Some(&namespace),
                    &name,
                    merge,
                    &json!({"spec": {"template": {"metadata": {"annotations": {
                        "kubectl.kubernetes.io/restartedAt": now}}}}}),
                )
                .await?;
            Event::Notice(format!("{k}/{name} restarting"))
        }
        Request::Sync { namespace, app } => {
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            client
                .patch(
                    kind("applications")?,
                    Some(&namespace),
                    &app,
                    merge,
                    &json!({"metadata": {"annotations": {"capstan.io/sync-requested": at}}}),
                )
                .await?;
            Event::Notice(format!("sync of {app} requested"))
        }
        Request::CommitDiff {
            namespace,
            app,
            revision,
        } => {
            let a = application(client, &namespace, &app).await?;
            let body = capstan::gitops::commit_diff(client, &a, &revision).await?;
            Event::Text {
                title: format!("commit {}", short(&revision)),
                body,
            }
        }
        Request::PrepareRollback {
            namespace,
            app,
            revision,
        } => {
            let a = application(client, &namespace, &app).await?;
            let diff = capstan::gitops::rollback_diff(client, &a, &revision).await?;
            let body = if diff.trim().is_empty() {
                "(the application's files are already as they were at that commit: the revert commit changes nothing)"
                    .to_string()
            } else {
                diff
            };
            Event::Confirm {
                title: format!(
                    "Roll {app} back to {}? A revert commit with this change is written to its repository:",
                    short(&revision)
                ),
                body,
                request: Request::Rollback {
                    namespace,
                    app,
                    revision,
                },
            }
        }
        Request::Rollback {
            namespace,
            app,
            revision,
        } => {
            let a = application(client, &namespace, &app).await?;
            let current = a
                .status
                .as_ref()
                .and_then(|s| s.last_synced_revision.as_deref())
                .unwrap_or("");
            let why = format!(
                "Requested from `capstan tui` while {} was deployed.",
                short(current)
            );
            let commit = capstan::gitops::write_rollback(client, &a, &revision, &why).await?;
            Event::Notice(format!(
                "wrote {} reverting {app} to {}; following the sync",
                short(&commit),
                short(&revision)
            ))
        }
        Request::Logs { .. } | Request::StopLogs { .. } => {
            return Err(anyhow!("log streams are handled apart"))
        }
    })
}
