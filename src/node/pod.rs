//! The pod worker (the kubelet's pod worker and status manager for one pod): one task per pod bound to this node.
//! It gives the pod an address, runs init containers in order and then the containers, restarts them per
//! `restartPolicy` with Kubernetes' crash-loop backoff, runs probes, stops containers gracefully when the pod is
//! deleted, and reports the pod's whole status. What it started is recorded in the pod's directory, so an agent that
//! restarts adopts running containers instead of starting them again. It never schedules and never creates pods.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::network::Attachment;
use super::probe::{self, Probe};
use super::runtime::{ContainerSpec, ExitRecord, Handle, RuntimeError};
use super::Shared;
use crate::api::meta::{format_time, now};

/// The `resolv.conf` of a pod that uses cluster DNS: the node's server, Kubernetes' search path and `ndots:5`.
pub fn resolv_conf(nameserver: Ipv4Addr, ns: &str) -> String {
    let domain = crate::api::CLUSTER_DOMAIN;
    format!("nameserver {nameserver}\nsearch {ns}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n")
}

/// What a pod worker is told.
#[derive(Debug)]
pub enum Msg {
    /// The newest version of the pod.
    Update(Value),
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
        result: Result<(), String>,
    },
}

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

/// In-memory state of one container beside what is saved.
#[derive(Default)]
struct Live {
    saved: Saved,
    spec: Option<ContainerSpec>,
    ready: bool,
    started: bool,
    waiting: Option<(String, String)>,
    next_start: Option<Instant>,
    /// A config error is retried after this.
    retry_config: Option<Instant>,
    /// A failed image pull: when to try again, how many times it failed in a row, and why.
    retry_pull: Option<Instant>,
    /// When a failed pull's ErrImagePull turns into ImagePullBackOff (halfway to the retry).
    pull_backoff_at: Option<Instant>,
    pull_failures: u32,
    /// What ImagePullBackOff says while it waits.
    pull_backoff: String,
    probes: Vec<tokio::task::JoinHandle<()>>,
    counts: HashMap<probe::Kind, (u32, u32)>,
    /// We asked it to stop (liveness failure or deletion), and when to escalate to SIGKILL.
    stopping: Option<Instant>,
    stop_reason: Option<String>,
    init: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        for p in &self.probes {
            p.abort();
        }
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    pod: Value,
    uid: String,
    dir: PathBuf,
    state: PodState,
    live: BTreeMap<String, Live>,
    tx: mpsc::UnboundedSender<Msg>,
    reported: Value,
    transitions: BTreeMap<String, (String, String)>,
    /// A pod that had finished before this agent knew it (no record on disk): never started again.
    frozen: bool,
    removed: bool,
    shutdown: bool,
    backoff_event: BTreeMap<String, u32>,
    retry_report: Option<Instant>,
    /// The pod's network namespace (bridge network), which its containers join.
    netns: Option<PathBuf>,
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn containers(pod: &Value, field: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl Worker {
    pub fn new(shared: Arc<Shared>, pod: Value, tx: mpsc::UnboundedSender<Msg>) -> Self {
        let uid = s(&pod, "/metadata/uid").to_string();
        let dir = shared.pods_dir.join(&uid);
        Worker {
            shared,
            uid,
            dir,
            pod,
            state: PodState::default(),
            live: BTreeMap::new(),
            tx,
            reported: Value::Null,
            transitions: BTreeMap::new(),
            frozen: false,
            removed: false,
            shutdown: false,
            backoff_event: BTreeMap::new(),
            retry_report: None,
            netns: None,
        }
    }

    fn ns(&self) -> &str {
        s(&self.pod, "/metadata/namespace")
    }
    fn name(&self) -> &str {
        s(&self.pod, "/metadata/name")
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
        if let Ok(ip) = st.ip.parse() {
            if !self.host_network() {
                self.netns = self.shared.network.adopt(&self.uid, ip).netns;
            }
        }
        for (name, saved) in &st.containers {
            let mut live = Live::default();
            live.saved = saved.clone();
            if let Some(inst) = saved.running.clone() {
                if self.shared.runtime.alive(&inst.handle).await {
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

    fn key(&self) -> String {
        format!("{}/{}", self.ns(), self.name())
    }

    /// Runs the pod until it is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.restore().await;
        let phase = s(&self.pod, "/status/phase");
        if self.state.ip.is_empty() && (phase == "Succeeded" || phase == "Failed") {
            self.frozen = true;
        }
        for c in containers(&self.pod, "containers") {
            let name = c["name"].as_str().unwrap_or("").to_string();
            self.live.entry(name).or_default();
        }
        for c in containers(&self.pod, "initContainers") {
            let name = c["name"].as_str().unwrap_or("").to_string();
            self.live.entry(name).or_default().init = true;
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
            if let Some(t) = l
                .pull_backoff_at
                .filter(|_| l.waiting.as_ref().is_some_and(|w| w.0 == "ErrImagePull"))
            {
                wake = wake.min(t);
            }
        }
        wake.max(Instant::now() + Duration::from_millis(1))
    }

    async fn handle(&mut self, m: Msg) {
        match m {
            Msg::Update(pod) => {
                if s(&pod, "/metadata/uid") == self.uid {
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
        for p in l.probes.drain(..) {
            p.abort();
        }
        l.counts.clear();
        l.ready = false;
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

    async fn probed(
        &mut self,
        name: &str,
        restart: u32,
        kind: probe::Kind,
        result: Result<(), String>,
    ) {
        let Some(c) = self.container_spec(name) else {
            return;
        };
        let pod_ip = self.state.ip.clone();
        let Some(Ok(p)) = Probe::parse(&c, kind, &pod_ip) else {
            return;
        };
        let default_grace = self.grace();
        let Some(l) = self.live.get_mut(name) else {
            return;
        };
        if l.saved.running.as_ref().map(|i| i.restart) != Some(restart) || l.stopping.is_some() {
            return;
        }
        let (succ, fail) = l.counts.entry(kind).or_default();
        let failed_msg = match &result {
            Ok(()) => {
                *succ += 1;
                *fail = 0;
                None
            }
            Err(e) => {
                *fail += 1;
                *succ = 0;
                Some(e.clone())
            }
        };
        let (succ, fail) = (*succ, *fail);
        let mut event = None;
        let mut kill = None;
        match kind {
            probe::Kind::Startup => {
                if succ >= 1 {
                    l.started = true;
                    l.ready = Probe::parse(&c, probe::Kind::Readiness, &pod_ip).is_none();
                } else if fail >= p.failure_threshold {
                    kill = Some(format!(
                        "Container {name} failed startup probe, will be restarted"
                    ));
                }
            }
            probe::Kind::Readiness => {
                if !l.started {
                    return;
                }
                if succ >= p.success_threshold {
                    l.ready = true;
                } else if fail >= p.failure_threshold {
                    if l.ready || fail == p.failure_threshold {
                        event = failed_msg.clone();
                    }
                    l.ready = false;
                }
            }
            probe::Kind::Liveness => {
                if !l.started {
                    return;
                }
                if fail >= p.failure_threshold {
                    kill = Some(format!(
                        "Container {name} failed liveness probe, will be restarted"
                    ));
                }
            }
        }
        if let Some(msg) = event.or_else(|| kill.as_ref().and(failed_msg)) {
            self.event(
                "Warning",
                "Unhealthy",
                &format!("{} probe failed: {msg}", kind.title()),
            )
            .await;
        }
        if let Some(why) = kill {
            let grace = p.termination_grace.unwrap_or(default_grace);
            self.stop_container(name, grace, &why).await;
        }
    }

    fn container_spec(&self, name: &str) -> Option<Value> {
        containers(&self.pod, "containers")
            .into_iter()
            .chain(containers(&self.pod, "initContainers"))
            .find(|c| c["name"] == name)
    }

    fn grace(&self) -> i64 {
        self.pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                self.pod
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    async fn stop_container(&mut self, name: &str, grace: i64, why: &str) {
        let runtime = self.shared.runtime.clone();
        let Some(l) = self.live.get_mut(name) else {
            return;
        };
        let Some(inst) = &l.saved.running else { return };
        if l.stopping.is_some() {
            return;
        }
        runtime.signal(&inst.handle, libc::SIGTERM);
        l.stopping = Some(Instant::now() + Duration::from_secs(grace as u64));
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

    async fn start_probes(&mut self, name: &str, inst: &Instance) {
        let Some(c) = self.container_spec(name) else {
            return;
        };
        let spec: ContainerSpec = self.build_spec(&c, inst.restart).await.unwrap_or_default();
        let mut tasks = Vec::new();
        let mut has_startup = false;
        let mut has_readiness = false;
        for kind in [
            probe::Kind::Startup,
            probe::Kind::Readiness,
            probe::Kind::Liveness,
        ] {
            let Some(parsed) = Probe::parse(&c, kind, &self.state.ip) else {
                continue;
            };
            let p = match parsed {
                Ok(p) => p,
                Err(e) => {
                    self.event(
                        "Warning",
                        "Unhealthy",
                        &format!("{} probe errored: {e}", kind.title()),
                    )
                    .await;
                    continue;
                }
            };
            has_startup |= kind == probe::Kind::Startup;
            has_readiness |= kind == probe::Kind::Readiness;
            let shared = self.shared.clone();
            let tx = self.tx.clone();
            let spec = spec.clone();
            let container = name.to_string();
            let restart = inst.restart;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(p.initial_delay).await;
                loop {
                    let result = p.run(shared.runtime.as_ref(), &spec, &shared.http).await;
                    if tx
                        .send(Msg::Probe {
                            container: container.clone(),
                            restart,
                            kind,
                            result,
                        })
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(p.period).await;
                }
            }));
        }
        if let Some(l) = self.live.get_mut(name) {
            l.probes = tasks;
            l.spec = Some(spec);
            l.started = !has_startup;
            l.ready = !has_readiness && l.started;
        }
    }

    /// The pod's resolv.conf per its dnsPolicy (ClusterFirst: the node's cluster DNS and the search path; None: its
    /// dnsConfig; Default: the machine's own, so nothing to mount).
    fn resolv_conf(&self) -> Result<Option<PathBuf>, String> {
        let spec = &self.pod["spec"];
        let policy = spec["dnsPolicy"].as_str().unwrap_or("ClusterFirst");
        let mut text = match (policy, self.shared.dns) {
            ("ClusterFirst" | "ClusterFirstWithHostNet", Some(ip)) => resolv_conf(ip, self.ns()),
            ("None", _) => String::new(),
            _ => return Ok(None),
        };
        let cfg = &spec["dnsConfig"];
        let list = |k: &str| -> Vec<String> {
            cfg[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        for n in list("nameservers") {
            text.push_str(&format!("nameserver {n}\n"));
        }
        if !list("searches").is_empty() {
            text.push_str(&format!("search {}\n", list("searches").join(" ")));
        }
        for o in cfg["options"].as_array().into_iter().flatten() {
            match o["value"].as_str() {
                Some(v) => text.push_str(&format!(
                    "options {}:{v}\n",
                    o["name"].as_str().unwrap_or("")
                )),
                None => text.push_str(&format!("options {}\n", o["name"].as_str().unwrap_or(""))),
            }
        }
        if text.is_empty() {
            return Ok(None);
        }
        let path = self.dir.join("resolv.conf");
        std::fs::write(&path, text).map_err(|e| format!("writing resolv.conf: {e}"))?;
        Ok(Some(path))
    }

    /// Resolves the container's spec for the runtime (environment, command line, paths).
    async fn build_spec(&self, c: &Value, restart: u32) -> Result<ContainerSpec, String> {
        let name = c["name"].as_str().unwrap_or("");
        // The pod's host name: spec.hostname when set (Indexed Jobs, StatefulSets), else its name.
        let hostname = self.pod["spec"]["hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .unwrap_or(self.name());
        let mut base = vec![("HOSTNAME".to_string(), hostname.to_string())];
        if self.pod["spec"]["enableServiceLinks"].as_bool() != Some(false) {
            base.extend(super::env::service_links(
                self.ns(),
                &self.shared.services.list(),
            ));
        }
        // On the process runtime pods share the host's network: tell them the address that is theirs.
        if self.shared.runtime.name() == "process" {
            base.extend([
                ("POD_NAME".to_string(), self.name().to_string()),
                ("POD_NAMESPACE".to_string(), self.ns().to_string()),
                ("POD_IP".to_string(), self.state.ip.clone()),
                (
                    "NODE_NAME".to_string(),
                    self.shared.config.node_name.clone(),
                ),
            ]);
        }
        let mut pod = self.pod.clone();
        pod["status"]["podIP"] = json!(self.state.ip);
        pod["status"]["hostIP"] = json!(self.shared.node_ip);
        let env = super::env::resolve(&pod, c, self.shared.as_ref(), &base).await?;
        let volumes = super::volumes::prepare(&self.shared, &self.pod).await?;
        let mut mounts = super::volumes::mounts_for(c, &volumes, &self.pod)?;
        if let Some(conf) = self.resolv_conf()? {
            mounts.push(super::volumes::Mount {
                source: conf,
                target: PathBuf::from("/etc/resolv.conf"),
                read_only: true,
            });
        }
        let command = super::env::expanded(c, "command", &env);
        let args = super::env::expanded(c, "args", &env);
        // The container's securityContext wins over the pod's.
        let security = |field: &str| {
            c.pointer(&format!("/securityContext/{field}"))
                .or_else(|| self.pod.pointer(&format!("/spec/securityContext/{field}")))
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let millis = |path: &str| {
            c.pointer(path)
                .and_then(Value::as_str)
                .and_then(crate::api::parse_quantity_millis)
                .and_then(|m| u64::try_from(m).ok())
        };
        // Registry logins for runtimes that pull images; a secret that cannot be read is skipped, like the kubelet.
        let mut pull_secrets = Vec::new();
        if self.shared.runtime.name() != "process" {
            let names = self.pod["spec"]["imagePullSecrets"].as_array().cloned();
            for n in names.into_iter().flatten() {
                let n = n["name"].as_str().unwrap_or("");
                match super::env::Lookup::get(self.shared.as_ref(), "Secret", self.ns(), n).await {
                    Ok(Some(secret)) => pull_secrets
                        .extend(crate::image::registry::credentials_from_secret(&secret)),
                    Ok(None) => {
                        tracing::warn!(pod = %self.key(), secret = n, "image pull secret not found")
                    }
                    Err(e) => {
                        tracing::warn!(pod = %self.key(), secret = n, "image pull secret: {e}")
                    }
                }
            }
        }
        Ok(ContainerSpec {
            id: format!("{}/{name}/{restart}", self.uid),
            pull_secrets,
            image: c["image"].as_str().unwrap_or("").to_string(),
            pull_policy: c["imagePullPolicy"]
                .as_str()
                .unwrap_or("IfNotPresent")
                .to_string(),
            command,
            args,
            env,
            working_dir: c
                .get("workingDir")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            log_path: super::logs::log_path(&self.dir, name, restart),
            state_dir: self.dir.join("run").join(name).join(restart.to_string()),
            mounts,
            netns: self.netns.clone(),
            hostname: hostname.to_string(),
            run_as_user: security("runAsUser"),
            run_as_group: security("runAsGroup"),
            memory_limit: millis("/resources/limits/memory").map(|m| m / 1000),
            cpu_request: millis("/resources/requests/cpu"),
            cpu_limit: millis("/resources/limits/cpu"),
        })
    }

    /// `spec.hostNetwork`: the pod uses the node's network and address.
    fn host_network(&self) -> bool {
        self.pod["spec"]["hostNetwork"].as_bool() == Some(true)
    }

    /// Starts container `c` (a new instance); failures become its waiting/terminated state.
    async fn start(&mut self, c: &Value) {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let restart = {
            let l = self.live.entry(name.clone()).or_default();
            if l.saved.started_once {
                l.saved.restart_count + 1
            } else {
                0
            }
        };
        let spec = match self.build_spec(c, restart).await {
            Ok(s) => s,
            Err(msg) => {
                let first = {
                    let l = self.live.entry(name.clone()).or_default();
                    let first = l.waiting.as_ref().map(|w| &w.1) != Some(&msg);
                    l.waiting = Some(("CreateContainerConfigError".into(), msg.clone()));
                    l.retry_config = Some(Instant::now() + Duration::from_secs(2));
                    first
                };
                if first {
                    self.event("Warning", "Failed", &format!("Error: {msg}"))
                        .await;
                }
                return;
            }
        };
        // Old instances' logs go, keeping the previous one for `--previous`.
        if restart >= 2 {
            let old = super::logs::log_path(&self.dir, &name, restart - 2);
            for f in super::logs::files_of(&old) {
                let _ = std::fs::remove_file(f);
            }
            let _ = std::fs::remove_dir_all(
                self.dir
                    .join("run")
                    .join(&name)
                    .join((restart - 2).to_string()),
            );
        }
        match self.shared.runtime.start(&spec).await {
            Ok(handle) => {
                let inst = Instance {
                    handle,
                    restart,
                    started_at: format_time(&now()),
                    container_id: format!(
                        "{}://{}",
                        self.shared.runtime.name(),
                        spec.id.replace('/', "-")
                    ),
                };
                {
                    let l = self.live.entry(name.clone()).or_default();
                    l.saved.restart_count = restart;
                    l.saved.started_once = true;
                    l.saved.running = Some(inst.clone());
                    l.waiting = None;
                    l.next_start = None;
                    l.retry_config = None;
                    l.retry_pull = None;
                    l.pull_failures = 0;
                    l.spec = Some(spec);
                }
                self.save();
                self.watch_exit(&name, &inst);
                self.start_probes(&name, &inst).await;
                self.event("Normal", "Started", &format!("Started container {name}"))
                    .await;
            }
            Err(e @ (RuntimeError::Pull(_) | RuntimeError::NeverPull(_))) => {
                let reason = if matches!(e, RuntimeError::NeverPull(_)) {
                    "ErrImageNeverPull"
                } else {
                    "ErrImagePull"
                };
                let msg = e.to_string();
                let delay;
                {
                    let l = self.live.entry(name.clone()).or_default();
                    // Pulls back off from the first failure on: 10 s, doubling up to the maximum.
                    delay = self
                        .shared
                        .config
                        .backoff_delay(l.pull_failures.saturating_add(1).min(16));
                    l.pull_failures = l.pull_failures.saturating_add(1);
                    l.retry_pull = Some(Instant::now() + delay);
                    l.pull_backoff_at = Some(Instant::now() + delay / 2);
                    l.pull_backoff = format!(
                        "Back-off pulling image \"{}\": ErrImagePull: {msg}",
                        spec.image
                    );
                    l.waiting = Some((reason.into(), msg.clone()));
                }
                if reason == "ErrImagePull" {
                    self.event(
                        "Warning",
                        "Failed",
                        &format!("Failed to pull image \"{}\": {msg}", spec.image),
                    )
                    .await;
                }
                self.event("Warning", "Failed", &format!("Error: {reason}"))
                    .await;
            }
            Err(RuntimeError::Create(msg)) => {
                let l = self.live.entry(name.clone()).or_default();
                let first = l.waiting.is_none();
                l.waiting = Some(("CreateContainerError".into(), msg.clone()));
                if first {
                    self.event("Warning", "Failed", &format!("Error: {msg}"))
                        .await;
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let delay;
                {
                    let l = self.live.entry(name.clone()).or_default();
                    l.saved.restart_count = restart;
                    l.saved.started_once = true;
                    l.saved.last = Some(Terminated {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: msg.clone(),
                        started_at: format_time(&now()),
                        finished_at: format_time(&now()),
                        container_id: String::new(),
                    });
                    delay = self.shared.config.backoff_delay(l.saved.backoff_step);
                    l.saved.backoff_step += 1;
                    l.next_start = Some(Instant::now() + delay);
                }
                self.save();
                self.event("Warning", "Failed", &format!("Error: {msg}"))
                    .await;
            }
        }
    }

    fn restart_policy(&self) -> &str {
        match s(&self.pod, "/spec/restartPolicy") {
            "" => "Always",
            p => p,
        }
    }

    /// Whether a container that exited this way is started again.
    fn restarts(&self, exit_code: i32, init: bool) -> bool {
        match self.restart_policy() {
            "Never" => false,
            // Init containers of Always pods restart only on failure.
            "OnFailure" => exit_code != 0,
            _ => !init || exit_code != 0,
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
        let deleting = self.pod.pointer("/metadata/deletionTimestamp").is_some();
        if deleting || self.removed || self.shutdown {
            return self.terminate(deleting).await;
        }
        if self.frozen {
            return false;
        }
        if self.state.ip.is_empty() {
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
                }
                Err(e) => {
                    tracing::warn!(pod = %self.key(), "no pod address: {e}");
                    self.report().await;
                    return false;
                }
            }
        }
        if !self.terminal() {
            let mut init_done = true;
            for c in containers(&self.pod, "initContainers") {
                let name = c["name"].as_str().unwrap_or("").to_string();
                let l = self.live.entry(name.clone()).or_default();
                l.init = true;
                if l.saved.running.is_some() {
                    init_done = false;
                    break;
                }
                let last_ok = l.saved.last.as_ref().map(|t| t.exit_code == 0);
                match last_ok {
                    Some(true) if l.saved.started_once => continue,
                    Some(false) if !self.restarts(1, true) => {
                        init_done = false;
                        break;
                    }
                    _ => {}
                }
                init_done = false;
                if self.due(&name) {
                    self.start(&c).await;
                }
                break;
            }
            if init_done {
                for c in containers(&self.pod, "containers") {
                    let name = c["name"].as_str().unwrap_or("").to_string();
                    let l = self.live.entry(name.clone()).or_default();
                    if l.saved.running.is_some() {
                        continue;
                    }
                    let last_exit = l.saved.last.as_ref().map(|t| t.exit_code);
                    let restart = match last_exit {
                        None => true,
                        Some(code) => self.restarts(code, false),
                    };
                    if restart && self.due(&name) {
                        self.start(&c).await;
                    }
                }
            }
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
        if l.waiting.as_ref().map(|w| w.0.as_str()) == Some("CreateContainerError") {
            return false;
        }
        if let Some(t) = l.retry_config {
            if now_i < t {
                return false;
            }
        }
        if let Some(t) = l.retry_pull {
            if now_i < t {
                if l.pull_backoff_at.is_some_and(|b| now_i < b) {
                    return false;
                }
                l.waiting = Some(("ImagePullBackOff".into(), l.pull_backoff.clone()));
                return false;
            }
        }
        match l.next_start {
            Some(t) if now_i < t => {
                l.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={name} pod={}_{}({})",
                        self.shared
                            .config
                            .backoff_delay(l.saved.backoff_step.saturating_sub(1))
                            .as_secs(),
                        s(&self.pod, "/metadata/name"),
                        s(&self.pod, "/metadata/namespace"),
                        self.uid
                    ),
                ));
                false
            }
            _ => true,
        }
    }

    async fn backoff_events(&mut self) {
        let mut due = Vec::new();
        for (name, l) in &self.live {
            if l.waiting.as_ref().map(|w| w.0.as_str()) == Some("CrashLoopBackOff")
                && self.backoff_event.get(name) != Some(&l.saved.restart_count)
            {
                due.push((name.clone(), l.saved.restart_count));
            }
        }
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

    /// Whether the pod has finished for good (Succeeded or Failed): nothing will be started again.
    fn terminal(&self) -> bool {
        let phase = self.phase();
        phase == "Succeeded" || phase == "Failed"
    }

    fn phase(&self) -> &'static str {
        let mut init_failed = false;
        let mut init_done = true;
        for c in containers(&self.pod, "initContainers") {
            let name = c["name"].as_str().unwrap_or("");
            let l = self.live.get(name);
            let ok = l.is_some_and(|l| {
                l.saved.running.is_none() && l.saved.last.as_ref().is_some_and(|t| t.exit_code == 0)
            });
            if !ok {
                init_done = false;
                if let Some(t) = l.and_then(|l| l.saved.last.as_ref()) {
                    if l.is_some_and(|l| l.saved.running.is_none())
                        && !self.restarts(t.exit_code, true)
                    {
                        init_failed = true;
                    }
                }
                break;
            }
        }
        if init_failed {
            return "Failed";
        }
        if !init_done {
            return "Pending";
        }
        let cs = containers(&self.pod, "containers");
        let mut all_final = true;
        let mut any_failed = false;
        let mut any_started = false;
        for c in &cs {
            let name = c["name"].as_str().unwrap_or("");
            let Some(l) = self.live.get(name) else {
                all_final = false;
                continue;
            };
            any_started |= l.saved.started_once;
            match (&l.saved.running, &l.saved.last) {
                (None, Some(t)) if !self.restarts(t.exit_code, false) => {
                    any_failed |= t.exit_code != 0
                }
                _ => all_final = false,
            }
        }
        if all_final && !cs.is_empty() {
            return if any_failed { "Failed" } else { "Succeeded" };
        }
        if any_started {
            "Running"
        } else {
            "Pending"
        }
    }

    /// Stops every container (SIGTERM, then SIGKILL after the grace period); once all are down, removes the pod from
    /// the API (when it is being deleted) and cleans up. Returns true when done.
    async fn terminate(&mut self, deleting: bool) -> bool {
        let grace = if self.removed && !deleting {
            0
        } else {
            self.grace()
        };
        let grace = if self.shutdown && !deleting {
            grace.min(10)
        } else {
            grace
        };
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
        if self.shutdown && !deleting && !self.removed {
            // The node stops with its pods (`capstan up`): the pod's network goes too, and comes back when it
            // starts again.
            if !self.host_network() && !self.state.ip.is_empty() {
                self.shared.network.teardown(&self.uid).await;
                self.state.ip.clear();
                self.netns = None;
            }
            self.save();
            return true;
        }
        if deleting && !self.removed {
            self.report().await;
            match self
                .shared
                .api
                .delete_now(self.ns(), self.name(), &self.uid)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) || e.code() == Some(409) => {}
                Err(e) => {
                    tracing::warn!(pod = %self.key(), "final delete failed: {e}");
                    return false;
                }
            }
        }
        if !self.host_network() {
            self.shared.network.teardown(&self.uid).await;
        }
        super::volumes::release(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        tracing::info!(pod = %self.key(), "pod cleaned up");
        true
    }

    fn container_status(&self, c: &Value) -> Value {
        let name = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let default = Live::default();
        let l = self.live.get(name).unwrap_or(&default);
        let term = |t: &Terminated| {
            let mut v = json!({"exitCode": t.exit_code, "reason": t.reason, "startedAt": t.started_at,
                "finishedAt": t.finished_at});
            if let Some(sig) = t.signal {
                v["signal"] = json!(sig);
            }
            if !t.message.is_empty() {
                v["message"] = json!(t.message);
            }
            if !t.container_id.is_empty() {
                v["containerID"] = json!(t.container_id);
            }
            json!({"terminated": v})
        };
        let mut st = json!({"name": name, "image": image, "imageID": "", "ready": l.ready,
            "restartCount": l.saved.restart_count, "started": l.started && l.saved.running.is_some()});
        let mut last = json!({});
        if let Some(inst) = &l.saved.running {
            st["state"] = json!({"running": {"startedAt": inst.started_at}});
            st["containerID"] = json!(inst.container_id);
            if let Some(t) = &l.saved.last {
                last = term(t);
            }
        } else if let Some((reason, message)) = &l.waiting {
            st["state"] = json!({"waiting": {"reason": reason, "message": message}});
            if let Some(t) = &l.saved.last {
                last = term(t);
            }
        } else if let Some(t) = &l.saved.last {
            if self.restarts(t.exit_code, l.init) && !self.terminal() {
                st["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                last = term(t);
            } else {
                st["state"] = term(t);
                if !t.container_id.is_empty() {
                    st["containerID"] = json!(t.container_id);
                }
            }
        } else {
            let init_pending = !l.init
                && self.phase() == "Pending"
                && !containers(&self.pod, "initContainers").is_empty();
            let reason = if init_pending {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            st["state"] = json!({"waiting": {"reason": reason}});
        }
        st["lastState"] = last;
        st
    }

    fn condition(&mut self, ty: &str, ok: bool, reason: &str, message: &str) -> Value {
        let status = if ok { "True" } else { "False" };
        let t = match self.transitions.get(ty) {
            Some((st, t)) if st == status => t.clone(),
            _ => {
                let t = format_time(&now());
                self.transitions
                    .insert(ty.to_string(), (status.to_string(), t.clone()));
                t
            }
        };
        let mut c =
            json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": t});
        if !ok && !reason.is_empty() {
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        c
    }

    /// Computes the pod's status and writes it when it changed.
    async fn report(&mut self) {
        if self.frozen {
            return;
        }
        if self.transitions.is_empty() {
            // Keep transition times already reported (e.g. by an earlier agent).
            for c in self
                .pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(t), Some(st), Some(at)) = (
                    c["type"].as_str(),
                    c["status"].as_str(),
                    c["lastTransitionTime"].as_str(),
                ) {
                    self.transitions.insert(t.into(), (st.into(), at.into()));
                }
            }
        }
        let phase = self.phase();
        let inits = containers(&self.pod, "initContainers");
        let cs = containers(&self.pod, "containers");
        let init_statuses: Vec<Value> = inits.iter().map(|c| self.container_status(c)).collect();
        let statuses: Vec<Value> = cs.iter().map(|c| self.container_status(c)).collect();
        let pending_inits: Vec<&str> = inits
            .iter()
            .zip(&init_statuses)
            .filter(|(_, st)| {
                st.pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                    != Some(0)
            })
            .map(|(c, _)| c["name"].as_str().unwrap_or(""))
            .collect();
        let unready: Vec<&str> = cs
            .iter()
            .zip(&statuses)
            .filter(|(_, st)| st["ready"] != true)
            .map(|(c, _)| c["name"].as_str().unwrap_or(""))
            .collect();
        let completed = phase == "Succeeded" || phase == "Failed";
        let initialized = pending_inits.is_empty() || completed;
        let ready = unready.is_empty() && !completed && phase == "Running";
        let (ready_reason, ready_msg) = if completed {
            ("PodCompleted".to_string(), String::new())
        } else {
            (
                "ContainersNotReady".to_string(),
                format!("containers with unready status: [{}]", unready.join(" ")),
            )
        };
        let conditions = vec![
            self.condition(
                "PodReadyToStartContainers",
                !self.state.ip.is_empty() && !completed,
                "",
                "",
            ),
            self.condition(
                "Initialized",
                initialized,
                "ContainersNotInitialized",
                &format!(
                    "containers with incomplete status: [{}]",
                    pending_inits.join(" ")
                ),
            ),
            self.condition("Ready", ready, &ready_reason, &ready_msg),
            self.condition("ContainersReady", ready, &ready_reason, &ready_msg),
            self.condition("PodScheduled", true, "", ""),
        ];
        let mut status = json!({"phase": phase, "conditions": conditions,
            "hostIP": self.shared.node_ip, "hostIPs": [{"ip": self.shared.node_ip}],
            "startTime": self.state.start_time, "containerStatuses": statuses});
        if !self.state.ip.is_empty() {
            status["podIP"] = json!(self.state.ip);
            status["podIPs"] = json!([{"ip": self.state.ip}]);
        }
        if !inits.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(q) = self.pod.pointer("/status/qosClass") {
            status["qosClass"] = q.clone();
        }
        if status == self.reported {
            return;
        }
        match self
            .shared
            .api
            .patch_status(self.ns(), self.name(), &status)
            .await
        {
            Ok(_) => {
                self.reported = status;
                self.retry_report = None;
            }
            Err(e) => {
                tracing::debug!(pod = %self.key(), "status update failed: {e}");
                self.retry_report = Some(Instant::now() + Duration::from_millis(500));
            }
        }
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
