//! The client: every component except the API server talks to the cluster through it - typed requests over HTTP
//! (reqwest), the kubeconfig it reads, a watcher that resumes from the last resourceVersion and relists on 410, and an
//! informer cache. It must not reach into the store.

pub mod api;
pub mod config;
pub mod discovery;
pub mod events;
pub mod informer;
pub mod transport;

use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::api::registry::KindInfo;

pub use api::{Api, Patch};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
        status: Value,
    },
    #[error("cannot reach the API server at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("bad response from the API server: {0}")]
    Decode(String),
    #[error("kubeconfig: {0}")]
    Config(String),
    /// No connection could be made (the next server may be tried).
    #[error("{0}")]
    Unreachable(String),
}

impl Error {
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the server could not be reached or answered (a connection cut, a
    /// restart) or said it was overloaded or failing (429, 5xx) - as opposed to refusing the request itself.
    pub fn transient(&self) -> bool {
        match self {
            Error::Api { code, .. } => *code == 429 || *code >= 500,
            Error::Http { .. } | Error::Unreachable(_) | Error::Decode(_) => true,
            Error::Config(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection to the API server: to one of several, failing over to the next when one cannot be reached.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    servers: std::sync::Arc<Servers>,
    token: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
    /// Acts as this user (`Impersonate-User`), as far as the client's own identity may impersonate it.
    impersonate: Option<String>,
    /// Requests go to this in-process transport instead of over the network (the simulation).
    transport: Option<std::sync::Arc<dyn transport::Transport>>,
    /// The Events recorded through this client lately ([`events`]' correlator).
    recent_events: std::sync::Arc<events::Recent>,
}

/// The API servers a client may use (`https://a:6443,https://b:6443`), and the one it uses now. A request that
/// cannot connect moves every clone of the client to the next (like k3s's client-side load balancer); requests that
/// reached a server are never sent twice.
#[derive(Debug)]
struct Servers {
    urls: std::sync::RwLock<Vec<String>>,
    current: std::sync::atomic::AtomicUsize,
}

impl Servers {
    fn parse(list: &str) -> Vec<String> {
        list.split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The server in use: its index and URL.
    fn current(&self) -> (usize, String) {
        let urls = self.urls.read().unwrap_or_else(|e| e.into_inner());
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % urls.len().max(1);
        (i, urls.get(i).cloned().unwrap_or_default())
    }

    fn len(&self) -> usize {
        self.urls.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Server `i` could not be reached: move on to the next (unless another request already did).
    fn failed(&self, i: usize, why: &dyn std::fmt::Display) {
        let n = self.len();
        if n < 2 {
            return;
        }
        let moved = self
            .current
            .compare_exchange(
                i,
                (i + 1) % n,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok();
        if moved {
            let (_, next) = self.current();
            tracing::warn!(next = %next, "the API server cannot be reached ({why}); failing over");
        }
    }

    /// Adds servers learned elsewhere (the `kubernetes` Endpoints) after the ones configured; the one in use stays.
    fn learn(&self, found: &[String]) {
        let mut urls = self.urls.write().unwrap_or_else(|e| e.into_inner());
        for u in found {
            let u = u.trim_end_matches('/');
            if !urls.iter().any(|have| have == u) {
                tracing::info!(server = %u, "learned of another API server");
                urls.push(u.to_string());
            }
        }
    }
}

/// Whether a request failed before reaching any server (so sending it elsewhere cannot repeat it).
fn unreachable(e: &reqwest::Error) -> bool {
    e.is_connect()
}

/// A client certificate kept in files: read at first use and again whenever the certificate file changes, so a
/// certificate renewed on disk is presented on the next connection.
#[derive(Debug)]
struct FileIdentity {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::RwLock<(
        Option<std::time::SystemTime>,
        std::sync::Arc<rustls::sign::CertifiedKey>,
    )>,
}

impl FileIdentity {
    fn open(cert: &std::path::Path, key: &std::path::Path) -> Result<Self> {
        let loaded = Self::load(cert, key)?;
        let modified = std::fs::metadata(cert).and_then(|m| m.modified()).ok();
        Ok(FileIdentity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: std::sync::RwLock::new((modified, loaded)),
        })
    }

    fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("{}: {e}", cert.display())))?;
        let key_der = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| Error::Config(format!("{}: {e}", key.display())))?
            .ok_or_else(|| Error::Config(format!("{}: no private key", key.display())))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| Error::Config(format!("{}: {e}", key.display())))?;
        Ok(std::sync::Arc::new(rustls::sign::CertifiedKey::new(
            chain, signing,
        )))
    }
}

impl rustls::client::ResolvesClientCert for FileIdentity {
    fn resolve(
        &self,
        _root_hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        let modified = std::fs::metadata(&self.cert)
            .and_then(|m| m.modified())
            .ok();
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == modified {
                return Some(current.1.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match Self::load(&self.cert, &self.key) {
            Ok(loaded) => *current = (modified, loaded),
            // Half-written (a renewal in progress): the one in hand stays until the files are whole.
            Err(e) => tracing::debug!("reloading the client certificate: {e}"),
        }
        Some(current.1.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A WebSocket to the API server (`pods/exec`).
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Where a request points.
pub fn resource_path(kind: &KindInfo, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    if kind.namespaced {
        if let Some(ns) = ns {
            p.push_str(&format!("/namespaces/{ns}"));
        }
    }
    p.push('/');
    p.push_str(kind.plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

impl Client {
    /// A client for `base` with a bearer token, trusting `ca_pem` (PEM certificates) for HTTPS.
    pub fn new(base: &str, token: &str, ca_pem: Option<&str>) -> Result<Self> {
        Self::with_credentials(
            base,
            &config::Credentials {
                token: token.to_string(),
                ..Default::default()
            },
            ca_pem,
        )
    }

    /// A client for `base` presenting `credentials` (a bearer token and/or a client certificate).
    pub fn with_credentials(
        base: &str,
        credentials: &config::Credentials,
        ca_pem: Option<&str>,
    ) -> Result<Self> {
        crate::sys::init_crypto();
        let token = credentials.token.as_str();
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = ca_pem {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| Error::Config(format!("certificate authority: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("certificate authority: {e}")))?;
            }
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let tls = match &credentials.certificate {
            None => match &credentials.certificate_files {
                Some((cert, key)) => builder
                    .with_client_cert_resolver(std::sync::Arc::new(FileIdentity::open(cert, key)?)),
                None => builder.with_no_client_auth(),
            },
            Some((cert, key)) => {
                let chain = rustls_pemfile::certs(&mut cert.as_bytes())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Config(format!("client certificate: {e}")))?;
                let key = rustls_pemfile::private_key(&mut key.as_bytes())
                    .map_err(|e| Error::Config(format!("client key: {e}")))?
                    .ok_or_else(|| Error::Config("client key: no private key in it".into()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Config(format!("client certificate: {e}")))?
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(tls.clone())
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let urls = Servers::parse(base);
        if urls.is_empty() {
            return Err(Error::Config("no API server URL".into()));
        }
        Ok(Client {
            http,
            servers: std::sync::Arc::new(Servers {
                urls: std::sync::RwLock::new(urls),
                current: std::sync::atomic::AtomicUsize::new(0),
            }),
            token: token.to_string(),
            tls: std::sync::Arc::new(tls),
            impersonate: None,
            transport: None,
            recent_events: Default::default(),
        })
    }

    /// A client whose requests are handed to `transport` in this process (the simulation's network), as the
    /// holder of `token`; `base` only names the server in messages.
    pub fn in_process(
        base: &str,
        token: &str,
        transport: std::sync::Arc<dyn transport::Transport>,
    ) -> Result<Self> {
        let mut c = Self::new(base, token, None)?;
        c.transport = Some(transport);
        Ok(c)
    }

    /// The same connection acting as `user` (Kubernetes impersonation; a ServiceAccount's user name gets its
    /// groups).
    pub fn impersonating(&self, user: &str) -> Client {
        Client {
            impersonate: Some(user.to_string()),
            ..self.clone()
        }
    }

    /// Opens a WebSocket to `path` (with its query) offering `protocols`; returns it and the protocol chosen.
    pub async fn websocket(&self, path: &str, protocols: &[&str]) -> Result<(WebSocket, String)> {
        let mut attempts = self.servers.len();
        loop {
            let (i, base) = self.servers.current();
            match self.websocket_to(&base, path, protocols).await {
                Err(Error::Unreachable(why)) if attempts > 1 => {
                    attempts -= 1;
                    self.servers.failed(i, &why);
                }
                Err(Error::Unreachable(m)) => return Err(Error::Config(m)),
                other => return other,
            }
        }
    }

    async fn websocket_to(
        &self,
        base: &str,
        path: &str,
        protocols: &[&str],
    ) -> Result<(WebSocket, String)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{base}{path}")
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Config(format!("{url}: {e}")))?;
        let h = req.headers_mut();
        let bad = |e: reqwest::header::InvalidHeaderValue| Error::Config(e.to_string());
        if !self.token.is_empty() {
            h.insert(
                "authorization",
                format!("Bearer {}", self.token).parse().map_err(bad)?,
            );
        }
        h.insert(
            "sec-websocket-protocol",
            protocols.join(", ").parse().map_err(bad)?,
        );
        let parsed = url::Url::parse(&url).map_err(|e| Error::Config(format!("{url}: {e}")))?;
        if parsed.scheme() != "wss" {
            return Err(Error::Config(format!(
                "{base}: WebSockets to the API server need https"
            )));
        }
        let host = parsed.host_str().unwrap_or("").to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| Error::Unreachable(format!("cannot reach {base}: {e}")))?;
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| Error::Config(format!("{host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Config(format!("cannot reach {base}: {e}")))?;
        let (ws, resp) = tokio_tungstenite::client_async(req, tls)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => {
                    let body = r
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    let status = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
                    let message = status["message"].as_str().map(String::from).unwrap_or(body);
                    Error::Api {
                        code: r.status().as_u16(),
                        reason: status["reason"].as_str().unwrap_or("").to_string(),
                        message,
                        status,
                    }
                }
                other => Error::Config(format!("{url}: {other}")),
            })?;
        let chosen = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok((ws, chosen))
    }

    /// From a kubeconfig file.
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<Self> {
        let kc = config::Kubeconfig::load(path)?;
        let t = kc.target()?;
        Self::with_credentials(&t.server, &t.credentials, t.ca.as_deref())
    }

    /// The URL of the API server in use.
    pub fn base(&self) -> String {
        self.servers.current().1
    }

    /// Every API server this client may use, the configured ones first.
    pub fn servers(&self) -> Vec<String> {
        self.servers
            .urls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds API servers to fail over to (shared by every clone of this client).
    pub fn learn_servers(&self, urls: &[String]) {
        self.servers.learn(urls);
    }

    /// Sends the request `build` makes for a server's base URL, to the server in use, moving on to the next when
    /// it cannot be reached. Returns the answer and the URL asked.
    async fn send(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, String)> {
        let mut attempts = self.servers.len();
        loop {
            let (i, base) = self.servers.current();
            let url = format!("{base}{path}");
            let mut rb = build(&url);
            if !self.token.is_empty() {
                rb = rb.bearer_auth(&self.token);
            }
            if let Some(user) = &self.impersonate {
                rb = rb.header("Impersonate-User", user);
            }
            if let Some(t) = &self.transport {
                let request =
                    rb.build()
                        .and_then(transport::Request::try_from)
                        .map_err(|source| Error::Http {
                            url: url.clone(),
                            source,
                        })?;
                return match t.call(request).await {
                    Ok(resp) => Ok((reqwest::Response::from(resp), url)),
                    Err(why) => Err(Error::Unreachable(format!("cannot reach {base}: {why}"))),
                };
            }
            match rb.send().await {
                Ok(resp) => return Ok((resp, url)),
                Err(source) if unreachable(&source) && attempts > 1 => {
                    attempts -= 1;
                    self.servers.failed(i, &source);
                }
                Err(source) => {
                    if unreachable(&source) {
                        self.servers.failed(i, &source);
                    }
                    return Err(Error::Http { url, source });
                }
            }
        }
    }

    /// Sends a request and decodes a JSON answer, turning Status errors into [`Error::Api`].
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        accept: Option<&str>,
    ) -> Result<Value> {
        let body = body.map(|(ct, b)| (ct, bytes::Bytes::from(b)));
        let (resp, url) = self
            .send(path, |url| {
                let mut rb = self.http.request(method.clone(), url);
                if let Some(a) = accept {
                    rb = rb.header("Accept", a);
                }
                if let Some((ct, b)) = &body {
                    rb = rb.header("Content-Type", *ct).body(b.clone());
                }
                rb
            })
            .await?;
        let code = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| Error::Http { url, source })?;
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if code >= 400 {
            let message = v
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("HTTP {code}: {v}"));
            let reason = v
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(Error::Api {
                code,
                reason,
                message,
                status: v,
            });
        }
        Ok(v)
    }

    pub async fn get(&self, kind: &KindInfo, ns: Option<&str>, name: &str) -> Result<Value> {
        self.request(
            reqwest::Method::GET,
            &resource_path(kind, ns, Some(name)),
            None,
            None,
        )
        .await
    }

    pub async fn list(&self, kind: &KindInfo, ns: Option<&str>, query: &str) -> Result<Value> {
        let mut p = resource_path(kind, ns, None);
        if !query.is_empty() {
            p.push('?');
            p.push_str(query);
        }
        self.request(reqwest::Method::GET, &p, None, None).await
    }

    pub async fn create(&self, kind: &KindInfo, ns: Option<&str>, obj: &Value) -> Result<Value> {
        self.request(
            reqwest::Method::POST,
            &resource_path(kind, ns, None),
            Some(("application/json", obj.to_string().into_bytes())),
            None,
        )
        .await
    }

    pub async fn replace(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value> {
        self.request(
            reqwest::Method::PUT,
            &resource_path(kind, ns, Some(name)),
            Some(("application/json", obj.to_string().into_bytes())),
            None,
        )
        .await
    }

    /// Server-side apply.
    pub async fn apply(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value> {
        let path = format!(
            "{}?fieldManager={}&fieldValidation=Strict{}",
            resource_path(kind, ns, Some(name)),
            manager,
            if force { "&force=true" } else { "" }
        );
        self.request(
            reqwest::Method::PATCH,
            &path,
            Some(("application/apply-patch+yaml", obj.to_string().into_bytes())),
            None,
        )
        .await
    }

    pub async fn patch(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        patch: &Value,
    ) -> Result<Value> {
        self.request(
            reqwest::Method::PATCH,
            &resource_path(kind, ns, Some(name)),
            Some((content_type, patch.to_string().into_bytes())),
            None,
        )
        .await
    }

    /// Patches an object's status through its status subresource (strategic merge: conditions merge by type).
    pub async fn patch_status(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        status: &Value,
    ) -> Result<Value> {
        let path = format!("{}/status", resource_path(kind, ns, Some(name)));
        let body = serde_json::json!({"status": status})
            .to_string()
            .into_bytes();
        self.request(
            reqwest::Method::PATCH,
            &path,
            Some(("application/strategic-merge-patch+json", body)),
            None,
        )
        .await
    }

    pub async fn delete(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        propagation: &str,
    ) -> Result<Value> {
        let body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation});
        self.delete_with(kind, ns, name, &body).await
    }

    /// Deletes with explicit DeleteOptions (grace period, preconditions, propagation).
    pub async fn delete_with(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        self.request(
            reqwest::Method::DELETE,
            &resource_path(kind, ns, Some(name)),
            Some(("application/json", body.to_string().into_bytes())),
            None,
        )
        .await
    }

    /// Starts a GET whose answer is read as a stream (watches, followed logs); API errors come back as
    /// [`Error::Api`].
    pub async fn open(&self, path: &str) -> Result<reqwest::Response> {
        let (resp, _) = self.send(path, |url| self.http.get(url)).await?;
        let code = resp.status().as_u16();
        if code >= 400 {
            let bytes = resp.bytes().await.unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let message = v
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("HTTP {code}: {}", String::from_utf8_lossy(&bytes)));
            return Err(Error::Api {
                code,
                reason: v.get("reason").and_then(Value::as_str).unwrap_or("").into(),
                message,
                status: v,
            });
        }
        Ok(resp)
    }

    /// Opens one watch request; yields (type, object) pairs until the server ends it.
    pub async fn watch_once(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        query: &str,
        resource_version: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<(String, Value)>>> {
        let raw = self.watch_raw(kind, ns, query, resource_version).await?;
        Ok(raw
            .map(|ev| {
                let (ty, obj) = ev?;
                let v =
                    serde_json::from_str(obj.get()).map_err(|e| Error::Decode(e.to_string()))?;
                Ok((ty, v))
            })
            .boxed())
    }

    /// Opens one watch request; yields each event's type and its object as the JSON text it came in (for a caller
    /// that decodes it straight into its own type).
    pub async fn watch_raw(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        query: &str,
        resource_version: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<(String, Box<RawValue>)>>> {
        let mut p = format!(
            "{}?watch=true&allowWatchBookmarks=true&timeoutSeconds=290",
            resource_path(kind, ns, None)
        );
        if !resource_version.is_empty() {
            p.push_str(&format!("&resourceVersion={resource_version}"));
        }
        if !query.is_empty() {
            p.push('&');
            p.push_str(query);
        }
        let resp = self.open(&p).await?;
        let mut decoder = WatchDecoder::default();
        let stream = resp.bytes_stream().flat_map(move |chunk| {
            let out = match chunk {
                Ok(c) => decoder.push(&c),
                Err(e) => vec![Err(Error::Decode(e.to_string()))],
            };
            futures::stream::iter(out)
        });
        Ok(stream.boxed())
    }
}

/// Splits a watch's answer, as its chunks arrive, into events: one JSON object a line (`{"type", "object"}`); a
/// line cut between chunks waits for the rest. (Fuzzed: `fuzz/fuzz_targets/frames.rs`.)
#[derive(Default)]
pub struct WatchDecoder {
    buf: Vec<u8>,
}

impl WatchDecoder {
    /// Takes the next chunk; returns every event its complete lines hold, in order (a line that is not a watch
    /// event is an error in its place).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<(String, Box<RawValue>)>> {
        /// A watch event line, its object left as text.
        #[derive(serde::Deserialize)]
        struct Line {
            #[serde(rename = "type", default)]
            ty: String,
            object: Option<Box<RawValue>>,
        }
        let mut out = Vec::new();
        self.buf.extend_from_slice(chunk);
        // Parse every complete line in place, then drop them in one move (not one per line).
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let line = &self.buf[start..start + i];
            start += i + 1;
            match serde_json::from_slice::<Line>(line) {
                Ok(l) => out.push(Ok((
                    l.ty,
                    l.object.unwrap_or_else(|| RawValue::NULL.to_owned()),
                ))),
                Err(e) => out.push(Err(Error::Decode(e.to_string()))),
            }
        }
        self.buf.drain(..start);
        out
    }
}

/// Decodes a JSON value into a typed object.
pub fn typed<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_answer_splits_into_events_with_their_objects_as_text_whatever_the_chunks() {
        let answer = b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n\
            {\"type\":\"ERROR\",\"object\":{\"code\":410}}\n\
            not json\n\
            {\"type\":\"BOOKMARK\"}\n\
            {\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"b\"}}}";
        let show = |evs: Vec<Result<(String, Box<RawValue>)>>| -> Vec<String> {
            evs.into_iter()
                .map(|e| match e {
                    Ok((ty, obj)) => format!("{ty} {}", obj.get()),
                    Err(_) => "error".to_string(),
                })
                .collect()
        };
        let want = [
            r#"ADDED {"metadata":{"name":"a"}}"#,
            r#"ERROR {"code":410}"#,
            "error",
            "BOOKMARK null",
        ];
        let mut whole = WatchDecoder::default();
        assert_eq!(show(whole.push(answer)), want);
        // The last line is not complete until its newline comes.
        assert_eq!(
            show(whole.push(b"\n")),
            [r#"MODIFIED {"metadata":{"name":"b"}}"#]
        );
        let mut cut = WatchDecoder::default();
        let mut got = Vec::new();
        for chunk in answer.chunks(5) {
            got.extend(show(cut.push(chunk)));
        }
        assert_eq!(got, want);
    }
}
