//! What a pod worker remembers: per container what is saved on disk (`<pods dir>/<uid>/state.json`, so a restarted
//! agent knows restart counts, running instances and the last exit) and what lives only in memory (readiness,
//! waiting reasons, backoff timers, probe tasks).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::node::probe;
use crate::node::runtime::{ContainerSpec, Handle};

/// How a container instance ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

/// A running instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub handle: Handle,
    pub restart: u32,
    pub started_at: String,
    pub container_id: String,
}

/// What is kept on disk per container (so a restarted agent knows counts, handles and the last exit).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub restart_count: u32,
    /// Whether an instance was ever started.
    pub started_once: bool,
    pub running: Option<Instance>,
    pub last: Option<Terminated>,
    pub backoff_step: u32,
}

/// The pod's record on disk: `<pods dir>/<uid>/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub ip: String,
    pub start_time: String,
    pub containers: BTreeMap<String, Saved>,
}

impl PodState {
    pub fn load(dir: &std::path::Path) -> Option<PodState> {
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()
    }
}

/// Why a container is waiting: Kubernetes' reason and message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Waiting {
    pub reason: &'static str,
    pub message: String,
}

impl Waiting {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Waiting {
            reason,
            message: message.into(),
        }
    }
}

/// In-memory state of one container beside what is saved.
#[derive(Default)]
pub(super) struct Live {
    pub saved: Saved,
    pub spec: Option<ContainerSpec>,
    pub ready: bool,
    pub started: bool,
    pub waiting: Option<Waiting>,
    pub next_start: Option<Instant>,
    /// A config error is retried after this.
    pub retry_config: Option<Instant>,
    /// A failed image pull: when to try again, how many times it failed in a row, and why.
    pub retry_pull: Option<Instant>,
    /// When a failed pull's ErrImagePull turns into ImagePullBackOff (halfway to the retry).
    pub pull_backoff_at: Option<Instant>,
    pub pull_failures: u32,
    /// What ImagePullBackOff says while it waits.
    pub pull_backoff: String,
    pub probes: Vec<tokio::task::JoinHandle<()>>,
    pub counts: HashMap<probe::Kind, (u32, u32)>,
    /// We asked it to stop (liveness failure or deletion), and when to escalate to SIGKILL.
    pub stopping: Option<Instant>,
    pub stop_reason: Option<String>,
    pub init: bool,
}

impl Live {
    /// Whether the container waits for `reason`.
    pub fn waits_for(&self, reason: &str) -> bool {
        self.waiting.as_ref().is_some_and(|w| w.reason == reason)
    }

    /// Ends the container's probes and what they found.
    pub fn stop_probes(&mut self) {
        for p in self.probes.drain(..) {
            p.abort();
        }
        self.counts.clear();
        self.ready = false;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for p in &self.probes {
            p.abort();
        }
    }
}
