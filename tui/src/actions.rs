//! The one registry of actions: each has an id, a default key, a label for the key-hint bar, a line of help, whether
//! it changes anything (hidden with `--readonly`) and where it applies. Keys, the help screen and the hint bar are
//! all derived from it; a config file rebinds keys by action id.

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Id {
    Quit,
    Help,
    Command,
    Filter,
    Back,
    Enter,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Namespace,
    AllNamespaces,
    Describe,
    Yaml,
    Logs,
    Previous,
    Container,
    Follow,
    Reveal,
    History,
    Delete,
    Scale,
    Restart,
    Sync,
    Rollback,
}

/// Where an action makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everywhere,
    /// On a table's selected row of any kind.
    Row,
    /// Only on tables of these kinds (resource names).
    Kinds(&'static [&'static str]),
    /// Only on the logs page.
    Logs,
}

pub struct Action {
    pub id: Id,
    /// The config file's name for it.
    pub name: &'static str,
    pub key: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub mutating: bool,
    pub scope: Scope,
    /// Shown in the hint bar (the rest only in help).
    pub hint: bool,
}

macro_rules! action {
    ($id:ident, $name:expr, $key:expr, $label:expr, $help:expr, $mutating:expr, $scope:expr, $hint:expr) => {
        Action {
            id: Id::$id,
            name: $name,
            key: $key,
            label: $label,
            help: $help,
            mutating: $mutating,
            scope: $scope,
            hint: $hint,
        }
    };
}

const SCALABLE: &[&str] = &["deployments", "replicasets", "statefulsets"];
const RESTARTABLE: &[&str] = &["deployments", "statefulsets", "daemonsets"];

pub static ACTIONS: &[Action] = &[
    action!(
        Enter,
        "enter",
        "enter",
        "open",
        "Drill down: app -> objects -> pods -> logs; a commit -> its diff",
        false,
        Scope::Row,
        true
    ),
    action!(
        Back,
        "back",
        "esc",
        "back",
        "Back along the breadcrumb (or leave an input)",
        false,
        Scope::Everywhere,
        true
    ),
    action!(
        Command,
        "command",
        ":",
        "cmd",
        "Command mode: a kind or short name (:deploy, :po, :apps), :ns NAME, :q",
        false,
        Scope::Everywhere,
        true
    ),
    action!(
        Filter,
        "filter",
        "/",
        "filter",
        "Filter rows (or search a log)",
        false,
        Scope::Everywhere,
        true
    ),
    action!(
        Help,
        "help",
        "?",
        "help",
        "This help",
        false,
        Scope::Everywhere,
        true
    ),
    action!(
        Quit,
        "quit",
        "ctrl-c",
        "quit",
        "Quit",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        Up,
        "up",
        "up",
        "up",
        "Move up",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        Down,
        "down",
        "down",
        "down",
        "Move down",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        PageUp,
        "page-up",
        "pageup",
        "pgup",
        "Page up",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        PageDown,
        "page-down",
        "pagedown",
        "pgdn",
        "Page down",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        Top,
        "top",
        "g",
        "top",
        "First row",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        Bottom,
        "bottom",
        "G",
        "bottom",
        "Last row",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        Namespace,
        "namespace",
        "n",
        "ns",
        "Next namespace",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        AllNamespaces,
        "all-namespaces",
        "0",
        "all ns",
        "All namespaces",
        false,
        Scope::Everywhere,
        false
    ),
    action!(
        History,
        "history",
        "h",
        "history",
        "The Application's git history",
        false,
        Scope::Kinds(&["applications"]),
        true
    ),
    action!(
        Describe,
        "describe",
        "d",
        "describe",
        "Describe the selected object, with its events",
        false,
        Scope::Row,
        true
    ),
    action!(
        Yaml,
        "yaml",
        "y",
        "yaml",
        "The selected object as YAML",
        false,
        Scope::Row,
        true
    ),
    action!(
        Logs,
        "logs",
        "l",
        "logs",
        "Logs of the selected pod",
        false,
        Scope::Kinds(&["pods"]),
        true
    ),
    action!(
        Previous,
        "previous",
        "p",
        "previous",
        "Logs of the previous container instance",
        false,
        Scope::Logs,
        true
    ),
    action!(
        Container,
        "container",
        "c",
        "container",
        "Logs of the pod's next container",
        false,
        Scope::Logs,
        true
    ),
    action!(
        Follow,
        "follow",
        "f",
        "follow",
        "Follow the log's end (on/off)",
        false,
        Scope::Logs,
        true
    ),
    action!(
        Reveal,
        "reveal",
        "x",
        "reveal",
        "Show or hide Secret values",
        false,
        Scope::Kinds(&["secrets"]),
        true
    ),
    action!(
        Sync,
        "sync",
        "S",
        "sync now",
        "Sync the Application now",
        true,
        Scope::Kinds(&["applications", "syncrecords"]),
        true
    ),
    action!(
        Rollback,
        "rollback",
        "R",
        "rollback",
        "Roll back to the selected commit (a revert commit)",
        true,
        Scope::Kinds(&["syncrecords"]),
        true
    ),
    action!(
        Scale,
        "scale",
        "s",
        "scale",
        "Scale to a number of replicas",
        true,
        Scope::Kinds(SCALABLE),
        true
    ),
    action!(
        Restart,
        "restart",
        "r",
        "restart",
        "Rollout restart",
        true,
        Scope::Kinds(RESTARTABLE),
        true
    ),
    action!(
        Delete,
        "delete",
        "ctrl-d",
        "delete",
        "Delete the selected object (asks first)",
        true,
        Scope::Row,
        true
    ),
];

