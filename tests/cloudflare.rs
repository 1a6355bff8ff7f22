//! The Cloudflare DNS provider against a local fake of Cloudflare's API v4: a node's planned
//! records published beside what the zone holds, read back, refused on conflict, removed
//! exactly; and the API's refusals and hiccups as clear errors that never show the token.

#[path = "support/cloudflare_fake.rs"]
mod cloudflare_fake;

#[path = "support/records.rs"]
mod records;

#[path = "support/echo_fake.rs"]
mod echo_fake;
use cloudflare_fake::CloudflareFake;
use mailfleet::dns::cloudflare::Cloudflare;
use mailfleet::dns::{DnsError, DnsProvider, Published};
use mailfleet::domain::records::{plan, PlannedRecord};
use records::input;
use std::time::Duration;

const TOKEN: &str = "cf-test-token-7Hq2";

fn client(fake: &CloudflareFake, token: &str) -> Cloudflare {
    Cloudflare::new(&fake.base_url(), token.to_string(), Duration::from_secs(5)).expect("client")
}

fn a_record(name: &str, content: &str) -> PlannedRecord {
    PlannedRecord {
        purpose: "a",
        name: name.into(),
        rtype: "A",
        ttl: 300,
        content: content.into(),
        strings: vec![],
    }
}

/// The planned record of this purpose.
fn of<'a>(records: &'a [PlannedRecord], purpose: &str) -> &'a PlannedRecord {
    records
        .iter()
        .find(|r| r.purpose == purpose)
        .unwrap_or_else(|| panic!("no {purpose} record planned"))
}

