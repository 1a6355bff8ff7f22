//! The simulated cloud's inventory tables. Only `providers::sim` calls these.

use super::{rows, Conn, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimInstanceRow {
    pub id: String,
    pub idempotency_key: String,
    pub cluster: String,
    pub region: String,
    pub label: String,
    pub plan: String,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    pub ip: String,
    pub power: String,
    pub firewall: Option<String>,
    pub rdns: Option<String>,
    pub mail_stack: bool,
    pub ready_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

from_row!(SimInstanceRow {
    id,
    idempotency_key,
    cluster,
    region,
    label,
    plan,
    cpu,
    memory_gb,
    storage_gb,
    ip,
    power,
    firewall,
    rdns,
    mail_stack,
    ready_at,
    created_at,
    updated_at,
    deleted_at
});

fn by(conn: &Conn, column: &str, value: &str) -> Result<Option<SimInstanceRow>, StoreError> {
    let sql = format!("SELECT * FROM sim_instances WHERE {column} = ?");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], SimInstanceRow::from_row)
        .optional()?)
}

#[derive(Debug, Clone)]
pub struct SimCreate {
    pub id: String,
    pub idempotency_key: String,
    pub cluster: String,
    pub region: String,
    pub label: String,
    pub plan: String,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    pub ready_at: DateTime<Utc>,
    /// Addresses to try first (picked at random by the caller), then the whole pools.
    pub ip_candidates: Vec<Ipv4Addr>,
    pub ip_pools: Vec<(u32, u32)>,
}

/// What `sim_create` did.
#[derive(Debug, Clone)]
pub enum SimCreated {
    New(SimInstanceRow),
    /// An instance with this idempotency key already existed.
    Existing(SimInstanceRow),
    PoolExhausted,
}

