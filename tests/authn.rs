//! Authentication by client certificate: `capstan kubeconfig create` issues a kubeconfig whose certificate (signed
//! by the cluster CA) names the user (CN) and group (O); the real kubectl's `auth whoami` reports them through
//! SelfSubjectReview; a certificate of another CA is refused during the handshake; a token still works.

mod common;

use std::process::Command;

use common::{fails, ok, Server, BIN};

fn kubectl_as(
    k: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(k)
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn kubeconfig_create_issues_a_client_certificate_that_names_the_user_and_group() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    // The data directory is the owner's alone: the store, its log, keys, tokens and certificates.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.data_dir()), 0o700);
        let files: Vec<_> = std::fs::read_dir(s.data_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.metadata().unwrap().is_file())
            .map(|e| e.path())
            .collect();
        assert!(files.iter().any(|f| f.ends_with("store.redb")), "{files:?}");
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
    let alice = s.data_dir().join("alice.kubeconfig");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(s.data_dir())
        .args([
            "kubeconfig",
            "create",
            "--user",
            "alice",
            "--group",
            "team-a",
            "--ttl",
            "1h",
            "-o",
        ])
        .arg(&alice)
        .output()
        .unwrap();
    ok(&out);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&alice).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&alice).unwrap();
    assert!(
        text.contains("client-certificate-data") && !text.contains("token:"),
        "{text}"
    );
    let who: serde_json::Value = serde_json::from_str(&ok(&kubectl_as(
        &k,
        &alice,
        &["auth", "whoami", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(who["kind"], "SelfSubjectReview");
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["team-a", "system:authenticated"])
    );
    // Capstan's own client speaks with the certificate too: the API server knows it is alice (who may not list
    // namespaces until RBAC says so).
    let refused = fails(
        &Command::new(BIN)
            .arg("--kubeconfig")
            .arg(&alice)
            .args(["get", "namespaces"])
            .output()
            .unwrap(),
    );
    assert!(
        refused.contains("User \"alice\" cannot list resource \"namespaces\""),
        "{refused}"
    );
    // The admin token still works, and is the admin.
    let admin = ok(&kubectl_as(&k, &s.kubeconfig(), &["auth", "whoami"]));
    assert!(
        admin.contains("capstan-admin") && admin.contains("system:masters"),
        "{admin}"
    );

    // A certificate from another cluster's CA is no one here.
    let other = Server::start();
    let mallory = other.data_dir().join("mallory.kubeconfig");
    ok(&Command::new(BIN)
        .arg("--data-dir")
        .arg(other.data_dir())
        .args(["kubeconfig", "create", "--user", "mallory", "-o"])
        .arg(&mallory)
        .output()
        .unwrap());
    let mut kc: serde_json::Value = serde_json::to_value(
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(
            &std::fs::read_to_string(&mallory).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    // Point it at the first server (trusting its CA): the handshake refuses the stranger's certificate.
    let first: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(s.kubeconfig()).unwrap()).unwrap();
    kc["clusters"] = serde_json::to_value(&first["clusters"]).unwrap();
    std::fs::write(&mallory, serde_json::to_string(&kc).unwrap()).unwrap();
    let refused = fails(&kubectl_as(&k, &mallory, &["get", "namespaces"]));
    assert!(
        refused.contains("certificate")
            || refused.contains("Unauthorized")
            || refused.contains("tls"),
        "{refused}"
    );

    // Several groups in one certificate (one O each, as Kubernetes reads them): whoami shows them all, and a
    // binding to the second group authorizes.
    let bob = s.data_dir().join("bob.kubeconfig");
    ok(&Command::new(BIN)
        .arg("--data-dir")
        .arg(s.data_dir())
        .args([
            "kubeconfig",
            "create",
            "--user",
            "bob",
            "--group",
            "team-a",
            "--group",
            "readers",
            "--group",
            "on-call",
            "-o",
        ])
        .arg(&bob)
        .output()
        .unwrap());
    let who: serde_json::Value = serde_json::from_str(&ok(&kubectl_as(
        &k,
        &bob,
        &["auth", "whoami", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["team-a", "readers", "on-call", "system:authenticated"])
    );
    assert!(fails(&kubectl_as(&k, &bob, &["get", "namespaces"])).contains("cannot list"));
    ok(&kubectl_as(
        &k,
        &s.kubeconfig(),
        &[
            "create",
            "clusterrolebinding",
            "readers-view",
            "--clusterrole=view",
            "--group=readers",
        ],
    ));
    let mut listed = String::new();
    for _ in 0..50 {
        let out = kubectl_as(&k, &bob, &["get", "namespaces", "-o", "name"]);
        if out.status.success() {
            listed = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(listed.contains("namespace/default"), "{listed}");

    // A clear error for a directory without the cluster CA.
    let empty = tempfile::tempdir().unwrap();
    let nowhere = fails(
        &Command::new(BIN)
            .arg("--data-dir")
            .arg(empty.path())
            .args(["kubeconfig", "create", "--user", "bob"])
            .output()
            .unwrap(),
    );
    assert!(
        nowhere.contains("server's kubeconfig") || nowhere.contains("no cluster CA"),
        "{nowhere}"
    );
}

/// A reqwest client trusting the cluster CA, presenting `identity` (certificate and key PEM) if given.
fn tls_client(ca: &str, identity: Option<(String, String)>) -> reqwest::blocking::Client {
    capstan::sys::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match identity {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut key.as_bytes())
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}

#[test]
fn a_node_agent_speaks_https_only_and_answers_only_the_api_server() {
    let s = Server::start();
    let _a = common::Agent::start(&s, "node-x", &[]);
    let node = common::within(
        std::time::Duration::from_secs(30),
        "node-x registered",
        || {
            let (code, n) = s.call("GET", "/api/v1/nodes/node-x", "", "");
            (code == 200 && n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].is_u64())
                .then_some(n)
        },
    );
    let ip = node["status"]["addresses"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    // Plain HTTP gets no answer.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://{ip}:{port}/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send();
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP is not served"
    );
    // TLS without a client certificate is refused in the handshake.
    let ca = s.ca();
    let url = format!("https://{ip}:{port}/healthz");
    assert!(tls_client(&ca, None).get(&url).send().is_err());
    // A client certificate of the cluster CA that is not the API server's is refused.
    let alice = s.data_dir().join("alice.kubeconfig");
    ok(&Command::new(BIN)
        .arg("--data-dir")
        .arg(s.data_dir())
        .args(["kubeconfig", "create", "--user", "alice", "-o"])
        .arg(&alice)
        .output()
        .unwrap());
    let kc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&alice).unwrap()).unwrap();
    use base64::Engine;
    let field = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(kc["users"][0]["user"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let r = tls_client(
        &ca,
        Some((field("client-certificate-data"), field("client-key-data"))),
    )
    .get(&url)
    .send()
    .expect("the handshake succeeds with a certificate of the cluster CA");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().unwrap().contains("only the API server"));
    // The API server itself gets through (kubectl logs relays through it).
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hi"},
        "spec": {"nodeName": "node-x", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "none", "command": ["sh", "-c", "echo over-tls; sleep 600"]}]}});
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/pods"),
        "application/json",
        &pod.to_string(),
    );
    assert_eq!(code, 201);
    common::within(
        std::time::Duration::from_secs(30),
        "logs through the API server",
        || {
            let (code, log) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/default/pods/hi/log"),
                "",
                "",
            );
            (code == 200 && log.to_string().contains("over-tls")).then_some(())
        },
    );
}
