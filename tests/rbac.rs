//! Authorization with the real kubectl: RBAC as Kubernetes defines it (a team's RoleBinding to `edit` in its
//! namespace, Kubernetes' 403 messages, `kubectl auth can-i` and `--list`, a ClusterRole aggregated into `view`,
//! escalation prevention, impersonation) and the node authorizer (a node's credential cannot delete a namespace,
//! change another Node, or read the Secret of a pod on another node).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fails, ok, Server, BIN};

/// A kubeconfig for `user` (in `group`), with a client certificate of the cluster CA.
fn user(s: &Server, name: &str, group: Option<&str>) -> PathBuf {
    let file = s
        .data_dir()
        .join(format!("{}.kubeconfig", name.replace(':', "-")));
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(s.data_dir())
        .args(["kubeconfig", "create", "--user", name, "-o"])
        .arg(&file);
    if let Some(g) = group {
        cmd.args(["--group", g]);
    }
    ok(&cmd.output().unwrap());
    file
}

fn as_user(k: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(k)
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_team_works_in_its_namespace_and_is_refused_elsewhere_in_kubernetes_words() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    ok(&s.kubectl(&k, &["create", "namespace", "a"]));
    ok(&s.kubectl(&k, &["create", "namespace", "b"]));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "rolebinding",
            "team-a-edit",
            "--clusterrole=edit",
            "--group=team-a",
            "-n",
            "a",
        ],
    ));
    let alice = user(&s, "alice", Some("team-a"));
    ok(&as_user(
        &k,
        &alice,
        &["-n", "a", "create", "deployment", "web", "--image=nginx"],
    ));
    ok(&as_user(
        &k,
        &alice,
        &[
            "-n",
            "a",
            "create",
            "configmap",
            "settings",
            "--from-literal=x=1",
        ],
    ));
    let refused = fails(&as_user(&k, &alice, &["-n", "b", "get", "secrets"]));
    assert!(
        refused.contains(
            "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"b\""
        ),
        "{refused}"
    );
    let refused = fails(&as_user(
        &k,
        &alice,
        &["-n", "b", "create", "deployment", "web", "--image=nginx"],
    ));
    assert!(
        refused.contains("cannot create resource \"deployments\" in API group \"apps\""),
        "{refused}"
    );
    assert_eq!(
        ok(&as_user(
            &k,
            &alice,
            &["auth", "can-i", "create", "deployments", "-n", "a"]
        ))
        .trim(),
        "yes"
    );
    let no = as_user(&k, &alice, &["auth", "can-i", "list", "secrets", "-n", "b"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert!(!no.status.success());
    let list = ok(&as_user(
        &k,
        &alice,
        &["auth", "can-i", "--list", "-n", "a"],
    ));
    assert!(
        list.contains("deployments.apps") && list.contains("selfsubjectaccessreviews"),
        "{list}"
    );

    // A ClusterRole labelled to aggregate into `view` extends everyone who holds `view`.
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "clusterrolebinding",
            "bob-view",
            "--clusterrole=view",
            "--user=bob",
        ],
    ));
    let bob = user(&s, "bob", None);
    fails(&as_user(&k, &bob, &["get", "nodes"]));
    s.kubectl_apply(
        &k,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: node-reader\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [nodes]\n  verbs: [get, list, watch]\n",
    );
    ok(&as_user(&k, &bob, &["get", "nodes"]));
    ok(&as_user(&k, &bob, &["-n", "a", "get", "deployments"]));
    fails(&as_user(
        &k,
        &bob,
        &["-n", "a", "delete", "deployment", "web"],
    ));

    // Escalation: a namespace admin may bind roles, but not one that holds more than they do.
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "rolebinding",
            "carol-admin",
            "--clusterrole=admin",
            "--user=carol",
            "-n",
            "a",
        ],
    ));
    let carol = user(&s, "carol", None);
    ok(&as_user(
        &k,
        &carol,
        &[
            "-n",
            "a",
            "create",
            "rolebinding",
            "dave-edit",
            "--clusterrole=edit",
            "--user=dave",
        ],
    ));
    let escalating = fails(&as_user(
        &k,
        &carol,
        &[
            "-n",
            "a",
            "create",
            "rolebinding",
            "carol-root",
            "--clusterrole=cluster-admin",
            "--user=carol",
        ],
    ));
    assert!(
        escalating.contains("attempting to grant RBAC permissions not currently held"),
        "{escalating}"
    );
    let escalating = fails(&as_user(
        &k,
        &carol,
        &[
            "-n",
            "a",
            "create",
            "role",
            "nodes-too",
            "--verb=get",
            "--resource=nodes",
        ],
    ));
    assert!(
        escalating.contains("attempting to grant RBAC permissions not currently held"),
        "{escalating}"
    );

    // Impersonation: the admin may act as alice (and is then refused what alice is); alice may not act as bob.
    let as_alice = fails(&s.kubectl(
        &k,
        &[
            "--as",
            "alice",
            "--as-group",
            "team-a",
            "-n",
            "b",
            "get",
            "secrets",
        ],
    ));
    assert!(
        as_alice.contains("User \"alice\" cannot list resource \"secrets\""),
        "{as_alice}"
    );
    ok(&s.kubectl(
        &k,
        &[
            "--as",
            "alice",
            "--as-group",
            "team-a",
            "-n",
            "a",
            "get",
            "deployments",
        ],
    ));
    let refused = fails(&as_user(
        &k,
        &alice,
        &["--as", "bob", "get", "--raw", concat!("/", "api")],
    ));
    assert!(
        refused.contains("cannot impersonate resource \"users\""),
        "{refused}"
    );
}

