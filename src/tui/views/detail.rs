//! The request detail pane: why it waits, its node's status and why (a paused node says
//! what paused it), the steps with their sub-tasks, every transition, what it holds, and
//! its events.

use crate::clock::{age, parse_ts};
use crate::domain::validate::sanitize;
use crate::tui::app::App;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

fn local(ts: &str) -> String {
    parse_ts(ts)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ts.to_string())
}

pub fn draw(f: &mut Frame, app: &mut App, area: Rect) {
    let th = app.theme;
    let Some((id, detail)) = &app.detail else {
        return;
    };
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        if app.detail_focus {
            format!(
                " request {}  (j/k/PgUp/PgDn scroll · esc back to the list) ",
                crate::domain::ids::short(id)
            )
        } else {
            format!(
                " request {}  (enter scrolls · esc closes) ",
                crate::domain::ids::short(id)
            )
        },
        th.title(),
    ));
    let Some(d) = detail else {
        f.render_widget(Paragraph::new("loading…").block(block), area);
        return;
    };
    let r = &d.request;
    let c = |s: &str| sanitize(s).into_owned();
    let mut lines = vec![
        Line::from(vec![
            Span::styled(c(&r.state), th.status(&r.state)),
            Span::raw(format!(
                "  {} · {} · {} · {}",
                c(&r.tenant),
                c(&r.label),
                c(&r.region),
                match (&r.target, &r.from_plan) {
                    (Some(_), Some(from)) => format!("resize {}→{}", c(from), c(&r.plan)),
                    _ => c(&r.plan),
                }
            )),
        ]),
        Line::from(format!(
            "requested by {} {} ago{}",
            c(&r.requested_by),
            parse_ts(&r.created_at)
                .map(|t| age(app.now, t))
                .unwrap_or_default(),
            r.cluster
                .as_deref()
                .map(|x| format!(" · cluster {}", c(x)))
                .unwrap_or_default()
        )),
    ];
    if let Some(n) = r.id.parse().ok().and_then(|id| app.node_of_request(&id)) {
        let mut spans = vec![
            Span::raw(format!(
                "node {} · {} · ",
                c(&n.label),
                n.ip_address
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "no IP".into())
            )),
            Span::styled(c(&n.status), th.status(&n.status)),
        ];
        if let Some(why) = &n.status_reason {
            spans.push(Span::raw(format!(": {}", c(why))));
        }
        lines.push(Line::from(spans));
    }
    if r.state == "queued" || r.state == "pending_approval" {
        let why = match (&r.wait_reason, &r.approval_reason) {
            (Some(w), _) => format!("waiting: {}", c(w)),
            (None, Some(a)) if r.state == "pending_approval" => {
                format!("waiting for approval: {}", c(a))
            }
            _ => "waiting: next in line for admission".to_string(),
        };
        lines.push(Line::from(Span::styled(why, th.warn())));
    }
    if let (Some(w), "rolling_back") = (&r.wait_reason, &*r.state) {
        lines.push(Line::from(Span::styled(
            format!("rollback: {}", c(w)),
            th.warn(),
        )));
    }
    if let Some(e) = &r.error {
        lines.push(Line::from(Span::styled(
            format!("error: {}", c(e)),
            th.error(),
        )));
    }
    if r.needs_attention {
        lines.push(Line::from(Span::styled(
            "needs attention: a compensation could not finish; it is retried periodically",
            th.error(),
        )));
    }
    if !d.depends_on.is_empty() {
        lines.push(Line::from(format!(
            "depends on {}",
            d.depends_on
                .iter()
                .map(|x| crate::domain::ids::short(x))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    lines.push(Line::from(Span::styled("steps", th.header())));
    for s in &d.steps {
        let when = s.started_at.as_deref().map(local).unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled(format!("  {:<10}", s.step), th.status(&s.status)),
            Span::styled(format!("{:<8}", s.status), th.status(&s.status)),
            Span::raw(format!("attempts {}  {}", s.attempts, when)),
        ]));
        for t in d.tasks.iter().filter(|t| t.step == s.step) {
            lines.push(Line::from(vec![
                Span::styled(format!("    {:<17}", t.name), th.status(&t.status)),
                Span::raw(format!(
                    "{} {}",
                    local(&t.updated_at),
                    c(t.detail.as_deref().unwrap_or(""))
                )),
            ]));
        }
    }
    lines.push(Line::from(Span::styled("transitions", th.header())));
    for t in &d.transitions {
        lines.push(Line::from(format!(
            "  {}  {} → {}  by {}{}",
            local(&t.at),
            t.from_state.as_deref().unwrap_or("∅"),
            t.to_state,
            c(&t.actor),
            t.reason
                .as_deref()
                .map(|x| format!(": {}", c(x)))
                .unwrap_or_default()
        )));
    }
    if !d.records.is_empty() {
        lines.push(Line::from(Span::styled("dns records", th.header())));
        for rec in &d.records {
            // planned → published → verified (removed once rolled back).
            let look = match rec.status.as_str() {
                "verified" => "completed",
                "published" => "running",
                "removed" => "decommissioned",
                _ => "queued",
            };
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<9}", rec.status), th.status(look)),
                Span::raw(format!(
                    "{:<5} {} {}{}",
                    rec.rtype,
                    c(&rec.name),
                    c(&rec.want),
                    if rec.owned { "" } else { "  (already there)" }
                )),
            ]));
        }
    }
    for cert in &d.certificates {
        let left = parse_ts(&cert.not_after)
            .map(|t| (t - app.now).num_days())
            .unwrap_or(0);
        let look = match cert.status.as_str() {
            "active" if left < 7 => "failed",
            "active" if left < 30 => "pending_approval",
            "active" => "completed",
            _ => "decommissioned",
        };
        lines.push(Line::from(vec![
            Span::styled(format!("certificate {:<10}", cert.status), th.status(look)),
            Span::raw(format!(
                "{} · expires {} ({left} days) · {}{}",
                c(&cert.names.join(", ")),
                local(&cert.not_after),
                c(&cert.issuer),
                cert.renew_error
                    .as_deref()
                    .map(|e| format!(" · renewal failed: {}", c(e)))
                    .unwrap_or_default()
                    + &cert
                        .fate()
                        .iter()
                        .map(|f| format!(" · {}", c(f)))
                        .collect::<String>()
            )),
        ]));
    }
    lines.push(Line::from(Span::styled("resources", th.header())));
    for res in &d.resources {
        lines.push(Line::from(vec![
            Span::styled(
                format!("  {:<11} ", res.kind),
                th.status(if res.status == "released" {
                    "decommissioned"
                } else {
                    "active"
                }),
            ),
            Span::raw(format!(
                "{:<9} {} {}",
                res.status,
                c(res.provider_ref.as_deref().unwrap_or("-")),
                c(res.detail.as_deref().unwrap_or(""))
            )),
        ]));
    }
    lines.push(Line::from(Span::styled(
        format!("events ({})", d.events.len()),
        th.header(),
    )));
    for e in d.events.iter().rev().take(20) {
        lines.push(Line::from(format!(
            "  {}  {}  by {}",
            local(&e.at),
            e.name,
            c(&e.actor)
        )));
    }
    scrolled(f, app, area, block, lines);
}

/// Draws `lines` in the pane, scrolled by `app.detail_scroll`; scrolling stops where the
/// last line is at the bottom (counting wrapped lines).
pub(super) fn scrolled(
    f: &mut Frame,
    app: &mut App,
    area: Rect,
    block: Block<'_>,
    lines: Vec<Line<'_>>,
) {
    let inner_w = area.width.saturating_sub(2).max(1) as usize;
    let rendered: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w))
        .sum();
    let max = rendered.saturating_sub(area.height.saturating_sub(2) as usize);
    let scroll = app
        .detail_scroll
        .min(u16::try_from(max).unwrap_or(u16::MAX));
    app.detail_scroll = scroll;
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        area,
    );
}
