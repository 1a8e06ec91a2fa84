//! The containerd runtime against a real containerd (root; Debian's containerd 1.6 and runc in CI): images built by
//! `capstan image build` from Debian's static busybox and imported with `capstan image import`, the image of the
//! capstan binary the agent imports itself, a registry served on loopback, and the real kubectl. The same scenarios
//! as on the process runtime - a Deployment behind a Service with probes, a rolling update, exec and logs - plus what
//! only real containers have: an image's root filesystem, PID 1, OOMKilled, image pulls and their back-off, and
//! containers outliving the agent.
#![cfg(feature = "containerd")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ok, within, Agent, Server};
use serde_json::Value;

const SELF_IMAGE: &str = capstan::image::SELF_IMAGE;
const BUSYBOX: &str = "capstan.local/busybox:test";

/// Whether containerd can be used here (root, its socket, Debian's static busybox); with
/// CAPSTAN_REQUIRE_EXTERNAL=1 a missing piece fails the test instead of skipping it.
fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() == 0 };
    let socket = Path::new("/run/containerd/containerd.sock").exists();
    let busybox = Path::new("/bin/busybox").exists();
    if root && socket && busybox {
        return true;
    }
    let why = format!(
        "containerd tests need root ({root}), a running containerd ({socket}) and /bin/busybox from busybox-static ({busybox})"
    );
    assert!(!common::required(), "{why} (CAPSTAN_REQUIRE_EXTERNAL=1)");
    eprintln!("SKIP: {why}");
    false
}

/// Builds a busybox image from the host's static busybox (`sh` and the applets used here as links) and imports it.
fn import_busybox(dir: &Path) {
    // One import at a time: parallel tests unpacking the same layers at once raced in containerd once (a
    // container's lower layer gone at mount time).
    static IMPORTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = IMPORTING.lock().unwrap_or_else(|e| e.into_inner());
    let tar = dir.join("busybox.tar");
    let mut args = vec![
        "image".to_string(),
        "build".into(),
        "--tag".into(),
        BUSYBOX.into(),
        "-o".into(),
        tar.display().to_string(),
        "--add".into(),
        "/bin/busybox:/bin/busybox".into(),
    ];
    for applet in [
        "sh", "echo", "sleep", "cat", "ls", "tail", "id", "hostname", "stty", "test", "tar",
        "nslookup",
    ] {
        args.extend(["--add".into(), format!("/bin/busybox:/bin/{applet}")]);
    }
    args.extend(["--".into(), "/bin/sh".into()]);
    ok(&Command::new(common::BIN).args(&args).output().unwrap());
    let out = ok(&Command::new(common::BIN)
        .args(["image", "import"])
        .arg(&tar)
        .output()
        .unwrap());
    assert!(out.contains("capstan.local/busybox:test"), "{out}");
}

fn containerd_up(extra: &[&str]) -> Server {
    let mut args = vec!["--runtime", "containerd"];
    args.extend_from_slice(extra);
    let s = Server::up(&args);
    import_busybox(s.dir.path());
    s
}

fn pod(s: &Server, ns: &str, name: &str) -> Value {
    s.call(
        "GET",
        &format!("/api/v1/namespaces/{ns}/pods/{name}"),
        "",
        "",
    )
    .1
}

/// The tasks containerd runs in Capstan's namespace: (container id, pid, status).
fn tasks() -> Vec<(String, String, String)> {
    let out = ok(&Command::new("ctr")
        .args(["-n", "capstan", "tasks", "ls"])
        .output()
        .expect("ctr (from the containerd package)"));
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn tasks_of(uid: &str) -> Vec<(String, String, String)> {
    tasks()
        .into_iter()
        .filter(|t| t.0.starts_with(uid))
        .collect()
}

fn get_json(url: &str) -> Option<Value> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?
        .get(url)
        .send()
        .ok()?
        .json()
        .ok()
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: IMAGE
        command: ["capstan", "demo-app"]
        env:
        - {name: VERSION, value: "v1"}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        ports:
        - {containerPort: 8080, name: http}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
        livenessProbe:
          exec:
            command: ["capstan", "demo-app", "--report", "alive"]
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: http}
"#;

const SHELL: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: capstan.local/busybox:test
    command: ["sh", "-c", "echo started in $(hostname) as $(id -u); while true; do sleep 1; done"]
    workingDir: /bin
    env:
    - {name: GREETING, value: "hello from the container"}
"#;

