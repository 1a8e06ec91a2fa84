//! The ServiceAccount tokens of this node's pods (the kubelet's token manager): each `serviceAccountToken` source of
//! a projected volume gets a token the node asks the API server for (a TokenRequest bound to the pod), kept and
//! handed out again until 80% of its life (or 24 hours) has passed, then renewed; tokens of pods that are gone are
//! forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ConfigError, Shared};
use crate::api::core::{Pod, ServiceAccountTokenProjection};

/// A token and when it was issued and expires.
#[derive(Debug, Clone)]
struct Kept {
    token: String,
    issued: Instant,
    lifetime: Duration,
}

impl Kept {
    /// Whether it is time for a new one: past 80% of its life, or older than a day.
    fn due(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.issued);
        age >= self.lifetime.mul_f64(0.8) || age >= Duration::from_secs(24 * 3600)
    }
}

/// The tokens this node holds, by pod uid, audience and requested lifetime.
#[derive(Debug, Default)]
pub struct PodTokens {
    kept: Mutex<HashMap<String, Kept>>,
}

impl PodTokens {
    /// The token for `source` (a `serviceAccountToken` projection) of `pod`, asked for when none is kept or the
    /// kept one is due for renewal.
    pub async fn token_for(
        &self,
        shared: &Shared,
        pod: &Pod,
        source: &ServiceAccountTokenProjection,
    ) -> Result<String, ConfigError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let audience = source.audience.clone().unwrap_or_default();
        let seconds = source.expiration_seconds.unwrap_or(3600);
        let key = format!("{uid}/{audience}/{seconds}");
        self.get_or_renew(&key, Instant::now(), || async {
            request(shared, pod, &audience, seconds).await
        })
        .await
    }

    async fn get_or_renew<F, Fut>(
        &self,
        key: &str,
        now: Instant,
        fetch: F,
    ) -> Result<String, ConfigError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Duration), ConfigError>>,
    {
        let kept = self.lock().get(key).cloned();
        if let Some(k) = kept.as_ref().filter(|k| !k.due(now)) {
            return Ok(k.token.clone());
        }
        match fetch().await {
            Ok((token, lifetime)) => {
                self.lock().insert(
                    key.to_string(),
                    Kept {
                        token: token.clone(),
                        issued: now,
                        lifetime,
                    },
                );
                Ok(token)
            }
            // A renewal that fails keeps the old token while it is still valid.
            Err(e) => match kept.filter(|k| now.saturating_duration_since(k.issued) < k.lifetime) {
                Some(k) => {
                    tracing::warn!(
                        "renewing a service account token failed, keeping the current one: {e}"
                    );
                    Ok(k.token)
                }
                None => Err(e),
            },
        }
    }

    /// Forgets the tokens of pod `uid` (it is gone).
    pub fn forget(&self, uid: &str) {
        let prefix = format!("{uid}/");
        self.lock().retain(|k, _| !k.starts_with(&prefix));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks the API server for a token of the pod's ServiceAccount, bound to the pod; returns it and its lifetime.
async fn request(
    shared: &Shared,
    pod: &Pod,
    audience: &str,
    seconds: i64,
) -> Result<(String, Duration), ConfigError> {
    let ns = pod.metadata.namespace();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let mut spec = json!({"expirationSeconds": seconds, "boundObjectRef": {
        "apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name(),
        "uid": pod.metadata.uid.clone().unwrap_or_default()}});
    if !audience.is_empty() {
        spec["audiences"] = json!([audience]);
    }
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let path = format!(
        "{}/namespaces/{ns}/serviceaccounts/{sa}/token",
        concat!("/", "api/v1")
    );
    let answer = shared
        .client
        .request(
            reqwest::Method::POST,
            &path,
            Some((
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            )),
            None,
        )
        .await?;
    let token = answer["status"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ConfigError::Invalid("the TokenRequest answer holds no token".into()))?
        .to_string();
    let lifetime = answer["status"]["expirationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|exp| {
            (exp.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or(Duration::from_secs(seconds.max(0) as u64));
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_kept_until_most_of_their_life_has_passed() {
        let tokens = PodTokens::default();
        let t0 = Instant::now();
        let life = Duration::from_secs(100);
        let one = tokens
            .get_or_renew("u/a/600", t0, || async { Ok(("one".into(), life)) })
            .await
            .unwrap();
        assert_eq!(one, "one");
        // At 79% the kept token is handed out; at 80% a new one is asked for.
        let kept = tokens
            .get_or_renew("u/a/600", t0 + Duration::from_secs(79), || async {
                Ok(("two".into(), life))
            })
            .await
            .unwrap();
        assert_eq!(kept, "one");
        let renewed = tokens
            .get_or_renew("u/a/600", t0 + Duration::from_secs(80), || async {
                Ok(("two".into(), life))
            })
            .await
            .unwrap();
        assert_eq!(renewed, "two");
        // A failed renewal keeps a token that is still valid, and fails once it has expired.
        let t1 = t0 + Duration::from_secs(80);
        let failing = || async { Err(ConfigError::Invalid("down".into())) };
        let still = tokens
            .get_or_renew("u/a/600", t1 + Duration::from_secs(90), failing)
            .await
            .unwrap();
        assert_eq!(still, "two");
        assert!(tokens
            .get_or_renew("u/a/600", t1 + Duration::from_secs(101), failing)
            .await
            .is_err());
        tokens.forget("u");
        assert!(tokens.lock().is_empty());
    }
}
