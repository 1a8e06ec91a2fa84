//! kill -9 of `capstan up` in the middle of the work users do, over and over on one data directory: a Deployment
//! rollout, a GitOps sync of 1,000 objects and a StatefulSet scale-up. After each restart the cluster must converge
//! with its invariants whole: the Deployment at its replicas on one ReplicaSet of the newest template, the commit's
//! objects all there (none extra), each StatefulSet ordinal once - and on the machine exactly one container process
//! per pod (nothing adopted twice, nothing leaked).
//!
//! Rounds per scenario: `CAPSTAN_CRASH_ROUNDS` (default 8; RELIABILITY.md reports 50).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ok, within, Server};
use serde_json::Value;

fn rounds() -> usize {
    std::env::var("CAPSTAN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// `capstan up` arguments that stay the same across restarts (one set of address ranges for the whole test).
fn up_args(ranges: &[String], repo: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = vec!["up".into()];
    match repo {
        Some(r) => a.push(r.display().to_string()),
        None => a.push("--no-repo".into()),
    }
    a.extend(["--node-name", "node-a"].map(String::from));
    a.extend(ranges.iter().cloned());
    a
}

fn start(dir: tempfile::TempDir, args: &[String]) -> Server {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::run_in(dir, &a)
}

fn get(s: &Server, path: &str) -> Value {
    s.call("GET", path, "", "").1
}

fn items(s: &Server, path: &str) -> Vec<Value> {
    get(s, path)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn live(pods: Vec<Value>) -> Vec<Value> {
    pods.into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// The container processes (`sleep 600`) running for pods of this data directory.
fn containers(dir: &Path) -> usize {
    common::processes_under(dir)
        .iter()
        .filter(|(_, cmd)| cmd.starts_with("sleep 600"))
        .count()
}

/// A delay that moves through the phases of the work from round to round.
fn delay(round: usize) -> Duration {
    Duration::from_millis(50 + (round as u64 * 137) % 900)
}

fn apply(s: &Server, path: &str, body: &Value) {
    let (code, out) = s.call(
        "PATCH",
        &format!("{path}?fieldManager=crash-test&force=true"),
        "application/apply-patch+yaml",
        &body.to_string(),
    );
    assert!(code == 200 || code == 201, "{code} {out}");
}

#[test]
fn kill9_of_up_during_rollouts_converges_to_the_newest_template_once() {
    let ranges = common::ranges(&["up"]);
    let args = up_args(&ranges, None);
    let mut s = start(tempfile::tempdir().unwrap(), &args);
    let path = concat!("/", "apis/apps/v1/namespaces/default/deployments/web");
    for round in 0..rounds() {
        let deploy = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "none",
                        "command": ["sleep", "600"], "env": [{"name": "ROUND", "value": round.to_string()}]}]}}}});
        apply(&s, path, &deploy);
        std::thread::sleep(delay(round));
        let t = std::time::Instant::now();
        s = start(s.kill9(), &args);
        eprintln!("round {round}: restarted in {:?}", t.elapsed());
        let want = round.to_string();
        within(
            Duration::from_secs(90),
            "the rollout complete after the restart",
            || {
                let d = get(&s, path);
                let st = &d["status"];
                let done = st["observedGeneration"] == d["metadata"]["generation"]
                    && st["updatedReplicas"] == 4
                    && st["replicas"] == 4
                    && st["availableReplicas"] == 4;
                let pods = live(items(
                    &s,
                    concat!(
                        "/",
                        "api/v1/namespaces/default/pods?labelSelector=app%3Dweb"
                    ),
                ));
                let newest = pods.len() == 4
                    && pods.iter().all(|p| {
                        p["spec"]["containers"][0]["env"][0]["value"] == want.as_str()
                            && p["status"]["phase"] == "Running"
                    });
                (done && newest).then_some(())
            },
        );
        eprintln!(
            "round {round}: rolled out {:?} after the restart",
            t.elapsed()
        );
        // One ReplicaSet per template, and only the newest has pods.
        let sets = items(
            &s,
            concat!("/", "apis/apps/v1/namespaces/default/replicasets"),
        );
        // (Kubernetes keeps 10 old ReplicaSets by default, revisionHistoryLimit.)
        assert_eq!(sets.len(), (round + 1).min(11), "round {round}: {sets:#?}");
        let mut hashes: Vec<&str> = sets
            .iter()
            .filter_map(|r| r["metadata"]["labels"]["pod-template-hash"].as_str())
            .collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(
            hashes.len(),
            sets.len(),
            "round {round}: one ReplicaSet per template"
        );
        let scaled: Vec<&Value> = sets
            .iter()
            .filter(|r| r["spec"]["replicas"].as_i64() != Some(0))
            .collect();
        assert_eq!(scaled.len(), 1, "round {round}: {scaled:#?}");
        // Exactly one container process per pod, once the old pods' terminations are done.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let all = items(&s, concat!("/", "api/v1/namespaces/default/pods"));
            let running = containers(s.data_dir());
            if all.len() == 4 && running == 4 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {} pods ({:?}), {running} containers: {:#?}",
                all.len(),
                all.iter()
                    .map(|p| format!("{} {}", p["metadata"]["name"], p["metadata"]["uid"]))
                    .collect::<Vec<_>>(),
                common::processes_under(s.data_dir())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn kill9_of_up_during_a_gitops_sync_of_1000_objects_applies_the_commit_whole() {
    let ranges = common::ranges(&["up"]);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        ok(&Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .unwrap())
    };
    git(&["init", "-q", "-b", "main"]);
    let write = |round: usize| {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  round: \"{round}\"\n---\n"
            ));
        }
        std::fs::write(repo.join("objects.yaml"), text).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", &format!("round {round}")]);
        git(&["rev-parse", "HEAD"]).trim().to_string()
    };
    write(0);
    let args = up_args(&ranges, Some(&repo));
    let mut s = start(dir, &args);
    let cms = concat!(
        "/",
        "api/v1/namespaces/default/configmaps?labelSelector=capstan.io%2Fapp"
    );
    for round in 1..=rounds() {
        let head = write(round);
        std::thread::sleep(delay(round));
        s = start(s.kill9(), &args);
        within(
            Duration::from_secs(90),
            "the commit applied after the restart",
            || {
                let app = get(
                    &s,
                    concat!(
                        "/",
                        "apis/gitops.capstan.io/v1/namespaces/default/applications/repo"
                    ),
                );
                (app["status"]["sync"]["revision"] == head.as_str()
                    && app["status"]["sync"]["status"] == "Synced")
                    .then_some(())
            },
        );
        let list = items(&s, cms);
        assert_eq!(
            list.len(),
            1000,
            "round {round}: no object missing or extra"
        );
        let stale: Vec<&str> = list
            .iter()
            .filter(|c| c["data"]["round"] != round.to_string().as_str())
            .filter_map(|c| c["metadata"]["name"].as_str())
            .collect();
        assert!(
            stale.is_empty(),
            "round {round}: not at the commit: {stale:?}"
        );
    }
}

