//! Issue 7, the whole pipeline against real servers: with `[dns] provider = "powerdns"` and
//! `[tls] acme` pointing at Pebble, a request goes from queued to completed — its SPF, DKIM,
//! DMARC, MX and A records published on PowerDNS and answering over DNS, its certificate
//! issued by Pebble through dns-01 and chaining to Pebble's root — and its rollback removes
//! exactly what it made. Bad input (a record PowerDNS refuses with 422, a challenge the CA
//! can never validate) becomes the request's error, and nothing half-published is left.

#[path = "support/pdns.rs"]
mod pdns;
#[path = "support/pebble.rs"]
mod pebble;
mod support;

use mailfleet::dns::powerdns::PowerDns;
use mailfleet::dns::propagation::{check_servers, Wanted};
use mailfleet::dns::DnsProvider;
use mailfleet::engine;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const ZONE: &str = "example.test";

struct World {
    dns: pdns::Pdns,
    ca: pebble::Pebble,
    _dir: tempfile::TempDir,
    cfg: mailfleet::config::Config,
    store: mailfleet::store::Store,
}

/// PowerDNS with the zone (and a record of the zone owner's at the apex), Pebble asking it
/// (or `pebble_dns`, when given, instead), and a config that uses both.
async fn world(key_env: &str, pebble_dns: Option<std::net::SocketAddr>) -> Option<World> {
    let dns = pdns::Pdns::start().expect("pdns")?;
    dns.add_zone(ZONE).expect("zone");
    dns.patch_zone(
        "example.test",
        r#"[
        {"name": "example.test.", "type": "TXT", "ttl": 60, "changetype": "REPLACE",
         "records": [{"content": "\"google-site-verification=abc123\"", "disabled": false}]},
        {"name": "example.test.", "type": "MX", "ttl": 60, "changetype": "REPLACE",
         "records": [{"content": "20 backup.example.test.", "disabled": false}]},
        {"name": "mx2.example.test.", "type": "CNAME", "ttl": 60, "changetype": "REPLACE",
         "records": [{"content": "elsewhere.example.net.", "disabled": false}]}
    ]"#,
    )
    .expect("the owner's records");
    let ca = pebble::Pebble::start(pebble_dns.unwrap_or(dns.dns_addr())).expect("pebble")?;
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("pebble-https.pem");
    std::fs::write(&root, ca.https_root_pem()).expect("root");
    std::env::set_var(key_env, dns.api_key());
    // FAST without its [dns] table: this one has its own.
    let fast = FAST.split("\n[dns]\n").next().unwrap_or(FAST);
    let cfg = config(&format!(
        r#"{fast}
[dns]
provider = "powerdns"
nameservers = ["{ns}"]
propagation_timeout = "20s"
propagation_interval = "100ms"
[dns.powerdns]
api_url = "{api}"
api_key_env = "{key_env}"
[tls]
acme = "{dir}"
ca_roots = ["{root}"]
contact = ["mailto:ops@example.test"]
order_timeout = "60s"
"#,
        ns = dns.dns_addr(),
        api = dns.api_url(),
        dir = ca.directory_url(),
        root = root.display(),
    ));
    let store = open(&db_path(&dir), &cfg).await;
    Some(World {
        dns,
        ca,
        _dir: dir,
        cfg,
        store,
    })
}

impl World {
    fn ctx(&self) -> Arc<engine::Ctx> {
        sim_ctx(&self.store, &self.cfg, system_clock())
    }

