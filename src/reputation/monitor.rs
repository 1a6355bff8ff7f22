//! The scheduled blocklist monitor: every warming, active or paused node's IP is checked on
//! every usable zone once per interval, each node at its own moment of the interval so the
//! queries spread evenly. Zones are health-checked first and again every few minutes; a zone
//! that fails is not queried, since its answers mean nothing.

use super::dnsbl::{Checker, Severity, Verdict, Zone};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::store::{CheckApplied, Store, StoreError};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often zones are health-checked again.
const HEALTH_EVERY: Duration = Duration::from_secs(300);
/// Least time between two passes that found nothing due.
const IDLE: Duration = Duration::from_secs(1);
/// Most time between two passes: a node another process registered is found by then (one
/// this process registers wakes the monitor through the store's change counter).
const IDLE_MAX: Duration = Duration::from_secs(60);

/// A stable spread of node ids over the interval (FNV-1a; not randomised per process, so
/// a node keeps its moment across restarts).
fn slot_of(node_id: &str, interval: Duration) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % (interval.as_millis().max(1) as u64)
}

/// The node's next moment to be checked: the first time after `now` that falls on its slot
/// of the interval.
pub fn next_check(node_id: &str, interval: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    let period = interval.as_millis().max(1) as i64;
    let slot = slot_of(node_id, interval) as i64;
    let t = now.timestamp_millis();
    let base = (t - slot).div_euclid(period) * period + slot;
    let next = if base > t { base } else { base + period };
    DateTime::<Utc>::from_timestamp_millis(next).unwrap_or(now)
}

/// The shared parts of a monitor.
pub struct Monitor {
    pub store: Store,
    pub cfg: Arc<Config>,
    pub checker: Checker,
    pub clock: SharedClock,
}

impl Monitor {
    pub fn new(store: Store, cfg: Arc<Config>, clock: SharedClock) -> Result<Monitor, String> {
        let checker = Checker::new(&cfg.checker_config())?;
        Ok(Monitor {
            store,
            cfg,
            checker,
            clock,
        })
    }

    /// Health-checks every configured zone, records the result, and returns the usable ones.
    pub async fn usable_zones(&self) -> Result<Vec<Zone>, StoreError> {
        let zones = self.cfg.blocklist_zones();
        let health: Vec<_> = stream::iter(0..zones.len())
            .map(|i| self.checker.health(&zones[i]))
            .buffered(8)
            .collect()
            .await;
        let usable = zones
            .iter()
            .filter(|z| health.iter().any(|h| h.zone == z.zone && h.usable))
            .cloned()
            .collect();
        self.store
            .record_zone_health(health, self.clock.now())
            .await?;
        Ok(usable)
    }

    /// Checks one node's IP on `zones` now and applies what the answers mean.
    pub async fn check_node(
        &self,
        node_id: &str,
        ip: &str,
        zones: &[Zone],
    ) -> Result<(Vec<Verdict>, CheckApplied), StoreError> {
        let Ok(addr) = ip.parse::<Ipv4Addr>() else {
            return Err(StoreError::Rejected(format!(
                "node {node_id}: {ip:?} is not an IPv4 address"
            )));
        };
        let verdicts = self.checker.check_all(&[addr], zones).await;
        let checked: Vec<(Verdict, Severity)> = verdicts
            .iter()
            .cloned()
            .zip(zones.iter().map(|z| z.severity))
            .collect();
        let now = self.clock.now();
        let b = &self.cfg.blocklists;
        let applied = self
            .store
            .record_check(
                node_id,
                checked,
                b.auto_resume,
                b.bounce_alert,
                now,
                next_check(node_id, b.interval, now),
            )
            .await?;
        Ok((verdicts, applied))
    }

