//! The `containerd` runtime: each container is a containerd container and task (runc through containerd's
//! `io.containerd.runc.v2` shim), spoken to over containerd's gRPC API with the `containerd-client` crate, in a
//! containerd namespace of Capstan's own (`capstan` by default). Works with containerd 1.6 and later.
//!
//! - Images live in containerd's content store; [`images`] imports archives, pulls through a
//!   [`Registry`](crate::image::registry::Registry) and unpacks layers into the snapshotter client-side.
//! - A pod's sandbox is its network namespace from the pod network: every container of the pod joins it.
//! - Output goes through a log driver started by containerd's shim (`capstan container-log`, a `binary://` URI) to
//!   the same CRI-format files the process runtime writes, so logs work alike and outlive the agent.
//! - Tasks outlive the agent too: a new agent finds them by container id and waits on them again.
//! - A container killed by the kernel's OOM killer (its cgroup's `oom_kill` count) exits with reason `OOMKilled`.
//! - exec and exec probes enter the task's namespaces, user and working directory ([`super::enter`]).

pub mod images;
pub mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use super::{
    ContainerRuntime, ContainerSpec, ExecRequest, ExecResult, ExecSession, ExitRecord, Handle,
    RuntimeError,
};
use crate::image::registry::Registry;

pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_NAMESPACE: &str = "capstan";
const RUNC_SHIM: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A connection to containerd in one of its namespaces.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    snapshotter: String,
    /// containerd's version, as it reports it.
    pub version: String,
}

/// Maps a gRPC failure to a runtime error that says what was being done.
fn failed(what: impl std::fmt::Display) -> impl FnOnce(Status) -> RuntimeError {
    move |s| RuntimeError::Start(format!("containerd: {what}: {}", s.message()))
}

impl Containerd {
    /// Connects to containerd's socket and checks that it answers.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd, RuntimeError> {
        let channel = containerd_client::connect(socket).await.map_err(|e| {
            // The transport error's innermost cause says why: no such file, permission denied.
            RuntimeError::Start(format!(
                "cannot reach containerd at {}: {} (is containerd running, and are you root?)",
                socket.display(),
                crate::image::registry::cause(&e)
            ))
        })?;
        let version =
            containerd_client::services::v1::version_client::VersionClient::new(channel.clone())
                .version(Request::new(()))
                .await
                .map_err(failed(format!("version at {}", socket.display())))?
                .into_inner()
                .version;
        Ok(Containerd {
            channel,
            namespace: namespace.to_string(),
            snapshotter: "overlayfs".into(),
            version,
        })
    }

    /// A request in our namespace.
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace names are ASCII"),
        );
        r
    }

    /// A request in our namespace holding lease `lease` (what it creates is kept from garbage collection).
    fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.req(msg);
        r.metadata_mut().insert(
            "containerd-lease",
            lease.parse().expect("lease ids are ASCII"),
        );
        r
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// Deletes what is left of container `id` - its task, its record and its snapshot - ignoring what is not there.
    async fn clean(&self, id: &str) {
        let _ = self
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await;
        let _ = self
            .containers()
            .delete(self.req(DeleteContainerRequest { id: id.into() }))
            .await;
        let _ = self
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.into(),
            }))
            .await;
    }

    /// The task's process id, if the task exists (running or exited and not yet deleted).
    async fn task_pid(&self, id: &str) -> Result<Option<u32>, Status> {
        match self
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| p.pid)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}

/// The containerd runtime.
pub struct ContainerdRuntime {
    pub client: Containerd,
    /// This executable: containerd's shim starts it as the log driver.
    logger: PathBuf,
    registry: Arc<dyn Registry>,
    /// Images already checked to be unpacked: name -> (manifest digest, config).
    images: tokio::sync::Mutex<HashMap<String, images::Resolved>>,
}

/// containerd ids are letters, digits, `.`, `_` and `-`: the agent's `<pod uid>/<container>/<restart>` with dashes.
pub fn container_id(spec_id: &str) -> String {
    spec_id.replace('/', "-")
}

/// Whether the kernel's OOM killer killed a process of cgroup `path` (cgroup v1 or v2).
fn oom_killed(path: &str) -> bool {
    let count = |file: String| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    };
    let v1 = count(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"));
    let v2 = count(format!("/sys/fs/cgroup{path}/memory.events"));
    v1.or(v2).unwrap_or(0) > 0
}

impl ContainerdRuntime {
    pub async fn new(
        socket: &Path,
        namespace: &str,
        registry: Arc<dyn Registry>,
    ) -> Result<ContainerdRuntime, RuntimeError> {
        Ok(ContainerdRuntime {
            client: Containerd::connect(socket, namespace).await?,
            logger: std::env::current_exe()?,
            registry,
            images: Default::default(),
        })
    }

    /// The log URI containerd's shim takes: start `capstan container-log LOG` with the container's output.
    fn log_uri(&self, log: &Path) -> String {
        let mut u = url::Url::parse("binary:///").expect("static URL");
        u.set_path(&self.logger.display().to_string());
        u.query_pairs_mut()
            .append_pair("container-log", &log.display().to_string());
        u.to_string()
    }

