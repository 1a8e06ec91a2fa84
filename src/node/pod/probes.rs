//! Probes of a running container: one task per probe (startup, readiness, liveness) sending results to the worker,
//! and what a result means - started, ready or not, or a restart after too many liveness or startup failures.

use super::{probe, Instance, Msg, Worker};
use crate::node::probe::Probe;
use crate::node::runtime::ContainerSpec;

impl Worker {
    pub(super) async fn probed(
        &mut self,
        name: &str,
        restart: u32,
        kind: probe::Kind,
        result: Result<(), probe::Failure>,
    ) {
        let pod = self.pod.clone();
        let Some(c) = super::container_of(&pod, name) else {
            return;
        };
        let pod_ip = self.state.ip.clone();
        let Some(Ok(p)) = Probe::parse(c, kind, &pod_ip) else {
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
                Some(e.to_string())
            }
        };
        let (succ, fail) = (*succ, *fail);
        let mut event = None;
        let mut kill = None;
        match kind {
            probe::Kind::Startup => {
                if succ >= 1 {
                    l.started = true;
                    l.ready = Probe::parse(c, probe::Kind::Readiness, &pod_ip).is_none();
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

    /// Starts the probe tasks of a container instance that just started (or was adopted).
    pub(super) async fn start_probes(&mut self, name: &str, inst: &Instance) {
        let pod = self.pod.clone();
        let Some(c) = super::container_of(&pod, name) else {
            return;
        };
        let spec: ContainerSpec = self.build_spec(c, inst.restart).await.unwrap_or_default();
        let mut tasks = Vec::new();
        let mut has_startup = false;
        let mut has_readiness = false;
        for kind in [
            probe::Kind::Startup,
            probe::Kind::Readiness,
            probe::Kind::Liveness,
        ] {
            let p = match Probe::parse(c, kind, &self.state.ip) {
                None => continue,
                Some(Ok(p)) => p,
                Some(Err(e)) => {
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
            tasks.push(self.spawn_probe(name, inst.restart, kind, p, spec.clone()));
        }
        if let Some(l) = self.live.get_mut(name) {
            l.probes = tasks;
            l.spec = Some(spec);
            l.started = !has_startup;
            l.ready = !has_readiness && l.started;
        }
    }

    /// A task that runs probe `p` every period and sends each result to the worker.
    fn spawn_probe(
        &self,
        name: &str,
        restart: u32,
        kind: probe::Kind,
        p: Probe,
        spec: ContainerSpec,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let container = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(p.initial_delay).await;
            loop {
                let result = p.run(shared.runtime.as_ref(), &spec, &shared.http).await;
                let msg = Msg::Probe {
                    container: container.clone(),
                    restart,
                    kind,
                    result,
                };
                if tx.send(msg).is_err() {
                    return;
                }
                tokio::time::sleep(p.period).await;
            }
        })
    }
}
