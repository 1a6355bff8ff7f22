//! The DNSBL checker end to end, against a real PowerDNS serving test blocklists on loopback
//! (tests/support/pdns.rs). Each test starts its own server; without `pdns_server` installed
//! they skip, unless MAILFLEET_REQUIRE_SERVICES=1 makes that a failure.

#[path = "support/pdns.rs"]
mod pdns;

use mailfleet::reputation::dnsbl::{
    Checker, CheckerConfig, Codes, Severity, Status, Verdict, Zone,
};
use pdns::{fixture, Pdns};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const BL: &str = "bl.test";

fn start() -> Option<Pdns> {
    let server = Pdns::start().expect("start PowerDNS");
    if server.is_none() {
        eprintln!("skipping: no PowerDNS for the DNSBL tests");
    }
    server
}

/// A server with the fixture blocklist at `bl.test`.
fn with_fixture() -> Option<Pdns> {
    let server = start()?;
    pdns::blocklist_fixture(&server, BL).expect("load the blocklist fixture");
    Some(server)
}

fn checker(resolver: SocketAddr, timeout: Duration) -> Checker {
    Checker::new(&CheckerConfig {
        resolver: Some(resolver),
        timeout,
        concurrency: 64,
    })
    .expect("build checker")
}

fn zone(name: &str, codes: Codes) -> Zone {
    Zone {
        zone: name.into(),
        severity: Severity::High,
        codes,
    }
}

fn spamhaus() -> Zone {
    zone(BL, Codes::Spamhaus)
}

async fn check(server: &Pdns, ip: Ipv4Addr, z: &Zone) -> Verdict {
    checker(server.dns_addr(), Duration::from_secs(2))
        .check(ip, z)
        .await
}

fn assert_error_mentions(v: &Verdict, words: &str) {
    assert_eq!(v.status, Status::Error, "{v:?}");
    let meaning = v.meaning.as_deref().unwrap_or_default();
    assert!(
        meaning.contains(words),
        "meaning of {} should mention {words:?}: {v:?}",
        v.ip
    );
    assert_eq!(v.reason, None, "an error carries no listing reason: {v:?}");
}

#[tokio::test]
async fn sbl_code_is_listed_with_the_txt_reason() {
    let Some(server) = with_fixture() else { return };
    let v = check(&server, fixture::SBL, &spamhaus()).await;
    assert_eq!(
        v,
        Verdict {
            ip: fixture::SBL,
            zone: BL.into(),
            status: Status::Listed,
            code: Some(Ipv4Addr::new(127, 0, 0, 2)),
            meaning: Some("SBL".into()),
            reason: Some(fixture::SBL_REASON.into()),
        }
    );
    assert_eq!(
        v.delist_url(),
        Some("https://check.example/lookup?ip=192.0.2.10")
    );
}

#[tokio::test]
async fn xbl_and_pbl_codes_are_listed_without_a_reason() {
    let Some(server) = with_fixture() else { return };
    let xbl = check(&server, fixture::XBL, &spamhaus()).await;
    assert_eq!(xbl.status, Status::Listed, "{xbl:?}");
    assert_eq!(xbl.code, Some(Ipv4Addr::new(127, 0, 0, 4)));
    assert_eq!(xbl.meaning.as_deref(), Some("XBL"));
    assert_eq!(xbl.reason, None);

    let pbl = check(&server, fixture::PBL, &spamhaus()).await;
    assert_eq!(pbl.status, Status::Listed, "{pbl:?}");
    assert_eq!(pbl.code, Some(Ipv4Addr::new(127, 0, 0, 10)));
    assert_eq!(pbl.meaning.as_deref(), Some("PBL"));
    assert_eq!(pbl.reason, None);
}

#[tokio::test]
async fn absent_ip_is_not_listed() {
    let Some(server) = with_fixture() else { return };
    let v = check(&server, fixture::CLEAN, &spamhaus()).await;
    assert_eq!(
        v,
        Verdict {
            ip: fixture::CLEAN,
            zone: BL.into(),
            status: Status::NotListed,
            code: None,
            meaning: None,
            reason: None,
        }
    );
}