#[test]
fn deployment_service_probes_rollout_exec_and_logs_on_containerd() {
    if !available() {
        return;
    }
    let Some(k) = common::kubectl() else { return };
    capstan::sys::init_crypto();
    let s = containerd_up(&[]);
    s.kubectl_apply(&k, &WEB.replace("IMAGE", SELF_IMAGE));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    ));

    // Three real containers: each is PID 1 of its own PID namespace, on its own pod address, ready through its
    // HTTP probe and kept alive by an exec probe run inside it.
    let pods: Value = serde_json::from_str(&ok(
        &s.kubectl(&k, &["get", "pods", "-l", "app=web", "-o", "json"])
    ))
    .unwrap();
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for p in items {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let answer = within(Duration::from_secs(10), "the pod answers", || {
            get_json(&format!("http://{ip}:8080/"))
        });
        assert_eq!(answer["pid"], 1, "{answer}");
        assert_eq!(answer["version"], "v1");
        let cs = &p["status"]["containerStatuses"][0];
        assert!(
            cs["containerID"]
                .as_str()
                .unwrap()
                .starts_with("containerd://"),
            "{cs}"
        );
        let uid = p["metadata"]["uid"].as_str().unwrap();
        assert_eq!(tasks_of(uid).len(), 1, "one task per container");
    }
    // The liveness probe passes (an exec in each container), so nothing restarts.
    std::thread::sleep(Duration::from_secs(5));
    let pods: Value = serde_json::from_str(&ok(
        &s.kubectl(&k, &["get", "pods", "-l", "app=web", "-o", "json"])
    ))
    .unwrap();
    for p in pods["items"].as_array().unwrap() {
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    }

    // The Service spreads requests over the pods.
    let svc = s
        .call("GET", "/api/v1/namespaces/default/services/web", "", "")
        .1;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let a = get_json(&format!("http://{ip}:80/")).expect("the Service answers");
        seen.insert(a["podIP"].as_str().unwrap().to_string());
    }
    assert!(seen.len() >= 2, "requests reached only {seen:?}");

    // A rolling update replaces every container with the new version.
    ok(&s.kubectl(&k, &["set", "env", "deployment/web", "VERSION=v2"]));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    ));
    within(Duration::from_secs(20), "all answers are v2", || {
        (0..10)
            .all(|_| get_json(&format!("http://{ip}:80/")).is_some_and(|a| a["version"] == "v2"))
            .then_some(())
    });

    // exec and logs in a busybox container: its own root filesystem, environment, working directory and host name;
    // a ConfigMap volume and an emptyDir mounted in it.
    s.kubectl_apply(
        &k,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    );
    let with_volumes = format!(
        "{SHELL}    volumeMounts:\n    - {{name: settings, mountPath: /etc/settings, readOnly: true}}\n    - {{name: scratch, mountPath: /scratch}}\n  volumes:\n  - name: settings\n    configMap: {{name: settings}}\n  - name: scratch\n    emptyDir: {{}}\n"
    );
    s.kubectl_apply(&k, &with_volumes);
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/shell",
            "--timeout=60s",
        ],
    ));
    let out = ok(&s.kubectl(&k, &["exec", "shell", "--", "sh", "-c", "echo hi"]));
    assert_eq!(out, "hi\n");
    let out = ok(&s.kubectl(
        &k,
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo $GREETING; pwd; hostname; ls /",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello from the container");
    assert_eq!(lines[1], "/bin");
    assert_eq!(lines[2], "shell");
    assert!(
        !out.contains("usr") && !out.contains("home"),
        "the image's root only:\n{out}"
    );
    // The exec'd command is in the container's PID namespace (PID 1 is the container's command) and cgroups.
    let out = ok(&s.kubectl(&k, &["exec", "shell", "--", "cat", "/proc/1/cmdline"]));
    assert!(out.contains("started in"), "{out}");
    let id = pod(&s, "default", "shell")["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let out = ok(&s.kubectl(&k, &["exec", "shell", "--", "cat", "/proc/self/cgroup"]));
    assert!(out.contains(&format!("/capstan/{id}")), "{out}");
    let out = ok(&s.kubectl(
        &k,
        &[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "cat /etc/settings/mode; echo; echo kept > /scratch/f && cat /scratch/f; echo x > /etc/settings/y || echo read-only",
        ],
    ));
    assert_eq!(out, "fast\nkept\nread-only\n");
    let failed = s.kubectl(&k, &["exec", "shell", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failed.status.code(), Some(3));
    let logs = ok(&s.kubectl(&k, &["logs", "shell"]));
    assert_eq!(logs, "started in shell as 0\n");
    // kubectl cp rides on exec (tar in the container).
    let local = s.dir.path().join("note.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    ok(&s.kubectl(&k, &["cp", local.to_str().unwrap(), "shell:/note.txt"]));
    let out = ok(&s.kubectl(&k, &["exec", "shell", "--", "cat", "/note.txt"]));
    assert_eq!(out, "copied in\n");
    // The pod's resolv.conf points at cluster DNS: the Service resolves to its ClusterIP inside the container.
    let out = ok(&s.kubectl(
        &k,
        &[
            "exec",
            "shell",
            "--",
            "nslookup",
            "web.default.svc.cluster.local",
        ],
    ));
    assert!(out.contains(&ip), "{out}");
    exec_it(&s, &k);
}

/// `kubectl exec -it` gets an interactive shell in a terminal inside the container.
fn exec_it(s: &Server, k: &Path) {
    let mut t = common::Terminal::kubectl(s, k, &["exec", "-it", "shell", "--", "sh"]);
    t.send("stty size; echo sum-$((40+2)) in $(hostname)\r");
    t.wait_for("sum-42 in shell");
    t.wait_for("30 100");
    t.send("exit 4\r");
    assert_eq!(t.exit_code(), 4);
}

#[test]
fn a_container_past_its_memory_limit_is_oom_killed_and_restarted_per_policy() {
    if !available() {
        return;
    }
    let Some(k) = common::kubectl() else { return };
    let s = containerd_up(&[]);
    // `tail` of an endless line keeps all of it in memory.
    let hog = |name: &str, policy: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {policy}
  containers:
  - name: hog
    image: {BUSYBOX}
    command: ["sh", "-c", "echo eating; tail /dev/zero"]
    resources:
      limits: {{memory: 32Mi}}
"#
        )
    };
    s.kubectl_apply(&k, &hog("hog", "Always"));
    s.kubectl_apply(&k, &hog("hog-once", "Never"));
    let cs = within(
        Duration::from_secs(60),
        "hog OOMKilled and restarted",
        || {
            let p = pod(&s, "default", "hog");
            let cs = p["status"]["containerStatuses"][0].clone();
            (cs["restartCount"].as_i64() >= Some(1)
                && cs["lastState"]["terminated"]["reason"] == "OOMKilled")
                .then_some(cs)
        },
    );
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 137, "{cs}");
    let p = within(Duration::from_secs(60), "hog-once Failed", || {
        let p = pod(&s, "default", "hog-once");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let term = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{p}");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[test]
fn a_missing_image_gives_err_image_pull_then_image_pull_back_off() {
    if !available() {
        return;
    }
    let Some(k) = common::kubectl() else { return };
    let s = containerd_up(&[]);
    // A registry address on loopback where nothing listens: the pull fails at once, without leaving the machine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = format!("127.0.0.1:{port}/team/missing:v1");
    s.kubectl_apply(
        &k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing}}\nspec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
        ),
    );
    let mut reasons = Vec::new();
    within(
        Duration::from_secs(30),
        "ErrImagePull then ImagePullBackOff",
        || {
            let p = pod(&s, "default", "missing");
            let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            if let Some(r) = w["reason"].as_str() {
                assert!(
                    w["message"].as_str().unwrap_or("").contains(&image),
                    "the message names the image: {w}"
                );
                if reasons.last().map(String::as_str) != Some(r) {
                    reasons.push(r.to_string());
                }
            }
            (reasons.contains(&"ErrImagePull".to_string())
                && reasons.contains(&"ImagePullBackOff".to_string()))
            .then_some(())
        },
    );
    assert_eq!(
        reasons[..2],
        ["ErrImagePull", "ImagePullBackOff"],
        "{reasons:?}"
    );
    let events = ok(&s.kubectl(
        &k,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=missing",
        ],
    ));
    assert!(
        events.contains(&format!("Failed to pull image \"{image}\"")),
        "{events}"
    );

    // imagePullPolicy: Never and the image is not here.
    s.kubectl_apply(
        &k,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec:\n  containers:\n  - {name: app, image: capstan.local/not-here:v1, imagePullPolicy: Never}\n",
    );
    let w = within(Duration::from_secs(30), "ErrImageNeverPull", || {
        let p = pod(&s, "default", "never");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImageNeverPull").then_some(w)
    });
    assert!(
        w["message"]
            .as_str()
            .unwrap()
            .contains("capstan.local/not-here:v1"),
        "{w}"
    );
}

