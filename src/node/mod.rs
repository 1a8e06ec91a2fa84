//! The node agent (the kubelet's role): registers this machine as a Node, keeps its Lease in `kube-node-lease`
//! fresh, watches the pods bound to it and runs each through a pod worker on a [`runtime::ContainerRuntime`], with
//! addresses from a [`network::PodNetwork`]. It serves container logs to the API server. It talks to the cluster only
//! through the API server; it never schedules pods and never changes their specs.

pub mod credentials;
pub mod env;
pub mod exec;
pub mod logs;
pub mod network;
pub mod pod;
pub mod portforward;
pub mod probe;
mod register;
pub mod runtime;
pub mod server;
pub mod simulated;
pub mod stats;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokens;
pub mod volumes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::api::core::{ConfigMap, Pod, Secret, Service};
use crate::client::informer::{Cache, Change, Informer};
use crate::client::{Api, Client};
pub use register::hostname;
use register::{heartbeat, pod_cidr, register};

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
    #[error("the agent's endpoint certificate: {0}")]
    Endpoint(String),
}

/// Why a container's configuration cannot be built yet: the container waits in `CreateContainerConfigError` with
/// this message (Kubernetes' wording), and the worker tries again.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A referenced object does not exist (`configmap "cfg" not found`).
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    /// A referenced key is not in the object.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        key: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// A field the agent cannot act on, named with why.
    #[error("{0}")]
    Invalid(String),
    /// The API server could not be asked.
    #[error("{0}")]
    Api(Box<crate::client::Error>),
    /// The node could not prepare something on disk.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<crate::client::Error> for ConfigError {
    fn from(e: crate::client::Error) -> Self {
        ConfigError::Api(Box::new(e))
    }
}

impl ConfigError {
    /// An I/O error while preparing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConfigError {
        let what = what.into();
        move |source| ConfigError::Io { what, source }
    }
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
    pub labels: Vec<(String, String)>,
    /// The pod network (`auto`: bridge as root on Linux, else host).
    pub network: network::Mode,
    /// The cluster CA (PEM): the agent's endpoint accepts only the API server's client certificate signed by it.
    pub ca_pem: Option<String>,
}

impl Config {
    pub fn new(node_name: &str, data_dir: PathBuf) -> Self {
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
            labels: Vec::new(),
            network: network::Mode::Auto,
            ca_pem: None,
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
    /// The pods bound to this node.
    pub pods: Cache<Pod>,
    /// Every Service (for the service environment variables of new containers).
    pub services: Cache<Service>,
    /// Where this node serves cluster DNS (None when it cannot bind port 53).
    pub dns: Option<std::net::Ipv4Addr>,
    /// The ServiceAccount tokens of this node's pods.
    pub tokens: tokens::PodTokens,
    /// Resource usage of the node and its containers (`/stats`, for `kubectl top`).
    pub stats: Arc<stats::Sampler>,
}

#[async_trait]
impl env::Lookup for Shared {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        Ok(Api::<ConfigMap>::namespaced(&self.client, ns)
            .get_opt(name)
            .await?)
    }
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(Api::<Secret>::namespaced(&self.client, ns)
            .get_opt(name)
            .await?)
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
    tls: (Arc<rustls::ServerConfig>, String),
    heartbeat: tokio::task::JoinHandle<()>,
}