#[tokio::test]
async fn spamhaus_error_codes_are_errors_not_listings() {
    let Some(server) = with_fixture() else { return };
    let z = spamhaus();
    let public = check(&server, fixture::ERR_PUBLIC_RESOLVER, &z).await;
    assert_error_mentions(&public, "public or open resolver");
    assert_eq!(public.code, Some(Ipv4Addr::new(127, 255, 255, 254)));

    let typo = check(&server, fixture::ERR_TYPO, &z).await;
    assert_error_mentions(&typo, "typo in the zone name");
    assert_eq!(typo.code, Some(Ipv4Addr::new(127, 255, 255, 252)));

    let limited = check(&server, fixture::ERR_RATE_LIMITED, &z).await;
    assert_error_mentions(&limited, "too many queries");
    assert_eq!(limited.code, Some(Ipv4Addr::new(127, 255, 255, 255)));
}

#[tokio::test]
async fn answer_outside_loopback_is_an_error() {
    let Some(server) = with_fixture() else { return };
    let v = check(&server, fixture::NON_LOOPBACK, &spamhaus()).await;
    assert_error_mentions(&v, "outside 127.0.0.0/8");
    assert_eq!(v.code, Some(Ipv4Addr::new(10, 0, 0, 1)));
}

#[tokio::test]
async fn generic_codes_list_any_loopback_answer_but_never_the_error_range() {
    let Some(server) = with_fixture() else { return };
    let z = zone(BL, Codes::Generic);
    for (ip, code) in [
        (fixture::SBL, "127.0.0.2"),
        (fixture::XBL, "127.0.0.4"),
        (fixture::PBL, "127.0.0.10"),
    ] {
        let v = check(&server, ip, &z).await;
        assert_eq!(v.status, Status::Listed, "{v:?}");
        assert_eq!(v.meaning, Some(format!("listed ({code})")), "{v:?}");
    }
    let sbl = check(&server, fixture::SBL, &z).await;
    assert_eq!(sbl.reason.as_deref(), Some(fixture::SBL_REASON));
    for ip in [
        fixture::ERR_PUBLIC_RESOLVER,
        fixture::ERR_TYPO,
        fixture::ERR_RATE_LIMITED,
    ] {
        let v = check(&server, ip, &z).await;
        assert_error_mentions(&v, "the list refused to answer");
    }
    let outside = check(&server, fixture::NON_LOOPBACK, &z).await;
    assert_error_mentions(&outside, "outside 127.0.0.0/8");
    let clean = check(&server, fixture::CLEAN, &z).await;
    assert_eq!(clean.status, Status::NotListed, "{clean:?}");
}

