//! Deletes: one object (finalizers, propagation policy, pod grace periods, preconditions) and collections.

use super::*;

impl Server {
    /// DELETE an object, honouring finalizers, propagation policy and pod grace periods.
    pub async fn delete(&self, t: &Target, body: &[u8], q: &Query) -> Result<Value> {
        let kind = t.kind;
        let ns = t.namespace.as_deref();
        let name = t.name.as_deref().unwrap_or("");
        let opts: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
            json!({})
        } else {
            parse_body(body, "json")?
        };
        let dry_run = q.get("dryRun").is_some()
            || opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty());
        let policy = q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| {
                opts.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .or_else(
                || match opts.get("orphanDependents").and_then(Value::as_bool) {
                    Some(true) => Some("Orphan".into()),
                    _ => None,
                },
            )
            .unwrap_or_else(|| "Background".into());
        if !["Background", "Foreground", "Orphan"].contains(&policy.as_str()) {
            return Err(ApiError::bad_request(format!(
                "DeleteOptions.propagationPolicy: Unsupported value: {policy:?}"
            )));
        }
        let grace = q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
            .or_else(|| opts.get("gracePeriodSeconds").and_then(Value::as_i64));
        for _ in 0..8 {
            let (mut cur, rev) = self.get_object(kind, ns, name).await?;
            if let Some(pre) = opts.get("preconditions") {
                if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
                    if meta_str(&cur, "uid") != Some(uid) {
                        return Err(ApiError::conflict(&kind.qualified(), name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta_str(&cur, "uid").unwrap_or(""))));
                    }
                }
                if let Some(want) = pre.get("resourceVersion").and_then(Value::as_str) {
                    if want != rev.to_string() {
                        return Err(ApiError::conflict(&kind.qualified(), name, "the object has been modified; please apply your changes to the latest version and try again"));
                    }
                }
            }
            let mut finalizers: Vec<String> = cur
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            match policy.as_str() {
                "Foreground" if !finalizers.contains(&"foregroundDeletion".to_string()) => {
                    finalizers.push("foregroundDeletion".into())
                }
                "Orphan" if !finalizers.contains(&"orphan".to_string()) => {
                    finalizers.push("orphan".into())
                }
                _ => {}
            }
            let pod_grace = if kind.kind == "Pod"
                && cur.pointer("/spec/nodeName").is_some()
                && cur
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p != "Succeeded" && p != "Failed")
            {
                grace.unwrap_or_else(|| {
                    cur.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                })
            } else {
                0
            };
            let already = cur.pointer("/metadata/deletionTimestamp").is_some();
            let graceful = !finalizers.is_empty() || pod_grace > 0 || kind.kind == "Namespace";
            if graceful {
                if already && kind.kind != "Pod" {
                    return Ok(cur);
                }
                let when = now() + chrono::Duration::seconds(pod_grace);
                if !already
                    || pod_grace
                        < cur
                            .pointer("/metadata/deletionGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(i64::MAX)
                {
                    set_meta(&mut cur, "deletionTimestamp", json!(format_time(&when)));
                    set_meta(&mut cur, "deletionGracePeriodSeconds", json!(pod_grace));
                }
                if !finalizers.is_empty() {
                    set_meta(&mut cur, "finalizers", json!(finalizers));
                }
                if kind.kind == "Namespace" {
                    cur["status"] = json!({"phase": "Terminating"});
                    // The namespace controller empties it and then removes this finalizer (`.../finalize`).
                    if cur["spec"]["finalizers"].is_null() {
                        cur["spec"]["finalizers"] =
                            json!([crate::apiserver::namespaces::FINALIZER]);
                    }
                }
                if dry_run {
                    return Ok(cur);
                }
                set_meta(&mut cur, "resourceVersion", Value::Null);
                let bytes =
                    serde_json::to_vec(&cur).map_err(|e| ApiError::internal(e.to_string()))?;
                match self
                    .store
                    .update(&key(kind, ns, Some(name)), bytes, rev)
                    .await
                {
                    Ok(r) => {
                        set_meta(&mut cur, "resourceVersion", json!(r.to_string()));
                        return Ok(cur);
                    }
                    Err(crate::store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if dry_run {
                return Ok(cur);
            }
            match self.store.delete(&key(kind, ns, Some(name)), rev).await {
                Ok(_) => return Ok(cur),
                Err(crate::store::Error::Conflict { .. }) => continue,
                Err(crate::store::Error::NotFound(_)) => {
                    return Err(ApiError::not_found(&kind.qualified(), name))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            &kind.qualified(),
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// DELETE on a collection: deletes every selected object.
    pub async fn delete_collection(&self, t: &Target, body: &[u8], q: &Query) -> Result<Value> {
        let (items, rev, _, _) = self.list_objects(t.kind, t.namespace.as_deref(), q).await?;
        let mut deleted = Vec::new();
        for item in items {
            let name = meta_str(&item, "name").unwrap_or("").to_string();
            let ns = meta_str(&item, "namespace").map(String::from);
            let target = Target {
                kind: t.kind,
                namespace: ns,
                name: Some(name),
                sub: None,
            };
            match self.delete(&target, body, q).await {
                Ok(v) => deleted.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(
            json!({"kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version(),
            "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
        )
    }
}
