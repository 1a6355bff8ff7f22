//! The warm-up engine: at each day boundary (midnight at `[warmup] utc_offset`), every
//! warming node's finished day is closed with its sending counts, and the plan's rules decide
//! whether it advances, holds, pauses or completes. Counts arrive through one interface,
//! [`SendingCounts`]: the simulated cloud makes them up realistically; node agents will
//! report them later.

pub mod sim;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::warmup::{decide, DayCounts, Decision, Thresholds, WarmupPlan};
use crate::store::{Store, StoreError, WarmNode};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Where a node's daily sending counts come from.
#[async_trait]
pub trait SendingCounts: Send + Sync {
    /// The node's totals for `date`, once that day is over; `None` when nothing is known.
    async fn day_counts(
        &self,
        node: &WarmNode,
        date: NaiveDate,
    ) -> Result<Option<DayCounts>, String>;
}

/// Counts only as reported into the store (`Store::record_sending_counts`), by agents.
pub struct Reported;

#[async_trait]
impl SendingCounts for Reported {
    async fn day_counts(&self, _: &WarmNode, _: NaiveDate) -> Result<Option<DayCounts>, String> {
        Ok(None)
    }
}

/// The warm-up date at `now`: the calendar date at the configured offset.
pub fn date_at(cfg: &Config, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&cfg.warmup_offset()).date_naive()
}

/// When the next day starts (the next midnight at the offset), after `now`.
pub fn next_boundary(cfg: &Config, now: DateTime<Utc>) -> DateTime<Utc> {
    let offset = cfg.warmup_offset();
    let tomorrow = date_at(cfg, now).succ_opt().unwrap_or(date_at(cfg, now));
    tomorrow
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(offset).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + chrono::Duration::hours(1))
}

/// The caps a node follows: its own schedule, or its plan's.
fn caps_of(cfg: &Config, node: &WarmNode) -> Option<WarmupPlan> {
    if let Some(caps) = &node.schedule {
        return Some(WarmupPlan {
            name: node.plan.clone(),
            description: String::new(),
            caps: caps.clone(),
        });
    }
    cfg.warmup_plans().into_iter().find(|p| p.name == node.plan)
}

/// The medium alert a pause raises when the day's bounces alone were above the pause rate
/// (issue 16: a high bounce rate is a medium alert), naming the rate; `None` otherwise (a
/// pause for complaints or a listing with few bounces is not a bounce alert).
fn bounce_alert(label: &str, counts: &DayCounts, th: &Thresholds) -> Option<String> {
    if counts.sent == 0 {
        return None;
    }
    let rate = counts.bounced as f64 / counts.sent as f64;
    (rate > th.pause_bounce_rate).then(|| {
        format!(
            "{label} bounce rate {:.1}% ({} of {} sent) is above {:.1}%: warm-up paused",
            rate * 100.0,
            counts.bounced,
            counts.sent,
            th.pause_bounce_rate * 100.0
        )
    })
}

/// Closes every finished day of every warming node, up to today; returns the decisions
/// made, in order. A node that missed several boundaries (the engine was down) has each
/// day closed in turn.
pub async fn close_days(
    store: &Store,
    cfg: &Config,
    feed: &dyn SendingCounts,
    now: DateTime<Utc>,
) -> Result<Vec<(String, NaiveDate, Decision)>, StoreError> {
    let today = date_at(cfg, now);
    let mut out = Vec::new();
    // Each pass closes one day per due node; nodes several days behind come back.
    for _ in 0..400 {
        let due = store.warm_nodes_due(today, 500).await?;
        if due.is_empty() {
            break;
        }
        for node in due {
            let Some(plan) = caps_of(cfg, &node) else {
                tracing::warn!(node = %node.node_id, plan = %node.plan, "warm-up plan not in the config; day left open");
                continue;
            };
            let counts = match store.recorded_counts(&node.node_id, node.date).await? {
                Some(c) => c,
                None => match feed.day_counts(&node, node.date).await {
                    Ok(Some(c)) => c,
                    Ok(None) => DayCounts::default(),
                    Err(e) => {
                        tracing::warn!(node = %node.node_id, error = %e, "sending counts unavailable");
                        DayCounts::default()
                    }
                },
            };
            let decision = decide(
                &plan,
                node.day,
                &counts,
                node.listed_on.as_deref(),
                &cfg.warmup.thresholds,
            );
            let alert = match &decision {
                Decision::Pause { .. } => {
                    bounce_alert(&node.label, &counts, &cfg.warmup.thresholds)
                }
                _ => None,
            };
            if store
                .close_warmup_day(&node, counts, decision.clone(), alert, now)
                .await?
            {
                out.push((node.node_id.clone(), node.date, decision));
            }
        }
    }
    Ok(out)
}

/// Runs the day boundaries until stopped: closes what is due, then sleeps until the next
/// boundary. Nothing else makes a day due (new and resumed nodes start on today), so it
/// wakes only then — at least hourly, in case the wall clock jumps.
pub async fn run(
    store: Store,
    cfg: Arc<Config>,
    feed: Arc<dyn SendingCounts>,
    clock: SharedClock,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let now = clock.now();
        if let Err(e) = close_days(&store, &cfg, feed.as_ref(), now).await {
            tracing::warn!(error = %e, "warm-up day boundary failed; retrying");
        }
        let until = next_boundary(&cfg, now) - now;
        let wait = until
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(3600))
            .max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}