#[test]
fn kill9_of_up_during_statefulset_scale_ups_runs_each_ordinal_once() {
    let ranges = common::ranges(&["up"]);
    let args = up_args(&ranges, None);
    let mut s = start(tempfile::tempdir().unwrap(), &args);
    let path = concat!("/", "apis/apps/v1/namespaces/default/statefulsets/db");
    let set = |replicas: i64| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "none",
                        "command": ["sleep", "600"]}]}}}})
    };
    let pods = concat!("/", "api/v1/namespaces/default/pods?labelSelector=app%3Ddb");
    let settled = |s: &Server, n: usize| {
        within(Duration::from_secs(90), "the StatefulSet settled", || {
            let all = items(s, pods);
            let mut names: Vec<String> = all
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect();
            names.sort();
            let want: Vec<String> = (0..n).map(|i| format!("db-{i}")).collect();
            (all.len() == n && names == want && containers(s.data_dir()) == n).then_some(())
        })
    };
    apply(&s, path, &set(1));
    settled(&s, 1);
    for round in 0..rounds() {
        apply(&s, path, &set(5));
        std::thread::sleep(delay(round));
        s = start(s.kill9(), &args);
        settled(&s, 5);
        apply(&s, path, &set(1));
        settled(&s, 1);
    }
}
