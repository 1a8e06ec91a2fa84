//! Simulated nodes (`capstan agent --simulate N`) against a real `capstan server`: the nodes register Ready with
//! their Leases kept renewed, the scheduler spreads a Deployment's pods over them, the pods become Running and Ready
//! with addresses and no processes, and scaling down removes pods as a kubelet would confirm them gone.

mod common;

use std::time::Duration;

use common::{within, Agent, Server};
use serde_json::Value;

fn items(s: &Server, path: &str) -> Vec<Value> {
    let (code, v) = s.call("GET", path, "", "");
    assert_eq!(code, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn simulated_nodes_run_a_deployment_as_state_and_keep_their_leases() {
    let s = Server::start();
    let _sim = Agent::start(
        &s,
        "unused",
        &[
            "--simulate",
            "20",
            "--simulate-prefix",
            "hollow",
            "--simulate-ready-after",
            "0.2",
            "--cpu",
            "4",
            "--max-pods",
            "10",
        ],
    );
    let nodes_path = concat!("/", "api/v1/nodes");
    within(Duration::from_secs(30), "20 simulated nodes Ready", || {
        let ready = items(&s, nodes_path)
            .iter()
            .filter(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("hollow-"))
                    && n["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        (ready == 20).then_some(())
    });
    let deploy = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "wide", "namespace": "default"},
        "spec": {"replicas": 60, "selector": {"matchLabels": {"app": "wide"}},
            "template": {"metadata": {"labels": {"app": "wide"}},
                "spec": {"containers": [{"name": "c", "image": "nothing:1",
                    "resources": {"requests": {"cpu": "100m"}}}]}}}});
    let (code, v) = s.call(
        "POST",
        concat!("/", "apis/apps/v1/namespaces/default/deployments"),
        "application/json",
        &deploy.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    let deploy_path = concat!("/", "apis/apps/v1/namespaces/default/deployments/wide");
    within(Duration::from_secs(60), "60 replicas available", || {
        let (_, d) = s.call("GET", deploy_path, "", "");
        (d["status"]["availableReplicas"] == 60).then_some(())
    });
    let pods = items(&s, concat!("/", "api/v1/namespaces/default/pods"));
    assert_eq!(pods.len(), 60);
    let mut per_node = std::collections::HashMap::new();
    let mut ips = std::collections::HashSet::new();
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        let node = p["spec"]["nodeName"].as_str().unwrap().to_string();
        assert!(node.starts_with("hollow-"), "{node}");
        *per_node.entry(node).or_insert(0) += 1;
        assert!(ips.insert(p["status"]["podIP"].as_str().unwrap().to_string()));
    }
    // --max-pods 10 on each of 20 nodes: 60 pods need at least 6 nodes, and none holds more than 10.
    assert!(per_node.len() >= 6, "{per_node:?}");
    assert!(per_node.values().all(|n| *n <= 10), "{per_node:?}");

    // Every node's Lease is renewed (a quarter of the 40 s lease: every 10 s).
    let leases_path = concat!(
        "/",
        "apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    );
    let renewed = |s: &Server| -> std::collections::HashMap<String, String> {
        items(s, leases_path)
            .iter()
            .filter_map(|l| {
                let name = l["metadata"]["name"].as_str()?;
                name.starts_with("hollow-").then(|| {
                    (
                        name.to_string(),
                        l["spec"]["renewTime"].as_str().unwrap_or("").to_string(),
                    )
                })
            })
            .collect()
    };
    let first = within(Duration::from_secs(20), "20 leases", || {
        let r = renewed(&s);
        (r.len() == 20).then_some(r)
    });
    within(Duration::from_secs(25), "every lease renewed again", || {
        let now = renewed(&s);
        first
            .iter()
            .all(|(n, t)| now.get(n).is_some_and(|t2| t2 > t))
            .then_some(())
    });

    // Scaling down: the pods go away (a simulated kubelet confirms each deletion).
    let (code, v) = s.call(
        "PATCH",
        concat!(
            "/",
            "apis/apps/v1/namespaces/default/deployments/wide/scale"
        ),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":5}}"#,
    );
    assert_eq!(code, 200, "{v}");
    within(Duration::from_secs(60), "5 pods left", || {
        let n = items(&s, concat!("/", "api/v1/namespaces/default/pods")).len();
        (n == 5).then_some(())
    });
}
