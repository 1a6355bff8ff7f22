//! The simulated cloud's inventory tables. Only `providers::sim` calls these.

use super::{Store, StoreError};
use crate::clock::ts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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
            Box::pin(async move {
                let existing: Option<SimInstanceRow> = sqlx::query_as("SELECT * FROM sim_instances WHERE idempotency_key = ?")
                    .bind(&c.idempotency_key)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(row) = existing {
                    return Ok(SimCreated::Existing(row));
                }
                let mut chosen = None;
                for ip in &c.ip_candidates {
                    let taken: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sim_instances WHERE ip = ? AND deleted_at IS NULL")
                        .bind(ip.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if taken.is_none() {
                        chosen = Some(*ip);
                        break;
                    }
                }
                if chosen.is_none() {
                    let used: std::collections::HashSet<String> =
                        sqlx::query_scalar("SELECT ip FROM sim_instances WHERE deleted_at IS NULL")
                            .fetch_all(&mut *conn)
                            .await?
                            .into_iter()
                            .collect();
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
                sqlx::query(
                    "INSERT INTO sim_instances (id, idempotency_key, cluster, region, label, plan, cpu, memory_gb, storage_gb,
                         ip, power, ready_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'building', ?, ?, ?)",
                )
                .bind(&c.id)
                .bind(&c.idempotency_key)
                .bind(&c.cluster)
                .bind(&c.region)
                .bind(&c.label)
                .bind(&c.plan)
                .bind(c.cpu)
                .bind(c.memory_gb)
                .bind(c.storage_gb)
                .bind(ip.to_string())
                .bind(ts(c.ready_at))
                .bind(&at)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
                let row: SimInstanceRow = sqlx::query_as("SELECT * FROM sim_instances WHERE id = ?")
                    .bind(&c.id)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(SimCreated::New(row))
            })
        })
        .await
    }

    pub async fn sim_get(&self, id: &str) -> Result<Option<SimInstanceRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM sim_instances WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.read().await)
            .await?)
    }

    pub async fn sim_find_by_key(&self, key: &str) -> Result<Option<SimInstanceRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM sim_instances WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&mut *self.read().await)
                .await?,
        )
    }

    pub async fn sim_list_live(&self) -> Result<Vec<SimInstanceRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM sim_instances WHERE deleted_at IS NULL ORDER BY created_at",
        )
        .fetch_all(&mut *self.read().await)
        .await?)
    }

    /// Sets one of the instance's mutable fields; returns false if there is no live instance.
    pub async fn sim_update(
        &self,
        id: &str,
        change: SimChange,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(now);
                let q = match &change {
                    SimChange::Power(p) => sqlx::query("UPDATE sim_instances SET power = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL").bind(p.clone()),
                    SimChange::Firewall(f) => sqlx::query("UPDATE sim_instances SET firewall = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL").bind(f.clone()),
                    SimChange::Rdns(r) => sqlx::query("UPDATE sim_instances SET rdns = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL").bind(r.clone()),
                    SimChange::MailStack => sqlx::query("UPDATE sim_instances SET mail_stack = 1, updated_at = ? WHERE id = ? AND deleted_at IS NULL"),
                    SimChange::Resize { cpu, memory_gb, storage_gb, plan } => sqlx::query(
                        "UPDATE sim_instances SET cpu = ?, memory_gb = ?, storage_gb = ?, plan = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                    )
                    .bind(*cpu)
                    .bind(*memory_gb)
                    .bind(*storage_gb)
                    .bind(plan.clone()),
                    SimChange::Delete => sqlx::query("UPDATE sim_instances SET deleted_at = ?, power = 'stopped', updated_at = ? WHERE id = ? AND deleted_at IS NULL")
                        .bind(at.clone()),
                };
                let n = q.bind(&at).bind(&id).execute(&mut *conn).await?.rows_affected();
                Ok(n > 0)
            })
        })
        .await
    }
}

#[derive(Debug, Clone)]
pub enum SimChange {
    Power(String),
    Firewall(String),
    Rdns(Option<String>),
    MailStack,
    Resize {
        cpu: i64,
        memory_gb: i64,
        storage_gb: i64,
        plan: String,
    },
    Delete,
}
