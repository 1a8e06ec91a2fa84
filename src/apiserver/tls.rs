//! TLS for the API server: at first start a private CA (its key kept, 0600, to issue certificates later) and a
//! serving certificate are generated into the data directory. The serving certificate names localhost, 127.0.0.1,
//! ::1, the host name, every address the server listens on and each `--tls-san`; when those change it is issued
//! again on restart. The CA goes into the kubeconfig so kubectl and Capstan's client verify the server. (kubectl
//! only sends a bearer token over TLS.) Clients may present a certificate of the cluster CA instead of a token
//! ([`issue_client`] makes one: `capstan kubeconfig create`, nodes at join).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
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
    crate::sys::write_private(path, text.as_bytes()).map_err(io(path))
}

/// The names every serving certificate carries: loopback and the host name.
pub fn default_names() -> Vec<String> {
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
    names
}

/// The cluster CA: its certificate, and its key when this data directory keeps it (one from before keys were kept
/// has none, and its serving certificate cannot be re-issued).
struct Ca {
    pem: String,
    issuer: Option<Issuer<'static, KeyPair>>,
}

fn ca_params() -> Result<CertificateParams, StartError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "capstan-ca");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Loads the CA from `dir` (ca.crt, ca.key), or creates it (the key written 0600).
fn load_or_create_ca(dir: &Path) -> Result<Ca, StartError> {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if crt.exists() {
        let pem = std::fs::read_to_string(&crt).map_err(io(&crt))?;
        if !key.exists() {
            return Ok(Ca { pem, issuer: None });
        }
        let key_pem = std::fs::read_to_string(&key).map_err(io(&key))?;
        let signing = KeyPair::from_pem(&key_pem).map_err(tls_err)?;
        let issuer = Issuer::from_ca_cert_pem(&pem, signing).map_err(tls_err)?;
        return Ok(Ca {
            pem,
            issuer: Some(issuer),
        });
    }
    let signing = KeyPair::generate().map_err(tls_err)?;
    let key_pem = signing.serialize_pem();
    let certified = CertifiedIssuer::self_signed(ca_params()?, signing).map_err(tls_err)?;
    let pem = certified.pem();
    write_private(&key, &key_pem)?;
    write_private(&crt, &pem)?;
    let signing = KeyPair::from_pem(&key_pem).map_err(tls_err)?;
    Ok(Ca {
        pem,
        issuer: Some(Issuer::new(ca_params()?, signing)),
    })
}

/// Loads the CA and a serving certificate for `names` (DNS names and IP addresses) from `dir`, creating them at
/// first start. A serving certificate issued for other names is issued again (the names it was issued for are
/// kept in `server.names`), so adding `--tls-san` or a listen address takes effect on restart.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Material, StartError> {
    let (crt, key, issued) = (
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("server.names"),
    );
    let mut want: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    want.sort();
    want.dedup();
    let ca = load_or_create_ca(dir)?;
    let have = std::fs::read_to_string(&issued).unwrap_or_default();
    let current = crt.exists() && key.exists();
    if current && (have == want.join("\n") || ca.issuer.is_none()) {
        if ca.issuer.is_none() && have != want.join("\n") {
            tracing::warn!(
                "{} has no ca.key (made by an older Capstan): the serving certificate keeps its names",
                dir.display()
            );
        }
        return Ok(Material {
            ca_pem: ca.pem,
            cert_pem: std::fs::read_to_string(&crt).map_err(io(&crt))?,
            key_pem: std::fs::read_to_string(&key).map_err(io(&key))?,
        });
    }
    let issuer = ca.issuer.as_ref().ok_or_else(|| {
        StartError::Tls("ca.key is missing: cannot issue a serving certificate".into())
    })?;
    let server_key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(want.clone()).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "capstan-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&server_key, issuer).map_err(tls_err)?;
    let m = Material {
        ca_pem: ca.pem,
        cert_pem: cert.pem(),
        key_pem: server_key.serialize_pem(),
    };
    write_private(&key, &m.key_pem)?;
    write_private(&crt, &m.cert_pem)?;
    write_private(&issued, &want.join("\n"))?;
    if current {
        tracing::info!(names = ?want, "the serving certificate was issued again for new names");
    }
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
    // Client certificates are optional (tokens work too), but one that is presented must be the cluster CA's.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut m.ca_pem.as_bytes()) {
        roots.add(c.map_err(tls_err)?).map_err(tls_err)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
}

