//! Rolling back and deprovisioning: compensations in reverse order, each with its own
//! retries. A request becomes rolled_back (or deprovisioned) only once everything it held is
//! released; a compensation that cannot finish leaves it rolling_back, marked for attention,
//! to be tried again later.

use super::pipeline::{call, fenced, Stop};
use super::{Ctx, WorkerError};
use crate::domain::ResourceKind;
use crate::providers::{ErrorKind, InstanceStatus, Provider, ProviderError};
use crate::store::{Claim, ResourceRow};
use std::sync::Arc;

/// The order compensations run in: the node leaves the fleet, its certificate is retired and
/// its DNS records removed, its PTR is reset, the instance is deleted (its firewall and IP go with it), then capacity and quota return.
fn rank(kind: &str) -> u8 {
    match ResourceKind::parse(kind) {
        Some(ResourceKind::Node) => 0,
        Some(ResourceKind::Certificate) => 1,
        Some(ResourceKind::Dns) => 2,
        Some(ResourceKind::Rdns) => 3,
        // A resize's upgrade is reverted before what it held is taken back.
        Some(ResourceKind::Instance | ResourceKind::Upgrade) => 4,
        Some(ResourceKind::Firewall) => 5,
        Some(ResourceKind::Ip) => 6,
        Some(ResourceKind::Capacity | ResourceKind::ResizeHold) => 7,
        Some(ResourceKind::Quota) => 8,
        None => 9,
    }
}

pub(crate) async fn run(ctx: &Arc<Ctx>, claim: &Claim) -> Result<(), WorkerError> {
    let mut live = ctx.store.live_resources(&claim.id).await?;
    // The cluster's provider (an error only a compensation that needs it reports).
    let cluster = ctx
        .store
        .get_request(&claim.id)
        .await?
        .and_then(|r| r.cluster);
    let provider = ctx.cluster(cluster.as_deref()).map(|b| b.provider.clone());
    live.sort_by_key(|r| (rank(&r.kind), -r.seq));
    let instance_ref = live
        .iter()
        .find(|r| r.kind == ResourceKind::Instance.as_str())
        .and_then(|r| r.provider_ref.clone());
    let ip = live
        .iter()
        .find(|r| r.kind == ResourceKind::Ip.as_str())
        .and_then(|r| r.provider_ref.clone());
    for r in &live {
        let Some(kind) = ResourceKind::parse(&r.kind) else {
            continue;
        };
        let at = At {
            provider: &provider,
            instance: instance_ref.as_deref(),
            ip: ip.as_deref(),
        };
        match compensate(ctx, claim, r, kind, &at).await {
            Ok(detail) => {
                ctx.store
                    .release_resource(&fenced(ctx, claim), kind, Some(detail))
                    .await?
            }
            Err(Stop::Store(e)) => return Err(e.into()),
            Err(Stop::Deferred { until, why }) => {
                // Not a stall: the provider is down and the engine waits for it.
                ctx.store.defer(&fenced(ctx, claim), why, until).await?;
                return Ok(());
            }
            Err(Stop::Failed(msg) | Stop::Cancelled(msg) | Stop::AwaitInput(msg)) => {
                let retry_at = ctx.clock.now()
                    + chrono::Duration::from_std(ctx.policy.cap).unwrap_or_default();
                let error = format!("rollback stalled releasing {}: {msg}", r.kind);
                ctx.store
                    .teardown_stalled(&fenced(ctx, claim), error, retry_at)
                    .await?;
                return Ok(());
            }
        }
    }
    ctx.store.finish_teardown(&fenced(ctx, claim)).await?;
    Ok(())
}

/// Where a request's compensations act: its cluster's provider, its instance and IP.
struct At<'a> {
    provider: &'a Result<Arc<dyn Provider>, ProviderError>,
    instance: Option<&'a str>,
    ip: Option<&'a str>,
}

impl At<'_> {
    fn provider(&self) -> Result<&Arc<dyn Provider>, Stop> {
        self.provider
            .as_ref()
            .map_err(|e| Stop::Failed(e.to_string()))
    }
}

async fn compensate(
    ctx: &Ctx,
    claim: &Claim,
    r: &ResourceRow,
    kind: ResourceKind,
    at: &At<'_>,
) -> Result<String, Stop> {
    let (instance, ip) = (at.instance, at.ip);
    match kind {
        ResourceKind::Node => {
            ctx.store
                .decommission_node(&fenced(ctx, claim), "decommissioned by teardown")
                .await?;
            Ok("node decommissioned".into())
        }
        ResourceKind::Rdns => {
            let (Some(id), Some(ip)) = (instance, ip.and_then(|i| i.parse().ok())) else {
                return Ok("nothing to reset".into());
            };
            let p = at.provider()?;
            let reset = call(ctx, claim, None, "reset_rdns", None, || async move {
                match p.set_rdns(id, ip, None).await {
                    Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            })
            .await;
            reset.map(|()| format!("PTR of {ip} reset"))
        }
        ResourceKind::Instance => {
            let p = at.provider()?;
            let id = match &r.provider_ref {
                Some(id) => id.clone(),
                // Only the intent was recorded: ask the provider whether the create went
                // through, by idempotency key.
                None => match call(ctx, claim, None, "find_instance", None, || {
                    p.find(&claim.id)
                })
                .await?
                {
                    Some(inst) if inst.status != InstanceStatus::Deleted => inst.id,
                    _ => return Ok("the create call never made an instance".into()),
                },
            };
            call(ctx, claim, None, "delete_instance", None, || p.delete(&id)).await?;
            let gone = call(ctx, claim, None, "confirm_deleted", None, || async {
                match p.status(&id).await {
                    Ok(inst) => Ok(inst.status == InstanceStatus::Deleted),
                    Err(e) if e.kind == ErrorKind::NotFound => Ok(true),
                    Err(e) => Err(e),
                }
            })
            .await?;
            if gone {
                Ok(format!("instance {id} deleted"))
            } else {
                Err(Stop::Failed(format!(
                    "instance {id} still exists after delete"
                )))
            }
        }
        ResourceKind::Dns => super::mail::remove_records(ctx, claim).await,
        ResourceKind::Certificate => super::mail::retire_certificate(ctx, claim).await,
        ResourceKind::Firewall => Ok("detached with the instance".into()),
        ResourceKind::Ip => Ok(format!(
            "{} returned with the instance",
            r.provider_ref.as_deref().unwrap_or("IP")
        )),
        ResourceKind::Capacity => Ok(format!(
            "capacity returned to {}",
            r.cluster.as_deref().unwrap_or("cluster")
        )),
        ResourceKind::Quota => Ok(format!("quota returned to {}", r.tenant)),
        ResourceKind::Upgrade => {
            let Some(id) = r.provider_ref.as_deref() else {
                return Ok("no upgrade was ordered".into());
            };
            let p = at.provider()?;
            call(ctx, claim, None, "revert_upgrade", None, || {
                p.revert_resize(id)
            })
            .await?;
            Ok(format!("upgrade of instance {id} reverted"))
        }
        ResourceKind::ResizeHold => Ok(ctx
            .store
            .return_resize_hold(&fenced(ctx, claim))
            .await?
            .unwrap_or_else(|| "nothing held".into())),
    }
}
