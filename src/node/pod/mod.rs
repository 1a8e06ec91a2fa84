//! The pod worker (the kubelet's pod worker and status manager for one pod): one task per pod bound to this node.
//! It gives the pod an address, runs init containers in order and then the containers, restarts them per
//! `restartPolicy` with Kubernetes' crash-loop backoff, runs probes, stops containers gracefully when the pod is
//! deleted, and reports the pod's whole status. What it started is recorded in the pod's directory, so an agent that
//! restarts adopts running containers instead of starting them again. It never schedules and never creates pods.
//!
//! The worker is split by job: [`state`] (what it remembers), [`spec`] (container -> runtime spec), `start`
//! (starting a container and what a failure means), `probes` (probe tasks and what results mean), [`report`] (phase,
//! container statuses, conditions) and this file (the loop, sync and termination).

mod probes;
mod report;
pub mod spec;
mod start;
pub mod state;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::network::Attachment;
use super::probe;
use super::runtime::ExitRecord;
use super::Shared;
use crate::api::core::{Container, Pod, PodSpec, PodStatus};
use crate::api::meta::{format_time, now, Time};
pub use spec::resolv_conf;
pub use state::{Instance, PodState, Saved, Terminated};
use state::{Live, Waiting};

/// What a pod worker is told.
#[derive(Debug)]
pub enum Msg {
    /// The newest version of the pod.
    Update(Arc<Pod>),
    /// The pod object is gone from the API: stop its containers and clean up.
    Removed,
    /// The agent is shutting down and asks for the pod's containers to stop (the pod stays).
    Shutdown,
    Exited {
        container: String,
        restart: u32,
        exit: ExitRecord,
    },
    Probe {
        container: String,
        restart: u32,
        kind: probe::Kind,
        result: Result<(), probe::Failure>,
    },
}

pub struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    uid: String,
    dir: PathBuf,
    state: PodState,
    live: BTreeMap<String, Live>,
    tx: mpsc::UnboundedSender<Msg>,
    reported: Option<PodStatus>,
    /// Per condition type: its status and when it last changed.
    transitions: BTreeMap<String, (String, Time)>,
    /// A pod that had finished before this agent knew it (no record on disk): never started again.
    frozen: bool,
    removed: bool,
    shutdown: bool,
    backoff_event: BTreeMap<String, u32>,
    retry_report: Option<Instant>,
    /// The pod's network namespace (bridge network), which its containers join.
    netns: Option<PathBuf>,
}

static NO_SPEC: LazyLock<PodSpec> = LazyLock::new(PodSpec::default);

