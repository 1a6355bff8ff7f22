//! Resizing a node (seed 001's vertical scaling): a request of its own (`operation =
//! 'resize'`), whose `target` is the provisioning request that made the node.
//!
//! - Filing it checks the node and the plan and writes the request with its two steps.
//! - Admission reserves what the new plan needs beyond the old one by growing the node's
//!   own quota and capacity rows, and records that growth as the resize's `resize_hold`.
//! - Completing it folds the new plan into the node: its request's plan and sizes, its
//!   quota and capacity rows, the node's plan; the hold and the upgrade are released.
//! - Rolling it back reverts the provider's upgrade and takes the growth back out.

use super::admission::{Books, Decision, Who};
use super::claims::Admission;
use super::events::{audit, emit, EventTarget};
use super::requests::get_request;
use super::steps::Fenced;
use super::{Conn, RequestRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::approval::RuleMatch;
use crate::domain::capacity::{growth, growth_excess, Amounts, Health};
use crate::domain::ids::{new_id, short};
use crate::domain::{event_names_for, Operation, RequestState, RESIZE_STEPS};
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde_json::json;

/// A resize as a command files it: the node and the plan it moves to, validated against the
/// config by the caller.
#[derive(Debug, Clone)]
pub struct NewResize {
    pub node_id: String,
    pub plan: String,
    pub kind: String,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    pub requested_by: String,
    pub reason: Option<String>,
    pub approval: Option<RuleMatch>,
    /// The scaling cause it answers: at most one live request per cause.
    pub scaling_cause: Option<String>,
}

/// What a resize works on: the node's request, instance and address, as the node's
/// provisioning recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeTarget {
    pub request_id: String,
    pub node_id: Option<String>,
    pub instance_id: String,
    pub ip: String,
    pub hostname: String,
    pub plan: String,
}

/// The live resize of the node that `target` provisioned, if one is under way: (id, state).
pub(super) fn live_resize_of(
    conn: &Conn,
    target: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, state FROM requests WHERE target = ?1
               AND state IN ('queued','pending_approval','allocating','verifying','failed','rolling_back')
             LIMIT 1",
        )?
        .query_row([target], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Refuses to tear down or power off a node while a resize of it is under way.
pub(super) fn refuse_while_resizing(
    conn: &Conn,
    target: &str,
    what: &str,
) -> Result<(), StoreError> {
    if let Some((id, state)) = live_resize_of(conn, target)? {
        return Err(StoreError::Rejected(format!(
            "request {} cannot {what} while its resize {} is {state}: wait for the resize, or roll it back first",
            short(target),
            short(&id)
        )));
    }
    Ok(())
}

/// The amounts the node's own reservation holds (its live quota row).
fn held_by(conn: &Conn, request_id: &str) -> Result<Option<Amounts>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT cpu, memory_gb, storage_gb FROM resources
             WHERE request_id = ? AND kind = 'quota' AND status <> 'released'",
        )?
        .query_row([request_id], |r| {
            Ok(Amounts {
                units: 1,
                cpu: r.get(0)?,
                memory_gb: r.get(1)?,
                storage_gb: r.get(2)?,
            })
        })
        .optional()?)
}

/// Grows (or with a negative sign, shrinks) the node's live quota and capacity rows; the
/// running totals follow by trigger.
fn add_to_reservation(
    conn: &Conn,
    request_id: &str,
    by: Amounts,
    sign: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE resources SET cpu = cpu + ?1, memory_gb = memory_gb + ?2, storage_gb = storage_gb + ?3
         WHERE request_id = ?4 AND kind IN ('quota', 'capacity') AND status <> 'released'",
    )?
    .execute(params![
        sign * by.cpu,
        sign * by.memory_gb,
        sign * by.storage_gb,
        request_id
    ])?;
    Ok(())
}

