//! Scheduling: which requests a worker may take now (admission of queued ones included),
//! leases with fencing numbers, stuck detection, and whether anything is left to do.
//!
//! SQLite seam: claiming runs inside the writer's `BEGIN IMMEDIATE` transaction, so two
//! engines (even in two processes) never claim the same request. PostgreSQL will do the same
//! with `FOR UPDATE SKIP LOCKED`.

use super::admission::{self, Books, Decision, Who};
use super::requests::{apply_change, Change};
use super::{rows, Conn, RequestRow, Store, StoreError};
use crate::clock::{parse_ts, ts};
use crate::domain::capacity::{Amounts, Health};
use crate::domain::ids::short;
use crate::domain::{RequestEvent, RequestState};
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// What admission needs to know, taken from the config by the engine.
#[derive(Debug, Clone)]
pub struct Admission {
    pub max_in_flight_per_tenant: i64,
    pub quotas: HashMap<String, Amounts>,
    pub clusters: Vec<ClusterSpec>,
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
    /// Whether the claim opened a write transaction: only when it had something to write.
    pub wrote: bool,
    /// When the next piece of work that is not waiting on admission becomes claimable (a
    /// retry's `next_run_at`, or when a lease on it runs out), as read before this claim's
    /// writes; `now` when more was due than one claim looks at. `None`: nothing scheduled.
    pub next_due: Option<DateTime<Utc>>,
}

/// One claim's question.
#[derive(Debug, Clone, Copy)]
pub struct ClaimAsk<'a> {
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub lease_ttl: Duration,
    /// Most requests to lease.
    pub limit: usize,
    pub admission: &'a Admission,
    /// Look again at queued requests already waiting for admission. Their verdict changes
    /// only when something commits (or the config changes), so the engine asks for this
    /// only after a commit, and otherwise leaves them alone: no read, no write.
    pub recheck_waiting: bool,
    /// The clock the claim's writes read again once the writer runs them, so that a
    /// request admitted there is stamped no earlier than a prerequisite that completed in a
    /// write queued ahead of the claim (`now` was read before either was queued). Without
    /// it, the claim's writes carry `now`.
    pub clock: Option<&'a crate::clock::SharedClock>,
}

pub(super) const RUNNABLE: &str =
    "('queued','allocating','configuring','activating','verifying','failed','rolling_back')";
pub(super) const IN_FLIGHT: &str = "('allocating','configuring','activating','verifying')";
/// A queued request that waits for admission: it is looked at again only on a recheck.
const WAITING: &str = "(state = 'queued' AND wait_reason IS NOT NULL)";
/// Most waiting requests one recheck looks at, oldest first.
const WAITING_SCAN: i64 = 1000;

fn dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

/// A request a claim may take, as read.
struct Candidate {
    id: String,
    state: RequestState,
    tenant: String,
    region: String,
    need: Amounts,
    wait_reason: Option<String>,
    target: Option<String>,
}

impl Candidate {
    fn from_row(r: &crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<Candidate> {
        let state: String = r.get(1)?;
        Ok(Candidate {
            id: r.get(0)?,
            // An unknown state is never runnable; the queries only return runnable ones.
            state: state.parse().unwrap_or(RequestState::Rejected),
            tenant: r.get(2)?,
            region: r.get(3)?,
            need: Amounts {
                units: 1,
                cpu: r.get(4)?,
                memory_gb: r.get(5)?,
                storage_gb: r.get(6)?,
            },
            wait_reason: r.get(7)?,
            target: r.get(8)?,
        })
    }

    fn who(&self) -> Who<'_> {
        Who {
            id: &self.id,
            tenant: &self.tenant,
            region: &self.region,
            need: self.need,
            target: self.target.as_deref(),
        }
    }
}

const CANDIDATE_COLUMNS: &str =
    "id, state, tenant, region, cpu, memory_gb, storage_gb, wait_reason, target";

/// What the read-only look found.
struct Plan {
    /// Whether a claim has anything to write (a lease, an admission, a rejection, a new
    /// wait reason).
    to_write: bool,
    /// Waiting requests whose reason is unchanged: nothing to write.
    still_waiting: usize,
    next_due: Option<DateTime<Utc>>,
}

