//! Sending nodes: registered by the activate step, decommissioned by a teardown, paused and
//! resumed with their service.

use super::events::{emit, EventTarget};
use super::steps::Fenced;
use super::{rows, Conn, NodeRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::{new_id, short};
use crate::domain::RequestEvent;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
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

/// Moves the node of a request with its service: suspended → paused, reactivated → back
/// to the status it had.
pub(crate) fn follow_service(
    conn: &Conn,
    request_id: &str,
    event: RequestEvent,
    actor: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let node: Option<(String, String, String, Option<String>)> = conn
        .prepare_cached("SELECT id, tenant, status, resume_status FROM nodes WHERE request_id = ?")?
        .query_row([request_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((node_id, tenant, status, resume)) = node else {
        return Ok(());
    };
    let at = ts(now);
    let (new_status, new_resume, why, name) = if event == RequestEvent::Suspend {
        let why = format!(
            "service suspended by {actor}{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        (
            "paused".to_string(),
            Some(status.clone()),
            why,
            "node.paused",
        )
    } else {
        let back = resume.unwrap_or_else(|| "warming".into());
        (
            back,
            None,
            format!("service reactivated by {actor}"),
            "node.resumed",
        )
    };
    let cause = (event == RequestEvent::Suspend).then_some("service");
    conn.prepare_cached(
        "UPDATE nodes SET status = ?, resume_status = ?, status_reason = ?, pause_cause = ?, updated_at = ? WHERE id = ?",
    )?
    .execute(params![new_status, new_resume, why, cause, at, node_id])?;
    let target = EventTarget {
        request_id: Some(request_id),
        node_id: Some(&node_id),
        tenant: Some(&tenant),
    };
    let payload = json!({"node_id": node_id, "from": status, "to": new_status, "reason": why});
    emit(conn, name, &target, actor, &payload, &at)
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
    conn.prepare_cached(
        "INSERT INTO nodes (id, request_id, provider_id, tenant, label, hostname, ip_address, region, cluster,
             plan, status, status_reason, created_at, updated_at, last_heartbeat, cert_not_after, change_seq)
         SELECT ?1, r.id, ?2, r.tenant, r.label, ?3, ?4, r.region, r.cluster, r.plan, 'warming',
             'registered by the activate step', ?5, ?5, ?5,
             (SELECT MAX(c.not_after) FROM certificates c WHERE c.request_id = r.id AND c.status = 'active'),
             ?7
         FROM requests r WHERE r.id = ?6",
    )?
    .execute(params![id, n.provider_id, n.hostname, n.ip, at, f.id, super::stamp(conn)?])?;
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
            conn.prepare_cached(
                "UPDATE nodes SET status = 'decommissioned', status_reason = ?, updated_at = ?
                 WHERE request_id = ? AND status <> 'decommissioned'",
            )?
            .execute(params![reason, ts(f.now), f.id])?;
            Ok(())
        })
        .await
    }

    pub async fn list_nodes(&self, f: &NodeFilter) -> Result<Vec<NodeRow>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let mut sql = String::from("SELECT * FROM nodes WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
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
            rows(c, &sql, rusqlite::params_from_iter(args), NodeRow::from_row)
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
