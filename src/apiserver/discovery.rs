//! Discovery documents: `/version`, `/api`, `/apis`, and the resource list of each group-version, generated from the
//! kind registry (names, short names, verbs, categories, subresources including `deployments/scale`).

use serde_json::{json, Value};

use crate::api::registry::{self, group_versions};

pub fn version() -> Value {
    let (major, minor) = crate::KUBE_VERSION;
    json!({
        "major": major, "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0-capstan.{}", crate::VERSION),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

/// Every served group-version: the kinds' and `metrics.k8s.io/v1beta1`.
fn served() -> Vec<(&'static str, &'static str)> {
    let mut all = group_versions();
    all.push((super::metrics::GROUP, super::metrics::VERSION));
    all
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, anything else last by name.
fn version_rank(v: &str) -> (u8, i64, i64, String) {
    let parse = |rest: &str| -> Option<(u8, i64, i64)> {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (level, word) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(word) {
                let minor: i64 = n.parse().ok()?;
                return Some((level, -major, -minor));
            }
        }
        None
    };
    match v.strip_prefix('v').and_then(parse) {
        Some((l, a, b)) => (l, a, b, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// Each served group with its versions, the preferred (highest priority) first.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (g, v) in served().into_iter().filter(|(g, _)| !g.is_empty()) {
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    for (_, vs) in out.iter_mut() {
        vs.sort_by_key(|v| version_rank(v));
    }
    out
}

fn group_doc(g: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
}

pub fn api_groups() -> Value {
    let groups: Vec<Value> = groups().iter().map(|(g, vs)| group_doc(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    let (g, vs) = groups().into_iter().find(|(g, _)| *g == group)?;
    let mut doc = group_doc(g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) == (super::metrics::GROUP, super::metrics::VERSION) {
        return Some(super::metrics::resource_list());
    }
    let mut resources = Vec::new();
    for k in registry::all()
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if k.kind == "Event" || k.kind == "Endpoints" {
            verbs.sort();
        }
        resources.push(json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
            "verbs": verbs, "shortNames": k.short_names, "categories": k.categories,
            "storageVersionHash": crate::api::openapi::hash_of(&json!(k.qualified())).chars().take(11).collect::<String>(),
        }));
        if k.status {
            resources.push(json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"]}));
        }
        if k.scale {
            resources.push(json!({"name": format!("{}/scale", k.plural), "singularName": "", "namespaced": k.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if k.kind == "Namespace" {
            resources.push(
                json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false,
                "kind": "Namespace", "verbs": ["update"]}),
            );
        }
        if k.kind == "Pod" {
            resources.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            resources.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The aggregated discovery version a client asked for in `Accept` (`v2` or `v2beta1`), if it asked for one before
/// plain JSON.
pub fn aggregated_media(headers: &axum::http::HeaderMap) -> Option<&'static str> {
    let accept = headers.get(axum::http::header::ACCEPT)?.to_str().ok()?;
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json") {
            return None; // plain JSON (or something else) preferred first
        }
        let has = |p: &str| params.contains(&p);
        if has("g=apidiscovery.k8s.io") && has("as=APIGroupDiscoveryList") {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
        }
        if params.len() == 1 {
            return None;
        }
    }
    None
}

/// The aggregated discovery document (apidiscovery.k8s.io APIGroupDiscoveryList) of `/api` (`core`) or `/apis`:
/// every group, version and resource in one answer, so a client learns the whole API in one request.
pub fn aggregated(core: bool, media: &str) -> Value {
    let mut items = Vec::new();
    let groups: Vec<(&'static str, Vec<&'static str>)> = if core {
        vec![("", vec!["v1"])]
    } else {
        groups()
    };
    for (g, versions) in groups {
        let mut vs = Vec::new();
        for v in versions {
            let Some(list) = resource_list(g, v) else {
                continue;
            };
            let all = list["resources"].as_array().cloned().unwrap_or_default();
            let mut resources = Vec::new();
            for r in all
                .iter()
                .filter(|r| !r["name"].as_str().unwrap_or("/").contains('/'))
            {
                let name = r["name"].as_str().unwrap_or("");
                let subresources: Vec<Value> = all
                    .iter()
                    .filter_map(|x| {
                        let sub = x["name"].as_str()?.strip_prefix(&format!("{name}/"))?;
                        let (sg, sv) = (
                            x["group"].as_str().unwrap_or(g),
                            x["version"].as_str().unwrap_or(v),
                        );
                        Some(json!({"subresource": sub,
                            "responseKind": {"group": sg, "version": sv, "kind": x["kind"]},
                            "verbs": x["verbs"]}))
                    })
                    .collect();
                let mut res = json!({
                    "resource": name,
                    "responseKind": {"group": g, "version": v, "kind": r["kind"]},
                    "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
                    "singularResource": r["singularName"],
                    "verbs": r["verbs"],
                });
                for f in ["shortNames", "categories"] {
                    if r[f].as_array().is_some_and(|a| !a.is_empty()) {
                        res[f] = r[f].clone();
                    }
                }
                if !subresources.is_empty() {
                    res["subresources"] = json!(subresources);
                }
                resources.push(res);
            }
            vs.push(json!({"version": v, "resources": resources, "freshness": "Current"}));
        }
        let meta = if g.is_empty() {
            json!({"creationTimestamp": null})
        } else {
            json!({"name": g, "creationTimestamp": null})
        };
        items.push(json!({"metadata": meta, "versions": vs}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{media}"),
        "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_chosen_by_accept_and_lists_subresources() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(aggregated_media(&h), Some("v2"));
        h.insert("accept", "application/json, */*".parse().unwrap());
        assert_eq!(aggregated_media(&h), None);
        let doc = aggregated(false, "v2");
        let apps = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert!(deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale"));
        assert_eq!(
            aggregated(true, "v2")["items"][0]["versions"][0]["version"],
            "v1"
        );
    }
}
