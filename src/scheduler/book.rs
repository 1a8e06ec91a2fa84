//! The scheduler's book (kube-scheduler's cache and queues): what each node has bound, kept from the pod change
//! feed, the pods waiting in arrival order, and the pods that fit nowhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::core::Pod;
use crate::api::meta::Time;
use crate::api::Object;
use crate::client::informer::Cache;

use super::filters::*;

/// What a bound pod takes from its node.
#[derive(Clone, Debug)]
pub(super) struct Placed {
    pub(super) node: String,
    pub(super) usage: Usage,
    pub(super) ports: Vec<(i64, String)>,
    pub(super) owner: Option<String>,
}

impl Placed {
    pub(super) fn new(pod: &Pod, node: &str) -> Self {
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
pub(super) struct Book {
    pub(super) placed: HashMap<String, Placed>,
    pub(super) nodes: HashMap<String, NodeState>,
    /// Waiting pods, oldest first: (creationTimestamp, key) -> pod.
    pub(super) active: BTreeMap<(Option<Time>, String), Arc<Pod>>,
    pub(super) parked: BTreeMap<(Option<Time>, String), Arc<Pod>>,
    pub(super) waiting_since: HashMap<String, Option<Time>>,
}

impl Book {
    pub(super) fn add(&mut self, key: &str, p: Placed) {
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
    pub(super) fn release(&mut self, key: &str) -> bool {
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

    pub(super) fn unqueue(&mut self, key: &str) {
        if let Some(ts) = self.waiting_since.remove(key) {
            let k = (ts, key.to_string());
            self.active.remove(&k);
            self.parked.remove(&k);
        }
    }

    /// Takes in the newest version of a pod. Returns true when capacity was freed.
    pub(super) fn apply(&mut self, pod: Arc<Pod>) -> bool {
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

    pub(super) fn remove(&mut self, pod: &Pod) -> bool {
        let key = pod.key();
        self.unqueue(&key);
        self.release(&key)
    }

    /// A binding failed: the pod is no longer assumed, and waits again if it still exists unbound.
    pub(super) fn retry(&mut self, key: &str, cache: &Cache<Pod>) {
        self.release(key);
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        if let Some(p) = cache.get(ns, name) {
            self.apply(p);
        }
    }

    pub(super) fn unpark(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        self.active.extend(parked);
    }

    pub(super) fn rebuild(&mut self, pods: &[Arc<Pod>]) {
        *self = Book::default();
        for p in pods {
            self.apply(p.clone());
        }
    }
}
