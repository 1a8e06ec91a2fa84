//! How a [`Client`](super::Client)'s requests reach the API server when not over the network: an in-process
//! [`Transport`] is handed each request and answers it. The deterministic simulation uses one as its network - it
//! passes requests to the API server's router in the same process, and may delay one, refuse it (a partition), or
//! cut a watch's answer short. In a running server the control plane's own components (controller manager,
//! scheduler, GitOps) reach the API server they run in through one (`daemons::loopback`); every other client goes
//! over HTTPS.

use async_trait::async_trait;

/// A request as sent in process: the path and query in its URI, the client's headers (bearer token,
/// impersonation, content type), and its body.
pub type Request = http::Request<reqwest::Body>;
/// The answer: status, headers and a body that may stream (watches).
pub type Response = http::Response<reqwest::Body>;

#[async_trait]
pub trait Transport: Send + Sync {
    /// Delivers `request` and returns the answer, or why it could not be delivered (the server cannot be
    /// reached: nothing was done).
    async fn call(&self, request: Request) -> Result<Response, String>;
}
