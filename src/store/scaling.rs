//! What the engine's scaling (seed 001) reads and writes: the fleet's deliveries against its
//! daily caps over a window, the nodes whose queue stayed high, the causes that have a live
//! request or finished one lately, and the cause a filed request answers (at most one live
//! request per cause: checked in the filing transaction, and held by a unique index).

use super::events::{audit, emit, EventTarget};
use super::{Conn, Store, StoreError};
use crate::domain::ids::short;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde_json::json;

/// The serving fleet's mail over a window, as the engine measures its used capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetUsage {
    /// Warming and active nodes with a daily cap (a warm-up record).
    pub nodes: u64,
    /// The sum of their daily caps today.
    pub daily_caps: u64,
    /// What they delivered in the window, by their heartbeats received in it.
    pub delivered: u64,
    /// Some of them was reporting when the window opened: a heartbeat received at most
    /// the given gap before its start. Without it the window was not watched whole.
    pub covered: bool,
}

/// A serving node whose queue stayed at or above the threshold for the whole window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighQueue {
    pub node_id: String,
    pub label: String,
    pub plan: String,
    pub cluster: Option<String>,
    /// The smallest queue length any heartbeat of the window reported.
    pub lowest: u64,
    /// The heartbeats the verdict rests on (the one opening the window included).
    pub heartbeats: u64,
}

/// Where a cause stands: a live request, or when its last request finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CauseState {
    Live { request_id: String, state: String },
    Released { at: DateTime<Utc> },
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Refuses a second live request for `cause`, naming the one there is. In the caller's
/// write transaction, so the check and the insert after it are one step.
pub(super) fn refuse_second(conn: &Conn, cause: &str) -> Result<(), StoreError> {
    let live: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT id, state FROM requests WHERE scaling_cause = ? AND scaling_done_at IS NULL",
        )?
        .query_row([cause], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((id, state)) = live {
        return Err(StoreError::Rejected(format!(
            "scaling: cause {cause} already has request {} ({state}); one at a time",
            short(&id)
        )));
    }
    Ok(())
}

/// Announces a request filed for `cause` (its row already names it): an event
/// (`scaling.requested`) and an audit entry naming the reason, in the filing transaction.
pub(super) fn announce(
    conn: &Conn,
    target: &EventTarget<'_>,
    cause: &str,
    reason: Option<&str>,
    actor: &str,
    at: &str,
) -> Result<(), StoreError> {
    let id = target.request_id.unwrap_or_default();
    let payload = json!({
        "request_id": id, "cause": cause, "reason": reason, "node_id": target.node_id,
    });
    emit(conn, "scaling.requested", target, actor, &payload, at)?;
    let detail = match reason {
        Some(r) => format!("{cause}: {r}"),
        None => cause.to_string(),
    };
    audit(conn, at, actor, "scaling.request", Some(id), Some(&detail))?;
    Ok(())
}

