//! The pod's status as the worker sees it: its phase (from init containers, then containers, per `restartPolicy`),
//! each container's state (running, waiting with Kubernetes' reason, terminated) with its last state and restart
//! count, and the pod conditions with their transition times. Written to the API server only when it changed.

use std::time::Duration;

use tokio::time::Instant;

use super::state::{Live, Terminated};
use super::{inits, mains, Worker};
use crate::api::core::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, IpEntry, PodStatus,
};
use crate::api::meta::{now, Condition, Time};

/// A time the worker recorded as text (RFC 3339); None if it does not parse.
fn time(s: &str) -> Option<Time> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn terminated(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason.clone()),
            message: Some(t.message.clone()).filter(|m| !m.is_empty()),
            started_at: time(&t.started_at),
            finished_at: time(&t.finished_at),
            container_id: Some(t.container_id.clone()).filter(|c| !c.is_empty()),
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.map(String::from),
        }),
        ..Default::default()
    }
}

impl Worker {
    fn restart_policy(&self) -> &str {
        match self.spec().restart_policy.as_deref() {
            None | Some("") => "Always",
            Some(p) => p,
        }
    }

    /// Whether a container that exited this way is started again.
    pub(super) fn restarts(&self, exit_code: i32, init: bool) -> bool {
        match self.restart_policy() {
            "Never" => false,
            // Init containers of Always pods restart only on failure.
            "OnFailure" => exit_code != 0,
            _ => !init || exit_code != 0,
        }
    }

    /// Whether the pod has finished for good (Succeeded or Failed): nothing will be started again.
    pub(super) fn terminal(&self) -> bool {
        let phase = self.phase();
        phase == "Succeeded" || phase == "Failed"
    }

    /// Where the init containers stand: `Err(true)` when one failed for good, `Err(false)` while one is still to
    /// finish, `Ok(())` when all succeeded.
    fn inits_done(&self) -> Result<(), bool> {
        for c in inits(&self.pod) {
            let l = self.live.get(&c.name);
            let ok = l.is_some_and(|l| {
                l.saved.running.is_none() && l.saved.last.as_ref().is_some_and(|t| t.exit_code == 0)
            });
            if !ok {
                let failed = l.is_some_and(|l| {
                    l.saved.running.is_none()
                        && l.saved
                            .last
                            .as_ref()
                            .is_some_and(|t| !self.restarts(t.exit_code, true))
                });
                return Err(failed);
            }
        }
        Ok(())
    }

    pub(super) fn phase(&self) -> &'static str {
        match self.inits_done() {
            Err(true) => return "Failed",
            Err(false) => return "Pending",
            Ok(()) => {}
        }
        let cs = mains(&self.pod);
        let mut all_final = true;
        let mut any_failed = false;
        let mut any_started = false;
        for c in cs {
            let Some(l) = self.live.get(&c.name) else {
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

    /// The state and last state of a container.
    fn states(&self, l: &Live) -> (ContainerState, ContainerState) {
        let last = || l.saved.last.as_ref().map(terminated).unwrap_or_default();
        if let Some(inst) = &l.saved.running {
            let running = ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(&inst.started_at),
                }),
                ..Default::default()
            };
            return (running, last());
        }
        if let Some(w) = &l.waiting {
            return (waiting(w.reason, Some(&w.message)), last());
        }
        if let Some(t) = &l.saved.last {
            if self.restarts(t.exit_code, l.init) && !self.terminal() {
                return (waiting("ContainerCreating", None), last());
            }
            return (terminated(t), ContainerState::default());
        }
        let init_pending = !l.init && self.phase() == "Pending" && !inits(&self.pod).is_empty();
        let reason = if init_pending {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        (waiting(reason, None), ContainerState::default())
    }

