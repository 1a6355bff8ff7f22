//! The node listing pane (Enter in the Blacklist and Alerts views): the node's status and
//! why, where it is listed now, its open alerts, then every listing on every zone, oldest
//! first. Everything shown was built and sanitized with the timeline (see `tui::nodes`).

use super::detail::scrolled;
use crate::tui::action::Action;
use crate::tui::app::App;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &mut App, area: Rect) {
    let th = app.theme;
    let Some(t) = &app.timeline else {
        return;
    };
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        if app.detail_focus {
            format!(
                " node {}  (j/k/PgUp/PgDn scroll · esc back to the list) ",
                t.label
            )
        } else {
            format!(" node {} listings  (enter scrolls · esc closes) ", t.label)
        },
        th.title(),
    ));
    let ip = t.ip.as_deref().unwrap_or("no IP");
    let mut lines = vec![match &t.status {
        Some(status) => Line::from(vec![
            Span::styled(status.clone(), th.status(status)),
            Span::raw(format!("  {} · {ip}", t.label)),
        ]),
        None => Line::from(Span::styled(
            format!("{} · {ip}: no longer in the fleet", t.label),
            th.dim(),
        )),
    }];
    if let Some(why) = &t.status_reason {
        let style = if t.status.as_deref() == Some("paused") {
            th.warn()
        } else {
            th.dim()
        };
        lines.push(Line::from(Span::styled(format!("why: {why}"), style)));
    }
    if t.listed_now.is_empty() {
        lines.push(Line::from(Span::styled("listed nowhere now", th.ok())));
    }
    for (zone, url) in &t.listed_now {
        let mut spans = vec![Span::styled(format!("listed now on {zone}"), th.error())];
        if let Some(url) = url {
            spans.push(Span::raw(format!(" · delist at {url}")));
        }
        lines.push(Line::from(spans));
    }
    if !t.alerts.is_empty() {
        lines.push(Line::from(Span::styled("open alerts", th.header())));
        for (severity, text) in &t.alerts {
            lines.push(Line::from(vec![
                Span::styled(format!("  {severity:<7}"), th.severity(severity)),
                Span::raw(text.clone()),
            ]));
        }
    }
    lines.push(Line::from(Span::styled(
        format!("listings, oldest first ({})", t.entries.len()),
        th.header(),
    )));
    if t.entries.is_empty() {
        lines.push(Line::from(Span::styled("  none recorded", th.dim())));
    }
    for e in &t.entries {
        let style = if e.listed {
            th.severity(e.severity.as_deref().unwrap_or(""))
        } else {
            th.ok()
        };
        lines.push(Line::from(Span::styled(format!("  {}", e.text), style)));
    }
    // What can be done about it, from the keymap (and not at all when read-only).
    let keys: Vec<Span> = [Action::CheckNode, Action::PauseNode, Action::ResumeNode]
        .into_iter()
        .filter(|_| !app.read_only)
        .filter_map(|a| {
            let key = app.keymap.keys_for(a).first()?.label();
            Some([
                Span::styled(key, th.key()),
                Span::raw(format!(" {}  ", a.describe())),
            ])
        })
        .flatten()
        .collect();
    if !keys.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(keys));
    }
    scrolled(f, app, area, block, lines);
}
