//! Starting one container instance, and what each way of failing to start means for its status: a configuration
//! that cannot be built yet (CreateContainerConfigError, retried), an image that cannot be pulled (ErrImagePull,
//! then ImagePullBackOff with its own backoff), a container the runtime refuses (CreateContainerError), or a start
//! that fails like a crash (StartError, with crash-loop backoff).

use std::time::Duration;

use tokio::time::Instant;

use super::state::Waiting;
use super::{Instance, Terminated, Worker};
use crate::api::core::Container;
use crate::api::meta::{format_time, now};
use crate::node::runtime::{ContainerSpec, RuntimeError};
use crate::node::{logs, ConfigError};

impl Worker {
    /// Starts container `c` (a new instance); failures become its waiting/terminated state.
    pub(super) async fn start(&mut self, c: &Container) {
        let name = c.name.clone();
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
            Err(e) => return self.config_failed(&name, e).await,
        };
        self.forget_old_instances(&name, restart);
        // An agent killed between starting this instance and recording it left it running: stop it (it was never
        // reported) and wait for its shim to finish, so its exit record cannot be taken for the new one's.
        if let Some(stray) = self.shared.runtime.leftover(&spec).await {
            tracing::warn!(pod = %self.key(), container = %name, restart,
                "stopping a container started by an agent that died before recording it");
            self.shared.runtime.remove(&stray).await;
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.shared.runtime.wait(&stray),
            )
            .await;
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
                self.started(&name, inst, spec).await;
            }
            Err(e @ (RuntimeError::Pull(_) | RuntimeError::NeverPull(_))) => {
                self.pull_failed(&name, &spec, e).await
            }
            Err(RuntimeError::Config(msg)) => {
                self.config_failed(&name, ConfigError::Invalid(msg)).await
            }
            Err(RuntimeError::Create(msg)) => {
                let l = self.live.entry(name.clone()).or_default();
                let first = l.waiting.is_none();
                l.waiting = Some(Waiting::new("CreateContainerError", msg.clone()));
                if first {
                    self.event("Warning", "Failed", &format!("Error: {msg}"))
                        .await;
                }
            }
            Err(e) => self.start_failed(&name, restart, e).await,
        }
    }

    /// Old instances' logs and state go, keeping the previous one for `--previous`.
    fn forget_old_instances(&self, name: &str, restart: u32) {
        if restart < 2 {
            return;
        }
        let old = logs::log_path(&self.dir, name, restart - 2);
        for f in logs::files_of(&old) {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(
            self.dir
                .join("run")
                .join(name)
                .join((restart - 2).to_string()),
        );
    }

    async fn started(&mut self, name: &str, inst: Instance, spec: ContainerSpec) {
        {
            let l = self.live.entry(name.to_string()).or_default();
            l.saved.restart_count = inst.restart;
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
        self.watch_exit(name, &inst);
        self.start_probes(name, &inst).await;
        self.event("Normal", "Started", &format!("Started container {name}"))
            .await;
    }

    /// The configuration cannot be built yet: wait in CreateContainerConfigError and try again in a moment.
    async fn config_failed(&mut self, name: &str, e: ConfigError) {
        let msg = e.to_string();
        let l = self.live.entry(name.to_string()).or_default();
        let first = l.waiting.as_ref().map(|w| &w.message) != Some(&msg);
        l.waiting = Some(Waiting::new("CreateContainerConfigError", msg.clone()));
        l.retry_config = Some(Instant::now() + Duration::from_secs(2));
        if first {
            self.event("Warning", "Failed", &format!("Error: {msg}"))
                .await;
        }
    }

    /// The image could not be pulled: ErrImagePull (or ErrImageNeverPull), retried with backoff.
    async fn pull_failed(&mut self, name: &str, spec: &ContainerSpec, e: RuntimeError) {
        let reason = if matches!(e, RuntimeError::NeverPull(_)) {
            "ErrImageNeverPull"
        } else {
            "ErrImagePull"
        };
        let msg = e.to_string();
        let backoff = &self.shared.config;
        let l = self.live.entry(name.to_string()).or_default();
        // Pulls back off from the first failure on: 10 s, doubling up to the maximum.
        let delay = backoff.backoff_delay(l.pull_failures.saturating_add(1).min(16));
        l.pull_failures = l.pull_failures.saturating_add(1);
        l.retry_pull = Some(Instant::now() + delay);
        l.pull_backoff_at = Some(Instant::now() + delay / 2);
        l.pull_backoff = format!(
            "Back-off pulling image \"{}\": ErrImagePull: {msg}",
            spec.image
        );
        l.waiting = Some(Waiting::new(reason, msg.clone()));
        if reason == "ErrImagePull" {
            let pull = format!("Failed to pull image \"{}\": {msg}", spec.image);
            self.event("Warning", "Failed", &pull).await;
        }
        self.event("Warning", "Failed", &format!("Error: {reason}"))
            .await;
    }

    /// The runtime could not start the process: a StartError exit, restarted with crash-loop backoff.
    async fn start_failed(&mut self, name: &str, restart: u32, e: RuntimeError) {
        let msg = e.to_string();
        let backoff = &self.shared.config;
        let l = self.live.entry(name.to_string()).or_default();
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
        let delay = backoff.backoff_delay(l.saved.backoff_step);
        l.saved.backoff_step += 1;
        l.next_start = Some(Instant::now() + delay);
        self.save();
        self.event("Warning", "Failed", &format!("Error: {msg}"))
            .await;
    }
}
