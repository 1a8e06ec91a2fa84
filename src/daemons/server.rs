//! The control-plane process part (`capstan server`, and the control plane inside `capstan up`): it opens the store
//! and the cluster's credentials and TLS material, seeds the bootstrap objects, binds the API server and writes the
//! admin kubeconfig ([`ControlPlane::open`]); then it runs the controller manager on threads of its own and, for
//! `up`, a node beside it ([`ControlPlane::run`]). Shutdown runs in reverse: the controllers first (nothing reacts
//! to the node going away), then the node's pods, then the API server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::{self, services::Allocator, StartError};
use crate::client::config::Kubeconfig;
use crate::client::Client;
use crate::controllers::Settings;
use crate::node::runtime::ContainerRuntime;
use crate::store::DynStore;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--service-cidr: {0}")]
    ServiceCidr(String),
    #[error("bootstrapping the cluster's objects: {0}")]
    Bootstrap(String),
    #[error("client: {0}")]
    Client(Box<crate::client::Error>),
    #[error("starting the controller manager: {0}")]
    ControllerManager(std::io::Error),
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    ServiceAccountKey(#[from] apiserver::satokens::KeyError),
    #[error(transparent)]
    Encryption(#[from] crate::store::encrypted::ConfigError),
    #[error("the store: {0}")]
    Store(String),
    #[error(transparent)]
    Identity(#[from] super::identity::IdentityError),
    #[error("opening the audit log {path}: {source}")]
    AuditLog {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<crate::client::Error> for Error {
    fn from(e: crate::client::Error) -> Self {
        Error::Client(Box::new(e))
    }
}

/// Work a node finishes before its pods start (the binary's own error, shown with its causes).
pub type Preparation =
    Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send>>;

/// The users the control plane's components act as (bound to their roles at start, see `bootstrap.rs`).
pub use crate::api::tokens::{CONTROLLER_MANAGER_USER, GITOPS_USER, SCHEDULER_USER};
/// Where the audit log goes and how it rotates (for the CLI's flags).
pub use crate::apiserver::audit::Options as AuditOptions;

/// The ciphers of encryption at rest (for the CLI's flags).
pub use crate::store::encrypted::Provider as EncryptionProvider;

/// What `capstan server` is told.
pub struct Options {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The Service ClusterIP range (None: [`apiserver::default_service_cidr`]).
    pub service_cidr: Option<String>,
    /// The controllers' settings.
    pub settings: Settings,
    /// Extra names (DNS names or IP addresses) for the serving certificate, beyond loopback, the host name and the
    /// addresses the server listens on (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Take unsigned push webhooks when the webhook secret is deleted.
    pub allow_unsigned_webhooks: bool,
    /// How long Events are kept after they were last seen (`--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// The cipher of a new encryption key (the first one, and rotations that name none).
    pub encryption_provider: crate::store::encrypted::Provider,
    /// Resources whose objects are encrypted at rest (`secrets`, `configmaps`, `PLURAL.GROUP`).
    pub encrypt_resources: Vec<String>,
    /// The audit log, if one is kept.
    pub audit: Option<apiserver::audit::Options>,
    /// Where objects are kept.
    pub store: StoreChoice,
    /// The cluster's token, for a server joining others on one etcd (`--token-file`).
    pub token_file: Option<PathBuf>,
}

/// The store a server keeps objects in.
#[derive(Debug, Clone, Default)]
pub enum StoreChoice {
    /// The embedded store in the data directory (`store.redb`).
    #[default]
    Embedded,
    /// etcd (`--store etcd://HOST:PORT[,...]`), with TLS files if given.
    Etcd {
        url: String,
        prefix: String,
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    },
}

impl StoreChoice {
    /// `embedded`, or an `etcd://` URL.
    pub fn parse(s: &str) -> Result<StoreChoice, String> {
        match s {
            "embedded" | "" => Ok(StoreChoice::Embedded),
            url if url.starts_with("etcd://") => Ok(StoreChoice::Etcd {
                url: url.to_string(),
                prefix: String::new(),
                ca_file: None,
                cert_file: None,
                key_file: None,
            }),
            other => Err(format!(
                "unknown store {other:?}: `embedded` or `etcd://HOST:PORT[,HOST:PORT...]`"
            )),
        }
    }
}

/// The data directory (made private) and the store; on etcd, the cluster identity taken from it when another
/// server made it. Returns the store and whether this server is the first on its etcd.
async fn open_storage(opts: &Options) -> Result<(DynStore, bool), Error> {
    let data_dir = &opts.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    private_data_dir(data_dir).map_err(|source| Error::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let store = open_store(data_dir, &opts.store).await?;
    crate::store::layout::upgrade(&store)
        .await
        .map_err(|e| Error::Store(format!("moving keys to Kubernetes' layout: {e}")))?;
    // Servers on one etcd share one identity: the first makes it, the others take it from etcd.
    let first = match opts.store {
        StoreChoice::Embedded => false,
        StoreChoice::Etcd { .. } => {
            super::identity::take(&store, data_dir, opts.token_file.as_deref()).await?
        }
    };
    Ok((store, first))
}

/// Opens the chosen store. With etcd, old revisions are compacted every five minutes (the history of the five
/// minutes before stays, as Kubernetes' API server keeps it).
async fn open_store(data_dir: &std::path::Path, choice: &StoreChoice) -> Result<DynStore, Error> {
    match choice {
        StoreChoice::Embedded => {
            let store = crate::store::embedded::Embedded::open(&data_dir.join("store.redb"))
                .map_err(StartError::Store)?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "etcd")]
        StoreChoice::Etcd { url, .. } => {
            let store: DynStore = Arc::new(connect_etcd(choice).await?);
            tokio::spawn(compact_periodically(store.clone()));
            tracing::info!(%url, "objects are kept in etcd");
            Ok(store)
        }
        #[cfg(not(feature = "etcd"))]
        StoreChoice::Etcd { url, .. } => Err(Error::Store(format!(
            "{url}: this capstan was built without etcd support (build with `--features etcd`)"
        ))),
    }
}

/// Connects to the etcd `choice` names (with its TLS files).
#[cfg(feature = "etcd")]
pub async fn connect_etcd(choice: &StoreChoice) -> Result<crate::store::etcd::Etcd, Error> {
    let StoreChoice::Etcd {
        url,
        prefix,
        ca_file,
        cert_file,
        key_file,
    } = choice
    else {
        return Err(Error::Store("not an etcd store".into()));
    };
    let read = |p: &Option<PathBuf>| -> Result<Option<String>, Error> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::Store(format!("reading {}: {e}", p.display())))
            })
            .transpose()
    };
    let mut opts = crate::store::etcd::Options::from_url(url).map_err(Error::Store)?;
    opts.prefix = prefix.clone();
    opts.ca = read(ca_file)?;
    opts.identity = match (read(cert_file)?, read(key_file)?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(Error::Store(
                "--etcd-certfile and --etcd-keyfile go together".into(),
            ))
        }
    };
    crate::store::etcd::Etcd::connect(&opts)
        .await
        .map_err(|e| Error::Store(e.to_string()))
}

