//! One commit's sync, start to end: the app's status says it is running; the commit is rendered (manifests,
//! kustomize or the app's render plugin), checked by the API server and applied all or nothing ([`super::sync`]);
//! the attempt is recorded in the app's history, its status says how it went, and its receivers are told.

use serde_json::{json, Value};

use super::history::{history_limit, record};
use super::{
    acting_client, notifications, plugins, render, set_status, source, sync, sync_policy, Context,
};
use crate::api::gitops::Application;
use crate::api::meta::{format_time, now};

/// Renders, validates and applies one commit; records the attempt and the app's status. Returns the desired objects
/// when the sync succeeded, or whether the failure was transient (the API server was unavailable: try again).
pub(super) async fn sync_commit(
    ctx: &Context,
    app: &Application,
    snap: &source::Snapshot,
    default_ns: &str,
    trigger: &str,
    started: &str,
) -> (Result<Vec<render::Desired>, bool>, Value) {
    let ns = app.metadata.namespace();
    let name = app.metadata.name();
    let prune = sync_policy(app).prune.unwrap_or(true);
    set_status(
        &ctx.client,
        ns,
        name,
        json!({"lastAttemptedRevision": snap.commit,
        "operationState": {"phase": "Running", "startedAt": started}}),
    )
    .await;
    // The app's objects are written as its ServiceAccount, if it names one; its status as the controller.
    let acting = acting_client(&ctx.client, app);
    let plugin = app.spec.as_ref().and_then(|s| s.source.plugin.as_ref());
    let rendered = match plugin {
        None => render::render(snap, default_ns),
        Some(p) => plugins::render(&ctx.plugins, p, snap, name, ns, default_ns).await,
    };
    let checked = match rendered {
        Ok(desired) => sync::validate(&acting, &desired, ns, name)
            .await
            .map(|()| desired),
        Err(errors) => Err(sync::Refusal {
            errors,
            transient: false,
        }),
    };
    let result = match checked {
        Ok(desired) => sync::apply(&ctx.client, &acting, &desired, ns, name, prune)
            .await
            .map(|o| (desired, o))
            .map_err(|e| sync::Refusal {
                errors: vec![e.to_string()],
                transient: e.transient(),
            }),
        Err(refusal) => Err(refusal),
    };
    let finished = format_time(&now());
    match result {
        Ok((desired, outcome)) => {
            tracing::info!(app = name, revision = %snap.commit, created = outcome.created.len(),
                updated = outcome.updated.len(), pruned = outcome.pruned.len(), "synced");
            let _ = record(
                &ctx.client,
                ns,
                name,
                snap,
                trigger,
                started,
                "Succeeded",
                None,
                &outcome,
                history_limit(app),
            )
            .await;
            let operation = json!({"phase": "Succeeded",
                "message": format!("synced {}", &snap.commit[..7.min(snap.commit.len())]),
                "startedAt": started, "finishedAt": finished});
            set_status(
                &ctx.client,
                ns,
                name,
                json!({"sync": {"status": "Synced", "revision": snap.commit},
                "lastSyncedRevision": snap.commit, "operationState": operation}),
            )
            .await;
            let details = json!({"revision": snap.commit, "author": snap.author, "commitMessage": snap.message,
                "trigger": trigger, "created": outcome.created, "updated": outcome.updated, "pruned": outcome.pruned});
            let short = &snap.commit[..7.min(snap.commit.len())];
            let t = if trigger == "rollback" || snap.message.starts_with("Roll back ") {
                notifications::Transition::RolledBack
            } else {
                notifications::Transition::Synced
            };
            notifications::tell(
                &ctx.client,
                app,
                t,
                &format!("{} {short}", t.name()),
                details,
            );
            (Ok(desired), operation)
        }
        Err(sync::Refusal { errors, transient }) => {
            let message = errors.join("\n");
            tracing::warn!(app = name, revision = %snap.commit, "sync failed, nothing applied:\n{message}");
            let _ = record(
                &ctx.client,
                ns,
                name,
                snap,
                trigger,
                started,
                "Failed",
                Some(message.clone()),
                &sync::Outcome::default(),
                history_limit(app),
            )
            .await;
            let operation = json!({"phase": "Failed", "message": message, "startedAt": started,
                "finishedAt": finished});
            set_status(
                &ctx.client,
                ns,
                name,
                json!({"sync": {"status": "Failed", "revision": snap.commit},
                "operationState": operation}),
            )
            .await;
            notifications::tell(
                &ctx.client,
                app,
                notifications::Transition::Failed,
                &message,
                json!({"revision": snap.commit, "author": snap.author, "commitMessage": snap.message, "error": message}),
            );
            (Err(transient), operation)
        }
    }
}
