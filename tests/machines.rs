//! Several machines (root): each "machine" is a network namespace of its own on a bridge the test made, running a
//! `capstan agent` that joined the server by IP address with a join token. A Deployment spread over three machines
//! is reached pod to pod across machines, through its ClusterIP (every replica answers) and through a NodePort on
//! every machine's address; a pod reaches an HTTP server on a separate "external" machine, which sees the node's
//! address, not the pod's (masquerade). Once with each backend: vxlan (the default) and host-gw.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::lan::{Lan, Machine};
use common::{ok, within, Agent, Server, BIN};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let missing: Vec<&str> = [("ip", "-V"), ("nsenter", "--version"), ("nft", "--version")]
            .into_iter()
            .filter(|(tool, flag)| {
                !std::process::Command::new(tool)
                    .arg(flag)
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|(tool, _)| tool)
            .collect();
        if missing.is_empty() {
            return true;
        }
        assert!(
            !common::required(),
            "the multi-machine tests need {missing:?} and CAPSTAN_REQUIRE_EXTERNAL=1 is set"
        );
        eprintln!(
            "SKIP: the multi-machine tests need {missing:?} (iproute2, util-linux, nftables)"
        );
        return false;
    }
    assert!(
        !common::required(),
        "machines in network namespaces need root and CAPSTAN_REQUIRE_EXTERNAL=1 is set"
    );
    eprintln!("SKIP: machines in network namespaces need root");
    false
}

/// `capstan agent` on `m`, joining `s` at `url` with the join token in `token_file`.
fn join(s: &Server, m: &Machine, name: &str, url: &str, token_file: &std::path::Path) -> Agent {
    let mut cmd = m.command(BIN);
    cmd.arg("--data-dir")
        .arg(s.data_dir().join(format!("machine-{name}")))
        .args(["agent", "--server", url, "--join-token-file"])
        .arg(token_file)
        .args([
            "--node-name",
            name,
            "--stop-pods-on-exit",
            "--network",
            "bridge",
        ])
        .args(["--crashloop-backoff", "0.5", "--crashloop-backoff-max", "2"]);
    Agent::spawn(cmd, name)
}

