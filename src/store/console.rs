//! What the console reads: one consistent snapshot of the fleet, requests, listings and
//! alerts, taken in a single read transaction so counts and rows agree. Rows carry only what
//! the console shows, and repeated words (tenants, regions, plans, states) are shared, so
//! 100,000 nodes stay small in memory.

use super::{rows, Store, StoreError, Usage};
use crate::domain::RequestState;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Per request: attempts over all steps, and which step (1–4) failed, if one did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepSummary {
    pub attempts: i64,
    pub failed_step: Option<i64>,
}

/// A request as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleRequest {
    pub id: String,
    pub tenant: Arc<str>,
    pub region: Arc<str>,
    pub plan: Arc<str>,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    pub label: String,
    /// The domain the request named (`None`: the default one).
    pub domain: Option<String>,
    pub state: Arc<str>,
    pub requested_by: Arc<str>,
    pub approval_rule: Option<Arc<str>>,
    pub approval_reason: Option<String>,
    pub wait_reason: Option<String>,
    pub error: Option<String>,
    pub needs_attention: bool,
    pub created_at: String,
    pub steps: StepSummary,
}

impl ConsoleRequest {
    pub fn state(&self) -> RequestState {
        self.state.parse().unwrap_or(RequestState::Failed)
    }
}

/// A node as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleNode {
    pub id: String,
    pub request_id: Option<String>,
    pub provider_id: Option<String>,
    pub tenant: Arc<str>,
    pub label: String,
    pub hostname: String,
    pub ip_address: Option<String>,
    pub region: Arc<str>,
    pub plan: Arc<str>,
    pub status: Arc<str>,
    pub status_reason: Option<String>,
    pub reputation_score: i64,
    pub current_load: i64,
    pub created_at: String,
    pub last_heartbeat: Option<String>,
    pub warmup: Option<NodeWarmup>,
    /// When its certificate expires (unix seconds), if it has one.
    pub cert_expires: Option<i64>,
}

/// Where a node is on its warm-up plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWarmup {
    pub plan: Arc<str>,
    pub day: i64,
    pub days: i64,
    pub cap: i64,
    /// warming | held | paused | completed
    pub status: Arc<str>,
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

/// Warm-up figures beside the node rows, read in the same transaction: what the sparklines,
/// the Warm-up view's health and the header's capacity show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmupFigures {
    /// By index into `nodes`, for each node whose warm-up is under way (warming, held or
    /// paused) and has days among the last `RECENT_DAYS` dates of the log: what it sent on
    /// each, from its first such day to its last, oldest first, a day without a row as 0.
    pub recent_sent: HashMap<usize, Box<[u32]>>,
    /// By index into `nodes`: why its warm-up holds or is paused (held and paused only).
    pub reasons: HashMap<usize, String>,
    /// The fleet's daily sending capacity: today's caps of the warming and active nodes
    /// summed (an active node's is the last cap of its warm-up).
    pub capacity: i64,
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

