//! The `process` runtime: a container is its `command` + `args` run as host processes, supervised by a
//! `capstan shim` in its own session (so containers outlive the agent). The image is not interpreted: a container
//! without a command cannot be created, and says so. A bare `capstan` in a command means this binary, so examples
//! can run `capstan demo-app` anywhere.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{ContainerRuntime, ContainerSpec, ExecResult, ExitRecord, Handle, RuntimeError};

pub struct ProcessRuntime {
    /// The binary that provides `capstan shim` (this executable).
    pub shim: PathBuf,
    /// A directory put first on containers' PATH, holding a `capstan` link to `shim`.
    pub bin_dir: PathBuf,
    pub max_log_bytes: u64,
    pub max_log_files: u32,
}

impl ProcessRuntime {
    /// A runtime using this executable as the shim, with `bin_dir` prepared.
    pub fn new(data_dir: &std::path::Path) -> std::io::Result<Self> {
        let shim = std::env::current_exe()?;
        let bin_dir = data_dir.join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        let link = bin_dir.join("capstan");
        if std::fs::read_link(&link).ok().as_ref() != Some(&shim) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&shim, &link)?;
        }
        Ok(ProcessRuntime {
            shim,
            bin_dir,
            max_log_bytes: 10 << 20,
            max_log_files: 5,
        })
    }

    fn path_env(&self, env: &[(String, String)]) -> String {
        let base = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
        format!("{}:{base}", self.bin_dir.display())
    }

    fn command_env(&self, cmd: &mut tokio::process::Command, spec: &ContainerSpec) {
        cmd.env_clear();
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        cmd.env("PATH", self.path_env(&spec.env));
        if !spec.env.iter().any(|(k, _)| k == "HOME") {
            cmd.env("HOME", "/");
        }
    }

    /// What the process runtime can honour of a container's security settings, and the kubelet's `runAsNonRoot`
    /// check (the container runs as `runAsUser`, else as the agent's user).
    fn check_security(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let sec = &spec.security;
        // SAFETY: geteuid and getegid have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if spec.run_as_non_root {
            let name = spec.id.split('/').nth(1).unwrap_or("");
            super::security::verify_non_root(
                Some(sec.run_as_user.unwrap_or(euid)),
                "",
                &spec.pod_label,
                name,
            )
            .map_err(RuntimeError::Config)?;
        }
        if let Some(c) = sec.unknown_capability() {
            return Err(RuntimeError::Create(format!(
                "unknown capability {c:?} in securityContext.capabilities"
            )));
        }
        if euid != 0 {
            let other_user = sec.run_as_user.is_some_and(|u| u != euid);
            let other_group = sec.run_as_group.is_some_and(|g| g != egid);
            if other_user || other_group || !sec.supplemental_groups.is_empty() {
                return Err(RuntimeError::Create(format!(
                    "the process runtime runs containers as another user or group (runAsUser {:?}, runAsGroup                      {:?}, supplementalGroups {:?}) only when the agent runs as root",
                    sec.run_as_user, sec.run_as_group, sec.supplemental_groups
                )));
            }
        }
        Ok(())
    }

    fn resolve(&self, program: &str) -> String {
        if program == "capstan" {
            self.shim.display().to_string()
        } else {
            program.to_string()
        }
    }
}

