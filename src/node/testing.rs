//! Recording doubles of the agent's OS and API boundaries, for unit tests of the pod worker's state machine: a
//! container runtime whose containers exit when a test says so (or when signalled), a pod network handing out
//! loopback addresses, and a `PodApi` that keeps every status and Event. Integration tests use the real ones.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::network::{Attachment, NetworkError, PodNetwork};
use super::runtime::{
    ContainerRuntime, ContainerSpec, ExecRequest, ExecResult, ExecSession, ExitRecord, Handle,
    RuntimeError,
};
use super::status::PodApi;
use super::{Config, Shared};
use crate::api::meta::{format_time, now};

/// What the fake runtime was asked to do, with the (virtual) time it was asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Start { container: String, restart: u32 },
    Signal { container: String, signal: i32 },
}

#[derive(Default)]
struct State {
    calls: Vec<(Instant, Call)>,
    next_pid: i32,
    /// pid -> (container name, exit channel).
    containers: HashMap<i32, (String, watch::Sender<Option<ExitRecord>>)>,
    /// Exit code of exec commands (probes): 0 unless a test says otherwise.
    exec_code: i32,
    /// Containers ignore SIGTERM (and die only of SIGKILL).
    ignore_term: bool,
}

/// A container runtime that runs nothing: containers live until [`FakeRuntime::exit`] or a signal ends them.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    changed: Notify,
}

/// The container name in a spec id (`<pod uid>/<container>/<restart>`).
fn container_of(id: &str) -> (String, u32) {
    let mut parts = id.rsplitn(3, '/');
    let restart = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
    let name = parts.next().unwrap_or("").to_string();
    (name, restart)
}

impl FakeRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<(Instant, Call)> {
        self.lock().calls.clone()
    }

    /// The times container `name` was started.
    pub fn starts(&self, name: &str) -> Vec<Instant> {
        self.calls()
            .into_iter()
            .filter(|(_, c)| matches!(c, Call::Start { container, .. } if container == name))
            .map(|(t, _)| t)
            .collect()
    }

    /// Waits until `done` holds for the calls so far (time moves on meanwhile when it is paused).
    pub async fn until(&self, what: &str, done: impl Fn(&[(Instant, Call)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let notified = self.changed.notified();
            if done(&self.lock().calls) {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => panic!("never happened: {what}"),
            }
        }
    }

    /// Ends the running instance of container `name` with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let st = self.lock();
        for (c, tx) in st.containers.values() {
            if c == name && tx.borrow().is_none() {
                let _ = tx.send(Some(record(code, None)));
            }
        }
    }

    /// Probes' exec commands exit with `code` from now on.
    pub fn set_exec_code(&self, code: i32) {
        self.lock().exec_code = code;
    }

    /// Containers ignore SIGTERM from now on.
    pub fn ignore_term(&self) {
        self.lock().ignore_term = true;
    }

    /// A container an earlier agent started, still running, for a restarted agent to adopt.
    pub fn running_from_before(&self, name: &str, pid: i32) -> Handle {
        let (tx, _) = watch::channel(None);
        self.lock().containers.insert(pid, (name.to_string(), tx));
        handle(pid)
    }
}

fn record(code: i32, signal: Option<i32>) -> ExitRecord {
    ExitRecord {
        exit_code: code,
        signal,
        finished_at: format_time(&now()),
        reason: None,
    }
}

