//! The drawing half of the TUI: a header (cluster, namespace, connection), the breadcrumb, the page, a status line
//! (flash message or the input being typed) and the key hints, plus help and confirm overlays. Tables build only
//! their visible rows, so thousands of objects cost one screenful per frame. Without colour support, tones fall back
//! to bold and reverse video.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::actions::ACTIONS;
use crate::app::{select_index, App, Mode, Page, Scope, TablePage};
use crate::kinds::{self, Ctx, Tone};
use crate::state::{at, str_at};

/// Colours on or off (`NO_COLOR`, `TERM=dumb`).
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    fn tone(&self, t: Tone) -> Style {
        if !self.color {
            return match t {
                Tone::Bad => Style::default().add_modifier(Modifier::BOLD),
                _ => Style::default(),
            };
        }
        match t {
            Tone::Plain => Style::default(),
            Tone::Good => Style::default().fg(Color::Green),
            Tone::Busy => Style::default().fg(Color::Yellow),
            Tone::Bad => Style::default().fg(Color::Red),
            Tone::Dim => Style::default().fg(Color::DarkGray),
        }
    }
    fn selected(&self) -> Style {
        if self.color {
            Style::default().bg(Color::Blue).fg(Color::White)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
    fn header(&self) -> Style {
        if self.color {
            Style::default()
                .fg(Color::Cyan)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }
    fn key(&self) -> Style {
        if self.color {
            Style::default().fg(Color::Cyan)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }
}

pub fn draw(f: &mut Frame, app: &mut App, theme: Theme) {
    let area = f.area();
    let [head, crumbs, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    app.page_rows = body.height.saturating_sub(3).max(1) as usize;
    draw_header(f, app, theme, head);
    let crumbs_text = app.breadcrumb().join(" › ");
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw(" "),
            Span::styled(crumbs_text, theme.header()),
        ])),
        crumbs,
    );
    match app.page() {
        Page::Table(t) => draw_table(f, app, t, theme, body),
        Page::Text(t) => {
            let block = Block::default()
                .borders(Borders::ALL)
                .title(format!(" {} ", t.title));
            let lines: Vec<Line> = t
                .lines
                .iter()
                .skip(t.scroll)
                .take(body.height as usize)
                .map(|l| Line::from(diff_span(l, theme)))
                .collect();
            f.render_widget(Paragraph::new(lines).block(block), body);
        }
        Page::Logs(l) => {
            let inner_h = body.height.saturating_sub(2) as usize;
            let start = if l.follow {
                l.lines.len().saturating_sub(inner_h)
            } else {
                l.scroll.min(l.lines.len().saturating_sub(1))
            };
            let lines: Vec<Line> = l
                .lines
                .iter()
                .skip(start)
                .take(inner_h)
                .map(|s| {
                    if !l.search.is_empty() && s.contains(&l.search) {
                        Line::from(Span::styled(s.clone(), theme.selected()))
                    } else {
                        Line::from(s.clone())
                    }
                })
                .collect();
            let mut title = format!(" logs {}/{} [{}]", l.pod, l.container, l.namespace);
            if l.previous {
                title.push_str(" (previous)");
            }
            title.push_str(if l.follow { " following " } else { " paused " });
            if let Some(e) = &l.ended {
                title.push_str(&format!("- {e} "));
            }
            let block = Block::default().borders(Borders::ALL).title(title);
            f.render_widget(Paragraph::new(lines).block(block), body);
        }
    }
    draw_status(f, app, theme, status);
    draw_hints(f, app, theme, hints);
    match &app.mode {
        Mode::Help => draw_help(f, app, theme, area),
        Mode::Confirm {
            title,
            body,
            scroll,
            ..
        } => draw_confirm(f, theme, area, title, body, *scroll),
        _ => {}
    }
}

fn diff_span(l: &str, theme: Theme) -> Span<'_> {
    let tone = if l.starts_with("+++") || l.starts_with("---") {
        Tone::Plain
    } else if l.starts_with('+') {
        Tone::Good
    } else if l.starts_with('-') {
        Tone::Bad
    } else if l.starts_with("@@") {
        Tone::Dim
    } else {
        Tone::Plain
    };
    Span::styled(l, theme.tone(tone))
}