/// Compacts the store every five minutes to the revision it had five minutes before.
#[cfg(feature = "etcd")]
async fn compact_periodically(store: DynStore) {
    let mut before = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let now = match store.revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reading the store revision for compaction: {e}");
                continue;
            }
        };
        if before > 0 {
            if let Err(e) = store.compact(before).await {
                tracing::warn!(revision = before, "compacting the store: {e}");
            }
        }
        before = now;
    }
}

/// The names the serving certificate must carry: loopback, the host name, the listen address (every interface's
/// address when it is unspecified) and the extra names asked for.
fn certificate_names(
    listen: SocketAddr,
    extra: &[String],
    service_ip: Option<std::net::Ipv4Addr>,
) -> Vec<String> {
    let mut names = apiserver::tls::default_names();
    // Pods reach the API server as the `kubernetes` Service: by its ClusterIP and its DNS names.
    names.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from),
    );
    names.extend(service_ip.map(|ip| ip.to_string()));
    if listen.ip().is_unspecified() {
        names.extend(
            crate::sys::local_addresses()
                .into_iter()
                .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
                .map(|ip| ip.to_string()),
        );
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names
}

/// A node to run in the same process (`capstan up`).
pub struct LocalNode {
    pub config: crate::node::Config,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Work to finish before pods start (containerd: importing the image the examples run).
    pub prepare: Option<Preparation>,
}

