//! Pulling images from a registry (the OCI distribution API): the [`Registry`] trait the containerd runtime pulls
//! through, and [`HttpRegistry`], which speaks the API over HTTP(S) with anonymous bearer tokens. It fetches the
//! manifest (picking this machine's platform from an index), the config and the layers, checks every digest, and
//! hands back a [`Loaded`] set of blobs - the same shape an imported archive has. Like Docker, registries on
//! `localhost` and 127.0.0.0/8 are spoken to over plain HTTP.

use async_trait::async_trait;
use serde_json::Value;

use super::{is_index, pick_platform, ImageError, Loaded};

#[async_trait]
pub trait Registry: Send + Sync {
    /// Fetches `reference` (normalized, `host/repository:tag` or `@sha256:...`) for this machine's platform.
    async fn pull(&self, reference: &str) -> Result<Loaded, ImageError>;
}

/// A registry client over HTTP.
#[derive(Clone)]
pub struct HttpRegistry {
    client: reqwest::Client,
}

impl Default for HttpRegistry {
    fn default() -> Self {
        crate::apiserver::tls::init_crypto();
        HttpRegistry {
            client: reqwest::Client::new(),
        }
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
        token: &mut Option<String>,
    ) -> Result<(String, Vec<u8>), ImageError> {
        let failed = ImageError::Invalid;
        for _ in 0..2 {
            let mut req = self.client.get(url).header("Accept", ACCEPT);
            if let Some(t) = token.as_ref() {
                req = req.bearer_auth(t);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| failed(format!("GET {url}: {}", cause(&e))))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && token.is_none() {
                let header = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                let params = challenge(header)
                    .ok_or_else(|| failed(format!("{url}: unauthorized ({header})")))?;
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| failed("token challenge without realm".into()))?;
                let query: Vec<_> = params.into_iter().filter(|(k, _)| k != "realm").collect();
                let token_url = url::Url::parse_with_params(&realm, &query)
                    .map_err(|e| failed(format!("token realm {realm:?}: {e}")))?;
                let body: Value = self
                    .client
                    .get(token_url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| failed(format!("token from {realm}: {e}")))?
                    .json()
                    .await
                    .map_err(|e| failed(format!("token from {realm}: {e}")))?;
                *token = body["token"]
                    .as_str()
                    .or(body["access_token"].as_str())
                    .map(String::from);
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
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

fn digest_of(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[async_trait]
impl Registry for HttpRegistry {
    async fn pull(&self, reference: &str) -> Result<Loaded, ImageError> {
        let (host, repo, object) = split(reference)?;
        let scheme = if plain_http(&host) { "http" } else { "https" };
        let base = format!("{scheme}://{host}/v2/{repo}");
        let mut token = None;
        let mut out = Loaded::default();
        let (media, mut body) = self
            .get(&format!("{base}/manifests/{object}"), &mut token)
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
                .get(&format!("{base}/manifests/{digest}"), &mut token)
                .await?
                .1;
            manifest = serde_json::from_slice(&body)
                .map_err(|e| ImageError::Invalid(format!("manifest {digest}: {e}")))?;
        }
        let manifest_digest = digest_of(&body);
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
                .get(&format!("{base}/blobs/{digest}"), &mut token)
                .await?;
            if digest_of(&data) != digest {
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
            .pull(&format!("127.0.0.1:{port}/team/app:v1"))
            .await
            .unwrap();
        assert_eq!(loaded.images[0].1, manifest);
        assert!(loaded.blobs.contains_key(&built.layer));
        assert!(loaded.blobs.contains_key(&built.config));
        let by_digest = registry
            .pull(&format!("127.0.0.1:{port}/team/app@{manifest}"))
            .await
            .unwrap();
        assert_eq!(by_digest.images[0].1, manifest);
        let missing = registry
            .pull(&format!("127.0.0.1:{port}/team/app:v2"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("team/app/manifests/v2") && missing.contains("404"),
            "{missing}"
        );
    }
}
