//! Resource handlers: get, list, create, update, patch, delete and deletecollection for every kind in the registry,
//! plus the status, scale and binding subresources. Every write goes through [`Server::write`], which validates,
//! defaults, tracks field managers and commits with compare-and-swap - so nothing half-valid is ever stored.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::patch;
use super::Server;
use crate::api::meta::{format_time, now};
use crate::api::registry::{self, KindInfo};
use crate::api::selector::{FieldSelector, Selector};
use crate::api::{defaults, validation};

/// What a request addresses.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: &'static KindInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/{g}/{v}/...` paths.
pub fn parse_path(path: &str) -> Result<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let kind_of =
        |plural: &str| registry::by_resource(group, version, plural).ok_or_else(not_found);
    let t = |kind, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        kind,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        sub: sub.map(String::from),
    };
    Ok(match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && tail.is_empty()
                && matches!(*plural, "status" | "finalize")) =>
        {
            let kind = kind_of(plural)?;
            if !kind.namespaced {
                return Err(not_found());
            }
            match tail {
                [] => t(kind, Some(ns), None, None),
                [name] => t(kind, Some(ns), Some(name), None),
                [name, sub] => t(kind, Some(ns), Some(name), Some(sub)),
                _ => return Err(not_found()),
            }
        }
        [plural] => t(kind_of(plural)?, None, None, None),
        [plural, name] => {
            let kind = kind_of(plural)?;
            if kind.namespaced {
                return Err(not_found());
            }
            t(kind, None, Some(name), None)
        }
        [plural, name, sub] => {
            let kind = kind_of(plural)?;
            if kind.namespaced {
                return Err(not_found());
            }
            t(kind, None, Some(name), Some(sub))
        }
        _ => return Err(not_found()),
    })
}

/// The storage key of an object, or the prefix of a collection (name None).
pub fn key(kind: &KindInfo, ns: Option<&str>, name: Option<&str>) -> String {
    let g = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    let mut k = format!("/registry/{g}/{}/", kind.plural);
    if kind.namespaced {
        if let Some(ns) = ns {
            k.push_str(ns);
            k.push('/');
        }
    }
    if let Some(n) = name {
        k.push_str(n);
    }
    k
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(kv: &crate::store::KeyValue) -> Value {
    let mut v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    v
}

const STORED_PREFIX: &[u8] = b"{\"metadata\":{";

/// Serializes an object for the store with `metadata` first (and no resourceVersion), so reads can stamp the
/// resourceVersion into the bytes without parsing them.
pub fn to_stored(obj: &Value) -> Result<Vec<u8>> {
    let mut out = serde_json::Map::new();
    if let Some(m) = obj.as_object() {
        if let Some(meta) = m.get("metadata") {
            let mut meta = meta.clone();
            if let Some(mm) = meta.as_object_mut() {
                mm.remove("resourceVersion");
            }
            out.insert("metadata".into(), meta);
        }
        for (k, v) in m {
            if k != "metadata" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| ApiError::internal(e.to_string()))
}

/// The stored object as JSON bytes with its resourceVersion stamped - without parsing it.
pub fn raw(kv: &crate::store::KeyValue) -> Vec<u8> {
    match kv.value.strip_prefix(STORED_PREFIX) {
        Some(rest) => {
            let mut out = Vec::with_capacity(kv.value.len() + 32);
            out.extend_from_slice(STORED_PREFIX);
            out.extend_from_slice(
                format!("\"resourceVersion\":\"{}\"", kv.mod_revision).as_bytes(),
            );
            if !rest.starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            out
        }
        None => serde_json::to_vec(&decode(kv)).unwrap_or_default(),
    }
}

/// The namespace and name a storage key encodes.
pub fn key_identity<'a>(kind: &KindInfo, key: &'a str) -> (&'a str, &'a str) {
    let mut parts = key.rsplit('/');
    let name = parts.next().unwrap_or("");
    let ns = if kind.namespaced {
        parts.next().unwrap_or("")
    } else {
        ""
    };
    (ns, name)
}

/// Label and field selectors of a request, matched against stored objects - parsing them only when the selectors
/// look past the name and namespace.
pub struct Filter {
    pub labels: Selector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_query(q: &Query) -> Result<Self> {
        Ok(Filter {
            labels: match q.get("labelSelector") {
                Some(s) => Selector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
                None => Selector::everything(),
            },
            fields: match q.get("fieldSelector") {
                Some(s) => {
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?
                }
                None => FieldSelector::default(),
            },
        })
    }

    /// Whether matching needs the object's content (not just its key).
    pub fn needs_object(&self) -> bool {
        !self.labels.is_empty()
            || self
                .fields
                .terms
                .iter()
                .any(|(p, _, _)| p != "metadata.name" && p != "metadata.namespace")
    }

    /// Matches by key alone; only valid when `!needs_object()`.
    pub fn matches_key(&self, kind: &KindInfo, key: &str) -> bool {
        let (ns, name) = key_identity(kind, key);
        self.fields.terms.iter().all(|(p, eq, want)| {
            let have = if p == "metadata.name" { name } else { ns };
            (have == want) == *eq
        })
    }

    pub fn matches(&self, v: &Value) -> bool {
        self.fields.matches(v) && self.labels.matches(&obj_labels(v))
    }

    pub fn matches_kv(&self, kind: &KindInfo, kv: &crate::store::KeyValue) -> bool {
        if self.needs_object() {
            self.matches(&decode(kv))
        } else {
            self.matches_key(kind, &kv.key)
        }
    }
}

/// Parses a request body holding an object of `kind`: JSON, YAML, or Kubernetes protobuf (what kubectl's `create`
/// generators send).
pub fn parse_object(body: &[u8], content_type: &str, kind: &KindInfo) -> Result<Value> {
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return crate::api::protobuf::object(body, kind.group, kind.version, kind.kind)
            .map_err(|e| ApiError::bad_request(e.to_string()));
    }
    parse_body(body, content_type)
}

