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

/// A leftover found: the request, its hostname, the zone, the challenge name and records.
type Found = (String, String, String, String, Vec<crate::dns::Published>);

/// Finds and removes leftover challenge records; returns what was removed.
pub async fn clear_leftovers(ctx: &Ctx) -> Result<Vec<ChallengeRemoved>, ReconcileError> {
    let dns: &dyn DnsProvider = match ctx.mail.dns() {
        Ok(Some(d)) => d.as_ref(),
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(ReconcileError::Dns(e)),
    };
    let holders = ctx.store.challenge_holders(ctx.clock.now()).await?;
    let mut found: Vec<Found> = Vec::new();
    for h in holders.iter().filter(|h| !in_flight(h)) {
        let host = hostname(h);
        let domain = h
            .domain
            .as_deref()
            .unwrap_or(super::pipeline::DEFAULT_DOMAIN);
        let Ok(zone) = zone_for(&ctx.cfg, &host, domain) else {
            continue;
        };
        let mut names: Vec<String> = vec![host.clone()];
        names.extend(h.cert_names.iter().map(|n| n.to_ascii_lowercase()));
        let mut seen = HashSet::new();
        for name in names {
            let at = format!("_acme-challenge.{}.", name.trim_end_matches('.'));
            if !seen.insert(at.clone()) || !crate::dns::in_zone(&at, &zone) {
                continue;
            }
            let left = dns
                .lookup(&zone, &at, "TXT")
                .await
                .map_err(|e| ReconcileError::Dns(format!("{at} in {zone}: {e}")))?;
            if !left.is_empty() {
                found.push((h.request_id.clone(), host.clone(), zone.clone(), at, left));
            }
        }
    }
    if found.is_empty() {
        return Ok(Vec::new());
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
    let mut removed = Vec::new();
    for (request_id, hostname, zone, name, left) in found {
        if busy.contains(&request_id) {
            continue;
        }
        dns.remove(&zone, &left)
            .await
            .map_err(|e| ReconcileError::Dns(format!("{name} in {zone}: {e}")))?;
        tracing::info!(%name, %zone, records = left.len(), "leftover challenge records removed");
        removed.push(ChallengeRemoved {
            request_id,
            hostname,
            name,
            zone,
            records: left.len(),
        });
    }
    Ok(removed)
}
