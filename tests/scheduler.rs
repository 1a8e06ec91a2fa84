//! The scheduler in a real `capstan server`, with Node objects standing for machines (objects only - agents come
//! with the node-agent part of this issue): replicas spread over nodes, a cordoned node gets no new pods, and a pod
//! that fits nowhere stays Pending with the scheduler's reason.

mod common;

use common::{eventually, Server};
use serde_json::{json, Value};

fn add_node(s: &Server, name: &str) {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    let (code, v) = s.call(
        "POST",
        "/api/v1/nodes",
        "application/json",
        &node.to_string(),
    );
    assert_eq!(code, 201, "{v}");
}

fn placement(s: &Server, app: &str) -> Vec<String> {
    let (_, l) = s.call(
        "GET",
        &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
        "",
        "",
    );
    l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn pods_spread_avoid_cordoned_nodes_and_explain_when_nothing_fits() {
    let s = Server::start();
    add_node(&s, "node-a");
    add_node(&s, "node-b");
    // Nodes and pods reach the scheduler on separate watches; give the nodes a moment to arrive first, as they would
    // in a cluster whose nodes registered before its workloads.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "demo",
                     "resources": {"requests": {"cpu": "250m"}}}]}}}});
    s.call(
        "POST",
        "/apis/apps/v1/namespaces/default/replicasets",
        "application/json",
        &rs.to_string(),
    );
    let placed = eventually("four pods bound", || {
        Some(placement(&s, "web")).filter(|p| p.len() == 4 && p.iter().all(|n| !n.is_empty()))
    });
    assert_eq!(
        placed.iter().filter(|n| *n == "node-a").count(),
        2,
        "spread evenly: {placed:?}"
    );

    // Cordon node-b: new replicas all go to node-a.
    s.call(
        "PATCH",
        "/api/v1/nodes/node-b",
        "application/merge-patch+json",
        r#"{"spec":{"unschedulable":true}}"#,
    );
    s.call(
        "PATCH",
        "/apis/apps/v1/namespaces/default/replicasets/web/scale",
        "application/merge-patch+json",
        r#"{"spec":{"replicas":6}}"#,
    );
    let placed = eventually("six pods bound", || {
        Some(placement(&s, "web")).filter(|p| p.len() == 6 && p.iter().all(|n| !n.is_empty()))
    });
    assert_eq!(
        placed.iter().filter(|n| *n == "node-a").count(),
        4,
        "{placed:?}"
    );

    // Too big for any node: Pending, with the reason on the pod and in an event.
    let big = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big", "labels": {"app": "big"}},
        "spec": {"containers": [{"name": "c", "image": "demo", "resources": {"requests": {"cpu": "16"}}}]}});
    s.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &big.to_string(),
    );
    let msg: String = eventually("PodScheduled=False", || {
        let (_, p) = s.call("GET", "/api/v1/namespaces/default/pods/big", "", "");
        p["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                .map(|c| c["message"].as_str().unwrap_or("").to_string())
        })
    });
    assert_eq!(
        msg,
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable."
    );
    let (_, events) = s.call(
        "GET",
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dbig",
        "",
        "",
    );
    let reasons: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["reason"])
        .collect();
    assert!(
        reasons.iter().any(|r| *r == "FailedScheduling"),
        "{reasons:?}"
    );
    assert_eq!(placement(&s, "big"), [""]);
}
