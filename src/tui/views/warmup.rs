//! The Warm-up view: the warm-ups under way or stopped, and beside them (below on a narrow
//! screen) the selected node's charts — planned cap against what it sent per day with its
//! held and paused days marked, and its bounce and complaint rates against the thresholds
//! that hold and pause it; and the pane Enter opens, the node's whole daily log. Everything
//! drawn comes from the log as loaded (`tui::warmup::WarmupChart`); nothing is queried.

use super::detail::scrolled;
use crate::domain::validate::sanitize;
use crate::tui::action::View;
use crate::tui::app::App;
use crate::tui::table::short_count;
use crate::tui::warmup::{Points, WarmupChart};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Chart, Dataset, GraphType, LegendPosition, Paragraph,
};
use ratatui::Frame;

/// From this width the charts go beside the list; below it, under the list.
const BESIDE_FROM: u16 = 140;
/// Below this height (and not beside), the list has the area to itself.
const CHARTS_FROM_HEIGHT: u16 = 14;

pub fn draw(f: &mut Frame, app: &mut App, area: Rect) {
    let beside = area.width >= BESIDE_FROM;
    let room = beside || area.height >= CHARTS_FROM_HEIGHT;
    if !room || app.tables[View::Warmup.index()].visible.is_empty() {
        super::table::draw(f, app, View::Warmup, area);
        return;
    }
    let [list, charts] = if beside {
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area)
    } else {
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area)
    };
    super::table::draw(f, app, View::Warmup, list);
    draw_charts(f, app, charts);
}

/// The top of a chart's scale: the first of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 (times a
/// power of ten) at or above `v`, so the labels are round numbers.
fn nice_top(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let scale = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * scale)
        .find(|t| *t >= v * 0.999_999)
        .unwrap_or(10.0 * scale)
}

/// "3", "0.1", "2.5": a percentage without trailing zeros.
fn pct(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn selected_label(app: &App) -> String {
    let t = app.table();
    t.visible
        .get(t.selected)
        .and_then(|i| app.snap.nodes.get(*i))
        .map(|n| sanitize(&n.label).into_owned())
        .unwrap_or_default()
}

fn draw_charts(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let label = selected_label(app);
    let note = |text: &str| {
        Paragraph::new(Line::from(Span::styled(text.to_string(), th.dim()))).block(
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(format!(" {label} warm-up "), th.title())),
        )
    };
    let chart = match app.selected_warmup() {
        None => return f.render_widget(note("loading…"), area),
        Some(None) => return f.render_widget(note("no warm-up recorded for this node"), area),
        Some(Some(c)) if c.state.log.is_empty() => {
            return f.render_widget(
                note("no day closed yet: the first closes at the day boundary"),
                area,
            )
        }
        Some(Some(c)) => c,
    };
    // Tall (beside the list): one over the other. Wide, or too low to stack the rates:
    // side by side. Otherwise the rates stack beside the volumes.
    let parts = [
        Constraint::Percentage(50),
        Constraint::Percentage(25),
        Constraint::Percentage(25),
    ];
    let [volume, bounces, complaints] = if area.height >= 24 {
        Layout::vertical(parts).areas(area)
    } else if area.width >= 100 || area.height < 16 {
        Layout::horizontal(parts).areas(area)
    } else {
        let [volume, rates] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(area);
        let [bounces, complaints] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(rates);
        [volume, bounces, complaints]
    };
    f.render_widget(volume_chart(app, chart, &label), volume);
    let t = &app.cfg.warmup.thresholds;
    // The thresholds, as lines across the log's days.
    let right = (chart.state.log.len().saturating_sub(1) as f64).max(1.0);
    let across = |rate: f64| [(0.0, rate * 100.0), (right, rate * 100.0)];
    let (hold, pause, complaint) = (
        across(t.hold_bounce_rate),
        across(t.pause_bounce_rate),
        across(t.pause_complaint_rate),
    );
    f.render_widget(
        rate_chart(
            app,
            chart,
            Rates {
                title: "bounces %",
                name: "bounced",
                points: &chart.bounces,
                max: chart.max_bounces,
                lines: vec![("hold", th.warn(), &hold), ("pause", th.error(), &pause)],
            },
        ),
        bounces,
    );
    f.render_widget(
        rate_chart(
            app,
            chart,
            Rates {
                title: "complaints %",
                name: "complained",
                points: &chart.complaints,
                max: chart.max_complaints,
                lines: vec![("pause", th.error(), &complaint)],
            },
        ),
        complaints,
    );
}

/// The x axis: the log's days, labelled with the first and last dates.
fn days_axis(c: &WarmupChart) -> Axis<'static> {
    let (first, last) = c.date_span();
    Axis::default()
        .bounds([0.0, (c.state.log.len().saturating_sub(1) as f64).max(1.0)])
        .labels(vec![Span::raw(first), Span::raw(last)])
}