fn handle(pid: i32) -> Handle {
    Handle {
        pid,
        shim_pid: pid,
        shim_start: 0,
        exit_file: Path::new("/nonexistent").join(pid.to_string()),
        id: String::new(),
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError> {
        let (container, restart) = container_of(&spec.id);
        let mut st = self.lock();
        st.next_pid += 1;
        let pid = 1000 + st.next_pid;
        let (tx, _) = watch::channel(None);
        st.containers.insert(pid, (container.clone(), tx));
        st.calls
            .push((Instant::now(), Call::Start { container, restart }));
        drop(st);
        self.changed.notify_waiters();
        Ok(handle(pid))
    }

    async fn wait(&self, handle: &Handle) -> ExitRecord {
        let rx = self
            .lock()
            .containers
            .get(&handle.pid)
            .map(|(_, tx)| tx.subscribe());
        let Some(mut rx) = rx else {
            return record(137, None);
        };
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return record(137, None);
            }
        }
    }

    async fn alive(&self, handle: &Handle) -> bool {
        self.lock()
            .containers
            .get(&handle.pid)
            .is_some_and(|(_, tx)| tx.borrow().is_none())
    }

    fn signal(&self, handle: &Handle, signal: i32) {
        let mut st = self.lock();
        let ignore_term = st.ignore_term;
        let Some((container, tx)) = st.containers.get(&handle.pid) else {
            return;
        };
        let container = container.clone();
        if tx.borrow().is_none() && (signal == libc::SIGKILL || !ignore_term) {
            let _ = tx.send(Some(record(128 + signal, Some(signal))));
        }
        st.calls
            .push((Instant::now(), Call::Signal { container, signal }));
        drop(st);
        self.changed.notify_waiters();
    }

    fn exec_session(&self, _: &Handle, _: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        Err(RuntimeError::Create(
            "the fake runtime has no exec sessions".into(),
        ))
    }

    async fn exec(
        &self,
        _: &ContainerSpec,
        _: &[String],
        _: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        Ok(ExecResult {
            exit_code: self.lock().exec_code,
            output: String::new(),
        })
    }
}

/// A pod network handing out 127.77.0.x addresses, with no namespaces - except that an adopted pod's namespace is
/// `<namespaces>/<uid>` when the directory `namespaces` exists (so a test can make one go missing).
#[derive(Default)]
pub struct FakeNetwork {
    next: Mutex<u8>,
    pub torn_down: Mutex<Vec<String>>,
    pub namespaces: Option<std::path::PathBuf>,
}

#[async_trait]
impl PodNetwork for FakeNetwork {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn cidr(&self) -> String {
        "127.77.0.0/24".into()
    }
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, 77, 0, 1)
    }
    async fn setup(&self, _uid: &str) -> Result<Attachment, NetworkError> {
        let mut n = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        Ok(Attachment {
            ip: Ipv4Addr::new(127, 77, 0, 1 + *n),
            netns: None,
        })
    }
    async fn teardown(&self, uid: &str) {
        self.torn_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(uid.to_string());
    }
    fn adopt(&self, uid: &str, ip: Ipv4Addr) -> Attachment {
        let netns = self
            .namespaces
            .as_ref()
            .filter(|d| d.is_dir())
            .map(|d| d.join(uid));
        Attachment { ip, netns }
    }
}

/// A `PodApi` that keeps what it is told.
#[derive(Default)]
pub struct RecordingApi {
    pub statuses: Mutex<Vec<Value>>,
    pub events: Mutex<Vec<(String, String)>>,
    pub deleted: Mutex<Vec<String>>,
}

impl RecordingApi {
    /// The newest status written.
    pub fn last_status(&self) -> Value {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Reasons of the Events recorded so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }
}

#[async_trait]
impl PodApi for RecordingApi {
    async fn patch_status(
        &self,
        _: &str,
        _: &str,
        status: &crate::api::core::PodStatus,
    ) -> crate::client::Result<()> {
        let status = serde_json::to_value(status).expect("a status serializes");
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(status);
        Ok(())
    }
    async fn event(&self, _: &crate::api::core::Pod, _: &str, reason: &str, message: &str) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((reason.to_string(), message.to_string()));
    }
    async fn delete_now(&self, _: &str, name: &str, _: &str) -> crate::client::Result<()> {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
        Ok(())
    }
}

/// What a pod worker shares, on the doubles above; `dir` holds the pods' directories. The client points at a
/// port nothing listens on: a worker that reached past its boundaries would fail loudly.
pub fn shared(runtime: Arc<FakeRuntime>, api: Arc<RecordingApi>, dir: &Path) -> Arc<Shared> {
    crate::sys::init_crypto();
    let mut config = Config::new("node-a", dir.to_path_buf());
    config.backoff_base = Duration::from_secs(10);
    config.backoff_max = Duration::from_secs(300);
    Arc::new(Shared {
        client: crate::client::Client::new("https://127.0.0.1:1", "token", None).expect("a client"),
        api,
        runtime,
        network: Arc::new(FakeNetwork {
            namespaces: Some(dir.join("netns")),
            ..Default::default()
        }),
        config,
        node_ip: "127.0.0.1".into(),
        http: reqwest::Client::new(),
        pods_dir: dir.join("pods"),
        pods: crate::client::informer::Cache::of([]),
        services: crate::client::informer::Cache::of([]),
        dns: None,
        tokens: Default::default(),
        stats: Default::default(),
    })
}
