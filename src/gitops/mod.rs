//! GitOps: each Application names a path in a git repository, and the cluster follows it. A local repository is
//! watched (notify) so a commit, branch move, reset or checkout is picked up at once; each new commit is rendered,
//! checked as a whole and applied all or nothing, with pruning; drift from git is reverted (self-heal); every
//! attempt is recorded as a SyncRecord; and rollback is a revert commit, never a divergence from git. This module
//! talks to the cluster only through the client.

mod commit;
pub mod follow;
pub mod health;
mod history;
pub mod kustomize;
pub mod notifications;
pub mod plugins;
pub mod render;
pub mod source;
pub mod sync;
mod watch;

pub use history::{commit_diff, history, rollback_diff, write_rollback};
use history::{history_limit, last_healthy, record, record_health};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::core::Secret;
use crate::api::gitops::{Application, ApplicationSource, SyncPolicy};
use crate::api::meta::{format_time, now};
use crate::api::registry::{self, KindInfo};
use crate::client::{Api, Client};
use crate::runtime::queue::WorkQueue;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("{0}")]
    Source(#[from] source::Error),
    #[error("git worker: {0}")]
    Join(String),
}

/// How long a local repository's last read stands without a write seen by its watcher (a safety net for events
/// the file watcher might miss).
const REREAD_AFTER: Duration = Duration::from_secs(600);

/// How long an observation of an app's objects stands while the informers report no change to them (a safety net
/// for a change they might miss; informers relist after any watch error and that counts as a change to every app).
const REOBSERVE_AFTER: Duration = Duration::from_secs(3600);

/// What an app last did, kept in memory between reconciles.
#[derive(Default, Clone)]
struct Memo {
    /// The Application's uid: an app deleted and created again under its name starts afresh.
    uid: String,
    revision: String,
    generation: i64,
    sync_request: String,
    /// The desired objects of the last good sync (for drift and health); shared, as a memo is copied every look.
    desired: Arc<Vec<render::Desired>>,
    /// The revision autoRollback already reverted (never twice).
    auto_rolled: String,
    failed: bool,
    /// Remotes: when the mirror was last fetched, and the last refresh request (webhook) seen.
    fetched: Option<tokio::time::Instant>,
    refresh: String,
    /// The commit last read (so an unchanged branch costs one lookup, not a read of every file).
    snap: Option<Arc<source::Snapshot>>,
    /// The health last recorded in the history.
    health: String,
    /// A local repository: its watcher's write count when `snap` was read, and when.
    read: Option<(u64, tokio::time::Instant)>,
    /// The app's change count ([`follow::Changes`]) when its objects were last observed with nothing to do (no
    /// drift, status up to date), and when: a look without a change since then need not observe them again.
    observed: Option<(u64, tokio::time::Instant)>,
    /// The last sync's `operationState`, which each observation writes again if the status lost it (a status
    /// write cut short would otherwise leave a finished sync "Running").
    operation: Value,
}

pub struct Context {
    pub client: Client,
    pub queue: WorkQueue,
    /// One watcher per repository, shared by every app that follows it: git dir -> (watcher, app keys).
    watches: watch::Watches,
    memos: Mutex<HashMap<String, Memo>>,
    /// How often health and drift are looked at without a change to wake the app (a safety net: changes to what
    /// apps own wake them at once, [`follow`], and a local repository's new commits through its watcher; Argo CD's
    /// reconcile period, 3 minutes). Remote repositories are still fetched every `spec.interval`.
    pub resync: Duration,
    /// Where mirrors of remote repositories are kept.
    pub cache: std::path::PathBuf,
    /// The render plugins the operator declared.
    pub plugins: plugins::Plugins,
    /// How often each app's objects changed (fed by [`follow`]).
    pub changes: follow::Changes,
}

