//! Scheduling: which requests a worker may take now (admission of queued ones included),
//! leases with fencing numbers, stuck detection, and whether anything is left to do.
//!
//! SQLite seam: claiming runs inside the writer's `BEGIN IMMEDIATE` transaction, so two
//! engines (even in two processes) never claim the same request. PostgreSQL will do the same
//! with `FOR UPDATE SKIP LOCKED`.

use super::events::audit;
use super::requests::{apply_change, wake_waiters, Change};
use super::{rows, Conn, RequestRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::capacity::{
    check_quota, select_cluster, Amounts, ClusterView, Health, NoCluster,
};
use crate::domain::ids::{new_id, short};
use crate::domain::{RequestEvent, RequestState};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
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

fn dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

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
            let at = ts(now);
            let lease_until = ts(now + dur(lease_ttl));
            let recheck = ts(now + dur(adm.recheck_after));
            let sql = format!(
                "SELECT id, state, tenant, region, cpu, memory_gb, storage_gb FROM requests
                 WHERE state IN {RUNNABLE} AND next_run_at <= ?1
                   AND (lease_expires_at IS NULL OR lease_expires_at < ?1)
                 ORDER BY next_run_at, id LIMIT ?2"
            );
            let cands = rows(conn, &sql, params![at, i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    Amounts { units: 1, cpu: r.get(4)?, memory_gb: r.get(5)?, storage_gb: r.get(6)? },
                ))
            })?;
            let mut out = ClaimOutcome::default();
            if cands.is_empty() {
                return Ok(out);
            }
            let mut books: Option<Books> = None;
            for (id, state, tenant, region, need) in cands {
                if out.claims.len() >= limit {
                    break;
                }
                let state: RequestState = state.parse().map_err(StoreError::Rejected)?;
                if state == RequestState::Queued {
                    let books = books.get_or_insert_with(Books::default);
                    let who = Who { id: &id, tenant: &tenant, region: &region };
                    match admit(conn, &adm, books, &who, need, now)? {
                        Admit::Yes => out.admitted += 1,
                        Admit::Wait(reason) => {
                            conn.prepare_cached("UPDATE requests SET wait_reason = ?, next_run_at = ? WHERE id = ?")?
                                .execute(params![reason, recheck, id])?;
                            out.waiting += 1;
                            continue;
                        }
                        Admit::Rejected => {
                            out.rejected += 1;
                            continue;
                        }
                    }
                }
                let (fence, state): (i64, String) = conn
                    .prepare_cached(
                        "UPDATE requests SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1
                         WHERE id = ? RETURNING fence, state",
                    )?
                    .query_row(params![owner, lease_until, id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                out.claims.push(Claim { id, fence, state: state.parse().map_err(StoreError::Rejected)? });
            }
            Ok(out)
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
        let cutoff = ts(now - dur(stuck_after));
        // Progress is a state change (progress_at) or a finished sub-task (its updated_at).
        let sql = format!(
            "SELECT r.id, r.state FROM requests r WHERE r.state IN {IN_FLIGHT} AND r.progress_at < ?1
               AND NOT EXISTS (SELECT 1 FROM step_tasks t WHERE t.request_id = r.id AND t.updated_at >= ?1)
             LIMIT 100"
        );
        // Looking is a read; only when something is stuck does it take the writer.
        let probe = sql.clone();
        let c2 = cutoff.clone();
        let any = self
            .read(move |c| Ok(!rows(c, &probe, [c2], |r| r.get::<_, String>(0))?.is_empty()))
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(move |conn| {
            let stuck = rows(conn, &sql, [&cutoff], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let at = ts(now);
            let mut ids = Vec::new();
            for (id, state) in stuck {
                let step = state.parse::<RequestState>().ok().and_then(|s| s.step());
                let reason = format!(
                    "stuck: no progress for {} in step {}",
                    crate::config::format_duration(stuck_after),
                    step.map(|s| s.as_str()).unwrap_or("?")
                );
                let change = Change { id: &id, event: RequestEvent::StepFailed, fence: None, actor: &actor, reason: Some(&reason), at: now };
                apply_change(conn, &change)?;
                conn.prepare_cached(
                    "UPDATE requests SET error = ?, fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL,
                        next_run_at = ? WHERE id = ?",
                )?
                .execute(params![reason, at, id])?;
                if let Some(step) = step {
                    conn.prepare_cached(
                        "UPDATE request_steps SET status = 'failed', error = ?, finished_at = ? WHERE request_id = ? AND step = ?",
                    )?
                    .execute(params![reason, at, id, step.as_str()])?;
                }
                ids.push(id);
            }
            Ok(ids)
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
            let fence: Option<i64> = conn
                .prepare_cached(
                    "UPDATE requests SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1
                     WHERE id = ? AND (lease_expires_at IS NULL OR lease_expires_at < ?) RETURNING fence",
                )?
                .query_row(params![owner, ts(now + dur(ttl)), id, ts(now)], |r| r.get(0))
                .optional()?;
            fence.ok_or_else(|| StoreError::Rejected(format!("request {} is busy: a worker holds it; try again shortly", short(&id))))
        })
        .await
    }

    /// Gives a request back, to run again at `next_run_at` (unchanged if `None`).
    pub async fn release_lease(
        &self,
        id: &str,
        fence: i64,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL,
                    next_run_at = COALESCE(?, next_run_at) WHERE id = ? AND fence = ?",
            )?
            .execute(params![next_run_at.map(ts), id, fence])?;
            Ok(())
        })
        .await
    }

    /// Drops every lease `owner` holds, for a graceful shutdown: the requests become
    /// claimable at once by another engine, which resumes their steps.
    pub async fn release_all_leases(&self, owner: &str) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        self.write(move |conn| {
            Ok(conn.execute("UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?", [owner])?)
        })
        .await
    }

    /// Every request the engine or a person still has to move (not settled in completed,
    /// suspended or a terminal state), oldest first, each with how many times `owner` has
    /// seen its teardown stall: what `work --until-idle` waits for or reports.
    pub async fn unfinished(&self, owner: &str) -> Result<Vec<(RequestRow, i64)>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            let sql = format!(
                "SELECT r.*, (SELECT COUNT(*) FROM audit a WHERE a.action = 'request.teardown-stalled'
                                AND a.target = r.id AND a.actor = ?1) AS stalls
                 FROM requests r
                 WHERE r.state IN {RUNNABLE} OR r.state IN ('pending_approval', 'awaiting_input')
                 ORDER BY r.created_at, r.id"
            );
            rows(c, &sql, [owner], |r| Ok((RequestRow::from_row(r)?, r.get("stalls")?)))
        })
        .await
    }
}

