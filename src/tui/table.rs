//! The lists every view shows: which rows (filter), in what order (sort), and the text of
//! a row's cells. Rows are indices into the snapshot; filtering and sorting run when data or
//! the filter changes, and cells are made only for the rows on screen.

use super::action::View;
use super::app::{App, PIPELINE};
use super::filter::Filter;
use crate::clock::{age, parse_ts};
use crate::domain::ids::short;
use crate::domain::validate::sanitize;
use crate::domain::RequestState;
use ratatui::style::Style;
use std::cmp::Ordering;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default)]
pub struct TableState {
    pub selected: usize,
    pub offset: usize,
    pub filter: String,
    pub sort_col: usize,
    pub asc: bool,
    pub visible: Vec<usize>,
    /// Marked rows, by what they stand for (see `mark_key`): request ids, or node ids in
    /// the views that list nodes.
    pub marks: BTreeSet<String>,
}

impl TableState {
    pub fn new((col, asc): (usize, bool)) -> Self {
        Self {
            sort_col: col,
            asc,
            ..Default::default()
        }
    }

    pub fn selected_key(&self, app: &App, v: View) -> Option<String> {
        self.visible.get(self.selected).map(|i| key(app, v, *i))
    }

    pub fn reselect(&mut self, app: &App, v: View, keep: Option<String>) {
        if let Some(k) = keep {
            if let Some(pos) = self.visible.iter().position(|i| key(app, v, *i) == k) {
                self.selected = pos;
                return;
            }
        }
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    /// Keeps the selection on screen for a window of `height` rows; returns the first row.
    pub fn scroll(&mut self, height: usize) -> usize {
        if height == 0 {
            return 0;
        }
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        self.offset = self.offset.min(
            self.visible
                .len()
                .saturating_sub(height.min(self.visible.len())),
        );
        self.offset
    }
}

/// A column: its title, width, and how important it is when the screen is narrow (lower
/// numbers stay longest).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub width: u16,
    pub priority: u8,
    /// Takes the width left over (else the last column shown does).
    pub grow: bool,
}

const fn col(title: &'static str, width: u16, priority: u8) -> Column {
    Column {
        title,
        width,
        priority,
        grow: false,
    }
}

const fn grow(c: Column) -> Column {
    Column { grow: true, ..c }
}

const FLEET_COLUMNS: &[Column] = &[
    col("LABEL", 18, 0),
    col("IP", 15, 1),
    col("REGION", 10, 3),
    col("TENANT", 8, 4),
    col("STATUS", 14, 0),
    col("REP", 4, 2),
    col("WARM-UP", 14, 6),
    col("LOAD", 5, 5),
    col("HEARTBEAT", 9, 2),
    // Days until its certificate expires.
    col("CERT", 5, 6),
    // Why a node is paused (or unhealthy, or what last changed it); on narrow screens the
    // detail pane says it.
    col("REASON", 24, 7),
];
const REQUESTS_COLUMNS: &[Column] = &[
    col("ID", 8, 0),
    col("TENANT", 8, 3),
    col("LABEL", 18, 1),
    col("STATE", 16, 0),
    col("STEPS", 7, 2),
    col("ATT", 3, 5),
    col("AGE", 4, 4),
    col("NOTE", 30, 6),
];
const APPROVALS_COLUMNS: &[Column] = &[
    col("AGE", 5, 0),
    col("ID", 8, 0),
    col("TENANT", 8, 1),
    col("REGION", 9, 4),
    col("REQUESTER", 10, 3),
    col("RESOURCES", 20, 2),
    grow(col("RULE", 24, 5)),
    col("QUOTA IF APPROVED", 16, 2),
];
/// At 80 columns: IP, NODE, ZONE, MEANING and FOR; at 110 the severity and the delist URL
/// too; since when (in UTC, like the Events view) and the reason need about 160. The delist
/// URL, last, takes the width left over.
const BLACKLIST_COLUMNS: &[Column] = &[
    col("IP", 15, 0),
    col("NODE", 16, 1),
    col("ZONE", 22, 0),
    col("SEVERITY", 8, 2),
    col("MEANING", 10, 1),
    col("LISTED (UTC)", 15, 4),
    col("FOR", 5, 1),
    col("REASON", 24, 5),
    col("DELIST URL", 24, 3),
];
const ALERTS_COLUMNS: &[Column] = &[
    col("SEVERITY", 8, 0),
    col("RAISED", 6, 1),
    col("STATE", 16, 2),
    col("KIND", 9, 3),
    col("NODE", 16, 1),
    col("WHAT", 24, 0),
];
/// HEALTH says why a warm-up stopped, so it keeps the width left over.
const WARMUP_COLUMNS: &[Column] = &[
    col("LABEL", 18, 0),
    col("DAY", 7, 0),
    col("CAP", 6, 2),
    col("LAST 14 DAYS", 14, 1),
    grow(col("HEALTH", 24, 0)),
    col("PLAN", 13, 5),
    col("TENANT", 8, 3),
    col("REGION", 10, 4),
];
const EVENTS_COLUMNS: &[Column] = &[
    col("TIME", 19, 0),
    col("EVENT", 28, 0),
    col("REQUEST", 8, 1),
    col("TENANT", 8, 2),
    col("ACTOR", 24, 3),
];

