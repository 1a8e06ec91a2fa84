//! Watch: `?watch=true` streams one JSON WatchEvent per line, flushed per event, from the store's watch. Supports
//! `resourceVersion` (or an initial state when absent or "0"), label and field selectors (objects that stop or start
//! matching become DELETED/ADDED, as in Kubernetes), BOOKMARKs, `sendInitialEvents`, `timeoutSeconds`, Table rows,
//! and 410 Expired as an ERROR event.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::{ApiError, Result};
use super::handlers::{decode, flag, key, raw, Filter, Query, Target};
use super::table;
use super::Server;
use crate::api::registry::KindInfo;
use crate::store::EventType;

struct Encoder {
    kind: &'static KindInfo,
    table: bool,
    include: String,
    first: bool,
}

impl Encoder {
    fn event(&mut self, ty: &str, obj: &Value) -> Bytes {
        let object = if self.table && ty != "BOOKMARK" && ty != "ERROR" {
            let t = table::table(
                self.kind,
                std::slice::from_ref(obj),
                json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")}),
                &self.include,
                self.first,
            );
            self.first = false;
            t
        } else {
            obj.clone()
        };
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

/// One event line built from stored bytes.
fn raw_event(ty: &str, kv: &crate::store::KeyValue) -> Bytes {
    let body = raw(kv);
    let mut line = Vec::with_capacity(body.len() + 32);
    line.extend_from_slice(format!("{{\"type\":\"{ty}\",\"object\":").as_bytes());
    line.extend_from_slice(&body);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

pub async fn watch(server: Server, t: Target, q: Query, headers: &HeaderMap) -> Result<Response> {
    let kind = t.kind;
    let filter = Filter::from_query(&q)?;
    let bookmarks = flag(&q, "allowWatchBookmarks");
    let send_initial = flag(&q, "sendInitialEvents");
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            &[crate::api::validation::FieldError {
                field: "allowWatchBookmarks".into(),
                reason: crate::api::validation::Reason::Forbidden,
                detail: "allowWatchBookmarks must be true when sendInitialEvents is set".into(),
            }],
        ));
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let mut enc = Encoder {
        kind,
        table: table::wants_table(headers),
        include: q
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into()),
        first: true,
    };
    let ns = t.namespace.clone();
    let prefix = key(kind, ns.as_deref(), None);
    let raw_path = !enc.table && !filter.needs_object();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);

    let initial = rv.is_empty()
        || rv == "0"
        || send_initial
            && q.get("resourceVersionMatch").map(String::as_str) == Some("NotOlderThan")
            && rv.is_empty();
    let (start, backlog) = if initial || send_initial {
        let mut lq = Query::new();
        for k in ["labelSelector", "fieldSelector"] {
            if let Some(v) = q.get(k) {
                lq.insert(k.into(), v.clone());
            }
        }
        let (kvs, rev, _, _) = server.list_kvs(kind, ns.as_deref(), &lq).await?;
        (rev, kvs)
    } else {
        let rev: i64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        (rev, Vec::new())
    };
    let bookmark = move |rev: i64, end: bool| {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": meta})
    };
    let stream = server.store.watch(&prefix, start).await;
    tokio::spawn(async move {
        for kv in &backlog {
            let line = if raw_path { raw_event("ADDED", kv) } else { enc.event("ADDED", &decode(kv)) };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if send_initial {
            let _ = tx
                .send(Ok(enc.event("BOOKMARK", &bookmark(start, true))))
                .await;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let status = ApiError::from(e).status();
                let _ = tx.send(Ok(enc.event("ERROR", &status))).await;
                return;
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick =
            tokio::time::interval(Duration::from_secs(if bookmarks { 10 } else { 3600 }));
        tick.tick().await;
        let mut last = start;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(enc.event("BOOKMARK", &bookmark(last, false)))).await.is_err() {
                        return;
                    }
                }
                ev = stream.recv() => {
                    let Some(ev) = ev else { return };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            let status = ApiError::expired(format!("watch closed: {e}")).status();
                            let _ = tx.send(Ok(enc.event("ERROR", &status))).await;
                            return;
                        }
                    };
                    last = ev.revision();
                    if raw_path {
                        // Name and namespace selectors match on the key: no parsing, no re-encoding.
                        if !filter.matches_key(kind, &ev.kv.key) {
                            continue;
                        }
                        let ty = match (ev.kind, &ev.prev) {
                            (EventType::Delete, _) => "DELETED",
                            (EventType::Put, None) => "ADDED",
                            (EventType::Put, Some(_)) => "MODIFIED",
                        };
                        if tx.send(Ok(raw_event(ty, &ev.kv))).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let new = decode(&ev.kv);
                    let old = ev.prev.as_ref().map(decode);
                    let was = old.as_ref().is_some_and(|o| filter.matches(o));
                    let ty = match ev.kind {
                        EventType::Delete => if was { "DELETED" } else { continue },
                        EventType::Put => {
                            let is = filter.matches(&new);
                            match (was, is) {
                                (true, true) => "MODIFIED",
                                (false, true) => "ADDED",
                                (true, false) => "DELETED",
                                (false, false) => continue,
                            }
                        }
                    };
                    if tx.send(Ok(enc.event(ty, &new))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response())
}
