//! Container environment as the kubelet builds it: `envFrom` (ConfigMaps, Secrets, with prefixes), then `env`
//! (values, ConfigMap/Secret keys, downward API fields), each value expanding `$(VAR)` references to variables
//! defined before it; `command` and `args` expand the same way. A missing object or key is a
//! CreateContainerConfigError with Kubernetes' message, unless the reference is optional.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;

use super::ConfigError;
use crate::api::core::{ConfigMap, Container, EnvVar, Pod, ResourceFieldSelector, Secret};

/// Where ConfigMaps and Secrets come from (the API server in the agent; a map in unit tests).
#[async_trait]
pub trait Lookup: Send + Sync {
    /// The ConfigMap, `Ok(None)` when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError>;
    /// The Secret, `Ok(None)` when it does not exist.
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError>;
}

/// Expands `$(NAME)` with known variables; `$$(NAME)` escapes to the literal `$(NAME)`; unknown references stay.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Text entries as they are, base64 entries decoded: the bytes an object's keys stand for.
fn payload(
    text: Option<&BTreeMap<String, String>>,
    base64: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, Vec<u8>>, ConfigError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = BTreeMap::new();
    for (k, v) in base64.into_iter().flatten() {
        let bytes = b64
            .decode(v)
            .map_err(|e| ConfigError::Invalid(format!("key {k}: not base64: {e}")))?;
        out.insert(k.clone(), bytes);
    }
    for (k, v) in text.into_iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    Ok(out)
}

/// A ConfigMap's keys: `data` as text, `binaryData` decoded.
pub fn config_map_bytes(cm: &ConfigMap) -> Result<BTreeMap<String, Vec<u8>>, ConfigError> {
    payload(cm.data.as_ref(), cm.binary_data.as_ref())
}

/// A Secret's keys: `data` decoded, `stringData` (when a writer left it) as text.
pub fn secret_bytes(secret: &Secret) -> Result<BTreeMap<String, Vec<u8>>, ConfigError> {
    payload(secret.string_data.as_ref(), secret.data.as_ref())
}

fn strings(bytes: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    bytes
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// A downward API field of the pod.
pub fn field_ref(pod: &Pod, path: &str) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let map_key = |map: Option<&BTreeMap<String, String>>, prefix: &str| -> String {
        path.strip_prefix(prefix)
            .and_then(|k| k.strip_prefix("['"))
            .and_then(|k| k.strip_suffix("']"))
            .and_then(|k| map.and_then(|m| m.get(k)))
            .cloned()
            .unwrap_or_default()
    };
    let opt = |v: Option<&String>| v.cloned().unwrap_or_default();
    Ok(match path {
        "metadata.name" => meta.name().to_string(),
        "metadata.namespace" => meta.namespace().to_string(),
        "metadata.uid" => opt(meta.uid.as_ref()),
        "spec.nodeName" => opt(spec.and_then(|s| s.node_name.as_ref())),
        "spec.serviceAccountName" => opt(spec.and_then(|s| s.service_account_name.as_ref())),
        "status.podIP" | "status.podIPs" => opt(status.and_then(|s| s.pod_ip.as_ref())),
        "status.hostIP" | "status.hostIPs" => opt(status.and_then(|s| s.host_ip.as_ref())),
        p if p.starts_with("metadata.labels[") => map_key(meta.labels.as_ref(), "metadata.labels"),
        p if p.starts_with("metadata.annotations[") => {
            map_key(meta.annotations.as_ref(), "metadata.annotations")
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "unsupported fieldRef fieldPath {other:?}"
            )))
        }
    })
}

