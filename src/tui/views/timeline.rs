//! The node pane (Enter on a node in the Fleet view, on a listing or an alert, or a jump
//! from Triage): the node's status and why; its heartbeats and metrics, warm-up and
//! certificate; where it is listed now and its open alerts; every listing on every zone;
//! its transitions. What the snapshot holds was built and sanitized with the timeline (see
//! `tui::nodes`); heartbeats, transitions and the certificate are loaded for it.

use super::detail::scrolled;
use crate::tui::action::Action;
use crate::tui::app::App;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

fn clean(s: &str) -> String {
    crate::domain::validate::sanitize(s).into_owned()
}

/// A stored time as local time to the minute.
fn local_minute(ts: &str) -> String {
    crate::clock::parse_ts(ts)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| clean(ts))
}

/// "1.5G", "512M": bytes in at most five characters.
fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n >= 1e9 {
        format!("{:.1}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{:.0}K", n / 1e3)
    }
}

/// A sparkline of values scaled to their largest.
fn spark(values: impl Iterator<Item = f64>) -> String {
    let v: Vec<u32> = values.map(|x| x.max(0.0).round() as u32).collect();
    crate::tui::warmup::sparkline(&v)
}

/// What the node detail adds to the listings: its request and host, its heartbeats
/// (the last one's figures, sparklines of CPU and queue, what the reports counted), its
/// warm-up, its certificate.
fn node_lines(app: &App, t: &crate::tui::nodes::Timeline) -> Vec<Line<'static>> {
    let th = app.theme;
    let mut out = Vec::new();
    let node = app.node_by_id(&t.node_id);
    let Some(more) = &t.more else {
        out.push(Line::from(Span::styled("loading heartbeats…", th.dim())));
        return out;
    };
    let mut head = Vec::new();
    if let Some(h) = &more.hostname {
        head.push(clean(h));
    }
    if let Some(r) = &more.request_id {
        head.push(format!(
            "request {} (r opens it)",
            crate::domain::ids::short(r)
        ));
    }
    if !head.is_empty() {
        out.push(Line::from(Span::raw(head.join(" · "))));
    }
    match more.heartbeats.last() {
        None => out.push(Line::from(Span::styled(
            "no heartbeat received (no agent reports for this node)",
            th.dim(),
        ))),
        Some(last) => {
            let ago = crate::clock::parse_ts(&last.received_at)
                .map(|at| crate::clock::age(app.now, at))
                .unwrap_or_else(|| "?".into());
            out.push(Line::from(vec![
                Span::styled("heartbeat ", th.header()),
                Span::raw(format!(
                    "{ago} ago · cpu {:.0}% · mem {}/{} · queue {} · disk free {}",
                    last.cpu_pct,
                    bytes(last.mem_used),
                    bytes(last.mem_total),
                    last.queue_len,
                    bytes(last.queue_free)
                )),
            ]));
            let hb = &more.heartbeats;
            out.push(Line::from(vec![
                Span::styled("  cpu   ", th.dim()),
                Span::raw(spark(hb.iter().map(|h| h.cpu_pct))),
            ]));
            out.push(Line::from(vec![
                Span::styled("  queue ", th.dim()),
                Span::raw(spark(hb.iter().map(|h| h.queue_len as f64))),
            ]));
            let sent: i64 = hb.iter().map(|h| h.delivered).sum();
            let bounced: i64 = hb.iter().map(|h| h.bounced).sum();
            let deferred: i64 = hb.iter().map(|h| h.deferred).sum();
            let complaints: i64 = hb.iter().map(|h| h.complaints).sum();
            let rate = if sent + bounced > 0 {
                format!(
                    " ({:.1}%)",
                    bounced as f64 * 100.0 / (sent + bounced) as f64
                )
            } else {
                String::new()
            };
            out.push(Line::from(Span::raw(format!(
                "  over {} reports: sent {sent} · bounced {bounced}{rate} · deferred {deferred} · complaints {complaints}",
                hb.len()
            ))));
        }
    }
    if let Some(w) = node.and_then(|n| n.warmup.as_ref()) {
        let why = w
            .reason
            .as_deref()
            .map(|r| format!(": {}", clean(r)))
            .unwrap_or_default();
        out.push(Line::from(vec![
            Span::styled("warm-up ", th.header()),
            Span::raw(format!(
                "{} day {}/{} · cap {}/day · {}{why}",
                clean(&w.plan),
                w.day,
                w.days,
                w.cap,
                clean(&w.status)
            )),
        ]));
    }
    match &more.cert {
        None => out.push(Line::from(Span::styled("no active certificate", th.dim()))),
        Some(c) => {
            let expires = crate::clock::parse_ts(&c.not_after)
                .map(|t| {
                    let days = (t - app.now).num_days();
                    if days >= 0 {
                        format!("expires in {days} days")
                    } else {
                        format!("expired {} days ago", -days)
                    }
                })
                .unwrap_or_default();
            let mut spans = vec![
                Span::styled("certificate ", th.header()),
                Span::raw(format!(
                    "{} from {}, {expires}",
                    clean(&c.hostname),
                    clean(&c.issuer)
                )),
            ];
            if let Some(e) = &c.renew_error {
                spans.push(Span::styled(
                    format!(" · renewal failed: {}", clean(e)),
                    th.error(),
                ));
            }
            out.push(Line::from(spans));
        }
    }
    out
}

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
            format!(" node {}  (enter scrolls · esc closes) ", t.label)
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
    lines.extend(node_lines(app, t));
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
    if let Some(more) = &t.more {
        lines.push(Line::from(Span::styled(
            format!("transitions, newest last ({})", more.transitions.len()),
            th.header(),
        )));
        for tr in &more.transitions {
            lines.push(Line::from(Span::raw(format!(
                "  {}  {} → {}  {}: {}",
                local_minute(&tr.at),
                tr.from
                    .as_deref()
                    .map(clean)
                    .unwrap_or_else(|| "new".into()),
                clean(&tr.to),
                clean(&tr.actor),
                clean(&tr.reason)
            ))));
        }
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
