//! The actions half of the TUI: pages along a breadcrumb, the input modes, and what each key does. Keys go through
//! the [`KeyMap`] to action ids; an action changes the pages or queues a [`Request`] for the binary to carry out.
//! Rows are computed from the [`Store`] when drawn, so every view is as live as the watches feeding it.

use capstan_present::event_time;
use std::collections::VecDeque;
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{json, Value};

use crate::actions::{self, Id, KeyMap, Scope as ActionScope};
use crate::kinds::{self, Kind};
use crate::state::{at, str_at, Event, Request, Store};

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

    // ---- keys ----

    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Help => {}
            Mode::Command(mut buf) => match key.code {
                KeyCode::Enter => self.run_command(buf.trim()),
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    buf.pop();
                    self.mode = Mode::Command(buf);
                }
                KeyCode::Char(c) => {
                    buf.push(c);
                    self.mode = Mode::Command(buf);
                }
                _ => self.mode = Mode::Command(buf),
            },
            Mode::Filter(mut buf) => {
                match key.code {
                    KeyCode::Enter => {}
                    KeyCode::Esc => buf.clear(),
                    KeyCode::Backspace => {
                        buf.pop();
                    }
                    KeyCode::Char(c) => buf.push(c),
                    _ => {}
                }
                let done = matches!(key.code, KeyCode::Enter | KeyCode::Esc);
                self.set_filter(&buf);
                if !done {
                    self.mode = Mode::Filter(buf);
                }
            }
            Mode::Input {
                prompt,
                mut buffer,
                purpose,
            } => match key.code {
                KeyCode::Enter => self.submit(&buffer, purpose),
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    buffer.pop();
                    self.mode = Mode::Input {
                        prompt,
                        buffer,
                        purpose,
                    };
                }
                KeyCode::Char(c) => {
                    buffer.push(c);
                    self.mode = Mode::Input {
                        prompt,
                        buffer,
                        purpose,
                    };
                }
                _ => {
                    self.mode = Mode::Input {
                        prompt,
                        buffer,
                        purpose,
                    }
                }
            },
            Mode::Confirm {
                title,
                body,
                scroll,
                request,
            } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => self.send(request),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => self.notice("cancelled"),
                KeyCode::Down | KeyCode::Char('j') | KeyCode::PageDown => {
                    let step = if key.code == KeyCode::PageDown { 10 } else { 1 };
                    self.mode = Mode::Confirm {
                        scroll: (scroll + step).min(body.len().saturating_sub(1)),
                        title,
                        body,
                        request,
                    };
                }
                KeyCode::Up | KeyCode::Char('k') | KeyCode::PageUp => {
                    let step = if key.code == KeyCode::PageUp { 10 } else { 1 };
                    self.mode = Mode::Confirm {
                        scroll: scroll.saturating_sub(step),
                        title,
                        body,
                        request,
                    };
                }
                _ => {
                    self.mode = Mode::Confirm {
                        title,
                        body,
                        scroll,
                        request,
                    }
                }
            },
        }
    }

    /// Whether action `a` is offered where the user is now.
    pub fn offered(&self, a: &actions::Action) -> bool {
        if self.readonly && a.mutating {
            return false;
        }
        match (a.scope, self.page()) {
            (ActionScope::Everywhere, _) => true,
            (ActionScope::Row, Page::Table(_)) => true,
            (ActionScope::Kinds(ks), Page::Table(t)) => ks.contains(&t.kind.resource),
            (ActionScope::Logs, Page::Logs(_)) => true,
            _ => false,
        }
    }

    fn normal_key(&mut self, key: KeyEvent) {
        let Some(id) = self.keys.action(&key) else {
            if key.code == KeyCode::Char('q') {
                self.back_or_quit();
            }
            return;
        };
        let a = actions::action(id);
        if self.readonly && a.mutating {
            self.error("read-only: changes are disabled (--readonly)");
            return;
        }
        if !self.offered(a) {
            return;
        }
        self.flash = None;
        let rows = self.page_rows.max(1) as isize;
        match id {
            Id::Quit => self.quit = true,
            Id::Help => self.mode = Mode::Help,
            Id::Command => self.mode = Mode::Command(String::new()),
            Id::Filter => {
                let current = match self.page() {
                    Page::Table(t) => t.filter.clone(),
                    Page::Logs(l) => l.search.clone(),
                    Page::Text(_) => String::new(),
                };
                self.mode = Mode::Filter(current);
            }
            Id::Back => self.back(),
            Id::Up => self.move_selection(-1),
            Id::Down => self.move_selection(1),
            Id::PageUp => self.move_selection(-rows),
            Id::PageDown => self.move_selection(rows),
            Id::Top => self.move_selection(-(isize::MAX / 2)),
            Id::Bottom => self.move_selection(isize::MAX / 2),
            Id::Namespace => self.next_namespace(),
            Id::AllNamespaces => {
                self.namespace = None;
                self.notice("all namespaces");
            }
            Id::Enter => self.enter(),
            Id::Describe => self.describe(),
            Id::Yaml => self.yaml(),
            Id::Logs => {
                if let Some((_, pod)) = self.selection() {
                    self.open_logs(&pod, false);
                }
            }
            Id::Previous | Id::Container => {
                if let Page::Logs(l) = self.page() {
                    // The same pod's log again: the other instance, or the next container.
                    let mut names: Vec<String> = self
                        .store
                        .get("pods", &l.namespace, &l.pod)
                        .and_then(|p| at(p, "/spec/containers"))
                        .and_then(Value::as_array)
                        .map(|cs| {
                            cs.iter()
                                .filter_map(|c| c["name"].as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    if names.is_empty() {
                        names.push(l.container.clone());
                    }
                    let (container, previous) = if id == Id::Previous {
                        (l.container.clone(), !l.previous)
                    } else {
                        let i = names.iter().position(|n| *n == l.container).unwrap_or(0);
                        (names[(i + 1) % names.len()].clone(), l.previous)
                    };
                    let pod = json!({"metadata": {"namespace": l.namespace, "name": l.pod},
                        "spec": {"containers": [{"name": container}]}});
                    self.back();
                    self.open_logs(&pod, previous);
                }
            }
            Id::Follow => {
                if let Page::Logs(l) = self.page_mut() {
                    l.follow = !l.follow;
                    l.scroll = l.lines.len().saturating_sub(1);
                }
            }
            Id::Reveal => {
                self.reveal = !self.reveal;
                self.notice(if self.reveal {
                    "secret values shown"
                } else {
                    "secret values hidden"
                });
            }
            Id::History => {
                if let Some((namespace, app)) = self.current_app() {
                    self.pages.push(Page::Table(TablePage {
                        scope: Scope::AppHistory { namespace, app },
                        ..TablePage::new(kinds::by_resource("syncrecords"))
                    }));
                }
            }
            Id::Delete => {
                if let Some((_, v)) = self.selection() {
                    if let Some((kind, ns, name)) = self.target(&v) {
                        self.mode = Mode::Confirm {
                            title: format!("Delete {} {}?", singular(&kind), qualified(&ns, &name)),
                            body: vec![],
                            scroll: 0,
                            request: Request::Delete {
                                kind,
                                namespace: ns,
                                name,
                            },
                        };
                    }
                }
            }
            Id::Scale => {
                if let Some((_, v)) = self.selection() {
                    if let Some((kind, ns, name)) = self.target(&v) {
                        let current = at(&v, "/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1);
                        self.mode = Mode::Input {
                            prompt: format!(
                                "Replicas for {} {}:",
                                singular(&kind),
                                qualified(&ns, &name)
                            ),
                            buffer: current.to_string(),
                            purpose: Purpose::Scale {
                                kind,
                                namespace: ns,
                                name,
                            },
                        };
                    }
                }
            }
            Id::Restart => {
                if let Some((_, v)) = self.selection() {
                    if let Some((kind, ns, name)) = self.target(&v) {
                        self.mode = Mode::Confirm {
                            title: format!(
                                "Restart the pods of {} {} (a rolling restart)?",
                                singular(&kind),
                                qualified(&ns, &name)
                            ),
                            body: vec![],
                            scroll: 0,
                            request: Request::RolloutRestart {
                                kind,
                                namespace: ns,
                                name,
                            },
                        };
                    }
                }
            }
            Id::Sync => {
                if let Some((ns, app)) = self.current_app() {
                    self.send(Request::Sync {
                        namespace: ns,
                        app: app.clone(),
                    });
                    self.notice(format!("sync of {app} requested"));
                }
            }
            Id::Rollback => {
                if let (Some((ns, app)), Some((_, rec))) = (self.current_app(), self.selection()) {
                    let revision = str_at(&rec, "/spec/revision").to_string();
                    self.notice(format!(
                        "preparing the rollback of {app} to {}...",
                        kinds::short_sha(&revision)
                    ));
                    self.outbox.push(Request::PrepareRollback {
                        namespace: ns,
                        app,
                        revision,
                    });
                }
            }
        }
    }

    fn back(&mut self) {
        if let Some(Page::Logs(l)) = self.pages.last() {
            let stream = l.stream;
            self.outbox.push(Request::StopLogs { stream });
        }
        if self.pages.len() > 1 {
            self.pages.pop();
        } else if let Page::Table(t) = self.page_mut() {
            t.filter.clear();
        }
    }

    fn back_or_quit(&mut self) {
        if self.pages.len() > 1 {
            self.back();
        } else {
            self.quit = true;
        }
    }

    fn set_filter(&mut self, f: &str) {
        match self.page_mut() {
            Page::Table(t) => {
                t.filter = f.to_string();
                t.index = 0;
                t.selected = None;
            }
            Page::Logs(l) => {
                l.search = f.to_string();
                if !f.is_empty() {
                    if let Some(i) = l.lines.iter().rposition(|x| x.contains(f)) {
                        l.follow = false;
                        l.scroll = i;
                    }
                }
            }
            Page::Text(_) => {}
        }
    }

    fn run_command(&mut self, cmd: &str) {
        let mut words = cmd.split_whitespace();
        let Some(first) = words.next() else {
            return;
        };
        match first {
            "q" | "quit" | "q!" => self.quit = true,
            "ns" | "namespace" if words.clone().next().is_some() => {
                let ns = words.next().unwrap_or("");
                if ns == "all" || ns == "-A" {
                    self.namespace = None;
                } else {
                    self.namespace = Some(ns.to_string());
                }
                self.notice(format!(
                    "namespace: {}",
                    self.namespace.as_deref().unwrap_or("all")
                ));
            }
            word => match kinds::lookup(word) {
                Some(k) => {
                    self.close_logs();
                    self.pages = vec![Page::Table(TablePage::new(k))];
                }
                None => self.error(format!(
                    "unknown command or kind {word:?} (try :deploy, :po, :svc, :apps, :ns NAME, :q)"
                )),
            },
        }
    }

    fn close_logs(&mut self) {
        let streams: Vec<u64> = self
            .pages
            .iter()
            .filter_map(|p| match p {
                Page::Logs(l) => Some(l.stream),
                _ => None,
            })
            .collect();
        for stream in streams {
            self.outbox.push(Request::StopLogs { stream });
        }
    }

    fn submit(&mut self, buffer: &str, purpose: Purpose) {
        match purpose {
            Purpose::Scale {
                kind,
                namespace,
                name,
            } => match buffer.trim().parse::<i64>() {
                Ok(n) if n >= 0 => {
                    self.send(Request::Scale {
                        kind,
                        namespace,
                        name,
                        replicas: n,
                    });
                }
                _ => self.error(format!(
                    "replicas must be a whole number of 0 or more, not {buffer:?}"
                )),
            },
        }
    }

    fn next_namespace(&mut self) {
        let all = self.store.namespaces();
        let next = match &self.namespace {
            None => all.first().cloned(),
            Some(cur) => {
                let i = all.iter().position(|n| n == cur);
                i.and_then(|i| all.get(i + 1).cloned())
            }
        };
        self.namespace = next;
        self.notice(format!(
            "namespace: {}",
            self.namespace.as_deref().unwrap_or("all")
        ));
    }

    /// The Application the top page is about (its table row, or the history shown).
    fn current_app(&self) -> Option<(String, String)> {
        match self.page() {
            Page::Table(TablePage {
                scope: Scope::AppHistory { namespace, app },
                ..
            })
            | Page::Table(TablePage {
                scope: Scope::AppObjects { namespace, app },
                ..
            }) => Some((namespace.clone(), app.clone())),
            Page::Table(t) if t.kind.resource == "applications" => {
                let (_, a) = self.selection()?;
                Some((
                    str_at(&a, "/metadata/namespace").into(),
                    str_at(&a, "/metadata/name").into(),
                ))
            }
            _ => None,
        }
    }

    /// (kind, namespace, name) of a row: the row's own kind, or the resource an app-objects row names.
    fn target(&self, v: &Value) -> Option<(String, String, String)> {
        let Page::Table(t) = self.page() else {
            return None;
        };
        if matches!(t.scope, Scope::AppObjects { .. }) {
            let kind = resource_of(str_at(v, "/kind"))?;
            return Some((
                kind,
                str_at(v, "/namespace").into(),
                str_at(v, "/name").into(),
            ));
        }
        Some((
            t.kind.resource.to_string(),
            str_at(v, "/metadata/namespace").into(),
            str_at(v, "/metadata/name").into(),
        ))
    }

    /// The live object a row stands for.
    fn live(&self, v: &Value) -> Option<(String, Arc<Value>)> {
        let (kind, ns, name) = self.target(v)?;
        let obj = self.store.get(&kind, &ns, &name)?.clone();
        Some((kind, obj))
    }

    fn enter(&mut self) {
        let Some((_, row)) = self.selection() else {
            return;
        };
        let Page::Table(t) = self.page() else {
            return;
        };
        if t.kind.resource == "syncrecords" {
            if let Some((ns, app)) = self.current_app() {
                let revision = str_at(&row, "/spec/revision").to_string();
                self.preface.insert(
                    format!("commit {}", kinds::short_sha(&revision)),
                    sync_summary(&row),
                );
                self.outbox.push(Request::CommitDiff {
                    namespace: ns,
                    app,
                    revision,
                });
            }
            return;
        }
        let Some((kind, obj)) = self.live(&row) else {
            self.error("that object is not in the cluster (yet)");
            return;
        };
        let ns = str_at(&obj, "/metadata/namespace").to_string();
        let name = str_at(&obj, "/metadata/name").to_string();
        let uid = str_at(&obj, "/metadata/uid").to_string();
        let what = format!("{}/{name}", singular(&kind));
        let page = |k: &str, scope: Scope| {
            Page::Table(TablePage {
                scope,
                ..TablePage::new(kinds::by_resource(k))
            })
        };
        let next = match kind.as_str() {
            "applications" => page(
                "applications",
                Scope::AppObjects {
                    namespace: ns,
                    app: name,
                },
            ),
            "deployments" => page("pods", Scope::DeploymentPods { uid, what }),
            "replicasets" | "statefulsets" | "daemonsets" | "jobs" => {
                page("pods", Scope::OwnedBy { uid, what })
            }
            "cronjobs" => page("jobs", Scope::OwnedBy { uid, what }),
            "services" => {
                let labels: Vec<(String, String)> = at(&obj, "/spec/selector")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                page(
                    "pods",
                    Scope::Selector {
                        namespace: ns,
                        labels,
                        what,
                    },
                )
            }
            "nodes" => page("pods", Scope::Node(name)),
            "namespaces" => {
                self.namespace = Some(name);
                page("pods", Scope::All)
            }
            "pods" => {
                self.open_logs(&obj, false);
                return;
            }
            _ => {
                self.describe();
                return;
            }
        };
        self.pages.push(next);
    }

    fn open_logs(&mut self, pod: &Value, previous: bool) {
        let container = at(pod, "/spec/containers/0/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let stream = self.next_stream;
        self.next_stream += 1;
        let (ns, name) = (
            str_at(pod, "/metadata/namespace").to_string(),
            str_at(pod, "/metadata/name").to_string(),
        );
        self.outbox.push(Request::Logs {
            stream,
            namespace: ns.clone(),
            pod: name.clone(),
            container: container.clone(),
            previous,
        });
        self.pages.push(Page::Logs(LogsPage {
            stream,
            namespace: ns,
            pod: name,
            container,
            previous,
            lines: VecDeque::new(),
            follow: true,
            scroll: 0,
            search: String::new(),
            ended: None,
        }));
    }

    fn describe(&mut self) {
        let Some((_, row)) = self.selection() else {
            return;
        };
        let Some((kind, obj)) = self.live(&row) else {
            return;
        };
        let title = format!(
            "describe {} {}",
            singular(&kind),
            qualified(
                str_at(&obj, "/metadata/namespace"),
                str_at(&obj, "/metadata/name")
            )
        );
        let lines = describe(&obj, &self.store, self.reveal);
        self.pages.push(Page::Text(TextPage {
            title,
            lines,
            scroll: 0,
        }));
    }

    fn yaml(&mut self) {
        let Some((_, row)) = self.selection() else {
            return;
        };
        let Some((kind, obj)) = self.live(&row) else {
            return;
        };
        let mut v = Value::clone(&obj);
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        if kind == "secrets" && !self.reveal {
            mask_secret(&mut v);
        }
        let text = serde_yaml_ng::to_string(&v).unwrap_or_else(|e| format!("cannot show: {e}"));
        self.pages.push(Page::Text(TextPage {
            title: format!(
                "yaml {} {}",
                singular(&kind),
                qualified(
                    str_at(&obj, "/metadata/namespace"),
                    str_at(&obj, "/metadata/name")
                )
            ),
            lines: text.lines().map(String::from).collect(),
            scroll: 0,
        }));
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
