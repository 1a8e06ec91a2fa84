//! A node's own credential (the kubelet's client certificate): a key made on the machine and a certificate request
//! for `system:node:<name>` in `system:nodes`, which the control plane signs when the node joins (and again when
//! the agent starts with a certificate past two thirds of its life). Kept as `node.crt` and `node.key` (0600) in the
//! node's directory; the key never leaves the machine.

use std::path::Path;

pub use crate::api::tokens::node_subject as subject;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("making the node's certificate request: {0}")]
    Request(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("reading the node's certificate: {0}")]
    Certificate(String),
}

/// A new key and a PEM certificate request for `node`: (request PEM, key PEM).
pub fn request(node: &str) -> Result<(String, String), CredentialError> {
    request_naming(node, Vec::new())
}

/// A new key and a PEM certificate request for the serving certificate of the node's agent endpoint: the node's
/// subject, and its addresses and name as alternative names.
pub fn serving_request(
    node: &str,
    addresses: &[std::net::IpAddr],
) -> Result<(String, String), CredentialError> {
    let mut names: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    names.push(node.to_string());
    request_naming(node, names)
}

/// A new key and a request for the node's subject with alternative names `names`: (request PEM, key PEM).
fn request_naming(node: &str, names: Vec<String>) -> Result<(String, String), CredentialError> {
    let bad = |e: rcgen::Error| CredentialError::Request(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(bad)?;
    let (cn, o) = subject(node);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, o);
    let csr = params.serialize_request(&key).map_err(bad)?;
    Ok((csr.pem().map_err(bad)?, key.serialize_pem()))
}

/// The TLS configuration of the agent's endpoint: its serving certificate (PEM) and key, and client certificates
/// required, signed by the cluster CA (`ca_pem`). Which client is accepted is checked per request.
pub fn endpoint_tls(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<std::sync::Arc<rustls::ServerConfig>, CredentialError> {
    crate::sys::init_crypto();
    let bad = |e: String| CredentialError::Certificate(e);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no private key".into()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(cfg))
}

/// The CN of a client certificate (DER), if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(String::from)
}

/// Keeps the signed certificate and its key in `dir` (0600).
pub fn keep(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<(), CredentialError> {
    for (name, text) in [("node.key", key_pem), ("node.crt", cert_pem)] {
        let path = dir.join(name);
        crate::sys::write_private(&path, text.as_bytes()).map_err(|source| {
            CredentialError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// The node's kept certificate and key, if it has them.
pub fn kept(dir: &Path) -> Option<(String, String)> {
    let cert = std::fs::read_to_string(dir.join("node.crt")).ok()?;
    let key = std::fs::read_to_string(dir.join("node.key")).ok()?;
    (!cert.trim().is_empty() && !key.trim().is_empty()).then_some((cert, key))
}

/// Whether the certificate should be renewed: past two thirds of its life (or unreadable).
pub fn due_for_renewal(
    cert_pem: &str,
    now: std::time::SystemTime,
) -> Result<bool, CredentialError> {
    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CredentialError::Certificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CredentialError::Certificate(e.to_string()))?;
    let from = cert.validity().not_before.timestamp();
    let until = cert.validity().not_after.timestamp();
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(now >= from + (until - from) * 2 / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_the_node_and_renewal_comes_at_two_thirds() {
        let (csr, key) = request("m1").unwrap();
        assert!(csr.contains("CERTIFICATE REQUEST") && key.contains("PRIVATE KEY"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let names: Vec<String> = parsed
            .params
            .distinguished_name
            .iter()
            .map(|(_, v)| format!("{v:?}"))
            .collect();
        assert!(
            names.iter().any(|n| n.contains("system:node:m1")),
            "{names:?}"
        );
        // A certificate valid for 30 days from now: not due today, due after day 20.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let start = time::OffsetDateTime::now_utc();
        params.not_before = start;
        params.not_after = start + time::Duration::days(30);
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&k).unwrap().pem();
        let now = std::time::SystemTime::now();
        assert!(!due_for_renewal(&cert, now).unwrap());
        let later = now + std::time::Duration::from_secs(21 * 86_400);
        assert!(due_for_renewal(&cert, later).unwrap());
        assert!(due_for_renewal("junk", now).is_err());
    }
}