    /// One pass: checks every node that is due (up to a batch), with bounded concurrency.
    /// Returns how many nodes were checked.
    pub async fn pass(&self, zones: &[Zone]) -> Result<usize, StoreError> {
        let per_node = zones.len().max(1);
        let nodes_at_once = (self.cfg.blocklists.concurrency / per_node).max(1);
        let due = self
            .store
            .nodes_due_for_check(self.clock.now(), nodes_at_once * 8)
            .await?;
        let n = due.len();
        let results: Vec<Result<_, StoreError>> = stream::iter(due)
            .map(|t| async move { self.check_node(&t.node_id, &t.ip, zones).await })
            .buffer_unordered(nodes_at_once)
            .collect()
            .await;
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "blocklist check not recorded");
            }
        }
        Ok(n)
    }

    /// How long to sleep after a pass that found nothing due: until the next node falls
    /// due or zones need their health check, within `IDLE..=IDLE_MAX`.
    async fn idle_wait(&self, health_due: tokio::time::Instant) -> Duration {
        let to_health = health_due.saturating_duration_since(tokio::time::Instant::now());
        let to_node = match self.store.next_check_due().await {
            Ok(Some(at)) => (at - self.clock.now()).to_std().unwrap_or_default(),
            Ok(None) => IDLE_MAX,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell when a node is next due");
                IDLE
            }
        };
        to_node.min(to_health).clamp(IDLE, IDLE_MAX)
    }

    /// Runs until `stop` turns true. It sleeps until a node falls due, the zones' health
    /// check comes round, or this process commits (a node registered), whichever is first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut zones: Vec<Zone> = Vec::new();
        let mut health_due = tokio::time::Instant::now();
        let mut commits = self.store.changes();
        loop {
            if *stop.borrow() {
                return;
            }
            if tokio::time::Instant::now() >= health_due {
                match self.usable_zones().await {
                    Ok(z) => zones = z,
                    Err(e) => tracing::warn!(error = %e, "zone health not recorded"),
                }
                health_due = tokio::time::Instant::now() + HEALTH_EVERY;
            }
            let checked = if zones.is_empty() {
                Ok(0)
            } else {
                self.pass(&zones).await
            };
            let idle = match checked {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "blocklist pass failed");
                    true
                }
            };
            if idle {
                let wait = self.idle_wait(health_due).await;
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = stop.changed() => continue,
                }
                // A commit before now counts too: it may have registered a node.
                if wait > IDLE && !commits.has_changed().unwrap_or(true) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait - IDLE) => {}
                        _ = commits.changed() => {}
                        _ = stop.changed() => {}
                    }
                }
                commits.borrow_and_update();
            }
        }
    }
}

/// A running monitor; dropping the handle leaves it running until `stop`.
pub struct MonitorHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MonitorHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts the monitor in the background, when `[blocklists] monitor` is on.
pub fn spawn(store: Store, cfg: Arc<Config>, clock: SharedClock) -> Option<MonitorHandle> {
    if !cfg.blocklists.monitor {
        return None;
    }
    let monitor = match Monitor::new(store, cfg, clock) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "blocklist monitor not started");
            return None;
        }
    };
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(monitor.run(rx));
    Some(MonitorHandle { stop: tx, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn each_node_keeps_its_moment_and_nodes_spread_over_the_interval() {
        let interval = Duration::from_secs(1800);
        let now = Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("time");
        let a = next_check("node-a", interval, now);
        assert!(a > now && a <= now + chrono::Duration::seconds(1800));
        // The next one after that is exactly one interval later.
        assert_eq!(
            next_check("node-a", interval, a),
            a + chrono::Duration::seconds(1800)
        );
        // 1,000 nodes land in all six 5-minute sixths of the interval, none empty.
        let mut buckets = [0usize; 6];
        for i in 0..1000 {
            let t = next_check(&format!("node-{i}"), interval, now);
            let off = (t - now).num_seconds() - 1;
            buckets[(off / 300) as usize] += 1;
        }
        assert!(buckets.iter().all(|n| *n > 100), "{buckets:?}");
    }
}
