//! Authorization, as Kubernetes' `--authorization-mode=Node,RBAC` does it. Each request's attributes (verb, API
//! group, resource, subresource, namespace, name - or a non-resource path) are checked after authentication:
//!
//! - `system:masters` may do everything (the admin token, components running as the admin);
//! - a node (`system:node:<name>`) by the node authorizer: it reads what agents read, writes only its own Node and
//!   Lease, the status of pods bound to it and their final deletion, creates Events, reads a Secret, ConfigMap
//!   or PersistentVolumeClaim only when a pod bound to it uses it, and asks for tokens of its pods' ServiceAccounts;
//! - everyone by RBAC: the rules of the Roles and ClusterRoles bound to the user, its groups or its ServiceAccount
//!   (a ClusterRole with an `aggregationRule` also holds the rules of the ClusterRoles its selectors match).
//!
//! A refusal is a 403 in Kubernetes' words. Writing a Role or ClusterRole with rules one does not hold, or binding a
//! role one does not hold, is refused unless one may `escalate` or `bind` it (escalation prevention).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::http::Method;
use serde_json::{json, Value};

use super::authn::Identity;
use super::error::{ApiError, Result};
use super::Server;
use crate::api::rbac::{
    Attributes, ClusterRole, ClusterRoleBinding, PolicyRule, ResourceAttributes, Role, RoleBinding,
    RoleRef,
};
use crate::api::registry;

/// The attributes of a request: its verb and what it addresses (a resource, or a non-resource path).
pub fn attributes(method: &Method, path: &str, query: &str) -> Attributes {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let Ok(t) = super::handlers::parse_path(path) else {
        let verb = match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "post",
            Method::PUT => "put",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "get",
        };
        return Attributes {
            verb: verb.into(),
            resource: None,
            path: path.to_string(),
        };
    };
    let named = t.name.is_some();
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "get",
    };
    // A namespace is its own namespace (Kubernetes authorizes `get namespace x` in namespace x).
    let namespace = match (&t.namespace, t.kind.plural) {
        (Some(ns), _) => ns.clone(),
        (None, "namespaces") => t.name.clone().unwrap_or_default(),
        _ => String::new(),
    };
    Attributes {
        verb: verb.into(),
        resource: Some(ResourceAttributes {
            group: t.kind.group.to_string(),
            resource: t.kind.plural.to_string(),
            subresource: t.sub.unwrap_or_default(),
            namespace,
            name: t.name.unwrap_or_default(),
        }),
        path: path.to_string(),
    }
}

/// The RBAC objects at one moment, in memory.
#[derive(Default)]
pub struct RbacSnapshot {
    cluster_bindings: Vec<ClusterRoleBinding>,
    /// namespace -> its RoleBindings.
    bindings: HashMap<String, Vec<RoleBinding>>,
    cluster_roles: HashMap<String, ClusterRole>,
    /// The rules of each aggregating ClusterRole: its own and those of the ClusterRoles it selects.
    aggregated: HashMap<String, Vec<PolicyRule>>,
    /// (namespace, name) -> Role.
    roles: HashMap<(String, String), Role>,
}

impl RbacSnapshot {
    /// The rules of the role a binding refers to; a ClusterRole with an aggregationRule also holds the rules of
    /// the ClusterRoles its selectors match.
    pub fn role_rules(&self, role: &RoleRef, ns: &str) -> Vec<PolicyRule> {
        match role.kind.as_str() {
            "Role" if !ns.is_empty() => self
                .roles
                .get(&(ns.to_string(), role.name.clone()))
                .and_then(|r| r.rules.clone())
                .unwrap_or_default(),
            "ClusterRole" => match self.aggregated.get(&role.name) {
                Some(rules) => rules.clone(),
                None => self
                    .cluster_roles
                    .get(&role.name)
                    .and_then(|cr| cr.rules.clone())
                    .unwrap_or_default(),
            },
            _ => Vec::new(),
        }
    }