/// What is reserved and in flight, read per tenant and cluster the first time a claim needs
/// it, and kept current as the claim admits.
#[derive(Default)]
struct Books {
    in_flight: HashMap<String, i64>,
    quota_used: HashMap<String, Amounts>,
    cluster_used: HashMap<String, Amounts>,
}

fn held(conn: &Conn, kind: &str, key: &str, value: &str) -> Result<Amounts, StoreError> {
    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(memory_gb), 0), COALESCE(SUM(storage_gb), 0)
         FROM resources WHERE kind = ?1 AND {key} = ?2 AND status <> 'released'"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![kind, value], |r| {
            Ok(Amounts {
                units: r.get(0)?,
                cpu: r.get(1)?,
                memory_gb: r.get(2)?,
                storage_gb: r.get(3)?,
            })
        })?)
}

impl Books {
    fn in_flight(&mut self, conn: &Conn, tenant: &str) -> Result<i64, StoreError> {
        if let Some(n) = self.in_flight.get(tenant) {
            return Ok(*n);
        }
        let sql =
            format!("SELECT COUNT(*) FROM requests WHERE tenant = ? AND state IN {IN_FLIGHT}");
        let n: i64 = conn
            .prepare_cached(&sql)?
            .query_row([tenant], |r| r.get(0))?;
        self.in_flight.insert(tenant.to_string(), n);
        Ok(n)
    }

    fn quota(&mut self, conn: &Conn, tenant: &str) -> Result<Amounts, StoreError> {
        if let Some(a) = self.quota_used.get(tenant) {
            return Ok(*a);
        }
        let a = held(conn, "quota", "tenant", tenant)?;
        self.quota_used.insert(tenant.to_string(), a);
        Ok(a)
    }

    fn cluster(&mut self, conn: &Conn, cluster: &str) -> Result<Amounts, StoreError> {
        if let Some(a) = self.cluster_used.get(cluster) {
            return Ok(*a);
        }
        let a = held(conn, "capacity", "cluster", cluster)?;
        self.cluster_used.insert(cluster.to_string(), a);
        Ok(a)
    }
}

enum Admit {
    Yes,
    Wait(String),
    Rejected,
}

struct Who<'a> {
    id: &'a str,
    tenant: &'a str,
    region: &'a str,
}