pub fn columns(v: View) -> &'static [Column] {
    match v {
        View::Fleet => FLEET_COLUMNS,
        View::Requests | View::Pipeline => REQUESTS_COLUMNS,
        View::Approvals => APPROVALS_COLUMNS,
        View::Blacklist => BLACKLIST_COLUMNS,
        View::Warmup => WARMUP_COLUMNS,
        View::Events => EVENTS_COLUMNS,
        View::Alerts => ALERTS_COLUMNS,
    }
}

pub fn default_sort(v: View) -> (usize, bool) {
    match v {
        View::Fleet => (0, true),
        View::Requests | View::Pipeline => (6, true),
        View::Approvals => (0, false),
        // The warm-ups that stopped first: paused, then held, then the healthy ones.
        View::Warmup => (4, true),
        View::Blacklist | View::Events | View::Alerts => (usize::MAX, true),
    }
}

/// The Shift+letter that sorts by each column of a view: the first letter of the column's
/// title that no key binding and no earlier column has taken (REGION after R is bound to
/// roll back sorts on E). `None` for a column with no free letter.
pub fn sort_letters(v: View, taken: impl Fn(char) -> bool) -> Vec<Option<char>> {
    let mut used: Vec<char> = Vec::new();
    columns(v)
        .iter()
        .map(|c| {
            let pick = c
                .title
                .chars()
                .filter(|ch| ch.is_ascii_uppercase())
                .find(|ch| !taken(*ch) && !used.contains(ch));
            if let Some(ch) = pick {
                used.push(ch);
            }
            pick
        })
        .collect()
}

/// Which columns fit in `width`, dropping the least important first.
pub fn fit(cols: &[Column], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    let need = |keep: &[usize]| keep.iter().map(|i| cols[*i].width + 1).sum::<u16>();
    while need(&keep) > width && keep.len() > 1 {
        let drop = keep
            .iter()
            .enumerate()
            .max_by_key(|(pos, i)| (cols[**i].priority, *pos))
            .map(|(pos, _)| pos)
            .unwrap_or(0);
        keep.remove(drop);
    }
    keep
}

/// What marking a row marks, in the views whose rows can be marked: a request, or a node
/// (in the Fleet and Warm-up views, where request actions then apply to the marked nodes'
/// requests, and node actions to the nodes).
pub fn mark_key(app: &App, v: View, i: usize) -> Option<String> {
    match v {
        View::Requests | View::Approvals | View::Pipeline => {
            app.snap.requests.get(i).map(|r| r.id.clone())
        }
        View::Fleet | View::Warmup => app.snap.nodes.get(i).map(|n| n.id.clone()),
        View::Blacklist | View::Events | View::Alerts => None,
    }
}

