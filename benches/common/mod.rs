//! Helpers shared by the benchmark binaries: starting a real `capstan` process in a temporary data directory,
//! an HTTPS client trusting its CA, percentiles, RSS readings and a concurrent rate driver.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process (all its threads, live ones) has used so far, in seconds: the scheduler's nanosecond
/// counts from /proc/PID/task/*/schedstat (utime/stime in /proc/PID/stat only move in 10 ms ticks).
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

pub fn http(ca: &str) -> reqwest::Client {
    capstan::sys::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

pub async fn rate<F, Fut>(concurrency: usize, total: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `capstan` process (server or up) and how to talk to it.
pub struct Capstan {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub auth: String,
    pub pid: u32,
    pub client: reqwest::Client,
}

/// Starts `capstan --data-dir TMP <args> --listen 127.0.0.1:0` (unless `args` say where) and waits until it is ready.
pub async fn start(args: &[&str]) -> Capstan {
    start_in(tempfile::tempdir().unwrap(), args).await
}

/// Like [`start`], on the data directory `dir`.
pub async fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Capstan {
    // CAPSTAN_BENCH_WRAP="heaptrack -o FILE" (say) runs the server under a tool; the pid sampled is then the tool's.
    let wrap: Vec<String> = std::env::var("CAPSTAN_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut command = match wrap.split_first() {
        Some((tool, tool_args)) => {
            let mut c = Command::new(tool);
            c.args(tool_args).arg(env!("CARGO_BIN_EXE_capstan"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_capstan")),
    };
    let mut child = command
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .args(if args.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        })
        .env(
            "CAPSTAN_LOG",
            std::env::var("CAPSTAN_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut url = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(u) = line
            .trim()
            .strip_prefix("capstan: serving the Kubernetes API on ")
        {
            url = u.to_string();
            break;
        }
        line.clear();
    }
    // CAPSTAN_BENCH_LOG=<filter> keeps the server's log in /tmp/capstan-bench-<pid>.log.
    let keep = std::env::var("CAPSTAN_BENCH_LOG").is_ok();
    let pid = child.id();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut log = keep
            .then(|| std::fs::File::create(format!("/tmp/capstan-bench-{pid}.log")).ok())
            .flatten();
        for l in reader.lines().map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{l}");
            }
        }
    });
    let proc = Proc(child);
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let token = std::fs::read_to_string(dir.path().join("token"))
        .unwrap()
        .trim()
        .to_string();
    let client = http(&ca);
    loop {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Capstan {
        proc,
        dir,
        auth: format!("Bearer {token}"),
        url,
        token,
        pid,
        client,
    }
}

/// A real etcd on loopback ports of its own in a temp dir; its client URL.
pub async fn start_etcd(etcd: &std::path::Path) -> ((Proc, tempfile::TempDir), String) {
    capstan::sys::init_crypto();
    let edir = tempfile::tempdir().unwrap();
    let (cp, pp) = (free_port(), free_port());
    let proc_ = Proc(
        Command::new(etcd)
            .arg("--data-dir")
            .arg(edir.path())
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{cp}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{cp}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{pp}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{pp}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{pp}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ec = reqwest::Client::new();
    let eurl = format!("http://127.0.0.1:{cp}");
    for _ in 0..200 {
        if ec.get(format!("{eurl}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ((proc_, edir), eurl)
}

pub fn etcd_on_path() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("etcd"))
            .find(|c| c.is_file())
    })
}

/// GET `path` with the admin token: the JSON body (Null when it is not JSON).
pub async fn get(c: &Capstan, path: &str) -> serde_json::Value {
    c.client
        .get(format!("{}{path}", c.url))
        .header("Authorization", &c.auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// POSTs `total` objects from `concurrency` clients; `make(i)` gives the i-th object's collection path (from the
/// API root, e.g. `/api/v1/namespaces/x/pods`) and body. Every answer must be a success. Returns creates per second.
pub async fn create_many<F>(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    concurrency: usize,
    total: usize,
    make: F,
) -> f64
where
    F: Fn(usize) -> (String, serde_json::Value) + Send + Sync + 'static,
{
    let (client, url, auth) = (client.clone(), url.to_string(), auth.to_string());
    let make = Arc::new(make);
    rate(concurrency, total, move |i| {
        let (client, url, auth, make) = (client.clone(), url.clone(), auth.clone(), make.clone());
        async move {
            let (path, body) = make(i);
            post(&client, &url, &auth, &path, &body).await;
        }
    })
    .await
}

/// POSTs `body` to `path` (from the API root); the answer must be a success.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    path: &str,
    body: &serde_json::Value,
) {
    let r = client
        .post(format!("{url}{path}"))
        .header("Authorization", auth)
        .json(body)
        .send()
        .await
        .unwrap();
    let code = r.status();
    assert!(
        code.is_success(),
        "POST {path}: {code} {}",
        r.text().await.unwrap_or_default()
    );
}

/// One write seen by many watchers: opens `watchers` watches at `watch_url` (a full URL), then runs `rounds` writes
/// (`write(round)`, awaited), each followed by waiting until every watcher has seen an event containing `marker`
/// (at most 10 s). Returns each round's delivery latencies in milliseconds, from the write's start.
pub async fn fan_out<W, Fut>(
    client: &reqwest::Client,
    auth: &str,
    watch_url: &str,
    watchers: usize,
    marker: &'static [u8],
    rounds: usize,
    write: W,
) -> Vec<Vec<f64>>
where
    W: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let r = client
            .get(watch_url)
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "a watch was refused");
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            let mut s = r.bytes_stream();
            let mut round = 0;
            while let Some(Ok(chunk)) = s.next().await {
                let n = chunk.windows(marker.len()).filter(|w| *w == marker).count();
                for _ in 0..n {
                    let _ = tx.send((round, Instant::now()));
                    round += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = Vec::new();
    for round in 0..rounds {
        let sent = Instant::now();
        write(round).await;
        let mut lat = Vec::new();
        while lat.len() < watchers {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((r, t))) if r == round => {
                    lat.push(t.duration_since(sent).as_secs_f64() * 1000.0)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        out.push(lat);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for h in handles {
        h.abort();
    }
    out
}
