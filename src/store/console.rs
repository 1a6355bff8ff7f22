//! What the console reads: one consistent snapshot of the fleet, requests, listings and
//! alerts, taken in a single read transaction so counts and rows agree. Rows carry only what
//! the console shows, and repeated words (tenants, regions, plans, states) are shared, so
//! 100,000 nodes stay small in memory.

use super::{rows, Store, StoreError, Usage};
use crate::domain::RequestState;
use crate::store::sql::params;
use crate::store::sql::ValueRef;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use uuid::Uuid;

/// A word many rows share (a tenant, region, plan, state): one copy of its text, which
/// each row points at with 8 bytes (an `Arc<str>` takes 16).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Word(Arc<Box<str>>);

impl std::ops::Deref for Word {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

// Ordered, compared and hashed as its text, so maps keyed by words are looked up by text.
impl std::borrow::Borrow<str> for Word {
    fn borrow(&self) -> &str {
        self
    }
}

impl From<&str> for Word {
    fn from(s: &str) -> Word {
        Word(Arc::new(Box::from(s)))
    }
}

impl From<String> for Word {
    fn from(s: String) -> Word {
        Word(Arc::new(s.into_boxed_str()))
    }
}

/// Per request: attempts over all steps, and which step (1–4) failed, if one did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepSummary {
    pub attempts: i64,
    pub failed_step: Option<i64>,
    /// The request is a resize: its two steps (resize, confirm), not provisioning's four.
    pub resize: bool,
}

/// A request as the console lists it: only what its views draw, sort and filter on, with
/// repeated words shared and times as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleRequest {
    pub id: Uuid,
    pub tenant: Word,
    pub region: Word,
    pub plan: Word,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    pub label: Box<str>,
    /// The domain the request named (`None`: the default one).
    pub domain: Option<Box<str>>,
    pub state: Word,
    pub requested_by: Word,
    pub approval_rule: Option<Word>,
    pub approval_reason: Option<Word>,
    pub wait_reason: Option<Word>,
    pub error: Option<Word>,
    pub needs_attention: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub steps: StepSummary,
    /// Which of the words a filter searches have upper-case letters, made when the row
    /// arrives (see `Searched`).
    pub upper: Searched,
}

impl ConsoleRequest {
    pub fn state(&self) -> RequestState {
        self.state.parse().unwrap_or(RequestState::Failed)
    }

    /// The words a filter searches: the short id (hex, lower-case), tenant, label, state,
    /// region, approval rule, error, wait reason.
    fn searched(&self) -> [&str; 7] {
        [
            &self.tenant,
            &self.label,
            &self.state,
            &self.region,
            self.approval_rule.as_deref().unwrap_or(""),
            self.error.as_deref().unwrap_or(""),
            self.wait_reason.as_deref().unwrap_or(""),
        ]
    }

    /// Notes which searched words need folding: once per row, when it arrives.
    pub fn index(&mut self) {
        self.upper = Searched::of(&self.searched());
    }

    /// Whether `word` (lower-case) is in any of the words a filter searches.
    pub fn mentions(&self, word: &str) -> bool {
        // The short id is written out only for a word that could be part of it.
        let short = only_of(word, |b| b.is_ascii_hexdigit())
            && written(format_args!(
                "{:08x}",
                (self.id.as_u128() & 0xffff_ffff) as u32
            ))
            .contains(word);
        short || self.upper.any_contains(&self.searched(), word)
    }
}

/// Whether every byte of `word` passes `ok`.
fn only_of(word: &str, ok: impl Fn(u8) -> bool) -> bool {
    word.bytes().all(ok)
}

/// Short text (an address, an id) written out on the stack: no copy of it is kept or
/// allocated. Text that does not fit comes back cut short.
fn written(args: std::fmt::Arguments<'_>) -> StackText {
    use std::io::Write;
    let mut t = StackText([0; 48], 0);
    let mut out = std::io::Cursor::new(&mut t.0[..]);
    let _ = out.write_fmt(args);
    t.1 = usize::try_from(out.position()).unwrap_or(0);
    t
}

struct StackText([u8; 48], usize);

impl StackText {
    fn contains(&self, word: &str) -> bool {
        std::str::from_utf8(&self.0[..self.1]).is_ok_and(|text| text.contains(word))
    }
}

/// Per row, which of the words a filter searches have upper-case letters: those are
/// lower-cased when a filter runs, the rest (nearly all: labels, tenants, states) are
/// searched as they are, so filtering makes no copy of a row's text and the row keeps
/// none. A row made by hand is not indexed yet (`is_indexed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Searched(u16);

