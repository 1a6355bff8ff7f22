//! The record plan the DNS provider tests publish: a node of `example.test` with a DKIM key
//! as long as a 2048-bit one, so its TXT record is two strings.
//!
//! Included by `tests/*.rs` as `#[path = "support/records.rs"] mod records;`.
#![allow(dead_code)]

use mailfleet::domain::records::{DmarcPolicy, RecordInput};

pub fn input(host: &str, ip: &str) -> RecordInput {
    RecordInput {
        domain: "example.test".into(),
        hostname: host.into(),
        ip: ip.into(),
        selector: "mf1".into(),
        // The length of a 2048-bit key's p= value, so the record is two strings.
        dkim_rsa: Some(format!(
            "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA{}",
            "x".repeat(348)
        )),
        dkim_ed25519: None,
        dmarc: DmarcPolicy::None,
        dmarc_rua: None,
        spf_extra: vec![],
        mta_sts_id: None,
        tls_rpt_rua: None,
        ttl: 300,
    }
}

/// Every record `publish` returned reads back the same through `lookup`; returns the MX
/// contents at `mx_name`, sorted.
pub async fn read_back(
    dns: &dyn mailfleet::dns::DnsProvider,
    added: &[mailfleet::dns::Published],
    mx_name: &str,
) -> Vec<String> {
    for p in added {
        let got = dns
            .lookup("example.test", &p.name, &p.rtype)
            .await
            .expect("lookup");
        assert!(got.contains(p), "{p:?} not in {got:?}");
    }
    let mut contents: Vec<String> = dns
        .lookup("example.test.", mx_name, "MX")
        .await
        .expect("lookup")
        .into_iter()
        .map(|p| p.content)
        .collect();
    contents.sort();
    contents
}

/// A node of `host` whose DMARC policy (reject) is unlike the zone's: publishing it would
/// make a second DMARC record, so the provider refuses it, naming the record already there.
/// Returns the plan it refused, for the caller to check nothing of it was written.
pub async fn second_dmarc_is_refused(
    dns: &dyn mailfleet::dns::DnsProvider,
    host: &str,
    ip: &str,
) -> Vec<mailfleet::domain::records::PlannedRecord> {
    let strict = mailfleet::domain::records::plan(&RecordInput {
        dmarc: DmarcPolicy::Reject,
        ..input(host, ip)
    })
    .expect("plan");
    let err = dns
        .publish("example.test", &strict)
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, mailfleet::dns::DnsError::Rejected(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("already has a v=dmarc1 record"),
        "{err}"
    );
    strict
}
