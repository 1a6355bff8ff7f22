//! Keys → Actions. One table: the footer hints and the `?` help are generated from it, and
//! `[keys]` in the config remaps it.

use super::action::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

impl Key {
    pub fn from_event(e: &KeyEvent) -> Key {
        // Shift+letter arrives as the upper-case letter, so Shift itself is not kept.
        Key {
            code: e.code,
            ctrl: e.modifiers.contains(KeyModifiers::CONTROL),
        }
    }

    /// Parses "q", "G", "enter", "esc", "tab", "backtab", "space", "up", "pgdn", "ctrl-r", "f1".
    pub fn parse(s: &str) -> Option<Key> {
        let (ctrl, rest) = match s.strip_prefix("ctrl-") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let code = match rest {
            "enter" => KeyCode::Enter,
            "esc" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "space" => KeyCode::Char(' '),
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pgup" => KeyCode::PageUp,
            "pgdn" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            f if f.starts_with('f') && f.len() > 1 => KeyCode::F(f[1..].parse().ok()?),
            c if c.chars().count() == 1 => KeyCode::Char(c.chars().next()?),
            _ => return None,
        };
        Some(Key { code, ctrl })
    }

    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Enter => "enter".to_string(),
            KeyCode::Esc => "esc".to_string(),
            KeyCode::Tab => "tab".to_string(),
            KeyCode::BackTab => "S-tab".to_string(),
            KeyCode::Char(' ') => "space".to_string(),
            KeyCode::Up => "↑".to_string(),
            KeyCode::Down => "↓".to_string(),
            KeyCode::Left => "←".to_string(),
            KeyCode::Right => "→".to_string(),
            KeyCode::PageUp => "pgup".to_string(),
            KeyCode::PageDown => "pgdn".to_string(),
            KeyCode::Home => "home".to_string(),
            KeyCode::End => "end".to_string(),
            KeyCode::F(n) => format!("f{n}"),
            KeyCode::Char(c) => c.to_string(),
            _ => "?".to_string(),
        };
        if self.ctrl {
            format!("ctrl-{base}")
        } else {
            base
        }
    }
}

/// The built-in bindings, in the order help lists them. Scrolling keys (ctrl-d, ctrl-u…)
/// are deliberately not bound to anything destructive.
pub const DEFAULT_BINDINGS: &[(&str, Action)] = &[
    ("q", Action::Quit),
    ("?", Action::Help),
    ("1", Action::ShowFleet),
    ("2", Action::ShowRequests),
    ("3", Action::ShowApprovals),
    ("4", Action::ShowBlacklist),
    ("5", Action::ShowWarmup),
    ("6", Action::ShowEvents),
    ("7", Action::ShowPipeline),
    ("8", Action::ShowAlerts),
    ("0", Action::ShowTriage),
    ("tab", Action::NextView),
    ("backtab", Action::PrevView),
    (":", Action::CommandLine),
    ("k", Action::Up),
    ("up", Action::Up),
    ("j", Action::Down),
    ("down", Action::Down),
    ("pgup", Action::PageUp),
    ("ctrl-u", Action::PageUp),
    ("pgdn", Action::PageDown),
    ("ctrl-d", Action::PageDown),
    ("g", Action::Top),
    ("home", Action::Top),
    ("G", Action::Bottom),
    ("end", Action::Bottom),
    ("h", Action::Left),
    ("left", Action::Left),
    ("l", Action::Right),
    ("right", Action::Right),
    ("enter", Action::Open),
    ("esc", Action::Back),
    ("/", Action::Filter),
    ("<", Action::SortPrev),
    (">", Action::SortNext),
    ("=", Action::SortReverse),
    ("space", Action::Mark),
    ("V", Action::MarkAll),
    ("ctrl-a", Action::MarkAll),
    ("p", Action::Provision),
    ("a", Action::Approve),
    ("x", Action::Reject),
    ("s", Action::Suspend),
    ("u", Action::Reactivate),
    ("R", Action::Rollback),
    ("i", Action::Provide),
    // Node keys: global like every binding, acting on the selected row's node in the views
    // that list nodes (see `View::lists_nodes`); elsewhere they say where to use them.
    ("c", Action::CheckNode),
    ("P", Action::PauseNode),
    ("U", Action::ResumeNode),
    ("A", Action::AckAlert),
    ("S", Action::SilenceAlert),
    ("r", Action::OpenRequest),
    ("f", Action::Follow),
    ("M", Action::ToggleMouse),
];

/// The footer of the Approvals view: what clearing the queue takes.
pub const APPROVALS_FOOTER: &[Action] = &[
    Action::Help,
    Action::Filter,
    Action::Open,
    Action::Mark,
    Action::MarkAll,
    Action::Approve,
    Action::Reject,
    Action::Quit,
];

/// The footer of the Blacklist and Alerts views: looking into a listing and acting on its
/// node.
pub const REPUTATION_FOOTER: &[Action] = &[
    Action::Help,
    Action::Filter,
    Action::Open,
    Action::CheckNode,
    Action::PauseNode,
    Action::ResumeNode,
    Action::Quit,
];

/// The footer of the Warm-up view: looking into a warm-up and stopping or restarting it
/// (the views footer adds the `:warmup` commands).
pub const WARMUP_FOOTER: &[Action] = &[
    Action::Help,
    Action::Filter,
    Action::Open,
    Action::Mark,
    Action::PauseNode,
    Action::ResumeNode,
    Action::Quit,
];

