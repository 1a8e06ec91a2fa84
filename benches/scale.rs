//! Scale (issue 20): one `capstan server` (release build) and one `capstan agent --simulate N` (hollow nodes: Nodes,
//! Leases, pods run as state), then P pods created by 64 clients over real HTTPS. Reports the time to create and bind
//! them all, the server's RSS per pod, LIST of every pod (unpaged and paged by 500, as kubectl pages), one pod update
//! delivered to 1,000 watchers, and the restart of the server on the data directory holding them.
//!
//! `cargo bench --bench scale` runs 150,000 pods on 5,000 nodes (about 10 minutes; several GB of memory);
//! `CAPSTAN_BENCH_QUICK=1` 15,000 pods on 500 nodes; `CAPSTAN_BENCH_PODS` and `CAPSTAN_BENCH_NODES` set either.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_secs, create_many, fan_out, pct, rss_kb, Capstan, Proc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

/// How many namespaces the pods are spread over.
const NAMESPACES: usize = 10;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The parts of a watch event this benchmark reads (serde skips the rest without building it).
#[derive(Deserialize)]
struct WatchEvent {
    object: PodLite,
}
#[derive(Deserialize)]
struct PodLite {
    metadata: MetaLite,
    #[serde(default)]
    spec: Option<SpecLite>,
    #[serde(default)]
    status: Option<StatusLite>,
}
#[derive(Deserialize)]
struct MetaLite {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}
#[derive(Deserialize)]
struct SpecLite {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}
#[derive(Deserialize)]
struct StatusLite {
    #[serde(default)]
    phase: Option<String>,
}

/// The continue token of a list page, read from its metadata alone (Capstan writes a list's metadata before its
/// items, so nothing after it is parsed).
fn continue_token(body: &[u8]) -> Option<String> {
    const META: &[u8] = b"\"metadata\":";
    let at = body.windows(META.len()).position(|w| w == META)? + META.len();
    let meta: ListMeta = serde_json::Deserializer::from_slice(&body[at..])
        .into_iter()
        .next()?
        .expect("a list's metadata");
    meta.cont
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "continue", default)]
    cont: Option<String>,
}

fn agent(c: &Capstan, nodes: usize) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("--data-dir")
            .arg(c.dir.path().join("agent"))
            .args(["agent", "--server", &c.url, "--token-file"])
            .arg(c.dir.path().join("token"))
            .arg("--certificate-authority")
            .arg(c.dir.path().join("ca.crt"))
            .args(["--node-name", "unused", "--simulate", &nodes.to_string()])
            .args([
                "--simulate-ready-after",
                "1",
                "--cpu",
                "32",
                "--memory",
                "128Gi",
            ])
            .args(["--max-pods", "110"])
            .env("CAPSTAN_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The bytes the data directory holds on disk.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir)
}

