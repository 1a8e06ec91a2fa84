//! The transformers, in kustomize's order: namespace, name prefix and suffix, labels, annotations, images,
//! replicas. Each edits the objects of one level of a build in place.

use serde_json::{json, Map, Value};

use super::refs::{follow_renames, items};
use super::{string_map, Kustomization, Problem, Res};

impl Kustomization<'_> {
    /// Runs this level's transformers over its objects; the first bad field ends the build.
    pub(super) fn transform(&self, out: &mut [Res]) -> Result<(), Problem> {
        if let Some(ns) = self.k.get("namespace") {
            let ns = ns
                .as_str()
                .ok_or_else(|| self.err("namespace", "must be a string"))?;
            set_namespace(out, ns);
        }
        self.names(out);
        self.labels(out)?;
        self.annotations(out)?;
        self.images(out)?;
        self.replicas(out)
    }

    /// `namePrefix` and `nameSuffix`, followed into references. Records each object's name before them as its
    /// origin, which generators' `behavior: merge` and `replicas` match.
    fn names(&self, out: &mut [Res]) {
        let prefix = self.k["namePrefix"].as_str().unwrap_or("");
        let suffix = self.k["nameSuffix"].as_str().unwrap_or("");
        let mut renames = Vec::new();
        for r in out.iter_mut() {
            r.origin = r.name().to_string();
            if (prefix.is_empty() && suffix.is_empty())
                || matches!(
                    r.kind.kind,
                    "Namespace" | "CustomResourceDefinition" | "APIService"
                )
            {
                continue;
            }
            let old = r.name().to_string();
            let new = format!("{prefix}{old}{suffix}");
            r.object["metadata"]["name"] = json!(new);
            renames.push((r.kind.kind, r.namespace().map(str::to_string), old, new));
        }
        follow_renames(out, &renames);
    }

    /// `commonLabels` (also on selectors and templates) and `labels` (on selectors and templates as each entry says).
    fn labels(&self, out: &mut [Res]) -> Result<(), Problem> {
        if let Some(labels) = self.k.get("commonLabels") {
            let labels = string_map(labels).map_err(|e| self.err("commonLabels", e))?;
            for r in out.iter_mut() {
                add_labels(r, &labels, true, true);
            }
        }
        let Some(list) = self.k.get("labels") else {
            return Ok(());
        };
        let list = list
            .as_array()
            .ok_or_else(|| self.err("labels", "must be a list"))?;
        for entry in list {
            let pairs = string_map(&entry["pairs"]).map_err(|e| self.err("labels", e))?;
            let selectors = entry["includeSelectors"].as_bool().unwrap_or(false);
            let templates = selectors || entry["includeTemplates"].as_bool().unwrap_or(false);
            for r in out.iter_mut() {
                add_labels(r, &pairs, selectors, templates);
            }
        }
        Ok(())
    }

    /// `commonAnnotations`, on objects and their pod templates.
    fn annotations(&self, out: &mut [Res]) -> Result<(), Problem> {
        let Some(annotations) = self.k.get("commonAnnotations") else {
            return Ok(());
        };
        let annotations = string_map(annotations).map_err(|e| self.err("commonAnnotations", e))?;
        for r in out.iter_mut() {
            merge_into(&mut r.object["metadata"], "annotations", &annotations);
            if let Some(t) = template_meta(&mut r.object, r.kind.kind) {
                merge_into(t, "annotations", &annotations);
            }
        }
        Ok(())
    }

    /// `images`: new names, tags or digests for the containers that use an image.
    fn images(&self, out: &mut [Res]) -> Result<(), Problem> {
        let Some(images) = self.k.get("images") else {
            return Ok(());
        };
        let images = images
            .as_array()
            .ok_or_else(|| self.err("images", "must be a list"))?;
        for (i, img) in images.iter().enumerate() {
            let name = img["name"]
                .as_str()
                .ok_or_else(|| self.err("images", format!("entry {}: name is required", i + 1)))?;
            for r in out.iter_mut() {
                if let Some(spec) = pod_spec(&mut r.object, r.kind.kind) {
                    set_images(spec, name, img);
                }
            }
        }
        Ok(())
    }

    /// `replicas`: counts for workloads named by their name before or after this level's prefix and suffix.
    fn replicas(&self, out: &mut [Res]) -> Result<(), Problem> {
        let Some(replicas) = self.k.get("replicas") else {
            return Ok(());
        };
        let replicas = replicas
            .as_array()
            .ok_or_else(|| self.err("replicas", "must be a list"))?;
        for (i, entry) in replicas.iter().enumerate() {
            let (Some(name), Some(count)) = (entry["name"].as_str(), entry["count"].as_i64())
            else {
                return Err(self.err(
                    "replicas",
                    format!("entry {}: name and an integer count are required", i + 1),
                ));
            };
            let mut found = false;
            for r in out.iter_mut().filter(|r| {
                matches!(
                    r.kind.kind,
                    "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
                ) && (r.origin == name || r.name() == name)
            }) {
                r.object["spec"]["replicas"] = json!(count);
                found = true;
            }
            if !found {
                return Err(self.err(
                    "replicas",
                    format!("{name}: no Deployment, ReplicaSet, StatefulSet or ReplicationController of that name"),
                ));
            }
        }
        Ok(())
    }
}

