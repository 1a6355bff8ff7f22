//! The engine's half of the providers' circuit breakers (see `providers::guard`): it takes
//! up circuits recorded open (by another engine, or by this one before a restart) and,
//! when a circuit's cooldown is over and no request's call has probed it, probes it with
//! one inventory call, so that requests waiting at admission for that provider move again
//! once it answers.

use super::Ctx;
use crate::clock::parse_ts;
use crate::providers::Provider;
use std::sync::Arc;
use std::time::Duration;

/// How often the loop looks when no circuit is open.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn probe_loop(ctx: Arc<Ctx>) {
    match ctx.store.breakers().await {
        Ok(rows) => {
            for b in rows.iter().filter(|b| b.open) {
                let (Some(opened), Some(retry)) = (
                    b.opened_at.as_deref().and_then(parse_ts),
                    b.retry_at.as_deref().and_then(parse_ts),
                ) else {
                    continue;
                };
                for g in ctx.providers.guards() {
                    if g.name() == b.provider {
                        g.restore(opened, retry, b.last_error.clone());
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "provider circuits not read"),
    }
    loop {
        let now = ctx.clock.now();
        let mut wait = LOOK_EVERY;
        for g in ctx.providers.guards() {
            let Some(at) = g.probe_due() else {
                continue;
            };
            if at <= now {
                // A request's call may be the probe already; then this one is refused.
                if let Err(e) = g.probe().await {
                    tracing::debug!(provider = g.name(), error = %e, "probe");
                }
            } else if let Ok(d) = (at - now).to_std() {
                wait = wait.min(d);
            }
        }
        tokio::time::sleep(wait).await;
    }
}
