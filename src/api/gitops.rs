//! gitops.capstan.io/v1: the Application (a path in a git repository that the cluster follows) and SyncRecord (one
//! entry of an Application's history: a sync attempt, kept as its own object so the history is complete without
//! bloating the Application). Data only; the reconciler lives in `crate::gitops`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object};
use super::meta::ObjectMeta;

kind!(
    /// A git repository path the cluster follows.
    Application {
        pub spec: Option<ApplicationSpec>,
        pub status: Option<ApplicationStatus>,
    }
);

object!(ApplicationSpec {
    pub source: ApplicationSource,
    pub destination: Option<ApplicationDestination>,
    pub sync_policy: Option<SyncPolicy>,
    /// How often a remote repository is fetched (Go duration, default "30s").
    pub interval: Option<String>,
    /// Health rules per kind, for kinds whose controllers report health their own way (they replace the built-in
    /// rule of the kinds they name).
    pub health: Option<Vec<HealthRule>>,
    /// Applications that must be Healthy at their current revision before this one syncs (Flux's dependsOn).
    pub depends_on: Option<Vec<AppReference>>,
    /// Differences that are not drift: fields (JSON pointers) or fields owned by named field managers (an
    /// autoscaler's replicas), for the objects a rule names. Drift, self-heal and `capstan app diff` leave them alone.
    pub ignore_differences: Option<Vec<IgnoreDifference>>,
    /// Receivers told about the app's transitions.
    pub notifications: Option<Vec<Notification>>,
});

object!(
    /// A receiver of an app's transitions: a signed JSON POST per wanted event.
    Notification {
        /// Where to POST (http or https).
        pub url: String,
        /// Which of synced, failed, healthy, degraded, rolled-back.
        pub events: Vec<String>,
        /// A Secret in the Application's namespace whose `secret` key signs the posts (`X-Capstan-Signature`).
        pub secret_ref: Option<SecretReference>,
        /// `slack` for a Slack-compatible body (`{"text": ...}`); the full JSON document otherwise.
        pub format: Option<String>,
    }
);

object!(
    /// Which differences of which objects to ignore.
    IgnoreDifference {
        /// The objects' API group ("" for core; any when unset), kind, and optionally name and namespace.
        pub group: Option<String>,
        pub kind: String,
        pub name: Option<String>,
        pub namespace: Option<String>,
        /// Fields as RFC 6901 JSON pointers (`/spec/replicas`); a pointer covers everything below it.
        pub json_pointers: Option<Vec<String>>,
        /// Field managers whose fields (per the live object's managedFields) are theirs to change.
        pub managed_fields_managers: Option<Vec<String>>,
    }
);

object!(
    /// Another Application (namespace: this one's when unset).
    AppReference {
        pub name: String,
        pub namespace: Option<String>,
    }
);

/// The Applications `app` (namespace `ns`) depends on, as `namespace/name` keys.
pub fn dependencies(app: &Application) -> Vec<String> {
    let ns = app.metadata.namespace();
    app.spec
        .as_ref()
        .and_then(|s| s.depends_on.as_ref())
        .into_iter()
        .flatten()
        .map(|d| format!("{}/{}", d.namespace.as_deref().unwrap_or(ns), d.name))
        .collect()
}

/// A dependency cycle through `start` in the graph `edges` (app key -> its dependencies), as the path that closes it
/// (`a -> b -> a`); None when there is none.
pub fn dependency_cycle(
    start: &str,
    edges: &std::collections::BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        start: &str,
        edges: &std::collections::BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        seen: &mut std::collections::BTreeSet<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            path.push(next.clone());
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) && visit(next, start, edges, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = std::collections::BTreeSet::new();
    visit(start, start, edges, &mut path, &mut seen).then_some(path)
}

object!(
    /// How objects of one kind are judged: CEL expressions over the live object (`self`).
    HealthRule {
        /// The kind's API group ("" for the core group; any group when unset).
        pub group: Option<String>,
        pub kind: String,
        /// True when the object is Healthy (e.g. `self.status.phase == 'Ready'`).
        pub healthy: String,
        /// True when the object is Degraded (checked before `healthy`); otherwise it is Progressing.
        pub degraded: Option<String>,
    }
);

object!(ApplicationSource {
    /// A local path, `file://`, `https://` or `ssh://` URL.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// Branch, tag or commit (default: the repository's current branch).
    pub target_revision: Option<String>,
    /// A directory in the repository (default: its root).
    pub path: Option<String>,
    /// A Secret in the Application's namespace with what a remote needs: `username`/`password` (https),
    /// `identity`/`identity.pub`/`passphrase`/`known_hosts` (ssh), `ca.crt` (a private https CA).
    pub secret_ref: Option<SecretReference>,
});

object!(SecretReference {
    pub name: String,
});

object!(ApplicationDestination {
    /// The namespace for objects that name none.
    pub namespace: Option<String>,
    /// A ServiceAccount in the Application's namespace that syncs, prunes and self-heals act as: the app can only
    /// change what that ServiceAccount may (default: the GitOps controller's own rights).
    pub service_account_name: Option<String>,
});

