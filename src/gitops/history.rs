//! The history of an app and what is done with it: one SyncRecord per sync attempt (its health moving forward while
//! that revision is deployed), and rollbacks - the diff a rollback would make and the revert commit that makes it,
//! written on a blocking thread (pushed, for a remote).

use super::*;

/// An app's SyncRecords, newest first.
pub async fn history(
    client: &Client,
    ns: &str,
    app: &str,
) -> Result<Vec<Value>, crate::client::Error> {
    let list = client
        .list(
            kind("syncrecords"),
            Some(ns),
            &format!("labelSelector=capstan.io/application%3D{app}"),
        )
        .await?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|r| -r["spec"]["sequence"].as_i64().unwrap_or(0));
    Ok(items)
}

/// Records one sync attempt as a SyncRecord named `<app>-<sequence>`; returns its name.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record(
    client: &Client,
    ns: &str,
    app: &str,
    snap: &source::Snapshot,
    trigger: &str,
    started: &str,
    result: &str,
    error: Option<String>,
    outcome: &sync::Outcome,
    limit: usize,
) -> Result<String, Error> {
    let records = kind("syncrecords");
    let known = history(client, ns, app).await?;
    let seq = known
        .first()
        .and_then(|r| r["spec"]["sequence"].as_i64())
        .unwrap_or(0)
        + 1;
    let name = format!("{app}-{seq}");
    let body = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "SyncRecord",
        "metadata": {"name": name, "namespace": ns, "labels": {"capstan.io/application": app}},
        "spec": {"application": app, "sequence": seq, "revision": snap.commit, "author": snap.author,
            "message": snap.message, "trigger": trigger, "startedAt": started,
            "finishedAt": format_time(&now()), "result": result, "error": error,
            "created": outcome.created, "updated": outcome.updated, "pruned": outcome.pruned}});
    client.create(records, Some(ns), &body).await?;
    prune(client, ns, app, limit, &known).await;
    Ok(name)
}

/// How many SyncRecords an app keeps.
pub(super) fn history_limit(app: &Application) -> usize {
    app.spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(1) as usize
}

/// Deletes the records beyond the newest `limit` (the new one counted) of `older` (the history before it, newest
/// first), except the newest that reached Healthy: a busy repository's history stays bounded and a rollback still
/// has its target.
async fn prune(client: &Client, ns: &str, app: &str, limit: usize, older: &[Value]) {
    let keep_healthy = older
        .iter()
        .find(|r| !r["spec"]["healthyAt"].is_null())
        .and_then(|r| r["metadata"]["name"].as_str());
    for r in older.iter().skip(limit.saturating_sub(1)) {
        let name = r["metadata"]["name"].as_str().unwrap_or("");
        if Some(name) == keep_healthy || name.is_empty() {
            continue;
        }
        if let Err(e) = client
            .delete(kind("syncrecords"), Some(ns), name, "Background")
            .await
        {
            tracing::debug!(%app, record = name, "pruning the history: {e}");
        }
    }
}

/// The newest record's health, once it is known.
pub(super) async fn record_health(client: &Client, ns: &str, app: &str, health: &str) {
    let records = kind("syncrecords");
    let Ok(list) = history(client, ns, app).await else {
        return;
    };
    let newest = list.first();
    if let Some(r) = newest {
        if r["spec"]["result"] == "Succeeded" && r["spec"]["health"] != health {
            let name = r["metadata"]["name"].as_str().unwrap_or("");
            let mut spec = json!({"health": health});
            // The first time a revision is seen Healthy is kept: it counts for rollbacks even if it degrades later.
            if health == "Healthy" && r["spec"]["healthyAt"].is_null() {
                spec["healthyAt"] = json!(format_time(&now()));
            }
            let _ = client
                .patch(
                    records,
                    Some(ns),
                    name,
                    "application/merge-patch+json",
                    &json!({ "spec": spec }),
                )
                .await;
        }
    }
}

/// The rollback target of an app deployed at `current` ([`crate::api::gitops::rollback_target`] over its history).
pub(super) async fn last_healthy(
    client: &Client,
    ns: &str,
    app: &str,
    current: &str,
) -> Option<String> {
    let items = history(client, ns, app).await.ok()?;
    crate::api::gitops::rollback_target(&items, current)
}

/// Writes the revert commit for a rollback (blocking git work on its own thread); for a remote, in a fresh mirror
/// that pushes it.
/// Runs `f` on an app's source (fetched first when remote) on a blocking thread.
async fn with_source<T: Send + 'static>(
    client: &Client,
    app: &Application,
    f: impl FnOnce(&source::Source) -> Result<T, source::Error> + Send + 'static,
) -> Result<T, Error> {
    let creds = credentials(client, app).await?;
    let app = app.clone();
    let r = crate::sys::clock::blocking(move || -> Result<T, source::Error> {
        let scratch = tempfile::tempdir()
            .map_err(|e| source::Error::Refused(format!("a scratch directory: {e}")))?;
        let src = open_source(&app, scratch.path(), creds)?;
        if src.remote.is_some() {
            src.fetch()?;
        }
        f(&src)
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?;
    Ok(r?)
}

/// What commit `rev` changed under an app's path: its header and unified diff (`git show`).
pub async fn commit_diff(client: &Client, app: &Application, rev: &str) -> Result<String, Error> {
    let rev = rev.to_string();
    with_source(client, app, move |src| {
        let oid = src.resolve(Some(&rev))?;
        src.show(oid)
    })
    .await
}

/// What rolling an app back to `to` would change: the unified diff from its branch's head to `to` under the app's
/// path - the content of the revert commit [`write_rollback`] writes.
pub async fn rollback_diff(client: &Client, app: &Application, to: &str) -> Result<String, Error> {
    let to = to.to_string();
    let branch = source_of(app)
        .target_revision
        .filter(|b| !b.is_empty() && b != "HEAD");
    with_source(client, app, move |src| {
        let head = src.resolve(branch.as_deref())?;
        let target = src.resolve(Some(&to))?;
        src.diff(Some(head), target)
    })
    .await
}

pub async fn write_rollback(
    client: &Client,
    app: &Application,
    to: &str,
    why: &str,
) -> Result<String, Error> {
    let to = to.to_string();
    let why = why.to_string();
    let name = app.metadata.name().to_string();
    let branch = source_of(app).target_revision;
    with_source(client, app, move |src| {
        let target = src.resolve(Some(&to))?;
        let short: String = to.chars().take(7).collect();
        let msg = format!(
            "Roll back {name} to {short}\n\n{why}\n\nThe content of {} is restored as it was at {to}.\n",
            if src.path.is_empty() { "the repository" } else { &src.path }
        );
        let oid = if src.remote.is_some() {
            src.revert_remote(branch.as_deref(), target, &msg)?
        } else {
            src.revert_to(target, &msg)?
        };
        Ok(oid.to_string())
    })
    .await
}
