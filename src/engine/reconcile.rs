//! Compares the provider's inventory with the store: orphans are provider instances no live
//! request owns; missing are instances the store holds that the provider no longer has.
//! It also clears what cut-off certificate orders left in the zones: `_acme-challenge` TXT
//! records at a live node's names while no order for them is under way (see `challenges`).

use super::Ctx;
use crate::providers::ProviderError;
use crate::store::StoreError;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub provider: String,
    pub instance_id: String,
    pub label: String,
    pub region: String,
    pub ip: Option<String>,
    /// The request id the instance was created for, if the provider kept it.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub request_id: String,
    pub request_state: String,
    pub instance_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub orphans: Vec<Orphan>,
    pub missing: Vec<Missing>,
    /// Challenge records left by orders that are no longer under way, now removed.
    pub challenges_removed: Vec<super::challenges::ChallengeRemoved>,
    /// Names whose challenge records could not be looked at or removed, and why.
    pub challenges_failed: Vec<super::challenges::ChallengeFailed>,
    /// Leftover challenge records found and left where they are (`--read-only`); in the
    /// JSON only when there are some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub challenges_left: Vec<super::challenges::ChallengeRemoved>,
    /// Why challenge records were not looked for (the DNS provider cannot be used); in the
    /// JSON only then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenges_not_checked: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the provider's inventory failed: {0}")]
    Provider(#[from] ProviderError),
    #[error("clearing leftover challenge records: {0}")]
    Dns(String),
}

/// The provider's inventory; a read is worth a few tries.
async fn inventory(
    ctx: &Ctx,
    p: &dyn crate::providers::Provider,
) -> Result<Vec<crate::providers::Instance>, ReconcileError> {
    let mut last = None;
    for _ in 0..=ctx.policy.max_retries {
        match p.inventory().await {
            Ok(inv) => return Ok(inv),
            Err(e) if e.retryable() => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .unwrap_or_else(|| {
            ProviderError::new(
                p.name(),
                crate::providers::ErrorKind::Transient,
                "no answer",
            )
        })
        .into())
}

/// Orphans (at the provider, owned by no live request) and missing instances (held by the
/// store, gone at the provider).
fn compare(
    provider: &str,
    inventory: &[crate::providers::Instance],
    held: &[&(crate::store::ResourceRow, String)],
) -> (Vec<Orphan>, Vec<Missing>) {
    let by_ref: HashSet<&str> = held
        .iter()
        .filter_map(|(r, _)| r.provider_ref.as_deref())
        .collect();
    let intents: HashSet<&str> = held
        .iter()
        .filter(|(r, _)| r.provider_ref.is_none())
        .map(|(r, _)| r.request_id.as_str())
        .collect();
    let mut orphans = Vec::new();
    let mut present: HashSet<&str> = HashSet::new();
    for inst in inventory {
        present.insert(inst.id.as_str());
        let owned = by_ref.contains(inst.id.as_str())
            || inst
                .idempotency_key
                .as_deref()
                .is_some_and(|k| intents.contains(k));
        if !owned {
            orphans.push(Orphan {
                provider: provider.to_string(),
                instance_id: crate::domain::validate::sanitize(&inst.id).into_owned(),
                label: crate::domain::validate::sanitize(&inst.label).into_owned(),
                region: crate::domain::validate::sanitize(&inst.region).into_owned(),
                ip: inst.ip.map(|ip| ip.to_string()),
                idempotency_key: inst
                    .idempotency_key
                    .as_deref()
                    .map(|k| crate::domain::validate::sanitize(k).into_owned()),
            });
        }
    }
    let missing = held
        .iter()
        .filter_map(|(r, state)| {
            let id = r.provider_ref.as_deref()?;
            (!present.contains(id)).then(|| Missing {
                request_id: r.request_id.clone(),
                request_state: state.clone(),
                instance_id: id.to_string(),
            })
        })
        .collect();
    (orphans, missing)
}

/// Compares the inventory with the store and removes leftover challenge records.
pub async fn reconcile(ctx: &Ctx) -> Result<Report, ReconcileError> {
    reconcile_with(ctx, true).await
}

/// As [`reconcile`]; with `remove` false (`--read-only`) leftover challenge records are
/// reported and left where they are: nothing is changed anywhere.
pub async fn reconcile_with(ctx: &Ctx, remove: bool) -> Result<Report, ReconcileError> {
    let held = ctx.store.live_instances().await?;
    let mut orphans = Vec::new();
    let mut missing = Vec::new();
    // Each provider's inventory once, however many clusters it serves, compared with the
    // instances the store holds at that provider.
    for p in ctx.providers.providers() {
        let inventory = inventory(ctx, p.as_ref()).await?;
        let mine: Vec<&(crate::store::ResourceRow, String)> = held
            .iter()
            .filter(|(r, _)| r.provider.as_deref().is_none_or(|n| n == p.name()))
            .collect();
        let (o, m) = compare(p.name(), &inventory, &mine);
        orphans.extend(o);
        missing.extend(m);
    }
    let cleared = super::challenges::clear_leftovers(ctx, remove).await?;
    Ok(Report {
        orphans,
        missing,
        challenges_removed: cleared.removed,
        challenges_failed: cleared.failed,
        challenges_left: cleared.left,
        challenges_not_checked: cleared.not_checked,
    })
}
