//! Warm-up in the store: which nodes have a day to close, the daily log (the one way a
//! node's sending counts arrive), and each day boundary's decision written with its event;
//! operators' resume and pace changes.

use super::events::{audit, emit, EventTarget};
use super::nodes::transition;
use super::reputation::{bounce_subject, raise_alert, resolve_alert};
use super::{rows, Conn, Store, StoreError};
use crate::clock::ts;
use crate::domain::node::{NodeEvent, PauseCause};
use crate::domain::warmup::{DayCounts, Decision, ResumeFrom};
use crate::reputation::dnsbl::Severity;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::json;

/// A warming node whose current day has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmNode {
    pub node_id: String,
    pub label: String,
    pub plan: String,
    pub day: u32,
    pub cap: u64,
    /// The date of its current day.
    pub date: NaiveDate,
    /// Its own caps, when an operator changed its pace.
    pub schedule: Option<Vec<u64>>,
    /// A zone it is listed on now, if any.
    pub listed_on: Option<String>,
}

/// Where a node is on its plan, for `node show` and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarmupState {
    pub plan: String,
    pub day: i64,
    pub days: i64,
    pub cap: i64,
    pub status: String,
    pub reason: Option<String>,
    pub date: Option<String>,
    pub log: Vec<WarmupDay>,
}

/// One day of a node's warm-up log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarmupDay {
    pub date: String,
    pub day: i64,
    pub cap: i64,
    pub scheduled: i64,
    pub sent: i64,
    pub delivered: i64,
    pub deferred: i64,
    pub bounced: i64,
    pub complaints: i64,
    pub decision: Option<String>,
    pub reason: Option<String>,
}

