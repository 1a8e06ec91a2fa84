//! The node agent end to end: a real `capstan up` (or a server with real `capstan agent`s) running real processes,
//! driven by the real kubectl the way a user would - Deployments coming up Ready, rolling updates within their
//! bounds, restarts after `kill -9`, probes stalling a rollout, logs, several nodes, cascading deletion, and an agent
//! restart that leaves healthy pods alone.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, fails, ok, within, Agent, Server};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn demo_deployment(name: &str, replicas: u32, version: &str, extra_container: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: capstan/demo-app
        command: ["capstan", "demo-app"]
        env:
        - {{name: VERSION, value: "{version}"}}
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 1
{extra_container}"#
    )
}

fn apply(s: &Server, k: &std::path::Path, yaml: &str) {
    s.kubectl_apply(k, yaml);
}

fn pods(s: &Server, selector: &str) -> Vec<Value> {
    let (code, list) = s.call(
        "GET",
        &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
        "",
        "",
    );
    assert_eq!(code, 200, "{list}");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pod(s: &Server, name: &str) -> Value {
    s.call(
        "GET",
        &format!("/api/v1/namespaces/default/pods/{name}"),
        "",
        "",
    )
    .1
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn terminating(p: &Value) -> bool {
    !p["metadata"]["deletionTimestamp"].is_null()
}

/// GET http://podIP:8080/ from the demo app.
fn hello(p: &Value) -> Option<Value> {
    let ip = p["status"]["podIP"].as_str()?;
    reqwest::blocking::Client::new()
        .get(format!("http://{ip}:8080/"))
        .timeout(Duration::from_secs(2))
        .send()
        .ok()?
        .json()
        .ok()
}

fn pid_alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn up_runs_a_deployment_to_ready_and_rollout_status_succeeds() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    apply(&s, &k, &demo_deployment("web", 3, "v1", ""));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    let ps = pods(&s, "app=web");
    assert_eq!(ps.len(), 3);
    let mut ips = BTreeSet::new();
    for p in &ps {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        assert!(is_ready(p), "{p}");
        assert_eq!(p["spec"]["nodeName"], "node-a");
        let node = s.call("GET", "/api/v1/nodes/node-a", "", "").1;
        let internal = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .map(|a| a["address"].clone());
        assert_eq!(
            Some(p["status"]["hostIP"].clone()),
            internal,
            "hostIP is the node's address"
        );
        let cs = &p["status"]["containerStatuses"][0];
        assert_eq!(cs["ready"], true);
        assert_eq!(cs["started"], true);
        assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
        // Each pod answers on its own address with its own name.
        let answer = hello(p).expect("the pod answers on its IP");
        assert_eq!(answer["pod"], p["metadata"]["name"]);
        assert_eq!(answer["version"], "v1");
        ips.insert(p["status"]["podIP"].as_str().unwrap().to_string());
    }
    assert_eq!(ips.len(), 3, "pod IPs are unique: {ips:?}");
    let out = ok(&s.kubectl(&k, &["get", "pods", "-o", "wide"]));
    assert!(
        out.contains("1/1") && out.contains("Running") && out.contains("node-a"),
        "{out}"
    );
    // The Node is registered with capacity, conditions and a heartbeat Lease.
    let node = s.call("GET", "/api/v1/nodes/node-a", "", "").1;
    assert!(node["status"]["capacity"]["cpu"].is_string(), "{node}");
    assert!(
        node["spec"]["podCIDR"]
            .as_str()
            .unwrap()
            .ends_with(".0.0/24"),
        "{node}"
    );
    let lease = s
        .call(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-a",
            "",
            "",
        )
        .1;
    assert_eq!(lease["spec"]["holderIdentity"], "node-a", "{lease}");
    // Events a user sees with kubectl.
    let events = ok(&s.kubectl(&k, &["get", "events"]));
    for reason in [
        "Scheduled",
        "Started",
        "ScalingReplicaSet",
        "SuccessfulCreate",
    ] {
        assert!(events.contains(reason), "no {reason} event in:\n{events}");
    }
}

#[test]
fn rolling_update_keeps_its_bounds_and_undo_restores_the_template() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    apply(&s, &k, &demo_deployment("roll", 3, "v1", ""));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/roll", "--timeout=60s"],
    ));
    // Sample the pods through the whole rollout: never more than replicas + maxSurge (4) pods that are not
    // terminating, never fewer than replicas - maxUnavailable (3) ready ones.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let url = s.url.clone();
        let token = s.token();
        let http = s.http();
        std::thread::spawn(move || {
            let mut samples = 0;
            let mut worst = (0usize, usize::MAX);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let list: Value = http
                    .get(format!(
                        "{url}/api/v1/namespaces/default/pods?labelSelector=app=roll"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let live: Vec<&Value> = items.iter().filter(|p| !terminating(p)).collect();
                let ready = live.iter().filter(|p| is_ready(p)).count();
                worst.0 = worst.0.max(live.len());
                worst.1 = worst.1.min(ready);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, worst)
        })
    };
    ok(&s.kubectl(&k, &["set", "env", "deployment/roll", "VERSION=v2"]));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/roll", "--timeout=60s"],
    ));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (samples, (most, fewest_ready)) = sampler.join().unwrap();
    assert!(samples > 10, "sampled {samples} times");
    assert!(most <= 4, "maxSurge broken: {most} pods at once");
    assert!(
        fewest_ready >= 3,
        "maxUnavailable broken: only {fewest_ready} ready"
    );
    let ps = eventually("three v2 pods", || {
        let ps: Vec<Value> = pods(&s, "app=roll")
            .into_iter()
            .filter(|p| !terminating(p))
            .collect();
        (ps.len() == 3
            && ps
                .iter()
                .all(|p| hello(p).is_some_and(|h| h["version"] == "v2")))
        .then_some(ps)
    });
    assert_eq!(ps.len(), 3);
    let history = ok(&s.kubectl(&k, &["rollout", "history", "deployment/roll"]));
    assert!(history.contains('1') && history.contains('2'), "{history}");
    ok(&s.kubectl(&k, &["rollout", "undo", "deployment/roll"]));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/roll", "--timeout=60s"],
    ));
    within(LONG, "pods back on v1", || {
        let ps: Vec<Value> = pods(&s, "app=roll")
            .into_iter()
            .filter(|p| !terminating(p))
            .collect();
        (ps.len() == 3
            && ps
                .iter()
                .all(|p| hello(p).is_some_and(|h| h["version"] == "v1")))
        .then_some(())
    });
}

