//! A manual provider's access details (seed 002): the request waits in `awaiting_input`
//! until an administrator enters the vendor-managed server's IP address and SSH port.

use super::events::audit;
use super::requests::{apply_change, Change};
use super::{Conn, Store, StoreError};
use crate::clock::ts;
use crate::domain::ids::short;
use crate::domain::{RequestEvent, RequestState};
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};
use std::net::Ipv4Addr;

/// What an administrator entered for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualAccess {
    pub request_id: String,
    pub ip: Ipv4Addr,
    pub ssh_port: u16,
    pub provided_by: String,
    pub released: bool,
}

const ACCESS_COLUMNS: &str = "request_id, ip, ssh_port, provided_by, released_at";

/// One `manual_access` row (`ACCESS_COLUMNS`), checked.
fn access_row(
    r: &crate::store::sql::Row<'_>,
) -> crate::store::sql::SqlResult<Result<ManualAccess, StoreError>> {
    let (request_id, ip, port, by, released): (String, String, i64, String, Option<String>) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let bad = |what: &str| {
        StoreError::Rejected(format!(
            "manual_access of {}: bad {what}",
            short(&request_id)
        ))
    };
    let (ip, ssh_port) = match (ip.parse(), u16::try_from(port)) {
        (Ok(ip), Ok(port)) => (ip, port),
        (Err(_), _) => return Ok(Err(bad("ip"))),
        (_, Err(_)) => return Ok(Err(bad("ssh_port"))),
    };
    Ok(Ok(ManualAccess {
        ip,
        ssh_port,
        request_id,
        provided_by: by,
        released: released.is_some(),
    }))
}

fn access(conn: &Conn, request_id: &str) -> Result<Option<ManualAccess>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ACCESS_COLUMNS} FROM manual_access WHERE request_id = ?"
    ))?
    .query_row([request_id], access_row)
    .optional()?
    .transpose()
}

/// Why `ip` cannot be a server's public address, if it cannot.
pub fn unusable_ip(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("is unspecified")
    } else if ip.is_loopback() {
        Some("is a loopback address")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some("is not a host address")
    } else if ip.is_link_local() {
        Some("is a link-local address")
    } else {
        None
    }
}

impl Store {
    /// An administrator enters a waiting request's access details: the request goes back
    /// to allocating, due at once. Refused unless it is awaiting input, for an address
    /// that is not a host's, or for one another live request was given.
    pub async fn provide_access(
        &self,
        request_id: &str,
        ip: Ipv4Addr,
        ssh_port: u16,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestState, StoreError> {
        if let Some(why) = unusable_ip(ip) {
            return Err(StoreError::Rejected(format!("--ip: {ip} {why}")));
        }
        if ssh_port == 0 {
            return Err(StoreError::Rejected(
                "--ssh-port: must be 1 to 65535".into(),
            ));
        }
        let (id, actor) = (request_id.to_string(), actor.to_string());
        self.write(move |conn| {
            let taken: Option<String> = conn
                .prepare_cached(
                    "SELECT request_id FROM manual_access WHERE ip = ? AND released_at IS NULL AND request_id <> ?",
                )?
                .query_row(params![ip.to_string(), id], |r| r.get(0))
                .optional()?;
            if let Some(other) = taken {
                return Err(StoreError::Rejected(format!(
                    "--ip: {ip} is already request {}'s",
                    short(&other)
                )));
            }
            let reason = format!("access details entered by {actor}: {ip}, SSH port {ssh_port}");
            let to = apply_change(
                conn,
                &Change {
                    id: &id,
                    event: RequestEvent::InputProvided,
                    fence: None,
                    actor: &actor,
                    reason: Some(&reason),
                    at: now,
                },
            )?
            .to;
            let at = ts(now);
            conn.prepare_cached(
                "INSERT INTO manual_access (request_id, ip, ssh_port, provided_by, provided_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (request_id) DO UPDATE SET ip = ?2, ssh_port = ?3, provided_by = ?4,
                     provided_at = ?5, released_at = NULL",
            )?
            .execute(params![id, ip.to_string(), ssh_port, actor, at])?;
            conn.prepare_cached("UPDATE requests SET wait_reason = NULL, next_run_at = ? WHERE id = ?")?
                .execute(params![at, id])?;
            audit(conn, &at, &actor, "request.provide", Some(&id), Some(&reason))?;
            Ok(to)
        })
        .await
    }

    /// The access details entered for a request, if any.
    pub async fn manual_access(
        &self,
        request_id: &str,
    ) -> Result<Option<ManualAccess>, StoreError> {
        let id = request_id.to_string();
        self.read(move |c| access(c, &id)).await
    }

    /// Every live request's access details, for a manual provider's inventory.
    pub async fn manual_access_live(&self) -> Result<Vec<ManualAccess>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {ACCESS_COLUMNS} FROM manual_access WHERE released_at IS NULL ORDER BY provided_at"
            );
            super::rows(c, &sql, [], access_row)?.into_iter().collect()
        })
        .await
    }

    /// The server is given back to its vendor: its access details no longer serve.
    pub async fn release_manual_access(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = request_id.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE manual_access SET released_at = ? WHERE request_id = ? AND released_at IS NULL",
            )?
            .execute(params![ts(now), id])?;
            Ok(())
        })
        .await
    }
}
