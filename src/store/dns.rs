//! The DNS records a request's configure step publishes: planned, published (and whether it
//! added them or found them there), verified over DNS, removed on rollback. Shared records
//! (a domain's DKIM or DMARC record, which every node of the domain relies on) are handed to
//! another live holder instead of being removed.

use super::steps::{set_task, touch, upsert_resource};
use super::{rows, Store, StoreError};
use crate::clock::ts;
use crate::domain::Step;
use crate::store::sql::params;
use serde::Serialize;

/// A record to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    pub zone: String,
    pub purpose: String,
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    /// As the provider stores it (TXT: quoted strings).
    pub content: String,
    /// What a resolver answers (TXT: the strings joined).
    pub want: String,
    /// It was in the zone already, with this content, before this request published:
    /// not ours to remove.
    pub present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecordRow {
    pub request_id: String,
    pub position: i64,
    pub zone: String,
    pub purpose: String,
    pub name: String,
    pub rtype: String,
    pub ttl: i64,
    pub content: String,
    pub want: String,
    pub provider: String,
    /// This request added it (and its rollback removes it, unless another live request
    /// relies on it).
    pub owned: bool,
    /// planned | published | verified | removed
    pub status: String,
    pub seen: Option<String>,
    pub published_at: Option<String>,
    pub verified_at: Option<String>,
    pub removed_at: Option<String>,
}

const COLUMNS: &str =
    "request_id, position, zone, purpose, name, rtype, ttl, content, want, provider, owned, status,
                       seen, published_at, verified_at, removed_at";

