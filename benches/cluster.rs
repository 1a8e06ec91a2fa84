//! Cluster benchmarks on real `capstan` processes (release build), driven over real HTTPS:
//!
//! - `scheduler`: `capstan server` with 1,000 and 5,000 Node objects (no agents) and 10,000 pods; pods bound per second.
//! - `placement`: the scheduler's decision alone (filters, sampling, scores) for 10,000 pods on 1,000 and 5,000 nodes.
//! - `startup`: `capstan up`; create-to-Running latency of pods on the process runtime, one pod at a time.
//! - `startup-containerd`: the same on the containerd runtime (real containers of the image of this binary; needs
//!   root, a running containerd and `--features containerd`).
//! - `rollout`: `capstan up`; wall time of a 10-replica rolling update of the demo app (readiness probe every second).
//! - `idle`: `capstan up examples/repo`; RSS of the capstan process once the demo Deployment is available.
//! - `proxy`: `capstan up`, one demo-app pod behind a Service: latency and throughput through the ClusterIP against
//!   a direct connection, and the time from a pod turning Ready to its first request through the Service.
//! - `gitops`: `capstan up`, an Application on a local repository; commit-to-applied latency of 50 commits, then the
//!   time to sync one commit of 1,000 objects; webhook-to-applied latency for a remote; memory and idle CPU with 100
//!   Applications.
//!
//! - `node-failure`: `capstan server` (grace period 5 s) with two real agents, a 4-replica Deployment tolerating
//!   `unreachable` for 2 s; after `kill -9` of one agent, the time until its Node is Unknown and tainted, and until
//!   the Deployment has 4 available replicas again, all on the live node (target: grace + toleration + < 2 s).
//!
//! Run: `cargo bench --bench cluster` (all), or `cargo bench --bench cluster -- scheduler` (one);
//! `CAPSTAN_BENCH_QUICK=1` shrinks the loads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

mod common;
use common::{create_many, get, pct, rate, rss_kb, Capstan};

/// What a task needs to talk to the server.
#[derive(Clone)]
struct Conn {
    client: reqwest::Client,
    url: String,
    auth: String,
}

fn conn(c: &Capstan) -> Conn {
    Conn {
        client: c.client.clone(),
        url: c.url.clone(),
        auth: c.auth.clone(),
    }
}

/// Streams watch events of `path` (a list URL with `?watch=true...`) into `f` until it returns false.
async fn watch(c: &Conn, path: &str, mut f: impl FnMut(&str, &Value) -> bool) {
    let resp = c
        .client
        .get(format!("{}{path}", c.url))
        .header("Authorization", &c.auth)
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + i];
            start += i + 1;
            let Ok(ev) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if !f(ev["type"].as_str().unwrap_or(""), &ev["object"]) {
                return;
            }
        }
        buf.drain(..start);
    }
}

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

