//! The DNS records a sending node needs (seed 000: SPF, DKIM, DMARC, MX; plus the node's A
//! record, and optionally MTA-STS and TLS-RPT), planned from its hostname, IP, domain and
//! DKIM selector. Pure: publishing and verifying them is the DNS provider's and the verify
//! step's business.
//!
//! Checks: every name is fully qualified; SPF stays within its 10 DNS lookups (RFC 7208
//! §4.6.4 — counted over the mechanisms given here; an `include:` also costs what the included
//! record costs, which only a resolver can tell); a long TXT value (a 2048-bit DKIM key) is
//! split into strings of at most 255 octets, all in one record.

use super::validate::validate_domain;
use serde::Serialize;
use std::net::Ipv4Addr;

/// The most DNS lookups an SPF check may cause.
pub const SPF_MAX_LOOKUPS: usize = 10;
/// The longest character-string in a TXT record.
pub const TXT_CHUNK: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// What the records are planned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInput {
    /// The mail domain, e.g. example.com.
    pub domain: String,
    /// The node's name, e.g. mx1.example.com.
    pub hostname: String,
    pub ip: String,
    pub selector: String,
    /// The DKIM RSA public key, base64 of its SubjectPublicKeyInfo (the `p=` value).
    pub dkim_rsa: Option<String>,
    /// An Ed25519 public key (base64 of the raw 32 bytes), published beside the RSA one.
    pub dkim_ed25519: Option<(String, String)>,
    pub dmarc: DmarcPolicy,
    /// Where aggregate DMARC reports go; `None` gives `dmarc-reports@DOMAIN`.
    pub dmarc_rua: Option<String>,
    /// More SPF mechanisms ("include:_spf.example.net", "a", "mx", ...).
    pub spf_extra: Vec<String>,
    /// MTA-STS policy id, when MTA-STS is wanted.
    pub mta_sts_id: Option<String>,
    /// TLS-RPT report address, when TLS-RPT is wanted.
    pub tls_rpt_rua: Option<String>,
    pub ttl: u32,
}

/// One planned record. `values` holds one entry per record of the set; a TXT value is the
/// list of its character-strings (each ≤ 255 octets), joined by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRecord {
    /// What it is for: a, mx, spf, dkim, dkim-ed25519, dmarc, mta-sts, tls-rpt.
    pub purpose: &'static str,
    /// Fully qualified, with the trailing dot.
    pub name: String,
    pub rtype: &'static str,
    pub ttl: u32,
    pub content: String,
    /// For TXT: the character-strings the content is split into.
    pub strings: Vec<String>,
}

impl PlannedRecord {
    /// The record as PowerDNS and zone files write it: TXT as quoted strings.
    pub fn rdata(&self) -> String {
        if self.rtype == "TXT" {
            self.strings
                .iter()
                .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.content.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("spf: {count} DNS lookups ({which}); at most {SPF_MAX_LOOKUPS} are allowed")]
    SpfTooManyLookups { count: usize, which: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field,
        message: message.into(),
    }
}

/// `name.` for a name without its trailing dot.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// The mechanisms of an SPF record that cost a DNS lookup (RFC 7208 §4.6.4).
pub fn spf_lookups(mechanisms: &[String]) -> Vec<String> {
    mechanisms
        .iter()
        .filter(|m| {
            let m = m
                .trim_start_matches(['+', '-', '~', '?'])
                .to_ascii_lowercase();
            let word = m.split([':', '/', '=']).next().unwrap_or("");
            matches!(word, "include" | "a" | "mx" | "ptr" | "exists" | "redirect")
        })
        .cloned()
        .collect()
}

/// Splits a TXT value into character-strings of at most 255 octets (on character
/// boundaries).
pub fn split_txt(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in value.chars() {
        if cur.len() + ch.len_utf8() > TXT_CHUNK {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

fn txt(purpose: &'static str, name: String, ttl: u32, content: String) -> PlannedRecord {
    PlannedRecord {
        purpose,
        name,
        rtype: "TXT",
        ttl,
        strings: split_txt(&content),
        content,
    }
}

fn check_selector(s: &str) -> Result<(), PlanError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "selector",
            format!("{s:?} is not a DNS label (letters, digits and inner hyphens, 1-63)"),
        ))
    }
}

fn check_base64(field: &'static str, v: &str) -> Result<(), PlanError> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "is not a base64 public key"))
    }
}

