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
    /// When automatic syncs may (allow) or may not (deny) happen.
    pub sync_windows: Option<Vec<SyncWindow>>,
    /// How many SyncRecords are kept (Argo CD's revisionHistoryLimit, default 10); the newest record that reached
    /// Healthy is kept beyond it, so the default rollback target never goes.
    pub revision_history_limit: Option<i64>,
});

object!(
    /// A window of time: from each `schedule` time (cron) for `duration` (Go duration: `64h`, `1h30m`).
    SyncWindow {
        pub schedule: String,
        pub duration: String,
        /// `deny`: no automatic sync inside it; `allow`: automatic syncs only inside the allow windows.
        pub kind: String,
        /// IANA time zone of the schedule (default UTC).
        pub time_zone: Option<String>,
    }
);

/// A Go duration (`64h`, `1h30m`, `90s`) in seconds.
pub fn go_duration(text: &str) -> Option<i64> {
    let mut total = 0i64;
    let mut num = String::new();
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let c = rest.chars().next()?;
        if c.is_ascii_digit() {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let (unit, len) = if rest.starts_with("ms") {
            (0, 2)
        } else {
            match c {
                'h' => (3600, 1),
                'm' => (60, 1),
                's' => (1, 1),
                _ => return None,
            }
        };
        total += n * unit;
        rest = &rest[len..];
    }
    num.is_empty().then_some(total)
}

/// Checks an Application's sync windows: schedule, duration, kind (the 422 causes).
pub fn check_windows(app: &serde_json::Value) -> Vec<super::validation::FieldError> {
    use super::validation::{FieldError, Reason};
    let mut errs = Vec::new();
    let windows = app["spec"]["syncWindows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, w) in windows.iter().enumerate() {
        let at = |f: &str| format!("spec.syncWindows[{i}].{f}");
        let e = |field: String, reason, detail: String| FieldError {
            field,
            reason,
            detail,
        };
        if let Err(x) = super::batch::parse_schedule(
            w["schedule"].as_str().unwrap_or(""),
            w["timeZone"].as_str(),
        ) {
            errs.push(e(at("schedule"), Reason::Invalid, x.to_string()));
        }
        if go_duration(w["duration"].as_str().unwrap_or("")).is_none_or(|d| d <= 0) {
            errs.push(e(
                at("duration"),
                Reason::Invalid,
                format!(
                    "{}: a positive Go duration such as 64h or 1h30m",
                    w["duration"]
                ),
            ));
        }
        if !matches!(w["kind"].as_str(), Some("allow" | "deny")) {
            errs.push(e(
                at("kind"),
                Reason::NotSupported,
                format!("{}: supported values: \"allow\", \"deny\"", w["kind"]),
            ));
        }
    }
    errs
}

/// Why automatic syncs are held at `now` (None: they are not): a deny window is open, or allow windows exist and
/// none is.
pub fn sync_window_closed(
    windows: &[SyncWindow],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let open = |w: &SyncWindow| -> Option<chrono::DateTime<chrono::Utc>> {
        let s = super::batch::parse_schedule(&w.schedule, w.time_zone.as_deref()).ok()?;
        let d = chrono::Duration::seconds(go_duration(&w.duration)?);
        let start = s.previous_at_or_before(now)?;
        (now < start + d).then_some(start + d)
    };
    for w in windows.iter().filter(|w| w.kind == "deny") {
        if let Some(end) = open(w) {
            return Some(format!(
                "sync window: deny ({} for {}) until {}",
                w.schedule,
                w.duration,
                super::meta::format_time(&end)
            ));
        }
    }
    let allows: Vec<&SyncWindow> = windows.iter().filter(|w| w.kind == "allow").collect();
    if !allows.is_empty() && !allows.iter().any(|w| open(w).is_some()) {
        return Some("sync window: outside every allow window".into());
    }
    None
}

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
    /// Render with a plugin the server declares (`capstan server --render-plugin NAME=COMMAND`) instead of reading
    /// the directory's manifests and kustomizations.
    pub plugin: Option<PluginSource>,
});

object!(PluginSource {
    /// The plugin's name, as the server declares it.
    pub name: String,
    /// Variables for the run, each given to it as `CAPSTAN_ENV_<name>`.
    #[serde(default)]
    pub env: Vec<PluginEnv>,
    /// Its positional parameters.
    #[serde(default)]
    pub args: Vec<String>,
});

object!(PluginEnv {
    pub name: String,
    #[serde(default)]
    pub value: String,
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
    /// Whether the app's sync windows let automatic syncs happen now (only for apps with windows).
    pub sync_window: Option<SyncWindowStatus>,
});

object!(SyncWindowStatus {
    /// True when automatic syncs may happen now.
    pub open: bool,
    /// Why they are held (the deny window and until when), or that they are allowed.
    pub message: String,
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
    fn sync_windows_hold_automatic_syncs() {
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let w: Vec<SyncWindow> = serde_json::from_value(json!([
            {"schedule": "0 17 * * 5", "duration": "64h", "kind": "deny"}]))
        .unwrap();
        // 2026-01-02 is a Friday: from 17:00 to Monday 09:00 deny.
        assert!(sync_window_closed(&w, at("2026-01-02T16:59:00Z")).is_none());
        assert!(sync_window_closed(&w, at("2026-01-03T12:00:00Z"))
            .unwrap()
            .contains("until 2026-01-05T09:00:00Z"));
        assert!(sync_window_closed(&w, at("2026-01-05T09:00:00Z")).is_none());
        let allow: Vec<SyncWindow> = serde_json::from_value(json!([
            {"schedule": "0 9 * * *", "duration": "8h", "kind": "allow"}]))
        .unwrap();
        assert!(sync_window_closed(&allow, at("2026-01-05T10:00:00Z")).is_none());
        assert!(sync_window_closed(&allow, at("2026-01-05T18:00:00Z")).is_some());
        assert_eq!(go_duration("1h30m"), Some(5400));
        assert_eq!(go_duration("5 minutes"), None);
        let bad = json!({"spec": {"syncWindows": [{"schedule": "every day", "duration": "x", "kind": "maybe"}]}});
        let fields: Vec<String> = check_windows(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.syncWindows[0].schedule",
                "spec.syncWindows[0].duration",
                "spec.syncWindows[0].kind"
            ]
        );
    }

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
