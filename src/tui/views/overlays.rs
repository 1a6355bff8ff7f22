//! What draws over the views: help, the provision form, confirmations, the reason prompt.

use crate::domain::validate::sanitize;
use crate::tui::app::{App, Confirm, Mode};
use crate::tui::form::FieldKind;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
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

/// `text` in rows of at most `width` characters, broken at spaces where one is near.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut rest: Vec<char> = text.chars().collect();
    while rest.len() > width {
        // A space right after `width` characters still lets them fit.
        let cut = rest[..=width]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|p| *p > 0)
            .unwrap_or(width);
        rows.push(
            rest[..cut]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
        );
        let skip = if rest.get(cut) == Some(&' ') {
            cut + 1
        } else {
            cut
        };
        rest.drain(..skip);
    }
    rows.push(rest.into_iter().collect());
    rows
}

/// A confirmation: its lines wrapped to the box, and when they are more than the screen
/// holds, a window of them with what is left out counted above and below (j/k scroll).
fn confirm(f: &mut Frame, th: Theme, c: &mut Confirm, area: Rect) {
    let width = 78.min(area.width);
    let rows: Vec<String> = c
        .lines
        .iter()
        .flat_map(|l| wrap(&sanitize(l), width.saturating_sub(2) as usize))
        .collect();
    let (long, take) = window(area, rows.len());
    c.scroll = c.scroll.min(rows.len().saturating_sub(take));
    let first = if long { c.scroll } else { 0 };
    let below = rows.len().saturating_sub(first + take);
    let mut lines: Vec<Line> = Vec::new();
    let note = |show: bool, text: String| {
        Line::from(Span::styled(
            if show { text } else { String::new() },
            th.dim(),
        ))
    };
    if long {
        lines.push(note(
            first > 0,
            format!("… {first} more above (k/↑ scrolls)"),
        ));
    }
    lines.extend(rows.into_iter().skip(first).take(take).map(Line::from));
    if long {
        lines.push(note(below > 0, format!("… and {below} more (j/↓ scrolls)")));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(vec![
        Span::styled("y", th.key()),
        Span::raw(" yes   "),
        Span::styled("n/esc", th.key()),
        Span::raw(" no"),
    ]));
    let r = centered(area, width, (lines.len() as u16 + 2).min(area.height));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(format!(" {} ", c.title), th.error())),
        ),
        r,
    );
}

/// Whether a confirmation of `n` lines is too long for `area`, and how many of its lines
/// fit.
fn window(area: Rect, n: usize) -> (bool, usize) {
    // Borders, the blank line and the y/n line: 4 rows, and a margin of 2 above and below
    // so the header and footer stay in sight.
    let room = (area.height as usize).saturating_sub(8).max(1);
    if n > room {
        // Two of the rows say what is above and below.
        (true, room.saturating_sub(2).max(1))
    } else {
        (false, n)
    }
}

pub fn draw(f: &mut Frame, app: &mut App, area: Rect) {
    let th = app.theme;
    if let Mode::Confirm(c) = &mut app.mode {
        confirm(f, th, c, area);
        return;
    }
    let app = &*app;
    match &app.mode {
        Mode::Help => {
            let rows = app.keymap.help_rows();
            let key_spans = |(keys, a): &(String, crate::tui::action::Action)| {
                let style = if a.mutates() && app.read_only {
                    th.dim()
                } else {
                    th.key()
                };
                [
                    Span::styled(format!("{keys:>16}  "), style),
                    Span::raw(format!("{:<31}", a.describe())),
                ]
            };
            // Two columns of keys where the box is wide enough, so the notes below them
            // stay on screen.
            let two = area.width >= 100;
            let half = if two {
                rows.len().div_ceil(2)
            } else {
                rows.len()
            };
            let mut lines: Vec<Line> = (0..half)
                .map(|i| {
                    let mut spans: Vec<Span> =
                        rows.get(i).map(key_spans).into_iter().flatten().collect();
                    if two {
                        spans.extend(rows.get(half + i).map(key_spans).into_iter().flatten());
                    }
                    Line::from(spans)
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
            let views: Vec<String> = crate::tui::action::VIEWS
                .iter()
                .map(|v| format!(":{}", v.name()))
                .collect();
            lines.push(Line::from(Span::styled(
                format!("  {} :q   (tab completes)", views.join(" ")),
                th.dim(),
            )));
            let node_keys: Vec<String> = [
                crate::tui::action::Action::CheckNode,
                crate::tui::action::Action::PauseNode,
                crate::tui::action::Action::ResumeNode,
            ]
            .iter()
            .filter_map(|a| app.keymap.keys_for(*a).first().map(|k| k.label()))
            .collect();
            if !node_keys.is_empty() {
                lines.push(Line::from(Span::styled(
                    format!(
                        "  {}: the selected row's node (Fleet, Warm-up, Blacklist, Alerts), or the marked nodes;",
                        node_keys.join(" ")
                    ),
                    th.dim(),
                )));
                lines.push(Line::from(Span::styled(
                    "    pause and resume ask first",
                    th.dim(),
                )));
            }
            for text in [
                "  :warmup resume day|week|start   restart a held or paused warm-up from its day, week or day 1",
                "  :warmup pace FACTOR             stretch (1.5) or compress (0.75) the days left; 0.25 to 4",
                "                                  both on the marked nodes or the selected one, asking first",
            ] {
                lines.push(Line::from(Span::styled(text, th.dim())));
            }
            let terms: Vec<String> = crate::tui::filter::fields(app.view)
                .iter()
                .map(|(name, _)| format!("{name}:"))
                .collect();
            for text in [
                "  / filters: words and name:value terms, all must match; a leading ! inverts it all"
                    .to_string(),
                if terms.is_empty() {
                    "    this view filters on words only".to_string()
                } else {
                    format!("    names here: {}", terms.join(" "))
                },
                "    e.g. /tenant:acme region:eu-west-1   /!tenant:acme   · keys remap under [keys]"
                    .to_string(),
            ] {
                lines.push(Line::from(Span::styled(text, th.dim())));
            }
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
            // Two rows a field, the borders, and a spare row.
            let height = u16::try_from(form.fields.len() * 2 + 3)
                .unwrap_or(16)
                .min(16);
            let r = centered(area, 76, height);
            f.render_widget(Clear, r);
            let block = Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(form.title(), th.title()));
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
        // Drawn above, with the scroll it may correct.
        Mode::Confirm(_) => {}
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
        Mode::Alert(p) => {
            let r = centered(area, 76, 6);
            f.render_widget(Clear, r);
            let (title, ask) = if p.silence {
                (
                    " Silence ",
                    "For how long, and why (\"2h deploying the fix\"):",
                )
            } else {
                (" Acknowledge ", "Note (optional; enter acknowledges):")
            };
            let lines = vec![
                Line::from(Span::styled(p.what.clone(), th.dim())),
                Line::from(ask),
                Line::from(Span::raw(p.input.value().to_string())),
            ];
            f.render_widget(
                Paragraph::new(lines).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(Span::styled(title, th.warn())),
                ),
                r,
            );
            f.set_cursor_position((r.x + 1 + p.input.visual_cursor() as u16, r.y + 3));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_breaks_at_spaces_and_keeps_indentation() {
        assert_eq!(wrap("  short", 10), ["  short"]);
        assert_eq!(wrap("one two three", 7), ["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(
            wrap("  releases IP 1.2.3.4", 12),
            ["  releases", "IP 1.2.3.4"]
        );
    }
}