/// Plans the node's records, in the order they are published.
pub fn plan(input: &RecordInput) -> Result<Vec<PlannedRecord>, PlanError> {
    validate_domain("domain", &input.domain).map_err(|e| invalid("domain", e.to_string()))?;
    validate_domain("hostname", &input.hostname).map_err(|e| invalid("hostname", e.to_string()))?;
    if !input.hostname.trim_end_matches('.').contains('.') {
        return Err(invalid(
            "hostname",
            format!("{:?} is not fully qualified", input.hostname),
        ));
    }
    let ip: Ipv4Addr = match input.ip.parse() {
        Ok(ip) => ip,
        Err(_) if input.ip.parse::<std::net::Ipv6Addr>().is_ok() => {
            return Err(invalid(
                "ip",
                format!(
                    "{} is an IPv6 address; an IPv4 address is expected",
                    input.ip
                ),
            ))
        }
        Err(_) => {
            return Err(invalid(
                "ip",
                format!("{:?} is not an IPv4 address", input.ip),
            ))
        }
    };
    check_selector(&input.selector)?;
    let ttl = input.ttl.clamp(60, 86_400);
    let domain = fqdn(&input.domain);
    let bare = domain.trim_end_matches('.');
    let host = fqdn(&input.hostname);

    let mut mechanisms = vec![format!("ip4:{ip}")];
    mechanisms.extend(input.spf_extra.iter().cloned());
    if let Some(bad) = mechanisms
        .iter()
        .find(|m| m.is_empty() || m.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid("spf", format!("{bad:?} is not an SPF mechanism")));
    }
    let costly = spf_lookups(&mechanisms);
    if costly.len() > SPF_MAX_LOOKUPS {
        return Err(PlanError::SpfTooManyLookups {
            count: costly.len(),
            which: costly.join(" "),
        });
    }

    let mut out = vec![
        PlannedRecord {
            purpose: "a",
            name: host.clone(),
            rtype: "A",
            ttl,
            content: ip.to_string(),
            strings: vec![],
        },
        // The node's own name receives its bounces (it is the envelope sender's domain),
        // and its SPF authorises exactly the node's address: per-node records, so nodes of
        // one domain never contend for the domain's single SPF record, and a customer's own
        // MX at the apex is left alone. DMARC's relaxed alignment accepts the subdomain.
        PlannedRecord {
            purpose: "mx",
            name: host.clone(),
            rtype: "MX",
            ttl,
            content: format!("10 {host}"),
            strings: vec![],
        },
        txt(
            "spf",
            host.clone(),
            ttl,
            format!("v=spf1 {} -all", mechanisms.join(" ")),
        ),
    ];
    if let Some(p) = &input.dkim_rsa {
        check_base64("dkim_rsa", p)?;
        out.push(txt(
            "dkim",
            format!("{}._domainkey.{domain}", input.selector),
            ttl,
            format!("v=DKIM1; k=rsa; p={p}"),
        ));
    }
    if let Some((selector, p)) = &input.dkim_ed25519 {
        check_selector(selector)?;
        check_base64("dkim_ed25519", p)?;
        out.push(txt(
            "dkim-ed25519",
            format!("{selector}._domainkey.{domain}"),
            ttl,
            format!("v=DKIM1; k=ed25519; p={p}"),
        ));
    }
    let rua = input
        .dmarc_rua
        .clone()
        .unwrap_or_else(|| format!("dmarc-reports@{bare}"));
    if !rua.contains('@') || rua.chars().any(|c| c.is_whitespace() || c == ';') {
        return Err(invalid(
            "dmarc_rua",
            format!("{rua:?} is not a mail address"),
        ));
    }
    out.push(txt(
        "dmarc",
        format!("_dmarc.{domain}"),
        ttl,
        format!("v=DMARC1; p={}; rua=mailto:{rua}", input.dmarc.as_str()),
    ));
    if let Some(id) = &input.mta_sts_id {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) || id.len() > 32 {
            return Err(invalid("mta_sts_id", "must be 1-32 letters and digits"));
        }
        out.push(txt(
            "mta-sts",
            format!("_mta-sts.{domain}"),
            ttl,
            format!("v=STSv1; id={id}"),
        ));
    }
    if let Some(r) = &input.tls_rpt_rua {
        if !r.contains('@') || r.chars().any(|c| c.is_whitespace() || c == ';') {
            return Err(invalid(
                "tls_rpt_rua",
                format!("{r:?} is not a mail address"),
            ));
        }
        out.push(txt(
            "tls-rpt",
            format!("_smtp._tls.{domain}"),
            ttl,
            format!("v=TLSRPTv1; rua=mailto:{r}"),
        ));
    }
    Ok(out)
}

