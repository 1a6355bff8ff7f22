//! Sending nodes: registered by the activate step, decommissioned by a teardown, paused and
//! resumed with their service.

use super::events::{emit, EventTarget};
use super::steps::Fenced;
use super::{Conn, NodeRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::{new_id, short};
use crate::domain::RequestEvent;
use chrono::{DateTime, Utc};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct NewNode {
    pub provider_id: String,
    pub hostname: String,
    pub ip: String,
}

#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub status: Option<String>,
    pub tenant: Option<String>,
    pub limit: Option<i64>,
}

/// Moves the node of a request with its service: suspended → paused, reactivated → back
/// to the status it had.
pub(crate) async fn follow_service(
    conn: &mut Conn,
    request_id: &str,
    event: RequestEvent,
    actor: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let node: Option<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, tenant, status, resume_status FROM nodes WHERE request_id = ?")
            .bind(request_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((node_id, tenant, status, resume)) = node else {
        return Ok(());
    };
    let at = ts(now);
    let (new_status, new_resume, why, name) = match event {
        RequestEvent::Suspend => (
            "paused".to_string(),
            Some(status.clone()),
            format!(
                "service suspended by {actor}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            "node.paused",
        ),
        _ => (
            resume.unwrap_or_else(|| "warming".into()),
            None,
            format!("service reactivated by {actor}"),
            "node.resumed",
        ),
    };
    sqlx::query("UPDATE nodes SET status = ?, resume_status = ?, status_reason = ?, updated_at = ? WHERE id = ?")
        .bind(&new_status)
        .bind(&new_resume)
        .bind(&why)
        .bind(&at)
        .bind(&node_id)
        .execute(&mut *conn)
        .await?;
    let target = EventTarget {
        request_id: Some(request_id),
        node_id: Some(&node_id),
        tenant: Some(&tenant),
    };
    emit(
        conn,
        name,
        &target,
        actor,
        &json!({"node_id": node_id, "from": status, "to": new_status, "reason": why}),
        &at,
    )
    .await?;
    Ok(())
}

impl Store {
    /// Registers the request's node as warming and records it as a resource of the request.
    /// Idempotent: a resumed step finds the node already there.
    pub async fn register_node(&self, f: &Fenced, n: NewNode) -> Result<String, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(f.now);
                let existing: Option<String> = sqlx::query_scalar("SELECT id FROM nodes WHERE request_id = ?")
                    .bind(&f.id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let node_id = match existing {
                    Some(id) => id,
                    None => {
                        let id = new_id();
                        sqlx::query(
                            "INSERT INTO nodes (id, request_id, provider_id, tenant, label, hostname, ip_address, region, cluster,
                                 plan, status, status_reason, created_at, updated_at, last_heartbeat)
                             SELECT ?, r.id, ?, r.tenant, r.label, ?, ?, r.region, r.cluster, r.plan, 'warming',
                                 'registered by the activate step', ?, ?, ?
                             FROM requests r WHERE r.id = ?",
                        )
                        .bind(&id)
                        .bind(&n.provider_id)
                        .bind(&n.hostname)
                        .bind(&n.ip)
                        .bind(&at)
                        .bind(&at)
                        .bind(&at)
                        .bind(&f.id)
                        .execute(&mut *conn)
                        .await?;
                        id
                    }
                };
                Ok(node_id)
            })
        })
        .await
    }

    /// Takes a request's node out of the fleet for good.
    pub async fn decommission_node(&self, f: &Fenced, reason: &str) -> Result<(), StoreError> {
        let f = f.clone();
        let reason = reason.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(f.now);
                sqlx::query(
                    "UPDATE nodes SET status = 'decommissioned', status_reason = ?, updated_at = ?
                     WHERE request_id = ? AND status <> 'decommissioned'",
                )
                .bind(&reason)
                .bind(&at)
                .bind(&f.id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn list_nodes(&self, f: &NodeFilter) -> Result<Vec<NodeRow>, StoreError> {
        let mut sql = String::from("SELECT * FROM nodes WHERE 1 = 1");
        if f.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if f.tenant.is_some() {
            sql.push_str(" AND tenant = ?");
        }
        sql.push_str(" ORDER BY created_at, id LIMIT ?");
        let mut q = sqlx::query_as::<_, NodeRow>(&sql);
        if let Some(s) = &f.status {
            q = q.bind(s);
        }
        if let Some(t) = &f.tenant {
            q = q.bind(t);
        }
        Ok(q.bind(f.limit.unwrap_or(i64::MAX))
            .fetch_all(&mut *self.read().await)
            .await?)
    }

    pub async fn get_node(&self, id: &str) -> Result<NodeRow, StoreError> {
        sqlx::query_as("SELECT * FROM nodes WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.read().await)
            .await?
            .ok_or_else(|| StoreError::NotFound(short(id).to_string()))
    }
}
