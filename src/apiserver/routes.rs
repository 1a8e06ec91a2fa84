//! How a request finds its handler. Fixed paths (health, version, the git webhook, pod exec) are routes on axum's
//! router; everything else needs the bearer token and goes through [`resources`]: discovery and OpenAPI documents by
//! path, then every resource path (`/api/v1/...`, `/apis/GROUP/VERSION/...`) through one table of verbs keyed by
//! method, whether a name is given, and the subresource.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::authn::Identity;
use super::error::{ApiError, Result};
use super::handlers::{self, flag, parse_body, Query, Target};
use super::{discovery, json_response, query_of, table, watch, Server, MAX_BODY};
use crate::api::openapi;
use crate::api::registry::{self, KindInfo};

/// The API server's router.
pub fn router(server: Server) -> Router {
    let open = Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/hooks/git", post(git_hook))
        .route("/cacerts", get(cacerts));
    let guarded = Router::new()
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            get(exec).post(exec),
        )
        .route(
            concat!("/", "api/v1/namespaces/{ns}/pods/{name}/portforward"),
            get(portforward).post(portforward),
        )
        .route("/metrics", get(super::metrics::prometheus))
        .route("/capstan/v1/join", post(join))
        .route("/capstan/v1/node-certificate", post(node_certificate))
        .route("/capstan/v1/encryption/rotate", post(rotate_encryption_key))
        .route(
            concat!("/", "capstan/v1/store/snapshot"),
            get(store_snapshot),
        )
        .route(
            concat!("/", "apis/authentication.k8s.io/v1/selfsubjectreviews"),
            post(self_subject_review),
        )
        .route(
            concat!("/", "apis/authentication.k8s.io/v1/tokenreviews"),
            post(token_review),
        )
        .route(
            concat!("/", "apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            post(|s, r| review(s, r, Review::SelfAccess)),
        )
        .route(
            concat!("/", "apis/authorization.k8s.io/v1/selfsubjectrulesreviews"),
            post(|s, r| review(s, r, Review::SelfRules)),
        )
        .route(
            concat!("/", "apis/authorization.k8s.io/v1/subjectaccessreviews"),
            post(|s, r| review(s, r, Review::Subject)),
        )
        .fallback(resources)
        .layer(middleware::from_fn_with_state(
            server.clone(),
            require_token,
        ));
    open.merge(guarded).with_state(server)
}

async fn health() -> Response {
    (StatusCode::OK, "ok").into_response()
}

async fn version() -> Response {
    json_response(StatusCode::OK, &discovery::version(), &[])
}

/// Who the request is: its bearer token, else its client certificate (verified by TLS against the cluster CA).
async fn identify(
    server: &Server,
    token: Option<String>,
    cert: Option<Vec<u8>>,
) -> Option<Identity> {
    if let Some(t) = token {
        return server.authenticate(&t).await;
    }
    super::authn::from_certificate(&cert?)
}

