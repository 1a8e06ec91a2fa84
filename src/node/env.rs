//! Container environment as the kubelet builds it: `envFrom` (ConfigMaps, Secrets, with prefixes), then `env`
//! (values, ConfigMap/Secret keys, downward API fields), each value expanding `$(VAR)` references to variables
//! defined before it; `command` and `args` expand the same way. A missing object or key is a
//! CreateContainerConfigError with Kubernetes' message, unless the reference is optional.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;
use serde_json::Value;

/// Where ConfigMaps and Secrets come from (the API server in the agent; a map in unit tests).
#[async_trait]
pub trait Lookup: Send + Sync {
    /// The object, `Ok(None)` when it does not exist.
    async fn get(&self, kind: &str, ns: &str, name: &str) -> Result<Option<Value>, String>;
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

fn data_of(kind: &str, obj: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in m {
            let s = v.as_str().unwrap_or("");
            let val = if kind == "Secret" {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            } else {
                s.to_string()
            };
            out.insert(k.clone(), val);
        }
    }
    if let Some(m) = obj.get("binaryData").and_then(Value::as_object) {
        for (k, v) in m {
            let b = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .unwrap_or_default();
            out.insert(k.clone(), String::from_utf8_lossy(&b).into_owned());
        }
    }
    if kind == "Secret" {
        if let Some(m) = obj.get("stringData").and_then(Value::as_object) {
            for (k, v) in m {
                out.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
    }
    out
}

fn lower(kind: &str) -> &'static str {
    if kind == "Secret" {
        "secret"
    } else {
        "configmap"
    }
}

/// A downward API field of the pod.
pub fn field_ref(pod: &Value, path: &str) -> Result<String, String> {
    let s = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let map_key = |prefix: &str, map: &str| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(
            pod.pointer(&format!("/metadata/{map}"))
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    Ok(match path {
        "metadata.name" => s("/metadata/name"),
        "metadata.namespace" => s("/metadata/namespace"),
        "metadata.uid" => s("/metadata/uid"),
        "spec.nodeName" => s("/spec/nodeName"),
        "spec.serviceAccountName" => s("/spec/serviceAccountName"),
        "status.podIP" | "status.podIPs" => s("/status/podIP"),
        "status.hostIP" | "status.hostIPs" => s("/status/hostIP"),
        p if p.starts_with("metadata.labels[") => {
            map_key("metadata.labels", "labels").unwrap_or_default()
        }
        p if p.starts_with("metadata.annotations[") => {
            map_key("metadata.annotations", "annotations").unwrap_or_default()
        }
        other => return Err(format!("unsupported fieldRef fieldPath {other:?}")),
    })
}

/// A resourceFieldRef value (limits/requests of a container), in units of `divisor` (default 1).
fn resource_ref(pod: &Value, container: &Value, r: &Value) -> Result<String, String> {
    let res = r.get("resource").and_then(Value::as_str).unwrap_or("");
    let target = match r
        .get("containerName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(name) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(Value::Null),
        None => container.clone(),
    };
    let (section, name) = res
        .split_once('.')
        .ok_or_else(|| format!("unsupported resourceFieldRef resource {res:?}"))?;
    let q = target
        .pointer(&format!("/resources/{section}/{name}"))
        .and_then(Value::as_str)
        .unwrap_or("0");
    let bad = |q: &str| format!("resourceFieldRef: {q:?} is not a quantity");
    let value = crate::api::parse_quantity_millis(q).ok_or_else(|| bad(q))?;
    let divisor = match r.get("divisor").and_then(Value::as_str) {
        Some(d) => crate::api::parse_quantity_millis(d).ok_or_else(|| bad(d))?,
        None => 1000,
    };
    if divisor <= 0 {
        return Err(bad("0"));
    }
    // Rounded up, as Kubernetes does (a 250m limit with divisor 1 is 1).
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// Builds the container's environment (in order), given variables set before it (e.g. POD_IP on the process runtime).
pub async fn resolve(
    pod: &Value,
    container: &Value,
    lookup: &dyn Lookup,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut order: Vec<String> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let set =
        |order: &mut Vec<String>, vars: &mut BTreeMap<String, String>, k: String, v: String| {
            if vars.insert(k.clone(), v).is_none() {
                order.push(k);
            }
        };
    for (k, v) in base {
        set(&mut order, &mut vars, k.clone(), v.clone());
    }
    let mut cache: BTreeMap<(String, String), Option<BTreeMap<String, String>>> = BTreeMap::new();
    let mut fetch =
        async |kind: &str, name: &str| -> Result<Option<BTreeMap<String, String>>, String> {
            let key = (kind.to_string(), name.to_string());
            if let Some(v) = cache.get(&key) {
                return Ok(v.clone());
            }
            let got = lookup.get(kind, ns, name).await?.map(|o| data_of(kind, &o));
            cache.insert(key, got.clone());
            Ok(got)
        };
    for from in container
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or("");
        for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
            let Some(r) = from.get(field) else { continue };
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match fetch(kind, name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut order, &mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(format!("{} \"{name}\" not found", lower(kind))),
            }
        }
    }
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            expand(v, &vars)
        } else if let Some(from) = e.get("valueFrom") {
            if let Some(f) = from.get("fieldRef") {
                field_ref(
                    pod,
                    f.get("fieldPath").and_then(Value::as_str).unwrap_or(""),
                )?
            } else if let Some(r) = from.get("resourceFieldRef") {
                resource_ref(pod, container, r)?
            } else {
                let (field, kind) = if from.get("secretKeyRef").is_some() {
                    ("secretKeyRef", "Secret")
                } else {
                    ("configMapKeyRef", "ConfigMap")
                };
                let Some(r) = from.get(field) else {
                    return Err(format!(
                        "env {name}: valueFrom names no source the agent supports"
                    ));
                };
                let obj_name = r.get("name").and_then(Value::as_str).unwrap_or("");
                let key = r.get("key").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
                match fetch(kind, obj_name).await? {
                    Some(data) => match data.get(key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {key} in {kind} {ns}/{obj_name}"
                            ))
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("{} \"{obj_name}\" not found", lower(kind))),
                }
            }
        } else {
            String::new()
        };
        set(&mut order, &mut vars, name, value);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// The command line: `command` then `args`, with `$(VAR)` expanded from the environment.
