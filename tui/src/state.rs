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

/// The objects of one kind, by `namespace/name`.
pub type Objects = BTreeMap<String, Arc<Value>>;

/// Every object the TUI knows, by kind.
#[derive(Default)]
pub struct Store {
    kinds: BTreeMap<String, Objects>,
    /// Bumped on every change: views recompute their rows only when it moved.
    pub generation: u64,
    /// Why the API server cannot be reached, if it cannot.
    pub disconnected: Option<String>,
}

pub fn key_of(v: &Value) -> String {
    format!(
        "{}/{}",
        str_at(v, "/metadata/namespace"),
        str_at(v, "/metadata/name")
    )
}

/// The string at a JSON pointer, or "".
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

impl Store {
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::Applied { kind, object } => {
                self.kinds
                    .entry(kind.clone())
                    .or_default()
                    .insert(key_of(object), object.clone());
            }
            Event::Deleted { kind, object } => {
                if let Some(m) = self.kinds.get_mut(kind) {
                    m.remove(&key_of(object));
                }
            }
            Event::Listed { kind, objects } => {
                self.kinds.insert(
                    kind.clone(),
                    objects.iter().map(|o| (key_of(o), o.clone())).collect(),
                );
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

    pub fn insert(&mut self, kind: &str, object: Value) {
        self.apply(&Event::Applied {
            kind: kind.to_string(),
            object: Arc::new(object),
        });
    }

    pub fn objects(&self, kind: &str) -> impl Iterator<Item = &Arc<Value>> {
        self.kinds.get(kind).into_iter().flat_map(|m| m.values())
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.kinds.get(kind)?.get(&format!("{namespace}/{name}"))
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
                for v in m.values() {
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
        assert!(s.apply(&Event::Connection(Some("refused".into()))));
        assert!(!s.apply(&Event::Connection(Some("refused".into()))));
    }
}
