//! Requests: creating them, reading them back, and the one helper through which every state
//! change is written (state + transition row + outbox events, in the caller's transaction).

use super::events::{audit, emit, EventTarget};
use super::{placeholders, Conn, RequestDetail, RequestRow, Store, StoreError};
use crate::clock::ts;
use crate::domain::approval::RuleMatch;
use crate::domain::ids::{new_id, short, valid_prefix};
use crate::domain::state::{event_names, transition, RequestEvent, RequestState, TransitionError};
use crate::domain::STEPS;
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
}

/// Writes one transition: checks it against the state machine (and the fence), updates the
/// request, appends the transition row and the outbox events.
pub(crate) async fn apply_change(conn: &mut Conn, c: &Change<'_>) -> Result<Changed, StoreError> {
    let row: Option<(String, i64, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT state, fence, tenant, label, teardown, region FROM requests WHERE id = ?",
    )
    .bind(c.id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((state, fence, tenant, label, teardown, region)) = row else {
        return Err(StoreError::NotFound(c.id.to_string()));
    };
    if let Some(expected) = c.fence {
        if expected != fence {
            return Err(StoreError::FenceLost(short(c.id).to_string()));
        }
    }
    let from: RequestState = state
        .parse()
        .map_err(|e: String| StoreError::Rejected(format!("request {}: {e}", short(c.id))))?;
    let event = match c.event {
        RequestEvent::TeardownFinished { .. } => {
            let remaining: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM resources WHERE request_id = ? AND status <> 'released'",
            )
            .bind(c.id)
            .fetch_one(&mut *conn)
            .await?;
            RequestEvent::TeardownFinished {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                deprovision: teardown.as_deref() == Some("deprovision"),
            }
        }
        other => other,
    };
    let to = transition(from, event).map_err(|e| illegal(c.id, from, e))?;
    let at = ts(c.at);
    sqlx::query("UPDATE requests SET state = ?, updated_at = ?, progress_at = ? WHERE id = ?")
        .bind(to.as_str())
        .bind(&at)
        .bind(&at)
        .bind(c.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO transitions (request_id, from_state, to_state, actor, reason, at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(c.id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(c.actor)
    .bind(c.reason)
    .bind(&at)
    .execute(&mut *conn)
    .await?;
    let payload = json!({
        "request_id": c.id, "tenant": tenant, "label": label, "region": region,
        "from": from.as_str(), "to": to.as_str(), "step": from.step().map(|s| s.as_str()),
        "reason": c.reason,
    });
    let target = EventTarget {
        request_id: Some(c.id),
        node_id: None,
        tenant: Some(&tenant),
    };
    for name in event_names(Some(from), to) {
        emit(conn, name, &target, c.actor, &payload, &at).await?;
    }
    Ok(Changed { to })
}

fn illegal(id: &str, from: RequestState, e: TransitionError) -> StoreError {
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

/// Makes queued requests that might now be admitted look again at once: those of the same
/// tenant or region, and the dependents of `id`.
pub(crate) async fn wake_waiters(conn: &mut Conn, id: &str, at: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE requests SET next_run_at = ?
         WHERE state = 'queued' AND next_run_at > ? AND (
             tenant = (SELECT tenant FROM requests WHERE id = ?)
             OR region = (SELECT region FROM requests WHERE id = ?)
             OR id IN (SELECT request_id FROM request_deps WHERE depends_on = ?))",
    )
    .bind(at)
    .bind(at)
    .bind(id)
    .bind(id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
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
        let id2 = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(now);
                let clash: Option<(String, String)> = sqlx::query_as(
                    "SELECT id, state FROM requests WHERE tenant = ? AND label = ?
                       AND state NOT IN ('rolled_back', 'rejected', 'deprovisioned') LIMIT 1",
                )
                .bind(&new.tenant)
                .bind(&new.label)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some((other, state)) = clash {
                    return Err(StoreError::Rejected(format!(
                        "label: {} is already used by request {} ({state}) of tenant {}",
                        new.label,
                        short(&other),
                        new.tenant
                    )));
                }
                for dep in &new.depends_on {
                    let st: Option<String> = sqlx::query_scalar("SELECT state FROM requests WHERE id = ?")
                        .bind(dep)
                        .fetch_optional(&mut *conn)
                        .await?;
                    match st.as_deref() {
                        None => return Err(StoreError::NotFound(dep.clone())),
                        Some(s @ ("rolled_back" | "rejected" | "deprovisioned" | "rolling_back" | "failed")) => {
                            return Err(StoreError::Rejected(format!(
                                "prerequisite {} is {s}: it will never complete",
                                short(dep)
                            )))
                        }
                        Some(_) => {}
                    }
                }
                sqlx::query(
                    "INSERT INTO requests (id, tenant, region, plan, kind, cpu, memory_gb, storage_gb, label, domain,
                        state, requested_by, next_run_at, progress_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(&new.tenant)
                .bind(&new.region)
                .bind(&new.plan)
                .bind(&new.kind)
                .bind(new.cpu)
                .bind(new.memory_gb)
                .bind(new.storage_gb)
                .bind(&new.label)
                .bind(&new.domain)
                .bind(&new.requested_by)
                .bind(&at)
                .bind(&at)
                .bind(&at)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
                for step in STEPS {
                    sqlx::query(
                        "INSERT INTO request_steps (request_id, step, position, status) VALUES (?, ?, ?, 'pending')",
                    )
                    .bind(&id)
                    .bind(step.as_str())
                    .bind(step.position())
                    .execute(&mut *conn)
                    .await?;
                }
                for dep in &new.depends_on {
                    sqlx::query("INSERT INTO request_deps (request_id, depends_on) VALUES (?, ?) ON CONFLICT DO NOTHING")
                        .bind(&id)
                        .bind(dep)
                        .execute(&mut *conn)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO transitions (request_id, from_state, to_state, actor, reason, at) VALUES (?, NULL, 'queued', ?, 'created', ?)",
                )
                .bind(&id)
                .bind(&new.requested_by)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
                let payload = json!({
                    "request_id": id, "tenant": new.tenant, "region": new.region, "plan": new.plan,
                    "label": new.label, "domain": new.domain, "depends_on": new.depends_on,
                });
                let target = EventTarget {
                    request_id: Some(&id),
                    node_id: None,
                    tenant: Some(&new.tenant),
                };
                for name in event_names(None, RequestState::Queued) {
                    emit(conn, name, &target, &new.requested_by, &payload, &at).await?;
                }
                audit(
                    conn,
                    &at,
                    &new.requested_by,
                    "request.create",
                    Some(&id),
                    Some(&format!("{} {} {} {}", new.tenant, new.region, new.plan, new.label)),
                )
                .await?;
                if let Some(m) = &new.approval {
                    sqlx::query("UPDATE requests SET approval_rule = ?, approval_reason = ? WHERE id = ?")
                        .bind(&m.rule)
                        .bind(&m.reason)
                        .bind(&id)
                        .execute(&mut *conn)
                        .await?;
                    apply_change(
                        conn,
                        &Change {
                            id: &id,
                            event: RequestEvent::RequireApproval,
                            fence: None,
                            actor: "engine",
                            reason: Some(&m.reason),
                            at: now,
                        },
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        self.get_request(&id2)
            .await?
            .ok_or_else(|| StoreError::NotFound(id2.clone()))
    }

    /// Resolves a unique id prefix, as git does.
    pub async fn resolve_request_id(&self, prefix: &str) -> Result<String, StoreError> {
        resolve_prefix(self, "request", "requests", prefix).await
    }

    pub async fn resolve_node_id(&self, prefix: &str) -> Result<String, StoreError> {
        resolve_prefix(self, "node", "nodes", prefix).await
    }

    pub async fn get_request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.read().await)
            .await?)
    }

    pub async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<RequestRow>, StoreError> {
        let mut sql = String::from("SELECT * FROM requests WHERE 1 = 1");
        if f.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if f.tenant.is_some() {
            sql.push_str(" AND tenant = ?");
        }
        sql.push_str(" ORDER BY created_at, id LIMIT ?");
        let mut q = sqlx::query_as::<_, RequestRow>(&sql);
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(t) = &f.tenant {
            q = q.bind(t);
        }
        Ok(q.bind(f.limit.unwrap_or(i64::MAX))
            .fetch_all(&mut *self.read().await)
            .await?)
    }

    /// Steps of many requests at once, in request then step order.
    pub async fn steps_of(&self, ids: &[String]) -> Result<Vec<super::StepRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT * FROM request_steps WHERE request_id IN ({}) ORDER BY request_id, position",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as::<_, super::StepRow>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&mut *self.read().await).await?);
        }
        Ok(out)
    }

    pub async fn deps_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT depends_on FROM request_deps WHERE request_id = ? ORDER BY depends_on",
        )
        .bind(id)
        .fetch_all(&mut *self.read().await)
        .await?)
    }

    pub async fn request_detail(&self, id: &str) -> Result<RequestDetail, StoreError> {
        // One connection for all the reads; a guard per field would hold several at once.
        let mut c = self.read().await;
        let request: RequestRow = sqlx::query_as("SELECT * FROM requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let depends_on = sqlx::query_scalar("SELECT depends_on FROM request_deps WHERE request_id = ? ORDER BY depends_on")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let steps = sqlx::query_as("SELECT * FROM request_steps WHERE request_id = ? ORDER BY position")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let tasks = sqlx::query_as("SELECT * FROM step_tasks WHERE request_id = ? ORDER BY step, position")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let transitions = sqlx::query_as("SELECT * FROM transitions WHERE request_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let resources = sqlx::query_as("SELECT * FROM resources WHERE request_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let events = sqlx::query_as("SELECT * FROM events WHERE request_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *c)
            .await?;
        let node = sqlx::query_as("SELECT * FROM nodes WHERE request_id = ?")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        Ok(RequestDetail { request, depends_on, steps, tasks, transitions, resources, events, node })
    }

    /// Counts requests per state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM requests GROUP BY state ORDER BY state")
                .fetch_all(&mut *self.read().await)
                .await?,
        )
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
        let id = id.to_string();
        let actor = actor.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let changed = apply_change(
                    conn,
                    &Change {
                        id: &id,
                        event,
                        fence: None,
                        actor: &actor,
                        reason: reason.as_deref(),
                        at: now,
                    },
                )
                .await?;
                let at = ts(now);
                sqlx::query("UPDATE requests SET next_run_at = ?, wait_reason = NULL, error = CASE WHEN ? = 'rejected' THEN ? ELSE error END WHERE id = ?")
                    .bind(&at)
                    .bind(changed.to.as_str())
                    .bind(&reason)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                audit(conn, &at, &actor, &format!("request.{}", action_name(event)), Some(&id), reason.as_deref()).await?;
                if changed.to.is_terminal() {
                    wake_waiters(conn, &id, &at).await?;
                }
                Ok(changed.to)
            })
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
        let id = id.to_string();
        let actor = actor.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let at = ts(now);
                let (state, lease_exp): (String, Option<String>) =
                    sqlx::query_as("SELECT state, lease_expires_at FROM requests WHERE id = ?")
                        .bind(&id)
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
                let state: RequestState = state.parse().map_err(StoreError::Rejected)?;
                let event = if deprovision { RequestEvent::Deprovision } else { RequestEvent::Rollback };
                // Check legality first so a refused command writes nothing.
                transition(state, event).map_err(|e| illegal(&id, state, e))?;
                let held = lease_exp.is_some_and(|e| e > at);
                let action = if deprovision { "request.deprovision" } else { "request.rollback" };
                audit(conn, &at, &actor, action, Some(&id), reason.as_deref()).await?;
                if held {
                    sqlx::query("UPDATE requests SET cancel_requested = ?, updated_at = ? WHERE id = ?")
                        .bind(if deprovision { "deprovision" } else { "rollback" })
                        .bind(&at)
                        .bind(&id)
                        .execute(&mut *conn)
                        .await?;
                    return Ok(TeardownAsked::Signalled);
                }
                apply_change(
                    conn,
                    &Change { id: &id, event, fence: None, actor: &actor, reason: reason.as_deref(), at: now },
                )
                .await?;
                sqlx::query(
                    "UPDATE requests SET teardown = ?, cancel_requested = NULL, next_run_at = ?, needs_attention = 0,
                        fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                )
                .bind(if deprovision { "deprovision" } else { "rollback" })
                .bind(&at)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
                Ok(TeardownAsked::Started)
            })
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

async fn resolve_prefix(
    store: &Store,
    what: &'static str,
    table: &str,
    prefix: &str,
) -> Result<String, StoreError> {
    let p = prefix.trim().to_ascii_lowercase();
    if !valid_prefix(&p) {
        return Err(StoreError::Rejected(format!(
            "{what} id {:?} is not an id: use the hex digits shown in lists",
            crate::domain::validate::sanitize(prefix)
        )));
    }
    // A unique prefix of the full id, or the short form shown in lists (a suffix).
    let sql = format!("SELECT id FROM {table} WHERE id LIKE ? OR id LIKE ? ORDER BY id LIMIT 2");
    let ids: Vec<String> = sqlx::query_scalar(&sql)
        .bind(format!("{p}%"))
        .bind(format!("%{p}"))
        .fetch_all(&mut *store.read().await)
        .await?;
    match ids.as_slice() {
        [] => Err(StoreError::NotFound(p)),
        [one] => Ok(one.clone()),
        [a, b, ..] => Err(StoreError::Ambiguous {
            what,
            prefix: p,
            first: short(a).to_string(),
            second: short(b).to_string(),
        }),
    }
}
