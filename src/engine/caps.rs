//! Warm-up caps enforced on the nodes themselves: when a node's daily cap changes (a day
//! of its warm-up closes, an operator changes its pace, the warm-up ends), the node's
//! Postfix gets the new hourly limit. Nodes reached over SSH only; the others' caps are the
//! provider's or the operator's to enforce, and are marked as seen.

use super::Ctx;
use std::time::Duration;

/// Pushes every changed cap once; returns (node, what happened) for each node reached over
/// SSH. Nodes reached otherwise are marked as seen, a batch at a time.
pub async fn pass(ctx: &Ctx) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    // Rounds of at most 500, until a round finds nothing it can settle.
    for _ in 0..100 {
        let due = match ctx.store.caps_to_push(500).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "caps: cannot read the nodes due");
                return out;
            }
        };
        let mut settled = Vec::new();
        for n in &due {
            let ssh = ctx
                .cluster(n.cluster.as_deref())
                .ok()
                .and_then(|b| b.access.ssh());
            let (Some(ssh), Some(request)) = (ssh, &n.request_id) else {
                settled.push((n.node_id.clone(), n.cap));
                continue;
            };
            let result = push(ctx, ssh, n, request).await;
            match &result {
                Ok(_) => settled.push((n.node_id.clone(), n.cap)),
                Err(e) => {
                    tracing::warn!(node = %n.hostname, error = %e, "caps: not installed; tried again")
                }
            }
            out.push((n.hostname.clone(), result));
        }
        let progress = !settled.is_empty();
        if let Err(e) = ctx.store.caps_pushed(settled).await {
            tracing::warn!(error = %e, "caps: cannot record pushed caps");
            return out;
        }
        if !progress || due.len() < 500 {
            break;
        }
    }
    out
}

async fn push(
    ctx: &Ctx,
    ssh: &crate::access::remote::SshAccess,
    n: &crate::store::CapToPush,
    request: &str,
) -> Result<String, String> {
    let domain = n
        .hostname
        .split_once('.')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let node = super::node_ref(&ctx.store, request, &n.hostname, &domain).await?;
    ssh.install_rate_limit(&node, n.cap)
        .await
        .map_err(|e| e.to_string())
}

/// Pushes changed caps while the engine runs: once at the start, then after the store
/// changes (a cap only moves in a write), at most every half minute. An idle engine reads
/// nothing for it.
pub async fn run(ctx: std::sync::Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut changes = ctx.store.changes();
    changes.borrow_and_update();
    loop {
        if *stop.borrow() {
            return;
        }
        pass(&ctx).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.changed() => continue,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => continue,
        }
        changes.borrow_and_update();
    }
}