/// Query parameters of a request.
pub type Query = HashMap<String, String>;

pub fn flag(q: &Query, name: &str) -> bool {
    matches!(q.get(name).map(String::as_str), Some("true" | "1"))
}

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

fn meta_str<'a>(v: &'a Value, f: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
}

fn set_meta(v: &mut Value, f: &str, val: Value) {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if val.is_null() {
            m.remove(f);
        } else {
            m.insert(f.to_string(), val);
        }
    }
}

/// Everything but metadata and status: a change here bumps `generation`.
fn spec_part(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    c
}

fn rand_suffix() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::rng();
    (0..5)
        .map(|_| CHARS[r.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Parses a body as JSON, or YAML when the content type says so. Errors name the line.
pub fn parse_body(body: &[u8], content_type: &str) -> Result<Value> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media(content_type));
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if content_type.contains("yaml") {
        let v: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?;
        return Ok(v);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

impl Server {
    async fn namespace_usable(&self, ns: &str) -> Result<()> {
        let nk = registry::by_resource("", "v1", "namespaces").expect("namespaces kind");
        match self.store.get(&key(nk, None, Some(ns))).await? {
            None => Err(ApiError::not_found("namespaces", ns)),
            Some(kv) => {
                let v = decode(&kv);
                if v.pointer("/metadata/deletionTimestamp").is_some() {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Reads one object.
    pub async fn get_object(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Value, i64)> {
        match self.store.get(&key(kind, ns, Some(name))).await? {
            Some(kv) => Ok((decode(&kv), kv.mod_revision)),
            None => Err(ApiError::not_found(&kind.qualified(), name)),
        }
    }

    /// Lists objects: selectors, limit/continue, resourceVersion. Returns (items, resourceVersion, continue,
    /// remaining).
    pub async fn list_objects(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        q: &Query,
    ) -> Result<(Vec<Value>, i64, Option<String>, usize)> {
        let (kvs, rev, cont, remaining) = self.list_kvs(kind, ns, q).await?;
        Ok((kvs.iter().map(decode).collect(), rev, cont, remaining))
    }

    /// Lists stored values, filtered and paged.
    pub async fn list_kvs(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        q: &Query,
    ) -> Result<(Vec<crate::store::KeyValue>, i64, Option<String>, usize)> {
        let filter = Filter::from_query(q)?;
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let prefix = key(kind, ns, None);
        let (mut revision, mut start) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let rv = raw["rv"].as_i64().unwrap_or(0);
                let start = raw["start"].as_str().unwrap_or("").to_string();
                (rv, Some(start))
            }
            None => {
                let rv = match (
                    q.get("resourceVersion").map(String::as_str),
                    q.get("resourceVersionMatch").map(String::as_str),
                ) {
                    (Some(rv), Some("Exact")) if !rv.is_empty() && rv != "0" => {
                        rv.parse().map_err(|_| {
                            ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                        })?
                    }
                    _ => 0,
                };
                (rv, None)
            }
        };
        // An exact name selector reads one key instead of scanning.
        if let (Some(name), None) = (filter.fields.exact("metadata.name"), &start) {
            if ns.is_some() || !kind.namespaced {
                let rev = self.store.revision().await?;
                let mut items = Vec::new();
                if let Some(kv) = self.store.get(&key(kind, ns, Some(name))).await? {
                    if filter.matches_kv(kind, &kv) {
                        items.push(kv);
                    }
                }
                return Ok((items, rev, None, 0));
            }
        }
        let mut items = Vec::new();
        loop {
            let want = if limit == 0 {
                0
            } else {
                (limit - items.len()).max(1) * 2
            };
            let page = self
                .store
                .list(&prefix, revision, start.as_deref(), want)
                .await?;
            revision = page.revision;
            let mut last_key = None;
            for kv in &page.kvs {
                last_key = Some(kv.key.clone());
                if filter.matches_kv(kind, kv) {
                    items.push(kv.clone());
                    if limit != 0 && items.len() == limit {
                        break;
                    }
                }
            }
            let consumed_all = last_key.as_ref() == page.kvs.last().map(|k| &k.key);
            if limit != 0 && items.len() == limit {
                let more = !consumed_all || page.remaining > 0;
                if !more {
                    return Ok((items, revision, None, 0));
                }
                let token = json!({"rv": revision, "start": last_key});
                let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string());
                let rem = if consumed_all {
                    page.remaining
                } else {
                    page.remaining + 1
                };
                return Ok((items, revision, Some(c), rem));
            }
            if page.remaining == 0 || last_key.is_none() {
                break;
            }
            start = last_key;
        }
        Ok((items, revision, None, 0))
    }

    /// Validates, defaults and commits an object. `old` is the current object and its revision (None = create).
    pub async fn write(
        &self,
        kind: &'static KindInfo,
        ns: Option<&str>,
        mut obj: Value,
        old: Option<(&Value, i64)>,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        // Structure: types and unknown fields.
        let s = validation::structural(kind, &obj);
        if !s.errors.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}",
                kind.kind,
                kind.version,
                kind.kind,
                s.errors.join("; ")
            )));
        }
        if !s.unknown.is_empty() {
            match opts.validation.as_str() {
                "Strict" => {
                    let list: Vec<String> = s
                        .unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        kind.kind,
                        kind.version,
                        kind.kind,
                        list.join(", ")
                    )));
                }
                "Warn" => {
                    warnings.extend(s.unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                }
                _ => {}
            }
            for u in &s.unknown {
                remove_json_path(&mut obj, u);
            }
        }
        for o in s.opaque.iter().filter(|p| {
            !p.starts_with("status") && !p.starts_with("metadata") && !empty_at(&obj, p)
        }) {
            warnings.push(format!("{o}: stored but not acted on by Capstan yet"));
        }
        let status_sub = opts.subresource == "status";
        let time = format_time(&now());
        let api_version = kind.api_version();
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind.kind);
        match old {
            None => {
                set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
                set_meta(&mut obj, "creationTimestamp", json!(time));
                set_meta(&mut obj, "resourceVersion", Value::Null);
                set_meta(&mut obj, "deletionTimestamp", Value::Null);
                set_meta(&mut obj, "selfLink", Value::Null);
                if kind.namespaced {
                    set_meta(&mut obj, "namespace", json!(ns.unwrap_or("default")));
                } else {
                    set_meta(&mut obj, "namespace", Value::Null);
                }
                if kind.status && !matches!(kind.kind, "Node" | "Pod") {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
                if obj.get("spec").is_some() {
                    set_meta(&mut obj, "generation", json!(1));
                }
                create_hooks(kind, &mut obj);
            }
            Some((prev, _)) => {
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    set_meta(
                        &mut obj,
                        f,
                        prev.pointer(&format!("/metadata/{f}"))
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                }
                set_meta(
                    &mut obj,
                    "namespace",
                    prev.pointer("/metadata/namespace")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                if meta_str(&obj, "name") != meta_str(prev, "name") {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({})",
                        meta_str(&obj, "name").unwrap_or(""),
                        meta_str(prev, "name").unwrap_or("")
                    )));
                }
                if status_sub {
                    let status = obj.get("status").cloned();
                    let mut next = prev.clone();
                    match status {
                        Some(s) => next["status"] = s,
                        None => {
                            if let Some(m) = next.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                    obj = next;
                } else if kind.status && opts.subresource != "binding" {
                    match prev.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if spec_part(&obj) != spec_part(prev) {
                    let g = prev
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if prev.get("spec").is_some() || obj.get("spec").is_some() {
                        set_meta(&mut obj, "generation", json!(g + 1));
                    }
                }
            }
        }
        defaults::apply(kind.kind, &mut obj);
        let errs = validation::semantic(kind, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(kind.kind, kind.group, &name, &errs));
        }
        // Services get their addresses here, under a lock held until they are stored.
        let _allocating = if kind.kind == "Service" && !status_sub {
            let guard = self.services.lock.lock().await;
            let (items, _, _, _) = self.list_objects(kind, None, &Query::new()).await?;
            let me = meta_str(&obj, "uid").unwrap_or("").to_string();
            let others: Vec<Value> = items
                .into_iter()
                .filter(|o| meta_str(o, "uid") != Some(me.as_str()))
                .collect();
            self.services
                .allocate(&mut obj, old.map(|(p, _)| p), &others)
                .map_err(|e| ApiError::invalid(kind.kind, kind.group, &name, &[e]))?;
            Some(guard)
        } else {
            None
        };
        // Field ownership for non-apply writes.
        if opts.manager != APPLY_MARKER {
            let mut owners = patch::owners(old.map(|(p, _)| p).unwrap_or(&Value::Null));
            let before = patch::tracked(old.map(|(p, _)| p).unwrap_or(&Value::Null), status_sub);
            let after = patch::tracked(&obj, status_sub);
            let changed = patch::changed(&before, &after);
            patch::record_update(
                &mut owners,
                &opts.manager,
                &opts.subresource,
                &api_version,
                &changed,
                &time,
            );
            patch::set_owners(&mut obj, &owners);
        }
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        let k = key(kind, ns, Some(&name));
        let finished_deleting = obj.pointer("/metadata/deletionTimestamp").is_some()
            && obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty())
            && !(kind.kind == "Pod"
                && obj.pointer("/spec/nodeName").is_some()
                && obj
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0)
            && (kind.kind != "Namespace" || super::namespaces::finalized(&obj));
        if let Some((prev, rev)) = old {
            // A write that changes nothing is not a write: no new resourceVersion, no watch event (controllers that
            // re-apply the same state must not wake themselves up forever).
            if !finished_deleting && unchanged(prev, &obj) {
                let mut same = prev.clone();
                set_meta(&mut same, "resourceVersion", json!(rev.to_string()));
                return Ok(same);
            }
        }
        if opts.dry_run {
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
        let patch_doc = match ct {
            "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json" => parse_body(body, "json")?,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                parse_body(body, "yaml")?
            }
            other => return Err(ApiError::unsupported_media(other)),
        };
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
            let mut next = cur.clone().unwrap_or(Value::Null);
            if apply {
                check_type(kind, &patch_doc)?;
                if meta_str(&patch_doc, "name").is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                let time = format_time(&now());
                let force = flag(q, "force");
                next = patch::apply(
                    &next,
                    &patch_doc,
                    &opts.manager,
                    &kind.api_version(),
                    force,
                    opts.subresource == "status",
                    &time,
                )
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
            } else {
                let base = next.clone();
                match ct {
                    "application/json-patch+json" => patch::json_patch(&mut next, &patch_doc)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                    "application/merge-patch+json" => patch::merge_patch(&mut next, &patch_doc),
                    _ => patch::strategic_merge(&mut next, &patch_doc)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?,
                }
                if next == base {
                    // Nothing changes: answer with the current object without a write.
                    if let Some(c) = cur {
                        return Ok(c);
                    }
                }
                if let Some(want) = next
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                {
                    if want != rev.to_string() {
                        return Err(ApiError::conflict(&kind.qualified(), name, "the object has been modified; please apply your changes to the latest version and try again"));
                    }
                }
            }
            let saved_manager = opts.manager.clone();
            if apply {
                opts.manager = APPLY_MARKER.into();
            }
            let res = match &cur {
                Some(c) => {
                    self.write(
                        kind,
                        t.namespace.as_deref(),
                        next,
                        Some((c, rev)),
                        &opts,
                        warnings,
                    )
                    .await
                }
                None => {
                    self.write(kind, t.namespace.as_deref(), next, None, &opts, warnings)
                        .await
                }
            };
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
                        cur["spec"]["finalizers"] = json!([super::namespaces::FINALIZER]);
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

    /// The Scale view of an object.
    pub fn scale_of(kind: &KindInfo, obj: &Value) -> Value {
        let selector = match obj.pointer("/spec/selector") {
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
            "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
            "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
        })
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
            next["spec"]["replicas"] = json!(replicas);
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