/// Every guarded request: [`guard`], then its audit event when the server keeps an audit log.
async fn require_token(State(server): State<Server>, req: Request, next: Next) -> Response {
    let Some(log) = server.audit.clone() else {
        return guard(&server, req, next).await.0;
    };
    let received = crate::sys::clock::utc_now();
    let uri = req.uri().to_string();
    let attributes = super::authz::attributes(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let annotations = std::cell::RefCell::new(Vec::new());
    let ((resp, who, impersonator), annotations) = super::audit::ANNOTATIONS
        .scope(annotations, async {
            let out = guard(&server, req, next).await;
            (out, super::audit::ANNOTATIONS.with(|a| a.take()))
        })
        .await;
    log.record(&super::audit::Request {
        who: who.as_ref(),
        impersonator: impersonator.as_ref(),
        uri: &uri,
        attributes: &attributes,
        source,
        user_agent: user_agent.as_deref(),
        received,
        code: resp.status().as_u16(),
        annotations,
    });
    resp
}

/// Answers 401 to a request that is nobody (no known bearer token, no client certificate of the cluster CA). A
/// bootstrap token only reaches `/capstan/v1/join`. `Impersonate-User`/`-Group` headers act as another user when
/// the caller may `impersonate` them. Then the request is authorized (403 in Kubernetes' words when refused), and
/// the identity goes into the request's extensions. Returns the response, who the request acted as, and who
/// really sent it when that was someone else (impersonation).
async fn guard(
    server: &Server,
    mut req: Request,
    next: Next,
) -> (Response, Option<Identity>, Option<Identity>) {
    let token = super::bearer(req.headers()).map(String::from);
    let cert = req
        .extensions()
        .get::<std::sync::Arc<axum_server::tls::TlsInfo>>()
        .and_then(|t| t.peer_certificates.first().cloned());
    let who = identify(server, token, cert).await;
    let path = req.uri().path().to_string();
    let who = match who {
        None => return (ApiError::unauthorized().into_response(), None, None),
        Some(id @ Identity::Bootstrap(_)) if path == "/capstan/v1/join" => {
            req.extensions_mut().insert(id.clone());
            return (next.run(req).await, Some(id), None);
        }
        Some(id @ Identity::Bootstrap(_)) => {
            let refused = ApiError::forbidden(
                "a bootstrap token may only join a node (POST /capstan/v1/join)",
            );
            return (refused.into_response(), Some(id), None);
        }
        Some(id) => id,
    };
    let (who, impersonator) = match impersonated(server, &who, req.headers()).await {
        Ok(Some(other)) => (other, Some(who)),
        Ok(None) => (who, None),
        Err(e) => return (e.into_response(), Some(who), None),
    };
    // The node-certificate endpoint decides for itself (a node for its own, the admin for any).
    if path != "/capstan/v1/node-certificate" {
        let a = super::authz::attributes(req.method(), &path, req.uri().query().unwrap_or(""));
        if let Err(e) = server.authorize(&who, &a).await {
            return (e.into_response(), Some(who), impersonator);
        }
    }
    // One user's burst waits its turn instead of taking every worker (system:masters exempt, as in Kubernetes).
    let (user, groups) = who.user_info();
    let _seat = if super::fairness::exempt(&user, &groups)
        || super::fairness::long_running(&path, req.uri().query().unwrap_or(""))
    {
        None
    } else {
        match server.in_flight.take(&user) {
            Some(seat) => Some(seat),
            None => {
                let mut resp = ApiError::new(
                    429,
                    "TooManyRequests",
                    format!(
                        "too many requests in flight from user {user:?} (at most {}); try again later",
                        super::fairness::PER_USER
                    ),
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return (resp, Some(who), impersonator);
            }
        }
    };
    req.extensions_mut().insert(who.clone());
    (next.run(req).await, Some(who), impersonator)
}

/// The identity a request impersonates (`Impersonate-User`, `Impersonate-Group`), if it asks to and may.
async fn impersonated(
    server: &Server,
    who: &Identity,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Identity>> {
    let Some(user) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
    else {
        return Ok(None);
    };
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let ask = |resource: &str, name: &str| crate::api::rbac::Attributes {
        verb: "impersonate".into(),
        resource: Some(crate::api::rbac::ResourceAttributes {
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: String::new(),
            name: name.to_string(),
        }),
        path: String::new(),
    };
    // A ServiceAccount is impersonated as `serviceaccounts` in its namespace, and gets its groups.
    let service_account = user
        .strip_prefix(super::satokens::SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, name)) => {
            let mut a = ask("serviceaccounts", name);
            if let Some(r) = a.resource.as_mut() {
                r.namespace = ns.to_string();
            }
            server.authorize(who, &a).await?;
        }
        None => server.authorize(who, &ask("users", &user)).await?,
    }
    for g in &groups {
        server.authorize(who, &ask("groups", g)).await?;
    }
    if let (Some((ns, name)), true) = (service_account, groups.is_empty()) {
        return Ok(Some(super::satokens::service_account_user(ns, name)));
    }
    Ok(Some(Identity::User { name: user, groups }))
}

enum Review {
    SelfAccess,
    SelfRules,
    Subject,
}

/// A request body of `kind` (group `group`, v1): Kubernetes protobuf (kubectl sends some subresources that way),
/// else JSON or YAML by content type.
fn body_of(bytes: &[u8], content_type: &str, group: &str, kind: &str) -> Result<Value> {
    if bytes.starts_with(b"k8s\0") {
        crate::api::protobuf::object(bytes, group, "v1", kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    } else {
        parse_body(bytes, content_type)
    }
}

/// `kubectl auth can-i` (and `--list`), and SubjectAccessReview for whoever may create them.
async fn review(State(server): State<Server>, req: Request, which: Review) -> Response {
    let (parts, body) = req.into_parts();
    let Some(who) = parts.extensions.get::<Identity>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let Some(bytes) = read_body(body).await else {
        return ApiError::too_large().into_response();
    };
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let kind = match which {
        Review::SelfAccess => "SelfSubjectAccessReview",
        Review::SelfRules => "SelfSubjectRulesReview",
        Review::Subject => "SubjectAccessReview",
    };
    let body = match body_of(&bytes, ct, "authorization.k8s.io", kind) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let answer = match which {
        Review::SelfAccess => server.self_subject_access_review(&who, &body).await,
        Review::SelfRules => server.self_subject_rules_review(&who, &body).await,
        Review::Subject => server.subject_access_review(&body).await,
    };
    match answer {
        Ok(v) => json_response(StatusCode::CREATED, &v, &[]),
        Err(e) => e.into_response(),
    }
}

/// TokenReview: who a token is (for whoever may create tokenreviews, as webhook authenticators do).
async fn token_review(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(bytes) = read_body(body).await else {
        return ApiError::too_large().into_response();
    };
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match body_of(&bytes, ct, "authentication.k8s.io", "TokenReview") {
        Ok(body) => json_response(StatusCode::CREATED, &server.token_review(&body).await, &[]),
        Err(e) => e.into_response(),
    }
}

/// `capstan secrets rotate-key`: a new key for values at rest, everything re-encrypted under it (authorized as the
/// non-resource path, so `system:masters` or an RBAC rule for it).
async fn rotate_encryption_key(State(server): State<Server>, req: Request) -> Response {
    let Some(enc) = server.encryption.clone() else {
        return ApiError::new(404, "NotFound", "encryption at rest is not configured")
            .into_response();
    };
    let Some(bytes) = read_body(req.into_body()).await else {
        return ApiError::too_large().into_response();
    };
    let asked: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let provider = match asked["provider"].as_str().map(str::parse) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return ApiError::bad_request(e).into_response(),
    };
    match enc.rotate(provider).await {
        Ok((key, rewritten)) => {
            let (_, p) = enc.active();
            json_response(
                StatusCode::OK,
                &json!({"key": key, "provider": p, "rewritten": rewritten}),
                &[],
            )
        }
        Err(e) => ApiError::internal(format!("rotating the encryption key: {e}")).into_response(),
    }
}

/// `capstan store snapshot save`: every key of the store at one revision, values as stored (encrypted ones stay
/// sealed), in the snapshot format (authorized as the non-resource path: `system:masters` or an RBAC rule for it).
async fn store_snapshot(State(server): State<Server>) -> Response {
    let store = server.raw_store.clone().unwrap_or(server.store.clone());
    let snap = match crate::store::snapshot::take(store.as_ref()).await {
        Ok(s) => s,
        Err(e) => return ApiError::internal(format!("taking a snapshot: {e}")).into_response(),
    };
    let mut out = Vec::new();
    if let Err(e) = crate::store::snapshot::write(&snap, &mut out) {
        return ApiError::internal(format!("writing a snapshot: {e}")).into_response();
    }
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/jsonl")],
        out,
    )
        .into_response()
}

