//! A highly available control plane on a real etcd: three `capstan server` processes, two agents and a GitOps
//! repository; the leading server is killed with SIGKILL in the middle of a rollout and of a commit.
#![cfg(feature = "etcd")]

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ok, within, Agent, Server};
use serde_json::{json, Value};

/// Short leader election, so the test waits seconds, not a quarter minute (the relation is Kubernetes').
const LEASE: Duration = Duration::from_secs(6);
const ELECTION: [&str; 6] = [
    "--leader-elect-lease-duration",
    "6s",
    "--leader-elect-renew-deadline",
    "4s",
    "--leader-elect-retry-period",
    "1s",
];

fn get(s: &Server, path: &str) -> Value {
    s.call("GET", path, "", "").1
}

fn items(s: &Server, path: &str) -> Vec<Value> {
    get(s, path)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn leader_pid(s: &Server) -> Option<u32> {
    let lease = get(
        s,
        concat!(
            "/",
            "apis/coordination.k8s.io/v1/namespaces/kube-system/leases/capstan-controller-manager"
        ),
    );
    let holder = lease["spec"]["holderIdentity"].as_str()?;
    holder.rsplit('-').next()?.parse().ok()
}

fn deployment(name: &str, version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: none
        command: ["sleep", "600"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
    )
}

/// Whether deployment `name` has rolled out completely at its current generation.
fn rolled_out(s: &Server, name: &str) -> bool {
    let d = get(
        s,
        &format!(
            "{}{name}",
            concat!("/", "apis/apps/v1/namespaces/default/deployments/")
        ),
    );
    let want = d["spec"]["replicas"].as_i64();
    d["status"]["observedGeneration"] == d["metadata"]["generation"]
        && d["status"]["updatedReplicas"].as_i64() == want
        && d["status"]["readyReplicas"].as_i64() == want
        && d["status"]["replicas"].as_i64() == want
}

fn owned_by<'a>(objs: &'a [Value], uid: &Value) -> Vec<&'a Value> {
    objs.iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["uid"] == *uid))
        })
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    ok(&Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .unwrap())
}

