//! Sending nodes: registered by the activate step, decommissioned by a teardown, paused and
//! resumed with their service.

use super::events::{emit, EventTarget};
use super::steps::Fenced;
use super::{rows, Conn, NodeRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::{new_id, short};
use crate::domain::node::{self, NodeEvent, NodeRefusal, NodeState, NodeStatus, PauseCause};
use crate::domain::RequestEvent;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct NewNode {
    pub provider_id: String,
    pub hostname: String,
    pub ip: String,
    /// The warm-up plan the node starts on: (name, days, day 1's cap).
    pub warmup: Option<(String, u32, u64)>,
    /// The warm-up date (at the configured offset) of its first day, YYYY-MM-DD.
    pub warmup_date: String,
}

#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub status: Option<String>,
    pub tenant: Option<String>,
    pub limit: Option<i64>,
}

/// A node's status change, as `transition` applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub from: NodeState,
    pub to: NodeState,
}

/// Moves a node by `event` if the lifecycle allows it (`domain::node::transition`): writes
/// its status (with where it goes back to and why it is paused), the transition's row and
/// its event, in the caller's transaction. The one writer of a node's status. A refusal
/// writes nothing and is the inner error.
pub(crate) fn transition(
    conn: &Conn,
    node_id: &str,
    event: NodeEvent,
    actor: &str,
    reason: &str,
    at: &str,
) -> Result<Result<Moved, NodeRefusal>, StoreError> {
    type Facts = (
        String,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
    );
    let row: Option<Facts> = conn
        .prepare_cached(
            "SELECT status, resume_status, pause_cause, tenant, request_id FROM nodes WHERE id = ?",
        )?
        .query_row([node_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((status, resume, cause, tenant, request_id)) = row else {
        return Err(StoreError::NotFound(short(node_id).to_string()));
    };
    let bad = |what: &str, e: String| {
        StoreError::Rejected(format!("node {}: {what}: {e}", short(node_id)))
    };
    let from = NodeState {
        status: status.parse().map_err(|e| bad("status", e))?,
        resume: resume
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| bad("resume_status", e))?,
        cause: cause
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| bad("pause_cause", e))?,
    };
    let to = match node::transition(from, event) {
        Ok(to) => to,
        Err(refusal) => return Ok(Err(refusal)),
    };
    conn.prepare_cached(
        "UPDATE nodes SET status = ?, resume_status = ?, pause_cause = ?, status_reason = ?,
            updated_at = ? WHERE id = ?",
    )?
    .execute(params![
        to.status.as_str(),
        to.resume.map(NodeStatus::as_str),
        to.cause.map(PauseCause::as_str),
        reason,
        at,
        node_id
    ])?;
    let moved = Moved { from, to };
    record(
        conn,
        node_id,
        Some(from.status),
        moved.to,
        actor,
        reason,
        at,
    )?;
    let target = EventTarget {
        request_id: request_id.as_deref(),
        node_id: Some(node_id),
        tenant: Some(&tenant),
    };
    let mut payload = json!({"node_id": node_id, "from": from.status.as_str(),
        "to": to.status.as_str(), "reason": reason});
    if let Some(c) = to.cause {
        payload["cause"] = json!(c.as_str());
    }
    emit(conn, event.event_name(), &target, actor, &payload, at)?;
    Ok(Ok(moved))
}

/// The transition's row.
fn record(
    conn: &Conn,
    node_id: &str,
    from: Option<NodeStatus>,
    to: NodeState,
    actor: &str,
    reason: &str,
    at: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO node_transitions (node_id, at, from_status, to_status, cause, actor, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        node_id,
        at,
        from.map(NodeStatus::as_str),
        to.status.as_str(),
        to.cause.map(PauseCause::as_str),
        actor,
        reason
    ])?;
    Ok(())
}

