//! The catalog (tenants, clusters, plans) mirrored from the config, and what each tenant and
//! cluster has reserved.

use super::{rows, Store, StoreError, Usage};
use crate::clock::ts;
use crate::config::{ClusterHealth, Config};
use chrono::{DateTime, Utc};
use rusqlite::params;
use std::collections::HashMap;

impl Store {
    /// Writes the config's tenants, clusters and plans into the store, so that history and
    /// other processes see what applied.
    pub async fn sync_catalog(&self, cfg: &Config, now: DateTime<Utc>) -> Result<(), StoreError> {
        let cfg = cfg.clone();
        self.write(move |conn| {
            let at = ts(now);
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            for t in &cfg.tenants {
                conn.prepare_cached(
                    "INSERT INTO tenants (name, quota_nodes, quota_cpu, quota_memory_gb, quota_storage_gb, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET quota_nodes = excluded.quota_nodes, quota_cpu = excluded.quota_cpu,
                       quota_memory_gb = excluded.quota_memory_gb, quota_storage_gb = excluded.quota_storage_gb,
                       updated_at = excluded.updated_at
                     WHERE tenants.quota_nodes <> excluded.quota_nodes OR tenants.quota_cpu <> excluded.quota_cpu
                       OR tenants.quota_memory_gb <> excluded.quota_memory_gb
                       OR tenants.quota_storage_gb <> excluded.quota_storage_gb",
                )?
                .execute(params![t.name, i(t.quota.nodes), i(t.quota.cpu), i(t.quota.memory_gb), i(t.quota.storage_gb), at])?;
            }
            for c in &cfg.clusters {
                let health = match c.health {
                    ClusterHealth::Online => "online",
                    ClusterHealth::Degraded => "degraded",
                    ClusterHealth::Offline => "offline",
                };
                conn.prepare_cached(
                    "INSERT INTO clusters (name, provider, region, is_default, health, cap_cpu, cap_memory_gb,
                         cap_storage_gb, cap_vm_slots, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET provider = excluded.provider, region = excluded.region,
                       is_default = excluded.is_default, health = excluded.health, cap_cpu = excluded.cap_cpu,
                       cap_memory_gb = excluded.cap_memory_gb, cap_storage_gb = excluded.cap_storage_gb,
                       cap_vm_slots = excluded.cap_vm_slots, updated_at = excluded.updated_at",
                )?
                .execute(params![
                    c.name,
                    c.provider,
                    c.region,
                    c.default,
                    health,
                    i(c.capacity.cpu),
                    i(c.capacity.memory_gb),
                    i(c.capacity.storage_gb),
                    i(c.capacity.vm_slots),
                    at
                ])?;
            }
            for p in &cfg.plans {
                conn.prepare_cached(
                    "INSERT INTO plans (name, cpu, memory_gb, storage_gb, kind, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET cpu = excluded.cpu, memory_gb = excluded.memory_gb,
                       storage_gb = excluded.storage_gb, kind = excluded.kind, updated_at = excluded.updated_at",
                )?
                .execute(params![p.name, p.cpu, p.memory_gb, p.storage_gb, p.kind, at])?;
            }
            Ok(())
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

    async fn usage_by(
        &self,
        kind: &'static str,
        key: &'static str,
    ) -> Result<HashMap<String, Usage>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {key}, COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(memory_gb), 0), COALESCE(SUM(storage_gb), 0)
                 FROM resources WHERE kind = ? AND status <> 'released' AND {key} IS NOT NULL GROUP BY {key}"
            );
            let list = rows(c, &sql, [kind], |r| {
                Ok((r.get::<_, String>(0)?, Usage { nodes: r.get(1)?, cpu: r.get(2)?, memory_gb: r.get(3)?, storage_gb: r.get(4)? }))
            })?;
            Ok(list.into_iter().collect())
        })
        .await
    }
}
