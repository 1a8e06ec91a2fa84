//! The actions half of the TUI: pages along a breadcrumb, the input modes, and what each key does. Keys go through
//! the [`KeyMap`] to action ids; an action changes the pages or queues a [`Request`] for the binary to carry out.
//! Rows are computed from the [`Store`] when drawn, so every view is as live as the watches feeding it.

use capstan_present::event_time;
use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::actions::KeyMap;
use crate::kinds::{self, Kind};
use crate::state::{at, str_at, Event, Request, Store};

mod input;

/// Which objects of a kind a table shows beyond the namespace and the filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    All,
    /// The objects an Application manages (`status.resources`).
    AppObjects {
        namespace: String,
        app: String,
    },
    /// An Application's SyncRecords.
    AppHistory {
        namespace: String,
        app: String,
    },
    /// Objects with an owner reference to `uid`.
    OwnedBy {
        uid: String,
        what: String,
    },
    /// Pods of a Deployment's ReplicaSets (all of them: a rollout shows old and new).
    DeploymentPods {
        uid: String,
        what: String,
    },
    /// Objects in `namespace` whose labels hold all of `labels` (a Service's selector).
    Selector {
        namespace: String,
        labels: Vec<(String, String)>,
        what: String,
    },
    /// Pods on a node.
    Node(String),
}

pub struct TablePage {
    pub kind: &'static Kind,
    pub scope: Scope,
    /// `namespace/name` of the selected row (kept across updates), and its last index.
    pub selected: Option<String>,
    pub index: usize,
    pub filter: String,
}

pub struct TextPage {
    pub title: String,
    pub lines: Vec<String>,
    pub scroll: usize,
}

pub struct LogsPage {
    pub stream: u64,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub previous: bool,
    pub lines: VecDeque<String>,
    pub follow: bool,
    /// The first line shown when not following.
    pub scroll: usize,
    pub search: String,
    pub ended: Option<String>,
}

pub enum Page {
    Table(TablePage),
    Text(TextPage),
    Logs(LogsPage),
}

/// What an input line is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    Scale {
        kind: String,
        namespace: String,
        name: String,
    },
}

pub enum Mode {
    Normal,
    Command(String),
    Filter(String),
    Input {
        prompt: String,
        buffer: String,
        purpose: Purpose,
    },
    Confirm {
        title: String,
        body: Vec<String>,
        scroll: usize,
        request: Request,
    },
    Help,
}

pub struct Flash {
    pub text: String,
    pub error: bool,
}

pub struct App {
    pub store: Store,
    pub pages: Vec<Page>,
    pub mode: Mode,
    /// The namespace shown (`None`: all).
    pub namespace: Option<String>,
    pub keys: KeyMap,
    pub readonly: bool,
    pub reveal: bool,
    pub flash: Option<Flash>,
    pub quit: bool,
    /// Where the cluster is (shown in the header).
    pub context: String,
    /// The clock for ages (fixed in snapshot tests).
    pub now: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows a page moves by (set from the terminal's height when drawn).
    pub page_rows: usize,
    outbox: Vec<Request>,
    next_stream: u64,
    /// Lines to put above a text page when it arrives, by its title (what a sync changed, above its commit's diff).
    preface: std::collections::HashMap<String, Vec<String>>,
}

/// Most lines kept of a log.
const LOG_LINES: usize = 20_000;

impl App {
    pub fn new(keys: KeyMap, readonly: bool, context: &str) -> App {
        App {
            store: Store::default(),
            pages: vec![Page::Table(TablePage::new(kinds::by_resource(
                "applications",
            )))],
            mode: Mode::Normal,
            namespace: None,
            keys,
            readonly,
            reveal: false,
            flash: None,
            quit: false,
            context: context.to_string(),
            now: None,
            page_rows: 10,
            outbox: Vec::new(),
            next_stream: 1,
            preface: Default::default(),
        }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.now.unwrap_or_else(chrono::Utc::now)
    }