#[test]
fn a_killed_process_restarts_and_a_deleted_pod_is_replaced() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    apply(&s, &k, &demo_deployment("heal", 1, "v1", ""));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/heal", "--timeout=60s"],
    ));
    let p = pods(&s, "app=heal").remove(0);
    let name = p["metadata"]["name"].as_str().unwrap().to_string();
    let pid = hello(&p).unwrap()["pid"].as_i64().unwrap();
    // SAFETY: signals the container process this test's cluster started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let p = within(LONG, "restartCount 1 and Ready again", || {
        let p = pod(&s, &name);
        (p["status"]["containerStatuses"][0]["restartCount"] == 1 && is_ready(&p)).then_some(p)
    });
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{last}");
    assert_eq!(last["signal"], 9, "{last}");
    let new_pid = hello(&p).unwrap()["pid"].as_i64().unwrap();
    assert_ne!(new_pid, pid);
    // Deleting the pod: its process is stopped and the ReplicaSet replaces it.
    ok(&s.kubectl(
        &k,
        &["delete", "pod", &name, "--wait=true", "--timeout=30s"],
    ));
    assert!(!pid_alive(new_pid), "the deleted pod's process is gone");
    within(LONG, "a replacement pod, Ready", || {
        let ps = pods(&s, "app=heal");
        (ps.len() == 1 && ps[0]["metadata"]["name"] != name.as_str() && is_ready(&ps[0]))
            .then_some(())
    });
}

#[test]
fn a_readiness_probe_that_never_passes_stalls_the_rollout_until_its_deadline() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let yaml = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector:
    matchLabels: {app: stuck}
  template:
    metadata:
      labels: {app: stuck}
    spec:
      containers:
      - name: app
        image: none
        command: ["sleep", "600"]
        readinessProbe:
          exec:
            command: ["false"]
          periodSeconds: 1