/// A resourceFieldRef value (limits/requests of a container), in units of `divisor` (default 1).
fn resource_ref(
    pod: &Pod,
    container: &Container,
    r: &ResourceFieldSelector,
) -> Result<String, ConfigError> {
    let target = match r.container_name.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name)),
        None => Some(container),
    };
    let (section, name) = r.resource.split_once('.').ok_or_else(|| {
        ConfigError::Invalid(format!(
            "unsupported resourceFieldRef resource {:?}",
            r.resource
        ))
    })?;
    let resources = target.and_then(|c| c.resources.as_ref());
    let list = match section {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let q = list.and_then(|l| l.get(name)).map_or("0", |q| q.0.as_str());
    let bad = |q: &str| ConfigError::Invalid(format!("resourceFieldRef: {q:?} is not a quantity"));
    let value = crate::api::parse_quantity_millis(q).ok_or_else(|| bad(q))?;
    let divisor = match &r.divisor {
        Some(d) => d.millis().ok_or_else(|| bad(&d.0))?,
        None => 1000,
    };
    if divisor <= 0 {
        return Err(bad("0"));
    }
    // Rounded up, as Kubernetes does (a 250m limit with divisor 1 is 1).
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// Which kind of object a reference names, for fetching and for messages.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    fn kind(self) -> &'static str {
        match self {
            Source::ConfigMap => "ConfigMap",
            Source::Secret => "Secret",
        }
    }
    /// The lower-case word of Kubernetes' "not found" message.
    fn lower(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }
}

/// ConfigMaps and Secrets a container refers to, each fetched once.
struct Fetched<'a> {
    lookup: &'a dyn Lookup,
    ns: &'a str,
    seen: BTreeMap<(Source, String), Option<BTreeMap<String, String>>>,
}

impl Fetched<'_> {
    async fn get(
        &mut self,
        source: Source,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        let key = (source, name.to_string());
        if let Some(v) = self.seen.get(&key) {
            return Ok(v.clone());
        }
        let got = match source {
            Source::ConfigMap => match self.lookup.config_map(self.ns, name).await? {
                Some(cm) => Some(strings(config_map_bytes(&cm)?)),
                None => None,
            },
            Source::Secret => match self.lookup.secret(self.ns, name).await? {
                Some(s) => Some(strings(secret_bytes(&s)?)),
                None => None,
            },
        };
        self.seen.insert(key, got.clone());
        Ok(got)
    }
}

/// The variables of the environment so far, in the order they were first set.
#[derive(Default)]
struct Vars {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Vars {
    fn set(&mut self, k: String, v: String) {
        if self.values.insert(k.clone(), v).is_none() {
            self.order.push(k);
        }
    }
    fn into_list(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .map(|k| {
                let v = self.values.remove(&k).unwrap_or_default();
                (k, v)
            })
            .collect()
    }
}

/// The value of one `env` entry; `None` for an optional reference that is absent (the variable is left out).
async fn value_of(
    e: &EnvVar,
    pod: &Pod,
    container: &Container,
    vars: &Vars,
    fetched: &mut Fetched<'_>,
) -> Result<Option<String>, ConfigError> {
    if let Some(v) = &e.value {
        return Ok(Some(expand(v, &vars.values)));
    }
    let Some(from) = &e.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(f) = &from.field_ref {
        return field_ref(pod, &f.field_path).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_ref(pod, container, r).map(Some);
    }
    let (source, r) = match (&from.secret_key_ref, &from.config_map_key_ref) {
        (Some(r), _) => (Source::Secret, r),
        (None, Some(r)) => (Source::ConfigMap, r),
        (None, None) => {
            return Err(ConfigError::Invalid(format!(
                "env {}: valueFrom names no source the agent supports",
                e.name
            )))
        }
    };
    let obj_name = r.name.as_deref().unwrap_or("");
    let optional = r.optional.unwrap_or(false);
    match fetched.get(source, obj_name).await? {
        Some(data) => match data.get(&r.key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError::MissingKey {
                key: r.key.clone(),
                kind: source.kind(),
                namespace: fetched.ns.to_string(),
                name: obj_name.to_string(),
            }),
        },
        None if optional => Ok(None),
        None => Err(ConfigError::NotFound {
            kind: source.lower(),
            name: obj_name.to_string(),
        }),
    }
}