impl Searched {
    const INDEXED: u16 = 1 << 15;

    fn of(words: &[&str]) -> Searched {
        let mut bits = Self::INDEXED;
        for (k, w) in words.iter().enumerate() {
            if w.chars().any(char::is_uppercase) {
                bits |= 1 << k;
            }
        }
        Searched(bits)
    }

    pub fn is_indexed(self) -> bool {
        self.0 & Self::INDEXED != 0
    }

    fn any_contains(self, words: &[&str], word: &str) -> bool {
        words.iter().enumerate().any(|(k, w)| {
            if self.0 & (1 << k) != 0 {
                w.to_lowercase().contains(word)
            } else {
                w.contains(word)
            }
        })
    }
}

/// A node as the console lists it: only what its views draw, sort and filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleNode {
    pub id: Uuid,
    pub request_id: Option<Uuid>,
    pub provider_id: Option<Box<str>>,
    pub tenant: Word,
    pub label: Box<str>,
    pub ip_address: Option<IpAddr>,
    pub region: Word,
    pub plan: Word,
    pub status: Word,
    pub status_reason: Option<Word>,
    pub reputation_score: i64,
    pub current_load: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_heartbeat: Option<i64>,
    pub warmup: Option<Box<NodeWarmup>>,
    /// When its certificate expires (unix seconds), if it has one.
    pub cert_expires: Option<i64>,
    /// Which of the words a filter searches have upper-case letters (see `Searched`).
    pub upper: Searched,
}

impl ConsoleNode {
    /// The words a filter searches besides the IP: label, region, tenant, status, and why.
    fn searched(&self) -> [&str; 5] {
        [
            &self.label,
            &self.region,
            &self.tenant,
            &self.status,
            self.status_reason.as_deref().unwrap_or(""),
        ]
    }

    /// Notes which searched words need folding: once per row, when it arrives.
    pub fn index(&mut self) {
        self.upper = Searched::of(&self.searched());
    }

    /// Whether `word` (lower-case) is in the node's IP or any of the words a filter
    /// searches.
    pub fn mentions(&self, word: &str) -> bool {
        // The address is written out only for a word that could be part of one (digits,
        // dots, colons, hex letters): "node-ams" never is.
        let ip = self.ip_address.is_some_and(|ip| {
            only_of(word, |b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
                && written(format_args!("{ip}")).contains(word)
        });
        ip || self.upper.any_contains(&self.searched(), word)
    }
}

/// Where a node is on its warm-up plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWarmup {
    pub plan: Word,
    pub day: i64,
    pub days: i64,
    pub cap: i64,
    /// warming | held | paused | completed
    pub status: Word,
    /// Why it holds or is paused (held and paused only).
    pub reason: Option<Box<str>>,
    /// For a warm-up under way (warming, held or paused) with days among the last
    /// `RECENT_DAYS` dates of the log: what it sent on each, from its first such day to its
    /// last, oldest first, a day without a row as 0.
    pub recent_sent: Option<Box<[u32]>>,
}

