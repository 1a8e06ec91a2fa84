//! Pod security end to end on a real `capstan up`: the process runtime runs a container as its `runAsUser` and
//! groups, refuses `runAsNonRoot` for a root container with the kubelet's reason, makes the root filesystem
//! read-only, and gives containers only the default capabilities (plus `add`, minus `drop`); Pod Security
//! Admission refuses pods that break a namespace's `enforce` level in Kubernetes' words and warns for `warn`.

mod common;

use std::time::Duration;

use common::{ok, within, Server};
use serde_json::Value;

fn pod(s: &Server, name: &str) -> Value {
    s.call(
        "GET",
        &format!("{}/{name}", concat!("/", "api/v1/namespaces/default/pods")),
        "",
        "",
    )
    .1
}

/// The output of a pod that runs `script` once, with `security` (YAML flow maps) at pod and container level.
fn run(
    s: &Server,
    k: &std::path::Path,
    name: &str,
    pod_sc: &str,
    sc: &str,
    script: &str,
) -> String {
    s.kubectl_apply(
        k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  securityContext: {pod_sc}\n  containers:\n  - name: c\n    image: none\n    securityContext: {sc}\n    command: [bash, -c, {script:?}]\n"
        ),
    );
    within(Duration::from_secs(60), "the pod to finish", || {
        let p = pod(s, name);
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(())
    });
    let out = s.kubectl(k, &["logs", name]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The waiting reason and message of a pod's container once it has one.
fn waiting(s: &Server, name: &str) -> (String, String) {
    within(Duration::from_secs(60), "the container waiting", || {
        let p = pod(s, name);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        let reason = w["reason"].as_str()?;
        (reason != "ContainerCreating").then(|| {
            (
                reason.to_string(),
                w["message"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

#[test]
fn containers_run_with_their_security_context() {
    let Some(k) = common::kubectl() else { return };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let s = Server::up(&[]);
    if root {
        let out = run(
            &s,
            &k,
            "as-user",
            "{runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000]}",
            "{}",
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)",
        );
        assert!(out.contains("uid=1000 gid=3000"), "{out}");
        assert!(out.contains("4000"), "{out}");
        // Only the default capabilities, and NET_ADMIN when added.
        let caps = run(&s, &k, "caps", "{}", "{}", "grep CapBnd /proc/self/status");
        assert!(caps.contains("00000000a80425fb"), "{caps}");
        let added = run(
            &s,
            &k,
            "caps-added",
            "{}",
            "{capabilities: {add: [NET_ADMIN], drop: [KILL]}}",
            "grep CapBnd /proc/self/status",
        );
        assert!(added.contains("00000000a80435db"), "{added}");
        // A read-only root filesystem.
        let ro = run(
            &s,
            &k,
            "read-only",
            "{}",
            "{readOnlyRootFilesystem: true}",
            "touch /var/tmp/capstan-ro-$$ 2>&1 || echo refused",
        );
        assert!(
            ro.contains("Read-only file system") && ro.contains("refused"),
            "{ro}"
        );
        // runAsNonRoot with a container that would run as root: the kubelet's reason, nothing started.
        s.kubectl_apply(
            &k,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: nonroot}\nspec:\n  securityContext: {runAsNonRoot: true}\n  containers:\n  - {name: c, image: none, command: [sleep, '60']}\n",
        );
        let (reason, message) = waiting(&s, "nonroot");
        assert_eq!(reason, "CreateContainerConfigError");
        let uid = pod(&s, "nonroot")["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            format!("container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)")
        );
    } else {
        // Without root the process runtime cannot switch users, and says so.
        s.kubectl_apply(
            &k,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: as-user}\nspec:\n  securityContext: {runAsUser: 4242}\n  containers:\n  - {name: c, image: none, command: [sleep, '60']}\n",
        );
        let (reason, message) = waiting(&s, "as-user");
        assert_eq!(reason, "CreateContainerError");
        assert!(
            message.contains("only when the agent runs as root"),
            "{message}"
        );
    }
    // runAsUser 0 with runAsNonRoot: refused either way.
    s.kubectl_apply(
        &k,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: zero}\nspec:\n  containers:\n  - name: c\n    image: none\n    command: [sleep, '60']\n    securityContext: {runAsNonRoot: true, runAsUser: 0}\n",
    );
    let (reason, message) = waiting(&s, "zero");
    assert_eq!(reason, "CreateContainerConfigError", "{message}");
    assert!(
        message.contains("container has runAsNonRoot and image will run as root"),
        "{message}"
    );
}

#[test]
fn pod_security_admission_enforces_and_warns_by_namespace_label() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    ok(&s.kubectl(&k, &["create", "namespace", "locked"]));
    ok(&s.kubectl(
        &k,
        &[
            "label",
            "namespace",
            "locked",
            "pod-security.kubernetes.io/enforce=baseline",
            "pod-security.kubernetes.io/warn=restricted",
        ],
    ));
    let refused = common::fails(&s.kubectl(
        &k,
        &[
            "-n",
            "locked",
            "run",
            "root",
            "--image=none",
            "--privileged",
            "--command",
            "--",
            "sleep",
            "60",
        ],
    ));
    assert!(
        refused.contains(r#"pods "root" is forbidden: violates PodSecurity "baseline:latest": privileged (container "root" must not set securityContext.privileged=true)"#),
        "{refused}"
    );
    // A baseline pod is admitted, with restricted's warning.
    let out = s.kubectl(
        &k,
        &[
            "-n",
            "locked",
            "run",
            "plain",
            "--image=none",
            "--command",
            "--",
            "sleep",
            "60",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let warned = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        warned.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#),
        "{warned}"
    );
    // A Deployment whose pods would be refused is stored with a warning (its pods are what is refused).
    let out = s.kubectl(
        &k,
        &[
            "-n",
            "locked",
            "create",
            "deployment",
            "hostnet",
            "--image=none",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let patched = s.kubectl(
        &k,
        &[
            "-n",
            "locked",
            "patch",
            "deployment",
            "hostnet",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"hostNetwork":true}}}}"#,
        ],
    );
    let warned = String::from_utf8_lossy(&patched.stderr).to_string();
    assert!(
        warned.contains(
            r#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{warned}"
    );
    // The default namespace has no label: anything goes.
    ok(&s.kubectl(
        &k,
        &[
            "run",
            "free",
            "--image=none",
            "--privileged",
            "--command",
            "--",
            "sleep",
            "60",
        ],
    ));
}
