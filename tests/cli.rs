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
fn up_runs_the_example_repository_and_stops_its_pods_on_exit() {
    // reqwest is built without a default TLS provider; this test may run alone (nextest).
    capstan::sys::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let cidr = common::unique_cluster_cidr();
    let mut child = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", repo().to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--cluster-cidr", &cidr])
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
    let capstan = |args: &[&str]| {
        Command::new(common::BIN)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .output()
            .unwrap()
    };
    // The demo Deployment of examples/repo comes up: two Ready pods serving the ConfigMap's message.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pods = loop {
        let out = capstan(&["get", "pods", "-n", "demo", "-l", "app=hello", "-o", "json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let ready = items
                .iter()
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            if ready == 2 {
                break items;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the demo pods did not become Ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut pids = Vec::new();
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let answer: serde_json::Value = reqwest::blocking::get(format!("http://{ip}:8080/"))
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(answer["message"], "Hello from Capstan");
        pids.push(answer["pid"].as_i64().unwrap());
    }
    // Ctrl-C / SIGTERM: the pods are stopped before capstan exits.
    common::terminate(&mut child, Duration::from_secs(30));
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pod process {pid} still runs"
        );
    }
    // As root the pods had network namespaces of their own (the bridge network): gone with them.
    for p in &pods {
        let uid = p["metadata"]["uid"].as_str().unwrap();
        let ns = std::path::Path::new("/run/capstan/netns").join(uid);
        assert!(!ns.exists(), "{} left behind", ns.display());
    }
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
    capstan::sys::init_crypto();
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

/// `capstan kustomize DIR` prints what `kubectl kustomize DIR` prints for an overlay on a base (prefix, namespace,
/// labels, images), in both orders.
#[test]
fn capstan_kustomize_prints_what_kubectl_kustomize_prints() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let w = |p: &str, text: &str| {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    w(
        "base/kustomization.yaml",
        "resources:\n- web.yaml\n- svc.yaml\n",
    );
    w(
        "base/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n        envFrom:\n        - configMapRef: {name: settings}\n",
    );
    w(
        "base/svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n",
    );
    w(
        "prod/kustomization.yaml",
        "resources:\n- ../base\n- ns.yaml\nnamePrefix: prod-\nnamespace: prod\ncommonLabels:\n  env: prod\nimages:\n- name: nginx\n  newTag: \"1.27\"\n",
    );
    w(
        "prod/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n",
    );
    let overlay = dir.path().join("prod");
    let overlay = overlay.to_str().unwrap();
    for extra in [&[][..], &["--reorder", "none"][..]] {
        let mut args = vec!["kustomize", overlay];
        args.extend_from_slice(extra);
        let ours = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(&args)
            .output()
            .unwrap();
        let theirs = std::process::Command::new(&kubectl)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(&args)
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .output()
            .unwrap();
        assert_eq!(ok(&ours), ok(&theirs), "capstan {args:?}");
    }
    let err = fails(
        &std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["kustomize", dir.path().to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("unable to find one of 'kustomization.yaml'"),
        "{err}"
    );
}

/// `capstan kustomize` and the real `kubectl kustomize` print the same for kustomize's own cases
/// (`tests/fixtures/kustomize`), run with each case's flags - except the cases whose behaviour changed after the
/// kustomize inside kubectl 1.32 (the corpus README lists them) and the ones `tests/kustomize_corpus.rs` lists as
/// Capstan's gaps.
#[test]
fn capstan_kustomize_matches_kubectl_kustomize_on_kustomizes_own_cases() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // "- `TestName`: ..." lines of the README's list of cases kubectl's kustomize builds differently.
    let newer: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(n, _)| n))
        .filter(|n| n.starts_with("Test"))
        .collect();
    assert!(newer.len() >= 5, "{newer:?}");
    let gaps = ["TestIssue4884_UseLocalConfigAsNameRefSource"];
    let mut cases: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            !newer.iter().any(|x| n.starts_with(x)) && !gaps.contains(&n)
        })
        .collect();
    cases.sort();
    assert!(cases.len() > 180, "{} cases", cases.len());
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("kubeconfig"), "").unwrap();
    let scratch = &scratch;
    let run = |case: &std::path::Path| -> Option<String> {
        let spec: serde_json::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(case.join("case.yaml")).unwrap())
                .unwrap();
        let mut args = vec!["kustomize".to_string()];
        args.extend(
            spec["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(String::from)),
        );
        args.push(spec["build"].as_str().unwrap().to_string());
        let ours = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(&args)
            .current_dir(case)
            .output()
            .unwrap();
        // kubectl reads no kubeconfig of anyone's: an empty one of this test's, and a cache of its own.
        let theirs = Command::new(&kubectl)
            .arg("--cache-dir")
            .arg(scratch.path().join("cache"))
            .args(&args)
            .current_dir(case)
            .env("KUBECONFIG", scratch.path().join("kubeconfig"))
            .output()
            .unwrap();
        match (ours.status.success(), theirs.status.success()) {
            (true, true) if ours.stdout == theirs.stdout => None,
            (false, false) => None,
            (o, t) => Some(format!(
                "{}: capstan {} / kubectl {}{}",
                case.display(),
                if o { "built" } else { "failed" },
                if t { "built" } else { "failed" },
                if o && t {
                    " with different output".to_string()
                } else {
                    format!(
                        ": {}",
                        String::from_utf8_lossy(if o { &theirs.stderr } else { &ours.stderr })
                    )
                }
            )),
        }
    };
    let differing: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<&[std::path::PathBuf]> = cases.chunks(cases.len().div_ceil(4)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.iter().filter_map(|c| run(c)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        differing.is_empty(),
        "{} of {} cases differ from kubectl:\n{}",
        differing.len(),
        cases.len(),
        differing.join("\n")
    );
}

