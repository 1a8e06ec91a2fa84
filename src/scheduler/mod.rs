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

fn affinity_matches(pod: &Value, node: &Value) -> bool {
    let labels = labels_of(node);
    if let Some(sel) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        if !sel
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        {
            return false;
        }
    }
    let terms: Option<Vec<NodeSelectorTerm>> = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(|t| serde_json::from_value(t.clone()).ok());
    match terms {
        None => true,
        // Terms are ORed; the requirements of a term are ANDed.
        Some(terms) => terms.iter().any(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .all(|r| requirement_matches(r, &labels))
                && t.match_fields.iter().flatten().all(|r| {
                    let mut f = BTreeMap::new();
                    f.insert(
                        "metadata.name".to_string(),
                        node.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                    requirement_matches(r, &f)
                })
        }),
    }
}

/// The first taint with NoSchedule/NoExecute effect the pod does not tolerate.
fn untolerated_taint(pod: &Value, node: &Value) -> Option<String> {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let effect = t["effect"].as_str().unwrap_or("");
        if effect == "PreferNoSchedule" {
            continue;
        }
        let key = t["key"].as_str().unwrap_or("");
        let value = t["value"].as_str().unwrap_or("");
        let tolerated = tolerations.iter().any(|tol| {
            let op = tol["operator"].as_str().unwrap_or("Equal");
            let key_ok = tol["key"]
                .as_str()
                .is_none_or(|k| k.is_empty() && op == "Exists" || k == key);
            let value_ok = op == "Exists" || tol["value"].as_str().unwrap_or("") == value;
            let effect_ok = tol["effect"]
                .as_str()
                .is_none_or(|e| e.is_empty() || e == effect);
            key_ok && value_ok && effect_ok
        });
        if !tolerated {
            return Some(format!("{{{key}: {value}}}"));
        }
    }
    None
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

/// Where a pod goes, or why it cannot go anywhere.
pub fn place(
    pod: &Value,
    nodes: &[Value],
    state: &HashMap<String, NodeState>,
) -> Result<String, String> {
    let want = requests(pod);
    let ports = host_ports(pod);
    let owner = owner_uid(pod);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i128, usize, String)> = None;
    for n in nodes {
        let name = n
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let st = state.get(&name).cloned().unwrap_or_default();
        let alloc = allocatable(n);
        let mut why: Vec<String> = Vec::new();
        if !node_ready(n) {
            why.push("node(s) were not ready".into());
        } else if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            why.push("node(s) were unschedulable".into());
        } else if let Some(t) = untolerated_taint(pod, n) {
            why.push(format!("node(s) had untolerated taint {t}"));
        } else if !affinity_matches(pod, n) {
            why.push("node(s) didn't match Pod's node affinity/selector".into());
        } else {
            if st.used.cpu + want.cpu > alloc.cpu && want.cpu > 0 {
                why.push("Insufficient cpu".into());
            }
            if st.used.memory + want.memory > alloc.memory && want.memory > 0 {
                why.push("Insufficient memory".into());
            }
            if alloc.pods > 0 && st.used.pods + want.pods > alloc.pods {
                why.push("Too many pods".into());
            }
            if ports.iter().any(|p| st.ports.contains(p)) {
                why.push("node(s) didn't have free ports for the requested pod ports".into());
            }
        }
        if !why.is_empty() {
            for w in why {
                *reasons.entry(w).or_default() += 1;
            }
            continue;
        }
        // Least allocated (free share of cpu and memory, in per-mille), then fewest siblings.
        let free = |used: i128, total: i128| {
            if total <= 0 {
                0
            } else {
                (total - used).max(0) * 1000 / total
            }
        };
        let score = free(st.used.cpu + want.cpu, alloc.cpu)
            + free(st.used.memory + want.memory, alloc.memory);
        let siblings = owner
            .as_ref()
            .and_then(|o| st.owners.get(o))
            .copied()
            .unwrap_or(0);
        let better = match &best {
            None => true,
            Some((s, sib, _)) => siblings < *sib || (siblings == *sib && score > *s),
        };
        if better {
            best = Some((score, siblings, name));
        }
    }
    match best {
        Some((_, _, n)) => Ok(n),
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

/// Runs the scheduler on shared pod and node informers until `stop` resolves.
pub async fn run(
    client: Client,
    pods: Shared,
    nodes: Shared,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut forwarders = Vec::new();
    for inf in [&pods, &nodes] {
        forwarders.push(inf.notify_on_change(wake.clone()));
    }
    pods.cache.wait_synced().await;
    nodes.cache.wait_synced().await;
    let pod_kind = registry::lookup("pods").expect("pods");
    // Pods already reported unschedulable with this message (no repeated writes while nothing changes).
    let mut reported: HashMap<String, String> = HashMap::new();
    let work = async {
        loop {
            let all = pods.cache.list();
            let node_list: Vec<Value> = nodes.cache.list();
            let mut state = node_states(&all);
            let mut pending: Vec<&Value> = all
                .iter()
                .filter(|p| {
                    p.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                })
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .filter(|p| {
                    p.pointer("/spec/schedulerName")
                        .and_then(Value::as_str)
                        .is_none_or(|s| s == "default-scheduler")
                })
                .collect();
            // Forget pods that are gone or bound.
            let waiting: HashSet<String> = pending
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        p.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    )
                })
                .collect();
            reported.retain(|k, _| waiting.contains(k));
            pending.sort_by_key(|p| {
                p.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            });
            for pod in pending {
                let ns = pod
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = pod
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let key = format!("{ns}/{name}");
                match place(pod, &node_list, &state) {
                    Ok(node) => {
                        let path = format!(
                            "{}/binding",
                            crate::client::resource_path(pod_kind, Some(ns), Some(name))
                        );
                        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
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
                                tracing::info!(pod = %key, %node, "bound");
                                account(state.entry(node.clone()).or_default(), pod);
                                reported.remove(&key);
                                let cond = json!({"conditions": [{"type": "PodScheduled", "status": "True",
                                    "lastTransitionTime": format_time(&now())}]});
                                let _ = client.patch_status(pod_kind, Some(ns), name, &cond).await;
                                crate::client::events::record(
                                    &client,
                                    pod,
                                    "default-scheduler",
                                    "Normal",
                                    "Scheduled",
                                    &format!("Successfully assigned {key} to {node}"),
                                )
                                .await;
                            }
                            Err(e) => tracing::debug!(pod = %key, error = %e, "binding failed"),
                        }
                    }
                    Err(message) => {
                        if reported.get(&key) == Some(&message) {
                            continue;
                        }
                        tracing::info!(pod = %key, %message, "unschedulable");
                        let cond = json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": message, "lastTransitionTime": format_time(&now())}]});
                        let _ = client.patch_status(pod_kind, Some(ns), name, &cond).await;
                        crate::client::events::record(
                            &client,
                            pod,
                            "default-scheduler",
                            "Warning",
                            "FailedScheduling",
                            &message,
                        )
                        .await;
                        reported.insert(key, message);
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
}
