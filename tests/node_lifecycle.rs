//! The node lifecycle end to end, with a real server and real agents: an agent that dies (kill -9) leaves its Node
//! Unknown and tainted within the grace period, Services stop sending to its pods at once, its Deployment pods are
//! replaced elsewhere when their tolerations run out while its StatefulSet pod is not duplicated, deleting the Node
//! removes its pods, and the agent coming back leaves no duplicates.

mod common;

use std::time::Duration;

use common::{ok, within, Agent, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

fn get(s: &Server, path: &str) -> Value {
    let (code, v) = s.call("GET", path, "", "");
    assert_eq!(code, 200, "{path}: {v}");
    v
}

fn pods(s: &Server, selector: &str) -> Vec<Value> {
    get(
        s,
        &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
    )["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn on(p: &Value, node: &str) -> bool {
    p["spec"]["nodeName"] == node
}

fn terminating(p: &Value) -> bool {
    !p["metadata"]["deletionTimestamp"].is_null()
}

/// The node's Ready status ("" while it is not registered).
fn ready_status(s: &Server, node: &str) -> String {
    let (_, n) = s.call("GET", &format!("/api/v1/nodes/{node}"), "", "");
    n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: c, image: none, command: [sleep, "600"]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: c, image: none, command: [sleep, "600"]}
"#;

#[test]
fn a_dead_node_is_tainted_its_pods_move_and_a_statefulset_pod_waits_for_it() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start_with(&["--node-monitor-grace-period", "3s"]);
    let lease = ["--node-lease-duration", "2s", "--cpu", "2"];
    let _a = Agent::start(&s, "node-a", &lease);
    let mut b = Agent::start(&s, "node-b", &lease);
    let cmdline = b.cmdline();
    assert!(cmdline.contains("--token-file"), "{cmdline}");
    assert!(
        !cmdline.contains(&s.token()),
        "the token is not in ps: {cmdline}"
    );
    within(LONG, "two Ready nodes", || {
        (ready_status(&s, "node-a") == "True" && ready_status(&s, "node-b") == "True").then_some(())
    });
    // A pod the API server defaults gets Kubernetes' 300 s tolerations of both taints.
    s.kubectl_apply(&k, WORKLOADS);
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "statefulset/db", "--timeout=60s"],
    ));
    let web = pods(&s, "app%3Dweb");
    let on_b: Vec<String> = web
        .iter()
        .filter(|p| on(p, "node-b"))
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!on_b.is_empty(), "replicas spread over both nodes");
    let db_b = pods(&s, "app%3Ddb")
        .into_iter()
        .find(|p| on(p, "node-b"))
        .expect("a StatefulSet pod on node-b");
    let db_b_name = db_b["metadata"]["name"].as_str().unwrap().to_string();
    // What node-b's agent keeps of its pods (their state, logs and the handles of their running containers).
    let b_pods = s.dir.path().join("agents/nodes/node-b/pods");
    let stale: Vec<std::path::PathBuf> = pods(&s, "app%3Dweb")
        .iter()
        .chain(std::iter::once(&db_b))
        .filter(|p| on(p, "node-b"))
        .map(|p| b_pods.join(p["metadata"]["uid"].as_str().unwrap()))
        .collect();
    assert!(stale.iter().all(|d| d.exists()), "{stale:?}");

    // The machine dies: no more Lease renewals.
    b.kill9();
    let node = within(
        Duration::from_secs(15),
        "node-b Unknown and tainted",
        || {
            let n = get(&s, "/api/v1/nodes/node-b");
            let taints: Vec<(String, String)> = n["spec"]["taints"]
                .as_array()?
                .iter()
                .map(|t| {
                    (
                        t["key"].as_str().unwrap_or("").to_string(),
                        t["effect"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let unreachable =
                |e: &str| taints.contains(&("node.kubernetes.io/unreachable".into(), e.into()));
            (ready_status(&s, "node-b") == "Unknown"
                && unreachable("NoSchedule")
                && unreachable("NoExecute"))
            .then_some(n)
        },
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");

    // Services stop sending to node-b's pods at once: they are not Ready any more.
    let ips_b: Vec<String> = web
        .iter()
        .filter(|p| on(p, "node-b"))
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect();
    within(
        Duration::from_secs(10),
        "node-b's pods out of the Endpoints",
        || {
            let ep = get(&s, "/api/v1/namespaces/default/endpoints/web");
            let ready: Vec<String> = ep["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|ss| ss["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["ip"].as_str().map(String::from))
                .collect();
            (!ready.is_empty() && ips_b.iter().all(|ip| !ready.contains(ip))).then_some(())
        },
    );

    // After their 2 s toleration, web's pods there are evicted and replaced on node-a.
    within(
        Duration::from_secs(20),
        "web back to 4 live replicas, all on node-a",
        || {
            let live: Vec<Value> = pods(&s, "app%3Dweb")
                .into_iter()
                .filter(|p| !terminating(p))
                .collect();
            (live.len() == 4 && live.iter().all(|p| on(p, "node-a"))).then_some(())
        },
    );
    // The StatefulSet pod of node-b is evicted too, but never duplicated while node-b might still run it.
    within(
        Duration::from_secs(10),
        "db's pod on node-b Terminating",
        || {
            pods(&s, "app%3Ddb")
                .iter()
                .any(|p| p["metadata"]["name"] == db_b_name.as_str() && terminating(p))
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let same: Vec<Value> = pods(&s, "app%3Ddb")
        .into_iter()
        .filter(|p| p["metadata"]["name"] == db_b_name.as_str())
        .collect();
    assert_eq!(same.len(), 1, "one pod per ordinal");
    assert!(
        on(&same[0], "node-b") && terminating(&same[0]),
        "{}",
        same[0]
    );
    // New pods go elsewhere: scale web up, nothing lands on node-b.
    ok(&s.kubectl(&k, &["scale", "deployment/web", "--replicas=5"]));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    assert!(pods(&s, "app%3Dweb")
        .iter()
        .filter(|p| !terminating(p))
        .all(|p| on(p, "node-a")));

    // Deleting the Node removes its pods; the StatefulSet then recreates its pod on node-a.
    ok(&s.kubectl(&k, &["delete", "node", "node-b"]));
    within(
        Duration::from_secs(20),
        "db's ordinal running again on node-a",
        || {
            let db: Vec<Value> = pods(&s, "app%3Ddb");
            (db.len() == 2
                && db.iter().all(|p| {
                    on(p, "node-a") && !terminating(p) && p["status"]["phase"] == "Running"
                }))
            .then_some(())
        },
    );
    assert!(pods(&s, "app%3Dweb").iter().all(|p| on(p, "node-a")));

    // The machine comes back: it registers again, and nothing is duplicated.
    let _b = Agent::start(&s, "node-b", &lease);
    within(LONG, "node-b Ready again without the taints", || {
        let (_, n) = s.call("GET", "/api/v1/nodes/node-b", "", "");
        let tainted = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable");
        (ready_status(&s, "node-b") == "True" && !tainted).then_some(())
    });
    // Its pods that were replaced meanwhile are stopped and forgotten.
    within(LONG, "node-b's stale pods removed", || {
        stale.iter().all(|d| !d.exists()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pods(&s, "app%3Dweb").len(), 5);
    assert_eq!(pods(&s, "app%3Ddb").len(), 2);
}

const BUDGETED: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 4
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: none, command: [sleep, "600"]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: api}}
"#;

#[test]
fn kubectl_drain_evicts_within_the_disruption_budget_and_uncordon_reopens_the_node() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let _a = Agent::start(&s, "node-a", &["--cpu", "4"]);
    let _b = Agent::start(&s, "node-b", &["--cpu", "4"]);
    within(LONG, "two Ready nodes", || {
        (ready_status(&s, "node-a") == "True" && ready_status(&s, "node-b") == "True").then_some(())
    });
    s.kubectl_apply(&k, BUDGETED);
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/api", "--timeout=60s"],
    ));
    assert!(pods(&s, "app%3Dapi").iter().any(|p| on(p, "node-b")));
    let pdb = within(
        Duration::from_secs(20),
        "the budget allows one disruption",
        || {
            let b = get(
                &s,
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/api",
            );
            (b["status"]["disruptionsAllowed"] == 1 && b["status"]["expectedPods"] == 4)
                .then_some(b)
        },
    );
    assert_eq!(pdb["status"]["desiredHealthy"], 3, "{pdb}");
    let table = ok(&s.kubectl(&k, &["get", "pdb"]));
    assert!(
        table.contains("ALLOWED DISRUPTIONS") && table.contains("api"),
        "{table}"
    );

    // A budget that allows nothing: the eviction is refused (429) and drain gives up at its timeout.
    ok(&s.kubectl(
        &k,
        &[
            "patch",
            "pdb",
            "api",
            "--type=merge",
            "-p",
            r#"{"spec":{"maxUnavailable":0}}"#,
        ],
    ));
    within(Duration::from_secs(20), "the budget allows nothing", || {
        let b = get(
            &s,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/api",
        );
        (b["status"]["disruptionsAllowed"] == 0
            && b["status"]["observedGeneration"] == b["metadata"]["generation"])
            .then_some(())
    });
    let refused = common::fails(&s.kubectl(
        &k,
        &["drain", "node-b", "--ignore-daemonsets", "--timeout=4s"],
    ));
    assert!(
        refused.contains("disruption budget"),
        "drain names the budget: {refused}"
    );

    // One at a time: drain evicts node-b's pods as the budget allows, replacements start on node-a.
    ok(&s.kubectl(
        &k,
        &[
            "patch",
            "pdb",
            "api",
            "--type=merge",
            "-p",
            r#"{"spec":{"maxUnavailable":1}}"#,
        ],
    ));
    let out = ok(&s.kubectl(
        &k,
        &["drain", "node-b", "--ignore-daemonsets", "--timeout=90s"],
    ));
    assert!(out.contains("drained"), "{out}");
    let node = get(&s, "/api/v1/nodes/node-b");
    assert_eq!(node["spec"]["unschedulable"], true);
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/api", "--timeout=60s"],
    ));
    let live: Vec<Value> = pods(&s, "app%3Dapi")
        .into_iter()
        .filter(|p| !terminating(p))
        .collect();
    assert_eq!(live.len(), 4);
    assert!(
        live.iter().all(|p| on(p, "node-a")),
        "nothing left on node-b"
    );

    ok(&s.kubectl(&k, &["uncordon", "node-b"]));
    let node = get(&s, "/api/v1/nodes/node-b");
    assert!(node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false);
}