    async fn create(&self, id: &str, spec: &ContainerSpec) -> Result<u32, RuntimeError> {
        let image = self
            .resolve(&spec.image, &spec.pull_policy, &spec.pull_secrets)
            .await?;
        let oci = spec::build(id, spec, &image.config["config"]).map_err(|e| match e {
            spec::SpecError::NonRoot(m) => RuntimeError::Config(m),
            other => RuntimeError::Create(other.to_string()),
        })?;
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let c = &self.client;
        let mounts = c
            .snapshots()
            .prepare(c.req(PrepareSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: id.into(),
                parent: image.chain.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(failed(format!("preparing the root filesystem of {id}")))?
            .into_inner()
            .mounts;
        let container = Container {
            id: id.into(),
            image: image.name.clone(),
            labels: HashMap::from([("io.capstan.container".to_string(), spec.id.clone())]),
            runtime: Some(Runtime {
                name: RUNC_SHIM.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: serde_json::to_vec(&oci).expect("JSON"),
            }),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: id.into(),
            ..Default::default()
        };
        c.containers()
            .create(c.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(failed(format!("creating container {id}")))?;
        let log = self.log_uri(&spec.log_path);
        c.tasks()
            .create(c.req(CreateTaskRequest {
                container_id: id.into(),
                rootfs: mounts,
                stdout: log.clone(),
                stderr: log,
                ..Default::default()
            }))
            .await
            .map_err(|s| RuntimeError::Start(s.message().to_string()))?;
        let pid = c
            .tasks()
            .start(c.req(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| RuntimeError::Start(s.message().to_string()))?
            .into_inner()
            .pid;
        Ok(pid)
    }
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn version(&self) -> String {
        self.client.version.clone()
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError> {
        let id = container_id(&spec.id);
        // What an interrupted earlier attempt may have left under this id.
        self.client.clean(&id).await;
        match self.create(&id, spec).await {
            Ok(pid) => Ok(Handle {
                pid: pid as i32,
                shim_pid: pid as i32,
                shim_start: super::process::start_ticks(pid as i32).unwrap_or(0),
                exit_file: PathBuf::new(),
                id,
            }),
            Err(e) => {
                self.client.clean(&id).await;
                Err(e)
            }
        }
    }

    async fn wait(&self, h: &Handle) -> ExitRecord {
        let c = &self.client;
        let now = || crate::api::meta::format_time(&crate::api::meta::now());
        let mut record = loop {
            match c
                .tasks()
                .wait(c.req(WaitRequest {
                    container_id: h.id.clone(),
                    exec_id: String::new(),
                }))
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    let code = r.exit_status as i32;
                    let finished_at = r
                        .exited_at
                        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                        .map(|t| crate::api::meta::format_time(&t))
                        .unwrap_or_else(now);
                    break ExitRecord {
                        exit_code: code,
                        signal: (129..=192).contains(&code).then_some(code - 128),
                        finished_at,
                        reason: None,
                    };
                }
                Err(s) if s.code() == Code::NotFound => {
                    break ExitRecord {
                        exit_code: 137,
                        signal: None,
                        finished_at: now(),
                        reason: Some("ContainerStatusUnknown".into()),
                    };
                }
                // containerd restarting: its tasks run on under their shims; ask again.
                Err(s) => {
                    tracing::debug!(container = %h.id, "waiting on containerd: {}", s.message());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        if oom_killed(&spec::cgroup_path(&h.id)) {
            record.reason = Some("OOMKilled".into());
        }
        c.clean(&h.id).await;
        record
    }

    fn cgroup(&self, h: &Handle) -> Option<std::path::PathBuf> {
        let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup{}", spec::cgroup_path(&h.id)));
        (!h.id.is_empty() && dir.join("cpu.stat").exists()).then_some(dir)
    }

    async fn alive(&self, h: &Handle) -> bool {
        if h.id.is_empty() {
            return false;
        }
        match self.client.task_pid(&h.id).await {
            Ok(Some(_)) => true,
            Ok(None) => {
                self.client.clean(&h.id).await;
                false
            }
            // containerd cannot say: keep the container and watch it (the wait retries).
            Err(_) => true,
        }
    }

    fn signal(&self, h: &Handle, signal: i32) {
        let c = self.client.clone();
        let id = h.id.clone();
        tokio::spawn(async move {
            let _ = c
                .tasks()
                .kill(c.req(KillRequest {
                    container_id: id,
                    exec_id: String::new(),
                    signal: signal as u32,
                    all: true,
                }))
                .await;
        });
    }

    async fn remove(&self, h: &Handle) {
        self.signal(h, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(h)).await;
        self.client.clean(&h.id).await;
    }

    fn exec_session(&self, h: &Handle, req: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        super::enter::session(h.pid, req, super::enter::Depth::Container)
    }

    async fn exec(
        &self,
        spec: &ContainerSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let id = container_id(&spec.id);
        let pid = self
            .client
            .task_pid(&id)
            .await
            .map_err(failed(format!("task {id}")))?
            .ok_or_else(|| RuntimeError::Start(format!("container {id} is not running")))?;
        super::enter::run(pid as i32, command, timeout, super::enter::Depth::Container).await
    }
}
