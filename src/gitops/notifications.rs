//! Notifications: what happens to an app is told to whoever asked - a Kubernetes Event on the Application for every
//! transition (synced, failed, healthy, degraded, rolled-back; a health change names the objects that caused it),
//! and a signed JSON POST to each `spec.notifications` receiver that wants that event. Posts run in the background
//! with retries and backoff: a receiver that is down never slows a sync.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::gitops::Application;
use crate::client::events::Recorder;
use crate::client::Client;

/// The header carrying the HMAC-SHA256 of the body (hex), keyed with the receiver's secret.
pub const SIGNATURE_HEADER: &str = "X-Capstan-Signature";
/// Attempts per post (backoff 0.5 s, 1 s, 2 s, ... between them).
const ATTEMPTS: u32 = 5;

/// What happened, as receivers and Events name it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    Synced,
    Failed,
    Healthy,
    Degraded,
    RolledBack,
}

impl Transition {
    pub fn name(self) -> &'static str {
        match self {
            Transition::Synced => "synced",
            Transition::Failed => "failed",
            Transition::Healthy => "healthy",
            Transition::Degraded => "degraded",
            Transition::RolledBack => "rolled-back",
        }
    }
    fn reason(self) -> &'static str {
        match self {
            Transition::Synced => "Synced",
            Transition::Failed => "SyncFailed",
            Transition::Healthy => "Healthy",
            Transition::Degraded => "Degraded",
            Transition::RolledBack => "RolledBack",
        }
    }
    fn warning(self) -> bool {
        matches!(self, Transition::Failed | Transition::Degraded)
    }
}

/// `sha256=<hex>` of `body` keyed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Tells about `t`: an Event on the Application, and a post to every receiver that wants it. `details` goes into the
/// post (revision, author, message, changes, the objects that caused a health change).
pub fn tell(client: &Client, app: &Application, t: Transition, message: &str, details: Value) {
    let recorder = Recorder::new(client, "capstan-gitops");
    let text = if message.is_empty() {
        format!("{} {}", app.metadata.name(), t.name())
    } else {
        message.to_string()
    };
    if t.warning() {
        recorder.warning(app, t.reason(), text.clone());
    } else {
        recorder.normal(app, t.reason(), text.clone());
    }
    let receivers = app
        .spec
        .as_ref()
        .and_then(|s| s.notifications.clone())
        .unwrap_or_default();
    let ns = app.metadata.namespace().to_string();
    let name = app.metadata.name().to_string();
    for r in receivers {
        if !r.events.iter().any(|e| e == t.name()) {
            continue;
        }
        let mut body = json!({"application": name, "namespace": ns, "event": t.name(), "message": text,
            "time": crate::api::meta::format_time(&crate::api::meta::now())});
        if let (Some(b), Some(d)) = (body.as_object_mut(), details.as_object()) {
            for (k, v) in d {
                b.insert(k.clone(), v.clone());
            }
        }
        if r.format.as_deref() == Some("slack") {
            body = json!({"text": format!("{ns}/{name}: {} - {text}", t.name())});
        }
        let client = client.clone();
        let ns = ns.clone();
        tokio::spawn(async move { post(&client, &ns, &r, body).await });
    }
}

async fn post(client: &Client, ns: &str, r: &crate::api::gitops::Notification, body: Value) {
    let bytes = body.to_string().into_bytes();
    let secret = match &r.secret_ref {
        Some(s) => {
            let secrets = crate::api::registry::lookup("secrets").expect("a built-in kind");
            match client.get(secrets, Some(ns), &s.name).await {
                Ok(secret) => crate::api::tokens::secret_data(&secret, "secret"),
                Err(e) => {
                    tracing::warn!(url = %r.url, "notification secret {}: {e}", s.name);
                    return;
                }
            }
        }
        None => None,
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("notifications: {e}");
            return;
        }
    };
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let mut req = http
            .post(&r.url)
            .header("Content-Type", "application/json")
            .body(bytes.clone());
        if let Some(s) = &secret {
            req = req.header(SIGNATURE_HEADER, sign(s.as_bytes(), &bytes));
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => {
                tracing::debug!(url = %r.url, attempt, status = %resp.status(), "notification refused")
            }
            Err(e) => tracing::debug!(url = %r.url, attempt, "notification failed: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    tracing::warn!(url = %r.url, "notification given up after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
