//! Scheduling: which requests a worker may take now (admission of queued ones included),
//! leases with fencing numbers, stuck detection, and whether anything is left to do.
//!
//! SQLite seam: claiming runs inside the writer's `BEGIN IMMEDIATE` transaction, so two
//! engines (even in two processes) never claim the same request. PostgreSQL will do the same
//! with `FOR UPDATE SKIP LOCKED`.

use super::events::audit;
use super::requests::{apply_change, wake_waiters, Change};
use super::{Store, StoreError};
use crate::clock::ts;
use crate::domain::capacity::{
    check_quota, select_cluster, Amounts, ClusterView, Health, NoCluster,
};
use crate::domain::ids::{new_id, short};
use crate::domain::{RequestEvent, RequestState};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// What admission needs to know, taken from the config by the engine.
#[derive(Debug, Clone)]
pub struct Admission {
    pub max_in_flight_per_tenant: i64,
    pub quotas: HashMap<String, Amounts>,
    pub clusters: Vec<ClusterSpec>,
    /// How long a queued request that cannot be admitted waits before it is looked at again
    /// (it is woken sooner when something it waits for changes).
    pub recheck_after: Duration,
}

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub provider: String,
    pub region: String,
    pub default: bool,
    pub health: Health,
    pub capacity: Amounts,
}

/// A request this worker now holds, with the fencing number every write must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    pub fence: i64,
    pub state: RequestState,
}

#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    pub claims: Vec<Claim>,
    pub admitted: usize,
    pub waiting: usize,
    pub rejected: usize,
}

const RUNNABLE: &str =
    "('queued','allocating','configuring','activating','verifying','failed','rolling_back')";
const IN_FLIGHT: &str = "('allocating','configuring','activating','verifying')";

type Candidate = (String, String, String, String, i64, i64, i64);