    /// Requests queued since the last call.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    fn send(&mut self, r: Request) {
        if self.readonly && r.mutating() {
            self.error("read-only: changes are disabled (--readonly)");
            return;
        }
        self.outbox.push(r);
    }

    fn notice(&mut self, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            error: false,
        });
    }

    fn error(&mut self, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            error: true,
        });
    }

    pub fn page(&self) -> &Page {
        self.pages.last().expect("there is always a page")
    }

    fn page_mut(&mut self) -> &mut Page {
        self.pages.last_mut().expect("there is always a page")
    }

    /// The breadcrumb: one label per page.
    pub fn breadcrumb(&self) -> Vec<String> {
        self.pages
            .iter()
            .map(|p| match p {
                Page::Table(t) => match &t.scope {
                    Scope::All => t.kind.title.to_lowercase(),
                    Scope::AppObjects { app, .. } => format!("app/{app}"),
                    Scope::AppHistory { app, .. } => format!("app/{app} history"),
                    Scope::OwnedBy { what, .. }
                    | Scope::DeploymentPods { what, .. }
                    | Scope::Selector { what, .. } => {
                        format!("{what} {}", t.kind.title.to_lowercase())
                    }
                    Scope::Node(n) => format!("node/{n} pods"),
                },
                Page::Text(t) => t.title.clone(),
                Page::Logs(l) => format!("logs {}/{}", l.pod, l.container),
            })
            .collect()
    }

    // ---- events from outside ----

    pub fn handle_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Log { stream, lines } => {
                if let Some(Page::Logs(l)) = self
                    .pages
                    .iter_mut()
                    .find(|p| matches!(p, Page::Logs(l) if l.stream == stream))
                {
                    l.lines.extend(lines);
                    while l.lines.len() > LOG_LINES {
                        l.lines.pop_front();
                        l.scroll = l.scroll.saturating_sub(1);
                    }
                    return true;
                }
                false
            }
            Event::LogEnd { stream, error } => {
                for p in &mut self.pages {
                    if let Page::Logs(l) = p {
                        if l.stream == stream {
                            l.ended = Some(error.clone().unwrap_or_else(|| "stream ended".into()));
                        }
                    }
                }
                true
            }
            Event::Text { title, body } => {
                let mut lines = self.preface.remove(&title).unwrap_or_default();
                lines.extend(body.lines().map(String::from));
                self.pages.push(Page::Text(TextPage {
                    title,
                    lines,
                    scroll: 0,
                }));
                true
            }
            Event::Confirm {
                title,
                body,
                request,
            } => {
                self.mode = Mode::Confirm {
                    title,
                    body: body.lines().map(String::from).collect(),
                    scroll: 0,
                    request,
                };
                true
            }
            Event::Notice(t) => {
                self.notice(t);
                true
            }
            Event::Failure(t) => {
                self.error(t);
                true
            }
            other => self.store.apply(&other),
        }
    }

    // ---- rows ----

    /// The rows of a table page, in display order.
    pub fn rows(&self, t: &TablePage) -> Vec<Arc<Value>> {
        let filter = t.filter.to_lowercase();
        // Object names are lowercase already; only free text (messages) is lowered, and only when the name misses.
        let matches_filter = |v: &Value| {
            filter.is_empty()
                || str_at(v, "/metadata/name").contains(&filter)
                || str_at(v, "/name").contains(&filter)
                || contains_lower(str_at(v, "/spec/message"), &filter)
                || contains_lower(str_at(v, "/message"), &filter)
        };
        if let Scope::AppObjects { namespace, app } = &t.scope {
            let Some(a) = self.store.get("applications", namespace, app) else {
                return Vec::new();
            };
            return at(a, "/status/resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| matches_filter(r))
                .map(|r| Arc::new(r.clone()))
                .collect();
        }
        let ns = match (&t.scope, t.kind.namespaced) {
            (_, false) => None,
            (Scope::All, true) => self.namespace.as_deref(),
            _ => None,
        };
        let owner_uids: Vec<String> = match &t.scope {
            Scope::DeploymentPods { uid, .. } => self
                .store
                .entries("replicasets")
                .filter(|rs| rs.meta.owners.iter().any(|o| o == uid))
                .map(|rs| str_at(&rs.object, "/metadata/uid").to_string())
                .collect(),
            _ => Vec::new(),
        };
        let mut rows: Vec<Arc<Value>> = self
            .store
            .entries(t.kind.resource)
            .filter(|e| {
                let m = &e.meta;
                ns.is_none_or(|n| m.namespace == n)
                    && match &t.scope {
                        Scope::All | Scope::AppObjects { .. } => true,
                        Scope::AppHistory { namespace, app } => {
                            m.namespace == *namespace
                                && str_at(&e.object, "/spec/application") == app
                        }
                        Scope::OwnedBy { uid, .. } => m.owners.iter().any(|o| o == uid),
                        Scope::DeploymentPods { .. } => {
                            m.owners.iter().any(|o| owner_uids.contains(o))
                        }
                        Scope::Selector {
                            namespace, labels, ..
                        } => {
                            m.namespace == *namespace
                                && labels.iter().all(|(k, v)| m.label(k) == Some(v.as_str()))
                        }
                        Scope::Node(n) => m.node == *n,
                    }
                    && (filter.is_empty() || m.name.contains(&filter) || m.text.contains(&filter))
            })
            .map(|e| e.object.clone())
            .collect();
        match t.kind.resource {
            "syncrecords" => {
                rows.sort_by_key(|r| -at(r, "/spec/sequence").and_then(Value::as_i64).unwrap_or(0))
            }
            "events" => rows.sort_by(|a, b| event_time(b).cmp(event_time(a))),
            _ => {}
        }
        rows
    }

    /// The selected row of the top table page and its index.
    pub fn selection(&self) -> Option<(usize, Arc<Value>)> {
        let Page::Table(t) = self.page() else {
            return None;
        };
        let rows = self.rows(t);
        let i = select_index(t, &rows);
        rows.get(i).cloned().map(|r| (i, r))
    }

    fn move_selection(&mut self, delta: isize) {
        let (len, current) = match self.page() {
            Page::Table(t) => {
                let rows = self.rows(t);
                (rows.len(), select_index(t, &rows))
            }
            _ => (0, 0),
        };
        match self.page_mut() {
            Page::Table(_) => {
                if len == 0 {
                    return;
                }
                let i = (current as isize + delta).clamp(0, len as isize - 1) as usize;
                let key = {
                    let Page::Table(t) = self.page() else {
                        return;
                    };
                    self.rows(t).get(i).map(|r| row_key(r))
                };
                if let Page::Table(t) = self.page_mut() {
                    t.index = i;
                    t.selected = key;
                }
            }
            Page::Text(t) => {
                let max = t.lines.len().saturating_sub(1) as isize;
                t.scroll = (t.scroll as isize + delta).clamp(0, max.max(0)) as usize;
            }
            Page::Logs(l) => {
                let max = l.lines.len().saturating_sub(1) as isize;
                let from = if l.follow { max } else { l.scroll as isize };
                l.scroll = (from + delta).clamp(0, max.max(0)) as usize;
                l.follow = delta > 0 && l.scroll as isize >= max;
            }
        }
    }
}