/// An opened control plane: the API server bound and its kubeconfig written, nothing serving yet.
pub struct ControlPlane {
    listener: tokio::net::TcpListener,
    server: apiserver::Server,
    tls: Arc<rustls::ServerConfig>,
    settings: Settings,
    /// The API server's URL (`https://127.0.0.1:6443`).
    pub url: String,
    /// The admin bearer token.
    pub token: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// Where the admin kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// How this server announces itself to the others (and in the `kubernetes` Endpoints).
    announcement: apiserver::peers::Announcement,
    /// The store is the embedded one, which only this process can open (its file is locked): no other server can
    /// compete for the controllers' lease.
    exclusive_store: bool,
}

/// Makes the data directory the owner's alone: the directory 0700 and the files directly in it (the store, its
/// write-ahead log, keys, tokens, certificates) 0600, including those an older Capstan left readable.
fn private_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for e in std::fs::read_dir(dir)?.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// The address pods reach the API server at (the `kubernetes` Service's endpoint): the one it listens on, or - when
/// it listens on every address - the machine's first non-loopback IPv4 address.
fn advertised(addr: SocketAddr) -> std::net::IpAddr {
    if !addr.ip().is_unspecified() {
        return addr.ip();
    }
    crate::sys::local_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

/// The URL clients use for a server bound to `addr` (an unspecified address is reached on loopback).
fn url_of(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    if addr.is_ipv6() {
        format!("https://[{host}]:{}", addr.port())
    } else {
        format!("https://{host}:{}", addr.port())
    }
}

impl ControlPlane {
    /// Opens the store, credentials and TLS material in `data_dir`, seeds the bootstrap objects and binds.
    pub async fn open(opts: Options) -> Result<ControlPlane, Error> {
        let data_dir = &opts.data_dir;
        let (raw_store, first_on_etcd) = open_storage(&opts).await?;
        // Secrets (and whatever else is listed) are sealed before they reach the store.
        let encryption = Arc::new(crate::store::encrypted::Encryption::load_or_create(
            data_dir,
            opts.encryption_provider,
            &opts.encrypt_resources,
        )?);
        let token = apiserver::load_or_create_token(data_dir)?;
        let mut server = apiserver::Server::new(encryption.wrap(raw_store.clone()), &token);
        // Servers on one etcd share one keyring: a key rotated through any of them reaches all.
        if matches!(opts.store, StoreChoice::Etcd { .. }) {
            encryption
                .share(super::identity::sharing(&token))
                .await
                .map_err(Error::Store)?;
        }
        server.encryption = Some(encryption);
        server.raw_store = Some(raw_store.clone());
        let cidr = opts
            .service_cidr
            .as_deref()
            .unwrap_or_else(|| apiserver::default_service_cidr());
        server.services = Arc::new(
            Allocator::new(cidr, apiserver::NODE_PORTS)
                .map_err(|e| Error::ServiceCidr(e.to_string()))?,
        );
        server
            .bootstrap(&super::bootstrap::objects())
            .await
            .map_err(|e| Error::Bootstrap(e.to_string()))?;
        // Push webhooks are signed with a secret made here once (`capstan app webhook-secret` prints it).
        server
            .bootstrap(&[super::bootstrap::webhook_secret()])
            .await
            .map_err(|e| Error::Bootstrap(e.to_string()))?;
        server.allow_unsigned_webhooks = opts.allow_unsigned_webhooks;
        server.event_ttl = opts.event_ttl;
        // The controllers run in this process: their work queues are in its /metrics.
        server.metrics = Some(Arc::new(crate::runtime::queue::prometheus));
        if let Some(audit) = &opts.audit {
            let log = apiserver::audit::AuditLog::open(audit.clone()).map_err(|source| {
                Error::AuditLog {
                    path: audit.path.clone(),
                    source,
                }
            })?;
            server.audit = Some(Arc::new(log));
        }
        let service_ip = crate::sys::parse_cidr(cidr)
            .ok()
            .map(|(net, _)| std::net::Ipv4Addr::from(u32::from(net) + 1));
        let names = certificate_names(opts.listen, &opts.tls_sans, service_ip);
        let material = apiserver::tls::load_or_create(data_dir, &names)?;
        server.ca_pem = material.ca_pem.as_str().into();
        server
            .bootstrap(&super::bootstrap::namespace_basics(&material.ca_pem))
            .await
            .map_err(|e| Error::Bootstrap(e.to_string()))?;
        server.ca_dir = Some(data_dir.as_path().into());
        server.sa_tokens = Some(Arc::new(apiserver::satokens::TokenSigner::load_or_create(
            data_dir,
        )?));
        if first_on_etcd {
            super::identity::publish(&raw_store, data_dir).await?;
        }
        server.agent_tls = Some(apiserver::tls::agent_client_config(
            data_dir,
            &material.ca_pem,
        )?);
        let tls = apiserver::tls::server_config(&material)?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
        let url = url_of(addr);
        let announcement = apiserver::peers::Announcement::new(advertised(addr), addr.port());
        if let Some(ip) = service_ip {
            server
                .publish_kubernetes_service(ip, &announcement)
                .await
                .map_err(|e| Error::Bootstrap(e.to_string()))?;
        }
        let kubeconfig = data_dir.join("kubeconfig");
        Kubeconfig::for_server(&url, &token, &material.ca_pem).save(&kubeconfig)?;
        tracing::info!(%url, kubeconfig = %kubeconfig.display(), "capstan API server listening");
        Ok(ControlPlane {
            listener,
            server,
            tls,
            settings: Settings {
                service_cidr: cidr.to_string(),
                ca_pem: material.ca_pem.clone(),
                ..opts.settings
            },
            url,
            token,
            ca_pem: material.ca_pem,
            kubeconfig,
            announcement,
            exclusive_store: matches!(opts.store, StoreChoice::Embedded),
        })
    }

    /// A client certificate and key (PEM) of the cluster CA for `user` in `groups`, issued now (a year's validity;
    /// every start issues new ones).
    fn issue_certificate(&self, user: &str, groups: &[&str]) -> Result<(String, String), Error> {
        let dir = self.server.ca_dir.clone().ok_or_else(|| {
            Error::Bootstrap("no certificate authority to issue component credentials".into())
        })?;
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        Ok(apiserver::tls::issue_client(
            &dir,
            user,
            &groups,
            Duration::from_secs(365 * 24 * 3600),
            None,
        )?)
    }

    /// A client of this API server as `user` in `groups`, with a client certificate of the cluster CA issued now
    /// (a year's validity; every start issues new ones).
    pub fn component_client(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let (cert, key) = self.issue_certificate(user, groups)?;
        let credentials = crate::client::config::Credentials {
            certificate: Some((cert, key)),
            ..Default::default()
        };
        Ok(Client::with_credentials(
            &self.url,
            &credentials,
            Some(&self.ca_pem),
        )?)
    }

    /// A client of this API server as `user` in `groups` that hands its requests to the server in this process
    /// ([`super::loopback`]), with a client certificate issued now as [`Self::component_client`] does: the
    /// control plane's own components, which need no network to reach the server they run in.
    fn in_process_client(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let (cert, _key) = self.issue_certificate(user, groups)?;
        let der = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| {
                Error::Bootstrap(format!("the certificate issued to {user} is unreadable"))
            })?;
        let loopback = super::loopback::Loopback::new(
            self.server.clone().router(),
            tokio::runtime::Handle::current(),
            der.to_vec(),
        );
        Ok(Client::in_process(&self.url, "", Arc::new(loopback))?)
    }

    /// A client of this API server with the admin credentials.
    pub fn client(&self) -> Result<Client, Error> {
        Ok(Client::new(&self.url, &self.token, Some(&self.ca_pem))?)
    }

    /// Serves the API with the controller manager (and `node`, if any) until `shutdown` resolves.
    pub async fn run(
        self,
        node: Option<LocalNode>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (cm_stop, controller_thread) = self.start_controller_manager()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let agent = match node {
            Some(n) => {
                // The node inside `capstan up` is a node like any other: `system:node:NAME`, node-authorized.
                let user = format!(
                    "{}{}",
                    apiserver::authn::NODE_USER_PREFIX,
                    n.config.node_name
                );
                let client = self.component_client(&user, &[apiserver::authn::NODES_GROUP])?;
                Some(tokio::spawn(run_node(client, n, stop_rx)))
            }
            None => None,
        };
        let shutdown = async move {
            shutdown.await;
            let _ = cm_stop.send(());
            let joined = tokio::task::spawn_blocking(move || controller_thread.join());
            if tokio::time::timeout(Duration::from_secs(5), joined)
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
        let announcing = tokio::spawn(self.server.clone().keep_announcing(self.announcement));
        let served = apiserver::serve(self.listener, self.server, self.tls, shutdown).await;
        announcing.abort();
        served.map_err(Error::Serve)
    }

    /// The controller manager (and its scheduler) gets threads of its own, so a flood of API requests cannot
    /// starve the informers that feed it - like kube-controller-manager and kube-scheduler being their own
    /// processes. It talks to the API server like any other client, in process ([`super::loopback`]): its
    /// requests are served on the server's threads.
    fn start_controller_manager(
        &self,
    ) -> Result<
        (
            tokio::sync::oneshot::Sender<()>,
            std::thread::JoinHandle<()>,
        ),
        Error,
    > {
        let client = super::controller_manager::Clients {
            controllers: self.in_process_client(CONTROLLER_MANAGER_USER, &[])?,
            scheduler: self.in_process_client(SCHEDULER_USER, &[])?,
            gitops: self.in_process_client(GITOPS_USER, &[])?,
        };
        // On the embedded store a restarted server is the same candidate as the one before it (nobody else can
        // open the store), so it takes its own lease back at once instead of waiting for it to expire; on etcd each
        // process is a candidate of its own.
        let identity = if self.exclusive_store {
            format!("{}-embedded", crate::node::hostname())
        } else {
            format!("{}-{}", crate::node::hostname(), std::process::id())
        };
        let settings = self.settings.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("capstan-controllers")
            .enable_all()
            .build()
            .map_err(Error::ControllerManager)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("capstan-controller-manager".into())
            .spawn(move || {
                runtime.block_on(super::controller_manager::run(
                    client,
                    identity,
                    settings,
                    async move {
                        let _ = stop_rx.await;
                    },
                ))
            })
            .map_err(Error::ControllerManager)?;
        Ok((stop_tx, thread))
    }
}

/// The node inside `capstan up`, until `stop` turns true.
async fn run_node(client: Client, node: LocalNode, mut stop: tokio::sync::watch::Receiver<bool>) {
    if let Some(prepare) = node.prepare {
        if let Err(e) = prepare.await {
            tracing::error!("node agent failed: {e:#}");
            return;
        }
    }
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = super::agent::run(client, node.config, node.runtime, stopped).await {
        tracing::error!("node agent failed: {e:#}");
    }
}

/// A client certificate for `user` in `groups`, signed by the cluster CA kept in `data_dir`, valid for `ttl`: the
/// (certificate, key) PEMs of `capstan kubeconfig create`. Needs the server's data directory (its `ca.key`), like
/// `kubeadm kubeconfig user`.
pub fn issue_client_certificate(
    data_dir: &std::path::Path,
    user: &str,
    groups: &[String],
    ttl: Duration,
) -> Result<(String, String), Error> {
    Ok(apiserver::tls::issue_client(
        data_dir, user, groups, ttl, None,
    )?)
}
