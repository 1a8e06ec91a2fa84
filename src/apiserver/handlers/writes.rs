//! Writes: create, update (PUT), patch (merge, JSON, strategic, server-side apply) - all through [`Server::write`], which
//! validates, defaults, tracks field managers and commits with compare-and-swap.

use super::*;

/// Options shared by writes.
#[derive(Clone, Debug)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub validation: String,
    pub manager: String,
    pub subresource: String,
}

impl WriteOpts {
    pub fn from_query(q: &Query, default_manager: &str, sub: Option<&str>) -> Result<Self> {
        let validation = q
            .get("fieldValidation")
            .cloned()
            .unwrap_or_else(|| "Warn".into());
        if !["Strict", "Warn", "Ignore"].contains(&validation.as_str()) {
            return Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {validation:?}: supported values are Strict, Warn, Ignore"
            )));
        }
        if let Some(d) = q.get("dryRun") {
            if d != "All" {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value {d:?}: only \"All\" is supported"
                )));
            }
        }
        Ok(WriteOpts {
            dry_run: q.get("dryRun").is_some(),
            validation,
            manager: q
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| default_manager.into()),
            subresource: sub.unwrap_or("").to_string(),
        })
    }
}

/// Types and unknown fields: a wrong type is a 400; unknown fields fail under `fieldValidation=Strict`, warn under
/// Warn, and are dropped; fields Capstan keeps without acting on them get a warning.
fn check_structure(
    kind: &'static KindInfo,
    obj: &mut Value,
    opts: &WriteOpts,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if kind.is_custom() {
        let unknown: Vec<String> = match crate::api::registry::custom(kind) {
            Some(c) => c.schema.as_ref().map(|s| s.prune(obj)).unwrap_or_default(),
            None => Vec::new(),
        };
        if !unknown.is_empty() {
            let named: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            match opts.validation.as_str() {
                "Strict" => {
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        named.join(", ")
                    )))
                }
                "Warn" => warnings.extend(named),
                _ => {}
            }
        }
        return Ok(());
    }
    let s = validation::structural(kind, obj);
    let refused = |why: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {why}",
            kind.kind, kind.version, kind.kind
        ))
    };
    if !s.errors.is_empty() {
        return Err(refused(s.errors.join("; ")));
    }
    if !s.unknown.is_empty() {
        let named: Vec<String> = s
            .unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        match opts.validation.as_str() {
            "Strict" => {
                return Err(refused(format!(
                    "strict decoding error: {}",
                    named.join(", ")
                )))
            }
            "Warn" => warnings.extend(named),
            _ => {}
        }
        for u in &s.unknown {
            remove_json_path(obj, u);
        }
    }
    for o in s
        .opaque
        .iter()
        .filter(|p| !p.starts_with("status") && !p.starts_with("metadata") && !empty_at(obj, p))
    {
        warnings.push(format!("{o}: stored but not acted on by Capstan yet"));
    }
    Ok(())
}

