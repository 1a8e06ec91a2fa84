//! The agent's own HTTP endpoint (the kubelet's port 10250 role): the API server asks it for container logs
//! (`/containerLogs/{namespace}/{pod}/{container}`, with the `pods/log` query options) and streams the answer to
//! kubectl, and to run commands in containers (`/exec/...`). It speaks HTTPS only, with a serving certificate the
//! cluster CA signed, and accepts only the API server's client certificate (`kube-apiserver-kubelet-client`, signed
//! by the same CA). It reads what the pod workers wrote; it changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::logs::{self, Options};
use super::pod::PodState;
use super::Shared;

pub(super) fn error(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
}

/// Why `pods/log` options were refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLogOption {
    #[error("at most one of sinceTime or sinceSeconds may be specified")]
    TwoSinces,
    /// A field's value, named with what is wrong with it.
    #[error("{field}: {detail}")]
    Field { field: String, detail: String },
}

fn bad(field: &str, detail: impl Into<String>) -> BadLogOption {
    BadLogOption::Field {
        field: field.to_string(),
        detail: detail.into(),
    }
}

/// Parses the `pods/log` options Kubernetes defines.
pub fn options(q: &HashMap<String, String>) -> Result<(Options, bool, bool), BadLogOption> {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let num = |k: &str| -> Result<Option<i64>, BadLogOption> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(k, format!("{v:?} is not an integer")))
            })
            .transpose()
    };
    let since = match (num("sinceSeconds")?, q.get("sinceTime")) {
        (Some(_), Some(_)) => return Err(BadLogOption::TwoSinces),
        (Some(s), None) if s < 1 => return Err(bad("sinceSeconds", "must be greater than 0")),
        (Some(s), None) => Some(chrono::Utc::now() - chrono::Duration::seconds(s)),
        (None, Some(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| bad("sinceTime", format!("{t:?} is not an RFC 3339 time")))?
                .with_timezone(&chrono::Utc),
        ),
        (None, None) => None,
    };
    let tail = num("tailLines")?;
    if tail.is_some_and(|t| t < 0) {
        return Err(bad("tailLines", "must be greater than or equal to 0"));
    }
    let limit = num("limitBytes")?;
    if limit.is_some_and(|l| l < 1) {
        return Err(bad("limitBytes", "must be greater than 0"));
    }
    Ok((
        Options {
            tail_lines: tail.map(|t| t as usize),
            since,
            timestamps: flag("timestamps"),
            limit_bytes: limit.map(|l| l as usize),
        },
        flag("follow"),
        flag("previous"),
    ))
}

/// A pod this node does not run (a 404).
#[derive(Debug, thiserror::Error)]
#[error("pod \"{pod}\" not found on node {node}")]
pub struct NotOnNode {
    pub pod: String,
    pub node: String,
}

/// The state directory of pod `ns/pod` on this node.
pub(super) fn pod_dir(
    shared: &Shared,
    ns: &str,
    pod: &str,
) -> Result<std::path::PathBuf, NotOnNode> {
    let p = shared.pods.get(ns, pod).ok_or_else(|| NotOnNode {
        pod: pod.to_string(),
        node: shared.config.node_name.clone(),
    })?;
    Ok(shared
        .pods_dir
        .join(p.metadata.uid.as_deref().unwrap_or("")))
}

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (opts, follow, previous) = match options(&q) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let dir = match pod_dir(&shared, &ns, &pod) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let saved = PodState::load(&dir).and_then(|s| s.containers.get(&container).cloned());
    let Some(saved) = saved.filter(|s| s.started_once) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        );
    };
    let instance = if previous {
        if saved.restart_count == 0 {
            return error(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            );
        }
        saved.restart_count - 1
    } else {
        saved.restart_count
    };
    let path = logs::log_path(&dir, &container, instance);
    let exit_file = dir
        .join("run")
        .join(&container)
        .join(instance.to_string())
        .join("exit.json");
    let (first, offset) = match logs::read(&path, &opts) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading logs: {e}"),
            )
        }
    };
    let running = saved
        .running
        .as_ref()
        .is_some_and(|r| r.restart == instance);
    if !follow || previous || !running {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            first,
        )
            .into_response();
    }
    // Follow: new complete lines as they are written, until the instance exits (or the pod goes away).
    let follow_opts = Options {
        tail_lines: None,
        limit_bytes: None,
        ..opts
    };
    let stream = futures::stream::unfold((Some(first), offset), move |(first, mut offset)| {
        let path = path.clone();
        let exit_file = exit_file.clone();
        let opts = follow_opts.clone();
        async move {
            if let Some(f) = first {
                return Some((Ok::<_, std::io::Error>(f), (None, offset)));
            }
            loop {
                let exited = exit_file.exists() || !path.exists();
                let (bytes, next) = logs::read_from(&path, offset, &opts).ok()?;
                offset = next;
                if !bytes.is_empty() {
                    return Some((Ok(bytes), (None, offset)));
                }
                if exited {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Refuses every request but the API server's (its client certificate's CN; TLS already checked the CA).
async fn only_the_api_server(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cn = req
        .extensions()
        .get::<Arc<axum_server::tls::TlsInfo>>()
        .and_then(|t| t.peer_certificates.first())
        .and_then(|der| super::credentials::common_name(der));
    if cn.as_deref() == Some(crate::api::tokens::AGENT_CLIENT_USER) {
        next.run(req).await
    } else {
        error(
            StatusCode::FORBIDDEN,
            format!(
                "only the API server ({}) may call a node agent",
                crate::api::tokens::AGENT_CLIENT_USER
            ),
        )
    }
}

/// `/stats`: the latest usage of the node and its containers ([`super::stats`]).
async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.stats.summary()).into_response()
}

/// Serves the agent endpoint over TLS on `listener` until aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    shared: Arc<Shared>,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", get(super::exec::handler))
        .route("/stats", get(stats))
        .route("/portForward/{ns}/{pod}", get(super::portforward::handler))
        .layer(axum::middleware::from_fn(only_the_api_server))
        .with_state(shared);
    let served = match listener.into_std() {
        Ok(l) => match axum_server::from_tcp_rustls(l, tls) {
            Ok(s) => s.serve(app.into_make_service()).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        tracing::error!("node agent endpoint stopped: {e}");
    }
}
