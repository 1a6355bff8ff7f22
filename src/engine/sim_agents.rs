//! The simulated cloud's agents. A node on the simulated cloud has no `mailfleet agent` of
//! its own, so the engine plays one for each: every round, each of its nodes in service
//! (warming, active, paused, in maintenance) reports what an agent would, and the report is
//! recorded through the store's own heartbeat path (the one `serve` writes an agent's
//! report through): its heartbeat row, its last heartbeat, its deliveries added to its
//! warm-up day, its CPU alert. So the demo's HEARTBEAT column, node detail, warm-up
//! decisions and scaling run on reported figures as a real fleet's do.
//!
//! The figures are the simulated cloud's (`warmup::sim::SimCounts`): each node's day is
//! the day's counts for its cap, reported a share at a time; the same seed, node and time
//! give the same report. A node whose status is `unhealthy` has an agent that is down: it
//! reports nothing (so the demo's unhealthy nodes stay so until an operator acts). A node
//! issued an agent token has a real agent of its own, and is left to it.
//!
//! A round costs one read and one write per thousand nodes; rounds are `[serve]
//! heartbeat_interval` apart, stretched on large fleets so that the simulation writes at
//! most `MAX_REPORTS_PER_SECOND` on average.

use super::Ctx;
use crate::agent::report::Report;
use crate::store::SimAgentNode;
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

/// The most reports per second the simulation writes on average, whatever the fleet.
pub const MAX_REPORTS_PER_SECOND: u64 = 100;

/// How long between rounds for `nodes` nodes: the heartbeat interval, or longer so that a
/// round's reports spread to at most `MAX_REPORTS_PER_SECOND`.
pub fn round_every(heartbeat: Duration, nodes: usize) -> Duration {
    let floor =
        Duration::from_secs(u64::try_from(nodes).unwrap_or(u64::MAX) / MAX_REPORTS_PER_SECOND);
    heartbeat.max(floor).max(Duration::from_secs(1))
}

/// A deterministic number in `0.0..1.0` for a node and a moment.
fn unit(seed: u64, node: &str, at: i64, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed ^ salt.rotate_left(17);
    for b in node.bytes().chain(at.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    SmallRng::seed_from_u64(h).gen::<f64>()
}

/// A count's share of a day, for a report covering `secs` of it: whole messages, the
/// fraction carried at random so that a day's reports add up to the day on average.
fn share(day_total: u64, secs: f64, roll: f64) -> u64 {
    let exact = day_total as f64 * secs / 86_400.0;
    let whole = exact.floor();
    whole as u64 + u64::from(roll < exact - whole)
}

/// What node `n`'s agent reports at `now`, covering the `secs` since its last report.
pub fn report_for(
    sim: &crate::warmup::sim::SimCounts,
    n: &SimAgentNode,
    seq: u64,
    secs: f64,
    now: DateTime<Utc>,
    date: chrono::NaiveDate,
) -> Report {
    let t = now.timestamp();
    let sending = matches!(n.status.as_str(), "warming" | "active");
    let day = match (sending, n.cap) {
        (true, Some(cap)) => sim.counts(&n.node_id, date, u64::try_from(cap).unwrap_or(0)),
        _ => Default::default(),
    };
    let busy = if sending { 0.25 } else { 0.03 };
    let cpu = (busy + 0.5 * unit(sim.seed, &n.node_id, t, 1) * busy).min(0.99) * 100.0;
    let mem_total: u64 = 2 << 30;
    let mem_used = (mem_total as f64 * (0.3 + 0.3 * unit(sim.seed, &n.node_id, t, 2))) as u64;
    let queue = if sending {
        (unit(sim.seed, &n.node_id, t, 3) * 40.0) as u64
    } else {
        0
    };
    let delivered = share(day.delivered, secs, unit(sim.seed, &n.node_id, t, 4));
    let bounced = share(day.bounced, secs, unit(sim.seed, &n.node_id, t, 5));
    let deferred = share(day.deferred, secs, unit(sim.seed, &n.node_id, t, 6));
    let complaints = share(day.complaints, secs, unit(sim.seed, &n.node_id, t, 7)).min(delivered);
    Report {
        seq,
        measured_at: now.to_rfc3339(),
        cpu_pct: cpu,
        mem_used,
        mem_total,
        queue_free: 20 << 30,
        queue_len: queue,
        net_rx: (delivered + bounced + deferred) * 2_000,
        net_tx: (delivered + bounced + deferred) * 30_000,
        delivered,
        bounced,
        deferred,
        complaints,
    }
}

/// One round: every sim node in service reports. Returns how many reported.
pub async fn round(ctx: &Ctx, since: DateTime<Utc>, now: DateTime<Utc>) -> usize {
    let sim = crate::warmup::sim::SimCounts {
        seed: ctx.cfg.providers.sim.seed,
    };
    let date = crate::warmup::date_at(&ctx.cfg, now);
    let secs = (now - since).num_milliseconds().max(0) as f64 / 1000.0;
    let mut after = String::new();
    let mut reported = 0;
    loop {
        let page = match ctx.store.sim_agent_nodes(&after, 1000).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "sim agents: cannot read the nodes");
                return reported;
            }
        };
        let Some(last) = page.last() else {
            return reported;
        };
        after = last.node_id.clone();
        let full = page.len() == 1000;
        let batch: Vec<(String, Report)> = page
            .iter()
            .filter(|n| is_sim(ctx, n.cluster.as_deref()))
            .map(|n| {
                // Rounds are seconds apart at least: the time orders them.
                let seq = u64::try_from(now.timestamp()).unwrap_or(0);
                (n.node_id.clone(), report_for(&sim, n, seq, secs, now, date))
            })
            .collect();
        reported += batch.len();
        if !batch.is_empty() {
            if let Err(e) = ctx.store.record_sim_reports(batch, now).await {
                tracing::warn!(error = %e, "sim agents: reports not recorded");
            }
        }
        if !full {
            return reported;
        }
    }
}

