//! What a worker writes while it runs a request: sub-task progress, resources, step results,
//! teardown. Every write carries the worker's fencing number and fails with `FenceLost` once
//! another worker has taken the request over. Every write also extends the lease.

use super::events::audit;
use super::requests::{apply_change, wake_waiters, Change};
use super::{Conn, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::{new_id, short};
use crate::domain::{RequestEvent, RequestState, ResourceKind, Step};
use chrono::{DateTime, Utc};

/// Who is writing, and until when its lease should now run.
#[derive(Debug, Clone)]
pub struct Fenced {
    pub id: String,
    pub fence: i64,
    pub actor: String,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

/// A resource as the worker records it.
#[derive(Debug, Clone, Default)]
pub struct ResourceWrite {
    pub kind: Option<ResourceKind>,
    /// `intent` before the provider call, `allocated` after it.
    pub allocated: bool,
    pub provider: Option<String>,
    pub provider_ref: Option<String>,
    pub detail: Option<String>,
}

/// Checks the fence and extends the lease; returns a pending teardown request, if any.
async fn touch(conn: &mut Conn, f: &Fenced, progress: bool) -> Result<Option<String>, StoreError> {
    let at = ts(f.now);
    let row: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE requests SET lease_expires_at = ?, updated_at = ?,
            progress_at = CASE WHEN ? THEN ? ELSE progress_at END
         WHERE id = ? AND fence = ? RETURNING cancel_requested",
    )
    .bind(ts(f.lease_until))
    .bind(&at)
    .bind(progress)
    .bind(&at)
    .bind(&f.id)
    .bind(f.fence)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| StoreError::FenceLost(short(&f.id).to_string()))
}