"#;
    apply(&s, &k, yaml);
    let out = fails(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
    ));
    assert!(out.contains("exceeded its progress deadline"), "{out}");
    let (_, d) = s.call(
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/stuck",
        "",
        "",
    );
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    let p = pods(&s, "app=stuck").remove(0);
    assert_eq!(p["status"]["phase"], "Running");
    assert!(!is_ready(&p));
    let events = ok(&s.kubectl(&k, &["get", "events"]));
    assert!(events.contains("Readiness probe failed"), "{events}");
}

#[test]
fn logs_follow_and_previous() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let yaml = r#"apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  containers:
  - name: talk
    image: none
    command: ["sh", "-c", "echo instance-$$$$; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]
"#;
    apply(&s, &k, yaml);
    within(LONG, "talker running", || {
        (pod(&s, "talker")["status"]["phase"] == "Running").then_some(())
    });
    // kubectl logs -f streams new lines as they are written.
    let mut follow = Command::new(&k)
        .env("KUBECONFIG", s.kubeconfig())
        .arg("--cache-dir")
        .arg(s.dir.path().join("kubectl-cache"))
        .args(["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    let mut line = String::new();
    let started = Instant::now();
    let mut ticks = 0;
    use std::io::BufRead;
    while ticks < 30 && started.elapsed() < Duration::from_secs(30) {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if first.is_empty() {
            first = line.trim().to_string();
        }
        if line.starts_with("tick") {
            ticks += 1;
        }
    }
    assert!(ticks >= 30, "followed only {ticks} ticks");
    assert!(first.starts_with("instance-"), "{first}");
    // Kill the container's processes: a new instance starts; --previous shows the old one.
    let pid: i32 = first.trim_start_matches("instance-").parse().unwrap();
    // SAFETY: signals the container's process group, started by this test's cluster.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    // The follow ends when the instance it follows exits.
    let ended = within(LONG, "kubectl logs -f ends with the instance", || {
        follow.try_wait().unwrap()
    });
    assert!(ended.success());
    within(LONG, "restarted", || {
        (pod(&s, "talker")["status"]["containerStatuses"][0]["restartCount"] == 1).then_some(())
    });
    let prev = ok(&s.kubectl(&k, &["logs", "talker", "--previous"]));
    assert!(prev.starts_with(&first), "{prev}");
    let now = eventually("the new instance logged", || {
        let out = ok(&s.kubectl(&k, &["logs", "talker", "--tail=1", "--timestamps"]));
        out.contains("tick").then_some(out)
    });
    assert_eq!(now.lines().count(), 1, "{now}");
    assert!(now.starts_with("20"), "timestamps prefix each line: {now}");
    let current = ok(&s.kubectl(&k, &["logs", "talker"]));
    assert!(
        !current.starts_with(&first),
        "the current instance has its own log"
    );
    // capstan logs reads the same.
    let out = s.capstan(&["logs", "talker", "--previous", "--tail", "1"]);
    let text = ok(&out);
    assert!(text.starts_with("tick"), "{text}");
}

#[test]
fn containers_without_a_command_wait_with_a_clear_reason() {
    let s = Server::up(&[]);
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}});
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &body.to_string(),
    );
    assert_eq!(code, 201);
    let waiting = within(LONG, "a waiting reason", || {
        let p = pod(&s, "nginx");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerError").then_some(w)
    });
    let msg = waiting["message"].as_str().unwrap();
    assert!(
        msg.contains("command") && msg.contains("nginx:1.27"),
        "{msg}"
    );
}

