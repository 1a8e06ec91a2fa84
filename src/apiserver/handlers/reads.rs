//! Reads: one object, a list (paged, filtered, at a revision), and the namespace check every create makes.

use super::*;

impl Server {
    pub(super) async fn namespace_usable(&self, ns: &str) -> Result<()> {
        match self.namespaces.lookup(ns) {
            Some(false) => return Ok(()),
            Some(true) => {
                return Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            }
            None => {}
        }
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
        filter.check_fields(kind)?;
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let prefix = key(kind, ns, None);
        // Keys from where this page starts, at the list's revision (counted once, at the list's first page, and
        // carried in the continue token).
        let mut left: Option<usize> = None;
        let (mut revision, mut start) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let rv = raw["rv"].as_i64().unwrap_or(0);
                let start = raw["start"].as_str().unwrap_or("").to_string();
                left = raw["left"].as_u64().map(|n| n as usize);
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
        // Keys read from the store for this page (matching or not).
        let mut consumed = 0usize;
        loop {
            let want = if limit == 0 {
                0
            } else {
                (limit - items.len()).max(1) * 2
            };
            // A later page of a list knows how many keys are left: the store need not count them again.
            let page = match left {
                Some(_) if limit != 0 => {
                    self.store
                        .list_more(&prefix, revision, start.as_deref(), want)
                        .await?
                }
                _ => {
                    self.store
                        .list(&prefix, revision, start.as_deref(), want)
                        .await?
                }
            };
            revision = page.revision;
            if left.is_none() && limit != 0 {
                // The first page of a list: every key from where it starts was just counted.
                left = Some(page.kvs.len() + page.remaining);
            }
            let mut last_key = None;
            for kv in &page.kvs {
                consumed += 1;
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
                let rem = left.unwrap_or(0).saturating_sub(consumed);
                let token = json!({"rv": revision, "start": last_key, "left": rem});
                let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string());
                return Ok((items, revision, Some(c), rem));
            }
            if page.remaining == 0 || last_key.is_none() {
                break;
            }
            start = last_key;
        }
        Ok((items, revision, None, 0))
    }
}
