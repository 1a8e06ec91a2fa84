//! Watch: `?watch=true` streams one JSON WatchEvent per line, flushed per event, from the store's watch. Supports
//! `resourceVersion` (or an initial state when absent or "0"), label and field selectors (objects that stop or start
//! matching become DELETED/ADDED, as in Kubernetes), BOOKMARKs, `sendInitialEvents`, `timeoutSeconds`, Table rows,
//! and 410 Expired as an ERROR event.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::{decode, flag, key, raw_into, Filter, Query, Target};
use super::table;
use super::Server;
use crate::api::registry::KindInfo;
use crate::store::EventType;

struct Encoder {
    kind: &'static KindInfo,
    table: bool,
    metadata: bool,
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
        } else if self.metadata && ty != "ERROR" {
            table::partial(obj)
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
    let mut line = Vec::with_capacity(kv.value.len() + 64);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(ty.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    raw_into(kv, &mut line);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

pub async fn watch(server: Server, t: Target, q: Query, headers: &HeaderMap) -> Result<Response> {
    let kind = t.kind;
    let filter = Filter::from_query(&q)?;
    filter.check_fields(kind)?;
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
    let enc = Encoder {
        kind,
        table: table::wants_table(headers),
        metadata: table::wants_metadata(headers),
        include: q
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into()),
        first: true,
    };
    let ns = t.namespace.clone();
    let prefix = key(kind, ns.as_deref(), None);
    let plain = !enc.table && !enc.metadata && !kind.is_custom();
    let raw_path = plain && !filter.needs_object();

    let initial = rv.is_empty() || rv == "0";
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
    let store_stream = server.store.watch(&prefix, start).await;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.reset();
    let state = State {
        enc,
        kind,
        filter,
        plain,
        raw_path,
        backlog: backlog.into(),
        initial_end: send_initial,
        stream: store_stream.map_err(ApiError::from),
        deadline: Box::pin(tokio::time::sleep(timeout)),
        stopping: server.stopping.subscribe(),
        tick,
        bookmarks,
        last: start,
        done: false,
    };
    // The body is a stream polled by the connection itself: no task or channel per watcher, and everything is
    // dropped when the client goes away.
    let body = futures::stream::unfold(state, |mut st| async move {
        let line = st.next_line().await?;
        Some((Ok::<Bytes, std::io::Error>(line), st))
    });
    let body = Body::from_stream(body);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response())
}

struct State {
    enc: Encoder,
    kind: &'static KindInfo,
    filter: Filter,
    /// Objects go out as stored (no Table, no metadata-only form, no custom version to present).
    plain: bool,
    /// ... and the selectors match on the key alone.
    raw_path: bool,
    backlog: std::collections::VecDeque<crate::store::KeyValue>,
    initial_end: bool,
    stream: Result<crate::store::WatchStream, ApiError>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The server shutting down ends the watch (cleanly).
    stopping: tokio::sync::watch::Receiver<bool>,
    tick: tokio::time::Interval,
    bookmarks: bool,
    last: i64,
    done: bool,
}

impl State {
    /// A custom object as the watched version shows it.
    fn present(&self, mut v: Value) -> Value {
        crate::apiserver::crds::present(self.kind, &mut v);
        v
    }

    fn bookmark(&self, end: bool) -> Value {
        let mut meta = json!({"resourceVersion": self.last.to_string()});
        if end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": meta})
    }

    /// The next line to send, or None when the watch ends.
    async fn next_line(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(kv) = self.backlog.pop_front() {
            return Some(if self.plain {
                raw_event("ADDED", &kv)
            } else {
                self.enc.event("ADDED", &self.present(decode(&kv)))
            });
        }
        if self.initial_end {
            self.initial_end = false;
            let b = self.bookmark(true);
            return Some(self.enc.event("BOOKMARK", &b));
        }
        let stream = match &mut self.stream {
            Ok(s) => s,
            Err(e) => {
                self.done = true;
                let status = e.status();
                return Some(self.enc.event("ERROR", &status));
            }
        };
        let mut stopping = self.stopping.clone();
        loop {
            tokio::select! {
                biased;
                _ = &mut self.deadline => return None,
                _ = stopping.wait_for(|s| *s) => return None,
                _ = self.tick.tick(), if self.bookmarks => {
                    let b = self.bookmark(false);
                    return Some(self.enc.event("BOOKMARK", &b));
                }
                ev = stream.next() => {
                    let ev = match ev? {
                        Ok(ev) => ev,
                        Err(e) => {
                            self.done = true;
                            let status = ApiError::expired(format!("watch closed: {e}")).status();
                            return Some(self.enc.event("ERROR", &status));
                        }
                    };
                    self.last = ev.revision();
                    if self.raw_path {
                        // Name and namespace selectors match on the key: no parsing, no re-encoding.
                        if !self.filter.matches_key(self.kind, &ev.kv.key) {
                            continue;
                        }
                        let ty = match (ev.kind, &ev.prev) {
                            (EventType::Delete, _) => "DELETED",
                            (EventType::Put, None) => "ADDED",
                            (EventType::Put, Some(_)) => "MODIFIED",
                        };
                        return Some(raw_event(ty, &ev.kv));
                    }
                    // Selectors read a few fields: only those are decoded to match old and new.
                    let was = ev.prev.as_ref().is_some_and(|p| self.filter.matches_bytes(&p.value));
                    let ty = match ev.kind {
                        EventType::Delete => if was { "DELETED" } else { continue },
                        EventType::Put => match (was, self.filter.matches_bytes(&ev.kv.value)) {
                            (true, true) => "MODIFIED",
                            (false, true) => "ADDED",
                            (true, false) => "DELETED",
                            (false, false) => continue,
                        },
                    };
                    if self.plain {
                        return Some(raw_event(ty, &ev.kv));
                    }
                    return Some(self.enc.event(ty, &self.present(decode(&ev.kv))));
                }
            }
        }
    }
}
