//! Reputation in the store: which nodes are due for a blocklist check, what a round of
//! checks changes (listings opened and closed, pauses, resumes, alerts, scores — in one
//! transaction with their outbox events), zone health, and operators' pause and resume.

use super::events::{audit, emit, EventTarget};
use super::nodes::{transition, Moved};
use super::{rows, Conn, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::new_id;
use crate::domain::node::{NodeEvent, NodeRefusal, NodeStatus, PauseCause};
use crate::reputation::dnsbl::{Severity, Verdict, ZoneHealth};
use crate::reputation::policy::{plan, Change, NodeView, OpenListing};
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

/// A node whose IP is due for a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    pub node_id: String,
    pub ip: String,
    pub label: String,
}

/// An alert, open or resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertRow {
    pub id: String,
    pub severity: String,
    pub kind: String,
    pub subject: String,
    pub node_id: Option<String>,
    pub node_label: Option<String>,
    pub message: String,
    pub raised_at: String,
    pub resolved_at: Option<String>,
    pub resolution: Option<String>,
    /// Who acknowledged it, when, and what they said.
    pub acked_by: Option<String>,
    pub acked_at: Option<String>,
    pub ack_note: Option<String>,
    /// Until when it is silenced (not sent to the alert sinks), by whom and why.
    pub silenced_until: Option<String>,
    pub silenced_by: Option<String>,
    pub silence_reason: Option<String>,
}

impl AlertRow {
    /// Where it stands, as the console's `state:` filter and the triage screen name it:
    /// resolved, silenced (at `now`, a stored time), acked, or open.
    pub fn state_at(&self, now: &str) -> &'static str {
        if self.resolved_at.is_some() {
            "resolved"
        } else if self.silenced_until.as_deref().is_some_and(|u| u > now) {
            "silenced"
        } else if self.acked_at.is_some() {
            "acked"
        } else {
            "open"
        }
    }
}

/// Open alerts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertCounts {
    pub high: i64,
    pub medium: i64,
    pub low: i64,
}

/// What one round of checks did to a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckApplied {
    pub changes: Vec<Change>,
    pub score: i64,
}

/// Nodes that serve mail (or are paused and may be delisted) and have an IP.
const CHECKED: &str = "('warming', 'active', 'paused')";

/// Raises an alert unless one is already open on the subject; returns whether it did.
pub(crate) fn raise_alert(
    conn: &Conn,
    severity: Severity,
    kind: &str,
    subject: &str,
    node_id: Option<&str>,
    message: &str,
    at: &str,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO alerts (id, severity, kind, subject, node_id, message, raised_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            new_id(),
            severity.as_str(),
            kind,
            subject,
            node_id,
            message,
            at
        ])?;
    Ok(n > 0)
}

/// Resolves the open alert on a subject, if there is one.
pub(crate) fn resolve_alert(
    conn: &Conn,
    subject: &str,
    resolution: &str,
    at: &str,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE alerts SET resolved_at = ?, resolution = ? WHERE subject = ? AND resolved_at IS NULL",
        )?
        .execute(params![at, resolution, subject])?;
    Ok(n > 0)
}

fn severity_of(s: &str) -> Severity {
    match s {
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    }
}

/// Lifts a blocklist pause: the node goes back where it was and its warm-up, stopped by the
/// pause, goes on from its day (see `resumed_warmup`).
fn resume(
    conn: &Conn,
    node_id: &str,
    asked: Option<PauseCause>,
    why: &str,
    actor: &str,
    at: &str,
) -> Result<Result<Moved, NodeRefusal>, StoreError> {
    let moved = transition(conn, node_id, NodeEvent::Resume(asked), actor, why, at)?;
    if moved.is_ok() {
        resumed_warmup(conn, node_id, at)?;
    }
    Ok(moved)
}

/// A warm-up stopped by a pause goes on from its day, starting today: the paused days sent
/// nothing and prove nothing.
fn resumed_warmup(conn: &Conn, node_id: &str, at: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE node_warmup SET status = 'warming', reason = NULL, day_date = substr(?1, 1, 10),
            day_started_at = ?1, updated_at = ?1
         WHERE node_id = ?2 AND status <> 'completed'",
    )?
    .execute(params![at, node_id])?;
    Ok(())
}

/// The bounce rate of the node's latest day with mail sent, if any.
/// The subject of a node's high-bounce-rate alert: one alert, whether the blocklist
/// monitor's check or the warm-up's pause raised it.
pub(crate) fn bounce_subject(node_id: &str) -> String {
    format!("node:{node_id}:bounce")
}