#[test]
fn a_node_credential_reaches_only_its_own_node_and_pods() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    for n in ["m1", "m2"] {
        s.kubectl_apply(
            &k,
            &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n"),
        );
    }
    ok(&s.kubectl(
        &k,
        &["create", "secret", "generic", "mine", "--from-literal=k=1"],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "theirs",
            "--from-literal=k=2",
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "unused",
            "--from-literal=k=3",
        ],
    ));
    for (pod, node, secret) in [("on-m1", "m1", "mine"), ("on-m2", "m2", "theirs")] {
        s.kubectl_apply(
            &k,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: none\n    command: [sleep, \"60\"]\n  volumes:\n  - name: s\n    secret:\n      secretName: {secret}\n"
            ),
        );
    }
    let node = user(&s, "system:node:m1", Some("system:nodes"));
    let who = ok(&as_user(&k, &node, &["auth", "whoami"]));
    assert!(who.contains("system:node:m1"), "{who}");
    // What its agent needs.
    ok(&as_user(&k, &node, &["get", "pods", "-A"]));
    ok(&as_user(&k, &node, &["label", "node", "m1", "rack=3"]));
    ok(&as_user(&k, &node, &["get", "secret", "mine"]));
    // Nothing more.
    let e = fails(&as_user(&k, &node, &["label", "node", "m2", "rack=3"]));
    assert!(
        e.contains("User \"system:node:m1\" cannot patch resource \"nodes\""),
        "{e}"
    );
    let e = fails(&as_user(&k, &node, &["get", "secret", "theirs"]));
    assert!(e.contains("cannot get resource \"secrets\""), "{e}");
    fails(&as_user(&k, &node, &["get", "secret", "unused"]));
    fails(&as_user(&k, &node, &["get", "secrets"]));
    let e = fails(&as_user(
        &k,
        &node,
        &["delete", "namespace", "default", "--wait=false"],
    ));
    assert!(e.contains("cannot delete resource \"namespaces\""), "{e}");
    fails(&as_user(
        &k,
        &node,
        &["delete", "pod", "on-m2", "--wait=false"],
    ));
    // It registers only itself.
    let other = s.data_dir().join("m3.yaml");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: m3\n",
    )
    .unwrap();
    let e = fails(&as_user(
        &k,
        &node,
        &["create", "-f", other.to_str().unwrap()],
    ));
    assert!(e.contains("a node may only register itself"), "{e}");
}

