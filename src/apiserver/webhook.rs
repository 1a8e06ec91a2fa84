//! Git push webhooks (`POST /hooks/git`): which repository a GitHub, GitLab, Gitea or plain payload is about, and
//! whether its signature is right. GitHub and Gitea sign the body with HMAC-SHA256 (`X-Hub-Signature-256:
//! sha256=<hex>`, `X-Gitea-Signature: <hex>`); GitLab sends the secret itself (`X-Gitlab-Token`); a plain payload
//! uses `X-Capstan-Signature: sha256=<hex>`. The control plane makes a secret at first start; without one, payloads
//! are refused unless the server was told to take them unsigned.

use serde_json::Value;

/// Why a webhook payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Gitlab-Token does not match the webhook secret")]
    GitlabToken,
    #[error("the payload is not signed (X-Hub-Signature-256, X-Gitea-Signature, X-Gitlab-Token or X-Capstan-Signature)")]
    Unsigned,
    #[error("the signature is not hex")]
    NotHex,
    #[error("the signature does not match the webhook secret")]
    Mismatch,
}

/// Checks a payload against `secret`; `header` looks a request header up by (lower-case) name.
pub fn verify(
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    secret: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let Some(secret) = secret else { return Ok(()) };
    if let Some(token) = header("x-gitlab-token") {
        // Compared through HMACs of both, which ring checks in constant time.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"capstan-token-compare");
        let expected = ring::hmac::sign(&key, secret);
        return if ring::hmac::verify(&key, token.as_bytes(), expected.as_ref()).is_ok() {
            Ok(())
        } else {
            Err(SignatureError::GitlabToken)
        };
    }
    let sig = header("x-hub-signature-256")
        .or_else(|| header("x-capstan-signature"))
        .or_else(|| header("x-gitea-signature"))
        .ok_or(SignatureError::Unsigned)?;
    let hex = sig.trim().trim_start_matches("sha256=");
    let Some(given) = decode_hex(hex) else {
        return Err(SignatureError::NotHex);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &given).map_err(|_| SignatureError::Mismatch)
}

/// The signature a sender computes (for tests and for users scripting plain webhooks).
pub fn sign(body: &[u8], secret: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    format!(
        "sha256={}",
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Every URL a payload names its repository by.
pub fn repo_urls(payload: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in [
        "/repository/clone_url",
        "/repository/ssh_url",
        "/repository/html_url",
        "/repository/git_http_url",
        "/repository/git_ssh_url",
        "/project/git_http_url",
        "/project/git_ssh_url",
        "/project/web_url",
        "/repoURL",
    ] {
        if let Some(u) = payload.pointer(p).and_then(Value::as_str) {
            out.push(u.to_string());
        }
    }
    out
}

/// A URL compared loosely: no trailing slash or `.git`, case-insensitive host part.
pub fn normalize(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_and_payloads() {
        let body = br#"{"repository": {"clone_url": "https://example.com/shop.git"}}"#;
        let sig = sign(body, b"s3cret");
        let h = |name: &str| (name == "x-hub-signature-256").then(|| sig.clone());
        assert!(verify(h, body, Some(b"s3cret")).is_ok());
        assert!(verify(h, body, Some(b"other")).is_err());
        assert!(
            verify(|_| None, body, Some(b"s3cret")).is_err(),
            "unsigned is refused when a secret is set"
        );
        assert!(verify(|_| None, body, None).is_ok());
        let gl = |name: &str| (name == "x-gitlab-token").then(|| "s3cret".to_string());
        assert!(verify(gl, body, Some(b"s3cret")).is_ok());
        let urls = repo_urls(&serde_json::from_slice(body).unwrap());
        assert_eq!(normalize(&urls[0]), "https://example.com/shop");
        assert_eq!(repo_urls(&json!({"project": {"git_http_url": "u"}})), ["u"]);
    }
}
