//! Shared helpers for integration tests: start a real `capstan server` on 127.0.0.1:0 in a temp dir, talk to it
//! over real HTTPS, and run the real kubectl against it (with the kubeconfig it wrote and a private cache dir).
#![allow(dead_code)]

pub mod lan;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_capstan");

/// True when CI demands every external dependency (kubectl, root, containerd, etcd).
pub fn required() -> bool {
    std::env::var("CAPSTAN_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Returns the kubectl path, or None (printing why) when it is missing and not required.
pub fn kubectl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|c| c.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if required() => {
            panic!("kubectl is required (CAPSTAN_REQUIRE_EXTERNAL=1) but not on PATH")
        }
        None => {
            eprintln!("SKIP: kubectl not found on PATH");
            None
        }
    }
}

/// Whether python3 can import the official Kubernetes client (a skip, said so, when not - a failure when
/// CAPSTAN_REQUIRE_EXTERNAL=1).
pub fn python_client() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !required(),
            "the Kubernetes Python client is required (CAPSTAN_REQUIRE_EXTERNAL=1) but python3 cannot import kubernetes"
        );
        eprintln!("SKIP: the Kubernetes Python client is not installed");
    }
    found
}

/// A cluster CIDR no other test server of this run uses, so pods of parallel tests (host network: 127.x
/// addresses) never share an address.
pub fn unique_cluster_cidr() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let b = (std::process::id().wrapping_mul(31).wrapping_add(n * 7)) % 250 + 1;
    format!("10.{b}.0.0/16")
}

/// The address ranges of one test server: its own pod CIDR and, for `server`/`up`, a service CIDR and a load
/// balancer pool inside the matching 127.x.0.0/16, so parallel tests never serve each other's ClusterIPs.
pub fn ranges(args: &[&str]) -> Vec<String> {
    // Servers of one cluster are given one set of ranges by the test.
    if args.contains(&"--cluster-cidr") {
        return Vec::new();
    }
    let cidr = unique_cluster_cidr();
    let b = cidr.split('.').nth(1).unwrap_or("1").to_string();
    let mut out = vec!["--cluster-cidr".to_string(), cidr];
    if matches!(args.first(), Some(&"server") | Some(&"up")) {
        // Pods in network namespaces of their own (the bridge network, as root) reach ClusterIPs through their
        // gateway, not on loopback: then the range is the /24 at .200 of the test's 10.b/16 (nodes take /24s from
        // the bottom of it).
        let service = if bridge_network(args) {
            format!("10.{b}.200.0/24")
        } else {
            format!("127.{b}.200.0/24")
        };
        out.extend([
            "--service-cidr".to_string(),
            service,
            "--load-balancer-pool".to_string(),
            format!("127.{b}.201.0/24"),
        ]);
    }
    // `up`'s node gets an address of its own too: node ports are per node address.
    if args.first() == Some(&"up") && !args.contains(&"--node-ip") {
        out.extend(["--node-ip".to_string(), format!("127.{b}.202.1")]);
    }
    out
}

/// Whether a node started with `args` uses the bridge pod network (`--network auto` as root, or asked for).
pub fn bridge_network(args: &[&str]) -> bool {
    let asked = args.windows(2).find(|w| w[0] == "--network").map(|w| w[1]);
    match asked {
        Some(m) => m == "bridge",
        // SAFETY: geteuid has no preconditions.
        None => unsafe { libc::geteuid() == 0 },
    }
}

