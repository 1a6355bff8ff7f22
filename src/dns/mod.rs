//! DNS providers: where a node's planned records (see `domain::records`) are published, and
//! the check that they answer from the zone's authoritative server as planned.
//!
//! Publishing adds records beside whatever the zone already holds at the same name and type,
//! and refuses a conflict (a second SPF or DMARC record would make both invalid); removing
//! takes away exactly the records that were added, so a rollback leaves the rest of the zone
//! as it was.

pub mod cloudflare;
pub mod powerdns;
pub mod propagation;
pub mod sim;

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
    /// What the provider's API holds at `name` (fully qualified) of type `rtype`, as
    /// `Published` values in the same text form `publish` returns. Used to verify records
    /// where no authoritative server can be asked over DNS (the sim), and to confirm that a
    /// rollback left nothing behind.
    async fn lookup(&self, zone: &str, name: &str, rtype: &str)
        -> Result<Vec<Published>, DnsError>;
    /// [`lookup`](Self::lookup) for several (name, type) pairs; a provider that can answer
    /// them in one round trip does.
    async fn lookup_many(
        &self,
        zone: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Published>>, DnsError> {
        let mut out = Vec::with_capacity(keys.len());
        for (name, rtype) in keys {
            out.push(self.lookup(zone, name, rtype).await?);
        }
        Ok(out)
    }
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

/// Refuses `ours` when it would be a second record of a kind that may exist only once at
/// its name (a second SPF or DMARC record makes both invalid): `held` is what the name and
/// type hold now, in the provider's text form. The error names the record already there.
pub(crate) fn singleton_conflict<'a>(
    provider: &str,
    ours: &Published,
    held: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let Some(prefix) = singleton_prefix(&ours.rtype, &ours.content) else {
        return Ok(());
    };
    match held
        .into_iter()
        .find(|c| singleton_prefix(&ours.rtype, c) == Some(prefix))
    {
        Some(other) => Err(format!(
            "{provider}: {} already has a {prefix} record ({}); a second one would break both",
            ours.name,
            crate::domain::validate::sanitize(other)
        )),
        None => Ok(()),
    }
}

/// The text of a TXT value: its quoted strings unescaped and joined; a value that is not in
/// the quoted form is its own text.
pub(crate) fn txt_text(content: &str) -> String {
    let s = content.trim();
    if !s.starts_with('"') {
        return s.to_string();
    }
    let mut out = String::new();
    let mut chars = s.chars();
    loop {
        match chars.next() {
            None => return out,
            Some(c) if c.is_whitespace() => continue,
            Some('"') => loop {
                match chars.next() {
                    None => return s.to_string(),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e) => out.push(e),
                        None => return s.to_string(),
                    },
                    Some(c) => out.push(c),
                }
            },
            Some(_) => return s.to_string(),
        }
    }
}

/// Refuses a publish that names a record outside `zone`, before anything is sent: `who`
/// (the provider) and the first such name in the error.
pub(crate) fn check_in_zone(
    who: &str,
    zone: &str,
    records: &[PlannedRecord],
) -> Result<(), DnsError> {
    let zone = zone.trim_end_matches('.');
    match records.iter().find(|r| !in_zone(&r.name, zone)) {
        Some(r) => Err(DnsError::Rejected(format!(
            "{who}: {} is not in zone {zone}.",
            crate::domain::validate::sanitize(&r.name)
        ))),
        None => Ok(()),
    }
}

/// Whether `name` is `zone` itself or a name below it (case and trailing dots aside).
pub fn in_zone(name: &str, zone: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    name == zone
        || name
            .strip_suffix(zone.as_str())
            .is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::in_zone;

    #[test]
    fn a_name_is_in_its_zone_and_below_it_only() {
        assert!(in_zone("example.test.", "example.test"));
        assert!(in_zone("MX1.Example.Test.", "example.test."));
        assert!(in_zone("a.b.example.test", "example.test"));
        assert!(!in_zone("xexample.test", "example.test"));
        assert!(!in_zone("example.test.net", "example.test"));
        assert!(!in_zone("test", "example.test"));
    }
}
