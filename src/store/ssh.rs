//! mailfleet's SSH identity and the host keys it pinned.

use super::{Conn, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};

/// The identity as kept: its public line, and where its private half is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptIdentity {
    pub public_key: String,
    pub key_sealed: Option<Vec<u8>>,
    pub key_file: Option<String>,
}

fn identity(c: &Conn, name: &str) -> Result<Option<KeptIdentity>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT public_key, key_sealed, key_file FROM ssh_identity WHERE name = ?",
    )?
    .query_row([name], |r| {
        Ok(KeptIdentity {
            public_key: r.get(0)?,
            key_sealed: r.get(1)?,
            key_file: r.get(2)?,
        })
    })
    .optional()?)
}

impl Store {
    pub async fn ssh_identity(&self, name: &str) -> Result<Option<KeptIdentity>, StoreError> {
        let name = name.to_string();
        self.read(move |c| identity(c, &name)).await
    }

    /// Records an identity unless one of that name is there already (another process made
    /// it first); returns the one recorded.
    pub async fn save_ssh_identity(
        &self,
        name: &str,
        kept: KeptIdentity,
        now: DateTime<Utc>,
    ) -> Result<KeptIdentity, StoreError> {
        let name = name.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO ssh_identity (name, public_key, key_sealed, key_file, created_at)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![
                name,
                kept.public_key,
                kept.key_sealed,
                kept.key_file,
                ts(now)
            ])?;
            identity(c, &name)?.ok_or(StoreError::NotFound(name))
        })
        .await
    }

    /// The host key pinned for an instance, if any.
    pub async fn pinned_host_key(&self, instance: &str) -> Result<Option<String>, StoreError> {
        let instance = instance.to_string();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT fingerprint FROM ssh_host_keys WHERE instance = ?")?
                    .query_row([instance], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    /// Pins an instance's host key on first contact; a pin already there is kept (the
    /// caller checked against it).
    pub async fn pin_host_key(
        &self,
        instance: &str,
        address: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (i, a, f) = (
            instance.to_string(),
            address.to_string(),
            fingerprint.to_string(),
        );
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO ssh_host_keys (instance, address, fingerprint, pinned_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (instance) DO NOTHING",
            )?
            .execute(params![i, a, f, ts(now)])?;
            Ok(())
        })
        .await
    }

    /// Forgets an instance's pin (it was deleted: its address may be another's next).
    pub async fn forget_host_key(&self, instance: &str) -> Result<(), StoreError> {
        let instance = instance.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM ssh_host_keys WHERE instance = ?")?
                .execute([instance])?;
            Ok(())
        })
        .await
    }
}
