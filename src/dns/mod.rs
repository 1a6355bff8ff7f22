//! DNS providers: where a node's planned records (see `domain::records`) are published, and
//! the check that they answer from the zone's authoritative server as planned.
//!
//! Publishing adds records beside whatever the zone already holds at the same name and type,
//! and refuses a conflict (a second SPF or DMARC record would make both invalid); removing
//! takes away exactly the records that were added, so a rollback leaves the rest of the zone
//! as it was.

pub mod powerdns;
pub mod propagation;

use crate::domain::records::PlannedRecord;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One record as published: enough to remove exactly it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Published {
    /// Fully qualified, with the trailing dot.
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    /// As the provider stores it (TXT: quoted strings).
    pub content: String,
}

impl Published {
    pub fn of(r: &PlannedRecord) -> Published {
        Published {
            name: r.name.clone(),
            rtype: r.rtype.to_string(),
            ttl: r.ttl,
            content: r.rdata(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Worth retrying: timeouts, 5xx, connection failures.
    #[error("{0}")]
    Transient(String),
    /// Refused as it stands (a 422, an unknown zone, a conflicting record).
    #[error("{0}")]
    Rejected(String),
}

impl DnsError {
    pub fn retryable(&self) -> bool {
        matches!(self, DnsError::Transient(_))
    }
}

#[async_trait]
pub trait DnsProvider: Send + Sync {
    fn name(&self) -> &str;
    /// Adds the records to `zone` beside what it holds; returns exactly what was added
    /// (a record already there with the same content is not added twice, nor returned).
    async fn publish(
        &self,
        zone: &str,
        records: &[PlannedRecord],
    ) -> Result<Vec<Published>, DnsError>;
    /// Removes exactly these records, leaving others of the same name and type. Removing
    /// records that are already gone succeeds.
    async fn remove(&self, zone: &str, records: &[Published]) -> Result<(), DnsError>;
}

/// The content prefix whose records may exist only once per name (RFC 7208 §3.2 for SPF;
/// DMARC's single policy record).
pub(crate) fn singleton_prefix(rtype: &str, content: &str) -> Option<&'static str> {
    if rtype != "TXT" {
        return None;
    }
    let text = content.trim_start_matches('"').to_ascii_lowercase();
    ["v=spf1", "v=dmarc1", "v=stsv1", "v=tlsrptv1"]
        .into_iter()
        .find(|p| text.starts_with(p))
}
