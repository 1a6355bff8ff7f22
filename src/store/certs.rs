//! Certificates: each node's chain with its expiry, the private key sealed (or in a 0600
//! file); renewals supersede the old one; a rollback retires it. ACME account credentials,
//! one per directory, kept the same way.

use super::steps::{set_task, touch, upsert_resource};
use super::{rows, Store, StoreError};
use crate::clock::ts;
use crate::domain::{ResourceKind, Step};
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A certificate to record. The key is sealed or in a file: never both, never in the clear.
#[derive(Debug, Clone)]
pub struct NewCert {
    pub id: String,
    pub hostname: String,
    pub names: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub chain_pem: String,
    pub key_sealed: Option<Vec<u8>>,
    pub key_file: Option<String>,
}

/// A certificate row as the demo writes it.
#[derive(Debug, Clone)]
pub struct NewCertIns {
    pub id: String,
    pub request_id: String,
    pub hostname: String,
    pub names: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub chain_pem: String,
    pub key_sealed: Option<Vec<u8>>,
    pub key_file: Option<String>,
    pub status: &'static str,
    pub created_at: String,
}

pub(super) fn insert_demo(conn: &super::Conn, c: &NewCertIns) -> Result<(), StoreError> {
    let names = serde_json::to_string(&c.names).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO certificates (id, request_id, hostname, names, issuer, serial, not_before, not_after, chain_pem,
                                   key_sealed, key_file, status, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        c.id,
        c.request_id,
        c.hostname,
        names,
        c.issuer,
        c.serial,
        c.not_before,
        c.not_after,
        c.chain_pem,
        c.key_sealed,
        c.key_file,
        c.status,
        c.created_at
    ])?;
    Ok(())
}

/// A certificate as listed: never its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRow {
    pub id: String,
    pub request_id: Option<String>,
    pub hostname: String,
    pub names: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// active | superseded | retired
    pub status: String,
    /// "sealed", "file", or "destroyed" (its node was torn down).
    pub key_stored: String,
    pub created_at: String,
    pub renewed_at: Option<String>,
    pub renew_error: Option<String>,
    /// The node it belongs to, if one is registered.
    pub node_id: Option<String>,
    pub node_status: Option<String>,
    /// The process renewing it, and until when its claim holds (it may have lapsed: a
    /// renewal cut off, cleaned up by the next one).
    pub renewing_by: Option<String>,
    pub renewing_until: Option<String>,
    /// When the CA revoked it (a torn-down node's), or why it could not.
    pub revoked_at: Option<String>,
    pub revoke_error: Option<String>,
}

const SELECT: &str = "SELECT c.id, c.request_id, c.hostname, c.names, c.issuer, c.serial, c.not_before, c.not_after,
        c.status, CASE WHEN c.key_sealed IS NOT NULL THEN 'sealed' WHEN c.key_file IS NOT NULL THEN 'file' ELSE 'destroyed' END,
        c.created_at, c.renewed_at, c.renew_error, n.id, n.status, c.renewing_by, c.renewing_until,
        c.revoked_at, c.revoke_error
     FROM certificates c LEFT JOIN nodes n ON n.request_id = c.request_id";

impl CertRow {
    /// Whether a renewal's claim on it still holds at `now`.
    pub fn renewing(&self, now: DateTime<Utc>) -> bool {
        self.renewing_until
            .as_deref()
            .and_then(crate::clock::parse_ts)
            .is_some_and(|u| u > now)
    }

    /// What became of a torn-down node's certificate, as words: revoked (when) or why not,
    /// and its key destroyed. Unsanitized: from the store and the CA.
    pub fn fate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(at) = &self.revoked_at {
            out.push(format!("revoked {}", at.get(..19).unwrap_or(at)));
        } else if let Some(e) = &self.revoke_error {
            out.push(format!("not revoked: {e}"));
        }
        if self.key_stored == "destroyed" {
            out.push("key destroyed".into());
        } else if self.status == "retired" && self.key_stored == "file" {
            out.push("key file NOT deleted".into());
        }
        out
    }
}

fn cert_row(r: &crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<CertRow> {
    let names: String = r.get(3)?;
    Ok(CertRow {
        id: r.get(0)?,
        request_id: r.get(1)?,
        hostname: r.get(2)?,
        names: serde_json::from_str(&names).unwrap_or_default(),
        issuer: r.get(4)?,
        serial: r.get(5)?,
        not_before: r.get(6)?,
        not_after: r.get(7)?,
        status: r.get(8)?,
        key_stored: r.get(9)?,
        created_at: r.get(10)?,
        renewed_at: r.get(11)?,
        renew_error: r.get(12)?,
        node_id: r.get(13)?,
        node_status: r.get(14)?,
        renewing_by: r.get(15)?,
        renewing_until: r.get(16)?,
        revoked_at: r.get(17)?,
        revoke_error: r.get(18)?,
    })
}

fn insert(
    conn: &super::Conn,
    c: &NewCert,
    request_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let names = serde_json::to_string(&c.names).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO certificates (id, request_id, hostname, names, issuer, serial, not_before, not_after, chain_pem,
                                   key_sealed, key_file, status, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)",
    )?
    .execute(params![
        c.id,
        request_id,
        c.hostname,
        names,
        c.issuer,
        c.serial,
        ts(c.not_before),
        ts(c.not_after),
        c.chain_pem,
        c.key_sealed,
        c.key_file,
        ts(now)
    ])?;
    conn.prepare_cached("UPDATE nodes SET cert_not_after = ? WHERE request_id = ?")?
        .execute(params![ts(c.not_after), request_id])?;
    Ok(())
}