    fn api(&self) -> PowerDns {
        PowerDns::new(
            &self.dns.api_url(),
            "localhost",
            self.dns.api_key().to_string(),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    /// Every record the zone holds, as (name, type, content), sorted.
    async fn zone(&self) -> Vec<(String, String, String)> {
        self.dns.records(ZONE)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_publishes_real_records_gets_a_real_certificate_and_rolls_back_exactly() {
    let Some(w) = world("MAILFLEET_TEST_PDNS_KEY_FULL", None).await else {
        return;
    };
    let before = w.zone().await;
    let ctx = w.ctx();
    assert_eq!(ctx.mail.problem(), None);
    let handle = engine::spawn(ctx.clone());
    let id = create_in(&ctx, "mx1", ZONE).await;
    let rows = wait_for(&w.store, Duration::from_secs(120), "finished", |rows| {
        all_terminal_or_completed(rows)
    })
    .await;
    let d = w.store.request_detail(&id).await.expect("detail");
    assert_eq!(rows[0].state, "completed", "{:?}", d.request.error);
    let ip = d
        .node
        .as_ref()
        .and_then(|n| n.ip_address.clone())
        .expect("ip");

    // The records: planned, published and verified, each answering over DNS from PowerDNS.
    let purposes: Vec<&str> = d.records.iter().map(|r| r.purpose.as_str()).collect();
    assert_eq!(purposes, ["a", "mx", "spf", "dkim", "dmarc"]);
    assert!(
        d.records.iter().all(|r| r.status == "verified" && r.owned),
        "{:#?}",
        d.records
    );
    let wanted: Vec<Wanted> = d
        .records
        .iter()
        .map(|r| Wanted {
            name: r.name.clone(),
            rtype: r.rtype.clone(),
            want: r.want.clone(),
        })
        .collect();
    let seen = check_servers(&[w.dns.dns_addr()], &wanted, Duration::from_secs(2)).await;
    assert!(seen.iter().all(|(ok, _)| *ok), "{seen:?}");
    assert_eq!(d.records[0].want, ip);
    assert_eq!(d.records[2].want, format!("v=spf1 ip4:{ip} -all"));
    let dkim = &d.records[3];
    assert!(dkim.want.starts_with("v=DKIM1; k=rsa; p=MIIB"));
    assert!(
        dkim.content.matches("\" \"").count() >= 1,
        "one record of several strings: {}",
        dkim.content
    );

    // The certificate: issued by Pebble through dns-01, chaining to its root, for mx1.
    let cert = d
        .certificates
        .iter()
        .find(|c| c.status == "active")
        .expect("certificate");
    assert_eq!(cert.names, ["mx1.example.test"]);
    let (chain, sealed, file) = w
        .store
        .cert_material(&cert.id)
        .await
        .expect("material")
        .expect("there");
    assert!(sealed.is_some() != file.is_some(), "the key is kept once");
    let issued = w.ca.cert_status(&cert.serial).await.expect("status");
    assert_eq!(issued["Status"], "Valid", "{issued}");
    let root = w.ca.fetch_root_pem().await.expect("pebble root");
    pebble::verify_chain(&chain, &root, "mx1.example.test").expect("chain");
    assert!(
        w.api()
            .lookup(ZONE, "_acme-challenge.mx1.example.test.", "TXT")
            .await
            .expect("lookup")
            .is_empty(),
        "the challenge record is gone"
    );
    let tasks: Vec<(String, String)> = d
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.detail.clone().unwrap_or_default()))
        .collect();
    let detail = |n: &str| {
        tasks
            .iter()
            .find(|(t, _)| t == n)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    };
    assert!(detail("rdns_confirm").contains(&format!("PTR {ip} → mx1.example.test → {ip}")));
    assert!(detail("tls_check").contains("mx1.example.test: valid until"));

    // Rollback: the zone is exactly as it was before the request.
    let during = w.zone().await;
    assert!(during.len() > before.len());
    ask_deprovision(&ctx, &id).await;
    wait_for(&w.store, Duration::from_secs(60), "deprovisioned", |rows| {
        rows.iter().all(|r| r.state == "deprovisioned")
    })
    .await;
    assert_eq!(w.zone().await, before);
    let d = w.store.request_detail(&id).await.expect("detail");
    assert!(d.records.iter().all(|r| r.status == "removed"));
    assert!(d.certificates.iter().all(|c| c.status == "retired"));
    // The certificate is revoked at Pebble (cessationOfOperation), and its key destroyed.
    let revoked = w.ca.cert_status(&cert.serial).await.expect("status");
    assert_eq!(revoked["Status"], "Revoked", "{revoked}");
    assert_eq!(revoked["Reason"], 5, "{revoked}");
    let retired = &d.certificates[0];
    assert!(retired.revoked_at.is_some(), "{retired:?}");
    assert_eq!(retired.revoke_error, None);
    assert_eq!(retired.key_stored, "destroyed");
    assert_eq!(
        w.store.cert_material(&cert.id).await.expect("material"),
        Some((chain.clone(), None, None))
    );
    if let Some(f) = &file {
        let path = w.store.key_path(f);
        assert!(!path.exists(), "{} is deleted", path.display());
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_powerdns_refuses_fails_the_request_and_leaves_the_zone_as_it_was() {
    let Some(w) = world("MAILFLEET_TEST_PDNS_KEY_422", None).await else {
        return;
    };
    let before = w.zone().await;
    let ctx = w.ctx();
    // mx2.example.test is a CNAME of the zone owner's: an A record beside it is refused.
    let id = create_in(&ctx, "mx2", ZONE).await;
    engine::run_until_idle(ctx.clone()).await;
    let d = w.store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let err = d.request.error.clone().unwrap_or_default();
    assert!(err.starts_with("dns_publish: powerdns:"), "{err}");
    assert!(err.contains("422"), "{err}");
    assert_eq!(w.zone().await, before, "nothing half-published");
    assert!(d.records.iter().all(|r| r.status == "removed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_the_ca_cannot_validate_fails_the_request_and_removes_its_records() {
    // Pebble asks a port where no DNS server answers: the dns-01 challenge can never pass.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let Some(w) = world(
        "MAILFLEET_TEST_PDNS_KEY_ACME",
        Some(silent.local_addr().expect("addr")),
    )
    .await
    else {
        return;
    };
    let before = w.zone().await;
    let ctx = w.ctx();
    let id = create_in(&ctx, "mx1", ZONE).await;
    engine::run_until_idle(ctx.clone()).await;
    let d = w.store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let err = d.request.error.clone().unwrap_or_default();
    assert!(err.starts_with("tls_certificate: "), "{err}");
    assert!(err.contains("dns-01"), "{err}");
    assert!(err.contains("mx1.example.test"), "{err}");
    assert_eq!(w.zone().await, before, "records and challenge removed");
    drop(silent);
}
