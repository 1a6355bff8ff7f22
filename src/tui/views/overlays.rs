//! What draws over the views: help, the provision form, confirmations, the reason prompt.

use crate::tui::app::{App, Mode};
use crate::tui::form::FieldKind;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

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

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    match &app.mode {
        Mode::Help => {
            let rows = app.keymap.help_rows();
            let mut lines: Vec<Line> = rows
                .iter()
                .map(|(keys, a)| {
                    let style = if a.mutates() && app.read_only {
                        th.dim()
                    } else {
                        th.key()
                    };
                    Line::from(vec![
                        Span::styled(format!("{keys:>16}  "), style),
                        Span::raw(a.describe()),
                    ])
                })
                .collect();
            lines.push(Line::from(""));
            let cols = crate::tui::table::columns(app.view);
            let letters: Vec<String> =
                crate::tui::table::sort_letters(app.view, |c| app.keymap.is_bound(c))
                    .iter()
                    .zip(cols)
                    .filter_map(|(l, c)| l.map(|l| format!("{l} {}", c.title.to_lowercase())))
                    .collect();
            lines.push(Line::from(Span::styled(
                format!("  sort keys: {}", letters.join(", ")),
                th.dim(),
            )));
            lines.push(Line::from(Span::styled("  :fleet :requests :approvals :blacklist :warmup :events :pipeline :q   (tab completes)", th.dim())));
            lines.push(Line::from(Span::styled(
                "  / filters (!text inverts) · keys remap under [keys] in the config",
                th.dim(),
            )));
            let r = centered(area, 100, (lines.len() as u16 + 2).min(area.height));
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(Span::styled(" Keys (esc closes) ", th.title())),
                ),
                r,
            );
        }
        Mode::Form(form) => {
            let r = centered(area, 76, 16);
            f.render_widget(Clear, r);
            let block = Block::default().borders(Borders::ALL).title(Span::styled(
                " Provision a node (tab moves, ←/→ choose, enter submits, esc abandons) ",
                th.title(),
            ));
            let inner = block.inner(r);
            f.render_widget(block, r);
            let rows =
                Layout::vertical(vec![Constraint::Length(2); form.fields.len()]).split(inner);
            for (i, field) in form.fields.iter().enumerate() {
                let focused = i == form.focus;
                let value = match field.kind {
                    FieldKind::Choice => format!("‹ {} ›", field.value()),
                    FieldKind::Text => field.input.value().to_string(),
                };
                let label_style = if focused { th.selected() } else { th.key() };
                let mut spans = vec![
                    Span::styled(format!("{:>11} ", field.name), label_style),
                    Span::raw(crate::domain::validate::sanitize(&value).into_owned()),
                ];
                if let Some(e) = &field.error {
                    if form.tried
                        || (field.kind == FieldKind::Text && !field.input.value().is_empty())
                    {
                        spans.push(Span::styled(format!("  ✗ {e}"), th.error()));
                    }
                } else if field.kind == FieldKind::Text && !field.input.value().is_empty() {
                    spans.push(Span::styled("  ✓", th.ok()));
                }
                f.render_widget(Paragraph::new(Line::from(spans)), rows[i]);
                if focused && field.kind == FieldKind::Text {
                    let x = rows[i].x + 12 + field.input.visual_cursor() as u16;
                    f.set_cursor_position((x.min(rows[i].right().saturating_sub(1)), rows[i].y));
                }
            }
        }
        Mode::Confirm(c) => {
            let mut lines: Vec<Line> = c
                .lines
                .iter()
                .map(|l| Line::from(crate::domain::validate::sanitize(l).into_owned()))
                .collect();
            lines.push(Line::from(""));
            lines.push(Line::from(vec![
                Span::styled("y", th.key()),
                Span::raw(" yes   "),
                Span::styled("n/esc", th.key()),
                Span::raw(" no"),
            ]));
            let r = centered(area, 78, (lines.len() as u16 + 2).min(area.height));
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).wrap(Wrap { trim: false }).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(Span::styled(format!(" {} ", c.title), th.error())),
                ),
                r,
            );
        }
        Mode::Reason(rs) => {
            let r = centered(area, 70, 5);
            f.render_widget(Clear, r);
            let lines = vec![
                Line::from(format!(
                    "Reject {} request(s). Reason (required):",
                    rs.ids.len()
                )),
                Line::from(Span::raw(rs.input.value().to_string())),
            ];
            f.render_widget(
                Paragraph::new(lines).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(Span::styled(" Reject ", th.error())),
                ),
                r,
            );
            f.set_cursor_position((r.x + 1 + rs.input.visual_cursor() as u16, r.y + 2));
        }
        _ => {}
    }
}
