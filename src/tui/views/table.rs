//! The list views: a table of the rows on screen only.

use crate::tui::action::View;
use crate::tui::app::App;
use crate::tui::table::{cell, cell_style, columns, fit, mark_key, status_of};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
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
    // The first page, while the whole fleet is read: out of how many there are.
    let (of, reading) = match app.loading_total {
        Some(n) if v == View::Fleet => (n.max(total), " reading…"),
        _ if app.pending_views.contains(&v) => (total, " sorting…"),
        _ => (total, ""),
    };
    let title = format!(
        " {} {}/{of}{reading}{} ",
        v.title(),
        if total == 0 { 0 } else { t.selected + 1 },
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
            View::Blacklist if t.filter.is_empty() => "No blocklist listings recorded.",
            View::Alerts if t.filter.is_empty() => "No open alerts (/state: shows resolved ones).",
            View::Triage if t.filter.is_empty() => {
                "Nothing is broken: no open alert, failed or stalled request, node out of rotation or open breaker."
            }
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
    // The body is written straight into the buffer, a row at a time and only for the rows
    // on screen: ratatui's Table would build a Row, Cells and Spans for each and lay them
    // out on every frame.
    f.render_widget(block, area);
    let body = Rect {
        x: area.x + 1,
        y: area.y + 1,
        width: inner_w,
        height: area.height.saturating_sub(2),
    };
    if body.width == 0 || body.height == 0 {
        return;
    }
    // Column positions: fixed widths, one space between; the column that grows (else the
    // last) takes the rest.
    let mut spans: Vec<(usize, u16, u16)> = Vec::with_capacity(keep.len());
    let mut x = body.x;
    let right = body.x + body.width;
    let grows = keep
        .iter()
        .position(|c| cols[*c].grow)
        .unwrap_or(keep.len().saturating_sub(1));
    let spare = body
        .width
        .saturating_sub(keep.iter().map(|c| cols[*c].width + 1).sum::<u16>());
    for (n, c) in keep.iter().enumerate() {
        if x >= right {
            break;
        }
        let want = if n + 1 == keep.len() {
            right - x
        } else if n == grows {
            (cols[*c].width + spare).min(right - x)
        } else {
            cols[*c].width.min(right - x)
        };
        spans.push((*c, x, want));
        x = x.saturating_add(want).saturating_add(1);
    }
    let status_col = cols
        .iter()
        .position(|c| c.title == "STATUS" || c.title == "STATE");
    let drawn = total.saturating_sub(offset).min(height) as u16;
    app.rows_drawn = Some((
        Rect {
            x: body.x,
            y: body.y + 1,
            width: body.width,
            height: drawn.min(body.height.saturating_sub(1)),
        },
        offset,
    ));
    let app = &*app;
    let buf = f.buffer_mut();
    for &(c, x, w) in &spans {
        buf.set_stringn(x, body.y, cols[c].title, w as usize, th.header());
    }
    for (line, (pos, &i)) in t
        .visible
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .enumerate()
    {
        let y = body.y + 1 + line as u16;
        if y >= body.y + body.height {
            break;
        }
        let selected = pos == t.selected;
        if selected {
            buf.set_style(
                Rect {
                    x: body.x,
                    y,
                    width: body.width,
                    height: 1,
                },
                th.selected(),
            );
        }
        let marked =
            !t.marks.is_empty() && mark_key(app, v, i).is_some_and(|id| t.marks.contains(&id));
        for (n, &(c, x, w)) in spans.iter().enumerate() {
            let text = cell(app, v, i, c);
            let style = if Some(c) == status_col {
                th.status(status_of(app, v, i))
            } else {
                cell_style(app, v, i, c).unwrap_or_default()
            };
            let style = if selected {
                th.selected().patch(style)
            } else {
                style
            };
            if n == 0 && marked {
                let (after, _) = buf.set_stringn(x, y, "*", w as usize, style);
                let left = (x + w).saturating_sub(after) as usize;
                buf.set_stringn(after, y, &text, left, style);
            } else {
                buf.set_stringn(x, y, &text, w as usize, style);
            }
        }
    }
}