/// Admission of a queued resize: its node must still be in service; the growth must fit the
/// tenant's quota and the node's own cluster (the node does not move), whose provider must
/// be reachable.
pub(super) fn decide(
    conn: &Conn,
    adm: &Admission,
    books: &mut Books,
    who: &Who<'_>,
    target: &str,
) -> Result<Decision, StoreError> {
    let Some(node_req) = get_request(conn, target)? else {
        return Ok(Decision::Reject(format!(
            "the node's request {} is gone",
            short(target)
        )));
    };
    let (state, cluster) = (node_req.state, node_req.cluster);
    if state != RequestState::Completed.as_str() {
        return Ok(Decision::Reject(format!(
            "the node's request {} is {state}: only a node in service is resized",
            short(target)
        )));
    }
    let Some(held) = held_by(conn, target)? else {
        return Ok(Decision::Reject(format!(
            "the node's request {} holds no quota to resize",
            short(target)
        )));
    };
    let need = growth(held, who.need);
    let flying = books.in_flight(conn, who.tenant)?;
    if flying >= adm.max_in_flight_per_tenant {
        return Ok(Decision::Wait(format!(
            "tenant limit: {} has {flying}/{} in flight",
            who.tenant, adm.max_in_flight_per_tenant
        )));
    }
    let Some(limit) = adm.quotas.get(who.tenant).copied() else {
        return Ok(Decision::Wait(format!(
            "tenant {} is not in the config",
            who.tenant
        )));
    };
    let used = books.quota(conn, who.tenant)?;
    if let Some((what, v, l)) = growth_excess(limit, used, need) {
        return Ok(Decision::Reject(format!(
            "quota: {}: {what} {v}/{l} after this resize",
            who.tenant
        )));
    }
    let Some(cluster) = cluster else {
        return Ok(Decision::Reject("the node has no cluster".into()));
    };
    let Some(spec) = adm.clusters.iter().find(|c| c.name == cluster) else {
        return Ok(Decision::Reject(format!(
            "the node's cluster {cluster} is no longer in the config"
        )));
    };
    if spec.health != Health::Online {
        return Ok(Decision::Wait(format!(
            "capacity: the node's cluster {cluster} is {}",
            match spec.health {
                Health::Degraded => "degraded",
                _ => "offline",
            }
        )));
    }
    if let Some(why) = books.circuit_open(conn, &spec.provider)? {
        return Ok(Decision::Wait(why));
    }
    let cluster_used = books.cluster(conn, &cluster)?;
    if growth_excess(spec.capacity, cluster_used, need).is_some() {
        return Ok(Decision::Wait(format!(
            "capacity: cluster {cluster} has no room for {} more cpu, {} GB RAM, {} GB disk",
            need.cpu, need.memory_gb, need.storage_gb
        )));
    }
    books.reserve(who.tenant, &cluster, used, need);
    Ok(Decision::Admit(cluster))
}

/// Admits a resize: grows the node's reservation by what the new plan needs beyond the old
/// one, records the growth as the resize's hold, and starts the resize step.
pub(super) fn admit(
    conn: &Conn,
    who: &Who<'_>,
    target: &str,
    cluster: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(now);
    let held = held_by(conn, target)?
        .ok_or_else(|| StoreError::Rejected(format!("request {} holds no quota", short(target))))?;
    let need = growth(held, who.need);
    add_to_reservation(conn, target, need, 1)?;
    let detail = format!(
        "+{} cpu, +{} GB RAM, +{} GB disk reserved on {cluster}",
        need.cpu, need.memory_gb, need.storage_gb
    );
    conn.prepare_cached(
        "INSERT INTO resources (id, request_id, seq, kind, status, tenant, cluster, cpu, memory_gb, storage_gb, slots, detail, created_at)
         VALUES (?, ?, 1, 'resize_hold', 'allocated', ?, ?, ?, ?, ?, 0, ?, ?)",
    )?
    .execute(params![
        new_id(),
        who.id,
        who.tenant,
        cluster,
        need.cpu,
        need.memory_gb,
        need.storage_gb,
        detail,
        at
    ])?;
    super::admission::start(
        conn,
        who.id,
        cluster,
        crate::domain::Step::Resize,
        &detail,
        now,
    )?;
    audit(
        conn,
        &at,
        "engine",
        "request.admit",
        Some(who.id),
        Some(cluster),
    )?;
    drain(conn, who.id, target, &at)?;
    Ok(())
}

/// Takes the node out of rotation while its server restarts on the new size: a serving
/// (warming or active) node goes into maintenance, and the resize remembers it did. A node
/// already out of rotation (paused, in maintenance, unhealthy) is left as it is.
fn drain(conn: &Conn, resize: &str, target: &str, at: &str) -> Result<(), StoreError> {
    let node: Option<String> = conn
        .prepare_cached(
            "SELECT id FROM nodes WHERE request_id = ? AND status IN ('warming', 'active')",
        )?
        .query_row([target], |r| r.get(0))
        .optional()?;
    let Some(node) = node else {
        return Ok(());
    };
    let reason = format!(
        "resize {}: the server restarts on its new plan",
        short(resize)
    );
    let moved = super::nodes::transition(
        conn,
        &node,
        crate::domain::node::NodeEvent::EnterMaintenance,
        "engine",
        &reason,
        at,
    )?;
    if moved.is_ok() {
        conn.prepare_cached("UPDATE requests SET drained = 1 WHERE id = ?")?
            .execute([resize])?;
    }
    Ok(())
}

