//! The API server (kube-apiserver's role), on axum: discovery, OpenAPI v3, CRUD with selectors and paging, watch,
//! patch (merge, JSON, strategic, server-side apply), subresources, Tables, and metav1.Status errors. It is the only
//! module that touches the store. Every request except the health and version endpoints needs the bearer token.
//! It must not run controllers: it stores and serves, and others act.

pub mod audit;
pub mod authn;
pub mod authz;
pub mod crds;
pub mod discovery;
pub mod error;
pub mod event_ttl;
pub mod eviction;
pub mod exec;
pub mod fairness;
pub mod handlers;
pub mod hooks;
pub mod join;
pub mod logs;
pub mod metrics;
pub mod namespaces;
pub mod patch;
pub mod peers;
pub mod podsecurity;
pub mod portforward_spdy;
pub mod reviews;
mod routes;
pub mod satokens;
pub mod services;
pub mod table;
pub mod tls;
pub mod watch;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::api::registry;
use crate::store::DynStore;
use error::{ApiError, Result};
use handlers::Query;

/// The largest request body accepted (Kubernetes' limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The shared state of the server.
#[derive(Clone)]
pub struct Server {
    pub store: DynStore,
    pub token: Arc<str>,
    /// ClusterIPs and node ports of Services.
    pub services: Arc<services::Allocator>,
    /// The cluster CA's certificate (PEM), served open at `/cacerts` for joining agents to check against their
    /// token's pin.
    pub ca_pem: Arc<str>,
    /// Where the cluster CA's key is kept (to sign nodes' certificate requests); None: no signing.
    pub ca_dir: Option<Arc<std::path::Path>>,
    /// How the API server calls node agents: over TLS, trusting the cluster CA, with its own client certificate
    /// (None: not set up, as in unit tests; agent calls then fail).
    pub agent_tls: Option<Arc<rustls::ClientConfig>>,
    /// Take push webhooks without a signature when no webhook secret exists (`--allow-unsigned-webhooks`).
    pub allow_unsigned_webhooks: bool,
    /// Requests in flight per user ([`fairness`]).
    pub in_flight: fairness::InFlight,
    /// The RBAC objects as the authorizer reads them, made again after each change ([`authz::RbacCache`]).
    pub rbac: Arc<authz::RbacCache>,
    /// Signs and checks ServiceAccount tokens (None: no key, as in unit tests; TokenRequests then fail).
    pub sa_tokens: Option<Arc<satokens::TokenSigner>>,
    /// The keys of encryption at rest (None: values are stored as they are, as in unit tests).
    pub encryption: Option<Arc<crate::store::encrypted::Encryption>>,
    /// The audit log (`--audit-log`), if kept.
    pub audit: Option<Arc<audit::AuditLog>>,
    /// The store beneath encryption at rest, for snapshots that keep values sealed (None: `store` itself).
    pub raw_store: Option<DynStore>,
    /// Namespaces as last watched ([`Server::follow_namespaces`] keeps it; empty until then).
    pub namespaces: Arc<namespaces::NamespaceCache>,
    /// Turns true when the server begins to shut down: open watches end then, cleanly (their last chunk sent), so
    /// clients see a watch that ended rather than a connection cut.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// How long an Event is kept after it was last seen (`--event-ttl`, one hour by default).
    pub event_ttl: std::time::Duration,
    /// What the process adds to `/metrics` in Prometheus' text format (the controllers' work queues, when the
    /// daemon running this server runs them too); None: `/metrics` has only the API server's own lines.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl Server {
    /// An HTTPS client for node agents (their CA-signed serving certificates; the API server's client certificate).
    pub fn agent_http(&self) -> std::result::Result<reqwest::Client, error::ApiError> {
        let tls = self.agent_tls.clone().ok_or_else(|| {
            error::ApiError::internal("this API server has no credentials for node agents")
        })?;
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| error::ApiError::internal(format!("the node agent client: {e}")))
    }

    /// A server on `store` with the default service CIDR and node ports (30000-32767).
    pub fn new(store: DynStore, token: &str) -> Self {
        Server {
            store,
            token: token.into(),
            services: Arc::new(
                services::Allocator::new(DEFAULT_SERVICE_CIDR, NODE_PORTS)
                    .expect("default service CIDR"),
            ),
            ca_pem: "".into(),
            ca_dir: None,
            agent_tls: None,
            allow_unsigned_webhooks: false,
            in_flight: fairness::InFlight::default(),
            rbac: Arc::default(),
            sa_tokens: None,
            encryption: None,
            audit: None,
            raw_store: None,
            namespaces: Arc::default(),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
            event_ttl: std::time::Duration::from_secs(3600),
            metrics: None,
        }
    }
}

/// The range of Service ClusterIPs without root: like the host pod network (pod CIDR 10.244.x.0/24 served as
/// 127.244.x.0/24), a loopback range, so every ClusterIP is reachable on the machine without privileges.
pub const DEFAULT_SERVICE_CIDR: &str = "127.96.0.0/16";
/// The range of Service ClusterIPs as root, where pods have network namespaces of their own (the bridge network)
/// and reach ClusterIPs through their gateway: Kubernetes' usual range.
pub const ROOT_SERVICE_CIDR: &str = "10.96.0.0/16";

/// The service CIDR when none is given: [`ROOT_SERVICE_CIDR`] as root, else [`DEFAULT_SERVICE_CIDR`].
pub fn default_service_cidr() -> &'static str {
    if crate::sys::is_root() {
        ROOT_SERVICE_CIDR
    } else {
        DEFAULT_SERVICE_CIDR
    }
}
/// The range of node ports.
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
}

