//! The official Kubernetes Python client against a real `capstan up`, as a new user of that library would use it:
//! exec with stdout, stderr, the exit code and interactive stdin (that client sends stdin as text frames), and an
//! informer running through a dozen watch timeouts. Needs `python3` with the `kubernetes` package (CI installs it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{python_client, within, Server};

const SCRIPT: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

# One-shot: stdout and stderr together, as the client returns them.
out = stream(v1.connect_get_namespaced_pod_exec, "shell", "default",
             command=["sh", "-c", "echo to-out; echo to-err >&2"],
             stderr=True, stdin=False, stdout=True, tty=False)
print("oneshot=" + repr(sorted(out.split())))

# Interactive: stdin written as text, lines read back, then the exit code.
resp = stream(v1.connect_get_namespaced_pod_exec, "shell", "default", command=["sh"],
              stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
resp.write_stdin("echo test string 1\n")
line = resp.readline_stdout(timeout=10)
print("line1=" + repr(line))
resp.write_stdin("echo test string 2 >&2\n")
line = resp.readline_stderr(timeout=10)
print("line2=" + repr(line))
resp.write_stdin("exit 3\n")
resp.run_forever(timeout=10)
print("code=" + repr(resp.returncode))
resp.close()
print("ok")
"#;

#[test]
fn exec_with_stdin_from_the_python_client() {
    if !python_client() {
        return;
    }
    let s = Server::up(&[]);
    let (code, v) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/pods"),
        "application/json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"shell"},"spec":{"terminationGracePeriodSeconds":1,"containers":[{"name":"c","image":"none","command":["sleep","600"]}]}}"#,
    );
    assert_eq!(code, 201, "{v}");
    within(Duration::from_secs(30), "the pod running", || {
        let (_, p) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/default/pods/shell"),
            "",
            "",
        );
        (p["status"]["phase"] == "Running").then_some(())
    });
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(s.kubeconfig())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}\n{err}");
    assert!(said.contains("oneshot=['to-err', 'to-out']"), "{said}");
    assert!(said.contains("line1='test string 1'"), "{said}");
    assert!(said.contains("line2='test string 2'"), "{said}");
    assert!(said.contains("code=3"), "{said}");
}

const INFORMER: &str = r#"
import sys, time
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
deadline = time.time() + float(sys.argv[2])
seen, errors, rounds = set(), [], 0
rv = v1.list_namespaced_config_map("default").metadata.resource_version
while time.time() < deadline:
    rounds += 1
    try:
        for ev in watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version=rv,
                                       timeout_seconds=3, allow_watch_bookmarks=True):
            rv = ev["object"].metadata.resource_version
            if ev["type"] == "ADDED":
                seen.add(ev["object"].metadata.name)
    except Exception as e:
        errors.append(repr(e))
print("seen=%d errors=%d rounds=%d" % (len(seen), len(errors), rounds))
for e in errors[:3]:
    print("error: " + e)
"#;

/// An informer of the Python client (list, then watches that the server ends every 3 s, resumed from the last
/// resourceVersion) runs for 40 s - a dozen watch timeouts - while objects are created: every one is seen, and no watch ends in an
/// error (a chunked response cut short reads as `Response ended prematurely` there).
#[test]
fn a_python_informer_runs_through_a_dozen_watch_timeouts_without_errors() {
    if !python_client() {
        return;
    }
    let s = Server::start();
    let run_for = 40;
    let informer = Command::new("python3")
        .args(["-c", INFORMER])
        .arg(s.kubeconfig())
        .arg(run_for.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut made = 0;
    std::thread::sleep(Duration::from_secs(2));
    while started.elapsed() < Duration::from_secs(run_for - 5) {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"inf-{made}"}}}}"#
        );
        let (code, v) = s.call(
            "POST",
            concat!("/", "api/v1/namespaces/default/configmaps"),
            "application/json",
            &body,
        );
        assert_eq!(code, 201, "{v}");
        made += 1;
        std::thread::sleep(Duration::from_millis(1000));
    }
    let out = informer.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kube-root-ca.crt is there from the start and listed, not added: the informer's adds are ours.
    assert!(
        said.contains(&format!("seen={made} errors=0")),
        "made {made}: {said}"
    );
}

const FORWARD: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

pf = portforward(v1.connect_get_namespaced_pod_portforward, "web", "default", ports="8080")
s = pf.socket(8080)
s.setblocking(True)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print("http=" + data.split(b"\r\n")[0].decode())
s.close()
pf.close()

pf = portforward(v1.connect_get_namespaced_pod_portforward, "web", "default", ports="9000")
e = pf.socket(9000)
e.setblocking(True)
e.sendall(b"hello echo\n")
got = b""
while not got.endswith(b"\n"):
    got += e.recv(100)
print("echo=" + got.decode().strip())
e.close()
pf.close()
"#;

/// port-forward from the Python client: HTTP to a pod's web server and raw bytes to a TCP echo server in it.
#[test]
fn port_forward_from_the_python_client_reaches_http_and_a_raw_tcp_echo() {
    if !python_client() {
        return;
    }
    let s = Server::up(&[]);
    let echo = "import os,socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((os.environ['POD_IP'],9000))\ns.listen()\nwhile True:\n  c,_=s.accept()\n  while True:\n    d=c.recv(4096)\n    if not d: break\n    c.sendall(d)\n  c.close()\n";
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "http", "image": "none", "command": ["capstan", "demo-app"],
             "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
            {"name": "echo", "image": "none", "command": ["python3", "-c", echo],
             "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}});
    let (code, v) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/pods"),
        "application/json",
        &pod.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    within(Duration::from_secs(30), "the pod running", || {
        let (_, p) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/default/pods/web"),
            "",
            "",
        );
        (p["status"]["phase"] == "Running").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let out = Command::new("python3")
        .args(["-c", FORWARD])
        .arg(s.kubeconfig())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}\n{err}");
    assert!(said.contains("http=HTTP/1.1 200"), "{said}");
    assert!(said.contains("echo=hello echo"), "{said}");
}