impl TablePage {
    pub fn new(kind: &'static Kind) -> TablePage {
        TablePage {
            kind,
            scope: Scope::All,
            selected: None,
            index: 0,
            filter: String::new(),
        }
    }
}

/// The index of the selected row: the remembered object if still there, else the last index (clamped).
pub fn select_index(t: &TablePage, rows: &[Arc<Value>]) -> usize {
    if let Some(key) = &t.selected {
        // Look near the last index first: the selection rarely moves far between frames.
        let near = t.index.min(rows.len().saturating_sub(1));
        let hit = |r: &Arc<Value>| is_row(r, key);
        if rows.get(near).is_some_and(hit) {
            return near;
        }
        if let Some(i) = rows.iter().position(hit) {
            return i;
        }
    }
    t.index.min(rows.len().saturating_sub(1))
}

/// Whether `v` is the row `row_key` gave `key`, without building its key.
fn is_row(v: &Value, key: &str) -> bool {
    let name = str_at(v, "/metadata/name");
    if !name.is_empty() {
        let ns = str_at(v, "/metadata/namespace");
        return key.len() == ns.len() + 1 + name.len()
            && key.starts_with(ns)
            && key.ends_with(name)
            && key.as_bytes()[ns.len()] == b'/';
    }
    row_key(v) == key
}