/// Fills in `figures` from the last `RECENT_DAYS` dates of the warm-up log, inside a read:
/// the `sent` per day of the nodes at `under_way` (indices into `nodes`), and the totals of
/// the most recent date a day was closed on.
fn recent_log(
    c: &super::Conn,
    nodes: &[ConsoleNode],
    under_way: &[usize],
    figures: &mut WarmupFigures,
) -> Result<(), StoreError> {
    // Relative to the newest date in the log, not the wall clock: a log read later (or a
    // demo made earlier) shows the same days.
    let start: Option<String> = c.query_row(
        "SELECT date(MAX(date), ?1) FROM warmup_days",
        [format!("-{} days", RECENT_DAYS - 1)],
        |r| r.get(0),
    )?;
    let Some(start) = start else {
        return Ok(());
    };
    const WINDOW: usize = RECENT_DAYS as usize;
    // Per position in the window: sent and cap of the days closed on it, and how many.
    let mut closed = [(0i64, 0i64, 0usize); WINDOW];
    // Each under-way node's days, in a slot of its own: sent per position, and the first
    // and last positions it has a day on. Nothing is allocated per log row.
    let slot_of: HashMap<&str, usize> = under_way
        .iter()
        .enumerate()
        .filter_map(|(slot, i)| Some((nodes.get(*i)?.id.as_str(), slot)))
        .collect();
    let mut slots = vec![([0u32; WINDOW], usize::MAX, 0usize); under_way.len()];
    let mut stmt = c.prepare_cached(
        "SELECT node_id, CAST(julianday(date) - julianday(?1) AS INTEGER), sent, cap,
                decision IS NOT NULL
         FROM warmup_days WHERE date >= ?1",
    )?;
    let mut found = stmt.query([&start])?;
    while let Some(r) = found.next()? {
        let pos = usize::try_from(r.get::<_, i64>(1)?)
            .unwrap_or(0)
            .min(WINDOW - 1);
        let (sent, cap): (i64, i64) = (r.get(2)?, r.get(3)?);
        if r.get::<_, bool>(4)? {
            let day = &mut closed[pos];
            *day = (day.0 + sent, day.1 + cap, day.2 + 1);
        }
        let id = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        if let Some(days) = slot_of.get(id).and_then(|s| slots.get_mut(*s)) {
            days.0[pos] = u32::try_from(sent.max(0)).unwrap_or(u32::MAX);
            days.1 = days.1.min(pos);
            days.2 = days.2.max(pos);
        }
    }
    drop(slot_of);
    figures.recent_sent = under_way
        .iter()
        .zip(&slots)
        .filter(|(_, (_, first, last))| first <= last)
        .map(|(i, (sent, first, last))| (*i, Box::from(&sent[*first..=*last])))
        .collect();
    if let Some(pos) = closed.iter().rposition(|c| c.2 > 0) {
        figures.closed_date = start
            .parse::<chrono::NaiveDate>()
            .ok()
            .and_then(|d| d.checked_add_days(chrono::Days::new(pos as u64)))
            .map(|d| d.to_string());
        (figures.closed_sent, figures.closed_cap) = (closed[pos].0, closed[pos].1);
    }
    Ok(())
}

/// Shares one copy of each repeated word.
#[derive(Default)]
struct Words(HashMap<String, Arc<str>>);

impl Words {
    fn get(&mut self, s: String) -> Arc<str> {
        if let Some(w) = self.0.get(&s) {
            return w.clone();
        }
        let w: Arc<str> = Arc::from(s.as_str());
        self.0.insert(s, w.clone());
        w
    }
}

