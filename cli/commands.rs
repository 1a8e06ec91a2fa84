//! The commands behind the CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use capstan::api::manifest;
use capstan::api::registry::{self, KindInfo};
use capstan::client::Client;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use crate::output;

/// Settings of the control plane's controllers.
#[derive(clap::Args, Clone, Debug)]
pub struct ControlArgs {
    /// The pod address range (an IPv4 /16; each node gets a /24 of it).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The Service ClusterIP range (default: 10.96.0.0/16 as root, where pods reach it from their own network
    /// namespaces; else 127.96.0.0/16, on loopback).
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// The addresses LoadBalancer Services get (the built-in `local` cloud provider).
    #[arg(long, default_value = capstan::controllers::DEFAULT_LOAD_BALANCER_POOL)]
    pub load_balancer_pool: String,
    /// First delay before a Job replaces a failed pod, in seconds (Kubernetes: 10), doubling up to 6 minutes.
    #[arg(long, default_value_t = 10.0)]
    pub job_backoff: f64,
}

/// Runs the store and the API server until Ctrl-C or SIGTERM. With `repo`, applies its manifests once started.
pub async fn server(
    data_dir: &Path,
    listen: SocketAddr,
    repo: Option<PathBuf>,
    node: Option<(NodeArgs, bool)>,
    control: &ControlArgs,
) -> Result<()> {
    let mut settings = capstan::controllers::Settings::with_cluster_cidr(&control.cluster_cidr)
        .map_err(|e| anyhow!("--cluster-cidr: {e}"))?;
    settings.job_backoff = secs(control.job_backoff, "--job-backoff")?;
    settings.gitops_cache = data_dir.join("gitops");
    settings.storage_dir = data_dir.join("storage");
    capstan::cloud::LocalPool::new(&control.load_balancer_pool)
        .map_err(|e| anyhow!("--load-balancer-pool: {e}"))?;
    settings.load_balancer_pool = control.load_balancer_pool.clone();
    let started = Instant::now();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store = capstan::store::embedded::Embedded::open(&data_dir.join("store.redb"))
        .context("opening the store")?;
    let token = capstan::apiserver::load_or_create_token(data_dir)?;
    let mut server = capstan::apiserver::Server::new(Arc::new(store), &token);
    server.services = Arc::new(
        capstan::apiserver::services::Allocator::new(
            control
                .service_cidr
                .as_deref()
                .unwrap_or_else(|| capstan::apiserver::default_service_cidr()),
            capstan::apiserver::NODE_PORTS,
        )
        .map_err(|e| anyhow!("--service-cidr: {e}"))?,
    );
    server
        .bootstrap(&capstan::daemons::bootstrap::objects())
        .await
        .map_err(|e| anyhow!("bootstrapping namespaces: {e}"))?;
    let tls = capstan::apiserver::tls::load_or_create(data_dir)?;
    let tls_config = capstan::apiserver::tls::server_config(&tls)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = if addr.is_ipv6() {
        format!("https://[{host}]:{}", addr.port())
    } else {
        format!("https://{host}:{}", addr.port())
    };
    let kubeconfig = data_dir.join("kubeconfig");
    capstan::client::config::Kubeconfig::for_server(&url, &token, &tls.ca_pem).save(&kubeconfig)?;
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), elapsed_ms = started.elapsed().as_millis() as u64, "capstan API server listening");
    eprintln!(
        "capstan: serving the Kubernetes API on {url}\ncapstan: kubeconfig written to {}",
        kubeconfig.display()
    );
    // The controller manager runs in this process, talking to the API server like any other client.
    let controller_client = Client::new(&url, &token, Some(&tls.ca_pem))?;
    let identity = format!(
        "{}-{}",
        std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim(),
        std::process::id()
    );
    // The controller manager (and its scheduler) gets threads of its own, so a flood of API requests cannot starve
    // the informers that feed it - like kube-controller-manager and kube-scheduler being their own processes.
    let controllers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("capstan-controllers")
        .enable_all()
        .build()
        .context("starting the controller manager's runtime")?;
    let (cm_stop_tx, cm_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller_thread = std::thread::Builder::new()
        .name("capstan-controller-manager".into())
        .spawn(move || {
            controllers.block_on(capstan::daemons::controller_manager::run(
                controller_client,
                identity,
                settings,
                async move {
                    let _ = cm_stop_rx.await;
                },
            ))
        })
        .context("starting the controller manager")?;
    if let Some(repo) = repo {
        let client = Client::new(&url, &token, Some(&tls.ca_pem))?;
        let app = application_for(&repo)?;
        tokio::spawn(async move {
            let apps = registry::lookup("applications").expect("applications");
            let name = app["metadata"]["name"].as_str().unwrap_or("").to_string();
            match client
                .apply(apps, Some("default"), &name, &app, "capstan-up", true)
                .await
            {
                Ok(_) => {
                    tracing::info!(app = %name, repo = %repo.display(), "following the repository")
                }
                Err(e) => {
                    tracing::error!(repo = %repo.display(), "registering the application failed: {e:#}")
                }
            }
        });
    }
    // `up` runs one node agent in this process; on Ctrl-C it stops its pods before the API server goes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = match node {
        Some((args, stop_pods)) => {
            let mut cfg = args.config(data_dir, &token)?;
            cfg.stop_pods_on_exit = stop_pods;
            let runtime = args.runtime(&cfg).await?;
            let client = Client::new(&url, &token, Some(&tls.ca_pem))?;
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = run_agent(client, cfg, runtime, stop).await {
                    tracing::error!("node agent failed: {e:#}");
                }
            }))
        }
        None => None,
    };
    let shutdown = async move {
        terminated().await;
        // Controllers first (nothing reacts to the node going away), then the node's pods, then the API server.
        let _ = cm_stop_tx.send(());
        let joined = tokio::task::spawn_blocking(move || controller_thread.join());
        if tokio::time::timeout(std::time::Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            tracing::warn!("the controller manager did not stop within 5 s");
        }
        let _ = stop_tx.send(true);
        if let Some(a) = agent {
            let _ = a.await;
        }
    };
    capstan::apiserver::serve(listener, server, tls_config, shutdown).await?;
    Ok(())
}