pub(super) fn for_request(c: &super::Conn, id: &str) -> Result<Vec<CertRow>, StoreError> {
    rows(
        c,
        &format!("{SELECT} WHERE c.request_id = ? ORDER BY c.created_at DESC, c.rowid DESC"),
        params![id],
        cert_row,
    )
}

impl Store {
    /// The configure step obtained a certificate: recorded with the request's
    /// `certificate` resource and the sub-task done, in one write. An earlier active
    /// certificate of the request (a retried step) is superseded.
    pub async fn cert_issued(
        &self,
        f: &super::Fenced,
        step: Step,
        task: &'static str,
        cert: NewCert,
        provider: &str,
        detail: String,
    ) -> Result<Option<String>, StoreError> {
        let (f, provider) = (f.clone(), provider.to_string());
        self.write(move |conn| {
            let cancel = touch(conn, &f)?;
            conn.prepare_cached(
                "UPDATE certificates SET status = 'superseded' WHERE request_id = ? AND status = 'active'",
            )?
            .execute(params![f.id])?;
            insert(conn, &cert, Some(&f.id), f.now)?;
            upsert_resource(
                conn,
                &f,
                &super::ResourceWrite {
                    kind: Some(ResourceKind::Certificate),
                    allocated: true,
                    provider: Some(provider),
                    provider_ref: Some(cert.id.clone()),
                    detail: Some(detail.clone()),
                },
            )?;
            set_task(conn, &f, step, task, "done", Some(&detail))?;
            Ok(cancel)
        })
        .await
    }

    /// A renewal replaced `old_id` with `cert`.
    pub async fn cert_renewed(
        &self,
        old_id: &str,
        cert: NewCert,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let old = old_id.to_string();
        self.write(move |conn| {
            let request_id: Option<Option<String>> = conn
                .prepare_cached(
                    "UPDATE certificates SET status = 'superseded', renewed_at = ?, renew_error = NULL
                     WHERE id = ? AND status = 'active' RETURNING request_id",
                )?
                .query_row(params![ts(now), old], |r| r.get(0))
                .optional()?;
            let Some(request_id) = request_id else {
                return Err(StoreError::Rejected(format!(
                    "certificate {old} is no longer active; the renewal is not recorded"
                )));
            };
            conn.prepare_cached(
                "UPDATE certificates SET renewing_by = NULL, renewing_until = NULL WHERE id = ?",
            )?
            .execute(params![old])?;
            insert(conn, &cert, request_id.as_deref(), now)?;
            conn.prepare_cached(
                "UPDATE resources SET provider_ref = ? WHERE request_id = ? AND kind = 'certificate' AND status <> 'released'",
            )?
            .execute(params![cert.id, request_id])?;
            Ok(())
        })
        .await
    }

