//! Capstan's terminal UI (`capstan tui`), in the component pattern of gitui and kdash: [`state`] holds the cluster
//! as watches report it, [`actions`] is the one registry that drives keys, help and hints, [`app`] turns keys into
//! page changes and [`Request`]s, and [`draw`] renders. The crate does no network I/O: the binary feeds it
//! [`Event`]s from its informers and carries out its [`Request`]s, so every view is testable with a `TestBackend`.

pub mod actions;
pub mod app;
pub mod draw;
pub mod kinds;
pub mod state;

use std::io;
use std::path::Path;
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use tokio::sync::mpsc;

pub use app::App;
pub use draw::Theme;
pub use state::{Event, Request};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: keys: {source}")]
    Keys {
        path: String,
        source: actions::KeyError,
    },
}

/// The config file: `keys:` maps action names to keys (`delete: ctrl-x`), `readonly: true` hides changes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub readonly: bool,
}

impl Config {
    /// Reads `path`; a missing file at the default location is an empty config.
    pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !must_exist => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn keymap(&self, path: &Path) -> Result<actions::KeyMap, ConfigError> {
        let overrides: Vec<(String, String)> = self
            .keys
            .iter()
            .map(|(a, k)| (a.clone(), k.clone()))
            .collect();
        actions::KeyMap::defaults()
            .with_overrides(&overrides)
            .map_err(|source| ConfigError::Keys {
                path: path.display().to_string(),
                source,
            })
    }
}

/// Whether the terminal shows colours: not with `NO_COLOR` set or `TERM=dumb`.
pub fn colours_supported() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Runs the TUI on the terminal until the user quits: draws `app`, feeds it `events` and key presses, and hands
/// its requests to `requests`.
pub async fn run(
    mut app: App,
    theme: Theme,
    mut events: mpsc::UnboundedReceiver<Event>,
    requests: mpsc::UnboundedSender<Request>,
) -> io::Result<()> {
    let mut terminal = setup()?;
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = restore();
        prev_hook(info);
    }));
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        if let Err(e) = terminal.draw(|f| draw::draw(f, &mut app, theme)) {
            break Err(e);
        }
        for r in app.take_requests() {
            let _ = requests.send(r);
        }
        if app.quit {
            break Ok(());
        }
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break Ok(()) };
                app.handle_event(ev);
                // Take what else is queued before drawing again: a burst of changes is one frame.
                while let Ok(ev) = events.try_recv() {
                    app.handle_event(ev);
                }
            }
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => app.handle_key(k),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            _ = tick.tick() => {}
        }
    };
    for r in app.take_requests() {
        let _ = requests.send(r);
    }
    restore()?;
    result
}

type Term = ratatui::Terminal<ratatui::backend::CrosstermBackend<io::Stdout>>;

fn setup() -> io::Result<Term> {
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(io::stdout(), crossterm::terminal::EnterAlternateScreen)?;
    ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))
}

fn restore() -> io::Result<()> {
    crossterm::terminal::disable_raw_mode()?;
    crossterm::execute!(
        io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    )
}
