//! The container runtime boundary (the CRI's role): the node agent asks a [`ContainerRuntime`] to start, signal,
//! wait for and probe containers, and never touches processes itself. `process` (the default) runs each container's
//! command as host processes under a shim; `containerd` (cargo feature `containerd`) runs images as real containers
//! through containerd's API. Runtimes know nothing of pods' API objects - the agent hands them a resolved
//! [`ContainerSpec`].

#[cfg(feature = "containerd")]
pub mod containerd;
pub mod enter;
pub mod process;
pub mod security;
pub mod shim;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use shim::ExitRecord;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container cannot be created from its spec (Kubernetes' CreateContainerError).
    #[error("{0}")]
    Create(String),
    /// The command could not be started (Kubernetes reports StartError, exit code 128).
    #[error("{0}")]
    Start(String),
    /// The image cannot be had (Kubernetes' ErrImagePull, then ImagePullBackOff).
    #[error("{0}")]
    Pull(String),
    /// The image is not on the node and the pull policy is Never (ErrImageNeverPull).
    #[error("{0}")]
    NeverPull(String),
    /// The container's configuration forbids what would run (CreateContainerConfigError: `runAsNonRoot` and
    /// root).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Everything a runtime needs to start one container instance.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Unique per instance: `<pod uid>/<container>/<restart count>`.
    pub id: String,
    pub image: String,
    /// `imagePullPolicy`: Always, IfNotPresent or Never.
    pub pull_policy: String,
    /// Registry logins from the pod's `imagePullSecrets`, by registry host.
    pub pull_secrets: Vec<(String, crate::image::registry::Credentials)>,
    /// The container's `command` with `$(VAR)`s expanded (empty: the image's entrypoint).
    pub command: Vec<String>,
    /// The container's `args`, expanded (empty: the image's cmd, when `command` is empty too).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// The CRI log file for this instance.
    pub log_path: PathBuf,
    /// A directory the runtime may keep this instance's state in.
    pub state_dir: PathBuf,
    /// Volumes bind-mounted into the container.
    pub mounts: Vec<crate::node::volumes::Mount>,
    /// The pod's network namespace to join (none: the host's).
    pub netns: Option<PathBuf>,
    /// The pod's host name (its own UTS namespace where the runtime gives one).
    pub hostname: String,
    /// The securityContext: user, groups, capabilities, read-only root (the container's over the pod's).
    pub security: security::Security,
    /// `runAsNonRoot`, checked by the runtime once it knows the user the container runs as.
    pub run_as_non_root: bool,
    /// `name_namespace(uid)`, as the kubelet names a pod in its messages.
    pub pod_label: String,
    /// `resources.limits.memory` in bytes.
    pub memory_limit: Option<u64>,
    /// `resources.requests.cpu` and `limits.cpu` in millicores.
    pub cpu_request: Option<u64>,
    pub cpu_limit: Option<u64>,
}

impl ContainerSpec {
    /// The command line as the process runtime runs it: `command` then `args`.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// A started container, recorded on disk by the agent so a restarted agent can adopt it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    /// The container's main process (also its process group).
    pub pid: i32,
    /// The shim supervising it, and its start time in clock ticks (to tell it from a reused pid).
    pub shim_pid: i32,
    pub shim_start: u64,
    pub exit_file: PathBuf,
    /// The runtime's own name for the container (containerd's container id).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// An interactive command in a running container (`kubectl exec`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    /// A terminal: stdin, stdout and stderr are one pseudo-terminal.
    pub tty: bool,
}

pub type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// A started exec: its process and streams (with a terminal, stdout carries everything and stderr is none).
pub struct ExecSession {
    pub child: tokio::process::Child,
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    /// Resizes the terminal (columns, rows).
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
}

/// The result of an exec probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub output: String,
}

#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    fn name(&self) -> &'static str;
    /// The runtime's version, for the Node's `containerRuntimeVersion` (default: Capstan's own).
    fn version(&self) -> String {
        crate::VERSION.to_string()
    }
    /// Starts a container; returns once its process runs (or could not be started).
    async fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError>;
    /// Resolves when the container has exited.
    async fn wait(&self, handle: &Handle) -> ExitRecord;
    /// Whether the container of an earlier agent is still there to adopt (running, or exited and not yet reaped).
    async fn alive(&self, handle: &Handle) -> bool;
    /// A container of `spec`'s instance still running from an agent that died while starting it (before it could
    /// record the handle): the runtime's own record of it, if it keeps one.
    async fn leftover(&self, _spec: &ContainerSpec) -> Option<Handle> {
        None
    }
    /// Kills and forgets a container nobody wants any more (its pod is gone).
    async fn remove(&self, handle: &Handle) {
        self.signal(handle, libc::SIGKILL);
    }
    /// Sends a signal to every process of the container.
    fn signal(&self, handle: &Handle, signal: i32);
    /// The container's cgroup (v2) directory, when the runtime gives it one (usage is read there; otherwise from
    /// the container's processes).
    fn cgroup(&self, _handle: &Handle) -> Option<std::path::PathBuf> {
        None
    }
    /// Starts an interactive command in the running container `handle`.
    fn exec_session(&self, handle: &Handle, req: &ExecRequest)
        -> Result<ExecSession, RuntimeError>;
    /// Runs a command "in" the container (its environment and working directory), with a timeout.
    async fn exec(
        &self,
        spec: &ContainerSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError>;
}
