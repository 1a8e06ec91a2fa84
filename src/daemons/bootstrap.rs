//! The objects every cluster starts with, seeded once by the process that starts the API server (before it serves):
//! the four built-in namespaces, the default `local-path` StorageClass and Kubernetes' default RBAC roles
//! (`cluster-admin` bound to `system:masters`; `admin`, `edit` and `view` aggregated from the
//! `system:aggregate-to-*` roles, so a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"`
//! extends them), and the roles of the control plane's own identities (the controller manager, the scheduler,
//! GitOps). Request handlers never create objects on their own.

use serde_json::{json, Value};

use crate::controllers::volumes::{DEFAULT_CLASS, LOCAL_PATH};

/// The built-in namespaces.
pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What a new cluster holds before anyone writes to it.
pub fn objects() -> Vec<Value> {
    let mut out: Vec<Value> = NAMESPACES
        .iter()
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .collect();
    // A directory per claim on the node's disk; the default class.
    out.push(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_PATH, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
    );
    out.extend(roles());
    out.extend(component_roles());
    out.extend(api_services());
    out
}

/// The group-versions this server serves itself, registered as local APIServices (`kubectl get apiservices`), as
/// Kubernetes registers its own: every built-in group-version, and `v1beta1.metrics.k8s.io` (resource usage from
/// the node agents, for `kubectl top`).
pub fn api_services() -> Vec<Value> {
    let mut gvs: Vec<(&str, &str)> = crate::api::registry::group_versions();
    gvs.push((
        crate::apiserver::metrics::GROUP,
        crate::apiserver::metrics::VERSION,
    ));
    gvs.into_iter()
        .map(|(g, v)| {
            let name = if g.is_empty() { format!("{v}.") } else { format!("{v}.{g}") };
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": g, "version": v, "groupPriorityMinimum": 1000, "versionPriority": 100}})
        })
        .collect()
}

/// A ClusterRoleBinding of `role` to `user`.
fn user_binding(name: &str, role: &str, user: &str) -> Value {
    json!({"apiVersion": RBAC, "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {BOOTSTRAP_LABEL: "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
}

/// The roles of the control plane's own identities: the controller manager and GitOps act on every kind (the
/// garbage collector deletes whatever has owners; an app may hold anything its ServiceAccount allows, which GitOps
/// impersonates), the scheduler reads what placement needs and binds pods.
pub fn component_roles() -> Vec<Value> {
    use super::server::{CONTROLLER_MANAGER_USER, GITOPS_USER, SCHEDULER_USER};
    const READ: &[&str] = &["get", "list", "watch"];
    let everything = || vec![rule(&["*"], &["*"], &["*"])];
    vec![
        cluster_role(CONTROLLER_MANAGER_USER, json!({}), everything()),
        user_binding(
            CONTROLLER_MANAGER_USER,
            CONTROLLER_MANAGER_USER,
            CONTROLLER_MANAGER_USER,
        ),
        cluster_role(
            SCHEDULER_USER,
            json!({}),
            vec![
                rule(&["*"], &["*"], READ),
                rule(&[""], &["pods/binding", "bindings"], &["create"]),
                rule(
                    &[""],
                    &["pods", "pods/status"],
                    &["update", "patch", "delete"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "update", "patch"],
                ),
            ],
        ),
        user_binding(SCHEDULER_USER, SCHEDULER_USER, SCHEDULER_USER),
        cluster_role(GITOPS_USER, json!({}), everything()),
        user_binding(GITOPS_USER, GITOPS_USER, GITOPS_USER),
    ]
}

/// What the serviceaccounts controller keeps in every namespace, made at start for the built-in ones so they are
/// there before anyone asks: the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap with `ca_pem`.
pub fn namespace_basics(ca_pem: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in NAMESPACES {
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}}));
        out.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": crate::controllers::serviceaccounts::ROOT_CA_CONFIGMAP, "namespace": ns},
            "data": {"ca.crt": ca_pem}}));
    }
    out
}

