//! `capstan app ...`: Applications from the command line - create, delete, list, get, history, diff, sync, rollback,
//! wait, crd.
//! Rollback and diff read the repository directly (it is local to this machine), the rest goes through the API.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use capstan::api::gitops::Application;
use capstan::api::registry::{self, KindInfo};
use capstan::client::{Api, Client};
use capstan::gitops::{render, sync};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
pub struct AppArgs {
    #[command(subcommand)]
    pub command: AppCommand,
    /// The Applications' namespace.
    #[arg(short, long, global = true, default_value = "default")]
    pub namespace: String,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Applications with their sync and health.
    List,
    /// One Application: source, sync, health, objects.
    Get { name: String },
    /// Every sync attempt, newest first.
    History { name: String },
    /// What differs between git (the synced commit, or --revision) and the cluster.
    Diff {
        name: String,
        #[arg(long)]
        revision: Option<String>,
    },
    /// Sync now, even without a new commit (--force: also inside a sync window that holds syncs).
    Sync {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Write a revert commit restoring the app's path as it was at --to (default: the last commit that synced
    /// Healthy before the deployed one).
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Print the secret push webhooks must be signed with (the Secret kube-system/capstan-webhook, made at first
    /// start).
    WebhookSecret,
    /// Create an Application following a repository path.
    Create {
        name: String,
        /// Repository: a local path, file://, https:// or ssh:// URL.
        #[arg(long)]
        repo: String,
        /// Directory in the repository (default: its root).
        #[arg(long, default_value = "")]
        path: String,
        /// Branch, tag or commit (default: the repository's current branch).
        #[arg(long)]
        revision: Option<String>,
        /// Namespace for objects that name none (default: the Application's namespace).
        #[arg(long)]
        dest_namespace: Option<String>,
        /// Sync only on request (`capstan app sync`), not on every commit.
        #[arg(long)]
        manual: bool,
    },
    /// Delete an Application; with --cascade, the objects it applied first.
    Delete {
        name: String,
        #[arg(long)]
        cascade: bool,
    },
    /// Print the Application kind as a CustomResourceDefinition (a structural schema), for tools that validate
    /// Applications offline.
    Crd,
    /// Wait until the app is Synced and has the given health.
    Wait {
        name: String,
        #[arg(long, default_value = "Healthy")]
        health: String,
        /// Seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn kind(plural: &str) -> &'static KindInfo {
    registry::lookup(plural).expect("registered kind")
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The revision an app last synced (empty when it never did).
fn last_synced(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.last_synced_revision.clone())
        .unwrap_or_default()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

async fn records(client: &Client, ns: &str, app: &str) -> Result<Vec<Value>> {
    Ok(capstan::gitops::history(client, ns, app).await?)
}

/// `capstan app crd`: needs no cluster.
pub fn print_crd() -> Result<()> {
    let crd = capstan::api::crd::describe_kind(kind("applications"));
    print!("{}", serde_yaml_ng::to_string(&crd)?);
    Ok(())
}

pub async fn run(client: &Client, a: AppArgs) -> Result<()> {
    let ns = a.namespace.as_str();
    let apps = kind("applications");
    match a.command {
        AppCommand::Crd => print_crd()?,
        AppCommand::Create {
            name,
            repo,
            path,
            revision,
            dest_namespace,
            manual,
        } => {
            // A local repository is followed by its absolute path (the server may run elsewhere in the tree).
            let repo = match std::path::Path::new(&repo).canonicalize() {
                Ok(p) if !repo.contains("://") => p.display().to_string(),
                _ => repo,
            };
            let mut source = json!({"repoURL": repo});
            if !path.is_empty() {
                source["path"] = json!(path);
            }
            if let Some(r) = revision {
                source["targetRevision"] = json!(r);
            }
            let mut spec = json!({"source": source,
                "destination": {"namespace": dest_namespace.unwrap_or_else(|| ns.to_string())}});
            if manual {
                spec["syncPolicy"] = json!({"automated": false});
            }
            let body = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
                "metadata": {"name": name, "namespace": ns}, "spec": spec});
            client.create(apps, Some(ns), &body).await?;
            println!("application.gitops.capstan.io/{name} created");
        }
        AppCommand::Delete { name, cascade } => {
            if cascade {
                let app = client.get(apps, Some(ns), &name).await?;
                let mut finalizers: Vec<Value> = app["metadata"]["finalizers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !finalizers.iter().any(|f| f == sync::CASCADE_FINALIZER) {
                    finalizers.push(json!(sync::CASCADE_FINALIZER));
                }
                client
                    .patch(
                        apps,
                        Some(ns),
                        &name,
                        "application/merge-patch+json",
                        &json!({"metadata": {"finalizers": finalizers}}),
                    )
                    .await?;
            }
            client.delete(apps, Some(ns), &name, "Background").await?;
            println!(
                "application.gitops.capstan.io/{name} deleted{}",
                if cascade {
                    " (with the objects it applied)"
                } else {
                    ""
                }
            );
        }
        AppCommand::WebhookSecret => {
            let secret = client
                .get(kind("secrets"), Some("kube-system"), "capstan-webhook")
                .await?;
            let value = capstan::api::tokens::secret_data(&secret, "secret")
                .ok_or_else(|| anyhow::anyhow!("kube-system/capstan-webhook has no data.secret"))?;
            println!("{value}");
        }
        AppCommand::List => {
            let list = client.list(apps, None, "").await?;
            println!(
                "{:<12} {:<20} {:<10} {:<12} {:<8} REPO",
                "NAMESPACE", "NAME", "SYNC", "HEALTH", "REVISION"
            );
            for app in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<12} {:<20} {:<10} {:<12} {:<8} {}",
                    s(app, "/metadata/namespace"),
                    s(app, "/metadata/name"),
                    s(app, "/status/sync/status"),
                    s(app, "/status/health/status"),
                    short(s(app, "/status/sync/revision")),
                    s(app, "/spec/source/repoURL")
                );
            }
        }
        AppCommand::Get { name } => {
            let app = client.get(apps, Some(ns), &name).await?;
            println!("Name:        {ns}/{name}");
            println!("Repository:  {}", s(&app, "/spec/source/repoURL"));
            println!("Path:        {}", s(&app, "/spec/source/path"));
            println!("Revision:    {}", s(&app, "/status/sync/revision"));
            println!("Sync:        {}", s(&app, "/status/sync/status"));
            println!(
                "Health:      {} {}",
                s(&app, "/status/health/status"),
                s(&app, "/status/health/message")
            );
            println!(
                "Operation:   {} {}",
                s(&app, "/status/operationState/phase"),
                s(&app, "/status/operationState/message")
            );
            if let Some(ws) = app["spec"]["syncWindows"]
                .as_array()
                .filter(|w| !w.is_empty())
            {
                println!(
                    "Windows:     {}",
                    app["status"]["syncWindow"]["message"]
                        .as_str()
                        .unwrap_or("(not evaluated yet)")
                );
                for w in ws {
                    println!(
                        "  {:<6} {:<16} for {}{}",
                        s(w, "/kind"),
                        s(w, "/schedule"),
                        s(w, "/duration"),
                        w["timeZone"]
                            .as_str()
                            .map(|z| format!(" ({z})"))
                            .unwrap_or_default()
                    );
                }
            }
            println!("Objects:");
            for r in app["status"]["resources"].as_array().into_iter().flatten() {
                println!(
                    "  {:<12} {:<40} {:<10} {}",
                    s(r, "/kind"),
                    format!("{}/{}", s(r, "/namespace"), s(r, "/name")),
                    s(r, "/status"),
                    s(r, "/health/status")
                );
            }
        }
        AppCommand::History { name } => {
            println!(
                "{:<4} {:<8} {:<10} {:<10} {:<12} {:<21} {:<18} MESSAGE",
                "SEQ", "REVISION", "TRIGGER", "RESULT", "HEALTH", "FINISHED", "CHANGES"
            );
            for r in records(client, ns, &name).await? {
                let n = |f: &str| r["spec"][f].as_array().map_or(0, Vec::len);
                println!(
                    "{:<4} {:<8} {:<10} {:<10} {:<12} {:<21} {:<18} {}",
                    r["spec"]["sequence"].as_i64().unwrap_or(0),
                    short(s(&r, "/spec/revision")),
                    s(&r, "/spec/trigger"),
                    s(&r, "/spec/result"),
                    s(&r, "/spec/health"),
                    s(&r, "/spec/finishedAt"),
                    format!("+{} ~{} -{}", n("created"), n("updated"), n("pruned")),
                    s(&r, "/spec/message")
                );
                if let Some(e) = r["spec"]["error"].as_str() {
                    for l in e.lines() {
                        println!("     {l}");
                    }
                }
            }
        }
        AppCommand::Diff { name, revision } => {
            let app = Api::<Application>::namespaced(client, ns)
                .get(&name)
                .await?;
            let rev = revision.unwrap_or_else(|| last_synced(&app));
            let scratch = tempfile::tempdir()?;
            let creds = capstan::gitops::credentials(client, &app).await?;
            let src = capstan::gitops::open_source(&app, scratch.path(), creds)?;
            if src.remote.is_some() {
                src.fetch()?;
            }
            let oid = src.resolve(Some(&rev).filter(|r| !r.is_empty()).map(String::as_str))?;
            let snap = src.snapshot(oid)?;
            let default_ns = app
                .spec
                .as_ref()
                .and_then(|s| s.destination.as_ref())
                .and_then(|d| d.namespace.as_deref())
                .unwrap_or("default");
            let desired = render::render(&snap, default_ns).map_err(|e| anyhow!(e.join("\n")))?;
            let mut differs = 0;
            for d in &desired {
                match client.get(d.kind, d.namespace(), d.name()).await {
                    Ok(live) => {
                        let ignore = app
                            .spec
                            .as_ref()
                            .and_then(|s| s.ignore_differences.as_deref())
                            .unwrap_or_default();
                        let fields = sync::ignore_differences(
                            ignore,
                            d.kind,
                            &live,
                            sync::drift(&d.object, &live),
                        );
                        for f in &fields {
                            differs += 1;
                            let ptr = format!("/{}", f.replace(['.', '['], "/").replace(']', ""));
                            println!(
                                "{} {f}: git {} | live {}",
                                d.id(),
                                d.object.pointer(&ptr).unwrap_or(&Value::Null),
                                live.pointer(&ptr).unwrap_or(&Value::Null)
                            );
                        }
                    }
                    Err(_) => {
                        differs += 1;
                        println!("{} is in git ({}) but not in the cluster", d.id(), d.at());
                    }
                }
            }
            if differs == 0 {
                eprintln!("no differences with {}", short(&snap.commit));
            }
        }
        AppCommand::Sync { name, force } => {
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let value = if force { format!("force:{at}") } else { at };
            let patch = json!({"metadata": {"annotations": {"capstan.io/sync-requested": value}}});
            client
                .patch(
                    apps,
                    Some(ns),
                    &name,
                    "application/merge-patch+json",
                    &patch,
                )
                .await?;
            println!("application.gitops.capstan.io/{name} sync requested");
        }
        AppCommand::Rollback { name, to } => {
            let app = Api::<Application>::namespaced(client, ns)
                .get(&name)
                .await?;
            let current = last_synced(&app);
            let to = match to {
                Some(t) => t,
                None => capstan::api::gitops::rollback_target(
                    &records(client, ns, &name).await?,
                    &current,
                )
                .ok_or_else(|| {
                    anyhow!("no earlier revision of {name} synced Healthy; pass --to SHA")
                })?,
            };
            let why = format!(
                "Requested with `capstan app rollback` while {} was deployed.",
                short(&current)
            );
            let commit = capstan::gitops::write_rollback(client, &app, &to, &why).await?;
            println!(
                "wrote {} reverting {name} to {}; the cluster follows it like any commit",
                short(&commit),
                short(&to)
            );
        }
        AppCommand::Wait {
            name,
            health,
            timeout,
        } => {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let app = client.get(apps, Some(ns), &name).await?;
                let (sync_status, h) = (
                    s(&app, "/status/sync/status"),
                    s(&app, "/status/health/status"),
                );
                if sync_status == "Synced" && h == health {
                    println!(
                        "{name}: Synced, {h} at {}",
                        short(s(&app, "/status/sync/revision"))
                    );
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "timed out after {timeout}s: {name} is {sync_status}, {h} {}",
                        s(&app, "/status/health/message")
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}
