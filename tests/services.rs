//! Services end to end on a real `capstan up`: ClusterIP and NodePort allocation, Endpoints and EndpointSlices that
//! follow the ready pods, the node's proxy answering on both addresses and spreading the load, service environment
//! variables in a pod that reaches the Service through them - all with the real kubectl.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{fails, ok, within, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn web(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: capstan/demo-app
        command: ["capstan", "demo-app"]
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - name: http
    port: 8080
    targetPort: http
"#
    )
}

/// The pod names answering `url` over `n` requests.
fn answering(url: &str, n: usize) -> BTreeSet<String> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    (0..n)
        .filter_map(|_| http.get(url).send().ok()?.json::<Value>().ok())
        .filter_map(|v| v["pod"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_service_answers_on_its_cluster_ip_and_node_port_and_follows_its_pods() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(&k, &web(3));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    let svc = s
        .call("GET", "/api/v1/namespaces/default/services/web", "", "")
        .1;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!(
        (ip.starts_with("127.") || ip.starts_with("10.")) && ip.contains(".200."),
        "from the server's service CIDR: {svc}"
    );
    assert!((30000..=32767).contains(&node_port), "{svc}");
    let out = ok(&s.kubectl(&k, &["get", "svc", "web"]));
    assert!(
        out.contains(&ip) && out.contains(&format!("80:{node_port}/TCP")),
        "{out}"
    );

    // Endpoints: the three ready pods on their named port.
    within(LONG, "three endpoints", || {
        let ep = s
            .call("GET", "/api/v1/namespaces/default/endpoints/web", "", "")
            .1;
        let addrs = ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
        (addrs == 3 && ep["subsets"][0]["ports"][0]["port"] == 8080).then_some(())
    });
    let out = ok(&s.kubectl(
        &k,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
    ));
    assert!(out.contains("8080"), "{out}");

    // The proxy: every replica answers through the ClusterIP and through the node port.
    let cluster_url = format!("http://{ip}:8080/");
    let node = s.call("GET", "/api/v1/nodes/node-a", "", "").1;
    let node_ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap()
        .to_string();
    let node_url = format!("http://{node_ip}:{node_port}/");
    let pods = within(LONG, "all three pods answer on the ClusterIP", || {
        let seen = answering(&cluster_url, 12);
        (seen.len() == 3).then_some(seen)
    });
    within(LONG, "all three pods answer on the node port", || {
        (answering(&node_url, 12) == pods).then_some(())
    });

    // Each replica serves a fair share of 300 requests.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut share = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        let v: Value = http.get(&cluster_url).send().unwrap().json().unwrap();
        *share
            .entry(v["pod"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(share.len(), 3, "{share:?}");
    assert!(
        share.values().all(|n| *n >= 60),
        "each at least 20%: {share:?}"
    );

    // A rolling update behind the Service: a client loop sees no failure (readiness, graceful termination and the
    // proxy following the endpoints).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let (stop, url) = (stop.clone(), node_url.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http.get(&url).send().and_then(|r| r.error_for_status()) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    ok(&s.kubectl(&k, &["set", "env", "deployment/web", "VERSION=v2"]));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    ));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, failed) = looping.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {:?}",
        failed.len(),
        served + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(served > 20, "the loop ran: {served}");

    // A LoadBalancer gets an address from the local pool and answers on it.
    ok(&s.kubectl(
        &k,
        &[
            "patch",
            "service",
            "web",
            "-p",
            r#"{"spec":{"type":"LoadBalancer"}}"#,
        ],
    ));
    let lb = within(LONG, "a load balancer address", || {
        let svc = s
            .call("GET", "/api/v1/namespaces/default/services/web", "", "")
            .1;
        svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from)
    });
    assert!(
        lb.starts_with("127.") && lb.contains(".201."),
        "from the server's pool: {lb}"
    );
    within(LONG, "the load balancer answers", || {
        (!answering(&format!("http://{lb}:8080/"), 3).is_empty()).then_some(())
    });
    let out = ok(&s.kubectl(&k, &["get", "svc", "web"]));
    assert!(out.contains(&lb), "EXTERNAL-IP shows the address: {out}");

    // A pod reaches the Service through the environment Kubernetes gives it.
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: client
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: client
        image: none
        command: ["bash", "-c", "exec 3<>/dev/tcp/$WEB_SERVICE_HOST/$WEB_SERVICE_PORT_HTTP && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3"]
"#,
    );
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/client",
            "--timeout=60s",
        ],
    ));
    let log = ok(&s.kubectl(&k, &["logs", "job/client"]));
    assert!(
        log.contains("200 OK") && log.contains("\"pod\":\"web-"),
        "{log}"
    );

    // Scaled to one, the Service follows within a moment.
    ok(&s.kubectl(&k, &["scale", "deployment/web", "--replicas=1"]));
    within(LONG, "one pod answering", || {
        (answering(&node_url, 6).len() == 1).then_some(())
    });

    // A requested ClusterIP that is taken is refused, naming the field.
    let clash = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  clusterIP: {ip}\n  selector: {{app: web}}\n  ports: [{{port: 81}}]\n"
    );
    std::fs::write(s.dir.path().join("clash.yaml"), clash).unwrap();
    let err = fails(&s.kubectl(
        &k,
        &[
            "apply",
            "-f",
            s.dir.path().join("clash.yaml").to_str().unwrap(),
        ],
    ));
    assert!(
        err.contains("spec.clusterIPs") && err.contains("already allocated"),
        "{err}"
    );
}

#[test]
fn pods_resolve_services_and_statefulset_pods_through_cluster_dns() {
    let Some(k) = common::kubectl() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !common::required(),
            "cluster DNS needs root (port 53) and CAPSTAN_REQUIRE_EXTERNAL=1 is set"
        );
        eprintln!("SKIP: cluster DNS needs root (port 53)");
        return;
    }
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        &format!(
            "{}---\n{}",
            web(1),
            r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 2
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: db, image: none, command: ["sleep", "600"]}
"#
        ),
    );
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "statefulset/db", "--timeout=60s"],
    ));
    let web_ip = s
        .call("GET", "/api/v1/namespaces/default/services/web", "", "")
        .1["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let db1 = s
        .call("GET", "/api/v1/namespaces/default/pods/db-1", "", "")
        .1["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    within(LONG, "db-1 in the endpoints", || {
        let ep = s
            .call("GET", "/api/v1/namespaces/default/endpoints/db", "", "")
            .1;
        (ep.to_string().contains(&db1)).then_some(())
    });
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: resolver
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: resolver
        image: none
        command: ["bash", "-c", "getent hosts web.default.svc.cluster.local && getent hosts db-1.db && exec 3<>/dev/tcp/web/8080 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3"]
"#,
    );
    let done = s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/resolver",
            "--timeout=60s",
        ],
    );
    let log = ok(&s.kubectl(&k, &["logs", "job/resolver"]));
    assert!(done.status.success(), "{log}");
    assert!(
        log.contains(&web_ip),
        "the Service's name gives its ClusterIP: {log}"
    );
    assert!(
        log.contains(&db1),
        "a StatefulSet pod's name gives its address: {log}"
    );
    assert!(
        log.contains("200 OK"),
        "and the Service answers by name: {log}"
    );
}