/// The Secret push webhooks are signed with: a fresh random value (kept only if the Secret does not exist yet).
pub fn webhook_secret() -> Value {
    use rand::Rng;
    let mut r = rand::rng();
    let secret: String = (0..40)
        .map(|_| format!("{:x}", r.random_range(0..16u8)))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "capstan-webhook", "namespace": "kube-system"},
        "stringData": {"secret": secret}})
}

const RBAC: &str = "rbac.authorization.k8s.io/v1";
const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    let mut labels = labels;
    labels[BOOTSTRAP_LABEL] = json!("rbac-defaults");
    json!({"apiVersion": RBAC, "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules})
}

fn aggregated(name: &str, to: &str) -> Value {
    json!({"apiVersion": RBAC, "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {BOOTSTRAP_LABEL: "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]},
        "rules": []})
}

/// Kubernetes' user-facing default roles and the binding that makes `system:masters` cluster admins.
// Long by design: a table of Kubernetes' default rules, read top to bottom like its bootstrap policy.
pub fn roles() -> Vec<Value> {
    const READ: &[&str] = &["get", "list", "watch"];
    const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
    let core_read = [
        "pods",
        "pods/log",
        "pods/status",
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "serviceaccounts",
        "services",
        "services/status",
        "bindings",
        "events",
        "limitranges",
        "resourcequotas",
        "resourcequotas/status",
        "namespaces",
        "namespaces/status",
    ];
    let apps = [
        "controllerrevisions",
        "daemonsets",
        "daemonsets/status",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
    ];
    let batch = ["cronjobs", "cronjobs/status", "jobs", "jobs/status"];
    let view = vec![
        rule(&[""], &core_read, READ),
        rule(&["apps"], &apps, READ),
        rule(&["batch"], &batch, READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            &["gitops.capstan.io"],
            &["applications", "syncrecords"],
            READ,
        ),
    ];
    let edit = vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "configmaps",
                "endpoints",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["secrets"], READ),
        rule(
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
            &["create"],
        ),
        rule(&["apps"], &apps, WRITE),
        rule(&["batch"], &batch, WRITE),
        rule(&["discovery.k8s.io"], &["endpointslices"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(&["gitops.capstan.io"], &["applications"], WRITE),
    ];
    let admin = vec![
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
    ];
    let t = json!("true");
    vec![
        cluster_role(
            "cluster-admin",
            json!({}),
            vec![
                rule(&["*"], &["*"], &["*"]),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
        ),
        json!({"apiVersion": RBAC, "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": {BOOTSTRAP_LABEL: "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        // Monitoring systems read the health endpoints and /metrics (Kubernetes' `system:monitoring`).
        cluster_role(
            "system:monitoring",
            json!({}),
            vec![
                json!({"nonResourceURLs": ["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz",
                "/readyz/*", "/metrics", "/metrics/slis"], "verbs": ["get"]}),
            ],
        ),
        json!({"apiVersion": RBAC, "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:monitoring", "labels": {BOOTSTRAP_LABEL: "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:monitoring"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:monitoring"}]}),
        aggregated("admin", "admin"),
        aggregated("edit", "edit"),
        aggregated("view", "view"),
        cluster_role(
            "system:aggregate-to-admin",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": t}),
            admin,
        ),
        cluster_role(
            "system:aggregate-to-edit",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": t,
                "rbac.authorization.k8s.io/aggregate-to-edit": t}),
            edit,
        ),
        cluster_role(
            "system:aggregate-to-view",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": t,
                "rbac.authorization.k8s.io/aggregate-to-edit": t,
                "rbac.authorization.k8s.io/aggregate-to-view": t}),
            view,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bootstrap_object_is_a_known_kind_with_a_name() {
        for o in objects() {
            let av = o["apiVersion"].as_str().unwrap();
            let k = o["kind"].as_str().unwrap();
            assert!(crate::api::registry::by_kind(av, k).is_some(), "{av} {k}");
            assert!(o["metadata"]["name"].is_string());
        }
    }
}