fn is_sim(ctx: &Ctx, cluster: Option<&str>) -> bool {
    ctx.cluster(cluster)
        .is_ok_and(|b| b.provider.name() == crate::providers::sim::NAME)
}

/// Deletes the heartbeats older than `[serve] heartbeat_retention`: done by whoever
/// writes them (this task, `serve`), so that an engine writing none reads nothing for it.
pub async fn prune(store: &crate::store::Store, cfg: &crate::config::Config, now: DateTime<Utc>) {
    let keep = chrono::Duration::from_std(cfg.serve.heartbeat_retention)
        .unwrap_or_else(|_| chrono::Duration::days(7));
    match store.prune_heartbeats(now - keep).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "old heartbeats pruned"),
        Err(e) => tracing::warn!(error = %e, "old heartbeats not pruned"),
    }
}

/// Plays the sim nodes' agents while the engine runs. A round that found no node to play
/// waits for the store to change (a node can only come into service in a write) before the
/// next: an engine with no simulated node in service reads nothing for it.
pub async fn run(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut changes = ctx.store.changes();
    changes.borrow_and_update();
    let mut since = ctx.clock.now();
    let mut nodes = 0;
    loop {
        if nodes == 0 {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
        let wait = round_every(ctx.cfg.serve.heartbeat_interval, nodes);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        changes.borrow_and_update();
        let now = ctx.clock.now();
        nodes = round(&ctx, since, now).await;
        since = now;
        prune(&ctx.store, &ctx.cfg, now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_reports_add_up_to_the_day_and_large_fleets_report_less_often() {
        let hb = Duration::from_secs(30);
        assert_eq!(round_every(hb, 200), hb);
        assert_eq!(round_every(hb, 100_000), Duration::from_secs(1000));
        // 2,880 reports of 30 s carry a 10,000-message day within a few messages.
        let total: u64 = (0..2880)
            .map(|i| share(10_000, 30.0, unit(7, "n1", i, 4)))
            .sum();
        assert!((9_850..=10_150).contains(&total), "{total}");
    }
}