/// The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), to tell reused pids apart.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Waits until process `pid` exits (it need not be our child), with a pidfd.
async fn wait_pid(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // already gone
    }
    // SAFETY: the descriptor was just returned to us and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the descriptor for its whole life; it is never closed or replaced behind its back.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
    };
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while start_ticks(pid).is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Handle, RuntimeError> {
        let argv = spec.argv();
        let Some(program) = argv.first().filter(|_| !spec.command.is_empty()) else {
            return Err(RuntimeError::Create(format!(
                "the process runtime runs a container's command and args and does not interpret images: \
                 set command for image {:?}",
                spec.image
            )));
        };
        self.check_security(spec)?;
        std::fs::create_dir_all(&spec.state_dir)?;
        let exit_file = spec.state_dir.join("exit.json");
        let _ = std::fs::remove_file(&exit_file);
        let _ = std::fs::remove_file(super::shim::started_file(&exit_file));
        let mut cmd = tokio::process::Command::new(&self.shim);
        cmd.arg("shim")
            .arg("--log")
            .arg(&spec.log_path)
            .arg("--exit-file")
            .arg(&exit_file)
            .arg("--max-log-bytes")
            .arg(self.max_log_bytes.to_string())
            .arg("--max-log-files")
            .arg(self.max_log_files.to_string());
        if let Some(dir) = &spec.working_dir {
            cmd.arg("--workdir").arg(dir);
        }
        if !spec.mounts.is_empty() {
            let file = spec.state_dir.join("mounts.json");
            std::fs::write(&file, serde_json::to_vec(&spec.mounts).unwrap_or_default())?;
            cmd.arg("--mounts").arg(&file);
        }
        if let Some(ns) = &spec.netns {
            cmd.arg("--netns").arg(ns);
        }
        // As root every container gets its security settings (at least the default capabilities); without root only
        // what it asks for applies.
        if crate::sys::is_root() || spec.security != Default::default() {
            let file = spec.state_dir.join("security.json");
            std::fs::write(
                &file,
                serde_json::to_vec(&spec.security).unwrap_or_default(),
            )?;
            cmd.arg("--security").arg(&file);
        }
        cmd.arg("--").arg(self.resolve(program));
        cmd.args(&argv[1..]);
        self.command_env(&mut cmd, spec);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe; the shim leaves our session so it outlives us.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let shim_pid = child.id().unwrap_or(0) as i32;
        let shim_start = start_ticks(shim_pid).unwrap_or(0);
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let mut r = BufReader::new(out);
            let _ = r.read_line(&mut line).await;
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest).await;
        }
        // The shim lives on; its exit is observed through a pidfd.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("started ") {
            let pid = pid
                .parse()
                .map_err(|_| RuntimeError::Start(format!("bad shim handshake {line:?}")))?;
            Ok(Handle {
                pid,
                shim_pid,
                shim_start,
                exit_file,
                id: String::new(),
            })
        } else if let Some(msg) = line.strip_prefix("failed ") {
            Err(RuntimeError::Start(msg.to_string()))
        } else {
            Err(RuntimeError::Start(format!(
                "the shim exited without starting the container ({line:?})"
            )))
        }
    }

    async fn wait(&self, h: &Handle) -> ExitRecord {
        if start_ticks(h.shim_pid) == Some(h.shim_start) {
            wait_pid(h.shim_pid).await;
        }
        // The shim writes the record before it exits.
        for _ in 0..20 {
            if let Some(r) = super::shim::read_exit(&h.exit_file) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The shim died without a record (killed): the container cannot be accounted for; make sure it is gone.
        self.signal(h, libc::SIGKILL);
        ExitRecord {
            exit_code: 137,
            signal: Some(libc::SIGKILL),
            finished_at: crate::api::meta::format_time(&crate::api::meta::now()),
            reason: None,
        }
    }

    async fn leftover(&self, spec: &ContainerSpec) -> Option<Handle> {
        let file = super::shim::started_file(&spec.state_dir.join("exit.json"));
        let h: Handle = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        (start_ticks(h.shim_pid) == Some(h.shim_start)).then_some(h)
    }

    async fn alive(&self, h: &Handle) -> bool {
        start_ticks(h.shim_pid) == Some(h.shim_start)
            || super::shim::read_exit(&h.exit_file).is_some()
    }

    fn signal(&self, h: &Handle, signal: i32) {
        if h.pid > 1 {
            // SAFETY: kill with a negative pid signals the container's process group only.
            unsafe { libc::kill(-h.pid, signal) };
        }
    }

    fn exec_session(
        &self,
        h: &Handle,
        req: &super::ExecRequest,
    ) -> Result<super::ExecSession, RuntimeError> {
        super::enter::session(h.pid, req, super::enter::Depth::Process)
    }

    async fn exec(
        &self,
        spec: &ContainerSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let Some(program) = command.first() else {
            return Err(RuntimeError::Create("empty exec command".into()));
        };
        let mut cmd = tokio::process::Command::new(self.resolve(program));
        cmd.args(&command[1..]);
        self.command_env(&mut cmd, spec);
        if let Some(ns) = &spec.netns {
            super::shim::join_netns(cmd.as_std_mut(), ns)
                .map_err(|e| RuntimeError::Start(e.to_string()))?;
        }
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| RuntimeError::Start(format!("exec: \"{program}\": {e}")))?;
        let pgid = child.id().unwrap_or(0) as i32;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&out.stderr));
                Ok(ExecResult {
                    exit_code: out.status.code().unwrap_or(137),
                    output,
                })
            }
            Ok(Err(e)) => Err(RuntimeError::Io(e)),
            Err(_) => {
                if pgid > 1 {
                    // SAFETY: signals the probe's own process group.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                Err(RuntimeError::Start(format!(
                    "command timed out after {}s",
                    timeout.as_secs_f64()
                )))
            }
        }
    }
}