async fn scheduler(quick: bool) {
    let pods = if quick { 2_000 } else { 10_000 };
    for nodes in [1_000usize, 5_000] {
        let c = common::start(&["server"]).await;
        let client = c.client.clone();
        let (url, auth) = (c.url.clone(), c.auth.clone());
        rate(32, nodes, move |i| {
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            async move {
                let b = i / 256;
                let node = json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("sim-{i:05}"), "labels": {"kubernetes.io/hostname": format!("sim-{i:05}")}},
                    "spec": {"podCIDR": format!("10.{}.{}.0/24", 100 + b, i % 256)},
                    "status": {"capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                               "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]}});
                let r = client.post(format!("{url}/api/v1/nodes")).header("Authorization", auth)
                    .json(&node).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 201);
            }
        })
        .await;
        post(
            &c,
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Count bindings as they are observed.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let watcher = {
            let c2 = conn(&c);
            tokio::spawn(async move {
                let mut bound = std::collections::HashSet::new();
                let mut added = 0;
                let t0 = Instant::now();
                watch(&c2, "/api/v1/namespaces/bench/pods?watch=true", |ty, p| {
                    if ty == "ADDED" {
                        added += 1;
                        if added == pods {
                            eprintln!("bench watcher: all {added} ADDED after {:?}", t0.elapsed());
                        }
                    }
                    if p.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .is_some()
                    {
                        let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                        if bound.insert(name) {
                            let _ = tx.send(Instant::now());
                        }
                    }
                    bound.len() < pods
                })
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        let create_rate = create_many(&c.client, &c.url, &c.auth, 64, pods, |i| {
            (
                concat!("/", "api/v1/namespaces/bench/pods").to_string(),
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("p{i:05}")},
                    "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "1"],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}),
            )
        })
        .await;
        let created = start.elapsed();
        let mut times = Vec::with_capacity(pods);
        while times.len() < pods {
            match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
                Ok(Some(t)) => times.push(t),
                _ => break,
            }
        }
        watcher.abort();
        let last = times
            .last()
            .map(|t| t.duration_since(start))
            .unwrap_or_default();
        let first = times
            .first()
            .map(|t| t.duration_since(start))
            .unwrap_or_default();
        println!(
            "scheduler, {nodes} nodes, {pods} pods: {} bound; all created in {:.2} s ({create_rate:.0}/s), \
             all bound {:.2} s after the first create: {:.0} pods/s end to end, {:.0} pods/s from first to last bind; \
             server RSS {:.0} MB",
            times.len(),
            created.as_secs_f64(),
            last.as_secs_f64(),
            times.len() as f64 / last.as_secs_f64(),
            times.len() as f64 / (last - first).as_secs_f64().max(1e-9),
            rss_kb(c.pid) as f64 / 1024.0
        );
    }
}