#[test]
fn up_stops_a_pod_in_its_termination_grace_period_and_leaves_nothing_behind() {
    let mut s = Server::up(&[]);
    // A pod that ignores SIGTERM and asks for two minutes to stop, deleted just before Ctrl-C: `up` must neither
    // wait out those two minutes nor leave the pod's process, network or the node's bridge behind.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn"},
        "spec": {"terminationGracePeriodSeconds": 120, "containers": [{"name": "c", "image": "none",
        "command": ["sh", "-c", "trap '' TERM; sleep 600"]}]}}"#;
    let (code, body) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/pods"),
        "application/json",
        pod,
    );
    assert_eq!(code, 201, "{body}");
    let running = common::within(Duration::from_secs(30), "the pod Running", || {
        let (_, p) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/default/pods/stubborn"),
            "",
            "",
        );
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let uid = running["metadata"]["uid"].as_str().unwrap().to_string();
    let (_, node) = s.call("GET", concat!("/", "api/v1/nodes/node-a"), "", "");
    let bridge = node["spec"]["podCIDR"].as_str().map(|c| {
        let o: Vec<&str> = c.split('.').collect();
        format!(concat!("/", "sys/class/net/cs-{}-{}"), o[1], o[2])
    });
    let had_bridge = bridge
        .as_ref()
        .is_some_and(|b| std::path::Path::new(b).exists());
    let (code, body) = s.call(
        "DELETE",
        concat!("/", "api/v1/namespaces/default/pods/stubborn"),
        "",
        "",
    );
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !common::processes_under(s.data_dir()).is_empty(),
        "the pod's process runs through its grace period"
    );
    // Ctrl-C.
    // SAFETY: signals the server process this test started.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let status = common::within(Duration::from_secs(25), "capstan up to exit", || {
        s.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
    let left = common::processes_under(s.data_dir());
    assert!(left.is_empty(), "left running: {left:?}");
    let pod_dir = s.data_dir().join("nodes/node-a/pods").join(&uid);
    assert!(!pod_dir.exists(), "{} left behind", pod_dir.display());
    let ns = std::path::Path::new(concat!("/", "run/capstan/netns")).join(&uid);
    assert!(!ns.exists(), "{} left behind", ns.display());
    if had_bridge {
        let b = bridge.unwrap();
        assert!(!std::path::Path::new(&b).exists(), "{b} left behind");
    }
}

#[test]
fn events_expire_after_the_event_ttl() {
    let s = Server::start_with(&["--event-ttl", "2"]);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = format!(
        r#"{{"apiVersion": "v1", "kind": "Event", "metadata": {{"name": "e1"}},
        "involvedObject": {{"kind": "Pod", "name": "p", "namespace": "default"}},
        "reason": "Test", "message": "m", "type": "Normal", "lastTimestamp": "{now}", "firstTimestamp": "{now}"}}"#
    );
    let path = concat!("/", "api/v1/namespaces/default/events");
    let (code, body) = s.call("POST", path, "application/json", &event);
    assert_eq!(code, 201, "{body}");
    let one = concat!("/", "api/v1/namespaces/default/events/e1");
    assert_eq!(s.call("GET", one, "", "").0, 200, "kept within its TTL");
    common::within(Duration::from_secs(10), "the event expired", || {
        (s.call("GET", one, "", "").0 == 404).then_some(())
    });
}

#[test]
fn a_crash_loop_is_one_backoff_event_with_a_growing_count() {
    let s = Server::up(&[]);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
        "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "none",
        "command": ["sh", "-c", "exit 1"]}]}}"#;
    let (code, body) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/pods"),
        "application/json",
        pod,
    );
    assert_eq!(code, 201, "{body}");
    let events = || -> Vec<serde_json::Value> {
        let (_, list) = s.call(
            "GET",
            concat!(
                "/",
                "api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dcrasher"
            ),
            "",
            "",
        );
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["reason"] == "BackOff")
            .collect()
    };
    let counted = common::within(
        Duration::from_secs(40),
        "a BackOff event counted 3 times",
        || {
            let e = events();
            e.iter()
                .find(|e| e["count"].as_i64().unwrap_or(0) >= 3)
                .cloned()
        },
    );
    assert_eq!(events().len(), 1, "repeats are counted on one Event");
    assert_ne!(counted["firstTimestamp"], serde_json::Value::Null);
}
