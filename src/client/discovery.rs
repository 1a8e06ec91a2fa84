//! Discovery from the client side: what kinds a cluster serves beyond the built-in table - the custom kinds of its
//! CRDs - read from `/apis` and each group-version's resource list (what kubectl reads, and what every
//! authenticated user may read), then registered in this process's kind registry so `registry::lookup` resolves
//! `crontabs`, `ct` or `CronTab` like a built-in kind. Names, scope, subresources and categories only: schemas and
//! printer columns stay with the API server, which builds Tables itself.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Client, Result};
use crate::api::crd::{CustomVersion, Served};
use crate::api::registry;

/// Reads the cluster's discovery documents and registers every kind the built-in table lacks. Returns how many
/// custom kinds (kind and version) the cluster serves.
pub async fn learn(client: &Client) -> Result<usize> {
    let groups = client
        .request(reqwest::Method::GET, "/apis", None, None)
        .await?;
    let mut by_crd: BTreeMap<String, Vec<Served>> = BTreeMap::new();
    for g in groups["groups"].as_array().into_iter().flatten() {
        let group = g["name"].as_str().unwrap_or("");
        let preferred = g["preferredVersion"]["version"].as_str().unwrap_or("");
        for v in g["versions"].as_array().into_iter().flatten() {
            let version = v["version"].as_str().unwrap_or("");
            if registry::KINDS
                .iter()
                .any(|k| k.group == group && k.version == version)
            {
                continue;
            }
            let path = format!("/apis/{group}/{version}");
            let Ok(list) = client
                .request(reqwest::Method::GET, &path, None, None)
                .await
            else {
                continue;
            };
            let resources = list["resources"].as_array().cloned().unwrap_or_default();
            for r in resources.iter().filter(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty() && !n.contains('/'))
            }) {
                let plural = r["name"].as_str().unwrap_or("").to_string();
                let has = |sub: &str| {
                    resources
                        .iter()
                        .any(|x| x["name"].as_str() == Some(&format!("{plural}/{sub}")))
                };
                let strings = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                };
                let kind = r["kind"].as_str().unwrap_or("").to_string();
                let crd = format!("{plural}.{group}");
                let (status, scale) = (has("status"), has("scale"));
                let served = Served {
                    group: group.to_string(),
                    version: version.to_string(),
                    singular: r["singularName"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .unwrap_or_else(|| kind.to_ascii_lowercase()),
                    kind,
                    plural,
                    short_names: strings(&r["shortNames"]),
                    categories: strings(&r["categories"]),
                    namespaced: r["namespaced"].as_bool().unwrap_or(true),
                    status,
                    custom: CustomVersion {
                        crd: crd.clone(),
                        storage_version: preferred.to_string(),
                        schema: None,
                        columns: Vec::new(),
                        scale: scale.then(|| crate::api::crd::ScalePaths {
                            spec_replicas: "spec.replicas".into(),
                            status_replicas: "status.replicas".into(),
                            label_selector: None,
                        }),
                        selectable: Vec::new(),
                        deprecation: None,
                    },
                };
                by_crd.entry(crd).or_default().push(served);
            }
        }
    }
    let mut count = 0;
    for (crd, mut served) in by_crd {
        // The preferred version first, as lookups prefer it.
        served.sort_by_key(|s| s.version != s.custom.storage_version);
        count += served.len();
        if registry::custom_crds().contains(&crd) {
            continue; // this process serves it itself (the API server's own registration is richer)
        }
        registry::set_custom(&crd, served);
    }
    Ok(count)
}