/// What the server sets on a new object: uid, creation time, namespace, generation; status only where a writer may
/// set it at creation (Nodes, Pods).
fn stamp_new(kind: &'static KindInfo, ns: Option<&str>, obj: &mut Value, time: &str) {
    set_meta(obj, "uid", json!(crate::sys::clock::uuid()));
    set_meta(obj, "creationTimestamp", json!(time));
    set_meta(obj, "resourceVersion", Value::Null);
    set_meta(obj, "deletionTimestamp", Value::Null);
    set_meta(obj, "selfLink", Value::Null);
    let namespace = if kind.namespaced {
        json!(ns.unwrap_or("default"))
    } else {
        Value::Null
    };
    set_meta(obj, "namespace", namespace);
    if kind.status && !matches!(kind.kind, "Node" | "Pod") {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    if obj.get("spec").is_some() || kind.is_custom() {
        set_meta(obj, "generation", json!(1));
    }
    create_hooks(kind, obj);
}

/// An update keeps what only the server sets, takes status only through the status subresource (and only status
/// from it), and bumps the generation when the spec changed.
fn carry_over(
    kind: &'static KindInfo,
    obj: &mut Value,
    prev: &Value,
    opts: &WriteOpts,
) -> Result<()> {
    // A uid in the new object is a precondition, as in Kubernetes: it must be the stored object's (an update meant
    // for a pod that was deleted and made again under its name must not land on the new one).
    let (sent, stored) = (meta_str(obj, "uid"), meta_str(prev, "uid"));
    if let (Some(sent), Some(stored)) = (sent.filter(|u| !u.is_empty()), stored) {
        if sent != stored {
            return Err(ApiError::conflict(
                &kind.qualified(),
                meta_str(prev, "name").unwrap_or(""),
                &format!("Precondition failed: UID in precondition: {sent}, UID in object meta: {stored}"),
            ));
        }
    }
    let kept = [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
    ];
    for f in kept {
        set_meta(
            obj,
            f,
            prev["metadata"].get(f).cloned().unwrap_or(Value::Null),
        );
    }
    if meta_str(obj, "name") != meta_str(prev, "name") {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            meta_str(obj, "name").unwrap_or(""),
            meta_str(prev, "name").unwrap_or("")
        )));
    }
    let status_of = |v: &Value| v.get("status").cloned();
    let with_status = |mut v: Value, status: Option<Value>| {
        match status {
            Some(s) => v["status"] = s,
            None => {
                if let Some(m) = v.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        v
    };
    if opts.subresource == "status" {
        *obj = with_status(prev.clone(), status_of(obj));
    } else if kind.status && opts.subresource != "binding" {
        *obj = with_status(std::mem::take(obj), status_of(prev));
    }
    // Everything but metadata and status is the spec: a change there bumps `generation`.
    if !same_fields(obj, prev, &["metadata", "status", "apiVersion", "kind"])
        && (prev.get("spec").is_some() || obj.get("spec").is_some() || kind.is_custom())
    {
        let g = prev["metadata"]["generation"].as_i64().unwrap_or(0);
        set_meta(obj, "generation", json!(g + 1));
    }
    Ok(())
}

/// Records which manager changed which fields (managedFields) for a write that is not an apply.
fn track_fields(
    obj: &mut Value,
    old: Option<&Value>,
    opts: &WriteOpts,
    api_version: &str,
    time: &str,
) {
    let status_sub = opts.subresource == "status";
    let prev = old.unwrap_or(&Value::Null);
    let changed = patch::changed_tracked(prev, obj, status_sub);
    patch::update_owners(
        obj,
        prev,
        (&opts.manager, &opts.subresource, api_version),
        &changed,
        time,
    );
}

/// Whether this write ends a deletion: the object is marked deleted and nothing holds it any more (no finalizers;
/// a bound Pod still terminating on its node and an unfinalized Namespace wait).
fn finished_deleting(kind: &'static KindInfo, obj: &Value) -> bool {
    let meta = &obj["metadata"];
    let held = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    let pod_terminating = kind.kind == "Pod"
        && obj.pointer("/spec/nodeName").is_some()
        && meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) > 0;
    meta.get("deletionTimestamp").is_some()
        && !held
        && !pod_terminating
        && (kind.kind != "Namespace" || crate::apiserver::namespaces::finalized(obj))
}

