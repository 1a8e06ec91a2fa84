//! The audit log with the real kubectl: `capstan server --audit-log FILE` writes one audit.k8s.io/v1 Event per
//! request - who (user and groups, the impersonated user), what (verb, resource, namespace, name) and the response
//! code - and never a Secret's value.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{fails, ok, within, Server, BIN};
use serde_json::Value;

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn every_request_is_audited_with_who_what_and_the_outcome() {
    let Some(k) = common::kubectl() else { return };
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.log");
    let s = Server::start_with(&["--audit-log", path.to_str().unwrap()]);
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2-audited",
        ],
    ));
    // Alice, with a certificate and no rights, is refused.
    let alice = s.data_dir().join("alice.kubeconfig");
    ok(&Command::new(BIN)
        .arg("--data-dir")
        .arg(s.data_dir())
        .args([
            "kubeconfig",
            "create",
            "--user",
            "alice",
            "--group",
            "team-a",
            "-o",
        ])
        .arg(&alice)
        .output()
        .unwrap());
    let cache = tempfile::tempdir().unwrap();
    let refused = fails(
        &Command::new(&k)
            .env("KUBECONFIG", &alice)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["get", "secret", "db"])
            .output()
            .unwrap(),
    );
    assert!(refused.contains("forbidden"), "{refused}");
    // The admin acting as alice.
    let _ = s.kubectl(&k, &["get", "configmaps", "--as", "alice"]);

    let found = within(Duration::from_secs(10), "the events in the log", || {
        let all = events(&path);
        let created = all.iter().find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "secrets"
                && e["responseStatus"]["code"] == 201
        })?;
        let denied = all.iter().find(|e| {
            e["user"]["username"] == "alice"
                && e["objectRef"]["name"] == "db"
                && e["responseStatus"]["code"] == 403
        })?;
        let impersonated = all.iter().find(|e| {
            e["impersonatedUser"]["username"] == "alice"
                && e["objectRef"]["resource"] == "configmaps"
        })?;
        Some((created.clone(), denied.clone(), impersonated.clone()))
    });
    let (created, denied, impersonated) = found;
    assert_eq!(created["user"]["username"], "capstan-admin");
    assert_eq!(created["objectRef"]["namespace"], "default");
    assert_eq!(created["objectRef"]["apiVersion"], "v1");
    assert_eq!(created["kind"], "Event");
    assert_eq!(created["apiVersion"], "audit.k8s.io/v1");
    assert!(
        created["userAgent"]
            .as_str()
            .unwrap_or("")
            .starts_with("kubectl"),
        "{created}"
    );
    assert_eq!(created["sourceIPs"][0], "127.0.0.1");
    assert_eq!(denied["verb"], "get");
    assert!(denied["user"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "team-a"));
    assert_eq!(impersonated["user"]["username"], "capstan-admin");
    assert_eq!(impersonated["responseStatus"]["code"], 403);
    // Bodies are not logged: the Secret's value is nowhere in it.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVyMi"),
        "a secret in the audit log"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn the_control_plane_components_act_as_their_own_users() {
    let Some(k) = common::kubectl() else { return };
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.log");
    let s = Server::up(&["--audit-log", path.to_str().unwrap()]);
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "deployment",
            "web",
            "--image=none",
            "--",
            "sleep",
            "600",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
    // Who wrote what: the ReplicaSet's pod by the controller manager, its binding by the scheduler, its status
    // by the node.
    let by = |all: &[Value], resource: &str, sub: &str, verb: &str| -> Option<String> {
        all.iter()
            .find(|e| {
                e["objectRef"]["resource"] == resource
                    && e["objectRef"]["subresource"].as_str().unwrap_or("") == sub
                    && e["verb"] == verb
                    && e["responseStatus"]["code"]
                        .as_u64()
                        .is_some_and(|c| c < 300)
            })
            .and_then(|e| e["user"]["username"].as_str().map(String::from))
    };
    let (pods, binding, status) = within(Duration::from_secs(10), "the components' writes", || {
        let all = events(&path);
        Some((
            by(&all, "pods", "", "create")?,
            by(&all, "pods", "binding", "create")?,
            by(&all, "pods", "status", "patch").or_else(|| by(&all, "pods", "status", "update"))?,
        ))
    });
    assert_eq!(pods, "system:kube-controller-manager");
    assert_eq!(binding, "system:kube-scheduler");
    assert_eq!(status, "system:node:node-a");
}
