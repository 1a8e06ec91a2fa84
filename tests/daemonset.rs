//! DaemonSets end to end on several real nodes (`capstan up` plus `capstan agent`s): one pod per eligible node, a
//! joining node gets one, a tainted node does not, a leaving node loses it, and rolling updates, history and undo
//! through the real kubectl.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ok, within, Agent, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn daemon(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {{app: agent}}
  updateStrategy:
    rollingUpdate: {{maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: agent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: none
        command: ["sleep", "600"]
        env:
        - {{name: VERSION, value: "{version}"}}
"#
    )
}

/// Running (not terminating) pods of the DaemonSet by node, with their VERSION.
fn by_node(s: &Server) -> BTreeMap<String, Vec<String>> {
    let (_, list) = s.call(
        "GET",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dagent",
        "",
        "",
    );
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in list["items"].as_array().cloned().unwrap_or_default() {
        if !p["metadata"]["deletionTimestamp"].is_null() || p["status"]["phase"] != "Running" {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        let v = p["spec"]["containers"][0]["env"][0]["value"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.entry(node).or_default().push(v);
    }
    out
}

fn status(s: &Server) -> Value {
    s.call(
        "GET",
        "/apis/apps/v1/namespaces/default/daemonsets/agent",
        "",
        "",
    )
    .1["status"]
        .clone()
}

#[test]
fn a_daemonset_runs_one_pod_per_eligible_node_and_rolls_back_through_its_history() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let _b = Agent::start(&s, "node-b", &[]);
    within(LONG, "two nodes", || {
        let (_, nodes) = s.call("GET", "/api/v1/nodes", "", "");
        (nodes["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
    });
    s.kubectl_apply(&k, &daemon("v1"));
    let want = |nodes: &[&str], version: &str| {
        let want: BTreeMap<String, Vec<String>> = nodes
            .iter()
            .map(|n| (n.to_string(), vec![version.to_string()]))
            .collect();
        within(LONG, &format!("{version} on exactly {nodes:?}"), || {
            (by_node(&s) == want).then_some(())
        })
    };
    want(&["node-a", "node-b"], "v1");
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    ));
    let st = status(&s);
    assert_eq!(st["desiredNumberScheduled"], 2, "{st}");
    assert_eq!(st["numberReady"], 2, "{st}");

    // A node joining gets its pod.
    let mut c = Agent::start(&s, "node-c", &[]);
    want(&["node-a", "node-b", "node-c"], "v1");

    // Cordoned alone, a node keeps its daemon pod (daemons tolerate cordons, as in Kubernetes); tainted against it,
    // the pod goes.
    ok(&s.kubectl(&k, &["cordon", "node-c"]));
    std::thread::sleep(Duration::from_secs(1));
    want(&["node-a", "node-b", "node-c"], "v1");
    ok(&s.kubectl(&k, &["taint", "nodes", "node-c", "dedicated=db:NoSchedule"]));
    want(&["node-a", "node-b"], "v1");
    within(LONG, "desired 2 while node-c is tainted", || {
        (status(&s)["desiredNumberScheduled"] == 2).then_some(())
    });

    // A rolling update replaces every pod; the history has both templates and undo brings the first one back.
    s.kubectl_apply(&k, &daemon("v2"));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    ));
    want(&["node-a", "node-b"], "v2");
    let history = ok(&s.kubectl(&k, &["rollout", "history", "daemonset/agent"]));
    assert!(history.contains('1') && history.contains('2'), "{history}");
    ok(&s.kubectl(&k, &["rollout", "undo", "daemonset/agent"]));
    want(&["node-a", "node-b"], "v1");
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    ));

    // A node that leaves loses its pod: untainted node-c gets one back, then goes away with its agent.
    ok(&s.kubectl(
        &k,
        &["taint", "nodes", "node-c", "dedicated=db:NoSchedule-"],
    ));
    want(&["node-a", "node-b", "node-c"], "v1");
    c.crash_machine(&s);
    ok(&s.kubectl(&k, &["delete", "node", "node-c"]));
    within(LONG, "node-c's pod deleted", || {
        let (_, list) = s.call(
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dagent",
            "",
            "",
        );
        (!list["items"].as_array().into_iter().flatten().any(|p| {
            p["spec"]["nodeName"] == "node-c" && p["metadata"]["deletionTimestamp"].is_null()
        }))
        .then_some(())
    });
    within(LONG, "desired back to 2", || {
        (status(&s)["desiredNumberScheduled"] == 2).then_some(())
    });
}
