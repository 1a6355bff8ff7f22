//! The list views: a table of the rows on screen only.

use crate::tui::action::View;
use crate::tui::app::App;
use crate::tui::table::{cell, columns, fit, status_of};
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &mut App, v: View, area: Rect) {
    let th = app.theme;
    let cols = columns(v);
    let inner_w = area.width.saturating_sub(2);
    let keep = fit(cols, inner_w);
    let height = area.height.saturating_sub(3) as usize;
    app.page = height.max(1);
    let idx = v.index();
    let offset = app.tables[idx].scroll(height);
    let t = &app.tables[idx];
    let total = t.visible.len();
    let title = format!(
        " {} {}/{}{} ",
        v.title(),
        if total == 0 { 0 } else { t.selected + 1 },
        total,
        match t.sort_col {
            c if c < cols.len() => format!(
                "  sorted by {}{}",
                cols[c].title.to_lowercase(),
                if t.asc { " ↑" } else { " ↓" }
            ),
            _ => String::new(),
        }
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, th.title()));
    if total == 0 {
        let empty = match v {
            _ if !app.loaded => "Loading…",
            View::Approvals => "Nothing awaits approval.",
            View::Blacklist => "No blocklist listings recorded.",
            View::Warmup => "No node is warming up.",
            View::Events if !app.events.filter.is_empty() => "No event matches the filter.",
            _ if !t.filter.is_empty() => "No row matches the filter (esc clears it).",
            _ => "Nothing here yet. Press p to provision a node.",
        };
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(empty, th.dim()))).block(block),
            area,
        );
        return;
    }
    let header = Row::new(
        keep.iter()
            .map(|c| Span::styled(cols[*c].title, th.header())),
    );
    let status_col = cols
        .iter()
        .position(|c| c.title == "STATUS" || c.title == "STATE");
    let rows = t
        .visible
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(pos, &i)| {
            let marked = !t.marks.is_empty()
                && selected_id(app, v, i).is_some_and(|id| t.marks.contains(&id));
            let cells = keep.iter().map(|c| {
                let text = cell(app, v, i, *c);
                let text = if *c == keep[0] && marked {
                    format!("*{text}")
                } else {
                    text
                };
                if Some(*c) == status_col {
                    Span::styled(text, th.status(status_of(app, v, i)))
                } else {
                    Span::raw(text)
                }
            });
            let row = Row::new(cells);
            if pos == t.selected {
                row.style(th.selected())
            } else {
                row
            }
        });
    let widths: Vec<Constraint> = keep
        .iter()
        .enumerate()
        .map(|(n, c)| {
            if n + 1 == keep.len() {
                Constraint::Min(cols[*c].width)
            } else {
                Constraint::Length(cols[*c].width)
            }
        })
        .collect();
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(block)
            .column_spacing(1),
        area,
    );
}

fn selected_id(app: &App, v: View, i: usize) -> Option<String> {
    match v {
        View::Requests | View::Approvals | View::Pipeline => {
            app.snap.requests.get(i).map(|r| r.id.clone())
        }
        View::Fleet | View::Warmup => app.snap.nodes.get(i).and_then(|n| n.request_id.clone()),
        _ => None,
    }
}
