//! The scheduler (kube-scheduler's role): binds each unscheduled pod to a node. Filters: the node is Ready and
//! schedulable, resource requests fit allocatable minus what is bound there, nodeSelector and required node affinity
//! match, taints are tolerated, host ports are free. Scores: least allocated, then fewest pods of the same owner (so a
//! controller's replicas spread). A pod that fits nowhere gets PodScheduled=False with Kubernetes' kind of message
//! ("0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable.") and a FailedScheduling event, and
//! is tried again whenever pods or nodes change. Each pass totals node usage once, then updates it as it binds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::core::{NodeSelectorRequirement, NodeSelectorTerm};
use crate::api::meta::{format_time, now};
use crate::api::registry;
use crate::api::selector::labels_of;
use crate::client::informer::Shared;
use crate::client::Client;

/// Requested resources in milli-units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu: i128,
    pub memory: i128,
    pub pods: i128,
}

fn quantity(v: Option<&Value>) -> i128 {
    match v {
        Some(Value::String(s)) => crate::api::parse_quantity_millis(s).unwrap_or(0),
        Some(Value::Number(n)) => crate::api::parse_quantity_millis(&n.to_string()).unwrap_or(0),
        _ => 0,
    }
}

/// What a pod asks for: the sum of its containers' requests (or init containers' maximum, if larger).
pub fn requests(pod: &Value) -> Usage {
    let sum = |list: &str| -> (i128, i128, i128, i128) {
        let mut cpu = 0;
        let mut mem = 0;
        let mut max_cpu = 0;
        let mut max_mem = 0;
        for c in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = c.pointer("/resources/requests");
            let c_cpu = quantity(r.and_then(|r| r.get("cpu")));
            let c_mem = quantity(r.and_then(|r| r.get("memory")));
            cpu += c_cpu;
            mem += c_mem;
            max_cpu = max_cpu.max(c_cpu);
            max_mem = max_mem.max(c_mem);
        }
        (cpu, mem, max_cpu, max_mem)
    };
    let (cpu, mem, _, _) = sum("containers");
    let (_, _, icpu, imem) = sum("initContainers");
    Usage {
        cpu: cpu.max(icpu),
        memory: mem.max(imem),
        pods: 1000,
    }
}

fn allocatable(node: &Value) -> Usage {
    let a = node.pointer("/status/allocatable");
    Usage {
        cpu: quantity(a.and_then(|a| a.get("cpu"))),
        memory: quantity(a.and_then(|a| a.get("memory"))),
        pods: quantity(a.and_then(|a| a.get("pods"))),
    }
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    let have = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => have.is_some_and(|v| values.contains(v)),
        "NotIn" => have.is_none_or(|v| !values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(h), Some(w)) = (
                have.and_then(|h| h.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                h > w
            } else {
                h < w
            }
        }
        _ => false,
    }
}

fn host_ports(pod: &Value) -> Vec<(i64, String)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let hp = p["hostPort"].as_i64().filter(|h| *h > 0)?;
            Some((hp, p["protocol"].as_str().unwrap_or("TCP").to_string()))
        })
        .collect()
}

fn owner_uid(pod: &Value) -> Option<String> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .and_then(|o| o["uid"].as_str())
        .map(String::from)
}

/// Per-node state for one pass.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    pub used: Usage,
    pub ports: HashSet<(i64, String)>,
    pub owners: HashMap<String, usize>,
}

/// What the filters need of a node, parsed once per change of the node (not once per pod).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    ready: bool,
    unschedulable: bool,
    /// (key, value, effect) of NoSchedule/NoExecute taints.
    taints: Vec<(String, String, String)>,
    labels: BTreeMap<String, String>,
    alloc: Usage,
}

