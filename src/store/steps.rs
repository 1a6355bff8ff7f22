//! What a worker writes while it runs a request: sub-task progress, resources, step results,
//! teardown. Every write carries the worker's fencing number and fails with `FenceLost` once
//! another worker has taken the request over. Every write also extends the lease.

use super::events::audit;
use super::requests::{apply_change, Change};
use super::{rows, Conn, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::{new_id, short};
use crate::domain::{Operation, RequestEvent, RequestState, ResourceKind, Step};
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};

/// Who is writing, and until when its lease should now run.
#[derive(Debug, Clone)]
pub struct Fenced {
    pub id: String,
    pub fence: i64,
    pub actor: String,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// Sub-tasks the worker finished since its last write, written first by this one.
    pub marks: Vec<TaskMark>,
}

/// A sub-task that finished with nothing to record but its detail, where the worker's next
/// write follows at once: it rides with that write instead of taking a transaction of its
/// own. It is shown done from that write on.
#[derive(Debug, Clone)]
pub struct TaskMark {
    pub step: Step,
    pub task: &'static str,
    pub detail: String,
    pub at: DateTime<Utc>,
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

/// The last sub-task of a step, recorded in the same write that completes the step.
#[derive(Debug, Clone)]
pub struct LastTask {
    pub task: &'static str,
    pub detail: String,
    pub resource: Option<ResourceWrite>,
    /// The node to register (activate's last task); it is recorded as the task's resource.
    pub node: Option<super::NewNode>,
}

/// Checks the fence (inside the write's transaction, so the check and the write are one);
/// returns a pending teardown request, if any. The sub-tasks the write carries (`marks`)
/// are recorded done here, ahead of the write's own changes. Progress is recorded by the
/// sub-task rows and state changes themselves; the lease is extended by the heartbeat.
pub(super) fn touch(conn: &Conn, f: &Fenced) -> Result<Option<String>, StoreError> {
    let row: Option<Option<String>> = conn
        .prepare_cached("SELECT cancel_requested FROM requests WHERE id = ?1 AND fence = ?2")?
        .query_row(params![f.id, f.fence], |r| r.get(0))
        .optional()?;
    let cancel = row.ok_or_else(|| StoreError::FenceLost(short(&f.id).to_string()))?;
    for m in &f.marks {
        set_task_at(conn, &f.id, m.step, m.task, "done", Some(&m.detail), m.at)?;
    }
    Ok(cancel)
}

/// Extends the lease: the heartbeat.
fn extend_lease(conn: &Conn, f: &Fenced) -> Result<Option<String>, StoreError> {
    let row: Option<Option<String>> = conn
        // A lease released (the request completed) is not taken again by a late heartbeat.
        .prepare_cached(
            "UPDATE requests SET lease_expires_at = ?1, change_seq = ?4
             WHERE id = ?2 AND fence = ?3 AND lease_owner IS NOT NULL
             RETURNING cancel_requested",
        )?
        .query_row(
            params![ts(f.lease_until), f.id, f.fence, super::stamp(conn)?],
            |r| r.get(0),
        )
        .optional()?;
    row.ok_or_else(|| StoreError::FenceLost(short(&f.id).to_string()))
}

pub(super) fn set_task(
    conn: &Conn,
    f: &Fenced,
    step: Step,
    task: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    set_task_at(conn, &f.id, step, task, status, detail, f.now)
}

fn set_task_at(
    conn: &Conn,
    request_id: &str,
    step: Step,
    task: &str,
    status: &str,
    detail: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let pos = step.task_position(task);
    conn.prepare_cached(
        "INSERT INTO step_tasks (request_id, step, name, position, status, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (request_id, step, name) DO UPDATE SET status = excluded.status, detail = excluded.detail,
             updated_at = excluded.updated_at",
    )?
    .execute(params![request_id, step.as_str(), task, pos, status, detail, ts(at)])?;
    Ok(())
}

pub(super) fn upsert_resource(
    conn: &Conn,
    f: &Fenced,
    r: &ResourceWrite,
) -> Result<(), StoreError> {
    let Some(kind) = r.kind else {
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT INTO resources (id, request_id, seq, kind, status, provider, provider_ref, tenant, cluster, detail, created_at)
         SELECT ?1, r.id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM resources WHERE request_id = r.id), ?2, ?3, ?4, ?5,
                r.tenant, r.cluster, ?6, ?7
         FROM requests r WHERE r.id = ?8
         ON CONFLICT (request_id, kind) DO UPDATE SET
             status = CASE WHEN resources.status = 'released' THEN 'released' ELSE excluded.status END,
             provider_ref = COALESCE(excluded.provider_ref, resources.provider_ref),
             detail = COALESCE(excluded.detail, resources.detail)",
    )?
    .execute(params![
        new_id(),
        kind.as_str(),
        if r.allocated { "allocated" } else { "intent" },
        r.provider,
        r.provider_ref,
        r.detail,
        ts(f.now),
        f.id
    ])?;
    Ok(())
}