fn row(r: &crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<DnsRecordRow> {
    Ok(DnsRecordRow {
        request_id: r.get(0)?,
        position: r.get(1)?,
        zone: r.get(2)?,
        purpose: r.get(3)?,
        name: r.get(4)?,
        rtype: r.get(5)?,
        ttl: r.get(6)?,
        content: r.get(7)?,
        want: r.get(8)?,
        provider: r.get(9)?,
        owned: r.get(10)?,
        status: r.get(11)?,
        seen: r.get(12)?,
        published_at: r.get(13)?,
        verified_at: r.get(14)?,
        removed_at: r.get(15)?,
    })
}

pub(super) fn for_request(c: &super::Conn, id: &str) -> Result<Vec<DnsRecordRow>, StoreError> {
    rows(
        c,
        &format!("SELECT {COLUMNS} FROM dns_records WHERE request_id = ? ORDER BY position"),
        params![id],
        row,
    )
}

impl Store {
    /// Records the plan before anything is published, with the `dns` resource as an intent,
    /// so a crash after the provider call still knows what may be in the zone. Planning again
    /// (a retried step) keeps what an earlier attempt recorded.
    pub async fn plan_dns(
        &self,
        f: &super::Fenced,
        step: Step,
        task: &'static str,
        provider: &str,
        records: Vec<PlannedWrite>,
        resource: super::ResourceWrite,
    ) -> Result<Option<String>, StoreError> {
        let (f, provider) = (f.clone(), provider.to_string());
        self.write(move |conn| {
            let cancel = touch(conn, &f)?;
            for (i, r) in records.iter().enumerate() {
                conn.prepare_cached(
                    "INSERT INTO dns_records (request_id, position, zone, purpose, name, rtype, ttl, content, want, provider, owned, status)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned')
                     ON CONFLICT (request_id, position) DO NOTHING",
                )?
                .execute(params![
                    f.id, i as i64, r.zone, r.purpose, r.name, r.rtype, r.ttl, r.content, r.want, provider,
                    !r.present
                ])?;
            }
            upsert_resource(conn, &f, &resource)?;
            set_task(conn, &f, step, task, "running", resource.detail.as_deref())?;
            Ok(cancel)
        })
        .await
    }

    /// The provider call went through: every planned record is published; those the call
    /// added are this request's own. The sub-task is done, with its resource, in the same
    /// write.
    pub async fn dns_published(
        &self,
        f: &super::Fenced,
        step: Step,
        task: &'static str,
        added: Vec<(String, String, String)>,
        resource: super::ResourceWrite,
    ) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        let added_json = serde_json::to_string(&added).unwrap_or_else(|_| "[]".into());
        self.write(move |conn| {
            let cancel = touch(conn, &f)?;
            for (name, rtype, content) in &added {
                conn.prepare_cached(
                    // Most are planned as ours already: only a change is written (`owned` is in
                    // dns_records_owner's condition, so even a no-op rewrites that index).
                    "UPDATE dns_records SET owned = 1
                     WHERE request_id = ? AND name = ? AND rtype = ? AND content = ? AND owned = 0",
                )?
                .execute(params![f.id, name, rtype, content])?;
            }
            // A record we meant to add that the call did not add: either an earlier attempt
            // of ours added it (keep it ours), or another request added it at the same
            // moment (theirs: they own it, and it is handed back to us if they go first).
            conn.prepare_cached(
                "UPDATE dns_records AS d SET owned = 0
                 WHERE d.request_id = ?1 AND d.status = 'planned' AND d.owned = 1
                   AND NOT EXISTS (SELECT 1 FROM json_each(?2) a
                                   WHERE a.value ->> 0 = d.name AND a.value ->> 1 = d.rtype AND a.value ->> 2 = d.content)
                   AND EXISTS (SELECT 1 FROM dns_records o
                               WHERE o.name = d.name AND o.rtype = d.rtype AND o.content = d.content
                                 AND o.request_id <> d.request_id AND o.owned = 1 AND o.removed_at IS NULL)",
            )?
            .execute(params![f.id, added_json])?;
            conn.prepare_cached(
                "UPDATE dns_records SET status = 'published', published_at = ? WHERE request_id = ? AND status = 'planned'",
            )?
            .execute(params![ts(f.now), f.id])?;
            upsert_resource(conn, &f, &resource)?;
            set_task(conn, &f, step, task, "done", resource.detail.as_deref())?;
            Ok(cancel)
        })
        .await
    }

    /// What the last check over DNS answered for each record (by position); with `done`,
    /// the sub-task is done in the same write.
    pub async fn dns_checked(
        &self,
        f: &super::Fenced,
        seen: Vec<(i64, bool, String)>,
        done: Option<(Step, &'static str, String)>,
    ) -> Result<Option<String>, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            let cancel = touch(conn, &f)?;
            for (position, ok, text) in &seen {
                conn.prepare_cached(
                    "UPDATE dns_records SET seen = ?,
                         status = CASE WHEN ? THEN 'verified' ELSE status END,
                         verified_at = CASE WHEN ? THEN COALESCE(verified_at, ?) ELSE verified_at END
                     WHERE request_id = ? AND position = ? AND status IN ('published', 'verified')",
                )?
                .execute(params![text, ok, ok, ts(f.now), f.id, position])?;
            }
            if let Some((step, task, detail)) = &done {
                set_task(conn, &f, *step, task, "done", Some(detail))?;
            }
            Ok(cancel)
        })
        .await
    }

    pub async fn dns_records(&self, request_id: &str) -> Result<Vec<DnsRecordRow>, StoreError> {
        let id = request_id.to_string();
        self.read(move |c| for_request(c, &id)).await
    }

    /// The records a rollback must remove from the zone: this request's own, less those
    /// another live request also relies on (each of those is handed to it instead).
    pub async fn dns_to_remove(&self, f: &super::Fenced) -> Result<Vec<DnsRecordRow>, StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            let mine = rows(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM dns_records WHERE request_id = ? AND owned = 1 AND removed_at IS NULL ORDER BY position"
                ),
                params![f.id],
                row,
            )?;
            let mut out = Vec::new();
            for r in mine {
                let heir: Option<(String, i64)> = {
                    use crate::store::sql::OptionalExtension;
                    conn.prepare_cached(
                        "SELECT request_id, position FROM dns_records
                         WHERE name = ? AND rtype = ? AND content = ? AND request_id <> ?
                           AND removed_at IS NULL AND status <> 'planned'
                         ORDER BY owned DESC, published_at LIMIT 1",
                    )?
                    .query_row(params![r.name, r.rtype, r.content, f.id], |x| {
                        Ok((x.get(0)?, x.get(1)?))
                    })
                    .optional()?
                };
                match heir {
                    Some((req, pos)) => {
                        conn.prepare_cached(
                            "UPDATE dns_records SET owned = 1 WHERE request_id = ? AND position = ?",
                        )?
                        .execute(params![req, pos])?;
                        conn.prepare_cached(
                            "UPDATE dns_records SET owned = 0 WHERE request_id = ? AND position = ?",
                        )?
                        .execute(params![f.id, r.position])?;
                    }
                    None => out.push(r),
                }
            }
            Ok(out)
        })
        .await
    }

    /// The rollback removed what it had to: every record of this request is gone from its
    /// books.
    pub async fn dns_removed(&self, f: &super::Fenced) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            conn.prepare_cached(
                "UPDATE dns_records SET status = 'removed', removed_at = ? WHERE request_id = ? AND status <> 'removed'",
            )?
            .execute(params![ts(f.now), f.id])?;
            Ok(())
        })
        .await
    }
}