fn draw_header(f: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let ns = app.namespace.as_deref().unwrap_or("all");
    let mut spans = vec![
        Span::styled(" capstan ", theme.header()),
        Span::raw(format!(" {}  ns: {ns}", app.context)),
    ];
    if app.readonly {
        spans.push(Span::styled("  [read-only]", theme.tone(Tone::Busy)));
    }
    match &app.store.disconnected {
        None => spans.push(Span::styled("  ● connected", theme.tone(Tone::Good))),
        Some(why) => spans.push(Span::styled(
            format!("  ✖ disconnected: {why} (retrying)"),
            theme.tone(Tone::Bad),
        )),
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_table(f: &mut Frame, app: &App, t: &TablePage, theme: Theme, area: Rect) {
    let area = if let Scope::AppHistory {
        namespace,
        app: name,
    } = &t.scope
    {
        let [panel, rest] = Layout::vertical([
            Constraint::Length(history_panel_height(app, namespace, name)),
            Constraint::Min(3),
        ])
        .areas(area);
        draw_app_panel(f, app, theme, panel, namespace, name);
        rest
    } else {
        area
    };
    let rows = app.rows(t);
    let selected = select_index(t, &rows);
    let ctx = Ctx::new(&app.store, app.now(), app.reveal);
    let app_objects = matches!(t.scope, Scope::AppObjects { .. });
    let columns: &[kinds::Column] = if app_objects {
        &APP_OBJECT_COLUMNS
    } else {
        t.kind.columns
    };
    let show = fitting_columns(app, t, columns, area.width);
    let height = area.height.saturating_sub(3) as usize;
    let offset = if selected < height {
        0
    } else {
        selected + 1 - height
    };
    let visible: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, v)| {
            let cells: Vec<ratatui::widgets::Cell> = show
                .iter()
                .map(|c| {
                    let cell = (c.cell)(v, &ctx);
                    ratatui::widgets::Cell::from(cell.text).style(theme.tone(cell.tone))
                })
                .collect();
            let row = Row::new(cells);
            if i == selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let widths: Vec<Constraint> = show
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i + 1 == show.len() {
                Constraint::Min(c.width)
            } else {
                Constraint::Length(c.width)
            }
        })
        .collect();
    let mut title = format!(" {}", t.kind.title);
    if app_objects {
        title = " Objects".into();
    }
    title.push_str(&format!(" ({}) ", rows.len()));
    if !t.filter.is_empty() {
        title.push_str(&format!("/{} ", t.filter));
    }
    let header = Row::new(show.iter().map(|c| c.name)).style(theme.header());
    let table = Table::new(visible, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::default().borders(Borders::ALL).title(title));
    f.render_widget(table, area);
    if rows.is_empty() {
        let msg = if app.store.count(t.kind.resource) == 0 && !app_objects {
            "nothing here yet"
        } else {
            "nothing matches"
        };
        draw_empty(f, msg, theme, area);
    }
}

/// A dim note inside an empty table.
fn draw_empty(f: &mut Frame, msg: &str, theme: Theme, area: Rect) {
    let inner = Rect {
        x: area.x + 2,
        y: area.y + 2,
        width: area.width.saturating_sub(4),
        height: 1.min(area.height.saturating_sub(2)),
    };
    f.render_widget(
        Paragraph::new(Span::styled(msg, theme.tone(Tone::Dim))),
        inner,
    );
}

/// The columns a table shows: without NAMESPACE when one namespace is shown, and on narrow terminals without the
/// least telling columns (dropped first, so the rest keep their width).
fn fitting_columns<'c>(
    app: &App,
    t: &TablePage,
    columns: &'c [kinds::Column],
    width: u16,
) -> Vec<&'c kinds::Column> {
    let mut show: Vec<&kinds::Column> = columns
        .iter()
        .filter(|c| {
            !(c.name == "NAMESPACE" && app.namespace.is_some() && matches!(t.scope, Scope::All))
        })
        .collect();
    let avail = width.saturating_sub(2) as usize;
    let need = |cols: &[&kinds::Column]| cols.iter().map(|c| c.width as usize + 1).sum::<usize>();
    for name in DROPPABLE {
        if need(&show) <= avail {
            break;
        }
        show.retain(|c| c.name != *name);
    }
    show
}

/// Columns dropped, in this order, when a table does not fit.
const DROPPABLE: &[&str] = &[
    "REPO",
    "OWNER",
    "CURRENT",
    "UP-TO-DATE",
    "AVAILABLE",
    "EXTERNAL-IP",
    "PRESSURE",
    "DURATION",
    "LAST SCHEDULE",
    "NODE",
    "LAST SYNC",
    "TYPE",
    "REV",
    "AUTHOR",
];

