//! `work --until-idle`: when a run is over, and what it leaves behind. The engine's loop asks
//! `check` whenever it has nothing running and claimed nothing; the answer is to wait (a
//! retry or a lease is due later), to go round again, or to stop with an `IdleOutcome`.
//! A queued request that waits for admission (it has a `wait_reason`) is not due: it is
//! looked at again only when something commits, and the loop has just done so.
//!
//! The rule: a run waits for everything the engine itself will move — retries scheduled for
//! later (a stalled rollback's included), leases other engines hold, queued requests not yet
//! looked at. It stops when only these are left:
//! - requests waiting for a person: an approval, access details for a manual provider, or an
//!   admission limit only a person can change (a prerequisite that waits for one, the
//!   tenant's quota, cluster capacity) — reported, and the run still succeeds;
//! - requests it cannot move because of an error: a rollback that stalled more times in this
//!   run than the retry policy retries a call (`max_retries`), or every request still to do
//!   when the store kept failing (a claim failing on a full disk) past the retry policy —
//!   reported, and the run fails.

use super::Ctx;
use crate::clock::parse_ts;
use crate::domain::ids::short;
use crate::domain::RequestState;
use crate::store::RequestRow;
use chrono::{DateTime, Utc};

/// One request a run left unfinished, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub id: String,
    pub label: String,
    pub state: String,
    pub why: String,
}

impl std::fmt::Display for Left {
    /// `7f3a1b2c node-1 queued (claim failed: database or disk is full)`, made safe for a
    /// terminal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::domain::validate::sanitize;
        write!(
            f,
            "{} {} {} ({})",
            short(&self.id),
            sanitize(&self.label),
            self.state,
            sanitize(&self.why)
        )
    }
}

/// How a run until idle ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdleOutcome {
    /// Requests waiting for a person (approval, access details, an admission limit).
    pub waiting: Vec<Left>,
    /// Requests the run could not move because of an error.
    pub stuck: Vec<Left>,
    /// The store error the run gave up on, if it did.
    pub error: Option<String>,
}

impl IdleOutcome {
    /// Nothing was left because of an error.
    pub fn succeeded(&self) -> bool {
        self.stuck.is_empty() && self.error.is_none()
    }
}

/// What one unfinished request means for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The engine will move it at this time (now, or when its retry or lease is due).
    Due(DateTime<Utc>),
    /// Only a person can move it.
    Person(String),
    /// An error keeps it where it is.
    Stuck(String),
}

/// What `r` (whose teardown this engine saw stall `stalls` times) means for the run at
/// `now`, given how many stalls a rollback is allowed before it counts as stuck.
pub(crate) fn verdict(r: &RequestRow, stalls: i64, now: DateTime<Utc>, max_stalls: u32) -> Verdict {
    let state = r.state();
    match state {
        RequestState::PendingApproval => {
            let why = r
                .why_waiting()
                .unwrap_or_else(|| "awaiting approval".into());
            return Verdict::Person(why);
        }
        RequestState::AwaitingInput => {
            let why = r
                .why_waiting()
                .unwrap_or_else(|| "awaiting access details from an admin".into());
            return Verdict::Person(why);
        }
        _ => {}
    }
    if let Some(until) = r.lease_expires_at.as_deref().and_then(parse_ts) {
        if until >= now {
            return Verdict::Due(until);
        }
    }
    let next = parse_ts(&r.next_run_at).unwrap_or(now).max(now);
    if state == RequestState::Queued {
        // A request that waits for admission (it has a reason) is looked at again whenever
        // something commits; the loop has done so before asking, so it still waits.
        if next <= now && r.wait_reason.is_none() {
            return Verdict::Due(now);
        }
        // Waiting for a provider whose circuit is open: the engine probes it, and the
        // request is admitted once it closes. Looked at again every second meanwhile.
        if r.wait_reason
            .as_deref()
            .is_some_and(|w| w.starts_with(crate::store::BREAKER_WAIT))
        {
            return Verdict::Due(now + chrono::Duration::seconds(1));
        }
        let why = r
            .wait_reason
            .clone()
            .unwrap_or_else(|| "waiting for admission".into());
        return Verdict::Person(why);
    }
    if r.needs_attention && stalls > i64::from(max_stalls) {
        // The stall is the rollback's note; why the request failed stays its error.
        let why = match (&r.wait_reason, &r.error) {
            (Some(stall), Some(failed)) => format!("{stall}; it had failed: {failed}"),
            (Some(stall), None) => stall.clone(),
            (None, Some(failed)) => format!("rollback stalled; it had failed: {failed}"),
            (None, None) => "rollback stalled".into(),
        };
        return Verdict::Stuck(why);
    }
    Verdict::Due(next)
}

/// What the loop does next.
pub(crate) enum Next {
    /// Something is due now: go round again.
    Again,
    /// Nothing is due before this time.
    WaitUntil(DateTime<Utc>),
    Done(IdleOutcome),
}

fn left(r: &RequestRow, why: String) -> Left {
    Left {
        id: r.id.clone(),
        label: r.label.clone(),
        state: r.state.clone(),
        why,
    }
}

