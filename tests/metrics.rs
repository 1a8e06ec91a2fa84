//! `kubectl top` against a real `capstan up`: the metrics.k8s.io API (registered as the local APIService
//! `v1beta1.metrics.k8s.io`) shows the node's and the pods' usage the node agent measured, and the numbers move when
//! a pod burns CPU. APIServices of aggregated servers elsewhere are refused with a clear message.

mod common;

use std::time::Duration;

use common::{ok, within, Server};

/// Millicores in a `kubectl top` cell (`983m`, `1` = 1000m).
fn millicores(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => cell.parse::<u64>().map(|c| c * 1000).unwrap_or(0),
    }
}

#[test]
fn kubectl_top_shows_nodes_and_pods_and_a_busy_pod_stands_out() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "deployment",
            "burn",
            "--image=none",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "deployment",
            "idle",
            "--image=none",
            "--",
            "sleep",
            "600",
        ],
    ));
    // Two samples of each container (every 5 s) make a rate.
    let pods = within(Duration::from_secs(60), "both pods in kubectl top", || {
        let out = s.kubectl(&k, &["top", "pods", "-A", "--no-headers"]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let cpu = |prefix: &str| {
            text.lines()
                .find(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .and_then(|l| l.split_whitespace().nth(2).map(millicores))
        };
        match (cpu("burn-"), cpu("idle-")) {
            (Some(b), Some(i)) => Some((b, i, text)),
            _ => None,
        }
    });
    let (burn, idle, text) = pods;
    assert!(burn >= 300, "the busy pod uses CPU: {text}");
    assert!(idle < 100, "the idle one does not: {text}");
    let nodes = ok(&s.kubectl(&k, &["top", "nodes", "--no-headers"]));
    let cells: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(cells[0], "node-a", "{nodes}");
    assert!(millicores(cells[1]) >= 300, "{nodes}");
    assert!(cells[3].ends_with("Mi"), "{nodes}");
    // Registered as a local APIService, available.
    let svc = ok(&s.kubectl(&k, &["get", "apiservice", "v1beta1.metrics.k8s.io"]));
    assert!(svc.contains("Local") && svc.contains("True"), "{svc}");
    // An aggregated API server elsewhere: refused, by field.
    let yaml = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1.example.com}\nspec: {group: example.com, version: v1, groupPriorityMinimum: 100, versionPriority: 10, service: {namespace: default, name: ext}}\n";
    let mut child = std::process::Command::new(&k)
        .env("KUBECONFIG", s.kubeconfig())
        .arg("--cache-dir")
        .arg(s.dir.path().join("kubectl-cache"))
        .args(["create", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.service") && err.contains("aggregated API servers are not supported"),
        "{err}"
    );
}