impl Store {
    /// Claims up to `limit` requests that have work now: admits queued requests whose
    /// prerequisites, tenant slot, quota and cluster capacity allow it (reserving quota and
    /// capacity in the same transaction), and leases them to `owner`.
    pub async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_ttl: Duration,
        limit: usize,
        adm: &Admission,
    ) -> Result<ClaimOutcome, StoreError> {
        let owner = owner.to_string();
        let adm = adm.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(now);
                let lease_until = ts(now + chrono::Duration::from_std(lease_ttl).unwrap_or_default());
                let recheck = ts(now + chrono::Duration::from_std(adm.recheck_after).unwrap_or_default());
                let sql = format!(
                    "SELECT id, state, tenant, region, cpu, memory_gb, storage_gb FROM requests
                     WHERE state IN {RUNNABLE} AND next_run_at <= ?
                       AND (lease_expires_at IS NULL OR lease_expires_at < ?)
                     ORDER BY next_run_at, id LIMIT ?"
                );
                let cands: Vec<Candidate> = sqlx::query_as(&sql)
                    .bind(&at)
                    .bind(&at)
                    .bind(i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX))
                    .fetch_all(&mut *conn)
                    .await?;
                let mut out = ClaimOutcome::default();
                if cands.is_empty() {
                    return Ok(out);
                }
                let mut books = Books::load(conn).await?;
                for (id, state, tenant, region, cpu, mem, disk) in cands {
                    if out.claims.len() >= limit {
                        break;
                    }
                    let state: RequestState = state.parse().map_err(StoreError::Rejected)?;
                    if state == RequestState::Queued {
                        let need = Amounts { units: 1, cpu, memory_gb: mem, storage_gb: disk };
                        match admit(conn, &adm, &mut books, &id, &tenant, &region, need, now).await? {
                            Admit::Yes => out.admitted += 1,
                            Admit::Wait(reason) => {
                                sqlx::query("UPDATE requests SET wait_reason = ?, next_run_at = ? WHERE id = ?")
                                    .bind(&reason)
                                    .bind(&recheck)
                                    .bind(&id)
                                    .execute(&mut *conn)
                                    .await?;
                                out.waiting += 1;
                                continue;
                            }
                            Admit::Rejected => {
                                out.rejected += 1;
                                continue;
                            }
                        }
                    }
                    let row: (i64, String) = sqlx::query_as(
                        "UPDATE requests SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1
                         WHERE id = ? RETURNING fence, state",
                    )
                    .bind(&owner)
                    .bind(&lease_until)
                    .bind(&id)
                    .fetch_one(&mut *conn)
                    .await?;
                    out.claims.push(Claim {
                        id,
                        fence: row.0,
                        state: row.1.parse().map_err(StoreError::Rejected)?,
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    /// Fails every request whose step has made no progress since `cutoff`. The fence moves
    /// and the lease is dropped, so a hung worker can no longer write; the next claim rolls
    /// the request back.
    pub async fn fail_stuck(
        &self,
        now: DateTime<Utc>,
        stuck_after: Duration,
        actor: &str,
    ) -> Result<Vec<String>, StoreError> {
        let actor = actor.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let cutoff = ts(now - chrono::Duration::from_std(stuck_after).unwrap_or_default());
                let sql = format!("SELECT id, state FROM requests WHERE state IN {IN_FLIGHT} AND progress_at < ? LIMIT 100");
                let stuck: Vec<(String, String)> = sqlx::query_as(&sql).bind(&cutoff).fetch_all(&mut *conn).await?;
                let at = ts(now);
                let mut ids = Vec::new();
                for (id, state) in stuck {
                    let step = state.parse::<RequestState>().ok().and_then(|s| s.step());
                    let reason = format!(
                        "stuck: no progress for {} in step {}",
                        crate::config::format_duration(stuck_after),
                        step.map(|s| s.as_str()).unwrap_or("?")
                    );
                    apply_change(
                        conn,
                        &Change { id: &id, event: RequestEvent::StepFailed, fence: None, actor: &actor, reason: Some(&reason), at: now },
                    )
                    .await?;
                    sqlx::query(
                        "UPDATE requests SET error = ?, fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL,
                            next_run_at = ? WHERE id = ?",
                    )
                    .bind(&reason)
                    .bind(&at)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                    if let Some(step) = step {
                        sqlx::query("UPDATE request_steps SET status = 'failed', error = ?, finished_at = ? WHERE request_id = ? AND step = ?")
                            .bind(&reason)
                            .bind(&at)
                            .bind(&id)
                            .bind(step.as_str())
                            .execute(&mut *conn)
                            .await?;
                    }
                    ids.push(id);
                }
                Ok(ids)
            })
        })
        .await
    }

    /// Takes a request that no worker holds, for a command that must call the provider
    /// (suspend, reactivate). Refuses while a worker holds it.
    pub async fn lease_for_command(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(now);
                let until = ts(now + chrono::Duration::from_std(ttl).unwrap_or_default());
                let fence: Option<i64> = sqlx::query_scalar(
                    "UPDATE requests SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1
                     WHERE id = ? AND (lease_expires_at IS NULL OR lease_expires_at < ?) RETURNING fence",
                )
                .bind(&owner)
                .bind(&until)
                .bind(&id)
                .bind(&at)
                .fetch_optional(&mut *conn)
                .await?;
                fence.ok_or_else(|| {
                    StoreError::Rejected(format!("request {} is busy: a worker holds it; try again shortly", short(&id)))
                })
            })
        })
        .await
    }

    /// Extends a lease; fails with `FenceLost` once another worker has taken the request.
    pub async fn renew_lease(
        &self,
        id: &str,
        fence: i64,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE requests SET lease_expires_at = ? WHERE id = ? AND fence = ?",
                )
                .bind(ts(until))
                .bind(&id)
                .bind(fence)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::FenceLost(short(&id).to_string()));
                }
                Ok(())
            })
        })
        .await
    }

    /// Gives a request back, to run again at `next_run_at` (now if `None`).
    pub async fn release_lease(
        &self,
        id: &str,
        fence: i64,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL,
                        next_run_at = COALESCE(?, next_run_at) WHERE id = ? AND fence = ?",
                )
                .bind(next_run_at.map(ts))
                .bind(&id)
                .bind(fence)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Drops every lease `owner` holds, for a graceful shutdown: the requests become
    /// claimable at once by another engine, which resumes their steps.
    pub async fn release_all_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                Ok(sqlx::query("UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?")
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected())
            })
        })
        .await
    }

    /// Work that exists now or later: (runnable now, runnable later, held by a lease).
    /// Requests marked as needing attention are left out: they wait for a person.
    pub async fn pending_work(&self, now: DateTime<Utc>) -> Result<(i64, i64, i64), StoreError> {
        let at = ts(now);
        let sql = format!(
            "SELECT
               COALESCE(SUM(CASE WHEN next_run_at <= ?1 AND (lease_expires_at IS NULL OR lease_expires_at < ?1) THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN next_run_at > ?1 THEN 1 ELSE 0 END), 0),
               COALESCE(SUM(CASE WHEN lease_expires_at >= ?1 THEN 1 ELSE 0 END), 0)
             FROM requests WHERE state IN {RUNNABLE} AND state <> 'queued' AND needs_attention = 0"
        );
        Ok(sqlx::query_as(&sql)
            .bind(&at)
            .fetch_one(&mut *self.read().await)
            .await?)
    }

    /// Queued requests that could be looked at now.
    pub async fn queued_due(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM requests WHERE state = 'queued' AND next_run_at <= ?",
        )
        .bind(ts(now))
        .fetch_one(&mut *self.read().await)
        .await?)
    }
}