    fn container_status(&self, c: &Container) -> ContainerStatus {
        let default = Live::default();
        let l = self.live.get(&c.name).unwrap_or(&default);
        let (state, last_state) = self.states(l);
        let container_id = match (&l.saved.running, &l.saved.last) {
            (Some(inst), _) => Some(inst.container_id.clone()),
            (None, Some(t)) if state.terminated.is_some() && !t.container_id.is_empty() => {
                Some(t.container_id.clone())
            }
            _ => None,
        };
        ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: l.ready,
            restart_count: l.saved.restart_count as i32,
            started: Some(l.started && l.saved.running.is_some()),
            state: Some(state),
            last_state: Some(Box::new(last_state)),
            container_id,
            ..Default::default()
        }
    }

    /// A pod condition; its transition time moves only when its status does.
    fn condition(&mut self, ty: &str, ok: bool, reason: &str, message: &str) -> Condition {
        let status = if ok { "True" } else { "False" };
        let t = match self.transitions.get(ty) {
            Some((st, t)) if st == status => *t,
            _ => {
                let t = now();
                self.transitions
                    .insert(ty.to_string(), (status.to_string(), t));
                t
            }
        };
        let explain = !ok && !reason.is_empty();
        Condition {
            type_: ty.to_string(),
            status: status.to_string(),
            last_transition_time: Some(t),
            reason: explain.then(|| reason.to_string()),
            message: explain.then(|| message.to_string()),
            ..Default::default()
        }
    }

    /// The pod conditions from the container statuses.
    fn conditions(
        &mut self,
        phase: &str,
        init_statuses: &[ContainerStatus],
        statuses: &[ContainerStatus],
    ) -> Vec<Condition> {
        let exited_ok = |st: &ContainerStatus| {
            st.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
                == Some(0)
        };
        let pending_inits: Vec<&str> = init_statuses
            .iter()
            .filter(|st| !exited_ok(st))
            .map(|st| st.name.as_str())
            .collect();
        let unready: Vec<&str> = statuses
            .iter()
            .filter(|st| !st.ready)
            .map(|st| st.name.as_str())
            .collect();
        let completed = phase == "Succeeded" || phase == "Failed";
        let initialized = pending_inits.is_empty() || completed;
        let ready = unready.is_empty() && !completed && phase == "Running";
        let (ready_reason, ready_msg) = if completed {
            ("PodCompleted", String::new())
        } else {
            (
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            )
        };
        let has_ip = !self.state.ip.is_empty();
        vec![
            self.condition("PodReadyToStartContainers", has_ip && !completed, "", ""),
            self.condition(
                "Initialized",
                initialized,
                "ContainersNotInitialized",
                &format!(
                    "containers with incomplete status: [{}]",
                    pending_inits.join(" ")
                ),
            ),
            self.condition("Ready", ready, ready_reason, &ready_msg),
            self.condition("ContainersReady", ready, ready_reason, &ready_msg),
            self.condition("PodScheduled", true, "", ""),
        ]
    }

    /// The pod's whole status as this worker sees it.
    fn status(&mut self) -> PodStatus {
        if self.transitions.is_empty() {
            // Keep transition times already reported (e.g. by an earlier agent).
            let known = self.pod.status.as_ref().and_then(|s| s.conditions.clone());
            for c in known.into_iter().flatten() {
                if let Some(at) = c.last_transition_time {
                    self.transitions.insert(c.type_, (c.status, at));
                }
            }
        }
        let phase = self.phase();
        let pod = self.pod.clone();
        let init_statuses: Vec<ContainerStatus> = inits(&pod)
            .iter()
            .map(|c| self.container_status(c))
            .collect();
        let statuses: Vec<ContainerStatus> = mains(&pod)
            .iter()
            .map(|c| self.container_status(c))
            .collect();
        let conditions = self.conditions(phase, &init_statuses, &statuses);
        let ip = Some(self.state.ip.clone()).filter(|ip| !ip.is_empty());
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(self.shared.node_ip.clone()),
            host_ips: Some(vec![IpEntry {
                ip: self.shared.node_ip.clone(),
            }]),
            start_time: time(&self.state.start_time),
            container_statuses: Some(statuses),
            init_container_statuses: Some(init_statuses).filter(|s| !s.is_empty()),
            pod_ips: ip.clone().map(|ip| vec![IpEntry { ip }]),
            pod_ip: ip,
            qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
            ..Default::default()
        }
    }

    /// Computes the pod's status and writes it when it changed.
    pub(super) async fn report(&mut self) {
        if self.frozen {
            return;
        }
        let status = self.status();
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        match self
            .shared
            .api
            .patch_status(self.ns(), self.name(), &status)
            .await
        {
            Ok(()) => {
                self.reported = Some(status);
                self.retry_report = None;
            }
            Err(e) => {
                tracing::debug!(pod = %self.key(), "status update failed: {e}");
                self.retry_report = Some(Instant::now() + Duration::from_millis(500));
            }
        }
    }
}
