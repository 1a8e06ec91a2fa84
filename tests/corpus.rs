//! Walks the Kubernetes documentation's examples (tests/fixtures/k8s-website-examples) through the real kubectl:
//! every valid document of a kind Capstan serves is accepted and reads back with the same content; every document of
//! a kind it does not serve is refused with an error naming the kind; every file in MALFORMED.txt is refused with an
//! error naming the problem.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::Server;
use serde::Deserialize;
use serde_json::Value;

/// Documents real Kubernetes refuses as well, though MALFORMED.txt does not list them (each checked for the same
/// refusal Kubernetes gives).
const ALSO_INVALID: &[(&str, &str)] = &[
    // A template: `$ITEM` is to be replaced before use; "$" is not allowed in names.
    ("application/job/job-tmpl.yaml", "process-item-$ITEM"),
    // Placeholders, not base64.
    ("secret/tls-auth-secret.yaml", "base64"),
    // `spec.ipFamily` was removed from the Service API in Kubernetes 1.20.
    (
        "service/networking/dual-stack-ipv6-svc.yaml",
        "unknown field \"spec.ipFamily\"",
    ),
    (
        "service/networking/dual-stack-ipv6-lb-svc.yaml",
        "unknown field \"spec.ipFamily\"",
    ),
];

/// What each malformed file's error must mention.
fn malformed_reason(file: &str) -> &'static str {
    match file {
        "controllers/job-pod-failure-policy-ignore.yaml" => "tab",
        "pods/inject/pod-multiple-secret-env-variable.yaml" => "tab",
        "pods/inject/envars-file-container.yaml" => "escape",
        "pods/inject/pod-single-secret-env-variable.yaml" => "apiVersion",
        "secret/serviceaccount/mysecretname.yaml" => "annotations",
        "controllers/job-success-policy-example.yaml" => "name",
        "pods/pod-with-node-affinity.yaml" => "requiredDuringSchedulingIgnoredDuringExecution",
        _ => "",
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a YAML file, stopping at the first that does not parse.
fn documents(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(text) {
        match Value::deserialize(d) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// `want` is contained in `have`: every field of `want` is in `have` with the same value (numbers and their string
/// forms count as equal, as quantities are stored as strings).
fn contained(want: &Value, have: &Value, path: &str, diffs: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, wv) in w {
                if wv.is_null() {
                    continue;
                }
                match h.get(k) {
                    Some(hv) => contained(wv, hv, &format!("{path}.{k}"), diffs),
                    None => diffs.push(format!("{path}.{k} missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(h)) => {
            // A pod's tolerations also hold the two the API server adds (Kubernetes' DefaultTolerationSeconds
            // admission: not-ready and unreachable, 300 s) unless the manifest had its own.
            let h: Vec<Value> = if path.ends_with(".tolerations") {
                h.iter()
                    .filter(|t| {
                        !(t["tolerationSeconds"] == 300
                            && t["effect"] == "NoExecute"
                            && [
                                "node.kubernetes.io/not-ready",
                                "node.kubernetes.io/unreachable",
                            ]
                            .contains(&t["key"].as_str().unwrap_or(""))
                            && !w.contains(t))
                    })
                    .cloned()
                    .collect()
            } else if path.ends_with(".volumes") || path.ends_with(".volumeMounts") {
                // And the ServiceAccount volume (Kubernetes' ServiceAccount admission) with its mounts.
                h.iter()
                    .filter(|v| {
                        !v["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("kube-api-access-"))
                    })
                    .cloned()
                    .collect()
            } else {
                h.clone()
            };
            if w.len() != h.len() {
                diffs.push(format!("{path}: {} items, read back {}", w.len(), h.len()));
                return;
            }
            for (i, (a, b)) in w.iter().zip(&h).enumerate() {
                contained(a, b, &format!("{path}[{i}]"), diffs);
            }
        }
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n))
            if n.to_string() == *s => {}
        // YAML 1.1 octal (`01777`), which kubectl reads as a number.
        (Value::String(s), Value::Number(n))
            if s.starts_with('0') && i64::from_str_radix(s, 8).ok() == n.as_i64() => {}
        (a, b) if a == b => {}
        (a, b) => diffs.push(format!("{path}: applied {a}, read back {b}")),
    }
}

#[test]
fn kubernetes_documentation_examples() {
    let Some(k) = common::kubectl() else { return };
    let root = common::corpus();
    assert!(root.is_dir(), "corpus missing at {}", root.display());
    let malformed: BTreeSet<String> = std::fs::read_to_string(root.join("MALFORMED.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let s = Server::start();
    let files = yaml_files(&root);
    assert!(files.len() > 250, "corpus has {} files", files.len());

    // Namespaces the examples name must exist first (as the documentation's walk-throughs create them).
    let mut namespaces = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for v in documents(&text) {
            if let Some(ns) = v.pointer("/metadata/namespace").and_then(Value::as_str) {
                namespaces.insert(ns.to_string());
            }
        }
    }
    for ns in &namespaces {
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                .to_string();
        let (code, _) = s.call("POST", "/api/v1/namespaces", "application/json", &body);
        assert!(code == 201 || code == 409);
    }

    // Files that name a namespace or hold cluster-scoped objects may touch the same object as another file (fluentd
    // in kube-system, twice): those run one after another; the rest, each in its own namespace, in parallel.
    let shared = |p: &PathBuf| {
        let t = std::fs::read_to_string(p).unwrap_or_default();
        t.contains("namespace:")
            || t.contains("namespace\":")
            || ["PersistentVolume\n", "StorageClass", "kind: Namespace"]
                .iter()
                .any(|k| t.contains(k))
    };
    let (serial, parallel): (Vec<PathBuf>, Vec<PathBuf>) =
        files.iter().cloned().partition(|p| shared(p));
    let files: Vec<PathBuf> = serial.iter().chain(parallel.iter()).cloned().collect();
    let serial_count = serial.len();
    let failures = Mutex::new(Vec::<String>::new());
    let counts = Mutex::new((0usize, 0usize, 0usize)); // accepted, unserved refused, malformed refused
    let next = Mutex::new(0usize);
    let serial_next = Mutex::new(0usize);
    let (root, failures_ref, counts_ref, malformed, s_ref, k_ref) =
        (&root, &failures, &counts, &malformed, &s, &k);
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (failures, counts, s, k) = (failures_ref, counts_ref, s_ref, k_ref);
            let serial_next = &serial_next;
            let next = &next;
            let files = &files;
            scope.spawn(move || loop {
                let i = if worker == 0 {
                    let mut n = serial_next.lock().unwrap();
                    if *n >= serial_count {
                        return;
                    }
                    *n += 1;
                    *n - 1
                } else {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    serial_count + *n - 1
                };
                let Some(path) = files.get(i) else { return };
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                let fail = |m: String| failures.lock().unwrap().push(format!("{rel}: {m}"));
                let text = std::fs::read_to_string(path).unwrap();
                let own_ns = format!("corpus-{i}");
                let out = if malformed.contains(&rel) || ALSO_INVALID.iter().any(|(f, _)| *f == rel) {
                    s.kubectl(k, &["apply", "-f", path.to_str().unwrap()])
                } else {
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": own_ns}}).to_string();
                    s.call("POST", "/api/v1/namespaces", "application/json", &body);
                    let names_ns = text.contains("namespace:") || text.contains("namespace\":");
                    if names_ns {
                        s.kubectl(k, &["apply", "-f", path.to_str().unwrap()])
                    } else {
                        s.kubectl(k, &["apply", "-n", &own_ns, "-f", path.to_str().unwrap()])
                    }
                };
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                if malformed.contains(&rel) {
                    let why = malformed_reason(&rel);
                    // kubectl's own YAML parser accepts `\'` in double-quoted strings; the server then only sees
                    // valid JSON. Capstan's parser (below) refuses it.
                    let kubectl_parses = rel == "pods/inject/envars-file-container.yaml";
                    if out.status.success() != kubectl_parses {
                        fail(format!("kubectl apply of a malformed file: success={}: {stderr}", out.status.success()));
                    } else if !kubectl_parses && !stderr.contains(why) {
                        fail(format!("kubectl's error does not name the problem ({why}): {stderr}"));
                    }
                    let own = s.capstan(&["apply", "-n", "default", "-f", path.to_str().unwrap()]);
                    let own_err = String::from_utf8_lossy(&own.stderr).to_string();
                    if own.status.success() || !own_err.contains(why) || !own_err.contains(&rel) {
                        fail(format!("capstan apply must refuse naming the file and {why}: {own_err}"));
                    } else {
                        counts.lock().unwrap().2 += 1;
                    }
                    continue;
                }
                if let Some((_, why)) = ALSO_INVALID.iter().find(|(f, _)| *f == rel) {
                    if out.status.success() || !stderr.contains(why) {
                        fail(format!("expected a refusal naming {why}: {stderr}"));
                    } else {
                        counts.lock().unwrap().2 += 1;
                    }
                    continue;
                }
                let docs: Vec<Value> = documents(&text).into_iter().filter(|v| v.is_object()).collect();
                let mut expect_failure = false;
                for doc in &docs {
                    let av = doc["apiVersion"].as_str().unwrap_or("");
                    let kind = doc["kind"].as_str().unwrap_or("");
                    let Some(info) = capstan::api::registry::by_kind(av, kind) else {
                        expect_failure = true;
                        if !stderr.contains(&format!("no matches for kind \"{kind}\"")) {
                            fail(format!("unserved kind {kind} not named in: {stderr}"));
                        } else {
                            counts.lock().unwrap().1 += 1;
                        }
                        continue;
                    };
                    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                    let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(&own_ns);
                    let path = capstan::client::resource_path(info, info.namespaced.then_some(ns), Some(name));
                    let (code, got) = s.call("GET", &path, "", "");
                    if code != 200 {
                        fail(format!("{kind} {name} not stored ({code}); kubectl said: {stderr}"));
                        continue;
                    }
                    let mut want = doc.clone();
                    // Secrets: stringData is write-only and lands base64-encoded in data.
                    if let Some(Value::Object(sd)) = want.as_object_mut().and_then(|m| m.remove("stringData")) {
                        use base64::Engine;
                        for (k, v) in sd {
                            let text = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
                            want["data"][k.as_str()] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
                        }
                    }
                    let mut have = got.clone();
                    for v in [&mut want, &mut have] {
                        if let Some(m) = v.as_object_mut() {
                            m.remove("status");
                            m.remove("metadata");
                        }
                    }
                    let mut diffs = Vec::new();
                    contained(&want, &have, "", &mut diffs);
                    for f in ["labels", "annotations"] {
                        if let Some(w) = doc.pointer(&format!("/metadata/{f}")) {
                            contained(w, got.pointer(&format!("/metadata/{f}")).unwrap_or(&Value::Null), f, &mut diffs);
                        }
                    }
                    if diffs.is_empty() {
                        counts.lock().unwrap().0 += 1;
                    } else {
                        fail(format!("{kind} {name} reads back differently: {diffs:?}"));
                    }
                }
                if out.status.success() == expect_failure {
                    fail(format!("kubectl exit status {:?} but expected failure={expect_failure}: {stderr}", out.status.code()));
                }
            });
        }
    });
    let (accepted, unserved, refused) = *counts.lock().unwrap();
    eprintln!("corpus: {accepted} documents accepted and read back, {unserved} unserved kinds named, {refused} invalid files refused");
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(accepted > 250, "only {accepted} documents accepted");
}
