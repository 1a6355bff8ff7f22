//! Drawing: pure functions from `&App` to a frame. Nothing here awaits or queries; only the
//! rows on screen are turned into cells.

mod detail;
mod overlays;
mod pipeline;
mod quotas;
mod table;
mod timeline;
mod triage;
mod warmup;

use super::action::{View, VIEWS};
use super::app::{App, Mode};
use super::keymap::{
    ALERTS_FOOTER, APPROVALS_FOOTER, FOOTER, REPUTATION_FOOTER, TRIAGE_FOOTER, WARMUP_FOOTER,
};
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
    match app.pane_open() {
        true => {
            let [list, pane] = if body.width >= 120 {
                Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
                    .areas(body)
            } else {
                Layout::vertical([Constraint::Percentage(35), Constraint::Percentage(65)])
                    .areas(body)
            };
            view_body(f, app, list);
            if app.timeline.is_some() {
                timeline::draw(f, app, pane);
            } else if app.warm_history {
                warmup::history(f, app, pane);
            } else {
                detail::draw(f, app, pane);
            }
        }
        false => view_body(f, app, body),
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
        View::Warmup => warmup::draw(f, app, area),
        View::Triage => triage::draw(f, app, area),
        v => table::draw(f, app, v, area),
    }
}

/// "cap 1.2M/day", "used 63%" (a warning from 80%), "(scale out at 80%)": the fleet's
/// daily capacity and yesterday's use of it, as header parts (the hint goes first).
fn capacity_parts(app: &App) -> Vec<Part> {
    let th = app.theme;
    let Some((cap, used)) = super::warmup::capacity(app) else {
        return vec![];
    };
    let mut parts = vec![part(4, vec![Span::raw(format!("{cap} "))])];
    if let Some(used) = used {
        let at = super::warmup::scale_out_percent(&app.cfg);
        let high = used >= at;
        parts.push(part(
            if high { 2 } else { 4 },
            vec![Span::styled(
                format!("used {used}% "),
                if high { th.warn() } else { Style::default() },
            )],
        ));
        // The engine files a scale-out only when scaling is on ([scaling] enabled).
        parts.push(Part {
            glued: true,
            ..part(
                7,
                vec![Span::styled(
                    if app.cfg.scaling.enabled {
                        format!("(scale out at {at}%) ")
                    } else {
                        format!("(scaling off; {at}% is high) ")
                    },
                    th.dim(),
                )],
            )
        });
    }
    parts
}

/// One part of the header: its spans, and how soon it goes when the screen is narrow
/// (higher goes first). Parts are joined by "· " unless `glued` to the one before.
struct Part {
    spans: Vec<Span<'static>>,
    drop_rank: u8,
    glued: bool,
}

fn part(drop_rank: u8, spans: Vec<Span<'static>>) -> Part {
    Part {
        spans,
        drop_rank,
        glued: false,
    }
}

/// "▲ 2 high · 3 med · 1 low": the open alerts, only the severities that have some.
fn alert_badge(app: &App) -> Option<Part> {
    let th = app.theme;
    let a = app.snap.alert_counts;
    let worst = if a.high > 0 {
        th.error()
    } else if a.medium > 0 {
        th.warn()
    } else {
        Style::default()
    };
    let mut spans = vec![Span::styled("▲ ", worst)];
    for (n, word, style) in [
        (a.high, "high", th.error()),
        (a.medium, "med", th.warn()),
        (a.low, "low", Style::default()),
    ] {
        if n > 0 {
            if spans.len() > 1 {
                spans.push(Span::raw(" · "));
            }
            spans.push(Span::styled(format!("{n} {word}"), style));
        }
    }
    if spans.len() == 1 {
        return None;
    }
    spans.push(Span::raw(" "));
    Some(part(1, spans))
}

/// The most of the actor the header shows: the rest of the line stays for the fleet.
const WHO_WIDTH: usize = 32;