async fn set_task(
    conn: &mut Conn,
    f: &Fenced,
    step: Step,
    task: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    let pos = step.tasks().iter().position(|t| *t == task).unwrap_or(0) as i64 + 1;
    sqlx::query(
        "INSERT INTO step_tasks (request_id, step, name, position, status, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (request_id, step, name) DO UPDATE SET status = excluded.status, detail = excluded.detail,
             updated_at = excluded.updated_at",
    )
    .bind(&f.id)
    .bind(step.as_str())
    .bind(task)
    .bind(pos)
    .bind(status)
    .bind(detail)
    .bind(ts(f.now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_resource(conn: &mut Conn, f: &Fenced, r: &ResourceWrite) -> Result<(), StoreError> {
    let Some(kind) = r.kind else {
        return Ok(());
    };
    let (tenant, cluster): (String, Option<String>) =
        sqlx::query_as("SELECT tenant, cluster FROM requests WHERE id = ?")
            .bind(&f.id)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query(
        "INSERT INTO resources (id, request_id, seq, kind, status, provider, provider_ref, tenant, cluster, detail, created_at)
         VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM resources WHERE request_id = ?), ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (request_id, kind) DO UPDATE SET
             status = CASE WHEN resources.status = 'released' THEN 'released' ELSE excluded.status END,
             provider_ref = COALESCE(excluded.provider_ref, resources.provider_ref),
             detail = COALESCE(excluded.detail, resources.detail)",
    )
    .bind(new_id())
    .bind(&f.id)
    .bind(&f.id)
    .bind(kind.as_str())
    .bind(if r.allocated { "allocated" } else { "intent" })
    .bind(&r.provider)
    .bind(&r.provider_ref)
    .bind(&tenant)
    .bind(&cluster)
    .bind(&r.detail)
    .bind(ts(f.now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Marks a sub-task done (recording a resource with it if given). Returns a teardown the
    /// operator asked for meanwhile, if any.
    pub async fn task_done(
        &self,
        f: &Fenced,
        step: Step,
        task: &'static str,
        detail: Option<String>,
        resource: Option<ResourceWrite>,
    ) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let cancel = touch(conn, &f, true).await?;
                if let Some(r) = &resource {
                    upsert_resource(conn, &f, r).await?;
                }
                set_task(conn, &f, step, task, "done", detail.as_deref()).await?;
                Ok(cancel)
            })
        })
        .await
    }

    /// Records an intent (or any resource) without finishing a sub-task: written before a
    /// provider call so a crash after the call can still find what it made.
    pub async fn record_resource(
        &self,
        f: &Fenced,
        step: Step,
        task: &'static str,
        r: ResourceWrite,
    ) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let cancel = touch(conn, &f, false).await?;
                upsert_resource(conn, &f, &r).await?;
                set_task(conn, &f, step, task, "running", r.detail.as_deref()).await?;
                Ok(cancel)
            })
        })
        .await
    }

    /// A provider call failed and will be tried again after a wait.
    pub async fn note_retry(
        &self,
        f: &Fenced,
        step: Option<Step>,
        task: &str,
        detail: String,
    ) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        let task = task.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let cancel = touch(conn, &f, false).await?;
                if let Some(step) = step {
                    sqlx::query("UPDATE request_steps SET attempts = attempts + 1, error = ? WHERE request_id = ? AND step = ?")
                        .bind(&detail)
                        .bind(&f.id)
                        .bind(step.as_str())
                        .execute(&mut *conn)
                        .await?;
                    set_task(conn, &f, step, &task, "retrying", Some(&detail)).await?;
                }
                sqlx::query("UPDATE requests SET error = ? WHERE id = ?")
                    .bind(&detail)
                    .bind(&f.id)
                    .execute(&mut *conn)
                    .await?;
                Ok(cancel)
            })
        })
        .await
    }

    /// Extends the lease without progress (the heartbeat).
    pub async fn heartbeat(&self, f: &Fenced) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        self.write(move |conn| Box::pin(async move { touch(conn, &f, false).await }))
            .await
    }

    /// The step finished: moves the request to the next state and starts the next step.
    /// Completing the last step releases the lease.
    pub async fn complete_step(&self, f: &Fenced, step: Step) -> Result<RequestState, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, true).await?;
                let at = ts(f.now);
                let changed = apply_change(
                    conn,
                    &Change { id: &f.id, event: RequestEvent::StepSucceeded, fence: Some(f.fence), actor: &f.actor, reason: None, at: f.now },
                )
                .await?;
                sqlx::query("UPDATE request_steps SET status = 'done', finished_at = ?, error = NULL WHERE request_id = ? AND step = ?")
                    .bind(&at)
                    .bind(&f.id)
                    .bind(step.as_str())
                    .execute(&mut *conn)
                    .await?;
                if let Some(next) = changed.to.step() {
                    sqlx::query(
                        "UPDATE request_steps SET status = 'running', started_at = ?, attempts = attempts + 1
                         WHERE request_id = ? AND step = ?",
                    )
                    .bind(&at)
                    .bind(&f.id)
                    .bind(next.as_str())
                    .execute(&mut *conn)
                    .await?;
                }
                sqlx::query("UPDATE requests SET error = NULL WHERE id = ?").bind(&f.id).execute(&mut *conn).await?;
                if changed.to == RequestState::Completed {
                    sqlx::query("UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?")
                        .bind(&f.id)
                        .execute(&mut *conn)
                        .await?;
                    wake_waiters(conn, &f.id, &at).await?;
                }
                Ok(changed.to)
            })
        })
        .await
    }

    /// The step exhausted its retries: the request becomes failed (and is then rolled back).
    pub async fn fail_step(&self, f: &Fenced, step: Step, error: String) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, true).await?;
                apply_change(
                    conn,
                    &Change { id: &f.id, event: RequestEvent::StepFailed, fence: Some(f.fence), actor: &f.actor, reason: Some(&error), at: f.now },
                )
                .await?;
                sqlx::query("UPDATE request_steps SET status = 'failed', finished_at = ?, error = ? WHERE request_id = ? AND step = ?")
                    .bind(ts(f.now))
                    .bind(&error)
                    .bind(&f.id)
                    .bind(step.as_str())
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("UPDATE requests SET error = ? WHERE id = ?").bind(&error).bind(&f.id).execute(&mut *conn).await?;
                Ok(())
            })
        })
        .await
    }

    /// Starts a teardown from a failed request, or from a running one an operator asked to
    /// stop (`cancel` holds what they asked for).
    pub async fn start_teardown(
        &self,
        f: &Fenced,
        reason: String,
        deprovision: bool,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, true).await?;
                let event = if deprovision { RequestEvent::Deprovision } else { RequestEvent::Rollback };
                apply_change(conn, &Change { id: &f.id, event, fence: Some(f.fence), actor: &f.actor, reason: Some(&reason), at: f.now }).await?;
                sqlx::query("UPDATE requests SET teardown = ?, cancel_requested = NULL WHERE id = ?")
                    .bind(if deprovision { "deprovision" } else { "rollback" })
                    .bind(&f.id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("UPDATE request_steps SET status = 'failed', finished_at = ? WHERE request_id = ? AND status = 'running'")
                    .bind(ts(f.now))
                    .bind(&f.id)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// A compensation finished: the resource is released.
    pub async fn release_resource(
        &self,
        f: &Fenced,
        kind: ResourceKind,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, true).await?;
                sqlx::query(
                    "UPDATE resources SET status = 'released', released_at = ?, detail = COALESCE(?, detail)
                     WHERE request_id = ? AND kind = ? AND status <> 'released'",
                )
                .bind(ts(f.now))
                .bind(&detail)
                .bind(&f.id)
                .bind(kind.as_str())
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// A compensation could not finish: the request stays rolling_back, marked for a
    /// person's attention, and is tried again at `retry_at`.
    pub async fn teardown_stalled(
        &self,
        f: &Fenced,
        error: String,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, false).await?;
                sqlx::query(
                    "UPDATE requests SET error = ?, needs_attention = 1, lease_owner = NULL, lease_expires_at = NULL,
                        next_run_at = ? WHERE id = ?",
                )
                .bind(&error)
                .bind(ts(retry_at))
                .bind(&f.id)
                .execute(&mut *conn)
                .await?;
                audit(conn, &ts(f.now), &f.actor, "request.teardown-stalled", Some(&f.id), Some(&error)).await?;
                Ok(())
            })
        })
        .await
    }

    /// Every compensation ran: rolled_back (or deprovisioned). Refused while anything is
    /// still held.
    pub async fn finish_teardown(&self, f: &Fenced) -> Result<RequestState, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, true).await?;
                let changed = apply_change(
                    conn,
                    &Change {
                        id: &f.id,
                        event: RequestEvent::TeardownFinished { remaining: 0, deprovision: false },
                        fence: Some(f.fence),
                        actor: &f.actor,
                        reason: None,
                        at: f.now,
                    },
                )
                .await?;
                sqlx::query(
                    "UPDATE requests SET needs_attention = 0, lease_owner = NULL, lease_expires_at = NULL,
                        error = CASE WHEN teardown = 'deprovision' THEN NULL ELSE error END WHERE id = ?",
                )
                .bind(&f.id)
                .execute(&mut *conn)
                .await?;
                wake_waiters(conn, &f.id, &ts(f.now)).await?;
                Ok(changed.to)
            })
        })
        .await
    }

    /// Suspend or reactivate, after the provider did it: the state change and the node's.
    pub async fn apply_service_change(
        &self,
        f: &Fenced,
        event: RequestEvent,
        reason: Option<String>,
    ) -> Result<RequestState, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            Box::pin(async move {
                touch(conn, &f, false).await?;
                let changed = apply_change(
                    conn,
                    &Change {
                        id: &f.id,
                        event,
                        fence: Some(f.fence),
                        actor: &f.actor,
                        reason: reason.as_deref(),
                        at: f.now,
                    },
                )
                .await?;
                let name = if event == RequestEvent::Suspend {
                    "suspend"
                } else {
                    "reactivate"
                };
                audit(
                    conn,
                    &ts(f.now),
                    &f.actor,
                    &format!("request.{name}"),
                    Some(&f.id),
                    reason.as_deref(),
                )
                .await?;
                super::nodes::follow_service(
                    conn,
                    &f.id,
                    event,
                    &f.actor,
                    reason.as_deref(),
                    f.now,
                )
                .await?;
                sqlx::query(
                    "UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                )
                .bind(&f.id)
                .execute(&mut *conn)
                .await?;
                Ok(changed.to)
            })
        })
        .await
    }

    /// Unleased, unreleased resources of a request, newest first: what a teardown must undo.
    pub async fn live_resources(&self, id: &str) -> Result<Vec<super::ResourceRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM resources WHERE request_id = ? AND status <> 'released' ORDER BY seq DESC")
            .bind(id)
            .fetch_all(&mut *self.read().await)
            .await?)
    }

    /// Every live instance resource across all requests (for reconcile).
    pub async fn live_instances(&self) -> Result<Vec<(super::ResourceRow, String)>, StoreError> {
        let rows: Vec<super::ResourceRow> = sqlx::query_as(
            "SELECT res.* FROM resources res JOIN requests r ON r.id = res.request_id
             WHERE res.kind = 'instance' AND res.status <> 'released' ORDER BY res.created_at",
        )
        .fetch_all(&mut *self.read().await)
        .await?;
        let states: std::collections::HashMap<String, String> = sqlx::query_as(
            "SELECT id, state FROM requests WHERE id IN
               (SELECT request_id FROM resources WHERE kind = 'instance' AND status <> 'released')",
        )
        .fetch_all(&mut *self.read().await)
        .await?
        .into_iter()
        .collect();
        let out = rows
            .into_iter()
            .map(|r| {
                let st = states.get(&r.request_id).cloned().unwrap_or_default();
                (r, st)
            })
            .collect();
        Ok(out)
    }
}