fn key(app: &App, v: View, i: usize) -> String {
    match v {
        View::Fleet | View::Warmup => app.snap.nodes.get(i).map(|n| n.id.clone()),
        View::Requests | View::Approvals | View::Pipeline => {
            app.snap.requests.get(i).map(|r| r.id.clone())
        }
        View::Blacklist => app.snap.listings.get(i).map(|l| l.id.clone()),
        View::Events => app.events.rows.get(i).map(|e| e.id.clone()),
        View::Alerts => app.snap.alerts.get(i).map(|a| a.id.clone()),
    }
    .unwrap_or_default()
}

/// The rows a view shows before sorting: its own selection, then the filter (see
/// `filter::Filter`: words and `field:value` terms, all of which must match; a leading `!`
/// keeps the rows that do not).
pub fn rows(app: &App, v: View, t: &TableState) -> Vec<usize> {
    let s = &app.snap;
    let base: Vec<usize> = match v {
        View::Fleet => (0..s.nodes.len()).collect(),
        // Warm-ups under way, and those that stopped (held, paused), so operators see why.
        View::Warmup => (0..s.nodes.len())
            .filter(|i| super::warmup::under_way(&s.nodes[*i]))
            .collect(),
        View::Requests => (0..s.requests.len()).collect(),
        View::Approvals => (0..s.requests.len())
            .filter(|i| &*s.requests[*i].state == "pending_approval")
            .collect(),
        View::Pipeline => {
            let want = PIPELINE[app.pipeline_state.min(PIPELINE.len() - 1)];
            (0..s.requests.len())
                .filter(|i| s.requests[*i].state() == want)
                .collect()
        }
        // Both come ordered from the store: listed (open) first, then history, newest first.
        View::Blacklist => (0..s.listings.len()).collect(),
        View::Alerts => (0..s.alerts.len()).collect(),
        View::Events => (0..app.events.rows.len()).collect(),
    };
    if t.filter.is_empty() || v == View::Events {
        return base;
    }
    let filter = Filter::parse(&t.filter, v);
    if filter.is_empty() {
        return base;
    }
    base.into_iter()
        .filter(|i| filter.keeps(app, v, *i, || haystack(app, v, *i)))
        .collect()
}

fn haystack(app: &App, v: View, i: usize) -> String {
    let s = &app.snap;
    match v {
        View::Fleet => s.nodes.get(i).map(|n| {
            format!(
                "{} {} {} {} {} {}",
                n.label,
                n.ip_address.as_deref().unwrap_or(""),
                n.region,
                n.tenant,
                n.status,
                n.status_reason.as_deref().unwrap_or("")
            )
        }),
        View::Warmup => s.nodes.get(i).map(|n| {
            format!(
                "{} {} {} {} {} {}",
                n.label,
                n.ip_address.as_deref().unwrap_or(""),
                n.region,
                n.tenant,
                n.warmup.as_ref().map(|w| &*w.plan).unwrap_or(""),
                super::warmup::health(app, i).text()
            )
        }),
        View::Requests | View::Approvals | View::Pipeline => s.requests.get(i).map(|r| {
            format!(
                "{} {} {} {} {} {} {} {}",
                short(&r.id),
                r.tenant,
                r.label,
                r.state,
                r.region,
                r.approval_rule.as_deref().unwrap_or(""),
                r.error.as_deref().unwrap_or(""),
                r.wait_reason.as_deref().unwrap_or("")
            )
        }),
        View::Blacklist => s.listings.get(i).map(|l| {
            format!(
                "{} {} {} {} {} {}",
                l.ip_address,
                l.node_label.as_deref().unwrap_or(""),
                l.zone,
                l.meaning.as_deref().unwrap_or(""),
                l.severity.as_deref().unwrap_or(""),
                l.details.as_deref().unwrap_or("")
            )
        }),
        View::Alerts => s.alerts.get(i).map(|a| {
            format!(
                "{} {} {} {} {}",
                a.severity,
                a.kind,
                a.node_label.as_deref().unwrap_or(""),
                a.subject,
                a.message
            )
        }),
        View::Events => None,
    }
    .unwrap_or_default()
    .to_lowercase()
}