/// What a claim looks at, oldest waiting requests first (when rechecking them), then work
/// due now; and whether more was due than it looked at.
fn candidates(conn: &Conn, ask: &ClaimAsk<'_>) -> Result<(Vec<Candidate>, bool), StoreError> {
    let at = ts(ask.now);
    let scan = i64::try_from(ask.limit.saturating_mul(4)).unwrap_or(i64::MAX);
    let mut cands = Vec::new();
    if ask.recheck_waiting {
        let sql = format!(
            "SELECT {CANDIDATE_COLUMNS} FROM requests
             WHERE {WAITING} AND (lease_expires_at IS NULL OR lease_expires_at < ?1)
             ORDER BY created_at, id LIMIT ?2"
        );
        cands = rows(conn, &sql, params![at, WAITING_SCAN], Candidate::from_row)?;
    }
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS} FROM requests
         WHERE state IN {RUNNABLE} AND next_run_at <= ?1 AND NOT {WAITING}
           AND (lease_expires_at IS NULL OR lease_expires_at < ?1)
         ORDER BY next_run_at, id LIMIT ?2"
    );
    let due = rows(conn, &sql, params![at, scan], Candidate::from_row)?;
    let more_due = i64::try_from(due.len()).unwrap_or(i64::MAX) >= scan;
    cands.extend(due);
    Ok((cands, more_due))
}

/// Looks, on a read-only connection, at whether a claim has anything to write.
fn plan(conn: &Conn, ask: &ClaimAsk<'_>) -> Result<Plan, StoreError> {
    let (cands, more_due) = candidates(conn, ask)?;
    let mut out = Plan {
        to_write: false,
        still_waiting: 0,
        next_due: None,
    };
    let mut books = Books::default();
    let mut leases = 0usize;
    for c in cands {
        if leases >= ask.limit {
            break;
        }
        if c.state == RequestState::Queued {
            match admission::decide(conn, ask.admission, &mut books, &c.who())? {
                Decision::Admit(_) => leases += 1,
                Decision::Wait(why) if Some(&why) == c.wait_reason.as_ref() => {
                    out.still_waiting += 1;
                    continue;
                }
                Decision::Wait(_) | Decision::Reject(_) => {}
            }
        } else {
            leases += 1;
        }
        out.to_write = true;
    }
    out.next_due = if more_due && leases < ask.limit {
        Some(ask.now)
    } else {
        next_due(conn, &ts(ask.now))?
    };
    Ok(out)
}

/// The earliest time at which work not waiting on admission, and not claimable now,
/// becomes claimable: its `next_run_at`, or the end of the lease on it.
fn next_due(conn: &Conn, at: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let sql = format!(
        "SELECT MIN(CASE WHEN lease_expires_at >= ?1 AND lease_expires_at > next_run_at
                         THEN lease_expires_at ELSE next_run_at END)
         FROM requests
         WHERE state IN {RUNNABLE} AND NOT {WAITING} AND (next_run_at > ?1 OR lease_expires_at >= ?1)"
    );
    let min: Option<String> = conn.prepare_cached(&sql)?.query_row([at], |r| r.get(0))?;
    Ok(min.as_deref().and_then(parse_ts))
}