impl NodeWarmup {
    pub fn under_way(&self) -> bool {
        matches!(&*self.status, "warming" | "held" | "paused")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListingRow {
    pub id: String,
    pub node_id: Option<String>,
    pub node_label: Option<String>,
    pub ip_address: String,
    pub zone: String,
    pub code: Option<String>,
    pub meaning: Option<String>,
    pub listed_at: String,
    pub delisted_at: Option<String>,
    pub details: Option<String>,
    /// high | medium | low (older rows: none).
    pub severity: Option<String>,
}

/// How many dates of the warm-up log the console's sparklines cover.
pub const RECENT_DAYS: i64 = 14;

/// The warm-up log's fleet-wide figures: yesterday's utilisation in the header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmupFigures {
    /// The most recent date the day boundary closed a day on, and what the days closed on
    /// it sent and allowed, in all: yesterday's utilisation.
    pub closed_date: Option<String>,
    pub closed_sent: i64,
    pub closed_cap: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsoleSnapshot {
    pub nodes: Vec<ConsoleNode>,
    pub requests: Vec<ConsoleRequest>,
    pub listings: Vec<ListingRow>,
    /// Open alerts by severity, for the header badge.
    pub alert_counts: super::AlertCounts,
    /// The Alerts view's rows: the open ones first, then resolved ones, each newest first;
    /// at most `ALERTS_SHOWN` in all, and an open alert is never left out for a newer
    /// resolved one.
    pub alerts: Vec<super::AlertRow>,
    /// Live quota reservations per tenant (`nodes` counts reservations), read in the same
    /// transaction as the rows: a tenant with nothing reserved is absent.
    pub quota_use: HashMap<String, Usage>,
    pub warmup: WarmupFigures,
    /// Each provider's circuit breaker as last recorded (the header names open ones).
    pub circuits: Vec<super::BreakerRow>,
    /// The change sequence this snapshot is complete up to (see `ConsoleReader`).
    pub seq: i64,
}

/// What changed since a reader's last read, read in one transaction: the rows written
/// since (new or changed; rows are never deleted), and the small tables whole when any of
/// their rows changed.
#[derive(Debug, Clone, Default)]
pub struct ConsoleDelta {
    pub seq: i64,
    pub nodes: Vec<ConsoleNode>,
    pub requests: Vec<ConsoleRequest>,
    pub listings: Option<Vec<ListingRow>>,
    pub alerts: Option<(Vec<super::AlertRow>, super::AlertCounts)>,
    pub quota_use: Option<HashMap<String, Usage>>,
    pub warmup: Option<WarmupFigures>,
    pub circuits: Option<Vec<super::BreakerRow>>,
}

/// What a reader's next read found.
#[derive(Debug, Clone)]
pub enum ConsoleUpdate {
    /// Nothing the console shows changed.
    Nothing,
    Delta(ConsoleDelta),
    /// Everything again: the first read, or the warm-up log's window moved to a new day.
    Full(ConsoleSnapshot),
}

/// The console's first screen, before the whole fleet is read: the first rows of the
/// Fleet view in its default order (by label), and how many there are in all.
#[derive(Debug, Clone, Default)]
pub struct FirstPage {
    pub nodes: Vec<ConsoleNode>,
    pub total: usize,
}

/// One console's reading position: the change sequence it holds, the shared words its rows
/// point to, and the warm-up log's window its sparklines were read for.
#[derive(Default)]
pub struct ConsoleReader {
    seq: Option<i64>,
    words: Words,
    window: Option<String>,
}

impl ConsoleReader {
    pub fn new() -> ConsoleReader {
        ConsoleReader::default()
    }
}

/// How many alerts the snapshot carries.
const ALERTS_SHOWN: i64 = 1000;

/// Open alerts first, then the newest resolved ones, `ALERTS_SHOWN` in all, inside a read.
fn console_alerts(c: &super::Conn) -> Result<Vec<super::AlertRow>, StoreError> {
    let mut out = super::reputation::alert_rows(c, true, ALERTS_SHOWN)?;
    let room = usize::try_from(ALERTS_SHOWN)
        .unwrap_or(0)
        .saturating_sub(out.len());
    let resolved = super::reputation::alert_rows(c, false, ALERTS_SHOWN)?
        .into_iter()
        .filter(|a| a.resolved_at.is_some())
        .take(room);
    out.extend(resolved);
    Ok(out)
}

/// The first date of the sparklines' window: `RECENT_DAYS` dates back from the newest date
/// in the log (relative to the log, not the wall clock: a log read later, or a demo made
/// earlier, shows the same days).
fn window_start(c: &super::Conn) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT date(MAX(date), ?1) FROM warmup_days",
        [format!("-{} days", RECENT_DAYS - 1)],
        |r| r.get(0),
    )?)
}

const WINDOW: usize = RECENT_DAYS as usize;

/// A node's days in the window, as they are read: sent per position, and the first and last
/// positions it has a day on.
#[derive(Clone, Copy)]
struct Days([u32; WINDOW], usize, usize);

impl Days {
    const NONE: Days = Days([0; WINDOW], usize::MAX, 0);

    fn add(&mut self, pos: usize, sent: i64) {
        self.0[pos] = u32::try_from(sent.max(0)).unwrap_or(u32::MAX);
        self.1 = self.1.min(pos);
        self.2 = self.2.max(pos);
    }

    fn sent(&self) -> Option<Box<[u32]>> {
        (self.1 <= self.2).then(|| Box::from(&self.0[self.1..=self.2]))
    }
}

fn window_pos(r: &crate::store::sql::Row<'_>, col: usize) -> crate::store::sql::SqlResult<usize> {
    Ok(usize::try_from(r.get::<_, i64>(col)?)
        .unwrap_or(0)
        .min(WINDOW - 1))
}