#[test]
fn init_containers_restart_policies_env_and_phases() {
    let s = Server::up(&[]);
    let create = |body: Value| {
        let (code, v) = s.call(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            &body.to_string(),
        );
        assert_eq!(code, 201, "{v}");
    };
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &json!({"metadata": {"name": "cfg"}, "data": {"COLOR": "blue"}}).to_string(),
    );
    assert_eq!(code, 201);
    let dir = s.dir.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("init-ran");
    // Init containers run in order before the main container; env comes from values, ConfigMaps and the
    // downward API; a pod whose containers exit 0 under restartPolicy Never Succeeds.
    create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "job-like", "labels": {"tier": "x"}},
        "spec": {"restartPolicy": "Never",
          "initContainers": [
            {"name": "one", "image": "i", "command": ["sh", "-c", format!("echo one > {}", file.display())]},
            {"name": "two", "image": "i", "command": ["sh", "-c", format!("echo two >> {}", file.display())]}],
          "containers": [{"name": "main", "image": "i", "workingDir": dir.display().to_string(),
            "command": ["sh", "-c", "cat init-ran; echo $COLOR $ME $TIER $NODE_NAME $(GREETING)"],
            "env": [{"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                    {"name": "GREETING", "value": "hi-$(COLOR)"}],
            "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}}),
    );
    let p = within(LONG, "job-like Succeeded", || {
        let p = pod(&s, "job-like");
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    assert_eq!(
        p["status"]["initContainerStatuses"][1]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    let initialized = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .cloned()
        .unwrap();
    assert_eq!(initialized["status"], "True");
    let (_, log) = s.call(
        "GET",
        "/api/v1/namespaces/default/pods/job-like/log",
        "",
        "",
    );
    assert_eq!(
        log,
        Value::String("one\ntwo\nblue job-like x node-a hi-blue\n".into()),
        "{log}"
    );

    // restartPolicy Never and a failing container: Failed, no restarts.
    create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fails"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i", "command": ["sh", "-c", "exit 3"]}]}}),
    );
    let p = within(LONG, "fails Failed", || {
        let p = pod(&s, "fails");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);

    // OnFailure: restarted with backoff (CrashLoopBackOff between tries) until it succeeds.
    let marker = dir.join("tries");
    create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "flaky"},
        "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "i", "command": ["sh", "-c",
            format!("echo x >> {m}; test $(wc -l < {m}) -ge 3", m = marker.display())]}]}}),
    );
    let p = within(LONG, "flaky Succeeded after restarts", || {
        let p = pod(&s, "flaky");
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 2);
    let (_, events) = s.call("GET", "/api/v1/namespaces/default/events", "", "");
    assert!(
        events.to_string().contains("BackOff"),
        "BackOff events are recorded"
    );

    // A missing ConfigMap keeps the container waiting with Kubernetes' reason, until it appears.
    create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "needs-config"},
        "spec": {"containers": [{"name": "c", "image": "i", "command": ["sleep", "600"],
            "envFrom": [{"configMapRef": {"name": "later"}}]}]}}),
    );
    let w = within(LONG, "CreateContainerConfigError", || {
        let w =
            pod(&s, "needs-config")["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert_eq!(w["message"], "configmap \"later\" not found");
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &json!({"metadata": {"name": "later"}, "data": {"A": "1"}}).to_string(),
    );
    assert_eq!(code, 201);
    within(
        LONG,
        "needs-config running once its ConfigMap exists",
        || (pod(&s, "needs-config")["status"]["phase"] == "Running").then_some(()),
    );
}

#[test]
fn two_agents_spread_replicas_respect_cordon_and_report_insufficient_cpu() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let _a = Agent::start(&s, "node-a", &["--cpu", "2"]);
    let _b = Agent::start(&s, "node-b", &["--cpu", "2"]);
    within(LONG, "two Ready nodes with pod CIDRs", || {
        let (_, nodes) = s.call("GET", "/api/v1/nodes", "", "");
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2 && items.iter().all(|n| n["spec"]["podCIDR"].is_string())).then_some(())
    });
    let sleeper = |name: &str, replicas: u32, cpu: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: none
        command: ["sleep", "600"]
        resources:
          requests: {{cpu: "{cpu}"}}
