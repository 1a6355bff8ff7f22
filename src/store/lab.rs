//! The lab's inventory: which host each lab instance is, at which address. The hosts
//! themselves are on the machine (see [`crate::lab`]).

use super::{rows, Conn, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabInstanceRow {
    pub id: String,
    pub idempotency_key: String,
    pub host_id: String,
    pub cluster: String,
    pub region: String,
    pub label: String,
    pub plan: String,
    pub ip: String,
    pub power: String,
    pub firewall: Option<String>,
    pub rdns: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

from_row!(LabInstanceRow {
    id,
    idempotency_key,
    host_id,
    cluster,
    region,
    label,
    plan,
    ip,
    power,
    firewall,
    rdns,
    created_at,
    updated_at,
    deleted_at
});

/// A new instance, as the lab provider asks for it.
#[derive(Debug, Clone)]
pub struct LabNew {
    pub id: String,
    pub host_id: String,
    pub idempotency_key: String,
    pub cluster: String,
    pub region: String,
    pub label: String,
    pub plan: String,
    /// The addresses hosts may take, first to last.
    pub range: (Ipv4Addr, Ipv4Addr),
}

/// A change to a live instance's record.
#[derive(Debug, Clone)]
pub enum LabChange {
    Power(&'static str),
    Firewall(String),
    Rdns(Option<String>),
    Plan(String),
    Delete,
}

fn by(conn: &Conn, column: &str, value: &str) -> Result<Option<LabInstanceRow>, StoreError> {
    let sql = format!("SELECT * FROM lab_instances WHERE {column} = ?");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], LabInstanceRow::from_row)
        .optional()?)
}

impl Store {
    /// The instance with this idempotency key, made (with the lowest free address) if there
    /// is none; `None` when the lab's subnet is full.
    pub async fn lab_create(
        &self,
        n: LabNew,
        now: DateTime<Utc>,
    ) -> Result<Option<LabInstanceRow>, StoreError> {
        self.write(move |conn| {
            if let Some(row) = by(conn, "idempotency_key", &n.idempotency_key)? {
                return Ok(Some(row));
            }
            let used: std::collections::HashSet<String> = rows(
                conn,
                "SELECT ip FROM lab_instances WHERE deleted_at IS NULL",
                [],
                |r| r.get(0),
            )?
            .into_iter()
            .collect();
            let (lo, hi) = (u32::from(n.range.0), u32::from(n.range.1));
            let Some(ip) = (lo..=hi)
                .map(Ipv4Addr::from)
                .find(|ip| !used.contains(&ip.to_string()))
            else {
                return Ok(None);
            };
            let at = ts(now);
            conn.prepare_cached(
                "INSERT INTO lab_instances (id, idempotency_key, host_id, cluster, region, label, plan, ip,
                     power, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9, ?9)",
            )?
            .execute(params![
                n.id,
                n.idempotency_key,
                n.host_id,
                n.cluster,
                n.region,
                n.label,
                n.plan,
                ip.to_string(),
                at
            ])?;
            by(conn, "id", &n.id)
        })
        .await
    }

    pub async fn lab_get(&self, id: &str) -> Result<Option<LabInstanceRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| by(c, "id", &id)).await
    }

    pub async fn lab_find_by_key(&self, key: &str) -> Result<Option<LabInstanceRow>, StoreError> {
        let key = key.to_string();
        self.read(move |c| by(c, "idempotency_key", &key)).await
    }

    /// Every instance not deleted.
    pub async fn lab_list_live(&self) -> Result<Vec<LabInstanceRow>, StoreError> {
        self.read(|c| {
            rows(
                c,
                "SELECT * FROM lab_instances WHERE deleted_at IS NULL ORDER BY created_at, id",
                [],
                LabInstanceRow::from_row,
            )
        })
        .await
    }

    /// Changes a live instance's record; false when there is no live one.
    pub async fn lab_update(
        &self,
        id: &str,
        change: LabChange,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let at = ts(now);
            let (column, value): (&str, Option<String>) = match change {
                LabChange::Power(p) => ("power", Some(p.to_string())),
                LabChange::Firewall(f) => ("firewall", Some(f)),
                LabChange::Rdns(r) => ("rdns", r),
                LabChange::Plan(p) => ("plan", Some(p)),
                LabChange::Delete => ("deleted_at", Some(at.clone())),
            };
            let sql = format!(
                "UPDATE lab_instances SET {column} = ?1, updated_at = ?2 WHERE id = ?3 AND deleted_at IS NULL"
            );
            let n = conn.prepare_cached(&sql)?.execute(params![value, at, id])?;
            Ok(n > 0)
        })
        .await
    }
}
