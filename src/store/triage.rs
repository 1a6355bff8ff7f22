//! What on-call does with an alert (acknowledge it, silence it for a while, each with who
//! and why), and what the console's node detail shows of one node: its recent heartbeats,
//! its transitions and its certificate. Listings and warm-up come from the snapshot and
//! `node_warmup`.

use super::events::{audit, emit, EventTarget};
use super::reputation::{alert_row, ALERT_COLUMNS};
use super::{rows, AlertRow, Conn, NodeTransitionRow, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

/// How many heartbeats the node detail shows (at 30 s, the last half hour).
pub const HEARTBEATS_SHOWN: i64 = 60;
/// How many of a node's transitions it shows, newest last.
pub const TRANSITIONS_SHOWN: i64 = 30;

/// One heartbeat as the node detail shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatRow {
    pub received_at: String,
    pub cpu_pct: f64,
    pub mem_used: i64,
    pub mem_total: i64,
    pub queue_free: i64,
    pub queue_len: i64,
    pub delivered: i64,
    pub bounced: i64,
    pub deferred: i64,
    pub complaints: i64,
}

/// A node's active certificate, as the node detail shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeCert {
    pub hostname: String,
    pub issuer: String,
    pub not_after: String,
    pub renewed_at: Option<String>,
    pub renew_error: Option<String>,
}

/// What the console's node detail loads from the store for one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeDetail {
    pub node_id: String,
    /// Oldest first, the newest `HEARTBEATS_SHOWN`.
    pub heartbeats: Vec<HeartbeatRow>,
    /// Oldest first, the newest `TRANSITIONS_SHOWN`.
    pub transitions: Vec<NodeTransitionRow>,
    pub cert: Option<NodeCert>,
    /// Its hostname and the request that made it, if any.
    pub hostname: Option<String>,
    pub request_id: Option<String>,
}

/// Why acknowledging or silencing an alert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertRefusal {
    #[error("alert {0} is resolved: there is nothing to {1}")]
    Resolved(String, &'static str),
}

fn alert_by_id(c: &Conn, id: &str) -> Result<Option<AlertRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts a LEFT JOIN nodes n ON n.id = a.node_id WHERE a.id = ?"
    ))?
    .query_row([id], alert_row)
    .optional()?)
}

/// The open alert `id`, or why `verb` is refused on it (it is resolved).
fn open_alert(
    c: &Conn,
    id: &str,
    verb: &'static str,
) -> Result<Result<AlertRow, AlertRefusal>, StoreError> {
    let Some(alert) = alert_by_id(c, id)? else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    if alert.resolved_at.is_some() {
        return Ok(Err(AlertRefusal::Resolved(
            crate::domain::ids::short(id).to_string(),
            verb,
        )));
    }
    Ok(Ok(alert))
}