/// A running `capstan server`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub url: String,
    pub started: Instant,
    pub ready_after: Duration,
    /// Started with `--keep-pods`: its pods outlive it on purpose (to be adopted by the next start), so stopping it
    /// checks nothing; dropping it at the end of the test still kills them.
    pub keeps_pods: bool,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir)
    }

    pub fn start_in(dir: tempfile::TempDir) -> Server {
        Self::launch(dir, &["server"])
    }

    /// `capstan server` with `extra` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        Self::start_in_with(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// `capstan server` on the data directory `dir` with `extra` arguments.
    pub fn start_in_with(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut args = vec!["server"];
        args.extend_from_slice(extra);
        Self::launch(dir, &args)
    }

    /// `capstan ARGS...` (a `server` or `up` command line) on the data directory `dir`.
    pub fn run_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
        Self::launch(dir, args)
    }

    /// Stops the server (SIGTERM, as Ctrl-C) and hands back its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        terminate(&mut self.child, Duration::from_secs(20));
        if !self.keeps_pods {
            assert_nothing_left(self.dir.path());
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `capstan up` (control plane and one node agent, named `node-a`) following no repository, short crash-loop
    /// and Job backoffs, and `extra` arguments.
    pub fn up(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = vec![
            "up",
            "--no-repo",
            "--node-name",
            "node-a",
            "--crashloop-backoff",
            "0.5",
            "--crashloop-backoff-max",
            "2",
            "--job-backoff",
            "0.2",
        ];
        args.extend_from_slice(extra);
        Self::launch(dir, &args)
    }

    fn launch(dir: tempfile::TempDir, args: &[&str]) -> Server {
        let started = Instant::now();
        let mut child = Command::new(BIN)
            .args(["--data-dir"])
            .arg(dir.path())
            .args(args)
            .args(if args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(ranges(args))
            .env(
                "CAPSTAN_LOG",
                std::env::var("TEST_CAPSTAN_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capstan server");
        let stderr = child.stderr.take().expect("stderr");
        let mut reader = BufReader::new(stderr);
        let mut url = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read stderr") > 0 {
            if let Some(rest) = line
                .trim()
                .strip_prefix("capstan: serving the Kubernetes API on ")
            {
                url = rest.to_string();
                break;
            }
            line.clear();
        }
        assert!(!url.is_empty(), "server did not report its address");
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                eprint!("[server] {sink}");
                sink.clear();
            }
        });
        let mut s = Server {
            dir,
            child,
            url,
            started,
            ready_after: Duration::ZERO,
            keeps_pods: args.contains(&"--keep-pods"),
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let client = self.http();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send() {
                if r.status().is_success() {
                    self.ready_after = self.started.elapsed();
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready within 10s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token"))
            .expect("token")
            .trim()
            .to_string()
    }

    pub fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).expect("ca")
    }

    /// A blocking HTTP client that trusts the server's CA (no token).
    pub fn http(&self) -> reqwest::blocking::Client {
        capstan::sys::init_crypto();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca().as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add ca");
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client")
    }

    /// Sends a request with the token; returns (status, JSON body or string).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let c = self.http();
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = c
            .request(m, format!("{}{}", self.url, path))
            .bearer_auth(self.token());
        if !body.is_empty() {
            rb = rb
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let r = rb.send().expect("request");
        let code = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> Output {
        Command::new(kubectl)
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl apply -f -` of a YAML text; panics with kubectl's output when it fails.
    pub fn kubectl_apply(&self, kubectl: &Path, yaml: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(kubectl)
            .env("KUBECONFIG", self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl apply");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        ok(&child.wait_with_output().unwrap())
    }

    /// Runs `capstan` client commands against this server.
    /// A request with another bearer token; returns the status code and body.
    pub fn call_as(&self, token: &str, method: &str, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http()
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub fn capstan(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("run capstan")
    }

    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

/// The processes whose command line names a path in `dir`, with every descendant of theirs (a container's process
/// under its shim), deepest first: pid and command line.
pub fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut parent = std::collections::HashMap::new();
    let mut cmdlines = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        // The parent pid is the second field after the command name, which is in parentheses.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if let Some(pp) = ppid {
            parent.insert(pid, pp);
        }
        cmdlines.insert(pid, cmd);
    }
    let depth_under = |mut pid: i32| -> Option<usize> {
        for depth in 0..64 {
            if cmdlines.get(&pid).is_some_and(|c| c.contains(&needle)) {
                return Some(depth);
            }
            pid = *parent.get(&pid)?;
        }
        None
    };
    let mut found: Vec<(usize, i32, String)> = cmdlines
        .iter()
        .filter_map(|(pid, cmd)| depth_under(*pid).map(|d| (d, *pid, cmd.trim().to_string())))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, pid, cmd)| (pid, cmd)).collect()
}

/// Kills (SIGKILL) every process of [`processes_under`] `dir`; returns what it killed.
pub fn kill_processes_under(dir: &Path) -> Vec<(i32, String)> {
    let found = processes_under(dir);
    for (pid, _) in &found {
        // SAFETY: signals a process of this test's data directory.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    found
}

/// Fails the test (unless it already fails) when processes of its data directory outlived it - after killing them,
/// so one leak does not spill into other tests.
pub fn assert_nothing_left(dir: &Path) {
    let left = kill_processes_under(dir);
    if !left.is_empty() && !std::thread::panicking() {
        panic!(
            "processes of the test's data directory {} outlived it: {left:?}",
            dir.display()
        );
    }
}

/// Asks a process to stop (SIGTERM, so an agent stops its pods), then kills it after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    // SAFETY: signals a child process we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(20));
        if self.keeps_pods {
            kill_processes_under(self.dir.path());
        } else {
            assert_nothing_left(self.dir.path());
        }
    }
}

/// A `capstan agent` joining a test server as node `name`; it stops its pods when dropped.
pub struct Agent {
    pub child: Child,
    pub name: String,
}

impl Agent {
    /// Runs `cmd` (a `capstan agent` command line) as node `name`.
    pub fn spawn(mut cmd: Command, name: &str) -> Agent {
        let child = cmd
            .env(
                "CAPSTAN_LOG",
                std::env::var("TEST_AGENT_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn capstan agent");
        Agent {
            child,
            name: name.to_string(),
        }
    }

    pub fn start(s: &Server, name: &str, extra: &[&str]) -> Agent {
        Self::start_at(s, &s.url, name, extra)
    }

    /// Like [`Agent::start`], told the API server URLs `servers` (`URL[,URL...]`).
    pub fn start_at(s: &Server, servers: &str, name: &str, extra: &[&str]) -> Agent {
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(s.dir.path().join("agents"))
            .args(["agent", "--server", servers, "--token-file"])
            .arg(s.dir.path().join("token"))
            .arg("--certificate-authority")
            .arg(s.dir.path().join("ca.crt"))
            .args(["--node-name", name, "--stop-pods-on-exit"])
            .args(["--crashloop-backoff", "0.5", "--crashloop-backoff-max", "2"])
            .args(extra)
            .env(
                "CAPSTAN_LOG",
                std::env::var("TEST_AGENT_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn capstan agent");
        Agent {
            child,
            name: name.to_string(),
        }
    }

    /// The agent's command line, as `ps` shows it to every local user.
    pub fn cmdline(&self) -> String {
        // Read until the exec has happened (an empty cmdline is the moment in between).
        within(Duration::from_secs(5), "the agent's command line", || {
            std::fs::read(format!("/proc/{}/cmdline", self.child.id()))
                .ok()
                .filter(|b| !b.is_empty())
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        })
    }

    /// Kills the agent with SIGKILL (its containers keep running).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The machine dies: its agent and every process of its pods (those under `s`'s agents directory for this
    /// node) are killed.
    pub fn crash_machine(&mut self, s: &Server) {
        self.kill9();
        kill_processes_under(&s.dir.path().join("agents/nodes").join(&self.name).join(""));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(20));
    }
}

/// Like [`eventually`] with a custom limit.
pub fn within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`within`], but gives up with `None` instead of failing, so the caller can show what it saw.
pub fn try_within<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts a command succeeded, printing its output otherwise; returns stdout.
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "command failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Asserts a command failed; returns stderr + stdout.
pub fn fails(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !out.status.success(),
        "command unexpectedly succeeded:\n{text}"
    );
    text
}

/// The corpus of Kubernetes documentation examples (a copy lives in tests/fixtures; `CAPSTAN_CORPUS` overrides).
pub fn corpus() -> PathBuf {
    match std::env::var_os("CAPSTAN_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-website-examples"),
    }
}

/// Polls `f` until it yields a value (15 s at most), panicking with `what` on timeout.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kubectl ARGS` against `s` in a real 100x30 pseudo-terminal (for `exec -it`), with what it prints collected.
pub struct Terminal {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn std::io::Write + Send>,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Terminal {
    pub fn kubectl(s: &Server, kubectl: &Path, args: &[&str]) -> Terminal {
        let pair = portable_pty::native_pty_system()
            .openpty(portable_pty::PtySize {
                rows: 30,
                cols: 100,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = portable_pty::CommandBuilder::new(kubectl);
        cmd.arg("--cache-dir");
        cmd.arg(s.dir.path().join("kubectl-cache"));
        cmd.args(args);
        cmd.env("KUBECONFIG", s.kubeconfig());
        cmd.env("TERM", "xterm");
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // Let the remote side set the terminal up before typing.
        std::thread::sleep(Duration::from_millis(500));
        Terminal {
            child,
            writer,
            seen,
        }
    }

    /// Types `text`.
    pub fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    /// Waits (30 s at most) until the terminal has shown `what`.
    pub fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.lock().unwrap().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in: {}",
                self.seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (20 s at most) for kubectl to exit; its exit code.
    pub fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.exit_code();
            }
            assert!(Instant::now() < deadline, "kubectl did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