fn app_deployments<'a>(app: &'a App, namespace: &str, name: &str) -> Vec<&'a serde_json::Value> {
    let Some(a) = app.store.get("applications", namespace, name) else {
        return Vec::new();
    };
    at(a, "/status/resources")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "Deployment")
        .filter_map(|r| {
            app.store
                .get("deployments", str_at(r, "/namespace"), str_at(r, "/name"))
        })
        .map(|d| d.as_ref())
        .collect()
}

fn history_panel_height(app: &App, namespace: &str, name: &str) -> u16 {
    3 + app_deployments(app, namespace, name).len().min(4) as u16
}

/// The Application and the rollouts of its Deployments, above its history: a rollback is followed here live.
fn draw_app_panel(f: &mut Frame, app: &App, theme: Theme, area: Rect, namespace: &str, name: &str) {
    let mut lines = Vec::new();
    match app.store.get("applications", namespace, name) {
        Some(a) => {
            let sync = str_at(a, "/status/sync/status");
            let health = str_at(a, "/status/health/status");
            let finished = str_at(a, "/status/operationState/finishedAt");
            lines.push(Line::from(vec![
                Span::styled(format!("{name} "), theme.header()),
                Span::styled(
                    format!("{} ", if sync.is_empty() { "-" } else { sync }),
                    theme.tone(if sync == "Synced" {
                        Tone::Good
                    } else {
                        Tone::Busy
                    }),
                ),
                Span::styled(
                    format!("{} ", if health.is_empty() { "-" } else { health }),
                    theme.tone(kinds::health_tone(health)),
                ),
                Span::raw(format!(
                    "at {}  last sync {}  {}",
                    kinds::short_sha(str_at(a, "/status/sync/revision")),
                    if finished.is_empty() {
                        "-".to_string()
                    } else {
                        kinds::age(finished, app.now())
                    },
                    str_at(a, "/status/operationState/message")
                )),
            ]));
        }
        None => lines.push(Line::from(format!("{name}: not found"))),
    }
    for d in app_deployments(app, namespace, name).into_iter().take(4) {
        let int = |p: &str| at(d, p).and_then(serde_json::Value::as_i64).unwrap_or(0);
        let want = int("/spec/replicas");
        let updated = int("/status/updatedReplicas");
        let ready = int("/status/readyReplicas");
        let available = int("/status/availableReplicas");
        let done = updated.min(available);
        let tone = if done >= want && int("/status/replicas") <= want {
            Tone::Good
        } else {
            Tone::Busy
        };
        lines.push(Line::from(vec![
            Span::raw(format!("deploy/{:<16} ", str_at(d, "/metadata/name"))),
            Span::styled(kinds::bar(done, want, 20), theme.tone(tone)),
            Span::raw(format!(
                " {updated}/{want} updated  {ready} ready  {available} available  rev {}",
                kinds::deployment_revision(&app.store, d)
            )),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Application "),
        ),
        area,
    );
}

fn draw_status(f: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let line = match &app.mode {
        Mode::Command(b) => Line::from(vec![
            Span::styled(":", theme.key()),
            Span::raw(format!("{b}█")),
        ]),
        Mode::Filter(b) => Line::from(vec![
            Span::styled("/", theme.key()),
            Span::raw(format!("{b}█")),
        ]),
        Mode::Input { prompt, buffer, .. } => Line::from(vec![
            Span::styled(format!("{prompt} "), theme.key()),
            Span::raw(format!("{buffer}█  (enter to apply, esc to cancel)")),
        ]),
        _ => match &app.flash {
            Some(fl) => Line::from(Span::styled(
                format!(" {}", fl.text),
                theme.tone(if fl.error { Tone::Bad } else { Tone::Good }),
            )),
            None => Line::from(""),
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_hints(f: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let mut spans = Vec::new();
    let mut used = 0usize;
    for a in ACTIONS.iter().filter(|a| a.hint && app.offered(a)) {
        let Some(k) = app.keys.key(a.id) else {
            continue;
        };
        let k = k.to_string();
        let w = k.chars().count() + a.label.chars().count() + 3;
        if used + w > area.width as usize {
            break;
        }
        used += w;
        spans.push(Span::styled(format!(" {k}"), theme.key()));
        spans.push(Span::raw(format!(" {} ", a.label)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn draw_help(f: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let mut lines = vec![Line::from(Span::styled(
        "Keys (rebind in the config file by action name)",
        theme.header(),
    ))];
    for a in ACTIONS.iter().filter(|a| !(app.readonly && a.mutating)) {
        let k = app
            .keys
            .key(a.id)
            .map(|k| k.to_string())
            .unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled(format!("{k:>7} "), theme.key()),
            Span::raw(format!("{:<15}", a.name)),
            Span::raw(a.help),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Kinds: :apps :deploy :rs :po :svc :no :ev :job :cj :sts :ds :cm :secret :ns   any key closes",
        theme.tone(Tone::Dim),
    )));
    let r = centered(area, 96, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Help ")),
        r,
    );
}

fn draw_confirm(
    f: &mut Frame,
    theme: Theme,
    area: Rect,
    title: &str,
    body: &[String],
    scroll: usize,
) {
    let h = (body.len() as u16 + 4).clamp(5, area.height.saturating_sub(2));
    let r = centered(area, area.width.saturating_sub(4).min(110), h);
    let mut lines: Vec<Line> = vec![Line::from(Span::styled(title, theme.header()))];
    lines.extend(
        body.iter()
            .skip(scroll)
            .take(h.saturating_sub(4) as usize)
            .map(|l| Line::from(diff_span(l, theme))),
    );
    lines.push(Line::from(vec![
        Span::styled(" y", theme.key()),
        Span::raw(" confirm  "),
        Span::styled("n", theme.key()),
        Span::raw(" cancel  "),
        Span::styled("↑↓", theme.key()),
        Span::raw(" scroll"),
    ]));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" Confirm ")),
        r,
    );
}

fn ao_kind(v: &serde_json::Value, _: &Ctx) -> kinds::Cell {
    kinds::Cell::plain(str_at(v, "/kind"))
}
fn ao_ns(v: &serde_json::Value, _: &Ctx) -> kinds::Cell {
    kinds::Cell::plain(str_at(v, "/namespace"))
}
fn ao_name(v: &serde_json::Value, _: &Ctx) -> kinds::Cell {
    kinds::Cell::plain(str_at(v, "/name"))
}
fn ao_status(v: &serde_json::Value, _: &Ctx) -> kinds::Cell {
    let s = str_at(v, "/status");
    kinds::Cell {
        text: s.to_string(),
        tone: if s == "Synced" {
            Tone::Good
        } else {
            Tone::Busy
        },
    }
}
fn ao_health(v: &serde_json::Value, _: &Ctx) -> kinds::Cell {
    let h = str_at(v, "/health/status");
    kinds::Cell {
        text: if h.is_empty() { "-".into() } else { h.into() },
        tone: kinds::health_tone(h),
    }
}
fn ao_live(v: &serde_json::Value, c: &Ctx) -> kinds::Cell {
    // A one-line live summary from the object itself.
    let kind = str_at(v, "/kind");
    let obj = kinds::KINDS
        .iter()
        .find(|k| k.aliases.iter().any(|a| *a == kind.to_lowercase()))
        .and_then(|k| {
            c.store
                .get(k.resource, str_at(v, "/namespace"), str_at(v, "/name"))
        });
    let Some(o) = obj else {
        return kinds::Cell::plain("");
    };
    let int = |p: &str| at(o, p).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let text = match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            format!(
                "{}/{} ready",
                int("/status/readyReplicas"),
                int("/spec/replicas")
            )
        }
        "Service" => str_at(o, "/spec/clusterIP").to_string(),
        "CronJob" => str_at(o, "/spec/schedule").to_string(),
        _ => String::new(),
    };
    kinds::Cell::plain(text)
}

static APP_OBJECT_COLUMNS: [kinds::Column; 6] = [
    kinds::Column {
        name: "KIND",
        width: 12,
        cell: ao_kind,
    },
    kinds::Column {
        name: "NAMESPACE",
        width: 10,
        cell: ao_ns,
    },
    kinds::Column {
        name: "NAME",
        width: 20,
        cell: ao_name,
    },
    kinds::Column {
        name: "SYNC",
        width: 10,
        cell: ao_status,
    },
    kinds::Column {
        name: "HEALTH",
        width: 11,
        cell: ao_health,
    },
    kinds::Column {
        name: "LIVE",
        width: 14,
        cell: ao_live,
    },
];