/// Reads the bearer token from `DATA_DIR/token`, generating it (mode 0600) at first start.
pub fn load_or_create_token(dir: &Path) -> std::result::Result<String, StartError> {
    let path = dir.join("token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        _ => {}
    }
    use rand::Rng;
    let mut r = rand::rng();
    let token: String = (0..40)
        .map(|_| format!("{:x}", r.random_range(0..16u8)))
        .collect();
    crate::sys::write_private(&path, token.as_bytes())
        .map_err(|e| StartError::DataDir(path.clone(), e))?;
    Ok(token)
}

impl Server {
    /// Creates a built-in object unless it exists.
    async fn create_if_missing(&self, kind: &'static registry::KindInfo, obj: Value) -> Result<()> {
        let opts = handlers::WriteOpts {
            dry_run: false,
            validation: "Strict".into(),
            manager: "capstan".into(),
            subresource: String::new(),
        };
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        match self
            .write(kind, ns.as_deref(), obj, None, &opts, &mut Vec::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Publishes the API server to pods as Kubernetes does: the Service `default/kubernetes` (ClusterIP `ip`, port
    /// 443, no selector), and this server in its Endpoints and EndpointSlices (with every other live server,
    /// [`peers`]); written again at every start (the address or port may change).
    pub async fn publish_kubernetes_service(
        &self,
        ip: std::net::Ipv4Addr,
        me: &peers::Announcement,
    ) -> Result<()> {
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": me.port}]}});
        let kind = registry::lookup("services").expect("served");
        // The service CIDR changed since: the Service is made again with an address of the new range.
        if let Ok((old, rv)) = self.get_object(kind, Some("default"), "kubernetes").await {
            if old["spec"]["clusterIP"] != service["spec"]["clusterIP"] {
                let key = handlers::key(kind, Some("default"), Some("kubernetes"));
                self.store.delete(&key, rv).await?;
            }
        }
        self.put_object(kind, Some("default"), "kubernetes", service)
            .await?;
        self.announce(me).await
    }

    /// Creates the objects every cluster starts with (`daemons::bootstrap::objects`) where they are missing.
    pub async fn bootstrap(&self, objects: &[Value]) -> Result<()> {
        for obj in objects {
            let api_version = obj["apiVersion"].as_str().unwrap_or("");
            let kind_name = obj["kind"].as_str().unwrap_or("");
            let kind = registry::by_kind(api_version, kind_name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "bootstrap object of unknown kind {api_version} {kind_name}"
                ))
            })?;
            self.create_if_missing(kind, obj.clone()).await?;
            self.reconcile_default(kind, obj).await?;
        }
        Ok(())
    }

    /// Brings a default object marked `rbac.authorization.kubernetes.io/autoupdate: "true"` (the default roles and
    /// bindings) back to what this version ships - its rules, aggregation, subjects - unless the stored one has set
    /// that annotation to "false", as Kubernetes reconciles its bootstrap policy at start.
    async fn reconcile_default(
        &self,
        kind: &'static registry::KindInfo,
        want: &Value,
    ) -> Result<()> {
        const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
        if want["metadata"]["annotations"][AUTOUPDATE] != "true" {
            return Ok(());
        }
        let name = want["metadata"]["name"].as_str().unwrap_or("");
        let (old, rv) = self.get_object(kind, None, name).await?;
        if old["metadata"]["annotations"][AUTOUPDATE] == "false" {
            return Ok(());
        }
        let mut new = old.clone();
        for field in ["rules", "aggregationRule", "subjects", "roleRef"] {
            match want.get(field) {
                Some(v) => new[field] = v.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if new == old {
            return Ok(());
        }
        let opts = handlers::WriteOpts {
            dry_run: false,
            validation: "Strict".into(),
            manager: "capstan".into(),
            subresource: String::new(),
        };
        self.write(kind, None, new, Some((&old, rv)), &opts, &mut Vec::new())
            .await?;
        tracing::info!(kind = kind.kind, name, "reconciled a default RBAC object");
        Ok(())
    }

    /// The axum router ([`routes`]).
    pub fn router(self) -> Router {
        routes::router(self)
    }
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response();
    for w in warnings.iter().take(50) {
        // A quoted-string (RFC 7230): quotes and backslashes escaped, as Kubernetes writes them.
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

fn query_of(uri: &axum::http::Uri) -> Query {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    h.strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
}

/// Serves HTTPS until `shutdown` resolves. The listener is bound by the caller (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Server,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = background(&server).await;
    let stopping = server.stopping.clone();
    let app = server.router();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.send_replace(true);
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let std_listener = listener.into_std()?;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let served = axum_server::from_tcp_rustls(std_listener, config)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await;
    for task in background {
        task.abort();
    }
    served
}

/// Starts the server's own background work - following Namespaces and CustomResourceDefinitions, expiring Events -
/// as [`serve`] does (the deterministic simulation serves the router in process and starts this beside it).
pub async fn background(server: &Server) -> Vec<tokio::task::JoinHandle<()>> {
    let following = tokio::spawn(server.clone().follow_namespaces());
    let crds_from = match server.load_crds().await {
        Ok(rev) => rev,
        Err(e) => {
            tracing::warn!("reading CustomResourceDefinitions: {}", e.message);
            0
        }
    };
    let following_crds = tokio::spawn(server.clone().follow_crds(crds_from));
    let expiring = tokio::spawn(server.clone().expire_events(server.event_ttl));
    vec![following, following_crds, expiring]
}
