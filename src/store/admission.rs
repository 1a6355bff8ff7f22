//! Admission of queued requests: whether a request may start now (prerequisites, hostname,
//! tenant slot, quota, cluster capacity), decided by reading only, and the writes that
//! admit or reject it. Deciding apart from writing lets a claim find out on a read-only
//! connection that nothing changed, and then not open a write transaction at all.
//!
//! It must not decide anything time-based: a waiting request's verdict changes only when
//! the database or the config does, which is what lets the engine leave waiting requests
//! alone until something commits.

use super::events::audit;
use super::requests::{apply_change, Change};
use super::{rows, Conn, StoreError};
use crate::clock::ts;
use crate::domain::capacity::{
    check_quota, select_cluster, Amounts, ClusterView, Health, NoCluster,
};
use crate::domain::ids::{new_id, short};
use crate::domain::RequestEvent;
use crate::store::sql::params;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use super::claims::{Admission, IN_FLIGHT};

/// What is reserved and in flight, read per tenant and cluster the first time a claim needs
/// it, and kept current as the claim admits.
#[derive(Default)]
pub(super) struct Books {
    in_flight: HashMap<String, i64>,
    quota_used: HashMap<String, Amounts>,
    cluster_used: HashMap<String, Amounts>,
    /// Providers whose circuit is open, read once per claim.
    open_circuits: Option<HashMap<String, super::breakers::BreakerRow>>,
}

/// What the live rows of `kind` (`quota` or `capacity`) of `owner` (a tenant or a
/// cluster) add up to: one row of the running totals (migration 0017), not a sum over the
/// fleet.
fn held(conn: &Conn, kind: &'static str, owner: &str) -> Result<Amounts, StoreError> {
    use crate::store::sql::OptionalExtension;
    let found = conn
        .prepare_cached(
            "SELECT units, cpu, memory_gb, storage_gb FROM held_totals WHERE kind = ?1 AND owner = ?2",
        )?
        .query_row(params![kind, owner], |r| {
            Ok(Amounts {
                units: r.get(0)?,
                cpu: r.get(1)?,
                memory_gb: r.get(2)?,
                storage_gb: r.get(3)?,
            })
        })
        .optional()?;
    Ok(found.unwrap_or_default())
}

impl Books {
    pub(super) fn in_flight(&mut self, conn: &Conn, tenant: &str) -> Result<i64, StoreError> {
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

    pub(super) fn quota(&mut self, conn: &Conn, tenant: &str) -> Result<Amounts, StoreError> {
        if let Some(a) = self.quota_used.get(tenant) {
            return Ok(*a);
        }
        let a = held(conn, "quota", tenant)?;
        self.quota_used.insert(tenant.to_string(), a);
        Ok(a)
    }

    pub(super) fn cluster(&mut self, conn: &Conn, cluster: &str) -> Result<Amounts, StoreError> {
        if let Some(a) = self.cluster_used.get(cluster) {
            return Ok(*a);
        }
        let a = held(conn, "capacity", cluster)?;
        self.cluster_used.insert(cluster.to_string(), a);
        Ok(a)
    }

    /// Why `provider`'s requests wait, if its circuit is open.
    pub(super) fn circuit_open(
        &mut self,
        conn: &Conn,
        provider: &str,
    ) -> Result<Option<String>, StoreError> {
        if self.open_circuits.is_none() {
            self.open_circuits = Some(super::breakers::open(conn)?);
        }
        Ok(self
            .open_circuits
            .as_ref()
            .and_then(|m| m.get(provider))
            .and_then(super::breakers::BreakerRow::wait_reason))
    }

    /// Counts an admission: what it reserves is no longer free for the next candidate.
    pub(super) fn reserve(&mut self, tenant: &str, cluster: &str, quota: Amounts, need: Amounts) {
        self.quota_used.insert(tenant.to_string(), quota.plus(need));
        if let Some(c) = self.cluster_used.get_mut(cluster) {
            *c = c.plus(need);
        }
        *self.in_flight.entry(tenant.to_string()).or_insert(0) += 1;
    }
}

/// What admission decided for one queued request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// It may start, on this cluster.
    Admit(String),
    /// It waits, for this reason.
    Wait(String),
    /// It can never start, for this reason.
    Reject(String),
}

/// The queued request being looked at.
pub(super) struct Who<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub region: &'a str,
    /// What it asks for: for a resize, the new plan's sizes (the growth is worked out
    /// against what the node holds).
    pub need: Amounts,
    /// A resize: the provisioning request of the node it resizes.
    pub target: Option<&'a str>,
}

