//! The per-container shim (containerd-shim's role for the process runtime): `capstan shim` starts the container's
//! command in its own process group, copies its stdout/stderr line by line into the CRI log file (with rotation), and
//! when it exits records the exit status in a file the agent reads. The shim sits in its own session, so containers
//! outlive an agent that dies or restarts, and a restarted agent finds their state on disk. It never talks to the
//! API server.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::logs::LogWriter;

/// The longest line kept whole; longer output is split into partial (`P`) lines, as the CRI format does.
const MAX_LINE: usize = 16 * 1024;

/// What the shim is asked to run.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub log: PathBuf,
    pub exit_file: PathBuf,
    pub max_log_bytes: u64,
    pub max_log_files: u32,
    pub workdir: Option<PathBuf>,
    /// A JSON file of [`crate::node::volumes::Mount`]s.
    pub mounts: Option<PathBuf>,
    /// The pod's network namespace to join.
    pub netns: Option<PathBuf>,
    /// A JSON file of the container's [`super::security::Security`].
    pub security: Option<PathBuf>,
    pub command: Vec<String>,
}

/// How a container ended, as the shim writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub finished_at: String,
    /// Why, when the runtime knows better than the exit code (`OOMKilled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Runs the shim: prints `started <pid>` (or `failed <reason>`) on stdout for the agent, then waits for the
/// container and writes the exit record. Returns the shim's own exit code.
// Long by design: the shim's whole life as one process, in order - handshake, start, stream copies, signals, wait,
// exit record; each step relies on the descriptors and signal state of the one before.
pub fn run(args: ShimArgs) -> i32 {
    let mut handshake = std::io::stdout();
    let Some((program, rest)) = args.command.split_first() else {
        let _ = writeln!(handshake, "failed no command");
        return 2;
    };
    let writer = match LogWriter::open(&args.log, args.max_log_bytes, args.max_log_files) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            let _ = writeln!(handshake, "failed opening log {}: {e}", args.log.display());
            return 2;
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &args.workdir {
        cmd.current_dir(dir);
    }
    if let Some(path) = &args.netns {
        if let Err(e) = join_netns(&mut cmd, path) {
            let _ = writeln!(handshake, "failed {}", e.to_string().replace('\n', " "));
            return 2;
        }
    }
    let security = match args.security.as_deref().map(load_security).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            let _ = writeln!(handshake, "failed security settings: {e}");
            return 2;
        }
    };
    if args.mounts.is_some() || security.read_only_root {
        match mount_plan(args.mounts.as_deref(), security.read_only_root) {
            Ok(plan) => {
                // SAFETY: the closure makes only system calls (unshare, mount, open/write) on data prepared before
                // the fork; it allocates nothing.
                unsafe {
                    cmd.pre_exec(move || plan.apply());
                }
            }
            Err(e) => {
                let _ = writeln!(
                    handshake,
                    "failed volume mounts: {}",
                    e.to_string().replace('\n', " ")
                );
                return 2;
            }
        }
    }
    if args.security.is_some() {
        let identity = Identity::of(&security);
        // SAFETY: the closure makes only system calls (prctl, setgroups, setgid, setuid) on data prepared before
        // the fork; it allocates nothing. It runs after the mounts (which need the privileges it gives up).
        unsafe {
            cmd.pre_exec(move || identity.apply());
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("exec: \"{program}\": {e}");
            let _ = writeln!(handshake, "failed {}", msg.replace('\n', " "));
            return 2;
        }
    };
    // The handle, on disk before the agent hears of it: an agent killed right now finds the container from it when
    // it starts again, instead of starting the same instance twice.
    let me = std::process::id() as i32;
    let handle = super::Handle {
        pid: child.id() as i32,
        shim_pid: me,
        shim_start: super::process::start_ticks(me).unwrap_or(0),
        exit_file: args.exit_file.clone(),
        id: String::new(),
    };
    let _ = std::fs::write(
        started_file(&args.exit_file),
        serde_json::to_vec(&handle).unwrap_or_default(),
    );
    let _ = writeln!(handshake, "started {}", child.id());
    let _ = handshake.flush();
    // The agent may go away; never die of a closed stdout.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto our own stdout descriptor with a valid open file.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut readers = 0;
    for (stream, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        readers += 1;
        let w = writer.clone();
        let tx = done_tx.clone();
        std::thread::spawn(move || {
            copy_lines(stream, pipe, &w);
            let _ = tx.send(());
        });
    }
    let status = child.wait();
    // Grandchildren may hold the pipes open; do not wait for them for long.
    for _ in 0..readers {
        if done_rx.recv_timeout(Duration::from_millis(500)).is_err() {
            break;
        }
    }
    let (exit_code, signal) = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (255, None),
        },
        Err(_) => (255, None),
    };
    let record = ExitRecord {
        exit_code,
        signal,
        finished_at: crate::api::meta::format_time(&crate::api::meta::now()),
        reason: None,
    };
    let _ = write_exit(&args.exit_file, &record);
    0
}