/// Serves the image in `tar` as a registry on 127.0.0.1 (OCI distribution API: manifests by tag and digest,
/// blobs) that wants HTTP basic authentication as `login`; returns its port.
fn serve_registry(tar: PathBuf, repo: &'static str, tag: &'static str, login: &'static str) -> u16 {
    use axum::extract::{Path as P, State};
    use axum::response::IntoResponse;
    let data = std::fs::read(tar).unwrap();
    let files = capstan::image::read_archive(&data).unwrap();
    let loaded = capstan::image::load(files).unwrap();
    let manifest = loaded.images[0].1.clone();
    let blobs = std::sync::Arc::new(loaded.blobs);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            type St = (
                std::sync::Arc<std::collections::BTreeMap<String, Vec<u8>>>,
                String,
            );
            let app = axum::Router::new()
                .route(
                    &format!("/v2/{repo}/manifests/{{object}}"),
                    axum::routing::get(
                        move |State((b, m)): State<St>, P(o): P<String>| async move {
                            let key = if o == tag { m } else { o };
                            match b.get(&key) {
                                Some(d) => {
                                    ([("content-type", capstan::image::OCI_MANIFEST)], d.clone())
                                        .into_response()
                                }
                                None => axum::http::StatusCode::NOT_FOUND.into_response(),
                            }
                        },
                    ),
                )
                .route(
                    &format!("/v2/{repo}/blobs/{{digest}}"),
                    axum::routing::get(|State((b, _)): State<St>, P(d): P<String>| async move {
                        b.get(&d).cloned().ok_or(axum::http::StatusCode::NOT_FOUND)
                    }),
                )
                .with_state((blobs, manifest));
            let expected = {
                use base64::Engine;
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(login)
                )
            };
            let app = app.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let authorized = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|h| h.as_bytes() == expected.as_bytes());
                    async move {
                        if authorized {
                            next.run(req).await
                        } else {
                            (
                                axum::http::StatusCode::UNAUTHORIZED,
                                [("www-authenticate", "Basic realm=\"capstan-test\"")],
                            )
                                .into_response()
                        }
                    }
                },
            ));
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

