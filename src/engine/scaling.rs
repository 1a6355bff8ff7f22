//! Scaling (seed 001): horizontal, a provisioning request when the fleet's used capacity
//! stays at or above `[scaling] capacity_threshold` over `window`; vertical, a resize of a
//! node whose queue stays at or above `queue_threshold` for `queue_minutes`. Requests are
//! filed through the same functions as the operator's `request create` and `node resize`
//! (the same checks, approval rules and store writes), as [`SCALER`], with a reason naming
//! the cause and its figures.
//!
//! The rules, precisely (`G`: `[serve] heartbeat_interval` × `missed_heartbeats`, the
//! silence after which a node counts as unhealthy):
//! - Used capacity at `now` over window `W`: the warming and active nodes that have a daily
//!   cap (a warm-up record) delivered, by their heartbeats received in (now - W, now], at
//!   least `capacity_threshold` × the sum of their caps today × W / 24 h; and one of them
//!   reported in [now - W - G, now - W], so the window was watched from its start. A node
//!   that started reporting inside the window adds its whole cap but only part of its mail:
//!   the measure errs towards not filing.
//! - A node's queue is high at `now` over N minutes: its last heartbeat received at or
//!   before now - N came at most G before it, that one and every heartbeat since reported
//!   at least `queue_threshold` messages, and its latest heartbeat is at most G old.
//! - One live request per cause (`capacity`, `queue:<node id>`), held by the store. Once
//!   the request finishes (completed, failed, rolled back, rejected, deprovisioned) the
//!   cause may fire again only when its condition holds over a whole window that starts
//!   after that moment: an operator's rejection or rollback is not answered by the same
//!   request again at once, and a completed one is given a window to show its effect.

use super::commands::{create_for, resize_for, Cause, CreateRequest, Outcome};
use super::Ctx;
use crate::config::{format_duration, PlanConfig, ScalingConfig};
use crate::store::{CauseState, FleetUsage, HighQueue};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Who files the engine's scaling requests: an actor no person is, so that any approver
/// may decide them (four-eyes never finds them the requester).
pub const SCALER: &str = "mailfleet-scaler";

/// The cause of a scale-out.
pub const CAPACITY: &str = "capacity";

/// The cause of a resize of `node_id`.
pub fn queue_cause(node_id: &str) -> String {
    format!("queue:{node_id}")
}

/// One request the pass tried to file: its cause, and the request filed or why not.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub cause: String,
    pub outcome: Result<crate::store::RequestRow, String>,
}

/// `n` with thousands separated by commas: 43,100.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The fleet's capacity over `window`: its daily caps, pro rata (rounded down).
pub fn window_capacity(daily_caps: u64, window: Duration) -> u64 {
    let scaled = u128::from(daily_caps) * window.as_millis() / 86_400_000;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Whether `usage` is at or above `threshold` of the fleet's capacity over `window`, and
/// the reason to file with if it is. No capacity (no capped node) never files: there is
/// nothing to measure against.
pub fn capacity_verdict(usage: &FleetUsage, threshold: f64, window: Duration) -> Option<String> {
    let capacity = window_capacity(usage.daily_caps, window);
    if !usage.covered || capacity == 0 {
        return None;
    }
    // Compared in floating point once: delivered ≥ threshold × capacity.
    let share = usage.delivered as f64 / capacity as f64;
    if share < threshold {
        return None;
    }
    Some(format!(
        "fleet used {:.0}% of capacity over {} ({} of {} messages; {} nodes, {}/day; threshold {:.0}%)",
        (share * 100.0).floor(),
        format_duration(window),
        thousands(usage.delivered),
        thousands(capacity),
        usage.nodes,
        thousands(usage.daily_caps),
        threshold * 100.0
    ))
}

/// Whether plan `b` is larger than `a`: of the same kind, no smaller in any size, and not
/// the same sizes.
fn larger(a: &PlanConfig, b: &PlanConfig) -> bool {
    b.kind == a.kind
        && b.cpu >= a.cpu
        && b.memory_gb >= a.memory_gb
        && b.storage_gb >= a.storage_gb
        && (b.cpu, b.memory_gb, b.storage_gb) != (a.cpu, a.memory_gb, a.storage_gb)
}

/// The plan a node on `current` is resized to: `[scaling] resize_plan` when it is larger
/// than the node's, else (unset) the smallest plan larger than it. `Err` says why none.
pub fn resize_target<'a>(
    plans: &'a [PlanConfig],
    scaling: &ScalingConfig,
    current: &str,
) -> Result<&'a PlanConfig, String> {
    let Some(now) = plans.iter().find(|p| p.name == current) else {
        return Err(format!("its plan {current} is no longer in the config"));
    };
    if !scaling.resize_plan.is_empty() {
        return match plans.iter().find(|p| p.name == scaling.resize_plan) {
            Some(to) if larger(now, to) => Ok(to),
            Some(to) => Err(format!(
                "resize_plan {} is not larger than its plan {current}",
                to.name
            )),
            None => Err(format!("resize_plan {} is not a plan", scaling.resize_plan)),
        };
    }
    plans
        .iter()
        .filter(|p| larger(now, p))
        .min_by_key(|p| (p.cpu, p.memory_gb, p.storage_gb))
        .ok_or_else(|| format!("no plan of kind {} is larger than {current}", now.kind))
}