/// Every under-way node's sent per day over the window from `start`, and the totals of
/// the most recent date a day was closed on: one pass over the window of the log.
fn recent_log_all(
    c: &super::Conn,
    nodes: &mut [ConsoleNode],
    start: &str,
) -> Result<WarmupFigures, StoreError> {
    // Per position in the window: sent and cap of the days closed on it, and how many.
    let mut closed = [(0i64, 0i64, 0usize); WINDOW];
    let under_way: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].warmup.as_ref().is_some_and(|w| w.under_way()))
        .collect();
    let slot_of: HashMap<Uuid, usize> = under_way
        .iter()
        .enumerate()
        .map(|(slot, i)| (nodes[*i].id, slot))
        .collect();
    let mut slots = vec![Days::NONE; under_way.len()];
    let mut stmt = c.prepare_cached(
        "SELECT node_id, CAST(julianday(date) - julianday(?1) AS INTEGER), sent, cap,
                decision IS NOT NULL
         FROM warmup_days WHERE date >= ?1",
    )?;
    let mut found = stmt.query([start])?;
    while let Some(r) = found.next()? {
        let pos = window_pos(&r, 1)?;
        let (sent, cap): (i64, i64) = (r.get(2)?, r.get(3)?);
        if r.get::<_, bool>(4)? {
            let day = &mut closed[pos];
            *day = (day.0 + sent, day.1 + cap, day.2 + 1);
        }
        if let Some(slot) = uuid_at(&r, 0).ok().and_then(|id| slot_of.get(&id)) {
            slots[*slot].add(pos, sent);
        }
    }
    for (i, days) in under_way.iter().zip(&slots) {
        if let Some(w) = nodes[*i].warmup.as_mut() {
            w.recent_sent = days.sent();
        }
    }
    let mut figures = WarmupFigures::default();
    if let Some(pos) = closed.iter().rposition(|c| c.2 > 0) {
        figures.closed_date = day_at(start, pos);
        (figures.closed_sent, figures.closed_cap) = (closed[pos].0, closed[pos].1);
    }
    Ok(figures)
}

fn day_at(start: &str, pos: usize) -> Option<String> {
    start
        .parse::<chrono::NaiveDate>()
        .ok()
        .and_then(|d| d.checked_add_days(chrono::Days::new(pos as u64)))
        .map(|d| d.to_string())
}

/// The sparklines of the under-way nodes among `nodes` (changed rows), one node at a time
/// through the log's primary key.
fn recent_log_of(
    c: &super::Conn,
    nodes: &mut [ConsoleNode],
    start: &str,
) -> Result<(), StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT CAST(julianday(date) - julianday(?2) AS INTEGER), sent
         FROM warmup_days WHERE node_id = ?1 AND date >= ?2",
    )?;
    for n in nodes {
        let Some(w) = n.warmup.as_mut().filter(|w| w.under_way()) else {
            continue;
        };
        let mut days = Days::NONE;
        let mut found = stmt.query(params![n.id.to_string(), start])?;
        while let Some(r) = found.next()? {
            days.add(window_pos(&r, 0)?, r.get(1)?);
        }
        w.recent_sent = days.sent();
    }
    Ok(())
}

/// Yesterday's utilisation alone: the most recent date in the window a day was closed on,
/// and what the days closed on it sent and allowed.
/// Read again whenever a warming node changes, so both come from the closed days' own
/// index (`warmup_days_closed`), never from the window's rows.
const LAST_CLOSED_DATE: &str = "SELECT MAX(date) FROM warmup_days INDEXED BY warmup_days_closed
     WHERE date >= ?1 AND decision IS NOT NULL";
const CLOSED_ON: &str = "SELECT COALESCE(SUM(sent), 0), COALESCE(SUM(cap), 0)
     FROM warmup_days INDEXED BY warmup_days_closed WHERE date = ?1 AND decision IS NOT NULL";