/// Sorts by the table's column. `usize::MAX` keeps the load order.
pub fn sort(app: &App, v: View, t: &mut TableState) {
    if t.sort_col == usize::MAX || t.sort_col >= columns(v).len() {
        return;
    }
    let c = t.sort_col;
    let s = &app.snap;
    let cmp = |a: &usize, b: &usize| -> Ordering {
        match v {
            View::Fleet | View::Warmup => {
                let (x, y) = (&s.nodes[*a], &s.nodes[*b]);
                match (v, c) {
                    (View::Fleet, 5) => x.reputation_score.cmp(&y.reputation_score),
                    (View::Fleet, 7) => x.current_load.cmp(&y.current_load),
                    (View::Fleet, 8) => y.last_heartbeat.cmp(&x.last_heartbeat),
                    (View::Fleet, 9) => x.cert_expires.cmp(&y.cert_expires),
                    (View::Fleet, 6) | (View::Warmup, 1) => warm_key(x).cmp(&warm_key(y)),
                    (View::Warmup, 2) => x
                        .warmup
                        .as_ref()
                        .map(|w| w.cap)
                        .cmp(&y.warmup.as_ref().map(|w| w.cap)),
                    // By what the node sent on its latest day.
                    (View::Warmup, 3) => {
                        let last =
                            |i: &usize| s.warmup.recent_sent.get(i).and_then(|d| d.last().copied());
                        last(a).cmp(&last(b))
                    }
                    (View::Warmup, 4) => {
                        let rank = |i: &usize| super::warmup::health_rank(app, *i);
                        (rank(a), &x.label).cmp(&(rank(b), &y.label))
                    }
                    (View::Fleet, 1) => ip_key(&x.ip_address).cmp(&ip_key(&y.ip_address)),
                    _ => cell(app, v, *a, c).cmp(&cell(app, v, *b, c)),
                }
            }
            View::Requests | View::Approvals | View::Pipeline => {
                let (x, y) = (&s.requests[*a], &s.requests[*b]);
                match (v, c) {
                    (View::Approvals, 0) | (View::Requests | View::Pipeline, 6) => {
                        y.created_at.cmp(&x.created_at)
                    }
                    (View::Approvals, 7) => {
                        let full = |r| app.quotas.if_approved(r).map(|q| q.permille());
                        full(x).cmp(&full(y))
                    }
                    _ => cell(app, v, *a, c).cmp(&cell(app, v, *b, c)),
                }
            }
            View::Blacklist => {
                let (x, y) = (&s.listings[*a], &s.listings[*b]);
                match c {
                    0 => ip_num(&x.ip_address).cmp(&ip_num(&y.ip_address)),
                    3 => severity_rank(x.severity.as_deref())
                        .cmp(&severity_rank(y.severity.as_deref())),
                    5 => y.listed_at.cmp(&x.listed_at),
                    6 => listed_for(app, x).cmp(&listed_for(app, y)),
                    _ => cell(app, v, *a, c).cmp(&cell(app, v, *b, c)),
                }
            }
            View::Alerts => {
                let (x, y) = (&s.alerts[*a], &s.alerts[*b]);
                match c {
                    0 => severity_rank(Some(&x.severity)).cmp(&severity_rank(Some(&y.severity))),
                    1 => y.raised_at.cmp(&x.raised_at),
                    // Open first, then the most recently resolved.
                    2 => (x.resolved_at.is_some(), &y.resolved_at)
                        .cmp(&(y.resolved_at.is_some(), &x.resolved_at)),
                    _ => cell(app, v, *a, c).cmp(&cell(app, v, *b, c)),
                }
            }
            _ => cell(app, v, *a, c).cmp(&cell(app, v, *b, c)),
        }
    };
    t.visible
        .sort_by(|a, b| if t.asc { cmp(a, b) } else { cmp(b, a) });
}

/// Warm-up progress as a sort key: the share of the plan done, then the day.
fn warm_key(n: &crate::store::ConsoleNode) -> (i64, i64) {
    n.warmup
        .as_ref()
        .filter(|w| &*w.status != "completed")
        .map(|w| (w.day * 10_000 / w.days.max(1), w.day))
        .unwrap_or((i64::MAX, 0))
}