/// A marker manager name: the write's ownership was already computed by server-side apply.
const APPLY_MARKER: &str = "\u{0}apply";

fn conflict_or(e: crate::store::Error, kind: &KindInfo, name: &str) -> ApiError {
    match e {
        crate::store::Error::Conflict { .. } => ApiError::conflict(
            &kind.qualified(),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        crate::store::Error::NotFound(_) => ApiError::not_found(&kind.qualified(), name),
        other => other.into(),
    }
}

fn check_type(kind: &KindInfo, body: &Value) -> Result<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a {} object, got {}",
            kind.kind,
            type_of(body)
        )));
    }
    let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let k = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!av.is_empty() && av != kind.api_version()) || (!k.is_empty() && k != kind.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) and kind ({k}) do not match the request ({} {})",
            kind.api_version(),
            kind.kind
        )));
    }
    if !body
        .get("metadata")
        .is_none_or(|m| m.is_object() || m.is_null())
    {
        return Err(ApiError::bad_request("metadata: expected object"));
    }
    Ok(())
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

/// The labels of a JSON object.
pub fn obj_labels(v: &Value) -> std::collections::BTreeMap<String, String> {
    crate::api::selector::labels_of(v)
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

/// Whether two versions of an object are the same but for resourceVersion and managedFields timestamps.
fn unchanged(a: &Value, b: &Value) -> bool {
    fn normalized(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
                for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                    e.remove("time");
                }
            }
        }
        v
    }
    normalized(a) == normalized(b)
}

