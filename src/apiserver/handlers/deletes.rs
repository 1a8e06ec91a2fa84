//! Deletes: one object (finalizers, propagation policy, pod grace periods, preconditions) and collections.

use super::*;

/// What a DELETE asks for: DeleteOptions from the body and the query.
struct DeleteOpts {
    dry_run: bool,
    /// Background, Foreground or Orphan.
    policy: String,
    grace: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
}

impl DeleteOpts {
    fn parse(body: &[u8], q: &Query) -> Result<DeleteOpts> {
        let opts: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
            json!({})
        } else if body.starts_with(b"k8s\0") {
            // kubectl sends DeleteOptions as protobuf to the resources it knows.
            crate::api::protobuf::object(body, "meta.k8s.io", "v1", "DeleteOptions")
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        } else {
            parse_body(body, "json")?
        };
        let dry_run =
            q.get("dryRun").is_some() || opts["dryRun"].as_array().is_some_and(|d| !d.is_empty());
        let orphan =
            (opts["orphanDependents"].as_bool() == Some(true)).then(|| "Orphan".to_string());
        let policy = q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| opts["propagationPolicy"].as_str().map(String::from))
            .or(orphan)
            .unwrap_or_else(|| "Background".into());
        if !["Background", "Foreground", "Orphan"].contains(&policy.as_str()) {
            return Err(ApiError::bad_request(format!(
                "DeleteOptions.propagationPolicy: Unsupported value: {policy:?}"
            )));
        }
        let grace = q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
            .or_else(|| opts["gracePeriodSeconds"].as_i64());
        let pre = &opts["preconditions"];
        Ok(DeleteOpts {
            dry_run,
            policy,
            grace,
            uid: pre["uid"].as_str().map(String::from),
            resource_version: pre["resourceVersion"].as_str().map(String::from),
        })
    }

    /// The preconditions hold for the object as read (its uid and revision).
    fn check(&self, kind: &KindInfo, name: &str, cur: &Value, rev: i64) -> Result<()> {
        if let Some(uid) = &self.uid {
            let actual = meta_str(cur, "uid").unwrap_or("");
            if actual != uid {
                let msg = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                );
                return Err(ApiError::conflict(&kind.qualified(), name, &msg));
            }
        }
        if self
            .resource_version
            .as_ref()
            .is_some_and(|want| *want != rev.to_string())
        {
            let msg = "the object has been modified; please apply your changes to the latest version and try again";
            return Err(ApiError::conflict(&kind.qualified(), name, msg));
        }
        Ok(())
    }

    /// The object's finalizers plus the one the propagation policy adds (foregroundDeletion, orphan).
    fn finalizers(&self, cur: &Value) -> Vec<String> {
        let mut finalizers: Vec<String> = cur["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        let added = match self.policy.as_str() {
            "Foreground" => Some("foregroundDeletion"),
            "Orphan" => Some("orphan"),
            _ => None,
        };
        if let Some(f) = added.filter(|f| !finalizers.iter().any(|x| x == f)) {
            finalizers.push(f.to_string());
        }
        finalizers
    }

    /// The grace period of a pod still running on a node (its agent stops it first); 0 for everything else.
    fn pod_grace(&self, kind: &KindInfo, cur: &Value) -> i64 {
        let running = kind.kind == "Pod"
            && cur["spec"].get("nodeName").is_some()
            && cur["status"]["phase"]
                .as_str()
                .is_none_or(|p| p != "Succeeded" && p != "Failed");
        if !running {
            return 0;
        }
        self.grace.unwrap_or_else(|| {
            cur["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        })
    }
}

/// Marks an object as being deleted (deletionTimestamp, grace period, finalizers; a Namespace goes Terminating
/// with the namespace controller's finalizer). Returns false when it was already marked and nothing moves.
fn mark_deleting(
    kind: &KindInfo,
    cur: &mut Value,
    finalizers: Vec<String>,
    pod_grace: i64,
) -> bool {
    let already = cur["metadata"].get("deletionTimestamp").is_some();
    if already && kind.kind != "Pod" {
        return false;
    }
    let current_grace = cur["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(i64::MAX);
    if !already || pod_grace < current_grace {
        let when = now() + chrono::Duration::seconds(pod_grace);
        set_meta(cur, "deletionTimestamp", json!(format_time(&when)));
        set_meta(cur, "deletionGracePeriodSeconds", json!(pod_grace));
    }
    if !finalizers.is_empty() {
        set_meta(cur, "finalizers", json!(finalizers));
    }
    if kind.kind == "Namespace" {
        cur["status"] = json!({"phase": "Terminating"});
        // The namespace controller empties it and then removes this finalizer (`.../finalize`).
        if cur["spec"]["finalizers"].is_null() {
            cur["spec"]["finalizers"] = json!([crate::apiserver::namespaces::FINALIZER]);
        }
    }
    true
}

impl Server {
    /// DELETE an object, honouring finalizers, propagation policy and pod grace periods.
    pub async fn delete(&self, t: &Target, body: &[u8], q: &Query) -> Result<Value> {
        let deleted = self.delete_object(t, body, q).await;
        // Also when it failed: a part of it (a finalizer's update) may have happened.
        self.rbac.changed(t.kind);
        deleted
    }

    async fn delete_object(&self, t: &Target, body: &[u8], q: &Query) -> Result<Value> {
        let kind = t.kind;
        let ns = t.namespace.as_deref();
        let name = t.name.as_deref().unwrap_or("");
        let opts = DeleteOpts::parse(body, q)?;
        let k = key(kind, ns, Some(name));
        for _ in 0..8 {
            let (mut cur, rev) = self.get_object(kind, ns, name).await?;
            opts.check(kind, name, &cur, rev)?;
            let finalizers = opts.finalizers(&cur);
            let pod_grace = opts.pod_grace(kind, &cur);
            let graceful = !finalizers.is_empty() || pod_grace > 0 || kind.kind == "Namespace";
            if graceful {
                if !mark_deleting(kind, &mut cur, finalizers, pod_grace) || opts.dry_run {
                    return Ok(cur);
                }
                set_meta(&mut cur, "resourceVersion", Value::Null);
                let bytes =
                    serde_json::to_vec(&cur).map_err(|e| ApiError::internal(e.to_string()))?;
                match self.store.update(&k, bytes, rev).await {
                    Ok(r) => {
                        set_meta(&mut cur, "resourceVersion", json!(r.to_string()));
                        return Ok(cur);
                    }
                    Err(crate::store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if opts.dry_run {
                return Ok(cur);
            }
            match self.store.delete(&k, rev).await {
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
