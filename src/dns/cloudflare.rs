//! Cloudflare through its HTTP API v4. A zone's id is found by its name (`GET /zones?name=`)
//! and kept; records are read per name and type (`GET /zones/{id}/dns_records`, every page),
//! created one at a time (`POST`) and deleted by id (`DELETE`).
//!
//! Cloudflare keeps one object per record, not record sets, so publishing adds records beside
//! the others at the same name and type without touching them, and removing deletes exactly
//! the matching ones. All the reading and checking (a record already there, a second SPF) is
//! done before the first write; should a create fail halfway through, the records this call
//! created are deleted again, so a failed publish adds nothing (best effort: the error says
//! when that clean-up failed too).
//!
//! Text forms: Cloudflare names have no trailing dot (`Published` names keep it); an MX's
//! preference is a field of its own (`"10 mx1.example.com."` is sent as priority 10 and
//! content `mx1.example.com`, and read back to the same text); TXT content is sent in the
//! quoted-strings form (`"part1" "part2"`, as [`PlannedRecord::rdata`] gives), which is what
//! Cloudflare documents for TXT content and returns as stored. TXT values are compared by
//! their text (the strings joined), so a record written elsewhere without quotes matches.
//!
//! The API token is sent only in the `Authorization` header; it is in no error and not in
//! the `Debug` output.

use super::{singleton_conflict, txt_text, DnsError, DnsProvider, Published};
use crate::domain::records::PlannedRecord;
use crate::domain::validate::sanitize;
use crate::untrusted::untrusted_text;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Cloudflare's API root.
pub const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Records asked for per page of a listing.
const PER_PAGE: u32 = 100;
/// Pages followed at most in one listing (a runaway `total_pages` must not loop forever).
const MAX_PAGES: u32 = 500;
/// Cloudflare's code for "An identical record already exists."
const IDENTICAL_RECORD: i64 = 81058;

pub struct Cloudflare {
    base: String,
    token: String,
    http: reqwest::Client,
    /// Zone name (lowercase, no trailing dot) → zone id.
    zones: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The envelope around every answer.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: serde_json::Value,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_chain: Vec<ApiMessage>,
}

#[derive(Debug, Deserialize)]
struct ResultInfo {
    #[serde(default)]
    page: u32,
    #[serde(default)]
    total_pages: u32,
}

