//! The scheduler (kube-scheduler's role): binds each unscheduled pod to a node. Filters: the node is Ready and
//! schedulable, resource requests fit allocatable minus what is bound there, nodeSelector and required node affinity
//! match, taints are tolerated, host ports are free. Scores: least allocated, then fewest pods of the same owner (so a
//! controller's replicas spread). A pod that fits nowhere gets PodScheduled=False with Kubernetes' kind of message
//! ("0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable.") and a FailedScheduling event, and
//! is tried again whenever pods or nodes change. Each pass totals node usage once, then updates it as it binds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::core::{Node, Pod};
use crate::api::meta::{format_time, now};
use crate::api::{Object, Resource};
use crate::client::events::Recorder;
use crate::client::informer::{Cache, Change, Shared};
use crate::client::{Api, Client, Patch};
use tokio::sync::broadcast;

mod book;
mod filters;

use book::{Book, Placed};
pub use filters::{
    account, node_states, nodes_to_score, place, place_info, requests, Misfit, NodeInfo, NodeState,
    PodInfo, Unschedulable, Usage,
};

/// How many binding (and unschedulable-status) writes are in flight at once.
const IN_FLIGHT: usize = 64;

/// The scheduling view of every node in the cache, in the order of their names.
fn node_infos_of(nodes: &Cache<Node>) -> Vec<NodeInfo> {
    let mut infos: Vec<NodeInfo> = nodes.list().iter().map(|n| NodeInfo::new(n)).collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    infos
}

/// Brings the scheduling view of the nodes up to date with one change of the node informer: only that node's entry
/// is rebuilt (every entry only after a resync) - 5,000 nodes reporting their status must not cost 5,000 rebuilds
/// each. Returns whether the view changed (a status report that changes nothing a placement reads does not).
/// Parked pods are still retried on every node change, as before: retrying them only when a view changed left the
/// bindings 50 s behind the creates in the 150,000-pod benchmark (why is not understood yet).
fn update_node_infos(
    infos: &mut Vec<NodeInfo>,
    change: Option<Change<Node>>,
    nodes: &Cache<Node>,
) -> bool {
    match change {
        Some(Change::Applied(n)) => {
            let info = NodeInfo::new(&n);
            match infos.binary_search_by(|i| i.name.as_str().cmp(&info.name)) {
                Ok(i) if infos[i] == info => false,
                Ok(i) => {
                    infos[i] = info;
                    true
                }
                Err(i) => {
                    infos.insert(i, info);
                    true
                }
            }
        }
        Some(Change::Deleted(n)) => {
            match infos.binary_search_by(|i| i.name.as_str().cmp(n.metadata.name())) {
                Ok(i) => {
                    infos.remove(i);
                    true
                }
                Err(_) => false,
            }
        }
        Some(Change::Resynced) | None => {
            *infos = node_infos_of(nodes);
            true
        }
    }
}

/// Writes the scheduler's decisions concurrently (at most [`IN_FLIGHT`] at once), off the placement loop.
struct Writer {
    client: Client,
    recorder: Recorder,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Where a binding that failed sends its pod's key, to be placed again.
    failed: tokio::sync::mpsc::UnboundedSender<String>,
    /// Bindings that failed in a row, by pod: the next try waits 1 s, doubling to 10 s (Kubernetes' pod backoff) -
    /// without it a scheduler facing an unreachable API server retried at once, for ever, at full speed.
    failures: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u32>>>,
}

/// How long a pod whose binding failed `n` times in a row waits before it is placed again.
fn bind_backoff(n: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1 << n.saturating_sub(1).min(4))
        .min(std::time::Duration::from_secs(10))
}