#[test]
fn an_image_is_pulled_from_a_registry_with_a_login_and_run() {
    if !available() {
        return;
    }
    let Some(k) = common::kubectl() else { return };
    let s = containerd_up(&[]);
    // A second image, only in the registry.
    let tar = s.dir.path().join("pulled.tar");
    ok(&Command::new(common::BIN)
        .args(["image", "build", "--tag", "team/pulled:v1", "-o"])
        .arg(&tar)
        .args([
            "--add",
            "/bin/busybox:/bin/busybox",
            "--add",
            "/bin/busybox:/bin/sh",
            "--env",
            "FROM_IMAGE=yes",
            "--",
            "/bin/sh",
            "-c",
            "echo pulled image, FROM_IMAGE=$FROM_IMAGE",
        ])
        .output()
        .unwrap());
    let port = serve_registry(tar, "team/pulled", "v1", "puller:s3cret");
    let image = format!("127.0.0.1:{port}/team/pulled:v1");
    // Without a login the registry refuses.
    s.kubectl_apply(
        &k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: refused}}\nspec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
        ),
    );
    let w = within(
        Duration::from_secs(30),
        "ErrImagePull for want of a login",
        || {
            let p = pod(&s, "default", "refused");
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            w["message"]
                .as_str()
                .is_some_and(|m| m.contains("401"))
                .then_some(w)
        },
    );
    assert!(w["message"].as_str().unwrap().contains(&image), "{w}");
    // With the login in a docker-registry Secret (made by kubectl) named in imagePullSecrets, it pulls.
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server=127.0.0.1:{port}"),
            "--docker-username=puller",
            "--docker-password=s3cret",
        ],
    ));
    s.kubectl_apply(
        &k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  restartPolicy: Never\n  imagePullSecrets: [{{name: regcred}}]\n  containers:\n  - {{name: app, image: \"{image}\"}}\n"
        ),
    );
    // Two minutes: a pull that failed is retried after 10, 20 and 40 s.
    let mut last = Value::Null;
    let ran = common::try_within(Duration::from_secs(120), || {
        last = pod(&s, "default", "pulled");
        (last["status"]["phase"] == "Succeeded").then_some(())
    });
    if ran.is_none() {
        let events = s.kubectl(&k, &["get", "events", "-o", "wide"]);
        panic!(
            "the pulled image did not run in 120 s; the pod: {last:#}\nevents:\n{}",
            String::from_utf8_lossy(&events.stdout)
        );
    }
    // The image's entrypoint and environment were used (no command in the pod).
    let logs = ok(&s.kubectl(&k, &["logs", "pulled"]));
    assert_eq!(logs, "pulled image, FROM_IMAGE=yes\n");
}

