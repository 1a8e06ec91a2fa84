//! The node agent (the kubelet's role): registers this machine as a Node, keeps its Lease in `kube-node-lease`
//! fresh, watches the pods bound to it and runs each through a pod worker on a [`runtime::ContainerRuntime`], with
//! addresses from a [`network::PodNetwork`]. It serves container logs to the API server. It talks to the cluster only
//! through the API server; it never schedules pods and never changes their specs.

pub mod env;
pub mod exec;
pub mod logs;
pub mod network;
pub mod pod;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
pub mod volumes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::registry::{self, KindInfo};
use crate::client::informer::{Cache, Change, Informer};
use crate::client::Client;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node agent I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        source: crate::client::Error,
    },
    #[error("pod network: {0}")]
    Network(#[from] network::NetworkError),
}

/// The agent's settings; durations default to Kubernetes' and tests shorten them.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// Where pods' state and logs live (`<data_dir>/pods/<uid>`).
    pub data_dir: PathBuf,
    /// The node's address (InternalIP), also where the agent serves logs.
    pub address: IpAddr,
    /// Port for the agent's own endpoint (0: any free port; it is published in the Node's status).
    pub port: u16,
    /// Capacity overrides (default: read from the machine).
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub max_pods: u32,
    /// Crash-loop backoff: the first restart is immediate, then base, 2*base, ... up to max (10 s and 300 s).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub lease_duration: Duration,
    /// Stop this node's containers when the agent exits (`capstan up`); a plain agent leaves them running and
    /// adopts them when it comes back, like the kubelet.
    pub stop_pods_on_exit: bool,
    /// The token the API server presents when it asks for logs.
    pub token: String,
    pub labels: Vec<(String, String)>,
    /// The pod network (`auto`: bridge as root on Linux, else host).
    pub network: network::Mode,
}

impl Config {
    pub fn new(node_name: &str, data_dir: PathBuf, token: &str) -> Self {
        Config {
            node_name: node_name.to_string(),
            data_dir,
            address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            cpu: None,
            memory: None,
            max_pods: 110,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            lease_duration: Duration::from_secs(40),
            stop_pods_on_exit: false,
            token: token.to_string(),
            labels: Vec::new(),
            network: network::Mode::Auto,
        }
    }

    /// The wait before restart number `step` (0-based) of a crashed container.
    pub fn backoff_delay(&self, step: u32) -> Duration {
        if step == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(step - 1).unwrap_or(u32::MAX);
        self.backoff_base
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// What the agent's pod workers share.
pub struct Shared {
    pub client: Client,
    /// Where pod workers report status, Events and final deletes.
    pub api: Arc<dyn status::PodApi>,
    pub runtime: Arc<dyn runtime::ContainerRuntime>,
    pub network: Arc<dyn network::PodNetwork>,
    pub config: Config,
    pub node_ip: String,
    pub http: reqwest::Client,
    pub pods_dir: PathBuf,
    pub pods_kind: &'static KindInfo,
    pub pods: Cache,
    /// Every Service (for the service environment variables of new containers).
    pub services: Cache<crate::api::core::Service>,
    /// Where this node serves cluster DNS (None when it cannot bind port 53).
    pub dns: Option<std::net::Ipv4Addr>,
}

#[async_trait]
impl env::Lookup for Shared {
    async fn get(&self, kind: &str, ns: &str, name: &str) -> Result<Option<Value>, String> {
        let k = registry::KINDS
            .iter()
            .find(|k| k.kind == kind && k.group.is_empty())
            .ok_or_else(|| format!("unknown kind {kind}"))?;
        match self.client.get(k, Some(ns), name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn kind(plural: &str) -> &'static KindInfo {
    registry::lookup(plural).expect("registered kind")
}

/// Reads cpu count, memory and disk from the machine.
fn machine_capacity(cfg: &Config) -> Value {
    let cpu = cfg.cpu.clone().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string()
    });
    let memory = cfg.memory.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(|k| format!("{k}Ki")))
            })
            .unwrap_or_else(|| "1Gi".into())
    });
    let disk = {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(cfg.data_dir.display().to_string()).unwrap_or_default();
        // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
            format!("{}Ki", (st.f_blocks as u64 * st.f_frsize as u64) / 1024)
        } else {
            "10Gi".into()
        }
    };
    json!({"cpu": cpu, "memory": memory, "pods": cfg.max_pods.to_string(), "ephemeral-storage": disk})
}

