//! The API server (kube-apiserver's role), on axum: discovery, OpenAPI v3, CRUD with selectors and paging, watch,
//! patch (merge, JSON, strategic, server-side apply), subresources, Tables, and metav1.Status errors. It is the only
//! module that touches the store. Every request except the health and version endpoints needs the bearer token.
//! It must not run controllers: it stores and serves, and others act.

pub mod discovery;
pub mod error;
pub mod exec;
pub mod handlers;
pub mod hooks;
pub mod logs;
pub mod namespaces;
pub mod patch;
pub mod services;
pub mod table;
pub mod tls;
pub mod watch;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::api::openapi;
use crate::api::registry;
use crate::store::DynStore;
use error::{ApiError, Result};
use handlers::{flag, parse_body, Query};

/// The largest request body accepted (Kubernetes' limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The shared state of the server.
#[derive(Clone)]
pub struct Server {
    pub store: DynStore,
    pub token: Arc<str>,
    /// ClusterIPs and node ports of Services.
    pub services: Arc<services::Allocator>,
}

impl Server {
    /// A server on `store` with the default service CIDR and node ports (30000-32767).
    pub fn new(store: DynStore, token: &str) -> Self {
        Server {
            store,
            token: token.into(),
            services: Arc::new(
                services::Allocator::new(DEFAULT_SERVICE_CIDR, NODE_PORTS)
                    .expect("default service CIDR"),
            ),
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
    let err = |e| StartError::DataDir(path.clone(), e);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        f.write_all(token.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
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
        match self
            .write(kind, None, obj, None, &opts, &mut Vec::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
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
        }
        Ok(())
    }

    /// The axum router.
    pub fn router(self) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response();
    for w in warnings.iter().take(50) {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
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

fn authorized(server: &Server, headers: &HeaderMap) -> bool {
    let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(t) = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
    else {
        return false;
    };
    // Constant-time comparison.
    let a = t.trim().as_bytes();
    let b = server.token.as_bytes();
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a request body up to [`MAX_BODY`]. A larger body is read to its end (and dropped) before the 413 is sent,
/// so the client sees the answer instead of a reset connection - up to a hard cap, past which the connection goes.
async fn read_body(body: Body) -> Option<Bytes> {
    use futures::StreamExt;
    const DRAIN_CAP: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        seen += chunk.len();
        if seen <= MAX_BODY {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            return None;
        }
    }
    (seen <= MAX_BODY).then(|| Bytes::from(buf))
}

async fn dispatch(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return (StatusCode::OK, "ok").into_response(),
        "/version" | "/version/" => {
            return json_response(StatusCode::OK, &discovery::version(), &[])
        }
        _ => {}
    }
    if path == "/hooks/git" && method == Method::POST {
        let Some(bytes) = read_body(body).await else {
            return ApiError::too_large().into_response();
        };
        return match server.git_webhook(&parts.headers, &bytes).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    if !authorized(&server, &parts.headers) {
        return ApiError::unauthorized().into_response();
    }
    if let Some((ns, name)) = exec::exec_target(&path) {
        if method == Method::GET || method == Method::POST {
            return match server.pod_exec(parts, ns, name).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
        }
    }
    let bytes = match read_body(body).await {
        Some(b) => b,
        None => return ApiError::too_large().into_response(),
    };
    let q = query_of(&parts.uri);
    match route(&server, &method, &path, &parts.headers, &q, bytes).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, message = %e.message, "request failed");
            e.into_response()
        }
    }
}

async fn route(
    server: &Server,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &Query,
    body: Bytes,
) -> Result<Response> {
    let ok = |v: Value| json_response(StatusCode::OK, &v, &[]);
    let trimmed = path.trim_end_matches('/');
    if method == Method::GET {
        match trimmed {
            "/api" => return Ok(ok(discovery::api_versions())),
            "/apis" => return Ok(ok(discovery::api_groups())),
            "/openapi/v3" => return Ok(ok(openapi::index())),
            "/openapi/v2" => {
                let mut resp = (StatusCode::OK, openapi::v2_protobuf()).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    ),
                );
                return Ok(resp);
            }
            _ => {}
        }
        if let Some(gv) = trimmed.strip_prefix("/openapi/v3/") {
            let (g, v) = match gv.split('/').collect::<Vec<_>>().as_slice() {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("no OpenAPI document at {path}"),
                    ))
                }
            };
            if !registry::group_versions().contains(&(g, v)) {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("no OpenAPI document for {gv}"),
                ));
            }
            return Ok(ok(openapi::document(g, v)));
        }
        let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["api", v] => {
                return discovery::resource_list("", v)
                    .map(ok)
                    .ok_or_else(|| ApiError::new(404, "NotFound", "no such version"))
            }
            ["apis", g] => {
                return discovery::api_group(g)
                    .map(ok)
                    .ok_or_else(|| ApiError::new(404, "NotFound", "no such group"))
            }
            ["apis", g, v] => {
                return discovery::resource_list(g, v)
                    .map(ok)
                    .ok_or_else(|| ApiError::new(404, "NotFound", "no such group version"))
            }
            _ => {}
        }
    }
    let t = handlers::parse_path(trimmed)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let mut warnings = Vec::new();
    let table = table::wants_table(headers);
    let include = q
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    let sub = t.sub.clone();
    let respond = |code: StatusCode, v: Value, warnings: &[String], kind: &registry::KindInfo| {
        if table && v.get("kind").and_then(Value::as_str) == Some(kind.kind) {
            let meta = json!({"resourceVersion": v.pointer("/metadata/resourceVersion")});
            json_response(
                code,
                &table::table(kind, &[v], meta, &include, true),
                warnings,
            )
        } else {
            json_response(code, &v, warnings)
        }
    };
    match (method.clone(), t.name.is_some(), sub.as_deref()) {
        (Method::GET, false, None) => {
            if flag(q, "watch") {
                return watch::watch(server.clone(), t, q.clone(), headers).await;
            }
            let (kvs, rev, cont, remaining) =
                server.list_kvs(t.kind, t.namespace.as_deref(), q).await?;
            let mut meta = json!({"resourceVersion": rev.to_string()});
            if let Some(c) = cont {
                meta["continue"] = json!(c);
                meta["remainingItemCount"] = json!(remaining);
            }
            if table {
                let items: Vec<Value> = kvs.iter().map(handlers::decode).collect();
                return Ok(ok(table::table(t.kind, &items, meta, &include, true)));
            }
            // The list is assembled from the stored bytes, without parsing each object.
            let mut out =
                Vec::with_capacity(kvs.iter().map(|k| k.value.len() + 32).sum::<usize>() + 256);
            let head = format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
                t.kind.kind,
                t.kind.api_version()
            );
            out.extend_from_slice(head.as_bytes());
            for (i, kv) in kvs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&handlers::raw(kv));
            }
            out.extend_from_slice(b"]}");
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                out,
            )
                .into_response())
        }
        (Method::POST, false, None) => {
            let obj = handlers::parse_object(&body, &content_type, t.kind)?;
            let v = server.create(&t, obj, q, &mut warnings).await?;
            Ok(respond(StatusCode::CREATED, v, &warnings, t.kind))
        }
        (Method::DELETE, false, None) => Ok(ok(server.delete_collection(&t, &body, q).await?)),
        (Method::GET, true, None | Some("status")) => {
            let (v, _) = server
                .get_object(
                    t.kind,
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or(""),
                )
                .await?;
            Ok(respond(StatusCode::OK, v, &[], t.kind))
        }
        (Method::PUT, true, None | Some("status")) => {
            if sub.as_deref() == Some("status") && !t.kind.status {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{} has no status subresource", t.kind.plural),
                ));
            }
            let obj = handlers::parse_object(&body, &content_type, t.kind)?;
            let v = server.update(&t, obj, q, &mut warnings).await?;
            Ok(respond(StatusCode::OK, v, &warnings, t.kind))
        }
        (Method::PATCH, true, None | Some("status")) => {
            if sub.as_deref() == Some("status") && !t.kind.status {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{} has no status subresource", t.kind.plural),
                ));
            }
            let existed = server
                .get_object(
                    t.kind,
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or(""),
                )
                .await
                .is_ok();
            let v = server
                .patch(&t, &body, &content_type, q, &mut warnings)
                .await?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(respond(code, v, &warnings, t.kind))
        }
        (Method::DELETE, true, None) => {
            let v = server.delete(&t, &body, q).await?;
            Ok(respond(StatusCode::OK, v, &[], t.kind))
        }
        (Method::GET, true, Some("scale")) if t.kind.scale => {
            let (v, _) = server
                .get_object(
                    t.kind,
                    t.namespace.as_deref(),
                    t.name.as_deref().unwrap_or(""),
                )
                .await?;
            Ok(ok(Server::scale_of(t.kind, &v)))
        }
        (Method::PUT, true, Some("scale")) if t.kind.scale => Ok(ok(server
            .write_scale(&t, &body, None, q, &mut warnings)
            .await?)),
        (Method::PATCH, true, Some("scale")) if t.kind.scale => Ok(ok(server
            .write_scale(&t, &body, Some(&content_type), q, &mut warnings)
            .await?)),
        (Method::POST, true, Some("binding")) if t.kind.kind == "Pod" => {
            let b = parse_body(&body, &content_type)?;
            Ok(json_response(
                StatusCode::CREATED,
                &server.bind(&t, b).await?,
                &[],
            ))
        }
        (Method::PUT, true, Some("finalize")) if t.kind.kind == "Namespace" => {
            let obj = handlers::parse_object(&body, &content_type, t.kind)?;
            let v = server.finalize_namespace(&t, obj, q, &mut warnings).await?;
            Ok(respond(StatusCode::OK, v, &warnings, t.kind))
        }
        (Method::GET, true, Some("log")) if t.kind.kind == "Pod" => {
            server
                .pod_log(
                    t.namespace.as_deref().unwrap_or("default"),
                    t.name.as_deref().unwrap_or(""),
                    q,
                )
                .await
        }
        (m, _, s) => Err(ApiError::method_not_allowed(&format!(
            "{m} {}{}",
            t.kind.plural,
            s.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// Serves HTTPS until `shutdown` resolves. The listener is bound by the caller (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Server,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = server.router();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let std_listener = listener.into_std()?;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    axum_server::from_tcp_rustls(std_listener, config)?
        .handle(handle)
        .serve(app.into_make_service())
        .await
}
