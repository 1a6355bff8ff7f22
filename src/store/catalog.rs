//! The catalog (tenants, clusters, plans, approval rules) mirrored from the config, and what
//! each tenant and cluster has reserved.

use super::{rows, Conn, Store, StoreError, Usage};
use crate::clock::ts;
use crate::config::{ClusterHealth, Config};
use crate::domain::approval::RuleMatch;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
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
            for rule in cfg.approval_rules() {
                mirror_rule(conn, &rule.name, rule.priority, rule.tenant.as_deref(), &rule.definition(), &at)?;
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
                 FROM resources WHERE kind = '{kind}' AND status <> 'released' AND {key} IS NOT NULL GROUP BY {key}"
            );
            // The kind is in the statement (not bound) so that its partial index serves it.
            let list = rows(c, &sql, [], |r| {
                Ok((r.get::<_, String>(0)?, Usage { nodes: r.get(1)?, cpu: r.get(2)?, memory_gb: r.get(3)?, storage_gb: r.get(4)? }))
            })?;
            Ok(list.into_iter().collect())
        })
        .await
    }
}

/// One version of an approval rule, as mirrored from the config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleVersion {
    pub name: String,
    pub version: i64,
    pub priority: i64,
    pub tenant: Option<String>,
    pub definition: String,
    pub first_seen_at: String,
}

impl Store {
    /// Every version of every approval rule the store has seen, newest version first per rule.
    pub async fn approval_rule_versions(&self) -> Result<Vec<RuleVersion>, StoreError> {
        self.read(|c| {
            rows(
                c,
                "SELECT name, version, priority, tenant, definition, first_seen_at FROM approval_rules
                 ORDER BY name, version DESC",
                [],
                |r| {
                    Ok(RuleVersion {
                        name: r.get(0)?,
                        version: r.get(1)?,
                        priority: r.get(2)?,
                        tenant: r.get(3)?,
                        definition: r.get(4)?,
                        first_seen_at: r.get(5)?,
                    })
                },
            )
        })
        .await
    }
}

/// The version number of a rule's definition, adding it as the rule's next version when the
/// store has not seen it before.
fn mirror_rule(
    conn: &Conn,
    name: &str,
    priority: i64,
    tenant: Option<&str>,
    definition: &str,
    at: &str,
) -> Result<i64, StoreError> {
    let known: Option<i64> = conn
        .prepare_cached("SELECT version FROM approval_rules WHERE name = ? AND definition = ?")?
        .query_row(params![name, definition], |r| r.get(0))
        .optional()?;
    if let Some(v) = known {
        return Ok(v);
    }
    let v: i64 = conn
        .prepare_cached(
            "INSERT INTO approval_rules (name, version, priority, tenant, definition, first_seen_at)
             VALUES (?1, (SELECT COALESCE(MAX(version), 0) + 1 FROM approval_rules WHERE name = ?1), ?2, ?3, ?4, ?5)
             RETURNING version",
        )?
        .query_row(params![name, priority, tenant, definition, at], |r| r.get(0))?;
    Ok(v)
}

/// The version of the rule that matched a request (recorded with it).
pub(crate) fn rule_version(conn: &Conn, m: &RuleMatch, at: &str) -> Result<i64, StoreError> {
    let rule: crate::domain::approval::ApprovalRule = serde_json::from_str(&m.definition)
        .map_err(|e| StoreError::Rejected(format!("approval rule {}: {e}", m.rule)))?;
    mirror_rule(
        conn,
        &m.rule,
        rule.priority,
        rule.tenant.as_deref(),
        &m.definition,
        at,
    )
}