pub fn command_line(container: &Value, env: &[(String, String)]) -> Vec<String> {
    let mut line = expanded(container, "command", env);
    line.extend(expanded(container, "args", env));
    line
}

/// One of the container's string lists (`command`, `args`) with `$(VAR)` references expanded.
pub fn expanded(container: &Value, field: &str, env: &[(String, String)]) -> Vec<String> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    container
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(|s| expand(s, &vars)))
        .collect()
}

/// The service environment variables Kubernetes gives every container (Docker-links style): for each Service of the
/// pod's namespace with a cluster IP, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (and `_<PORTNAME>`), `<NAME>_PORT`
/// and `<NAME>_PORT_<port>_<PROTO>` with its `_PROTO`, `_PORT` and `_ADDR`.
pub fn service_links(
    ns: &str,
    services: &[std::sync::Arc<crate::api::core::Service>],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&crate::api::core::Service> = services
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| s.metadata.namespace() == ns)
        .collect();
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
    use serde_json::json;

    struct Objects(BTreeMap<(String, String), Value>);

    #[async_trait]
    impl Lookup for Objects {
        async fn get(&self, kind: &str, _ns: &str, name: &str) -> Result<Option<Value>, String> {
            Ok(self.0.get(&(kind.to_string(), name.to_string())).cloned())
        }
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
            "spec": {"nodeName": "n1"}, "status": {"podIP": "127.244.0.9"}});
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
        let pod = json!({"metadata": {"name": "p", "namespace": "shop"}});
        let c = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]});
        assert_eq!(
            resolve(&pod, &c, &objects(), &[]).await.unwrap_err(),
            "configmap \"gone\" not found"
        );
        let c = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]});
        assert_eq!(
            resolve(&pod, &c, &objects(), &[]).await.unwrap_err(),
            "couldn't find key k in ConfigMap shop/cfg"
        );
        let c = json!({"envFrom": [{"secretRef": {"name": "nope"}}]});
        assert_eq!(
            resolve(&pod, &c, &objects(), &[]).await.unwrap_err(),
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
        let env: std::collections::BTreeMap<String, String> =
            service_links("n", &[svc, other, headless])
                .into_iter()
                .collect();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "10.96.0.11");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_REDIS"], "6379");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://10.96.0.11:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP"], "tcp://10.96.0.11:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_PROTO"], "tcp");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.96.0.11");
        assert_eq!(env.len(), 8);
    }
}