/// Like `rows`, into a vector sized once from `count_sql`, so a large fleet is never copied
/// while the vector grows.
fn sized_rows<T>(
    c: &super::Conn,
    count_sql: &str,
    sql: &str,
    params: impl rusqlite::Params,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let n: i64 = c.query_row(count_sql, [], |r| r.get(0))?;
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut stmt = c.prepare(sql)?;
    let mut found = stmt.query(params)?;
    while let Some(row) = found.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

impl Store {
    pub async fn console_snapshot(&self) -> Result<ConsoleSnapshot, StoreError> {
        self.read(|c| {
            c.execute_batch("BEGIN")?;
            let out = (|| {
                let mut words = Words::default();
                let mut figures = WarmupFigures::default();
                let mut under_way = Vec::new();
                let mut index = 0usize;
                // Rows become console rows as they are read: no second copy of the fleet.
                let nodes = sized_rows(
                    c,
                    "SELECT COUNT(*) FROM nodes",
                    "SELECT n.id, n.request_id, n.provider_id, n.tenant, n.label, n.hostname, n.ip_address, n.region,
                            n.plan, n.status, n.status_reason, n.reputation_score, n.current_load, n.created_at,
                            n.last_heartbeat, w.plan, w.day, w.days, w.cap, w.status, w.reason,
                            CAST(unixepoch(n.cert_not_after) AS INTEGER)
                     FROM nodes n LEFT JOIN node_warmup w ON w.node_id = n.id
                     ORDER BY n.created_at, n.id",
                    [],
                    |r| {
                        let i = index;
                        index += 1;
                        let warmup = match r.get::<_, Option<String>>(15)? {
                            Some(plan) => Some(NodeWarmup {
                                plan: words.get(plan),
                                day: r.get(16)?,
                                days: r.get(17)?,
                                cap: r.get(18)?,
                                status: words.get(r.get(19)?),
                            }),
                            None => None,
                        };
                        let status = words.get(r.get(9)?);
                        let id: String = r.get(0)?;
                        if let Some(w) = &warmup {
                            if matches!(&*status, "warming" | "active") {
                                figures.capacity = figures.capacity.saturating_add(w.cap);
                            }
                            if matches!(&*w.status, "warming" | "held" | "paused") {
                                under_way.push(i);
                            }
                            if matches!(&*w.status, "held" | "paused") {
                                if let Some(why) = r.get::<_, Option<String>>(20)? {
                                    figures.reasons.insert(i, why);
                                }
                            }
                        }
                        Ok(ConsoleNode {
                            id,
                            request_id: r.get(1)?,
                            provider_id: r.get(2)?,
                            tenant: words.get(r.get(3)?),
                            label: r.get(4)?,
                            hostname: r.get(5)?,
                            ip_address: r.get(6)?,
                            region: words.get(r.get(7)?),
                            plan: words.get(r.get(8)?),
                            status,
                            status_reason: r.get(10)?,
                            reputation_score: r.get(11)?,
                            current_load: r.get(12)?,
                            created_at: r.get(13)?,
                            last_heartbeat: r.get(14)?,
                            warmup,
                            cert_expires: r.get(21)?,
                        })
                    },
                )?;
                // Before the requests are read, so what this borrows is free again for them.
                recent_log(c, &nodes, &under_way, &mut figures)?;
                drop(under_way);
                let requests = sized_rows(
                    c,
                    "SELECT COUNT(*) FROM requests",
                    "SELECT r.id, r.tenant, r.region, r.plan, r.state, r.requested_by, r.cpu, r.memory_gb, r.storage_gb,
                            r.label, r.approval_rule, r.approval_reason, r.wait_reason, r.error, r.needs_attention,
                            r.created_at, COALESCE(s.attempts, 0), s.failed, r.domain
                     FROM requests r LEFT JOIN (
                         SELECT request_id, SUM(attempts) AS attempts,
                                MIN(CASE WHEN status = 'failed' THEN position END) AS failed
                         FROM request_steps GROUP BY request_id) s ON s.request_id = r.id
                     ORDER BY r.created_at, r.id",
                    [],
                    |r| {
                        Ok(ConsoleRequest {
                            id: r.get(0)?,
                            tenant: words.get(r.get(1)?),
                            region: words.get(r.get(2)?),
                            plan: words.get(r.get(3)?),
                            state: words.get(r.get(4)?),
                            requested_by: words.get(r.get(5)?),
                            cpu: r.get(6)?,
                            memory_gb: r.get(7)?,
                            storage_gb: r.get(8)?,
                            label: r.get(9)?,
                            domain: r.get(18)?,
                            approval_rule: r.get::<_, Option<String>>(10)?.map(|x| words.get(x)),
                            approval_reason: r.get(11)?,
                            wait_reason: r.get(12)?,
                            error: r.get(13)?,
                            needs_attention: r.get(14)?,
                            created_at: r.get(15)?,
                            steps: StepSummary { attempts: r.get(16)?, failed_step: r.get(17)? },
                        })
                    },
                )?;
                let listings = rows(
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
                )?;
                // What admission counts as held (see `claims::held`): quota rows are written
                // `allocated` and end `released`, and the partial index covers this sum.
                let quota_use = rows(
                    c,
                    "SELECT tenant, COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(memory_gb), 0),
                            COALESCE(SUM(storage_gb), 0)
                     FROM resources WHERE kind = 'quota' AND status <> 'released' GROUP BY tenant",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            Usage { nodes: r.get(1)?, cpu: r.get(2)?, memory_gb: r.get(3)?, storage_gb: r.get(4)? },
                        ))
                    },
                )?
                .into_iter()
                .collect();
                let alert_counts = super::reputation::alert_counts(c)?;
                let alerts = console_alerts(c)?;
                Ok(ConsoleSnapshot {
                    nodes,
                    requests,
                    listings,
                    quota_use,
                    alert_counts,
                    alerts,
                    warmup: figures,
                })
            })();
            let _ = c.execute_batch("COMMIT");
            out
        })
        .await
    }
}