impl Context {
    /// What the app last did, if this process has seen it.
    fn memo(&self, key: &str) -> Option<Memo> {
        self.memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, memo: &Memo) {
        self.memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), memo.clone());
    }

    pub fn new(client: Client, queue: WorkQueue, cache: std::path::PathBuf) -> Self {
        Context {
            client,
            queue,
            watches: watch::Watches::default(),
            memos: Mutex::default(),
            resync: Duration::from_secs(180),
            cache,
            plugins: plugins::Plugins::default(),
            changes: follow::Changes::default(),
        }
    }

    fn watch(&self, key: &str, git_dir: &std::path::Path) {
        self.watches.watch(&self.queue, key, git_dir);
    }

    fn repo_writes(&self, key: &str) -> Option<u64> {
        self.watches.writes(key)
    }

    fn unwatch(&self, key: &str) {
        self.watches.unwatch(key);
    }
}

fn kind(plural: &str) -> &'static KindInfo {
    registry::lookup(plural).expect("registered kind")
}

/// The app's sync policy.
/// The client an app's syncs, prunes and self-heals use: the controller's, acting as the ServiceAccount
/// `spec.destination.serviceAccountName` (in the Application's namespace) when it names one.
fn acting_client(client: &Client, app: &Application) -> Client {
    let sa = app
        .spec
        .as_ref()
        .and_then(|s| s.destination.as_ref())
        .and_then(|d| d.service_account_name.as_deref())
        .filter(|n| !n.is_empty());
    match sa {
        Some(sa) => client.impersonating(&format!(
            "system:serviceaccount:{}:{sa}",
            app.metadata.namespace()
        )),
        None => client.clone(),
    }
}

fn sync_policy(app: &Application) -> SyncPolicy {
    app.spec
        .as_ref()
        .and_then(|s| s.sync_policy.clone())
        .unwrap_or_default()
}

/// The app's source (empty when it has no spec: validation makes that impossible for stored apps).
fn source_of(app: &Application) -> ApplicationSource {
    app.spec
        .as_ref()
        .map(|s| s.source.clone())
        .unwrap_or_default()
}

/// Opens an app's source: a local repository in place, a remote through its mirror under `cache` (with the
/// credentials of its secretRef).
pub fn open_source(
    app: &Application,
    cache: &std::path::Path,
    credentials: Option<source::Credentials>,
) -> Result<source::Source, source::Error> {
    open_spec(&source_of(app), cache, credentials)
}

/// [`open_source`] from the source spec alone.
fn open_spec(
    src: &ApplicationSource,
    cache: &std::path::Path,
    credentials: Option<source::Credentials>,
) -> Result<source::Source, source::Error> {
    let (url, path) = (src.repo_url.as_str(), src.path.as_deref());
    if source::is_remote(url) {
        let mut src = source::open_remote(url, path, cache)?;
        src.credentials = credentials;
        Ok(src)
    } else {
        source::open(url, path)
    }
}

/// The credentials of an app's `spec.source.secretRef` (a Secret in the app's namespace), if it names one.
pub async fn credentials(
    client: &Client,
    app: &Application,
) -> Result<Option<source::Credentials>, Error> {
    use base64::Engine;
    let src = source_of(app);
    let Some(secret) = src.secret_ref.as_ref().map(|r| r.name.as_str()) else {
        return Ok(None);
    };
    let ns = app.metadata.namespace();
    let origin = format!("secret {ns}/{secret}");
    let obj = match Api::<Secret>::namespaced(client, ns).get(secret).await {
        Ok(o) => o,
        Err(e) if e.code() == Some(404) => {
            return Err(Error::Source(source::Error::Refused(format!(
                "{}: {origin} (spec.source.secretRef) does not exist",
                src.repo_url
            ))));
        }
        Err(e) => return Err(e.into()),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = |key: &str| -> Option<Vec<u8>> {
        obj.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| b64.decode(v).ok())
            .or_else(|| {
                obj.string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| v.as_bytes().to_vec())
            })
    };
    let text = |key: &str| bytes(key).map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(Some(source::Credentials {
        origin,
        username: text("username"),
        password: text("password"),
        identity: text("identity"),
        identity_pub: text("identity.pub"),
        passphrase: text("passphrase"),
        known_hosts: text("known_hosts"),
        ca_cert: bytes("ca.crt"),
    }))
}