fn latest_bounce_rate(conn: &Conn, node_id: &str) -> Result<Option<f64>, StoreError> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT sent, bounced FROM warmup_days WHERE node_id = ? AND sent > 0 ORDER BY date DESC LIMIT 1",
        )?
        .query_row([node_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(sent, bounced)| bounced as f64 / sent as f64))
}

impl Store {
    /// Nodes whose next check is due (or that were never checked), oldest due first.
    pub async fn nodes_due_for_check(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<CheckTarget>, StoreError> {
        let at = ts(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let sql = format!(
                "SELECT n.id, n.ip_address, n.label FROM nodes n LEFT JOIN node_checks k ON k.node_id = n.id
                 WHERE n.status IN {CHECKED} AND n.ip_address IS NOT NULL
                   AND (k.next_check_at IS NULL OR k.next_check_at <= ?1)
                 ORDER BY k.next_check_at IS NOT NULL, k.next_check_at, n.id LIMIT ?2"
            );
            rows(c, &sql, params![at, limit], |r| {
                Ok(CheckTarget {
                    node_id: r.get(0)?,
                    ip: r.get(1)?,
                    label: r.get(2)?,
                })
            })
        })
        .await
    }

    /// The earliest time a node that is checked (see `nodes_due_for_check`) is next due, if
    /// any is scheduled. A node never checked is not in it: it is due at once, and appears
    /// with a commit.
    pub async fn next_check_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = format!(
            "SELECT MIN(k.next_check_at) FROM node_checks k JOIN nodes n ON n.id = k.node_id
             WHERE n.status IN {CHECKED} AND n.ip_address IS NOT NULL"
        );
        let min: Option<String> = self
            .read(move |c| Ok(c.prepare_cached(&sql)?.query_row([], |r| r.get(0))?))
            .await?;
        Ok(min.as_deref().and_then(crate::clock::parse_ts))
    }

    /// Applies one round of checks of a node: the policy decides from the node's current
    /// status and open listings (read in this transaction), and everything it decides is
    /// written together with the outbox events; the node is next checked at `next_at`.
    pub async fn record_check(
        &self,
        node_id: &str,
        checked: Vec<(Verdict, Severity)>,
        auto_resume: bool,
        bounce_alert: f64,
        now: DateTime<Utc>,
        next_at: DateTime<Utc>,
    ) -> Result<CheckApplied, StoreError> {
        let node_id = node_id.to_string();
        self.write(move |conn| {
            let at = ts(now);
            type NodeFacts = (String, String, Option<String>, String, Option<String>, Option<String>);
            let row: Option<NodeFacts> = conn
                .prepare_cached(
                    "SELECT label, status, pause_cause, tenant, request_id, ip_address FROM nodes WHERE id = ?",
                )?
                .query_row([&node_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .optional()?;
            let Some((label, status, cause, tenant, request_id, ip)) = row else {
                return Err(StoreError::NotFound(node_id.clone()));
            };
            let ip = ip.unwrap_or_default();
            let open = rows(
                conn,
                "SELECT blacklist_provider, COALESCE(severity, 'high') FROM ip_blacklist_events
                 WHERE node_id = ? AND delisted_at IS NULL",
                [&node_id],
                |r| Ok(OpenListing { zone: r.get(0)?, severity: severity_of(&r.get::<_, String>(1)?) }),
            )?;
            // Answers about another IP (the node's changed since it was picked) are dropped.
            let checked: Vec<(Verdict, Severity)> =
                checked.into_iter().filter(|(v, _)| v.ip.to_string() == ip).collect();
            let view = NodeView { label: &label, status: &status, pause_cause: cause.as_deref() };
            let (changes, score) = plan(&view, &open, &checked, auto_resume);
            let target = EventTarget { request_id: request_id.as_deref(), node_id: Some(&node_id), tenant: Some(&tenant) };
            for change in &changes {
                match change {
                    Change::Listed { zone, severity, code, meaning, reason } => {
                        conn.prepare_cached(
                            "INSERT INTO ip_blacklist_events (id, node_id, ip_address, blacklist_provider, code, meaning,
                                listed_at, details, severity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        )?
                        .execute(params![new_id(), node_id, ip, zone, code, meaning, at, reason, severity.as_str()])?;
                        let payload = json!({"node_id": node_id, "ip": ip, "zone": zone, "code": code,
                            "meaning": meaning, "reason": reason, "severity": severity.as_str()});
                        emit(conn, "node.blacklisted", &target, "monitor", &payload, &at)?;
                    }
                    Change::Delisted { zone } => {
                        conn.prepare_cached(
                            "UPDATE ip_blacklist_events SET delisted_at = ? WHERE node_id = ? AND blacklist_provider = ?
                               AND delisted_at IS NULL",
                        )?
                        .execute(params![at, node_id, zone])?;
                        let payload = json!({"node_id": node_id, "ip": ip, "zone": zone});
                        emit(conn, "node.delisted", &target, "monitor", &payload, &at)?;
                    }
                    Change::Pause { reason } => {
                        let event = NodeEvent::Pause(PauseCause::Blocklist);
                        // A node no longer serving (paused for another cause, in
                        // maintenance) stays as it is; its listing is recorded above.
                        let _ = transition(conn, &node_id, event, "monitor", reason, &at)?;
                    }
                    Change::Resume => {
                        let why = "delisted everywhere: resumed automatically";
                        let _ = resume(conn, &node_id, Some(PauseCause::Blocklist), why, "monitor", &at)?;
                    }
                    Change::Alert { severity, zone, message } => {
                        let subject = format!("node:{node_id}:{zone}");
                        raise_alert(conn, *severity, "blocklist", &subject, Some(&node_id), message, &at)?;
                    }
                    Change::ResolveAlert { zone } => {
                        resolve_alert(conn, &format!("node:{node_id}:{zone}"), "delisted", &at)?;
                    }
                }
            }
            let bounce_subject = bounce_subject(&node_id);
            match latest_bounce_rate(conn, &node_id)? {
                Some(rate) if rate > bounce_alert => {
                    let message = format!(
                        "{label} bounce rate {:.1}% is above {:.1}%",
                        rate * 100.0,
                        bounce_alert * 100.0
                    );
                    raise_alert(conn, Severity::Medium, "bounce", &bounce_subject, Some(&node_id), &message, &at)?;
                }
                _ => {
                    resolve_alert(conn, &bounce_subject, "bounce rate back under the threshold", &at)?;
                }
            }
            conn.prepare_cached("UPDATE nodes SET reputation_score = ? WHERE id = ? AND reputation_score <> ?")?
                .execute(params![score, node_id, score])?;
            conn.prepare_cached(
                "INSERT INTO node_checks (node_id, last_checked_at, next_check_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node_id) DO UPDATE SET last_checked_at = ?2, next_check_at = ?3",
            )?
            .execute(params![node_id, at, ts(next_at)])?;
            Ok(CheckApplied { changes, score })
        })
        .await
    }

    /// Records each zone's health; an unusable zone raises a low alert until it recovers.
    /// Only a change is written: when every zone is as recorded (and its alert open or not
    /// as it should be), nothing is, so `checked_at` is when the zone's health last changed.
    pub async fn record_zone_health(
        &self,
        health: Vec<ZoneHealth>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let wanted: Vec<(String, bool, Option<String>)> = health
            .iter()
            .map(|h| (h.zone.clone(), h.usable, h.why.clone()))
            .collect();
        let same = self
            .read(move |c| {
                for (zone, usable, why) in &wanted {
                    let row: Option<(bool, Option<String>)> = c
                        .prepare_cached("SELECT usable, why FROM zone_health WHERE zone = ?")?
                        .query_row([zone], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let alert_open: bool = c
                        .prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM alerts WHERE subject = ? AND resolved_at IS NULL)",
                        )?
                        .query_row([format!("zone:{zone}")], |r| r.get(0))?;
                    if row.as_ref() != Some(&(*usable, why.clone())) || alert_open == *usable {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .await?;
        if same {
            return Ok(());
        }
        self.write(move |conn| {
            let at = ts(now);
            for h in &health {
                conn.prepare_cached(
                    "INSERT INTO zone_health (zone, usable, why, checked_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (zone) DO UPDATE SET usable = ?2, why = ?3, checked_at = ?4",
                )?
                .execute(params![h.zone, h.usable, h.why, at])?;
                let subject = format!("zone:{}", h.zone);
                if h.usable {
                    resolve_alert(
                        conn,
                        &subject,
                        "the zone answers its test entries again",
                        &at,
                    )?;
                } else {
                    let message = format!(
                        "blocklist {} is unusable: {}",
                        h.zone,
                        h.why.as_deref().unwrap_or("failed its health check")
                    );
                    raise_alert(conn, Severity::Low, "zone", &subject, None, &message, &at)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// An operator pauses a serving node (it leaves rotation).
    pub async fn pause_node(
        &self,
        node_id: &str,
        actor: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Result<Moved, NodeRefusal>, StoreError> {
        let event = NodeEvent::Pause(PauseCause::Operator);
        self.operator_move(node_id, actor, event, ("paused", "node.pause"), reason, now)
            .await
    }

    /// An operator's move of a node, with the reason they gave, audited when it happened.
    /// `words` are how the reason starts ("paused" by …) and the audit's action.
    async fn operator_move(
        &self,
        node_id: &str,
        actor: &str,
        event: NodeEvent,
        words: (&'static str, &'static str),
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Result<Moved, NodeRefusal>, StoreError> {
        let (node_id, actor) = (node_id.to_string(), actor.to_string());
        let (verb, action) = words;
        self.write(move |conn| {
            let at = ts(now);
            let why = format!(
                "{verb} by {actor}{}",
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            let moved = transition(conn, &node_id, event, &actor, &why, &at)?;
            if moved.is_ok() {
                audit(conn, &at, &actor, action, Some(&node_id), Some(&why))?;
            }
            Ok(moved)
        })
        .await
    }

    /// An operator resumes a paused node, whatever paused it but a suspended service, or
    /// brings one in maintenance back.
    pub async fn resume_node(
        &self,
        node_id: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<Moved, NodeRefusal>, StoreError> {
        let (node_id, actor) = (node_id.to_string(), actor.to_string());
        self.write(move |conn| {
            let at = ts(now);
            let status: Option<String> = conn
                .prepare_cached("SELECT status FROM nodes WHERE id = ?")?
                .query_row([&node_id], |r| r.get(0))
                .optional()?;
            let moved = if status.as_deref() == Some(NodeStatus::Maintenance.as_str()) {
                let why = format!("maintenance done, said {actor}");
                transition(
                    conn,
                    &node_id,
                    NodeEvent::LeaveMaintenance,
                    &actor,
                    &why,
                    &at,
                )?
            } else {
                resume(
                    conn,
                    &node_id,
                    None,
                    &format!("resumed by {actor}"),
                    &actor,
                    &at,
                )?
            };
            if moved.is_ok() {
                audit(conn, &at, &actor, "node.resume", Some(&node_id), None)?;
            }
            Ok(moved)
        })
        .await
    }

    /// An operator takes a serving node out of rotation for work on it.
    pub async fn maintain_node(
        &self,
        node_id: &str,
        actor: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Result<Moved, NodeRefusal>, StoreError> {
        let words = ("maintenance", "node.maintenance");
        self.operator_move(
            node_id,
            actor,
            NodeEvent::EnterMaintenance,
            words,
            reason,
            now,
        )
        .await
    }

    /// Makes a node due for a check now.
    pub async fn check_node_now(
        &self,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let node_id = node_id.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO node_checks (node_id, next_check_at) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET next_check_at = ?2",
            )?
            .execute(params![node_id, ts(now)])?;
            Ok(())
        })
        .await
    }

    /// Alerts, newest first: the open ones only, or all of them.
    pub async fn alerts(&self, open_only: bool, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
        self.read(move |c| alert_rows(c, open_only, limit)).await
    }
}

/// Alerts, newest first, inside a read: the open ones only, or all of them.
pub(crate) fn alert_rows(
    c: &Conn,
    open_only: bool,
    limit: i64,
) -> Result<Vec<AlertRow>, StoreError> {
    let filter = if open_only {
        "WHERE a.resolved_at IS NULL"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts a LEFT JOIN nodes n ON n.id = a.node_id
         {filter} ORDER BY a.raised_at DESC, a.id DESC LIMIT ?"
    );
    rows(c, &sql, [limit], alert_row)
}

/// The columns an alert is read with, joined with its node's label (as `n`).
pub(crate) const ALERT_COLUMNS: &str = "a.id, a.severity, a.kind, a.subject, a.node_id, n.label, \
     a.message, a.raised_at, a.resolved_at, a.resolution, a.acked_by, a.acked_at, a.ack_note, \
     a.silenced_until, a.silenced_by, a.silence_reason";

/// An alert read with [`ALERT_COLUMNS`].
pub(crate) fn alert_row(r: &crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        severity: r.get(1)?,
        kind: r.get(2)?,
        subject: r.get(3)?,
        node_id: r.get(4)?,
        node_label: r.get(5)?,
        message: r.get(6)?,
        raised_at: r.get(7)?,
        resolved_at: r.get(8)?,
        resolution: r.get(9)?,
        acked_by: r.get(10)?,
        acked_at: r.get(11)?,
        ack_note: r.get(12)?,
        silenced_until: r.get(13)?,
        silenced_by: r.get(14)?,
        silence_reason: r.get(15)?,
    })
}

/// Open alerts by severity, inside a read.
pub(crate) fn alert_counts(c: &Conn) -> Result<AlertCounts, StoreError> {
    let mut out = AlertCounts::default();
    for (sev, n) in rows(
        c,
        "SELECT severity, COUNT(*) FROM alerts WHERE resolved_at IS NULL GROUP BY severity",
        [],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )? {
        match sev.as_str() {
            "high" => out.high = n,
            "medium" => out.medium = n,
            _ => out.low += n,
        }
    }
    Ok(out)
}
