//! Drawing: pure functions from `&App` to a frame. Nothing here awaits or queries; only the
//! rows on screen are turned into cells.

mod detail;
mod overlays;
mod pipeline;
mod quotas;
mod table;

use super::action::{View, VIEWS};
use super::app::{App, Mode};
use super::keymap::{APPROVALS_FOOTER, FOOTER};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &mut App) {
    let area = f.area();
    app.rows_drawn = None;
    let [head, tabs, body, status, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    header(f, app, head);
    tab_line(f, app, tabs);
    match (&app.detail, app.view) {
        (Some(_), _) => {
            let [list, pane] = if body.width >= 120 {
                Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
                    .areas(body)
            } else {
                Layout::vertical([Constraint::Percentage(35), Constraint::Percentage(65)])
                    .areas(body)
            };
            view_body(f, app, list);
            detail::draw(f, app, pane);
        }
        _ => view_body(f, app, body),
    }
    status_line(f, app, status);
    footer(f, app, foot);
    overlays::draw(f, app, area);
}

fn view_body(f: &mut Frame, app: &mut App, area: Rect) {
    match app.view {
        View::Pipeline => pipeline::draw(f, app, area),
        View::Approvals => {
            let (panel, queue) = quotas::split(app, area);
            if let Some(panel) = panel {
                quotas::draw(f, app, panel);
            }
            table::draw(f, app, View::Approvals, queue);
        }
        v => table::draw(f, app, v, area),
    }
}

fn header(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let mut spans = vec![Span::styled(" mailfleet ", th.title())];
    if app.read_only {
        spans.push(Span::styled("[READ-ONLY] ", th.error()));
    }
    if !app.loaded {
        spans.push(Span::styled("loading the fleet… ", th.warn()));
    } else {
        // Counted when the data arrived: drawing never walks the fleet.
        spans.push(Span::raw(format!("{} nodes ", app.snap.nodes.len())));
        for (status, n) in &app.counts.node_status {
            spans.push(Span::styled(format!("{status} {n} "), th.status(status)));
        }
        let pending = app
            .counts
            .state(crate::domain::RequestState::PendingApproval);
        if pending > 0 {
            spans.push(Span::styled(
                format!("· {pending} awaiting approval "),
                th.warn(),
            ));
        }
        if app.counts.needs_attention > 0 {
            spans.push(Span::styled(
                format!("· {} need attention ", app.counts.needs_attention),
                th.error(),
            ));
        }
    }
    spans.push(Span::styled(
        format!("· {} @ {}", app.actor, app.db_label),
        th.dim(),
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn tab_line(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let mut spans = Vec::new();
    for (i, v) in VIEWS.iter().enumerate() {
        let style = if *v == app.view {
            th.selected()
        } else {
            th.dim()
        };
        spans.push(Span::styled(format!(" {} {} ", i + 1, v.title()), style));
    }
    let t = app.table();
    if !t.filter.is_empty() {
        spans.push(Span::styled(
            format!("  /{}", crate::domain::validate::sanitize(&t.filter)),
            th.warn(),
        ));
    }
    if !t.marks.is_empty() {
        spans.push(Span::styled(
            format!("  {} marked", t.marks.len()),
            th.warn(),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn status_line(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let line = match &app.mode {
        Mode::Filter(input) => Line::from(vec![
            Span::styled("/", th.key()),
            Span::raw(input.value().to_string()),
        ]),
        Mode::Command(input) => Line::from(vec![
            Span::styled(":", th.key()),
            Span::raw(input.value().to_string()),
        ]),
        _ => match &app.status {
            Some(s) => Line::from(Span::styled(
                crate::domain::validate::sanitize(&s.text).into_owned(),
                if s.error { th.error() } else { th.ok() },
            )),
            None => Line::from(""),
        },
    };
    f.render_widget(Paragraph::new(line), area);
    if let Mode::Filter(input) | Mode::Command(input) = &app.mode {
        let x = area.x + 1 + input.visual_cursor() as u16;
        f.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
    }
}

fn footer(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let mut spans = Vec::new();
    let actions = if app.view == View::Approvals {
        APPROVALS_FOOTER
    } else {
        FOOTER
    };
    for action in actions {
        if action.mutates() && app.read_only {
            continue;
        }
        let Some(key) = app.keymap.keys_for(*action).first().map(|k| k.label()) else {
            continue;
        };
        spans.push(Span::styled(key, th.key()));
        spans.push(Span::styled(
            format!(" {}  ", action.describe()),
            Style::default(),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