#[derive(Debug, Deserialize)]
struct ZoneObj {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct RecordObj {
    id: String,
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    content: String,
    #[serde(default)]
    ttl: u32,
    #[serde(default)]
    priority: Option<u16>,
}

/// Why a call failed, with what the caller may need to tell cases apart.
#[derive(Debug)]
struct Failure {
    /// The HTTP status; `None` when no answer came.
    status: Option<u16>,
    codes: Vec<i64>,
    error: DnsError,
}

impl From<Failure> for DnsError {
    fn from(f: Failure) -> DnsError {
        f.error
    }
}

/// A zone or record name as Cloudflare writes it: lowercase, no trailing dot.
fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Types whose content is a host name (written with the trailing dot in `Published`).
fn names_a_host(rtype: &str) -> bool {
    matches!(rtype, "CNAME" | "NS" | "PTR")
}

/// Whether two contents of type `rtype` are the same record.
fn same(rtype: &str, a: &str, b: &str) -> bool {
    if rtype == "TXT" {
        txt_text(a) == txt_text(b)
    } else {
        a.trim().eq_ignore_ascii_case(b.trim())
    }
}

/// A record as Cloudflare returns it, in `Published` form.
fn published(r: &RecordObj) -> Published {
    let rtype = r.rtype.to_ascii_uppercase();
    let content = if rtype == "MX" {
        format!(
            "{} {}.",
            r.priority.unwrap_or(0),
            r.content.trim().trim_end_matches('.')
        )
    } else if names_a_host(&rtype) {
        format!("{}.", r.content.trim().trim_end_matches('.'))
    } else {
        r.content.clone()
    };
    Published {
        name: format!("{}.", bare(&r.name)),
        rtype,
        ttl: r.ttl,
        content,
    }
}

/// The body that creates `p`.
fn create_body(p: &Published) -> Result<serde_json::Value, DnsError> {
    let name = bare(&p.name);
    let mut body = json!({"type": p.rtype, "name": name, "ttl": p.ttl});
    if p.rtype == "MX" {
        let parsed = p
            .content
            .split_once(char::is_whitespace)
            .and_then(|(pref, host)| Some((pref.parse::<u16>().ok()?, host.trim())));
        let Some((priority, host)) = parsed.filter(|(_, h)| !h.is_empty()) else {
            return Err(DnsError::Rejected(format!(
                "cloudflare: MX content {:?} at {} is not \"PREFERENCE HOST\"",
                sanitize(&p.content),
                p.name
            )));
        };
        let host = host.trim_end_matches('.');
        body["content"] = json!(if host.is_empty() { "." } else { host });
        body["priority"] = json!(priority);
    } else if names_a_host(&p.rtype) {
        body["content"] = json!(p.content.trim().trim_end_matches('.'));
    } else {
        body["content"] = json!(p.content);
    }
    if matches!(p.rtype.as_str(), "A" | "AAAA" | "CNAME") {
        // Mail hosts must answer with their own address, never Cloudflare's proxy.
        body["proxied"] = json!(false);
    }
    Ok(body)
}

fn describe(errors: &[ApiMessage]) -> String {
    errors
        .iter()
        .map(|e| {
            let mut s = format!("{} {}", e.code, e.message);
            if !e.error_chain.is_empty() {
                s.push_str(&format!(" ({})", describe(&e.error_chain)));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn codes(errors: &[ApiMessage], out: &mut Vec<i64>) {
    for e in errors {
        out.push(e.code);
        codes(&e.error_chain, out);
    }
}

impl Cloudflare {
    /// `base` is the API's root, e.g. [`DEFAULT_BASE`]; the token comes from the environment
    /// variable the config names and is only ever sent in the `Authorization` header.
    pub fn new(base: &str, token: String, timeout: Duration) -> Result<Cloudflare, String> {
        if token.trim().is_empty() {
            return Err("dns.cloudflare: the API token is empty".to_string());
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("dns.cloudflare: cannot build the HTTP client: {e}"))?;
        crate::untrusted::remember_secret(&token);
        Ok(Cloudflare {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            zones: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` with the token and returns the envelope's result and paging.
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(serde_json::Value, Option<ResultInfo>), Failure> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            // reqwest's text names the URL, never the headers: the token is not in it.
            Failure {
                status: None,
                codes: vec![],
                error: DnsError::Transient(format!(
                    "cloudflare: {what}: {}",
                    untrusted_text(&e.to_string())
                )),
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| Failure {
            status: Some(status.as_u16()),
            codes: vec![],
            error: DnsError::Transient(format!(
                "cloudflare: {what}: HTTP {}: the answer broke off: {}",
                status.as_u16(),
                untrusted_text(&e.to_string())
            )),
        })?;
        let envelope = match serde_json::from_str::<Envelope>(&text) {
            Ok(env) if status.is_success() && env.success => {
                return Ok((env.result, env.result_info))
            }
            other => other,
        };
        let (why, found) = match &envelope {
            Ok(env) if !env.errors.is_empty() => {
                let mut found = Vec::new();
                codes(&env.errors, &mut found);
                (describe(&env.errors), found)
            }
            _ => (text, vec![]),
        };
        // The body is the server's: it may echo the token it was sent.
        let why = untrusted_text(&why);
        let msg = format!("cloudflare: {what}: HTTP {}: {why}", status.as_u16());
        let error = if status.is_success() && envelope.is_err() {
            DnsError::Transient(format!(
                "cloudflare: {what}: HTTP {}: unreadable answer",
                status.as_u16()
            ))
        } else if status.is_server_error() || status.as_u16() == 429 {
            DnsError::Transient(msg)
        } else {
            DnsError::Rejected(msg)
        };
        Err(Failure {
            status: Some(status.as_u16()),
            codes: found,
            error,
        })
    }

    fn parse<T: DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T, DnsError> {
        serde_json::from_value(value).map_err(|e| {
            DnsError::Transient(format!(
                "cloudflare: {what}: unreadable answer: {}",
                untrusted_text(&e.to_string())
            ))
        })
    }

    /// The zone's id, asked once and then kept. `Ok(None)`: the account has no such zone
    /// (or the token may not see it).
    async fn find_zone(&self, zone: &str) -> Result<Option<String>, DnsError> {
        let name = bare(zone);
        if let Some(id) = self.cache().get(&name) {
            return Ok(Some(id.clone()));
        }
        let what = format!("find zone {name}");
        let (result, _) = self
            .call(
                self.http
                    .get(format!("{}/zones", self.base))
                    .query(&[("name", name.as_str()), ("per_page", "50")]),
                &what,
            )
            .await?;
        let zones: Vec<ZoneObj> = Self::parse(result, &what)?;
        let Some(found) = zones.into_iter().find(|z| bare(&z.name) == name) else {
            return Ok(None);
        };
        self.cache().insert(name, found.id.clone());
        Ok(Some(found.id))
    }

    async fn zone_id(&self, zone: &str) -> Result<String, DnsError> {
        self.find_zone(zone).await?.ok_or_else(|| {
            DnsError::Rejected(format!(
                "cloudflare: no zone {} in the account (or the API token may not read it)",
                bare(zone)
            ))
        })
    }

    /// Forgets a zone id the API no longer knows (the zone was deleted and made again).
    fn forget_on_404(&self, zone: &str, f: &Failure) {
        if f.status == Some(404) {
            self.cache().remove(&bare(zone));
        }
    }

    /// Every record at `name` of type `rtype`, following the pages.
    async fn records(
        &self,
        zone: &str,
        zid: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<RecordObj>, DnsError> {
        let what = format!("list {rtype} records at {name}");
        let (name, per_page) = (bare(name), PER_PAGE.to_string());
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let page_text = page.to_string();
            let req = self
                .http
                .get(format!("{}/zones/{zid}/dns_records", self.base))
                .query(&[
                    ("name", name.as_str()),
                    ("type", rtype),
                    ("per_page", per_page.as_str()),
                    ("page", page_text.as_str()),
                ]);
            let (result, info) = match self.call(req, &what).await {
                Ok(r) => r,
                Err(f) => {
                    self.forget_on_404(zone, &f);
                    return Err(f.into());
                }
            };
            let batch: Vec<RecordObj> = Self::parse(result, &what)?;
            let empty = batch.is_empty();
            // Cloudflare matches the name exactly; the type filter is checked again anyway.
            out.extend(
                batch
                    .into_iter()
                    .filter(|r| bare(&r.name) == name && r.rtype.eq_ignore_ascii_case(rtype)),
            );
            let total = info.as_ref().map_or(1, |i| i.total_pages);
            let at = info.as_ref().map_or(page, |i| i.page.max(page));
            if empty || at >= total || page >= MAX_PAGES {
                return Ok(out);
            }
            page = at + 1;
        }
    }

    async fn create(&self, zid: &str, p: &Published) -> Result<RecordObj, Failure> {
        let what = format!("create {} record at {}", p.rtype, p.name);
        let body = create_body(p).map_err(|error| Failure {
            status: None,
            codes: vec![],
            error,
        })?;
        let (result, _) = self
            .call(
                self.http
                    .post(format!("{}/zones/{zid}/dns_records", self.base))
                    .json(&body),
                &what,
            )
            .await?;
        Self::parse(result, &what).map_err(|error| Failure {
            status: None,
            codes: vec![],
            error,
        })
    }

    /// Deletes one record by id; one that is already gone counts as deleted.
    async fn delete(&self, zid: &str, id: &str, p: &Published) -> Result<(), DnsError> {
        let what = format!("delete {} record at {}", p.rtype, p.name);
        match self
            .call(
                self.http
                    .delete(format!("{}/zones/{zid}/dns_records/{id}", self.base)),
                &what,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.status == Some(404) => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    /// Deletes what a failed publish had created, and says so in its error.
    async fn undo(&self, zid: &str, created: &[(String, Published)], err: DnsError) -> DnsError {
        if created.is_empty() {
            return err;
        }
        let mut left = Vec::new();
        for (id, p) in created {
            if let Err(e) = self.delete(zid, id, p).await {
                left.push(format!("{} {} ({e})", p.name, p.rtype));
            }
        }
        let note = if left.is_empty() {
            format!(
                "the {} record(s) created before it were deleted again",
                created.len()
            )
        } else {
            format!(
                "created before it and not deleted again: {}",
                left.join(", ")
            )
        };
        match err {
            DnsError::Transient(m) => DnsError::Transient(format!("{m}; {note}")),
            DnsError::Rejected(m) => DnsError::Rejected(format!("{m}; {note}")),
        }
    }
}

#[async_trait]
impl DnsProvider for Cloudflare {
    fn name(&self) -> &str {
        "cloudflare"
    }

    async fn publish(
        &self,
        zone: &str,
        records: &[PlannedRecord],
    ) -> Result<Vec<Published>, DnsError> {
        let zname = bare(zone);
        super::check_in_zone("cloudflare", &zname, records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let zid = self.zone_id(zone).await?;
        // What the zone holds at each name and type we write, then what we add to it.
        let mut sets: Vec<((String, String), Vec<String>)> = Vec::new();
        let mut todo: Vec<Published> = Vec::new();
        for r in records {
            let ours = Published::of(r);
            let key = (format!("{}.", bare(&ours.name)), ours.rtype.clone());
            let idx = match sets.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let held = self
                        .records(zone, &zid, &key.0, &key.1)
                        .await?
                        .iter()
                        .map(|x| published(x).content)
                        .collect();
                    sets.push((key.clone(), held));
                    sets.len() - 1
                }
            };
            let held = &mut sets[idx].1;
            if held.iter().any(|c| same(&ours.rtype, c, &ours.content)) {
                continue;
            }
            singleton_conflict("cloudflare", &ours, held.iter().map(String::as_str))
                .map_err(DnsError::Rejected)?;
            create_body(&ours)?;
            held.push(ours.content.clone());
            todo.push(ours);
        }
        let mut created: Vec<(String, Published)> = Vec::new();
        for ours in &todo {
            match self.create(&zid, ours).await {
                Ok(rec) => {
                    let mut got = published(&rec);
                    if got.name != ours.name.to_ascii_lowercase() || got.rtype != ours.rtype {
                        // An answer about another record: keep what was asked for.
                        got = ours.clone();
                    }
                    created.push((rec.id, got));
                }
                // Written meanwhile by someone else: there, but not ours to remove.
                Err(f) if f.codes.contains(&IDENTICAL_RECORD) => continue,
                Err(f) => {
                    self.forget_on_404(zone, &f);
                    return Err(self.undo(&zid, &created, f.into()).await);
                }
            }
        }
        Ok(created.into_iter().map(|(_, p)| p).collect())
    }

    async fn remove(&self, zone: &str, records: &[Published]) -> Result<(), DnsError> {
        if records.is_empty() {
            return Ok(());
        }
        // The zone itself is gone: so are our records.
        let Some(zid) = self.find_zone(zone).await? else {
            return Ok(());
        };
        let mut keys: Vec<(String, String)> = records
            .iter()
            .map(|r| (format!("{}.", bare(&r.name)), r.rtype.to_ascii_uppercase()))
            .collect();
        keys.sort();
        keys.dedup();
        for (name, rtype) in keys {
            let held = match self.records(zone, &zid, &name, &rtype).await {
                Ok(h) => h,
                Err(DnsError::Rejected(m)) if m.contains("HTTP 404") => return Ok(()),
                Err(e) => return Err(e),
            };
            for rec in held {
                let p = published(&rec);
                let ours = records.iter().any(|r| {
                    format!("{}.", bare(&r.name)) == name
                        && r.rtype.eq_ignore_ascii_case(&rtype)
                        && same(&rtype, &r.content, &p.content)
                });
                if ours {
                    self.delete(&zid, &rec.id, &p).await?;
                }
            }
        }
        Ok(())
    }

    async fn lookup(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<Published>, DnsError> {
        let zid = self.zone_id(zone).await?;
        let rtype = rtype.to_ascii_uppercase();
        Ok(self
            .records(zone, &zid, name, &rtype)
            .await?
            .iter()
            .map(published)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rtype: &str, content: &str, priority: Option<u16>) -> RecordObj {
        RecordObj {
            id: "x".into(),
            name: "Example.COM".into(),
            rtype: rtype.into(),
            content: content.into(),
            ttl: 300,
            priority,
        }
    }

    #[test]
    fn mx_priority_is_its_own_field_and_reads_back_to_the_same_text() {
        let p = Published {
            name: "example.com.".into(),
            rtype: "MX".into(),
            ttl: 300,
            content: "10 mx1.example.com.".into(),
        };
        let body = create_body(&p).expect("body");
        assert_eq!(body["priority"], 10);
        assert_eq!(body["content"], "mx1.example.com");
        assert_eq!(body["name"], "example.com");
        assert!(body.get("proxied").is_none());
        let back = published(&rec("MX", "mx1.example.com", Some(10)));
        assert_eq!(back, p);
        let bad = Published {
            content: "mx1.example.com.".into(),
            ..p
        };
        assert!(matches!(create_body(&bad), Err(DnsError::Rejected(_))));
    }

    #[test]
    fn txt_is_compared_by_its_text() {
        assert_eq!(txt_text(r#""v=spf1 " "-all""#), "v=spf1 -all");
        assert_eq!(txt_text(r#""a\"b""#), "a\"b");
        assert_eq!(txt_text("plain text"), "plain text");
        assert_eq!(txt_text(r#""broken"#), r#""broken"#);
        assert!(same("TXT", "\"v=spf1 -all\"", "v=spf1 -all"));
        assert!(!same("TXT", "\"v=spf1 -all\"", "\"v=spf1 ~all\""));
        assert!(same("MX", "10 MX1.example.com.", "10 mx1.example.com."));
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let cf = Cloudflare::new(DEFAULT_BASE, "s3cret-token".into(), Duration::from_secs(1))
            .expect("client");
        let shown = format!("{cf:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(Cloudflare::new(DEFAULT_BASE, " ".into(), Duration::from_secs(1)).is_err());
    }
}
