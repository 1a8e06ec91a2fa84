//! One cluster identity for several servers on one etcd (k3s's "bootstrap data"): the first server on an empty etcd
//! makes the cluster's CA, admin token, ServiceAccount signing key and encryption keys in its data directory as a
//! single server does, then stores them in etcd, sealed (XSalsa20-Poly1305) with a key derived from the admin token.
//! Every later server started with that token (`--token-file FILE`) opens them and writes them into its own data
//! directory before it starts - so all servers present certificates of one CA, accept the same credentials and
//! write the same kubeconfig. A wrong or missing token is refused with a clear message, and nothing is changed.

use std::path::Path;

use crate::store::{DynStore, Error as StoreError};

/// Where the sealed identity lives in the store.
pub const KEY: &str = concat!("/", "capstan/bootstrap");
/// The data directory's files that make the cluster's identity (each server issues its own serving certificate).
pub const FILES: &[&str] = &[
    "token",
    "ca.crt",
    "ca.key",
    "service-account.key",
    "encryption.json",
];

/// Why a server cannot take the cluster's identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this etcd already holds a cluster: start this server with --token-file FILE, FILE holding the cluster's \
         token (DATA_DIR/token of the first server)"
    )]
    NoToken,
    #[error(
        "the token does not open this cluster's bootstrap data in etcd (a wrong --token-file?); nothing was changed"
    )]
    WrongToken,
    #[error("another server initialized this etcd at the same moment; start this one again")]
    Raced,
    #[error("the cluster's bootstrap data in etcd is unreadable: {0}")]
    Corrupt(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

fn cipher(token: &str) -> crypto_secretbox::XSalsa20Poly1305 {
    use crypto_secretbox::aead::KeyInit;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("capstan-bootstrap-data:{}", token.trim()).as_bytes(),
    );
    let key: [u8; 32] = digest.as_ref().try_into().expect("a SHA-256 digest");
    crypto_secretbox::XSalsa20Poly1305::new(&key.into())
}

/// Seals bytes with `token` (a random nonce, then the sealed bytes).
pub fn seal_bytes(token: &str, plain: &[u8]) -> Vec<u8> {
    use crypto_secretbox::aead::Aead;
    let nonce: [u8; 24] = rand::random();
    let sealed = cipher(token)
        .encrypt(&nonce.into(), plain)
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend(sealed);
    out
}

/// Opens what [`seal_bytes`] sealed with `token` (None: another token, or damaged).
pub fn open_bytes(token: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    use crypto_secretbox::aead::Aead;
    if sealed.len() < 24 {
        return None;
    }
    let (nonce, body) = sealed.split_at(24);
    cipher(token)
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), body)
        .ok()
}

/// The keyring shared by the servers of one etcd, sealed with the cluster's `token`.
pub fn sharing(token: &str) -> crate::store::encrypted::Sharing {
    let (a, b) = (token.to_string(), token.to_string());
    crate::store::encrypted::Sharing {
        seal: Box::new(move |plain| seal_bytes(&a, plain)),
        open: Box::new(move |sealed| open_bytes(&b, sealed)),
    }
}

/// Seals `files` (name -> contents) with `token`.
pub fn seal(token: &str, files: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    seal_bytes(token, &serde_json::to_vec(files).unwrap_or_default())
}

/// Opens sealed bytes with `token`.
pub fn open(
    token: &str,
    sealed: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, IdentityError> {
    if sealed.len() < 24 {
        return Err(IdentityError::Corrupt("too short".into()));
    }
    let plain = open_bytes(token, sealed).ok_or(IdentityError::WrongToken)?;
    serde_json::from_slice(&plain).map_err(|e| IdentityError::Corrupt(e.to_string()))
}

/// Before a server on etcd starts: takes the cluster's identity from etcd if it holds one (`token_file`, else the
/// data directory's `token`, must open it). Returns whether this server is the first (and must [`publish`]).
pub async fn take(
    store: &DynStore,
    data_dir: &Path,
    token_file: Option<&Path>,
) -> Result<bool, IdentityError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { what, path, source }
    };
    let token = match token_file {
        Some(f) => Some(std::fs::read_to_string(f).map_err(io("reading", f))?),
        None => std::fs::read_to_string(data_dir.join("token")).ok(),
    }
    .map(|t| t.trim().to_string())
    .filter(|t| !t.is_empty());
    let Some(kv) = store.get(KEY).await? else {
        if let (Some(t), Some(_)) = (&token, token_file) {
            // The first server with a token of its choosing.
            let path = data_dir.join("token");
            crate::sys::write_private(&path, t.as_bytes()).map_err(io("writing", &path))?;
        }
        return Ok(true);
    };
    let token = token.ok_or(IdentityError::NoToken)?;
    let files = open(&token, &kv.value)?;
    for name in FILES {
        let Some(text) = files.get(*name).and_then(|v| v.as_str()) else {
            return Err(IdentityError::Corrupt(format!("{name} is missing")));
        };
        let path = data_dir.join(name);
        crate::sys::write_private(&path, text.as_bytes()).map_err(io("writing", &path))?;
    }
    tracing::info!("took the cluster's identity (CA, token, signing keys) from etcd");
    Ok(false)
}

/// The first server stores the identity it made.
pub async fn publish(store: &DynStore, data_dir: &Path) -> Result<(), IdentityError> {
    let mut files = serde_json::Map::new();
    for name in FILES {
        let path = data_dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        files.insert(name.to_string(), serde_json::Value::String(text));
    }
    let token = files["token"].as_str().unwrap_or("").to_string();
    match store.create(KEY, seal(&token, &files)).await {
        Ok(_) => {
            tracing::info!("stored the cluster's identity in etcd for the servers that join it");
            Ok(())
        }
        Err(StoreError::AlreadyExists(_)) => Err(IdentityError::Raced),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_opens_the_identity() {
        let mut files = serde_json::Map::new();
        files.insert("ca.key".into(), "secret key".into());
        let sealed = seal("tok", &files);
        assert!(!sealed.windows(10).any(|w| w == b"secret key"));
        assert_eq!(open("tok", &sealed).unwrap(), files);
        assert!(matches!(
            open("other", &sealed),
            Err(IdentityError::WrongToken)
        ));
    }
}
