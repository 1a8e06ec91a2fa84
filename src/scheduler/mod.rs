//! The scheduler (kube-scheduler's role): binds each unscheduled pod to a node. Filters: the node is Ready and
//! schedulable, resource requests fit allocatable minus what is bound there, nodeSelector and required node affinity
//! match, taints are tolerated, host ports are free. Scores: least allocated, then fewest pods of the same owner (so a
//! controller's replicas spread). A pod that fits nowhere gets PodScheduled=False with Kubernetes' kind of message
//! ("0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable.") and a FailedScheduling event, and
//! is tried again whenever pods or nodes change. Each pass totals node usage once, then updates it as it binds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::core::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use crate::api::meta::{format_time, now, Time};
use crate::api::{Object, Quantity, Resource};
use crate::client::events::Recorder;
use crate::client::informer::{Cache, Change, Shared};
use crate::client::{Api, Client, Patch};
use tokio::sync::broadcast;

/// Requested resources in milli-units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu: i128,
    pub memory: i128,
    pub pods: i128,
}

fn quantity(q: Option<&Quantity>) -> i128 {
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

fn allocatable(node: &Node) -> Usage {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    Usage {
        cpu: quantity(a.and_then(|a| a.get("cpu"))),
        memory: quantity(a.and_then(|a| a.get("memory"))),
        pods: quantity(a.and_then(|a| a.get("pods"))),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
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

fn host_ports(pod: &Pod) -> Vec<(i64, String)> {
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

fn owner_uid(pod: &Pod) -> Option<String> {
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

    fn tolerates(&self, key: &str, value: &str, effect: &str) -> bool {
        self.tolerations.iter().any(|tol| {
            let op = tol.operator.as_deref().unwrap_or("Equal");
            let key_ok = tol
                .key
                .as_deref()
                .is_none_or(|k| k.is_empty() && op == "Exists" || k == key);
            let value_ok = op == "Exists" || tol.value.as_deref().unwrap_or("") == value;
            let effect_ok = tol
                .effect
                .as_deref()
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
    fn unfit(&self, n: &NodeInfo, st: &NodeState) -> Vec<String> {
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
fn bound_node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Succeeded or Failed: it holds nothing on its node any more.
fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What a bound pod takes from its node.
#[derive(Clone, Debug)]
struct Placed {
    node: String,
    usage: Usage,
    ports: Vec<(i64, String)>,
    owner: Option<String>,
}

impl Placed {
    fn new(pod: &Pod, node: &str) -> Self {
        Placed {
            node: node.to_string(),
            usage: requests(pod),
            ports: host_ports(pod),
            owner: owner_uid(pod),
        }
    }
}

/// The scheduler's own view, kept up to date from the pod change feed (kube-scheduler's cache and queues): what
/// each node has bound, the pods waiting, and the pods that fit nowhere (retried only when nodes change or a bound
/// pod goes away). Nothing here rescans every pod for a decision.
#[derive(Default)]
struct Book {
    placed: HashMap<String, Placed>,
    nodes: HashMap<String, NodeState>,
    /// Waiting pods, oldest first: (creationTimestamp, key) -> pod.
    active: BTreeMap<(Option<Time>, String), Arc<Pod>>,
    parked: BTreeMap<(Option<Time>, String), Arc<Pod>>,
    waiting_since: HashMap<String, Option<Time>>,
}

impl Book {
    fn add(&mut self, key: &str, p: Placed) {
        let st = self.nodes.entry(p.node.clone()).or_default();
        st.used.cpu += p.usage.cpu;
        st.used.memory += p.usage.memory;
        st.used.pods += p.usage.pods;
        st.ports.extend(p.ports.iter().cloned());
        if let Some(o) = &p.owner {
            *st.owners.entry(o.clone()).or_default() += 1;
        }
        self.placed.insert(key.to_string(), p);
    }

    /// Takes a bound pod off its node; true when there was one.
    fn release(&mut self, key: &str) -> bool {
        let Some(p) = self.placed.remove(key) else {
            return false;
        };
        if let Some(st) = self.nodes.get_mut(&p.node) {
            st.used.cpu -= p.usage.cpu;
            st.used.memory -= p.usage.memory;
            st.used.pods -= p.usage.pods;
            for port in &p.ports {
                st.ports.remove(port);
            }
            if let Some(o) = &p.owner {
                if let Some(n) = st.owners.get_mut(o) {
                    *n -= 1;
                    if *n == 0 {
                        st.owners.remove(o);
                    }
                }
            }
        }
        true
    }

    fn unqueue(&mut self, key: &str) {
        if let Some(ts) = self.waiting_since.remove(key) {
            let k = (ts, key.to_string());
            self.active.remove(&k);
            self.parked.remove(&k);
        }
    }

    /// Takes in the newest version of a pod. Returns true when capacity was freed.
    fn apply(&mut self, pod: Arc<Pod>) -> bool {
        let key = pod.key();
        let terminal = finished(&pod);
        if let Some(node) = bound_node(&pod) {
            self.unqueue(&key);
            if terminal {
                return self.release(&key);
            }
            match self.placed.get(&key) {
                Some(p) if p.node == node => {}
                _ => {
                    self.release(&key);
                    self.add(&key, Placed::new(&pod, node));
                }
            }
            return false;
        }
        // Unbound: waiting, unless we have assumed it onto a node already.
        if self.placed.contains_key(&key) {
            return false;
        }
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|s| s == "default-scheduler");
        if pod.metadata.deletion_timestamp.is_none() && ours && !terminal {
            let ts = pod.metadata.creation_timestamp;
            let k = (ts, key.clone());
            match self.parked.get_mut(&k) {
                Some(slot) => *slot = pod,
                None => {
                    self.active.insert(k, pod);
                }
            }
            self.waiting_since.insert(key, ts);
        } else {
            self.unqueue(&key);
        }
        false
    }

    fn remove(&mut self, pod: &Pod) -> bool {
        let key = pod.key();
        self.unqueue(&key);
        self.release(&key)
    }

    /// A binding failed: the pod is no longer assumed, and waits again if it still exists unbound.
    fn retry(&mut self, key: &str, cache: &Cache<Pod>) {
        self.release(key);
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        if let Some(p) = cache.get(ns, name) {
            self.apply(p);
        }
    }

    fn unpark(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        self.active.extend(parked);
    }

    fn rebuild(&mut self, pods: &[Arc<Pod>]) {
        *self = Book::default();
        for p in pods {
            self.apply(p.clone());
        }
    }
}

/// How many binding (and unschedulable-status) writes are in flight at once.
const IN_FLIGHT: usize = 64;

/// Runs the scheduler on shared pod and node informers until `stop` resolves. Pods are taken from the change feed
/// into a queue; each is placed against node usage the scheduler keeps itself, counted on its node at once
/// ("assumed", as in kube-scheduler) while the binding is written concurrently.
pub async fn run(
    client: Client,
    pods: Shared<Pod>,
    nodes: Shared<Node>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let mut pod_rx = pods.changes.subscribe();
    let mut node_rx = nodes.changes.subscribe();
    pods.cache.wait_synced().await;
    nodes.cache.wait_synced().await;
    let pod_kind = Pod::info();
    let recorder = Recorder::new(&client, "default-scheduler");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    // Bindings that failed come back here to be retried.
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Pods already reported unschedulable with this message (no repeated writes while nothing changes).
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut book = Book::default();
    book.rebuild(&pods.cache.list());
    let mut node_infos: Vec<NodeInfo> = nodes
        .cache
        .list()
        .iter()
        .map(|n| NodeInfo::new(n))
        .collect();
    let mut start = 0usize;
    let work = async {
        loop {
            // Take in everything that happened since the last round.
            let mut nodes_changed = false;
            let mut freed = false;
            loop {
                match pod_rx.try_recv() {
                    Ok(Change::Applied(p)) => freed |= book.apply(p),
                    Ok(Change::Deleted(p)) => {
                        reported.remove(&p.key());
                        freed |= book.remove(&p);
                    }
                    Ok(Change::Resynced) | Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        book.rebuild(&pods.cache.list());
                        freed = true;
                    }
                    Err(_) => break,
                }
            }
            while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = node_rx.try_recv() {
                nodes_changed = true;
            }
            while let Ok(key) = failed_rx.try_recv() {
                book.retry(&key, &pods.cache);
            }
            if nodes_changed {
                node_infos = nodes
                    .cache
                    .list()
                    .iter()
                    .map(|n| NodeInfo::new(n))
                    .collect();
            }
            if nodes_changed || freed {
                book.unpark();
            }
            let queue = std::mem::take(&mut book.active);
            let round = std::time::Instant::now();
            let queued = queue.len();
            for ((ts, key), pod) in queue {
                let ns = pod.metadata.namespace().to_string();
                let name = pod.metadata.name().to_string();
                match place_info(&PodInfo::new(&pod), &node_infos, &book.nodes, &mut start) {
                    Ok(node) => {
                        book.waiting_since.remove(&key);
                        book.add(&key, Placed::new(&pod, &node));
                        reported.remove(&key);
                        let client = client.clone();
                        let recorder = recorder.clone();
                        let failed = failed_tx.clone();
                        let permits = in_flight.clone();
                        tokio::spawn(async move {
                            let permit = permits.acquire().await;
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
                                    drop(permit);
                                    recorder.normal(
                                        pod.as_ref(),
                                        "Scheduled",
                                        format!("Successfully assigned {key} to {node}"),
                                    );
                                }
                                Err(e) => {
                                    tracing::debug!(pod = %key, error = %e, "binding failed");
                                    let _ = failed.send(key);
                                }
                            }
                        });
                    }
                    Err(why) => {
                        let message = why.to_string();
                        book.parked.insert((ts, key.clone()), pod.clone());
                        if reported.get(&key) == Some(&message) {
                            continue;
                        }
                        tracing::info!(pod = %key, %message, "unschedulable");
                        reported.insert(key, message.clone());
                        let api = Api::<Pod>::namespaced(&client, &ns);
                        let recorder = recorder.clone();
                        let permits = in_flight.clone();
                        tokio::spawn(async move {
                            let _permit = permits.acquire().await;
                            let cond = json!({"status": {"conditions": [{"type": "PodScheduled",
                                "status": "False", "reason": "Unschedulable", "message": message,
                                "lastTransitionTime": format_time(&now())}]}});
                            let _ = api.patch_status(&name, &Patch::Strategic(cond)).await;
                            recorder.warning(pod.as_ref(), "FailedScheduling", message);
                        });
                    }
                }
            }
            if queued > 0 {
                tracing::debug!(
                    queued,
                    elapsed_us = round.elapsed().as_micros() as u64,
                    "scheduling round"
                );
            }
            // Wait for something to happen.
            tokio::select! {
                r = pod_rx.recv() => match r {
                    Ok(Change::Applied(p)) => { book.apply(p); }
                    Ok(Change::Deleted(p)) => {
                        reported.remove(&p.key());
                        if book.remove(&p) { book.unpark(); }
                    }
                    Ok(Change::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        book.rebuild(&pods.cache.list());
                        book.unpark();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = node_rx.recv() => {
                    node_infos = nodes.cache.list().iter().map(|n| NodeInfo::new(n)).collect();
                    book.unpark();
                }
                Some(key) = failed_rx.recv() => book.retry(&key, &pods.cache),
                _ = tokio::time::sleep(Duration::from_secs(30)) => book.unpark(),
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = work => {}
    }
}

#[cfg(test)]
mod tests {
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
}