fn pods(s: &Server, selector: &str) -> Vec<Value> {
    s.call(
        "GET",
        &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
        "",
        "",
    )
    .1["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A bash script that GETs `http://host:port/` `times` times, printing each body on a line of its own.
fn get(host: &str, port: u16, times: usize) -> String {
    format!(
        "for i in $(seq {times}); do exec 3<>/dev/tcp/{host}/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && \
         sed -n '/^{{/p' <&3; echo; exec 3<&-; done"
    )
}

fn three_machines(backend: &str) {
    let Some(k) = common::kubectl() else { return };
    if !root_or_skip() {
        return;
    }
    let mut lan = Lan::new();
    let machines: Vec<Machine> = (11..=13).map(|h| lan.machine(h)).collect();
    let outside = lan.machine(100);
    let listen = format!("{}:0", lan.gateway());
    let s = Server::start_with(&["--listen", &listen, "--pod-network-backend", backend]);
    assert!(
        s.url.contains(&lan.gateway()),
        "the server serves on the test network: {}",
        s.url
    );

    // An HTTP server on a machine outside the cluster.
    let _external = Killed(
        outside
            .command(BIN)
            .args(["demo-app", "--listen", &format!("{}:8080", outside.address)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("external server"),
    );

    let token = ok(&s.capstan(&["token", "create", "--ttl", "10m"]));
    let token_file = s.data_dir().join("join-token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let names = ["m1", "m2", "m3"];
    let agents: Vec<Agent> = names
        .iter()
        .zip(&machines)
        .map(|(n, m)| join(&s, m, n, &s.url, &token_file))
        .collect();
    for a in &agents {
        assert!(!a.cmdline().contains(token.trim()), "ps shows no token");
    }
    // Each node reports its machine's address (the one it reaches the server from) and has the backend announced.
    for (n, m) in names.iter().zip(&machines) {
        within(LONG, "the node registered with its address", || {
            let node = s.call("GET", &format!("/api/v1/nodes/{n}"), "", "").1;
            let ip = node["status"]["addresses"]
                .as_array()?
                .iter()
                .find(|a| a["type"] == "InternalIP")?["address"]
                .as_str()?
                .to_string();
            let announced = node["metadata"]["annotations"]["capstan.io/pod-network-backend"]
                .as_str()?
                .to_string();
            (ip == m.address && announced == backend).then_some(())
        });
    }

    s.kubectl_apply(
        &k,
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: capstan/demo-app
        command: ["capstan", "demo-app"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    ));
    let web = pods(&s, "app=web");
    let mut per_node: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for p in &web {
        per_node
            .entry(p["spec"]["nodeName"].as_str().unwrap().to_string())
            .or_default()
            .push((
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["status"]["podIP"].as_str().unwrap().to_string(),
            ));
    }
    assert_eq!(
        per_node.values().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2],
        "two replicas on each machine: {per_node:?}"
    );
    let all: BTreeSet<String> = web
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let svc = s
        .call("GET", "/api/v1/namespaces/default/services/web", "", "")
        .1;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;

    // From a pod on m1: every pod on the other machines by address, the ClusterIP (every replica answers), and the
    // external server.
    let mut script = Vec::new();
    for (node, list) in &per_node {
        if node != "m1" {
            for (_, ip) in list {
                script.push(get(ip, 8080, 1));
            }
        }
    }
    script.push(get(&cluster_ip, 80, 30));
    script.push(get(&outside.address, 8080, 1));
    s.kubectl_apply(
        &k,
        &format!(
            r#"apiVersion: batch/v1
kind: Job
metadata:
  name: client
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {{kubernetes.io/hostname: m1}}
      containers:
      - name: client
        image: none
        command: ["bash", "-c", {:?}]
"#,
            script.join("; ")
        ),
    );
    let done = s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/client",
            "--timeout=90s",
        ],
    );
    let log = ok(&s.kubectl(&k, &["logs", "job/client"]));
    assert!(done.status.success(), "{log}");
    let answers: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let remote: Vec<&String> = per_node
        .iter()
        .filter(|(n, _)| *n != "m1")
        .flat_map(|(_, l)| l.iter().map(|(name, _)| name))
        .collect();
    for (i, name) in remote.iter().enumerate() {
        assert_eq!(
            answers.get(i).map(|a| a["pod"].clone()),
            Some(Value::from(name.as_str())),
            "pod {name} on another machine answered by its address: {log}"
        );
    }
    let through_cluster_ip: BTreeSet<String> = answers[remote.len()..remote.len() + 30]
        .iter()
        .filter_map(|a| a["pod"].as_str().map(String::from))
        .collect();
    assert_eq!(
        through_cluster_ip, all,
        "every replica answered through the ClusterIP: {log}"
    );
    let from_outside = answers.last().expect("the external server answered");
    assert_eq!(
        from_outside["client"], machines[0].address,
        "the external server sees the node's address, not the pod's: {log}"
    );

    // A NodePort on every machine's address reaches replicas on all machines.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for m in &machines {
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            let a: Value = http
                .get(format!("http://{}:{node_port}/", m.address))
                .send()
                .and_then(|r| r.json())
                .unwrap_or_else(|e| panic!("NodePort on {}: {e}", m.address));
            seen.insert(a["pod"].as_str().unwrap().to_string());
        }
        assert_eq!(
            seen, all,
            "every replica answers through the NodePort on {}",
            m.address
        );
    }
}

/// A process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn three_machines_reach_each_others_pods_over_vxlan() {
    three_machines("vxlan");
}

#[test]
fn three_machines_reach_each_others_pods_with_host_gw_routes() {
    three_machines("host-gw");
}