"#
        )
    };
    apply(&s, &k, &sleeper("spread", 4, "100m"));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/spread", "--timeout=60s"],
    ));
    let count = |node: &str| {
        pods(&s, "app=spread")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node && !terminating(p))
            .count()
    };
    assert_eq!(
        (count("node-a"), count("node-b")),
        (2, 2),
        "replicas spread over both nodes"
    );
    // Pod IPs come from each node's own CIDR, so they never collide.
    let ips: BTreeSet<String> = pods(&s, "app=spread")
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 4, "{ips:?}");
    ok(&s.kubectl(&k, &["cordon", "node-b"]));
    ok(&s.kubectl(&k, &["scale", "deployment/spread", "--replicas=6"]));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/spread", "--timeout=60s"],
    ));
    assert_eq!(
        (count("node-a"), count("node-b")),
        (4, 2),
        "new pods avoid the cordoned node"
    );
    apply(&s, &k, &sleeper("huge", 1, "64"));
    let cond = within(LONG, "huge is unschedulable", || {
        let p = pods(&s, "app=huge").into_iter().next()?;
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .cloned()
    });
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.contains("0/2 nodes are available") && msg.contains("Insufficient cpu"),
        "{msg}"
    );
    let out = ok(&s.kubectl(&k, &["get", "pods", "-l", "app=huge"]));
    assert!(out.contains("Pending"), "{out}");
}

#[test]
fn deleting_a_deployment_cascades_unless_orphaned() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let sleeper = |name: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: none
        command: ["sleep", "600"]
"#
        )
    };
    apply(&s, &k, &sleeper("gone"));
    apply(&s, &k, &sleeper("kept"));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/gone", "--timeout=60s"],
    ));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/kept", "--timeout=60s"],
    ));
    ok(&s.kubectl(&k, &["delete", "deployment", "gone"]));
    within(LONG, "gone's ReplicaSets and pods deleted", || {
        let (_, rs) = s.call(
            "GET",
            "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app=gone",
            "",
            "",
        );
        (rs["items"].as_array().unwrap().is_empty() && pods(&s, "app=gone").is_empty())
            .then_some(())
    });
    ok(&s.kubectl(&k, &["delete", "deployment", "kept", "--cascade=orphan"]));
    std::thread::sleep(Duration::from_secs(2));
    let (_, rs) = s.call(
        "GET",
        "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app=kept",
        "",
        "",
    );
    assert_eq!(
        rs["items"].as_array().unwrap().len(),
        1,
        "the ReplicaSet stays"
    );
    let kept = pods(&s, "app=kept");
    assert_eq!(kept.len(), 2);
    assert!(kept
        .iter()
        .all(|p| p["status"]["phase"] == "Running" && !terminating(p)));
}

#[test]
fn restarting_the_agent_does_not_restart_healthy_pods() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let mut a = Agent::start(&s, "node-a", &[]);
    apply(&s, &k, &demo_deployment("steady", 2, "v1", ""));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/steady", "--timeout=60s"],
    ));
    let before: Vec<(String, i64, Value)> = pods(&s, "app=steady")
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                hello(p).unwrap()["pid"].as_i64().unwrap(),
                p["status"]["containerStatuses"][0]["containerID"].clone(),
            )
        })
        .collect();
    a.kill9();
    // Containers outlive the agent.
    for (_, pid, _) in &before {
        assert!(pid_alive(*pid));
    }
    let _a2 = Agent::start(&s, "node-a", &[]);
    std::thread::sleep(Duration::from_secs(3));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/steady", "--timeout=30s"],
    ));
    for (name, pid, cid) in &before {
        let p = pod(&s, name);
        let cs = &p["status"]["containerStatuses"][0];
        assert_eq!(cs["restartCount"], 0, "{p}");
        assert_eq!(&cs["containerID"], cid);
        assert!(is_ready(&p), "{p}");
        assert_eq!(
            hello(&p).unwrap()["pid"].as_i64().unwrap(),
            *pid,
            "the same process serves"
        );
    }
    // No duplicates: exactly one demo-app process per pod is serving on the node.
    let ps = pods(&s, "app=steady");
    assert_eq!(ps.len(), 2);
    // The re-adopted containers are still managed: deleting a pod stops its process.
    let (name, pid, _) = &before[0];
    ok(&s.kubectl(&k, &["delete", "pod", name, "--timeout=30s"]));
    assert!(!pid_alive(*pid), "the adopted process was stopped");
}