fn volume_chart<'a>(app: &App, c: &'a WarmupChart, label: &str) -> Chart<'a> {
    let th = app.theme;
    let mut sets = vec![
        Dataset::default()
            .name("cap")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(th.chart_plan())
            .data(&c.cap),
        Dataset::default()
            .name("• sent")
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(th.ok())
            .data(&c.sent),
    ];
    // Drawn last, over the day's dot: the days the boundary held, and paused.
    if !c.held.is_empty() {
        sets.push(
            Dataset::default()
                .name("█ held")
                .marker(Marker::Block)
                .style(th.warn())
                .data(&c.held),
        );
    }
    if !c.paused.is_empty() {
        sets.push(
            Dataset::default()
                .name("▄ paused")
                .marker(Marker::Bar)
                .style(th.error())
                .data(&c.paused),
        );
    }
    let top = nice_top(c.max_volume * 1.05);
    let s = &c.state;
    Chart::new(sets)
        .block(Block::default().borders(Borders::ALL).title(Span::styled(
            format!(" {label} · day {}/{} · cap vs sent per day ", s.day, s.days),
            th.title(),
        )))
        .x_axis(days_axis(c).style(th.dim()))
        .y_axis(
            Axis::default()
                .style(th.dim())
                .bounds([0.0, top])
                .labels(vec![
                    Span::raw("0"),
                    Span::raw(short_count((top / 2.0) as i64)),
                    Span::raw(short_count(top as i64)),
                ]),
        )
        .legend_position(Some(LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
}

/// A threshold on a rate chart: what crossing it does, its style, and its line.
type Threshold<'a> = (&'static str, Style, &'a [(f64, f64)]);

/// A rate chart: the daily rates, and the thresholds as lines across (named in the title:
/// a legend would hide the lines on a chart this small).
struct Rates<'a> {
    title: &'static str,
    name: &'static str,
    points: &'a Points,
    max: f64,
    lines: Vec<Threshold<'a>>,
}

fn rate_chart<'a>(app: &App, c: &WarmupChart, r: Rates<'a>) -> Chart<'a> {
    let th = app.theme;
    let at = |line: &[(f64, f64)]| line.first().map_or(0.0, |p| p.1);
    let highest = r.lines.iter().map(|l| at(l.2)).fold(0.0, f64::max);
    let top = nice_top(r.max.max(highest) * 1.2);
    let mut sets = Vec::with_capacity(r.lines.len() + 1);
    let mut title = vec![Span::styled(format!(" {}", r.title), th.title())];
    for (word, style, line) in r.lines {
        title.push(Span::styled(format!(" · {word} {}", pct(at(line))), style));
        sets.push(
            Dataset::default()
                .name(word)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(style)
                .data(line),
        );
    }
    title.push(Span::raw(" "));
    sets.push(
        Dataset::default()
            .name(r.name)
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .data(r.points),
    );
    Chart::new(sets)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(Line::from(title)),
        )
        .x_axis(days_axis(c).style(th.dim()))
        .y_axis(
            Axis::default()
                .style(th.dim())
                .bounds([0.0, top])
                .labels(vec![Span::raw("0"), Span::raw(pct(top))]),
        )
        .legend_position(None)
}

/// The pane Enter opens: the selected node's whole daily log, newest first.
pub fn history(f: &mut Frame, app: &mut App, area: Rect) {
    let th = app.theme;
    let label = selected_label(app);
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        if app.detail_focus {
            format!(" {label} warm-up log  (j/k/PgUp/PgDn scroll · esc back to the list) ")
        } else {
            format!(" {label} warm-up log, newest first  (enter scrolls · esc closes) ")
        },
        th.title(),
    ));
    let chart = match app.selected_warmup() {
        None => return f.render_widget(Paragraph::new("loading…").block(block), area),
        Some(None) => {
            return f.render_widget(
                Paragraph::new("no warm-up recorded for this node").block(block),
                area,
            )
        }
        Some(Some(c)) => c,
    };
    let s = &chart.state;
    let c = |t: &str| sanitize(t).into_owned();
    let mut head = vec![Span::raw(format!(
        "plan {} · day {}/{} · cap {}/day · ",
        c(&s.plan),
        s.day,
        s.days,
        short_count(s.cap)
    ))];
    let status_style = match s.status.as_str() {
        "held" => th.warn(),
        "paused" => th.error(),
        _ => th.ok(),
    };
    head.push(Span::styled(c(&s.status), status_style));
    if let Some(why) = &s.reason {
        head.push(Span::styled(format!(": {}", c(why)), status_style));
    }
    let mut lines = vec![
        Line::from(head),
        Line::from(Span::styled(
            format!(
                "{:<10} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<9} {}",
                "DATE", "DAY", "CAP", "SENT", "BOUNCE", "DEFER", "COMPL", "DECISION", "REASON"
            ),
            th.header(),
        )),
    ];
    let rate = |n: i64, of: i64| {
        if of > 0 {
            format!("{:.2}%", n as f64 * 100.0 / of as f64)
        } else {
            "-".into()
        }
    };
    let inner = area.width.saturating_sub(2) as usize;
    for d in s.log.iter().rev() {
        let style = match d.decision.as_deref() {
            Some("held") => th.warn(),
            Some("paused") => th.error(),
            None => th.dim(),
            _ => Style::default(),
        };
        let row = format!(
            "{:<10} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<9}",
            c(&d.date),
            d.day,
            short_count(d.cap),
            short_count(d.sent),
            rate(d.bounced, d.sent),
            rate(d.deferred, d.sent),
            rate(d.complaints, d.sent),
            c(d.decision.as_deref().unwrap_or("open")),
        );
        let reason = c(d.reason.as_deref().unwrap_or(""));
        // A reason too long for its column goes on a line of its own, under the row.
        if row.chars().count() + 1 + reason.chars().count() <= inner || reason.is_empty() {
            lines.push(Line::from(Span::styled(format!("{row} {reason}"), style)));
        } else {
            lines.push(Line::from(Span::styled(row, style)));
            lines.push(Line::from(Span::styled(format!("  ↳ {reason}"), style)));
        }
    }
    if s.log.is_empty() {
        lines.push(Line::from(Span::styled("  no day closed yet", th.dim())));
    }
    scrolled(f, app, area, block, lines);
}
