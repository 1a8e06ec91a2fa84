//! The state half of the TUI: what the cluster looks like, fed by watches. The binary runs one informer per kind
//! and forwards every change as an [`Event`]; the [`Store`] keeps the objects by kind, namespace and name, and counts
//! changes so drawing knows when something moved. Nothing here does I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// What the outside world tells the TUI.
#[derive(Debug, Clone)]
pub enum Event {
    /// An object of `kind` (plural resource name) was added or changed.
    Applied {
        kind: String,
        object: Arc<Value>,
    },
    Deleted {
        kind: String,
        object: Arc<Value>,
    },
    /// The whole list of `kind` (after a list or a relist).
    Listed {
        kind: String,
        objects: Vec<Arc<Value>>,
    },
    /// The API server answers (`None`) or not (why).
    Connection(Option<String>),
    /// Lines of the log stream `stream` (the id of the logs page that asked).
    Log {
        stream: u64,
        lines: Vec<String>,
    },
    /// The log stream ended (with an error, or `None`).
    LogEnd {
        stream: u64,
        error: Option<String>,
    },
    /// A text to show on a page of its own (a commit's diff).
    Text {
        title: String,
        body: String,
    },
    /// A question before a mutating request (the revert diff of a rollback).
    Confirm {
        title: String,
        body: String,
        request: Request,
    },
    /// The custom kinds the cluster serves now (CRDs), listable with `:`.
    Kinds(Vec<crate::kinds::CustomKind>),
    /// The outcome of a request.
    Notice(String),
    Failure(String),
}

/// What the TUI asks the outside world to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Delete {
        kind: String,
        namespace: String,
        name: String,
    },
    Scale {
        kind: String,
        namespace: String,
        name: String,
        replicas: i64,
    },
    RolloutRestart {
        kind: String,
        namespace: String,
        name: String,
    },
    /// Stream a container's log into logs page `stream`.
    Logs {
        stream: u64,
        namespace: String,
        pod: String,
        container: String,
        previous: bool,
    },
    StopLogs {
        stream: u64,
    },
    /// Show what commit `revision` of an Application changed.
    CommitDiff {
        namespace: String,
        app: String,
        revision: String,
    },
    /// Prepare a rollback of an Application to `revision`: answers with [`Event::Confirm`] showing the revert diff.
    PrepareRollback {
        namespace: String,
        app: String,
        revision: String,
    },
    /// Write the revert commit.
    Rollback {
        namespace: String,
        app: String,
        revision: String,
    },
    Sync {
        namespace: String,
        app: String,
    },
}

impl Request {
    /// Whether the request changes the cluster or the repository (hidden in read-only mode).
    pub fn mutating(&self) -> bool {
        !matches!(
            self,
            Request::Logs { .. }
                | Request::StopLogs { .. }
                | Request::CommitDiff { .. }
                | Request::PrepareRollback { .. }
        )
    }
}

/// What filtering needs of an object, read once when it arrives (not per frame: JSON lookups add up at thousands
/// of objects).
#[derive(Debug, Default)]
pub struct Meta {
    pub namespace: String,
    pub name: String,
    pub owners: Vec<String>,
    pub node: String,
    pub labels: Vec<(String, String)>,
    /// Lowercased free text a filter also searches (event and commit messages).
    pub text: String,
    /// A pod's CPU (millicores) and memory (bytes) requests while it holds them (not Succeeded or Failed).
    pub requests: Option<(i64, i64)>,
}

impl Meta {
    fn of(v: &Value) -> Meta {
        Meta {
            namespace: str_at(v, "/metadata/namespace").to_string(),
            name: str_at(v, "/metadata/name").to_string(),
            owners: at(v, "/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r["uid"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            node: str_at(v, "/spec/nodeName").to_string(),
            labels: at(v, "/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            text: format!("{} {}", str_at(v, "/message"), str_at(v, "/spec/message"))
                .to_lowercase(),
            requests: pod_requests(v),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn pod_requests(v: &Value) -> Option<(i64, i64)> {
    let phase = str_at(v, "/status/phase");
    if str_at(v, "/spec/nodeName").is_empty() || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let mut sum = (0, 0);
    for c in at(v, "/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        sum.0 += crate::kinds::millicores(str_at(c, "/resources/requests/cpu"));
        sum.1 += crate::kinds::bytes(str_at(c, "/resources/requests/memory"));
    }
    Some(sum)
}

/// Requested CPU, memory and the count of pods holding them, on one node.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub pods: usize,
}

/// An object and what was read of it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub object: Arc<Value>,
    pub meta: Arc<Meta>,
}

impl Entry {
    fn of(object: &Arc<Value>) -> Entry {
        Entry {
            object: object.clone(),
            meta: Arc::new(Meta::of(object)),
        }
    }
}

/// The objects of one kind, by `namespace/name`.
pub type Objects = BTreeMap<String, Entry>;

/// Every object the TUI knows, by kind.
#[derive(Default)]
pub struct Store {
    kinds: BTreeMap<String, Objects>,
    /// Bumped on every change: views recompute their rows only when it moved.
    pub generation: u64,
    /// Why the API server cannot be reached, if it cannot.
    pub disconnected: Option<String>,
    /// Pod requests per node, kept up to date as pods come and go (the Nodes view would otherwise sum every pod
    /// for every row of every frame).
    usage: std::collections::HashMap<String, Usage>,
}

pub fn key_of(v: &Value) -> String {
    format!(
        "{}/{}",
        str_at(v, "/metadata/namespace"),
        str_at(v, "/metadata/name")
    )
}

/// The value at a JSON pointer. Like `Value::pointer`, without allocating for pointers that need no unescaping
/// (drawing looks up tens of thousands per frame).
pub fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return v.pointer(pointer);
    }
    let mut cur = v;
    for token in pointer.split('/').skip(1) {
        cur = match cur {
            Value::Object(m) => m.get(token)?,
            Value::Array(a) => a.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The string at a JSON pointer, or "".
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer).and_then(Value::as_str).unwrap_or("")
}

impl Store {
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::Applied { kind, object } => {
                let e = Entry::of(object);
                self.count_usage(kind, &e, 1);
                let old = self
                    .kinds
                    .entry(kind.clone())
                    .or_default()
                    .insert(key_of(object), e);
                if let Some(old) = old {
                    self.count_usage(kind, &old, -1);
                }
            }
            Event::Deleted { kind, object } => {
                let old = self
                    .kinds
                    .get_mut(kind)
                    .and_then(|m| m.remove(&key_of(object)));
                if let Some(old) = old {
                    self.count_usage(kind, &old, -1);
                }
            }
            Event::Listed { kind, objects } => {
                let map: Objects = objects.iter().map(|o| (key_of(o), Entry::of(o))).collect();
                if kind == "pods" {
                    self.usage.clear();
                    for e in map.values() {
                        self.count_usage(kind, e, 1);
                    }
                }
                self.kinds.insert(kind.clone(), map);
            }
            Event::Kinds(kinds) => {
                for k in kinds {
                    crate::kinds::register(k);
                }
            }
            Event::Connection(why) => {
                if self.disconnected == *why {
                    return false;
                }
                self.disconnected = why.clone();
            }
            _ => return false,
        }
        self.generation += 1;
        true
    }

