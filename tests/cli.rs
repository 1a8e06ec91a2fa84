//! The `capstan` CLI against a real server: apply (all documents checked before any is written), get as tables and
//! YAML, delete; and `capstan up` applying the example repository.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, ok, Server};

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo")
}

#[test]
fn cli_applies_gets_and_deletes() {
    let s = Server::start();
    let out = ok(&s.capstan(&["apply", "-f", repo().to_str().unwrap()]));
    assert!(
        out.contains("deployment.apps/hello serverside-applied"),
        "{out}"
    );
    let table = ok(&s.capstan(&["get", "deploy", "-n", "demo"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(table.contains("hello") && table.contains("0/2"), "{table}");
    let wide = ok(&s.capstan(&["get", "deploy", "-n", "demo", "-o", "wide"]));
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=hello"),
        "{wide}"
    );
    let yaml = ok(&s.capstan(&["get", "deploy", "hello", "-n", "demo", "-o", "yaml"]));
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let names = ok(&s.capstan(&["get", "cm,svc", "-n", "demo", "-o", "name"]));
    assert!(
        names.contains("configmap/hello-config") && names.contains("service/hello"),
        "{names}"
    );
    let all = ok(&s.capstan(&["get", "all", "-A"]));
    assert!(
        all.contains("NAMESPACE") && all.contains("deployment.apps/hello"),
        "{all}"
    );
    let sel = ok(&s.capstan(&["get", "deploy", "-A", "-l", "app=hello", "-o", "name"]));
    assert_eq!(sel.trim(), "deployment.apps/hello");

    // One bad document: nothing from the file is applied, and the error names the file and the problem.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("two.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\ndata:\n  a: b\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n").unwrap();
    let err = fails(&s.capstan(&["apply", "-f", f.to_str().unwrap()]));
    assert!(
        err.contains("two.yaml") && err.contains("document 2") && err.contains("metadata.name"),
        "{err}"
    );
    let none = fails(&s.capstan(&["get", "cm", "fine"]));
    assert!(
        none.contains("not found"),
        "the good document was not applied either: {none}"
    );
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [oops\n",
    )
    .unwrap();
    let err = fails(&s.capstan(&["apply", "-f", f.to_str().unwrap()]));
    assert!(err.contains("two.yaml") && err.contains("line"), "{err}");

    let out = ok(&s.capstan(&["delete", "deploy", "hello", "-n", "demo"]));
    assert!(out.contains("deployments.apps \"hello\" deleted"), "{out}");
    let err = fails(&s.capstan(&["get", "deploy", "hello", "-n", "demo"]));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn up_serves_and_applies_the_example_repository() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", repo().to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("kubeconfig written") {
        line.clear();
    }
    std::thread::spawn(move || for _ in err.lines() {});
    let kc = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new(common::BIN)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "deploy", "hello", "-n", "demo", "-o", "name"])
            .output()
            .unwrap();
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "deployment.apps/hello"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "up did not apply the repository: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn demo_app_serves_version_health_and_can_fail() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(common::BIN)
        .args(["demo-app", "--listen", &format!("127.0.0.1:{port}")])
        .env("VERSION", "v7")
        .env("MESSAGE", "hi there")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    capstan::apiserver::tls::init_crypto();
    let http = reqwest::blocking::Client::new();
    let get = |path: &str| -> Option<(u16, String)> {
        let r = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let root = loop {
        if let Some(r) = get("/") {
            break r;
        }
        assert!(Instant::now() < deadline, "demo app did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&root.1).unwrap();
    assert_eq!(
        (v["version"].as_str(), v["message"].as_str()),
        (Some("v7"), Some("hi there"))
    );
    assert_eq!(get("/healthz").unwrap().0, 200);
    get("/fail");
    assert_eq!(get("/healthz").unwrap().0, 503);
    get("/recover");
    assert_eq!(get("/healthz").unwrap().0, 200);
    get("/exit?code=3");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
}