#[test]
fn a_killed_agent_leaves_containers_running_and_a_new_one_adopts_them() {
    if !available() {
        return;
    }
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let mut agent = Agent::start(&s, "node-c", &["--runtime", "containerd"]);
    import_busybox(s.dir.path());
    s.kubectl_apply(&k, SHELL);
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/shell",
            "--timeout=90s",
        ],
    ));
    let node = s.call("GET", "/api/v1/nodes/node-c", "", "").1;
    let version = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap();
    assert!(version.starts_with("containerd://1."), "{version}");
    let before = pod(&s, "default", "shell");
    let uid = before["metadata"]["uid"].as_str().unwrap().to_string();
    let id = before["status"]["containerStatuses"][0]["containerID"].clone();
    let task = tasks_of(&uid);
    assert_eq!(task.len(), 1);

    let port = |s: &Server| {
        s.call("GET", "/api/v1/nodes/node-c", "", "").1["status"]["daemonEndpoints"]
            ["kubeletEndpoint"]["Port"]
            .clone()
    };
    let old_port = port(&s);
    agent.kill9();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        tasks_of(&uid),
        task,
        "the container runs on without its agent"
    );
    // With the agent gone, exec says why it cannot work (and kubectl's SPDY fallback does not hide it).
    let gone = common::fails(&s.kubectl(&k, &["exec", "shell", "--", "echo", "x"]));
    assert!(gone.contains("reaching the agent of node node-c"), "{gone}");

    let again = Agent::start(&s, "node-c", &["--runtime", "containerd"]);
    // The new agent has registered (its endpoint replaced the old one's).
    within(Duration::from_secs(60), "the new agent registered", || {
        (port(&s) != old_port).then_some(())
    });
    // The new agent reports the same container: same id, no restart, one task with the same pid.
    within(Duration::from_secs(60), "the container adopted", || {
        let p = pod(&s, "default", "shell");
        let cs = &p["status"]["containerStatuses"][0];
        (cs["ready"] == true && cs["containerID"] == id).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = pod(&s, "default", "shell");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(
        tasks_of(&uid),
        task,
        "nothing duplicated, nothing restarted"
    );
    // exec reaches the adopted container through the new agent (once its pod worker has taken the pod up).
    within(
        Duration::from_secs(30),
        "exec through the new agent",
        || {
            let out = s.kubectl(&k, &["exec", "shell", "--", "echo", "still here"]);
            (out.status.success() && out.stdout == b"still here\n").then_some(())
        },
    );

    ok(&s.kubectl(&k, &["delete", "pod", "shell", "--wait=true"]));
    within(Duration::from_secs(30), "the task is gone", || {
        tasks_of(&uid).is_empty().then_some(())
    });
    drop(again);
}

#[test]
fn up_runs_the_example_repository_on_containerd() {
    if !available() {
        return;
    }
    capstan::sys::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo");
    let mut child = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", repo.to_str().unwrap(), "--runtime", "containerd"])
        .args(["--listen", "127.0.0.1:0"])
        .args(common::ranges(&["up"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let kc = dir.path().join("kubeconfig");
    within(Duration::from_secs(20), "the kubeconfig", || {
        kc.exists().then_some(())
    });
    let pods = within(Duration::from_secs(120), "two Ready demo pods", || {
        let out = Command::new(common::BIN)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "pods", "-n", "demo", "-l", "app=hello", "-o", "json"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let items = v["items"].as_array()?.clone();
        let ready = items
            .iter()
            .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
            .count();
        (ready == 2).then_some(items)
    });
    let mut uids = Vec::new();
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let answer = within(Duration::from_secs(10), "the demo answers", || {
            get_json(&format!("http://{ip}:8080/"))
        });
        assert_eq!(answer["message"], "Hello from Capstan");
        assert_eq!(answer["pid"], 1, "a container of its own: {answer}");
        let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
        assert_eq!(tasks_of(&uid).len(), 1);
        uids.push(uid);
    }
    // Ctrl-C stops the containers before capstan exits.
    common::terminate(&mut child, Duration::from_secs(30));
    for uid in uids {
        assert!(
            tasks_of(&uid).is_empty(),
            "containers of {uid} left running"
        );
    }
}
