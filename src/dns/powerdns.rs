//! PowerDNS through its HTTP API (`/api/v1/servers/{server}/zones/{zone}`): a zone's rrsets
//! are read, ours are merged into them, and each changed rrset is written back with
//! `changetype: REPLACE` (or `DELETE` once nothing is left in it).

use super::{singleton_conflict, DnsError, DnsProvider, Published};
use crate::domain::records::PlannedRecord;
use crate::untrusted::untrusted_text;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct PowerDns {
    base: String,
    server: String,
    api_key: String,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

#[derive(Debug, Deserialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    ttl: u32,
    #[serde(default)]
    records: Vec<Rec>,
}

#[derive(Debug, Deserialize)]
struct Rec {
    content: String,
    #[serde(default)]
    disabled: bool,
}

/// What PowerDNS answers in an error body.
#[derive(Debug, Deserialize)]
struct ApiError {
    error: String,
}

fn zone_id(zone: &str) -> String {
    format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase())
}

/// Content compared as PowerDNS would: surrounding whitespace ignored, names lowercase.
fn same(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

impl PowerDns {
    /// `base` is the API's root, e.g. `http://127.0.0.1:8081`; the key comes from the
    /// environment variable the config names and is only ever sent in the `X-API-Key` header.
    pub fn new(
        base: &str,
        server: &str,
        api_key: String,
        timeout: Duration,
    ) -> Result<PowerDns, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("dns.powerdns: cannot build the HTTP client: {e}"))?;
        crate::untrusted::remember_secret(&api_key);
        Ok(PowerDns {
            base: base.trim_end_matches('/').to_string(),
            server: server.to_string(),
            api_key,
            http,
        })
    }

    fn url(&self, zone: &str) -> String {
        format!(
            "{}/api/v1/servers/{}/zones/{}",
            self.base,
            self.server,
            zone_id(zone)
        )
    }

    async fn failure(resp: reqwest::Response, what: &str) -> DnsError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let why = serde_json::from_str::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        // The body is the server's: it may echo the key it was sent.
        let why = untrusted_text(&why);
        let msg = format!("powerdns: {what}: HTTP {}: {why}", status.as_u16());
        if status.is_server_error() || status.as_u16() == 429 {
            DnsError::Transient(msg)
        } else {
            DnsError::Rejected(msg)
        }
    }

    fn transport(e: &reqwest::Error, what: &str) -> DnsError {
        // The key is only in a header, but the text passes the same gate as any other.
        DnsError::Transient(format!(
            "powerdns: {what}: {}",
            untrusted_text(&e.to_string())
        ))
    }

    /// The zone's rrsets as (name, type) → (ttl, contents).
    async fn rrsets(
        &self,
        zone: &str,
    ) -> Result<BTreeMap<(String, String), (u32, Vec<String>)>, DnsError> {
        let what = format!("read zone {}", zone_id(zone));
        let resp = self
            .http
            .get(self.url(zone))
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .map_err(|e| Self::transport(&e, &what))?;
        if !resp.status().is_success() {
            return Err(Self::failure(resp, &what).await);
        }
        let z: Zone = resp.json().await.map_err(|e| {
            DnsError::Transient(format!(
                "powerdns: {what}: unreadable answer: {}",
                untrusted_text(&e.to_string())
            ))
        })?;
        Ok(z.rrsets
            .into_iter()
            .map(|r| {
                (
                    (r.name.to_ascii_lowercase(), r.rtype.to_ascii_uppercase()),
                    (
                        r.ttl,
                        r.records
                            .into_iter()
                            .filter(|x| !x.disabled)
                            .map(|x| x.content)
                            .collect(),
                    ),
                )
            })
            .collect())
    }

    async fn patch(
        &self,
        zone: &str,
        rrsets: Vec<serde_json::Value>,
        what: &str,
    ) -> Result<(), DnsError> {
        if rrsets.is_empty() {
            return Ok(());
        }
        let resp = self
            .http
            .patch(self.url(zone))
            .header("X-API-Key", &self.api_key)
            .json(&json!({ "rrsets": rrsets }))
            .send()
            .await
            .map_err(|e| Self::transport(&e, what))?;
        if !resp.status().is_success() {
            return Err(Self::failure(resp, what).await);
        }
        Ok(())
    }
}