fn closed_figures(c: &super::Conn, start: &str) -> Result<WarmupFigures, StoreError> {
    let date: Option<String> = c.query_row(LAST_CLOSED_DATE, [start], |r| r.get(0))?;
    let Some(date) = date else {
        return Ok(WarmupFigures::default());
    };
    let (sent, cap) = c.query_row(CLOSED_ON, [&date], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(WarmupFigures {
        closed_date: Some(date),
        closed_sent: sent,
        closed_cap: cap,
    })
}

/// Shares one copy of each repeated word, across a reader's reads. Reasons and errors repeat too ("warm-up finished", a blocklist's listing, a capacity
/// wait), but may also each be new: words no row holds any more are let go whenever the
/// set has doubled since the last look.
#[derive(Default)]
struct Words {
    set: HashSet<Word>,
    kept: usize,
}

impl Words {
    fn get(&mut self, s: &str) -> Word {
        if let Some(w) = self.set.get(s) {
            return w.clone();
        }
        let w = Word::from(s);
        self.set.insert(w.clone());
        w
    }

    /// Lets go of the words only this set still holds, if it has grown enough since the
    /// last time for that to be worth a look.
    fn prune(&mut self) {
        if self.set.len() > 2 * self.kept + 256 {
            self.set.retain(|w| Arc::strong_count(&w.0) > 1);
            self.kept = self.set.len();
        }
    }

    fn at(
        &mut self,
        r: &crate::store::sql::Row<'_>,
        col: usize,
    ) -> crate::store::sql::SqlResult<Word> {
        Ok(self.get(text_at(r, col)?))
    }

    fn opt(
        &mut self,
        r: &crate::store::sql::Row<'_>,
        col: usize,
    ) -> crate::store::sql::SqlResult<Option<Word>> {
        Ok(match r.get_ref(col)? {
            ValueRef::Null => None,
            _ => Some(self.at(r, col)?),
        })
    }
}

fn text_at<'r>(
    r: &'r crate::store::sql::Row<'_>,
    col: usize,
) -> crate::store::sql::SqlResult<&'r str> {
    r.get_ref(col)?.as_str()
}

fn boxed(r: &crate::store::sql::Row<'_>, col: usize) -> crate::store::sql::SqlResult<Box<str>> {
    Ok(Box::from(text_at(r, col)?))
}

fn boxed_opt(
    r: &crate::store::sql::Row<'_>,
    col: usize,
) -> crate::store::sql::SqlResult<Option<Box<str>>> {
    Ok(match r.get_ref(col)? {
        ValueRef::Null => None,
        v => Some(Box::from(v.as_str()?)),
    })
}

fn uuid_at(r: &crate::store::sql::Row<'_>, col: usize) -> crate::store::sql::SqlResult<Uuid> {
    let text = text_at(r, col)?;
    Uuid::parse_str(text)
        .map_err(|e| super::DbError::new(super::DbErrorKind::Type, format!("column {col}: {e}")))
}

fn uuid_opt(
    r: &crate::store::sql::Row<'_>,
    col: usize,
) -> crate::store::sql::SqlResult<Option<Uuid>> {
    match r.get_ref(col)? {
        ValueRef::Null => Ok(None),
        _ => uuid_at(r, col).map(Some),
    }
}

const NODE_COLUMNS: &str =
    "n.id, n.request_id, n.provider_id, n.tenant, n.label, NULL, n.ip_address,
       n.region, n.plan, n.status, n.status_reason, n.reputation_score, n.current_load,
       CAST(unixepoch(n.created_at, 'subsec') * 1000 AS INTEGER), unixepoch(n.last_heartbeat),
       w.plan, w.day, w.days, w.cap, w.status, w.reason, unixepoch(n.cert_not_after)";

/// What a node row joins for `NODE_COLUMNS`.
const NODE_JOIN: &str = "LEFT JOIN node_warmup w ON w.node_id = n.id";

/// The nodes written after a sequence. The change index is named: without statistics
/// SQLite prefers walking the whole table in rowid order to sorting a few rows, which at
/// 100,000 nodes read every page of the table five times a second.
fn changed_nodes_sql() -> String {
    format!(
        "SELECT {NODE_COLUMNS} FROM nodes n INDEXED BY nodes_changed {NODE_JOIN}
         WHERE n.change_seq > ?1 ORDER BY n.rowid"
    )
}

/// The requests written after a sequence, with their steps' figures (see
/// `changed_nodes_sql` for the named index).
fn changed_requests_sql() -> String {
    format!(
        "SELECT {REQUEST_COLUMNS},
                (SELECT COALESCE(SUM(attempts), 0) FROM request_steps WHERE request_id = r.id),
                (SELECT MIN(position) FROM request_steps WHERE request_id = r.id AND status = 'failed')
         FROM requests r INDEXED BY requests_changed WHERE r.change_seq > ?1 ORDER BY r.rowid"
    )
}

