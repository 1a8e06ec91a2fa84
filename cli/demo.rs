//! `capstan demo-app`: the small HTTP server the examples and tests run (on the process runtime `capstan` resolves
//! to this binary). It answers `/` with its VERSION and MESSAGE, `/healthz` for probes, and can be told to turn
//! unhealthy (`/fail`), healthy again (`/recover`) or to exit with a code (`/exit?code=N`). `/` also names the
//! address the request came from (`client`), which shows what NAT did on the way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

#[derive(Clone)]
struct App {
    healthy: Arc<AtomicBool>,
    version: String,
    message: String,
}

pub async fn run(listen: SocketAddr) -> Result<()> {
    let app = App {
        healthy: Arc::new(AtomicBool::new(true)),
        version: std::env::var("VERSION").unwrap_or_else(|_| "v1".into()),
        message: std::env::var("MESSAGE").unwrap_or_else(|_| "Hello from Capstan".into()),
    };
    let router = Router::new()
        .route(
            "/",
            get(
                |State(a): State<App>, ConnectInfo(client): ConnectInfo<SocketAddr>| async move {
                    Json(json!({"version": a.version, "message": a.message,
                    "pod": std::env::var("POD_NAME").ok(), "podIP": std::env::var("POD_IP").ok(),
                    "pid": std::process::id(), "client": client.ip().to_string()}))
                },
            ),
        )
        .route(
            "/healthz",
            get(|State(a): State<App>| async move {
                if a.healthy.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "failing")
                }
            }),
        )
        .route(
            "/fail",
            get(|State(a): State<App>| async move {
                a.healthy.store(false, Ordering::SeqCst);
                "now failing /healthz"
            }),
        )
        .route(
            "/recover",
            get(|State(a): State<App>| async move {
                a.healthy.store(true, Ordering::SeqCst);
                "healthy again"
            }),
        )
        .route(
            "/exit",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let code: i32 = q.get("code").and_then(|c| c.parse().ok()).unwrap_or(1);
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        std::process::exit(code);
                    });
                    format!("exiting with {code}")
                },
            ),
        )
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "demo app listening");
    eprintln!("demo-app: listening on http://{}", listener.local_addr()?);
    // SIGTERM (a pod being stopped) ends the server cleanly, like a well-behaved workload: it keeps serving for
    // SHUTDOWN_DELAY_SECONDS (default 1) while the endpoints and proxies stop sending it traffic, then finishes what
    // it has in flight.
    let delay: f64 = std::env::var("SHUTDOWN_DELAY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        crate::commands::terminated().await;
        eprintln!("demo-app: terminating; serving {delay} s more while traffic moves away");
        tokio::time::sleep(std::time::Duration::from_secs_f64(delay.max(0.0))).await;
    })
    .await?;
    eprintln!("demo-app: stopped");
    Ok(())
}