fn replace(name: &str, rtype: &str, ttl: u32, contents: &[String]) -> serde_json::Value {
    if contents.is_empty() {
        return json!({"name": name, "type": rtype, "changetype": "DELETE"});
    }
    let records: Vec<serde_json::Value> = contents
        .iter()
        .map(|c| json!({"content": c, "disabled": false}))
        .collect();
    json!({"name": name, "type": rtype, "ttl": ttl, "changetype": "REPLACE", "records": records})
}

#[async_trait]
impl DnsProvider for PowerDns {
    fn name(&self) -> &str {
        "powerdns"
    }

    async fn publish(
        &self,
        zone: &str,
        records: &[PlannedRecord],
    ) -> Result<Vec<Published>, DnsError> {
        let zid = zone_id(zone);
        super::check_in_zone("powerdns", &zid, records)?;
        let current = self.rrsets(zone).await?;
        let mut changed: BTreeMap<(String, String), (u32, Vec<String>)> = BTreeMap::new();
        let mut added = Vec::new();
        for r in records {
            let ours = Published::of(r);
            let key = (ours.name.to_ascii_lowercase(), ours.rtype.clone());
            let entry = changed
                .entry(key.clone())
                .or_insert_with(|| current.get(&key).cloned().unwrap_or((ours.ttl, Vec::new())));
            if entry.1.iter().any(|c| same(c, &ours.content)) {
                continue;
            }
            singleton_conflict("powerdns", &ours, entry.1.iter().map(String::as_str))
                .map_err(DnsError::Rejected)?;
            entry.0 = ours.ttl;
            entry.1.push(ours.content.clone());
            added.push(ours);
        }
        let body: Vec<serde_json::Value> = changed
            .iter()
            .filter(|(key, _)| {
                added
                    .iter()
                    .any(|a| a.name.to_ascii_lowercase() == key.0 && a.rtype == key.1)
            })
            .map(|((name, rtype), (ttl, contents))| replace(name, rtype, *ttl, contents))
            .collect();
        self.patch(zone, body, &format!("publish in {zid}")).await?;
        Ok(added)
    }

    async fn remove(&self, zone: &str, records: &[Published]) -> Result<(), DnsError> {
        if records.is_empty() {
            return Ok(());
        }
        let zid = zone_id(zone);
        let current = match self.rrsets(zone).await {
            Ok(c) => c,
            // The zone itself is gone: so are our records.
            Err(DnsError::Rejected(m)) if m.contains("HTTP 404") => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut body = Vec::new();
        let mut keys: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.name.to_ascii_lowercase(), r.rtype.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let Some((ttl, contents)) = current.get(&key) else {
                continue;
            };
            let left: Vec<String> = contents
                .iter()
                .filter(|c| {
                    !records.iter().any(|r| {
                        r.name.to_ascii_lowercase() == key.0
                            && r.rtype == key.1
                            && same(&r.content, c)
                    })
                })
                .cloned()
                .collect();
            if left.len() != contents.len() {
                body.push(replace(&key.0, &key.1, *ttl, &left));
            }
        }
        self.patch(zone, body, &format!("remove from {zid}")).await
    }

    async fn lookup(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<Published>, DnsError> {
        let mut sets = self
            .lookup_many(zone, &[(name.to_string(), rtype.to_string())])
            .await?;
        Ok(sets.pop().unwrap_or_default())
    }

    /// One read of the zone answers them all.
    async fn lookup_many(
        &self,
        zone: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Published>>, DnsError> {
        let current = self.rrsets(zone).await?;
        Ok(keys
            .iter()
            .map(|(name, rtype)| {
                let key = (name.to_ascii_lowercase(), rtype.to_ascii_uppercase());
                current
                    .get(&key)
                    .map(|(ttl, contents)| {
                        contents
                            .iter()
                            .map(|c| Published {
                                name: key.0.clone(),
                                rtype: key.1.clone(),
                                ttl: *ttl,
                                content: c.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }
}
