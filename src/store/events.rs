//! The outbox (events) and the audit log: written inside the transaction of the change they
//! describe, read back newest first or followed by sequence number.

use super::{rows, Conn, EventRow, Store, StoreError};
use crate::domain::ids::new_id;
use crate::store::sql::params;

/// Who and what an event is about.
pub(crate) struct EventTarget<'a> {
    pub request_id: Option<&'a str>,
    pub node_id: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

pub(crate) fn emit(
    conn: &Conn,
    name: &str,
    target: &EventTarget<'_>,
    actor: &str,
    payload: &serde_json::Value,
    at: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (id, name, request_id, node_id, tenant, actor, payload, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        new_id(),
        name,
        target.request_id,
        target.node_id,
        target.tenant,
        actor,
        payload.to_string(),
        at
    ])?;
    Ok(())
}

pub(crate) fn audit(
    conn: &Conn,
    at: &str,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
    )?
    .execute(params![at, actor, action, target, detail])?;
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
    /// Only events at or after this stored time.
    pub since: Option<String>,
}

impl Store {
    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let mut sql = String::from("SELECT * FROM events WHERE 1 = 1");
            let mut args: Vec<crate::store::sql::Value> = Vec::new();
            if let Some(n) = &f.name {
                sql.push_str(" AND name LIKE ?");
                args.push(format!("%{n}%").into());
            }
            if let Some(t) = &f.tenant {
                sql.push_str(" AND tenant = ?");
                args.push(t.clone().into());
            }
            if let Some(t) = &f.since {
                sql.push_str(" AND at >= ?");
                args.push(t.clone().into());
            }
            if let Some(r) = &f.request_id {
                sql.push_str(" AND request_id = ?");
                args.push(r.clone().into());
            }
            if let Some(a) = f.after {
                sql.push_str(" AND seq > ?");
                args.push(a.into());
            }
            if let Some(b) = f.before {
                sql.push_str(" AND seq < ?");
                args.push(b.into());
            }
            sql.push_str(if f.after.is_some() {
                " ORDER BY seq ASC LIMIT ?"
            } else {
                " ORDER BY seq DESC LIMIT ?"
            });
            args.push((if f.limit > 0 { f.limit } else { 100 }).into());
            rows(
                c,
                &sql,
                crate::store::sql::params_from_iter(args),
                EventRow::from_row,
            )
        })
        .await
    }

    pub async fn list_audit(&self, limit: i64) -> Result<Vec<super::AuditRow>, StoreError> {
        self.read(move |c| {
            rows(
                c,
                "SELECT * FROM audit ORDER BY id DESC LIMIT ?",
                [limit],
                super::AuditRow::from_row,
            )
        })
        .await
    }
}