    /// Whether a binding that names `user` or one of `groups` grants `a` in namespace `ns` (without collecting
    /// rules: this runs on every request).
    pub fn allows(&self, user: &str, groups: &[String], ns: &str, a: &Attributes) -> bool {
        let grants = |role: &RoleRef, binding_ns: &str| match role.kind.as_str() {
            "Role" => self
                .roles
                .get(&(binding_ns.to_string(), role.name.clone()))
                .is_some_and(|r| r.rules.iter().flatten().any(|rule| rule.allows(a))),
            "ClusterRole" => match self.aggregated.get(&role.name) {
                Some(rules) => rules.iter().any(|rule| rule.allows(a)),
                None => self
                    .cluster_roles
                    .get(&role.name)
                    .is_some_and(|cr| cr.rules.iter().flatten().any(|rule| rule.allows(a))),
            },
            _ => false,
        };
        let cluster = self.cluster_bindings.iter().any(|b| {
            b.subjects
                .iter()
                .flatten()
                .any(|s| s.matches(user, groups, ""))
                && grants(&b.role_ref, "")
        });
        cluster
            || (!ns.is_empty()
                && self.bindings.get(ns).into_iter().flatten().any(|b| {
                    b.subjects
                        .iter()
                        .flatten()
                        .any(|s| s.matches(user, groups, ns))
                        && grants(&b.role_ref, ns)
                }))
    }

    fn cluster_role_rules(&self, cr: &ClusterRole) -> Vec<PolicyRule> {
        let mut rules = cr.rules.clone().unwrap_or_default();
        if let Some(selectors) = cr
            .aggregation_rule
            .as_ref()
            .and_then(|a| a.cluster_role_selectors.as_ref())
        {
            for other in self.cluster_roles.values() {
                if other.metadata.name != cr.metadata.name
                    && crate::api::rbac::selected(selectors, &other.metadata.labels())
                {
                    rules.extend(other.rules.clone().unwrap_or_default());
                }
            }
        }
        rules
    }
}

/// The authorizer's cache: a snapshot of the RBAC objects and a generation that every change to one of them bumps
/// (after it is stored), so the next request reads them again.
#[derive(Default)]
pub struct RbacCache {
    generation: AtomicU64,
    snapshot: RwLock<Option<(u64, Arc<RbacSnapshot>)>>,
    /// Bumped by every pod write through this server (the node authorizer's pods go stale).
    pods_generation: AtomicU64,
    /// The node authorizer's pods per (node, namespace): (pods generation, when read, the pods bound there).
    node_pods: std::sync::Mutex<NodePods>,
}

type NodePods = HashMap<(String, String), (u64, tokio::time::Instant, Arc<Vec<Value>>)>;