/// `kubectl auth whoami`: the caller's user name and groups.
async fn self_subject_review(req: Request) -> Response {
    match req.extensions().get::<Identity>() {
        Some(id) => json_response(StatusCode::CREATED, &id.self_subject_review(), &[]),
        None => ApiError::unauthorized().into_response(),
    }
}

/// The cluster CA's certificate, for joining agents (they check it against the pin in their join token).
async fn cacerts(State(server): State<Server>) -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        server.ca_pem.to_string(),
    )
        .into_response()
}

/// A node exchanges its bootstrap token for a token and certificate of its own.
async fn join(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(who) = parts.extensions.get::<Identity>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let Some(bytes) = read_body(body).await else {
        return ApiError::too_large().into_response();
    };
    let parsed: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(format!("join: {e}")).into_response(),
    };
    match server.join(&who, &parsed).await {
        Ok(v) => json_response(StatusCode::OK, &v, &[]),
        Err(e) => e.into_response(),
    }
}

/// A node's certificates: `{"csr": PEM, "usage": "client"|"serving", "node": NAME}` -> `{"certificate": PEM}`. A node
/// asks for its own (renewing its client certificate, or the serving certificate of its agent's endpoint); the admin
/// for any node (agents started with the admin token).
async fn node_certificate(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let who = parts.extensions.get::<Identity>().cloned();
    let Some(bytes) = read_body(body).await else {
        return ApiError::too_large().into_response();
    };
    let Ok(asked) = serde_json::from_slice::<Value>(&bytes) else {
        return ApiError::bad_request(
            "expected {\"csr\": PEM, \"usage\": \"client\" or \"serving\"}",
        )
        .into_response();
    };
    let node = match &who {
        Some(Identity::Node(n)) => n.clone(),
        Some(Identity::Admin) => asked["node"].as_str().unwrap_or("").to_string(),
        _ => {
            return ApiError::forbidden("only a node asks for its own certificates here")
                .into_response()
        }
    };
    let usage = match asked["usage"].as_str().unwrap_or("client") {
        "client" => super::tls::Usage::Client,
        "serving" => super::tls::Usage::Server,
        other => {
            return ApiError::bad_request(format!("usage {other:?}: expected client or serving"))
                .into_response()
        }
    };
    let (Some(csr), Some(who)) = (asked["csr"].as_str(), who) else {
        return ApiError::bad_request("expected {\"csr\": PEM}").into_response();
    };
    match server.sign_node_request(&who, &node, csr, usage).await {
        Ok(cert) => json_response(
            StatusCode::OK,
            &serde_json::json!({"certificate": cert}),
            &[],
        ),
        Err(e) => e.into_response(),
    }
}

