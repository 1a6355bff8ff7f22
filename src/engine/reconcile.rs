//! Compares the provider's inventory with the store: orphans are provider instances no live
//! request owns; missing are instances the store holds that the provider no longer has.
//! It also clears what cut-off certificate orders left in the zones: `_acme-challenge` TXT
//! records at a live node's names while no order for them is under way (see `challenges`).

use super::Ctx;
use crate::providers::ProviderError;
use crate::store::StoreError;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

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

/// Compares the inventory with the store and removes leftover challenge records.
pub async fn reconcile(ctx: &Ctx) -> Result<Report, ReconcileError> {
    reconcile_with(ctx, true).await
}

/// As [`reconcile`]; with `remove` false (`--read-only`) leftover challenge records are
/// reported and left where they are: nothing is changed anywhere.
pub async fn reconcile_with(ctx: &Ctx, remove: bool) -> Result<Report, ReconcileError> {
    let mut inventory = None;
    let mut last = None;
    // The provider may fail a call; an inventory read is worth a few tries.
    for _ in 0..=ctx.policy.max_retries {
        match ctx.provider.inventory().await {
            Ok(inv) => {
                inventory = Some(inv);
                break;
            }
            Err(e) if e.retryable() => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    let Some(inventory) = inventory else {
        return Err(last
            .unwrap_or_else(|| {
                ProviderError::new(
                    "engine",
                    crate::providers::ErrorKind::Transient,
                    "no answer",
                )
            })
            .into());
    };
    let held = ctx.store.live_instances().await?;
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
    let mut present: HashMap<&str, ()> = HashMap::new();
    for inst in &inventory {
        present.insert(inst.id.as_str(), ());
        let owned = by_ref.contains(inst.id.as_str())
            || inst
                .idempotency_key
                .as_deref()
                .is_some_and(|k| intents.contains(k));
        if !owned {
            orphans.push(Orphan {
                provider: ctx.provider.name().to_string(),
                instance_id: inst.id.clone(),
                label: crate::domain::validate::sanitize(&inst.label).into_owned(),
                region: inst.region.clone(),
                ip: inst.ip.map(|ip| ip.to_string()),
                idempotency_key: inst.idempotency_key.clone(),
            });
        }
    }
    let missing = held
        .iter()
        .filter_map(|(r, state)| {
            let id = r.provider_ref.as_deref()?;
            (!present.contains_key(id)).then(|| Missing {
                request_id: r.request_id.clone(),
                request_state: state.clone(),
                instance_id: id.to_string(),
            })
        })
        .collect();
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