/// How long the node authorizer trusts the pods it read (when no pod was written through this server meanwhile):
/// writes through other servers of a highly available plane are seen after this at most.
const NODE_PODS_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl RbacCache {
    /// Notes a write to `kind`: RBAC kinds make the snapshot stale, pods the node authorizer's pods.
    pub fn changed(&self, kind: &crate::api::registry::KindInfo) {
        if kind.group == "rbac.authorization.k8s.io" {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if kind.group.is_empty() && kind.kind == "Pod" {
            self.pods_generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Kubernetes' refusal: `secrets "x" is forbidden: User "alice" cannot get resource "secrets" in API group "" in
/// the namespace "b"`.
pub fn forbidden(user: &str, a: &Attributes, why: &str) -> ApiError {
    let tail = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    match &a.resource {
        Some(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let subject = if r.name.is_empty() {
                resource.clone()
            } else {
                format!("{resource} {:?}", r.name)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            let mut e = ApiError::forbidden(format!(
                "{subject} is forbidden: User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}{tail}",
                a.verb, r.group
            ));
            e.details = Some(json!({"name": r.name, "group": r.group, "kind": r.resource}));
            e
        }
        None => ApiError::forbidden(format!(
            "forbidden: User {user:?} cannot {} path {:?}{tail}",
            a.verb, a.path
        )),
    }
}

/// Paths every authenticated identity may call (discovery, health, who-am-I and can-I reviews), as the default
/// `system:discovery`, `system:public-info-viewer` and `system:basic-user` roles give them.
fn always_allowed(a: &Attributes) -> bool {
    match &a.resource {
        None => {
            let p = a.path.as_str();
            matches!(
                p,
                "/api" | "/apis" | "/version" | "/healthz" | "/livez" | "/readyz" | "/openapi/v2"
            ) || p.starts_with("/api/")
                || p.starts_with("/apis/")
                || p.starts_with("/openapi/")
        }
        Some(r) => {
            a.verb == "create"
                && matches!(
                    (r.group.as_str(), r.resource.as_str()),
                    ("authentication.k8s.io", "selfsubjectreviews")
                        | ("authorization.k8s.io", "selfsubjectaccessreviews")
                        | ("authorization.k8s.io", "selfsubjectrulesreviews")
                )
        }
    }
}

impl Server {
    /// Whether `who` may do `a`: Ok, or the 403 to answer.
    pub async fn authorize(&self, who: &Identity, a: &Attributes) -> Result<()> {
        let (user, groups) = who.user_info();
        if groups.iter().any(|g| g == "system:masters") || always_allowed(a) {
            return Ok(());
        }
        if let Identity::Node(node) = who {
            if self.node_allows(node, a).await {
                return Ok(());
            }
        }
        let ns = a
            .resource
            .as_ref()
            .map(|r| r.namespace.clone())
            .unwrap_or_default();
        if self.rbac_snapshot().await?.allows(&user, &groups, &ns, a) {
            return Ok(());
        }
        Err(forbidden(&user, a, ""))
    }

    /// The RBAC objects now: the cached snapshot, or a new one when an RBAC object changed since.
    pub async fn rbac_snapshot(&self) -> Result<Arc<RbacSnapshot>> {
        let generation = self.rbac.generation.load(Ordering::Acquire);
        if let Some((g, snap)) = self
            .rbac
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if *g == generation {
                return Ok(snap.clone());
            }
        }
        let list = |plural: &'static str| async move {
            let kind = registry::lookup(plural).expect("served");
            self.list_objects(kind, None, &Default::default())
                .await
                .map(|(items, _, _, _)| items)
        };
        let mut snap = RbacSnapshot::default();
        for v in list("clusterrolebindings").await? {
            if let Ok(b) = serde_json::from_value::<ClusterRoleBinding>(v) {
                snap.cluster_bindings.push(b);
            }
        }
        for v in list("rolebindings").await? {
            if let Ok(b) = serde_json::from_value::<RoleBinding>(v) {
                let ns = b.metadata.namespace().to_string();
                snap.bindings.entry(ns).or_default().push(b);
            }
        }
        for v in list("clusterroles").await? {
            if let Ok(r) = serde_json::from_value::<ClusterRole>(v) {
                snap.cluster_roles.insert(r.metadata.name().to_string(), r);
            }
        }
        for v in list("roles").await? {
            if let Ok(r) = serde_json::from_value::<Role>(v) {
                let key = (
                    r.metadata.namespace().to_string(),
                    r.metadata.name().to_string(),
                );
                snap.roles.insert(key, r);
            }
        }
        snap.aggregated = snap
            .cluster_roles
            .values()
            .filter(|cr| cr.aggregation_rule.is_some())
            .map(|cr| (cr.metadata.name().to_string(), snap.cluster_role_rules(cr)))
            .collect();
        let snap = Arc::new(snap);
        *self
            .rbac
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some((generation, snap.clone()));
        Ok(snap)
    }

    /// The rules `user` (in `groups`) holds in namespace `ns` ("" for cluster-wide rules only).
    pub async fn rules_for(
        &self,
        user: &str,
        groups: &[String],
        ns: &str,
    ) -> Result<Vec<PolicyRule>> {
        let snap = self.rbac_snapshot().await?;
        let mut rules = Vec::new();
        for b in &snap.cluster_bindings {
            if b.subjects
                .iter()
                .flatten()
                .any(|s| s.matches(user, groups, ""))
            {
                rules.extend(snap.role_rules(&b.role_ref, ""));
            }
        }
        if !ns.is_empty() {
            for b in snap.bindings.get(ns).into_iter().flatten() {
                if b.subjects
                    .iter()
                    .flatten()
                    .any(|s| s.matches(user, groups, ns))
                {
                    rules.extend(snap.role_rules(&b.role_ref, ns));
                }
            }
        }
        Ok(rules)
    }

    /// The rules of the role a binding refers to (none when it does not exist).
    pub async fn role_rules(&self, role: &RoleRef, ns: &str) -> Result<Vec<PolicyRule>> {
        Ok(self.rbac_snapshot().await?.role_rules(role, ns))
    }

    /// Escalation prevention for RBAC writes by `who`: a Role or ClusterRole only with rules `who` holds (or the
    /// `escalate` verb on it), a binding only of a role whose rules `who` holds (or the `bind` verb on it).
    pub async fn check_escalation(
        &self,
        who: &Identity,
        a: &Attributes,
        body: &Value,
    ) -> Result<()> {
        let Some(r) = &a.resource else { return Ok(()) };
        if r.group != "rbac.authorization.k8s.io"
            || !matches!(a.verb.as_str(), "create" | "update" | "patch")
        {
            return Ok(());
        }
        let (user, groups) = who.user_info();
        if groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let held = self.rules_for(&user, &groups, &r.namespace).await?;
        let may = |verb: &str, name: &str| {
            let asked = Attributes {
                verb: verb.into(),
                resource: Some(ResourceAttributes {
                    name: name.to_string(),
                    ..r.clone()
                }),
                path: String::new(),
            };
            held.iter().any(|h| h.allows(&asked))
        };
        // The first rule asked for that `who` does not hold, refused in Kubernetes' words.
        let not_held = |asked: &[PolicyRule]| {
            match asked.iter().find(|rule| !rule.covered_by(&held)) {
            Some(rule) => Err(forbidden(
                &user,
                a,
                &format!(
                    "user {user:?} (groups={groups:?}) is attempting to grant RBAC permissions not currently held: {}",
                    serde_json::to_string(rule).unwrap_or_default()
                ),
            )),
            None => Ok(()),
        }
        };
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or(r.name.as_str())
            .to_string();
        match r.resource.as_str() {
            "roles" | "clusterroles" => {
                if may("escalate", &name) {
                    return Ok(());
                }
                let asked: Vec<PolicyRule> =
                    serde_json::from_value(body["rules"].clone()).unwrap_or_default();
                not_held(&asked)
            }
            "rolebindings" | "clusterrolebindings" => {
                let Ok(role) = serde_json::from_value::<RoleRef>(body["roleRef"].clone()) else {
                    return Ok(());
                };
                let bind = Attributes {
                    verb: "bind".into(),
                    resource: Some(ResourceAttributes {
                        group: "rbac.authorization.k8s.io".into(),
                        resource: if role.kind == "Role" {
                            "roles".into()
                        } else {
                            "clusterroles".into()
                        },
                        subresource: String::new(),
                        namespace: r.namespace.clone(),
                        name: role.name.clone(),
                    }),
                    path: String::new(),
                };
                if held.iter().any(|h| h.allows(&bind)) {
                    return Ok(());
                }
                let granted = self.role_rules(&role, &r.namespace).await?;
                not_held(&granted)
            }
            _ => Ok(()),
        }
    }

    /// The node authorizer: what node `node`'s agent may do.
    async fn node_allows(&self, node: &str, a: &Attributes) -> bool {
        let Some(r) = &a.resource else {
            return false;
        };
        let read = matches!(a.verb.as_str(), "get" | "list" | "watch");
        let write = matches!(a.verb.as_str(), "create" | "update" | "patch");
        match (
            r.group.as_str(),
            r.resource.as_str(),
            r.subresource.as_str(),
        ) {
            ("", "nodes", "") | ("", "nodes", "status") => {
                read || (write && r.name == node) || (a.verb == "create" && r.name.is_empty())
            }
            ("coordination.k8s.io", "leases", "") => {
                r.namespace == "kube-node-lease"
                    && (r.name == node || (a.verb == "create" && r.name.is_empty()))
                    && (read || write)
            }
            ("", "pods", "") if read => true,
            ("", "pods", "status") if write => self.pod_bound_to(node, r).await,
            ("", "pods", "") if a.verb == "delete" => self.pod_bound_to(node, r).await,
            ("", "events", "") | ("events.k8s.io", "events", "") => write || read,
            ("", "services", "")
            | ("", "endpoints", "")
            | ("discovery.k8s.io", "endpointslices", "")
            | ("", "namespaces", "")
            | ("", "persistentvolumes", "")
            | ("storage.k8s.io", "storageclasses", "") => read,
            ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => {
                a.verb == "get" && self.used_by_pod_on(node, r).await
            }
            ("certificates.k8s.io", "certificatesigningrequests", "") => read || a.verb == "create",
            // Tokens for its pods' ServiceAccounts (the handler then requires them bound to a pod of this node).
            ("", "serviceaccounts", "token") => {
                a.verb == "create" && self.used_by_pod_on(node, r).await
            }
            ("", "serviceaccounts", "") => a.verb == "get" && self.used_by_pod_on(node, r).await,
            _ => false,
        }
    }

    /// Whether pod `r.namespace/r.name` is bound to `node`.
    async fn pod_bound_to(&self, node: &str, r: &ResourceAttributes) -> bool {
        let pods = registry::lookup("pods").expect("served");
        match self.get_object(pods, Some(&r.namespace), &r.name).await {
            Ok((p, _)) => p["spec"]["nodeName"] == node,
            // A pod already gone: nothing to guard.
            Err(e) => e.code == 404,
        }
    }

    /// Whether a pod bound to `node` uses the Secret, ConfigMap or PersistentVolumeClaim `r` names.
    ///
    /// The node's pods are read once and reused while no pod is written through this server (and for at most
    /// [`NODE_PODS_TTL`]) - an agent asks for each of its pods' Secrets, ConfigMaps and tokens, and reading every
    /// pod for each ask made an idle node of 100 pods cost a third of a core. Only a yes is trusted from the cache:
    /// a no reads the pods afresh, so a pod just bound never waits.
    async fn used_by_pod_on(&self, node: &str, r: &ResourceAttributes) -> bool {
        let key = (node.to_string(), r.namespace.clone());
        let generation = self.rbac.pods_generation.load(Ordering::Acquire);
        let cached = self
            .rbac
            .node_pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(g, at, _)| *g == generation && at.elapsed() < NODE_PODS_TTL)
            .map(|(_, _, pods)| pods.clone());
        if let Some(pods) = cached {
            if pods.iter().any(|p| references(p, &r.resource, &r.name)) {
                return true;
            }
        }
        let pods = registry::lookup("pods").expect("served");
        let Ok((list, _, _, _)) = self
            .list_objects(pods, Some(&r.namespace), &Default::default())
            .await
        else {
            return false;
        };
        let on_node: Vec<Value> = list
            .into_iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .collect();
        let used = on_node.iter().any(|p| references(p, &r.resource, &r.name));
        let mut cache = self
            .rbac
            .node_pods
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Bounded: one entry per (node, namespace) pair seen; start over rather than grow without end.
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(
            key,
            (generation, tokio::time::Instant::now(), Arc::new(on_node)),
        );
        used
    }
}

/// Whether `pod` refers to the object `name` of `resource` (secrets, configmaps, persistentvolumeclaims,
/// serviceaccounts): volumes, projected sources, env and envFrom, image pull secrets, its ServiceAccount.
pub fn references(pod: &Value, resource: &str, name: &str) -> bool {
    let spec = &pod["spec"];
    let is = |v: &Value| v.as_str() == Some(name);
    let volumes = spec["volumes"].as_array().into_iter().flatten();
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten());
    match resource {
        "secrets" => {
            volumes.clone().any(|v| {
                is(&v["secret"]["secretName"])
                    || v["projected"]["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| is(&s["secret"]["name"]))
            }) || spec["imagePullSecrets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| is(&s["name"]))
                || containers.clone().any(|c| {
                    c["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| is(&e["valueFrom"]["secretKeyRef"]["name"]))
                        || c["envFrom"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|e| is(&e["secretRef"]["name"]))
                })
        }
        "configmaps" => {
            volumes.clone().any(|v| {
                is(&v["configMap"]["name"])
                    || v["projected"]["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| is(&s["configMap"]["name"]))
            }) || containers.clone().any(|c| {
                c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| is(&e["valueFrom"]["configMapKeyRef"]["name"]))
                    || c["envFrom"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| is(&e["configMapRef"]["name"]))
            })
        }
        "persistentvolumeclaims" => volumes
            .clone()
            .any(|v| is(&v["persistentVolumeClaim"]["claimName"])),
        "serviceaccounts" => match spec["serviceAccountName"].as_str() {
            Some(sa) if !sa.is_empty() => sa == name,
            _ => name == "default",
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_kubernetes_attributes() {
        let a = attributes(
            &Method::GET,
            &format!("/{}", "api/v1/namespaces/b/secrets"),
            "",
        );
        assert_eq!(a.verb, "list");
        let r = a.resource.clone().unwrap();
        assert_eq!(
            (r.group.as_str(), r.resource.as_str(), r.namespace.as_str()),
            ("", "secrets", "b")
        );
        assert_eq!(
            forbidden("alice", &a, "").message,
            "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"b\""
        );
        let w = attributes(
            &Method::GET,
            &format!("/{}", "apis/apps/v1/namespaces/a/deployments"),
            "watch=true&x=1",
        );
        assert_eq!(w.verb, "watch");
        let d = attributes(&Method::DELETE, &format!("/{}", "api/v1/namespaces/a"), "");
        assert_eq!(d.verb, "delete");
        let r = d.resource.unwrap();
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.namespace.as_str()),
            ("namespaces", "a", "a")
        );
        let s = attributes(
            &Method::PATCH,
            &format!("/{}", "apis/apps/v1/namespaces/a/deployments/web/scale"),
            "",
        );
        let r = s.resource.unwrap();
        assert_eq!(
            (s.verb.as_str(), r.subresource.as_str(), r.name.as_str()),
            ("patch", "scale", "web")
        );
        let n = attributes(&Method::GET, &format!("/{}", "api/v1/nodes/m1"), "");
        assert_eq!(
            forbidden("bob", &n, "").message,
            "nodes \"m1\" is forbidden: User \"bob\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let p = attributes(&Method::GET, "/metrics", "");
        assert!(p.resource.is_none());
        assert_eq!(p.path, "/metrics");
    }

    #[test]
    fn pods_reference_their_secrets_configmaps_and_claims() {
        let pod = json!({"spec": {"nodeName": "m1",
            "volumes": [{"name": "a", "secret": {"secretName": "tls"}},
                        {"name": "b", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}},
                        {"name": "c", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "env"}}]}]}});
        assert!(references(&pod, "secrets", "tls"));
        assert!(references(&pod, "secrets", "db"));
        assert!(!references(&pod, "secrets", "other"));
        assert!(references(&pod, "configmaps", "cfg"));
        assert!(references(&pod, "configmaps", "env"));
        assert!(references(&pod, "persistentvolumeclaims", "data"));
        assert!(!references(&pod, "persistentvolumeclaims", "tls"));
    }
}
