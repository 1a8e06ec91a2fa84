//! The real kubectl against a real `capstan server`: apply with default validation, tables, round-trips, edits,
//! server-side apply, scale, watch, delete, `get all`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fails, ok, Server};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - name: GREETING
          valueFrom:
            configMapKeyRef:
              name: web-config
              key: greeting
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;

#[test]
fn kubectl_applies_reads_edits_scales_watches_and_deletes() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let f = file.to_str().unwrap();

    let out = ok(&s.kubectl(&k, &["apply", "-f", f]));
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );

    let table = ok(&s.kubectl(&k, &["get", "deploy,svc,cm", "-n", "shop"]));
    assert!(
        table.contains("NAME")
            && table.contains("READY")
            && table.contains("UP-TO-DATE")
            && table.contains("AVAILABLE"),
        "{table}"
    );
    assert!(
        table.contains("deployment.apps/web")
            && table.contains("TYPE")
            && table.contains("ClusterIP"),
        "{table}"
    );
    assert!(
        table.contains("configmap/web-config") && table.contains("DATA"),
        "{table}"
    );

    // Round trip: the YAML kubectl reads back re-applies cleanly and keeps the spec.
    let yaml = ok(&s.kubectl(&k, &["get", "deploy", "web", "-n", "shop", "-o", "yaml"]));
    assert!(
        yaml.contains("image: nginx:1.25") && yaml.contains("generation: 1"),
        "{yaml}"
    );
    let back = dir.path().join("back.yaml");
    std::fs::write(&back, &yaml).unwrap();
    ok(&s.kubectl(&k, &["replace", "-f", back.to_str().unwrap()]));

    // An edited file patches the object: generation 2.
    std::fs::write(&file, MANIFEST.replace("nginx:1.25", "nginx:1.26")).unwrap();
    let out = ok(&s.kubectl(&k, &["apply", "-f", f]));
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let gen = ok(&s.kubectl(
        &k,
        &[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].image}",
        ],
    ));
    assert_eq!(gen.trim(), "2 nginx:1.26");

    // Server-side apply.
    let ssa = dir.path().join("ssa.yaml");
    std::fs::write(&ssa, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: shop\ndata:\n  a: b\n").unwrap();
    let out = ok(&s.kubectl(&k, &["apply", "--server-side", "-f", ssa.to_str().unwrap()]));
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");

    // Scale.
    ok(&s.kubectl(
        &k,
        &["scale", "deploy", "web", "-n", "shop", "--replicas=5"],
    ));
    let r = ok(&s.kubectl(
        &k,
        &[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    ));
    assert_eq!(r.trim(), "5");

    // Watch shows changes made by another client.
    let mut watch = Command::new(&k)
        .env("KUBECONFIG", s.kubeconfig())
        .arg("--cache-dir")
        .arg(s.dir.path().join("kubectl-cache"))
        .args(["get", "pods", "-n", "shop", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // kubectl has listed (nothing yet) and is watching; another client makes changes.
    std::thread::sleep(Duration::from_millis(1000));
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"live"},
        "spec":{"containers":[{"name":"c","image":"busybox:1.36"}]}}"#;
    let (c, _) = s.call(
        "POST",
        "/api/v1/namespaces/shop/pods",
        "application/json",
        pod,
    );
    assert_eq!(c, 201);
    let label = r#"{"metadata":{"labels":{"x":"y"}}}"#;
    s.call(
        "PATCH",
        "/api/v1/namespaces/shop/pods/live",
        "application/merge-patch+json",
        label,
    );
    s.call("DELETE", "/api/v1/namespaces/shop/pods/live", "", "");
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("DELETED") {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("watch events missing; saw {seen:?}"));
        if line.split_whitespace().nth(1) == Some("live") {
            assert!(
                line.contains("Pending") || line.contains("Terminating"),
                "{line}"
            );
            seen.push(line.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    // (The scheduler may add MODIFIED events of its own: no node fits in this test.)
    assert_eq!(seen.first().map(String::as_str), Some("ADDED"), "{seen:?}");
    assert!(seen.iter().any(|e| e == "MODIFIED"), "{seen:?}");
    let _ = watch.kill();
    let _ = watch.wait();

    // get all lists the workload kinds.
    let all = ok(&s.kubectl(&k, &["get", "all", "-n", "shop"]));
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );

    // Bad input from kubectl is refused with the field named.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: shop\ndatta:\n  a: b\n").unwrap();
    let err = fails(&s.kubectl(&k, &["apply", "-f", bad.to_str().unwrap()]));
    assert!(err.contains("unknown field \"datta\""), "{err}");

    // Delete returns and the objects are gone.
    let out = ok(&s.kubectl(&k, &["delete", "-f", f]));
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = fails(&s.kubectl(&k, &["get", "deploy", "web", "-n", "shop"]));
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[test]
fn kubectl_names_kinds_capstan_does_not_serve() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hpa.yaml");
    std::fs::write(&file, "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: x\nspec:\n  maxReplicas: 3\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n").unwrap();
    let err = fails(&s.kubectl(&k, &["apply", "-f", file.to_str().unwrap()]));
    assert!(err.contains("HorizontalPodAutoscaler"), "{err}");
}

#[test]
fn kubectl_create_generators_work() {
    // These commands send Kubernetes protobuf, not JSON.
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    ok(&s.kubectl(&k, &["create", "namespace", "gen"]));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=3",
            "--port=80",
            "-n",
            "gen",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "configmap",
            "cfg",
            "--from-literal=greeting=hi",
            "-n",
            "gen",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=password=s3cret",
            "-n",
            "gen",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
            "-n",
            "gen",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "cronjob",
            "cj",
            "--image=busybox:1.36",
            "--schedule=*/5 * * * *",
            "-n",
            "gen",
            "--",
            "date",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &["create", "job", "--from=cronjob/cj", "manual", "-n", "gen"],
    ));
    let (_, d) = s.call(
        "GET",
        "/apis/apps/v1/namespaces/gen/deployments/web",
        "",
        "",
    );
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    let (_, c) = s.call("GET", "/api/v1/namespaces/gen/configmaps/cfg", "", "");
    assert_eq!(c["data"]["greeting"], "hi");
    let (_, p) = s.call("GET", "/api/v1/namespaces/gen/secrets/pw", "", "");
    assert_eq!(p["data"]["password"], "czNjcmV0");
    let (_, svc) = s.call("GET", "/api/v1/namespaces/gen/services/web", "", "");
    assert_eq!(
        (
            svc["spec"]["ports"][0]["port"].as_i64(),
            svc["spec"]["ports"][0]["targetPort"].as_i64()
        ),
        (Some(80), Some(8080))
    );
    let (_, j) = s.call("GET", "/apis/batch/v1/namespaces/gen/jobs/manual", "", "");
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["command"][0],
        "date"
    );
}