impl Store {
    /// `actor` acknowledges an open alert (a second acknowledgement replaces the first: the
    /// alert has a new owner). Recorded on the alert, in the audit log and as an event.
    pub async fn ack_alert(
        &self,
        id: &str,
        actor: &str,
        note: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Result<AlertRow, AlertRefusal>, StoreError> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |c| {
            let alert = match open_alert(c, &id, "acknowledge")? {
                Ok(a) => a,
                Err(refused) => return Ok(Err(refused)),
            };
            let at = ts(now);
            c.prepare_cached(
                "UPDATE alerts SET acked_at = ?, acked_by = ?, ack_note = ? WHERE id = ?",
            )?
            .execute(params![at, actor, note, id])?;
            let detail = note.clone().unwrap_or_default();
            audit(c, &at, &actor, "alert.ack", Some(&id), Some(&detail))?;
            emit(
                c,
                "alert.acknowledged",
                &EventTarget {
                    request_id: None,
                    node_id: alert.node_id.as_deref(),
                    tenant: None,
                },
                &actor,
                &json!({"alert": id, "severity": alert.severity, "kind": alert.kind, "note": note}),
                &at,
            )?;
            Ok(Ok(alert_by_id(c, &id)?.unwrap_or(alert)))
        })
        .await
    }

    /// `actor` silences an open alert until `until`, for `reason`: it stays on screen,
    /// marked, and is not sent to the alert sinks meanwhile. A new silence replaces an
    /// older one (so a silence can be made shorter, or ended with `until = now`).
    pub async fn silence_alert(
        &self,
        id: &str,
        actor: &str,
        until: DateTime<Utc>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<Result<AlertRow, AlertRefusal>, StoreError> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |c| {
            let alert = match open_alert(c, &id, "silence")? {
                Ok(a) => a,
                Err(refused) => return Ok(Err(refused)),
            };
            let (at, till) = (ts(now), ts(until));
            c.prepare_cached(
                "UPDATE alerts SET silenced_until = ?, silenced_by = ?, silence_reason = ?
                 WHERE id = ?",
            )?
            .execute(params![till, actor, reason, id])?;
            let detail = format!("until {till}: {reason}");
            audit(c, &at, &actor, "alert.silence", Some(&id), Some(&detail))?;
            emit(
                c,
                "alert.silenced",
                &EventTarget {
                    request_id: None,
                    node_id: alert.node_id.as_deref(),
                    tenant: None,
                },
                &actor,
                &json!({"alert": id, "until": till, "reason": reason}),
                &at,
            )?;
            Ok(Ok(alert_by_id(c, &id)?.unwrap_or(alert)))
        })
        .await
    }

    /// One alert, by its full id.
    pub async fn alert(&self, id: &str) -> Result<Option<AlertRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| alert_by_id(c, &id)).await
    }

    /// What the node detail shows of `node_id` beyond the snapshot, in one read.
    pub async fn node_detail(&self, node_id: &str) -> Result<NodeDetail, StoreError> {
        let node_id = node_id.to_string();
        self.read(move |c| {
            let head: Option<(Option<String>, Option<String>)> = c
                .prepare_cached(
                    "SELECT n.hostname, n.request_id FROM nodes n WHERE n.id = ?",
                )?
                .query_row([&node_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((hostname, request_id)) = head else {
                return Err(StoreError::NotFound(node_id));
            };
            let mut heartbeats = rows(
                c,
                "SELECT received_at, cpu_pct, mem_used, mem_total, queue_free, queue_len,
                        delivered, bounced, deferred, complaints
                 FROM node_heartbeats WHERE node_id = ?1 ORDER BY received_at DESC LIMIT ?2",
                params![node_id, HEARTBEATS_SHOWN],
                |r| {
                    Ok(HeartbeatRow {
                        received_at: r.get(0)?,
                        cpu_pct: r.get(1)?,
                        mem_used: r.get(2)?,
                        mem_total: r.get(3)?,
                        queue_free: r.get(4)?,
                        queue_len: r.get(5)?,
                        delivered: r.get(6)?,
                        bounced: r.get(7)?,
                        deferred: r.get(8)?,
                        complaints: r.get(9)?,
                    })
                },
            )?;
            heartbeats.reverse();
            let mut transitions = rows(
                c,
                "SELECT at, from_status, to_status, cause, actor, reason FROM node_transitions
                 WHERE node_id = ?1 ORDER BY seq DESC LIMIT ?2",
                params![node_id, TRANSITIONS_SHOWN],
                |r| {
                    Ok(NodeTransitionRow {
                        at: r.get(0)?,
                        from: r.get(1)?,
                        to: r.get(2)?,
                        cause: r.get(3)?,
                        actor: r.get(4)?,
                        reason: r.get(5)?,
                    })
                },
            )?;
            transitions.reverse();
            let cert = match &request_id {
                None => None,
                Some(req) => c
                    .prepare_cached(
                        "SELECT hostname, issuer, not_after, renewed_at, renew_error FROM certificates
                         WHERE request_id = ? AND status = 'active' ORDER BY not_after DESC LIMIT 1",
                    )?
                    .query_row([req], |r| {
                        Ok(NodeCert {
                            hostname: r.get(0)?,
                            issuer: r.get(1)?,
                            not_after: r.get(2)?,
                            renewed_at: r.get(3)?,
                            renew_error: r.get(4)?,
                        })
                    })
                    .optional()?,
            };
            Ok(NodeDetail {
                node_id,
                heartbeats,
                transitions,
                cert,
                hostname,
                request_id,
            })
        })
        .await
    }
}