/// What is reserved and in flight, loaded once per claim and kept current as it admits.
struct Books {
    in_flight: HashMap<String, i64>,
    quota_used: HashMap<String, Amounts>,
    cluster_used: HashMap<String, Amounts>,
}

impl Books {
    async fn load(conn: &mut super::Conn) -> Result<Books, StoreError> {
        let sql = format!(
            "SELECT tenant, COUNT(*) FROM requests WHERE state IN {IN_FLIGHT} GROUP BY tenant"
        );
        let in_flight: Vec<(String, i64)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await?;
        let sums = |kind: &'static str, key: &'static str| {
            format!(
                "SELECT {key}, COUNT(*), SUM(cpu), SUM(memory_gb), SUM(storage_gb) FROM resources
                 WHERE kind = '{kind}' AND status <> 'released' AND {key} IS NOT NULL GROUP BY {key}"
            )
        };
        let q: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&sums("quota", "tenant"))
            .fetch_all(&mut *conn)
            .await?;
        let c: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&sums("capacity", "cluster"))
            .fetch_all(&mut *conn)
            .await?;
        let to_map = |rows: Vec<(String, i64, i64, i64, i64)>| {
            rows.into_iter()
                .map(|(k, units, cpu, memory_gb, storage_gb)| {
                    (
                        k,
                        Amounts {
                            units,
                            cpu,
                            memory_gb,
                            storage_gb,
                        },
                    )
                })
                .collect::<HashMap<_, _>>()
        };
        Ok(Books {
            in_flight: in_flight.into_iter().collect(),
            quota_used: to_map(q),
            cluster_used: to_map(c),
        })
    }
}

enum Admit {
    Yes,
    Wait(String),
    Rejected,
}