/// Whether a cause may file at `now` for a condition measured from `start`: not while a
/// request of it is live, nor for a window that began before its last one finished.
fn may_fire(causes: &HashMap<String, CauseState>, cause: &str, start: DateTime<Utc>) -> bool {
    match causes.get(cause) {
        None => true,
        Some(CauseState::Live { .. }) => false,
        Some(CauseState::Released { at }) => *at <= start,
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Looks once: files a scale-out and resizes where their conditions hold. Reads nothing
/// and files nothing when `[scaling]` is off.
pub async fn pass(ctx: &Arc<Ctx>) -> Vec<Attempt> {
    let s = &ctx.cfg.scaling;
    let mut out = Vec::new();
    if !s.enabled {
        return out;
    }
    let now = ctx.clock.now();
    let serve = &ctx.cfg.serve;
    let gap = chrono_of(serve.heartbeat_interval)
        * i32::try_from(serve.missed_heartbeats).unwrap_or(i32::MAX);
    let queue_for = Duration::from_secs(u64::from(s.queue_minutes) * 60);
    let (w_start, q_start) = (now - chrono_of(s.window), now - chrono_of(queue_for));
    let causes = match ctx.store.scaling_causes(w_start.min(q_start)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "scaling: cannot read the causes");
            return out;
        }
    };
    if may_fire(&causes, CAPACITY, w_start) {
        match ctx.store.fleet_usage(w_start, now, gap).await {
            Ok(usage) => {
                if let Some(reason) = capacity_verdict(&usage, s.capacity_threshold, s.window) {
                    out.push(scale_out(ctx, s, reason, now).await);
                }
            }
            Err(e) => tracing::warn!(error = %e, "scaling: cannot read the fleet's use"),
        }
    }
    let high = match ctx
        .store
        .high_queues(q_start, now, gap, s.queue_threshold)
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "scaling: cannot read the nodes' queues");
            return out;
        }
    };
    for node in high {
        let cause = queue_cause(&node.node_id);
        if may_fire(&causes, &cause, q_start) {
            out.push(resize(ctx, s, &node, cause, queue_for).await);
        }
    }
    out
}

async fn scale_out(
    ctx: &Arc<Ctx>,
    s: &ScalingConfig,
    reason: String,
    now: DateTime<Utc>,
) -> Attempt {
    let order = CreateRequest {
        tenant: s.tenant.clone(),
        region: s.region.clone(),
        plan: s.plan.clone(),
        label: format!("{}-{}", s.label_prefix, now.format("%Y%m%d%H%M%S")),
        domain: (!s.domain.is_empty()).then(|| s.domain.clone()),
        depends_on: Vec::new(),
    };
    let cause = Cause {
        key: CAPACITY.to_string(),
        reason,
    };
    let outcome = match create_for(ctx, SCALER, order, cause).await {
        Ok(Outcome::Created(row)) => Ok(*row),
        Ok(other) => Err(other.describe()),
        Err(e) => Err(e.to_string()),
    };
    Attempt {
        cause: CAPACITY.to_string(),
        outcome,
    }
}

