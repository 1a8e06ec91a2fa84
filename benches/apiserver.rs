//! API server benchmarks through real HTTPS against a real `capstan server` process (and, when `etcd` is on PATH,
//! raw etcd puts through its JSON gateway at the same concurrency, for comparison).
//!
//! Run: `cargo bench --bench apiserver` (set `CAPSTAN_BENCH_QUICK=1` for a short run). With the etcd store:
//! `CAPSTAN_BENCH_STORE=etcd cargo bench --features etcd --bench apiserver` (the raw puts then go to the same etcd).

use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::{create_many, etcd_on_path, fan_out, pct, rate, rss_kb, start_etcd};

#[tokio::main]
async fn main() {
    let quick = std::env::var("CAPSTAN_BENCH_QUICK").is_ok();
    let scale = if quick { 4 } else { 1 };
    // `CAPSTAN_BENCH_STORE=etcd` (with `--features etcd`): the server keeps its objects in a real etcd, which the raw
    // puts below then use too.
    let store_etcd = match std::env::var("CAPSTAN_BENCH_STORE").as_deref() {
        Ok("etcd") => Some(start_etcd(&etcd_on_path().expect("etcd on PATH")).await),
        _ => None,
    };
    let store_arg = store_etcd
        .as_ref()
        .map(|(_, u)| format!("etcd://{}", u.trim_start_matches("http://")));
    let mut args = vec!["server"];
    if let Some(a) = &store_arg {
        args.extend(["--store", a.as_str()]);
        println!("store: {a}");
    }
    let started = Instant::now();
    let server = common::start(&args).await;
    let (url, pid, c) = (server.url.clone(), server.pid, server.client.clone());
    let token = server.token.clone();
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kb(pid);
    println!(
        "capstan server: ready {:.0} ms after exec; idle RSS {:.1} MB",
        ready.as_secs_f64() * 1000.0,
        idle_rss as f64 / 1024.0
    );

    let auth = format!("Bearer {}", token.trim());
    // Creates per second.
    let mut creates = Vec::new();
    for conc in [1usize, 16, 64] {
        let total = match conc {
            1 => 1000 / scale,
            16 => 4000 / scale,
            _ => 8000 / scale,
        };
        let r = create_many(&c, &url, &auth, conc, total, move |i| {
            (
                concat!("/", "api/v1/namespaces/default/configmaps").to_string(),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{conc}-{i}")}, "data": {"k": "v"}}),
            )
        })
        .await;
        println!("creates/s with {conc:>2} clients: {r:.0}");
        creates.push(r);
    }

    // Get latency.
    let mut lat = Vec::new();
    for _ in 0..(2000 / scale) {
        let t = Instant::now();
        let r = c
            .get(format!("{url}/api/v1/namespaces/default/configmaps/c1-0"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "get: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99)
    );

    // List of 10,000 pods.
    let pods = 10_000 / scale;
    c.post(format!("{url}/api/v1/namespaces"))
        .header("Authorization", &auth)
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
        .send()
        .await
        .unwrap();
    create_many(&c, &url, &auth, 64, pods, |i| {
        (
            concat!("/", "api/v1/namespaces/bench/pods").to_string(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}),
        )
    })
    .await;
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = c
            .get(format!("{url}/api/v1/namespaces/bench/pods"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        let b = r.bytes().await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(b.len() > pods * 100);
    }
    println!(
        "list of {pods} pods: p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99)
    );

    // One event to 1,000 watchers, five times (each round is one write seen by every watcher).
    let watchers = 1000 / scale;
    let rounds = 5;
    let rv: serde_json::Value = c
        .get(format!(
            "{url}/api/v1/namespaces/default/configmaps?limit=1"
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rv = rv["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watch_url = format!(
        "{url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dwatched"
    );
    let per_round = fan_out(&c, &auth, &watch_url, watchers, b"watched", rounds, |round| {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"},
            "data": {"round": round.to_string()}});
        let req = if round == 0 {
            c.post(format!("{url}/api/v1/namespaces/default/configmaps"))
        } else {
            c.put(format!("{url}/api/v1/namespaces/default/configmaps/watched"))
        };
        let req = req.header("Authorization", &auth).json(&body);
        async move {
            req.send().await.unwrap();
        }
    })
    .await;
    for (round, this) in per_round.iter().enumerate() {
        println!(
            "  round {round}: p50 {:.1} ms, max {:.1} ms",
            pct(&mut this.clone(), 0.5),
            pct(&mut this.clone(), 1.0)
        );
    }
    let mut lat: Vec<f64> = per_round.concat();
    println!(
        "one event to {watchers} watchers, {rounds} rounds ({} deliveries): p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99)
    );
    println!(
        "capstan server RSS after the run: {:.1} MB",
        rss_kb(pid) as f64 / 1024.0
    );

    // Raw etcd for comparison.
    let etcd = etcd_on_path();
    match etcd {
        None => println!("etcd: not on PATH; skipping the comparison"),
        Some(etcd) => {
            let started_here;
            let eurl = match &store_etcd {
                Some((_, u)) => u.clone(),
                None => {
                    started_here = start_etcd(&etcd).await;
                    started_here.1.clone()
                }
            };
            let ec = reqwest::Client::new();
            use base64::Engine;
            for (idx, conc) in [1usize, 16, 64].into_iter().enumerate() {
                let total = match conc {
                    1 => 1000 / scale,
                    16 => 4000 / scale,
                    _ => 8000 / scale,
                };
                let (ec2, eurl2) = (ec.clone(), eurl.clone());
                let r = rate(conc, total, move |i| {
                    let (ec, eurl) = (ec2.clone(), eurl2.clone());
                    async move {
                        let b64 = base64::engine::general_purpose::STANDARD;
                        let body = json!({"key": b64.encode(format!("/bench/{conc}/{i}")), "value": b64.encode("{\"k\":\"v\"}")});
                        let r = ec.post(format!("{eurl}/v3/kv/put")).json(&body).send().await.unwrap();
                        assert!(r.status().is_success());
                    }
                })
                .await;
                println!("etcd puts/s with {conc:>2} clients: {r:.0} (capstan creates/s: {:.0}, ratio {:.2}x)", creates[idx], creates[idx] / r);
            }
        }
    }
}