/// Decides, by reading only, whether `who` may start now. An admission is counted in
/// `books` at once, so that the next candidate of the same claim sees it.
pub(super) fn decide(
    conn: &Conn,
    adm: &Admission,
    books: &mut Books,
    who: &Who<'_>,
) -> Result<Decision, StoreError> {
    if let Some(target) = who.target {
        return super::resize::decide(conn, adm, books, who, target);
    }
    let Who {
        id,
        tenant,
        region,
        need,
        ..
    } = *who;
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
        return Ok(Decision::Reject(format!(
            "prerequisite {} ended {st}",
            short(dep)
        )));
    }
    if let Some((dep, st)) = deps.iter().find(|(_, s)| s != "completed") {
        return Ok(Decision::Wait(format!(
            "waiting for prerequisite {} ({st})",
            short(dep)
        )));
    }
    if let Some((host, holder)) = super::requests::hostname_held_elsewhere(conn, id)? {
        return Ok(Decision::Reject(holder.refusal(&host)));
    }
    let flying = books.in_flight(conn, tenant)?;
    if flying >= adm.max_in_flight_per_tenant {
        return Ok(Decision::Wait(format!(
            "tenant limit: {tenant} has {flying}/{} in flight",
            adm.max_in_flight_per_tenant
        )));
    }
    let Some(limit) = adm.quotas.get(tenant).copied() else {
        return Ok(Decision::Wait(format!(
            "tenant {tenant} is not in the config"
        )));
    };
    let used = books.quota(conn, tenant)?;
    if let Err(why) = check_quota(tenant, limit, used, need) {
        return Ok(Decision::Reject(format!("quota: {why}")));
    }
    let mut views: Vec<ClusterView<'_>> = Vec::new();
    // A cluster whose provider's circuit is open takes nothing new until it closes.
    let mut circuit_open: Option<String> = None;
    for c in adm.clusters.iter().filter(|c| c.region == region) {
        let mut health = c.health;
        if health == Health::Online {
            if let Some(why) = books.circuit_open(conn, &c.provider)? {
                health = Health::Offline;
                circuit_open.get_or_insert(why);
            }
        }
        views.push(ClusterView {
            name: &c.name,
            provider: &c.provider,
            region: &c.region,
            default: c.default,
            health,
            capacity: c.capacity,
            used: books.cluster(conn, &c.name)?,
        });
    }
    let cluster = match select_cluster(&views, None, region, need) {
        Ok(c) => c.name.to_string(),
        Err(NoCluster::NoneInRegion) => {
            return Ok(Decision::Wait(format!(
                "capacity: no cluster serves region {region}"
            )))
        }
        Err(NoCluster::NoneHealthy) => {
            return Ok(Decision::Wait(circuit_open.unwrap_or_else(|| {
                format!("capacity: every cluster in {region} is degraded or offline")
            })))
        }
        Err(NoCluster::NoRoom) => {
            return Ok(Decision::Wait(format!(
                "capacity: no cluster in {region} has room for {} cpu, {} GB RAM, {} GB disk",
                need.cpu, need.memory_gb, need.storage_gb
            )))
        }
    };
    books.reserve(tenant, &cluster, used, need);
    Ok(Decision::Admit(cluster))
}

/// An admitted request starts: it moves to allocating on `cluster`, and its first step runs
/// with `reserve_capacity` done (`detail` says what was reserved). Shared by provisioning
/// and resizes, in the caller's transaction.
pub(super) fn start(
    conn: &Conn,
    id: &str,
    cluster: &str,
    first: crate::domain::Step,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(now);
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
        "UPDATE request_steps SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE request_id = ? AND step = ?",
    )?
    .execute(params![at, id, first.as_str()])?;
    conn.prepare_cached(
        "INSERT INTO step_tasks (request_id, step, name, position, status, detail, updated_at)
         VALUES (?, ?, 'reserve_capacity', 1, 'done', ?, ?)
         ON CONFLICT (request_id, step, name) DO UPDATE SET status = 'done', detail = excluded.detail, updated_at = excluded.updated_at",
    )?
    .execute(params![id, first.as_str(), detail, at])?;
    Ok(())
}

/// Ends a queued request `rejected` at admission (the engine's decision), saying why.
/// Whatever waited on it sees the change at the engine's next look at waiting requests.
pub(super) fn reject(
    conn: &Conn,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
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
    Ok(())
}

/// Admits `who` onto `cluster`: reserves its quota and capacity, moves it to allocating and
/// starts its first step, in the caller's transaction.
pub(super) fn admit(
    conn: &Conn,
    who: &Who<'_>,
    cluster: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(target) = who.target {
        return super::resize::admit(conn, who, target, cluster, now);
    }
    let Who {
        id, tenant, need, ..
    } = *who;
    let at = ts(now);
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
            if kind == "capacity" { Some(cluster) } else { None },
            need.cpu,
            need.memory_gb,
            need.storage_gb,
            at
        ])?;
    }
    start(
        conn,
        id,
        cluster,
        crate::domain::Step::Allocate,
        &format!("quota and capacity reserved on {cluster}"),
        now,
    )?;
    audit(
        conn,
        &at,
        "engine",
        "request.admit",
        Some(id),
        Some(cluster),
    )?;
    Ok(())
}
