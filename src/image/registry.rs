//! Pulling images from a registry (the OCI distribution API): the [`Registry`] trait the containerd runtime pulls
//! through, and [`HttpRegistry`], which speaks the API over HTTP(S) with anonymous bearer tokens. It fetches the
//! manifest (picking this machine's platform from an index), the config and the layers, checks every digest, and
//! hands back a [`Loaded`] set of blobs - the same shape an imported archive has. Like Docker, registries on
//! `localhost` and 127.0.0.0/8 are spoken to over plain HTTP. Credentials come from a pod's `imagePullSecrets`
//! (Docker config secrets, [`credentials_from_secret`]) and answer basic or bearer-token challenges.

use async_trait::async_trait;
use serde_json::Value;

use super::{is_index, pick_platform, ImageError, Loaded};

#[async_trait]
pub trait Registry: Send + Sync {
    /// Fetches `reference` (normalized, `host/repository:tag` or `@sha256:...`) for this machine's platform, with
    /// `credentials` when the registry asks for them.
    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Loaded, ImageError>;
}

/// A registry login.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The registry host a Docker config key names (`https://index.docker.io/v1/` is `docker.io`).
fn config_host(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

/// The logins in a `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`: `{"auths": {HOST: ...}}`) or
/// `kubernetes.io/dockercfg` (`.dockercfg`: `{HOST: ...}`) Secret, by registry host; each entry has `username` and
/// `password`, or `auth` (base64 of `username:password`).
pub fn credentials_from_secret(secret: &crate::api::core::Secret) -> Vec<(String, Credentials)> {
    use base64::Engine;
    let decode = |key: &str| -> Option<Value> {
        let b64 = secret.data.as_ref()?.get(key)?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        serde_json::from_slice(&raw).ok()
    };
    let entries = match decode(".dockerconfigjson") {
        Some(v) => v["auths"].clone(),
        None => decode(".dockercfg").unwrap_or_default(),
    };
    let mut out = Vec::new();
    for (key, e) in entries.as_object().into_iter().flatten() {
        let (mut username, mut password) = (
            e["username"].as_str().unwrap_or("").to_string(),
            e["password"].as_str().unwrap_or("").to_string(),
        );
        if username.is_empty() {
            let pair = e["auth"]
                .as_str()
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                .and_then(|a| String::from_utf8(a).ok())
                .unwrap_or_default();
            if let Some((u, p)) = pair.split_once(':') {
                (username, password) = (u.to_string(), p.to_string());
            }
        }
        if !username.is_empty() {
            out.push((config_host(key), Credentials { username, password }));
        }
    }
    out
}

/// The login for the registry of `reference` (normalized) among `logins`.
pub fn credentials_for<'a>(
    reference: &str,
    logins: &'a [(String, Credentials)],
) -> Option<&'a Credentials> {
    let host = reference.split('/').next().unwrap_or("");
    logins.iter().find(|(h, _)| h == host).map(|(_, c)| c)
}

/// How requests to a registry authenticate, as learned from its challenge.
#[derive(PartialEq)]
enum Auth {
    Anonymous,
    Bearer(String),
    Basic,
}

/// A registry client over HTTP.
#[derive(Clone)]
pub struct HttpRegistry {
    client: reqwest::Client,
}

impl Default for HttpRegistry {
    fn default() -> Self {
        crate::sys::init_crypto();
        // A registry that stops answering must fail the pull (and let it be retried), not hold it forever: the
        // runtime pulls one image at a time.
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        HttpRegistry { client }
    }
}

/// `host/repository` and the tag or digest of a normalized reference.
fn split(reference: &str) -> Result<(String, String, String), ImageError> {
    let bad = |why: &str| ImageError::Reference(reference.to_string(), why.to_string());
    let (name, object) = match reference.split_once('@') {
        Some((n, d)) => (n, d.to_string()),
        None => match reference.rfind(':') {
            Some(i) if !reference[i..].contains('/') => {
                (&reference[..i], reference[i + 1..].to_string())
            }
            _ => (reference, "latest".to_string()),
        },
    };
    let (host, repo) = name
        .split_once('/')
        .ok_or_else(|| bad("no registry host"))?;
    let host = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    };
    Ok((host.to_string(), repo.to_string(), object))
}

