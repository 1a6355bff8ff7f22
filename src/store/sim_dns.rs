//! The simulated DNS provider's records. Only `dns::sim` calls these.

use super::{rows, Conn, Store, StoreError};
use crate::clock::ts;
use crate::store::sql::params;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One record the simulated provider holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimDnsRecord {
    /// Lowercase, with the trailing dot.
    pub zone: String,
    /// Lowercase, with the trailing dot.
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub content: String,
    pub created_at: String,
}

/// A record to add (the zone is the call's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDnsNew {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub content: String,
}

const COLUMNS: &str = "zone, name, rtype, ttl, content, created_at";

fn record(r: &crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<SimDnsRecord> {
    Ok(SimDnsRecord {
        zone: r.get(0)?,
        name: r.get(1)?,
        rtype: r.get(2)?,
        ttl: r.get(3)?,
        content: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn record_set(
    conn: &Conn,
    zone: &str,
    name: &str,
    rtype: &str,
) -> Result<Vec<SimDnsRecord>, StoreError> {
    rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM sim_dns_records WHERE zone = ? AND name = ? AND rtype = ?
             ORDER BY created_at, content"
        ),
        params![zone, name, rtype],
        record,
    )
}

impl Store {
    /// Adds records to `zone` in one transaction: reads the record sets at `keys` (name,
    /// rtype), lets `decide` pick what to add beside them (or refuse, with a message), and
    /// writes that. Each added record's set takes its TTL. Returns what `decide` returned.
    pub async fn sim_dns_publish<F>(
        &self,
        zone: &str,
        keys: Vec<(String, String)>,
        decide: F,
        now: DateTime<Utc>,
    ) -> Result<Result<Vec<SimDnsNew>, String>, StoreError>
    where
        F: FnOnce(&[SimDnsRecord]) -> Result<Vec<SimDnsNew>, String> + Send + 'static,
    {
        let zone = zone.to_string();
        self.write(move |conn| {
            let mut current = Vec::new();
            for (name, rtype) in &keys {
                current.extend(record_set(conn, &zone, name, rtype)?);
            }
            let add = match decide(&current) {
                Ok(add) => add,
                Err(why) => return Ok(Err(why)),
            };
            let at = ts(now);
            for r in &add {
                conn.prepare_cached(
                    "INSERT INTO sim_dns_records (zone, name, rtype, ttl, content, created_at)
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )?
                .execute(params![zone, r.name, r.rtype, r.ttl, r.content, at])?;
                conn.prepare_cached(
                    "UPDATE sim_dns_records SET ttl = ? WHERE zone = ? AND name = ? AND rtype = ?",
                )?
                .execute(params![r.ttl, zone, r.name, r.rtype])?;
            }
            Ok(Ok(add))
        })
        .await
    }

    /// Deletes exactly these (name, rtype, content) records from `zone`; content is compared
    /// without surrounding whitespace. Returns how many rows went.
    pub async fn sim_dns_remove(
        &self,
        zone: &str,
        records: Vec<(String, String, String)>,
    ) -> Result<usize, StoreError> {
        let zone = zone.to_string();
        self.write(move |conn| {
            let mut gone = 0;
            for (name, rtype, content) in &records {
                gone += conn
                    .prepare_cached(
                        "DELETE FROM sim_dns_records
                         WHERE zone = ? AND name = ? AND rtype = ? AND trim(content) = trim(?)",
                    )?
                    .execute(params![zone, name, rtype, content])?;
            }
            Ok(gone)
        })
        .await
    }

    /// The record set at `name` of type `rtype` in `zone`, oldest first.
    pub async fn sim_dns_lookup(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<SimDnsRecord>, StoreError> {
        let (zone, name, rtype) = (zone.to_string(), name.to_string(), rtype.to_string());
        self.read(move |conn| record_set(conn, &zone, &name, &rtype))
            .await
    }

    /// The record sets at several names and types, in one read.
    pub async fn sim_dns_lookup_many(
        &self,
        zone: &str,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<Vec<SimDnsRecord>>, StoreError> {
        let zone = zone.to_string();
        self.read(move |conn| {
            keys.iter()
                .map(|(name, rtype)| record_set(conn, &zone, name, rtype))
                .collect()
        })
        .await
    }

    /// Every record of `zone`, by name and type.
    pub async fn sim_dns_zone(&self, zone: &str) -> Result<Vec<SimDnsRecord>, StoreError> {
        let zone = zone.to_string();
        self.read(move |conn| {
            rows(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM sim_dns_records WHERE zone = ?
                     ORDER BY name, rtype, created_at, content"
                ),
                [zone],
                record,
            )
        })
        .await
    }
}