/// The pod's init containers, in order.
fn inits(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

/// The pod's (main) containers.
fn mains(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

/// The pod's container (or init container) called `name`.
fn container_of<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    mains(pod).iter().chain(inits(pod)).find(|c| c.name == name)
}

impl Worker {
    pub fn new(shared: Arc<Shared>, pod: Arc<Pod>, tx: mpsc::UnboundedSender<Msg>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = shared.pods_dir.join(&uid);
        Worker {
            shared,
            uid,
            dir,
            pod,
            state: PodState::default(),
            live: BTreeMap::new(),
            tx,
            reported: None,
            transitions: BTreeMap::new(),
            frozen: false,
            removed: false,
            shutdown: false,
            backoff_event: BTreeMap::new(),
            retry_report: None,
            netns: None,
        }
    }

    fn spec(&self) -> &PodSpec {
        self.pod.spec.as_ref().unwrap_or(&NO_SPEC)
    }
    fn ns(&self) -> &str {
        self.pod.metadata.namespace()
    }
    fn name(&self) -> &str {
        self.pod.metadata.name()
    }
    fn key(&self) -> String {
        format!("{}/{}", self.ns(), self.name())
    }

    fn save(&self) {
        let mut st = self.state.clone();
        st.containers = self
            .live
            .iter()
            .map(|(k, l)| (k.clone(), l.saved.clone()))
            .collect();
        let tmp = self.dir.join("state.json.tmp");
        if std::fs::create_dir_all(&self.dir).is_ok()
            && std::fs::write(&tmp, serde_json::to_vec(&st).unwrap_or_default()).is_ok()
        {
            let _ = std::fs::rename(&tmp, self.dir.join("state.json"));
        }
    }

    /// Loads what an earlier agent recorded and adopts containers that still run.
    async fn restore(&mut self) {
        let Some(st) = PodState::load(&self.dir) else {
            return;
        };
        let mut st = st;
        if let Ok(ip) = st.ip.parse() {
            if !self.host_network() {
                self.netns = self.shared.network.adopt(&self.uid, ip).netns;
            }
        }
        // The pod's network namespace is gone (the machine restarted, or someone removed it): its containers lost
        // their network. Like the kubelet on a changed sandbox, they are killed and the pod starts again in a new one.
        let lost = self.netns.as_ref().is_some_and(|p| !p.exists());
        if lost {
            tracing::warn!(pod = %self.key(), "the pod's network namespace is gone; killing its containers and starting them in a new one");
            self.event(
                "Normal",
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            )
            .await;
            for saved in st.containers.values() {
                if let Some(inst) = &saved.running {
                    self.shared.runtime.signal(&inst.handle, libc::SIGKILL);
                }
            }
            self.shared.network.teardown(&self.uid).await;
            self.netns = None;
            st.ip.clear();
        }
        for (name, saved) in &st.containers {
            let mut live = Live::default();
            live.saved = saved.clone();
            if let Some(inst) = saved.running.clone() {
                if !lost && self.shared.runtime.alive(&inst.handle).await {
                    tracing::info!(pod = %self.key(), container = %name, pid = inst.handle.pid, "adopted running container");
                    self.watch_exit(name, &inst);
                    // Probes restart from scratch; a container without a readiness probe is ready again at once.
                    live.started = true;
                } else {
                    live.saved.running = None;
                    live.saved.last = Some(Terminated {
                        exit_code: 137,
                        signal: None,
                        reason: "ContainerStatusUnknown".into(),
                        message: "The container could not be located when the pod was terminated"
                            .into(),
                        started_at: inst.started_at.clone(),
                        finished_at: format_time(&now()),
                        container_id: inst.container_id.clone(),
                    });
                }
            }
            self.live.insert(name.clone(), live);
        }
        self.state = st;
    }

    /// Runs the pod until it is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.restore().await;
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.state.ip.is_empty() && matches!(phase, Some("Succeeded" | "Failed")) {
            self.frozen = true;
        }
        let pod = self.pod.clone();
        for c in mains(&pod) {
            self.live.entry(c.name.clone()).or_default();
        }
        for c in inits(&pod) {
            self.live.entry(c.name.clone()).or_default().init = true;
        }
        // Adopted containers get their probes back.
        let adopted: Vec<(String, Instance)> = self
            .live
            .iter()
            .filter_map(|(n, l)| l.saved.running.clone().map(|i| (n.clone(), i)))
            .collect();
        for (name, inst) in adopted {
            self.start_probes(&name, &inst).await;
        }
        loop {
            if self.sync().await {
                break;
            }
            let wake = self.next_wake();
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(wake) => None,
            };
            let mut msgs: Vec<Msg> = msg.into_iter().collect();
            while let Ok(m) = rx.try_recv() {
                msgs.push(m);
            }
            for m in msgs {
                self.handle(m).await;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(30);
        if let Some(t) = self.retry_report {
            wake = wake.min(t);
        }
        for l in self.live.values() {
            for t in [l.next_start, l.retry_config, l.retry_pull, l.stopping]
                .into_iter()
                .flatten()
            {
                wake = wake.min(t);
            }
            // A failed pull is reported as ErrImagePull, then as ImagePullBackOff while it waits to be retried.
            if let Some(t) = l.pull_backoff_at.filter(|_| l.waits_for("ErrImagePull")) {
                wake = wake.min(t);
            }
        }
        wake.max(Instant::now() + Duration::from_millis(1))
    }

    async fn handle(&mut self, m: Msg) {
        match m {
            Msg::Update(pod) => {
                if pod.metadata.uid.as_deref() == Some(self.uid.as_str()) {
                    self.pod = pod;
                }
            }
            Msg::Removed => self.removed = true,
            Msg::Shutdown => self.shutdown = true,
            Msg::Exited {
                container,
                restart,
                exit,
            } => self.exited(&container, restart, exit).await,
            Msg::Probe {
                container,
                restart,
                kind,
                result,
            } => self.probed(&container, restart, kind, result).await,
        }
    }

    async fn exited(&mut self, name: &str, restart: u32, exit: ExitRecord) {
        let max = self.shared.config.backoff_max;
        let Some(l) = self.live.get_mut(name) else {
            return;
        };
        let Some(inst) = l.saved.running.clone().filter(|i| i.restart == restart) else {
            return;
        };
        l.stop_probes();
        l.started = false;
        l.stopping = None;
        let reason = match &exit.reason {
            Some(r) => r.as_str(),
            None if exit.exit_code == 0 => "Completed",
            None => "Error",
        };
        let ran = chrono::DateTime::parse_from_rfc3339(&inst.started_at)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
            .unwrap_or(0);
        // A container that ran long enough starts its backoff afresh (the kubelet forgets after twice the maximum).
        if ran as u64 > 2 * max.as_secs() {
            l.saved.backoff_step = 0;
        }
        l.saved.running = None;
        l.saved.last = Some(Terminated {
            exit_code: exit.exit_code,
            signal: exit.signal,
            reason: reason.into(),
            message: l.stop_reason.take().unwrap_or_default(),
            started_at: inst.started_at.clone(),
            finished_at: exit.finished_at.clone(),
            container_id: inst.container_id.clone(),
        });
        let delay = self.shared.config.backoff_delay(l.saved.backoff_step);
        l.next_start = Some(Instant::now() + delay);
        l.saved.backoff_step += 1;
        tracing::info!(pod = %self.key(), container = name, exit_code = exit.exit_code, "container exited");
        self.save();
    }

    /// The grace period for stopping: the deletion's, else the pod's, else 30 s.
    fn grace(&self) -> i64 {
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .or(self.spec().termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0)
    }

    async fn stop_container(&mut self, name: &str, grace: i64, why: &str) {
        let runtime = self.shared.runtime.clone();
        let Some(l) = self.live.get_mut(name) else {
            return;
        };
        let Some(inst) = &l.saved.running else { return };
        let deadline = Instant::now() + Duration::from_secs(grace as u64);
        if let Some(t) = &mut l.stopping {
            // Already stopping: a shorter grace (the node shutting down) brings the SIGKILL forward.
            *t = (*t).min(deadline);
            return;
        }
        runtime.signal(&inst.handle, libc::SIGTERM);
        l.stopping = Some(deadline);
        l.stop_reason = Some(why.to_string());
        for p in l.probes.drain(..) {
            p.abort();
        }
        l.ready = false;
        self.event("Normal", "Killing", why).await;
    }

    async fn event(&self, ty: &str, reason: &str, message: &str) {
        self.shared.api.event(&self.pod, ty, reason, message).await;
    }

    fn watch_exit(&self, name: &str, inst: &Instance) {
        let runtime = self.shared.runtime.clone();
        let tx = self.tx.clone();
        let handle = inst.handle.clone();
        let container = name.to_string();
        let restart = inst.restart;
        tokio::spawn(async move {
            let exit = runtime.wait(&handle).await;
            let _ = tx.send(Msg::Exited {
                container,
                restart,
                exit,
            });
        });
    }

    /// `spec.hostNetwork`: the pod uses the node's network and address.
    fn host_network(&self) -> bool {
        self.spec().host_network == Some(true)
    }

    /// Gives the pod its address (and network namespace) once; false while it cannot have one yet.
    async fn ensure_address(&mut self) -> bool {
        if !self.state.ip.is_empty() {
            return true;
        }
        let attached = if self.host_network() {
            Ok(Attachment {
                ip: self
                    .shared
                    .config
                    .address
                    .to_string()
                    .parse()
                    .unwrap_or(Ipv4Addr::LOCALHOST),
                netns: None,
            })
        } else {
            self.shared.network.setup(&self.uid).await
        };
        match attached {
            Ok(a) => {
                self.state.ip = a.ip.to_string();
                self.netns = a.netns;
                self.state.namespace = self.ns().to_string();
                self.state.name = self.name().to_string();
                self.state.start_time = format_time(&now());
                self.save();
                true
            }
            Err(e) => {
                tracing::warn!(pod = %self.key(), "no pod address: {e}");
                false
            }
        }
    }

    /// Starts the next init container when it is due; true once every init container has succeeded.
    async fn run_inits(&mut self) -> bool {
        let pod = self.pod.clone();
        for c in inits(&pod) {
            let l = self.live.entry(c.name.clone()).or_default();
            l.init = true;
            if l.saved.running.is_some() {
                return false;
            }
            let last_ok = l.saved.last.as_ref().map(|t| t.exit_code == 0);
            match last_ok {
                Some(true) if l.saved.started_once => continue,
                Some(false) if !self.restarts(1, true) => return false,
                _ => {}
            }
            if self.due(&c.name) {
                self.start(c).await;
            }
            return false;
        }
        true
    }

    /// Starts every container that should run and is due.
    async fn run_containers(&mut self) {
        let pod = self.pod.clone();
        for c in mains(&pod) {
            let l = self.live.entry(c.name.clone()).or_default();
            if l.saved.running.is_some() {
                continue;
            }
            let restart = match l.saved.last.as_ref().map(|t| t.exit_code) {
                None => true,
                Some(code) => self.restarts(code, false),
            };
            if restart && self.due(&c.name) {
                self.start(c).await;
            }
        }
    }

    /// One pass: start what should run, stop what should stop, report status. Returns true when the worker is done.
    async fn sync(&mut self) -> bool {
        let now_i = Instant::now();
        // Escalate stops whose grace ran out.
        for l in self.live.values_mut() {
            if let (Some(at), Some(inst)) = (l.stopping, &l.saved.running) {
                if now_i >= at {
                    self.shared.runtime.signal(&inst.handle, libc::SIGKILL);
                    l.stopping = Some(now_i + Duration::from_secs(3600));
                }
            }
        }
        let deleting = self.pod.metadata.deletion_timestamp.is_some();
        if deleting || self.removed || self.shutdown {
            return self.terminate(deleting).await;
        }
        if self.frozen {
            return false;
        }
        if !self.ensure_address().await {
            self.report().await;
            return false;
        }
        if !self.terminal() && self.run_inits().await {
            self.run_containers().await;
        }
        self.backoff_events().await;
        self.report().await;
        false
    }

    /// Whether a container may be (re)started now; otherwise it is in crash-loop backoff or waiting for config.
    fn due(&mut self, name: &str) -> bool {
        let Some(l) = self.live.get_mut(name) else {
            return true;
        };
        let now_i = Instant::now();
        if l.waits_for("CreateContainerError") {
            return false;
        }
        if l.retry_config.is_some_and(|t| now_i < t) {
            return false;
        }
        if l.retry_pull.is_some_and(|t| now_i < t) {
            if l.pull_backoff_at.is_none_or(|b| now_i >= b) {
                l.waiting = Some(Waiting::new("ImagePullBackOff", l.pull_backoff.clone()));
            }
            return false;
        }
        match l.next_start {
            Some(t) if now_i < t => {
                let delay = self
                    .shared
                    .config
                    .backoff_delay(l.saved.backoff_step.saturating_sub(1))
                    .as_secs();
                let message = format!(
                    "back-off {delay}s restarting failed container={name} pod={}_{}({})",
                    self.pod.metadata.name(),
                    self.pod.metadata.namespace(),
                    self.uid
                );
                l.waiting = Some(Waiting::new("CrashLoopBackOff", message));
                false
            }
            _ => true,
        }
    }

    async fn backoff_events(&mut self) {
        let due: Vec<(String, u32)> = self
            .live
            .iter()
            .filter(|(name, l)| {
                l.waits_for("CrashLoopBackOff")
                    && self.backoff_event.get(*name) != Some(&l.saved.restart_count)
            })
            .map(|(name, l)| (name.clone(), l.saved.restart_count))
            .collect();
        for (name, count) in due {
            self.backoff_event.insert(name.clone(), count);
            let msg = format!(
                "Back-off restarting failed container {name} in pod {}_{}({})",
                self.name(),
                self.ns(),
                self.uid
            );
            self.event("Warning", "BackOff", &msg).await;
        }
    }

    /// Reports the stopped pod and removes it from the API (the kubelet's final delete). False when that failed.
    async fn finish_deletion(&mut self) -> bool {
        self.report().await;
        match self
            .shared
            .api
            .delete_now(self.ns(), self.name(), &self.uid)
            .await
        {
            Ok(_) => true,
            Err(e) if e.code() == Some(404) || e.code() == Some(409) => true,
            Err(e) => {
                tracing::warn!(pod = %self.key(), "final delete failed: {e}");
                false
            }
        }
    }

    /// Stops every container (SIGTERM, then SIGKILL after the grace period); once all are down, removes the pod from
    /// the API (when it is being deleted) and cleans up. Returns true when done.
    async fn terminate(&mut self, deleting: bool) -> bool {
        let mut grace = if self.removed && !deleting {
            0
        } else {
            self.grace()
        };
        if self.shutdown {
            // The node is stopping: no pod holds it up longer than 10 s, one in its deletion's grace included.
            grace = grace.min(10);
        }
        let running: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.saved.running.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &running {
            self.stop_container(name, grace, &format!("Stopping container {name}"))
                .await;
        }
        if !running.is_empty() {
            if deleting {
                self.report().await;
            }
            return false;
        }
        if self.shutdown && !self.removed && !(deleting && self.finish_deletion().await) {
            // The node stops with its pods (`capstan up`): the pod's network goes too, and comes back when it
            // starts again. (A pod being deleted whose last delete could not be written - the API server stopping
            // first - is finished when the node starts again: its directory stays.)
            if !self.host_network() && !self.state.ip.is_empty() {
                self.shared.network.teardown(&self.uid).await;
                self.state.ip.clear();
                self.netns = None;
            }
            // Memory-backed volumes go with the node; they are mounted and filled again when it starts.
            super::volumes::release(&self.dir);
            self.save();
            return true;
        }
        if deleting && !self.removed && !self.shutdown && !self.finish_deletion().await {
            return false;
        }
        if !self.host_network() {
            self.shared.network.teardown(&self.uid).await;
        }
        super::volumes::release(&self.dir);
        self.shared.tokens.forget(&self.uid);
        super::remove_pod_dir(&self.dir).await;
        tracing::info!(pod = %self.key(), "pod cleaned up");
        true
    }
}

#[cfg(test)]
mod tests;