object!(SyncPolicy {
    pub automated: Option<bool>,
    pub prune: Option<bool>,
    pub self_heal: Option<bool>,
    pub auto_rollback: Option<bool>,
});

object!(ApplicationStatus {
    pub sync: Option<SyncStatus>,
    pub health: Option<HealthStatus>,
    pub resources: Option<Vec<ResourceStatus>>,
    pub operation_state: Option<OperationState>,
    pub last_synced_revision: Option<String>,
    pub last_attempted_revision: Option<String>,
    pub observed_generation: Option<i64>,
});

object!(SyncStatus {
    /// Synced, OutOfSync, Failed or Unknown.
    pub status: String,
    pub revision: Option<String>,
});

object!(HealthStatus {
    /// Healthy, Progressing, Degraded, Suspended, Missing or Unknown.
    pub status: String,
    pub message: Option<String>,
});

object!(ResourceStatus {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub status: Option<String>,
    pub health: Option<HealthStatus>,
});

object!(OperationState {
    /// Running, Succeeded, Failed.
    pub phase: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
});

kind!(
    /// One sync attempt of an Application.
    SyncRecord {
        pub spec: Option<SyncRecordSpec>,
    }
);

object!(SyncRecordSpec {
    /// The Application's name (in the same namespace).
    pub application: String,
    /// Sequence number within the Application's history (1, 2, ...).
    pub sequence: i64,
    pub revision: String,
    pub author: Option<String>,
    pub message: Option<String>,
    /// push, webhook, poll, manual, rollback, self-heal, startup.
    pub trigger: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Succeeded or Failed.
    pub result: String,
    pub error: Option<String>,
    /// The health last seen while this revision was deployed (final once the next revision replaces it).
    pub health: Option<String>,
    /// When this revision was first seen Healthy (what makes it a rollback target).
    pub healthy_at: Option<String>,
    pub created: Option<Vec<String>>,
    pub updated: Option<Vec<String>>,
    pub pruned: Option<Vec<String>>,
});

/// The one rule that picks a rollback target, for `capstan app rollback` and `autoRollback` alike: the newest
/// revision of the history (records newest first, as `SyncRecord` JSON) other than the deployed one that synced and
/// reached Healthy while it was deployed (`healthyAt`; records written before that field count by their `health`).
pub fn rollback_target(records: &[serde_json::Value], deployed: &str) -> Option<String> {
    let mut sorted: Vec<&serde_json::Value> = records.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r["spec"]["sequence"].as_i64().unwrap_or(0)));
    sorted
        .into_iter()
        .find(|r| {
            let spec = &r["spec"];
            spec["result"] == "Succeeded"
                && spec["revision"] != deployed
                && (spec["healthyAt"].is_string() || spec["health"] == "Healthy")
        })
        .and_then(|r| r["spec"]["revision"].as_str().map(String::from))
}

#[cfg(test)]
mod rollback_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dependency_cycles_are_found_with_their_path() {
        let edges: std::collections::BTreeMap<String, Vec<String>> = [
            ("d/a".to_string(), vec!["d/b".to_string()]),
            ("d/b".to_string(), vec!["d/c".to_string()]),
            ("d/c".to_string(), vec!["d/a".to_string()]),
            ("d/x".to_string(), vec!["d/a".to_string()]),
        ]
        .into();
        assert_eq!(
            dependency_cycle("d/a", &edges),
            Some(vec!["d/a".into(), "d/b".into(), "d/c".into(), "d/a".into()])
        );
        assert_eq!(dependency_cycle("d/x", &edges), None);
    }

    fn rec(seq: i64, rev: &str, health: &str, healthy_at: Option<&str>) -> serde_json::Value {
        json!({"spec": {"sequence": seq, "revision": rev, "result": "Succeeded", "health": health,
            "healthyAt": healthy_at}})
    }

    #[test]
    fn the_target_is_the_newest_other_revision_that_reached_healthy() {
        // `initial` reached Healthy, then `two` replaced it before anyone looked again: it still counts.
        let h = vec![
            rec(2, "two", "Progressing", None),
            rec(1, "initial", "Progressing", Some("2026-01-01T00:00:00Z")),
        ];
        assert_eq!(rollback_target(&h, "two").as_deref(), Some("initial"));
        // Never Healthy: no target.
        let h = vec![
            rec(2, "two", "Healthy", None),
            rec(1, "initial", "Degraded", None),
        ];
        assert_eq!(rollback_target(&h, "two"), None);
        // A failed sync is no target; order is by sequence, whatever the list order.
        let mut failed = rec(3, "three", "Healthy", Some("t"));
        failed["spec"]["result"] = json!("Failed");
        let h = vec![
            rec(1, "one", "Healthy", Some("t")),
            failed,
            rec(2, "two", "Healthy", Some("t")),
            rec(4, "four", "Healthy", Some("t")),
        ];
        assert_eq!(rollback_target(&h, "four").as_deref(), Some("two"));
    }
}