/// "alice" or "carol via ci-bot", cut to `WHO_WIDTH` characters.
fn who(actor: &str) -> String {
    let short = crate::domain::actor::Actor::parse(actor).short();
    let shown = crate::domain::validate::sanitize(&short);
    if shown.chars().count() <= WHO_WIDTH {
        return shown.into_owned();
    }
    let mut cut: String = shown.chars().take(WHO_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// The header: who you are always shows; of the rest, the parts that matter most stay when
/// the screen is narrow (the alerts badge, then what needs attention or approval, then the
/// fleet's figures; the database's path goes first).
fn header(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let mut lead = vec![Span::styled(" mailfleet ", th.title())];
    if app.read_only {
        lead.push(Span::styled("[READ-ONLY] ", th.error()));
    }
    lead.push(Span::styled(format!("as {} ", who(&app.actor)), th.title()));
    let mut parts: Vec<Part> = Vec::new();
    if !app.loaded {
        parts.push(part(
            1,
            vec![Span::styled("loading the fleet… ", th.warn())],
        ));
    } else {
        // A provider whose circuit is open: its requests wait. Never dropped for width.
        for c in app.snap.circuits.iter().filter(|c| c.open) {
            parts.push(part(
                1,
                vec![Span::styled(
                    format!(
                        "{} circuit open ",
                        crate::domain::validate::sanitize(&c.provider)
                    ),
                    th.error(),
                )],
            ));
        }
        parts.extend(alert_badge(app));
        // Counted when the data arrived: drawing never walks the fleet.
        parts.push(part(
            4,
            vec![Span::raw(format!("{} nodes ", app.snap.nodes.len()))],
        ));
        let statuses: Vec<Span<'static>> = app
            .counts
            .node_status
            .iter()
            .map(|(status, n)| Span::styled(format!("{status} {n} "), th.status(status)))
            .collect();
        if !statuses.is_empty() {
            parts.push(Part {
                glued: true,
                ..part(5, statuses)
            });
        }
        parts.extend(capacity_parts(app));
        let pending = app
            .counts
            .state(crate::domain::RequestState::PendingApproval);
        if pending > 0 {
            parts.push(part(
                3,
                vec![Span::styled(
                    format!("{pending} awaiting approval "),
                    th.warn(),
                )],
            ));
        }
        if app.counts.needs_attention > 0 {
            parts.push(part(
                2,
                vec![Span::styled(
                    format!("{} need attention ", app.counts.needs_attention),
                    th.error(),
                )],
            ));
        }
    }
    parts.push(part(
        6,
        vec![Span::styled(
            crate::domain::validate::sanitize(&app.db_label).into_owned(),
            th.dim(),
        )],
    ));
    let width = |parts: &[Part]| -> usize {
        let lead: usize = lead.iter().map(Span::width).sum();
        lead + parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let sep = if i > 0 && !p.glued { 2 } else { 0 };
                sep + p.spans.iter().map(Span::width).sum::<usize>()
            })
            .sum::<usize>()
    };
    while width(&parts) > area.width as usize {
        let Some(worst) = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.drop_rank > 1)
            .max_by_key(|(_, p)| p.drop_rank)
            .map(|(i, _)| i)
        else {
            break;
        };
        parts.remove(worst);
    }
    let mut spans = lead;
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 && !p.glued {
            spans.push(Span::raw("· "));
        }
        spans.extend(p.spans);
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// How the tab line names the views.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tabs {
    /// " 1 Fleet  2 Requests  3 Approvals … "
    Full,
    /// " 1 Fleet 2 Reqs  3 Approv  4 Black …": short titles, one space apart.
    Short,
    /// " 1 2 3 4 Black  5 …": numbers, and the current view's short title.
    Numbers,
}

impl Tabs {
    fn name(self, v: View, current: View) -> &'static str {
        match self {
            Tabs::Full => v.title(),
            Tabs::Short => v.short_title(),
            Tabs::Numbers if v == current => v.short_title(),
            Tabs::Numbers => "",
        }
    }

    /// The text of view `v`'s tab (numbered `n`).
    fn label(self, n: usize, v: View, current: View) -> String {
        let name = self.name(v, current);
        let body = if name.is_empty() {
            n.to_string()
        } else {
            format!("{n} {name}")
        };
        if self == Tabs::Full || v == current {
            format!(" {body} ")
        } else {
            format!("{body} ")
        }
    }
}

fn tab_line(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let t = app.table();
    let filter = (!t.filter.is_empty())
        .then(|| format!("  /{}", crate::domain::validate::sanitize(&t.filter)));
    let marks = (!t.marks.is_empty()).then(|| format!("  {} marked", t.marks.len()));
    // Full titles where they fit with what follows them (a long filter counts as 20
    // characters), else short ones, else numbers and the current view's title.
    let after: usize = filter.iter().chain(&marks).map(|s| s.chars().count()).sum();
    let width = |tabs: Tabs| -> usize {
        let lead = usize::from(tabs != Tabs::Full);
        lead + VIEWS
            .iter()
            .enumerate()
            .map(|(i, v)| tabs.label(i, *v, app.view).chars().count())
            .sum::<usize>()
    };
    let tabs = [Tabs::Full, Tabs::Short]
        .into_iter()
        .find(|t| width(*t) + after.min(20) <= area.width as usize)
        .unwrap_or(Tabs::Numbers);
    let mut spans = Vec::new();
    if tabs != Tabs::Full {
        spans.push(Span::raw(" "));
    }
    for (i, v) in VIEWS.iter().enumerate() {
        let style = if *v == app.view {
            th.selected()
        } else {
            th.dim()
        };
        spans.push(Span::styled(tabs.label(i, *v, app.view), style));
    }
    spans.extend(
        filter
            .into_iter()
            .chain(marks)
            .map(|s| Span::styled(s, th.warn())),
    );
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
    let actions = match app.view {
        View::Approvals => APPROVALS_FOOTER,
        View::Blacklist => REPUTATION_FOOTER,
        View::Alerts => ALERTS_FOOTER,
        View::Triage => TRIAGE_FOOTER,
        View::Warmup => WARMUP_FOOTER,
        _ => FOOTER,
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
    if app.view == View::Warmup && !app.read_only {
        spans.push(Span::styled(":warmup", th.key()));
        spans.push(Span::raw(" resume|pace  "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
