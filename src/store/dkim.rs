//! DKIM keys in the store: the public half, and the private half sealed or its file's path.

use super::{rows, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::params;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A DKIM key as listed: never the private half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimKeyRow {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub public_key: String,
    /// "sealed" or "file".
    pub stored: String,
    pub key_file: Option<String>,
    pub created_at: String,
    pub retired_at: Option<String>,
}

impl Store {
    /// Records a new key; a domain and selector already used is refused.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        algorithm: &str,
        public_key: &str,
        sealed: Option<Vec<u8>>,
        key_file: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (domain, selector, algorithm, public_key) = (
            domain.to_string(),
            selector.to_string(),
            algorithm.to_string(),
            public_key.to_string(),
        );
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO dkim_keys (domain, selector, algorithm, public_key, sealed, key_file, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )?
                .execute(params![domain, selector, algorithm, public_key, sealed, key_file, ts(now)])?;
            if n == 0 {
                return Err(StoreError::Rejected(format!(
                    "selector: {domain} already has a key with selector {selector}"
                )));
            }
            Ok(())
        })
        .await
    }

    pub async fn dkim_keys(&self) -> Result<Vec<DkimKeyRow>, StoreError> {
        self.read(|c| {
            rows(
                c,
                "SELECT domain, selector, algorithm, public_key, CASE WHEN sealed IS NULL THEN 'file' ELSE 'sealed' END,
                        key_file, created_at, retired_at
                 FROM dkim_keys ORDER BY domain, created_at, rowid",
                [],
                |r| {
                    Ok(DkimKeyRow {
                        domain: r.get(0)?,
                        selector: r.get(1)?,
                        algorithm: r.get(2)?,
                        public_key: r.get(3)?,
                        stored: r.get(4)?,
                        key_file: r.get(5)?,
                        created_at: r.get(6)?,
                        retired_at: r.get(7)?,
                    })
                },
            )
        })
        .await
    }

    /// Retires a key: it no longer signs, and its record may go. Returns false when it was
    /// not found or already retired.
    pub async fn retire_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (domain, selector) = (domain.to_string(), selector.to_string());
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE dkim_keys SET retired_at = ? WHERE domain = ? AND selector = ? AND retired_at IS NULL",
                )?
                .execute(params![ts(now), domain, selector])?;
            Ok(n == 1)
        })
        .await
    }

    /// The sealed private half of a key, for the signer (never shown).
    pub async fn dkim_sealed(
        &self,
        domain: &str,
        selector: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (domain, selector) = (domain.to_string(), selector.to_string());
        self.read(move |c| {
            use crate::store::sql::OptionalExtension;
            Ok(
                c.prepare_cached("SELECT sealed FROM dkim_keys WHERE domain = ? AND selector = ?")?
                    .query_row(params![domain, selector], |r| {
                        r.get::<_, Option<Vec<u8>>>(0)
                    })
                    .optional()?
                    .flatten(),
            )
        })
        .await
    }
}
