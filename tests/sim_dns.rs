//! The simulated DNS provider on a real store: the same publish / lookup / remove semantics as
//! the PowerDNS one, zones that outlive the process (they are in the database), and seeded
//! delays and transient failures.

mod support;

#[path = "support/records.rs"]
mod records;
use mailfleet::config::Config;
use mailfleet::dns::sim::SimDns;
use mailfleet::dns::{DnsError, DnsProvider, Published};
use mailfleet::domain::records::{plan, PlannedRecord};
use mailfleet::store::Store;
use records::input;
use std::time::Duration;

fn cfg(failure_rate: f64, delay_ms: [u64; 2]) -> Config {
    support::config(&format!(
        "[providers.sim]\nseed = 7\nfailure_rate = {failure_rate:?}\ndelay_ms = [{}, {}]\n",
        delay_ms[0], delay_ms[1]
    ))
}

fn sim(store: &Store, cfg: &Config) -> SimDns {
    SimDns::new(
        store.clone(),
        cfg.providers.sim.clone(),
        support::system_clock(),
    )
}

fn record(purpose: &'static str, name: &str, rtype: &'static str, content: &str) -> PlannedRecord {
    PlannedRecord {
        purpose,
        name: name.into(),
        rtype,
        ttl: 300,
        content: content.into(),
        strings: if rtype == "TXT" {
            vec![content.to_string()]
        } else {
            vec![]
        },
    }
}

