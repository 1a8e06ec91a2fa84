//! The Deployment controller in a real `capstan server`, driven by the real kubectl: rollout, rollout status,
//! history and undo. Until the node agent lands (later in this issue), the test plays its part for readiness: it
//! marks pods Running and Ready through the pods' status subresource, as a kubelet would.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok, Server};
use serde_json::{json, Value};

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: demo:v1
"#;

/// Marks every pod of the default namespace Running and Ready (the node agent's job).
fn stand_in_kubelet(s: Arc<Server>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let (_, list) = s.call("GET", "/api/v1/namespaces/default/pods", "", "");
            for p in list["items"].as_array().cloned().unwrap_or_default() {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
                if ready || !p["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let name = p["metadata"]["name"].as_str().unwrap_or("");
                let t = "2024-01-01T00:00:00Z";
                let status = json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": t},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": t}]}});
                s.call(
                    "PATCH",
                    &format!("/api/v1/namespaces/default/pods/{name}/status"),
                    "application/merge-patch+json",
                    &status.to_string(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

fn replicasets(s: &Server) -> Vec<Value> {
    let (_, l) = s.call(
        "GET",
        "/apis/apps/v1/namespaces/default/replicasets",
        "",
        "",
    );
    l["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn deployment_rolls_out_reports_history_and_undoes() {
    let Some(k) = common::kubectl() else { return };
    let s = Arc::new(Server::start());
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = stand_in_kubelet(s.clone(), stop.clone());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, DEPLOY).unwrap();
    ok(&s.kubectl(&k, &["apply", "-f", f.to_str().unwrap()]));
    let out = ok(&s.kubectl(&k, &["rollout", "status", "deploy/web", "--timeout=60s"]));
    assert!(out.contains("successfully rolled out"), "{out}");
    let rs1 = replicasets(&s);
    assert_eq!(rs1.len(), 1);
    assert_eq!(
        rs1[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // A new template rolls: a second ReplicaSet takes over, the first goes to zero.
    std::fs::write(&f, DEPLOY.replace("demo:v1", "demo:v2")).unwrap();
    ok(&s.kubectl(&k, &["apply", "-f", f.to_str().unwrap()]));
    let out = ok(&s.kubectl(&k, &["rollout", "status", "deploy/web", "--timeout=60s"]));
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = replicasets(&s);
    assert_eq!(rss.len(), 2);
    for rs in &rss {
        let image = rs["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap();
        let replicas = rs["spec"]["replicas"].as_i64().unwrap();
        assert_eq!(replicas, if image == "demo:v2" { 3 } else { 0 }, "{image}");
    }
    let history = ok(&s.kubectl(&k, &["rollout", "history", "deploy/web"]));
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo: back to the first template, as revision 3.
    ok(&s.kubectl(&k, &["rollout", "undo", "deploy/web"]));
    ok(&s.kubectl(&k, &["rollout", "status", "deploy/web", "--timeout=60s"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = s.call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            "",
            "",
        );
        let image = d["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        let v1 = replicasets(&s)
            .into_iter()
            .find(|r| r["spec"]["template"]["spec"]["containers"][0]["image"] == "demo:v1");
        if image == "demo:v1"
            && v1.as_ref().is_some_and(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
                    && r["spec"]["replicas"] == 3
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "undo did not complete: {image}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    kubelet.join().unwrap();
}