impl NodeInfo {
    pub fn new(n: &Value) -> Self {
        NodeInfo {
            name: n
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ready: node_ready(n),
            unschedulable: n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
            taints: n
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| t["effect"] != "PreferNoSchedule")
                .map(|t| {
                    (
                        t["key"].as_str().unwrap_or("").to_string(),
                        t["value"].as_str().unwrap_or("").to_string(),
                        t["effect"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            labels: labels_of(n),
            alloc: allocatable(n),
        }
    }
}

/// What the filters need of a pod, parsed once per scheduling attempt.
pub struct PodInfo {
    want: Usage,
    ports: Vec<(i64, String)>,
    owner: Option<String>,
    tolerations: Vec<Value>,
    node_selector: Vec<(String, String)>,
    terms: Option<Vec<NodeSelectorTerm>>,
}

impl PodInfo {
    pub fn new(pod: &Value) -> Self {
        PodInfo {
            want: requests(pod),
            ports: host_ports(pod),
            owner: owner_uid(pod),
            tolerations: pod
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            node_selector: pod
                .pointer("/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            terms: pod
                .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
                .and_then(|t| serde_json::from_value(t.clone()).ok()),
        }
    }

    fn tolerates(&self, key: &str, value: &str, effect: &str) -> bool {
        self.tolerations.iter().any(|tol| {
            let op = tol["operator"].as_str().unwrap_or("Equal");
            let key_ok = tol["key"]
                .as_str()
                .is_none_or(|k| k.is_empty() && op == "Exists" || k == key);
            let value_ok = op == "Exists" || tol["value"].as_str().unwrap_or("") == value;
            let effect_ok = tol["effect"]
                .as_str()
                .is_none_or(|e| e.is_empty() || e == effect);
            key_ok && value_ok && effect_ok
        })
    }

    fn affinity_matches(&self, n: &NodeInfo) -> bool {
        if !self
            .node_selector
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
        {
            return false;
        }
        match &self.terms {
            None => true,
            // Terms are ORed; the requirements of a term are ANDed.
            Some(terms) => terms.iter().any(|t| {
                t.match_expressions
                    .iter()
                    .flatten()
                    .all(|r| requirement_matches(r, &n.labels))
                    && t.match_fields.iter().flatten().all(|r| {
                        let mut f = BTreeMap::new();
                        f.insert("metadata.name".to_string(), n.name.clone());
                        requirement_matches(r, &f)
                    })
            }),
        }
    }

    /// Why the pod cannot go to `n` (empty: it can).
    fn unfit(&self, n: &NodeInfo, st: &NodeState) -> Vec<String> {
        let mut why = Vec::new();
        if !n.ready {
            why.push("node(s) were not ready".into());
        } else if n.unschedulable {
            why.push("node(s) were unschedulable".into());
        } else if let Some((k, v, _)) = n.taints.iter().find(|(k, v, e)| !self.tolerates(k, v, e)) {
            why.push(format!("node(s) had untolerated taint {{{k}: {v}}}"));
        } else if !self.affinity_matches(n) {
            why.push("node(s) didn't match Pod's node affinity/selector".into());
        } else {
            let (want, alloc) = (self.want, n.alloc);
            if st.used.cpu + want.cpu > alloc.cpu && want.cpu > 0 {
                why.push("Insufficient cpu".into());
            }
            if st.used.memory + want.memory > alloc.memory && want.memory > 0 {
                why.push("Insufficient memory".into());
            }
            if alloc.pods > 0 && st.used.pods + want.pods > alloc.pods {
                why.push("Too many pods".into());
            }
            if self.ports.iter().any(|p| st.ports.contains(p)) {
                why.push("node(s) didn't have free ports for the requested pod ports".into());
            }
        }
        why
    }
}

/// How many feasible nodes to find before choosing, like kube-scheduler's adaptive `percentageOfNodesToScore`:
/// all of them up to 100 nodes, then 50% minus 1% per 125 nodes (at least 5%), never fewer than 100.
pub fn nodes_to_score(total: usize) -> usize {
    if total <= 100 {
        return total;
    }
    let pct = (50 - (total as i64) / 125).max(5) as usize;
    (total * pct / 100).max(100)
}

/// Where a pod goes, or why it cannot go anywhere. The search starts at `*start` and moves it on, so successive
/// pods look at different nodes first (as kube-scheduler does).
pub fn place_info(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    state: &HashMap<String, NodeState>,
    start: &mut usize,
) -> Result<String, String> {
    let empty = NodeState::default();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i128, usize, &str)> = None;
    let want_feasible = nodes_to_score(nodes.len());
    let mut feasible = 0;
    let total = nodes.len();
    let mut examined = 0;
    for k in 0..total {
        let n = &nodes[(*start + k) % total];
        examined = k + 1;
        let st = state.get(&n.name).unwrap_or(&empty);
        let why = pod.unfit(n, st);
        if !why.is_empty() {
            for w in why {
                *reasons.entry(w).or_default() += 1;
            }
            continue;
        }
        feasible += 1;
        // Least allocated (free share of cpu and memory, in per-mille), then fewest siblings.
        let free = |used: i128, total: i128| {
            if total <= 0 {
                0
            } else {
                (total - used).max(0) * 1000 / total
            }
        };
        let score = free(st.used.cpu + pod.want.cpu, n.alloc.cpu)
            + free(st.used.memory + pod.want.memory, n.alloc.memory);
        let siblings = pod
            .owner
            .as_ref()
            .and_then(|o| st.owners.get(o))
            .copied()
            .unwrap_or(0);
        let better = match &best {
            None => true,
            Some((s, sib, _)) => siblings < *sib || (siblings == *sib && score > *s),
        };
        if better {
            best = Some((score, siblings, &n.name));
        }
        if feasible >= want_feasible {
            break;
        }
    }
    if total > 0 {
        *start = (*start + examined) % total;
    }
    match best {
        Some((_, _, n)) => Ok(n.to_string()),
        None if nodes.is_empty() => Err("no nodes available to schedule pods".into()),
        None => {
            let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                parts.join(", ")
            ))
        }
    }
}

/// [`place_info`] on raw objects, searching from the first node.
pub fn place(
    pod: &Value,
    nodes: &[Value],
    state: &HashMap<String, NodeState>,
) -> Result<String, String> {
    let infos: Vec<NodeInfo> = nodes.iter().map(NodeInfo::new).collect();
    place_info(&PodInfo::new(pod), &infos, state, &mut 0)
}

/// Totals what is bound to each node.
pub fn node_states(pods: &[Value]) -> HashMap<String, NodeState> {
    let mut out: HashMap<String, NodeState> = HashMap::new();
    for p in pods {
        let Some(node) = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if matches!(
            p.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        account(out.entry(node.to_string()).or_default(), p);
    }
    out
}

fn account(st: &mut NodeState, pod: &Value) {
    let r = requests(pod);
    st.used.cpu += r.cpu;
    st.used.memory += r.memory;
    st.used.pods += r.pods;
    st.ports.extend(host_ports(pod));
    if let Some(o) = owner_uid(pod) {
        *st.owners.entry(o).or_default() += 1;
    }
}

fn pod_key(p: &Value) -> String {
    format!(
        "{}/{}",
        p.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        p.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn unbound(p: &Value) -> bool {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
}

/// How many binding (and unschedulable-status) writes are in flight at once.
const IN_FLIGHT: usize = 64;

/// Runs the scheduler on shared pod and node informers until `stop` resolves. A pass places every pending pod
/// against node usage computed once for the pass; bindings are written concurrently while the pass goes on, and a
/// pod whose binding is in flight counts as placed ("assumed", as in kube-scheduler) until the cache shows it bound.
pub async fn run(
    client: Client,
    pods: Shared,
    nodes: Shared,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let nodes_changed = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut forwarders = vec![pods.notify_on_change(wake.clone())];
    {
        let mut rx = nodes.changes.subscribe();
        let wake = wake.clone();
        let changed = nodes_changed.clone();
        forwarders.push(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        changed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        wake.notify_one();
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    pods.cache.wait_synced().await;
    nodes.cache.wait_synced().await;
    let pod_kind = registry::lookup("pods").expect("pods");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    // Pods already reported unschedulable with this message (no repeated writes while nothing changes).
    let mut reported: HashMap<String, String> = HashMap::new();
    // Pods bound (or being bound) by us that the cache still shows unbound: key -> node.
    let assumed: Arc<std::sync::Mutex<HashMap<String, String>>> = Arc::default();
    let mut node_infos: Vec<NodeInfo> = Vec::new();
    let mut nodes_seen = 0;
    let mut start = 0usize;
    let work = async {
        loop {
            let version = nodes_changed.load(std::sync::atomic::Ordering::SeqCst);
            if version != nodes_seen {
                nodes_seen = version;
                node_infos = nodes.cache.list().iter().map(NodeInfo::new).collect();
            }
            let all = pods.cache.list();
            let mut state = node_states(&all);
            let mut pending: Vec<&Value> = Vec::new();
            {
                let mut assumed = assumed.lock().unwrap_or_else(|e| e.into_inner());
                let mut still = HashMap::new();
                for p in &all {
                    if !unbound(p) {
                        continue;
                    }
                    let key = pod_key(p);
                    if let Some(node) = assumed.remove(&key) {
                        account(state.entry(node.clone()).or_default(), p);
                        still.insert(key, node);
                        continue;
                    }
                    if p.pointer("/metadata/deletionTimestamp").is_none()
                        && p.pointer("/spec/schedulerName")
                            .and_then(Value::as_str)
                            .is_none_or(|s| s == "default-scheduler")
                    {
                        pending.push(p);
                    }
                }
                // Entries left over are bound in the cache now, or gone.
                *assumed = still;
            }
            let waiting: HashSet<String> = pending.iter().map(|p| pod_key(p)).collect();
            reported.retain(|k, _| waiting.contains(k));
            pending.sort_by(|a, b| {
                let t = |p: &Value| {
                    p.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                t(a).cmp(&t(b))
            });
            for pod in pending {
                let key = pod_key(pod);
                let ns = pod
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let name = pod
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                match place_info(&PodInfo::new(pod), &node_infos, &state, &mut start) {
                    Ok(node) => {
                        account(state.entry(node.clone()).or_default(), pod);
                        reported.remove(&key);
                        assumed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key.clone(), node.clone());
                        let client = client.clone();
                        let assumed = assumed.clone();
                        let wake = wake.clone();
                        let permits = in_flight.clone();
                        let pod = pod.clone();
                        tokio::spawn(async move {
                            let _permit = permits.acquire().await;
                            let path = format!(
                                "{}/binding",
                                crate::client::resource_path(pod_kind, Some(&ns), Some(&name))
                            );
                            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                                "metadata": {"name": name, "namespace": ns},
                                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                            match client
                                .request(
                                    reqwest::Method::POST,
                                    &path,
                                    Some(("application/json", binding.to_string().into_bytes())),
                                    None,
                                )
                                .await
                            {
                                Ok(_) => {
                                    tracing::debug!(pod = %key, %node, "bound");
                                    crate::client::events::record(
                                        &client,
                                        &pod,
                                        "default-scheduler",
                                        "Normal",
                                        "Scheduled",
                                        &format!("Successfully assigned {key} to {node}"),
                                    )
                                    .await;
                                }
                                Err(e) => {
                                    tracing::debug!(pod = %key, error = %e, "binding failed");
                                    assumed
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .remove(&key);
                                    wake.notify_one();
                                }
                            }
                        });
                    }
                    Err(message) => {
                        if reported.get(&key) == Some(&message) {
                            continue;
                        }
                        tracing::info!(pod = %key, %message, "unschedulable");
                        reported.insert(key, message.clone());
                        let client = client.clone();
                        let permits = in_flight.clone();
                        let pod = pod.clone();
                        tokio::spawn(async move {
                            let _permit = permits.acquire().await;
                            let cond = json!({"conditions": [{"type": "PodScheduled", "status": "False",
                                "reason": "Unschedulable", "message": message,
                                "lastTransitionTime": format_time(&now())}]});
                            let _ = client.patch_status(pod_kind, Some(&ns), &name, &cond).await;
                            crate::client::events::record(
                                &client,
                                &pod,
                                "default-scheduler",
                                "Warning",
                                "FailedScheduling",
                                &message,
                            )
                            .await;
                        });
                    }
                }
            }
            tokio::select! {
                _ = wake.notified() => tokio::time::sleep(Duration::from_millis(10)).await,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = work => {}
    }
    for f in forwarders {
        f.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "rs1", "controller": true}]},
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
        let err = place(&pod("2"), &nodes, &HashMap::new()).unwrap_err();
        assert_eq!(err, "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: yes}, 1 node(s) were unschedulable.");
        let mut tolerating = pod("2");
        tolerating["spec"]["tolerations"] = json!([{"key": "gpu", "operator": "Exists"}]);
        assert_eq!(
            place(&tolerating, &nodes, &HashMap::new()).unwrap(),
            "tainted"
        );
    }

    #[test]
    fn without_nodes_the_reason_says_so() {
        assert_eq!(
            place(&pod("1"), &[], &HashMap::new()).unwrap_err(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn replicas_spread_and_usage_counts() {
        let nodes = vec![node("a", "4", json!({})), node("b", "4", json!({}))];
        let mut state = HashMap::new();
        let first = place(&pod("1"), &nodes, &state).unwrap();
        let mut bound = pod("1");
        bound["spec"]["nodeName"] = json!(first.clone());
        account(state.entry(first.clone()).or_default(), &bound);
        let second = place(&pod("1"), &nodes, &state).unwrap();
        assert_ne!(first, second, "siblings spread");
        assert_eq!(node_states(&[bound])[&first].used.cpu, 1000);
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let nodes = vec![node("a", "4", json!({}))];
        let mut p = pod("0");
        p["spec"]["nodeSelector"] = json!({"zone": "b"});
        assert!(place(&p, &nodes, &HashMap::new())
            .unwrap_err()
            .contains("didn't match Pod's node affinity/selector"));
        let mut q = pod("0");
        q["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}});
        assert_eq!(place(&q, &nodes, &HashMap::new()).unwrap(), "a");
    }

    #[test]
    fn large_clusters_score_a_sample_and_rotate_the_start() {
        assert_eq!(nodes_to_score(50), 50);
        assert_eq!(nodes_to_score(1000), 420);
        assert_eq!(nodes_to_score(5000), 500);
        assert_eq!(nodes_to_score(100_000), 5000);
        let nodes: Vec<NodeInfo> = (0..1000)
            .map(|i| NodeInfo::new(&node(&format!("n{i:04}"), "4", json!({}))))
            .collect();
        let mut start = 0;
        let p = PodInfo::new(&pod("1"));
        let first = place_info(&p, &nodes, &HashMap::new(), &mut start).unwrap();
        assert_eq!(
            start, 420,
            "the next search starts after the nodes examined"
        );
        let second = place_info(&p, &nodes, &HashMap::new(), &mut start).unwrap();
        assert_ne!(first, second);
        // A pod that fits nowhere is checked against every node, for a complete reason.
        let big = PodInfo::new(&pod("64"));
        let err = place_info(&big, &nodes, &HashMap::new(), &mut start).unwrap_err();
        assert_eq!(err, "0/1000 nodes are available: 1000 Insufficient cpu.");
    }
}
