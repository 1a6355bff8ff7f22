//! ACME orders in flight (`acme_orders`), and what reconcile needs to tell a challenge
//! record an order still uses from one an order left behind.

use super::{rows, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::params;
use chrono::{DateTime, Utc};

/// A request whose node's names may carry `_acme-challenge` records, and whether an order
/// for them may be under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeHolder {
    pub request_id: String,
    pub label: String,
    pub domain: Option<String>,
    pub state: String,
    /// A worker holds the request (it may be ordering its certificate).
    pub leased: bool,
    /// A renewal's claim on one of its certificates holds.
    pub renewing: bool,
    /// The names of its active certificates (the hostname is not repeated here).
    pub cert_names: Vec<String>,
}

impl Store {
    /// Keeps an order placed for `names` at `directory` before any challenge is answered.
    pub async fn acme_order_placed(
        &self,
        url: &str,
        directory: &str,
        names: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (url, dir, names, by) = (
            url.to_string(),
            directory.to_string(),
            names.to_string(),
            by.to_string(),
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO acme_orders (url, directory, names, placed_by, placed_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (url) DO NOTHING",
            )?
            .execute(params![url, dir, names, by, ts(now)])?;
            Ok(())
        })
        .await
    }

    /// Orders for `names` at `directory` that were placed and never finished, oldest first.
    pub async fn acme_orders_unfinished(
        &self,
        directory: &str,
        names: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (dir, names) = (directory.to_string(), names.to_string());
        self.read(move |c| {
            rows(
                c,
                "SELECT url FROM acme_orders WHERE directory = ? AND names = ? ORDER BY placed_at, url",
                params![dir, names],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Forgets an order: it finished, or what it left at the CA was dealt with.
    pub async fn acme_order_done(&self, url: &str) -> Result<(), StoreError> {
        let url = url.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM acme_orders WHERE url = ?")?
                .execute([url])?;
            Ok(())
        })
        .await
    }

    /// Every request whose node is live (admitted and not yet torn down), with what says
    /// whether an order for its names may be under way at `now`.
    pub async fn challenge_holders(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ChallengeHolder>, StoreError> {
        let at = ts(now);
        self.read(move |c| {
            let found = rows(
                c,
                "SELECT r.id, r.label, r.domain, r.state,
                        COALESCE(r.lease_expires_at >= ?1, FALSE) AS leased,
                        EXISTS (SELECT 1 FROM certificates k WHERE k.request_id = r.id AND k.status = 'active'
                                  AND k.renewing_until > ?1) AS renewing
                 FROM requests r
                 WHERE r.state NOT IN ('queued', 'pending_approval', 'rolled_back', 'deprovisioned', 'rejected')
                 ORDER BY r.created_at, r.id",
                [&at],
                |r| {
                    Ok(ChallengeHolder {
                        request_id: r.get(0)?,
                        label: r.get(1)?,
                        domain: r.get(2)?,
                        state: r.get(3)?,
                        leased: r.get(4)?,
                        renewing: r.get(5)?,
                        cert_names: Vec::new(),
                    })
                },
            )?;
            let mut out = Vec::with_capacity(found.len());
            for mut h in found {
                let lists: Vec<String> = rows(
                    c,
                    "SELECT names FROM certificates WHERE request_id = ? AND status = 'active'",
                    [&h.request_id],
                    |r| r.get(0),
                )?;
                for list in lists {
                    let names: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
                    h.cert_names.extend(names);
                }
                out.push(h);
            }
            Ok(out)
        })
        .await
    }
}