/// Sorts the unfinished requests into what the run waits for and what it leaves.
pub(crate) fn next(rows: &[(RequestRow, i64)], now: DateTime<Utc>, max_stalls: u32) -> Next {
    let mut out = IdleOutcome::default();
    let mut due: Option<DateTime<Utc>> = None;
    for (r, stalls) in rows {
        match verdict(r, *stalls, now, max_stalls) {
            Verdict::Due(at) => due = Some(due.map_or(at, |d| d.min(at))),
            Verdict::Person(why) => out.waiting.push(left(r, why)),
            Verdict::Stuck(why) => out.stuck.push(left(r, why)),
        }
    }
    match due {
        Some(at) if at <= now => Next::Again,
        Some(at) => Next::WaitUntil(at),
        None => Next::Done(out),
    }
}

/// The outcome when the store kept failing with `error`: every request the engine would
/// have moved (queued ones included: what they wait for cannot move either) is stuck on it;
/// those waiting for an approval or access details are still only waiting.
pub(crate) fn gave_up(
    rows: &[(RequestRow, i64)],
    now: DateTime<Utc>,
    error: String,
) -> IdleOutcome {
    let mut out = IdleOutcome::default();
    for (r, stalls) in rows {
        match verdict(r, *stalls, now, u32::MAX) {
            Verdict::Person(why) if r.state() != RequestState::Queued => {
                out.waiting.push(left(r, why))
            }
            _ => out.stuck.push(left(r, error.clone())),
        }
    }
    out.error = Some(error);
    out
}

/// Asks the store what is unfinished and decides.
pub(crate) async fn check(ctx: &Ctx) -> Result<Next, crate::store::StoreError> {
    let rows = ctx.store.unfinished(&ctx.owner).await?;
    Ok(next(&rows, ctx.clock.now(), ctx.policy.max_retries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ts;

    /// Now, at the store's precision (microseconds).
    fn now() -> DateTime<Utc> {
        parse_ts(&ts(Utc::now())).expect("a timestamp")
    }

    fn row(state: &str, next_in_s: i64, now: DateTime<Utc>) -> RequestRow {
        RequestRow {
            id: "0190aaaa-bbbb-7ccc-8ddd-00007f3a1b2c".into(),
            tenant: "acme".into(),
            region: "dallas".into(),
            plan: "ssd-1".into(),
            kind: "email_node".into(),
            cpu: 1,
            memory_gb: 1,
            storage_gb: 10,
            label: "node-1".into(),
            domain: None,
            state: state.into(),
            requested_by: "tester".into(),
            cluster: None,
            approval_rule: None,
            approval_rule_version: None,
            approval_reason: None,
            wait_reason: None,
            teardown: None,
            cancel_requested: None,
            error: None,
            needs_attention: false,
            lease_owner: None,
            lease_expires_at: None,
            fence: 0,
            next_run_at: ts(now + chrono::Duration::seconds(next_in_s)),
            progress_at: ts(now),
            created_at: ts(now),
            updated_at: ts(now),
            operation: "provision".into(),
            scaling_cause: None,
            target: None,
            from_plan: None,
        }
    }

    #[test]
    fn a_stalled_rollback_is_waited_for_until_its_stalls_run_out() {
        let now = now();
        let mut r = row("rolling_back", 300, now);
        r.needs_attention = true;
        r.wait_reason = Some("rollback stalled releasing instance: 503".into());
        r.error = Some("verify: 554".into());
        let at = now + chrono::Duration::seconds(300);
        assert_eq!(verdict(&r, 0, now, 3), Verdict::Due(at));
        assert_eq!(verdict(&r, 3, now, 3), Verdict::Due(at));
        assert_eq!(
            verdict(&r, 4, now, 3),
            Verdict::Stuck(
                "rollback stalled releasing instance: 503; it had failed: verify: 554".into()
            )
        );
        match next(&[(r, 0)], now, 3) {
            Next::WaitUntil(t) => assert_eq!(t, at),
            _ => panic!("a retry due later is waited for"),
        }
    }

    #[test]
    fn people_and_admission_limits_end_the_run_without_an_error() {
        let now = now();
        let mut q = row("queued", 5, now);
        q.wait_reason = Some("capacity: no cluster in dallas has room".into());
        let input = row("awaiting_input", -5, now);
        let approval = row("pending_approval", -5, now);
        let Next::Done(out) = next(&[(q, 0), (input, 0), (approval, 0)], now, 3) else {
            panic!("nothing the engine can move is left");
        };
        assert!(out.succeeded());
        let whys: Vec<&str> = out.waiting.iter().map(|l| l.why.as_str()).collect();
        assert_eq!(
            whys,
            [
                "capacity: no cluster in dallas has room",
                "awaiting access details from an admin",
                "awaiting approval"
            ]
        );
    }

    #[test]
    fn a_held_lease_or_a_queued_request_due_now_keeps_the_run_going() {
        let now = now();
        let mut held = row("configuring", -5, now);
        held.lease_expires_at = Some(ts(now + chrono::Duration::seconds(20)));
        assert!(matches!(next(&[(held, 0)], now, 3), Next::WaitUntil(_)));
        assert!(matches!(
            next(&[(row("queued", 0, now), 0)], now, 3),
            Next::Again
        ));
    }

    #[test]
    fn giving_up_names_every_request_the_engine_would_have_moved() {
        let now = now();
        let out = gave_up(
            &[
                (row("queued", 0, now), 0),
                (row("pending_approval", 0, now), 0),
            ],
            now,
            "claim failed: database or disk is full".into(),
        );
        assert!(!out.succeeded());
        assert_eq!(out.stuck.len(), 1);
        assert_eq!(
            out.stuck[0].to_string(),
            "7f3a1b2c node-1 queued (claim failed: database or disk is full)"
        );
        assert_eq!(out.waiting.len(), 1);
    }
}