fn contains_lower(text: &str, lower_needle: &str) -> bool {
    !text.is_empty() && text.to_lowercase().contains(lower_needle)
}

fn row_key(v: &Value) -> String {
    if v.get("metadata").is_some() {
        crate::state::key_of(v)
    } else {
        format!(
            "{}/{}/{}",
            str_at(v, "/kind"),
            str_at(v, "/namespace"),
            str_at(v, "/name")
        )
    }
}

/// What a sync of a commit did, from its SyncRecord: when, why, the outcome and the objects it changed.
fn sync_summary(rec: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "sync #{} ({}) {} at {}, health {}",
        at(rec, "/spec/sequence")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        str_at(rec, "/spec/trigger"),
        str_at(rec, "/spec/result"),
        str_at(rec, "/spec/finishedAt"),
        str_at(rec, "/spec/health"),
    )];
    if let Some(e) = at(rec, "/spec/error").and_then(Value::as_str) {
        out.extend(e.lines().map(|l| format!("  error: {l}")));
    }
    let mut any = false;
    for (field, mark) in [
        ("created", "created"),
        ("updated", "updated"),
        ("pruned", "pruned "),
    ] {
        for id in at(rec, &format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !any {
                out.push("objects this sync changed:".into());
                any = true;
            }
            out.push(format!("  {mark}  {id}"));
        }
    }
    if !any {
        out.push("objects this sync changed: none".into());
    }
    out.push(String::new());
    out
}

/// The plural resource of a Kind name (`Deployment` -> `deployments`), if the TUI lists it.
fn resource_of(kind: &str) -> Option<String> {
    kinds::KINDS
        .iter()
        .find(|k| k.aliases.iter().any(|a| *a == kind.to_lowercase()))
        .map(|k| k.resource.to_string())
}

fn singular(resource: &str) -> String {
    kinds::by_resource(resource)
        .aliases
        .iter()
        .find(|a| resource.starts_with(*a) && a.len() + 1 >= resource.len())
        .map(|a| a.to_string())
        .unwrap_or_else(|| resource.trim_end_matches('s').to_string())
}

fn qualified(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

fn mask_secret(v: &mut Value) {
    for field in ["data", "stringData"] {
        if let Some(m) = v.get_mut(field).and_then(Value::as_object_mut) {
            for val in m.values_mut() {
                *val = Value::String("••••".into());
            }
        }
    }
}

/// A `kubectl describe`-like text: identity, labels, the status that matters, conditions, and the object's events.
pub fn describe(obj: &Value, store: &Store, reveal: bool) -> Vec<String> {
    let uid = str_at(obj, "/metadata/uid");
    let mut events: Vec<&Value> = store
        .objects("events")
        .filter(|e| !uid.is_empty() && str_at(e, "/involvedObject/uid") == uid)
        .map(|e| e.as_ref())
        .collect();
    events.sort_by(|a, b| event_time(a).cmp(event_time(b)));
    capstan_present::describe(obj, &events, reveal)
}