fn node_row(
    r: &crate::store::sql::Row<'_>,
    words: &mut Words,
) -> crate::store::sql::SqlResult<ConsoleNode> {
    let warmup = match r.get_ref(15)? {
        ValueRef::Null => None,
        _ => {
            let status = words.at(r, 19)?;
            let held = matches!(&*status, "held" | "paused");
            Some(Box::new(NodeWarmup {
                plan: words.at(r, 15)?,
                day: r.get(16)?,
                days: r.get(17)?,
                cap: r.get(18)?,
                status,
                reason: if held { boxed_opt(r, 20)? } else { None },
                recent_sent: None,
            }))
        }
    };
    let mut node = ConsoleNode {
        id: uuid_at(r, 0)?,
        request_id: uuid_opt(r, 1)?,
        provider_id: boxed_opt(r, 2)?,
        tenant: words.at(r, 3)?,
        label: boxed(r, 4)?,
        ip_address: match r.get_ref(6)? {
            ValueRef::Null => None,
            v => v.as_str().ok().and_then(|ip| ip.parse().ok()),
        },
        region: words.at(r, 7)?,
        plan: words.at(r, 8)?,
        status: words.at(r, 9)?,
        status_reason: words.opt(r, 10)?,
        reputation_score: r.get(11)?,
        current_load: r.get(12)?,
        created_at: r.get::<_, Option<i64>>(13)?.unwrap_or(0),
        last_heartbeat: r.get(14)?,
        warmup,
        cert_expires: r.get(21)?,
        upper: Searched::default(),
    };
    node.index();
    Ok(node)
}

const REQUEST_COLUMNS: &str =
    "r.id, r.tenant, r.region,
       CASE WHEN r.operation = 'resize' THEN COALESCE(r.from_plan, '?') || '→' || r.plan ELSE r.plan END,
       r.state, r.requested_by, r.cpu, r.memory_gb,
       r.storage_gb, r.label, r.approval_rule, r.approval_reason, r.wait_reason, r.error,
       r.needs_attention, CAST(unixepoch(r.created_at, 'subsec') * 1000 AS INTEGER), r.domain,
       r.operation = 'resize'";

/// A request row of `REQUEST_COLUMNS`, then its steps' attempts and failed position.
fn request_row(
    r: &crate::store::sql::Row<'_>,
    words: &mut Words,
) -> crate::store::sql::SqlResult<ConsoleRequest> {
    let steps = StepSummary {
        attempts: r.get(18)?,
        failed_step: r.get(19)?,
        resize: r.get(17)?,
    };
    let mut req = ConsoleRequest {
        id: uuid_at(r, 0)?,
        tenant: words.at(r, 1)?,
        region: words.at(r, 2)?,
        plan: words.at(r, 3)?,
        state: words.at(r, 4)?,
        requested_by: words.at(r, 5)?,
        cpu: r.get(6)?,
        memory_gb: r.get(7)?,
        storage_gb: r.get(8)?,
        label: boxed(r, 9)?,
        approval_rule: words.opt(r, 10)?,
        approval_reason: words.opt(r, 11)?,
        wait_reason: words.opt(r, 12)?,
        error: words.opt(r, 13)?,
        needs_attention: r.get(14)?,
        created_at: r.get::<_, Option<i64>>(15)?.unwrap_or(0),
        domain: boxed_opt(r, 16)?,
        steps,
        upper: Searched::default(),
    };
    req.index();
    Ok(req)
}

/// Like `rows`, into a vector sized once from `count_sql`, so a large fleet is never copied
/// while the vector grows.
fn sized_rows<T>(
    c: &super::Conn,
    count_sql: &str,
    sql: &str,
    params: impl crate::store::sql::Params,
    mut map: impl FnMut(&crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<T>,
) -> Result<Vec<T>, StoreError> {
    let n: i64 = c.query_row(count_sql, [], |r| r.get(0))?;
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut stmt = c.prepare(sql)?;
    let mut found = stmt.query(params)?;
    while let Some(row) = found.next()? {
        out.push(map(&row)?);
    }
    Ok(out)
}

fn listings(c: &super::Conn) -> Result<Vec<ListingRow>, StoreError> {
    rows(
        c,
        "SELECT b.id, b.node_id, n.label, b.ip_address, b.blacklist_provider, b.code, b.meaning, b.listed_at,
                b.delisted_at, b.details, b.severity
         FROM ip_blacklist_events b LEFT JOIN nodes n ON n.id = b.node_id
         ORDER BY (b.delisted_at IS NOT NULL), b.listed_at DESC LIMIT 5000",
        [],
        |r| {
            Ok(ListingRow {
                id: r.get(0)?,
                node_id: r.get(1)?,
                node_label: r.get(2)?,
                ip_address: r.get(3)?,
                zone: r.get(4)?,
                code: r.get(5)?,
                meaning: r.get(6)?,
                listed_at: r.get(7)?,
                delisted_at: r.get(8)?,
                details: r.get(9)?,
                severity: r.get(10)?,
            })
        },
    )
}

/// What admission counts as held (see `admission::held`): the running totals per tenant
/// (migration 0017), one row a tenant whatever the size of the fleet.
fn quota_use(c: &super::Conn) -> Result<HashMap<String, Usage>, StoreError> {
    Ok(rows(
        c,
        "SELECT owner, units, cpu, memory_gb, storage_gb FROM held_totals WHERE kind = 'quota' AND units > 0",
        [],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                Usage {
                    nodes: r.get(1)?,
                    cpu: r.get(2)?,
                    memory_gb: r.get(3)?,
                    storage_gb: r.get(4)?,
                },
            ))
        },
    )?
    .into_iter()
    .collect())
}

