//! Orders that outlive their process. An order is kept (through an [`OrderJournal`]) before
//! any of its challenges is answered; once it ends it is forgotten. An order still kept when
//! the same names are ordered again was cut off (a killed process) or failed: its pending
//! authorizations are deactivated first (RFC 8555 §7.5.2), so nothing is left open at the
//! CA for a challenge nobody will answer.

use super::acme::Account;
use super::error::{clean, from_acme};
use super::TlsError;
use async_trait::async_trait;
use instant_acme::AuthorizationStatus;

/// Where orders in flight are kept, keyed by the names they are for.
#[async_trait]
pub trait OrderJournal: Send + Sync {
    /// Orders for `names` (see [`names_key`]) placed and never finished, oldest first.
    async fn unfinished(&self, names: &str) -> Result<Vec<String>, TlsError>;
    /// An order for `names` was placed at `url`; none of its challenges is answered yet.
    async fn placed(&self, url: &str, names: &str) -> Result<(), TlsError>;
    /// The order at `url` ended, or what it left at the CA was dealt with.
    async fn done(&self, url: &str) -> Result<(), TlsError>;
}

/// A journal that keeps nothing: each order stands alone.
pub struct NoJournal;

#[async_trait]
impl OrderJournal for NoJournal {
    async fn unfinished(&self, _names: &str) -> Result<Vec<String>, TlsError> {
        Ok(Vec::new())
    }
    async fn placed(&self, _url: &str, _names: &str) -> Result<(), TlsError> {
        Ok(())
    }
    async fn done(&self, _url: &str) -> Result<(), TlsError> {
        Ok(())
    }
}

/// The journal's key for a set of names: lowercased, sorted, comma-joined.
pub fn names_key(names: &[String]) -> String {
    let mut v: Vec<String> = names
        .iter()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    v.sort();
    v.dedup();
    v.join(",")
}

/// An order looked at from outside its own attempt: its authorizations as the CA says they
/// are now (each fetched again on every look).
pub struct OrderView {
    order: instant_acme::Order,
}

impl OrderView {
    /// Opens the order at `url` (the CA must still know it as an order).
    pub async fn open(account: &Account, url: &str) -> Result<OrderView, TlsError> {
        let order = account
            .inner()
            .order(url.to_string())
            .await
            .map_err(|e| from_acme(e, &format!("read the order {}", clean(url))))?;
        Ok(OrderView { order })
    }

    /// (name, status) of each authorization, the status in RFC 8555's words (`pending`,
    /// `valid`, `deactivated`, ...).
    pub async fn authorizations(&mut self) -> Result<Vec<(String, String)>, TlsError> {
        let mut out = Vec::new();
        let mut authorizations = self.order.authorizations();
        while let Some(next) = authorizations.next().await {
            let mut authz = next.map_err(|e| from_acme(e, "read an authorization"))?;
            let state = authz
                .refresh()
                .await
                .map_err(|e| from_acme(e, "read an authorization"))?;
            out.push((state.identifier().to_string(), status_name(&state.status)));
        }
        Ok(out)
    }
}

fn status_name(s: &AuthorizationStatus) -> String {
    match s {
        AuthorizationStatus::Pending => "pending",
        AuthorizationStatus::Valid => "valid",
        AuthorizationStatus::Invalid => "invalid",
        AuthorizationStatus::Revoked => "revoked",
        AuthorizationStatus::Expired => "expired",
        AuthorizationStatus::Deactivated => "deactivated",
    }
    .to_string()
}

/// Deactivates the pending authorizations of the abandoned order at `url`; returns the
/// names deactivated. Valid ones are left for the next order to reuse.
pub async fn deactivate_pending(account: &Account, url: &str) -> Result<Vec<String>, TlsError> {
    let mut order = account
        .inner()
        .order(url.to_string())
        .await
        .map_err(|e| from_acme(e, &format!("read the abandoned order {}", clean(url))))?;
    let mut done = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(next) = authorizations.next().await {
        let mut authz = next.map_err(|e| from_acme(e, "read an abandoned authorization"))?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = clean(&authz.identifier().to_string());
        authz
            .deactivate()
            .await
            .map_err(|e| from_acme(e, &format!("deactivate the authorization for {name}")))?;
        done.push(name);
    }
    Ok(done)
}

/// Deals with what earlier orders for `names` left at the CA, before a new one is placed.
/// Best effort: an order that cannot be read or deactivated (the CA no longer knows it, or
/// already ended it) is forgotten all the same, with a warning; it never holds up the new
/// order, and what it left pending expires at the CA on its own.
pub(super) async fn settle_abandoned(
    account: &Account,
    journal: &dyn OrderJournal,
    names: &str,
) -> Result<(), TlsError> {
    for url in journal.unfinished(names).await? {
        match deactivate_pending(account, &url).await {
            Ok(done) => {
                if !done.is_empty() {
                    tracing::info!(order = %clean(&url), names = ?done, "abandoned order's authorizations deactivated");
                }
            }
            Err(e) => {
                tracing::warn!(order = %clean(&url), error = %e, "abandoned order not deactivated; forgetting it");
            }
        }
        journal.done(&url).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::names_key;

    #[test]
    fn the_key_of_a_set_of_names_ignores_case_order_and_trailing_dots() {
        let a = names_key(&["MX1.example.test.".into(), "a.example.test".into()]);
        let b = names_key(&["a.example.test".into(), "mx1.example.test".into()]);
        assert_eq!(a, b);
        assert_eq!(a, "a.example.test,mx1.example.test");
    }
}
