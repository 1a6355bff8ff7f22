//! The Triage view: what is broken (a table), and below it the last hour, newest first.

use crate::domain::ids::short;
use crate::domain::validate::sanitize;
use crate::tui::action::View;
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

/// Below this height the table keeps the whole body: what is broken comes first.
const MIN_HEIGHT_FOR_TIMELINE: u16 = 16;

pub fn draw(f: &mut Frame, app: &mut App, area: Rect) {
    if area.height < MIN_HEIGHT_FOR_TIMELINE {
        super::table::draw(f, app, View::Triage, area);
        return;
    }
    let [list, recent] =
        Layout::vertical([Constraint::Percentage(65), Constraint::Percentage(35)]).areas(area);
    super::table::draw(f, app, View::Triage, list);
    last_hour(f, app, recent);
}

/// "03:12  node.unhealthy  node-ams-004  (mailfleet-serve)": one line per event, the
/// subject by node label when the node is in the fleet, else by short id.
fn last_hour(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let rows = &app.triage.recent;
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        format!(" Last hour: {} event(s), newest first ", rows.len()),
        th.title(),
    ));
    let height = area.height.saturating_sub(2) as usize;
    let mut lines: Vec<Line> = Vec::with_capacity(height);
    if rows.is_empty() {
        lines.push(Line::from(Span::styled("Nothing happened.", th.dim())));
    }
    for e in rows.iter().take(height) {
        let time = crate::clock::parse_ts(&e.at)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|| "--:--:--".into());
        let subject = match (&e.node_id, &e.request_id) {
            (Some(n), _) => app
                .node_by_id(n)
                .map(|n| sanitize(&n.label).into_owned())
                .unwrap_or_else(|| format!("node {}", short(n))),
            (None, Some(r)) => format!("request {}", short(r)),
            (None, None) => String::new(),
        };
        let name_style = if e.name.contains("fail")
            || e.name.contains("unhealthy")
            || e.name.contains("paused")
            || e.name.contains("alert.raised")
        {
            th.warn()
        } else {
            ratatui::style::Style::default()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{time}  "), th.dim()),
            Span::styled(format!("{:<28} ", sanitize(&e.name)), name_style),
            Span::raw(format!("{subject}  ")),
            Span::styled(format!("({})", sanitize(&e.actor)), th.dim()),
        ]));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
}
