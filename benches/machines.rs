//! Benchmarks across machines (root; each "machine" a network namespace on a bridge, as in tests/machines.rs), on
//! real `capstan` processes (release build):
//!
//! - `join`: time from starting `capstan agent --join-token-file` on a fresh machine to its Node Ready with a pod
//!   CIDR (join exchange, registration, IPAM), per machine.
//! - `pod-network`: pod-to-pod TCP between two pods on one machine and two pods on different machines, for each
//!   backend (vxlan, host-gw): round-trip latency of 1-byte messages on one connection (p50/p99) and bulk throughput
//!   of one connection for 3 s. The endpoints run inside the pods' network namespaces (threads of this process that
//!   joined them), so only the pod network is measured.
//!
//! Run: `sudo cargo bench --bench machines` (both) or `-- join` / `-- pod-network`; `CAPSTAN_BENCH_QUICK=1`
//! shortens them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
#[path = "../tests/common/lan.rs"]
mod lan;

use common::{get, pct, Capstan};
use lan::{Lan, Machine};

const BIN: &str = env!("CARGO_BIN_EXE_capstan");

async fn post(c: &Capstan, path: &str, body: &Value) -> u16 {
    c.client
        .post(format!("{}{path}", c.url))
        .header("Authorization", &c.auth)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A server on the test network, machines `names` on it, and the join token file.
async fn cluster(
    backend: &str,
    names: &[&str],
) -> (Lan, Vec<Machine>, Capstan, std::path::PathBuf) {
    let mut lan = Lan::new();
    let machines: Vec<Machine> = (0..names.len())
        .map(|i| lan.machine(11 + i as u8))
        .collect();
    let listen = format!("{}:0", lan.gateway());
    let b = 100 + (std::process::id() % 100);
    let c = common::start(&[
        "server",
        "--listen",
        &listen,
        "--pod-network-backend",
        backend,
        "--cluster-cidr",
        &format!("10.{b}.0.0/16"),
        "--service-cidr",
        &format!("10.{b}.200.0/24"),
    ])
    .await;
    let out = Command::new(BIN)
        .arg("--kubeconfig")
        .arg(c.dir.path().join("kubeconfig"))
        .args(["token", "create", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = c.dir.path().join("join-token");
    std::fs::write(&token_file, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    (lan, machines, c, token_file)
}

fn agent(c: &Capstan, m: &Machine, name: &str, token_file: &std::path::Path) -> common::Proc {
    let child = m
        .command(BIN)
        .arg("--data-dir")
        .arg(c.dir.path().join(format!("machine-{name}")))
        .args(["agent", "--server", &c.url, "--join-token-file"])
        .arg(token_file)
        .args([
            "--node-name",
            name,
            "--stop-pods-on-exit",
            "--network",
            "bridge",
        ])
        .env("CAPSTAN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::Proc(child)
}

/// Stops agents with SIGTERM, so they stop their pods and take their networks away.
fn stop_agents(agents: Vec<common::Proc>) {
    for a in &agents {
        // SAFETY: signalling a child process we own.
        unsafe { libc::kill(a.0.id() as i32, libc::SIGTERM) };
    }
    for mut a in agents {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(a.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn node_ready(n: &Value) -> bool {
    n["spec"]["podCIDR"].is_string()
        && n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

async fn join(quick: bool) {
    let names: Vec<String> = (1..=if quick { 2 } else { 5 })
        .map(|i| format!("m{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (lan, machines, c, token_file) = cluster("vxlan", &refs).await;
    let mut times = Vec::new();
    let mut agents = Vec::new();
    for (name, m) in names.iter().zip(&machines) {
        let t = Instant::now();
        agents.push(agent(&c, m, name, &token_file));
        while !node_ready(&get(&c, &format!("/api/v1/nodes/{name}")).await) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "join: agent start to Node Ready with a pod CIDR, {} machines one after another: p50 {:.0} ms, max {:.0} ms",
        times.len(),
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 1.0)
    );
    stop_agents(agents);
    drop(c);
    drop(lan);
}

/// Runs `f` on a thread that joined the network namespace at `netns`.
fn in_netns<T: Send + 'static>(
    netns: &std::path::Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on an open namespace file moves only this thread, which does nothing else.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
}

/// A TCP server in the pod's namespace: connections whose first byte is `p` are ping-pong (echo each byte), others
/// are drained (bulk).
fn serve(netns: &std::path::Path, ip: String) {
    let _ = in_netns(netns, move || {
        let l = TcpListener::bind((ip.as_str(), 9000)).unwrap();
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 1 << 16];
                let mut first = [0u8; 1];
                if s.read_exact(&mut first).is_err() {
                    return;
                }
                if first[0] == b'p' {
                    let _ = s.write_all(&first);
                    while s.read_exact(&mut first).is_ok() {
                        if s.write_all(&first).is_err() {
                            return;
                        }
                    }
                } else {
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
            });
        }
    });
}

/// From the pod at `netns`: (round-trip latencies in µs, bulk Gbit/s) to `ip:9000`.
fn measure(netns: &std::path::Path, ip: String, rounds: usize, secs: f64) -> (Vec<f64>, f64) {
    in_netns(netns, move || {
        let mut s = TcpStream::connect((ip.as_str(), 9000)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [b'p'; 1];
        let mut lat = Vec::with_capacity(rounds);
        for _ in 0..rounds + 100 {
            let t = Instant::now();
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        lat.drain(..100);
        let mut bulk = TcpStream::connect((ip.as_str(), 9000)).unwrap();
        let chunk = vec![b'b'; 1 << 16];
        let t = Instant::now();
        let mut sent = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            bulk.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
        let gbits = sent as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9;
        (lat, gbits)
    })
    .join()
    .unwrap()
}

async fn pod_network(quick: bool) {
    for backend in ["vxlan", "host-gw"] {
        let (lan, machines, c, token_file) = cluster(backend, &["m1", "m2"]).await;
        let agents: Vec<common::Proc> = ["m1", "m2"]
            .iter()
            .zip(&machines)
            .map(|(n, m)| agent(&c, m, n, &token_file))
            .collect();
        for n in ["m1", "m2"] {
            while !node_ready(&get(&c, &format!("/api/v1/nodes/{n}")).await) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // A server pod and a client pod on m2, a client pod on m1: all just hold a network namespace.
        for (name, node) in [("server", "m2"), ("near", "m2"), ("far", "m1")] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "none", "command": ["sleep", "3600"]}]}});
            assert_eq!(post(&c, "/api/v1/namespaces/default/pods", &pod).await, 201);
        }
        let mut info = std::collections::HashMap::new();
        while info.len() < 3 {
            info.clear();
            for name in ["server", "near", "far"] {
                let p = get(&c, &format!("/api/v1/namespaces/default/pods/{name}")).await;
                if let (Some(ip), Some(uid)) =
                    (p["status"]["podIP"].as_str(), p["metadata"]["uid"].as_str())
                {
                    if p["status"]["phase"] == "Running" {
                        let ns = std::path::Path::new("/run/capstan/netns").join(uid);
                        info.insert(name, (ip.to_string(), ns));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (server_ip, server_ns) = info["server"].clone();
        serve(&server_ns, server_ip.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rounds = if quick { 2_000 } else { 20_000 };
        let secs = if quick { 1.0 } else { 3.0 };
        for (label, who) in [("same machine", "near"), ("across machines", "far")] {
            let (mut lat, gbits) = measure(&info[who].1, server_ip.clone(), rounds, secs);
            println!(
                "pod network ({backend}), pod to pod {label}: round trip p50 {:.0} µs p99 {:.0} µs ({rounds} 1-byte \
                 messages on one connection); one connection's bulk throughput {gbits:.2} Gbit/s",
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99)
            );
        }
        stop_agents(agents);
        drop(c);
        drop(lan);
    }
}

#[tokio::main]
async fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the machines benchmarks need root (network namespaces)");
        return;
    }
    let quick = std::env::var("CAPSTAN_BENCH_QUICK").is_ok();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("join") {
        join(quick).await;
    }
    if want("pod-network") {
        pod_network(quick).await;
    }
}