#[tokio::test]
async fn silent_resolver_is_unknown_never_clean() {
    let silent = pdns::SilentResolver::bind().expect("bind a silent UDP socket");
    let checker = checker(silent.addr(), Duration::from_millis(200));
    let started = std::time::Instant::now();
    let v = checker.check(fixture::CLEAN, &spamhaus()).await;
    assert_eq!(v.status, Status::Unknown, "{v:?}");
    assert_eq!(v.code, None);
    assert!(
        v.meaning
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{v:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "one 200 ms query took {:?}",
        started.elapsed()
    );
    let health = checker.health(&spamhaus()).await;
    assert!(!health.usable, "{health:?}");
}

#[tokio::test]
async fn servfail_is_unknown_never_clean() {
    let Some(server) = with_fixture() else { return };
    pdns::servfail_entry(&server, BL, fixture::CLEAN).expect("add a broken record");
    let v = check(&server, fixture::CLEAN, &spamhaus()).await;
    assert_eq!(
        v.status,
        Status::Unknown,
        "{v:?}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(v.meaning.as_deref(), Some("SERVFAIL"), "{v:?}");
}

#[tokio::test]
async fn zone_with_rfc5782_test_entries_is_usable() {
    let Some(server) = with_fixture() else { return };
    let checker = checker(server.dns_addr(), Duration::from_secs(2));
    let health = checker.health(&spamhaus()).await;
    assert!(health.usable, "{health:?}");
    assert_eq!(health.why, None);
    assert_eq!(health.zone, BL);
    let two = checker.check(fixture::HEALTH_LISTED, &spamhaus()).await;
    assert_eq!(two.reason.as_deref(), Some("test entry"), "{two:?}");
}

#[tokio::test]
async fn zone_listing_127_0_0_1_is_refusing_us() {
    let Some(server) = start() else { return };
    pdns::refusing_fixture(&server, "refusing.test").expect("load the refusing zone");
    let z = zone("refusing.test", Codes::Spamhaus);
    let health = checker(server.dns_addr(), Duration::from_secs(2))
        .health(&z)
        .await;
    assert!(!health.usable, "{health:?}");
    let why = health.why.unwrap_or_default();
    assert!(why.contains("127.0.0.1 is listed"), "{why}");
}

#[tokio::test]
async fn zone_that_does_not_exist_is_unusable() {
    let Some(server) = with_fixture() else { return };
    let z = zone("missing.test", Codes::Spamhaus);
    let checker = checker(server.dns_addr(), Duration::from_secs(2));
    let health = checker.health(&z).await;
    assert!(!health.usable, "{health:?}");
    let why = health.why.unwrap_or_default();
    assert!(why.contains("127.0.0.2 is not listed"), "{why}");
    // PowerDNS is not authoritative for it and answers REFUSED: an error, not "not listed".
    let v = checker.check(fixture::SBL, &z).await;
    assert_eq!(v.status, Status::Error, "{v:?}");
    assert!(
        v.meaning.as_deref().unwrap_or_default().contains("Refused"),
        "{v:?}"
    );
}

#[tokio::test]
async fn check_all_covers_every_pair_in_ip_major_order() {
    let Some(server) = with_fixture() else { return };
    pdns::refusing_fixture(&server, "refusing.test").expect("load the refusing zone");
    let zones = [spamhaus(), zone("refusing.test", Codes::Generic)];
    let ips = [
        fixture::SBL,
        fixture::CLEAN,
        fixture::ERR_PUBLIC_RESOLVER,
        fixture::PBL,
    ];
    let checker = checker(server.dns_addr(), Duration::from_secs(2));
    let all = checker.check_all(&ips, &zones).await;
    let pairs: Vec<(Ipv4Addr, &str)> = all.iter().map(|v| (v.ip, v.zone.as_str())).collect();
    let expected: Vec<(Ipv4Addr, &str)> = ips
        .iter()
        .flat_map(|ip| zones.iter().map(move |z| (*ip, z.zone.as_str())))
        .collect();
    assert_eq!(pairs, expected);
    let statuses: Vec<Status> = all.iter().map(|v| v.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Listed,    // SBL on bl.test
            Status::NotListed, // refusing.test has no entry for it
            Status::NotListed, // CLEAN on bl.test
            Status::Listed,    // refusing.test lists CLEAN too
            Status::Error,     // 127.255.255.254 on bl.test
            Status::NotListed,
            Status::Listed, // PBL on bl.test
            Status::NotListed,
        ]
    );
    for v in &all {
        let zone = zones.iter().find(|z| z.zone == v.zone).expect("zone");
        assert_eq!(
            &checker.check(v.ip, zone).await,
            v,
            "check_all agrees with check"
        );
    }
}

#[tokio::test]
async fn new_listing_shows_on_the_next_check() {
    let Some(server) = with_fixture() else { return };
    let checker = checker(server.dns_addr(), Duration::from_secs(2));
    let ip = Ipv4Addr::new(192, 0, 2, 50);
    assert_eq!(
        checker.check(ip, &spamhaus()).await.status,
        Status::NotListed
    );
    server
        .add_records(BL, &pdns::listing(ip, "127.0.0.3", Some("snowshoe")))
        .expect("add a listing");
    let v = checker.check(ip, &spamhaus()).await;
    assert_eq!(v.status, Status::Listed, "{v:?}");
    assert_eq!(v.meaning.as_deref(), Some("CSS"));
    assert_eq!(v.reason.as_deref(), Some("snowshoe"));
}

#[tokio::test]
async fn harness_quotes_txt_and_serves_the_api() {
    let Some(server) = with_fixture() else { return };
    let long = format!("say \"hi\" \\ {}", "x".repeat(300));
    let ip = Ipv4Addr::new(192, 0, 2, 60);
    server
        .add_records(BL, &pdns::listing(ip, "127.0.0.2", Some(&long)))
        .expect("add a long TXT");
    let v = check(&server, ip, &spamhaus()).await;
    assert_eq!(v.reason.as_deref(), Some(long.as_str()), "{v:?}");
    let (status, body) = server
        .api("GET", "/api/v1/servers/localhost/zones", None)
        .expect("API answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"bl.test.\""), "{body}");
    assert!(server.api_url().starts_with("http://127.0.0.1:"));
    assert!(!server.api_key().is_empty());
}