fn target(conn: &Conn, node_id: &str) -> Result<(String, Option<String>), StoreError> {
    conn.prepare_cached("SELECT tenant, request_id FROM nodes WHERE id = ?")?
        .query_row([node_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(node_id.to_string()))
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes a day's counts (keeping any decision already made on it).
fn put_counts(
    conn: &Conn,
    node_id: &str,
    date: NaiveDate,
    day: u32,
    cap: u64,
    c: &DayCounts,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO warmup_days (node_id, date, day, cap, scheduled, sent, delivered, deferred, bounced, complaints)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (node_id, date) DO UPDATE SET sent = ?5, delivered = ?6, deferred = ?7, bounced = ?8,
           complaints = ?9",
    )?
    .execute(params![
        node_id,
        date.to_string(),
        day,
        i(cap),
        i(c.sent),
        i(c.delivered),
        i(c.deferred),
        i(c.bounced),
        i(c.complaints)
    ])?;
    Ok(())
}

impl Store {
    /// Warming (or held) nodes still in rotation whose current day is before `today`.
    pub async fn warm_nodes_due(
        &self,
        today: NaiveDate,
        limit: usize,
    ) -> Result<Vec<WarmNode>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let list = rows(
                c,
                "SELECT w.node_id, n.label, w.plan, w.day, w.cap, w.day_date, w.schedule,
                        (SELECT b.blacklist_provider FROM ip_blacklist_events b
                          WHERE b.node_id = w.node_id AND b.delisted_at IS NULL ORDER BY b.listed_at LIMIT 1)
                 FROM node_warmup w JOIN nodes n ON n.id = w.node_id
                 WHERE w.status IN ('warming', 'held') AND n.status = 'warming'
                   AND w.day_date IS NOT NULL AND w.day_date < ?1
                 ORDER BY w.day_date, w.node_id LIMIT ?2",
                params![today.to_string(), limit],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                },
            )?;
            Ok(list
                .into_iter()
                .filter_map(|(node_id, label, plan, day, cap, date, schedule, listed_on)| {
                    Some(WarmNode {
                        node_id,
                        label,
                        plan,
                        day: u32::try_from(day).ok()?,
                        cap: u64::try_from(cap).ok()?,
                        date: date.parse().ok()?,
                        schedule: schedule.and_then(|s| serde_json::from_str(&s).ok()),
                        listed_on,
                    })
                })
                .collect())
        })
        .await
    }

    /// The counts recorded for a node's date, if any.
    pub async fn recorded_counts(
        &self,
        node_id: &str,
        date: NaiveDate,
    ) -> Result<Option<DayCounts>, StoreError> {
        let node_id = node_id.to_string();
        self.read(move |c| {
            let got: Option<(i64, i64, i64, i64, i64)> = c
                .prepare_cached(
                    "SELECT sent, delivered, deferred, bounced, complaints FROM warmup_days
                     WHERE node_id = ? AND date = ? AND sent > 0",
                )?
                .query_row(params![node_id, date.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            let u = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(got.map(|(s, d, f, b, x)| DayCounts {
                sent: u(s),
                delivered: u(d),
                deferred: u(f),
                bounced: u(b),
                complaints: u(x),
            }))
        })
        .await
    }

    /// The one way a node's sending counts arrive (from the simulated cloud now, node agents
    /// later): one day's totals, replacing what that day held.
    pub async fn record_sending_counts(
        &self,
        node_id: &str,
        date: NaiveDate,
        counts: DayCounts,
    ) -> Result<(), StoreError> {
        if counts.delivered + counts.deferred + counts.bounced > counts.sent
            || counts.complaints > counts.delivered
        {
            return Err(StoreError::Rejected(format!(
                "counts for {date}: delivered + deferred + bounced must not exceed sent, nor complaints delivered ({counts:?})"
            )));
        }
        let node_id = node_id.to_string();
        self.write(move |conn| {
            let (day, cap): (i64, i64) = conn
                .prepare_cached("SELECT day, cap FROM node_warmup WHERE node_id = ?")?
                .query_row([&node_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(node_id.clone()))?;
            let day = u32::try_from(day).unwrap_or(1);
            put_counts(
                conn,
                &node_id,
                date,
                day,
                u64::try_from(cap).unwrap_or(0),
                &counts,
            )
        })
        .await
    }

    /// Closes a node's day `date` with its counts and the boundary's decision, all in one
    /// transaction with the decision's event. Does nothing (returns false) if the node's
    /// current day is no longer `date` — another engine closed it first. A pause given a
    /// `bounce_alert` message also raises the node's medium bounce alert with it.
    pub async fn close_warmup_day(
        &self,
        node: &WarmNode,
        counts: DayCounts,
        decision: Decision,
        bounce_alert: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let node = node.clone();
        self.write(move |conn| {
            let at = ts(now);
            let date = node.date.to_string();
            let next = node.date.succ_opt().unwrap_or(node.date).to_string();
            let current: Option<(String, String)> = conn
                .prepare_cached("SELECT day_date, status FROM node_warmup WHERE node_id = ?")?
                .query_row([&node.node_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if current.as_ref().map(|(d, _)| d.as_str()) != Some(date.as_str())
                || !matches!(current.as_ref().map(|(_, s)| s.as_str()), Some("warming" | "held"))
            {
                return Ok(false);
            }
            put_counts(conn, &node.node_id, node.date, node.day, node.cap, &counts)?;
            let (tenant, request_id) = target(conn, &node.node_id)?;
            let tgt = EventTarget {
                request_id: request_id.as_deref(),
                node_id: Some(&node.node_id),
                tenant: Some(&tenant),
            };
            let (word, reason): (&str, Option<String>) = match &decision {
                Decision::Advance { .. } => ("advanced", None),
                Decision::Complete => ("completed", None),
                Decision::Hold { reason } => ("held", Some(reason.clone())),
                Decision::Pause { reason } => ("paused", Some(reason.clone())),
            };
            conn.prepare_cached("UPDATE warmup_days SET decision = ?, reason = ? WHERE node_id = ? AND date = ?")?
                .execute(params![word, reason, node.node_id, date])?;
            let base = json!({"node_id": node.node_id, "date": date, "day": node.day, "cap": node.cap,
                "sent": counts.sent, "bounced": counts.bounced, "deferred": counts.deferred,
                "complaints": counts.complaints});
            match &decision {
                Decision::Advance { day, cap } => {
                    conn.prepare_cached(
                        "UPDATE node_warmup SET day = ?, cap = ?, status = 'warming', reason = NULL, day_date = ?,
                            day_started_at = ?, updated_at = ? WHERE node_id = ?",
                    )?
                    .execute(params![day, i(*cap), next, at, at, node.node_id])?;
                    let mut p = base.clone();
                    p["to_day"] = json!(day);
                    p["to_cap"] = json!(cap);
                    emit(conn, "warmup.advanced", &tgt, "engine", &p, &at)?;
                }
                Decision::Hold { reason } => {
                    conn.prepare_cached(
                        "UPDATE node_warmup SET status = 'held', reason = ?, day_date = ?, day_started_at = ?,
                            updated_at = ? WHERE node_id = ?",
                    )?
                    .execute(params![reason, next, at, at, node.node_id])?;
                    let mut p = base.clone();
                    p["reason"] = json!(reason);
                    emit(conn, "warmup.held", &tgt, "engine", &p, &at)?;
                }
                Decision::Pause { reason } => {
                    conn.prepare_cached(
                        "UPDATE node_warmup SET status = 'paused', reason = ?, day_date = ?, updated_at = ? WHERE node_id = ?",
                    )?
                    .execute(params![reason, next, at, node.node_id])?;
                    let why = format!("warm-up: {reason}");
                    let event = NodeEvent::Pause(PauseCause::Warmup);
                    // A node already out of rotation stays as it is.
                    let _ = transition(conn, &node.node_id, event, "engine", &why, &at)?;
                    if let Some(message) = &bounce_alert {
                        // With the pause itself, so that no pause for bounces goes without
                        // its alert (the blocklist monitor's check may never come round:
                        // it runs only with usable zones).
                        raise_alert(conn, Severity::Medium, "bounce", &bounce_subject(&node.node_id),
                            Some(&node.node_id), message, &at)?;
                    }
                }
                Decision::Complete => {
                    conn.prepare_cached(
                        "UPDATE node_warmup SET status = 'completed', reason = NULL, day_date = ?, updated_at = ?
                         WHERE node_id = ?",
                    )?
                    .execute(params![next, at, node.node_id])?;
                    // A node out of rotation goes back active when it returns.
                    let _ = transition(conn, &node.node_id, NodeEvent::WarmupCompleted, "engine",
                        "warm-up completed", &at)?;
                    emit(conn, "warmup.completed", &tgt, "engine", &base, &at)?;
                }
            }
            Ok(true)
        })
        .await
    }

    /// Resumes a node's warm-up from its current day, the start of its week, or day 1,
    /// with `today` as that day's date; a paused node goes back into rotation.
    pub async fn warmup_resume(
        &self,
        node_id: &str,
        from: ResumeFrom,
        caps: Vec<u64>,
        actor: &str,
        today: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(u32, u64), StoreError> {
        let (node_id, actor) = (node_id.to_string(), actor.to_string());
        self.write(move |conn| {
            let at = ts(now);
            let row: Option<(i64, String, String)> = conn
                .prepare_cached(
                    "SELECT w.day, w.status, n.status FROM node_warmup w JOIN nodes n ON n.id = w.node_id
                     WHERE w.node_id = ?",
                )?
                .query_row([&node_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((day, wstatus, nstatus)) = row else {
                return Err(StoreError::Rejected(format!("node {node_id} has no warm-up")));
            };
            if wstatus == "completed" || !matches!(nstatus.as_str(), "warming" | "paused") {
                return Err(StoreError::Rejected(format!(
                    "the node is {nstatus} and its warm-up {wstatus}: nothing to resume"
                )));
            }
            let day = from.day(u32::try_from(day).unwrap_or(1)).min(caps.len().max(1) as u32);
            let cap = caps.get(day as usize - 1).copied().unwrap_or(0);
            conn.prepare_cached(
                "UPDATE node_warmup SET day = ?, cap = ?, days = ?, status = 'warming', reason = NULL, day_date = ?,
                    day_started_at = ?, updated_at = ? WHERE node_id = ?",
            )?
            .execute(params![day, i(cap), caps.len() as i64, today.to_string(), at, at, node_id])?;
            let (tenant, request_id) = target(conn, &node_id)?;
            let tgt = EventTarget { request_id: request_id.as_deref(), node_id: Some(&node_id), tenant: Some(&tenant) };
            if wstatus == "paused" {
                // The operator has dealt with what paused it: its bounce alert, if it had
                // one, is over (a rate still high is raised again by the next check).
                resolve_alert(conn, &bounce_subject(&node_id), &format!("warm-up resumed by {actor}"), &at)?;
            }
            if nstatus == "paused" {
                let why = format!("warm-up resumed by {actor}");
                if let Err(refusal) = transition(conn, &node_id, NodeEvent::Resume(None), &actor, &why, &at)? {
                    return Err(StoreError::Rejected(refusal.to_string()));
                }
            }
            let from_word = match from {
                ResumeFrom::Day => "day",
                ResumeFrom::Week => "week",
                ResumeFrom::Start => "start",
            };
            emit(conn, "warmup.resumed", &tgt, &actor,
                &json!({"node_id": node_id, "from": from_word, "day": day, "cap": cap}), &at)?;
            audit(conn, &at, &actor, "warmup.resume", Some(&node_id), Some(&format!("from {from_word}: day {day}, cap {cap}")))?;
            Ok((day, cap))
        })
        .await
    }

    /// Gives a node its own schedule (after a pace change).
    pub async fn warmup_set_schedule(
        &self,
        node_id: &str,
        caps: Vec<u64>,
        factor: f64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (node_id, actor) = (node_id.to_string(), actor.to_string());
        self.write(move |conn| {
            let at = ts(now);
            let day: i64 = conn
                .prepare_cached("SELECT day FROM node_warmup WHERE node_id = ? AND status <> 'completed'")?
                .query_row([&node_id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::Rejected(format!("node {node_id} has no warm-up in progress")))?;
            let cap = caps.get(usize::try_from(day).unwrap_or(1).saturating_sub(1)).copied().unwrap_or(0);
            let schedule = serde_json::to_string(&caps).unwrap_or_default();
            conn.prepare_cached("UPDATE node_warmup SET schedule = ?, days = ?, cap = ?, updated_at = ? WHERE node_id = ?")?
                .execute(params![schedule, caps.len() as i64, i(cap), at, node_id])?;
            let (tenant, request_id) = target(conn, &node_id)?;
            let tgt = EventTarget { request_id: request_id.as_deref(), node_id: Some(&node_id), tenant: Some(&tenant) };
            emit(conn, "warmup.paced", &tgt, &actor,
                &json!({"node_id": node_id, "factor": factor, "days": caps.len(), "cap": cap}), &at)?;
            audit(conn, &at, &actor, "warmup.pace", Some(&node_id), Some(&format!("×{factor}: {} days", caps.len())))?;
            Ok(())
        })
        .await
    }

    /// A node's warm-up and its daily log (oldest first), if it has one.
    pub async fn node_warmup(&self, node_id: &str) -> Result<Option<WarmupState>, StoreError> {
        let node_id = node_id.to_string();
        self.read(move |c| {
            type Head = (String, i64, i64, i64, String, Option<String>, Option<String>, Option<String>);
            let head: Option<Head> = c
                .prepare_cached(
                    "SELECT plan, day, days, cap, status, reason, day_date, schedule FROM node_warmup WHERE node_id = ?",
                )?
                .query_row([&node_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
                })
                .optional()?;
            let Some((plan, day, days, cap, status, reason, date, schedule)) = head else {
                return Ok(None);
            };
            let log = rows(
                c,
                "SELECT date, day, cap, scheduled, sent, delivered, deferred, bounced, complaints, decision, reason
                 FROM warmup_days WHERE node_id = ? ORDER BY date",
                [&node_id],
                |r| {
                    Ok(WarmupDay {
                        date: r.get(0)?,
                        day: r.get(1)?,
                        cap: r.get(2)?,
                        scheduled: r.get(3)?,
                        sent: r.get(4)?,
                        delivered: r.get(5)?,
                        deferred: r.get(6)?,
                        bounced: r.get(7)?,
                        complaints: r.get(8)?,
                        decision: r.get(9)?,
                        reason: r.get(10)?,
                    })
                },
            )?;
            let plan = if schedule.is_some() { format!("{plan} (paced)") } else { plan };
            Ok(Some(WarmupState { plan, day, days, cap, status, reason, date, log }))
        })
        .await
    }

    /// The daily caps a node follows: its own schedule if it has one.
    pub async fn warmup_schedule(
        &self,
        node_id: &str,
    ) -> Result<Option<(String, Option<Vec<u64>>)>, StoreError> {
        let node_id = node_id.to_string();
        self.read(move |c| {
            let got: Option<(String, Option<String>)> = c
                .prepare_cached("SELECT plan, schedule FROM node_warmup WHERE node_id = ?")?
                .query_row([&node_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(got.map(|(plan, s)| (plan, s.and_then(|s| serde_json::from_str(&s).ok()))))
        })
        .await
    }
}