impl Store {
    /// Creates an instance unless one with the same idempotency key exists; picks a free IP.
    pub async fn sim_create(
        &self,
        c: SimCreate,
        now: DateTime<Utc>,
    ) -> Result<SimCreated, StoreError> {
        self.write(move |conn| {
            if let Some(row) = by(conn, "idempotency_key", &c.idempotency_key)? {
                return Ok(SimCreated::Existing(row));
            }
            let taken = |ip: &Ipv4Addr| -> Result<bool, StoreError> {
                Ok(conn
                    .prepare_cached("SELECT 1 FROM sim_instances WHERE ip = ? AND deleted_at IS NULL")?
                    .query_row([ip.to_string()], |_| Ok(()))
                    .optional()?
                    .is_some())
            };
            let mut chosen = None;
            for ip in &c.ip_candidates {
                if !taken(ip)? {
                    chosen = Some(*ip);
                    break;
                }
            }
            if chosen.is_none() {
                let used: std::collections::HashSet<String> =
                    rows(conn, "SELECT ip FROM sim_instances WHERE deleted_at IS NULL", [], |r| r.get(0))?.into_iter().collect();
                chosen = c
                    .ip_pools
                    .iter()
                    .flat_map(|(lo, hi)| *lo..=*hi)
                    .map(Ipv4Addr::from)
                    .find(|ip| !used.contains(&ip.to_string()));
            }
            let Some(ip) = chosen else {
                return Ok(SimCreated::PoolExhausted);
            };
            let at = ts(now);
            conn.prepare_cached(
                "INSERT INTO sim_instances (id, idempotency_key, cluster, region, label, plan, cpu, memory_gb, storage_gb,
                     ip, power, ready_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'building', ?11, ?12, ?12)",
            )?
            .execute(params![
                c.id,
                c.idempotency_key,
                c.cluster,
                c.region,
                c.label,
                c.plan,
                c.cpu,
                c.memory_gb,
                c.storage_gb,
                ip.to_string(),
                ts(c.ready_at),
                at
            ])?;
            let row = by(conn, "id", &c.id)?.ok_or_else(|| StoreError::NotFound(c.id.clone()))?;
            Ok(SimCreated::New(row))
        })
        .await
    }

    pub async fn sim_get(&self, id: &str) -> Result<Option<SimInstanceRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| by(c, "id", &id)).await
    }

    pub async fn sim_find_by_key(&self, key: &str) -> Result<Option<SimInstanceRow>, StoreError> {
        let key = key.to_string();
        self.read(move |c| by(c, "idempotency_key", &key)).await
    }

    /// Live simulated instances in one cluster.
    pub async fn sim_count_live(&self, cluster: &str) -> Result<i64, StoreError> {
        let cluster = cluster.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT COUNT(*) FROM sim_instances WHERE cluster = ? AND deleted_at IS NULL",
            )?
            .query_row([cluster], |r| r.get(0))?)
        })
        .await
    }

    pub async fn sim_list_live(&self) -> Result<Vec<SimInstanceRow>, StoreError> {
        self.read(|c| {
            rows(
                c,
                "SELECT * FROM sim_instances WHERE deleted_at IS NULL ORDER BY created_at",
                [],
                SimInstanceRow::from_row,
            )
        })
        .await
    }

    /// Changes a live instance; returns false if there is none that meets the change's
    /// condition (the caller reads the instance to say why).
    pub async fn sim_update(
        &self,
        id: &str,
        change: SimChange,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let at = ts(now);
            let live = "WHERE id = ?3 AND deleted_at IS NULL";
            // Only an instance that finished building can run services.
            let built = "AND power <> 'stopped' AND ready_at <= ?2";
            let n = match &change {
                SimChange::Power(p) => {
                    let cond = if p == "running" { "AND ready_at <= ?2" } else { "" };
                    conn.prepare_cached(&format!("UPDATE sim_instances SET power = ?1, updated_at = ?2 {live} {cond}"))?
                        .execute(params![p, at, id])?
                }
                SimChange::Firewall(f) => conn
                    .prepare_cached(&format!("UPDATE sim_instances SET firewall = ?1, updated_at = ?2 {live}"))?
                    .execute(params![f, at, id])?,
                SimChange::Rdns { ip, name } => conn
                    .prepare_cached(&format!("UPDATE sim_instances SET rdns = ?1, updated_at = ?2 {live} AND ip = ?4"))?
                    .execute(params![name, at, id, ip])?,
                SimChange::MailStack => conn
                    .prepare_cached(&format!("UPDATE sim_instances SET mail_stack = ?1, updated_at = ?2 {live} {built}"))?
                    .execute(params![1, at, id])?,
                // The former size is kept (the first time) until a confirm or a revert.
                SimChange::Resize { cpu, memory_gb, storage_gb, plan, ready_at } => conn
                    .prepare_cached(
                        "UPDATE sim_instances SET
                             prev_plan = COALESCE(prev_plan, plan), prev_cpu = COALESCE(prev_cpu, cpu),
                             prev_memory_gb = COALESCE(prev_memory_gb, memory_gb),
                             prev_storage_gb = COALESCE(prev_storage_gb, storage_gb),
                             cpu = ?4, memory_gb = ?5, storage_gb = ?6, plan = ?1, updated_at = ?2,
                             power = 'building', ready_at = ?7
                         WHERE id = ?3 AND deleted_at IS NULL",
                    )?
                    .execute(params![plan, at, id, cpu, memory_gb, storage_gb, ts(*ready_at)])?,
                // Nothing pending is nothing to do: still a success.
                SimChange::ConfirmResize => {
                    conn.prepare_cached(
                        "UPDATE sim_instances SET prev_plan = NULL, prev_cpu = NULL, prev_memory_gb = NULL,
                             prev_storage_gb = NULL, updated_at = ?1
                         WHERE id = ?2 AND deleted_at IS NULL AND prev_plan IS NOT NULL",
                    )?
                    .execute(params![at, id])?;
                    1
                }
                SimChange::RevertResize => {
                    conn.prepare_cached(
                        "UPDATE sim_instances SET plan = prev_plan, cpu = prev_cpu, memory_gb = prev_memory_gb,
                             storage_gb = prev_storage_gb, prev_plan = NULL, prev_cpu = NULL,
                             prev_memory_gb = NULL, prev_storage_gb = NULL, updated_at = ?1
                         WHERE id = ?2 AND deleted_at IS NULL AND prev_plan IS NOT NULL",
                    )?
                    .execute(params![at, id])?;
                    1
                }
                SimChange::Delete => conn
                    .prepare_cached(&format!("UPDATE sim_instances SET deleted_at = ?1, power = 'stopped', updated_at = ?2 {live}"))?
                    .execute(params![at, at, id])?,
            };
            Ok(n > 0)
        })
        .await
    }
}

#[derive(Debug, Clone)]
pub enum SimChange {
    Power(String),
    Firewall(String),
    /// Set (or reset) the PTR of `ip`, which must be the instance's.
    Rdns {
        ip: String,
        name: Option<String>,
    },
    MailStack,
    /// Applied at once, on a restart that ends at `ready_at`; kept revertible.
    Resize {
        cpu: i64,
        memory_gb: i64,
        storage_gb: i64,
        plan: String,
        ready_at: DateTime<Utc>,
    },
    /// The resize is final.
    ConfirmResize,
    /// Back to the size before the resize.
    RevertResize,
    Delete,
}