/// The placement decision alone (filters, sampling, scores) - no API server, no binding.
fn placement() {
    use capstan::scheduler::{account, place_info, NodeInfo, NodeState, PodInfo};
    for nodes in [1_000usize, 5_000] {
        let infos: Vec<NodeInfo> = (0..nodes)
            .map(|i| {
                NodeInfo::new(&serde_json::from_value(json!({"metadata": {"name": format!("sim-{i:05}"), "labels": {"zone": format!("z{}", i % 3)}},
                    "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]}})).unwrap())
            })
            .collect();
        let mut state: HashMap<String, NodeState> = HashMap::new();
        let mut start = 0;
        let pods = 10_000;
        let t = Instant::now();
        for i in 0..pods {
            let pod: capstan::api::core::Pod = serde_json::from_value(json!({"metadata": {"name": format!("p{i}"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                        "uid": format!("rs{}", i % 50), "controller": true}]},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}))
            .unwrap();
            let node = place_info(&PodInfo::new(&pod), &infos, &state, &mut start).unwrap();
            account(state.entry(node).or_default(), &pod);
        }
        println!(
            "placement decisions, {nodes} nodes: {:.0} pods/s ({pods} pods)",
            pods as f64 / t.elapsed().as_secs_f64()
        );
    }
}

async fn up(extra: &[&str]) -> Capstan {
    let mut args = vec!["up", "--no-repo", "--node-name", "bench"];
    args.extend_from_slice(extra);
    let c = common::start(&args).await;
    // Wait for the node to be Ready with its pod CIDR.
    loop {
        let r = c
            .client
            .get(format!("{}/api/v1/nodes/bench", c.url))
            .header("Authorization", &c.auth)
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            let n: Value = r.json().await.unwrap();
            if n.pointer("/spec/podCIDR").is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c
}

async fn startup(quick: bool, containerd: bool) {
    let n = match (quick, containerd) {
        (true, _) => 30,
        (false, false) => 200,
        (false, true) => 100,
    };
    // More pods than the default 110 per node.
    // CAPSTAN_BENCH_NETWORK=host|bridge picks the pod network (default: bridge as root, else host).
    let network = std::env::var("CAPSTAN_BENCH_NETWORK").unwrap_or_else(|_| "auto".into());
    let mut args = vec!["--max-pods", "1000", "--network", &network];
    if containerd {
        args.extend(["--runtime", "containerd"]);
    }
    let c = up(&args).await;
    let container = if containerd {
        json!({"name": "c", "image": "capstan.local/capstan:0.1.0", "command": ["capstan", "demo-app"]})
    } else {
        json!({"name": "c", "image": "x", "command": ["sleep", "3600"]})
    };
    let runtime = if containerd { "containerd" } else { "process" };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let w = conn(&c);
    let watcher = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        watch(&w, "/api/v1/namespaces/default/pods?watch=true", |_, p| {
            if p.pointer("/status/phase") == Some(&json!("Running")) {
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                if seen.insert(name.clone()) {
                    let _ = tx.send((name, Instant::now()));
                }
            }
            true
        })
        .await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lat = Vec::new();
    for i in 0..n {
        let name = format!("s{i:04}");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [container.clone()]}});
        let t = Instant::now();
        assert_eq!(post(&c, "/api/v1/namespaces/default/pods", &pod).await, 201);
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("pod Running within 30 s")
                .unwrap();
            if got == name {
                lat.push(at.duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    watcher.abort();
    println!(
        "create-to-Running on the {runtime} runtime, {n} pods one at a time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat.clone(), 0.99),
        pct(&mut lat, 1.0)
    );
    let _ = c
        .client
        .delete(format!("{}/api/v1/namespaces/default/pods", c.url))
        .header("Authorization", &c.auth)
        .send()
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(c).await;
}

/// Stops a `capstan up` with SIGTERM so it stops its pods.
async fn stop(c: Capstan) {
    let mut c = c;
    // SAFETY: signals the child process this benchmark started.
    unsafe { libc::kill(c.pid as i32, libc::SIGTERM) };
    for _ in 0..300 {
        if let Ok(Some(_)) = c.proc.0.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rolled_out(d: &Value, replicas: i64) -> bool {
    let s = &d["status"];
    d["metadata"]["generation"] == s["observedGeneration"]
        && s["updatedReplicas"] == replicas
        && s["replicas"] == replicas
        && s["availableReplicas"] == replicas
}

async fn rollout(_quick: bool) {
    let c = up(&[]).await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "demo"},
        "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "demo"}},
          "template": {"metadata": {"labels": {"app": "demo"}}, "spec": {"terminationGracePeriodSeconds": 5,
            "containers": [{"name": "demo", "image": "capstan/demo-app", "command": ["capstan", "demo-app"],
              "env": [{"name": "VERSION", "value": "v1"}], "ports": [{"name": "http", "containerPort": 8080}],
              "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}}]}}}});
    let t = Instant::now();
    assert_eq!(
        post(&c, "/apis/apps/v1/namespaces/default/deployments", &deploy).await,
        201
    );
    while !rolled_out(
        &get(&c, "/apis/apps/v1/namespaces/default/deployments/demo").await,
        10,
    ) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = t.elapsed();
    let t = Instant::now();
    let r = c
        .client
        .patch(format!("{}/apis/apps/v1/namespaces/default/deployments/demo", c.url))
        .header("Authorization", &c.auth)
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(json!({"spec": {"template": {"spec": {"containers": [{"name": "demo", "env": [{"name": "VERSION", "value": "v2"}]}]}}}}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    while !rolled_out(
        &get(&c, "/apis/apps/v1/namespaces/default/deployments/demo").await,
        10,
    ) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let roll = t.elapsed();
    println!(
        "10-replica Deployment of the demo app (readiness probe every 1 s, maxSurge/maxUnavailable 25%): \
         first rollout {:.2} s, rolling update {:.2} s",
        first.as_secs_f64(),
        roll.as_secs_f64()
    );
    stop(c).await;
}

fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn idle(_quick: bool) {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/repo");
    let c = common::start(&["up", repo, "--node-name", "bench"]).await;
    loop {
        let d = get(&c, "/apis/apps/v1/namespaces/demo/deployments/hello").await;
        if d["status"]["availableReplicas"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = rss_kb(c.pid);
    // The containers' own processes (shims and demo apps), for the whole picture.
    let mut others: HashMap<&str, (usize, u64)> = HashMap::new();
    let data = c.dir.path().display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let what = if cmd.contains(" shim ") && cmd.contains(&data) {
            "shim"
        } else if cmd.ends_with("demo-app ")
            && std::fs::read_to_string(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .contains("POD_NAMESPACE=demo")
        {
            "demo-app"
        } else {
            continue;
        };
        let e = others.entry(what).or_default();
        e.0 += 1;
        e.1 += pss_kb(pid);
    }
    println!(
        "idle `capstan up examples/repo` with the demo running: capstan RSS {:.1} MB (PSS {:.1} MB); \
         {} shims PSS {:.1} MB in all; {} demo-app containers PSS {:.1} MB in all",
        rss as f64 / 1024.0,
        pss_kb(c.pid) as f64 / 1024.0,
        others.get("shim").map_or(0, |x| x.0),
        others.get("shim").map_or(0, |x| x.1) as f64 / 1024.0,
        others.get("demo-app").map_or(0, |x| x.0),
        others.get("demo-app").map_or(0, |x| x.1) as f64 / 1024.0,
    );
    stop(c).await;
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn gitops(quick: bool) {
    let c = up(&[]).await;
    let repo = tempfile::tempdir().unwrap();
    let app_dir = repo.path().join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let cm = |v: usize| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench\ndata:\n  V: \"{v}\"\n")
    };
    std::fs::write(app_dir.join("cm.yaml"), cm(0)).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "0"]);
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"source": {"repoURL": repo.path().display().to_string(), "path": "app"}}});
    assert_eq!(
        post(
            &c,
            "/apis/gitops.capstan.io/v1/namespaces/default/applications",
            &app
        )
        .await,
        201
    );
    while get(
        &c,
        "/apis/gitops.capstan.io/v1/namespaces/default/applications/bench",
    )
    .await["status"]["sync"]["status"]
        != "Synced"
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let w = conn(&c);
    let watcher = tokio::spawn(async move {
        watch(
            &w,
            "/api/v1/namespaces/default/configmaps?watch=true&fieldSelector=metadata.name%3Dbench",
            |_, o| {
                if let Some(v) = o["data"]["V"].as_str() {
                    let _ = tx.send((v.to_string(), Instant::now()));
                }
                true
            },
        )
        .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rounds = if quick { 10 } else { 50 };
    let mut lat = Vec::new();
    for i in 1..=rounds {
        std::fs::write(app_dir.join("cm.yaml"), cm(i)).unwrap();
        git(repo.path(), &["add", "-A"]);
        // From starting `git commit` (so git's own few milliseconds are included) to the change in the cluster.
        let t = Instant::now();
        git(repo.path(), &["commit", "-q", "-m", &i.to_string()]);
        loop {
            let (v, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("applied within 30 s")
                .unwrap();
            if v == i.to_string() {
                lat.push(at.saturating_duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    println!(
        "gitops commit-to-applied, local repository, {rounds} commits: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat.clone(), 0.99),
        pct(&mut lat, 1.0)
    );
    // Commit to Healthy of a rollout: a Deployment of 10 replicas, then commits changing its pod template; from
    // `git commit` to the app Healthy at that commit (every new pod running and available, the old ones gone).
    let deploy = |v: usize| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ten\nspec:\n  replicas: 10\n  \
             selector:\n    matchLabels: {{app: ten}}\n  template:\n    metadata:\n      labels: {{app: ten}}\n    \
             spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: none\n        \
             command: [\"sleep\", \"3600\"]\n        env:\n        - {{name: V, value: \"{v}\"}}\n"
        )
    };
    let healthy_at = |head: String| {
        let c = &c;
        async move {
            let t = Instant::now();
            loop {
                let a = get(
                    c,
                    "/apis/gitops.capstan.io/v1/namespaces/default/applications/bench",
                )
                .await;
                if a["status"]["sync"]["revision"] == head.as_str()
                    && a["status"]["health"]["status"] == "Healthy"
                {
                    return;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "not Healthy: {}",
                    a["status"]
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let head_of = |dir: &std::path::Path| {
        String::from_utf8(
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["rev-parse", "HEAD"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };
    std::fs::write(app_dir.join("ten.yaml"), deploy(0)).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "ten"]);
    healthy_at(head_of(repo.path())).await;
    let mut rollouts = Vec::new();
    for v in 1..=(if quick { 1 } else { 5 }) {
        std::fs::write(app_dir.join("ten.yaml"), deploy(v)).unwrap();
        git(repo.path(), &["add", "-A"]);
        let t = Instant::now();
        git(repo.path(), &["commit", "-q", "-m", &format!("ten v{v}")]);
        healthy_at(head_of(repo.path())).await;
        rollouts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "gitops commit-to-Healthy of a 10-replica rolling update (process runtime), {} commits: p50 {:.0} ms, max {:.0} ms",
        rollouts.len(),
        pct(&mut rollouts.clone(), 0.5),
        pct(&mut rollouts, 1.0)
    );
    // One commit of 1,000 objects.
    let n = if quick { 200 } else { 1000 };
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: many-{i:04}\ndata:\n  I: \"{i}\"\n"));
    }
    std::fs::write(app_dir.join("many.yaml"), text).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "many"]);
    let t = Instant::now();
    let head = String::from_utf8(
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    loop {
        let a = get(
            &c,
            "/apis/gitops.capstan.io/v1/namespaces/default/applications/bench",
        )
        .await;
        if a["status"]["lastSyncedRevision"] == head.trim() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "not synced: {}",
            a["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "gitops: one commit of {} objects synced (checked, applied) in {:.2} s; server RSS {:.1} MB",
        n + 1,
        t.elapsed().as_secs_f64(),
        rss_kb(c.pid) as f64 / 1024.0
    );
    stop(c).await;
}

/// Waits until the Application `name` in default reports `revision` (or any revision, when empty) synced.
async fn synced(c: &Capstan, name: &str, revision: &str) {
    let t = Instant::now();
    loop {
        let a = get(
            c,
            &format!("/apis/gitops.capstan.io/v1/namespaces/default/applications/{name}"),
        )
        .await;
        let rev = a["status"]["lastSyncedRevision"].as_str().unwrap_or("");
        if !rev.is_empty() && (revision.is_empty() || rev == revision) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{name} not synced: {}",
            a["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A remote (a bare repository reached by `file://`, polled only hourly) driven by push webhooks: from the webhook
/// POST to the change in the cluster.
async fn gitops_remote(quick: bool) {
    let c = up(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let upstream = root.path().join("upstream.git");
    git(
        root.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            upstream.to_str().unwrap(),
        ],
    );
    let work = root.path().join("work");
    std::fs::create_dir_all(work.join("app")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        &work,
        &["remote", "add", "origin", upstream.to_str().unwrap()],
    );
    let cm = |v: usize| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: remote\ndata:\n  V: \"{v}\"\n")
    };
    std::fs::write(work.join("app/cm.yaml"), cm(0)).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "0"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let url = format!("file://{}", upstream.display());
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "remote", "namespace": "default"},
        "spec": {"source": {"repoURL": url, "path": "app"}, "interval": "1h"}});
    assert_eq!(
        post(
            &c,
            "/apis/gitops.capstan.io/v1/namespaces/default/applications",
            &app
        )
        .await,
        201
    );
    synced(&c, "remote", "").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let w = conn(&c);
    let watcher = tokio::spawn(async move {
        watch(
            &w,
            "/api/v1/namespaces/default/configmaps?watch=true&fieldSelector=metadata.name%3Dremote",
            |_, o| {
                if let Some(v) = o["data"]["V"].as_str() {
                    let _ = tx.send((v.to_string(), Instant::now()));
                }
                true
            },
        )
        .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rounds = if quick { 10 } else { 30 };
    let mut lat = Vec::new();
    let hook = json!({"repoURL": url});
    // Webhooks are signed with the secret the server made at first start.
    let secret = get(
        &c,
        concat!("/", "api/v1/namespaces/kube-system/secrets/capstan-webhook"),
    )
    .await;
    let secret = capstan::api::tokens::secret_data(&secret, "secret").expect("the webhook secret");
    let body = hook.to_string();
    let signature = capstan::apiserver::webhook::sign(body.as_bytes(), secret.as_bytes());
    for i in 1..=rounds {
        std::fs::write(work.join("app/cm.yaml"), cm(i)).unwrap();
        git(&work, &["commit", "-q", "-am", &i.to_string()]);
        git(&work, &["push", "-q", "origin", "main"]);
        let t = Instant::now();
        let sent = c
            .client
            .post(format!("{}/hooks/git", c.url))
            .header("Content-Type", "application/json")
            .header("X-Capstan-Signature", &signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status().as_u16(), 200);
        loop {
            let (v, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("applied within 30 s")
                .unwrap();
            if v == i.to_string() {
                lat.push(at.saturating_duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    println!(
        "gitops webhook-to-applied, remote (file://, fetched on the webhook), {rounds} pushes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat.clone(), 0.99),
        pct(&mut lat, 1.0)
    );
    stop(c).await;
}

/// 100 Applications (`CAPSTAN_BENCH_APPS=N` for another number), each following its own local repository (a
/// ConfigMap and a Deployment of one `sleep` pod): the server's memory once all are synced and idle, and the CPU the
/// idle apps cost.
async fn gitops_apps(quick: bool) {
    let c = up(&[]).await;
    let root = tempfile::tempdir().unwrap();
    // CAPSTAN_BENCH_APPS=N sets the number of applications (default 100; 20 when quick).
    let n = std::env::var("CAPSTAN_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20 } else { 100 });
    // CAPSTAN_BENCH_APPS_DIRECT=1: the same objects without GitOps, to tell GitOps' share of the idle cost.
    let direct = std::env::var("CAPSTAN_BENCH_APPS_DIRECT").is_ok_and(|v| v == "1");
    // CAPSTAN_BENCH_APPS_REPLICAS=0: Deployments without pods (1,000 apps without 1,000 processes on this machine).
    let replicas: i64 = std::env::var("CAPSTAN_BENCH_APPS_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rss_before = rss_kb(c.pid);
    for i in 0..n {
        let dir = root.path().join(format!("repo-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(
            dir.join("app.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{i}\ndata:\n  I: \"{i}\"\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\nspec:\n  replicas: {replicas}\n  \
                 selector:\n    matchLabels: {{app: app-{i}}}\n  template:\n    metadata:\n      labels: {{app: app-{i}}}\n    \
                 spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: none\n        \
                 command: [\"sleep\", \"3600\"]\n"
            ),
        )
        .unwrap();
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "first"]);
        if direct {
            // The baseline: the same objects created directly, no Applications.
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("app-{i}")},
                "data": {"I": i.to_string()}});
            let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("app-{i}")},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "none",
                            "command": ["sleep", "3600"]}]}}}});
            assert_eq!(
                post(
                    &c,
                    concat!("/api", "/v1/namespaces/default/configmaps"),
                    &cm
                )
                .await,
                201
            );
            assert_eq!(
                post(
                    &c,
                    concat!("/apis", "/apps/v1/namespaces/default/deployments"),
                    &d
                )
                .await,
                201
            );
            continue;
        }
        let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
            "metadata": {"name": format!("app-{i}"), "namespace": "default"},
            "spec": {"source": {"repoURL": dir.display().to_string()}}});
        assert_eq!(
            post(
                &c,
                "/apis/gitops.capstan.io/v1/namespaces/default/applications",
                &app
            )
            .await,
            201
        );
    }
    let t = Instant::now();
    for i in 0..n {
        if !direct {
            synced(&c, &format!("app-{i}"), "").await;
        }
    }
    let all_synced = t.elapsed().as_secs_f64();
    // Idle means idle: every Deployment available (its pod started by the node agent), then 10 s more.
    let started = Instant::now();
    loop {
        let list = get(&c, "/apis/apps/v1/namespaces/default/deployments").await;
        let ready = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|d| d["status"]["availableReplicas"].as_i64() == Some(1))
                    .count()
            })
            .unwrap_or(0);
        if ready >= n || replicas == 0 || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_available = started.elapsed().as_secs_f64() + all_synced;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // CAPSTAN_BENCH_APPS_IDLE=SECS: a longer idle window (default 20 s), e.g. to profile it.
    let window: u64 = std::env::var("CAPSTAN_BENCH_APPS_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("idle window of {window} s begins (server pid {})", c.pid);
    let cpu0 = cpu_seconds(c.pid);
    // The window in quarters too: the first look at every app falls in the first minutes, so the later quarters
    // show what idle costs once that round has passed.
    let quarter = Duration::from_secs_f64(window as f64 / 4.0);
    let mut last = cpu0;
    let mut quarters = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(quarter).await;
        let now = cpu_seconds(c.pid);
        quarters.push(format!(
            "{:.1}%",
            (now - last) / quarter.as_secs_f64() * 100.0
        ));
        last = now;
    }
    let cpu = (cpu_seconds(c.pid) - cpu0) / window as f64 * 100.0;
    println!(
        "idle CPU by quarter of the window: {}",
        quarters.join(" / ")
    );
    println!(
        "gitops with {n} applications{} ({n} repositories, {n} Deployments of {replicas} pod): all synced {all_synced:.2} s after the last was created, \
         all available {all_available:.1} s; \
         server RSS {:.1} MB (before them: {:.1} MB); idle CPU {cpu:.1}% of one core",
        if direct { " (baseline: the objects created directly, no Applications)" } else { "" },
        rss_kb(c.pid) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
    stop(c).await;
}

/// HTTP GETs of `url` by `clients` concurrent keep-alive clients for `secs`: requests per second.
async fn http_rate(url: &str, clients: usize, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                if http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs as f64
}

/// Latencies (ms) of `n` sequential GETs of `url`, each on a new connection.
async fn http_latency(url: &str, n: usize) -> Vec<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        http.get(url).send().await.unwrap().bytes().await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

/// The service proxy against a direct connection to the pod, and how soon a pod that turns Ready gets traffic.
async fn proxy(quick: bool) {
    let c = up(&[]).await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": "demo", "command": ["capstan", "demo-app"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}}]}}}});
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}});
    assert_eq!(
        post(&c, "/apis/apps/v1/namespaces/default/deployments", &deploy).await,
        201
    );
    assert_eq!(
        post(&c, "/api/v1/namespaces/default/services", &svc).await,
        201
    );
    let ready = |items: &Value| -> Vec<(String, String)> {
        items["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                }) && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let first = loop {
        let r = ready(
            &get(
                &c,
                "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            )
            .await,
        );
        if let Some(p) = r.into_iter().next() {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ip = get(&c, "/api/v1/namespaces/default/services/web").await["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let direct = format!("http://{}:8080/", first.1);
    let proxied = format!("http://{ip}:8080/");
    while reqwest::get(&proxied).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = if quick { 200 } else { 1000 };
    let mut d = http_latency(&direct, n).await;
    let mut p = http_latency(&proxied, n).await;
    let (d50, p50) = (pct(&mut d, 0.5), pct(&mut p, 0.5));
    println!(
        "proxy latency, {n} requests each on a new connection: direct p50 {d50:.3} ms p99 {:.3} ms; through the ClusterIP p50 {p50:.3} ms p99 {:.3} ms (+{:.3} ms, x{:.2})",
        pct(&mut d, 0.99),
        pct(&mut p, 0.99),
        p50 - d50,
        p50 / d50
    );
    let secs = if quick { 2 } else { 5 };
    let rd = http_rate(&direct, 16, secs).await;
    let rp = http_rate(&proxied, 16, secs).await;
    println!(
        "proxy throughput, 16 keep-alive clients for {secs} s: direct {rd:.0} req/s, through the ClusterIP {rp:.0} req/s (ratio {:.2})",
        rp / rd
    );
    // Ready to traffic: scale up by one, see the new pod Ready, then request through the Service until it answers.
    let rounds = if quick { 3 } else { 10 };
    let mut lat = Vec::new();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for round in 0..rounds {
        let scale = json!({"spec": {"replicas": 2}});
        c.client
            .patch(format!(
                "{}/apis/apps/v1/namespaces/default/deployments/web",
                c.url
            ))
            .header("Authorization", &c.auth)
            .header("Content-Type", "application/merge-patch+json")
            .body(scale.to_string())
            .send()
            .await
            .unwrap();
        let (newcomer, seen) = loop {
            let r = ready(
                &get(
                    &c,
                    "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
                )
                .await,
            );
            if let Some(p) = r.into_iter().find(|p| p.0 != first.0) {
                break (p.0, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        loop {
            if let Ok(r) = http.get(&proxied).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["pod"] == newcomer.as_str() {
                        break;
                    }
                }
            }
            assert!(
                seen.elapsed() < Duration::from_secs(30),
                "round {round}: no traffic"
            );
        }
        lat.push(seen.elapsed().as_secs_f64() * 1000.0);
        // Back to one: delete the newcomer's ReplicaSet replica by scaling down.
        let scale = json!({"spec": {"replicas": 1}});
        c.client
            .patch(format!(
                "{}/apis/apps/v1/namespaces/default/deployments/web",
                c.url
            ))
            .header("Authorization", &c.auth)
            .header("Content-Type", "application/merge-patch+json")
            .body(scale.to_string())
            .send()
            .await
            .unwrap();
        loop {
            let pods = get(
                &c,
                "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            )
            .await;
            if pods["items"].as_array().map_or(0, Vec::len) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "pod Ready (seen by a watcher) to its first request through the Service, {rounds} rounds: p50 {:.1} ms, max {:.1} ms",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 1.0)
    );
    stop(c).await;
}

/// Time from a node's death to its pods running elsewhere.
async fn node_failure(_quick: bool) {
    let c = common::start(&["server", "--node-monitor-grace-period", "5s"]).await;
    let token_file = c.dir.path().join("token");
    let agent = |name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("--data-dir")
            .arg(c.dir.path().join("agents"))
            .args(["agent", "--server", &c.url, "--token-file"])
            .arg(&token_file)
            .arg("--certificate-authority")
            .arg(c.dir.path().join("ca.crt"))
            .args([
                "--node-name",
                name,
                "--node-lease-duration",
                "2s",
                "--cpu",
                "4",
            ])
            .env("CAPSTAN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = agent("alive");
    let mut b = agent("doomed");
    let ready = |n: &Value| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    loop {
        let nodes = get(&c, "/api/v1/nodes").await;
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2
            && items
                .iter()
                .all(|n| ready(n) && n["spec"]["podCIDR"].is_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
          "template": {"metadata": {"labels": {"app": "spread"}}, "spec": {"terminationGracePeriodSeconds": 1,
            "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
              "effect": "NoExecute", "tolerationSeconds": 2}],
            "containers": [{"name": "c", "image": "none", "command": ["sleep", "3600"]}]}}}});
    assert_eq!(
        post(&c, "/apis/apps/v1/namespaces/default/deployments", &deploy).await,
        201
    );
    let path = "/apis/apps/v1/namespaces/default/deployments/spread";
    while !rolled_out(&get(&c, path).await, 4) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods = get(
        &c,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dspread",
    )
    .await;
    let on_doomed = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["nodeName"] == "doomed")
        .count();
    assert!(on_doomed > 0, "the replicas must spread over both nodes");
    let t = Instant::now();
    let _ = b.kill();
    let _ = b.wait();
    let mut unknown = None;
    loop {
        let n = get(&c, "/api/v1/nodes/doomed").await;
        let tainted = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute");
        if unknown.is_none() && tainted {
            unknown = Some(t.elapsed());
        }
        let pods = get(
            &c,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dspread",
        )
        .await;
        let live: Vec<Value> = pods["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let moved = live.len() == 4 && live.iter().all(|p| p["spec"]["nodeName"] == "alive");
        if unknown.is_some() && moved && rolled_out(&get(&c, path).await, 4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = t.elapsed();
    println!(
        "node failure (grace 5 s, toleration 2 s): node Unknown and tainted {:.2} s after kill -9; \
         4 replicas available on the other node ({on_doomed} moved) {:.2} s after (grace + toleration + {:.2} s)",
        unknown.unwrap_or_default().as_secs_f64(),
        back.as_secs_f64(),
        back.as_secs_f64() - 7.0
    );
    let _ = a.kill();
    let _ = a.wait();
    stop(c).await;
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("CAPSTAN_BENCH_QUICK").is_ok();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("idle") {
        idle(quick).await;
    }
    if want("startup") {
        startup(quick, false).await;
    }
    if which.iter().any(|w| w == "startup-containerd") {
        startup(quick, true).await;
    }
    if want("gitops") {
        gitops(quick).await;
        gitops_remote(quick).await;
    }
    if want("gitops") || want("apps") {
        gitops_apps(quick).await;
    }
    if want("rollout") {
        rollout(quick).await;
    }
    if want("proxy") {
        proxy(quick).await;
    }
    if want("placement") {
        placement();
    }
    if want("scheduler") {
        scheduler(quick).await;
    }
    if want("node-failure") {
        node_failure(quick).await;
    }
}
