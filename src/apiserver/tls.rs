//! TLS for the API server: at first start a private CA and a serving certificate (for localhost, 127.0.0.1, ::1 and
//! the host name) are generated into the data directory; the CA goes into the kubeconfig so kubectl and Capstan's
//! client verify the server. (kubectl only sends a bearer token over TLS.)

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::StartError;

/// PEM texts of the CA and the serving certificate and key.
#[derive(Clone, Debug)]
pub struct Material {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Installs the process-wide crypto provider (ring). Safe to call many times.
use crate::sys::init_crypto;

fn io(path: &Path) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |e| StartError::DataDir(path.to_path_buf(), e)
}

fn tls_err(e: impl std::fmt::Display) -> StartError {
    StartError::Tls(e.to_string())
}

fn write_private(path: &Path, text: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Loads the certificates from `dir`, creating them at first start.
pub fn load_or_create(dir: &Path) -> Result<Material, StartError> {
    let (ca, crt, key) = (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    if ca.exists() && crt.exists() && key.exists() {
        return Ok(Material {
            ca_pem: std::fs::read_to_string(&ca).map_err(io(&ca))?,
            cert_pem: std::fs::read_to_string(&crt).map_err(io(&crt))?,
            key_pem: std::fs::read_to_string(&key).map_err(io(&key))?,
        });
    }
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "capstan-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err)?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
        }
    }
    let server_key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "capstan-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&server_key, &issuer).map_err(tls_err)?;
    let m = Material {
        ca_pem: issuer.pem(),
        cert_pem: cert.pem(),
        key_pem: server_key.serialize_pem(),
    };
    std::fs::write(&ca, &m.ca_pem).map_err(io(&ca))?;
    std::fs::write(&crt, &m.cert_pem).map_err(io(&crt))?;
    write_private(&key, &m.key_pem)?;
    Ok(m)
}

/// The rustls server configuration for the material.
pub fn server_config(m: &Material) -> Result<Arc<rustls::ServerConfig>, StartError> {
    init_crypto();
    let certs: Vec<_> = rustls_pemfile::certs(&mut m.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(tls_err)?;
    let key = rustls_pemfile::private_key(&mut m.key_pem.as_bytes())
        .map_err(tls_err)?
        .ok_or_else(|| StartError::Tls("server.key holds no private key".into()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
