//! Issue 7 (first part): a node's planned records published on a real PowerDNS through its
//! HTTP API, verified over DNS from the authoritative server, and removed again — exactly
//! what was added, leaving the rest of the zone.

#[path = "support/pdns.rs"]
mod pdns;

#[path = "support/records.rs"]
mod records;
use mailfleet::dns::powerdns::PowerDns;
use mailfleet::dns::propagation::{check_once, wait_verified, RecordStatus};
use mailfleet::dns::{DnsError, DnsProvider, Published};
use mailfleet::domain::records::{plan, PlannedRecord, RecordInput};
use records::input;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_published_verified_and_removed_exactly() {
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    dns.add_zone("example.test").expect("zone");
    // What the zone already holds, that a node must never touch.
    dns.patch_zone(
        "example.test",
        r#"[
        {"name": "example.test.", "type": "TXT", "ttl": 60, "changetype": "REPLACE",
         "records": [{"content": "\"google-site-verification=abc123\"", "disabled": false}]},
        {"name": "example.test.", "type": "MX", "ttl": 60, "changetype": "REPLACE",
         "records": [{"content": "20 backup.example.test.", "disabled": false}]}
    ]"#,
    )
    .expect("the owner's records");
    let pdns_api = PowerDns::new(
        &dns.api_url(),
        "localhost",
        dns.api_key().to_string(),
        Duration::from_secs(5),
    )
    .expect("client");
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");
    assert_eq!(records.len(), 5);

    let added = pdns_api
        .publish("example.test", &records)
        .await
        .expect("publish");
    assert_eq!(added.len(), 5, "{added:?}");
    let seen = wait_verified(
        dns.dns_addr(),
        &records,
        Duration::from_secs(5),
        Duration::from_millis(100),
    )
    .await;
    assert!(
        seen.iter().all(|s| s.status == RecordStatus::Verified),
        "{seen:#?}"
    );
    let dkim = seen
        .iter()
        .find(|s| s.name.starts_with("mf1._domainkey"))
        .expect("dkim");
    assert_eq!(
        dkim.got,
        [records[3].content.clone()],
        "one TXT record, strings joined"
    );
    // The apex MX and TXT sets are the zone owner's: untouched (our MX and SPF are the
    // node's own, at its hostname).
    let apex = check_once(dns.dns_addr(), &[apex_mx_backup()], Duration::from_secs(2)).await;
    assert_eq!(apex[0].status, RecordStatus::Verified);
    assert_eq!(apex[0].got, ["20 backup.example.test."]);

    // Publishing again adds nothing.
    assert!(pdns_api
        .publish("example.test", &records)
        .await
        .expect("again")
        .is_empty());

    // A second node of the domain adds its own A, MX and SPF; the domain's DKIM and DMARC
    // records are already there, identical, and are not added twice.
    let other = plan(&input("mx2.example.test", "192.0.2.11")).expect("plan");
    let added2 = pdns_api
        .publish("example.test", &other)
        .await
        .expect("second node");
    let purposes: Vec<&str> = added2
        .iter()
        .map(|p| {
            other
                .iter()
                .find(|r| Published::of(r) == *p)
                .map(|r| r.purpose)
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(purposes, ["a", "mx", "spf"], "{added2:?}");

    // A DMARC policy unlike the one the zone has would make a second DMARC record: refused,
    // and nothing of that publish is written.
    let strict =
        records::second_dmarc_is_refused(&pdns_api, "mx3.example.test", "192.0.2.12").await;
    let mx3 = check_once(dns.dns_addr(), &strict[..1], Duration::from_secs(2)).await;
    assert_eq!(
        mx3[0].status,
        RecordStatus::Published,
        "mx3's A was not written"
    );
    assert!(mx3[0].got.is_empty());
    pdns_api
        .remove("example.test", &added2)
        .await
        .expect("remove the second node");

    // Rollback: exactly what was added goes; what was there stays.
    pdns_api
        .remove("example.test", &added)
        .await
        .expect("remove");
    let after = check_once(dns.dns_addr(), &records, Duration::from_secs(2)).await;
    assert!(
        after.iter().all(|s| s.status != RecordStatus::Verified),
        "{after:#?}"
    );
    let kept = check_once(
        dns.dns_addr(),
        &[
            PlannedRecord {
                purpose: "txt",
                name: "example.test.".into(),
                rtype: "TXT",
                ttl: 60,
                content: "google-site-verification=abc123".into(),
                strings: vec![],
            },
            apex_mx_backup(),
        ],
        Duration::from_secs(2),
    )
    .await;
    assert!(
        kept.iter().all(|s| s.status == RecordStatus::Verified),
        "{kept:#?}"
    );
    assert_eq!(kept[1].got, ["20 backup.example.test."]);
    // Removing again is a no-op.
    pdns_api
        .remove("example.test", &added)
        .await
        .expect("remove again");
}

fn apex_mx_backup() -> PlannedRecord {
    PlannedRecord {
        purpose: "mx",
        name: "example.test.".into(),
        rtype: "MX",
        ttl: 60,
        content: "20 backup.example.test.".into(),
        strings: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_s_refusals_are_clear_errors() {
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    dns.add_zone("example.test").expect("zone");
    let api = PowerDns::new(
        &dns.api_url(),
        "localhost",
        dns.api_key().to_string(),
        Duration::from_secs(5),
    )
    .expect("client");
    // A record PowerDNS refuses (an A record that is not an address): its 422, in words.
    let bad = PlannedRecord {
        purpose: "a",
        name: "mx9.example.test.".into(),
        rtype: "A",
        ttl: 60,
        content: "not-an-address".into(),
        strings: vec![],
    };
    let err = api.publish("example.test", &[bad]).await.expect_err("422");
    assert!(matches!(err, DnsError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("HTTP 422"), "{err}");
    // A zone the server does not have.
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");
    let err = api
        .publish("missing.test", &records)
        .await
        .expect_err("no zone");
    assert!(
        err.to_string().contains("not in zone missing.test."),
        "{err}"
    );
    let elsewhere: Vec<PlannedRecord> = plan(&RecordInput {
        domain: "missing.test".into(),
        hostname: "mx1.missing.test".into(),
        ..input("mx1.example.test", "192.0.2.10")
    })
    .expect("plan");
    let err = api
        .publish("missing.test", &elsewhere)
        .await
        .expect_err("no zone");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    // The wrong key is refused, and the key is in no message.
    let wrong = PowerDns::new(
        &dns.api_url(),
        "localhost",
        "not-the-key".into(),
        Duration::from_secs(5),
    )
    .expect("client");
    let err = wrong
        .publish("example.test", &records)
        .await
        .expect_err("401");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(!err.to_string().contains("not-the-key") && !err.to_string().contains(dns.api_key()));
    // Nothing of the refused attempts was written.
    let seen = check_once(dns.dns_addr(), &records, Duration::from_secs(2)).await;
    assert!(seen.iter().all(|s| s.got.is_empty()), "{seen:#?}");
}