/// `capstan container-log LOG`: the log driver containerd's shim starts beside each container (a `binary://` log
/// URI). The container's stdout and stderr arrive on descriptors 3 and 4; closing descriptor 5 tells the shim we are
/// ready. Lines go to `LOG` in the CRI format the logs API reads, rotated like the process runtime's. The driver
/// lives as long as the container - not the agent - and ends when both streams do.
pub fn container_log(log: &Path, max_log_bytes: u64, max_log_files: u32) -> i32 {
    use std::os::fd::FromRawFd;
    // The shim asks us to stop (SIGTERM) when the task goes; by then the streams have ended or are about to, and
    // what is still in the pipes is worth writing.
    // SAFETY: ignoring a signal has no preconditions.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let writer = match LogWriter::open(log, max_log_bytes, max_log_files) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            eprintln!("opening log {}: {e}", log.display());
            return 2;
        }
    };
    let mut threads = Vec::new();
    for (fd, stream) in [(3, "stdout"), (4, "stderr")] {
        // SAFETY: descriptors 3 and 4 are the pipes the shim hands us, owned by nothing else in this process.
        let pipe = unsafe { std::fs::File::from_raw_fd(fd) };
        let w = writer.clone();
        threads.push(std::thread::spawn(move || {
            copy_lines(stream, Box::new(pipe), &w)
        }));
    }
    // SAFETY: descriptor 5 is the shim's readiness pipe; closing it is the signal.
    unsafe { libc::close(5) };
    for t in threads {
        let _ = t.join();
    }
    0
}

fn copy_lines(stream: &str, pipe: Box<dyn Read + Send>, w: &Mutex<LogWriter>) {
    let mut reader = BufReader::with_capacity(MAX_LINE, pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut partial = false;
        // Read one line, at most MAX_LINE bytes of it.
        loop {
            let available = match reader.fill_buf() {
                Ok(b) => b,
                Err(_) => return,
            };
            if available.is_empty() {
                break;
            }
            let room = MAX_LINE - buf.len();
            match available.iter().take(room).position(|b| *b == b'\n') {
                Some(i) => {
                    buf.extend_from_slice(&available[..i]);
                    reader.consume(i + 1);
                    break;
                }
                None => {
                    let n = available.len().min(room);
                    buf.extend_from_slice(&available[..n]);
                    reader.consume(n);
                    if buf.len() >= MAX_LINE {
                        partial = true;
                        break;
                    }
                }
            }
        }
        if buf.is_empty() && !partial {
            // EOF (an empty line still has its newline consumed above and is written below only if read).
            if reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
                return;
            }
        }
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.write_line(stream, &buf, partial);
    }
}

/// Writes the exit record atomically (the agent reads it after the shim exits).
/// Where the shim records its container's handle: beside the exit record.
pub fn started_file(exit_file: &Path) -> PathBuf {
    exit_file.with_file_name("started.json")
}

pub fn write_exit(path: &Path, record: &ExitRecord) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(record).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