/// The records as a zone-file snippet.
pub fn zone_snippet(records: &[PlannedRecord]) -> String {
    records
        .iter()
        .map(|r| format!("{}\t{}\tIN\t{}\t{}", r.name, r.ttl, r.rtype, r.rdata()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RecordInput {
        RecordInput {
            domain: "example.com".into(),
            hostname: "mx1.example.com".into(),
            ip: "192.0.2.10".into(),
            selector: "mf1".into(),
            dkim_rsa: Some("A".repeat(392)),
            dkim_ed25519: None,
            dmarc: DmarcPolicy::None,
            dmarc_rua: None,
            spf_extra: vec![],
            mta_sts_id: None,
            tls_rpt_rua: None,
            ttl: 300,
        }
    }

    #[test]
    fn the_five_records_fully_qualified() {
        let r = plan(&input()).expect("plan");
        let got: Vec<(&str, &str, &str)> = r
            .iter()
            .map(|r| (r.purpose, r.name.as_str(), r.rtype))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "mx1.example.com.", "A"),
                ("mx", "mx1.example.com.", "MX"),
                ("spf", "mx1.example.com.", "TXT"),
                ("dkim", "mf1._domainkey.example.com.", "TXT"),
                ("dmarc", "_dmarc.example.com.", "TXT"),
            ]
        );
        assert!(r.iter().all(|r| r.name.ends_with('.')));
        assert_eq!(r[1].content, "10 mx1.example.com.");
        assert_eq!(r[2].content, "v=spf1 ip4:192.0.2.10 -all");
        assert_eq!(
            r[4].content,
            "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"
        );
    }

    #[test]
    fn a_long_dkim_key_is_one_record_of_strings_of_at_most_255_octets() {
        let r = plan(&input()).expect("plan");
        let dkim = r.iter().find(|r| r.purpose == "dkim").expect("dkim");
        assert_eq!(dkim.strings.len(), 2);
        assert!(dkim.strings.iter().all(|s| s.len() <= TXT_CHUNK));
        assert_eq!(dkim.strings.concat(), dkim.content);
        assert_eq!(
            dkim.rdata().matches('"').count(),
            4,
            "two quoted strings, one record"
        );
        assert_eq!(split_txt(""), vec![String::new()]);
        assert_eq!(split_txt(&"x".repeat(510)).len(), 2);
        assert_eq!(split_txt(&"x".repeat(511)).len(), 3);
    }

    #[test]
    fn spf_counts_its_lookups() {
        let mut i = input();
        i.spf_extra = (0..10)
            .map(|n| format!("include:s{n}.example.net"))
            .collect();
        assert!(plan(&i).is_ok(), "ten is the limit");
        i.spf_extra.push("mx".into());
        let e = plan(&i).expect_err("eleven");
        assert_eq!(
            e.to_string().split(" (").next(),
            Some("spf: 11 DNS lookups")
        );
        assert_eq!(
            spf_lookups(&[
                "ip4:1.2.3.4".into(),
                "-a".into(),
                "ptr:x".into(),
                "all".into()
            ]),
            ["-a", "ptr:x"]
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        type Case = (fn(&mut RecordInput), &'static str);
        let cases: [Case; 6] = [
            (|i| i.domain = "bad domain".into(), "domain"),
            (|i| i.hostname = "mx1".into(), "hostname"),
            (
                |i| i.ip = "2001:db8::1".into(),
                "ip: 2001:db8::1 is an IPv6 address",
            ),
            (|i| i.ip = "300.1.1.1".into(), "ip: "),
            (|i| i.selector = "-x".into(), "selector"),
            (|i| i.dkim_rsa = Some("not base64!".into()), "dkim_rsa"),
        ];
        for (change, want) in cases {
            let mut i = input();
            change(&mut i);
            let e = plan(&i).expect_err(want).to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn optional_records_and_policy() {
        let mut i = input();
        i.dmarc = DmarcPolicy::Reject;
        i.dmarc_rua = Some("agg@reports.example.net".into());
        i.mta_sts_id = Some("20261123".into());
        i.tls_rpt_rua = Some("tls@example.com".into());
        i.dkim_ed25519 = Some((
            "mf1e".into(),
            "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into(),
        ));
        let r = plan(&i).expect("plan");
        let by = |p: &str| {
            r.iter()
                .find(|r| r.purpose == p)
                .map(|r| (r.name.clone(), r.content.clone()))
        };
        assert_eq!(
            by("dmarc").expect("dmarc").1,
            "v=DMARC1; p=reject; rua=mailto:agg@reports.example.net"
        );
        assert_eq!(by("mta-sts").expect("sts").0, "_mta-sts.example.com.");
        assert_eq!(by("tls-rpt").expect("rpt").0, "_smtp._tls.example.com.");
        assert!(by("dkim-ed25519")
            .expect("ed")
            .1
            .starts_with("v=DKIM1; k=ed25519; p="));
        let zone = zone_snippet(&r);
        assert!(
            zone.contains("mx1.example.com.\t300\tIN\tA\t192.0.2.10"),
            "{zone}"
        );
    }
}