async fn git_hook(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(bytes) = read_body(body).await else {
        return ApiError::too_large().into_response();
    };
    server
        .git_webhook(&parts.headers, &bytes)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn exec(state: State<Server>, path: Path<(String, String)>, req: Request) -> Response {
    stream(state, path, req, false).await
}

async fn portforward(state: State<Server>, path: Path<(String, String)>, req: Request) -> Response {
    stream(state, path, req, true).await
}

/// `pods/exec` or `pods/portforward`: a WebSocket relayed to the agent of the pod's node.
async fn stream(
    State(server): State<Server>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
    forward: bool,
) -> Response {
    let (parts, _) = req.into_parts();
    let answer = if forward {
        server.pod_portforward(parts, &ns, &name).await
    } else {
        server.pod_exec(parts, &ns, &name).await
    };
    answer.unwrap_or_else(IntoResponse::into_response)
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

/// Discovery, OpenAPI and every resource path.
async fn resources(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(bytes) = read_body(body).await else {
        return ApiError::too_large().into_response();
    };
    let path = parts.uri.path().trim_end_matches('/').to_string();
    if let Some(Identity::Node(node)) = parts.extensions.get::<Identity>() {
        // NodeRestriction: a node registers only itself.
        let a = super::authz::attributes(&parts.method, &path, parts.uri.query().unwrap_or(""));
        let creates_node = a.verb == "create"
            && a.resource
                .as_ref()
                .is_some_and(|r| r.group.is_empty() && r.resource == "nodes");
        if creates_node {
            let body = super::handlers::parse_object(
                &bytes,
                parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json"),
                registry::lookup("nodes").expect("served"),
            )
            .unwrap_or(Value::Null);
            let named = body["metadata"]["name"].as_str().unwrap_or("");
            if named != node {
                return super::authz::forbidden(
                    &format!("system:node:{node}"),
                    &a,
                    &format!("a node may only register itself, not {named:?}"),
                )
                .into_response();
            }
        }
    }
    if let Some(who) = parts.extensions.get::<Identity>() {
        let a = super::authz::attributes(&parts.method, &path, parts.uri.query().unwrap_or(""));
        if a.resource
            .as_ref()
            .is_some_and(|r| r.group == "rbac.authorization.k8s.io")
        {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json");
            let kind = a
                .resource
                .as_ref()
                .and_then(|r| registry::by_resource(&r.group, "v1", &r.resource));
            let body = match kind {
                Some(k) => super::handlers::parse_object(&bytes, ct, k),
                None => super::handlers::parse_body(&bytes, ct),
            }
            .unwrap_or(Value::Null);
            if let Err(e) = server.check_escalation(who, &a, &body).await {
                return e.into_response();
            }
        }
    }
    let answer = match documents(&parts.method, &path, &parts.headers) {
        Some(answer) => answer,
        None => resource(&server, &parts, &path, bytes).await,
    };
    answer.unwrap_or_else(|e| {
        tracing::debug!(method = %parts.method, %path, code = e.code, message = %e.message, "request failed");
        e.into_response()
    })
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v, &[])
}

fn not_found(what: String) -> ApiError {
    ApiError::new(404, "NotFound", what)
}

/// Discovery and OpenAPI documents (GET only); `None` for other paths.
fn documents(method: &Method, path: &str, headers: &HeaderMap) -> Option<Result<Response>> {
    if method != Method::GET {
        return None;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let (["api"] | ["apis"], Some(media)) =
        (segs.as_slice(), discovery::aggregated_media(headers))
    {
        let doc = discovery::aggregated(segs.len() == 1 && segs[0] == "api", media);
        let mut resp = ok(doc);
        let ct =
            format!("application/json;g=apidiscovery.k8s.io;v={media};as=APIGroupDiscoveryList");
        if let Ok(v) = HeaderValue::from_str(&ct) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        return Some(Ok(resp));
    }
    let answer = match segs.as_slice() {
        ["api"] => Ok(ok(discovery::api_versions())),
        ["apis"] => Ok(ok(discovery::api_groups())),
        ["openapi", "v3"] => Ok(ok(openapi::index())),
        ["openapi", "v2"] => {
            let mut resp = (StatusCode::OK, openapi::v2_protobuf()).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            Ok(resp)
        }
        ["openapi", "v3", "api", v] => openapi_document("", v),
        ["openapi", "v3", "apis", g, v] => openapi_document(g, v),
        ["openapi", "v3", ..] => Err(not_found(format!("no OpenAPI document at {path}"))),
        ["api", v] => discovery::resource_list("", v)
            .map(ok)
            .ok_or_else(|| not_found("no such version".into())),
        ["apis", g] => discovery::api_group(g)
            .map(ok)
            .ok_or_else(|| not_found("no such group".into())),
        ["apis", g, v] => discovery::resource_list(g, v)
            .map(ok)
            .ok_or_else(|| not_found("no such group version".into())),
        _ => return None,
    };
    Some(answer)
}

fn openapi_document(group: &str, version: &str) -> Result<Response> {
    if !registry::group_versions().contains(&(group, version)) {
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        return Err(not_found(format!("no OpenAPI document for {gv}")));
    }
    Ok(ok(openapi::document(group, version)))
}

/// One request on a resource path, with what every verb needs to read it and answer.
struct Call<'a> {
    server: &'a Server,
    target: Target,
    headers: &'a HeaderMap,
    query: Query,
    body: Bytes,
    content_type: String,
    /// The client asked for a Table (`kubectl get`), and with which objects in it.
    table: bool,
    /// The client asked for metadata only (PartialObjectMetadata).
    metadata: bool,
    include: String,
    warnings: Vec<String>,
}

impl Call<'_> {
    fn kind(&self) -> &'static KindInfo {
        self.target.kind
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    /// An object answer, as a Table when one was asked for.
    fn respond(&self, code: StatusCode, mut v: Value) -> Response {
        let kind = self.kind();
        if v.get("kind").and_then(Value::as_str) == Some(kind.kind) {
            super::crds::present(kind, &mut v);
        }
        let is_object = v.get("kind").and_then(Value::as_str) == Some(kind.kind);
        if self.table && is_object {
            let meta = json!({"resourceVersion": v["metadata"]["resourceVersion"]});
            let t = table::table(kind, &[v], meta, &self.include, true);
            json_response(code, &t, &self.warnings)
        } else if self.metadata && is_object {
            json_response(code, &table::partial(&v), &self.warnings)
        } else {
            json_response(code, &v, &self.warnings)
        }
    }

    /// `status` on a kind without that subresource is a 404.
    fn check_status(&self) -> Result<()> {
        if self.target.sub.as_deref() == Some("status") && !self.kind().status {
            return Err(not_found(format!(
                "{} has no status subresource",
                self.kind().plural
            )));
        }
        Ok(())
    }

    async fn list(self) -> Result<Response> {
        let (server, t, q) = (self.server, &self.target, &self.query);
        if flag(q, "watch") {
            return watch::watch(server.clone(), t.clone(), q.clone(), self.headers).await;
        }
        let (kvs, rev, cont, remaining) =
            server.list_kvs(t.kind, t.namespace.as_deref(), q).await?;
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
            meta["remainingItemCount"] = json!(remaining);
        }
        let decoded = || -> Vec<Value> {
            kvs.iter()
                .map(|kv| {
                    let mut v = handlers::decode(kv);
                    super::crds::present(t.kind, &mut v);
                    v
                })
                .collect()
        };
        if t.kind.is_custom() && !self.table && !self.metadata {
            let list = json!({"kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version(),
                "metadata": meta, "items": decoded()});
            return Ok(json_response(StatusCode::OK, &list, &self.warnings));
        }
        if self.table {
            let items = decoded();
            return Ok(ok(table::table(t.kind, &items, meta, &self.include, true)));
        }
        if self.metadata {
            let items = decoded();
            return Ok(ok(table::partial_list(&items, meta)));
        }
        // The list is assembled from the stored bytes, without parsing each object, and sent as it is assembled: a
        // large list is never whole in memory a second time.
        let head = format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
            t.kind.kind,
            t.kind.api_version()
        );
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(handlers::list_chunks(head.into_bytes(), kvs)),
        )
            .into_response())
    }

    async fn create(mut self) -> Result<Response> {
        let obj = handlers::parse_object(&self.body, &self.content_type, self.kind())?;
        let v = self
            .server
            .create(&self.target, obj, &self.query, &mut self.warnings)
            .await?;
        Ok(self.respond(StatusCode::CREATED, v))
    }

    async fn get(self) -> Result<Response> {
        let t = &self.target;
        let (v, _) = self
            .server
            .get_object(t.kind, t.namespace.as_deref(), self.name())
            .await?;
        Ok(self.respond(StatusCode::OK, v))
    }

    async fn update(mut self) -> Result<Response> {
        self.check_status()?;
        let obj = handlers::parse_object(&self.body, &self.content_type, self.kind())?;
        let v = self
            .server
            .update(&self.target, obj, &self.query, &mut self.warnings)
            .await?;
        Ok(self.respond(StatusCode::OK, v))
    }

    async fn patch(mut self) -> Result<Response> {
        self.check_status()?;
        let t = &self.target;
        let existed = self
            .server
            .get_object(t.kind, t.namespace.as_deref(), self.name())
            .await
            .is_ok();
        let v = self
            .server
            .patch(
                &self.target,
                &self.body,
                &self.content_type,
                &self.query,
                &mut self.warnings,
            )
            .await?;
        let code = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(self.respond(code, v))
    }

    async fn delete(self) -> Result<Response> {
        let v = self
            .server
            .delete(&self.target, &self.body, &self.query)
            .await?;
        Ok(self.respond(StatusCode::OK, v))
    }

    async fn get_scale(self) -> Result<Response> {
        let t = &self.target;
        let (v, _) = self
            .server
            .get_object(t.kind, t.namespace.as_deref(), self.name())
            .await?;
        Ok(ok(Server::scale_of(t.kind, &v)))
    }

    /// PUT (no content type: a whole Scale) or PATCH of `scale`.
    async fn write_scale(mut self, patch: bool) -> Result<Response> {
        let ct = patch.then_some(self.content_type.as_str());
        let v = self
            .server
            .write_scale(
                &self.target,
                &self.body,
                ct,
                &self.query,
                &mut self.warnings,
            )
            .await?;
        Ok(ok(v))
    }

    async fn bind(self) -> Result<Response> {
        let b = parse_body(&self.body, &self.content_type)?;
        let v = self.server.bind(&self.target, b).await?;
        Ok(json_response(StatusCode::CREATED, &v, &[]))
    }

    async fn evict(self) -> Result<Response> {
        let eviction = body_of(&self.body, &self.content_type, "policy", "Eviction")?;
        let v = self
            .server
            .evict(&self.target, eviction, &self.query)
            .await?;
        Ok(json_response(StatusCode::CREATED, &v, &[]))
    }

    /// A TokenRequest (JSON or protobuf).
    async fn token(self, who: Option<&Identity>) -> Result<Response> {
        let request = body_of(
            &self.body,
            &self.content_type,
            "authentication.k8s.io",
            "TokenRequest",
        )?;
        let ns = self.target.namespace.as_deref().unwrap_or("default");
        let v = self
            .server
            .token_request(who, ns, self.name(), &request)
            .await?;
        Ok(json_response(StatusCode::CREATED, &v, &[]))
    }

    async fn finalize(mut self) -> Result<Response> {
        let obj = handlers::parse_object(&self.body, &self.content_type, self.kind())?;
        let v = self
            .server
            .finalize_namespace(&self.target, obj, &self.query, &mut self.warnings)
            .await?;
        Ok(self.respond(StatusCode::OK, v))
    }

    async fn log(self) -> Result<Response> {
        let ns = self.target.namespace.as_deref().unwrap_or("default");
        self.server.pod_log(ns, self.name(), &self.query).await
    }
}

