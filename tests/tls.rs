//! Certificates from a real ACME CA (Pebble) for a node's name, proved by dns-01 records
//! published on a real PowerDNS (which Pebble asks) or by our http-01 responder: issued
//! chains verified up to the CA's root, challenge records gone afterwards, failures told
//! clearly and sorted into retryable or not, and account credentials reused.

#[path = "support/pdns.rs"]
mod pdns;
#[path = "support/pebble.rs"]
mod pebble;

use async_trait::async_trait;
use mailfleet::dns::powerdns::PowerDns;
use mailfleet::dns::{DnsError, DnsProvider, Published};
use mailfleet::domain::records::PlannedRecord;
use mailfleet::tls::{self, AcmeSettings, Challenge, TlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ZONE: &str = "example.test";

struct Servers {
    dns: pdns::Pdns,
    ca: pebble::Pebble,
}

/// PowerDNS serving `example.test`, and Pebble validating against it; `None` when either is
/// not installed (and MAILFLEET_REQUIRE_SERVICES is not 1).
fn servers(options: &pebble::PebbleOptions) -> Option<Servers> {
    let dns = pdns::Pdns::start().expect("pdns")?;
    dns.add_zone(ZONE).expect("zone");
    let ca = pebble::Pebble::start_with(dns.dns_addr(), options).expect("pebble")?;
    Some(Servers { dns, ca })
}

fn settings(s: &Servers) -> AcmeSettings {
    AcmeSettings {
        directory: s.ca.directory_url(),
        contact: vec!["mailto:ops@example.test".to_string()],
        extra_roots_pem: vec![s.ca.https_root_pem().to_string()],
        challenge: Challenge::Dns01,
        nameservers: vec![s.dns.dns_addr()],
        propagation_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(100),
        order_timeout: Duration::from_secs(30),
    }
}

fn powerdns(s: &Servers) -> PowerDns {
    PowerDns::new(
        &s.dns.api_url(),
        "localhost",
        s.dns.api_key().to_string(),
        Duration::from_secs(5),
    )
    .expect("powerdns client")
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The certificate's public key is the one of the key handed back.
fn key_matches(chain_pem: &str, key_pem: &str) -> bool {
    use x509_cert::der::{Decode, Encode};
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem");
    let spki = x509_cert::Certificate::from_der(&leaf)
        .expect("leaf")
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .expect("spki");
    let key = rcgen::KeyPair::from_pem(key_pem).expect("key pem");
    rcgen::PublicKeyData::subject_public_key_info(&key) == spki
}

async fn challenge_records(api: &dyn DnsProvider, name: &str) -> Vec<Published> {
    api.lookup(ZONE, &format!("_acme-challenge.{name}."), "TXT")
        .await
        .expect("lookup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_through_dns_01_and_verifies_to_the_root() {
    let Some(s) = servers(&Default::default()) else {
        return;
    };
    let settings = settings(&s);
    let api = powerdns(&s);
    let (account, credentials) = tls::account(&settings, None).await.expect("account");
    assert!(
        credentials.is_some(),
        "a new account comes with credentials"
    );
    assert!(account
        .id()
        .starts_with(s.ca.directory_url().trim_end_matches("/dir")));

    let issued = tls::obtain(
        &settings,
        &account,
        &api,
        ZONE,
        &names(&["mx1.example.test"]),
    )
    .await
    .unwrap_or_else(|e| panic!("obtain: {e}\npebble log:\n{}", s.ca.log()));

    assert_eq!(issued.names, ["mx1.example.test"]);
    let now = chrono::Utc::now();
    assert!(
        issued.not_after > now + chrono::Duration::days(30),
        "{issued:?}"
    );
    assert!(
        issued.not_before <= now + chrono::Duration::minutes(5),
        "{issued:?}"
    );
    assert!(!tls::renew_due(
        issued.not_after,
        now,
        tls::DEFAULT_RENEW_DAYS
    ));
    assert!(!issued.serial.is_empty());
    assert!(key_matches(&issued.chain_pem, &issued.key_pem));
    assert!(
        !format!("{issued:?}").contains("PRIVATE KEY"),
        "Debug hides the key"
    );

    // Chains to the root of the CA that issued it (fetched from Pebble's management port),
    // and only to it.
    let root = s.ca.fetch_root_pem().await.expect("root");
    pebble::verify_chain(&issued.chain_pem, &root, "mx1.example.test").expect("verifies");
    assert!(pebble::verify_chain(&issued.chain_pem, &root, "mx2.example.test").is_err());
    assert!(
        pebble::verify_chain(&issued.chain_pem, s.ca.https_root_pem(), "mx1.example.test").is_err()
    );

    let info = tls::inspect(&issued.chain_pem).expect("inspect");
    assert_eq!(info.names, issued.names);
    assert_eq!(info.serial, issued.serial);
    assert_eq!(
        (info.not_before, info.not_after),
        (issued.not_before, issued.not_after)
    );
    assert!(
        info.issuer.contains("Pebble Intermediate CA"),
        "{}",
        info.issuer
    );
    assert_eq!(info.chain_len, 2, "leaf and intermediate");

    // Nothing of the challenge is left in the zone.
    assert!(challenge_records(&api, "mx1.example.test").await.is_empty());
}

/// A DNS provider whose zone no server Pebble asks has: it stores records, nothing answers
/// them.
#[derive(Default)]
struct Unserved {
    records: Mutex<Vec<Published>>,
    published: AtomicUsize,
    removed: AtomicUsize,
}

#[async_trait]
impl DnsProvider for Unserved {
    fn name(&self) -> &str {
        "unserved"
    }

    async fn publish(
        &self,
        _zone: &str,
        records: &[PlannedRecord],
    ) -> Result<Vec<Published>, DnsError> {
        let added: Vec<Published> = records.iter().map(Published::of).collect();
        self.records.lock().expect("lock").extend(added.clone());
        self.published.fetch_add(added.len(), Ordering::SeqCst);
        Ok(added)
    }

    async fn remove(&self, _zone: &str, records: &[Published]) -> Result<(), DnsError> {
        self.records
            .lock()
            .expect("lock")
            .retain(|r| !records.contains(r));
        self.removed.fetch_add(records.len(), Ordering::SeqCst);
        Ok(())
    }

    async fn lookup(
        &self,
        _zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<Published>, DnsError> {
        Ok(self
            .records
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.name == name && r.rtype == rtype)
            .cloned()
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_the_ca_cannot_see_fails_clearly_and_leaves_nothing() {
    let Some(s) = servers(&Default::default()) else {
        return;
    };
    let mut settings = settings(&s);
    let (account, _) = tls::account(&settings, None).await.expect("account");
    let unserved = Unserved::default();

    // Told to look at once (no nameservers to wait for): the CA asks PowerDNS, finds no
    // record, and marks the challenge invalid. Not worth retrying as it stands.
    settings.nameservers.clear();
    let err = tls::obtain(
        &settings,
        &account,
        &unserved,
        ZONE,
        &names(&["mx1.example.test"]),
    )
    .await
    .expect_err("the CA cannot validate");
    let text = err.to_string();
    match &err {
        TlsError::ChallengeFailed {
            name,
            challenge,
            detail,
            ..
        } => {
            assert_eq!(name, "mx1.example.test");
            assert_eq!(challenge, "dns-01");
            assert!(!detail.is_empty());
        }
        other => panic!(
            "expected a failed challenge, got {other:?}\npebble log:\n{}",
            s.ca.log()
        ),
    }
    assert!(
        text.starts_with("acme: dns-01 challenge for mx1.example.test failed: "),
        "{text}"
    );
    assert!(!err.retryable(), "{text}");
    assert!(
        err.problem().is_some(),
        "the CA's problem type is kept: {err:?}"
    );
    assert!(err.leftover().is_empty());
    assert_eq!(unserved.published.load(Ordering::SeqCst), 1);
    assert_eq!(unserved.removed.load(Ordering::SeqCst), 1);
    assert!(challenge_records(&unserved, "mx1.example.test")
        .await
        .is_empty());

    // Waiting for the authoritative server first: it never answers, so the CA is never told
    // to look, and the order ends at the propagation timeout — retryable.
    settings.nameservers = vec![s.dns.dns_addr()];
    settings.propagation_timeout = Duration::from_millis(600);
    let started = std::time::Instant::now();
    let err = tls::obtain(
        &settings,
        &account,
        &unserved,
        ZONE,
        &names(&["mx1.example.test"]),
    )
    .await
    .expect_err("never propagates");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(matches!(err, TlsError::Timeout { .. }), "{err:?}");
    assert!(err.retryable());
    assert!(
        text.starts_with("acme: dns-01 challenge for mx1.example.test: _acme-challenge.mx1.example.test. TXT did not answer from "),
        "{text}"
    );
    assert!(text.contains(&s.dns.dns_addr().to_string()), "{text}");
    assert_eq!(unserved.removed.load(Ordering::SeqCst), 2);
    assert!(challenge_records(&unserved, "mx1.example.test")
        .await
        .is_empty());

    // A name outside the zone is refused before anything is ordered or published.
    let api = powerdns(&s);
    let err = tls::obtain(&settings, &account, &api, ZONE, &names(&["mx1.other.test"]))
        .await
        .expect_err("outside the zone");
    assert!(matches!(err, TlsError::BadName { .. }), "{err:?}");
    assert!(err.to_string().contains("mx1.other.test"), "{err}");
    assert!(!err.retryable());
}

/// Counts what goes through to PowerDNS.
struct Counting {
    inner: PowerDns,
    published: AtomicUsize,
}

#[async_trait]
impl DnsProvider for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    async fn publish(
        &self,
        zone: &str,
        records: &[PlannedRecord],
    ) -> Result<Vec<Published>, DnsError> {
        self.published.fetch_add(records.len(), Ordering::SeqCst);
        self.inner.publish(zone, records).await
    }
    async fn remove(&self, zone: &str, records: &[Published]) -> Result<(), DnsError> {
        self.inner.remove(zone, records).await
    }
    async fn lookup(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<Published>, DnsError> {
        self.inner.lookup(zone, name, rtype).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_account_credentials_order_again() {
    let Some(s) = servers(&Default::default()) else {
        return;
    };
    let settings = settings(&s);
    let api = powerdns(&s);
    let (first, credentials) = tls::account(&settings, None).await.expect("account");
    let credentials = credentials.expect("new credentials");
    let issued = tls::obtain(&settings, &first, &api, ZONE, &names(&["mx1.example.test"]))
        .await
        .expect("first order");
    assert_eq!(issued.names, ["mx1.example.test"]);

    // The kept credentials load the same account: nothing new to keep.
    let (again, fresh) = tls::account(&settings, Some(&credentials))
        .await
        .expect("reload");
    assert!(fresh.is_none());
    assert_eq!(again.id(), first.id());
    // Two names whose records share `_acme-challenge.example.test` (apex and wildcard).
    let issued = tls::obtain(
        &settings,
        &again,
        &api,
        ZONE,
        &names(&["example.test", "*.example.test"]),
    )
    .await
    .unwrap_or_else(|e| panic!("second order: {e}\npebble log:\n{}", s.ca.log()));
    assert_eq!(issued.names.len(), 2, "{:?}", issued.names);
    let root = s.ca.fetch_root_pem().await.expect("root");
    pebble::verify_chain(&issued.chain_pem, &root, "example.test").expect("apex");
    pebble::verify_chain(&issued.chain_pem, &root, "anything.example.test").expect("wildcard");
    assert!(challenge_records(&api, "example.test").await.is_empty());

    // Credentials for another directory: a new account there, with new credentials.
    let mut elsewhere: serde_json::Value = serde_json::from_str(&credentials).expect("json");
    elsewhere["directory"] = serde_json::json!("https://127.0.0.1:9/dir");
    let (other, fresh) = tls::account(&settings, Some(&elsewhere.to_string()))
        .await
        .expect("new account for this directory");
    assert!(fresh.is_some());
    assert_ne!(other.id(), first.id());

    // A CA that no longer knows the account (Pebble forgets all on restart): a new one.
    let ca2 = pebble::Pebble::start(s.dns.dns_addr())
        .expect("pebble")
        .expect("installed");
    let mut settings2 = settings.clone();
    settings2.directory = ca2.directory_url();
    settings2.extra_roots_pem = vec![ca2.https_root_pem().to_string()];
    let mut moved: serde_json::Value = serde_json::from_str(&credentials).expect("json");
    moved["directory"] = serde_json::json!(ca2.directory_url());
    let (renewed, fresh) = tls::account(&settings2, Some(&moved.to_string()))
        .await
        .expect("registered again");
    assert!(fresh.is_some());
    assert!(renewed
        .id()
        .starts_with(ca2.directory_url().trim_end_matches("/dir")));

    // Garbage credentials are refused without being echoed.
    let err = tls::account(
        &settings,
        Some("{\"id\": \"x\", \"key_pkcs8\": \"!!!secret!!!\"}"),
    )
    .await
    .expect_err("garbage");
    assert!(matches!(err, TlsError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_authorization_the_ca_reuses_needs_no_challenge() {
    let options = pebble::PebbleOptions {
        authz_reuse: 100,
        ..Default::default()
    };
    let Some(s) = servers(&options) else {
        return;
    };
    let settings = settings(&s);
    let counting = Counting {
        inner: powerdns(&s),
        published: AtomicUsize::new(0),
    };
    let (account, _) = tls::account(&settings, None).await.expect("account");
    let wanted = names(&["mx1.example.test"]);
    tls::obtain(&settings, &account, &counting, ZONE, &wanted)
        .await
        .expect("first");
    assert_eq!(counting.published.load(Ordering::SeqCst), 1);
    let issued = tls::obtain(&settings, &account, &counting, ZONE, &wanted)
        .await
        .unwrap_or_else(|e| panic!("second: {e}\npebble log:\n{}", s.ca.log()));
    assert_eq!(
        counting.published.load(Ordering::SeqCst),
        1,
        "nothing published again"
    );
    assert_eq!(issued.names, wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_through_http_01() {
    let port = pebble::free_port().expect("port");
    let options = pebble::PebbleOptions {
        http_port: Some(port),
        ..Default::default()
    };
    let Some(s) = servers(&options) else {
        return;
    };
    // Pebble finds web.example.test at 127.0.0.1 through PowerDNS, and connects to `port`.
    s.dns
        .add_record(ZONE, "web", "A", "127.0.0.1")
        .expect("A record");
    let mut settings = settings(&s);
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    settings.challenge = Challenge::Http01 { listen };
    settings.nameservers.clear();
    let (account, _) = tls::account(&settings, None).await.expect("account");
    let unused = Arc::new(Unserved::default());
    let issued = tls::obtain(
        &settings,
        &account,
        unused.as_ref(),
        ZONE,
        &names(&["web.example.test"]),
    )
    .await
    .unwrap_or_else(|e| panic!("obtain: {e}\npebble log:\n{}", s.ca.log()));
    let root = s.ca.fetch_root_pem().await.expect("root");
    pebble::verify_chain(&issued.chain_pem, &root, "web.example.test").expect("verifies");
    assert_eq!(
        unused.published.load(Ordering::SeqCst),
        0,
        "no DNS for http-01"
    );
    // The responder is gone with the order.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(listen).await.is_err());

    // A name that does not resolve cannot be proved: the CA says so.
    let err = tls::obtain(
        &settings,
        &account,
        unused.as_ref(),
        ZONE,
        &names(&["nowhere.example.test"]),
    )
    .await
    .expect_err("no address");
    assert!(
        err.to_string()
            .starts_with("acme: http-01 challenge for nowhere.example.test failed: "),
        "{err}"
    );
    assert!(!err.retryable());
}

/// Orders kept in memory, as the store keeps them for the engine.
#[derive(Default)]
struct Journal {
    orders: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl tls::OrderJournal for Journal {
    async fn unfinished(&self, names: &str) -> Result<Vec<String>, TlsError> {
        let orders = self.orders.lock().expect("lock");
        Ok(orders
            .iter()
            .filter(|(_, n)| n == names)
            .map(|(u, _)| u.clone())
            .collect())
    }
    async fn placed(&self, url: &str, names: &str) -> Result<(), TlsError> {
        let mut orders = self.orders.lock().expect("lock");
        orders.push((url.to_string(), names.to_string()));
        Ok(())
    }
    async fn done(&self, url: &str) -> Result<(), TlsError> {
        self.orders.lock().expect("lock").retain(|(u, _)| u != url);
        Ok(())
    }
}

/// A DNS provider that never answers a publish: the process is killed while it waits.
struct Hung;

#[async_trait]
impl DnsProvider for Hung {
    fn name(&self) -> &str {
        "hung"
    }
    async fn publish(&self, _: &str, _: &[PlannedRecord]) -> Result<Vec<Published>, DnsError> {
        std::future::pending().await
    }
    async fn remove(&self, _: &str, _: &[Published]) -> Result<(), DnsError> {
        Ok(())
    }
    async fn lookup(&self, _: &str, _: &str, _: &str) -> Result<Vec<Published>, DnsError> {
        Ok(Vec::new())
    }
}

/// An order cut off after it was placed (its process killed while publishing the challenge)
/// is kept from the moment it was placed; when the same name is ordered again, the abandoned
/// order's pending authorization is deactivated at the CA before the new order goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_placed_order_deactivates_the_abandoned_ones_authorization() {
    let Some(s) = servers(&Default::default()) else {
        return;
    };
    let settings = settings(&s);
    let (account, _) = tls::account(&settings, None).await.expect("account");
    let journal = Journal::default();
    let wanted = names(&["mx7.example.test"]);

    let cut_off = tokio::time::timeout(
        Duration::from_secs(3),
        tls::obtain_recorded(&settings, &account, &Hung, ZONE, &wanted, &journal),
    )
    .await;
    assert!(cut_off.is_err(), "the order was cut off mid-way");
    let kept = journal.orders.lock().expect("lock").clone();
    assert_eq!(kept.len(), 1, "the order was kept when placed");
    let (abandoned, key) = kept[0].clone();
    assert_eq!(key, "mx7.example.test");
    let mut view = tls::OrderView::open(&account, &abandoned)
        .await
        .expect("the abandoned order");
    let pending = [("mx7.example.test".to_string(), "pending".to_string())];
    assert_eq!(view.authorizations().await.expect("states"), pending);

    let api = powerdns(&s);
    let issued = tls::obtain_recorded(&settings, &account, &api, ZONE, &wanted, &journal)
        .await
        .unwrap_or_else(|e| panic!("obtain: {e}\npebble log:\n{}", s.ca.log()));
    assert_eq!(issued.names, wanted);
    let deactivated = [("mx7.example.test".to_string(), "deactivated".to_string())];
    assert_eq!(view.authorizations().await.expect("states"), deactivated);
    assert!(
        journal.orders.lock().expect("lock").is_empty(),
        "both orders are settled"
    );
    assert!(challenge_records(&api, "mx7.example.test").await.is_empty());
}

/// A DNS provider that refuses every publish; before refusing, it opens a view of the order
/// the challenge is for (while that order is still pending).
struct Refusing {
    account: tls::Account,
    journal: Arc<Journal>,
    view: tokio::sync::Mutex<Option<tls::OrderView>>,
}

#[async_trait]
impl DnsProvider for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    async fn publish(&self, _: &str, _: &[PlannedRecord]) -> Result<Vec<Published>, DnsError> {
        let url = self.journal.orders.lock().expect("lock")[0].0.clone();
        let view = tls::OrderView::open(&self.account, &url)
            .await
            .expect("the placed order");
        *self.view.lock().await = Some(view);
        Err(DnsError::Rejected("refusing: 422 zone is locked".into()))
    }
    async fn remove(&self, _: &str, _: &[Published]) -> Result<(), DnsError> {
        Ok(())
    }
    async fn lookup(&self, _: &str, _: &str, _: &str) -> Result<Vec<Published>, DnsError> {
        Ok(Vec::new())
    }
}

/// An order that fails before its challenge is answered does not leave its authorization
/// pending at the CA: it is deactivated as the order fails, and the order is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_deactivates_its_pending_authorization() {
    let Some(s) = servers(&Default::default()) else {
        return;
    };
    let settings = settings(&s);
    let (account, _) = tls::account(&settings, None).await.expect("account");
    let journal = Arc::new(Journal::default());
    let refusing = Refusing {
        account: account.clone(),
        journal: journal.clone(),
        view: tokio::sync::Mutex::new(None),
    };
    let wanted = names(&["mx8.example.test"]);
    let err = tls::obtain_recorded(&settings, &account, &refusing, ZONE, &wanted, &*journal)
        .await
        .expect_err("the challenge cannot be published");
    assert!(err.to_string().contains("zone is locked"), "{err}");
    assert!(journal.orders.lock().expect("lock").is_empty(), "forgotten");
    let mut view = refusing
        .view
        .lock()
        .await
        .take()
        .expect("the order was seen");
    let deactivated = [("mx8.example.test".to_string(), "deactivated".to_string())];
    assert_eq!(view.authorizations().await.expect("states"), deactivated);
}