fn current_seq(c: &super::Conn) -> Result<i64, StoreError> {
    Ok(
        c.query_row("SELECT seq FROM change_counter WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}

/// Runs `f` in one read transaction.
fn in_read<T>(c: &super::Conn, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    c.execute_batch("BEGIN")?;
    let out = f();
    let _ = c.execute_batch("COMMIT");
    out
}

/// Everything the console shows, in one read transaction.
fn full(c: &super::Conn, reader: &mut ConsoleReader) -> Result<ConsoleSnapshot, StoreError> {
    let words = &mut reader.words;
    let seq = current_seq(c)?;
    // Rows become console rows as they are read: no second copy of the fleet.
    let mut nodes = sized_rows(
        c,
        "SELECT COUNT(*) FROM nodes",
        // In the table's own order: nothing to sort, so no second copy of the rows while
        // they are read (the views sort; ties go by this order, which new rows keep).
        &format!("SELECT {NODE_COLUMNS} FROM nodes n {NODE_JOIN} ORDER BY n.rowid"),
        [],
        |r| node_row(r, words),
    )?;
    let start = window_start(c)?;
    let warmup = match &start {
        Some(start) => recent_log_all(c, &mut nodes, start)?,
        None => WarmupFigures::default(),
    };
    let requests = sized_rows(
        c,
        "SELECT COUNT(*) FROM requests",
        &format!(
            "SELECT {REQUEST_COLUMNS}, COALESCE(s.attempts, 0), s.failed
             FROM requests r LEFT JOIN (
                 SELECT request_id, SUM(attempts) AS attempts,
                        MIN(CASE WHEN status = 'failed' THEN position END) AS failed
                 FROM request_steps GROUP BY request_id) s ON s.request_id = r.id
             ORDER BY r.rowid"
        ),
        [],
        |r| request_row(r, words),
    )?;
    reader.seq = Some(seq);
    reader.window = start;
    Ok(ConsoleSnapshot {
        nodes,
        requests,
        listings: listings(c)?,
        quota_use: quota_use(c)?,
        alert_counts: super::reputation::alert_counts(c)?,
        alerts: console_alerts(c)?,
        warmup,
        circuits: super::breakers::all(c)?,
        seq,
    })
}

/// What changed since `since`, in one read transaction; `None` when the warm-up log's
/// window moved (every sparkline shifts: the caller reads everything again).
fn delta(
    c: &super::Conn,
    reader: &mut ConsoleReader,
    since: i64,
) -> Result<Option<ConsoleDelta>, StoreError> {
    let seq = current_seq(c)?;
    if seq == since {
        return Ok(Some(ConsoleDelta {
            seq,
            ..Default::default()
        }));
    }
    let start = window_start(c)?;
    if start != reader.window {
        return Ok(None);
    }
    let words = &mut reader.words;
    let mut nodes = rows(c, &changed_nodes_sql(), [since], |r| node_row(r, words))?;
    let mut warmup = None;
    if let Some(start) = &start {
        if nodes.iter().any(|n| n.warmup.is_some()) {
            recent_log_of(c, &mut nodes, start)?;
            warmup = Some(closed_figures(c, start)?);
        }
    }
    let requests = rows(c, &changed_requests_sql(), [since], |r| {
        request_row(r, words)
    })?;
    let changed = |table: &str| -> Result<bool, StoreError> {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE change_seq > ?1)");
        Ok(c.query_row(&sql, [since], |r| r.get(0))?)
    };
    // Listings and alerts show their node's label too, but a label never changes: only
    // their own rows changing makes them worth reading again.
    let listings_changed = changed("ip_blacklist_events")?;
    let alerts_changed = changed("alerts")?;
    let circuits = if changed("provider_breakers")? {
        Some(super::breakers::all(c)?)
    } else {
        None
    };
    let out = ConsoleDelta {
        seq,
        listings: if listings_changed {
            Some(listings(c)?)
        } else {
            None
        },
        alerts: if alerts_changed {
            Some((console_alerts(c)?, super::reputation::alert_counts(c)?))
        } else {
            None
        },
        quota_use: if requests.is_empty() {
            None
        } else {
            Some(quota_use(c)?)
        },
        nodes,
        requests,
        warmup,
        circuits,
    };
    reader.seq = Some(seq);
    Ok(Some(out))
}

impl Store {
    /// Everything the console shows, in one read transaction (a reader of its own).
    pub async fn console_snapshot(&self) -> Result<ConsoleSnapshot, StoreError> {
        let (snap, _) = self.console_read(ConsoleReader::new()).await?;
        match snap {
            ConsoleUpdate::Full(s) => Ok(s),
            _ => Err(StoreError::Closed),
        }
    }

    /// The reader's next read: everything on its first, then what changed since its last.
    /// Hands the reader back, moved on.
    pub async fn console_read(
        &self,
        mut reader: ConsoleReader,
    ) -> Result<(ConsoleUpdate, ConsoleReader), StoreError> {
        self.read(move |c| {
            let out = in_read(c, || {
                reader.words.prune();
                if let Some(since) = reader.seq {
                    match delta(c, &mut reader, since)? {
                        Some(d) if d.seq == since => return Ok(ConsoleUpdate::Nothing),
                        Some(d) => return Ok(ConsoleUpdate::Delta(d)),
                        None => {}
                    }
                }
                Ok(ConsoleUpdate::Full(full(c, &mut reader)?))
            });
            out.map(|u| (u, reader))
        })
        .await
    }

    /// The first `limit` rows of the Fleet view in its default order (by label) and how
    /// many nodes there are: what the first screen shows while the whole fleet is read.
    /// Served by indexes (`nodes_by_label`, and the smallest one for the count).
    pub async fn console_first_page(&self, limit: usize) -> Result<FirstPage, StoreError> {
        self.read(move |c| {
            in_read(c, || {
                let mut words = Words::default();
                let nodes = rows(
                    c,
                    &format!(
                        "SELECT {NODE_COLUMNS} FROM nodes n {NODE_JOIN}
                         ORDER BY n.label, n.id LIMIT ?1"
                    ),
                    [i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| node_row(r, &mut words),
                )?;
                // The smallest index answers it; counts by status wait for the whole read
                // (the header says it is still loading until then).
                let total: i64 = c.query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))?;
                Ok(FirstPage {
                    nodes,
                    total: usize::try_from(total).unwrap_or(0),
                })
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite plans for `sql`, one line a step.
    fn plan(c: &super::super::Conn, sql: &str) -> String {
        let mut stmt = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let unbound = vec![crate::store::sql::Null; stmt.parameter_count()];
        let lines: Vec<String> = stmt
            .query_map(crate::store::sql::params_from_iter(unbound), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan rows")
            .map(|l| l.expect("plan row"))
            .collect();
        lines.join("\n")
    }

    /// Words no row holds are let go once the set has grown; words rows hold stay, one
    /// copy each.
    #[test]
    fn a_reader_lets_go_of_words_no_row_holds() {
        let mut words = Words::default();
        let held: Vec<Word> = (0..100).map(|i| words.get(&format!("kept {i}"))).collect();
        for i in 0..1000 {
            drop(words.get(&format!("error {i}")));
        }
        words.prune();
        assert_eq!(words.set.len(), 100, "only the words rows hold");
        let again = words.get("kept 7");
        assert!(Arc::ptr_eq(&again.0, &held[7].0), "one copy of a held word");
        // Under the threshold nothing is looked at.
        drop(words.get("passing"));
        words.prune();
        assert_eq!(words.set.len(), 101);
    }

    /// The reads the console repeats while anything changes go through indexes: a plan
    /// that walks a table reads every page of the fleet each time (what the first version
    /// did, unseen at 10 rows and most of a core at 100,000).
    #[tokio::test]
    async fn repeated_reads_walk_no_table() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("m.db"), &Default::default())
            .await
            .expect("store");
        let plans = store
            .read(|c| {
                Ok([
                    changed_nodes_sql(),
                    changed_requests_sql(),
                    LAST_CLOSED_DATE.to_string(),
                    CLOSED_ON.to_string(),
                ]
                .map(|sql| (plan(c, &sql), sql)))
            })
            .await
            .expect("plans");
        for (plan, sql) in plans {
            assert!(
                !plan.lines().any(|l| l
                    .trim_start_matches(['|', '-', '`', ' '])
                    .starts_with("SCAN")),
                "{sql}\nwalks a table:\n{plan}"
            );
            assert!(plan.contains("USING"), "{sql}\nuses no index:\n{plan}");
        }
    }
}