/// The table of verbs on resource paths.
async fn resource(server: &Server, parts: &Parts, path: &str, body: Bytes) -> Result<Response> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["apis", super::metrics::GROUP, super::metrics::VERSION, rest @ ..] = segs.as_slice() {
        if parts.method != Method::GET {
            return Err(ApiError::method_not_allowed(path));
        }
        let req = super::metrics::Request::parse(rest)
            .ok_or_else(|| not_found(format!("no metrics at {path}")))?;
        return Ok(ok(server.metrics(req, &query_of(&parts.uri)).await?));
    }
    let target = handlers::parse_path(path)?;
    let headers = &parts.headers;
    let mut query = query_of(&parts.uri);
    // A write without a fieldManager is recorded under its client's name, the User-Agent up to its first '/'
    // (`kubectl`), as Kubernetes does; apply patches must name theirs.
    let apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/apply-patch"));
    if parts.method != Method::GET && !apply && !query.contains_key("fieldManager") {
        if let Some(agent) = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|a| !a.is_empty())
        {
            query.insert("fieldManager".into(), agent.chars().take(128).collect());
        }
    }
    let call = Call {
        server,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        table: table::wants_table(headers),
        metadata: table::wants_metadata(headers),
        include: query
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into()),
        headers,
        query,
        body,
        warnings: super::crds::deprecation(target.kind).into_iter().collect(),
        target,
    };
    let kind = call.kind();
    let sub = call.target.sub.clone();
    let named = call.target.name.is_some();
    match (&parts.method, named, sub.as_deref()) {
        (&Method::GET, false, None) => call.list().await,
        (&Method::POST, false, None) => call.create().await,
        (&Method::DELETE, false, None) => Ok(ok(server
            .delete_collection(&call.target, &call.body, &call.query)
            .await?)),
        (&Method::GET, true, None | Some("status")) => call.get().await,
        (&Method::PUT, true, None | Some("status")) => call.update().await,
        (&Method::PATCH, true, None | Some("status")) => call.patch().await,
        (&Method::DELETE, true, None) => call.delete().await,
        (&Method::GET, true, Some("scale")) if kind.scale => call.get_scale().await,
        (&Method::PUT, true, Some("scale")) if kind.scale => call.write_scale(false).await,
        (&Method::PATCH, true, Some("scale")) if kind.scale => call.write_scale(true).await,
        (&Method::POST, true, Some("binding")) if kind.kind == "Pod" => call.bind().await,
        (&Method::POST, true, Some("eviction")) if kind.kind == "Pod" => call.evict().await,
        (&Method::POST, true, Some("token")) if kind.kind == "ServiceAccount" => {
            call.token(parts.extensions.get::<Identity>()).await
        }
        (&Method::PUT, true, Some("finalize")) if kind.kind == "Namespace" => call.finalize().await,
        (&Method::GET, true, Some("log")) if kind.kind == "Pod" => call.log().await,
        (m, _, s) => Err(ApiError::method_not_allowed(&format!(
            "{m} {}{}",
            kind.plural,
            s.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}
