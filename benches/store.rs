//! Store hygiene and availability benchmarks (issue 17):
//!
//! 1. the embedded store's file size through 1,000,000 updates of 1,000 objects of 1 KiB (16 concurrent writers),
//!    sampled every 100,000 updates, and after the next open (which gives freed space back when the file holds
//!    more than twice its live data plus 64 MiB);
//! 2. restart time with 100,000 objects: opening the embedded store, and a real `capstan server` on that data
//!    directory until `/readyz` answers;
//! 3. with `--features etcd` and `etcd` on PATH: leader failover - two `capstan server`s on one etcd with the default
//!    15 s lease, the leader killed with SIGKILL, time until the other holds the lease and until a Deployment
//!    created after the kill has its ReplicaSet.
//!
//! Run: `cargo bench --bench store` (`CAPSTAN_BENCH_QUICK=1`: 200,000 updates and 20,000 objects);
//! `cargo bench --features etcd --bench store` adds the failover measurement.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan::store::embedded::Embedded;
use capstan::store::Store;

mod common;

fn quick() -> bool {
    std::env::var("CAPSTAN_BENCH_QUICK").is_ok()
}

/// The bytes the store keeps on disk: the database file and its write-ahead log segments.
fn on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("store."))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn growth() {
    let updates: usize = if quick() { 200_000 } else { 1_000_000 };
    let objects = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = Arc::new(Embedded::open(&path).unwrap());
    let value = vec![b'x'; 1024];
    for i in 0..objects {
        store
            .create(
                &format!("/registry/configmaps/default/cm-{i:04}"),
                value.clone(),
            )
            .await
            .unwrap();
    }
    println!(
        "embedded store size through {updates} updates of {objects} objects of 1 KiB (16 writers):"
    );
    println!("| updates | store.redb + WAL | updates/s (last 100,000) |");
    println!("|---|---|---|");
    println!("| 0 | {:.1} MB | - |", mb(on_disk(dir.path())));
    let step = 100_000;
    let mut done = 0;
    let mut peak = 0;
    while done < updates {
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let (store, value) = (store.clone(), value.clone());
                tokio::spawn(async move {
                    for i in 0..step / 16 {
                        let n = (w * 7919 + i * 31) % objects;
                        store
                            .update(
                                &format!("/registry/configmaps/default/cm-{n:04}"),
                                value.clone(),
                                0,
                            )
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        done += step / 16 * 16;
        let size = on_disk(dir.path());
        peak = peak.max(size);
        println!(
            "| {done} | {:.1} MB | {:.0} |",
            mb(size),
            (step / 16 * 16) as f64 / started.elapsed().as_secs_f64()
        );
    }
    drop(store);
    // The checkpoint thread lets go of the file shortly after the store is dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reopened = Embedded::open(&path).unwrap();
    println!(
        "peak {:.1} MB; after reopening: {:.1} MB; live data {:.1} MB",
        mb(peak),
        mb(on_disk(dir.path())),
        mb((objects * (1024 + 60)) as u64)
    );
    drop(reopened);
}

async fn restart() {
    let objects: usize = if quick() { 20_000 } else { 100_000 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = Arc::new(Embedded::open(&path).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in (w..objects).step_by(16) {
                        let name = format!("cm-{i:06}");
                        let obj = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "namespace": "default",
                                "uid": format!("00000000-0000-4000-8000-{i:012}"),
                                "creationTimestamp": "2026-12-06T00:00:00Z", "labels": {"app": "bench"}},
                            "data": {"payload": "y".repeat(800)}});
                        store
                            .create(
                                &format!("/registry/configmaps/default/{name}"),
                                serde_json::to_vec(&obj).unwrap(),
                            )
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut opens = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let s = Embedded::open(&path).unwrap();
        opens.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(s);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "opening the embedded store with {objects} objects ({:.0} MB): {} ms",
        mb(on_disk(dir.path())),
        opens
            .iter()
            .map(|o| format!("{o:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let started = Instant::now();
    let server = common::start_in(dir, &["server"]).await;
    println!(
        "`capstan server` on that data directory, start to /readyz: {:.0} ms (RSS {} MB)",
        started.elapsed().as_secs_f64() * 1000.0,
        common::rss_kb(server.pid) / 1024
    );
}

#[cfg(feature = "etcd")]
async fn failover() {
    let Some(etcd) = common::etcd_on_path() else {
        println!("failover: etcd not on PATH; skipped");
        return;
    };
    let (_etcd, eurl) = common::start_etcd(&etcd).await;
    let store = format!("etcd://{}", eurl.trim_start_matches("http://"));
    let a = common::start(&["server", "--store", &store]).await;
    let token = a.dir.path().join("token");
    let b = common::start(&[
        "server",
        "--store",
        &store,
        "--token-file",
        token.to_str().unwrap(),
    ])
    .await;
    let lease_path = concat!(
        "/",
        "apis/coordination.k8s.io/v1/namespaces/kube-system/leases/capstan-controller-manager"
    );
    let holder = |c: &common::Capstan| {
        let (client, url, auth) = (c.client.clone(), c.url.clone(), c.auth.clone());
        async move {
            let v: serde_json::Value = client
                .get(format!("{url}{lease_path}"))
                .header("Authorization", auth)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["spec"]["holderIdentity"].as_str().map(String::from)
        }
    };
    let mut first = None;
    for _ in 0..100 {
        first = holder(&b).await;
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("a leader");
    let (victim, survivor) = if first.ends_with(&format!("-{}", a.pid)) {
        (a, b)
    } else {
        (b, a)
    };
    drop(victim);
    let killed = Instant::now();
    loop {
        if holder(&survivor).await.is_some_and(|h| h != first) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = killed.elapsed();
    let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "after"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "after"}},
            "template": {"metadata": {"labels": {"app": "after"}},
                "spec": {"containers": [{"name": "c", "image": "none", "command": ["sleep", "60"]}]}}}});
    survivor
        .client
        .post(format!(
            "{}{}",
            survivor.url,
            concat!("/", "apis/apps/v1/namespaces/default/deployments")
        ))
        .header("Authorization", &survivor.auth)
        .json(&deployment)
        .send()
        .await
        .unwrap();
    loop {
        let v: serde_json::Value = survivor
            .client
            .get(format!(
                "{}{}",
                survivor.url,
                concat!("/", "apis/apps/v1/namespaces/default/replicasets")
            ))
            .header("Authorization", &survivor.auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "leader failover (15 s lease, SIGKILL): the other server leads after {:.1} s; a Deployment made then has its ReplicaSet {:.1} s after the kill",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    growth().await;
    restart().await;
    #[cfg(feature = "etcd")]
    failover().await;
}
