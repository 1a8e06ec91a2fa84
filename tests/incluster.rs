//! The API server as pods see it: the `kubernetes` Service in `default` (the first address of the service CIDR,
//! port 443) with endpoints to the API server, `KUBERNETES_SERVICE_HOST`/`_PORT` in every container (also with
//! `enableServiceLinks: false`), a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in every namespace;
//! as root, a pod connects to the API server through the ClusterIP, and the real kubectl inside a pod works with its
//! ServiceAccount token (in-cluster configuration), within what RBAC grants that ServiceAccount.

mod common;

use std::time::Duration;

use common::{ok, within, Server};

#[test]
fn pods_find_the_api_server_through_the_kubernetes_service() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let svc = within(Duration::from_secs(30), "the kubernetes Service", || {
        let (code, v) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/default/services/kubernetes"),
            "",
            "",
        );
        (code == 200).then_some(v)
    });
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        ip.ends_with(".1"),
        "the first address of the service CIDR: {ip}"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert!(svc["spec"]["selector"].is_null());
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_, eps) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/endpoints/kubernetes"),
        "",
        "",
    );
    assert_eq!(eps["subsets"][0]["ports"][0]["port"], port, "{eps}");
    let (code, _) = s.call(
        "GET",
        concat!(
            "/",
            "apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"
        ),
        "",
        "",
    );
    assert_eq!(code, 200);

    // Every namespace gets its default ServiceAccount and the cluster CA.
    ok(&s.kubectl(&k, &["create", "namespace", "team"]));
    within(
        Duration::from_secs(30),
        "the default ServiceAccount and kube-root-ca.crt",
        || {
            let (a, _) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/team/serviceaccounts/default"),
                "",
                "",
            );
            let (b, cm) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/team/configmaps/kube-root-ca.crt"),
                "",
                "",
            );
            (a == 200 && b == 200 && cm["data"]["ca.crt"].as_str() == Some(s.ca().as_str()))
                .then_some(())
        },
    );

    // Containers are told where it is, whatever their service links; as root they reach it through the ClusterIP.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let connect = if root {
        "(exec 3<>/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT && echo reached) ; "
            .to_string()
    } else {
        String::new()
    };
    s.kubectl_apply(
        &k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: where\n  namespace: team\nspec:\n  enableServiceLinks: false\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: none\n    command: [bash, -c, {:?}]\n",
            format!("{connect}echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT")
        ),
    );
    let log = within(Duration::from_secs(60), "the pod's output", || {
        let out = s.kubectl(&k, &["-n", "team", "logs", "where"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("host=").then_some(text)
    });
    assert!(log.contains(&format!("host={ip} port=443")), "{log}");
    if root {
        assert!(log.contains("reached"), "{log}");
    }
}

const READER: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-config, namespace: team}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-config}
subjects:
- {kind: ServiceAccount, name: reader, namespace: team}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {colour: blue}
"#;

/// As root (pods reach the API server through the ClusterIP only then): `capstan up` with namespace `team`, its
/// default ServiceAccount, and READER applied. None (the test skips) without root, unless required.
fn team_with_reader(k: &std::path::Path) -> Option<Server> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !common::required(),
            "pods reach the API server through the ClusterIP only as root"
        );
        eprintln!("SKIP: pods reach the API server through the ClusterIP only as root");
        return None;
    }
    let s = Server::up(&[]);
    ok(&s.kubectl(k, &["create", "namespace", "team"]));
    within(
        Duration::from_secs(30),
        "team's default ServiceAccount",
        || {
            let (code, _) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/team/serviceaccounts/default"),
                "",
                "",
            );
            (code == 200).then_some(())
        },
    );
    s.kubectl_apply(k, READER);
    Some(s)
}

/// The pod that runs the real kubectl with its in-cluster configuration (no kubeconfig): the token, CA and
/// namespace from its ServiceAccount volume, the API server from KUBERNETES_SERVICE_HOST.
fn kubectl_pod(kubectl: &std::path::Path, name: &str, sa: &str) -> String {
    let script = format!(
        "export HOME=$(mktemp -d); cd /var/run/secrets/kubernetes.io/serviceaccount && \
         echo namespace=$(cat namespace) && head -c 3 token && echo && \
         {k} --cache-dir $HOME/cache get configmap settings -o jsonpath='colour={{.data.colour}}' && echo && \
         ({k} --cache-dir $HOME/cache get secrets -n default 2>&1 || true) && \
         {k} --cache-dir $HOME/cache auth whoami -o jsonpath='user={{.status.userInfo.username}}'",
        k = kubectl.display()
    );
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team}}\nspec:\n  serviceAccountName: {sa}\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: none\n    command: [bash, -c, {script:?}]\n"
    )
}