#[test]
fn three_servers_survive_the_leader_being_killed_mid_rollout_and_mid_commit() {
    let Some(k) = common::kubectl() else { return };
    let Some(store) = etcd::Etcd::start() else {
        return;
    };
    let url = store.url();
    let ranges = common::ranges(&["server"]);
    let args = |token: Option<&Path>| {
        let mut a: Vec<String> = vec!["--store".into(), url.clone()];
        a.extend(ELECTION.iter().map(|s| s.to_string()));
        a.extend(ranges.iter().cloned());
        if let Some(t) = token {
            a.extend(["--token-file".into(), t.display().to_string()]);
        }
        a
    };
    let refs = |a: &[String]| {
        a.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\u{1}")
    };
    let start = |a: Vec<String>| {
        let joined = refs(&a);
        Server::start_with(&joined.split('\u{1}').collect::<Vec<_>>())
    };
    let a = start(args(None));
    let token = a.data_dir().join("token");
    let b = start(args(Some(&token)));
    let c = start(args(Some(&token)));

    // kubectl against each sees the same objects.
    ok(&c.kubectl(&k, &["create", "configmap", "one", "--from-literal=k=v"]));
    for s in [&a, &b, &c] {
        let got = ok(&s.kubectl(&k, &["get", "configmap", "one", "-o", "jsonpath={.data.k}"]));
        assert_eq!(got, "v");
    }
    // The `kubernetes` Endpoints list every server.
    let port = |s: &Server| s.url.rsplit(':').next().unwrap().parse::<u64>().unwrap();
    let mut all_ports: Vec<u64> = [&a, &b, &c].iter().map(|s| port(s)).collect();
    all_ports.sort();
    let endpoint_ports = |s: &Server| {
        let ep = get(
            s,
            concat!("/", "api/v1/namespaces/default/endpoints/kubernetes"),
        );
        let mut ports: Vec<u64> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["ports"][0]["port"].as_u64())
            .collect();
        ports.sort();
        ports
    };
    within(Duration::from_secs(15), "Endpoints of all three", || {
        (endpoint_ports(&b) == all_ports).then_some(())
    });

    // Two agents: one told only of the first server (it learns the others from the Endpoints), one of two.
    let agent_one = Agent::start_at(&a, &a.url, "node-one", &[]);
    let both = format!("{},{}", a.url, b.url);
    let agent_two = Agent::start_at(&a, &both, "node-two", &[]);
    within(Duration::from_secs(30), "both nodes Ready", || {
        let nodes = items(&b, concat!("/", "api/v1/nodes"));
        let ready = nodes
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == 2).then_some(())
    });

    // A GitOps Application following a local repository.
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("app")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("app/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-git}\ndata: {rev: one}\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "team", "namespace": "default"},
        "spec": {"source": {"repoURL": repo.display().to_string(), "path": "app"},
                 "destination": {"namespace": "default"}, "syncPolicy": {"automated": true, "prune": true}}});
    let (code, v) = b.call(
        "POST",
        concat!(
            "/",
            "apis/gitops.capstan.io/v1/namespaces/default/applications"
        ),
        "application/json",
        &app.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    let configmap = |s: &Server| {
        get(
            s,
            concat!("/", "api/v1/namespaces/default/configmaps/from-git"),
        )["data"]["rev"]
            .as_str()
            .map(String::from)
    };
    within(Duration::from_secs(30), "the first commit applied", || {
        (configmap(&c).as_deref() == Some("one")).then_some(())
    });

    // Two Deployments rolled out: `steady` stays as it is, `rolling` gets a new version at the kill.
    b.kubectl_apply(&k, &deployment("steady", "1"));
    b.kubectl_apply(&k, &deployment("rolling", "1"));
    within(Duration::from_secs(60), "both rolled out", || {
        (rolled_out(&b, "steady") && rolled_out(&b, "rolling")).then_some(())
    });
    let pods_before: Vec<(String, String)> =
        items(&b, concat!("/", "api/v1/namespaces/default/pods"))
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "steady")
            .map(|p| {
                (
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
    assert_eq!(pods_before.len(), 2);

    // The leader is killed right after a rollout starts and a commit is made.
    let leader = within(Duration::from_secs(10), "a leader", || leader_pid(&b));
    let (victim, survivors): (Server, Vec<Server>) = {
        let mut all = vec![a, b, c];
        let i = all
            .iter()
            .position(|s| s.child.id() == leader)
            .expect("the leader is one of the three servers");
        let v = all.remove(i);
        (v, all)
    };
    let (s1, s2) = (&survivors[0], &survivors[1]);
    s1.kubectl_apply(&k, &deployment("rolling", "2"));
    std::fs::write(
        repo.join("app/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-git}\ndata: {rev: two}\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let killed_at = Instant::now();
    let _victim_dir = victim.kill9();

    // Another server leads within the lease and 5 s.
    let new_leader = within(LEASE + Duration::from_secs(5), "a new leader", || {
        leader_pid(s1).filter(|p| *p != leader)
    });
    assert!(survivors.iter().any(|s| s.child.id() == new_leader));
    eprintln!(
        "new leader after {:?} (lease {:?})",
        killed_at.elapsed(),
        LEASE
    );

    // A Deployment created after the kill rolls out; the rollout under way completes; the commit is applied.
    s2.kubectl_apply(&k, &deployment("after", "1"));
    within(Duration::from_secs(60), "everything rolled out", || {
        (rolled_out(s1, "after") && rolled_out(s1, "rolling") && rolled_out(s1, "steady"))
            .then_some(())
    });
    within(
        Duration::from_secs(30),
        "the commit made at the kill",
        || (configmap(s2).as_deref() == Some("two")).then_some(()),
    );

    // Nothing was made twice: one ReplicaSet per template, as many pods as replicas.
    std::thread::sleep(Duration::from_secs(3));
    let rss = items(
        s1,
        concat!("/", "apis/apps/v1/namespaces/default/replicasets"),
    );
    let pods: Vec<Value> = items(s1, concat!("/", "api/v1/namespaces/default/pods"))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    for (name, sets) in [("steady", 1), ("rolling", 2), ("after", 1)] {
        let d = get(
            s1,
            &format!(
                "{}{name}",
                concat!("/", "apis/apps/v1/namespaces/default/deployments/")
            ),
        );
        let mine = owned_by(&rss, &d["metadata"]["uid"]);
        assert_eq!(mine.len(), sets, "ReplicaSets of {name}");
        let live: usize = mine
            .iter()
            .map(|rs| owned_by(&pods, &rs["metadata"]["uid"]).len())
            .sum();
        assert_eq!(live, 2, "pods of {name}");
    }
    // The agents kept their pods (same pods, never restarted) and report through a live server.
    let steady: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "steady")
        .collect();
    for p in &steady {
        let uid = p["metadata"]["uid"].as_str().unwrap();
        assert!(pods_before.iter().any(|(u, _)| u == uid), "pod {uid} kept");
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    }
    let renewed_after_kill = |node: &str| {
        let lease = get(
            s2,
            &format!(
                "{}{node}",
                concat!(
                    "/",
                    "apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
                )
            ),
        );
        let t = lease["spec"]["renewTime"].as_str().unwrap_or("");
        chrono::DateTime::parse_from_rfc3339(t).is_ok_and(|t| {
            let age = chrono::Utc::now().signed_duration_since(t);
            age.to_std().unwrap_or_default() < killed_at.elapsed()
        })
    };
    within(Duration::from_secs(20), "both agents renewing", || {
        (renewed_after_kill("node-one") && renewed_after_kill("node-two")).then_some(())
    });
    // The commit made during the failover was applied once.
    let records = items(
        s1,
        concat!(
            "/",
            "apis/gitops.capstan.io/v1/namespaces/default/syncrecords?labelSelector=capstan.io/application%3Dteam"
        ),
    );
    let synced_head = records
        .iter()
        .filter(|r| r["spec"]["revision"].as_str() == Some(head.as_str()))
        .filter(|r| r["spec"]["result"] == "Succeeded")
        .count();
    assert_eq!(synced_head, 1, "{records:#?}");
    // The dead server left the `kubernetes` Endpoints.
    let mut live_ports: Vec<u64> = survivors.iter().map(port).collect();
    live_ports.sort();
    within(
        Duration::from_secs(30),
        "Endpoints of the two live servers",
        || (endpoint_ports(s1) == live_ports).then_some(()),
    );
    drop((agent_one, agent_two));
}
