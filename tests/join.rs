//! Joining machines: the API server's certificate names what agents and kubectl dial (`--tls-san`, the listen
//! addresses), the CA key is kept (0600) so the certificate is issued again when those names change, and the CA
//! itself never changes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Server;

/// GET /version through `name` (resolved to the server's loopback address), trusting only the cluster CA.
fn version_via(s: &Server, name: &str) -> Result<String, String> {
    capstan::sys::init_crypto();
    let url: reqwest::Url = s.url.parse().unwrap();
    let addr = std::net::SocketAddr::new(
        url.host_str().unwrap().parse().unwrap(),
        url.port().unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut s.ca().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(name, addr)
        .build()
        .unwrap();
    client
        .get(format!("https://{name}:{}/version", addr.port()))
        .send()
        .map_err(|e| format!("{e:?}"))
        .and_then(|r| r.text().map_err(|e| e.to_string()))
}

#[test]
fn the_serving_certificate_names_tls_sans_and_is_reissued_when_they_change() {
    let s = Server::start_with(&["--tls-san", "capstan.example", "--tls-san", "10.250.0.9"]);
    let ca = s.ca();
    let key = s.data_dir().join("ca.key");
    let mode = std::fs::metadata(&key)
        .expect("ca.key kept")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "ca.key is private");
    let served = version_via(&s, "capstan.example").expect("the SAN is in the certificate");
    assert!(served.contains("gitVersion"), "{served}");
    let refused = version_via(&s, "other.example").expect_err("a name not in the certificate");
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // Restart with another name: the certificate is issued again by the same CA.
    let dir = s.kill9();
    let s = Server::start_in_with(dir, &["--tls-san", "other.example"]);
    assert_eq!(s.ca(), ca, "the CA stays");
    version_via(&s, "other.example").expect("the new SAN");
    assert!(
        version_via(&s, "capstan.example").is_err(),
        "the old one is gone"
    );
    let names = std::fs::read_to_string(s.data_dir().join("server.names")).unwrap();
    assert!(names.lines().any(|n| n == "other.example"), "{names}");
}
