//! A real git smart-HTTP server for tests: `git http-backend` (the CGI program that ships with git) behind a small
//! axum front on 127.0.0.1 that asks for HTTP basic authentication, over plain HTTP or TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;

struct Backend {
    root: PathBuf,
    user: String,
    password: String,
}

/// The running server; it stops when dropped.
pub struct GitHttp {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`; repositories are under it by their path in the root.
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

impl GitHttp {
    /// Serves the bare repositories under `root`, to `user`/`password` only; with `tls` (certificate and key PEM),
    /// over https.
    pub fn start(
        root: &Path,
        user: &str,
        password: &str,
        tls: Option<(String, String)>,
    ) -> GitHttp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = Arc::new(Backend {
            root: root.to_path_buf(),
            user: user.into(),
            password: password.into(),
        });
        let app = axum::Router::new().fallback(cgi).with_state(backend);
        let scheme = if tls.is_some() { "https" } else { "http" };
        runtime.spawn(async move {
            match tls {
                None => {
                    let l = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(l, app).await.unwrap();
                }
                Some((cert, key)) => {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                        cert.into_bytes(),
                        key.into_bytes(),
                    )
                    .await
                    .unwrap();
                    axum_server::tls_rustls::from_tcp_rustls(listener, config)
                        .unwrap()
                        .serve(app.into_make_service())
                        .await
                        .unwrap();
                }
            }
        });
        GitHttp {
            url: format!("{scheme}://127.0.0.1:{port}"),
            _runtime: runtime,
        }
    }
}

async fn cgi(State(b): State<Arc<Backend>>, req: Request) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.user, b.password))
    );
    if req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        let mut r = Response::new(Body::from("authentication required\n"));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return r;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &b.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", &b.user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("git http-backend");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&body).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap().stdout;
    // CGI output: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((at, sep)) = split else {
        let mut r = Response::new(Body::from("bad CGI output"));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return r;
    };
    let head = String::from_utf8_lossy(&out[..at]).to_string();
    let mut r = Response::new(Body::from(out[at + sep..].to_vec()));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse().ok());
            *r.status_mut() = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}