/// Reads the commit to deploy (on a blocking thread: libgit2 is synchronous), fetching a remote first when asked.
async fn read_commit(
    client: &Client,
    app: &Application,
    cache: &std::path::Path,
    fetch: bool,
    known: Option<Arc<source::Snapshot>>,
) -> Result<(Arc<source::Snapshot>, std::path::PathBuf, bool), Error> {
    let creds = if fetch {
        credentials(client, app).await?
    } else {
        None
    };
    // Only the source spec goes to the blocking task (not a copy of the whole Application, every look).
    let spec = source_of(app);
    let cache = cache.to_path_buf();
    let r = crate::sys::clock::blocking(move || -> Result<_, source::Error> {
        let src = open_spec(&spec, &cache, creds)?;
        if fetch && src.remote.is_some() {
            src.fetch()?;
        }
        let rev = spec.target_revision;
        let oid = src.resolve(rev.as_deref())?;
        let snap = match known.filter(|k| k.commit == oid.to_string()) {
            Some(k) => k,
            None => Arc::new(src.snapshot(oid)?),
        };
        Ok((snap, src.git_dir.clone(), src.remote.is_some()))
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?;
    Ok(r?)
}

/// `spec.interval` ("30s", "2m", "1h"; default 30 s).
fn interval(app: &Application) -> Duration {
    let v = app
        .spec
        .as_ref()
        .and_then(|s| s.interval.as_deref())
        .unwrap_or("30s");
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().unwrap_or(30);
    Duration::from_secs(match unit {
        "m" => n * 60,
        "h" => n * 3600,
        _ => n,
    })
    .max(Duration::from_secs(1))
}

/// Whether every field of `part` is in `whole` with the same value (objects compared key by key).
fn is_subset(part: &Value, whole: &Value) -> bool {
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => p.iter().all(|(k, v)| {
            w.get(k).is_some_and(|wv| is_subset(v, wv)) || v.is_null() && !w.contains_key(k)
        }),
        _ => part == whole,
    }
}

/// Writes the app's status; false when the write failed (the caller looks again soon rather than at its next
/// safety look, or the status would show a finished sync as running for minutes).
async fn set_status(client: &Client, ns: &str, name: &str, status: Value) -> bool {
    match client
        .patch_status(kind("applications"), Some(ns), name, &status)
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(app = name, "status update failed: {e}");
            false
        }
    }
}

/// How soon to look again after a failure to read the app's objects or write its status.
const RETRY_SOON: Duration = Duration::from_secs(5);

/// Reconciles one Application: sync a new commit (or a requested sync, or drift), then observe health.
pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut pass = Pass::new(&app, &ctx);
    if app.metadata.deletion_timestamp.is_some() {
        ctx.unwatch(&pass.key);
        return pass.deleted().await;
    }
    let uid = app.metadata.uid.clone().unwrap_or_default();
    let memo = ctx.memo(&pass.key).filter(|m| m.uid == uid);
    let (snap, remote, fetched, read) = match pass.fetch(memo.as_ref()).await {
        Ok(r) => r,
        Err(action) => return Ok(action),
    };
    pass.remote = remote;
    let webhook = memo.as_ref().is_some_and(|m| m.refresh != pass.refresh);
    let trigger = pass.trigger(memo.as_ref(), &snap, webhook, remote);
    let policy = sync_policy(&app);
    let automated = policy.automated.unwrap_or(true);
    let mut memo = memo.unwrap_or_default();
    memo.uid = uid;
    memo.refresh = pass.refresh.clone();
    memo.snap = Some(snap.clone());
    if let Some(writes) = read {
        memo.read = Some((writes, tokio::time::Instant::now()));
    }
    if fetched {
        memo.fetched = Some(tokio::time::Instant::now());
    }
    if let Some(trigger) = trigger {
        if let Some((why, retry)) = pass.held(trigger, &memo).await {
            let mut status = json!({"sync": {"status": "OutOfSync", "revision": snap.commit},
                "operationState": {"phase": "Waiting", "message": why}});
            if why.starts_with("sync window") {
                status["syncWindow"] = json!({"open": false, "message": why});
            }
            set_status(&ctx.client, &pass.ns, &pass.name, status).await;
            ctx.remember(&pass.key, &memo);
            return Ok(Action::requeue(retry));
        }
    }
    match trigger {
        None => ctx.remember(&pass.key, &memo),
        Some(trigger) if automated || trigger == "manual" => {
            if pass.sync(&mut memo, &snap, trigger).await {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
        }
        Some(_) => {
            // Not automated: show that git moved on.
            let written = set_status(
                &ctx.client,
                &pass.ns,
                &pass.name,
                json!({"sync": {"status": "OutOfSync", "revision": snap.commit}}),
            )
            .await;
            return Ok(Action::requeue(if written {
                pass.next_look()
            } else {
                RETRY_SOON
            }));
        }
    }
    // Observe health and drift of the last good sync.
    if memo.failed && memo.desired.is_empty() {
        return Ok(Action::requeue(pass.next_look()));
    }
    Ok(pass.observe(&mut memo, &snap, &policy).await)
}

