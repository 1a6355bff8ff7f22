//! The outbox (events) and the audit log: written inside the transaction of the change they
//! describe, read back newest first or followed by sequence number.

use super::{Conn, EventRow, Store, StoreError};
use crate::domain::ids::new_id;

/// Who and what an event is about.
pub(crate) struct EventTarget<'a> {
    pub request_id: Option<&'a str>,
    pub node_id: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

pub(crate) async fn emit(
    conn: &mut Conn,
    name: &str,
    target: &EventTarget<'_>,
    actor: &str,
    payload: &serde_json::Value,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (id, name, request_id, node_id, tenant, actor, payload, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new_id())
    .bind(name)
    .bind(target.request_id)
    .bind(target.node_id)
    .bind(target.tenant)
    .bind(actor)
    .bind(payload.to_string())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn audit(
    conn: &mut Conn,
    at: &str,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Which events to read. `after` reads forward (oldest first) from a sequence number, for
/// following; otherwise the newest `limit` events come first, before `before` if set.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub limit: i64,
    pub name: Option<String>,
    pub tenant: Option<String>,
    pub request_id: Option<String>,
}

impl Store {
    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let mut sql = String::from("SELECT * FROM events WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut ints: Vec<i64> = Vec::new();
        if let Some(n) = &f.name {
            sql.push_str(" AND name LIKE ?");
            binds.push(format!("%{n}%"));
        }
        if let Some(t) = &f.tenant {
            sql.push_str(" AND tenant = ?");
            binds.push(t.clone());
        }
        if let Some(r) = &f.request_id {
            sql.push_str(" AND request_id = ?");
            binds.push(r.clone());
        }
        if let Some(a) = f.after {
            sql.push_str(" AND seq > ?");
            ints.push(a);
        }
        if let Some(b) = f.before {
            sql.push_str(" AND seq < ?");
            ints.push(b);
        }
        sql.push_str(if f.after.is_some() {
            " ORDER BY seq ASC LIMIT ?"
        } else {
            " ORDER BY seq DESC LIMIT ?"
        });
        let mut q = sqlx::query_as::<_, EventRow>(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        for i in &ints {
            q = q.bind(i);
        }
        q = q.bind(if f.limit > 0 { f.limit } else { 100 });
        Ok(q.fetch_all(&mut *self.read().await).await?)
    }

    pub async fn list_audit(&self, limit: i64) -> Result<Vec<super::AuditRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM audit ORDER BY id DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&mut *self.read().await)
                .await?,
        )
    }
}
