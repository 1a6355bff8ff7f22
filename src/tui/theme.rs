//! Colours. Only the 16 named ANSI colours are used, so any terminal shows them; NO_COLOR
//! (any value) turns colour off entirely.

use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    pub fn plain() -> Theme {
        Theme { color: false }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    pub fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn dim(&self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    pub fn header(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }

    pub fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    pub fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    /// A chart's planned line (a warm-up's cap).
    pub fn chart_plan(&self) -> Style {
        self.fg(Color::Cyan)
    }

    pub fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// An alert's or listing's severity: high as an error, medium as a warning, low plain.
    pub fn severity(&self, s: &str) -> Style {
        match s {
            "high" => self.error(),
            "medium" => self.warn(),
            _ => Style::default(),
        }
    }

    /// A node status or request state, coloured by how worried to be. Only what delivered
    /// its service is green: a rolled-back request ended without one (magenta), a
    /// deprovisioned one is over, as asked (grey).
    pub fn status(&self, s: &str) -> Style {
        let c = match s {
            "active" | "completed" | "done" => Color::Green,
            "rolled_back" => Color::Magenta,
            "warming" | "allocating" | "configuring" | "activating" | "verifying" | "running"
            | "provisioning" => Color::Cyan,
            "queued" | "pending_approval" | "awaiting_input" | "maintenance" | "suspended"
            | "pending" | "open" => Color::Yellow,
            "paused" | "unhealthy" | "failed" | "rolling_back" | "rejected" | "listed" => {
                Color::Red
            }
            "decommissioned" | "resolved" | "deprovisioned" => Color::DarkGray,
            _ => Color::Reset,
        };
        self.fg(c)
    }
}

#[cfg(test)]
mod tests {
    use super::Theme;
    use ratatui::style::Color;

    #[test]
    fn a_rolled_back_request_is_not_drawn_as_a_completed_one() {
        let th = Theme { color: true };
        let fg = |s: &str| th.status(s).fg;
        assert_eq!(fg("completed"), Some(Color::Green));
        assert_ne!(fg("rolled_back"), fg("completed"));
        assert_ne!(fg("rolled_back"), fg("failed"));
        assert_ne!(fg("deprovisioned"), fg("completed"));
        assert!(fg("rolled_back").is_some() && fg("deprovisioned").is_some());
        assert_eq!(Theme::plain().status("rolled_back").fg, None);
    }
}