/// One reconcile of one Application: what it reads from the app before acting.
struct Pass<'a> {
    ctx: &'a Context,
    app: &'a Application,
    ns: String,
    name: String,
    /// `namespace/name`, the app's key in the queue and the memos.
    key: String,
    generation: i64,
    /// The `capstan.io/sync-requested` annotation (`capstan app sync` bumps it).
    sync_request: String,
    /// The `capstan.io/refresh` annotation (a webhook bumps it).
    refresh: String,
    /// When this pass began, for the records it writes.
    started: String,
    /// Whether the app follows a remote repository (known once fetched).
    remote: bool,
}

impl<'a> Pass<'a> {
    fn new(app: &'a Application, ctx: &'a Context) -> Self {
        let ns = app.metadata.namespace().to_string();
        let name = app.metadata.name().to_string();
        let annotation = |k: &str| -> String {
            app.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
                .unwrap_or_default()
        };
        Pass {
            ctx,
            app,
            key: format!("{ns}/{name}"),
            ns,
            name,
            generation: app.metadata.generation.unwrap_or(0),
            sync_request: annotation("capstan.io/sync-requested"),
            refresh: annotation("capstan.io/refresh"),
            started: format_time(&now()),
            remote: false,
        }
    }

    /// When to look again without a change: the resync period (a remote's poll interval if shorter), spread by up
    /// to a tenth per app so a thousand apps do not all look in the same second.
    fn next_look(&self) -> Duration {
        let base = if self.remote {
            interval(self.app).min(self.ctx.resync)
        } else {
            self.ctx.resync
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key.hash(&mut h);
        let tenth = base.as_millis() as u64 / 10;
        base + Duration::from_millis(if tenth == 0 { 0 } else { h.finish() % tenth })
    }

    /// Reads the commit to deploy, fetching a remote when a webhook asked or its poll interval passed, and watches a
    /// local repository. Returns the commit, whether the repository is remote and whether it was fetched now; when it
    /// cannot be read, the app's status says why and the pass ends.
    async fn fetch(
        &self,
        memo: Option<&Memo>,
    ) -> Result<(Arc<source::Snapshot>, bool, bool, Option<u64>), Action> {
        let webhook = memo.is_some_and(|m| m.refresh != self.refresh);
        let poll = memo.is_none_or(|m| m.fetched.is_none_or(|t| t.elapsed() >= interval(self.app)));
        let known = memo.and_then(|m| m.snap.clone());
        // A local repository whose watcher saw no write since the last read is not read again (until a while has
        // passed): a look at an unchanged app then costs no git work at all.
        let writes = self.ctx.repo_writes(&self.key);
        if let (Some(m), Some(snap), Some(now)) = (memo, known.as_ref(), writes) {
            let local = !source::is_remote(&source_of(self.app).repo_url);
            if local
                && !webhook
                && m.read
                    .is_some_and(|(seen, at)| seen == now && at.elapsed() < REREAD_AFTER)
            {
                return Ok((snap.clone(), false, false, None));
            }
        }
        let fetch = webhook || poll;
        match read_commit(&self.ctx.client, self.app, &self.ctx.cache, fetch, known).await {
            Ok((snap, git_dir, remote)) => {
                if !remote {
                    // (On the first look the watcher starts only now: nothing is recorded, so the next look reads
                    // git again, with the watcher running.)
                    self.ctx.watch(&self.key, &git_dir);
                }
                Ok((snap, remote, remote && fetch, writes.filter(|_| !remote)))
            }
            Err(e) => {
                set_status(&self.ctx.client, &self.ns, &self.name, json!({"sync": {"status": "Unknown"},
                    "operationState": {"phase": "Failed", "message": e.to_string(), "startedAt": self.started,
                        "finishedAt": format_time(&now())}})).await;
                Err(Action::requeue(Duration::from_secs(5)))
            }
        }
    }

    /// Why this pass syncs, if it does: the first look, a new commit (named by how it came), or a manual request.
    fn trigger(
        &self,
        memo: Option<&Memo>,
        snap: &source::Snapshot,
        webhook: bool,
        remote: bool,
    ) -> Option<&'static str> {
        match memo {
            None => Some("startup"),
            Some(m) if m.revision != snap.commit => {
                Some(if snap.message.starts_with("Roll back ") {
                    "rollback"
                } else if webhook {
                    "webhook"
                } else if remote {
                    "poll"
                } else {
                    "push"
                })
            }
            Some(m) if m.generation != self.generation => Some("manual"),
            Some(m) if m.sync_request != self.sync_request => Some("manual"),
            _ => None,
        }
    }

