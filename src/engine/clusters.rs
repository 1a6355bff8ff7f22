//! Tenants and clusters as operators see them: limits from the config, use from the store's
//! live reservations, and a connectivity test that makes one real round trip to a cluster's
//! provider.

use super::commands::CommandError;
use super::Ctx;
use crate::config::{ClusterHealth, Config};
use crate::domain::capacity::Amounts;
use crate::store::{Store, StoreError, Usage};
use serde::Serialize;
use std::time::Instant;

/// A tenant's quota and what its live requests hold of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantStatus {
    pub name: String,
    /// `units` is nodes.
    pub limit: Amounts,
    pub used: Amounts,
    pub approvers: Vec<String>,
}

/// A cluster's capacity and what is reserved on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub provider: String,
    pub region: String,
    pub default: bool,
    pub health: ClusterHealth,
    /// `units` is VM slots.
    pub capacity: Amounts,
    pub used: Amounts,
    pub free: Amounts,
    /// Its provider's circuit breaker as last recorded: closed, or open (requests wait)
    /// until `retry_at`, when a probe goes.
    pub circuit: Circuit,
    /// At most this many calls go to its provider at once (`providers.limits`).
    pub max_in_flight: u32,
}

/// A provider's circuit, as `cluster list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Circuit {
    /// closed | open
    pub state: String,
    pub failures: i64,
    pub opened_at: Option<String>,
    pub retry_at: Option<String>,
    pub last_error: Option<String>,
}

impl Circuit {
    fn closed() -> Circuit {
        Circuit {
            state: "closed".into(),
            failures: 0,
            opened_at: None,
            retry_at: None,
            last_error: None,
        }
    }
}

/// What a connectivity test found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectivityReport {
    pub cluster: String,
    pub provider: String,
    pub region: String,
    pub ok: bool,
    /// Wall time of the round trip, in milliseconds.
    pub latency_ms: f64,
    /// What the provider answered, or why it failed.
    pub detail: String,
}

impl ConnectivityReport {
    pub fn describe(&self) -> String {
        let verdict = if self.ok { "ok" } else { "FAILED" };
        format!(
            "cluster {} ({} in {}): {verdict} in {:.0} ms: {}",
            self.cluster, self.provider, self.region, self.latency_ms, self.detail
        )
    }
}

fn amounts(u: Option<&Usage>) -> Amounts {
    u.map(|u| Amounts {
        units: u.nodes,
        cpu: u.cpu,
        memory_gb: u.memory_gb,
        storage_gb: u.storage_gb,
    })
    .unwrap_or_default()
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every tenant in the config, in config order, with its use.
pub async fn tenants(store: &Store, cfg: &Config) -> Result<Vec<TenantStatus>, StoreError> {
    let usage = store.tenant_usage().await?;
    Ok(cfg
        .tenants
        .iter()
        .map(|t| TenantStatus {
            name: t.name.clone(),
            limit: Amounts {
                units: i(t.quota.nodes),
                cpu: i(t.quota.cpu),
                memory_gb: i(t.quota.memory_gb),
                storage_gb: i(t.quota.storage_gb),
            },
            used: amounts(usage.get(&t.name)),
            approvers: t.approvers.clone(),
        })
        .collect())
}

/// Every cluster in the config, in config order, with what is reserved on it.
pub async fn clusters(store: &Store, cfg: &Config) -> Result<Vec<ClusterStatus>, StoreError> {
    let usage = store.cluster_usage().await?;
    let breakers = store.breakers().await?;
    let circuit = |provider: &str| {
        breakers
            .iter()
            .find(|b| b.provider == provider && b.open)
            .map(|b| Circuit {
                state: "open".into(),
                failures: b.failures,
                opened_at: b.opened_at.clone(),
                retry_at: b.retry_at.clone(),
                last_error: b.last_error.clone(),
            })
            .unwrap_or_else(Circuit::closed)
    };
    Ok(cfg
        .clusters
        .iter()
        .map(|c| {
            let capacity = Amounts {
                units: i(c.capacity.vm_slots),
                cpu: i(c.capacity.cpu),
                memory_gb: i(c.capacity.memory_gb),
                storage_gb: i(c.capacity.storage_gb),
            };
            let used = amounts(usage.get(&c.name));
            ClusterStatus {
                name: c.name.clone(),
                provider: c.provider.clone(),
                region: c.region.clone(),
                default: c.default,
                health: c.health,
                capacity,
                used,
                free: Amounts {
                    units: capacity.units - used.units,
                    cpu: capacity.cpu - used.cpu,
                    memory_gb: capacity.memory_gb - used.memory_gb,
                    storage_gb: capacity.storage_gb - used.storage_gb,
                },
                circuit: circuit(&c.provider),
                max_in_flight: cfg.providers.limits.max_in_flight,
            }
        })
        .collect())
}

/// One round trip to the cluster's provider, timed; bounded by the engine's call timeout.
/// An unknown cluster is an error; a provider that fails or times out is a report with
/// `ok: false`.
pub async fn test(ctx: &Ctx, name: &str) -> Result<ConnectivityReport, CommandError> {
    let Some(c) = ctx.cfg.clusters.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = ctx.cfg.clusters.iter().map(|c| c.name.as_str()).collect();
        return Err(CommandError::Invalid(format!(
            "cluster: unknown cluster {:?}; known: {}",
            crate::domain::validate::sanitize(name),
            known.join(", ")
        )));
    };
    let provider = ctx
        .providers
        .cluster(&c.name)
        .map_err(|e| CommandError::Invalid(format!("cluster {}: {e}", c.name)))?
        .provider
        .clone();
    let start = Instant::now();
    let answer = tokio::time::timeout(ctx.cfg.engine.call_timeout, provider.ping(&c.name)).await;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (ok, detail) = match answer {
        // The provider's words, on screen and in the report.
        Ok(Ok(what)) => (true, crate::untrusted::untrusted_text(&what)),
        Ok(Err(e)) => (false, crate::untrusted::untrusted_text(&e.to_string())),
        Err(_) => (
            false,
            format!(
                "no answer within {}",
                crate::config::format_duration(ctx.cfg.engine.call_timeout)
            ),
        ),
    };
    Ok(ConnectivityReport {
        cluster: c.name.clone(),
        provider: c.provider.clone(),
        region: c.region.clone(),
        ok,
        latency_ms,
        detail: crate::domain::validate::sanitize(&detail).into_owned(),
    })
}
