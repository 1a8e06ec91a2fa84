//! `kubectl exec` and `kubectl cp` against a real `capstan up`: the real kubectl speaks WebSocket
//! (`v5.channel.k8s.io`) to the API server, which relays to the node agent running the command in the container -
//! its environment, working directory and (as root) its network and mount namespaces. An interactive shell runs in
//! a real pseudo-terminal. `capstan port-forward` carries a local port to the pod over `pods/portforward`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{ok, Server};
use serde_json::Value;

fn pod_yaml() -> &'static str {
    r#"apiVersion: v1
kind: Pod
metadata:
  name: box
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: capstan/demo-app
    command: ["capstan", "demo-app"]
    workingDir: /tmp
    env:
    - {name: GREETING, value: "hello from the container"}
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
  - name: idle
    image: none
    command: ["sleep", "600"]
"#
}

fn running(s: &Server, k: &std::path::Path) -> Value {
    s.kubectl_apply(k, pod_yaml());
    ok(&s.kubectl(
        k,
        &["wait", "--for=condition=Ready", "pod/box", "--timeout=60s"],
    ));
    s.call("GET", "/api/v1/namespaces/default/pods/box", "", "")
        .1
}

#[test]
fn kubectl_exec_runs_commands_in_the_container_with_streams_and_exit_codes() {
    let Some(k) = common::kubectl() else { return };
    capstan::sys::init_crypto();
    let s = Server::up(&[]);
    let pod = running(&s, &k);

    // stdout and stderr apart, the container's environment and working directory.
    let out = s.kubectl(
        &k,
        &[
            "exec",
            "box",
            "-c",
            "web",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd; echo oops >&2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the container\n/tmp\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // The exit code comes back.
    let out = s.kubectl(
        &k,
        &["exec", "box", "-c", "web", "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit code 3"));

    // stdin.
    let mut child = Command::new(&k)
        .args(["--cache-dir"])
        .arg(s.dir.path().join("kubectl-cache"))
        .args(["exec", "-i", "box", "-c", "web", "--", "tr", "a-z", "A-Z"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");

    // The command shares the container's network namespace (its own one under the bridge network, as root).
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let hello: Value = reqwest::blocking::get(format!("http://{ip}:8080/"))
        .unwrap()
        .json()
        .unwrap();
    let main_ns = std::fs::read_link(format!("/proc/{}/ns/net", hello["pid"]))
        .unwrap()
        .display()
        .to_string();
    let out = ok(&s.kubectl(
        &k,
        &[
            "exec",
            "box",
            "-c",
            "web",
            "--",
            "readlink",
            "/proc/self/ns/net",
        ],
    ));
    assert_eq!(out.trim(), main_ns);

    // kubectl cp rides on exec (tar through stdin/stdout), both ways.
    let local = s.dir.path().join("note.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    let target = format!("/tmp/capstan-cp-{}.txt", std::process::id());
    ok(&s.kubectl(
        &k,
        &[
            "cp",
            local.to_str().unwrap(),
            &format!("box:{target}"),
            "-c",
            "web",
        ],
    ));
    let out = ok(&s.kubectl(&k, &["exec", "box", "-c", "web", "--", "cat", &target]));
    assert_eq!(out, "copied in\n");
    let back = s.dir.path().join("back.txt");
    ok(&s.kubectl(
        &k,
        &[
            "cp",
            &format!("box:{target}"),
            back.to_str().unwrap(),
            "-c",
            "web",
        ],
    ));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    let _ = std::fs::remove_file(&target);

    // Errors name what is wrong.
    let out = s.kubectl(&k, &["exec", "box", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
    let out = s.kubectl(&k, &["exec", "box", "--", "true"]);
    assert!(
        out.status.success(),
        "the first container by default: {out:?}"
    );
}

#[test]
fn kubectl_exec_it_gets_an_interactive_shell_in_a_terminal() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    running(&s, &k);
    let mut t =
        common::Terminal::kubectl(&s, &k, &["exec", "-it", "box", "-c", "idle", "--", "sh"]);
    // A terminal of the size kubectl's own terminal has, and arithmetic only the shell can do.
    t.send("stty size; echo sum-$((40+2)); tty\r");
    t.wait_for("sum-42");
    t.wait_for("30 100");
    t.wait_for("/dev/pts/");
    t.send("exit 4\r");
    assert_eq!(t.exit_code(), 4);
}

#[test]
fn capstan_exec_speaks_the_same_protocol() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    running(&s, &k);
    let out = s.capstan(&[
        "exec",
        "box",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; echo oops >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the container\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let mut child = Command::new(common::BIN)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["exec", "-i", "box", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"quiet\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first container by default: {out:?}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "QUIET\n");
    let out = s.capstan(&["exec", "ghost", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pods \"ghost\" not found"),
        "{out:?}"
    );
}

/// `capstan port-forward`: a local port carries HTTP to the pod's web server over `pods/portforward`, one
/// connection after another.
#[test]
fn capstan_port_forward_carries_http_to_the_pod() {
    use std::io::{BufRead, BufReader, Read};
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    running(&s, &k);
    let mut fwd = Command::new(common::BIN)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["port-forward", "pod/box", ":8080"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fwd.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let local = line
        .strip_prefix("Forwarding from ")
        .and_then(|l| l.split(" -> ").next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    for _ in 0..2 {
        let mut conn = std::net::TcpStream::connect(&local).unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let _ = fwd.kill();
    let _ = fwd.wait();
}

/// Starts `kubectl port-forward ARGS` (with `env`), returns it and the local address of its first forwarded port.
fn kubectl_forward(
    s: &Server,
    k: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(k);
    cmd.env("KUBECONFIG", s.kubeconfig())
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("port-forward")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, v) in env {
        cmd.env(key, v);
    }
    let mut fwd = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(fwd.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let local = line
        .strip_prefix("Forwarding from ")
        .and_then(|l| l.split(" -> ").next())
        .unwrap_or_else(|| {
            let _ = fwd.kill();
            let mut err = String::new();
            use std::io::Read;
            let _ = fwd.stderr.as_mut().unwrap().read_to_string(&mut err);
            panic!("kubectl port-forward said {line:?}; stderr: {err}")
        })
        .to_string();
    std::mem::forget(cache);
    (fwd, local)
}

fn http_get(local: &str, path: &str) -> String {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

/// The real `kubectl port-forward`: SPDY tunnelled in a WebSocket (kubectl 1.31+'s default) and, with WebSockets
/// turned off, the SPDY upgrade older kubectl speaks - connections one after another and at once, a pod port with
/// nothing behind it reported as kubectl reports it, and `svc/` and `deploy/` targets.
#[test]
fn kubectl_port_forward_carries_connections_to_the_pod() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    running(&s, &k);
    for env in [vec![], vec![("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]] {
        let (mut fwd, local) = kubectl_forward(&s, &k, &["pod/box", ":8080"], &env);
        for _ in 0..3 {
            let answer = http_get(&local, "/healthz");
            assert!(answer.starts_with("HTTP/1.1 200"), "{env:?}: {answer}");
        }
        let at_once: Vec<_> = (0..8)
            .map(|_| {
                let local = local.clone();
                std::thread::spawn(move || http_get(&local, "/healthz"))
            })
            .collect();
        for t in at_once {
            let answer = t.join().unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{env:?}: {answer}");
        }
        let _ = fwd.kill();
        let _ = fwd.wait();
    }

    // A megabyte each way through a TCP echo server in a pod (more than SPDY's initial window of 64 KiB).
    let echo = "import os,socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((os.environ['POD_IP'],9000))\ns.listen()\nwhile True:\n  c,_=s.accept()\n  while True:\n    d=c.recv(65536)\n    if not d: break\n    c.sendall(d)\n  c.close()\n";
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "echo", "image": "none", "command": ["python3", "-c", echo],
             "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}});
    s.kubectl_apply(&k, &pod.to_string());
    ok(&s.kubectl(
        &k,
        &["wait", "--for=condition=Ready", "pod/echo", "--timeout=60s"],
    ));
    std::thread::sleep(std::time::Duration::from_millis(500));
    for env in [vec![], vec![("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]] {
        use std::io::Read;
        let (mut fwd, local) = kubectl_forward(&s, &k, &["pod/echo", ":9000"], &env);
        let sent: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut conn = std::net::TcpStream::connect(&local).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut writer = conn.try_clone().unwrap();
        let payload = sent.clone();
        let w = std::thread::spawn(move || writer.write_all(&payload).unwrap());
        let mut got = vec![0u8; sent.len()];
        conn.read_exact(&mut got).unwrap();
        w.join().unwrap();
        assert!(got == sent, "{env:?}: the echo differs");
        let _ = fwd.kill();
        let _ = fwd.wait();
    }

    // Nothing listens on 9: the connection closes and kubectl names the port and the cause.
    let (mut fwd, local) = kubectl_forward(&s, &k, &["pod/box", ":9"], &[]);
    assert_eq!(http_get(&local, "/"), "");
    // kubectl reports the error and gives up the session ("lost connection to pod").
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fwd.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = fwd.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = fwd.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("-> 9: error forwarding port 9 to pod") && said.contains("refused"),
        "{said}"
    );

    // kubectl finds the pod behind a Service (its targetPort) and a Deployment.
    s.kubectl_apply(
        &k,
        r#"apiVersion: v1
kind: Service
metadata: {name: box}
spec:
  selector: {app: box}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: capstan/demo-app
        command: ["capstan", "demo-app"]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
"#,
    );
    ok(&s.kubectl(&k, &["label", "pod", "box", "app=box"]));
    let (mut fwd, local) = kubectl_forward(&s, &k, &["svc/box", ":80"], &[]);
    assert!(http_get(&local, "/healthz").starts_with("HTTP/1.1 200"));
    let _ = fwd.kill();
    let _ = fwd.wait();
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    let (mut fwd, local) = kubectl_forward(&s, &k, &["deploy/web", ":8080"], &[]);
    assert!(http_get(&local, "/healthz").starts_with("HTTP/1.1 200"));
    let _ = fwd.kill();
    let _ = fwd.wait();
}