/// A certificate for `cn` in `groups` (O), with subject alternative names `sans` (DNS names or IP addresses), for
/// `usage`, valid for `ttl`, signed by the CA kept in `dir`; returns (certificate PEM, key PEM). With `csr_pem`, the
/// key is the requester's (its PKCS#10 request) and the key PEM is empty; the subject and names are still the ones
/// given here.
pub fn issue(
    dir: &Path,
    cn: &str,
    groups: &[String],
    sans: &[String],
    usage: Usage,
    ttl: std::time::Duration,
    csr_pem: Option<&str>,
) -> Result<(String, String), StartError> {
    if !dir.join("ca.crt").exists() {
        return Err(StartError::Tls(format!(
            "{} holds no cluster CA (use the server's --data-dir, on its machine)",
            dir.display()
        )));
    }
    let ca = load_or_create_ca(dir)?;
    let issuer = ca.issuer.as_ref().ok_or_else(|| {
        StartError::Tls(format!(
            "{} has no ca.key: cannot issue certificates",
            dir.display()
        ))
    })?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    // rcgen keeps one value per attribute type in a subject: the first group goes in here, and a certificate for
    // several groups is given its whole subject afterwards (`with_subject`).
    if let Some(g) = groups.first() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, g.as_str());
    }
    params.extended_key_usages = vec![match usage {
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
    }];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let start = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    params.not_before = start;
    params.not_after =
        start + time::Duration::seconds(ttl.as_secs() as i64) + time::Duration::minutes(5);
    match csr_pem {
        Some(csr) => {
            let req = rcgen::CertificateSigningRequestParams::from_pem(csr).map_err(tls_err)?;
            let cert = rcgen::CertificateSigningRequestParams {
                params,
                public_key: req.public_key,
            }
            .signed_by(issuer)
            .map_err(tls_err)?;
            Ok((with_subject(cert.der(), cn, groups, issuer)?, String::new()))
        }
        None => {
            let key = KeyPair::generate().map_err(tls_err)?;
            let cert = params.signed_by(&key, issuer).map_err(tls_err)?;
            Ok((
                with_subject(cert.der(), cn, groups, issuer)?,
                key.serialize_pem(),
            ))
        }
    }
}