/// This machine's host name (the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn node_status(cfg: &Config, port: u16, runtime: &str) -> Value {
    let now = crate::api::meta::format_time(&crate::api::meta::now());
    let capacity = machine_capacity(cfg);
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": msg,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": cfg.address.to_string()},
                      {"type": "Hostname", "address": cfg.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {"machineID": machine_id, "systemUUID": machine_id, "bootID": boot_id,
            "kernelVersion": kernel, "osImage": "Linux", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "containerRuntimeVersion": runtime,
            "kubeletVersion": format!("v{}.{}.0-capstan.{}", crate::KUBE_VERSION.0, crate::KUBE_VERSION.1, crate::VERSION),
            "kubeProxyVersion": ""},
    })
}

/// Creates the Node (or takes over an existing one) and writes its status.
async fn register(client: &Client, cfg: &Config, port: u16, runtime: &str) -> Result<Value, Error> {
    let nodes = kind("nodes");
    let err = |source| Error::Register {
        node: cfg.node_name.clone(),
        source,
    };
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(cfg.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert(
        "kubernetes.io/arch".into(),
        json!(std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64")),
    );
    for (k, v) in &cfg.labels {
        labels.insert(k.clone(), json!(v));
    }
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels}, "spec": {}});
    match client.create(nodes, None, &node).await {
        Ok(_) => tracing::info!(node = %cfg.node_name, "registered node"),
        Err(e) if e.code() == Some(409) => {
            client
                .patch(
                    nodes,
                    None,
                    &cfg.node_name,
                    "application/merge-patch+json",
                    &json!({"metadata": {"labels": labels}}),
                )
                .await
                .map_err(err)?;
            tracing::info!(node = %cfg.node_name, "node already registered; taking it over");
        }
        Err(e) => return Err(err(e)),
    }
    client
        .patch_status(
            nodes,
            None,
            &cfg.node_name,
            &node_status(cfg, port, runtime),
        )
        .await
        .map_err(err)
}

fn micro_time() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Renews the node's Lease and refreshes its Ready heartbeat; re-registers a Node that was deleted.
async fn heartbeat(client: Client, cfg: Config, port: u16, runtime: String) {
    let leases = kind("leases");
    let renew = (cfg.lease_duration / 4).max(Duration::from_millis(200));
    let mut last_status = tokio::time::Instant::now();
    loop {
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": cfg.node_name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": cfg.node_name, "leaseDurationSeconds": cfg.lease_duration.as_secs().max(1),
                     "renewTime": micro_time()}});
        if let Err(e) = client
            .apply(
                leases,
                Some("kube-node-lease"),
                &cfg.node_name,
                &lease,
                "capstan-agent",
                true,
            )
            .await
        {
            tracing::debug!("renewing the node lease failed: {e}");
        }
        if last_status.elapsed() >= Duration::from_secs(60) {
            last_status = tokio::time::Instant::now();
            if let Err(e) = register(&client, &cfg, port, &runtime).await {
                tracing::warn!("node heartbeat failed: {e}");
            }
        }
        tokio::time::sleep(renew).await;
    }
}