fn change(
    conn: &Conn,
    f: &Fenced,
    event: RequestEvent,
    reason: Option<&str>,
) -> Result<RequestState, StoreError> {
    Ok(change_op(conn, f, event, reason)?.to)
}

fn change_op(
    conn: &Conn,
    f: &Fenced,
    event: RequestEvent,
    reason: Option<&str>,
) -> Result<super::requests::Changed, StoreError> {
    let c = Change {
        id: &f.id,
        event,
        fence: Some(f.fence),
        actor: &f.actor,
        reason,
        at: f.now,
    };
    apply_change(conn, &c)
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
            let cancel = touch(conn, &f)?;
            if let Some(r) = &resource {
                upsert_resource(conn, &f, r)?;
            }
            set_task(conn, &f, step, task, "done", detail.as_deref())?;
            Ok(cancel)
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
            let cancel = touch(conn, &f)?;
            upsert_resource(conn, &f, &r)?;
            set_task(conn, &f, step, task, "running", r.detail.as_deref())?;
            Ok(cancel)
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
            let cancel = touch(conn, &f)?;
            // While rolling back, `error` keeps why the request failed; the retry is a note.
            conn.prepare_cached(
                "UPDATE requests SET
                    error = CASE WHEN state = 'rolling_back' THEN error ELSE ?1 END,
                    wait_reason = CASE WHEN state = 'rolling_back' THEN ?1 ELSE wait_reason END,
                    change_seq = ?3
                 WHERE id = ?2",
            )?
            .execute(params![detail, f.id, super::stamp(conn)?])?;
            if let Some(step) = step {
                conn.prepare_cached("UPDATE request_steps SET attempts = attempts + 1, error = ? WHERE request_id = ? AND step = ?")?
                    .execute(params![detail, f.id, step.as_str()])?;
                set_task(conn, &f, step, &task, "retrying", Some(&detail))?;
            }
            Ok(cancel)
        })
        .await
    }

    /// Extends the lease without progress (the heartbeat).
    pub async fn heartbeat(&self, f: &Fenced) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        self.write(move |conn| extend_lease(conn, &f)).await
    }

    /// The step finished: records its last sub-task (and the node, for activate), moves the
    /// request to the next state and starts the next step, all in one write. Completing the
    /// last step releases the lease.
    pub async fn complete_step(
        &self,
        f: &Fenced,
        step: Step,
        last: LastTask,
    ) -> Result<RequestState, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            let LastTask { task, mut detail, mut resource, node } = last;
            if let Some(n) = &node {
                let node_id = super::nodes::register(conn, &f, n)?;
                detail = format!("node {} registered as warming", short(&node_id));
                resource = Some(ResourceWrite {
                    kind: Some(ResourceKind::Node),
                    allocated: true,
                    provider: resource.and_then(|r| r.provider),
                    provider_ref: Some(node_id),
                    detail: Some(detail.clone()),
                });
            }
            if let Some(r) = &resource {
                upsert_resource(conn, &f, r)?;
            }
            set_task(conn, &f, step, task, "done", Some(&detail))?;
            let at = ts(f.now);
            let moved = change_op(conn, &f, RequestEvent::StepSucceeded, None)?;
            let to = moved.to;
            let next = moved.op.step(to).map(|s| s.as_str()).unwrap_or("");
            conn.prepare_cached(
                "UPDATE request_steps SET
                    status = CASE step WHEN ?1 THEN 'done' ELSE 'running' END,
                    finished_at = CASE step WHEN ?1 THEN ?3 ELSE finished_at END,
                    started_at = CASE step WHEN ?1 THEN started_at ELSE ?3 END,
                    attempts = CASE step WHEN ?1 THEN attempts ELSE attempts + 1 END,
                    error = CASE step WHEN ?1 THEN NULL ELSE error END
                 WHERE request_id = ?4 AND step IN (?1, ?2)",
            )?
            .execute(params![step.as_str(), next, at, f.id])?;
            if to == RequestState::Completed && moved.op == Operation::Resize {
                super::resize::fold(conn, &f)?;
            }
            if to == RequestState::Completed {
                conn.prepare_cached("UPDATE requests SET error = NULL, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?")?
                    .execute([&f.id])?;
            } else {
                // Usually there is no error to clear: no row rewritten for nothing.
                conn.prepare_cached("UPDATE requests SET error = NULL WHERE id = ? AND error IS NOT NULL")?
                    .execute([&f.id])?;
            }
            Ok(to)
        })
        .await
    }

    /// The step exhausted its retries: the request becomes failed (and is then rolled back).
    pub async fn fail_step(&self, f: &Fenced, step: Step, error: String) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            change(conn, &f, RequestEvent::StepFailed, Some(&error))?;
            conn.prepare_cached("UPDATE request_steps SET status = 'failed', finished_at = ?, error = ? WHERE request_id = ? AND step = ?")?
                .execute(params![ts(f.now), error, f.id, step.as_str()])?;
            conn.prepare_cached("UPDATE requests SET error = ? WHERE id = ?")?.execute(params![error, f.id])?;
            Ok(())
        })
        .await
    }

    /// Starts a teardown: of a failed request, or of a running one an operator asked to stop.
    pub async fn start_teardown(
        &self,
        f: &Fenced,
        reason: String,
        deprovision: bool,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            let event = if deprovision { RequestEvent::Deprovision } else { RequestEvent::Rollback };
            change(conn, &f, event, Some(&reason))?;
            conn.prepare_cached("UPDATE requests SET teardown = ?, cancel_requested = NULL WHERE id = ?")?
                .execute(params![if deprovision { "deprovision" } else { "rollback" }, f.id])?;
            conn.prepare_cached("UPDATE request_steps SET status = 'failed', finished_at = ? WHERE request_id = ? AND status = 'running'")?
                .execute(params![ts(f.now), f.id])?;
            Ok(())
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
            touch(conn, &f)?;
            conn.prepare_cached(
                "UPDATE resources SET status = 'released', released_at = ?, detail = COALESCE(?, detail)
                 WHERE request_id = ? AND kind = ? AND status <> 'released'",
            )?
            .execute(params![ts(f.now), detail, f.id, kind.as_str()])?;
            Ok(())
        })
        .await
    }

    /// A compensation could not finish: the request stays rolling_back, marked for a
    /// person's attention, and is tried again at `retry_at`. The stall is its note
    /// (`wait_reason`); `error` keeps why the request failed.
    pub async fn teardown_stalled(
        &self,
        f: &Fenced,
        error: String,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            conn.prepare_cached(
                "UPDATE requests SET wait_reason = ?, needs_attention = 1, lease_owner = NULL, lease_expires_at = NULL,
                    next_run_at = ? WHERE id = ?",
            )?
            .execute(params![error, ts(retry_at), f.id])?;
            audit(conn, &ts(f.now), &f.actor, "request.teardown-stalled", Some(&f.id), Some(&error))?;
            Ok(())
        })
        .await
    }

    /// The request waits for its provider until `until` (its circuit is open): the lease
    /// is given back, `wait_reason` says why, and no retry or stall is counted. Its next
    /// claim clears the reason.
    pub async fn defer(
        &self,
        f: &Fenced,
        why: String,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            conn.prepare_cached(
                "UPDATE requests SET wait_reason = ?, lease_owner = NULL, lease_expires_at = NULL,
                    next_run_at = ? WHERE id = ?",
            )?
            .execute(params![why, ts(until), f.id])?;
            audit(
                conn,
                &ts(f.now),
                &f.actor,
                "request.deferred",
                Some(&f.id),
                Some(&why),
            )?;
            Ok(())
        })
        .await
    }

    /// The request waits for a person to enter its server's access details (a manual
    /// provider): awaiting_input, the lease given back, `wait_reason` saying what is asked.
    pub async fn await_input(&self, f: &Fenced, why: String) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            change(conn, &f, RequestEvent::AwaitInput, Some(&why))?;
            conn.prepare_cached(
                "UPDATE requests SET wait_reason = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
            )?
            .execute(params![why, f.id])?;
            Ok(())
        })
        .await
    }

    /// Every compensation ran: rolled_back (or deprovisioned). Refused while anything is
    /// still held.
    pub async fn finish_teardown(&self, f: &Fenced) -> Result<RequestState, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            let to = change(conn, &f, RequestEvent::TeardownFinished { remaining: 0, deprovision: false }, None)?;
            conn.prepare_cached(
                "UPDATE requests SET needs_attention = 0, wait_reason = NULL, lease_owner = NULL, lease_expires_at = NULL,
                    error = CASE WHEN teardown = 'deprovision' THEN NULL ELSE error END WHERE id = ?",
            )?
            .execute([&f.id])?;
            Ok(to)
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
            touch(conn, &f)?;
            let to = change(conn, &f, event, reason.as_deref())?;
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
            )?;
            super::nodes::follow_service(conn, &f.id, event, &f.actor, reason.as_deref(), f.now)?;
            conn.prepare_cached(
                "UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
            )?
            .execute([&f.id])?;
            Ok(to)
        })
        .await
    }

    /// Unreleased resources of a request, newest first: what a teardown must undo.
    pub async fn live_resources(&self, id: &str) -> Result<Vec<super::ResourceRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            rows(
                c,
                "SELECT * FROM resources WHERE request_id = ? AND status <> 'released' ORDER BY seq DESC",
                [id],
                super::ResourceRow::from_row,
            )
        })
        .await
    }

    /// Every live instance resource with its request's state (for reconcile).
    pub async fn live_instances(&self) -> Result<Vec<(super::ResourceRow, String)>, StoreError> {
        self.read(|c| {
            rows(
                c,
                "SELECT res.*, r.state AS request_state FROM resources res JOIN requests r ON r.id = res.request_id
                 WHERE res.kind = 'instance' AND res.status <> 'released' ORDER BY res.created_at",
                [],
                |r| Ok((super::ResourceRow::from_row(r)?, r.get("request_state")?)),
            )
        })
        .await
    }
}
