//! Entering a running container to run a command in it, the way `nsenter` does: the new process takes the
//! environment, working directory and namespaces of the container's main process. The process runtime shares the
//! host's filesystem, so only its network and mount namespaces (as root) are entered; a real container (containerd)
//! is entered whole - mount (its root filesystem), network, IPC, UTS and PID namespaces, its cgroups (so its limits
//! hold for what runs there too) - and as its user and groups. A PID namespace takes one more fork: a small
//! process outside waits for the command inside and ends with its status.
//! Used by `kubectl exec` ([`session`]) and exec probes ([`run`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{ExecRequest, ExecResult, ExecSession, Reader, RuntimeError, Writer};

/// How much of the target process's context a command takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Depth {
    /// Environment, working directory, and (as root) network and mount namespaces: the process runtime.
    Process,
    /// All of the above plus IPC and UTS namespaces, user and groups: a real container.
    Container,
}

/// What a command entering process `pid` starts from.
struct Context {
    env: Vec<(String, String)>,
    /// The target's working directory, opened (entered with fchdir once inside its mount namespace).
    cwd: std::fs::File,
    namespaces: Vec<std::fs::File>,
    /// (uid, gid, supplementary groups) to switch to; none: stay who we are.
    ids: Option<(u32, u32, Vec<u32>)>,
    /// The target's `cgroup.procs` files, opened for writing: the new process moves itself in.
    cgroups: Vec<std::fs::File>,
    /// The target's PID namespace, when it has one of its own.
    pid_ns: Option<std::fs::File>,
}

fn context_of(pid: i32, depth: Depth) -> Result<Context, RuntimeError> {
    let gone =
        |e: std::io::Error| RuntimeError::Start(format!("the container's process {pid}: {e}"));
    let raw = std::fs::read(format!("/proc/{pid}/environ")).map_err(gone)?;
    let env = raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let cwd = std::fs::File::open(format!("/proc/{pid}/cwd")).map_err(gone)?;
    let mut namespaces = Vec::new();
    let kinds: &[&str] = match depth {
        Depth::Process => &["net", "mnt"],
        // The mount namespace goes last: after it, /proc is the container's.
        Depth::Container => &["ipc", "uts", "net", "mnt"],
    };
    if crate::sys::is_root() {
        for ns in kinds {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
            if theirs.is_some() && theirs != ours {
                namespaces.push(std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).map_err(gone)?);
            }
        }
    }
    let (ids, cgroups) = match depth {
        Depth::Process => (None, Vec::new()),
        Depth::Container => (Some(ids_of(pid).map_err(gone)?), cgroups_of(pid)),
    };
    let pid_ns = match depth {
        Depth::Container if crate::sys::is_root() => {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            let ours = std::fs::read_link("/proc/self/ns/pid").ok();
            if theirs.is_some() && theirs != ours {
                Some(std::fs::File::open(format!("/proc/{pid}/ns/pid")).map_err(gone)?)
            } else {
                None
            }
        }
        _ => None,
    };
    Ok(Context {
        env,
        cwd,
        namespaces,
        ids,
        cgroups,
        pid_ns,
    })
}

/// The `cgroup.procs` files of process `pid`'s cgroups (v1 hierarchies by controller, or the v2 one), open for
/// writing.
fn cgroups_of(pid: i32) -> Vec<std::fs::File> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let mut dirs = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if controllers.is_empty() {
            dirs.insert(format!("/sys/fs/cgroup{path}"));
            dirs.insert(format!("/sys/fs/cgroup/unified{path}"));
        } else {
            for c in controllers.split(',') {
                let c = c.strip_prefix("name=").unwrap_or(c);
                dirs.insert(format!("/sys/fs/cgroup/{c}{path}"));
            }
            dirs.insert(format!("/sys/fs/cgroup/{controllers}{path}"));
        }
    }
    dirs.into_iter()
        .filter_map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(Path::new(&d).join("cgroup.procs"))
                .ok()
        })
        .collect()
}

/// Writes `pid` in decimal to `fd` without allocating (after a fork).
fn write_pid(fd: i32, pid: i32) {
    let mut buf = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: writes initialized bytes of a stack buffer to a descriptor we own.
    unsafe { libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i) };
}

/// The real uid, gid and supplementary groups of process `pid`.
fn ids_of(pid: i32) -> std::io::Result<(u32, u32, Vec<u32>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = field("Uid:").first().copied().unwrap_or(0);
    let gid = field("Gid:").first().copied().unwrap_or(0);
    Ok((uid, gid, field("Groups:")))
}

/// Opens a pseudo-terminal: (controller, terminal).
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers given; the name, termios and size are optional.
    let r = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    Ok(unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    })
}