fn plain_http(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// `Bearer realm="...",service="...",scope="..."` into its parameters.
fn challenge(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("Bearer ")?;
    Some(
        rest.split(',')
            .filter_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect(),
    )
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

impl HttpRegistry {
    pub fn new(client: reqwest::Client) -> Self {
        HttpRegistry { client }
    }

    async fn get(
        &self,
        url: &str,
        auth: &mut Auth,
        credentials: Option<&Credentials>,
    ) -> Result<(String, Vec<u8>), ImageError> {
        let failed = ImageError::Invalid;
        for _ in 0..2 {
            let mut req = self.client.get(url).header("Accept", ACCEPT);
            match (&*auth, credentials) {
                (Auth::Bearer(t), _) => req = req.bearer_auth(t),
                (Auth::Basic, Some(c)) => req = req.basic_auth(&c.username, Some(&c.password)),
                _ => {}
            }
            let resp = req
                .send()
                .await
                .map_err(|e| failed(format!("GET {url}: {}", cause(&e))))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && *auth == Auth::Anonymous {
                let header = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if header.starts_with("Basic") {
                    if credentials.is_none() {
                        return Err(failed(format!(
                            "GET {url}: 401 Unauthorized (the registry wants a login: imagePullSecrets)"
                        )));
                    }
                    *auth = Auth::Basic;
                    continue;
                }
                let params = challenge(&header)
                    .ok_or_else(|| failed(format!("{url}: unauthorized ({header})")))?;
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| failed("token challenge without realm".into()))?;
                let query: Vec<_> = params.into_iter().filter(|(k, _)| k != "realm").collect();
                let token_url = url::Url::parse_with_params(&realm, &query)
                    .map_err(|e| failed(format!("token realm {realm:?}: {e}")))?;
                let mut token_req = self.client.get(token_url);
                if let Some(c) = credentials {
                    token_req = token_req.basic_auth(&c.username, Some(&c.password));
                }
                let body: Value = token_req
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| failed(format!("token from {realm}: {e}")))?
                    .json()
                    .await
                    .map_err(|e| failed(format!("token from {realm}: {e}")))?;
                let token = body["token"]
                    .as_str()
                    .or(body["access_token"].as_str())
                    .ok_or_else(|| failed(format!("token from {realm}: no token in the answer")))?;
                *auth = Auth::Bearer(token.to_string());
                continue;
            }
            let status = resp.status();
            if !status.is_success() {
                return Err(failed(format!("GET {url}: {status}")));
            }
            let media = resp
                .headers()
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = resp
                .bytes()
                .await
                .map_err(|e| failed(format!("{url}: {e}")))?;
            return Ok((media, body.to_vec()));
        }
        Err(failed(format!("{url}: unauthorized")))
    }
}

