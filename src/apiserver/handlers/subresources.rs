//! Subresources other than status: `scale` (autoscaling/v1 Scale over `spec.replicas`) and pods' `binding`.

use super::*;

impl Server {
    /// The Scale view of an object.
    pub fn scale_of(kind: &KindInfo, obj: &Value) -> Value {
        let custom = crate::api::registry::custom(kind).and_then(|c| c.scale.clone());
        let at = |path: &str| {
            let mut cur = obj;
            for p in path.split('.') {
                cur = cur.get(p)?;
            }
            Some(cur)
        };
        let selector = match (&custom, obj.pointer("/spec/selector")) {
            (Some(paths), _) => paths
                .label_selector
                .as_deref()
                .and_then(at)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            (None, sel) => Self::builtin_selector(kind, sel),
        };
        let (spec_path, status_path) = match &custom {
            Some(p) => (p.spec_replicas.as_str(), p.status_replicas.as_str()),
            None => ("spec.replicas", "status.replicas"),
        };
        let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
        let keep: serde_json::Map<String, Value> = meta
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "name" | "namespace" | "uid" | "resourceVersion" | "creationTimestamp"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": keep,
            "spec": {"replicas": at(spec_path).and_then(Value::as_i64).unwrap_or(0)},
            "status": {"replicas": at(status_path).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
        })
    }

    /// Sets the replicas a Scale wrote: `spec.replicas`, or where a CRD's scale subresource says.
    fn set_replicas(kind: &KindInfo, obj: &mut Value, replicas: i64) {
        let path = crate::api::registry::custom(kind)
            .and_then(|c| c.scale.as_ref().map(|s| s.spec_replicas.clone()))
            .unwrap_or_else(|| "spec.replicas".into());
        let mut cur = obj;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            if !cur.is_object() {
                *cur = json!({});
            }
            if i + 1 == parts.len() {
                cur[*p] = json!(replicas);
                return;
            }
            cur = &mut cur[*p];
        }
    }

    fn builtin_selector(kind: &KindInfo, sel: Option<&Value>) -> String {
        match sel {
            Some(sel) if kind.kind == "ReplicationController" => sel
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            Some(sel) => serde_json::from_value::<crate::api::meta::LabelSelector>(sel.clone())
                .ok()
                .and_then(|ls| Selector::from_label_selector(&ls).ok())
                .map(|s| s.to_string())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// PUT or PATCH of `/scale`.
    pub async fn write_scale(
        &self,
        t: &Target,
        body: &[u8],
        content_type: Option<&str>,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let kind = t.kind;
        let name = t.name.as_deref().unwrap_or("");
        let opts = WriteOpts::from_query(q, "unknown", None)?;
        for _ in 0..8 {
            let (cur, rev) = self.get_object(kind, t.namespace.as_deref(), name).await?;
            let mut scale = Self::scale_of(kind, &cur);
            match content_type {
                None => scale = parse_body(body, "json")?,
                Some(ct) => {
                    let ct = ct.split(';').next().unwrap_or("").trim();
                    let doc = parse_body(body, if ct.contains("yaml") { "yaml" } else { "json" })?;
                    match ct {
                        "application/json-patch+json" => patch::json_patch(&mut scale, &doc)
                            .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                        "application/merge-patch+json"
                        | "application/strategic-merge-patch+json" => {
                            patch::merge_patch(&mut scale, &doc)
                        }
                        "application/apply-patch+yaml" => patch::merge_patch(&mut scale, &doc),
                        other => return Err(ApiError::unsupported_media(other)),
                    }
                }
            }
            if let Some(want) = scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                if want != rev.to_string() {
                    return Err(ApiError::conflict(&kind.qualified(), name, "the object has been modified; please apply your changes to the latest version and try again"));
                }
            }
            let replicas = match scale.pointer("/spec/replicas") {
                Some(Value::Number(n)) if n.as_i64().is_some_and(|r| r >= 0) => {
                    n.as_i64().unwrap_or(0)
                }
                other => {
                    return Err(ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        name,
                        &[validation::FieldError {
                            field: "spec.replicas".into(),
                            reason: validation::Reason::Invalid,
                            detail: format!(
                                "{}: must be greater than or equal to 0",
                                other.cloned().unwrap_or(Value::Null)
                            ),
                        }],
                    ))
                }
            };
            let mut next = cur.clone();
            Self::set_replicas(kind, &mut next, replicas);
            let sub_opts = WriteOpts {
                subresource: "scale".into(),
                ..opts.clone()
            };
            match self
                .write(
                    kind,
                    t.namespace.as_deref(),
                    next,
                    Some((&cur, rev)),
                    &sub_opts,
                    warnings,
                )
                .await
            {
                Ok(v) => return Ok(Self::scale_of(kind, &v)),
                Err(e) if e.code == 409 && content_type.is_some() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(
            &kind.qualified(),
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// POST pods/{name}/binding: assigns a node (the scheduler's write).
    pub async fn bind(&self, t: &Target, body: Value) -> Result<Value> {
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if node.is_empty() {
            return Err(ApiError::bad_request("Binding.target.name is required"));
        }
        let name = t.name.as_deref().unwrap_or("");
        let (prev, rev) = self
            .get_object(t.kind, t.namespace.as_deref(), name)
            .await?;
        if prev
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "pods",
                name,
                "pod is already assigned to a node",
            ));
        }
        let mut cur = prev.clone();
        cur["spec"]["nodeName"] = json!(node);
        // Like Kubernetes, binding also records PodScheduled=True (one write, not two).
        let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": format_time(&now())});
        if !cur["status"].is_object() {
            cur["status"] = json!({});
        }
        let conds = cur["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.insert(0, scheduled);
        cur["status"]["conditions"] = json!(conds);
        let opts = WriteOpts {
            dry_run: false,
            validation: "Ignore".into(),
            manager: "scheduler".into(),
            subresource: "binding".into(),
        };
        let mut w = Vec::new();
        self.write(
            t.kind,
            t.namespace.as_deref(),
            cur,
            Some((&prev, rev)),
            &opts,
            &mut w,
        )
        .await?;
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }
}