impl Store {
    /// The warming and active nodes' deliveries received in (`start`, `now`], their daily
    /// caps, and whether one of them reported in [`start` - `gap`, `start`]. Nodes without
    /// a warm-up record have no cap mailfleet knows: neither their mail nor a capacity is
    /// counted.
    pub async fn fleet_usage(
        &self,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
        gap: chrono::Duration,
    ) -> Result<FleetUsage, StoreError> {
        let (from, to) = (crate::clock::ts(start), crate::clock::ts(now));
        let opened = crate::clock::ts(start - gap);
        self.read(move |c| {
            let (nodes, caps, delivered, covered): (i64, i64, i64, i64) = c
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(w.cap), 0),
                        COALESCE(SUM((SELECT COALESCE(SUM(h.delivered), 0) FROM node_heartbeats h
                                      WHERE h.node_id = n.id AND h.received_at > ?1 AND h.received_at <= ?2)), 0),
                        COALESCE(MAX(CASE WHEN EXISTS (SELECT 1 FROM node_heartbeats h
                                      WHERE h.node_id = n.id AND h.received_at >= ?3 AND h.received_at <= ?1)
                                     THEN 1 ELSE 0 END), 0)
                     FROM nodes n JOIN node_warmup w ON w.node_id = n.id
                     WHERE n.status IN ('warming', 'active')",
                )?
                .query_row(params![from, to, opened], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            Ok(FleetUsage {
                nodes: u(nodes),
                daily_caps: u(caps),
                delivered: u(delivered),
                covered: covered != 0,
            })
        })
        .await
    }

    /// The warming and active nodes whose queue stayed at or above `threshold` from `start`
    /// to `now`: the last heartbeat received at or before `start` (at most `gap` before it,
    /// so the node was reporting when the window opened) and every one since reported a
    /// queue that long, and the node still reports (its latest heartbeat at most `gap` old).
    pub async fn high_queues(
        &self,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
        gap: chrono::Duration,
        threshold: u64,
    ) -> Result<Vec<HighQueue>, StoreError> {
        let (from, to) = (crate::clock::ts(start), crate::clock::ts(now));
        let opened_after = crate::clock::ts(start - gap);
        let fresh_after = crate::clock::ts(now - gap);
        let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
        self.read(move |c| {
            type Node = (String, String, String, Option<String>, Option<String>);
            let nodes: Vec<Node> = super::rows(
                c,
                "SELECT n.id, n.label, n.plan, n.cluster,
                    (SELECT MAX(h.received_at) FROM node_heartbeats h
                     WHERE h.node_id = n.id AND h.received_at <= ?1) AS opened
                 FROM nodes n
                 WHERE n.status IN ('warming', 'active')
                   AND EXISTS (SELECT 1 FROM node_heartbeats h WHERE h.node_id = n.id
                               AND h.received_at > ?2 AND h.received_at <= ?3)
                 ORDER BY n.label, n.id",
                params![from, fresh_after, to],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            let mut out = Vec::new();
            for (node_id, label, plan, cluster, opened) in nodes {
                let Some(opened) = opened.filter(|o| *o >= opened_after) else {
                    continue;
                };
                let (lowest, count): (Option<i64>, i64) = c
                    .prepare_cached(
                        "SELECT MIN(queue_len), COUNT(*) FROM node_heartbeats
                         WHERE node_id = ? AND received_at >= ? AND received_at <= ?",
                    )?
                    .query_row(params![node_id, opened, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
                match lowest {
                    Some(low) if low >= threshold => out.push(HighQueue {
                        node_id,
                        label,
                        plan,
                        cluster,
                        lowest: u(low),
                        heartbeats: u(count),
                    }),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every cause with a live request, and every cause whose last request finished after
    /// `since`, with when (the latest release wins).
    pub async fn scaling_causes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, CauseState>, StoreError> {
        let since = crate::clock::ts(since);
        self.read(move |c| {
            let found: Vec<(String, String, String, Option<String>)> = super::rows(
                c,
                "SELECT scaling_cause, id, state, scaling_done_at FROM requests
                 WHERE scaling_cause IS NOT NULL AND (scaling_done_at IS NULL OR scaling_done_at > ?)",
                [since],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let mut out = std::collections::HashMap::new();
            for (cause, request_id, state, done) in found {
                let new = match done.as_deref().map(crate::clock::parse_ts) {
                    None => CauseState::Live { request_id, state },
                    Some(Some(at)) => CauseState::Released { at },
                    // A release time that does not read: take it as live, filing nothing.
                    Some(None) => CauseState::Live { request_id, state },
                };
                let keep = match (out.get(&cause), &new) {
                    (None, _) | (Some(CauseState::Released { .. }), CauseState::Live { .. }) => {
                        true
                    }
                    (Some(CauseState::Released { at: a }), CauseState::Released { at: b }) => {
                        b > a
                    }
                    (Some(CauseState::Live { .. }), _) => false,
                };
                if keep {
                    out.insert(cause, new);
                }
            }
            Ok(out)
        })
        .await
    }
}
