//! What each key does: the input modes (command line, filter, prompts, confirmations) and the actions of normal
//! mode, each of which changes the pages or queues a [`Request`] for the binary to carry out.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{json, Value};

use super::*;
use crate::actions::{self, Id, Scope as ActionScope};

impl App {
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Help => {}
            Mode::Command(buf) => self.command_key(buf, key),
            Mode::Filter(buf) => self.filter_key(buf, key),
            Mode::Input {
                prompt,
                buffer,
                purpose,
            } => self.input_key(prompt, buffer, purpose, key),
            Mode::Confirm {
                title,
                body,
                scroll,
                request,
            } => self.confirm_key(title, body, scroll, request, key),
        }
    }

    /// Typing a `:` command; Enter runs it.
    fn command_key(&mut self, mut buf: String, key: KeyEvent) {
        match key.code {
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
        }
    }

    /// Typing a `/` filter, applied as it is typed; Esc clears it, Enter keeps it.
    fn filter_key(&mut self, mut buf: String, key: KeyEvent) {
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

    /// Answering a prompt (a replica count); Enter submits it.
    fn input_key(&mut self, prompt: String, mut buffer: String, purpose: Purpose, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => return self.submit(&buffer, purpose),
            KeyCode::Esc => return,
            KeyCode::Backspace => {
                buffer.pop();
            }
            KeyCode::Char(c) => buffer.push(c),
            _ => {}
        }
        self.mode = Mode::Input {
            prompt,
            buffer,
            purpose,
        };
    }

    /// A confirmation (with a scrollable body, such as a rollback's diff): y or Enter sends the request.
    fn confirm_key(
        &mut self,
        title: String,
        body: Vec<String>,
        scroll: usize,
        request: Request,
        key: KeyEvent,
    ) {
        let scroll = match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => return self.send(request),
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                return self.notice("cancelled")
            }
            KeyCode::Down | KeyCode::Char('j') | KeyCode::PageDown => {
                let step = if key.code == KeyCode::PageDown { 10 } else { 1 };
                (scroll + step).min(body.len().saturating_sub(1))
            }
            KeyCode::Up | KeyCode::Char('k') | KeyCode::PageUp => {
                let step = if key.code == KeyCode::PageUp { 10 } else { 1 };
                scroll.saturating_sub(step)
            }
            _ => scroll,
        };
        self.mode = Mode::Confirm {
            title,
            body,
            scroll,
            request,
        };
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
            Id::Filter => self.start_filter(),
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
            Id::Previous | Id::Container => self.switch_log(id),
            Id::Follow => {
                if let Page::Logs(l) = self.page_mut() {
                    l.follow = !l.follow;
                    l.scroll = l.lines.len().saturating_sub(1);
                }
            }
            Id::Reveal => self.toggle_reveal(),
            Id::History => self.open_history(),
            Id::Delete => self.confirm_delete(),
            Id::Scale => self.ask_scale(),
            Id::Restart => self.confirm_restart(),
            Id::Sync => self.request_sync(),
            Id::Rollback => self.prepare_rollback(),
        }
    }

    /// Filter mode, starting from the current table filter or log search.
    fn start_filter(&mut self) {
        let current = match self.page() {
            Page::Table(t) => t.filter.clone(),
            Page::Logs(l) => l.search.clone(),
            Page::Text(_) => String::new(),
        };
        self.mode = Mode::Filter(current);
    }

    /// The same pod's log again: the other instance (`Previous`) or the next container (`Container`).
    fn switch_log(&mut self, id: Id) {
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

    /// Shows or hides Secret values.
    fn toggle_reveal(&mut self) {
        self.reveal = !self.reveal;
        self.notice(if self.reveal {
            "secret values shown"
        } else {
            "secret values hidden"
        });
    }

    /// The sync history of the current Application.
    fn open_history(&mut self) {
        if let Some((namespace, app)) = self.current_app() {
            self.pages.push(Page::Table(TablePage {
                scope: Scope::AppHistory { namespace, app },
                ..TablePage::new(kinds::by_resource("syncrecords"))
            }));
        }
    }

    /// Asks before deleting the selected object.
    fn confirm_delete(&mut self) {
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

    /// Prompts for the selected workload's replica count.
    fn ask_scale(&mut self) {
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

    /// Asks before a rolling restart of the selected workload.
    fn confirm_restart(&mut self) {
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

    /// Requests a sync of the current Application.
    fn request_sync(&mut self) {
        if let Some((ns, app)) = self.current_app() {
            self.send(Request::Sync {
                namespace: ns,
                app: app.clone(),
            });
            self.notice(format!("sync of {app} requested"));
        }
    }

    /// Prepares a rollback of the current Application to the selected sync record (the diff comes back to confirm).
    fn prepare_rollback(&mut self) {
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
