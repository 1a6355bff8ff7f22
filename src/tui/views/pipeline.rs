//! The request state machine as a diagram: a box per state with its live count, arrows for
//! the moves between them; ←/→ select a box and the list below shows its requests.

use super::table as list;
use crate::domain::RequestState as S;
use crate::tui::action::View;
use crate::tui::app::{App, PIPELINE};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

/// The diagram's rows, left to right, with the arrow drawn after each box.
const ROWS: [&[(S, &str)]; 4] = [
    &[
        (S::PendingApproval, " ⇄ "),
        (S::Queued, " → "),
        (S::Rejected, ""),
    ],
    &[
        (S::Allocating, " → "),
        (S::Configuring, " → "),
        (S::Activating, " → "),
        (S::Verifying, " → "),
        (S::Completed, " ⇄ "),
        (S::Suspended, ""),
    ],
    &[
        (S::AwaitingInput, " ↑ "),
        (S::Failed, " → "),
        (S::RollingBack, " → "),
        (S::RolledBack, ""),
    ],
    &[(S::Deprovisioned, "  ← completed/suspended via rolling_back")],
];

pub fn draw(f: &mut Frame, app: &mut App, area: Rect) {
    let th = app.theme;
    let diagram_h = (ROWS.len() as u16) * 2 + 3;
    let [top, bottom] = Layout::vertical([
        Constraint::Length(diagram_h.min(area.height)),
        Constraint::Min(3),
    ])
    .areas(area);
    let counts = app.counts.states;
    let selected = PIPELINE[app.pipeline_state.min(PIPELINE.len() - 1)];
    let mut lines = vec![Line::from(Span::styled(" queued → (approval) → allocating → … → completed; any step → failed → rolling_back → rolled_back", th.dim()))];
    for row in ROWS {
        let mut spans = vec![Span::raw(" ")];
        for (state, arrow) in row {
            let i = PIPELINE.iter().position(|s| s == state).unwrap_or(0);
            let text = format!("[ {} {} ]", state.as_str(), counts[i]);
            let mut style = th.status(state.as_str());
            if *state == selected {
                style = style.add_modifier(Modifier::REVERSED | Modifier::BOLD);
            }
            spans.push(Span::styled(text, style));
            spans.push(Span::styled(*arrow, th.dim()));
        }
        lines.push(Line::from(spans));
        lines.push(Line::from(""));
    }
    let title = Span::styled(" Pipeline (←/→ select a state) ", th.title());
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        top,
    );
    list::draw(f, app, View::Pipeline, bottom);
}