#[derive(Args)]
pub struct GetArgs {
    /// Kinds (comma-separated: `deploy,svc`) optionally followed by a name, or `kind/name`.
    #[arg(required = true)]
    pub what: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output: wide, yaml, json, name.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Watch for changes after listing.
    #[arg(short, long)]
    pub watch: bool,
}

fn resolve_kind(name: &str) -> Result<&'static KindInfo> {
    if name == "all" {
        bail!("internal: 'all' is expanded by the caller");
    }
    registry::lookup(name)
        .ok_or_else(|| anyhow!("the server doesn't have a resource type \"{name}\""))
}

fn expand(kinds: &str) -> Result<Vec<&'static KindInfo>> {
    let mut out = Vec::new();
    for k in kinds.split(',').filter(|k| !k.is_empty()) {
        if k == "all" {
            out.extend(
                registry::KINDS
                    .iter()
                    .filter(|k| k.categories.contains(&"all")),
            );
        } else {
            out.push(resolve_kind(k)?);
        }
    }
    Ok(out)
}

pub async fn get(client: &Client, a: GetArgs) -> Result<()> {
    let ns = if a.all_namespaces {
        None
    } else {
        Some(a.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let mut targets: Vec<(&'static KindInfo, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < a.what.len() {
        let w = &a.what[i];
        if let Some((k, n)) = w.split_once('/') {
            targets.push((resolve_kind(k)?, Some(n.to_string())));
            i += 1;
        } else {
            let kinds = expand(w)?;
            let names: Vec<String> = a.what[i + 1..]
                .iter()
                .take_while(|x| !x.contains('/'))
                .cloned()
                .collect();
            i += 1 + names.len();
            if names.is_empty() {
                targets.extend(kinds.into_iter().map(|k| (k, None)));
            } else {
                for k in kinds {
                    targets.extend(names.iter().map(|n| (k, Some(n.clone()))));
                }
            }
        }
    }
    let format = a.output.as_deref().unwrap_or("");
    let multi = targets.len() > 1;
    let mut first = true;
    let mut all_items = Vec::new();
    for (kind, name) in &targets {
        let ns_for = if kind.namespaced { ns.as_deref() } else { None };
        let mut query = String::new();
        if let Some(l) = &a.selector {
            query = format!("labelSelector={}", url_encode(l));
        }
        match format {
            "yaml" | "json" | "name" => match name {
                Some(n) => all_items.push(client.get(kind, ns_for, n).await?),
                None => {
                    let list = client.list(kind, ns_for, &query).await?;
                    for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                        item["apiVersion"] = Value::String(kind.api_version());
                        item["kind"] = Value::String(kind.kind.to_string());
                        all_items.push(item);
                    }
                }
            },
            _ => {
                let path = match name {
                    Some(n) => capstan::client::resource_path(kind, ns_for, Some(n)),
                    None if query.is_empty() => capstan::client::resource_path(kind, ns_for, None),
                    None => format!(
                        "{}?{query}",
                        capstan::client::resource_path(kind, ns_for, None)
                    ),
                };
                let table = client
                    .request(
                        reqwest::Method::GET,
                        &path,
                        None,
                        Some(output::TABLE_ACCEPT),
                    )
                    .await?;
                let rows = table["rows"].as_array().map_or(0, Vec::len);
                if rows == 0 && multi {
                    continue;
                }
                if !first {
                    println!();
                }
                first = false;
                print!(
                    "{}",
                    output::render_table(
                        &table,
                        kind,
                        format == "wide",
                        a.all_namespaces && kind.namespaced,
                        multi
                    )
                );
                if rows == 0 {
                    eprintln!(
                        "No resources found{}.",
                        ns_for
                            .map(|n| format!(" in {n} namespace"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    match format {
        "yaml" | "json" => {
            let out = if all_items.len() == 1 && targets.iter().all(|(_, n)| n.is_some()) {
                all_items.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": all_items})
            };
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", serde_yaml_ng::to_string(&out)?);
            }
        }
        "name" => {
            for item in &all_items {
                let kind = registry::by_kind(
                    item["apiVersion"].as_str().unwrap_or(""),
                    item["kind"].as_str().unwrap_or(""),
                );
                let res = kind
                    .map(|k| {
                        if k.group.is_empty() {
                            k.singular.to_string()
                        } else {
                            format!("{}.{}", k.singular, k.group)
                        }
                    })
                    .unwrap_or_default();
                println!(
                    "{res}/{}",
                    item.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                );
            }
        }
        _ => {}
    }
    if a.watch {
        let (kind, name) = targets.first().ok_or_else(|| anyhow!("nothing to watch"))?;
        let ns_for = if kind.namespaced { ns.as_deref() } else { None };
        let list = client.list(kind, ns_for, "limit=1").await?;
        let rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let q = name
            .as_ref()
            .map(|n| format!("fieldSelector=metadata.name%3D{n}"))
            .unwrap_or_default();
        let mut stream = client.watch_once(kind, ns_for, &q, &rv).await?;
        while let Some(ev) = stream.next().await {
            let (ty, obj) = ev?;
            if ty == "BOOKMARK" {
                continue;
            }
            let cells = (kind.columns.cells)(&obj);
            let text: Vec<String> = cells
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| c.to_string())
                })
                .collect();
            println!("{ty}\t{}", text.join("\t"));
        }
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[derive(Args)]
pub struct ApplyArgs {
    /// Files or directories of manifests.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Take ownership of conflicting fields.
    #[arg(long)]
    pub force_conflicts: bool,
}

/// Dry-runs every document, then applies them all: a bad document leaves nothing half-applied.
async fn apply_docs(
    client: &Client,
    docs: Vec<manifest::Document>,
    ns: Option<&str>,
    apply: bool,
    manager: &str,
    force: bool,
) -> Result<usize> {
    // Namespaces first, so objects in them can be checked.
    let mut docs = docs;
    docs.sort_by_key(|d| if d.kind.kind == "Namespace" { 0 } else { 1 });
    for d in &docs {
        if d.name().is_empty() {
            bail!(
                "{}: document {}: metadata.name is required",
                d.file,
                d.index
            );
        }
    }
    for phase in ["dry-run", "apply"] {
        for d in &docs {
            if phase == "dry-run"
                && d.kind.kind != "Namespace"
                && docs.iter().any(|x| x.kind.kind == "Namespace")
            {
                // Objects in namespaces this same set creates cannot be dry-run before those exist.
                let target_ns = d.namespace().or(ns).unwrap_or("default");
                if docs
                    .iter()
                    .any(|x| x.kind.kind == "Namespace" && x.name() == target_ns)
                {
                    continue;
                }
            }
            let target_ns = if d.kind.namespaced {
                Some(d.namespace().or(ns).unwrap_or("default"))
            } else {
                None
            };
            let mut obj = d.object.clone();
            if let (Some(n), true) = (target_ns, d.kind.namespaced) {
                obj["metadata"]["namespace"] = Value::String(n.to_string());
            }
            let dry = phase == "dry-run";
            let res = if apply {
                let mut path = format!(
                    "{}?fieldManager={manager}&fieldValidation=Strict{}",
                    capstan::client::resource_path(d.kind, target_ns, Some(d.name())),
                    if force { "&force=true" } else { "" }
                );
                if dry {
                    path.push_str("&dryRun=All");
                }
                client
                    .request(
                        reqwest::Method::PATCH,
                        &path,
                        Some(("application/apply-patch+yaml", obj.to_string().into_bytes())),
                        None,
                    )
                    .await
            } else {
                let mut path = format!(
                    "{}?fieldManager={manager}&fieldValidation=Strict",
                    capstan::client::resource_path(d.kind, target_ns, None)
                );
                if dry {
                    path.push_str("&dryRun=All");
                }
                client
                    .request(
                        reqwest::Method::POST,
                        &path,
                        Some(("application/json", obj.to_string().into_bytes())),
                        None,
                    )
                    .await
            };
            match res {
                Ok(_) if dry => {}
                Ok(_) => {
                    let what = if d.kind.group.is_empty() {
                        d.kind.singular.to_string()
                    } else {
                        format!("{}.{}", d.kind.singular, d.kind.group)
                    };
                    println!(
                        "{what}/{} {}",
                        d.name(),
                        if apply {
                            "serverside-applied"
                        } else {
                            "created"
                        }
                    );
                }
                Err(e) => bail!(
                    "{}: document {} ({} {}): {e}",
                    d.file,
                    d.index,
                    d.kind.kind,
                    d.name()
                ),
            }
        }
    }
    Ok(docs.len())
}

pub async fn apply(client: &Client, a: ApplyArgs, server_side: bool) -> Result<()> {
    let mut docs = Vec::new();
    for f in &a.files {
        docs.extend(crate::manifests::read(f)?);
    }
    let manager = if server_side {
        "capstan"
    } else {
        "capstan-create"
    };
    apply_docs(
        client,
        docs,
        a.namespace.as_deref(),
        server_side,
        manager,
        a.force_conflicts,
    )
    .await?;
    Ok(())
}

#[derive(Args)]
pub struct DeleteArgs {
    /// `kind name...` or `kind/name`.
    pub what: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Background, Foreground or Orphan.
    #[arg(long, default_value = "Background")]
    pub cascade: String,
}

pub async fn delete(client: &Client, a: DeleteArgs) -> Result<()> {
    let ns = a.namespace.clone().unwrap_or_else(|| "default".into());
    let policy = match a.cascade.to_ascii_lowercase().as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => bail!("--cascade must be background, foreground or orphan, not {other:?}"),
    };
    let mut targets: Vec<(&'static KindInfo, Option<String>, String)> = Vec::new();
    for f in &a.files {
        for d in crate::manifests::read(f)? {
            let n = if d.kind.namespaced {
                Some(d.namespace().unwrap_or(&ns).to_string())
            } else {
                None
            };
            targets.push((d.kind, n, d.name().to_string()));
        }
    }
    let mut i = 0;
    while i < a.what.len() {
        if let Some((k, n)) = a.what[i].split_once('/') {
            let kind = resolve_kind(k)?;
            targets.push((kind, kind.namespaced.then(|| ns.clone()), n.to_string()));
            i += 1;
        } else {
            let kind = resolve_kind(&a.what[i])?;
            let names: Vec<String> = a.what[i + 1..].to_vec();
            if names.is_empty() {
                bail!("resource(s) were provided, but no name was specified");
            }
            for n in names {
                targets.push((kind, kind.namespaced.then(|| ns.clone()), n));
            }
            i = a.what.len();
        }
    }
    if targets.is_empty() {
        bail!("nothing to delete: give KIND NAME, KIND/NAME or -f FILE");
    }
    let mut failed = false;
    for (kind, n, name) in targets {
        match client.delete(kind, n.as_deref(), &name, policy).await {
            Ok(_) => {
                let what = if kind.group.is_empty() {
                    kind.plural.to_string()
                } else {
                    format!("{}.{}", kind.plural, kind.group)
                };
                println!("{what} \"{name}\" deleted");
            }
            Err(e) => {
                eprintln!("Error from server: {e}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some objects could not be deleted");
    }
    Ok(())
}

#[derive(Args)]
pub struct DescribeArgs {
    /// `kind name` or `kind/name`.
    pub what: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn describe(client: &Client, a: DescribeArgs) -> Result<()> {
    let (kind, name) = match a.what.as_slice() {
        [one] if one.contains('/') => {
            let (k, n) = one.split_once('/').unwrap_or_default();
            (resolve_kind(k)?, n.to_string())
        }
        [k, n] => (resolve_kind(k)?, n.clone()),
        _ => bail!("usage: capstan describe KIND NAME"),
    };
    let ns = a.namespace.unwrap_or_else(|| "default".into());
    let obj = client
        .get(kind, kind.namespaced.then_some(ns.as_str()), &name)
        .await?;
    print!("{}", output::describe(&obj));
    // Events about the object.
    if let Some(ev_kind) = registry::lookup("events") {
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let q = format!(
            "fieldSelector={}",
            url_encode(&format!(
                "involvedObject.name={name},involvedObject.uid={uid}"
            ))
        );
        if let Ok(list) = client
            .list(ev_kind, kind.namespaced.then_some(ns.as_str()), &q)
            .await
        {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("Events:  <none>");
            } else {
                println!("Events:");
                for e in items {
                    println!(
                        "  {}\t{}\t{}",
                        e["type"].as_str().unwrap_or(""),
                        e["reason"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Settings of the node agent that `up` and `agent` run.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// The node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address: where its agent listens and what it reports as InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: std::net::IpAddr,
    /// CPU capacity to report (default: the machine's).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory capacity to report, as a quantity (default: the machine's).
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// First crash-loop backoff, in seconds (Kubernetes: 10), doubling up to --crashloop-backoff-max.
    #[arg(long, default_value_t = 10.0)]
    pub crashloop_backoff: f64,
    #[arg(long, default_value_t = 300.0)]
    pub crashloop_backoff_max: f64,
    /// Extra node labels, KEY=VALUE (repeatable).
    #[arg(long = "node-label")]
    pub labels: Vec<String>,
    /// The pod network: `bridge` (a network namespace per pod on a bridge; root, Linux), `host` (pods share the
    /// host's network, each with its own 127.x address), or `auto` (bridge as root, else host).
    #[arg(long, value_enum, default_value = "auto")]
    pub network: capstan::node::network::Mode,
    /// The container runtime: `process` (each container's command run as host processes; images are not used) or
    /// `containerd` (images run as real containers; needs the `containerd` cargo feature and a running containerd).
    #[arg(long, value_enum, default_value = "process")]
    pub runtime: RuntimeKind,
    /// containerd's socket (with --runtime containerd).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd_socket: PathBuf,
    /// The containerd namespace Capstan's images and containers live in.
    #[arg(long, default_value = "capstan")]
    pub containerd_namespace: String,
}

type Runtime = Arc<dyn capstan::node::runtime::ContainerRuntime>;
type Preparation = Option<std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>>;

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum RuntimeKind {
    Process,
    Containerd,
}

impl NodeArgs {
    /// Opens the chosen container runtime. For containerd it connects, and returns the work still to do before
    /// pods start: making sure the image of this binary that the examples run is there.
    async fn runtime(&self, cfg: &capstan::node::Config) -> Result<(Runtime, Preparation)> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        match self.runtime {
            RuntimeKind::Process => {
                let runtime = capstan::node::runtime::process::ProcessRuntime::new(&cfg.data_dir)
                    .with_context(|| format!("preparing {}", cfg.data_dir.display()))?;
                Ok((Arc::new(runtime), None))
            }
            #[cfg(feature = "containerd")]
            RuntimeKind::Containerd => {
                let runtime = capstan::node::runtime::containerd::ContainerdRuntime::new(
                    &self.containerd_socket,
                    &self.containerd_namespace,
                    Arc::new(capstan::image::registry::HttpRegistry::default()),
                )
                .await?;
                let (client, dir) = (runtime.client.clone(), cfg.data_dir.clone());
                let prepare: Preparation = Some(Box::pin(async move {
                    crate::image::ensure_self_image(&client, &dir).await
                }));
                Ok((Arc::new(runtime), prepare))
            }
            #[cfg(not(feature = "containerd"))]
            RuntimeKind::Containerd => Err(anyhow!(
                "--runtime containerd: this capstan was built without containerd support; \
                 build it with `cargo build --release --features containerd` (needs protoc)"
            )),
        }
    }

    fn config(&self, data_dir: &Path, token: &str) -> Result<capstan::node::Config> {
        let name = self
            .node_name
            .clone()
            .unwrap_or_else(capstan::node::hostname);
        let mut cfg = capstan::node::Config::new(&name, data_dir.join("nodes").join(&name), token);
        cfg.address = self.node_ip;
        cfg.cpu = self.cpu.clone();
        cfg.memory = self.memory.clone();
        cfg.max_pods = self.max_pods;
        cfg.network = self.network;
        cfg.backoff_base = secs(self.crashloop_backoff, "--crashloop-backoff")?;
        cfg.backoff_max = secs(self.crashloop_backoff_max, "--crashloop-backoff-max")?;
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow!("--node-label {l:?}: expected KEY=VALUE"))?;
            cfg.labels.push((k.to_string(), v.to_string()));
        }
        Ok(cfg)
    }
}

async fn run_agent(
    client: Client,
    cfg: capstan::node::Config,
    (runtime, prepare): (Runtime, Preparation),
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    if let Some(p) = prepare {
        p.await?;
    }
    capstan::daemons::agent::run(client, cfg, runtime, stop).await?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// `capstan agent`: one node joining the cluster at `server`.
pub async fn agent(
    data_dir: &Path,
    server: &str,
    token: &str,
    ca: Option<&Path>,
    node: NodeArgs,
    stop_pods_on_exit: bool,
) -> Result<()> {
    let ca_path = ca
        .map(Path::to_path_buf)
        .unwrap_or_else(|| capstan::client::config::default_data_dir().join("ca.crt"));
    let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
        format!(
            "reading the API server's certificate authority {} (pass --certificate-authority)",
            ca_path.display()
        )
    })?;
    let client = Client::new(server, token, Some(&ca_pem))?;
    let mut cfg = node.config(data_dir, token)?;
    cfg.stop_pods_on_exit = stop_pods_on_exit;
    let runtime = node.runtime(&cfg).await?;
    eprintln!("capstan: node agent {} joining {server}", cfg.node_name);
    run_agent(client, cfg, runtime, terminated()).await
}

#[derive(Args)]
pub struct LogsArgs {
    /// The pod (`NAME` or `pod/NAME`).
    pub pod: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long)]
    pub container: Option<String>,
    #[arg(short, long)]
    pub follow: bool,
    /// The previous instance of the container.
    #[arg(short, long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<i64>,
    #[arg(long)]
    pub timestamps: bool,
    /// Only lines newer than this (e.g. 30s, 5m, 1h).
    #[arg(long)]
    pub since: Option<String>,
}

fn parse_since(s: &str) -> Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--since {s:?}: expected e.g. 30s, 5m or 1h"))?;
    Ok(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("--since {s:?}: expected e.g. 30s, 5m or 1h"),
    })
}

pub async fn logs(client: &Client, a: LogsArgs) -> Result<()> {
    let name = a
        .pod
        .strip_prefix("pod/")
        .or(a.pod.strip_prefix("pods/"))
        .unwrap_or(&a.pod);
    let ns = a.namespace.as_deref().unwrap_or("default");
    let pods = resolve_kind("pods")?;
    let mut path = format!(
        "{}/log?",
        capstan::client::resource_path(pods, Some(ns), Some(name))
    );
    if let Some(c) = &a.container {
        path.push_str(&format!("container={}&", url_encode(c)));
    }
    if a.follow {
        path.push_str("follow=true&");
    }
    if a.previous {
        path.push_str("previous=true&");
    }
    if a.timestamps {
        path.push_str("timestamps=true&");
    }
    if let Some(t) = a.tail.filter(|t| *t >= 0) {
        path.push_str(&format!("tailLines={t}&"));
    }
    if let Some(s) = &a.since {
        path.push_str(&format!("sinceSeconds={}&", parse_since(s)?));
    }
    let resp = client.open(path.trim_end_matches(['&', '?'])).await?;
    let mut body = resp.bytes_stream();
    use std::io::Write;
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

#[derive(Args)]
pub struct ShimArgs {
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    exit_file: PathBuf,
    #[arg(long, default_value_t = 10 << 20)]
    max_log_bytes: u64,
    #[arg(long, default_value_t = 5)]
    max_log_files: u32,
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// A JSON file of bind mounts to set up in the container's own mount namespace.
    #[arg(long)]
    mounts: Option<PathBuf>,
    /// The pod's network namespace (a bind-mounted namespace file) to run the container in.
    #[arg(long)]
    netns: Option<PathBuf>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn shim(a: ShimArgs) -> i32 {
    capstan::node::runtime::shim::run(capstan::node::runtime::shim::ShimArgs {
        log: a.log,
        exit_file: a.exit_file,
        max_log_bytes: a.max_log_bytes,
        max_log_files: a.max_log_files,
        workdir: a.workdir,
        mounts: a.mounts,
        netns: a.netns,
        command: a.command,
    })
}

/// The Application `capstan up REPO` registers: the repository that holds REPO (a directory inside it works), at its
/// current branch, named after the directory.
fn application_for(repo: &Path) -> Result<Value> {
    let abs = repo
        .canonicalize()
        .with_context(|| format!("repository path {}", repo.display()))?;
    let git = git2::Repository::discover(&abs).map_err(|e| {
        anyhow!(
            "{} is not inside a git repository ({e}); `git init` it and commit the manifests",
            abs.display()
        )
    })?;
    drop(git);
    let base = abs
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "app".into());
    let mut name: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').chars().take(50).collect();
    if name.is_empty() {
        name = "app".into();
    }
    Ok(
        serde_json::json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"repoURL": abs.display().to_string()}, "destination": {"namespace": "default"}}}),
    )
}

/// A flag's seconds as a Duration (a clear error for negative or absurd values).
fn secs(s: f64, flag: &str) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow!("{flag}: {s} is not a duration in seconds"))
}