/// Builds the container's environment (in order), given variables set before it (e.g. POD_IP on the process runtime).
pub async fn resolve(
    pod: &Pod,
    container: &Container,
    lookup: &dyn Lookup,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = match pod.metadata.namespace() {
        "" => "default",
        ns => ns,
    };
    let mut vars = Vars::default();
    for (k, v) in base {
        vars.set(k.clone(), v.clone());
    }
    let mut fetched = Fetched {
        lookup,
        ns,
        seen: BTreeMap::new(),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let refs = [
            (Source::ConfigMap, &from.config_map_ref),
            (Source::Secret, &from.secret_ref),
        ];
        for (source, r) in refs {
            let Some(r) = r else { continue };
            let name = r.name.as_deref().unwrap_or("");
            match fetched.get(source, name).await? {
                Some(data) => {
                    for (k, v) in data {
                        vars.set(format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => {
                    return Err(ConfigError::NotFound {
                        kind: source.lower(),
                        name: name.to_string(),
                    })
                }
            }
        }
    }
    for e in container.env.iter().flatten() {
        if let Some(value) = value_of(e, pod, container, &vars, &mut fetched).await? {
            vars.set(e.name.clone(), value);
        }
    }
    Ok(vars.into_list())
}

/// The command line: `command` then `args`, with `$(VAR)` expanded from the environment.
pub fn command_line(container: &Container, env: &[(String, String)]) -> Vec<String> {
    let mut line = expanded(container.command.as_deref(), env);
    line.extend(expanded(container.args.as_deref(), env));
    line
}

/// One of the container's string lists (`command`, `args`) with `$(VAR)` references expanded.
pub fn expanded(list: Option<&[String]>, env: &[(String, String)]) -> Vec<String> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    list.into_iter()
        .flatten()
        .map(|s| expand(s, &vars))
        .collect()
}

/// The service environment variables Kubernetes gives every container (Docker-links style): for each Service of the
/// pod's namespace with a cluster IP, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (and `_<PORTNAME>`), `<NAME>_PORT`
/// and `<NAME>_PORT_<port>_<PROTO>` with its `_PROTO`, `_PORT` and `_ADDR`.
/// The `default/kubernetes` Service: every pod gets its variables (`KUBERNETES_SERVICE_HOST`, ...), whatever its
/// namespace and `enableServiceLinks`.
pub fn is_kubernetes(s: &crate::api::core::Service) -> bool {
    s.metadata.namespace() == "default" && s.metadata.name() == "kubernetes"
}

pub fn service_links(
    ns: &str,
    services: &[std::sync::Arc<crate::api::core::Service>],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&crate::api::core::Service> = services
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| s.metadata.namespace() == ns || is_kubernetes(s))
        .collect();
    sorted.dedup_by_key(|s| {
        (
            s.metadata.namespace().to_string(),
            s.metadata.name().to_string(),
        )
    });
    sorted.sort_by_key(|s| s.metadata.name().to_string());
    for svc in sorted {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let prefix = svc.metadata.name().to_ascii_uppercase().replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        name.to_ascii_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto =
            |p: &crate::api::core::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((
            format!("{prefix}_PORT"),
            format!(
                "{}://{ip}:{}",
                proto(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in &ports {
            let (port, pr) = (p.port.to_string(), proto(p));
            let base = format!("{prefix}_PORT_{port}_{pr}");
            out.push((
                base.clone(),
                format!("{}://{ip}:{port}", pr.to_ascii_lowercase()),
            ));
            out.push((format!("{base}_PROTO"), pr.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), port.clone()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    struct Objects(BTreeMap<(String, String), Value>);

    impl Objects {
        fn find<T: serde::de::DeserializeOwned>(&self, kind: &str, name: &str) -> Option<T> {
            let v = self.0.get(&(kind.to_string(), name.to_string()))?;
            Some(serde_json::from_value(v.clone()).expect("a valid object"))
        }
    }

    #[async_trait]
    impl Lookup for Objects {
        async fn config_map(&self, _: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
            Ok(self.find("ConfigMap", name))
        }
        async fn secret(&self, _: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
            Ok(self.find("Secret", name))
        }
    }

    fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("a valid object")
    }

    fn objects() -> Objects {
        let mut m = BTreeMap::new();
        m.insert(
            ("ConfigMap".into(), "cfg".into()),
            json!({"data": {"COLOR": "blue", "SIZE": "9"}}),
        );
        m.insert(
            ("Secret".into(), "sec".into()),
            json!({"data": {"PASSWORD": "aHVudGVyMg=="}}),
        );
        Objects(m)
    }

    #[tokio::test]
    async fn builds_env_like_the_kubelet() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []}, "status": {"podIP": "127.244.0.9"}});
        let c = json!({"name": "c",
            "resources": {"limits": {"memory": "64Mi"}},
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
                {"name": "GREETING", "value": "hi $(CFG_COLOR) $$(CFG_COLOR) $(NOPE)"},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
                {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}
            ],
            "command": ["echo", "$(ME)"], "args": ["$(GREETING)"]});
        let (pod, c): (Pod, Container) = (typed(pod), typed(c));
        let env = resolve(
            &pod,
            &c,
            &objects(),
            &[("POD_IP".into(), "127.244.0.9".into())],
        )
        .await
        .unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_IP"), Some("127.244.0.9"));
        assert_eq!(get("CFG_COLOR"), Some("blue"));
        assert_eq!(get("GREETING"), Some("hi blue $(CFG_COLOR) $(NOPE)"));
        assert_eq!(get("PASS"), Some("hunter2"));
        assert_eq!(get("ME"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("OPT"), None);
        assert_eq!(
            command_line(&c, &env),
            vec!["echo", "web-1", "hi blue $(CFG_COLOR) $(NOPE)"]
        );
    }

    #[tokio::test]
    async fn missing_references_are_config_errors() {
        let pod: Pod = typed(json!({"metadata": {"name": "p", "namespace": "shop"}}));
        let error = |c: Value| {
            let c: Container = typed(c);
            let pod = pod.clone();
            async move {
                resolve(&pod, &c, &objects(), &[])
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        assert_eq!(
            error(json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]})).await,
            "configmap \"gone\" not found"
        );
        assert_eq!(
            error(json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]})).await,
            "couldn't find key k in ConfigMap shop/cfg"
        );
        assert_eq!(
            error(json!({"name": "c", "envFrom": [{"secretRef": {"name": "nope"}}]})).await,
            "secret \"nope\" not found"
        );
    }

    #[test]
    fn service_links_follow_kubernetes_names() {
        let typed = |v: Value| -> std::sync::Arc<crate::api::core::Service> {
            std::sync::Arc::new(serde_json::from_value(v).unwrap())
        };
        let svc = typed(
            json!({"metadata": {"name": "redis-primary", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}]}}),
        );
        let other = typed(json!({"metadata": {"name": "x", "namespace": "elsewhere"},
            "spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 1}]}}));
        let headless = typed(json!({"metadata": {"name": "h", "namespace": "n"},
            "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}));
        let kubernetes = typed(
            json!({"metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}),
        );
        let env: std::collections::BTreeMap<String, String> =
            service_links("n", &[svc, other, headless, kubernetes])
                .into_iter()
                .collect();
        // The API server's Service reaches every namespace.
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "10.96.0.11");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_REDIS"], "6379");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://10.96.0.11:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP"], "tcp://10.96.0.11:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_PROTO"], "tcp");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.96.0.11");
        assert_eq!(
            env.len(),
            16,
            "8 of redis-primary, 8 of kubernetes, none of other namespaces: {env:?}"
        );
    }
}