/// The footer of the Alerts view: owning an alert, and acting on its node.
pub const ALERTS_FOOTER: &[Action] = &[
    Action::Help,
    Action::Filter,
    Action::Open,
    Action::AckAlert,
    Action::SilenceAlert,
    Action::PauseNode,
    Action::ResumeNode,
    Action::Quit,
];

/// The footer of the Triage view: looking into what is broken, and owning it.
pub const TRIAGE_FOOTER: &[Action] = &[
    Action::Help,
    Action::Filter,
    Action::Open,
    Action::AckAlert,
    Action::SilenceAlert,
    Action::PauseNode,
    Action::ResumeNode,
    Action::Quit,
];

/// The footer shows these, in this order, when they are bound.
pub const FOOTER: &[Action] = &[
    Action::Help,
    Action::CommandLine,
    Action::Filter,
    Action::Open,
    Action::Provision,
    Action::Approve,
    Action::Reject,
    Action::Suspend,
    Action::Reactivate,
    Action::Rollback,
    Action::Mark,
    Action::Quit,
];

#[derive(Debug, Clone)]
pub struct Keymap {
    bindings: HashMap<Key, Action>,
}

impl Keymap {
    /// The defaults with the config's `[keys]` laid over them: `"ctrl-r" = "rollback"`
    /// binds, `"x" = "none"` unbinds.
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Keymap, String> {
        let mut bindings = HashMap::new();
        for (k, a) in DEFAULT_BINDINGS {
            if let Some(key) = Key::parse(k) {
                bindings.insert(key, *a);
            }
        }
        for (k, a) in overrides {
            let key = Key::parse(k).ok_or_else(|| {
                format!("keys.{k}: not a key (examples: \"q\", \"ctrl-r\", \"enter\", \"f2\")")
            })?;
            if a == "none" {
                bindings.remove(&key);
                continue;
            }
            let action: Action = serde_json::from_value(serde_json::Value::String(a.clone()))
                .map_err(|_| {
                    format!("keys.{k}: unknown action {a:?} (see ? in the console for their names)")
                })?;
            bindings.insert(key, action);
        }
        Ok(Keymap { bindings })
    }

    pub fn action(&self, key: &Key) -> Option<Action> {
        self.bindings.get(key).copied()
    }

    /// Whether a plain key (no ctrl) is bound to something.
    pub fn is_bound(&self, c: char) -> bool {
        self.bindings.contains_key(&Key {
            code: KeyCode::Char(c),
            ctrl: false,
        })
    }

    /// The action for a key in a view: its binding, or else, for an unbound Shift+letter,
    /// sorting by the column that letter names.
    pub fn action_in(&self, key: &Key, view: super::action::View) -> Option<Action> {
        if let Some(a) = self.action(key) {
            return Some(a);
        }
        match key.code {
            KeyCode::Char(c) if c.is_ascii_uppercase() && !key.ctrl => {
                super::table::sort_letters(view, |ch| self.is_bound(ch))
                    .iter()
                    .position(|l| *l == Some(c))
                    .map(Action::SortBy)
            }
            _ => None,
        }
    }

    /// Every key bound to `action`, in a stable order.
    pub fn keys_for(&self, action: Action) -> Vec<Key> {
        // Default-table order first (so the footer shows the usual key), then the rest.
        let mut keys: Vec<Key> = DEFAULT_BINDINGS
            .iter()
            .filter_map(|(k, _)| Key::parse(k))
            .filter(|k| self.bindings.get(k) == Some(&action))
            .collect();
        let mut extra: Vec<Key> = self
            .bindings
            .iter()
            .filter(|(k, a)| **a == action && !keys.contains(k))
            .map(|(k, _)| *k)
            .collect();
        extra.sort_by_key(Key::label);
        keys.extend(extra);
        keys
    }

    /// (keys, action) for every bound action, in the order of the default table.
    pub fn help_rows(&self) -> Vec<(String, Action)> {
        let mut seen = Vec::new();
        let mut order: Vec<Action> = DEFAULT_BINDINGS.iter().map(|(_, a)| *a).collect();
        order.extend(self.bindings.values().copied());
        let mut rows = Vec::new();
        for a in order {
            if seen.contains(&a) {
                continue;
            }
            seen.push(a);
            let keys = self.keys_for(a);
            if !keys.is_empty() {
                rows.push((keys.iter().map(Key::label).collect::<Vec<_>>().join(" "), a));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_rebind_and_unbind() {
        let mut o = BTreeMap::new();
        o.insert("ctrl-r".to_string(), "rollback".to_string());
        o.insert("R".to_string(), "none".to_string());
        let km = Keymap::new(&o).expect("valid");
        assert_eq!(
            km.action(&Key::parse("ctrl-r").expect("key")),
            Some(Action::Rollback)
        );
        assert_eq!(km.action(&Key::parse("R").expect("key")), None);
        let help = km.help_rows();
        assert!(help
            .iter()
            .any(|(k, a)| k == "ctrl-r" && *a == Action::Rollback));
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let mut o = BTreeMap::new();
        o.insert("q".to_string(), "explode".to_string());
        assert!(Keymap::new(&o).expect_err("bad").contains("keys.q"));
    }

    #[test]
    fn no_scrolling_key_is_destructive() {
        let km = Keymap::new(&BTreeMap::new()).expect("defaults");
        for k in [
            "ctrl-d", "ctrl-u", "pgdn", "pgup", "j", "k", "space", "g", "G",
        ] {
            let a = km.action(&Key::parse(k).expect("key"));
            assert!(a.is_none_or(|a| !a.mutates()), "{k} is bound to {a:?}");
        }
    }
}
