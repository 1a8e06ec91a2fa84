//! `capstan agent`: a node joining a cluster - the node's flags, its container runtime, and running it until a signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use capstan::client::Client;
use clap::Args;

use super::*;

/// Settings of the node agent that `up` and `agent` run.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// The node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address: where its agent listens and what it reports as InternalIP - the address other machines
    /// reach it and its pods at (default: for `agent`, the address this machine reaches the server from; for `up`,
    /// 127.0.0.1).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
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
    /// How long the node's Lease is held; the agent renews it every quarter of this. Keep it at most the server's
    /// --node-monitor-grace-period (both 40s by default).
    #[arg(long, default_value = "40s")]
    pub node_lease_duration: String,
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

pub(crate) type Runtime = Arc<dyn capstan::node::runtime::ContainerRuntime>;
pub(crate) type Preparation =
    Option<std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>>;

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum RuntimeKind {
    Process,
    Containerd,
}

impl NodeArgs {
    /// Opens the chosen container runtime. For containerd it connects, and returns the work still to do before
    /// pods start: making sure the image of this binary that the examples run is there.
    pub(crate) async fn runtime(
        &self,
        cfg: &capstan::node::Config,
    ) -> Result<(Runtime, Preparation)> {
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

    pub(crate) fn config(&self, data_dir: &Path) -> Result<capstan::node::Config> {
        let name = self
            .node_name
            .clone()
            .unwrap_or_else(capstan::node::hostname);
        let mut cfg = capstan::node::Config::new(&name, data_dir.join("nodes").join(&name));
        cfg.address = self
            .node_ip
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        cfg.cpu = self.cpu.clone();
        cfg.memory = self.memory.clone();
        cfg.max_pods = self.max_pods;
        cfg.network = self.network;
        cfg.backoff_base = secs(self.crashloop_backoff, "--crashloop-backoff")?;
        cfg.backoff_max = secs(self.crashloop_backoff_max, "--crashloop-backoff-max")?;
        cfg.lease_duration = duration(&self.node_lease_duration, "--node-lease-duration")?;
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

/// The first of the URLs in `--server URL[,URL...]`.
pub fn first_server(servers: &str) -> &str {
    servers.split(',').next().unwrap_or("").trim()
}

/// The address this machine reaches `server` from (the source address its routes pick; nothing is sent): what
/// other machines reach this node at, when `--node-ip` does not say.
async fn address_toward(server: &str) -> Result<std::net::IpAddr> {
    let server = first_server(server);
    let url = reqwest::Url::parse(server).with_context(|| format!("--server {server}"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("--server {server}: no host"))?
        .trim_matches(['[', ']']);
    let target = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("--server {server}: {host} has no address"))?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(target)
        .await
        .with_context(|| format!("finding a route to {target} (pass --node-ip)"))?;
    let ip = sock.local_addr()?.ip();
    tracing::info!(node_ip = %ip, "node address: the one this machine reaches the server from");
    Ok(ip)
}

/// The node's certificate and key, renewed first when past two thirds of its life (the request made with the
/// current certificate; the new one kept in place of the old).
async fn renewed(
    server: &str,
    ca_pem: &str,
    dir: &Path,
    node: &str,
    (cert, key): (String, String),
) -> Result<(String, String)> {
    use capstan::node::credentials;
    if !credentials::due_for_renewal(&cert, std::time::SystemTime::now())? {
        return Ok((cert, key));
    }
    let current = Client::with_credentials(
        server,
        &capstan::client::config::Credentials {
            certificate: Some((cert, key)),
            ..Default::default()
        },
        Some(ca_pem),
    )?;
    let (csr, new_key) = credentials::request(node)?;
    let body = serde_json::json!({"csr": csr}).to_string();
    let answer = current
        .request(
            reqwest::Method::POST,
            "/capstan/v1/node-certificate",
            Some(("application/json", body.into_bytes())),
            None,
        )
        .await
        .with_context(|| format!("renewing the certificate of node {node}"))?;
    let new_cert = answer["certificate"]
        .as_str()
        .ok_or_else(|| anyhow!("the server gave no certificate"))?
        .to_string();
    credentials::keep(dir, &new_cert, &new_key)?;
    tracing::info!(node, "renewed the node's client certificate");
    Ok((new_cert, new_key))
}

/// Looks at the node's certificate every hour and renews it when it is due.
async fn keep_renewing(server: String, ca_pem: String, dir: PathBuf, node: String) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let Some(kept) = capstan::node::credentials::kept(&dir) else {
            continue;
        };
        if let Err(e) = renewed(&server, &ca_pem, &dir, &node, kept).await {
            tracing::warn!(node, "renewing the node's certificate: {e:#}");
        }
    }
}

/// The join token, if one is given: `--join-token`, `--join-token-file` or CAPSTAN_JOIN_TOKEN.
pub fn join_token(flag: Option<String>, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("--join-token-file {}", f.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(t) = flag {
        tracing::warn!(
            "--join-token puts the token on the command line, where `ps` shows it; prefer --join-token-file or \
             CAPSTAN_JOIN_TOKEN"
        );
        return Ok(Some(t));
    }
    Ok(std::env::var("CAPSTAN_JOIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty()))
}

/// Where a node keeps what it got when it joined (its CA, node token and node password).
fn join_dir(data_dir: &Path, node: &NodeArgs) -> PathBuf {
    let name = node
        .node_name
        .clone()
        .unwrap_or_else(capstan::node::hostname);
    data_dir.join("nodes").join(name)
}

/// The node's token and CA file from an earlier join, if it has them.
pub fn joined_before(data_dir: &Path, node: &NodeArgs) -> Option<(String, PathBuf)> {
    let dir = join_dir(data_dir, node);
    let token = std::fs::read_to_string(dir.join("node-token")).ok()?;
    let ca = dir.join("ca.crt");
    (ca.exists() && !token.trim().is_empty()).then(|| (token.trim().to_string(), ca))
}

/// Joins with `join_token` (or reuses the node token of an earlier join); returns the node token and the CA file.
pub async fn joined(
    data_dir: &Path,
    server: &str,
    join_token: &str,
    node: &NodeArgs,
) -> Result<(String, PathBuf)> {
    if let Some(before) = joined_before(data_dir, node) {
        return Ok(before);
    }
    let dir = join_dir(data_dir, node);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (token, _) = super::join(server, join_token, &name, &dir).await?;
    eprintln!("capstan: node {name} joined {server} with a join token");
    Ok((token, dir.join("ca.crt")))
}

/// The agent's token: from `--token-file`, from CAPSTAN_TOKEN, or (with a warning) from `--token`.
pub fn agent_token(file: Option<&Path>, flag: Option<String>) -> Result<String> {
    if let Some(f) = file {
        let t =
            std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(anyhow!("--token-file {}: the file is empty", f.display()));
        }
        return Ok(t.to_string());
    }
    if let Some(t) = flag {
        tracing::warn!(
            "--token puts the cluster's token on the command line, where `ps` shows it to every local user and \
             pod; use --token-file FILE or CAPSTAN_TOKEN"
        );
        return Ok(t);
    }
    match std::env::var("CAPSTAN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(anyhow!(
            "the agent needs the cluster's token: --token-file FILE (the `token` file in the server's data \
             directory) or the CAPSTAN_TOKEN environment variable"
        )),
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
    let ca_pem = read_ca(ca)?;
    // A node that joined has a certificate of its own: it speaks to the API server as system:node:NAME, and keeps
    // renewing the certificate past two thirds of its life (new connections pick up the renewed files).
    let dir = join_dir(data_dir, &node);
    let client = match capstan::node::credentials::kept(&dir) {
        Some(kept) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            renewed(server, &ca_pem, &dir, &name, kept).await?;
            tokio::spawn(keep_renewing(
                server.to_string(),
                ca_pem.clone(),
                dir.clone(),
                name,
            ));
            Client::with_credentials(
                server,
                &capstan::client::config::Credentials {
                    certificate_files: Some((dir.join("node.crt"), dir.join("node.key"))),
                    ..Default::default()
                },
                Some(&ca_pem),
            )?
        }
        None => Client::new(server, token, Some(&ca_pem))?,
    };
    let mut cfg = node.config(data_dir)?;
    cfg.stop_pods_on_exit = stop_pods_on_exit;
    cfg.ca_pem = Some(ca_pem.clone());
    if node.node_ip.is_none() {
        cfg.address = address_toward(server).await?;
    }
    let runtime = node.runtime(&cfg).await?;
    eprintln!("capstan: node agent {} joining {server}", cfg.node_name);
    run_agent(client, cfg, runtime, terminated()).await
}

/// `capstan agent --simulate N`: N simulated nodes served until a signal.
pub async fn simulate(
    server: &str,
    token: &str,
    ca: Option<&Path>,
    node: &NodeArgs,
    count: usize,
    prefix: String,
    ready_after: f64,
) -> Result<()> {
    if count == 0 {
        return Err(anyhow!("--simulate needs at least one node"));
    }
    let ca_pem = read_ca(ca)?;
    let client = Client::new(server, token, Some(&ca_pem))?;
    let lease = duration(&node.node_lease_duration, "--node-lease-duration")?;
    let opts = capstan::node::simulated::Options {
        count,
        prefix,
        cpu: node.cpu.clone().unwrap_or_else(|| "8".into()),
        memory: node.memory.clone().unwrap_or_else(|| "32Gi".into()),
        max_pods: node.max_pods,
        ready_after: secs(ready_after, "--simulate-ready-after")?,
        lease_duration: lease,
        complete_after: None,
    };
    capstan::node::simulated::run(client, opts, terminated()).await?;
    Ok(())
}

/// The API server's CA certificate: `--certificate-authority`, or `ca.crt` in the default data directory.
fn read_ca(ca: Option<&Path>) -> Result<String> {
    let ca_path = ca
        .map(Path::to_path_buf)
        .unwrap_or_else(|| capstan::client::config::default_data_dir().join("ca.crt"));
    std::fs::read_to_string(&ca_path).with_context(|| {
        format!(
            "reading the API server's certificate authority {} (pass --certificate-authority)",
            ca_path.display()
        )
    })
}