async fn resize(
    ctx: &Arc<Ctx>,
    s: &ScalingConfig,
    node: &HighQueue,
    cause: String,
    queue_for: Duration,
) -> Attempt {
    let outcome = match resize_target(&ctx.cfg.plans, s, &node.plan) {
        Err(why) => Err(format!("node {}: {why}", node.label)),
        Ok(to) => {
            let reason = format!(
                "node {} queued at least {} messages for {} (lowest {} over {} heartbeats; threshold {}): {} to {}",
                node.label,
                thousands(node.lowest),
                format_duration(queue_for),
                thousands(node.lowest),
                node.heartbeats,
                thousands(s.queue_threshold),
                node.plan,
                to.name
            );
            let c = Cause {
                key: cause.clone(),
                reason,
            };
            match resize_for(ctx, SCALER, &node.node_id, &to.name, c).await {
                Ok(Outcome::Created(row)) => Ok(*row),
                Ok(other) => Err(other.describe()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    Attempt { cause, outcome }
}

/// Runs the scaling while the engine runs: once at the start, then after the store changes
/// (heartbeats are writes), at most every `[scaling] interval`. An idle engine reads nothing
/// for it; with `[scaling]` off it does nothing at all. A refusal is logged when it first
/// appears (or changes), not at every look.
pub async fn run(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if !ctx.cfg.scaling.enabled {
        return;
    }
    let mut changes = ctx.store.changes();
    changes.borrow_and_update();
    let mut refused: HashMap<String, String> = HashMap::new();
    loop {
        if *stop.borrow() {
            return;
        }
        for a in pass(&ctx).await {
            match a.outcome {
                Ok(row) => {
                    refused.remove(&a.cause);
                    tracing::info!(cause = %a.cause, request = %row.id, state = %row.state, "scaling: request filed");
                }
                Err(why) => {
                    if refused.get(&a.cause) != Some(&why) {
                        tracing::warn!(cause = %a.cause, why = %why, "scaling: not filed");
                        refused.insert(a.cause, why);
                    }
                }
            }
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.changed() => continue,
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.scaling.interval) => {}
            _ = stop.changed() => continue,
        }
        changes.borrow_and_update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, cpu: u32, memory_gb: u32, storage_gb: u32) -> PlanConfig {
        PlanConfig {
            name: name.into(),
            cpu,
            memory_gb,
            storage_gb,
            kind: "vps".into(),
        }
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(43_100), "43,100");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_verdict_compares_deliveries_with_the_caps_pro_rata() {
        let w = Duration::from_secs(30 * 60);
        // 2,400,000/day over 30 m: 50,000.
        let mut u = FleetUsage {
            nodes: 3,
            daily_caps: 2_400_000,
            delivered: 43_100,
            covered: true,
        };
        let why = capacity_verdict(&u, 0.8, w).expect("86% is over 80%");
        assert!(
            why.starts_with("fleet used 86% of capacity over 30m (43,100 of 50,000 messages"),
            "{why}"
        );
        u.delivered = 39_999;
        assert_eq!(capacity_verdict(&u, 0.8, w), None, "just under");
        u.delivered = 40_000;
        assert!(capacity_verdict(&u, 0.8, w).is_some(), "exactly at");
        u.covered = false;
        assert_eq!(capacity_verdict(&u, 0.8, w), None, "not watched whole");
        u.covered = true;
        u.daily_caps = 0;
        assert_eq!(capacity_verdict(&u, 0.8, w), None, "nothing to measure");
    }

    #[test]
    fn the_next_larger_plan_of_the_same_kind() {
        let mut plans = vec![
            plan("ssd-1", 1, 1, 30),
            plan("ssd-4", 4, 8, 100),
            plan("ssd-2", 2, 2, 50),
        ];
        let mut odd = plan("gpu-2", 2, 2, 50);
        odd.kind = "gpu".into();
        plans.push(odd);
        let s = ScalingConfig::default();
        assert_eq!(
            resize_target(&plans, &s, "ssd-1").map(|p| &p.name[..]),
            Ok("ssd-2")
        );
        assert_eq!(
            resize_target(&plans, &s, "ssd-2").map(|p| &p.name[..]),
            Ok("ssd-4")
        );
        assert!(resize_target(&plans, &s, "ssd-4").is_err(), "the largest");
        let fixed = ScalingConfig {
            resize_plan: "ssd-4".into(),
            ..ScalingConfig::default()
        };
        assert_eq!(
            resize_target(&plans, &fixed, "ssd-1").map(|p| &p.name[..]),
            Ok("ssd-4")
        );
        assert!(
            resize_target(&plans, &fixed, "ssd-4").is_err(),
            "already on it"
        );
    }

    #[test]
    fn a_cause_fires_only_for_a_window_after_its_last_request() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("a time");
        let mut causes = HashMap::new();
        assert!(may_fire(&causes, CAPACITY, t0));
        causes.insert(
            CAPACITY.to_string(),
            CauseState::Live {
                request_id: "x".into(),
                state: "pending_approval".into(),
            },
        );
        assert!(!may_fire(&causes, CAPACITY, t0));
        causes.insert(CAPACITY.to_string(), CauseState::Released { at: t0 });
        assert!(may_fire(&causes, CAPACITY, t0));
        assert!(!may_fire(
            &causes,
            CAPACITY,
            t0 - chrono::Duration::seconds(1)
        ));
    }
}
