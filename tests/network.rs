//! The `bridge` pod network on real network namespaces, veth pairs and bridges (root): two node agents on one
//! machine, each with its own /24 and bridge; pods with addresses of their own, reaching pods of the other node,
//! Services by ClusterIP and by name; containers of one pod sharing its namespace; nothing left behind when pods go.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ok, within, Agent, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        !common::required(),
        "the bridge network needs root and CAPSTAN_REQUIRE_EXTERNAL=1 is set"
    );
    eprintln!("SKIP: the bridge network needs root");
    false
}

fn netns_of(pid: i64) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
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

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn pods_get_namespaces_of_their_own_and_reach_each_other_across_nodes() {
    let Some(k) = common::kubectl() else { return };
    if !root_or_skip() {
        return;
    }
    let s = Server::start();
    let a = Agent::start(&s, "node-a", &["--network", "bridge"]);
    let b = Agent::start(&s, "node-b", &["--network", "bridge"]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
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
      - name: sidecar
        image: none
        command: ["bash", "-c", "readlink /proc/self/ns/net; exec sleep 600"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    let web = pods(&s, "app=web");
    assert_eq!(web.len(), 4);
    let nodes: BTreeSet<&str> = web
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "spread over both nodes: {nodes:?}");

    // Addresses: unique, each inside its node's podCIDR, none on loopback.
    let mut ips = BTreeSet::new();
    for p in &web {
        let ip = p["status"]["podIP"].as_str().unwrap().to_string();
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let cidr = s.call("GET", &format!("/api/v1/nodes/{node}"), "", "").1["spec"]["podCIDR"]
            .as_str()
            .unwrap()
            .to_string();
        let prefix = cidr.trim_end_matches("0/24");
        assert!(
            ip.starts_with(prefix) && !ip.starts_with("127."),
            "{ip} in {cidr}"
        );
        assert!(ips.insert(ip), "pod addresses are unique");
    }

    // Each pod has a network namespace of its own, which both its containers share; the host's is another.
    let host_ns = netns_of(std::process::id() as i64);
    let mut seen = BTreeSet::new();
    for p in &web {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let hello: Value = reqwest::blocking::get(format!("http://{ip}:8080/"))
            .and_then(|r| r.json())
            .expect("the pod answers on its own address from the host");
        let web_ns = netns_of(hello["pid"].as_i64().unwrap());
        assert!(!web_ns.is_empty() && web_ns != host_ns, "{web_ns}");
        assert!(seen.insert(web_ns.clone()), "one namespace per pod");
        let name = p["metadata"]["name"].as_str().unwrap();
        let side = within(LONG, "the sidecar's namespace", || {
            let out = s.kubectl(&k, &["logs", name, "-c", "sidecar"]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            text.starts_with("net:").then_some(text)
        });
        assert_eq!(side, web_ns, "containers of one pod share its network");
    }

    // From a pod on node-a: a pod on node-b by address, the Service by ClusterIP and by name.
    let on_b = web
        .iter()
        .find(|p| p["spec"]["nodeName"] == "node-b")
        .unwrap();
    let b_ip = on_b["status"]["podIP"].as_str().unwrap();
    let b_name = on_b["metadata"]["name"].as_str().unwrap();
    let cluster_ip = s
        .call("GET", "/api/v1/namespaces/default/services/web", "", "")
        .1["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!cluster_ip.starts_with("127."), "{cluster_ip}");
    let get = |host: &str, port: u16| {
        format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3; echo"
        )
    };
    let script = format!(
        "{} && {} && {}",
        get(b_ip, 8080),
        get(&cluster_ip, 80),
        get("web", 80)
    );
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
      nodeSelector: {{kubernetes.io/hostname: node-a}}
      containers:
      - name: client
        image: none
        command: ["bash", "-c", {script:?}]
"#
        ),
    );
    let done = s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/client",
            "--timeout=60s",
        ],
    );
    let log = ok(&s.kubectl(&k, &["logs", "job/client"]));
    assert!(done.status.success(), "{log}");
    assert!(
        log.contains(&format!("\"pod\":\"{b_name}\"")),
        "the pod on node-b answered a pod on node-a: {log}"
    );
    assert_eq!(
        log.matches("200 OK").count(),
        3,
        "by address, ClusterIP and name: {log}"
    );

    // Deleting the pods takes their namespaces and veths with them.
    let uids: Vec<String> = web
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    for uid in &uids {
        assert!(std::path::Path::new("/run/capstan/netns")
            .join(uid)
            .exists());
    }
    ok(&s.kubectl(&k, &["delete", "deployment", "web", "--wait=false"]));
    within(LONG, "the pods' namespaces removed", || {
        uids.iter()
            .all(|u| !std::path::Path::new("/run/capstan/netns").join(u).exists())
            .then_some(())
    });
    let veths: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for uid in &uids {
        let veth = format!("veth{:08x}", crc32fast::hash(uid.as_bytes()));
        assert!(!link_exists(&veth), "{veth} left behind: {veths:?}");
    }

    // A node that stops with its pods takes its bridge with it.
    let bridges: Vec<String> = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            let cidr = s.call("GET", &format!("/api/v1/nodes/{n}"), "", "").1["spec"]["podCIDR"]
                .as_str()
                .unwrap()
                .to_string();
            let o: Vec<&str> = cidr.split('.').collect();
            format!("cs-{}-{}", o[1], o[2])
        })
        .collect();
    assert!(bridges.iter().all(|b| link_exists(b)), "{bridges:?}");
    drop(a);
    drop(b);
    assert!(
        bridges.iter().all(|b| !link_exists(b)),
        "bridges left behind: {bridges:?}"
    );
}