#[test]
fn default_roles_are_reconciled_at_start_unless_opted_out() {
    let s = Server::start();
    let role = |s: &Server, name: &str| {
        s.call(
            "GET",
            &format!(
                "{}/{name}",
                concat!("/", "apis/rbac.authorization.k8s.io/v1/clusterroles")
            ),
            "",
            "",
        )
        .1
    };
    let patch = |s: &Server, name: &str, body: &str| {
        let (code, v) = s.call(
            "PATCH",
            &format!(
                "{}/{name}",
                concat!("/", "apis/rbac.authorization.k8s.io/v1/clusterroles")
            ),
            "application/merge-patch+json",
            body,
        );
        assert_eq!(code, 200, "{v}");
    };
    let shipped = role(&s, "system:aggregate-to-view")["rules"].clone();
    assert!(shipped.as_array().is_some_and(|r| !r.is_empty()));
    patch(&s, "system:aggregate-to-view", r#"{"rules": []}"#);
    patch(
        &s,
        "system:aggregate-to-edit",
        r#"{"metadata": {"annotations": {"rbac.authorization.kubernetes.io/autoupdate": "false"}}, "rules": []}"#,
    );
    let dir = s.kill9();
    let s = Server::start_in(dir);
    assert_eq!(
        role(&s, "system:aggregate-to-view")["rules"],
        shipped,
        "restored at start"
    );
    assert_eq!(
        role(&s, "system:aggregate-to-edit")["rules"],
        serde_json::json!([]),
        "an opted-out role is left as its owner made it"
    );
}

/// `kubectl get --raw /metrics`: the admin reads every controller's work queue in Prometheus' text format (with
/// Kubernetes' metric names) and sees them drain once the work is done; a user without the non-resource URL
/// `/metrics` in a role is refused, in Kubernetes' words.
#[test]
fn metrics_show_every_controllers_work_queue_to_whoever_may_read_them() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    ok(&s.kubectl(
        &k,
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=2",
        ],
    ));
    let drained = common::within(
        std::time::Duration::from_secs(30),
        "the queues drained after the Deployment's work",
        || {
            let text = ok(&s.kubectl(&k, &["get", "--raw", "/metrics"]));
            let adds = |name: &str| {
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(&format!("workqueue_adds_total{{name=\"{name}\"}} "))
                    })
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let busy = text.lines().any(|l| {
                (l.starts_with("workqueue_depth{")
                    || l.starts_with("capstan_workqueue_processing{"))
                    && !l.ends_with(" 0")
            });
            (adds("deployment") >= 1 && adds("replicaset") >= 1 && !busy).then_some(text)
        },
    );
    for name in [
        "deployment",
        "replicaset",
        "statefulset",
        "daemonset",
        "job",
        "endpoint",
        "namespace",
        "applications",
    ] {
        assert!(
            drained.contains(&format!("workqueue_depth{{name=\"{name}\"}} 0\n")),
            "{name} in:\n{drained}"
        );
    }
    assert!(
        drained.contains("# TYPE workqueue_retries_total counter\n"),
        "{drained}"
    );
    let prom = user(&s, "prom", Some("system:monitoring"));
    let text = ok(&as_user(&k, &prom, &["get", "--raw", "/metrics"]));
    assert!(
        text.contains("workqueue_depth{name=\"replicaset\"}"),
        "{text}"
    );
    let bob = user(&s, "bob", None);
    let refused = fails(&as_user(&k, &bob, &["get", "--raw", "/metrics"]));
    assert!(refused.contains("forbidden"), "{refused}");
}