/// The certificate `der` as PEM; when it is for several groups, with its subject replaced by CN=`cn` and one O per
/// group (as Kubernetes reads groups from client certificates), signed again by `issuer`.
fn with_subject(
    der: &[u8],
    cn: &str,
    groups: &[String],
    issuer: &Issuer<'static, KeyPair>,
) -> Result<String, StartError> {
    use rcgen::SigningKey;
    use x509_parser::prelude::*;
    let pem = |der: &[u8]| {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    if groups.len() < 2 {
        return Ok(pem(der));
    }
    let (_, cert) = X509Certificate::from_der(der).map_err(tls_err)?;
    let tbs: &[u8] = cert.tbs_certificate.as_ref();
    let subject = cert.tbs_certificate.subject.as_raw();
    let offset = |inner: &[u8], outer: &[u8]| inner.as_ptr() as usize - outer.as_ptr() as usize;
    let (_, tbs_head) = der::header(tbs).ok_or_else(|| tls_err("certificate: bad TBS"))?;
    let at = offset(subject, tbs);
    let mut names = der::attribute(&[2, 5, 4, 3], cn);
    for g in groups {
        names.extend(der::attribute(&[2, 5, 4, 10], g));
    }
    let mut content = tbs[tbs_head..at].to_vec();
    content.extend(der::tlv(0x30, &names));
    content.extend(&tbs[at + subject.len()..]);
    let new_tbs = der::tlv(0x30, &content);
    // After the TBS: the signature algorithm, then the signature.
    let rest = &der[offset(tbs, der) + tbs.len()..];
    let (alg_len, alg_head) =
        der::header(rest).ok_or_else(|| tls_err("certificate: bad algorithm"))?;
    let alg = &rest[..alg_head + alg_len];
    let signature = issuer.key().sign(&new_tbs).map_err(tls_err)?;
    let mut bits = vec![0u8];
    bits.extend(signature);
    let mut whole = new_tbs;
    whole.extend(alg);
    whole.extend(der::tlv(0x03, &bits));
    Ok(pem(&der::tlv(0x30, &whole)))
}

/// The little DER [`with_subject`] writes: tag-length-value, and one attribute of a name.
mod der {
    /// (content length, header length) of the element `bytes` begins with.
    pub fn header(bytes: &[u8]) -> Option<(usize, usize)> {
        let first = *bytes.get(1)? as usize;
        if first < 0x80 {
            return Some((first, 2));
        }
        let n = first & 0x7f;
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        Some((len, 2 + n))
    }

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend(content);
        out
    }

    /// SET { SEQUENCE { OID, UTF8String } } for the attribute type `oid` (arcs) with `value`.
    pub fn attribute(oid: &[u64], value: &str) -> Vec<u8> {
        let mut arcs = vec![(oid[0] * 40 + oid[1]) as u8];
        for &arc in &oid[2..] {
            let mut chunk = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                chunk.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            arcs.extend(chunk.into_iter().rev());
        }
        let mut pair = tlv(0x06, &arcs);
        pair.extend(tlv(0x0c, value.as_bytes()));
        tlv(0x31, &tlv(0x30, &pair))
    }
}

/// A client certificate for `user` in `groups` (CN and O): [`issue`] for client authentication, without names.
pub fn issue_client(
    dir: &Path,
    user: &str,
    groups: &[String],
    ttl: std::time::Duration,
    csr_pem: Option<&str>,
) -> Result<(String, String), StartError> {
    issue(dir, user, groups, &[], Usage::Client, ttl, csr_pem)
}

pub use crate::api::tokens::AGENT_CLIENT_USER;

/// The TLS client configuration the API server calls node agents with: it trusts only agents whose serving
/// certificate the cluster CA signed, and presents its own client certificate (`apiserver-kubelet-client.crt`,
/// issued at first start and again when less than a month of it is left).
pub fn agent_client_config(
    dir: &Path,
    ca_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, StartError> {
    init_crypto();
    let (crt, key) = (
        dir.join("apiserver-kubelet-client.crt"),
        dir.join("apiserver-kubelet-client.key"),
    );
    let fresh = std::fs::read_to_string(&crt)
        .ok()
        .filter(|pem| !expires_within(pem, std::time::Duration::from_secs(30 * 86_400)));
    let (cert_pem, key_pem) = match (fresh, std::fs::read_to_string(&key).ok()) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let (c, k) = issue(
                dir,
                AGENT_CLIENT_USER,
                &["system:masters".to_string()],
                &[],
                Usage::Client,
                std::time::Duration::from_secs(365 * 86_400),
                None,
            )?;
            write_private(&key, &k)?;
            write_private(&crt, &c)?;
            (c, k)
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.map_err(tls_err)?).map_err(tls_err)?;
    }
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_err)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(tls_err)?
        .ok_or_else(|| StartError::Tls("apiserver-kubelet-client.key holds no key".into()))?;
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(tls_err)?;
    Ok(Arc::new(cfg))
}

/// Whether the PEM certificate expires within `margin` (or cannot be read).
fn expires_within(pem: &str, margin: std::time::Duration) -> bool {
    use x509_parser::prelude::*;
    let Ok((_, p)) = parse_x509_pem(pem.as_bytes()) else {
        return true;
    };
    let Ok(cert) = p.parse_x509() else {
        return true;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    cert.validity().not_after.timestamp() - now < margin.as_secs() as i64
}
