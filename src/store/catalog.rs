//! The catalog (tenants, clusters, plans) mirrored from the config, and what each tenant and
//! cluster has reserved.

use super::{Store, StoreError, Usage};
use crate::clock::ts;
use crate::config::{ClusterHealth, Config};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

impl Store {
    /// Writes the config's tenants, clusters and plans into the store, so that history and
    /// other processes see what applied.
    pub async fn sync_catalog(&self, cfg: &Config, now: DateTime<Utc>) -> Result<(), StoreError> {
        let cfg = cfg.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(now);
                for t in &cfg.tenants {
                    sqlx::query(
                        "INSERT INTO tenants (name, quota_nodes, quota_cpu, quota_memory_gb, quota_storage_gb, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?)
                         ON CONFLICT (name) DO UPDATE SET quota_nodes = excluded.quota_nodes, quota_cpu = excluded.quota_cpu,
                           quota_memory_gb = excluded.quota_memory_gb, quota_storage_gb = excluded.quota_storage_gb,
                           updated_at = excluded.updated_at
                         WHERE tenants.quota_nodes <> excluded.quota_nodes OR tenants.quota_cpu <> excluded.quota_cpu
                           OR tenants.quota_memory_gb <> excluded.quota_memory_gb
                           OR tenants.quota_storage_gb <> excluded.quota_storage_gb",
                    )
                    .bind(&t.name)
                    .bind(t.quota.nodes as i64)
                    .bind(t.quota.cpu as i64)
                    .bind(t.quota.memory_gb as i64)
                    .bind(t.quota.storage_gb as i64)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
                }
                for c in &cfg.clusters {
                    let health = match c.health {
                        ClusterHealth::Online => "online",
                        ClusterHealth::Degraded => "degraded",
                        ClusterHealth::Offline => "offline",
                    };
                    sqlx::query(
                        "INSERT INTO clusters (name, provider, region, is_default, health, cap_cpu, cap_memory_gb,
                             cap_storage_gb, cap_vm_slots, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (name) DO UPDATE SET provider = excluded.provider, region = excluded.region,
                           is_default = excluded.is_default, health = excluded.health, cap_cpu = excluded.cap_cpu,
                           cap_memory_gb = excluded.cap_memory_gb, cap_storage_gb = excluded.cap_storage_gb,
                           cap_vm_slots = excluded.cap_vm_slots, updated_at = excluded.updated_at",
                    )
                    .bind(&c.name)
                    .bind(&c.provider)
                    .bind(&c.region)
                    .bind(c.default)
                    .bind(health)
                    .bind(c.capacity.cpu as i64)
                    .bind(c.capacity.memory_gb as i64)
                    .bind(c.capacity.storage_gb as i64)
                    .bind(c.capacity.vm_slots as i64)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
                }
                for p in &cfg.plans {
                    sqlx::query(
                        "INSERT INTO plans (name, cpu, memory_gb, storage_gb, kind, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                         ON CONFLICT (name) DO UPDATE SET cpu = excluded.cpu, memory_gb = excluded.memory_gb,
                           storage_gb = excluded.storage_gb, kind = excluded.kind, updated_at = excluded.updated_at",
                    )
                    .bind(&p.name)
                    .bind(p.cpu)
                    .bind(p.memory_gb)
                    .bind(p.storage_gb)
                    .bind(&p.kind)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Live quota reservations per tenant (`nodes` counts reservations).
    pub async fn tenant_usage(&self) -> Result<HashMap<String, Usage>, StoreError> {
        self.usage_by("quota", "tenant").await
    }

    /// Live capacity reservations per cluster (`nodes` counts VM slots).
    pub async fn cluster_usage(&self) -> Result<HashMap<String, Usage>, StoreError> {
        self.usage_by("capacity", "cluster").await
    }

    async fn usage_by(&self, kind: &str, key: &str) -> Result<HashMap<String, Usage>, StoreError> {
        let sql = format!(
            "SELECT {key}, COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(memory_gb), 0), COALESCE(SUM(storage_gb), 0)
             FROM resources WHERE kind = ? AND status <> 'released' AND {key} IS NOT NULL GROUP BY {key}"
        );
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&sql)
            .bind(kind)
            .fetch_all(&mut *self.read().await)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(k, nodes, cpu, memory_gb, storage_gb)| {
                (
                    k,
                    Usage {
                        nodes,
                        cpu,
                        memory_gb,
                        storage_gb,
                    },
                )
            })
            .collect())
    }
}