/// The TLS configuration of the agent's endpoint: a serving certificate for the node's address and name, signed by
/// the cluster CA on the API server's say (its key made here), requiring the API server's client certificate.
async fn endpoint_tls(
    client: &Client,
    cfg: &Config,
) -> Result<(Arc<rustls::ServerConfig>, String), Error> {
    let fail = |e: String| Error::Endpoint(e);
    let ca = cfg
        .ca_pem
        .as_deref()
        .ok_or_else(|| fail("the agent was given no cluster CA".into()))?;
    let (csr, key) = credentials::serving_request(&cfg.node_name, &[cfg.address])
        .map_err(|e| fail(e.to_string()))?;
    let body = serde_json::json!({"csr": csr, "usage": "serving", "node": cfg.node_name});
    let answer = client
        .request(
            reqwest::Method::POST,
            "/capstan/v1/node-certificate",
            Some(("application/json", body.to_string().into_bytes())),
            None,
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    let cert = answer["certificate"]
        .as_str()
        .ok_or_else(|| fail("the API server gave no certificate".into()))?;
    let tls = credentials::endpoint_tls(cert, &key, ca).map_err(|e| fail(e.to_string()))?;
    Ok((tls, cert.to_string()))
}

/// Renews the endpoint's serving certificate past two thirds of its life (looked at hourly); new connections get
/// the new one.
async fn keep_endpoint_certificate(
    client: Client,
    cfg: Config,
    tls: axum_server::tls_rustls::RustlsConfig,
    mut cert: String,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if !credentials::due_for_renewal(&cert, std::time::SystemTime::now()).unwrap_or(true) {
            continue;
        }
        match endpoint_tls(&client, &cfg).await {
            Ok((config, renewed)) => {
                tls.reload_from_config(config);
                cert = renewed;
                tracing::info!(node = %cfg.node_name, "renewed the agent endpoint's serving certificate");
            }
            Err(e) => {
                tracing::warn!(node = %cfg.node_name, "renewing the endpoint's certificate: {e}")
            }
        }
    }
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
        let tls = endpoint_tls(&client, &cfg).await?;
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
            tls,
            heartbeat,
        })
    }

    /// The pod network's gateway: where pods reach this node (and its cluster DNS).
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.net.gateway()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.cfg.node_name
    }

    /// The pod network.
    pub fn network(&self) -> &Arc<dyn network::PodNetwork> {
        &self.net
    }

    /// Runs the node's pods until `shutdown` resolves. `services` feeds the containers' service variables; `dns` is
    /// the cluster DNS server pods are given (None: the machine's resolver).
    pub async fn run(
        self,
        services: Cache<Service>,
        dns: Option<std::net::Ipv4Addr>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let Agent {
            client,
            cfg,
            runtime,
            net,
            listener,
            tls,
            heartbeat: hb,
        } = self;
        run_pods(
            client,
            cfg,
            runtime,
            net,
            (listener, tls),
            services,
            dns,
            hb,
            shutdown,
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
    (listener, (tls, cert)): (tokio::net::TcpListener, (Arc<rustls::ServerConfig>, String)),
    services: Cache<Service>,
    dns: Option<std::net::Ipv4Addr>,
    hb: tokio::task::JoinHandle<()>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let pods_dir = cfg.data_dir.join("pods");
    let informer = Informer::<Pod>::scoped(
        &client,
        None,
        &format!("fieldSelector=spec.nodeName%3D{}", cfg.node_name),
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
        pods: informer.cache.clone(),
        services,
        dns,
        tokens: Default::default(),
        stats: Default::default(),
    });
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let srv = tokio::spawn(server::serve(listener, tls.clone(), shared.clone()));
    let sampling = tokio::spawn(shared.stats.clone().run(shared.clone()));
    let renewer = tokio::spawn(keep_endpoint_certificate(
        client.clone(),
        cfg.clone(),
        tls,
        cert,
    ));
    let refresher = tokio::spawn(volumes::refresh(shared.clone()));
    let mut changes = informer.changes.subscribe();
    informer.cache.wait_synced().await;
    clean_orphans(&shared).await;
    let mut pods = Workers::new(shared.clone());
    for p in informer.cache.list() {
        pods.dispatch(p);
    }
    tracing::info!(node = %cfg.node_name, pods = pods.live.len(), "node agent running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((uid, id)) = pods.done_rx.recv() => pods.finished(&uid, id),
            ev = changes.recv() => match ev {
                Ok(Change::Applied(p)) => pods.dispatch(p),
                Ok(Change::Deleted(p)) => pods.removed(p),
                Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    pods.resync(informer.cache.list())
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    hb.abort();
    refresher.abort();
    renewer.abort();
    srv.abort();
    sampling.abort();
    if cfg.stop_pods_on_exit {
        tracing::info!(node = %cfg.node_name, pods = pods.live.len(), "stopping this node's pods");
        pods.stop_all().await;
    }
    Ok(())
}

/// The pod workers of this node, one per pod uid, each with a generation so a worker that ends after a newer one
/// replaced it does not remove the newer one.
struct Workers {
    shared: Arc<Shared>,
    live: HashMap<String, (u64, mpsc::UnboundedSender<pod::Msg>)>,
    generation: u64,
    done_tx: mpsc::UnboundedSender<(String, u64)>,
    done_rx: mpsc::UnboundedReceiver<(String, u64)>,
}

impl Workers {
    fn new(shared: Arc<Shared>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Workers {
            shared,
            live: HashMap::new(),
            generation: 0,
            done_tx,
            done_rx,
        }
    }

    /// Hands the newest version of a pod to its worker, starting one if it has none.
    fn dispatch(&mut self, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return;
        }
        if let Some((_, tx)) = self.live.get(&uid) {
            if tx.send(pod::Msg::Update(pod.clone())).is_ok() {
                return;
            }
        }
        self.generation += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = pod::Worker::new(self.shared.clone(), pod, tx.clone());
        let done = self.done_tx.clone();
        let (id, u) = (self.generation, uid.clone());
        tokio::spawn(async move {
            worker.run(rx).await;
            let _ = done.send((u, id));
        });
        self.live.insert(uid, (id, tx));
    }

    /// A worker ended.
    fn finished(&mut self, uid: &str, id: u64) {
        if self.live.get(uid).map(|(g, _)| *g) == Some(id) {
            self.live.remove(uid);
        }
    }

    /// The pod is gone from the API.
    fn removed(&mut self, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        if let Some((_, tx)) = self.live.get(uid) {
            let _ = tx.send(pod::Msg::Update(pod.clone()));
            let _ = tx.send(pod::Msg::Removed);
        }
    }

    /// After a relist: workers of pods no longer listed stop, every listed pod is dispatched.
    fn resync(&mut self, current: Vec<Arc<Pod>>) {
        let uids: std::collections::HashSet<String> = current
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        for (uid, (_, tx)) in &self.live {
            if !uids.contains(uid) {
                let _ = tx.send(pod::Msg::Removed);
            }
        }
        for p in current {
            self.dispatch(p);
        }
    }

    /// Stops every pod's containers (the node stops with its pods) and, once all are down, the pod network.
    async fn stop_all(&mut self) {
        for (_, tx) in self.live.values() {
            let _ = tx.send(pod::Msg::Shutdown);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !self.live.is_empty() {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some((uid, _))) => {
                    self.live.remove(&uid);
                }
                _ => break,
            }
        }
        if self.live.is_empty() {
            self.shared.network.shutdown().await;
        }
    }
}

/// Stops and forgets containers of pods that are no longer bound to this node (deleted while the agent was away).
async fn clean_orphans(shared: &Shared) {
    let known: std::collections::HashSet<String> = shared
        .pods
        .list()
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
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
                        // Its shim writes the exit record into the pod's directory as the container goes: wait
                        // for that, or the removal below races with it.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            shared.runtime.wait(&inst.handle),
                        )
                        .await;
                    }
                }
            }
        }
        volumes::release(&e.path());
        remove_pod_dir(&e.path()).await;
    }
    shared.network.clean(&known).await;
}

/// Removes a pod's directory, retrying while something (a shim finishing its record) still writes into it.
pub(crate) async fn remove_pod_dir(dir: &std::path::Path) {
    for attempt in 0..10 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 9 => {
                tracing::warn!(dir = %dir.display(), "could not remove a pod's directory: {e}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