fn set_namespace(out: &mut [Res], ns: &str) {
    let accounts: Vec<String> = out
        .iter()
        .filter(|r| r.kind.kind == "ServiceAccount")
        .map(|r| r.name().to_string())
        .collect();
    for r in out.iter_mut() {
        if r.kind.namespaced {
            r.object["metadata"]["namespace"] = json!(ns);
        }
        // Bindings follow the ServiceAccounts of this build into the namespace.
        if !matches!(r.kind.kind, "RoleBinding" | "ClusterRoleBinding") {
            continue;
        }
        {
            for s in items(&mut r.object, "/subjects") {
                if s["kind"] == "ServiceAccount"
                    && s["name"]
                        .as_str()
                        .is_some_and(|n| accounts.iter().any(|a| a == n))
                {
                    s["namespace"] = json!(ns);
                }
            }
        }
    }
}

/// Adds labels to an object; with `selectors`, to the selectors that must keep matching it; with `templates`, to the
/// pod (and job) templates.
fn add_labels(r: &mut Res, labels: &Map<String, Value>, selectors: bool, templates: bool) {
    merge_into(&mut r.object["metadata"], "labels", labels);
    let kind = r.kind.kind;
    if templates {
        if let Some(t) = template_meta(&mut r.object, kind) {
            merge_into(t, "labels", labels);
        }
        if kind == "CronJob" {
            merge_into(
                &mut r.object["spec"]["jobTemplate"]["metadata"],
                "labels",
                labels,
            );
        }
    }
    if !selectors {
        return;
    }
    match kind {
        "Service" => merge_into(&mut r.object["spec"], "selector", labels),
        "ReplicationController" => merge_into(&mut r.object["spec"], "selector", labels),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            merge_into(&mut r.object["spec"]["selector"], "matchLabels", labels)
        }
        "Job" | "PodDisruptionBudget"
            if r.object["spec"]["selector"]["matchLabels"].is_object() =>
        {
            merge_into(&mut r.object["spec"]["selector"], "matchLabels", labels)
        }
        "NetworkPolicy" if r.object["spec"]["podSelector"]["matchLabels"].is_object() => {
            merge_into(&mut r.object["spec"]["podSelector"], "matchLabels", labels)
        }
        _ => {}
    }
}

pub(super) fn merge_into(parent: &mut Value, key: &str, add: &Map<String, Value>) {
    if add.is_empty() {
        return;
    }
    if !parent.is_object() {
        *parent = json!({});
    }
    let slot = &mut parent[key];
    if !slot.is_object() {
        *slot = json!({});
    }
    if let Some(m) = slot.as_object_mut() {
        for (k, v) in add {
            m.insert(k.clone(), v.clone());
        }
    }
}

/// The pod template's metadata of a workload (created when the template has none).
fn template_meta<'v>(obj: &'v mut Value, kind: &str) -> Option<&'v mut Value> {
    let t = match kind {
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "StatefulSet"
        | "DaemonSet"
        | "Job" => obj.pointer_mut("/spec/template")?,
        "CronJob" => obj.pointer_mut("/spec/jobTemplate/spec/template")?,
        _ => return None,
    };
    let t = t.as_object_mut()?;
    Some(t.entry("metadata").or_insert_with(|| json!({})))
}

/// The pod spec of a pod or a workload.
pub(super) fn pod_spec<'v>(obj: &'v mut Value, kind: &str) -> Option<&'v mut Value> {
    let spec = match kind {
        "Pod" => obj.pointer_mut("/spec")?,
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "StatefulSet"
        | "DaemonSet"
        | "Job" => obj.pointer_mut("/spec/template/spec")?,
        "CronJob" => obj.pointer_mut("/spec/jobTemplate/spec/template/spec")?,
        _ => return None,
    };
    spec.is_object().then_some(spec)
}

/// Splits an image reference into its name and the rest (`:tag`, `@digest` or both).
pub(super) fn split_image(image: &str) -> (&str, &str) {
    let head = &image[..image.find('@').unwrap_or(image.len())];
    let slash = head.rfind('/').map_or(0, |i| i + 1);
    let name_end = head[slash..].rfind(':').map_or(head.len(), |c| slash + c);
    image.split_at(name_end)
}

pub(super) fn set_images(spec: &mut Value, name: &str, img: &Value) {
    for list in ["/initContainers", "/containers", "/ephemeralContainers"] {
        for c in items(spec, list) {
            let Some(image) = c["image"].as_str() else {
                continue;
            };
            let (current, rest) = split_image(image);
            if current != name {
                continue;
            }
            let new_name = img["newName"].as_str().unwrap_or(current);
            let new = if let Some(d) = img["digest"].as_str() {
                format!("{new_name}@{d}")
            } else if let Some(t) = img["newTag"].as_str() {
                format!("{new_name}:{t}")
            } else if let Some(t) = img["newTag"].as_i64() {
                format!("{new_name}:{t}")
            } else {
                format!("{new_name}{rest}")
            };
            c["image"] = json!(new);
        }
    }
}