/// Parses a PATCH body by its content type.
fn patch_body(ct: &str, body: &[u8]) -> Result<Value> {
    match ct {
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => parse_body(body, "json"),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => parse_body(body, "yaml"),
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// A JSON, merge or strategic-merge patch of `base`: the patched object, or None when it changes nothing. A
/// resourceVersion in the result must be the current one (optimistic concurrency).
fn plain_patch(
    ct: &str,
    base: &Value,
    doc: &Value,
    (kind, name): (&'static KindInfo, &str),
    rev: i64,
) -> Result<Option<Value>> {
    let mut next = base.clone();
    match ct {
        "application/json-patch+json" => patch::json_patch(&mut next, doc)
            .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
        "application/merge-patch+json" => patch::merge_patch(&mut next, doc),
        _ => patch::strategic_merge(&mut next, doc)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
    }
    if next == *base && !base.is_null() {
        return Ok(None);
    }
    if let Some(want) = next["metadata"]["resourceVersion"].as_str() {
        if want != rev.to_string() {
            return Err(ApiError::conflict(&kind.qualified(), name, "the object has been modified; please apply your changes to the latest version and try again"));
        }
    }
    Ok(Some(next))
}

impl Server {
    /// Validates, defaults and commits an object. `old` is the current object and its revision (None = create).
    pub async fn write(
        &self,
        kind: &'static KindInfo,
        ns: Option<&str>,
        obj: Value,
        old: Option<(&Value, i64)>,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let mut written = self.write_object(kind, ns, obj, old, opts, warnings).await;
        if written.is_ok() && !opts.dry_run {
            self.rbac.changed(kind);
        }
        if let Ok(v) = written.as_mut() {
            crate::apiserver::crds::present(kind, v);
        }
        written
    }

    async fn write_object(
        &self,
        kind: &'static KindInfo,
        ns: Option<&str>,
        mut obj: Value,
        old: Option<(&Value, i64)>,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        check_structure(kind, &mut obj, opts, warnings)?;
        let status_sub = opts.subresource == "status";
        let time = format_time(&now());
        obj["apiVersion"] = json!(crate::apiserver::crds::storage_api_version(kind));
        obj["kind"] = json!(kind.kind);
        match old {
            None => stamp_new(kind, ns, &mut obj, &time),
            Some((prev, _)) => carry_over(kind, &mut obj, prev, opts)?,
        }
        defaults::apply(kind.kind, &mut obj);
        if let Some(schema) = crate::api::registry::custom(kind)
            .as_ref()
            .and_then(|c| c.schema.as_ref())
        {
            schema.default(&mut obj);
        }
        if kind.kind == "Pod" && old.is_none() {
            self.admit_service_account(ns.unwrap_or("default"), &mut obj)
                .await;
        }
        // Pod Security Admission: new pods, and the pod templates of workloads whenever they are written.
        if !status_sub && (kind.kind != "Pod" || old.is_none()) {
            if let Some(v) = self
                .admit_pod_security(kind.kind, ns, &obj, warnings)
                .await?
            {
                crate::apiserver::audit::annotate("pod-security.kubernetes.io/audit-violations", v);
            }
        }
        let mut errs = validation::semantic(kind, &obj);
        if kind.is_custom() {
            errs.extend(crate::apiserver::crds::validate(
                kind,
                &obj,
                old.map(|(p, _)| p),
            ));
        } else if kind.kind == "CustomResourceDefinition" && kind.group == "apiextensions.k8s.io" {
            errs.extend(crate::api::crd::check(&obj, old.map(|(p, _)| p)));
        }
        if kind.kind == "Application" && kind.group == "gitops.capstan.io" && !status_sub {
            errs.extend(self.dependency_cycle(&obj).await?);
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(kind.kind, kind.group, &name, &errs));
        }
        // Services get their addresses here, under a lock held until they are stored.
        let _allocating = if kind.kind == "Service" && !status_sub {
            Some(
                self.allocate_service(kind, &mut obj, old.map(|(p, _)| p), &name)
                    .await?,
            )
        } else {
            None
        };
        // Field ownership for non-apply writes.
        if opts.manager != APPLY_MARKER {
            track_fields(
                &mut obj,
                old.map(|(p, _)| p),
                opts,
                &kind.api_version(),
                &time,
            );
        }
        self.commit(kind, ns, obj, old, opts.dry_run).await
    }

    /// An Application whose `dependsOn` would close a cycle is refused, naming the cycle.
    async fn dependency_cycle(&self, obj: &Value) -> Result<Vec<validation::FieldError>> {
        use crate::api::gitops::{dependencies, dependency_cycle, Application};
        let Ok(app) = serde_json::from_value::<Application>(obj.clone()) else {
            return Ok(Vec::new());
        };
        let deps = dependencies(&app);
        if deps.is_empty() {
            return Ok(Vec::new());
        }
        let me = format!("{}/{}", app.metadata.namespace(), app.metadata.name());
        let kind =
            registry::by_resource("gitops.capstan.io", "v1", "applications").expect("served");
        let (items, _, _, _) = self.list_objects(kind, None, &Query::new()).await?;
        let mut edges: std::collections::BTreeMap<String, Vec<String>> = items
            .iter()
            .filter_map(|v| serde_json::from_value::<Application>(v.clone()).ok())
            .map(|a| {
                (
                    format!("{}/{}", a.metadata.namespace(), a.metadata.name()),
                    dependencies(&a),
                )
            })
            .collect();
        edges.insert(me.clone(), deps);
        Ok(match dependency_cycle(&me, &edges) {
            Some(path) => vec![validation::FieldError {
                field: "spec.dependsOn".into(),
                reason: validation::Reason::Invalid,
                detail: format!("a dependency cycle: {}", path.join(" -> ")),
            }],
            None => Vec::new(),
        })
    }

    /// Gives a Service its ClusterIPs and node ports; the returned guard keeps others from allocating until it is
    /// stored.
    async fn allocate_service(
        &self,
        kind: &'static KindInfo,
        obj: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.services.lock.lock().await;
        let (items, _, _, _) = self.list_objects(kind, None, &Query::new()).await?;
        let me = meta_str(obj, "uid").unwrap_or("").to_string();
        let others: Vec<Value> = items
            .into_iter()
            .filter(|o| meta_str(o, "uid") != Some(me.as_str()))
            .collect();
        self.services
            .allocate(obj, old, &others)
            .map_err(|e| ApiError::invalid(kind.kind, kind.group, name, &[e]))?;
        Ok(guard)
    }

    /// Stores the object (create, update, or - once nothing holds it any more - the final delete of an object
    /// being deleted) with compare-and-swap on `old`'s revision; a write that changes nothing is not stored.
    async fn commit(
        &self,
        kind: &'static KindInfo,
        ns: Option<&str>,
        mut obj: Value,
        old: Option<(&Value, i64)>,
        dry_run: bool,
    ) -> Result<Value> {
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        let k = key(kind, ns, Some(&name));
        let finished_deleting = finished_deleting(kind, &obj);
        if let Some((prev, rev)) = old {
            // A write that changes nothing is not a write: no new resourceVersion, no watch event (controllers that
            // re-apply the same state must not wake themselves up forever).
            if !finished_deleting && unchanged(prev, &obj) {
                let mut same = prev.clone();
                set_meta(&mut same, "resourceVersion", json!(rev.to_string()));
                return Ok(same);
            }
        }
        if dry_run {
            if let Some((_, rev)) = old {
                set_meta(&mut obj, "resourceVersion", json!(rev.to_string()));
            }
            return Ok(obj);
        }
        set_meta(&mut obj, "resourceVersion", Value::Null);
        let bytes = to_stored(&obj)?;
        let rev = match old {
            None => self.store.create(&k, bytes).await.map_err(|e| match e {
                crate::store::Error::AlreadyExists(_) => {
                    ApiError::already_exists(&kind.qualified(), &name)
                }
                other => other.into(),
            })?,
            Some((_, prev_rev)) if finished_deleting => {
                self.store
                    .delete(&k, prev_rev)
                    .await
                    .map_err(|e| conflict_or(e, kind, &name))?
                    .0
            }
            Some((_, prev_rev)) => self
                .store
                .update(&k, bytes, prev_rev)
                .await
                .map_err(|e| conflict_or(e, kind, &name))?,
        };
        set_meta(&mut obj, "resourceVersion", json!(rev.to_string()));
        Ok(obj)
    }

    /// POST to a collection.
    pub async fn create(
        &self,
        t: &Target,
        mut body: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let kind = t.kind;
        check_type(kind, &body)?;
        if let (Some(url_ns), Some(body_ns)) =
            (t.namespace.as_deref(), meta_str(&body, "namespace"))
        {
            if url_ns != body_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if meta_str(&body, "name").is_none_or(str::is_empty) {
            match meta_str(&body, "generateName") {
                Some(g) if !g.is_empty() => {
                    let n = format!("{}{}", g, rand_suffix());
                    set_meta(&mut body, "name", json!(n));
                }
                _ => {
                    return Err(ApiError::invalid(
                        kind.kind,
                        kind.group,
                        "",
                        &[validation::FieldError {
                            field: "metadata.name".into(),
                            reason: validation::Reason::Required,
                            detail: "name or generateName is required".into(),
                        }],
                    ))
                }
            }
        }
        if kind.namespaced {
            let ns = t.namespace.as_deref().unwrap_or("default");
            self.namespace_usable(ns).await?;
        }
        let opts = WriteOpts::from_query(q, "unknown", None)?;
        self.write(kind, t.namespace.as_deref(), body, None, &opts, warnings)
            .await
    }

    /// PUT to an object (or its status).
    pub async fn update(
        &self,
        t: &Target,
        body: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let kind = t.kind;
        let name = t.name.as_deref().unwrap_or("");
        check_type(kind, &body)?;
        if meta_str(&body, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&body, "name").unwrap_or("")
            )));
        }
        let opts = WriteOpts::from_query(q, "unknown", t.sub.as_deref())?;
        let (current, rev) = match self.get_object(kind, t.namespace.as_deref(), name).await {
            Ok(c) => c,
            Err(e) if e.code == 404 && t.sub.is_none() => {
                // PUT creates when the object does not exist (like Kubernetes for most kinds).
                let mut b = body;
                set_meta(&mut b, "name", json!(name));
                return self
                    .create(
                        &Target {
                            name: None,
                            ..t.clone()
                        },
                        b,
                        q,
                        warnings,
                    )
                    .await;
            }
            Err(e) => return Err(e),
        };
        if let Some(want) = meta_str(&body, "resourceVersion") {
            if want != rev.to_string() {
                return Err(ApiError::conflict(
                    &kind.qualified(),
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        let mut body = body;
        // managedFields may be written by clients (kubectl migrates client-side apply ownership this way).
        if body.pointer("/metadata/managedFields").is_none() {
            if let Some(mf) = current.pointer("/metadata/managedFields") {
                set_meta(&mut body, "managedFields", mf.clone());
            }
        }
        self.write(
            kind,
            t.namespace.as_deref(),
            body,
            Some((&current, rev)),
            &opts,
            warnings,
        )
        .await
    }

    /// PATCH an object (or its status), retrying internal races.
    pub async fn patch(
        &self,
        t: &Target,
        body: &[u8],
        content_type: &str,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let kind = t.kind;
        let name = t.name.as_deref().unwrap_or("");
        let ct = content_type.split(';').next().unwrap_or("").trim();
        if kind.is_custom() && ct == "application/strategic-merge-patch+json" {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let patch_doc = patch_body(ct, body)?;
        let apply = ct == "application/apply-patch+yaml";
        let default_manager = if apply { "" } else { "unknown" };
        let mut opts = WriteOpts::from_query(q, default_manager, t.sub.as_deref())?;
        if apply && opts.manager.is_empty() {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
        for _attempt in 0..8 {
            let current = self.get_object(kind, t.namespace.as_deref(), name).await;
            let (cur, rev) = match current {
                Ok(c) => (Some(c.0), c.1),
                Err(e) if e.code == 404 && apply && t.sub.is_none() => (None, 0),
                Err(e) => return Err(e),
            };
            let next = if apply {
                self.server_side_apply(t, cur.as_ref(), &patch_doc, &opts, flag(q, "force"))
                    .await?
            } else {
                let base = cur.clone().unwrap_or(Value::Null);
                match plain_patch(ct, &base, &patch_doc, (kind, name), rev)? {
                    Some(next) => next,
                    // Nothing changes: answer with the current object without a write.
                    None => return Ok(base),
                }
            };
            let saved_manager = opts.manager.clone();
            if apply {
                opts.manager = APPLY_MARKER.into();
            }
            let old = cur.as_ref().map(|c| (c, rev));
            let res = self
                .write(kind, t.namespace.as_deref(), next, old, &opts, warnings)
                .await;
            opts.manager = saved_manager;
            match res {
                Err(e)
                    if e.code == 409
                        && e.reason == "Conflict"
                        && e.message.contains("has been modified") =>
                {
                    continue
                }
                Err(e) if e.code == 409 && e.reason == "AlreadyExists" && apply => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(
            &kind.qualified(),
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// Server-side apply of `doc` onto the current object (None: the apply creates it).
    async fn server_side_apply(
        &self,
        t: &Target,
        cur: Option<&Value>,
        doc: &Value,
        opts: &WriteOpts,
        force: bool,
    ) -> Result<Value> {
        let kind = t.kind;
        let name = t.name.as_deref().unwrap_or("");
        check_type(kind, doc)?;
        if meta_str(doc, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let time = format_time(&now());
        let base = cur.cloned().unwrap_or(Value::Null);
        let status = opts.subresource == "status";
        let keys = crate::api::registry::custom(kind)
            .and_then(|c| c.schema.as_ref().map(|s| s.list_keys()));
        let mut next = patch::with_list_keys(keys, || {
            patch::apply(
                &base,
                doc,
                &opts.manager,
                &kind.api_version(),
                force,
                status,
                &time,
            )
        })
        .map_err(|e| match e {
            patch::Error::Conflicts(m) => ApiError::new(409, "Conflict", m),
            other => ApiError::bad_request(other.to_string()),
        })?;
        if cur.is_none() {
            set_meta(&mut next, "name", json!(name));
            if kind.namespaced {
                self.namespace_usable(t.namespace.as_deref().unwrap_or("default"))
                    .await?;
            }
        }
        Ok(next)
    }
}

/// A random suffix for `generateName`: five characters from Kubernetes' alphabet (no vowels, no look-alikes).
pub(super) fn rand_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| CHARS[crate::sys::clock::random_below(CHARS.len() as u64) as usize] as char)
        .collect()
}

/// The QoS class of a pod spec: Guaranteed when every container's requests equal its limits for cpu and memory,
/// BestEffort when none sets any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| spec.get(*l).and_then(Value::as_array).into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let req = c.pointer("/resources/requests");
        let lim = c.pointer("/resources/limits");
        for r in ["cpu", "memory"] {
            let q = req.and_then(|x| x.get(r));
            let l = lim.and_then(|x| x.get(r));
            if q.is_some() || l.is_some() {
                any = true;
            }
            // Requests default to limits when only limits are set.
            match (q, l) {
                (Some(q), Some(l)) if q == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Kind-specific work on create: a pod starts Pending with its QoS class; a Job's selector and labels are derived
/// from its uid, like Kubernetes does.
pub(super) fn create_hooks(kind: &KindInfo, obj: &mut Value) {
    if kind.kind == "CustomResourceDefinition" && kind.group == "apiextensions.k8s.io" {
        let f = obj["metadata"]
            .as_object_mut()
            .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = f {
            if !list.iter().any(|f| f == crate::api::crd::CLEANUP_FINALIZER) {
                list.push(json!(crate::api::crd::CLEANUP_FINALIZER));
            }
        }
    }
    if kind.kind == "Pod" && obj.get("status").is_none_or(|s| s.get("phase").is_none()) {
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    if kind.kind == "Job"
        && obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true)
    {
        let uid = meta_str(obj, "uid").unwrap_or("").to_string();
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let labels = json!({"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
            "batch.kubernetes.io/job-name": name, "job-name": name});
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
            let t = spec.entry("template").or_insert_with(|| json!({}));
            if !t.get("metadata").is_some_and(Value::is_object) {
                t["metadata"] = json!({});
            }
            let l = t["metadata"]
                .as_object_mut()
                .map(|m| m.entry("labels").or_insert_with(|| json!({})));
            if let Some(Value::Object(l)) = l {
                for (k, v) in labels.as_object().into_iter().flatten() {
                    l.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Whether the value at a path like `spec.containers[0].foo` is absent or empty.
pub(super) fn empty_at(v: &Value, path: &str) -> bool {
    let mut probe = v.clone();
    let before = probe.clone();
    remove_json_path(&mut probe, path);
    if probe == before {
        return true;
    }
    // Compare by reading the value: walk the same segments.
    let mut cur = v;
    for seg in path.split('.') {
        let mut s = seg;
        let name_end = s.find('[').unwrap_or(s.len());
        if name_end > 0 {
            match cur.get(&s[..name_end]) {
                Some(n) => cur = n,
                None => return true,
            }
        }
        s = &s[name_end..];
        while let Some(rest) = s.strip_prefix('[') {
            let end = rest.find(']').unwrap_or(rest.len());
            match rest[..end].parse::<usize>().ok().and_then(|i| cur.get(i)) {
                Some(n) => cur = n,
                None => return true,
            }
            s = &rest[(end + 1).min(rest.len())..];
        }
    }
    match cur {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes a field given a path like `spec.containers[0].foo`.
pub(super) fn remove_json_path(v: &mut Value, path: &str) {
    let mut parts: Vec<String> = Vec::new();
    for seg in path.split('.') {
        let mut s = seg;
        while let Some(i) = s.find('[') {
            if i > 0 {
                parts.push(s[..i].to_string());
            }
            let end = s[i..].find(']').map(|e| i + e).unwrap_or(s.len());
            parts.push(format!("#{}", &s[i + 1..end]));
            s = &s[(end + 1).min(s.len())..];
        }
        if !s.is_empty() {
            parts.push(s.to_string());
        }
    }
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        let next = match p.strip_prefix('#') {
            Some(i) => i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)),
            None => cur.get_mut(p.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_unchanged_when_only_its_version_and_ownership_times_differ() {
        let a = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "1",
            "labels": {"a": "1"}, "managedFields": [{"manager": "m", "time": "t1", "fieldsV1": {"f:x": {}}}]},
            "spec": {"x": 1}, "status": {"phase": "Running"}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        b["metadata"]["managedFields"][0]["time"] = json!("t2");
        assert!(unchanged(&a, &b));
        for (path, to) in [
            ("/metadata/labels/a", json!("2")),
            ("/metadata/managedFields/0/manager", json!("n")),
            ("/metadata/managedFields", json!([])),
            ("/spec/x", json!(2)),
            ("/status", json!(null)),
        ] {
            let mut c = b.clone();
            *c.pointer_mut(path).unwrap() = to;
            assert!(!unchanged(&a, &c), "{path}");
        }
        let mut extra = b.clone();
        extra["spec2"] = json!({});
        assert!(!unchanged(&a, &extra));
        let mut bare = b.clone();
        bare.as_object_mut().unwrap().remove("metadata");
        assert!(!unchanged(&a, &bare));
        assert!(same_fields(&a, &b, &["metadata"]));
        assert!(!same_fields(&a, &extra, &["metadata"]));
        assert!(same_fields(&a, &extra, &["metadata", "spec2"]));
    }

    #[test]
    fn qos_classes() {
        let c = |r: Value| json!({"containers": [{"name": "c", "resources": r}]});
        assert_eq!(qos_class(&c(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&c(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&c(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }

    #[test]
    fn removes_nested_unknown_fields() {
        let mut v = json!({"spec": {"containers": [{"name": "a", "bogus": 1}]}});
        remove_json_path(&mut v, "spec.containers[0].bogus");
        assert_eq!(v, json!({"spec": {"containers": [{"name": "a"}]}}));
    }
}