pub fn read_exit(path: &Path) -> Option<ExitRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Why the shim cannot prepare what a container's process needs before it runs.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("opening the pod's network namespace {}: {source}", path.display())]
    Netns {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    MountsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    MountsJson {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("mountPath {}: {source}{}", target.display(), if *root { "" } else { " (creating it needs root; or mount at an existing directory)" })]
    Target {
        target: std::path::PathBuf,
        source: std::io::Error,
        root: bool,
    },
    #[error("a path holds a NUL byte: {0}")]
    Nul(#[from] std::ffi::NulError),
}

/// Makes `cmd` join the network namespace at `path` (a pod's, under the bridge network) before it runs.
pub fn join_netns(cmd: &mut Command, path: &Path) -> Result<(), PrepareError> {
    let ns = std::fs::File::open(path).map_err(|source| PrepareError::Netns {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: setns is a single system call on a descriptor opened before the fork; the file is moved into the
    // closure, so it stays open until the exec.
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

fn load_security(file: &Path) -> Result<super::security::Security, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))
}

/// Who the container runs as, made ready before the fork: capabilities to drop from the bounding set (as root),
/// `no_new_privs`, then groups, group and user.
struct Identity {
    drop: Vec<u32>,
    no_new_privileges: bool,
    groups: Vec<libc::gid_t>,
    gid: Option<libc::gid_t>,
    uid: Option<libc::uid_t>,
    root: bool,
}

impl Identity {
    fn of(s: &super::security::Security) -> Identity {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Identity {
            drop: s.dropped_numbers(),
            no_new_privileges: s.no_new_privileges,
            groups: s.supplemental_groups.clone(),
            gid: s.run_as_group,
            uid: s.run_as_user,
            root,
        }
    }

    /// Runs in the child between fork and exec.
    fn apply(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: plain system calls on integers and a slice owned by `self`.
        unsafe {
            if self.root {
                for cap in &self.drop {
                    // Capabilities the kernel does not know are skipped (EINVAL).
                    if libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) != 0
                        && *libc::__errno_location() != libc::EINVAL
                    {
                        return Err(err());
                    }
                }
            }
            if self.no_new_privileges && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(err());
            }
            let changes_identity =
                self.uid.is_some() || self.gid.is_some() || !self.groups.is_empty();
            if self.root
                && changes_identity
                && libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
            {
                return Err(err());
            }
            if let Some(g) = self.gid {
                if libc::setgid(g) != 0 {
                    return Err(err());
                }
            }
            if let Some(u) = self.uid {
                if libc::setuid(u) != 0 {
                    return Err(err());
                }
            }
        }
        Ok(())
    }
}

/// Bind mounts made ready before the fork: paths as C strings, targets created on the host.
struct MountPlan {
    mounts: Vec<(std::ffi::CString, std::ffi::CString, bool)>,
    read_only_root: bool,
    root: bool,
    uid_map: std::ffi::CString,
    gid_map: std::ffi::CString,
}

fn mount_plan(file: Option<&Path>, read_only_root: bool) -> Result<MountPlan, PrepareError> {
    let mounts: Vec<crate::node::volumes::Mount> = match file {
        None => Vec::new(),
        Some(file) => {
            let path = || file.to_path_buf();
            let bytes = std::fs::read(file).map_err(|source| PrepareError::MountsFile {
                path: path(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|source| PrepareError::MountsJson {
                path: path(),
                source,
            })?
        }
    };
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut out = Vec::new();
    for m in mounts {
        // The target must exist to mount on: a directory, or a file for a file source.
        if !m.target.exists() {
            let made = if m.source.is_dir() {
                std::fs::create_dir_all(&m.target)
            } else {
                m.target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::File::create(&m.target).map(|_| ()))
            };
            match made {
                Ok(()) => {}
                Err(_) if m.optional && uid != 0 => continue,
                Err(source) => {
                    return Err(PrepareError::Target {
                        target: m.target.clone(),
                        source,
                        root: uid == 0,
                    })
                }
            }
        }
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes());
        out.push((c(&m.source)?, c(&m.target)?, m.read_only));
    }
    Ok(MountPlan {
        mounts: out,
        read_only_root,
        root: uid == 0,
        uid_map: std::ffi::CString::new(format!("{uid} {uid} 1"))?,
        gid_map: std::ffi::CString::new(format!("{gid} {gid} 1"))?,
    })
}

impl MountPlan {
    /// Runs in the child between fork and exec: a mount namespace of its own (inside a user namespace that maps
    /// only the caller when not root), then the bind mounts.
    fn apply(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: plain system calls on valid NUL-terminated strings owned by `self`.
        unsafe {
            if self.root {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(err());
                }
            } else {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                    return Err(err());
                }
                write_proc(c"/proc/self/setgroups", c"deny")?;
                write_proc(c"/proc/self/uid_map", &self.uid_map)?;
                write_proc(c"/proc/self/gid_map", &self.gid_map)?;
            }
            let none = std::ptr::null();
            if libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            for (src, dst, ro) in &self.mounts {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
                if *ro
                    && libc::mount(
                        none,
                        dst.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(err());
                }
            }
            // readOnlyRootFilesystem: this namespace's root goes read-only; the volumes above stay as they are.
            if self.read_only_root
                && libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ) != 0
            {
                return Err(err());
            }
        }
        Ok(())
    }
}

/// Writes a small text to a /proc file, without allocating (for use between fork and exec).
unsafe fn write_proc(path: &std::ffi::CStr, text: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: the caller passes valid C strings; the descriptor is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let bytes = text.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