/// 950, 9.5k, 95k, 1.2M: a daily volume in at most five characters.
pub fn short_count(n: i64) -> String {
    match n {
        n if n < 10_000 => n.to_string(),
        n if n < 1_000_000 => format!("{}k", n / 1000),
        n => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// high, medium, low, then none: the order to worry in.
pub fn severity_rank(s: Option<&str>) -> u8 {
    match s {
        Some("high") => 0,
        Some("medium") => 1,
        Some("low") => 2,
        _ => 3,
    }
}

/// How long a listing lasted, or has lasted so far.
fn listed_for(app: &App, l: &crate::store::ListingRow) -> chrono::Duration {
    let from = parse_ts(&l.listed_at);
    let to = match &l.delisted_at {
        Some(d) => parse_ts(d),
        None => Some(app.now),
    };
    match (from, to) {
        (Some(from), Some(to)) => to - from,
        _ => chrono::Duration::zero(),
    }
}

fn ip_key(ip: &Option<String>) -> u32 {
    ip.as_deref().map(ip_num).unwrap_or(0)
}

fn ip_num(ip: &str) -> u32 {
    ip.parse::<std::net::Ipv4Addr>().map(u32::from).unwrap_or(0)
}

fn ago(app: &App, ts: &str) -> String {
    parse_ts(ts)
        .map(|t| age(app.now, t))
        .unwrap_or_else(|| "-".into())
}

/// The four step cells of a request: ✓ done, a spinner for the running one, ✗ failed, · pending.
pub fn step_cells(app: &App, r: &crate::store::ConsoleRequest) -> String {
    const SPIN: [char; 4] = ['◐', '◓', '◑', '◒'];
    let state = r.state();
    let failed = r.steps.failed_step;
    let current = state.step().map(|s| s.position()).unwrap_or(0);
    (1..=4)
        .map(|p| {
            if Some(p) == failed {
                '✗'
            } else if state == RequestState::Completed
                || state == RequestState::Suspended
                || (current > 0 && p < current)
            {
                '✓'
            } else if p == current && state.is_in_flight() {
                SPIN[(app.tick as usize) % SPIN.len()]
            } else if p == current && state == RequestState::AwaitingInput {
                '?'
            } else if failed.is_some_and(|f| p < f) {
                '✓'
            } else {
                '·'
            }
        })
        .collect()
}

/// Days until a certificate expires: "63d", "exp" once it has, "-" without one.
pub fn cert_days(app: &App, expires: Option<i64>) -> String {
    match expires {
        None => "-".into(),
        Some(t) => {
            let left = (t - app.now.timestamp()).div_euclid(86_400);
            if left < 0 {
                "exp".into()
            } else {
                format!("{left}d")
            }
        }
    }
}

/// The text of one cell, sanitized: nothing from outside reaches the terminal raw.
pub fn cell(app: &App, v: View, i: usize, c: usize) -> String {
    let s = &app.snap;
    let text: String = match v {
        View::Fleet | View::Warmup => {
            let Some(n) = s.nodes.get(i) else {
                return String::new();
            };
            match (v, c) {
                (_, 0) => n.label.clone(),
                (View::Fleet, 1) => n.ip_address.clone().unwrap_or_else(|| "-".into()),
                (View::Fleet, 2) | (View::Warmup, 7) => n.region.to_string(),
                (View::Fleet, 3) | (View::Warmup, 6) => n.tenant.to_string(),
                (View::Fleet, 4) => n.status.to_string(),
                (View::Fleet, 5) => n.reputation_score.to_string(),
                (View::Fleet, 6) => super::warmup::fleet_cell(app, i, n),
                (View::Fleet, 7) => format!("{}%", n.current_load),
                (View::Fleet, 8) => n
                    .last_heartbeat
                    .as_deref()
                    .map(|t| ago(app, t))
                    .unwrap_or_else(|| "-".into()),
                (View::Fleet, 9) => cert_days(app, n.cert_expires),
                (View::Fleet, 10) => n.status_reason.clone().unwrap_or_default(),
                (View::Warmup, 1) => n
                    .warmup
                    .as_ref()
                    .map(|w| format!("{}/{}", w.day, w.days))
                    .unwrap_or_else(|| "-".into()),
                (View::Warmup, 2) => n
                    .warmup
                    .as_ref()
                    .map(|w| short_count(w.cap))
                    .unwrap_or_else(|| "-".into()),
                // Right-aligned, so today lines up on every row.
                (View::Warmup, 3) => match app.sparks.get(&i) {
                    Some(spark) => format!("{spark:>14}"),
                    None => "-".into(),
                },
                (View::Warmup, 4) => super::warmup::health(app, i).text(),
                (View::Warmup, 5) => n
                    .warmup
                    .as_ref()
                    .map(|w| w.plan.to_string())
                    .unwrap_or_else(|| "-".into()),
                _ => String::new(),
            }
        }
        View::Requests | View::Pipeline | View::Approvals => {
            let Some(r) = s.requests.get(i) else {
                return String::new();
            };
            if v == View::Approvals {
                match c {
                    0 => ago(app, &r.created_at),
                    1 => short(&r.id).to_string(),
                    2 => r.tenant.to_string(),
                    3 => r.region.to_string(),
                    4 => r.requested_by.to_string(),
                    5 => format!("{}: {}c {}G {}G", r.plan, r.cpu, r.memory_gb, r.storage_gb),
                    // The rule's name; why it matched is in the detail pane.
                    6 => r
                        .approval_rule
                        .as_deref()
                        .map(str::to_string)
                        .or(r.approval_reason.clone())
                        .unwrap_or_default(),
                    7 => app
                        .quotas
                        .if_approved(r)
                        .map(|q| format!("{} {}/{}", q.name, q.used, q.limit))
                        .unwrap_or_else(|| "-".into()),
                    _ => String::new(),
                }
            } else {
                match c {
                    0 => short(&r.id).to_string(),
                    1 => r.tenant.to_string(),
                    2 => r.label.clone(),
                    3 => {
                        if r.needs_attention {
                            format!("{} !", r.state)
                        } else {
                            r.state.to_string()
                        }
                    }
                    4 => step_cells(app, r),
                    5 => r.steps.attempts.to_string(),
                    6 => ago(app, &r.created_at),
                    7 => match (&r.error, &*r.state) {
                        // A rollback's own trouble (a retry, a stall) before why it failed.
                        (_, "rolling_back") if r.wait_reason.is_some() => {
                            r.wait_reason.clone().unwrap_or_default()
                        }
                        (Some(e), _) => e.clone(),
                        (None, "pending_approval") => format!(
                            "awaiting approval: {}",
                            r.approval_rule.as_deref().unwrap_or("a rule")
                        ),
                        (None, _) => r.wait_reason.clone().unwrap_or_default(),
                    },
                    _ => String::new(),
                }
            }
        }
        View::Blacklist => {
            let Some(l) = s.listings.get(i) else {
                return String::new();
            };
            match c {
                0 => l.ip_address.clone(),
                1 => l.node_label.clone().unwrap_or_else(|| "-".into()),
                2 => l.zone.clone(),
                3 => l.severity.clone().unwrap_or_else(|| "-".into()),
                4 => l.meaning.clone().or(l.code.clone()).unwrap_or_default(),
                5 => match parse_ts(&l.listed_at) {
                    Some(t) => format!("{} {}", t.format("%m-%d %H:%M"), age(app.now, t)),
                    None => "-".into(),
                },
                6 => match (&l.delisted_at, parse_ts(&l.listed_at)) {
                    (Some(d), Some(from)) => {
                        parse_ts(d).map(|to| age(to, from)).unwrap_or_default()
                    }
                    (None, Some(from)) => age(app.now, from),
                    _ => String::new(),
                },
                7 => {
                    let state = if l.delisted_at.is_some() {
                        "delisted"
                    } else {
                        "LISTED"
                    };
                    format!("{state}: {}", l.details.as_deref().unwrap_or(""))
                }
                8 => l
                    .details
                    .as_deref()
                    .and_then(crate::reputation::dnsbl::delist_url)
                    .unwrap_or("-")
                    .to_string(),
                _ => String::new(),
            }
        }
        View::Alerts => {
            let Some(a) = s.alerts.get(i) else {
                return String::new();
            };
            match c {
                0 => a.severity.clone(),
                1 => ago(app, &a.raised_at),
                2 => match &a.resolved_at {
                    Some(t) => format!("resolved {} ago", ago(app, t)),
                    None => "open".into(),
                },
                3 => a.kind.clone(),
                4 => a.node_label.clone().unwrap_or_else(|| "-".into()),
                5 => a.message.clone(),
                _ => String::new(),
            }
        }
        View::Events => {
            let Some(e) = app.events.rows.get(i) else {
                return String::new();
            };
            match c {
                0 => e.at.get(..19).unwrap_or(&e.at).replace('T', " "),
                1 => e.name.clone(),
                2 => e
                    .request_id
                    .as_deref()
                    .map(short)
                    .unwrap_or("-")
                    .to_string(),
                3 => e.tenant.clone().unwrap_or_else(|| "-".into()),
                4 => e.actor.clone(),
                _ => String::new(),
            }
        }
    };
    match sanitize(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}

/// How long a request has waited against the approval SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sla {
    Fresh,
    /// Older than `approvals.warn_after`.
    Warn,
    /// Older than `approvals.breach_after`.
    Breach,
}

pub fn sla(app: &App, created_at: &str) -> Sla {
    let Some(since) = parse_ts(created_at) else {
        return Sla::Fresh;
    };
    let waited = (app.now - since).to_std().unwrap_or_default();
    let a = &app.cfg.approvals;
    if waited > a.breach_after {
        Sla::Breach
    } else if waited > a.warn_after {
        Sla::Warn
    } else {
        Sla::Fresh
    }
}

/// The style of a cell beyond its row's: the Approvals view's AGE by SLA, and its quota
/// column by how full approving would make the tenant; in the Blacklist and Alerts views
/// an open row's severity by how bad it is, and closed rows (history) dimmed.
pub fn cell_style(app: &App, v: View, i: usize, c: usize) -> Option<Style> {
    let th = app.theme;
    let closed_or_severity = |closed: bool, severity: Option<&str>, sev_col: bool| {
        if closed {
            Some(th.dim())
        } else if sev_col {
            severity.map(|s| th.severity(s))
        } else {
            None
        }
    };
    match v {
        View::Approvals => {}
        View::Warmup if c == 4 => return Some(super::warmup::health(app, i).style(&th)),
        View::Blacklist => {
            let l = app.snap.listings.get(i)?;
            return closed_or_severity(l.delisted_at.is_some(), l.severity.as_deref(), c == 3);
        }
        View::Alerts => {
            let a = app.snap.alerts.get(i)?;
            return closed_or_severity(a.resolved_at.is_some(), Some(&a.severity), c == 0);
        }
        _ => return None,
    }
    let r = app.snap.requests.get(i)?;
    match c {
        0 => match sla(app, &r.created_at) {
            Sla::Fresh => None,
            Sla::Warn => Some(th.warn()),
            Sla::Breach => Some(th.error()),
        },
        7 => {
            let q = app.quotas.if_approved(r)?;
            if q.over() {
                Some(th.error())
            } else if q.permille() >= 900 {
                Some(th.warn())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The status-like cell of a row, to colour it.
pub fn status_of(app: &App, v: View, i: usize) -> &str {
    match v {
        View::Fleet | View::Warmup => app.snap.nodes.get(i).map(|n| &*n.status),
        View::Requests | View::Pipeline | View::Approvals => {
            app.snap.requests.get(i).map(|r| &*r.state)
        }
        View::Blacklist => app.snap.listings.get(i).map(|l| {
            if l.delisted_at.is_none() {
                "listed"
            } else {
                "delisted"
            }
        }),
        View::Alerts => app.snap.alerts.get(i).map(|a| {
            if a.resolved_at.is_none() {
                "open"
            } else {
                "resolved"
            }
        }),
        View::Events => None,
    }
    .unwrap_or_default()
}
