//! Filters and scores: what the scheduler needs of pods and nodes (parsed once), whether a pod fits a node
//! (Ready and schedulable, resources, nodeSelector and required affinity, taints, host ports), which feasible node
//! is best (least allocated, then fewest pods of the same owner), and kube-scheduler's words for why none fits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::api::core::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use crate::api::Quantity;

/// Requested resources in milli-units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu: i128,
    pub memory: i128,
    pub pods: i128,
}

pub(super) fn quantity(q: Option<&Quantity>) -> i128 {
    q.and_then(Quantity::millis).unwrap_or(0)
}

/// What a pod asks for: the sum of its containers' requests (or init containers' maximum, if larger).
pub fn requests(pod: &Pod) -> Usage {
    let sum = |list: Option<&Vec<Container>>| -> (i128, i128, i128, i128) {
        let (mut cpu, mut mem, mut max_cpu, mut max_mem) = (0, 0, 0, 0);
        for c in list.into_iter().flatten() {
            let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let c_cpu = quantity(r.and_then(|r| r.get("cpu")));
            let c_mem = quantity(r.and_then(|r| r.get("memory")));
            cpu += c_cpu;
            mem += c_mem;
            max_cpu = max_cpu.max(c_cpu);
            max_mem = max_mem.max(c_mem);
        }
        (cpu, mem, max_cpu, max_mem)
    };
    let spec = pod.spec.as_ref();
    let (cpu, mem, _, _) = sum(spec.map(|s| &s.containers));
    let (_, _, icpu, imem) = sum(spec.and_then(|s| s.init_containers.as_ref()));
    Usage {
        cpu: cpu.max(icpu),
        memory: mem.max(imem),
        pods: 1000,
    }
}

pub(super) fn allocatable(node: &Node) -> Usage {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    Usage {
        cpu: quantity(a.and_then(|a| a.get("cpu"))),
        memory: quantity(a.and_then(|a| a.get("memory"))),
        pods: quantity(a.and_then(|a| a.get("pods"))),
    }
}

pub(super) fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub(super) fn requirement_matches(
    r: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
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

pub(super) fn host_ports(pod: &Pod) -> Vec<(i64, String)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|h| *h > 0)?;
            Some((
                i64::from(hp),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ))
        })
        .collect()
}

pub(super) fn owner_uid(pod: &Pod) -> Option<String> {
    pod.metadata.controller().map(|o| o.uid.clone())
}

/// Per-node state for one pass.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    pub used: Usage,
    pub ports: HashSet<(i64, String)>,
    pub owners: HashMap<String, usize>,
}

/// What the filters need of a node, parsed once per change of the node (not once per pod).
#[derive(Clone, Debug, PartialEq)]
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
    pub fn new(n: &Node) -> Self {
        let spec = n.spec.as_ref();
        NodeInfo {
            name: n.metadata.name().to_string(),
            ready: node_ready(n),
            unschedulable: spec.and_then(|s| s.unschedulable) == Some(true),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect != "PreferNoSchedule")
                .map(|t| {
                    (
                        t.key.clone(),
                        t.value.clone().unwrap_or_default(),
                        t.effect.clone(),
                    )
                })
                .collect(),
            labels: n.metadata.labels(),
            alloc: allocatable(n),
        }
    }
}

/// What the filters need of a pod, parsed once per scheduling attempt.
pub struct PodInfo {
    want: Usage,
    ports: Vec<(i64, String)>,
    owner: Option<String>,
    tolerations: Vec<Toleration>,
    node_selector: Vec<(String, String)>,
    terms: Option<Vec<NodeSelectorTerm>>,
}

