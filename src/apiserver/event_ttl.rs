//! Events expire (kube-apiserver's `--event-ttl`, one hour by default): a busy cluster - rollouts, crash loops,
//! GitOps syncs - writes thousands of Events an hour, and without expiry the store, the watch cache and every
//! informer of Events grow for ever. Once a minute the Events last seen longer ago than the TTL are deleted
//! (compare-and-swap on their resourceVersion, so several servers on one etcd can all sweep).

use std::time::Duration;

use super::Server;

/// When an Event was last seen: its lastTimestamp, series.lastObservedTime, eventTime or creation time.
fn last_seen(v: &serde_json::Value) -> Option<chrono::DateTime<chrono::Utc>> {
    [
        &v["lastTimestamp"],
        &v["series"]["lastObservedTime"],
        &v["eventTime"],
        &v["metadata"]["creationTimestamp"],
    ]
    .into_iter()
    .filter_map(|t| t.as_str())
    .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    .map(|t| t.with_timezone(&chrono::Utc))
    .max()
}

impl Server {
    /// Deletes the Events (core/v1 and events.k8s.io share their storage) last seen before `now - ttl`; returns how
    /// many went.
    pub async fn expire_events_once(&self, ttl: Duration) -> usize {
        let kind = crate::api::registry::lookup("events").expect("served");
        let prefix = super::handlers::key(kind, None, None);
        let Ok(listed) = self.store.list(&prefix, 0, None, 0).await else {
            return 0;
        };
        let cutoff =
            crate::sys::clock::utc_now() - chrono::Duration::from_std(ttl).unwrap_or_default();
        let mut gone = 0;
        for kv in listed.kvs {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
                continue;
            };
            if last_seen(&v).is_some_and(|t| t < cutoff)
                && self.store.delete(&kv.key, kv.mod_revision).await.is_ok()
            {
                gone += 1;
            }
        }
        gone
    }

    /// Sweeps expired Events every minute (or every `ttl`, if shorter) for ever.
    pub async fn expire_events(self, ttl: Duration) {
        let every = ttl.min(Duration::from_secs(60)).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            let gone = self.expire_events_once(ttl).await;
            if gone > 0 {
                tracing::debug!(events = gone, "expired events");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn events_last_seen_before_the_ttl_are_deleted_and_newer_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store: crate::store::DynStore =
            Arc::new(crate::store::embedded::Embedded::open(&dir.path().join("db")).unwrap());
        let server = Server::new(store.clone(), "t");
        let kind = crate::api::registry::lookup("events").unwrap();
        let old = crate::sys::clock::utc_now() - chrono::Duration::hours(2);
        let fresh = crate::sys::clock::utc_now() - chrono::Duration::minutes(5);
        let put = |name: &str,
                   last: chrono::DateTime<chrono::Utc>,
                   created: chrono::DateTime<chrono::Utc>| {
            let key = super::super::handlers::key(kind, Some("default"), Some(name));
            let v = serde_json::json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": "default",
                    "creationTimestamp": crate::api::meta::format_time(&created)},
                "lastTimestamp": crate::api::meta::format_time(&last), "reason": "X"});
            (key, serde_json::to_vec(&v).unwrap())
        };
        for (name, last, created) in [
            ("old", old, old),
            ("fresh", fresh, fresh),
            ("renewed", fresh, old),
        ] {
            let (key, value) = put(name, last, created);
            store.create(&key, value).await.unwrap();
        }
        assert_eq!(
            server.expire_events_once(Duration::from_secs(3600)).await,
            1
        );
        let left = store
            .list(&super::super::handlers::key(kind, None, None), 0, None, 0)
            .await
            .unwrap();
        let mut names: Vec<String> = left
            .kvs
            .iter()
            .map(|kv| {
                serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap()["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["fresh", "renewed"],
            "an event seen again recently stays"
        );
    }
}