    /// Syncs the commit and remembers the outcome: a new history entry, whose health is recorded afresh. True when
    /// it failed for want of the API server and must be tried again soon.
    async fn sync(&self, memo: &mut Memo, snap: &source::Snapshot, trigger: &str) -> bool {
        let default_ns = self
            .app
            .spec
            .as_ref()
            .and_then(|s| s.destination.as_ref())
            .and_then(|d| d.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let (result, operation) = commit::sync_commit(
            self.ctx,
            self.app,
            snap,
            &default_ns,
            trigger,
            &self.started,
        )
        .await;
        if matches!(result, Err(true)) {
            // The API server was unavailable, not the commit at fault: the same sync is tried again soon (what
            // was synced before stays the app's last good state).
            self.ctx.remember(&self.key, memo);
            return true;
        }
        memo.revision = snap.commit.clone();
        memo.operation = operation;
        memo.generation = self.generation;
        memo.health.clear();
        memo.observed = None;
        memo.sync_request = self.sync_request.clone();
        match result {
            Ok(desired) => {
                memo.desired = Arc::new(desired);
                memo.failed = false;
            }
            Err(_) => memo.failed = true,
        }
        self.ctx.remember(&self.key, memo);
        false
    }

    /// Looks at the health and drift of what the last good sync applied: reverts drift (self-heal), writes the
    /// app's status when it changed, records health in the history and rolls a Degraded commit back when asked.
    async fn observe(
        &self,
        memo: &mut Memo,
        snap: &source::Snapshot,
        policy: &SyncPolicy,
    ) -> Action {
        let resync = Action::requeue(self.next_look());
        // Nothing the app owns changed since it was last observed with nothing to do: observing again would find
        // the same (until a while has passed: a safety net for a change the informers might miss).
        let changes = self.ctx.changes.count(&self.key);
        if memo
            .observed
            .is_some_and(|(seen, at)| seen == changes && at.elapsed() < REOBSERVE_AFTER)
        {
            return resync;
        }
        let (health, message, resources, drifted) = match health::observe(
            &self.ctx.client,
            &memo.desired,
            self.app
                .spec
                .as_ref()
                .and_then(|s| s.health.as_deref())
                .unwrap_or_default(),
            self.app
                .spec
                .as_ref()
                .and_then(|s| s.ignore_differences.as_deref())
                .unwrap_or_default(),
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(app = %self.key, "cannot observe the app's objects: {e}");
                return Action::requeue(RETRY_SOON);
            }
        };
        let automated = policy.automated.unwrap_or(true);
        let window_why = self
            .app
            .spec
            .as_ref()
            .and_then(|s| s.sync_windows.as_deref())
            .and_then(|w| crate::api::gitops::sync_window_closed(w, crate::sys::clock::utc_now()));
        let window_closed = window_why.is_some();
        if !drifted.is_empty()
            && policy.self_heal.unwrap_or(true)
            && !memo.failed
            && automated
            && !window_closed
        {
            self.heal(memo, snap, &drifted).await;
            return Action::requeue(Duration::from_millis(200));
        }
        let sync_status = if memo.failed {
            "Failed"
        } else if drifted.is_empty() {
            "Synced"
        } else {
            "OutOfSync"
        };
        let mut status = json!({"sync": {"status": sync_status, "revision": snap.commit},
            "health": {"status": health, "message": message}, "resources": resources,
            "observedGeneration": self.generation});
        if self
            .app
            .spec
            .as_ref()
            .and_then(|s| s.sync_windows.as_ref())
            .is_some_and(|w| !w.is_empty())
        {
            status["syncWindow"] = json!({"open": !window_closed, "message": window_why
                .clone()
                .unwrap_or_else(|| "automatic syncs allowed now".into())});
        }
        if !memo.failed {
            status["lastSyncedRevision"] = json!(memo.revision);
        }
        if !memo.operation.is_null() {
            status["operationState"] = memo.operation.clone();
        }
        // Only real changes are written (an unchanged app costs no write and wakes no watcher).
        let current = serde_json::to_value(&self.app.status).unwrap_or(Value::Null);
        let settled = is_subset(&status, &current);
        let written = settled || set_status(&self.ctx.client, &self.ns, &self.name, status).await;
        // (A status just written is confirmed by the next look, which that write wakes.)
        memo.observed =
            (settled && drifted.is_empty()).then(|| (changes, tokio::time::Instant::now()));
        if !memo.failed && memo.health != health {
            let t = match health.as_str() {
                "Healthy" => Some(notifications::Transition::Healthy),
                "Degraded" => Some(notifications::Transition::Degraded),
                _ => None,
            };
            if let Some(t) = t {
                // The objects that made the app this health (Argo CD names them too).
                let causes: Vec<&Value> = resources
                    .iter()
                    .filter(|r| r["health"]["status"] == health.as_str())
                    .collect();
                notifications::tell(
                    &self.ctx.client,
                    self.app,
                    t,
                    &if message.is_empty() {
                        format!("{} {}", self.name, t.name())
                    } else {
                        message.clone()
                    },
                    json!({"revision": memo.revision, "resources": causes}),
                );
            }
            record_health(&self.ctx.client, &self.ns, &self.name, &health).await;
            memo.health = health.clone();
        }
        self.ctx.remember(&self.key, memo);
        // Never a rollback of a rollback: a revert commit can look Degraded for a moment while the Deployment it
        // restores is still marked as having timed out (until its pods move).
        let is_rollback = snap.message.starts_with("Roll back ");
        if health == "Degraded"
            && policy.auto_rollback.unwrap_or(false)
            && memo.auto_rolled != memo.revision
            && !is_rollback
        {
            self.auto_rollback(memo, &message).await;
        }
        if written {
            resync
        } else {
            Action::requeue(RETRY_SOON)
        }
    }

