//! `POST /hooks/git`: a git host tells Capstan a repository changed. The payload's repository is matched against
//! every Application's `repoURL`, and each match is asked to fetch and sync now (annotation `capstan.io/refresh`).
//! When the Secret `kube-system/capstan-webhook` (key `secret`) exists, payloads must be signed with it; a wrong or
//! missing signature is refused with 401 and triggers nothing. This route needs no bearer token: git hosts do not
//! have one.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::{Query, Target};
use super::webhook;
use super::{json_response, Server};
use crate::api::registry;

impl Server {
    pub async fn git_webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<Response> {
        let secrets = registry::lookup("secrets").expect("secrets");
        let secret = match self
            .get_object(secrets, Some("kube-system"), "capstan-webhook")
            .await
        {
            Ok((s, _)) => {
                let b64 = s["data"]["secret"].as_str().unwrap_or("");
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| {
                            ApiError::new(
                                500,
                                "InternalError",
                                "secret kube-system/capstan-webhook: data.secret is not base64",
                            )
                        })?,
                )
            }
            Err(e) if e.code == 404 && self.allow_unsigned_webhooks => None,
            Err(e) if e.code == 404 => {
                return Err(ApiError::new(
                    401,
                    "Unauthorized",
                    "webhook refused: no webhook secret is configured (the Secret kube-system/capstan-webhook); \
                     payloads must be signed with it, or the server started with --allow-unsigned-webhooks",
                ))
            }
            Err(e) => return Err(e),
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        if let Err(why) = webhook::verify(header, body, secret.as_deref()) {
            tracing::warn!("webhook refused: {why}");
            return Err(ApiError::new(
                401,
                "Unauthorized",
                format!("webhook refused: {why}"),
            ));
        }
        let payload: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("webhook payload is not JSON: {e}")))?;
        let urls: Vec<String> = webhook::repo_urls(&payload)
            .iter()
            .map(|u| webhook::normalize(u))
            .collect();
        if urls.is_empty() {
            return Err(ApiError::bad_request(
                "the webhook payload names no repository (repository.clone_url, project.git_http_url or repoURL)",
            ));
        }
        let apps = registry::lookup("applications").expect("applications");
        let (items, _, _, _) = self.list_objects(apps, None, &Query::new()).await?;
        // Nanoseconds, so two pushes within a second are two refreshes.
        let when = crate::sys::clock::utc_now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut refreshed = Vec::new();
        for app in items {
            let url = webhook::normalize(app["spec"]["source"]["repoURL"].as_str().unwrap_or(""));
            if !urls.contains(&url) {
                continue;
            }
            let ns = app["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = app["metadata"]["name"].as_str().unwrap_or("").to_string();
            let t = Target {
                kind: apps,
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                sub: None,
            };
            let patch = json!({"metadata": {"annotations": {"capstan.io/refresh": format!("webhook {when}")}}});
            self.patch(
                &t,
                patch.to_string().as_bytes(),
                "application/merge-patch+json",
                &Query::new(),
                &mut Vec::new(),
            )
            .await?;
            refreshed.push(format!("{ns}/{name}"));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"refreshed": refreshed}),
            &[],
        ))
    }
}
