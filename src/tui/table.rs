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
    /// Where each row is in `visible` (by row index; `u32::MAX`: not shown): what keeps the
    /// selection on its row and lets a changed row move without sorting the rest again.
    pub pos: Vec<u32>,
    /// `filter`, parsed when it changes.
    pub parsed: Filter,
    /// What `visible` was sorted for (sort column, direction, pipeline stage), while it
    /// holds the rows `parsed` keeps, in that order: `None` once its rows are another
    /// snapshot's, and in a job's copy that has none.
    pub made_for: Option<(usize, bool, usize)>,
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

    /// Its settings (sort, filter, selection) with no rows: what a job starts from.
    pub fn without_rows(&self) -> TableState {
        TableState {
            selected: self.selected,
            offset: self.offset,
            filter: self.filter.clone(),
            sort_col: self.sort_col,
            asc: self.asc,
            visible: Vec::new(),
            pos: Vec::new(),
            parsed: self.parsed.clone(),
            made_for: None,
            marks: Default::default(),
        }
    }

    /// Takes the rows a job made, and the filter and sort they were made for (the
    /// changes to a view that arrive later go by the same filter).
    pub fn take_rows(&mut self, made: &mut TableState) {
        self.visible = std::mem::take(&mut made.visible);
        self.pos = std::mem::take(&mut made.pos);
        self.parsed = std::mem::take(&mut made.parsed);
        self.made_for = made.made_for;
    }

    pub fn selected_key(&self, app: &App, v: View) -> Option<String> {
        self.visible.get(self.selected).map(|i| key(app, v, *i))
    }

    pub fn reselect(&mut self, app: &App, v: View, keep: Option<String>) {
        if let Some(k) = keep {
            if let Some(pos) = self.find(app, v, &k) {
                self.selected = pos;
                return;
            }
        }
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    /// Where the row with key `k` is shown: through the id maps and `pos` for the views of
    /// nodes and requests, by looking in the others (a few thousand rows at most).
    fn find(&self, app: &App, v: View, k: &str) -> Option<usize> {
        let row = match v {
            View::Fleet | View::Warmup => app.node_index(k.parse().ok()?),
            View::Requests | View::Approvals | View::Pipeline => app.request_index(k.parse().ok()?),
            _ => return self.visible.iter().position(|i| key(app, v, *i) == k),
        }?;
        self.position(row)
    }

    /// Where row `row` is shown, if it is.
    pub fn position(&self, row: usize) -> Option<usize> {
        self.pos
            .get(row)
            .copied()
            .filter(|p| *p != u32::MAX)
            .map(|p| p as usize)
    }

    /// Remakes `pos` from `visible`, for `rows` rows.
    fn index_positions(&mut self, rows: usize) {
        self.pos.clear();
        self.pos.resize(rows, u32::MAX);
        for (p, i) in self.visible.iter().enumerate() {
            if let Some(slot) = self.pos.get_mut(*i) {
                *slot = u32::try_from(p).unwrap_or(u32::MAX);
            }
        }
    }

    /// `pos` again for the shown rows from position `from` on, after an insert or removal.
    fn reindex_from(&mut self, from: usize) {
        for (p, i) in self.visible.iter().enumerate().skip(from) {
            if let Some(slot) = self.pos.get_mut(*i) {
                *slot = u32::try_from(p).unwrap_or(u32::MAX);
            }
        }
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
    col("WARM-UP", 14, 3),
    col("LOAD", 5, 5),
    col("HEARTBEAT", 9, 2),
    // Days until its certificate expires.
    col("CERT", 5, 6),
    // Why a node is paused (or unhealthy, or what last changed it); on narrow screens the
    // detail pane says it.
    // Kept before the warm-up, load and certificate columns: at 120 columns an on-call
    // engineer sees why a node is out of rotation without opening it.
    col("REASON", 24, 3),
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
/// What is broken, what it is, since when, who has it, and why (which takes the rest).
const TRIAGE_COLUMNS: &[Column] = &[
    col("WHAT", 12, 0),
    col("SUBJECT", 22, 0),
    col("FOR", 4, 1),
    col("OWNER/STATE", 22, 2),
    grow(col("WHY", 30, 0)),
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
        View::Triage => TRIAGE_COLUMNS,
    }
}

pub fn default_sort(v: View) -> (usize, bool) {
    match v {
        View::Fleet => (0, true),
        View::Requests | View::Pipeline => (6, true),
        View::Approvals => (0, false),
        // The warm-ups that stopped first: paused, then held, then the healthy ones.
        View::Warmup => (4, true),
        // The worst first, then the longest open (open ones before resolved ones).
        View::Alerts => (0, true),
        // Triage keeps the order it was built in (see `tui::triage`).
        View::Blacklist | View::Events | View::Triage => (usize::MAX, true),
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

/// Which columns fit in `width`, dropping the least important first; then any dropped
/// column that fits in the room a wide one left is taken back, the most important first
/// (a wide column dropped does not leave its width empty).
pub fn fit(cols: &[Column], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    let need = |keep: &[usize]| keep.iter().map(|i| cols[*i].width + 1).sum::<u16>();
    let mut dropped = Vec::new();
    while need(&keep) > width && keep.len() > 1 {
        let drop = keep
            .iter()
            .enumerate()
            .max_by_key(|(pos, i)| (cols[**i].priority, *pos))
            .map(|(pos, _)| pos)
            .unwrap_or(0);
        dropped.push(keep.remove(drop));
    }
    // Dropped last is the most important of them.
    for c in dropped.into_iter().rev() {
        if need(&keep) + cols[c].width < width {
            let at = keep.partition_point(|k| *k < c);
            keep.insert(at, c);
        }
    }
    keep
}

/// What marking a row marks, in the views whose rows can be marked: a request, or a node
/// (in the Fleet and Warm-up views, where request actions then apply to the marked nodes'
/// requests, and node actions to the nodes).
pub fn mark_key(app: &App, v: View, i: usize) -> Option<String> {
    match v {
        View::Requests | View::Approvals | View::Pipeline => {
            app.snap.requests.get(i).map(|r| r.id.to_string())
        }
        View::Fleet | View::Warmup => app.snap.nodes.get(i).map(|n| n.id.to_string()),
        View::Blacklist | View::Events | View::Alerts | View::Triage => None,
    }
}

fn key(app: &App, v: View, i: usize) -> String {
    match v {
        View::Fleet | View::Warmup => app.snap.nodes.get(i).map(|n| n.id.to_string()),
        View::Requests | View::Approvals | View::Pipeline => {
            app.snap.requests.get(i).map(|r| r.id.to_string())
        }
        View::Blacklist => app.snap.listings.get(i).map(|l| l.id.clone()),
        View::Events => app.events.rows.get(i).map(|e| e.id.clone()),
        View::Alerts => app.snap.alerts.get(i).map(|a| a.id.clone()),
        View::Triage => app.triage.rows.get(i).map(|r| r.key.clone()),
    }
    .unwrap_or_default()
}

/// Whether row `i` is one of view `v`'s own rows, before any filter.
fn in_view(app: &App, v: View, i: usize) -> bool {
    let s = &app.snap;
    match v {
        View::Fleet => i < s.nodes.len(),
        // Warm-ups under way, and those that stopped (held, paused), so operators see why.
        View::Warmup => s.nodes.get(i).is_some_and(super::warmup::under_way),
        View::Requests => i < s.requests.len(),
        View::Approvals => s
            .requests
            .get(i)
            .is_some_and(|r| &*r.state == "pending_approval"),
        View::Pipeline => {
            let want = PIPELINE[app.pipeline_state.min(PIPELINE.len() - 1)];
            s.requests.get(i).is_some_and(|r| r.state() == want)
        }
        // Both come ordered from the store: listed (open) first, then history, newest first.
        View::Blacklist => i < s.listings.len(),
        View::Alerts => i < s.alerts.len(),
        View::Events => i < app.events.rows.len(),
        View::Triage => i < app.triage.rows.len(),
    }
}

/// How many rows view `v` chooses from.
fn row_count(app: &App, v: View) -> usize {
    let s = &app.snap;
    match v {
        View::Fleet | View::Warmup => s.nodes.len(),
        View::Requests | View::Approvals | View::Pipeline => s.requests.len(),
        View::Blacklist => s.listings.len(),
        View::Alerts => s.alerts.len(),
        View::Events => app.events.rows.len(),
        View::Triage => app.triage.rows.len(),
    }
}

/// Whether view `v` shows row `i`: its own selection, then the filter (see
/// `filter::Filter`: words and `field:value` terms, all of which must match; a leading `!`
/// keeps the rows that do not). The Events view's filter is the store's.
pub fn member(app: &App, v: View, t: &TableState, i: usize) -> bool {
    in_view(app, v, i)
        // Resolved alerts are history: shown when the filter asks about state.
        && (v != View::Alerts
            || app.snap.alerts.get(i).is_some_and(|a| a.resolved_at.is_none())
            || t.parsed.terms.iter().any(|(f, _)| *f == super::filter::Field::State))
        && (v == View::Events
            || t.parsed.is_empty()
            || match v {
                View::Fleet => app
                    .snap
                    .nodes
                    .get(i)
                    .is_some_and(|n| t.parsed.keeps(app, v, i, |w| n.mentions(w))),
                View::Requests | View::Approvals | View::Pipeline => app
                    .snap
                    .requests
                    .get(i)
                    .is_some_and(|r| t.parsed.keeps(app, v, i, |w| r.mentions(w))),
                _ => {
                    let hay = haystack(app, v, i);
                    t.parsed.keeps(app, v, i, |w| hay.contains(w))
                }
            })
}

/// The rows a view shows, in load order (before sorting).
pub fn rows(app: &App, v: View, t: &TableState) -> Vec<usize> {
    (0..row_count(app, v))
        .filter(|i| member(app, v, t, *i))
        .collect()
}

/// Row `i`'s searchable text, lower-case, in the views whose rows keep none: made when a
/// filter runs (the Warm-up view's says how each warm-up is doing, which changes with it).
fn haystack(app: &App, v: View, i: usize) -> String {
    let s = &app.snap;
    let made = match v {
        View::Fleet | View::Requests | View::Approvals | View::Pipeline => None,
        View::Warmup => s.nodes.get(i).map(|n| {
            let ip = n.ip_address.map(|ip| ip.to_string()).unwrap_or_default();
            format!(
                "{} {} {} {} {} {}",
                n.label,
                ip,
                n.region,
                n.tenant,
                n.warmup.as_ref().map(|w| &*w.plan).unwrap_or(""),
                super::warmup::health(app, i).text()
            )
            .to_lowercase()
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
            .to_lowercase()
        }),
        View::Alerts => s.alerts.get(i).map(|a| {
            format!(
                "{} {} {} {} {} {}",
                a.severity,
                a.kind,
                a.node_label.as_deref().unwrap_or(""),
                a.subject,
                a.message,
                a.acked_by
                    .as_deref()
                    .or(a.silenced_by.as_deref())
                    .unwrap_or("")
            )
            .to_lowercase()
        }),
        View::Triage => app
            .triage
            .rows
            .get(i)
            .map(|r| format!("{} {} {} {}", r.what, r.name, r.state, r.why).to_lowercase()),
        View::Events => None,
    };
    made.unwrap_or_default()
}

/// Filters and sorts view `v` from scratch, keeping the selection on its row.
pub fn rebuild(app: &App, v: View, t: &mut TableState) {
    let keep = t.selected_key(app, v);
    t.parsed = Filter::parse(&t.filter, v);
    t.visible = rows(app, v, t);
    sort(app, v, t);
    t.made_for = Some(made_for(app, t));
    t.index_positions(row_count(app, v));
    t.reselect(app, v, keep);
}

fn made_for(app: &App, t: &TableState) -> (usize, bool, usize) {
    (t.sort_col, t.asc, app.pipeline_state)
}

/// View `v` after its filter, and nothing else, changed. Typing on into a filter only
/// narrows it: the rows still shown are some of those shown now, in the same order, so
/// they are kept without sorting anything again. Only in the views whose rows change one
/// by one (`place`), while `visible` is still what `made_for` says; else `rebuild`.
pub fn refilter(app: &App, v: View, t: &mut TableState) {
    let parsed = Filter::parse(&t.filter, v);
    let narrows = matches!(
        v,
        View::Fleet | View::Warmup | View::Requests | View::Approvals | View::Pipeline
    ) && t.made_for == Some(made_for(app, t))
        && t.parsed.keeps_all_of(&parsed);
    if !narrows {
        return rebuild(app, v, t);
    }
    let keep = t.selected_key(app, v);
    t.parsed = parsed;
    let mut visible = std::mem::take(&mut t.visible);
    visible.retain(|i| member(app, v, t, *i));
    t.visible = visible;
    t.index_positions(row_count(app, v));
    t.reselect(app, v, keep);
}

/// Puts row `i`, new or changed, where view `v` now shows it (or takes it out): nothing
/// moves when it still sorts between its neighbours, so a change costs a look at two rows,
/// and a move one insert into the sorted rows, never a sort of them all.
pub fn place(app: &App, v: View, t: &mut TableState, i: usize) {
    let rows = row_count(app, v);
    if t.pos.len() < rows {
        t.pos.resize(rows, u32::MAX);
    }
    let was = t.position(i);
    let now = member(app, v, t, i);
    match (was, now) {
        (None, false) => {}
        (Some(p), true) => {
            let ok_before = p == 0 || order(app, v, t, t.visible[p - 1], i) == Ordering::Less;
            let ok_after =
                p + 1 >= t.visible.len() || order(app, v, t, i, t.visible[p + 1]) == Ordering::Less;
            if !(ok_before && ok_after) {
                remove_at(t, p);
                insert(app, v, t, i);
            }
        }
        (Some(p), false) => remove_at(t, p),
        (None, true) => insert(app, v, t, i),
    }
}

fn remove_at(t: &mut TableState, p: usize) {
    let i = t.visible.remove(p);
    if let Some(slot) = t.pos.get_mut(i) {
        *slot = u32::MAX;
    }
    t.reindex_from(p);
}

fn insert(app: &App, v: View, t: &mut TableState, i: usize) {
    let at = t
        .visible
        .partition_point(|x| order(app, v, t, *x, i) == Ordering::Less);
    t.visible.insert(at, i);
    t.reindex_from(at);
}

/// The order view `v` shows rows `a` and `b` in: by its sort column (reversed when
/// descending), then by load order, so no two rows tie.
pub fn order(app: &App, v: View, t: &TableState, a: usize, b: usize) -> Ordering {
    if t.sort_col == usize::MAX || t.sort_col >= columns(v).len() {
        return a.cmp(&b);
    }
    let o = compare(app, v, t.sort_col, a, b);
    let o = if t.asc { o } else { o.reverse() };
    o.then(a.cmp(&b))
}

/// Sorts by the table's column. `usize::MAX` keeps the load order.
pub fn sort(app: &App, v: View, t: &mut TableState) {
    let mut visible = std::mem::take(&mut t.visible);
    visible.sort_unstable_by(|a, b| order(app, v, t, *a, *b));
    t.visible = visible;
}

/// Rows `a` and `b` of view `v` by column `c`, ascending: on the rows' own fields, with no
/// text made (the columns that show words compare the words).
fn compare(app: &App, v: View, c: usize, a: usize, b: usize) -> Ordering {
    let s = &app.snap;
    match v {
        View::Fleet | View::Warmup => {
            let (Some(x), Some(y)) = (s.nodes.get(a), s.nodes.get(b)) else {
                return Ordering::Equal;
            };
            match (v, c) {
                (_, 0) => x.label.cmp(&y.label),
                (View::Fleet, 1) => x.ip_address.cmp(&y.ip_address),
                (View::Fleet, 2) | (View::Warmup, 7) => x.region.cmp(&y.region),
                (View::Fleet, 3) | (View::Warmup, 6) => x.tenant.cmp(&y.tenant),
                (View::Fleet, 4) => x.status.cmp(&y.status),
                (View::Fleet, 5) => x.reputation_score.cmp(&y.reputation_score),
                (View::Fleet, 7) => x.current_load.cmp(&y.current_load),
                (View::Fleet, 8) => y.last_heartbeat.cmp(&x.last_heartbeat),
                (View::Fleet, 9) => x.cert_expires.cmp(&y.cert_expires),
                (View::Fleet, 10) => node_reason(x).cmp(node_reason(y)),
                (View::Fleet, 6) | (View::Warmup, 1) => warm_key(x).cmp(&warm_key(y)),
                (View::Warmup, 2) => x
                    .warmup
                    .as_ref()
                    .map(|w| w.cap)
                    .cmp(&y.warmup.as_ref().map(|w| w.cap)),
                // By what the node sent on its latest day.
                (View::Warmup, 3) => {
                    let last = |n: &crate::store::ConsoleNode| {
                        n.warmup
                            .as_ref()
                            .and_then(|w| w.recent_sent.as_ref())
                            .and_then(|d| d.last().copied())
                    };
                    last(x).cmp(&last(y))
                }
                (View::Warmup, 4) => {
                    let rank = |i: usize| super::warmup::health_rank(app, i);
                    (rank(a), &x.label).cmp(&(rank(b), &y.label))
                }
                (View::Warmup, 5) => {
                    let plan =
                        |n: &crate::store::ConsoleNode| n.warmup.as_ref().map(|w| w.plan.clone());
                    plan(x).cmp(&plan(y))
                }
                _ => Ordering::Equal,
            }
        }
        View::Requests | View::Approvals | View::Pipeline => {
            let (Some(x), Some(y)) = (s.requests.get(a), s.requests.get(b)) else {
                return Ordering::Equal;
            };
            let text = |o: &Option<crate::store::Word>| o.as_deref().unwrap_or("").to_string();
            if v == View::Approvals {
                return match c {
                    0 => y.created_at.cmp(&x.created_at),
                    1 => short_id(x).cmp(&short_id(y)),
                    2 => x.tenant.cmp(&y.tenant),
                    3 => x.region.cmp(&y.region),
                    4 => x.requested_by.cmp(&y.requested_by),
                    5 => (&x.plan, x.cpu, x.memory_gb, x.storage_gb).cmp(&(
                        &y.plan,
                        y.cpu,
                        y.memory_gb,
                        y.storage_gb,
                    )),
                    6 => {
                        let rule = |r: &crate::store::ConsoleRequest| {
                            r.approval_rule
                                .as_deref()
                                .map(str::to_string)
                                .unwrap_or_else(|| text(&r.approval_reason))
                        };
                        rule(x).cmp(&rule(y))
                    }
                    7 => {
                        let full = |r| app.quotas.if_approved(r).map(|q| q.permille());
                        full(x).cmp(&full(y))
                    }
                    _ => Ordering::Equal,
                };
            }
            match c {
                0 => short_id(x).cmp(&short_id(y)),
                1 => x.tenant.cmp(&y.tenant),
                2 => x.label.cmp(&y.label),
                3 => (&x.state, x.needs_attention).cmp(&(&y.state, y.needs_attention)),
                4 => step_rank(x).cmp(&step_rank(y)),
                5 => x.steps.attempts.cmp(&y.steps.attempts),
                6 => y.created_at.cmp(&x.created_at),
                7 => note(x).cmp(note(y)),
                _ => Ordering::Equal,
            }
        }
        View::Blacklist => {
            let (Some(x), Some(y)) = (s.listings.get(a), s.listings.get(b)) else {
                return Ordering::Equal;
            };
            match c {
                0 => ip_num(&x.ip_address).cmp(&ip_num(&y.ip_address)),
                3 => {
                    severity_rank(x.severity.as_deref()).cmp(&severity_rank(y.severity.as_deref()))
                }
                5 => y.listed_at.cmp(&x.listed_at),
                6 => listed_for(app, x).cmp(&listed_for(app, y)),
                _ => cell(app, v, a, c).cmp(&cell(app, v, b, c)),
            }
        }
        View::Alerts => {
            let (Some(x), Some(y)) = (s.alerts.get(a), s.alerts.get(b)) else {
                return Ordering::Equal;
            };
            match c {
                // Open before resolved, the worst first, then the longest open.
                0 => (
                    x.resolved_at.is_some(),
                    severity_rank(Some(&x.severity)),
                    &x.raised_at,
                )
                    .cmp(&(
                        y.resolved_at.is_some(),
                        severity_rank(Some(&y.severity)),
                        &y.raised_at,
                    )),
                1 => y.raised_at.cmp(&x.raised_at),
                // Open first, then the most recently resolved.
                2 => (x.resolved_at.is_some(), &y.resolved_at)
                    .cmp(&(y.resolved_at.is_some(), &x.resolved_at)),
                _ => cell(app, v, a, c).cmp(&cell(app, v, b, c)),
            }
        }
        View::Events | View::Triage => cell(app, v, a, c).cmp(&cell(app, v, b, c)),
    }
}

fn node_reason(n: &crate::store::ConsoleNode) -> &str {
    n.status_reason.as_deref().unwrap_or("")
}

/// The last 8 hex digits of a request's id, as the ID column shows them: the low 32 bits.
fn short_id(r: &crate::store::ConsoleRequest) -> u32 {
    (r.id.as_u128() & 0xffff_ffff) as u32
}

/// How far through its steps a request is, for sorting by STEPS: the failed step first,
/// then by the state's place in the pipeline.
fn step_rank(r: &crate::store::ConsoleRequest) -> (i64, usize) {
    let state = r.state();
    (
        r.steps.failed_step.unwrap_or(i64::MAX),
        PIPELINE.iter().position(|s| *s == state).unwrap_or(0),
    )
}

/// The NOTE column's words, as far as sorting by them needs.
fn note(r: &crate::store::ConsoleRequest) -> &str {
    match (&r.error, &*r.state) {
        (_, "rolling_back") if r.wait_reason.is_some() => r.wait_reason.as_deref().unwrap_or(""),
        (Some(e), _) => e,
        (None, "pending_approval") => r.approval_rule.as_deref().unwrap_or(""),
        (None, _) => r.wait_reason.as_deref().unwrap_or(""),
    }
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

fn ip_num(ip: &str) -> u32 {
    ip.parse::<std::net::Ipv4Addr>().map(u32::from).unwrap_or(0)
}

fn ago(app: &App, ts: &str) -> String {
    parse_ts(ts)
        .map(|t| age(app.now, t))
        .unwrap_or_else(|| "-".into())
}

/// How long ago a time in unix milliseconds was.
pub fn ago_ms(app: &App, ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| age(app.now, t))
        .unwrap_or_else(|| "-".into())
}

/// The short form of an id, as people see it (see `ids::short`).
pub fn short_of(id: &uuid::Uuid) -> String {
    short(&id.to_string()).to_string()
}

/// The step cells of a request (four, or a resize's two): ✓ done, a spinner for the running
/// one, ✗ failed, · pending.
pub fn step_cells(app: &App, r: &crate::store::ConsoleRequest) -> String {
    const SPIN: [char; 4] = ['◐', '◓', '◑', '◒'];
    let state = r.state();
    let failed = r.steps.failed_step;
    let op = if r.steps.resize {
        crate::domain::Operation::Resize
    } else {
        crate::domain::Operation::Provision
    };
    let current = op.step(state).map(|s| s.position()).unwrap_or(0);
    let count = i64::try_from(op.steps().len()).unwrap_or(4);
    (1..=count)
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
                (_, 0) => n.label.to_string(),
                (View::Fleet, 1) => n
                    .ip_address
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "-".into()),
                (View::Fleet, 2) | (View::Warmup, 7) => n.region.to_string(),
                (View::Fleet, 3) | (View::Warmup, 6) => n.tenant.to_string(),
                (View::Fleet, 4) => n.status.to_string(),
                (View::Fleet, 5) => n.reputation_score.to_string(),
                (View::Fleet, 6) => super::warmup::fleet_cell(app, i, n),
                (View::Fleet, 7) => format!("{}%", n.current_load),
                (View::Fleet, 8) => n
                    .last_heartbeat
                    .map(|t| ago_ms(app, t.saturating_mul(1000)))
                    .unwrap_or_else(|| "-".into()),
                (View::Fleet, 9) => cert_days(app, n.cert_expires),
                (View::Fleet, 10) => n.status_reason.as_deref().unwrap_or_default().to_string(),
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
                (View::Warmup, 3) => match app.sparks.get(i).and_then(|s| s.as_deref()) {
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
                    0 => ago_ms(app, r.created_at),
                    1 => short_of(&r.id),
                    2 => r.tenant.to_string(),
                    3 => r.region.to_string(),
                    4 => r.requested_by.to_string(),
                    5 => format!("{}: {}c {}G {}G", r.plan, r.cpu, r.memory_gb, r.storage_gb),
                    // The rule's name; why it matched is in the detail pane.
                    6 => r
                        .approval_rule
                        .as_deref()
                        .or(r.approval_reason.as_deref())
                        .unwrap_or_default()
                        .to_string(),
                    7 => app
                        .quotas
                        .if_approved(r)
                        .map(|q| format!("{} {}/{}", q.name, q.used, q.limit))
                        .unwrap_or_else(|| "-".into()),
                    _ => String::new(),
                }
            } else {
                match c {
                    0 => short_of(&r.id),
                    1 => r.tenant.to_string(),
                    2 => r.label.to_string(),
                    3 => {
                        if r.needs_attention {
                            format!("{} !", r.state)
                        } else {
                            r.state.to_string()
                        }
                    }
                    4 => step_cells(app, r),
                    5 => r.steps.attempts.to_string(),
                    6 => ago_ms(app, r.created_at),
                    7 => match (&r.error, &*r.state) {
                        // A rollback's own trouble (a retry, a stall) before why it failed.
                        (_, "rolling_back") if r.wait_reason.is_some() => {
                            r.wait_reason.as_deref().unwrap_or_default().to_string()
                        }
                        (Some(e), _) => e.to_string(),
                        (None, "pending_approval") => format!(
                            "awaiting approval: {}",
                            r.approval_rule.as_deref().unwrap_or("a rule")
                        ),
                        (None, _) => r.wait_reason.as_deref().unwrap_or_default().to_string(),
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
                    None => match a.state_at(&crate::clock::ts(app.now)) {
                        "silenced" => {
                            format!("silenced by {}", a.silenced_by.as_deref().unwrap_or("?"))
                        }
                        "acked" => format!("acked by {}", a.acked_by.as_deref().unwrap_or("?")),
                        other => other.to_string(),
                    },
                },
                3 => a.kind.clone(),
                4 => a.node_label.clone().unwrap_or_else(|| "-".into()),
                5 => a.message.clone(),
                _ => String::new(),
            }
        }
        View::Triage => {
            let Some(r) = app.triage.rows.get(i) else {
                return String::new();
            };
            match c {
                0 => r.what.clone(),
                1 => r.name.clone(),
                2 => r
                    .since
                    .map(|t| age(app.now, t))
                    .unwrap_or_else(|| "-".into()),
                3 => r.state.clone(),
                4 => r.why.clone(),
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

/// `created_at` in unix milliseconds.
pub fn sla(app: &App, created_at: i64) -> Sla {
    let Some(since) = chrono::DateTime::from_timestamp_millis(created_at) else {
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
        View::Triage => {
            let r = app.triage.rows.get(i)?;
            return (c == 0).then(|| th.severity(r.severity));
        }
        _ => return None,
    }
    let r = app.snap.requests.get(i)?;
    match c {
        0 => match sla(app, r.created_at) {
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
        View::Events | View::Triage => None,
    }
    .unwrap_or_default()
}
