//! The control plane's own components reach their API server in process: each request is handed to the server's
//! router on the server's runtime, carrying the component's client certificate as the TLS layer would have presented
//! it, and the answer's body comes back through a channel (a watch streams as over the network). Authentication,
//! authorization, admission, fairness and audit are the same as for a request from outside; what is skipped is the
//! TLS encryption on both ends, the loopback TCP and HTTP/1.1 framing - about a tenth of the server's CPU when the
//! scheduler binds thousands of pods and the controller manager's informers follow them.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tower::ServiceExt;

use crate::client::transport::{Request, Response, Transport};

/// How many chunks of one answer may wait for its reader.
const CHUNKS: usize = 16;

/// Requests handed to an API server's router in this process, as the holder of one client certificate.
pub struct Loopback {
    router: axum::Router,
    /// The runtime the API server runs on: its handlers run there, not on the calling component's.
    server_runtime: tokio::runtime::Handle,
    /// What the TLS layer would tell the router about the caller: its client certificate.
    tls: Arc<axum_server::tls::TlsInfo>,
}

impl Loopback {
    /// `certificate` is the caller's client certificate (DER), as it would present it over TLS.
    pub fn new(
        router: axum::Router,
        server_runtime: tokio::runtime::Handle,
        certificate: Vec<u8>,
    ) -> Self {
        let mut tls = axum_server::tls::TlsInfo::default();
        tls.peer_certificates = vec![certificate];
        Loopback {
            router,
            server_runtime,
            tls: Arc::new(tls),
        }
    }
}

#[async_trait]
impl Transport for Loopback {
    async fn call(&self, request: Request) -> Result<Response, String> {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(self.tls.clone());
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))));
        let router = self.router.clone();
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(CHUNKS);
        self.server_runtime.spawn(async move {
            let Ok(answer) = router.oneshot(request).await;
            let (parts, body) = answer.into_parts();
            if head_tx.send(parts).is_err() {
                return;
            }
            let mut body = body.into_data_stream();
            loop {
                // A reader that went away (a watch closed) ends the answer at once, idle or not.
                let chunk = tokio::select! {
                    c = body.next() => c,
                    _ = tx.closed() => return,
                };
                let Some(chunk) = chunk else { return };
                if tx.send(chunk.map_err(std::io::Error::other)).await.is_err() {
                    return;
                }
            }
        });
        let parts = head_rx
            .await
            .map_err(|_| "the API server dropped the request".to_string())?;
        let body = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(http::Response::from_parts(
            parts,
            reqwest::Body::wrap_stream(body),
        ))
    }
}