/// Kind-specific work on create: a pod starts Pending with its QoS class; a Job's selector and labels are derived
/// from its uid, like Kubernetes does.
fn create_hooks(kind: &KindInfo, obj: &mut Value) {
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
fn empty_at(v: &Value, path: &str) -> bool {
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
fn remove_json_path(v: &mut Value, path: &str) {
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
    fn paths_parse_to_targets() {
        let t = parse_path("/apis/apps/v1/namespaces/ns1/deployments/web/scale").unwrap();
        assert_eq!(
            (
                t.kind.kind,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("Deployment", Some("ns1"), Some("web"), Some("scale"))
        );
        let t = parse_path("/api/v1/namespaces/ns1").unwrap();
        assert_eq!((t.kind.kind, t.name.as_deref()), ("Namespace", Some("ns1")));
        let t = parse_path("/api/v1/namespaces/ns1/status").unwrap();
        assert_eq!(
            (t.kind.kind, t.sub.as_deref()),
            ("Namespace", Some("status"))
        );
        let t = parse_path("/api/v1/pods").unwrap();
        assert_eq!((t.kind.kind, t.namespace), ("Pod", None));
        let t = parse_path("/api/v1/namespaces/x/pods").unwrap();
        assert_eq!(t.namespace.as_deref(), Some("x"));
        assert!(parse_path("/apis/apps/v1/widgets").is_err());
        assert!(
            parse_path("/api/v1/pods/x").is_err(),
            "namespaced kinds need a namespace for items"
        );
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

#[cfg(test)]
mod timing {
    use super::*;

    #[tokio::test]
    #[ignore]
    async fn create_handler_cost() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::embedded::Embedded::open(&dir.path().join("db")).unwrap();
        let server = Server::new(std::sync::Arc::new(store), "t");
        server
            .bootstrap(&[
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
            ])
            .await
            .unwrap();
        let kind = registry::lookup("configmaps").unwrap();
        let t = Target {
            kind,
            namespace: Some("default".into()),
            name: None,
            sub: None,
        };
        let q = Query::new();
        let start = std::time::Instant::now();
        for i in 0..2000 {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}, "data": {"k": "v"}});
            server.create(&t, body, &q, &mut Vec::new()).await.unwrap();
        }
        eprintln!("2000 creates through the handler: {:?}", start.elapsed());
        let pod = registry::lookup("pods").unwrap();
        let t = Target {
            kind: pod,
            namespace: Some("default".into()),
            name: None,
            sub: None,
        };
        let start = std::time::Instant::now();
        for i in 0..2000 {
            let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}});
            server.create(&t, body, &q, &mut Vec::new()).await.unwrap();
        }
        eprintln!(
            "2000 pod creates through the handler: {:?}",
            start.elapsed()
        );
    }
}