/// Claims in the writer's transaction, as the look said there is something to: the
/// candidates are read again (another engine may have taken some meanwhile, or made others
/// due) and admission decided again against the books as they are now.
fn carry_out(conn: &Conn, ask: &ClaimAsk<'_>, out: &mut ClaimOutcome) -> Result<(), StoreError> {
    let lease_until = ts(ask.now + dur(ask.lease_ttl));
    let (cands, _) = candidates(conn, ask)?;
    let mut books = Books::default();
    for c in cands {
        if out.claims.len() >= ask.limit {
            break;
        }
        if c.state == RequestState::Queued {
            match admission::decide(conn, ask.admission, &mut books, &c.who())? {
                Decision::Admit(cluster) => {
                    admission::admit(conn, &c.who(), &cluster, ask.now)?;
                    out.admitted += 1;
                }
                Decision::Wait(why) => {
                    // Written only when it says something new: a request that waits for the
                    // same thing is left as it is, `next_run_at` included.
                    if Some(&why) != c.wait_reason.as_ref() {
                        conn.prepare_cached("UPDATE requests SET wait_reason = ? WHERE id = ?")?
                            .execute(params![why, c.id])?;
                    }
                    out.waiting += 1;
                    continue;
                }
                Decision::Reject(why) => {
                    admission::reject(conn, &c.id, &why, ask.now)?;
                    out.rejected += 1;
                    continue;
                }
            }
        }
        let seq = super::stamp(conn)?;
        let (fence, state): (i64, String) = conn
            .prepare_cached(
                "UPDATE requests SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1, change_seq = ?,
                     wait_reason = CASE WHEN needs_attention = 1 THEN wait_reason END
                 WHERE id = ? RETURNING fence, state",
            )?
            .query_row(params![ask.owner, lease_until, seq, c.id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        out.claims.push(Claim {
            id: c.id,
            fence,
            state: state.parse().map_err(StoreError::Rejected)?,
        });
    }
    Ok(())
}

impl Store {
    /// Claims up to `limit` requests that have work now: admits queued requests whose
    /// prerequisites, tenant slot, quota and cluster capacity allow it (reserving quota and
    /// capacity in the same transaction), and leases them to `owner`. Requests already
    /// waiting for admission are looked at again too.
    pub async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_ttl: Duration,
        limit: usize,
        adm: &Admission,
    ) -> Result<ClaimOutcome, StoreError> {
        self.claim_as(ClaimAsk {
            owner,
            now,
            lease_ttl,
            limit,
            admission: adm,
            recheck_waiting: true,
            clock: None,
        })
        .await
    }

    /// A claim, as `ask` says. It looks first on a read-only connection; only when there is
    /// something to write (a lease, an admission, a rejection, a new wait reason) does it
    /// take the writer, where each request is checked again. A claim with nothing to do
    /// opens no write transaction.
    pub async fn claim_as(&self, ask: ClaimAsk<'_>) -> Result<ClaimOutcome, StoreError> {
        let owned = OwnedAsk::from(&ask);
        let plan = self.read(move |conn| plan(conn, &owned.ask())).await?;
        if !plan.to_write {
            return Ok(ClaimOutcome {
                waiting: plan.still_waiting,
                next_due: plan.next_due,
                ..ClaimOutcome::default()
            });
        }
        let owned = OwnedAsk::from(&ask);
        let mut out = self
            .write(move |conn| {
                let mut o = ClaimOutcome::default();
                let mut ask = owned.ask();
                if let Some(clock) = &owned.clock {
                    ask.now = ask.now.max(clock.now());
                }
                carry_out(conn, &ask, &mut o)?;
                Ok(o)
            })
            .await?;
        out.next_due = plan.next_due;
        out.wrote = true;
        Ok(out)
    }

    /// Everything a claim reads besides the time, in one small value: the newest stamp on
    /// a request (every write to a request's row moves it, and request_deps rows are only
    /// written with their request), the held totals (a teardown releases resources without
    /// touching its request's row), and the providers' circuits. Equal values mean a claim
    /// would find what the last one found. Three index or tiny-table reads: what the engine
    /// asks after a commit it did not make sense of (a heartbeat batch from `serve`,
    /// another process's write), instead of looking at every waiting request again.
    pub async fn claim_inputs(&self) -> Result<String, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT COALESCE((SELECT MAX(change_seq) FROM requests), 0) || '|' ||
                        COALESCE((SELECT group_concat(kind || ':' || owner || ':' || units || ':'
                            || cpu || ':' || memory_gb || ':' || storage_gb, ',') FROM held_totals), '')
                        || '|' ||
                        COALESCE((SELECT group_concat(provider || ':' || open || ':' || failures
                            || ':' || COALESCE(retry_at, '') || ':' || change_seq, ',')
                            FROM provider_breakers), '')",
            )?
            .query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// When stuck detection next has something to look at: the earliest moment a request in
    /// flight would have gone `stuck_after` without progress. With nothing in flight, a
    /// request that starts now could be stuck at `now + stuck_after` at the soonest. Progress
    /// only moves these moments later, so waking then (and not before) misses nothing.
    pub async fn next_stuck_check(
        &self,
        now: DateTime<Utc>,
        stuck_after: Duration,
    ) -> Result<DateTime<Utc>, StoreError> {
        let sql = format!(
            "SELECT MIN(MAX(r.progress_at, COALESCE(
                 (SELECT MAX(t.updated_at) FROM step_tasks t WHERE t.request_id = r.id), '')))
             FROM requests r WHERE r.state IN {IN_FLIGHT}"
        );
        let last: Option<String> = self
            .read(move |c| Ok(c.prepare_cached(&sql)?.query_row([], |r| r.get(0))?))
            .await?;
        let after = dur(stuck_after);
        Ok(last
            .as_deref()
            .and_then(parse_ts)
            .map_or(now + after, |t| (t + after).min(now + after)))
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

/// A `ClaimAsk` that can travel to the database thread.
struct OwnedAsk {
    owner: String,
    now: DateTime<Utc>,
    lease_ttl: Duration,
    limit: usize,
    admission: Admission,
    recheck_waiting: bool,
    clock: Option<crate::clock::SharedClock>,
}

impl OwnedAsk {
    fn from(a: &ClaimAsk<'_>) -> OwnedAsk {
        OwnedAsk {
            owner: a.owner.to_string(),
            now: a.now,
            lease_ttl: a.lease_ttl,
            limit: a.limit,
            admission: a.admission.clone(),
            recheck_waiting: a.recheck_waiting,
            clock: a.clock.cloned(),
        }
    }

    fn ask(&self) -> ClaimAsk<'_> {
        ClaimAsk {
            owner: &self.owner,
            now: self.now,
            lease_ttl: self.lease_ttl,
            limit: self.limit,
            admission: &self.admission,
            recheck_waiting: self.recheck_waiting,
            // The owner's clock is read once, where the writer runs the claim.
            clock: None,
        }
    }
}