/// Waits for the control plane to give the node its pod CIDR.
async fn pod_cidr(client: &Client, node: &str) -> String {
    let nodes = kind("nodes");
    loop {
        if let Ok(n) = client.get(nodes, None, node).await {
            if let Some(c) = n.pointer("/spec/podCIDR").and_then(Value::as_str) {
                return c.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node registered with the cluster, its pod network open: what is known before pods run. The process wiring
/// (`daemons::agent`) starts the service proxy and cluster DNS beside it (DNS on [`Agent::gateway`]), then
/// [`Agent::run`]s it.
pub struct Agent {
    client: Client,
    cfg: Config,
    runtime: Arc<dyn runtime::ContainerRuntime>,
    net: Arc<dyn network::PodNetwork>,
    listener: tokio::net::TcpListener,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Registers the node (and keeps its heartbeat), waits for its pod CIDR and opens the pod network.
    pub async fn prepare(
        client: Client,
        cfg: Config,
        runtime: Arc<dyn runtime::ContainerRuntime>,
    ) -> Result<Agent, Error> {
        std::fs::create_dir_all(cfg.data_dir.join("pods"))?;
        let listener = tokio::net::TcpListener::bind((cfg.address, cfg.port)).await?;
        let port = listener.local_addr()?.port();
        // `containerRuntimeVersion`, as the kubelet reports it: `containerd://1.6.20`.
        let runtime_version = format!("{}://{}", runtime.name(), runtime.version());
        register(&client, &cfg, port, &runtime_version).await?;
        let heartbeat = tokio::spawn(heartbeat(
            client.clone(),
            cfg.clone(),
            port,
            runtime_version,
        ));
        let cidr = pod_cidr(&client, &cfg.node_name).await;
        let net = network::open(cfg.network, &cidr).await?;
        tracing::info!(node = %cfg.node_name, pod_cidr = %cidr, network = net.name(), addresses = %net.cidr(), "pod network ready");
        Ok(Agent {
            client,
            cfg,
            runtime,
            net,
            listener,
            heartbeat,
        })
    }

    /// The pod network's gateway: where pods reach this node (and its cluster DNS).
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.net.gateway()
    }

    /// Runs the node's pods until `shutdown` resolves. `services` feeds the containers' service variables; `dns` is
    /// the cluster DNS server pods are given (None: the machine's resolver).
    pub async fn run(
        self,
        services: Cache<crate::api::core::Service>,
        dns: Option<std::net::Ipv4Addr>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let Agent {
            client,
            cfg,
            runtime,
            net,
            listener,
            heartbeat: hb,
        } = self;
        run_pods(
            client, cfg, runtime, net, listener, services, dns, hb, shutdown,
        )
        .await
    }
}

/// The pod loop: one worker per pod bound to this node, fed by the pod informer.
#[allow(clippy::too_many_arguments)] // the parts of an `Agent`, handed over by `Agent::run` alone
async fn run_pods(
    client: Client,
    cfg: Config,
    runtime: Arc<dyn runtime::ContainerRuntime>,
    net: Arc<dyn network::PodNetwork>,
    listener: tokio::net::TcpListener,
    services: Cache<crate::api::core::Service>,
    dns: Option<std::net::Ipv4Addr>,
    hb: tokio::task::JoinHandle<()>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let pods_dir = cfg.data_dir.join("pods");
    let pods_kind = kind("pods");
    let informer = Informer::start(
        client.clone(),
        pods_kind,
        None,
        format!("fieldSelector=spec.nodeName%3D{}", cfg.node_name),
    );
    crate::sys::init_crypto();
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        api: Arc::new(status::ClientPodApi(client.clone())),
        runtime,
        network: net,
        node_ip: cfg.address.to_string(),
        config: cfg.clone(),
        http,
        pods_dir: pods_dir.clone(),
        pods_kind,
        pods: informer.cache.clone(),
        services,
        dns,
    });
    let srv = tokio::spawn(server::serve(listener, shared.clone()));
    let refresher = tokio::spawn(volumes::refresh(shared.clone()));
    let mut changes = informer.changes.subscribe();
    informer.cache.wait_synced().await;
    clean_orphans(&shared).await;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, u64)>();
    let mut workers: HashMap<String, (u64, mpsc::UnboundedSender<pod::Msg>)> = HashMap::new();
    let mut generation = 0u64;
    let mut dispatch =
        |pod: Value, workers: &mut HashMap<String, (u64, mpsc::UnboundedSender<pod::Msg>)>| {
            let uid = pod
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if uid.is_empty() {
                return;
            }
            if let Some((_, tx)) = workers.get(&uid) {
                if tx.send(pod::Msg::Update(pod.clone())).is_ok() {
                    return;
                }
            }
            generation += 1;
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = pod::Worker::new(shared.clone(), pod, tx.clone());
            let done = done_tx.clone();
            let id = generation;
            let u = uid.clone();
            tokio::spawn(async move {
                worker.run(rx).await;
                let _ = done.send((u, id));
            });
            workers.insert(uid, (id, tx));
        };
    for p in informer.cache.list() {
        dispatch(Value::clone(&p), &mut workers);
    }
    tracing::info!(node = %cfg.node_name, pods = workers.len(), "node agent running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((uid, id)) = done_rx.recv() => {
                if workers.get(&uid).map(|(g, _)| *g) == Some(id) {
                    workers.remove(&uid);
                }
            }
            ev = changes.recv() => match ev {
                Ok(Change::Applied(p)) => dispatch(Value::clone(&p), &mut workers),
                Ok(Change::Deleted(p)) => {
                    let uid = p.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
                    if let Some((_, tx)) = workers.get(uid) {
                        let _ = tx.send(pod::Msg::Update(Value::clone(&p)));
                        let _ = tx.send(pod::Msg::Removed);
                    }
                }
                Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let current = informer.cache.list();
                    let uids: std::collections::HashSet<String> = current
                        .iter()
                        .filter_map(|p| p.pointer("/metadata/uid").and_then(Value::as_str).map(String::from))
                        .collect();
                    for (uid, (_, tx)) in &workers {
                        if !uids.contains(uid) {
                            let _ = tx.send(pod::Msg::Removed);
                        }
                    }
                    for p in current {
                        dispatch(Value::clone(&p), &mut workers);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    hb.abort();
    refresher.abort();
    srv.abort();
    if cfg.stop_pods_on_exit {
        tracing::info!(node = %cfg.node_name, pods = workers.len(), "stopping this node's pods");
        for (_, tx) in workers.values() {
            let _ = tx.send(pod::Msg::Shutdown);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !workers.is_empty() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some((uid, _))) => {
                    workers.remove(&uid);
                }
                _ => break,
            }
        }
        if workers.is_empty() {
            shared.network.shutdown().await;
        }
    }
    Ok(())
}

/// Stops and forgets containers of pods that are no longer bound to this node (deleted while the agent was away).
async fn clean_orphans(shared: &Shared) {
    let known: std::collections::HashSet<String> = shared
        .pods
        .list()
        .iter()
        .filter_map(|p| {
            p.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    let Ok(entries) = std::fs::read_dir(&shared.pods_dir) else {
        return;
    };
    for e in entries.flatten() {
        let uid = e.file_name().to_string_lossy().into_owned();
        if known.contains(&uid) {
            continue;
        }
        if let Some(st) = pod::PodState::load(&e.path()) {
            for (name, c) in &st.containers {
                if let Some(inst) = &c.running {
                    if shared.runtime.alive(&inst.handle).await {
                        tracing::info!(pod = %format!("{}/{}", st.namespace, st.name), container = %name,
                            "stopping a container of a pod that no longer exists");
                        shared.runtime.remove(&inst.handle).await;
                    }
                }
            }
        }
        volumes::release(&e.path());
        let _ = std::fs::remove_dir_all(e.path());
    }
    shared.network.clean(&known).await;
}
