//! Joining machines: the API server's certificate names what agents and kubectl dial (`--tls-san`, the listen
//! addresses), the CA key is kept (0600) so the certificate is issued again when those names change, and the CA
//! itself never changes. Join tokens (`capstan token create|list|delete`) pin the CA and are exchanged for a
//! node's own token; a wrong pin, a deleted or expired token and a second machine claiming a node name are refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{ok, within, Server, BIN};

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

/// `capstan agent` joining with `join_token` in the environment, its data in `dir`.
fn join_agent(s: &Server, dir: &std::path::Path, name: &str, join_token: &str) -> Child {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "agent",
            "--server",
            &s.url,
            "--node-name",
            name,
            "--stop-pods-on-exit",
        ])
        .env("CAPSTAN_JOIN_TOKEN", join_token)
        .env("CAPSTAN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn capstan agent")
}

/// Runs a joining agent that must fail; returns what it said.
fn refused(s: &Server, dir: &std::path::Path, name: &str, join_token: &str) -> String {
    let child = join_agent(s, dir, name, join_token);
    let out: Output = child.wait_with_output().expect("agent exits");
    assert!(!out.status.success(), "the agent must refuse to join");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn create_token(s: &Server, extra: &[&str]) -> String {
    let mut args = vec!["token", "create"];
    args.extend_from_slice(extra);
    ok(&s.capstan(&args)).trim().to_string()
}

#[test]
fn agents_join_with_a_token_that_pins_the_ca_and_get_their_own_credentials() {
    let s = Server::start();
    let token = create_token(&s, &["--ttl", "1h", "--description", "rack 3"]);
    let (pin, bootstrap) = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .expect("K10<hash>::<id>.<secret>");
    assert_eq!(pin, capstan::sys::sha256_hex(s.ca().as_bytes()));
    let id = bootstrap.split('.').next().unwrap().to_string();
    let listed = ok(&s.capstan(&["token", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("rack 3"),
        "{listed}"
    );

    // A machine joins: no token on its command line, its own credential kept privately.
    let machine = tempfile::tempdir().unwrap();
    let mut agent = join_agent(&s, machine.path(), "node-j", &token);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", agent.id())).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains(bootstrap));
    within(Duration::from_secs(60), "node-j Ready", || {
        let (code, n) = s.call("GET", "/api/v1/nodes/node-j", "", "");
        (code == 200
            && n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .then_some(())
    });
    let node_dir = machine.path().join("nodes").join("node-j");
    let kept = std::fs::metadata(node_dir.join("node-token")).expect("node token kept");
    assert_eq!(kept.permissions().mode() & 0o777, 0o600);
    let node_token = std::fs::read_to_string(node_dir.join("node-token")).unwrap();
    assert!(
        node_token.starts_with("capstan-node.node-j."),
        "{node_token}"
    );
    let (code, _) = s.call(
        "GET",
        "/api/v1/namespaces/kube-system/secrets/node-token-node-j",
        "",
        "",
    );
    assert_eq!(code, 200);
    // Its client certificate (system:node:node-j in system:nodes), signed through an approved
    // CertificateSigningRequest that records the bootstrap token as its requester; the key never left the machine.
    for f in ["node.crt", "node.key"] {
        let m = std::fs::metadata(node_dir.join(f)).expect("the node's certificate kept");
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
    }
    let (_, csrs) = s.call(
        "GET",
        concat!(
            "/",
            "apis/certificates.k8s.io/v1/certificatesigningrequests"
        ),
        "",
        "",
    );
    let items = csrs["items"].as_array().unwrap().clone();
    let of_node_j = |signer: &str| {
        items
            .iter()
            .find(|c| {
                c["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("node-csr-node-j-")
                    && c["spec"]["signerName"] == signer
            })
            .cloned()
    };
    // The agent's serving certificate was asked for by the node itself, with its new client certificate.
    let serving = of_node_j("kubernetes.io/kubelet-serving").expect("a serving CSR for node-j");
    assert_eq!(serving["spec"]["username"], "system:node:node-j");
    let csr = of_node_j("kubernetes.io/kube-apiserver-client-kubelet")
        .expect("a CSR for node-j")
        .clone();
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{id}"));
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved");
    assert!(csr["status"]["certificate"].is_string());
    let k = common::kubectl();
    if let Some(k) = &k {
        let listed = ok(&s.kubectl(k, &["get", "csr"]));
        assert!(listed.contains("Approved,Issued"), "{listed}");
    }
    // The certificate alone is the node: whoami with it says so.
    let kc = s.data_dir().join("node-j.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: {}, certificate-authority: {}}}}}]\n\
             users: [{{name: node, user: {{client-certificate: {}, client-key: {}}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: node}}}}]\ncurrent-context: c\n",
            s.url,
            s.data_dir().join("ca.crt").display(),
            node_dir.join("node.crt").display(),
            node_dir.join("node.key").display()
        ),
    )
    .unwrap();
    if let Some(k) = &k {
        let cache = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(k)
            .env("KUBECONFIG", &kc)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["auth", "whoami", "-o", "json"])
            .output()
            .unwrap();
        let who: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(who["status"]["userInfo"]["username"], "system:node:node-j");
        assert!(who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("system:nodes")));
    }
    // The API server reaches the joined node's agent with the node's own token: logs work.
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
        "spec": {"nodeName": "node-j", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "none", "command": ["sh", "-c", "echo joined; sleep 600"]}]}});
    let (code, v) = s.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &pod.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    within(
        Duration::from_secs(30),
        "the pod's log through the API server",
        || {
            let (code, log) = s.call("GET", "/api/v1/namespaces/default/pods/hello/log", "", "");
            (code == 200 && log.to_string().contains("joined")).then_some(())
        },
    );
    // A bootstrap token is no general credential.
    let (code, _) = s.call_as(bootstrap, "GET", "/api/v1/namespaces/kube-system/secrets");
    assert_eq!(code, 403);
    // The machine leaves (stopping its pods, as --stop-pods-on-exit says).
    common::terminate(&mut agent, Duration::from_secs(20));

    // A second machine claiming node-j is refused; so are a wrong CA pin, a deleted and an expired token.
    let other = tempfile::tempdir().unwrap();
    let said = refused(&s, other.path(), "node-j", &token);
    assert!(said.contains("already held by another machine"), "{said}");
    let wrong_pin = format!("K10{}::{bootstrap}", "0".repeat(64));
    let said = refused(&s, other.path(), "node-k", &wrong_pin);
    assert!(said.contains("does not match the join token"), "{said}");
    ok(&s.capstan(&["token", "delete", &id]));
    let said = refused(&s, other.path(), "node-k", &token);
    assert!(said.contains("unknown or expired"), "{said}");
    let short = create_token(&s, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let said = refused(&s, other.path(), "node-l", &short);
    assert!(said.contains("unknown or expired"), "{said}");
}
