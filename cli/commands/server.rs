//! `capstan server` and `capstan up`: flags of the control plane, and following a repository at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use capstan::api::registry::{self};
use capstan::client::Client;
use capstan::daemons::server::{ControlPlane, LocalNode, Options, StoreChoice};
use serde_json::Value;

use super::*;

/// Settings of the control plane's controllers.
#[derive(clap::Args, Clone, Debug)]
pub struct ControlArgs {
    /// The pod address range (IPv4, /8 to /24; each node gets a /24 of it: a /16 holds 256 nodes, a /12 4,096).
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
    /// How long a node may go without renewing its Lease before it is Unknown and tainted `unreachable` (its pods
    /// are evicted when their tolerations run out: 300 s unless they say otherwise).
    #[arg(long, default_value = "40s")]
    pub node_monitor_grace_period: String,
    /// An extra name or IP address for the API server's certificate (repeatable), beyond loopback, the host name
    /// and the addresses it listens on: the address agents and kubectl use to reach it, e.g. behind NAT.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// Terminated pods kept before the oldest are deleted.
    #[arg(long, default_value_t = 12_500)]
    pub terminated_pod_gc_threshold: usize,
    /// How pod traffic crosses machines: `vxlan` (an overlay on UDP 8472; works across subnets) or `host-gw` (a
    /// route to each node's pod CIDR via its address; machines on one L2 segment). Announced to agents on the Nodes.
    #[arg(long, value_enum, default_value = "vxlan")]
    pub pod_network_backend: capstan::api::network::Backend,
    /// Take push webhooks (`POST /hooks/git`) without a signature when the Secret kube-system/capstan-webhook has
    /// been deleted. By default they are refused (401).
    #[arg(long)]
    pub allow_unsigned_webhooks: bool,
    /// How long Events are kept after they were last seen, in seconds (kube-apiserver's `--event-ttl`, 1h).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub event_ttl: u64,
    /// The cipher for Secrets at rest: `secretbox` (XSalsa20-Poly1305) or `aesgcm` (AES-256-GCM). Applies to the
    /// key made at first start and to rotations (`capstan secrets rotate-key`).
    #[arg(long, default_value = "secretbox")]
    pub encryption_provider: capstan::daemons::server::EncryptionProvider,
    /// A resource whose objects are encrypted at rest (repeatable; `secrets` always is): e.g. `configmaps`, or
    /// `PLURAL.GROUP` for other groups.
    #[arg(long = "encrypt-resource")]
    pub encrypt_resources: Vec<String>,
    /// Keep an audit log in FILE: one JSON line (audit.k8s.io/v1 Event, Metadata level) per API request.
    #[arg(long, alias = "audit-log-path", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log when it passes this many megabytes.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (FILE.1, FILE.2, ...).
    #[arg(long, default_value_t = 5)]
    pub audit_log_maxbackup: u32,
    /// Where objects are kept: `embedded` (the data directory) or `etcd://HOST:PORT[,HOST:PORT...]` (needs a
    /// capstan built with `--features etcd`).
    #[arg(long, default_value = "embedded")]
    pub store: String,
    #[command(flatten)]
    pub etcd: super::EtcdArgs,
    /// How long a server's hold on the controller-manager Lease lasts without renewal: when the leading server
    /// dies, another takes over after this.
    #[arg(long, default_value = "15s")]
    pub leader_elect_lease_duration: String,
    /// How long the leader keeps leading while its renewals fail (shorter than the lease duration).
    #[arg(long, default_value = "10s")]
    pub leader_elect_renew_deadline: String,
    /// How often servers try to take the lease, and the leader renews it.
    #[arg(long, default_value = "2s")]
    pub leader_elect_retry_period: String,
    /// A GitOps render plugin (repeatable): `NAME=COMMAND`, a shell command an Application picks with
    /// `spec.source.plugin.name`. It runs in a scratch copy of the commit (in the app's directory), as `nobody`
    /// when the server is root, with no environment of the server's, and prints the app's manifests.
    #[arg(long = "render-plugin", value_name = "NAME=COMMAND")]
    pub render_plugins: Vec<String>,
    /// How long a render plugin may run before it is killed and its commit fails.
    #[arg(long, default_value = "60s")]
    pub render_plugin_timeout: String,
    /// A render plugin's memory limit (address space), in MiB.
    #[arg(long, default_value_t = 1024)]
    pub render_plugin_memory_mib: u64,
    /// The cluster's token (the first server's DATA_DIR/token): a server joining others on one etcd takes the
    /// cluster's CA and keys from etcd with it.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl ControlArgs {
    /// The store the flags choose.
    fn store(&self) -> Result<StoreChoice> {
        let choice = self.etcd.choice(&self.store)?;
        if matches!(choice, StoreChoice::Embedded)
            && (self.etcd.etcd_cafile.is_some() || self.etcd.etcd_certfile.is_some())
        {
            return Err(anyhow!(
                "--etcd-cafile/--etcd-certfile need --store etcd://..."
            ));
        }
        Ok(choice)
    }
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
    settings.node_monitor_grace = duration(
        &control.node_monitor_grace_period,
        "--node-monitor-grace-period",
    )?;
    settings.terminated_pod_threshold = control.terminated_pod_gc_threshold;
    settings.leader_election = capstan::runtime::leader::Timing {
        lease_duration: duration(
            &control.leader_elect_lease_duration,
            "--leader-elect-lease-duration",
        )?,
        renew_deadline: duration(
            &control.leader_elect_renew_deadline,
            "--leader-elect-renew-deadline",
        )?,
        retry_period: duration(
            &control.leader_elect_retry_period,
            "--leader-elect-retry-period",
        )?,
    };
    settings
        .leader_election
        .check()
        .map_err(|e| anyhow!("--leader-elect-*: {e}"))?;
    settings.pod_network_backend = control.pod_network_backend;
    let grace = settings.node_monitor_grace;
    settings.gitops_cache = data_dir.join("gitops");
    for p in &control.render_plugins {
        let p = capstan::gitops::plugins::Plugin::parse(p)
            .map_err(|e| anyhow!("--render-plugin {e}"))?;
        if settings.render_plugins.iter().any(|(n, _)| *n == p.name) {
            bail!("--render-plugin: {} is declared twice", p.name);
        }
        settings.render_plugins.push((p.name, p.command));
    }
    settings.render_plugin_timeout =
        duration(&control.render_plugin_timeout, "--render-plugin-timeout")?;
    settings.render_plugin_memory = control.render_plugin_memory_mib << 20;
    settings.storage_dir = data_dir.join("storage");
    capstan::cloud::LocalPool::new(&control.load_balancer_pool)
        .map_err(|e| anyhow!("--load-balancer-pool: {e}"))?;
    settings.load_balancer_pool = control.load_balancer_pool.clone();
    let started = Instant::now();
    let plane = ControlPlane::open(Options {
        data_dir: data_dir.to_path_buf(),
        listen,
        service_cidr: control.service_cidr.clone(),
        settings,
        tls_sans: control.tls_sans.clone(),
        allow_unsigned_webhooks: control.allow_unsigned_webhooks,
        event_ttl: std::time::Duration::from_secs(control.event_ttl.max(1)),
        store: control.store()?,
        token_file: control.token_file.clone(),
        encryption_provider: control.encryption_provider,
        audit: control
            .audit_log
            .clone()
            .map(|path| capstan::daemons::server::AuditOptions {
                path,
                max_bytes: control.audit_log_maxsize.max(1) << 20,
                max_backups: control.audit_log_maxbackup,
            }),
        encrypt_resources: std::iter::once("secrets".to_string())
            .chain(control.encrypt_resources.iter().cloned())
            .collect(),
    })
    .await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "control plane open"
    );
    eprintln!(
        "capstan: serving the Kubernetes API on {}\ncapstan: kubeconfig written to {}",
        plane.url,
        plane.kubeconfig.display()
    );
    if let Some(repo) = repo {
        follow_repository(plane.client()?, repo)?;
    }
    // `up` runs one node agent in this process; on Ctrl-C it stops its pods before the API server goes.
    let node = match node {
        Some((args, stop_pods)) => {
            let mut config = args.config(data_dir)?;
            config.ca_pem = Some(plane.ca_pem.clone());
            config.stop_pods_on_exit = stop_pods;
            // The node of `up` renews its Lease well within this server's grace period.
            config.lease_duration = config.lease_duration.min(grace);
            let (runtime, prepare) = args.runtime(&config).await?;
            let prepare = prepare.map(|p| -> capstan::daemons::server::Preparation {
                Box::pin(async move { p.await.map_err(Into::into) })
            });
            Some(LocalNode {
                config,
                runtime,
                prepare,
            })
        }
        None => None,
    };
    plane.run(node, terminated()).await?;
    Ok(())
}

/// Registers the Application that makes the cluster follow `repo` (`capstan up REPO`).
fn follow_repository(client: Client, repo: PathBuf) -> Result<()> {
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
    Ok(())
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