/// Moves the node of a request with its service: suspended → paused, reactivated → back
/// to the status it had. A node its service cannot move (already gone) is left as it is.
pub(crate) fn follow_service(
    conn: &Conn,
    request_id: &str,
    event: RequestEvent,
    actor: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let node: Option<String> = conn
        .prepare_cached("SELECT id FROM nodes WHERE request_id = ?")?
        .query_row([request_id], |r| r.get(0))
        .optional()?;
    let Some(node_id) = node else {
        return Ok(());
    };
    let (node_event, why) = if event == RequestEvent::Suspend {
        let why = format!(
            "service suspended by {actor}{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        (NodeEvent::Pause(PauseCause::Service), why)
    } else {
        (
            NodeEvent::Resume(Some(PauseCause::Service)),
            format!("service reactivated by {actor}"),
        )
    };
    if let Err(refusal) = transition(conn, &node_id, node_event, actor, &why, &ts(now))? {
        tracing::debug!(node = %short(&node_id), %refusal, "node left as it is");
    }
    Ok(())
}

/// Registers the request's node as warming, inside the caller's (fenced) write; returns its
/// id. Idempotent: a resumed step finds the node already there.
pub(crate) fn register(conn: &Conn, f: &Fenced, n: &NewNode) -> Result<String, StoreError> {
    let existing: Option<String> = conn
        .prepare_cached("SELECT id FROM nodes WHERE request_id = ?")?
        .query_row([&f.id], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = new_id();
    let at = ts(f.now);
    // Its server is made: it starts where a registered node starts.
    let to = node::transition(
        NodeState::new(NodeStatus::Provisioning),
        NodeEvent::Registered,
    )
    .map_err(|e| StoreError::Rejected(e.to_string()))?;
    let reason = "registered by the activate step";
    let (tenant, label): (String, String) = conn
        .prepare_cached(
            "INSERT INTO nodes (id, request_id, provider_id, tenant, label, hostname, ip_address, region, cluster,
                 plan, status, status_reason, created_at, updated_at, last_heartbeat, cert_not_after, change_seq)
             SELECT ?1, r.id, ?2, r.tenant, r.label, ?3, ?4, r.region, r.cluster, r.plan, ?8,
                 ?9, ?5, ?5, ?5,
                 (SELECT MAX(c.not_after) FROM certificates c WHERE c.request_id = r.id AND c.status = 'active'),
                 ?7
             FROM requests r WHERE r.id = ?6
             RETURNING tenant, label",
        )?
        .query_row(
            params![id, n.provider_id, n.hostname, n.ip, at, f.id, super::stamp(conn)?, to.status.as_str(), reason],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    record(
        conn,
        &id,
        Some(NodeStatus::Provisioning),
        to,
        &f.actor,
        reason,
        &at,
    )?;
    let target = EventTarget {
        request_id: Some(&f.id),
        node_id: Some(&id),
        tenant: Some(&tenant),
    };
    let payload = json!({"node_id": id, "label": label, "hostname": n.hostname, "ip": n.ip,
        "from": NodeStatus::Provisioning.as_str(), "to": to.status.as_str()});
    emit(
        conn,
        NodeEvent::Registered.event_name(),
        &target,
        &f.actor,
        &payload,
        &at,
    )?;
    if let Some((plan, days, cap)) = &n.warmup {
        conn.prepare_cached(
            "INSERT INTO node_warmup (node_id, plan, day, days, cap, status, started_at, day_started_at, updated_at, day_date)
             VALUES (?1, ?2, 1, ?3, ?4, 'warming', ?5, ?5, ?5, ?6)",
        )?
        .execute(params![id, plan, days, cap, at, n.warmup_date])?;
    }
    Ok(id)
}

impl Store {
    /// Takes a request's node out of the fleet for good.
    pub async fn decommission_node(&self, f: &Fenced, reason: &str) -> Result<(), StoreError> {
        let f = f.clone();
        let reason = reason.to_string();
        self.write(move |conn| {
            let node: Option<String> = conn
                .prepare_cached("SELECT id FROM nodes WHERE request_id = ?")?
                .query_row([&f.id], |r| r.get(0))
                .optional()?;
            if let Some(node_id) = node {
                // Already decommissioned (a resumed teardown): nothing to do.
                let _ = transition(
                    conn,
                    &node_id,
                    NodeEvent::Decommission,
                    &f.actor,
                    &reason,
                    &ts(f.now),
                )?;
            }
            Ok(())
        })
        .await
    }

    pub async fn list_nodes(&self, f: &NodeFilter) -> Result<Vec<NodeRow>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let mut sql = String::from("SELECT * FROM nodes WHERE 1 = 1");
            let mut args: Vec<crate::store::sql::Value> = Vec::new();
            if let Some(s) = &f.status {
                sql.push_str(" AND status = ?");
                args.push(s.clone().into());
            }
            if let Some(t) = &f.tenant {
                sql.push_str(" AND tenant = ?");
                args.push(t.clone().into());
            }
            sql.push_str(" ORDER BY created_at, id LIMIT ?");
            args.push(f.limit.unwrap_or(i64::MAX).into());
            rows(
                c,
                &sql,
                crate::store::sql::params_from_iter(args),
                NodeRow::from_row,
            )
        })
        .await
    }

    pub async fn get_node(&self, id: &str) -> Result<NodeRow, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM nodes WHERE id = ?")?
                .query_row([&id], NodeRow::from_row)
                .optional()?
                .ok_or_else(|| StoreError::NotFound(short(&id).to_string()))
        })
        .await
    }
}

/// One change of a node's status, for `node show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeTransitionRow {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub cause: Option<String>,
    pub actor: String,
    pub reason: String,
}

impl Store {
    /// A node's transitions, oldest first.
    pub async fn node_transitions(
        &self,
        node_id: &str,
    ) -> Result<Vec<NodeTransitionRow>, StoreError> {
        let node_id = node_id.to_string();
        self.read(move |c| {
            rows(
                c,
                "SELECT at, from_status, to_status, cause, actor, reason FROM node_transitions
                 WHERE node_id = ? ORDER BY seq",
                [&node_id],
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
            )
        })
        .await
    }
}