#[allow(clippy::too_many_arguments)]
async fn admit(
    conn: &mut super::Conn,
    adm: &Admission,
    books: &mut Books,
    id: &str,
    tenant: &str,
    region: &str,
    need: Amounts,
    now: DateTime<Utc>,
) -> Result<Admit, StoreError> {
    let at = ts(now);
    let deps: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.id, r.state FROM request_deps d JOIN requests r ON r.id = d.depends_on WHERE d.request_id = ? ORDER BY r.id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if let Some((dep, st)) = deps
        .iter()
        .find(|(_, s)| matches!(s.as_str(), "rolled_back" | "rejected" | "deprovisioned"))
    {
        let reason = format!("prerequisite {} ended {st}", short(dep));
        apply_change(
            conn,
            &Change {
                id,
                event: RequestEvent::Reject,
                fence: None,
                actor: "engine",
                reason: Some(&reason),
                at: now,
            },
        )
        .await?;
        sqlx::query("UPDATE requests SET error = ?, wait_reason = NULL WHERE id = ?")
            .bind(&reason)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        wake_waiters(conn, id, &at).await?;
        return Ok(Admit::Rejected);
    }
    if let Some((dep, st)) = deps.iter().find(|(_, s)| s != "completed") {
        return Ok(Admit::Wait(format!(
            "waiting for prerequisite {} ({st})",
            short(dep)
        )));
    }
    let flying = books.in_flight.get(tenant).copied().unwrap_or(0);
    if flying >= adm.max_in_flight_per_tenant {
        return Ok(Admit::Wait(format!(
            "tenant limit: {tenant} has {flying}/{} in flight",
            adm.max_in_flight_per_tenant
        )));
    }
    let Some(limit) = adm.quotas.get(tenant).copied() else {
        return Ok(Admit::Wait(format!("tenant {tenant} is not in the config")));
    };
    let used = books.quota_used.get(tenant).copied().unwrap_or_default();
    if let Err(why) = check_quota(tenant, limit, used, need) {
        return Ok(Admit::Wait(format!("quota: {why}")));
    }
    let views: Vec<ClusterView<'_>> = adm
        .clusters
        .iter()
        .map(|c| ClusterView {
            name: &c.name,
            provider: &c.provider,
            region: &c.region,
            default: c.default,
            health: c.health,
            capacity: c.capacity,
            used: books.cluster_used.get(&c.name).copied().unwrap_or_default(),
        })
        .collect();
    let cluster = match select_cluster(&views, None, region, need) {
        Ok(c) => c.name.to_string(),
        Err(NoCluster::NoneInRegion) => {
            return Ok(Admit::Wait(format!(
                "capacity: no cluster serves region {region}"
            )))
        }
        Err(NoCluster::NoneHealthy) => {
            return Ok(Admit::Wait(format!(
                "capacity: every cluster in {region} is degraded or offline"
            )))
        }
        Err(NoCluster::NoRoom) => {
            return Ok(Admit::Wait(format!(
                "capacity: no cluster in {region} has room for {} cpu, {} GB RAM, {} GB disk",
                need.cpu, need.memory_gb, need.storage_gb
            )))
        }
    };
    for (seq, kind) in [(1, "quota"), (2, "capacity")] {
        sqlx::query(
            "INSERT INTO resources (id, request_id, seq, kind, status, tenant, cluster, cpu, memory_gb, storage_gb, slots, created_at)
             VALUES (?, ?, ?, ?, 'allocated', ?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(new_id())
        .bind(id)
        .bind(seq)
        .bind(kind)
        .bind(tenant)
        .bind(if kind == "capacity" { Some(cluster.as_str()) } else { None })
        .bind(need.cpu)
        .bind(need.memory_gb)
        .bind(need.storage_gb)
        .bind(&at)
        .execute(&mut *conn)
        .await?;
    }
    books.quota_used.insert(tenant.to_string(), used.plus(need));
    let cu = books
        .cluster_used
        .get(&cluster)
        .copied()
        .unwrap_or_default();
    books.cluster_used.insert(cluster.clone(), cu.plus(need));
    *books.in_flight.entry(tenant.to_string()).or_insert(0) += 1;
    apply_change(
        conn,
        &Change {
            id,
            event: RequestEvent::Admit,
            fence: None,
            actor: "engine",
            reason: Some(&format!("cluster {cluster}")),
            at: now,
        },
    )
    .await?;
    sqlx::query("UPDATE requests SET cluster = ?, wait_reason = NULL WHERE id = ?")
        .bind(&cluster)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE request_steps SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE request_id = ? AND step = 'allocate'",
    )
    .bind(&at)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO step_tasks (request_id, step, name, position, status, detail, updated_at)
         VALUES (?, 'allocate', 'reserve_capacity', 1, 'done', ?, ?)
         ON CONFLICT (request_id, step, name) DO UPDATE SET status = 'done', detail = excluded.detail, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(format!("quota and capacity reserved on {cluster}"))
    .bind(&at)
    .execute(&mut *conn)
    .await?;
    audit(
        conn,
        &at,
        "engine",
        "request.admit",
        Some(id),
        Some(&cluster),
    )
    .await?;
    Ok(Admit::Yes)
}