    /// A renewal failed; it is tried again at the next check. The claim is released.
    pub async fn cert_renew_failed(&self, id: &str, error: String) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE certificates SET renew_error = ?, renewing_by = NULL, renewing_until = NULL WHERE id = ?",
            )?
            .execute(params![error, id])?;
            Ok(())
        })
        .await
    }

    /// Claims an active certificate for renewal by `owner` until `until`, unless another
    /// owner's claim still holds. `Ok(None)`: someone else is renewing it (or it is no
    /// longer active). `Ok(Some(lapsed))`: ours; `lapsed` names the owner of an earlier
    /// claim that ran out without being released, a renewal cut off in the middle.
    pub async fn cert_claim_renewal(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Option<String>>, StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |conn| {
            let held: Option<(Option<String>, Option<String>)> = conn
                .prepare_cached(
                    "SELECT renewing_by, renewing_until FROM certificates WHERE id = ? AND status = 'active'",
                )?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((by, by_until)) = held else {
                return Ok(None);
            };
            let live = by_until.as_deref().is_some_and(|u| u > ts(now).as_str());
            if live && by.as_deref() != Some(owner.as_str()) {
                return Ok(None);
            }
            conn.prepare_cached(
                "UPDATE certificates SET renewing_by = ?, renewing_until = ? WHERE id = ?",
            )?
            .execute(params![owner, ts(until), id])?;
            Ok(Some(if live { None } else { by }))
        })
        .await
    }

    /// A rollback: the request's certificates are retired, with how each revocation went
    /// (`revoked`: certificate id → `Ok` or why not), and its node shows none. The sealed
    /// keys of all its certificates are destroyed here. Key files are not forgotten yet: the
    /// returned ones (recorded paths, those no other request's certificate names) are for
    /// the caller to delete, then to report with [`Store::cert_key_files_destroyed`]; a file
    /// named elsewhere too is only forgotten by this request. Until a file is reported
    /// destroyed, it stays recorded, and the certificate says its key is kept in a file.
    pub async fn cert_retired(
        &self,
        f: &super::Fenced,
        revoked: Vec<(String, Result<(), String>)>,
    ) -> Result<(usize, Vec<String>), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            for (id, outcome) in &revoked {
                let (at, error) = match outcome {
                    Ok(()) => (Some(ts(f.now)), None),
                    Err(e) => (None, Some(e.as_str())),
                };
                conn.prepare_cached(
                    "UPDATE certificates SET revoked_at = ?, revoke_error = ? WHERE id = ? AND request_id = ?",
                )?
                .execute(params![at, error, id, f.id])?;
            }
            let n = conn
                .prepare_cached(
                    "UPDATE certificates SET status = 'retired' WHERE request_id = ? AND status = 'active'",
                )?
                .execute(params![f.id])?;
            conn.prepare_cached("UPDATE nodes SET cert_not_after = NULL WHERE request_id = ?")?
                .execute(params![f.id])?;
            conn.prepare_cached(
                "UPDATE certificates SET key_sealed = NULL WHERE request_id = ? AND status <> 'active'",
            )?
            .execute(params![f.id])?;
            let files: Vec<String> = conn
                .prepare_cached(
                    "SELECT DISTINCT key_file FROM certificates
                     WHERE request_id = ? AND status <> 'active' AND key_file IS NOT NULL
                     ORDER BY key_file",
                )?
                .query_map(params![f.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut ours = Vec::new();
            for file in files {
                let elsewhere: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM certificates WHERE key_file = ? AND request_id IS NOT ?)",
                    )?
                    .query_row(params![file, f.id], |r| r.get(0))?;
                if elsewhere {
                    conn.prepare_cached(
                        "UPDATE certificates SET key_file = NULL WHERE request_id = ? AND key_file = ?",
                    )?
                    .execute(params![f.id, file])?;
                } else {
                    ours.push(file);
                }
            }
            Ok((n, ours))
        })
        .await
    }

    /// Records that these key files (as recorded) of the request's retired certificates are
    /// gone from the disk: their certificates' keys now read as destroyed.
    pub async fn cert_key_files_destroyed(
        &self,
        f: &super::Fenced,
        files: Vec<String>,
    ) -> Result<(), StoreError> {
        let f = f.clone();
        self.write(move |conn| {
            touch(conn, &f)?;
            for file in &files {
                conn.prepare_cached(
                    "UPDATE certificates SET key_file = NULL
                     WHERE request_id = ? AND status <> 'active' AND key_file = ?",
                )?
                .execute(params![f.id, file])?;
            }
            Ok(())
        })
        .await
    }

    /// Active certificates, soonest expiry first; `due_before` keeps only those whose node
    /// is live and that expire before it (what the renewal task works on).
    pub async fn certificates(
        &self,
        due_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<CertRow>, StoreError> {
        self.read(move |c| match due_before {
            Some(t) => rows(
                c,
                &format!(
                    "{SELECT} WHERE c.status = 'active' AND c.not_after <= ?
                       AND n.id IS NOT NULL AND n.status <> 'decommissioned'
                     ORDER BY c.not_after"
                ),
                params![ts(t)],
                cert_row,
            ),
            None => rows(
                c,
                &format!("{SELECT} WHERE c.status = 'active' ORDER BY c.not_after"),
                [],
                cert_row,
            ),
        })
        .await
    }

    /// A request's certificates, newest first (for `request show`).
    pub async fn request_certificates(&self, request_id: &str) -> Result<Vec<CertRow>, StoreError> {
        let id = request_id.to_string();
        self.read(move |c| for_request(c, &id)).await
    }

    /// The active certificate of a hostname: its id and chain (what its node must serve).
    pub async fn active_cert_for_host(
        &self,
        hostname: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let host = hostname.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, chain_pem FROM certificates WHERE hostname = ? AND status = 'active'
                 ORDER BY not_after DESC LIMIT 1",
            )?
            .query_row(params![host], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    /// The chain and the kept key of a certificate (for the renewal and the verify step).
    pub async fn cert_material(
        &self,
        id: &str,
    ) -> Result<Option<(String, Option<Vec<u8>>, Option<String>)>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT chain_pem, key_sealed, key_file FROM certificates WHERE id = ?",
            )?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?)
        })
        .await
    }

    /// The kept ACME account credentials for a directory.
    pub async fn acme_account(
        &self,
        directory: &str,
    ) -> Result<Option<(Option<Vec<u8>>, Option<String>)>, StoreError> {
        let d = directory.to_string();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT sealed, key_file FROM acme_accounts WHERE directory = ?")?
                    .query_row(params![d], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?,
            )
        })
        .await
    }

    /// Keeps new account credentials; the first kept for a directory wins (returns false
    /// when one was there already).
    pub async fn save_acme_account(
        &self,
        directory: &str,
        sealed: Option<Vec<u8>>,
        key_file: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let d = directory.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO acme_accounts (directory, sealed, key_file, created_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![d, sealed, key_file, ts(now)])?;
            Ok(n == 1)
        })
        .await
    }
}