impl PodInfo {
    pub fn new(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        PodInfo {
            want: requests(pod),
            ports: host_ports(pod),
            owner: owner_uid(pod),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            node_selector: spec
                .and_then(|s| s.node_selector.as_ref())
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            terms: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|r| r.node_selector_terms.clone()),
        }
    }

    pub(super) fn tolerates(&self, key: &str, value: &str, effect: &str) -> bool {
        self.tolerations
            .iter()
            .any(|tol| tol.tolerates(key, value, effect))
    }

    pub(super) fn affinity_matches(&self, n: &NodeInfo) -> bool {
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

    /// Whether a daemon pod belongs on `n` (the DaemonSet controller's test): its taints are tolerated and its labels
    /// match the node selector and required node affinity. Capacity and readiness are the scheduler's business.
    pub fn daemon_fits(&self, n: &NodeInfo) -> Result<(), Misfit> {
        if let Some((k, v, e)) = n.taints.iter().find(|(k, v, e)| !self.tolerates(k, v, e)) {
            return Err(Misfit::Taint {
                key: k.clone(),
                value: v.clone(),
                effect: e.clone(),
            });
        }
        if !self.affinity_matches(n) {
            return Err(Misfit::Affinity);
        }
        Ok(())
    }

    /// Why the pod cannot go to `n` (empty: it can).
    pub(super) fn unfit(&self, n: &NodeInfo, st: &NodeState) -> Vec<String> {
        let mut why = Vec::new();
        // Kubernetes taints not-ready and cordoned nodes; pods that tolerate those taints (daemon pods) still go.
        if !n.ready && !self.tolerates("node.kubernetes.io/not-ready", "", "NoSchedule") {
            why.push("node(s) were not ready".into());
        } else if n.unschedulable
            && !self.tolerates("node.kubernetes.io/unschedulable", "", "NoSchedule")
        {
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

/// Why a daemon pod does not belong on a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misfit {
    #[error("untolerated taint {{{key}: {value}}} ({effect})")]
    Taint {
        key: String,
        value: String,
        effect: String,
    },
    #[error("node selector or affinity does not match")]
    Affinity,
}

/// Why a pod fits no node: the FailedScheduling message, in kube-scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unschedulable {
    #[error("no nodes available to schedule pods")]
    NoNodes,
    /// `summary`: each reason with the number of nodes it ruled out (`3 Insufficient cpu, 1 node(s) were not ready`).
    #[error("0/{total} nodes are available: {summary}.")]
    NoneFit { total: usize, summary: String },
}

/// Where a pod goes, or why it cannot go anywhere. The search starts at `*start` and moves it on, so successive
/// pods look at different nodes first (as kube-scheduler does).
pub fn place_info(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    state: &HashMap<String, NodeState>,
    start: &mut usize,
) -> Result<String, Unschedulable> {
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
        None if nodes.is_empty() => Err(Unschedulable::NoNodes),
        None => {
            let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            Err(Unschedulable::NoneFit {
                total: nodes.len(),
                summary: parts.join(", "),
            })
        }
    }
}

/// [`place_info`] on raw objects, searching from the first node.
pub fn place(
    pod: &Pod,
    nodes: &[Node],
    state: &HashMap<String, NodeState>,
) -> Result<String, Unschedulable> {
    let infos: Vec<NodeInfo> = nodes.iter().map(NodeInfo::new).collect();
    place_info(&PodInfo::new(pod), &infos, state, &mut 0)
}

/// Totals what is bound to each node.
pub fn node_states(pods: &[Arc<Pod>]) -> HashMap<String, NodeState> {
    let mut out: HashMap<String, NodeState> = HashMap::new();
    for p in pods {
        let Some(node) = bound_node(p) else {
            continue;
        };
        if finished(p) {
            continue;
        }
        account(out.entry(node.to_string()).or_default(), p);
    }
    out
}

/// Counts a pod bound to the node `st` describes.
pub fn account(st: &mut NodeState, pod: &Pod) {
    let r = requests(pod);
    st.used.cpu += r.cpu;
    st.used.memory += r.memory;
    st.used.pods += r.pods;
    st.ports.extend(host_ports(pod));
    if let Some(o) = owner_uid(pod) {
        *st.owners.entry(o).or_default() += 1;
    }
}

/// The node a pod is bound to.
pub(super) fn bound_node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Succeeded or Failed: it holds nothing on its node any more.
pub(super) fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}
