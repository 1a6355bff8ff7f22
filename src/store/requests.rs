//! Requests: creating them, reading them back, and the one helper through which every state
//! change is written (state + transition row + outbox events, in the caller's transaction).

use super::events::{audit, emit, EventTarget};
use super::{placeholders, rows, Conn, RequestDetail, RequestRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::approval::RuleMatch;
use crate::domain::hostname::{effective_hostname, HostnameHolder};
use crate::domain::ids::{new_id, short, valid_prefix};
use crate::domain::state::{
    event_names, event_names_for, transition_for, Operation, RequestEvent, RequestState,
    TransitionError,
};
use crate::domain::STEPS;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct NewRequest {
    pub tenant: String,
    pub region: String,
    pub plan: String,
    pub kind: String,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    pub label: String,
    pub domain: Option<String>,
    /// Full ids of prerequisites.
    pub depends_on: Vec<String>,
    pub requested_by: String,
    pub approval: Option<RuleMatch>,
    /// Why it was filed, when its filer says (the engine's scaling always does).
    pub reason: Option<String>,
    /// The scaling cause it answers: at most one live request per cause.
    pub scaling_cause: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub state: Option<RequestState>,
    pub tenant: Option<String>,
    pub limit: Option<i64>,
}

/// One state change, as the engine or a command asks for it.
pub(crate) struct Change<'a> {
    pub id: &'a str,
    pub event: RequestEvent,
    /// When set, the change only happens if the request's fence still has this value.
    pub fence: Option<i64>,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub at: DateTime<Utc>,
}

pub(crate) struct Changed {
    pub to: RequestState,
    /// What the request does: its steps and its next step follow from it.
    pub op: Operation,
}