/// A name as Cloudflare writes it.
fn bare(name: &str) -> &str {
    name.trim_end_matches('.')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_published_beside_others_read_back_and_removed_exactly() {
    let fake = CloudflareFake::start(TOKEN).await;
    fake.add_zone("example.test");
    let cf = client(&fake, TOKEN);
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");
    assert_eq!(records.len(), 5);
    let (mx, dkim) = (of(&records, "mx"), of(&records, "dkim"));
    assert_eq!(dkim.strings.len(), 2, "the DKIM value is split");

    // What the zone already holds, that a node must never touch: one of them in the record
    // set (name and type) our MX goes into, and one in our SPF's TXT set.
    let site = fake.insert_foreign(
        "example.test",
        "example.test",
        "TXT",
        "google-site-verification=abc123",
        None,
    );
    let backup = fake.insert_foreign(
        "example.test",
        bare(&mx.name),
        "MX",
        "backup.example.test",
        Some(20),
    );
    let note = fake.insert_foreign(
        "example.test",
        bare(&of(&records, "spf").name),
        "TXT",
        "owner-note=keep me",
        None,
    );
    // One record a page: every listing of more than one record spans pages.
    fake.set_max_per_page(1);

    let added = cf.publish("example.test", &records).await.expect("publish");
    let want: Vec<Published> = records.iter().map(Published::of).collect();
    assert_eq!(added, want);
    assert_eq!(fake.records().len(), 8);

    // As Cloudflare keeps them: names without the dot, the MX's preference apart, the A
    // record not proxied, the DKIM value one record of two quoted strings.
    let a = fake.records_at("mx1.example.test", "A");
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].content.as_str(), a[0].proxied), ("192.0.2.10", false));
    let mut held: Vec<(Option<u16>, String)> = fake
        .records_at(bare(&mx.name), "MX")
        .into_iter()
        .map(|r| (r.priority, r.content))
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            (Some(10), "mx1.example.test".to_string()),
            (Some(20), "backup.example.test".to_string())
        ]
    );
    let key = fake.records_at(bare(&dkim.name), "TXT");
    assert_eq!(key.len(), 1);
    assert_eq!(key[0].content, dkim.rdata());
    assert_eq!(
        key[0].content.matches("\" \"").count(),
        1,
        "{}",
        key[0].content
    );

    // Read back in the form publish returned, foreign records included.
    let contents = records::read_back(&cf, &added, &mx.name).await;
    assert_eq!(
        contents,
        ["10 mx1.example.test.", "20 backup.example.test."]
    );
    assert!(
        fake.requests().iter().any(|r| r.contains("page=2")),
        "listings follow the pages"
    );

    // Publishing again adds nothing.
    let again = cf.publish("example.test", &records).await.expect("again");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(fake.records().len(), 8);

    // A DMARC policy unlike the one the zone has would make a second DMARC record: refused
    // before anything is written, so not even that node's A record is there.
    records::second_dmarc_is_refused(&cf, "mx3.example.test", "192.0.2.12").await;
    assert!(fake.records_at("mx3.example.test", "A").is_empty());
    assert_eq!(fake.records().len(), 8);

    // Rollback: exactly what was added goes; what was there stays.
    cf.remove("example.test", &added).await.expect("remove");
    let mut left: Vec<String> = fake.records().into_iter().map(|r| r.id).collect();
    left.sort();
    let mut foreign = vec![site, backup, note];
    foreign.sort();
    assert_eq!(left, foreign);
    assert!(cf
        .lookup("example.test", "mx1.example.test.", "A")
        .await
        .expect("lookup")
        .is_empty());
    // Removing again is a no-op.
    cf.remove("example.test", &added)
        .await
        .expect("remove again");
    assert_eq!(fake.records().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_spf_at_a_name_is_refused() {
    let fake = CloudflareFake::start(TOKEN).await;
    fake.add_zone("example.test");
    let cf = client(&fake, TOKEN);
    let records = plan(&input("mx4.example.test", "192.0.2.14")).expect("plan");
    let spf = of(&records, "spf");
    // Someone already published an SPF policy where ours would go, without quotes.
    fake.insert_foreign(
        "example.test",
        bare(&spf.name),
        "TXT",
        "v=spf1 include:_spf.example.net ~all",
        None,
    );
    let err = cf
        .publish("example.test", &records)
        .await
        .expect_err("conflict");
    assert!(matches!(err, DnsError::Rejected(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("already has a v=spf1 record"), "{text}");
    assert!(text.contains("include:_spf.example.net"), "{text}");
    assert_eq!(fake.records().len(), 1, "nothing written");
    assert!(fake.requests().iter().all(|r| r.starts_with("GET")));

    // The same SPF, written there without quotes, is ours already: not added twice.
    let fake = CloudflareFake::start(TOKEN).await;
    fake.add_zone("example.test");
    let cf = client(&fake, TOKEN);
    fake.insert_foreign("example.test", bare(&spf.name), "TXT", &spf.content, None);
    let added = cf.publish("example.test", &records).await.expect("publish");
    assert_eq!(added.len(), records.len() - 1);
    assert!(!added.contains(&Published::of(spf)), "{added:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_hiccups_are_clear_errors() {
    let fake = CloudflareFake::start(TOKEN).await;
    fake.add_zone("example.test");
    let cf = client(&fake, TOKEN);
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");

    // The wrong token: a 403 in words, and no token in the message or the Debug output.
    let wrong = client(&fake, "not-the-token-9xZ");
    let err = wrong
        .publish("example.test", &records)
        .await
        .expect_err("403");
    assert!(matches!(err, DnsError::Rejected(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403") && text.contains("Authentication error"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-token") && !text.contains(TOKEN),
        "{text}"
    );
    let shown = format!("{wrong:?} {cf:?}");
    assert!(
        !shown.contains("not-the-token") && !shown.contains(TOKEN),
        "{shown}"
    );

    // Rate limited, and a 5xx page from the edge: worth retrying; the next call goes through.
    fake.fail_next(429);
    let err = cf
        .lookup("example.test", "example.test.", "MX")
        .await
        .expect_err("429");
    assert!(err.retryable(), "{err:?}");
    assert!(
        err.to_string().contains("HTTP 429") && err.to_string().contains("971"),
        "{err}"
    );
    fake.fail_next(502);
    let err = cf
        .lookup("example.test", "example.test.", "MX")
        .await
        .expect_err("502");
    assert!(matches!(err, DnsError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("HTTP 502"), "{err}");
    assert!(cf
        .lookup("example.test", "example.test.", "MX")
        .await
        .expect("after the hiccups")
        .is_empty());

    // Content Cloudflare refuses: its 400, code and message. The record created before it in
    // the same publish is deleted again, so a failed publish leaves nothing behind.
    let err = cf
        .publish(
            "example.test",
            &[
                a_record("mx7.example.test.", "192.0.2.7"),
                a_record("mx8.example.test.", "not-an-address"),
            ],
        )
        .await
        .expect_err("400");
    assert!(matches!(err, DnsError::Rejected(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 400")
            && text.contains("9005 Content for A record must be a valid IPv4 address."),
        "{text}"
    );
    assert!(text.contains("deleted again"), "{text}");
    assert!(fake.records().is_empty(), "{:?}", fake.records());

    // An MX that is not "PREFERENCE HOST" is refused before anything is sent.
    let sent = fake.requests().len();
    let bad_mx = PlannedRecord {
        purpose: "mx",
        name: "example.test.".into(),
        rtype: "MX",
        ttl: 300,
        content: "mx1.example.test.".into(),
        strings: vec![],
    };
    let err = cf
        .publish(
            "example.test",
            &[a_record("mx1.example.test.", "192.0.2.10"), bad_mx],
        )
        .await
        .expect_err("bad mx");
    assert!(err.to_string().contains("PREFERENCE HOST"), "{err}");
    assert!(fake.records().is_empty());
    assert!(fake.requests()[sent..].iter().all(|r| r.starts_with("GET")));

    // A zone the account does not have, and a record outside the zone.
    let err = cf
        .publish(
            "missing.test",
            &[a_record("mx1.missing.test.", "192.0.2.10")],
        )
        .await
        .expect_err("no zone");
    assert!(matches!(err, DnsError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("no zone missing.test"), "{err}");
    let err = cf
        .publish("missing.test", &records)
        .await
        .expect_err("elsewhere");
    assert!(
        err.to_string().contains("not in zone missing.test."),
        "{err}"
    );
    // Removing from a zone that is not there: nothing of ours is left there either.
    cf.remove("missing.test", &[Published::of(&records[0])])
        .await
        .expect("remove from a missing zone");

    // A foreign record's text is shown without its control characters.
    fake.insert_foreign(
        "example.test",
        bare(&of(&records, "spf").name),
        "TXT",
        "v=spf1 \u{1b}[31mip4:198.51.100.1 -all",
        None,
    );
    let err = cf
        .publish("example.test", &records)
        .await
        .expect_err("conflict");
    assert!(!err.to_string().contains('\u{1b}'), "{err:?}");
    assert!(err.to_string().contains("[31mip4:198.51.100.1"), "{err}");
    assert_eq!(fake.records().len(), 1);
}

/// An endpoint that repeats the `Authorization` header in its error body: the error says
/// what failed, bounded, with the token redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_that_echoes_the_token_is_redacted_and_bounded() {
    let api = echo_fake::EchoFake::start(0);
    let cf =
        Cloudflare::new(&api.url(), TOKEN.to_string(), Duration::from_secs(5)).expect("client");
    let err = cf
        .lookup("example.com", "mx1.example.com.", "A")
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("Authorization=Bearer [redacted]"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.chars().count() < 700, "bounded: {text}");
}
