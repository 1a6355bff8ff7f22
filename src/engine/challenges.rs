//! Leftover dns-01 challenge records. An order cut off by a kill, or whose cleanup failed,
//! leaves TXT records at `_acme-challenge.NAME` in the zone of a node that lives on. They
//! are found and removed here, for every live node whose certificate is not being ordered
//! right now: no worker holds its request (the pipeline orders while it holds the lease)
//! and no renewal's claim on its certificate holds.

use super::mail::zone_for;
use super::reconcile::ReconcileError;
use super::Ctx;
use crate::dns::DnsProvider;
use crate::store::ChallengeHolder;
use serde::Serialize;
use std::collections::HashSet;

/// Challenge records removed from one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChallengeRemoved {
    pub request_id: String,
    pub hostname: String,
    /// `_acme-challenge.NAME.`
    pub name: String,
    pub zone: String,
    pub records: usize,
}

fn hostname(h: &ChallengeHolder) -> String {
    let domain = h
        .domain
        .clone()
        .unwrap_or_else(|| super::pipeline::DEFAULT_DOMAIN.to_string());
    format!("{}.{}", h.label, domain.trim_end_matches('.')).to_ascii_lowercase()
}

fn in_flight(h: &ChallengeHolder) -> bool {
    h.leased || h.renewing
}

/// A name whose challenge records could not be looked at or removed (after the engine's
/// retries): reconcile goes on with the others and says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChallengeFailed {
    pub request_id: String,
    pub name: String,
    pub zone: String,
    pub error: String,
}

/// What reconcile did about challenge records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleared {
    pub removed: Vec<ChallengeRemoved>,
    pub failed: Vec<ChallengeFailed>,
    /// Found and left where they are: reconcile ran with `--read-only`.
    pub left: Vec<ChallengeRemoved>,
    /// Why no zone was looked at (the DNS provider cannot be used).
    pub not_checked: Option<String>,
}

/// A DNS call with the engine's retry policy (backoff, a timeout per attempt).
async fn retried<T, Op, Fut>(ctx: &Ctx, dns: &dyn DnsProvider, op: Op) -> Result<T, String>
where
    Op: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::dns::DnsError>>,
{
    let name = dns.name().to_string();
    let mut op = op;
    let out: Result<Result<T, _>, std::convert::Infallible> = super::retry::with_retry(
        &ctx.policy,
        ctx.cfg.engine.call_timeout,
        || ctx.jitter(),
        |_| async { Ok(()) },
        || {
            let fut = op();
            let name = name.clone();
            async move {
                fut.await
                    .map_err(|e| super::mail::as_provider_error(&name, e))
            }
        },
    )
    .await;
    match out {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(never) => match never {},
    }
}

/// A leftover found: the request, its hostname, the zone, the challenge name and records.
type Found = (String, String, String, String, Vec<crate::dns::Published>);

/// Finds leftover challenge records and, with `remove`, removes them; returns what was
/// removed (or, without `remove`, found and left), and the names whose records could not
/// be looked at or removed. A DNS provider that cannot be used is reported, not an error:
/// the rest of reconcile's report stands without it.
pub async fn clear_leftovers(ctx: &Ctx, remove: bool) -> Result<Cleared, ReconcileError> {
    let mut out = Cleared::default();
    let dns: &dyn DnsProvider = match ctx.mail.dns() {
        Ok(Some(d)) => d.as_ref(),
        Ok(None) => return Ok(out),
        Err(e) => {
            out.not_checked = Some(format!("the DNS provider cannot be used: {e}"));
            return Ok(out);
        }
    };
    let holders = ctx.store.challenge_holders(ctx.clock.now()).await?;
    let mut found: Vec<Found> = Vec::new();
    for h in holders.iter().filter(|h| !in_flight(h)) {
        let host = hostname(h);
        let domain = h
            .domain
            .as_deref()
            .unwrap_or(super::pipeline::DEFAULT_DOMAIN);
        let zone = match zone_for(&ctx.cfg, &host, domain) {
            Ok(zone) => zone,
            Err(error) => {
                out.failed.push(ChallengeFailed {
                    request_id: h.request_id.clone(),
                    name: format!("_acme-challenge.{host}."),
                    zone: String::new(),
                    error,
                });
                continue;
            }
        };
        let mut names: Vec<String> = vec![host.clone()];
        names.extend(h.cert_names.iter().map(|n| n.to_ascii_lowercase()));
        let mut seen = HashSet::new();
        for name in names {
            let at = format!("_acme-challenge.{}.", name.trim_end_matches('.'));
            if !seen.insert(at.clone()) || !crate::dns::in_zone(&at, &zone) {
                continue;
            }
            let left = match retried(ctx, dns, || dns.lookup(&zone, &at, "TXT")).await {
                Ok(left) => left,
                Err(error) => {
                    out.failed.push(ChallengeFailed {
                        request_id: h.request_id.clone(),
                        name: at,
                        zone: zone.clone(),
                        error,
                    });
                    continue;
                }
            };
            if !left.is_empty() {
                found.push((h.request_id.clone(), host.clone(), zone.clone(), at, left));
            }
        }
    }
    if found.is_empty() {
        return Ok(out);
    }
    // Looked again just before removing: an order may have started since.
    let busy: HashSet<String> = ctx
        .store
        .challenge_holders(ctx.clock.now())
        .await?
        .into_iter()
        .filter(in_flight)
        .map(|h| h.request_id)
        .collect();
    for (request_id, hostname, zone, name, left) in found {
        if busy.contains(&request_id) {
            continue;
        }
        if !remove {
            out.left.push(ChallengeRemoved {
                request_id,
                hostname,
                name,
                zone,
                records: left.len(),
            });
            continue;
        }
        if let Err(error) = retried(ctx, dns, || dns.remove(&zone, &left)).await {
            out.failed.push(ChallengeFailed {
                request_id,
                name,
                zone,
                error,
            });
            continue;
        }
        tracing::info!(%name, %zone, records = left.len(), "leftover challenge records removed");
        out.removed.push(ChallengeRemoved {
            request_id,
            hostname,
            name,
            zone,
            records: left.len(),
        });
    }
    Ok(out)
}