async fn ready_nodes(c: &Capstan) -> usize {
    let v = common::get(c, "/api/v1/nodes").await;
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

/// Reads a whole response body; its length.
async fn body_len(r: reqwest::Response) -> usize {
    let mut n = 0;
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        n += chunk.unwrap().len();
    }
    n
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("CAPSTAN_BENCH_QUICK").is_ok();
    let pods = env_or("CAPSTAN_BENCH_PODS", if quick { 15_000 } else { 150_000 });
    let nodes = env_or("CAPSTAN_BENCH_NODES", if quick { 500 } else { 5_000 });
    // A /11 gives 8,192 nodes a /24 each.
    let args = ["server", "--cluster-cidr", "10.32.0.0/11"];
    let c = common::start(&args).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kb(c.pid);
    println!(
        "scale: {pods} pods on {nodes} simulated nodes; server idle RSS {:.1} MB",
        idle as f64 / 1024.0
    );

    let t = Instant::now();
    let sim = agent(&c, nodes);
    loop {
        if ready_nodes(&c).await >= nodes {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "nodes not Ready in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_nodes = rss_kb(c.pid);
    println!(
        "{nodes} simulated nodes Ready {:.1} s after the agent started; server RSS {:.1} MB",
        t.elapsed().as_secs_f64(),
        with_nodes as f64 / 1024.0
    );
    for n in 0..NAMESPACES {
        let r = c
            .client
            .post(format!("{}/api/v1/namespaces", c.url))
            .header("Authorization", &c.auth)
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("scale-{n}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }

    // One watch of every pod counts bindings and Running pods as they happen.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, Instant)>();
    let watcher = {
        let r = c
            .client
            .get(format!("{}/api/v1/pods?watch=true", c.url))
            .header("Authorization", &c.auth)
            .send()
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut bound = std::collections::HashSet::new();
            let mut running = std::collections::HashSet::new();
            let mut body = r.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { return };
                buf.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
                    let line = &buf[start..start + i];
                    start += i + 1;
                    let Ok(ev) = serde_json::from_slice::<WatchEvent>(line) else {
                        continue;
                    };
                    let p = ev.object;
                    let key = format!("{}/{}", p.metadata.namespace, p.metadata.name);
                    if p.spec.and_then(|s| s.node_name).is_some() && bound.insert(key.clone()) {
                        let _ = tx.send((false, Instant::now()));
                    }
                    if p.status.and_then(|s| s.phase).as_deref() == Some("Running")
                        && running.insert(key)
                    {
                        let _ = tx.send((true, Instant::now()));
                    }
                }
                buf.drain(..start);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = cpu_secs(c.pid);
    let start = Instant::now();
    let create_rate = create_many(&c.client, &c.url, &c.auth, 64, pods, |i| {
        (
            format!("/api/v1/namespaces/scale-{}/pods", i % NAMESPACES),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i:06}"), "labels": {"app": format!("app-{}", i % 100)}},
                "spec": {"containers": [{"name": "c", "image": "app:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}),
        )
    })
    .await;
    let created = start.elapsed();
    let (mut bound, mut running) = (Vec::with_capacity(pods), Vec::with_capacity(pods));
    while bound.len() < pods || running.len() < pods {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
            Ok(Some((false, t))) => bound.push(t),
            Ok(Some((true, t))) => running.push(t),
            _ => break,
        }
    }
    watcher.abort();
    let since = |v: &Vec<Instant>| {
        v.last()
            .map(|t| t.duration_since(start))
            .unwrap_or_default()
    };
    println!(
        "created {pods} pods in {:.1} s ({create_rate:.0}/s, 64 clients); {} bound, the last {:.1} s after the first \
         create ({:.0} pods/s end to end); {} Running, the last at {:.1} s; server CPU {:.0} s",
        created.as_secs_f64(),
        bound.len(),
        since(&bound).as_secs_f64(),
        bound.len() as f64 / since(&bound).as_secs_f64().max(1e-9),
        running.len(),
        since(&running).as_secs_f64(),
        cpu_secs(c.pid) - cpu0,
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let full = rss_kb(c.pid);
    let disk = disk_bytes(c.dir.path());
    println!(
        "server RSS {:.1} MB with {pods} pods ({:.0} bytes per pod above the nodes' {:.1} MB); data directory {:.1} MB \
         on disk ({:.0} bytes per pod); simulated agent RSS {:.1} MB",
        full as f64 / 1024.0,
        (full.saturating_sub(with_nodes) * 1024) as f64 / pods as f64,
        with_nodes as f64 / 1024.0,
        disk as f64 / 1e6,
        disk as f64 / pods as f64,
        rss_kb(sim.0.id()) as f64 / 1024.0
    );

    // LIST of every pod, unpaged and paged by 500.
    let mut unpaged = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let r = c
            .client
            .get(format!("{}/api/v1/pods", c.url))
            .header("Authorization", &c.auth)
            .send()
            .await
            .unwrap();
        size = body_len(r).await;
        unpaged.push(t.elapsed().as_secs_f64());
    }
    let mut paged = Vec::new();
    let mut pages = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut cont = String::new();
        pages = 0;
        loop {
            let body = c
                .client
                .get(format!("{}/api/v1/pods?limit=500&continue={cont}", c.url))
                .header("Authorization", &c.auth)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            // Only the continue token is read: as the unpaged list's items are not parsed, neither are a page's.
            pages += 1;
            match continue_token(&body) {
                Some(next) if !next.is_empty() => cont = next,
                _ => break,
            }
        }
        paged.push(t.elapsed().as_secs_f64());
    }
    println!(
        "LIST of {pods} pods: unpaged {:.2} s median ({:.0} MB), paged by 500 {:.2} s median ({pages} pages)",
        pct(&mut unpaged, 0.5),
        size as f64 / 1e6,
        pct(&mut paged, 0.5)
    );

    // One pod update delivered to 1,000 watchers of that pod.
    let watchers = 1000;
    let target = concat!("/", "api/v1/namespaces/scale-0/pods/p000000");
    // From now (a list's resourceVersion): the pod's own is older than the watch history kept.
    let rv = common::get(&c, concat!("/", "api/v1/namespaces/scale-0/pods?limit=1")).await
        ["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watch_url = format!(
        "{}/api/v1/namespaces/scale-0/pods?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dp000000",
        c.url
    );
    let mut lat: Vec<f64> = fan_out(
        &c.client,
        &c.auth,
        &watch_url,
        watchers,
        b"MODIFIE",
        5,
        |round| {
            let req = c
                .client
                .patch(format!("{}{target}", c.url))
                .header("Authorization", &c.auth)
                .header("Content-Type", "application/merge-patch+json")
                .body(json!({"metadata": {"labels": {"round": round.to_string()}}}).to_string());
            async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        },
    )
    .await
    .concat();
    println!(
        "one pod update to {watchers} watchers at {pods} pods, 5 rounds ({} deliveries): p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99)
    );

    // Restart on the same data directory (kill -9, as a crash would).
    drop(sim);
    let Capstan {
        proc: server, dir, ..
    } = c;
    drop(server);
    let t = Instant::now();
    let c = common::start_in(dir, &args).await;
    let restart = t.elapsed();
    println!(
        "restart with {pods} pods stored: ready {:.2} s after start; RSS {:.1} MB",
        restart.as_secs_f64(),
        rss_kb(c.pid) as f64 / 1024.0
    );
}
