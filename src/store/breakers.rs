//! Providers' circuit breakers as they last changed (see `providers::guard`): written when
//! a circuit opens or closes, read by admission, `cluster list` and the console.

use super::events::{emit, EventTarget};
use super::{rows, Conn, Store, StoreError};
use crate::clock::{parse_ts, ts};
use crate::store::sql::params;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;

/// A circuit that opened or closed.
#[derive(Debug, Clone)]
pub struct BreakerChange {
    pub provider: String,
    pub open: bool,
    pub failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub now: DateTime<Utc>,
}

/// A provider's circuit as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerRow {
    pub provider: String,
    pub open: bool,
    pub failures: i64,
    pub opened_at: Option<String>,
    pub retry_at: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: String,
}

impl BreakerRow {
    /// Why requests on this provider wait, when its circuit is open.
    pub fn wait_reason(&self) -> Option<String> {
        if !self.open {
            return None;
        }
        let retry = self.retry_at.as_deref().and_then(parse_ts);
        let failures = u32::try_from(self.failures).unwrap_or(u32::MAX);
        Some(format!(
            "{BREAKER_WAIT}{}: {}",
            self.provider,
            circuit_open(failures, self.last_error.as_deref(), retry)
        ))
    }
}

/// "circuit open after 5 failed calls in a row (last: …); tried again at 12:00:31 UTC": the
/// words of an open circuit, for the guard's refusal and a waiting request's reason alike.
pub fn circuit_open(
    failures: u32,
    last_error: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> String {
    format!(
        "circuit open after {failures} failed calls in a row{}{}",
        last_error
            .map(|w| format!(" (last: {w})"))
            .unwrap_or_default(),
        retry_at
            .map(|t| format!("; tried again at {}", t.format("%H:%M:%S UTC")))
            .unwrap_or_default()
    )
}

/// How every wait reason an open circuit gives starts: `work --until-idle` waits for these
/// (the engine probes the provider) instead of reporting them as waiting for a person.
pub const BREAKER_WAIT: &str = "provider unavailable: ";

pub(crate) fn all(conn: &Conn) -> Result<Vec<BreakerRow>, StoreError> {
    rows(
        conn,
        "SELECT provider, open, failures, opened_at, retry_at, last_error, updated_at
         FROM provider_breakers ORDER BY provider",
        [],
        |r| {
            Ok(BreakerRow {
                provider: r.get(0)?,
                open: r.get::<_, i64>(1)? != 0,
                failures: r.get(2)?,
                opened_at: r.get(3)?,
                retry_at: r.get(4)?,
                last_error: r.get(5)?,
                updated_at: r.get(6)?,
            })
        },
    )
}

/// The open circuits, by provider.
pub(super) fn open(conn: &Conn) -> Result<HashMap<String, BreakerRow>, StoreError> {
    Ok(all(conn)?
        .into_iter()
        .filter(|b| b.open)
        .map(|b| (b.provider.clone(), b))
        .collect())
}

impl Store {
    /// Records a circuit that opened or closed, with its event.
    pub async fn record_breaker(&self, c: BreakerChange) -> Result<(), StoreError> {
        self.write(move |conn| {
            let at = ts(c.now);
            let error = c.last_error.as_deref().map(crate::untrusted::untrusted_text);
            conn.prepare_cached(
                "INSERT INTO provider_breakers (provider, open, failures, opened_at, retry_at, last_error,
                     updated_at, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (provider) DO UPDATE SET open = ?2, failures = ?3, opened_at = ?4,
                     retry_at = ?5, last_error = ?6, updated_at = ?7, change_seq = ?8",
            )?
            .execute(params![
                c.provider,
                c.open,
                c.failures,
                c.opened_at.map(ts),
                c.retry_at.map(ts),
                error,
                at,
                super::stamp(conn)?
            ])?;
            let (name, payload) = if c.open {
                (
                    "provider.circuit_opened",
                    json!({"provider": c.provider, "failures": c.failures,
                        "retry_at": c.retry_at.map(ts), "last_error": error}),
                )
            } else {
                ("provider.circuit_closed", json!({"provider": c.provider}))
            };
            let target = EventTarget {
                request_id: None,
                node_id: None,
                tenant: None,
            };
            emit(conn, name, &target, "engine", &payload, &at)
        })
        .await
    }

    /// Every provider's circuit as last recorded.
    pub async fn breakers(&self) -> Result<Vec<BreakerRow>, StoreError> {
        self.read(all).await
    }
}