#[test]
fn a_pod_uses_the_api_with_its_service_account_token() {
    let Some(k) = common::kubectl() else { return };
    let Some(s) = team_with_reader(&k) else {
        return;
    };
    s.kubectl_apply(&k, &kubectl_pod(&k, "inside", "reader"));
    let (_, pod) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/team/pods/inside"),
        "",
        "",
    );
    let volume = pod["spec"]["volumes"][0]["name"].as_str().unwrap_or("");
    assert!(volume.starts_with("kube-api-access-"), "{pod}");
    let log = within(Duration::from_secs(90), "the pod's kubectl output", || {
        let (_, p) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/team/pods/inside"),
            "",
            "",
        );
        let done = matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let out = s.kubectl(&k, &["-n", "team", "logs", "inside"]);
        done.then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    assert!(log.contains("namespace=team"), "{log}");
    assert!(log.contains("eyJ"), "a JWT: {log}");
    assert!(log.contains("colour=blue"), "{log}");
    assert!(
        log.contains(r#"User "system:serviceaccount:team:reader" cannot list resource "secrets" in API group "" in the namespace "default""#),
        "{log}"
    );
    assert!(
        log.contains("user=system:serviceaccount:team:reader"),
        "{log}"
    );

    // kubectl create token: a TokenRequest; TokenReview says who it is; deleting the ServiceAccount revokes it.
    let token = ok(&s.kubectl(
        &k,
        &["-n", "team", "create", "token", "reader", "--duration=10m"],
    ));
    let token = token.trim();
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#
    );
    let (code, v) = s.call(
        "POST",
        concat!("/", "apis/authentication.k8s.io/v1/tokenreviews"),
        "application/json",
        &review,
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:team:reader"
    );
    let (code, _) = s.call_as(
        token,
        "GET",
        concat!("/", "api/v1/namespaces/team/configmaps/settings"),
    );
    assert_eq!(code, 200);
    let short = common::fails(&s.kubectl(
        &k,
        &["-n", "team", "create", "token", "reader", "--duration=1m"],
    ));
    assert!(
        short.contains("may not specify a duration less than 10 minutes"),
        "{short}"
    );
    ok(&s.kubectl(&k, &["-n", "team", "delete", "serviceaccount", "reader"]));
    let (code, _) = s.call_as(
        token,
        "GET",
        concat!("/", "api/v1/namespaces/team/configmaps/settings"),
    );
    assert_eq!(code, 401, "a deleted ServiceAccount's token is refused");

    // automountServiceAccountToken: false - no volume.
    s.kubectl_apply(
        &k,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bare, namespace: team}\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - {name: c, image: none, command: [sleep, '60']}\n",
    );
    let (_, bare) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/team/pods/bare"),
        "",
        "",
    );
    assert!(
        bare["spec"]["volumes"]
            .as_array()
            .is_none_or(|v| v.is_empty()),
        "{bare}"
    );
}

const PYTHON: &str = r#"
from kubernetes import client, config
config.load_incluster_config()
v1 = client.CoreV1Api()
print("configmaps=" + ",".join(sorted(c.metadata.name for c in v1.list_namespaced_config_map("team").items)))
try:
    v1.list_namespaced_secret("default")
    print("secrets=allowed")
except client.exceptions.ApiException as e:
    print("secrets=%d" % e.status)
"#;

#[test]
fn the_python_client_works_in_cluster_with_its_service_account() {
    let Some(k) = common::kubectl() else { return };
    if !common::python_client() {
        return;
    }
    let Some(s) = team_with_reader(&k) else {
        return;
    };
    let pythonpath = std::env::var("PYTHONPATH").unwrap_or_default();
    s.kubectl_apply(
        &k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: py, namespace: team}}\nspec:\n  serviceAccountName: reader\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: none\n    env: [{{name: PYTHONPATH, value: {pythonpath:?}}}]\n    command: [python3, -c, {PYTHON:?}]\n"
        ),
    );
    let log = within(
        Duration::from_secs(90),
        "the Python client's output",
        || {
            let (_, p) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/team/pods/py"),
                "",
                "",
            );
            let done = matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
            let out = s.kubectl(&k, &["-n", "team", "logs", "py"]);
            done.then(|| String::from_utf8_lossy(&out.stdout).to_string())
        },
    );
    assert!(
        log.contains("configmaps=kube-root-ca.crt,settings"),
        "{log}"
    );
    assert!(log.contains("secrets=403"), "{log}");
}