pub fn action(id: Id) -> &'static Action {
    ACTIONS
        .iter()
        .find(|a| a.id == id)
        .expect("every id is registered")
}

/// A key as written in the config file and shown in hints: `enter`, `esc`, `ctrl-d`, `R`, `:`, `f5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeyError {
    #[error("unknown key {0:?} (use a character, ctrl-X, enter, esc, tab, up, down, pageup, pagedown, home, end, f1-f12)")]
    Unknown(String),
    #[error("unknown action {0:?}; actions: {1}")]
    UnknownAction(String, String),
}

impl Key {
    pub fn parse(s: &str) -> Result<Key, KeyError> {
        let unknown = || KeyError::Unknown(s.to_string());
        let (ctrl, rest) = match s.strip_prefix("ctrl-") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let code = match rest.to_lowercase().as_str() {
            "enter" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pageup" => KeyCode::PageUp,
            "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "space" => KeyCode::Char(' '),
            f if f.len() > 1 && f.starts_with('f') => {
                KeyCode::F(f[1..].parse().map_err(|_| unknown())?)
            }
            _ => {
                let mut chars = rest.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => KeyCode::Char(if ctrl { c.to_ascii_lowercase() } else { c }),
                    _ => return Err(unknown()),
                }
            }
        };
        Ok(Key { code, ctrl })
    }

    pub fn from_event(e: &KeyEvent) -> Key {
        Key {
            code: e.code,
            ctrl: e.modifiers.contains(KeyModifiers::CONTROL),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ctrl {
            write!(f, "^")?;
        }
        match self.code {
            KeyCode::Enter => write!(f, "⏎"),
            KeyCode::Esc => write!(f, "esc"),
            KeyCode::Tab => write!(f, "tab"),
            KeyCode::Up => write!(f, "↑"),
            KeyCode::Down => write!(f, "↓"),
            KeyCode::PageUp => write!(f, "pgup"),
            KeyCode::PageDown => write!(f, "pgdn"),
            KeyCode::F(n) => write!(f, "f{n}"),
            KeyCode::Char(' ') => write!(f, "space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            _ => write!(f, "?"),
        }
    }
}

/// Keys to actions: the defaults, then the config file's overrides.
#[derive(Clone)]
pub struct KeyMap {
    keys: HashMap<Key, Id>,
    by_action: HashMap<Id, Key>,
}

impl KeyMap {
    pub fn defaults() -> KeyMap {
        let mut m = KeyMap {
            keys: HashMap::new(),
            by_action: HashMap::new(),
        };
        for a in ACTIONS {
            m.bind(a.id, Key::parse(a.key).expect("default keys parse"));
        }
        // Familiar extras that are not rebindable: vi movement and q.
        for (k, id) in [
            ("k", Id::Up),
            ("j", Id::Down),
            ("home", Id::Top),
            ("end", Id::Bottom),
        ] {
            m.keys.entry(Key::parse(k).unwrap()).or_insert(id);
        }
        m
    }

    fn bind(&mut self, id: Id, key: Key) {
        if let Some(old) = self.by_action.insert(id, key) {
            self.keys.remove(&old);
        }
        self.keys.insert(key, id);
    }

    /// Applies `action-name: key` overrides (the config file's `keys:` map).
    pub fn with_overrides(mut self, overrides: &[(String, String)]) -> Result<KeyMap, KeyError> {
        for (name, key) in overrides {
            let a = ACTIONS.iter().find(|a| a.name == name).ok_or_else(|| {
                KeyError::UnknownAction(
                    name.clone(),
                    ACTIONS
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
            self.bind(a.id, Key::parse(key)?);
        }
        Ok(self)
    }

    pub fn action(&self, e: &KeyEvent) -> Option<Id> {
        self.keys.get(&Key::from_event(e)).copied()
    }

    pub fn key(&self, id: Id) -> Option<Key> {
        self.by_action.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn defaults_map_keys_to_actions_and_overrides_rebind_them() {
        let m = KeyMap::defaults();
        assert_eq!(
            m.action(&ev(KeyCode::Char('d'), KeyModifiers::CONTROL)),
            Some(Id::Delete)
        );
        assert_eq!(
            m.action(&ev(KeyCode::Char('j'), KeyModifiers::NONE)),
            Some(Id::Down)
        );
        let m = m
            .with_overrides(&[
                ("delete".into(), "ctrl-x".into()),
                ("logs".into(), "L".into()),
            ])
            .unwrap();
        assert_eq!(
            m.action(&ev(KeyCode::Char('d'), KeyModifiers::CONTROL)),
            None
        );
        assert_eq!(
            m.action(&ev(KeyCode::Char('x'), KeyModifiers::CONTROL)),
            Some(Id::Delete)
        );
        assert_eq!(
            m.action(&ev(KeyCode::Char('L'), KeyModifiers::SHIFT)),
            Some(Id::Logs)
        );
        assert_eq!(m.key(Id::Delete).unwrap().to_string(), "^x");
        assert!(matches!(
            KeyMap::defaults().with_overrides(&[("explode".into(), "e".into())]),
            Err(KeyError::UnknownAction(..))
        ));
        assert!(matches!(Key::parse("ctrl-"), Err(KeyError::Unknown(_))));
    }

    #[test]
    fn every_action_has_a_distinct_default_key() {
        let mut seen = std::collections::HashSet::new();
        for a in ACTIONS {
            assert!(
                seen.insert(Key::parse(a.key).unwrap()),
                "{} shares its key",
                a.name
            );
        }
    }
}