/// The innermost cause of an error: "connection refused" rather than "error sending request".
pub fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[async_trait]
impl Registry for HttpRegistry {
    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Loaded, ImageError> {
        let (host, repo, object) = split(reference)?;
        let scheme = if plain_http(&host) { "http" } else { "https" };
        let base = format!("{scheme}://{host}/v2/{repo}");
        let mut auth = Auth::Anonymous;
        let mut out = Loaded::default();
        let (media, mut body) = self
            .get(
                &format!("{base}/manifests/{object}"),
                &mut auth,
                credentials,
            )
            .await?;
        let mut manifest: Value = serde_json::from_slice(&body)
            .map_err(|e| ImageError::Invalid(format!("manifest of {reference}: {e}")))?;
        if is_index(media.split(';').next().unwrap_or(""), &manifest) {
            let digest = pick_platform(&manifest).ok_or_else(|| {
                ImageError::Invalid(format!(
                    "{reference} has no image for linux/{}",
                    super::oci_arch()
                ))
            })?;
            body = self
                .get(
                    &format!("{base}/manifests/{digest}"),
                    &mut auth,
                    credentials,
                )
                .await?
                .1;
            manifest = serde_json::from_slice(&body)
                .map_err(|e| ImageError::Invalid(format!("manifest {digest}: {e}")))?;
        }
        let manifest_digest = super::digest(&body);
        if object.starts_with("sha256:")
            && !is_index(&media, &manifest)
            && object != manifest_digest
        {
            return Err(ImageError::Invalid(format!(
                "{reference}: the registry sent a manifest with digest {manifest_digest}"
            )));
        }
        out.blobs.insert(manifest_digest.clone(), body);
        let wanted = std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten());
        for d in wanted {
            let digest = d["digest"].as_str().unwrap_or("").to_string();
            let (_, data) = self
                .get(&format!("{base}/blobs/{digest}"), &mut auth, credentials)
                .await?;
            if super::digest(&data) != digest {
                return Err(ImageError::Invalid(format!(
                    "{reference}: blob {digest} does not match its digest"
                )));
            }
            out.blobs.insert(digest, data);
        }
        out.images.push((reference.to_string(), manifest_digest));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_come_from_docker_config_secrets() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = r#"{"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"auth": "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}}}"#;
        let secret = serde_json::json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(json)}});
        let typed = |v: serde_json::Value| -> crate::api::core::Secret {
            serde_json::from_value(v).unwrap()
        };
        let logins = credentials_from_secret(&typed(secret));
        let local = credentials_for("127.0.0.1:5000/team/app:v1", &logins).unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("u", "p")
        );
        let hub = credentials_for("docker.io/library/busybox:latest", &logins).unwrap();
        assert_eq!(hub.username, "Aladdin");
        assert_eq!(hub.password, "open sesame");
        assert!(credentials_for("other.example/app:v1", &logins).is_none());
        assert!(
            !format!("{hub:?}").contains("sesame"),
            "passwords stay out of logs"
        );
        let old = serde_json::json!({"data": {".dockercfg": b64(r#"{"reg.example": {"username": "a", "password": "b"}}"#)}});
        assert_eq!(credentials_from_secret(&typed(old))[0].0, "reg.example");
    }

    #[test]
    fn references_split_into_host_repository_and_object() {
        assert_eq!(
            split("docker.io/library/busybox:1.36").unwrap(),
            (
                "registry-1.docker.io".into(),
                "library/busybox".into(),
                "1.36".into()
            )
        );
        assert_eq!(
            split("127.0.0.1:5000/team/app@sha256:ab").unwrap(),
            (
                "127.0.0.1:5000".into(),
                "team/app".into(),
                "sha256:ab".into()
            )
        );
        assert!(plain_http("127.0.0.1:5000"));
        assert!(plain_http("localhost"));
        assert!(!plain_http("registry.example:5000"));
        assert_eq!(
            challenge(r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull""#)
                .unwrap()[0],
            ("realm".into(), "https://auth.example/token".into())
        );
    }

    /// A registry on loopback serving one image built here: the client fetches it, tag and digest alike, and a
    /// missing tag is an error naming the reference.
    #[tokio::test]
    async fn pulls_an_image_from_a_registry_on_loopback() {
        use axum::extract::{Path, State};
        use std::collections::BTreeMap;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello"), "hi").unwrap();
        let mut tar = Vec::new();
        let built = crate::image::build(
            &crate::image::BuildSpec {
                reference: "team/app:v1".into(),
                add: vec![(dir.path().join("hello"), "/hello".into())],
                entrypoint: vec!["/hello".into()],
                ..Default::default()
            },
            &mut tar,
        )
        .unwrap();
        let files = crate::image::read_archive(&tar).unwrap();
        let blobs: Arc<BTreeMap<String, Vec<u8>>> = Arc::new(
            files
                .iter()
                .filter_map(|(p, d)| {
                    Some((
                        format!("sha256:{}", p.strip_prefix("blobs/sha256/")?),
                        d.clone(),
                    ))
                })
                .collect(),
        );
        let manifest = built.manifest.clone();
        type S = (Arc<BTreeMap<String, Vec<u8>>>, String);
        let app = axum::Router::new()
            .route(
                "/v2/team/app/manifests/{object}",
                axum::routing::get(
                    |State((b, m)): State<S>, Path(o): Path<String>| async move {
                        let key = if o == "v1" { m } else { o };
                        match b.get(&key) {
                            Some(d) => ([("content-type", crate::image::OCI_MANIFEST)], d.clone())
                                .into_response(),
                            None => axum::http::StatusCode::NOT_FOUND.into_response(),
                        }
                    },
                ),
            )
            .route(
                "/v2/team/app/blobs/{digest}",
                axum::routing::get(
                    |State((b, _)): State<S>, Path(d): Path<String>| async move {
                        b.get(&d).cloned().ok_or(axum::http::StatusCode::NOT_FOUND)
                    },
                ),
            )
            .with_state((blobs, manifest.clone()));
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let registry = HttpRegistry::default();
        let loaded = registry
            .pull(&format!("127.0.0.1:{port}/team/app:v1"), None)
            .await
            .unwrap();
        assert_eq!(loaded.images[0].1, manifest);
        assert!(loaded.blobs.contains_key(&built.layer));
        assert!(loaded.blobs.contains_key(&built.config));
        let by_digest = registry
            .pull(&format!("127.0.0.1:{port}/team/app@{manifest}"), None)
            .await
            .unwrap();
        assert_eq!(by_digest.images[0].1, manifest);
        let missing = registry
            .pull(&format!("127.0.0.1:{port}/team/app:v2"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("team/app/manifests/v2") && missing.contains("404"),
            "{missing}"
        );
    }
}