    fn count_usage(&mut self, kind: &str, e: &Entry, sign: i64) {
        let (Some((cpu, memory)), "pods") = (e.meta.requests, kind) else {
            return;
        };
        let u = self.usage.entry(e.meta.node.clone()).or_default();
        u.cpu += sign * cpu;
        u.memory += sign * memory;
        u.pods = (u.pods as i64 + sign).max(0) as usize;
    }

    /// What the pods on `node` request.
    pub fn usage(&self, node: &str) -> Usage {
        self.usage.get(node).copied().unwrap_or_default()
    }

    pub fn insert(&mut self, kind: &str, object: Value) {
        self.apply(&Event::Applied {
            kind: kind.to_string(),
            object: Arc::new(object),
        });
    }

    pub fn objects(&self, kind: &str) -> impl Iterator<Item = &Arc<Value>> {
        self.entries(kind).map(|e| &e.object)
    }

    pub fn entries(&self, kind: &str) -> impl Iterator<Item = &Entry> {
        self.kinds.get(kind).into_iter().flat_map(|m| m.values())
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.kinds
            .get(kind)?
            .get(&format!("{namespace}/{name}"))
            .map(|e| &e.object)
    }

    pub fn count(&self, kind: &str) -> usize {
        self.kinds.get(kind).map_or(0, |m| m.len())
    }

    /// The namespaces seen on any object, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .objects("namespaces")
            .map(|n| str_at(n, "/metadata/name").to_string())
            .collect();
        if out.is_empty() {
            let mut seen = std::collections::BTreeSet::new();
            for m in self.kinds.values() {
                for v in m.values().map(|e| &e.object) {
                    let ns = str_at(v, "/metadata/namespace");
                    if !ns.is_empty() {
                        seen.insert(ns.to_string());
                    }
                }
            }
            out = seen.into_iter().collect();
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_store_follows_adds_changes_deletes_and_relists() {
        let mut s = Store::default();
        let pod = |name: &str, phase: &str| {
            Arc::new(
                json!({"metadata": {"namespace": "demo", "name": name}, "status": {"phase": phase}}),
            )
        };
        s.apply(&Event::Applied {
            kind: "pods".into(),
            object: pod("a", "Pending"),
        });
        s.apply(&Event::Applied {
            kind: "pods".into(),
            object: pod("a", "Running"),
        });
        assert_eq!(s.count("pods"), 1);
        assert_eq!(
            str_at(s.get("pods", "demo", "a").unwrap(), "/status/phase"),
            "Running"
        );
        let g = s.generation;
        s.apply(&Event::Deleted {
            kind: "pods".into(),
            object: pod("a", "Running"),
        });
        assert_eq!(s.count("pods"), 0);
        assert!(s.generation > g);
        s.apply(&Event::Listed {
            kind: "pods".into(),
            objects: vec![pod("b", "Running"), pod("c", "Running")],
        });
        assert_eq!(s.count("pods"), 2);
        assert_eq!(s.namespaces(), vec!["demo".to_string()]);
        // Node usage follows pods as they change, finish and go.
        let on_node = |name: &str, phase: &str, cpu: &str| {
            Arc::new(json!({"metadata": {"namespace": "demo", "name": name},
                "spec": {"nodeName": "n1", "containers": [{"resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]},
                "status": {"phase": phase}}))
        };
        for (name, phase, cpu) in [
            ("x", "Running", "100m"),
            ("y", "Running", "250m"),
            ("x", "Running", "200m"),
        ] {
            s.apply(&Event::Applied {
                kind: "pods".into(),
                object: on_node(name, phase, cpu),
            });
        }
        assert_eq!(
            s.usage("n1"),
            Usage {
                cpu: 450,
                memory: 2 << 20,
                pods: 2
            }
        );
        s.apply(&Event::Applied {
            kind: "pods".into(),
            object: on_node("y", "Succeeded", "250m"),
        });
        s.apply(&Event::Deleted {
            kind: "pods".into(),
            object: on_node("x", "Running", "200m"),
        });
        assert_eq!(s.usage("n1"), Usage::default());
        assert!(s.apply(&Event::Connection(Some("refused".into()))));
        assert!(!s.apply(&Event::Connection(Some("refused".into()))));
    }
}