impl Writer {
    /// Binds the pod to the node and records the Scheduled event.
    fn bind(&self, pod: Arc<Pod>, key: String, node: String) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let failed = self.failed.clone();
        let permits = self.in_flight.clone();
        let failures = self.failures.clone();
        tokio::spawn(async move {
            let permit = permits.acquire().await;
            let (ns, name) = (pod.metadata.namespace(), pod.metadata.name());
            let path = format!(
                "{}/binding",
                crate::client::resource_path(Pod::info(), Some(ns), Some(name))
            );
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            let body = Some(("application/json", binding.to_string().into_bytes()));
            match client
                .request(reqwest::Method::POST, &path, body, None)
                .await
            {
                Ok(_) => {
                    tracing::debug!(pod = %key, %node, "bound");
                    drop(permit);
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    recorder.normal(
                        pod.as_ref(),
                        "Scheduled",
                        format!("Successfully assigned {key} to {node}"),
                    );
                }
                Err(e) => {
                    tracing::debug!(pod = %key, error = %e, "binding failed");
                    drop(permit);
                    let n = {
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        // Pods deleted while backing off leave their count: bounded, not kept for ever.
                        if f.len() > 10_000 {
                            f.clear();
                        }
                        let n = f.entry(key.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    tokio::time::sleep(bind_backoff(n)).await;
                    let _ = failed.send(key);
                }
            }
        });
    }

    /// Sets the pod's PodScheduled condition to False with why, and records FailedScheduling.
    fn unschedulable(&self, pod: Arc<Pod>, message: String) {
        let api = Api::<Pod>::namespaced(&self.client, pod.metadata.namespace());
        let recorder = self.recorder.clone();
        let permits = self.in_flight.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire().await;
            let cond = json!({"status": {"conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable", "message": message,
                "lastTransitionTime": format_time(&now())}]}});
            let _ = api
                .patch_status(pod.metadata.name(), &Patch::Strategic(cond))
                .await;
            recorder.warning(pod.as_ref(), "FailedScheduling", message);
        });
    }
}

/// One scheduling round: places every waiting pod (binding it through `writer`), parks those that fit nowhere and
/// reports each once per distinct reason.
fn place_waiting(
    book: &mut Book,
    node_infos: &[NodeInfo],
    start: &mut usize,
    reported: &mut HashMap<String, String>,
    writer: &Writer,
) {
    let queue = std::mem::take(&mut book.active);
    let round = std::time::Instant::now();
    let queued = queue.len();
    for ((ts, key), pod) in queue {
        match place_info(&PodInfo::new(&pod), node_infos, &book.nodes, start) {
            Ok(node) => {
                book.waiting_since.remove(&key);
                book.add(&key, Placed::new(&pod, &node));
                reported.remove(&key);
                writer.bind(pod, key, node);
            }
            Err(why) => {
                let message = why.to_string();
                book.parked.insert((ts, key.clone()), pod.clone());
                if reported.get(&key) == Some(&message) {
                    continue;
                }
                tracing::info!(pod = %key, %message, "unschedulable");
                reported.insert(key, message.clone());
                writer.unschedulable(pod, message);
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
}

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
    // Bindings that failed come back here to be retried.
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = Writer {
        client: client.clone(),
        recorder: Recorder::new(&client, "default-scheduler"),
        in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        failed: failed_tx,
        failures: Arc::default(),
    };
    // Pods already reported unschedulable with this message (no repeated writes while nothing changes).
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut book = Book::default();
    book.rebuild(&pods.cache.list());
    let mut node_infos = node_infos_of(&nodes.cache);
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
            loop {
                let change = match node_rx.try_recv() {
                    Ok(c) => Some(c),
                    // Changes were missed: the whole view again.
                    Err(broadcast::error::TryRecvError::Lagged(_)) => None,
                    Err(_) => break,
                };
                update_node_infos(&mut node_infos, change, &nodes.cache);
                nodes_changed = true;
            }
            while let Ok(key) = failed_rx.try_recv() {
                book.retry(&key, &pods.cache);
            }
            if nodes_changed || freed {
                book.unpark();
            }
            place_waiting(&mut book, &node_infos, &mut start, &mut reported, &writer);
            // Wait for something to happen.
            tokio::select! {
                biased;
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
                r = node_rx.recv() => {
                    let change = match r {
                        Ok(c) => Some(c),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    update_node_infos(&mut node_infos, change, &nodes.cache);
                    book.unpark();
                }
                Some(key) = failed_rx.recv() => book.retry(&key, &pods.cache),
                _ = tokio::time::sleep(Duration::from_secs(30)) => book.unpark(),
            }
        }
    };
    tokio::select! {
        biased;
        _ = stop => {}
        _ = work => {}
    }
}

#[cfg(test)]
mod tests;