    /// An Application being deleted: with the cascade finalizer, what it applied goes first, then the finalizer.
    async fn deleted(&self) -> Result<Action, Error> {
        let app = self.app;
        let cascade = app
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == sync::CASCADE_FINALIZER));
        if !cascade {
            return Ok(Action::await_change());
        }
        let left = sync::delete_all(&self.ctx.client, &self.ns, &self.name).await?;
        if left > 0 {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        let kept: Vec<String> = app
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != sync::CASCADE_FINALIZER)
            .cloned()
            .collect();
        self.ctx
            .client
            .patch(
                kind("applications"),
                Some(&self.ns),
                &self.name,
                "application/merge-patch+json",
                &json!({"metadata": {"finalizers": kept,
                    "resourceVersion": app.metadata.resource_version}}),
            )
            .await?;
        Ok(Action::await_change())
    }

    /// Why a sync for `trigger` must wait, and when to look again: a sync window holding syncs (an explicit
    /// `capstan app sync --force`, or a rollback someone asked for, goes through), or a dependency not Healthy yet.
    async fn held(&self, trigger: &str, memo: &Memo) -> Option<(String, Duration)> {
        let forced = (memo.sync_request != self.sync_request
            && self.sync_request.starts_with("force:"))
            || trigger == "rollback";
        let windows = self
            .app
            .spec
            .as_ref()
            .and_then(|s| s.sync_windows.as_deref())
            .unwrap_or_default();
        if !forced {
            if let Some(why) =
                crate::api::gitops::sync_window_closed(windows, crate::sys::clock::utc_now())
            {
                return Some((why, Duration::from_secs(30)));
            }
        }
        self.waiting_for_dependencies()
            .await
            .map(|why| (why, Duration::from_millis(500)))
    }

    /// Why this app must wait for its dependencies (None: it need not): a dependency that is missing, not synced or
    /// not Healthy at its current revision.
    async fn waiting_for_dependencies(&self) -> Option<String> {
        let deps = crate::api::gitops::dependencies(self.app);
        for key in deps {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key.as_str()));
            let dep = match self
                .ctx
                .client
                .get(kind("applications"), Some(ns), name)
                .await
            {
                Ok(d) => d,
                Err(_) => return Some(format!("waiting for dependency {key}: not found")),
            };
            let status = &dep["status"];
            let current = status["sync"]["status"] == "Synced"
                && status["sync"]["revision"].is_string()
                && status["sync"]["revision"] == status["lastSyncedRevision"];
            let health = status["health"]["status"].as_str().unwrap_or("Unknown");
            if !current || health != "Healthy" {
                return Some(format!(
                    "waiting for dependency {key}: {} and {health}",
                    status["sync"]["status"].as_str().unwrap_or("not synced")
                ));
            }
        }
        None
    }

    /// Self-heal: applies the desired objects again over drift, and records it in the history.
    async fn heal(&self, memo: &Memo, snap: &source::Snapshot, drifted: &[String]) {
        tracing::info!(app = %self.key, drift = ?drifted, "reverting drift from git");
        let started = format_time(&now());
        let acting = acting_client(&self.ctx.client, self.app);
        match sync::apply(
            &self.ctx.client,
            &acting,
            &memo.desired,
            &self.ns,
            &self.name,
            false,
        )
        .await
        {
            Ok(mut outcome) => {
                if outcome.updated.is_empty() && outcome.created.is_empty() {
                    outcome.updated = drifted.to_vec();
                }
                let _ = record(
                    &self.ctx.client,
                    &self.ns,
                    &self.name,
                    snap,
                    "self-heal",
                    &started,
                    "Succeeded",
                    Some(format!("reverted drift: {}", drifted.join("; "))),
                    &outcome,
                    history_limit(self.app),
                )
                .await;
            }
            Err(e) => tracing::warn!(app = %self.key, "self-heal failed: {e}"),
        }
        if let Some(m) = self
            .ctx
            .memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&self.key)
        {
            m.health.clear();
        }
    }

    /// autoRollback: a commit that made the app Degraded is reverted once, by a commit.
    async fn auto_rollback(&self, memo: &mut Memo, message: &str) {
        let client = &self.ctx.client;
        let Some(to) = last_healthy(client, &self.ns, &self.name, &memo.revision).await else {
            return;
        };
        let why = format!("Automatic rollback: {message}");
        match write_rollback(client, self.app, &to, &why).await {
            Ok(c) => {
                // Once only, and only once it is done: a failed attempt is tried again at the next look.
                memo.auto_rolled = memo.revision.clone();
                self.ctx.remember(&self.key, memo);
                tracing::info!(app = %self.key, commit = %c, to = %to, "rolled back automatically")
            }
            Err(e) => {
                tracing::warn!(app = %self.key, "automatic rollback failed (will retry): {e}")
            }
        }
        self.ctx.queue.add(&self.key);
    }
}

/// Runs the Application controller until `stop` resolves.
pub async fn run(
    client: Client,
    cache: std::path::PathBuf,
    plugins: plugins::Plugins,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let controller = crate::runtime::Controller::<Application>::new(client.clone())
        .named("applications")
        .workers(2);
    let mut ctx = Context::new(client.clone(), controller.queue(), cache);
    ctx.plugins = plugins;
    let following = tokio::spawn(follow::run(client, controller.queue(), ctx.changes.clone()));
    let ctx = Arc::new(ctx);
    controller.run(reconcile, ctx, stop).await;
    following.abort();
}