/// Writes one transition: checks it against the state machine (and the fence), updates the
/// request, appends the transition row and the outbox events.
pub(crate) fn apply_change(conn: &Conn, c: &Change<'_>) -> Result<Changed, StoreError> {
    type Read = (String, i64, String, String, Option<String>, String, String);
    let row: Option<Read> = conn
        .prepare_cached(
            "SELECT state, fence, tenant, label, teardown, region, operation FROM requests WHERE id = ?",
        )?
        .query_row([c.id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let Some((state, fence, tenant, label, teardown, region, op)) = row else {
        return Err(StoreError::NotFound(c.id.to_string()));
    };
    if c.fence.is_some_and(|expected| expected != fence) {
        return Err(StoreError::FenceLost(short(c.id).to_string()));
    }
    let from: RequestState = state
        .parse()
        .map_err(|e: String| StoreError::Rejected(format!("request {}: {e}", short(c.id))))?;
    let event = match c.event {
        RequestEvent::TeardownFinished { .. } => {
            let remaining: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM resources WHERE request_id = ? AND status <> 'released'",
                )?
                .query_row([c.id], |r| r.get(0))?;
            RequestEvent::TeardownFinished {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                deprovision: teardown.as_deref() == Some("deprovision"),
            }
        }
        other => other,
    };
    let op = Operation::parse(&op).ok_or_else(|| {
        StoreError::Rejected(format!("request {}: unknown operation {op:?}", short(c.id)))
    })?;
    let to = transition_for(op, from, event).map_err(|e| illegal(c.id, from, e))?;
    let at = ts(c.at);
    // Stamped by the statement itself: the rest of the caller's writes to this request and
    // its steps find it stamped already (see `super::stamp`).
    let seq = super::stamp(conn)?;
    conn.prepare_cached(
        "UPDATE requests SET state = ?, updated_at = ?, progress_at = ?, change_seq = ? WHERE id = ?",
    )?
    .execute(params![to.as_str(), at, at, seq, c.id])?;
    conn.prepare_cached("INSERT INTO transitions (request_id, from_state, to_state, actor, reason, at) VALUES (?, ?, ?, ?, ?, ?)")?
        .execute(params![c.id, from.as_str(), to.as_str(), c.actor, c.reason, at])?;
    let payload = json!({
        "request_id": c.id, "tenant": tenant, "label": label, "region": region,
        "from": from.as_str(), "to": to.as_str(), "step": op.step(from).map(|s| s.as_str()),
        "operation": op.as_str(), "reason": c.reason,
    });
    let target = EventTarget {
        request_id: Some(c.id),
        node_id: None,
        tenant: Some(&tenant),
    };
    for name in event_names_for(op, Some(from), to) {
        emit(conn, name, &target, c.actor, &payload, &at)?;
    }
    Ok(Changed { to, op })
}

pub(crate) fn illegal(id: &str, from: RequestState, e: TransitionError) -> StoreError {
    let id = short(id);
    StoreError::Rejected(match e {
        TransitionError::UseDeprovision => {
            format!("request {id} is {from}: tear it down with deprovision, not rollback")
        }
        TransitionError::StillHolding { remaining } => {
            format!(
                "request {id} still holds {remaining} resource(s); it cannot be marked released"
            )
        }
        TransitionError::Illegal { event, .. } => {
            format!("request {id} is {from}: it cannot {event}")
        }
    })
}

/// The live requests (not `except`) whose hostname is `wanted`, with when each was made. A
/// resize holds no hostname: its node's request does (and a completed resize stays
/// completed after the node is gone).
/// The partial index `requests_live_label` (0012) serves this: same label, live states;
/// the domain is compared as the effective hostname.
fn live_holders(
    conn: &Conn,
    label: &str,
    wanted: &str,
    except: &str,
) -> Result<Vec<(HostnameHolder, String)>, StoreError> {
    let live = rows(
        conn,
        "SELECT id, tenant, state, domain, created_at FROM requests
         WHERE label = ?1 AND state NOT IN ('rolled_back', 'rejected', 'deprovisioned') AND id <> ?2
           AND operation = 'provision'",
        params![label, except],
        |r| {
            Ok((
                HostnameHolder {
                    request_id: r.get(0)?,
                    tenant: r.get(1)?,
                    state: r.get(2)?,
                },
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        },
    )?;
    Ok(live
        .into_iter()
        .filter(|(_, d, _)| effective_hostname(label, d.as_deref()) == wanted)
        .map(|(holder, _, at)| (holder, at))
        .collect())
}

/// The request that holds the hostname `label` under `domain` would get, if any. Runs in
/// the caller's write transaction, so the check and the insert after it are one step: two
/// creates at once cannot both find the name free.
fn hostname_holder(
    conn: &Conn,
    label: &str,
    domain: Option<&str>,
) -> Result<Option<HostnameHolder>, StoreError> {
    let wanted = effective_hostname(label, domain);
    Ok(live_holders(conn, label, &wanted, "")?
        .into_iter()
        .next()
        .map(|(holder, _)| holder))
}

/// At admission, for a queued request whose hostname another live request holds. Only a
/// database written before the check at creation holds two such: the one that is further
/// along (not queued), or else the one created first, keeps the name. Returns the hostname
/// and its holder.
pub(crate) fn hostname_held_elsewhere(
    conn: &Conn,
    id: &str,
) -> Result<Option<(String, HostnameHolder)>, StoreError> {
    let Some((label, domain, created)): Option<(String, Option<String>, String)> = conn
        .prepare_cached("SELECT label, domain, created_at FROM requests WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let wanted = effective_hostname(&label, domain.as_deref());
    Ok(live_holders(conn, &label, &wanted, id)?
        .into_iter()
        .find(|(h, at)| {
            h.state != "queued" || (at.as_str(), h.request_id.as_str()) < (created.as_str(), id)
        })
        .map(|(h, _)| (wanted, h)))
}

fn insert_request(
    conn: &Conn,
    id: &str,
    new: &NewRequest,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(now);
    let clash: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT id, state FROM requests WHERE tenant = ? AND label = ?
               AND state NOT IN ('rolled_back', 'rejected', 'deprovisioned') AND operation = 'provision'
             LIMIT 1",
        )?
        .query_row(params![new.tenant, new.label], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((other, state)) = clash {
        return Err(StoreError::Rejected(format!(
            "label: {} is already used by request {} ({state}) of tenant {}",
            new.label,
            short(&other),
            new.tenant
        )));
    }
    if let Some(holder) = hostname_holder(conn, &new.label, new.domain.as_deref())? {
        let host = effective_hostname(&new.label, new.domain.as_deref());
        return Err(StoreError::Rejected(holder.refusal(&host)));
    }
    if let Some(cause) = &new.scaling_cause {
        super::scaling::refuse_second(conn, cause)?;
    }
    for dep in &new.depends_on {
        let st: Option<String> = conn
            .prepare_cached("SELECT state FROM requests WHERE id = ?")?
            .query_row([dep], |r| r.get(0))
            .optional()?;
        match st.as_deref() {
            None => return Err(StoreError::NotFound(dep.clone())),
            Some(
                s @ ("rolled_back" | "rejected" | "deprovisioned" | "rolling_back" | "failed"),
            ) => {
                return Err(StoreError::Rejected(format!(
                    "prerequisite {} is {s}: it will never complete",
                    short(dep)
                )))
            }
            Some(_) => {}
        }
    }
    let seq = super::stamp(conn)?;
    conn.prepare_cached(
        "INSERT INTO requests (id, tenant, region, plan, kind, cpu, memory_gb, storage_gb, label, domain,
            state, requested_by, next_run_at, progress_at, created_at, updated_at, change_seq,
            scaling_cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?12, ?12, ?12, ?12, ?13, ?14)",
    )?
    .execute(params![
        id,
        new.tenant,
        new.region,
        new.plan,
        new.kind,
        new.cpu,
        new.memory_gb,
        new.storage_gb,
        new.label,
        new.domain,
        new.requested_by,
        at,
        seq,
        new.scaling_cause
    ])?;
    for step in STEPS {
        conn.prepare_cached("INSERT INTO request_steps (request_id, step, position, status) VALUES (?, ?, ?, 'pending')")?
            .execute(params![id, step.as_str(), step.position()])?;
    }
    for dep in &new.depends_on {
        conn.prepare_cached("INSERT INTO request_deps (request_id, depends_on) VALUES (?, ?) ON CONFLICT DO NOTHING")?
            .execute(params![id, dep])?;
    }
    // The first transition carries the filer's reason, where the request's history (the
    // console's detail pane, `request show`) shows it.
    let created = match &new.reason {
        Some(r) => format!("created: {r}"),
        None => "created".to_string(),
    };
    conn.prepare_cached(
        "INSERT INTO transitions (request_id, from_state, to_state, actor, reason, at) VALUES (?, NULL, 'queued', ?, ?, ?)",
    )?
    .execute(params![id, new.requested_by, created, at])?;
    let payload = json!({
        "request_id": id, "tenant": new.tenant, "region": new.region, "plan": new.plan,
        "label": new.label, "domain": new.domain, "depends_on": new.depends_on,
        "reason": new.reason, "scaling_cause": new.scaling_cause,
    });
    let target = EventTarget {
        request_id: Some(id),
        node_id: None,
        tenant: Some(&new.tenant),
    };
    for name in event_names(None, RequestState::Queued) {
        emit(conn, name, &target, &new.requested_by, &payload, &at)?;
    }
    let what = format!("{} {} {} {}", new.tenant, new.region, new.plan, new.label);
    audit(
        conn,
        &at,
        &new.requested_by,
        "request.create",
        Some(id),
        Some(&what),
    )?;
    if let Some(cause) = &new.scaling_cause {
        super::scaling::announce(
            conn,
            &target,
            cause,
            new.reason.as_deref(),
            &new.requested_by,
            &at,
        )?;
    }
    if let Some(m) = &new.approval {
        hold_for_approval(conn, id, m, now)?;
    }
    Ok(())
}

/// Holds a new request for an approver: the rule that matched (and its version) recorded,
/// and the request moved to pending_approval, in the caller's transaction.
pub(super) fn hold_for_approval(
    conn: &Conn,
    id: &str,
    m: &RuleMatch,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(now);
    let version = super::catalog::rule_version(conn, m, &at)?;
    conn.prepare_cached(
        "UPDATE requests SET approval_rule = ?, approval_reason = ?, approval_rule_version = ? WHERE id = ?",
    )?
    .execute(params![m.rule, m.reason, version, id])?;
    let change = Change {
        id,
        event: RequestEvent::RequireApproval,
        fence: None,
        actor: "engine",
        reason: Some(&m.reason),
        at: now,
    };
    apply_change(conn, &change)?;
    Ok(())
}

pub(super) fn get_request(conn: &Conn, id: &str) -> Result<Option<RequestRow>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT * FROM requests WHERE id = ?")?
        .query_row([id], RequestRow::from_row)
        .optional()?)
}

impl Store {
    /// Admits a new request: one transaction writes the request, its steps, its first
    /// transition and event, the audit entry, and (if a rule matched) the move to
    /// pending_approval.
    pub async fn create_request(
        &self,
        new: NewRequest,
        now: DateTime<Utc>,
    ) -> Result<RequestRow, StoreError> {
        let id = new_id();
        self.write(move |conn| {
            insert_request(conn, &id, &new, now)?;
            get_request(conn, &id)?.ok_or_else(|| StoreError::NotFound(id.clone()))
        })
        .await
    }

    /// Creates several requests in one transaction, in the order given (prerequisites
    /// first): all of them, or none if any is refused.
    pub async fn create_requests(
        &self,
        news: Vec<(String, NewRequest)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<RequestRow>, StoreError> {
        self.write(move |conn| {
            for (id, new) in &news {
                insert_request(conn, id, new, now)?;
            }
            news.iter()
                .map(|(id, _)| {
                    get_request(conn, id)?.ok_or_else(|| StoreError::NotFound(id.clone()))
                })
                .collect()
        })
        .await
    }

    /// Resolves a unique id prefix (as git does) or the short form shown in lists.
    pub async fn resolve_request_id(&self, prefix: &str) -> Result<String, StoreError> {
        self.resolve_prefix("request", "requests", prefix).await
    }

    pub async fn resolve_node_id(&self, prefix: &str) -> Result<String, StoreError> {
        self.resolve_prefix("node", "nodes", prefix).await
    }

    pub async fn resolve_alert_id(&self, prefix: &str) -> Result<String, StoreError> {
        self.resolve_prefix("alert", "alerts", prefix).await
    }

    async fn resolve_prefix(
        &self,
        what: &'static str,
        table: &'static str,
        prefix: &str,
    ) -> Result<String, StoreError> {
        let p = prefix.trim().to_ascii_lowercase();
        if !valid_prefix(&p) {
            return Err(StoreError::Rejected(format!(
                "{what} id {:?} is not an id: use the hex digits shown in lists",
                crate::domain::validate::sanitize(prefix)
            )));
        }
        let ids = self
            .read(move |c| {
                let sql = format!(
                    "SELECT id FROM {table} WHERE id LIKE ?1 OR id LIKE ?2 ORDER BY id LIMIT 2"
                );
                rows(c, &sql, params![format!("{p}%"), format!("%{p}")], |r| {
                    r.get::<_, String>(0)
                })
            })
            .await?;
        match ids.as_slice() {
            [] => Err(StoreError::NotFound(prefix.trim().to_string())),
            [one] => Ok(one.clone()),
            [a, b, ..] => Err(StoreError::Ambiguous {
                what,
                prefix: prefix.trim().to_string(),
                first: short(a).to_string(),
                second: short(b).to_string(),
            }),
        }
    }

    pub async fn get_request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| get_request(c, &id)).await
    }

    pub async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<RequestRow>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let mut sql = String::from("SELECT * FROM requests WHERE 1 = 1");
            let mut args: Vec<crate::store::sql::Value> = Vec::new();
            if let Some(s) = f.state {
                sql.push_str(" AND state = ?");
                args.push(s.as_str().to_string().into());
            }
            if let Some(t) = &f.tenant {
                sql.push_str(" AND tenant = ?");
                args.push(t.clone().into());
            }
            sql.push_str(" ORDER BY created_at, id LIMIT ?");
            args.push(f.limit.unwrap_or(i64::MAX).into());
            rows(
                c,
                &sql,
                crate::store::sql::params_from_iter(args),
                RequestRow::from_row,
            )
        })
        .await
    }

    /// Steps of many requests at once, in request then step order.
    pub async fn steps_of(&self, ids: &[String]) -> Result<Vec<super::StepRow>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut out = Vec::new();
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT * FROM request_steps WHERE request_id IN ({}) ORDER BY request_id, position",
                    placeholders(chunk.len())
                );
                out.extend(rows(c, &sql, crate::store::sql::params_from_iter(chunk), super::StepRow::from_row)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn deps_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            rows(
                c,
                "SELECT depends_on FROM request_deps WHERE request_id = ? ORDER BY depends_on",
                [id],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn request_detail(&self, id: &str) -> Result<RequestDetail, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let request = get_request(c, &id)?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
            Ok(RequestDetail {
                request,
                depends_on: rows(
                    c,
                    "SELECT depends_on FROM request_deps WHERE request_id = ? ORDER BY depends_on",
                    [&id],
                    |r| r.get(0),
                )?,
                steps: rows(
                    c,
                    "SELECT * FROM request_steps WHERE request_id = ? ORDER BY position",
                    [&id],
                    super::StepRow::from_row,
                )?,
                tasks: rows(
                    c,
                    "SELECT * FROM step_tasks WHERE request_id = ? ORDER BY step, position",
                    [&id],
                    super::TaskRow::from_row,
                )?,
                transitions: rows(
                    c,
                    "SELECT * FROM transitions WHERE request_id = ? ORDER BY id",
                    [&id],
                    super::TransitionRow::from_row,
                )?,
                resources: rows(
                    c,
                    "SELECT * FROM resources WHERE request_id = ? ORDER BY seq",
                    [&id],
                    super::ResourceRow::from_row,
                )?,
                events: rows(
                    c,
                    "SELECT * FROM events WHERE request_id = ? ORDER BY seq",
                    [&id],
                    super::EventRow::from_row,
                )?,
                node: c
                    .prepare_cached("SELECT * FROM nodes WHERE request_id = ?")?
                    .query_row([&id], super::NodeRow::from_row)
                    .optional()?,
                records: super::dns::for_request(c, &id)?,
                certificates: super::certs::for_request(c, &id)?,
            })
        })
        .await
    }

    /// Counts requests per state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            rows(
                c,
                "SELECT state, COUNT(*) FROM requests GROUP BY state ORDER BY state",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    /// An approver's decision, or any other command that is only a state change.
    pub async fn decide(
        &self,
        id: &str,
        event: RequestEvent,
        actor: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<RequestState, StoreError> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |conn| {
            let change = Change {
                id: &id,
                event,
                fence: None,
                actor: &actor,
                reason: reason.as_deref(),
                at: now,
            };
            let changed = apply_change(conn, &change)?;
            let at = ts(now);
            conn.prepare_cached(
                "UPDATE requests SET next_run_at = ?, wait_reason = NULL,
                    error = CASE WHEN ? = 'rejected' THEN ? ELSE error END WHERE id = ?",
            )?
            .execute(params![at, changed.to.as_str(), reason, id])?;
            audit(
                conn,
                &at,
                &actor,
                &format!("request.{}", action_name(event)),
                Some(&id),
                reason.as_deref(),
            )?;
            Ok(changed.to)
        })
        .await
    }

    /// Asks for a teardown. A request no worker holds changes state at once; one a worker is
    /// running is marked, and the worker stops after its current call and rolls back.
    pub async fn request_teardown(
        &self,
        id: &str,
        deprovision: bool,
        actor: &str,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<TeardownAsked, StoreError> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |conn| {
            let at = ts(now);
            let (state, lease_exp, op): (String, Option<String>, String) = conn
                .prepare_cached("SELECT state, lease_expires_at, operation FROM requests WHERE id = ?")?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            let state: RequestState = state.parse().map_err(StoreError::Rejected)?;
            let op = Operation::parse(&op).unwrap_or(Operation::Provision);
            let event = if deprovision { RequestEvent::Deprovision } else { RequestEvent::Rollback };
            // Check legality first so a refused command writes nothing.
            transition_for(op, state, event).map_err(|e| illegal(&id, state, e))?;
            let what = if deprovision { "be deprovisioned" } else { "be rolled back" };
            super::resize::refuse_while_resizing(conn, &id, what)?;
            let held = lease_exp.is_some_and(|e| e > at);
            let kind = if deprovision { "deprovision" } else { "rollback" };
            audit(conn, &at, &actor, &format!("request.{kind}"), Some(&id), reason.as_deref())?;
            // Only a pipeline worker reads the signal; a lease on a finished request belongs to
            // a suspend or reactivate under way, and a signal there would be lost.
            let worked = matches!(
                state,
                RequestState::Queued
                    | RequestState::Allocating
                    | RequestState::Configuring
                    | RequestState::Activating
                    | RequestState::Verifying
                    | RequestState::Failed
            );
            if held && !worked {
                return Err(StoreError::Rejected(format!(
                    "request {} is busy ({state}: a suspend or reactivate is under way); try again in a moment",
                    short(&id)
                )));
            }
            if held {
                conn.prepare_cached("UPDATE requests SET cancel_requested = ?, updated_at = ? WHERE id = ?")?
                    .execute(params![kind, at, id])?;
                return Ok(TeardownAsked::Signalled);
            }
            apply_change(conn, &Change { id: &id, event, fence: None, actor: &actor, reason: reason.as_deref(), at: now })?;
            conn.prepare_cached(
                "UPDATE requests SET teardown = ?, cancel_requested = NULL, next_run_at = ?, needs_attention = 0,
                    wait_reason = NULL, fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
            )?
            .execute(params![kind, at, id])?;
            Ok(TeardownAsked::Started)
        })
        .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeardownAsked {
    /// The request is now rolling_back.
    Started,
    /// A worker holds it; it will roll back after its current call.
    Signalled,
}

fn action_name(e: RequestEvent) -> &'static str {
    match e {
        RequestEvent::Approve => "approve",
        RequestEvent::Reject => "reject",
        RequestEvent::Suspend => "suspend",
        RequestEvent::Reactivate => "reactivate",
        RequestEvent::Rollback => "rollback",
        RequestEvent::Deprovision => "deprovision",
        _ => "change",
    }
}