/// Ends a queued request `rejected` at admission (the engine's decision), saying why, and
/// wakes whatever waited on it.
fn reject_at_admission(
    conn: &Conn,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Admit, StoreError> {
    apply_change(
        conn,
        &Change {
            id,
            event: RequestEvent::Reject,
            fence: None,
            actor: "engine",
            reason: Some(reason),
            at: now,
        },
    )?;
    conn.prepare_cached("UPDATE requests SET error = ?, wait_reason = NULL WHERE id = ?")?
        .execute(params![reason, id])?;
    wake_waiters(conn, id, &ts(now))?;
    Ok(Admit::Rejected)
}

fn admit(
    conn: &Conn,
    adm: &Admission,
    books: &mut Books,
    who: &Who<'_>,
    need: Amounts,
    now: DateTime<Utc>,
) -> Result<Admit, StoreError> {
    let Who { id, tenant, region } = *who;
    let at = ts(now);
    let deps = rows(
        conn,
        "SELECT r.id, r.state FROM request_deps d JOIN requests r ON r.id = d.depends_on WHERE d.request_id = ? ORDER BY r.id",
        [id],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
    )?;
    if let Some((dep, st)) = deps
        .iter()
        .find(|(_, s)| matches!(s.as_str(), "rolled_back" | "rejected" | "deprovisioned"))
    {
        let reason = format!("prerequisite {} ended {st}", short(dep));
        return reject_at_admission(conn, id, &reason, now);
    }
    if let Some((dep, st)) = deps.iter().find(|(_, s)| s != "completed") {
        return Ok(Admit::Wait(format!(
            "waiting for prerequisite {} ({st})",
            short(dep)
        )));
    }
    if let Some((host, holder)) = super::requests::hostname_held_elsewhere(conn, id)? {
        return reject_at_admission(conn, id, &holder.refusal(&host), now);
    }
    let flying = books.in_flight(conn, tenant)?;
    if flying >= adm.max_in_flight_per_tenant {
        return Ok(Admit::Wait(format!(
            "tenant limit: {tenant} has {flying}/{} in flight",
            adm.max_in_flight_per_tenant
        )));
    }
    let Some(limit) = adm.quotas.get(tenant).copied() else {
        return Ok(Admit::Wait(format!("tenant {tenant} is not in the config")));
    };
    let used = books.quota(conn, tenant)?;
    if let Err(why) = check_quota(tenant, limit, used, need) {
        return reject_at_admission(conn, id, &format!("quota: {why}"), now);
    }
    let mut views: Vec<ClusterView<'_>> = Vec::new();
    for c in adm.clusters.iter().filter(|c| c.region == region) {
        views.push(ClusterView {
            name: &c.name,
            provider: &c.provider,
            region: &c.region,
            default: c.default,
            health: c.health,
            capacity: c.capacity,
            used: books.cluster(conn, &c.name)?,
        });
    }
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
        conn.prepare_cached(
            "INSERT INTO resources (id, request_id, seq, kind, status, tenant, cluster, cpu, memory_gb, storage_gb, slots, created_at)
             VALUES (?, ?, ?, ?, 'allocated', ?, ?, ?, ?, ?, 1, ?)",
        )?
        .execute(params![
            new_id(),
            id,
            seq,
            kind,
            tenant,
            if kind == "capacity" { Some(cluster.as_str()) } else { None },
            need.cpu,
            need.memory_gb,
            need.storage_gb,
            at
        ])?;
    }
    books.quota_used.insert(tenant.to_string(), used.plus(need));
    let cu = books.cluster(conn, &cluster)?;
    books.cluster_used.insert(cluster.clone(), cu.plus(need));
    *books.in_flight.entry(tenant.to_string()).or_insert(0) += 1;
    let reason = format!("cluster {cluster}");
    apply_change(
        conn,
        &Change {
            id,
            event: RequestEvent::Admit,
            fence: None,
            actor: "engine",
            reason: Some(&reason),
            at: now,
        },
    )?;
    conn.prepare_cached("UPDATE requests SET cluster = ?, wait_reason = NULL WHERE id = ?")?
        .execute(params![cluster, id])?;
    conn.prepare_cached(
        "UPDATE request_steps SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE request_id = ? AND step = 'allocate'",
    )?
    .execute(params![at, id])?;
    conn.prepare_cached(
        "INSERT INTO step_tasks (request_id, step, name, position, status, detail, updated_at)
         VALUES (?, 'allocate', 'reserve_capacity', 1, 'done', ?, ?)
         ON CONFLICT (request_id, step, name) DO UPDATE SET status = 'done', detail = excluded.detail, updated_at = excluded.updated_at",
    )?
    .execute(params![id, format!("quota and capacity reserved on {cluster}"), at])?;
    audit(
        conn,
        &at,
        "engine",
        "request.admit",
        Some(id),
        Some(&cluster),
    )?;
    Ok(Admit::Yes)
}