/// Brings back a node the resize took out of rotation, if it is still in maintenance (an
/// operator may have brought it back already, or moved it elsewhere: then it is theirs).
fn undrain(conn: &Conn, resize: &str, at: &str, how: &str) -> Result<(), StoreError> {
    let found: Option<(Option<String>, i64)> = conn
        .prepare_cached("SELECT target, drained FROM requests WHERE id = ?")?
        .query_row([resize], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(target), 1)) = found else {
        return Ok(());
    };
    let node: Option<String> = conn
        .prepare_cached("SELECT id FROM nodes WHERE request_id = ? AND status = 'maintenance'")?
        .query_row([&target], |r| r.get(0))
        .optional()?;
    if let Some(node) = node {
        let reason = format!("resize {} {how}", short(resize));
        // A refusal leaves the node where it is: nothing to undo.
        let _ = super::nodes::transition(
            conn,
            &node,
            crate::domain::node::NodeEvent::LeaveMaintenance,
            "engine",
            &reason,
            at,
        )?;
    }
    conn.prepare_cached("UPDATE requests SET drained = 0 WHERE id = ?")?
        .execute([resize])?;
    Ok(())
}

/// The resize completed: the node's request takes the new plan and sizes, its quota and
/// capacity rows hold exactly the new plan, the node shows it, and the hold and the upgrade
/// are released. In the transaction that completes the resize.
pub(super) fn fold(conn: &Conn, f: &Fenced) -> Result<(), StoreError> {
    let r = get_request(conn, &f.id)?.ok_or_else(|| StoreError::NotFound(f.id.clone()))?;
    let Some(target) = r.target else {
        return Err(StoreError::Rejected(format!(
            "resize {} names no node",
            short(&f.id)
        )));
    };
    let (plan, kind, from_plan) = (r.plan, r.kind, r.from_plan);
    let (cpu, memory_gb, storage_gb) = (r.cpu, r.memory_gb, r.storage_gb);
    let at = ts(f.now);
    conn.prepare_cached(
        "UPDATE requests SET plan = ?, kind = ?, cpu = ?, memory_gb = ?, storage_gb = ?, updated_at = ? WHERE id = ?",
    )?
    .execute(params![plan, kind, cpu, memory_gb, storage_gb, at, target])?;
    conn.prepare_cached(
        "UPDATE resources SET cpu = ?, memory_gb = ?, storage_gb = ?
         WHERE request_id = ? AND kind IN ('quota', 'capacity') AND status <> 'released'",
    )?
    .execute(params![cpu, memory_gb, storage_gb, target])?;
    conn.prepare_cached(
        "UPDATE resources SET status = 'released', released_at = ?,
             detail = CASE kind WHEN 'resize_hold' THEN 'folded into the node''s reservation'
                                ELSE 'confirmed' END
         WHERE request_id = ? AND kind IN ('resize_hold', 'upgrade') AND status <> 'released'",
    )?
    .execute(params![at, f.id])?;
    let node: Option<(String, String, String)> = conn
        .prepare_cached("UPDATE nodes SET plan = ?, updated_at = ? WHERE request_id = ? RETURNING id, tenant, label")?
        .query_row(params![plan, at, target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((node_id, tenant, label)) = node {
        let payload = json!({
            "node_id": node_id, "label": label, "request_id": f.id,
            "from_plan": from_plan, "plan": plan,
            "cpu": cpu, "memory_gb": memory_gb, "storage_gb": storage_gb,
        });
        let target = EventTarget {
            request_id: Some(&f.id),
            node_id: Some(&node_id),
            tenant: Some(&tenant),
        };
        emit(conn, "node.resized", &target, &f.actor, &payload, &at)?;
    }
    undrain(conn, &f.id, &at, "completed")?;
    Ok(())
}

/// A rollback's compensation of the hold: the growth comes back out of the node's rows and
/// the hold is released, in one transaction.
pub(super) fn return_hold(conn: &Conn, f: &Fenced) -> Result<Option<String>, StoreError> {
    let hold: Option<(i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT cpu, memory_gb, storage_gb FROM resources
             WHERE request_id = ? AND kind = 'resize_hold' AND status <> 'released'",
        )?
        .query_row([&f.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    undrain(conn, &f.id, &ts(f.now), "reverted")?;
    let Some((cpu, memory_gb, storage_gb)) = hold else {
        return Ok(None);
    };
    let target: Option<String> = conn
        .prepare_cached("SELECT target FROM requests WHERE id = ?")?
        .query_row([&f.id], |r| r.get(0))?;
    if let Some(target) = target {
        let by = Amounts {
            units: 0,
            cpu,
            memory_gb,
            storage_gb,
        };
        add_to_reservation(conn, &target, by, -1)?;
    }
    Ok(Some(format!(
        "{cpu} cpu, {memory_gb} GB RAM, {storage_gb} GB disk given back"
    )))
}

impl Store {
    /// Files a resize of a node. Refused, writing nothing, for a node that is not in
    /// service, a node not made by a request, a plan it is already on, or a node with a
    /// resize under way.
    pub async fn create_resize(
        &self,
        new: NewResize,
        now: DateTime<Utc>,
    ) -> Result<RequestRow, StoreError> {
        let id = new_id();
        let row_id = id.clone();
        self.write(move |conn| {
            insert(conn, &id, &new, now)?;
            Ok(())
        })
        .await?;
        self.get_request(&row_id)
            .await?
            .ok_or(StoreError::NotFound(row_id))
    }

    /// The resize under way of the node `target` provisioned, if any: (id, state).
    pub async fn live_resize(&self, target: &str) -> Result<Option<(String, String)>, StoreError> {
        let target = target.to_string();
        self.read(move |conn| live_resize_of(conn, &target)).await
    }

    /// Every resize of the node `target` provisioned, oldest first.
    pub async fn resizes_of(&self, target: &str) -> Result<Vec<RequestRow>, StoreError> {
        let target = target.to_string();
        self.read(move |conn| {
            super::rows(
                conn,
                "SELECT * FROM requests WHERE target = ? ORDER BY created_at, id",
                [&target],
                RequestRow::from_row,
            )
        })
        .await
    }

    /// The node a resize works on, as its provisioning recorded it.
    pub async fn resize_target(&self, resize_id: &str) -> Result<ResizeTarget, StoreError> {
        let id = resize_id.to_string();
        self.read(move |conn| {
            let target = get_request(conn, &id)?
                .and_then(|r| r.target)
                .ok_or_else(|| {
                    StoreError::Rejected(format!("request {} is not a resize", short(&id)))
                })?;
            let node_req =
                get_request(conn, &target)?.ok_or_else(|| StoreError::NotFound(target.clone()))?;
            let (plan, label, domain) = (node_req.plan, node_req.label, node_req.domain);
            let held = |kind: &str| -> Result<Option<String>, StoreError> {
                Ok(conn
                    .prepare_cached(
                        "SELECT provider_ref FROM resources WHERE request_id = ? AND kind = ? AND status = 'allocated'",
                    )?
                    .query_row(params![target, kind], |r| r.get(0))
                    .optional()?
                    .flatten())
            };
            let instance_id = held("instance")?.ok_or_else(|| {
                StoreError::Rejected(format!("request {} holds no instance", short(&target)))
            })?;
            let ip = held("ip")?.ok_or_else(|| {
                StoreError::Rejected(format!("request {} holds no IP", short(&target)))
            })?;
            let node_id: Option<String> = conn
                .prepare_cached("SELECT id FROM nodes WHERE request_id = ?")?
                .query_row([&target], |r| r.get(0))
                .optional()?;
            Ok(ResizeTarget {
                hostname: crate::domain::hostname::effective_hostname(&label, domain.as_deref()),
                request_id: target,
                node_id,
                instance_id,
                ip,
                plan,
            })
        })
        .await
    }

    /// Releases a rolled-back resize's hold: the growth leaves the node's rows.
    pub async fn return_resize_hold(&self, f: &Fenced) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            super::steps::touch(conn, &f)?;
            let detail = return_hold(conn, &f)?;
            if let Some(d) = &detail {
                conn.prepare_cached(
                    "UPDATE resources SET status = 'released', released_at = ?, detail = ?
                     WHERE request_id = ? AND kind = 'resize_hold' AND status <> 'released'",
                )?
                .execute(params![ts(f.now), d, f.id])?;
            }
            Ok(detail)
        })
        .await
    }
}

fn insert(conn: &Conn, id: &str, new: &NewResize, now: DateTime<Utc>) -> Result<(), StoreError> {
    type NodeRead = (Option<String>, String, String, String);
    let node: Option<NodeRead> = conn
        .prepare_cached("SELECT request_id, status, label, plan FROM nodes WHERE id = ?")?
        .query_row([&new.node_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((target, status, label, _)) = node else {
        return Err(StoreError::NotFound(new.node_id.clone()));
    };
    if status == "decommissioned" {
        return Err(StoreError::Rejected(format!(
            "node {label} is decommissioned: there is nothing to resize"
        )));
    }
    let Some(target) = target else {
        return Err(StoreError::Rejected(format!(
            "node {label} was not provisioned by a request: it has no instance to resize"
        )));
    };
    let node_req =
        get_request(conn, &target)?.ok_or_else(|| StoreError::NotFound(target.clone()))?;
    let op = node_req.operation();
    let RequestRow {
        state,
        tenant,
        region,
        plan,
        domain,
        cluster,
        ..
    } = node_req;
    if op != Operation::Provision {
        return Err(StoreError::Rejected(format!(
            "node {label}'s request {} is not a provisioning request",
            short(&target)
        )));
    }
    if state != RequestState::Completed.as_str() {
        let hint = if state == RequestState::Suspended.as_str() {
            ": reactivate it first"
        } else {
            ": only a node in service is resized"
        };
        return Err(StoreError::Rejected(format!(
            "node {label}'s request {} is {state}{hint}",
            short(&target)
        )));
    }
    if plan == new.plan {
        return Err(StoreError::Rejected(format!(
            "plan: node {label} is already on plan {plan}"
        )));
    }
    if let Some((other, st)) = live_resize_of(conn, &target)? {
        return Err(StoreError::Rejected(format!(
            "node {label} has a resize under way: request {} ({st}); one at a time",
            short(&other)
        )));
    }
    if let Some(cause) = &new.scaling_cause {
        super::scaling::refuse_second(conn, cause)?;
    }
    let at = ts(now);
    let seq = super::stamp(conn)?;
    conn.prepare_cached(
        "INSERT INTO requests (id, tenant, region, plan, kind, cpu, memory_gb, storage_gb, label, domain,
            state, requested_by, cluster, next_run_at, progress_at, created_at, updated_at, change_seq,
            operation, target, from_plan, scaling_cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?12, ?13, ?13, ?13, ?13, ?14,
            'resize', ?15, ?16, ?17)",
    )?
    .execute(params![
        id,
        tenant,
        region,
        new.plan,
        new.kind,
        new.cpu,
        new.memory_gb,
        new.storage_gb,
        label,
        domain,
        new.requested_by,
        cluster,
        at,
        seq,
        target,
        plan,
        new.scaling_cause
    ])?;
    for step in RESIZE_STEPS {
        conn.prepare_cached(
            "INSERT INTO request_steps (request_id, step, position, status) VALUES (?, ?, ?, 'pending')",
        )?
        .execute(params![id, step.as_str(), step.position()])?;
    }
    let what = match &new.reason {
        Some(r) => format!("resize node {label} from {plan} to {}: {r}", new.plan),
        None => format!("resize node {label} from {plan} to {}", new.plan),
    };
    conn.prepare_cached(
        "INSERT INTO transitions (request_id, from_state, to_state, actor, reason, at) VALUES (?, NULL, 'queued', ?, ?, ?)",
    )?
    .execute(params![id, new.requested_by, what, at])?;
    let payload = json!({
        "request_id": id, "node_id": new.node_id, "target": target, "tenant": tenant,
        "label": label, "from_plan": plan, "plan": new.plan, "reason": new.reason,
    });
    let ev = EventTarget {
        request_id: Some(id),
        node_id: Some(&new.node_id),
        tenant: Some(&tenant),
    };
    for name in event_names_for(Operation::Resize, None, RequestState::Queued) {
        emit(conn, name, &ev, &new.requested_by, &payload, &at)?;
    }
    audit(
        conn,
        &at,
        &new.requested_by,
        "node.resize",
        Some(id),
        Some(&what),
    )?;
    if let Some(cause) = &new.scaling_cause {
        super::scaling::announce(
            conn,
            &ev,
            cause,
            new.reason.as_deref(),
            &new.requested_by,
            &at,
        )?;
    }
    if let Some(m) = &new.approval {
        super::requests::hold_for_approval(conn, id, m, now)?;
    }
    Ok(())
}