fn set_size(fd: i32, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on a terminal descriptor with a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Starts `req.command` inside the context of process `pid`.
// Long by design: what runs between fork and exec must be one closure of async-signal-safe system calls on data
// prepared before the fork; that closure and its preparation are read together.
pub fn session(pid: i32, req: &ExecRequest, depth: Depth) -> Result<ExecSession, RuntimeError> {
    let Some(program) = req.command.first() else {
        return Err(RuntimeError::Create("empty exec command".into()));
    };
    let ctx = context_of(pid, depth)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&req.command[1..])
        .env_clear()
        .envs(ctx.env.iter().cloned())
        .kill_on_drop(true);
    let pty = if req.tty {
        let (controller, terminal) = open_pty()?;
        set_size(controller.as_raw_fd(), 80, 24);
        cmd.stdin(Stdio::from(terminal.try_clone()?))
            .stdout(Stdio::from(terminal.try_clone()?))
            .stderr(Stdio::from(terminal));
        Some(controller)
    } else {
        cmd.stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        None
    };
    let tty = req.tty;
    let fds: Vec<i32> = ctx.namespaces.iter().map(AsRawFd::as_raw_fd).collect();
    let cwd = ctx.cwd.as_raw_fd();
    let ids = ctx.ids.clone();
    let cgroups: Vec<i32> = ctx.cgroups.iter().map(AsRawFd::as_raw_fd).collect();
    let pid_ns = ctx.pid_ns.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the closure makes only system calls (getpid, write, setns, fork, close_range, waitpid, _exit, prctl,
    // setsid, ioctl, fchdir, setgroups, setgid, setuid) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let me = libc::getpid();
            for fd in &cgroups {
                write_pid(*fd, me);
            }
            for fd in &fds {
                if libc::setns(*fd, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(ns) = pid_ns {
                // A PID namespace is entered by children only: fork once more. This process stays outside, waits
                // for the command and ends as it ends; the command dies with it.
                if libc::setns(ns, libc::CLONE_NEWPID) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let command = libc::fork();
                if command < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if command > 0 {
                    // Hold nothing: not the streams, not the pipe the spawner reads exec errors from.
                    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                    let mut status = 0;
                    while libc::waitpid(command, &mut status, 0) < 0 {
                        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                            libc::_exit(127);
                        }
                    }
                    if libc::WIFEXITED(status) {
                        libc::_exit(libc::WEXITSTATUS(status));
                    }
                    libc::_exit(128 + libc::WTERMSIG(status));
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            if tty {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
            libc::fchdir(cwd);
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Start(format!("exec: \"{program}\": {e}")))?;
    drop(ctx);
    drop(cmd);
    match pty {
        Some(controller) => {
            let raw = controller.as_raw_fd();
            let reader = std::fs::File::from(controller.try_clone()?);
            let writer = std::fs::File::from(controller);
            Ok(ExecSession {
                child,
                stdin: Some(Box::new(tokio::fs::File::from_std(writer))),
                stdout: Some(Box::new(tokio::fs::File::from_std(reader))),
                stderr: None,
                resize: Some(Box::new(move |cols, rows| set_size(raw, cols, rows))),
            })
        }
        None => Ok(ExecSession {
            stdin: child.stdin.take().map(|w| Box::new(w) as Writer),
            stdout: child.stdout.take().map(|r| Box::new(r) as Reader),
            stderr: child.stderr.take().map(|r| Box::new(r) as Reader),
            child,
            resize: None,
        }),
    }
}

/// Runs `command` inside the context of process `pid` to its end (or `timeout`), collecting what it prints: an exec
/// probe.
pub async fn run(
    pid: i32,
    command: &[String],
    timeout: Duration,
    depth: Depth,
) -> Result<ExecResult, RuntimeError> {
    use tokio::io::AsyncReadExt;
    let req = ExecRequest {
        command: command.to_vec(),
        stdin: false,
        tty: false,
    };
    let mut s = session(pid, &req, depth)?;
    let (mut out, mut err) = (s.stdout.take(), s.stderr.take());
    let collect = async move {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut a).await;
            }
        };
        let read_err = async {
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut b).await;
            }
        };
        tokio::join!(read_out, read_err);
        a.extend(b);
        a
    };
    let finished = async {
        let output = collect.await;
        let status = s.child.wait().await;
        (output, status)
    };
    match tokio::time::timeout(timeout, finished).await {
        Ok((output, Ok(status))) => Ok(ExecResult {
            exit_code: status.code().unwrap_or(137),
            output: String::from_utf8_lossy(&output).into_owned(),
        }),
        Ok((_, Err(e))) => Err(RuntimeError::Io(e)),
        Err(_) => Err(RuntimeError::Start(format!(
            "command timed out after {}s",
            timeout.as_secs_f64()
        ))),
    }
}