/// The planned record of this purpose.
fn of<'a>(records: &'a [PlannedRecord], purpose: &str) -> &'a PlannedRecord {
    records
        .iter()
        .find(|r| r.purpose == purpose)
        .unwrap_or_else(|| panic!("no {purpose} record planned"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_lookup_and_remove_as_powerdns_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg(0.0, [0, 0]);
    let store = support::open(&support::db_path(&dir), &cfg).await;
    let dns = sim(&store, &cfg);
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");
    let (mx, spf) = (of(&records, "mx"), of(&records, "spf"));

    // Nothing published yet: the zone answers with nothing, and removing from it succeeds.
    assert!(dns
        .lookup("example.test", &mx.name, "MX")
        .await
        .expect("lookup")
        .is_empty());
    dns.remove("example.test", &[Published::of(mx)])
        .await
        .expect("remove");

    // What the zone already holds (published by someone else), which a node must not touch:
    // one record in our MX's set, one in our SPF's.
    let theirs = dns
        .publish(
            "example.test",
            &[
                record("mx", &mx.name, "MX", "20 backup.example.test."),
                record("txt", &spf.name, "TXT", "owner-note=keep me"),
            ],
        )
        .await
        .expect("foreign records");
    assert_eq!(theirs.len(), 2);

    let added = dns
        .publish("example.test", &records)
        .await
        .expect("publish");
    let want: Vec<Published> = records.iter().map(Published::of).collect();
    assert_eq!(added, want);
    assert!(
        Published::of(of(&records, "dkim"))
            .content
            .contains("\" \""),
        "DKIM as two strings"
    );

    let contents = records::read_back(&dns, &added, &mx.name).await;
    assert_eq!(
        contents,
        ["10 mx1.example.test.", "20 backup.example.test."]
    );

    // Publishing again adds nothing.
    assert!(dns
        .publish("example.test", &records)
        .await
        .expect("again")
        .is_empty());

    // A DMARC policy unlike the zone's would be a second DMARC record: refused, and nothing
    // of that publish is written.
    records::second_dmarc_is_refused(&dns, "mx3.example.test", "192.0.2.12").await;
    assert!(dns
        .lookup("example.test", "mx3.example.test.", "A")
        .await
        .expect("lookup")
        .is_empty());

    // A second SPF where one is: refused too.
    let err = dns
        .publish(
            "example.test",
            &[record(
                "spf",
                &spf.name,
                "TXT",
                "v=spf1 include:_spf.example.net ~all",
            )],
        )
        .await
        .expect_err("second spf");
    assert!(
        err.to_string().contains("already has a v=spf1 record"),
        "{err}"
    );

    // A record outside the zone is refused.
    let err = dns
        .publish("other.test", &records)
        .await
        .expect_err("not in zone");
    assert!(err.to_string().contains("not in zone other.test."), "{err}");

    // Rollback: exactly what was added goes; what was there stays.
    dns.remove("example.test", &added).await.expect("remove");
    let zone = store.sim_dns_zone("example.test.").await.expect("zone");
    let mut left: Vec<Published> = zone
        .into_iter()
        .map(|r| Published {
            name: r.name,
            rtype: r.rtype,
            ttl: r.ttl,
            content: r.content,
        })
        .collect();
    let mut kept = theirs.clone();
    for v in [&mut left, &mut kept] {
        v.sort_by(|a, b| a.content.cmp(&b.content));
    }
    assert_eq!(left, kept);
    dns.remove("example.test", &added)
        .await
        .expect("remove again");

    // A record set shares one TTL: the last publish into it sets it.
    let mut longer = record("txt", &spf.name, "TXT", "another=1");
    longer.ttl = 900;
    dns.publish("example.test", &[longer]).await.expect("ttl");
    let txt = dns
        .lookup("example.test", &spf.name, "TXT")
        .await
        .expect("lookup");
    assert_eq!(txt.len(), 2);
    assert!(txt.iter().all(|p| p.ttl == 900), "{txt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_outlive_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = support::db_path(&dir);
    let cfg = cfg(0.0, [0, 0]);
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");
    let added = {
        let store = support::open(&path, &cfg).await;
        let added = sim(&store, &cfg)
            .publish("example.test", &records)
            .await
            .expect("publish");
        drop(store);
        added
    };
    assert_eq!(added.len(), 5);

    let store = support::open(&path, &cfg).await;
    let dns = sim(&store, &cfg);
    for p in &added {
        let got = dns
            .lookup("example.test", &p.name, &p.rtype)
            .await
            .expect("lookup");
        assert_eq!(got, std::slice::from_ref(p));
    }
    assert!(dns
        .publish("example.test", &records)
        .await
        .expect("again")
        .is_empty());
    dns.remove("example.test", &added).await.expect("remove");
    assert!(store
        .sim_dns_zone("example.test.")
        .await
        .expect("zone")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_take_time_and_fail_as_seeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = cfg(0.5, [0, 0]);
    let store = support::open(&support::db_path(&dir), &flaky).await;

    // The same seed fails the same calls.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dns = sim(&store, &flaky);
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            match dns.lookup("example.test", "example.test.", "MX").await {
                Ok(_) => outcomes.push(true),
                Err(e) => {
                    assert!(matches!(e, DnsError::Transient(_)), "{e:?}");
                    assert!(e.to_string().starts_with("sim dns: read MX"), "{e}");
                    outcomes.push(false);
                }
            }
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1]);
    let failed = runs[0].iter().filter(|ok| !**ok).count();
    assert!((8..=32).contains(&failed), "{failed} of 40 failed");

    // A failed publish changed nothing.
    let down = cfg(1.0, [0, 0]);
    let records = plan(&input("mx1.example.test", "192.0.2.10")).expect("plan");
    let err = sim(&store, &down)
        .publish("example.test", &records)
        .await
        .expect_err("down");
    assert!(err.retryable(), "{err:?}");
    assert!(store
        .sim_dns_zone("example.test.")
        .await
        .expect("zone")
        .is_empty());

    // Each call takes its configured time.
    let slow = cfg(0.0, [40, 40]);
    let dns = sim(&store, &slow);
    let started = std::time::Instant::now();
    dns.lookup("example.test", "example.test.", "A")
        .await
        .expect("lookup");
    assert!(started.elapsed() >= Duration::from_millis(40));
}
