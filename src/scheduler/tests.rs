use super::book::*;
use super::filters::*;
use super::*;
use serde_json::Value;

/// A typed object from test JSON.
fn t<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn typed_nodes(nodes: &[Value]) -> Vec<Node> {
    nodes.iter().map(t).collect()
}

fn node(name: &str, cpu: &str, extra: Value) -> Value {
    let mut n = json!({"metadata": {"name": name, "labels": {"zone": "a"}},
        "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            n["spec"][k] = v.clone();
        }
    }
    n
}

fn pod(cpu: &str) -> Value {
    json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "rs", "uid": "rs1", "controller": true}]},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}})
}

#[test]
fn filters_explain_every_node() {
    let nodes = vec![
        node("small", "1", json!({})),
        node("cordoned", "8", json!({"unschedulable": true})),
        node(
            "tainted",
            "8",
            json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}),
        ),
    ];
    let err = place(&t(&pod("2")), &typed_nodes(&nodes), &HashMap::new()).unwrap_err();
    assert_eq!(err.to_string(), "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: yes}, 1 node(s) were unschedulable.");
    let mut tolerating = pod("2");
    tolerating["spec"]["tolerations"] = json!([{"key": "gpu", "operator": "Exists"}]);
    assert_eq!(
        place(&t(&tolerating), &typed_nodes(&nodes), &HashMap::new()).unwrap(),
        "tainted"
    );
}

#[test]
fn without_nodes_the_reason_says_so() {
    assert_eq!(
        place(&t(&pod("1")), &typed_nodes(&[]), &HashMap::new()).unwrap_err(),
        Unschedulable::NoNodes
    );
}

#[test]
fn replicas_spread_and_usage_counts() {
    let nodes = vec![node("a", "4", json!({})), node("b", "4", json!({}))];
    let mut state = HashMap::new();
    let first = place(&t(&pod("1")), &typed_nodes(&nodes), &state).unwrap();
    let mut bound = pod("1");
    bound["spec"]["nodeName"] = json!(first.clone());
    account(state.entry(first.clone()).or_default(), &t(&bound));
    let second = place(&t(&pod("1")), &typed_nodes(&nodes), &state).unwrap();
    assert_ne!(first, second, "siblings spread");
    assert_eq!(node_states(&[Arc::new(t(&bound))])[&first].used.cpu, 1000);
}

#[test]
fn node_selector_and_required_affinity() {
    let nodes = vec![node("a", "4", json!({}))];
    let mut p = pod("0");
    p["spec"]["nodeSelector"] = json!({"zone": "b"});
    assert!(place(&t(&p), &typed_nodes(&nodes), &HashMap::new())
        .unwrap_err()
        .to_string()
        .contains("didn't match Pod's node affinity/selector"));
    let mut q = pod("0");
    q["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}});
    assert_eq!(
        place(&t(&q), &typed_nodes(&nodes), &HashMap::new()).unwrap(),
        "a"
    );
}

#[test]
fn large_clusters_score_a_sample_and_rotate_the_start() {
    assert_eq!(nodes_to_score(50), 50);
    assert_eq!(nodes_to_score(1000), 420);
    assert_eq!(nodes_to_score(5000), 500);
    assert_eq!(nodes_to_score(100_000), 5000);
    let nodes: Vec<NodeInfo> = (0..1000)
        .map(|i| NodeInfo::new(&t(&node(&format!("n{i:04}"), "4", json!({})))))
        .collect();
    let mut start = 0;
    let p = PodInfo::new(&t(&pod("1")));
    let first = place_info(&p, &nodes, &HashMap::new(), &mut start).unwrap();
    assert_eq!(
        start, 420,
        "the next search starts after the nodes examined"
    );
    let second = place_info(&p, &nodes, &HashMap::new(), &mut start).unwrap();
    assert_ne!(first, second);
    // A pod that fits nowhere is checked against every node, for a complete reason.
    let big = PodInfo::new(&t(&pod("64")));
    let err = place_info(&big, &nodes, &HashMap::new(), &mut start).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/1000 nodes are available: 1000 Insufficient cpu."
    );
}

#[test]
fn the_book_follows_pods_without_rescanning() {
    let mut book = Book::default();
    let mut p = pod("500m");
    p["metadata"]["namespace"] = json!("ns");
    p["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(!book.apply(Arc::new(t(&p))));
    assert_eq!(book.active.len(), 1, "unbound pods wait");
    // Assumed onto a node: counted there, and no longer waiting even if an unbound version arrives.
    book.active.clear();
    book.waiting_since.clear();
    book.add("ns/p", Placed::new(&t(&p), "a"));
    book.apply(Arc::new(t(&p)));
    assert!(book.active.is_empty());
    assert_eq!(book.nodes["a"].used.cpu, 500);
    // The bound version changes nothing; finishing frees the capacity.
    p["spec"]["nodeName"] = json!("a");
    book.apply(Arc::new(t(&p)));
    assert_eq!(book.nodes["a"].used.cpu, 500);
    p["status"]["phase"] = json!("Succeeded");
    assert!(book.apply(Arc::new(t(&p))));
    assert_eq!(book.nodes["a"].used.cpu, 0);
    assert!(book.nodes["a"].owners.is_empty());
    assert!(!book.remove(&t(&p)), "already released");
}

#[test]
fn a_failed_binding_backs_off_from_one_second_to_ten() {
    let secs: Vec<u64> = (1..=6).map(|n| super::bind_backoff(n).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
}

#[test]
fn one_node_change_rebuilds_that_node_alone_and_a_report_changing_nothing_is_no_change() {
    let names = ["b", "d", "a"];
    let cache = Cache::of(typed_nodes(
        &names
            .iter()
            .map(|n| node(n, "4", json!({})))
            .collect::<Vec<_>>(),
    ));
    let mut infos = node_infos_of(&cache);
    let order = |infos: &[NodeInfo]| infos.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(order(&infos), ["a", "b", "d"]);
    let applied = |v: Value| Some(Change::Applied(Arc::new(t::<Node>(&v))));
    // The same node reported again (a heartbeat): nothing a placement reads changed.
    assert!(!update_node_infos(
        &mut infos,
        applied(node("b", "4", json!({}))),
        &cache
    ));
    // Cordoned: that entry alone changes.
    let before = infos.clone();
    assert!(update_node_infos(
        &mut infos,
        applied(node("b", "4", json!({"unschedulable": true}))),
        &cache
    ));
    assert_ne!(infos[1], before[1]);
    assert_eq!((&infos[0], &infos[2]), (&before[0], &before[2]));
    // A new node takes its place by name; a deleted one leaves.
    assert!(update_node_infos(
        &mut infos,
        applied(node("c", "4", json!({}))),
        &cache
    ));
    assert_eq!(order(&infos), ["a", "b", "c", "d"]);
    let gone = Some(Change::Deleted(Arc::new(t::<Node>(&node(
        "a",
        "4",
        json!({}),
    )))));
    assert!(update_node_infos(&mut infos, gone, &cache));
    assert_eq!(order(&infos), ["b", "c", "d"]);
    // Missed changes: the whole view again, from the cache.
    assert!(update_node_infos(&mut infos, None, &cache));
    assert_eq!(order(&infos), ["a", "b", "d"]);
}
