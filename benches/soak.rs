//! Soak: churn on `capstan up` following a git repository for a long while - a commit every few seconds that rolls
//! a Deployment, scales another, adds or removes a third, beside a pod that crashes in a loop - sampling the
//! process's RSS and open file descriptors every minute. At the end the churn stops and the cluster must settle:
//! the app Synced at the head commit, every Deployment available at its replicas, no pod left Terminating - and
//! every controller's work queue drains (the server's `/metrics`: no key ready, being worked on or failing).
//!
//! `cargo bench --bench soak` (CAPSTAN_SOAK_SECS, default 3600; CAPSTAN_SOAK_EVERY commit period in ms, default
//! 3000). Prints one line per minute and a summary; exits non-zero when the cluster does not settle.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{get, rss_kb, start};
use serde_json::Value;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Soak", "-c", "user.email=soak@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deployment(name: &str, replicas: u32, version: u64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  \
         selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    \
         spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: none\n        \
         command: [sleep, \"3600\"]\n        env: [{{name: VERSION, value: \"{version}\"}}]\n---\n"
    )
}

/// The repository's manifests at step `i`: three steady Deployments rolled in turn, one scaled between 1 and 3, one
/// that comes and goes, and a pod that crashes in a loop.
fn manifests(i: u64) -> String {
    let mut text = String::new();
    for d in 0..3u64 {
        // Deployment d is rolled every third step.
        text.push_str(&deployment(&format!("steady-{d}"), 2, (i + 2 - d) / 3));
    }
    text.push_str(&deployment("scaled", 1 + (i % 3) as u32, 0));
    if i % 4 < 2 {
        text.push_str(&deployment("transient", 1, i / 4));
    }
    text.push_str(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crasher\nspec:\n  restartPolicy: Always\n  containers:\n  \
         - name: c\n    image: none\n    command: [sh, -c, \"sleep 2; exit 1\"]\n",
    );
    text
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What keeps the cluster from being settled at commit `head`, if anything.
async fn unsettled(c: &common::Capstan, head: &str) -> Option<String> {
    let app = get(
        c,
        concat!(
            "/",
            "apis/gitops.capstan.io/v1/namespaces/default/applications/repo"
        ),
    )
    .await;
    if app["status"]["sync"]["revision"] != head || app["status"]["sync"]["status"] != "Synced" {
        return Some(format!("app at {}", app["status"]["sync"]));
    }
    let deployments = get(
        c,
        concat!("/", "apis/apps/v1/namespaces/default/deployments"),
    )
    .await;
    for d in deployments["items"].as_array().into_iter().flatten() {
        let (spec, st) = (&d["spec"], &d["status"]);
        if st["updatedReplicas"] != spec["replicas"] || st["availableReplicas"] != spec["replicas"]
        {
            return Some(format!("deployment {} at {st}", d["metadata"]["name"]));
        }
    }
    let pods = get(c, concat!("/", "api/v1/namespaces/default/pods")).await;
    let terminating: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| &p["metadata"]["name"])
        .collect();
    (!terminating.is_empty()).then(|| format!("pods terminating: {terminating:?}"))
}

/// The controllers' work queues that are not drained (keys ready, being worked on, or failing), from the
/// server's `/metrics`; and every queue's `workqueue_adds_total`.
async fn undrained(c: &common::Capstan) -> (Vec<String>, Vec<String>) {
    let text = c
        .client
        .get(format!("{}/metrics", c.url))
        .header("Authorization", &c.auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    let (mut busy, mut adds) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let busy_metric = [
            "workqueue_depth{",
            "capstan_workqueue_processing{",
            "capstan_workqueue_failing{",
        ]
        .iter()
        .any(|m| series.starts_with(m));
        if busy_metric && value != "0" {
            busy.push(line.to_string());
        }
        if let Some(name) = series
            .strip_prefix("workqueue_adds_total{name=\"")
            .and_then(|n| n.strip_suffix("\"}"))
        {
            adds.push(format!("{name}={value}"));
        }
    }
    (busy, adds)
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("CAPSTAN_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600);
    let every: u64 = std::env::var("CAPSTAN_SOAK_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("all.yaml"), manifests(0)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "step 0"]);
    let repo_arg = repo.display().to_string();
    let c = start(&["up", &repo_arg, "--node-name", "soak"]).await;
    let began = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut step = 0;
    let mut samples = Vec::new();
    println!(
        "soak: {secs} s of churn, a commit every {every} ms (capstan pid {})",
        c.pid
    );
    while began.elapsed() < Duration::from_secs(secs) {
        if began.elapsed() >= next_sample {
            let pods = get(&c, concat!("/", "api/v1/pods")).await["items"]
                .as_array()
                .map_or(0, |a| a.len());
            let (rss, fd) = (rss_kb(c.pid) as f64 / 1024.0, fds(c.pid));
            println!(
                "t={:>5} s  commits {step:>5}  RSS {rss:>6.1} MB  fds {fd:>4}  pods {pods}",
                began.elapsed().as_secs()
            );
            samples.push((rss, fd));
            next_sample += Duration::from_secs(60);
        }
        step += 1;
        std::fs::write(repo.join("all.yaml"), manifests(step)).unwrap();
        git(
            &repo,
            &["commit", "-q", "-a", "-m", &format!("step {step}")],
        );
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
    let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let settle = Instant::now();
    let mut last = None;
    while settle.elapsed() < Duration::from_secs(120) {
        last = unsettled(&c, &head).await;
        if last.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every controller's queue drains: nothing ready, nothing being worked on, no key failing.
    let drain = Instant::now();
    let (mut busy, mut adds) = undrained(&c).await;
    while !busy.is_empty() && drain.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (busy, adds) = undrained(&c).await;
    }
    if adds.is_empty() {
        busy.push("no work-queue metrics at /metrics".into());
    }
    println!(
        "soak: queues {} (keys queued over the run: {})",
        if busy.is_empty() {
            format!(
                "all drained {:.1} s after settling",
                drain.elapsed().as_secs_f64()
            )
        } else {
            format!("NOT drained 60 s after settling: {busy:?}")
        },
        adds.join(" ")
    );
    let (rss, fd) = (rss_kb(c.pid) as f64 / 1024.0, fds(c.pid));
    let first_full = samples
        .get(2)
        .or(samples.first())
        .copied()
        .unwrap_or((rss, fd));
    println!(
        "soak: {step} commits in {secs} s; RSS {:.1} MB at minute 2 -> {rss:.1} MB at the end (peak {:.1}); fds {} -> {fd} \
         (peak {}); {}",
        first_full.0,
        samples.iter().map(|s| s.0).fold(rss, f64::max),
        first_full.1,
        samples.iter().map(|s| s.1).max().unwrap_or(fd).max(fd),
        match &last {
            None => format!("settled {:.1} s after the last commit", settle.elapsed().as_secs_f64()),
            Some(why) => format!("NOT settled 120 s after the last commit: {why}"),
        }
    );
    // SIGTERM, as Ctrl-C: `up` stops its pods before it exits.
    let mut c = c;
    // SAFETY: signals the child process this benchmark started.
    unsafe { libc::kill(c.pid as i32, libc::SIGTERM) };
    for _ in 0..600 {
        if let Ok(Some(_)) = c.proc.0.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if last.is_some() || !busy.is_empty() {
        std::process::exit(1);
    }
}
