//! When the engine's loop wakes. There is no fixed tick: the loop sleeps until the next
//! moment it has work (a retry or a lease falling due, stuck detection's next look), or
//! until something commits — in this process (the store's change counter), or in another
//! (`PRAGMA data_version`, asked every `engine.tick`; a read of one counter, nothing more).
//!
//! It owns only the bookkeeping of these moments; what the loop does when it wakes is in
//! `mod.rs`. It never writes.

use super::Ctx;
use crate::store::VersionProbe;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::sync::watch;

/// Least sleep before looking again at work said to be due now: a lease that ends exactly
/// now is claimable only after now, and a paused test clock would not move otherwise.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// The moments the loop wakes at, and whether waiting requests need another look.
pub(super) struct Moments {
    /// Something may have committed since waiting requests were last looked at.
    pub dirty: bool,
    /// When claimable work falls due (from the last claim); `None`: nothing scheduled, or
    /// no room to claim (a worker ending wakes the loop then).
    pub due: Option<DateTime<Utc>>,
    /// When stuck detection next has something to look at.
    pub stuck: DateTime<Utc>,
    /// When to go round again regardless: after the store failed, or when `--until-idle`
    /// waits for a retry or a lease.
    pub again: Option<DateTime<Utc>>,
}

impl Moments {
    pub fn new(ctx: &Ctx) -> Moments {
        Moments {
            dirty: true,
            due: None,
            // Stuck detection looks once at start, then when its next moment comes.
            stuck: ctx.clock.now(),
            again: None,
        }
    }

    /// The tokio instant of the earliest moment.
    pub fn deadline(&self, ctx: &Ctx) -> tokio::time::Instant {
        let now = ctx.clock.now();
        let mut at = self.stuck;
        for t in [self.due, self.again].into_iter().flatten() {
            at = at.min(t);
        }
        let wait = (at - now).to_std().unwrap_or_default().max(MIN_SLEEP);
        tokio::time::Instant::now() + wait
    }

    pub fn stuck_due(&self, ctx: &Ctx) -> bool {
        ctx.clock.now() >= self.stuck
    }
}

/// Other processes' commits, noticed by asking `PRAGMA data_version` every `engine.tick`.
pub(super) struct OtherProcesses {
    probe: VersionProbe,
    every: tokio::time::Interval,
}

impl OtherProcesses {
    pub fn new(ctx: &Ctx) -> OtherProcesses {
        let mut every = tokio::time::interval(ctx.cfg.engine.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        OtherProcesses {
            probe: ctx.store.version_probe(),
            every,
        }
    }

    /// Waits for the next probe; true when something committed since the last one.
    pub async fn committed(&mut self, ctx: &Ctx) -> bool {
        self.every.tick().await;
        match self.probe.changed(&ctx.store).await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "probing the database for changes failed");
                false
            }
        }
    }
}

/// This process's commits, from the store's change counter.
pub(super) struct LocalCommits {
    rx: watch::Receiver<u64>,
    open: bool,
}

impl LocalCommits {
    pub fn new(ctx: &Ctx) -> LocalCommits {
        LocalCommits {
            rx: ctx.store.changes(),
            open: true,
        }
    }

    /// Waits for a commit.
    pub async fn committed(&mut self) {
        if !self.open {
            return std::future::pending().await;
        }
        if self.rx.changed().await.is_err() {
            // The writer has stopped: nothing will commit any more.
            self.open = false;
        }
    }

    /// Takes a commit nobody has waited for yet; true if there was one.
    pub fn take(&mut self) -> bool {
        let seen = self.rx.has_changed().unwrap_or(false);
        if seen {
            self.rx.borrow_and_update();
        }
        seen
    }
}
