//! Issue 7 on the embedded default (SQLite, the simulated cloud, its simulated DNS and CA):
//! the configure step makes the domain's DKIM key, publishes the node's records and gets a
//! certificate; the verify step checks the records, the forward-confirmed rDNS and the
//! certificate; a rollback removes exactly the request's own records — a domain's DKIM and
//! DMARC records stay while another node relies on them.

mod support;

use mailfleet::dns::sim::SimDns;
use mailfleet::dns::DnsProvider;
use mailfleet::engine;
use std::time::Duration;
use support::*;

async fn txt_at(dns: &SimDns, zone: &str, name: &str, rtype: &str) -> Vec<String> {
    dns.lookup(zone, name, rtype)
        .await
        .expect("lookup")
        .into_iter()
        .map(|p| p.content)
        .collect()
}

/// The detail a request's sub-task recorded ("" when none).
fn task_detail(d: &mailfleet::store::RequestDetail, task: &str) -> String {
    d.tasks
        .iter()
        .find(|t| t.name == task)
        .and_then(|t| t.detail.clone())
        .unwrap_or_default()
}

/// The detail on a request's resource of `kind` ("" when none).
fn resource_detail(d: &mailfleet::store::RequestDetail, kind: &str) -> String {
    d.resources
        .iter()
        .find(|r| r.kind == kind)
        .and_then(|r| r.detail.clone())
        .unwrap_or_default()
}

/// Puts a TXT record in the simulated example.org zone, as someone else would.
async fn put_txt(dns: &SimDns, purpose: &'static str, name: &str, text: &str) {
    dns.publish(
        "example.org",
        &[mailfleet::domain::records::PlannedRecord {
            purpose,
            name: name.into(),
            rtype: "TXT",
            ttl: 60,
            content: text.into(),
            strings: mailfleet::domain::records::split_txt(text),
        }],
    )
    .await
    .expect("publish");
}

/// Asks for the request's deprovision, runs the engine until idle, and returns the detail of
/// the request, which must have ended deprovisioned.
async fn deprovisioned(
    store: &mailfleet::store::Store,
    cfg: &mailfleet::config::Config,
    id: &str,
) -> mailfleet::store::RequestDetail {
    let ctx = sim_ctx(store, cfg, system_clock());
    ask_deprovision(&ctx, id).await;
    engine::run_until_idle(ctx).await;
    let d = store.request_detail(id).await.expect("detail");
    assert_eq!(d.request.state, "deprovisioned", "{:?}", d.request.error);
    d
}

/// A fresh store on FAST settings with one completed node, mx1.example.org: its temp dir,
/// config, store and id.
async fn one_completed_node(
    clock: mailfleet::clock::SharedClock,
) -> (
    tempfile::TempDir,
    mailfleet::config::Config,
    mailfleet::store::Store,
    String,
) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, clock);
    let id = create_in(&ctx, "mx1", "example.org").await;
    engine::run_until_idle(ctx).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    (dir, cfg, store, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keys_and_certificates_on_the_simulated_cloud() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let clock = system_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let handle = engine::spawn(ctx.clone());
    let a = create_in(&ctx, "mx1", "mail.example.org").await;
    let b = create_in(&ctx, "mx2", "mail.example.org").await;
    let rows = wait_for(&store, Duration::from_secs(60), "both finished", |rows| {
        all_terminal_or_completed(rows)
    })
    .await;
    for r in &rows {
        assert_eq!(r.state, "completed", "{}: {:?}", r.label, r.error);
    }

    // One key for the domain, made by whichever node came first; its private half sealed
    // or in a 0600 file, never in the listing.
    let keys = store.dkim_keys().await.expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].domain, "mail.example.org");

    let da = store.request_detail(&a).await.expect("a");
    let db = store.request_detail(&b).await.expect("b");
    for d in [&da, &db] {
        let purposes: Vec<&str> = d.records.iter().map(|r| r.purpose.as_str()).collect();
        assert_eq!(purposes, ["a", "mx", "spf", "dkim", "dmarc"]);
        assert!(
            d.records.iter().all(|r| r.status == "verified"),
            "{:#?}",
            d.records
        );
        let cert = d
            .certificates
            .iter()
            .find(|c| c.status == "active")
            .expect("certificate");
        let host = format!("{}.mail.example.org", d.request.label);
        assert_eq!(cert.names, std::slice::from_ref(&host));
        assert_eq!(
            d.node.as_ref().and_then(|n| n.cert_not_after.clone()),
            Some(cert.not_after.clone()),
            "the node shows its certificate's expiry"
        );
        let rdns = task_detail(d, "rdns_confirm");
        assert!(rdns.contains(&format!("→ {host} →")), "{rdns}");
        // Every sub-task of every step is on record as done, those whose marks rode with
        // a later write (dkim_key, wait_active, rdns_confirm) included.
        for step in mailfleet::domain::step::STEPS {
            for name in step.tasks() {
                let t = d
                    .tasks
                    .iter()
                    .find(|t| t.step == step.as_str() && t.name == *name);
                assert_eq!(
                    t.map(|t| t.status.as_str()),
                    Some("done"),
                    "{step} {name}: {:#?}",
                    d.tasks
                );
                assert!(t
                    .and_then(|t| t.detail.as_deref())
                    .is_some_and(|x| !x.is_empty()));
            }
        }
    }
    // The node-owned records belong to each; the shared ones to exactly one of them.
    let shared_owned = |purpose: &str| {
        [&da, &db]
            .iter()
            .filter(|d| d.records.iter().any(|r| r.purpose == purpose && r.owned))
            .count()
    };
    assert_eq!(shared_owned("dkim"), 1);
    assert_eq!(shared_owned("dmarc"), 1);
    assert_eq!(shared_owned("a"), 2);

    // The zone as the simulated DNS holds it.
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock.clone());
    let zone = "mail.example.org";
    let selector = &keys[0].selector;
    let dkim_name = format!("{selector}._domainkey.mail.example.org.");
    assert_eq!(txt_at(&dns, zone, &dkim_name, "TXT").await.len(), 1);
    assert_eq!(
        txt_at(&dns, zone, "mx1.mail.example.org.", "A").await.len(),
        1
    );

    // Deprovision the node that owns the shared records: its own go, the shared ones stay
    // for the other node (now theirs).
    let owner = if da.records.iter().any(|r| r.purpose == "dkim" && r.owned) {
        da.request.clone()
    } else {
        db.request.clone()
    };
    let other = if owner.id == a { &b } else { &a };
    let other_label = if owner.id == a { "mx2" } else { "mx1" };
    ask_deprovision(&ctx, &owner.id).await;
    wait_for(&store, Duration::from_secs(60), "deprovisioned", |rows| {
        rows.iter()
            .any(|r| r.id == owner.id && r.state == "deprovisioned")
    })
    .await;
    let gone = format!("{}.mail.example.org.", owner.label);
    for t in ["A", "MX", "TXT"] {
        assert!(
            txt_at(&dns, zone, &gone, t).await.is_empty(),
            "{gone} {t} removed"
        );
    }
    assert_eq!(
        txt_at(&dns, zone, &dkim_name, "TXT").await.len(),
        1,
        "the other node still needs the DKIM record"
    );
    assert_eq!(
        txt_at(&dns, zone, "_dmarc.mail.example.org.", "TXT")
            .await
            .len(),
        1
    );
    let left = store.request_detail(other).await.expect("other");
    assert!(left
        .records
        .iter()
        .filter(|r| r.purpose == "dkim" || r.purpose == "dmarc")
        .all(|r| r.owned));
    let od = store.request_detail(&owner.id).await.expect("owner");
    assert!(od.records.iter().all(|r| r.status == "removed"));
    assert!(od.certificates.iter().all(|c| c.status == "retired"));

    // The last node goes: nothing of ours is left in the zone.
    ask_deprovision(&ctx, other).await;
    wait_for(&store, Duration::from_secs(60), "deprovisioned", |rows| {
        rows.iter().all(|r| r.state == "deprovisioned")
    })
    .await;
    for (name, t) in [
        (dkim_name.as_str(), "TXT"),
        ("_dmarc.mail.example.org.", "TXT"),
        (&format!("{other_label}.mail.example.org."), "A"),
    ] {
        assert!(txt_at(&dns, zone, name, t).await.is_empty(), "{name} {t}");
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_spf_over_ten_lookups_fails_the_request_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let extra: Vec<String> = (0..10)
        .map(|i| format!("\"include:_spf{i}.example.net\""))
        .collect();
    let cfg = config(&FAST.replace(
        "[dns]",
        &format!("[dns]\nspf_extra = [{}, \"mx\"]", extra.join(", ")),
    ));
    let store = open(&db_path(&dir), &cfg).await;
    let clock = system_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let id = create_in(&ctx, "mx1", "example.org").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let err = d.request.error.clone().unwrap_or_default();
    assert!(err.contains("dns_publish: spf: 11 DNS lookups"), "{err}");
    assert!(d.records.is_empty(), "nothing was planned: {:?}", d.records);
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock);
    assert!(txt_at(&dns, "example.org", "mx1.example.org.", "A")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_rotation_publishes_the_new_selector_before_retiring_the_old() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&FAST.replace("[dns]", "[dns]\ned25519 = true"));
    let store = open(&db_path(&dir), &cfg).await;
    let clock = system_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let id = create_in(&ctx, "mx1", "example.org").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    let purposes: Vec<&str> = d.records.iter().map(|r| r.purpose.as_str()).collect();
    assert_eq!(
        purposes,
        ["a", "mx", "spf", "dkim", "dkim-ed25519", "dmarc"]
    );
    let ed = d
        .records
        .iter()
        .find(|r| r.purpose == "dkim-ed25519")
        .expect("ed25519");
    assert!(ed.want.starts_with("v=DKIM1; k=ed25519; p="), "{}", ed.want);
    // The raw 32-byte key, base64: 44 characters.
    assert_eq!(ed.want.len(), "v=DKIM1; k=ed25519; p=".len() + 44);

    let r = engine::mail::rotate_dkim(&ctx.mail, &store, &cfg, clock.now(), "example.org", false)
        .await
        .expect("rotate");
    assert_eq!(r.old_selectors, ["mf1", "mf1-ed"]);
    assert_eq!(r.new_selectors, ["mf2", "mf2-ed"]);
    assert!(r.verified && r.old_removed);
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock.clone());
    for (sel, n) in [("mf1", 0), ("mf1-ed", 0), ("mf2", 1), ("mf2-ed", 1)] {
        assert_eq!(
            txt_at(
                &dns,
                "example.org",
                &format!("{sel}._domainkey.example.org."),
                "TXT"
            )
            .await
            .len(),
            n,
            "{sel}"
        );
    }
    let keys = store.dkim_keys().await.expect("keys");
    let retired: Vec<(&str, bool)> = keys
        .iter()
        .map(|k| (k.selector.as_str(), k.retired_at.is_some()))
        .collect();
    assert_eq!(
        retired,
        [
            ("mf1", true),
            ("mf1-ed", true),
            ("mf2", false),
            ("mf2-ed", false)
        ]
    );
    // A new node of the domain signs with the new selector.
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let id2 = create_in(&ctx, "mx2", "example.org").await;
    engine::run_until_idle(ctx.clone()).await;
    let d2 = store.request_detail(&id2).await.expect("detail");
    assert_eq!(d2.request.state, "completed", "{:?}", d2.request.error);
    assert!(d2
        .records
        .iter()
        .any(|r| r.name == "mf2._domainkey.example.org." && !r.owned));
}

#[tokio::test(start_paused = true)]
async fn certificates_are_renewed_thirty_days_before_they_expire() {
    let clock = tokio_clock();
    let (_dir, cfg, store, id) = one_completed_node(clock.clone()).await;
    let d = store.request_detail(&id).await.expect("detail");
    let first = d.certificates[0].clone();
    assert_eq!(first.status, "active");

    // 55 days on, more than 30 days are left: nothing is due.
    tokio::time::advance(Duration::from_secs(55 * 86_400)).await;
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    assert!(engine::renew::pass(&ctx).await.is_empty());

    // A week later fewer than 30 are left: renewed, through the same CA and DNS.
    tokio::time::advance(Duration::from_secs(7 * 86_400)).await;
    let done = engine::renew::pass(&ctx).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].0, "mx1.example.org");
    assert!(done[0].1.is_ok(), "{done:?}");
    let d = store.request_detail(&id).await.expect("detail");
    let active: Vec<_> = d
        .certificates
        .iter()
        .filter(|c| c.status == "active")
        .collect();
    assert_eq!(active.len(), 1);
    assert!(active[0].not_after > first.not_after);
    assert_eq!(active[0].names, first.names);
    assert!(d
        .certificates
        .iter()
        .any(|c| c.id == first.id && c.status == "superseded"));
    assert_eq!(
        d.node.as_ref().and_then(|n| n.cert_not_after.clone()),
        Some(active[0].not_after.clone())
    );
    let held = d
        .resources
        .iter()
        .find(|r| r.kind == "certificate")
        .and_then(|r| r.provider_ref.clone());
    assert_eq!(held, Some(active[0].id.clone()));
    // Renewed: nothing more is due.
    assert!(engine::renew::pass(&ctx).await.is_empty());
    // The challenge record of the renewal is gone from the zone.
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock);
    assert!(txt_at(
        &dns,
        "example.org",
        "_acme-challenge.mx1.example.org.",
        "TXT"
    )
    .await
    .is_empty());
}

/// The console and `mailfleet work` both run the renewal task: two passes at once order a
/// due certificate once, not twice (a CA counts duplicate orders against its rate limits).
#[tokio::test(start_paused = true)]
async fn two_processes_renewing_at_once_order_a_certificate_once() {
    let clock = tokio_clock();
    let (_dir, cfg, store, id) = one_completed_node(clock.clone()).await;
    tokio::time::advance(Duration::from_secs(62 * 86_400)).await;
    let (console, worker) = (
        sim_ctx(&store, &cfg, clock.clone()),
        sim_ctx(&store, &cfg, clock.clone()),
    );
    assert_ne!(console.owner, worker.owner);
    let (a, b) = tokio::join!(engine::renew::pass(&console), engine::renew::pass(&worker));
    let all: Vec<_> = a.iter().chain(b.iter()).collect();
    assert_eq!(all.len(), 1, "one renewal between them: {all:?}");
    assert!(all[0].1.is_ok(), "{all:?}");
    let d = store.request_detail(&id).await.expect("detail");
    let statuses: Vec<&str> = d.certificates.iter().map(|c| c.status.as_str()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "active").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 2, "one new certificate: {statuses:?}");
    // The claim is released with the renewal.
    let listed = store.certificates(None).await.expect("certificates");
    assert!(
        listed.iter().all(|c| c.renewing_until.is_none()),
        "{listed:?}"
    );
}

/// A renewal cut off in the middle of its order (the process killed after the CA's
/// challenge record went into the zone) holds its claim until it lapses: meanwhile another
/// process leaves the certificate alone; then it orders again and clears the old challenge
/// record first, so that nothing of the cut-off order is left in the zone.
#[tokio::test(start_paused = true)]
async fn a_renewal_cut_off_mid_order_is_ordered_again_and_its_challenge_cleared() {
    let clock = tokio_clock();
    let (_dir, cfg, store, id) = one_completed_node(clock.clone()).await;
    tokio::time::advance(Duration::from_secs(62 * 86_400)).await;
    let first = store
        .request_detail(&id)
        .await
        .expect("detail")
        .certificates[0]
        .clone();

    // The process that was cut off: its claim and its challenge record.
    let gone = sim_ctx(&store, &cfg, clock.clone());
    let now = clock.now();
    let lease = engine::renew::renewal_lease(&cfg);
    let claimed = store
        .cert_claim_renewal(&first.id, &gone.owner, now, now + lease)
        .await
        .expect("claim");
    assert_eq!(claimed, Some(None), "a first claim, nothing lapsed");
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock.clone());
    let token = "cut-off-order-token";
    put_txt(
        &dns,
        "acme-challenge",
        "_acme-challenge.mx1.example.org.",
        token,
    )
    .await;
    drop(gone);
    let challenge = || {
        txt_at(
            &dns,
            "example.org",
            "_acme-challenge.mx1.example.org.",
            "TXT",
        )
    };
    assert_eq!(challenge().await.len(), 1);

    // While the claim holds, another process leaves it alone, and says it is renewing.
    let other = sim_ctx(&store, &cfg, clock.clone());
    assert!(engine::renew::pass(&other).await.is_empty());
    let listed = store.certificates(None).await.expect("certificates");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].renewing(clock.now()));
    assert_eq!(challenge().await.len(), 1);

    // Once it lapses: ordered again, and the cut-off order's challenge record is gone.
    tokio::time::advance(lease.to_std().expect("lease") + Duration::from_secs(1)).await;
    let lapsed = store.certificates(None).await.expect("certificates");
    assert!(!lapsed[0].renewing(clock.now()), "the claim lapsed");
    let done = engine::renew::pass(&other).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].1.is_ok(), "{done:?}");
    assert!(challenge().await.is_empty(), "{:?}", challenge().await);
    let d = store.request_detail(&id).await.expect("detail");
    assert!(d
        .certificates
        .iter()
        .any(|c| c.id == first.id && c.status == "superseded"));
    assert_eq!(
        d.certificates
            .iter()
            .filter(|c| c.status == "active")
            .count(),
        1
    );
}

/// Teardown revokes a node's certificate at its CA and destroys its key (the file deleted);
/// a CA that cannot be reached is recorded on the certificate and does not hold up the
/// teardown, and the key is destroyed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_revokes_the_certificate_and_destroys_its_key() {
    let (_dir, cfg, store, id) = one_completed_node(system_clock()).await;
    let cert = store
        .request_detail(&id)
        .await
        .expect("detail")
        .certificates[0]
        .clone();
    let (chain, _, file) = store
        .cert_material(&cert.id)
        .await
        .expect("material")
        .expect("there");
    let file = file.expect("no sealing key here: the key is a file");
    let file = store.key_path(&file).display().to_string();
    assert!(std::path::Path::new(&file).exists());
    let d = deprovisioned(&store, &cfg, &id).await;
    let c = &d.certificates[0];
    assert_eq!(c.status, "retired");
    assert!(c.revoked_at.is_some(), "{c:?}");
    assert_eq!(c.revoke_error, None);
    assert_eq!(c.key_stored, "destroyed");
    let fate = c.fate();
    assert!(fate[0].starts_with("revoked 20"), "{fate:?}");
    assert_eq!(fate[1], "key destroyed");
    assert!(!std::path::Path::new(&file).exists(), "{file} deleted");
    assert_eq!(
        store.cert_material(&cert.id).await.expect("material"),
        Some((chain, None, None))
    );
    let released = resource_detail(&d, "certificate");
    assert!(released.contains("1 revoked"), "{released}");

    // A second node; then the CA named in the config cannot be reached.
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let id2 = create_in(&ctx, "mx2", "example.org").await;
    engine::run_until_idle(ctx).await;
    let d2 = store.request_detail(&id2).await.expect("detail");
    assert_eq!(d2.request.state, "completed", "{:?}", d2.request.error);
    let cert2 = d2.certificates[0].clone();
    let mut away = cfg.clone();
    away.tls.acme = "https://127.0.0.1:9/directory".into();
    let ctx2 = sim_ctx(&store, &away, system_clock());
    ask_deprovision(&ctx2, &id2).await;
    engine::run_until_idle(ctx2).await;
    let d2 = store.request_detail(&id2).await.expect("detail");
    assert_eq!(d2.request.state, "deprovisioned", "{:?}", d2.request.error);
    let c2 = d2
        .certificates
        .iter()
        .find(|c| c.id == cert2.id)
        .expect("cert");
    assert_eq!(c2.status, "retired");
    assert_eq!(c2.revoked_at, None);
    let why = c2.revoke_error.clone().unwrap_or_default();
    assert!(why.contains("revoke_certificate"), "{why}");
    assert_eq!(c2.key_stored, "destroyed");
    assert_eq!(c2.fate()[0], format!("not revoked: {why}"));
}

/// A key file that cannot be deleted is never reported destroyed: the certificate keeps
/// its record of the file, and the teardown says the file was NOT deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_that_cannot_be_deleted_is_not_reported_destroyed() {
    let (_dir, cfg, store, id) = one_completed_node(system_clock()).await;
    let cert = store
        .request_detail(&id)
        .await
        .expect("detail")
        .certificates[0]
        .clone();
    let (_, _, file) = store
        .cert_material(&cert.id)
        .await
        .expect("material")
        .expect("there");
    let recorded = file.expect("the key is a file");
    let path = store.key_path(&recorded);
    // Something that unlink(2) refuses: a folder stands where the key file was.
    std::fs::remove_file(&path).expect("remove the key file");
    std::fs::create_dir_all(path.join("held")).expect("a folder in its place");
    let d = deprovisioned(&store, &cfg, &id).await;
    let c = &d.certificates[0];
    assert_eq!(c.status, "retired");
    assert_eq!(c.key_stored, "file", "{c:?}");
    assert!(
        c.fate().contains(&"key file NOT deleted".to_string()),
        "{:?}",
        c.fate()
    );
    assert_eq!(
        store
            .cert_material(&cert.id)
            .await
            .expect("material")
            .map(|m| m.2),
        Some(Some(recorded))
    );
    let said = resource_detail(&d, "certificate");
    assert!(said.contains("NOT deleted"), "{said}");
    assert!(!said.contains("keys destroyed"), "{said}");
}

/// A key path recorded by an older build, relative to a folder no longer known, that names
/// no file from here: the key may still be on disk there, so it is not reported destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_key_record_whose_file_is_not_found_is_not_reported_destroyed() {
    let (dir, cfg, store, id) = one_completed_node(system_clock()).await;
    let cert = store
        .request_detail(&id)
        .await
        .expect("detail")
        .certificates[0]
        .clone();
    let legacy = format!("somewhere-else/tls/cert-{}.key", cert.id);
    rusqlite::Connection::open(db_path(&dir))
        .expect("open")
        .execute(
            "UPDATE certificates SET key_file = ?1 WHERE id = ?2",
            [&legacy, &cert.id],
        )
        .expect("an older record");
    let d = deprovisioned(&store, &cfg, &id).await;
    assert_eq!(d.certificates[0].key_stored, "file");
    let said = resource_detail(&d, "certificate");
    assert!(
        said.contains("NOT deleted") && said.contains("somewhere-else"),
        "{said}"
    );
}

/// A domain that publishes its own DMARC policy keeps it: the node relies on that record
/// (verified, marked as there already) and its rollback leaves it. With
/// `keep_existing_dmarc = false` the request fails instead, naming the record, and leaves
/// nothing in the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domains_own_dmarc_record_is_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), system_clock());
    let theirs = "v=DMARC1; p=reject; rua=mailto:owner@example.org";
    put_txt(&dns, "dmarc", "_dmarc.example.org.", theirs).await;
    let dmarc = || txt_at(&dns, "example.org", "_dmarc.example.org.", "TXT");
    let before = dmarc().await;
    assert_eq!(before.len(), 1);

    let ctx = sim_ctx(&store, &cfg, system_clock());
    let id = create_in(&ctx, "mx1", "example.org").await;
    engine::run_until_idle(ctx).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    let row = d
        .records
        .iter()
        .find(|r| r.purpose == "dmarc")
        .expect("dmarc row");
    assert_eq!(row.want, theirs);
    assert!(!row.owned, "{row:?}");
    assert_eq!(row.status, "verified");
    let publish = task_detail(&d, "dns_publish");
    assert!(
        publish.contains("the domain's own DMARC record kept"),
        "{publish}"
    );
    assert_eq!(dmarc().await, before);

    let ctx = sim_ctx(&store, &cfg, system_clock());
    ask_deprovision(&ctx, &id).await;
    engine::run_until_idle(ctx).await;
    assert_eq!(
        store
            .request_detail(&id)
            .await
            .expect("detail")
            .request
            .state,
        "deprovisioned"
    );
    assert_eq!(dmarc().await, before, "the owner's DMARC stays");

    // Told not to keep it: the request fails, naming the record, and leaves nothing.
    let mut strict = cfg.clone();
    strict.dns.keep_existing_dmarc = false;
    let ctx = sim_ctx(&store, &strict, system_clock());
    let id2 = create_in(&ctx, "mx2", "example.org").await;
    engine::run_until_idle(ctx).await;
    let d2 = store.request_detail(&id2).await.expect("detail");
    assert_eq!(d2.request.state, "rolled_back", "{:?}", d2.request.error);
    let why = d2.request.error.clone().unwrap_or_default();
    assert!(why.contains("already has a v=dmarc1 record"), "{why}");
    assert_eq!(dmarc().await, before);
    assert!(txt_at(&dns, "example.org", "mx2.example.org.", "TXT")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_never_reach_the_database_in_the_clear() {
    let (dir, _cfg, store, id) = one_completed_node(system_clock()).await;
    let path = db_path(&dir);
    let d = store.request_detail(&id).await.expect("detail");
    // No sealing key in this environment: each key is a file of its own, mode 0600.
    let (_, sealed, file) = store
        .cert_material(&d.certificates[0].id)
        .await
        .expect("material")
        .expect("there");
    assert!(sealed.is_none());
    let file = store.key_path(&file.expect("key file"));
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(store);
    let mut bytes = std::fs::read(&path).expect("db");
    for wal in ["-wal", "-journal"] {
        if let Ok(more) = std::fs::read(format!("{}{wal}", path.display())) {
            bytes.extend(more);
        }
    }
    let hay = String::from_utf8_lossy(&bytes);
    assert!(
        !hay.contains("PRIVATE KEY"),
        "a private key in the database"
    );
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !hay.contains(&body[..40]),
        "the key's base64 in the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_at_the_limits_and_outside_the_zones() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&FAST.replace("[dns]", "[dns]\nzones = [\"example.net\"]"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    // A hostname of 253 characters, the most a name may have (a 63-character label in a long
    // domain).
    let long_domain = format!(
        "{}.example.net",
        ["b".repeat(60), "c".repeat(60), "d".repeat(55)].join(".")
    );
    let long = create_in(&ctx, &"a".repeat(63), &long_domain).await;
    // A domain outside every zone the config lets us publish in.
    let outside = create_in(&ctx, "mx1", "example.org").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&long).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    assert_eq!(
        d.records[0].name.len(),
        254,
        "{} (with the root's dot)",
        d.records[0].name
    );
    assert_eq!(d.records[0].zone, "example.net");
    let d = store.request_detail(&outside).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    assert_eq!(
        d.request.error.as_deref(),
        Some("dns_publish: hostname mx1.example.org is in none of the zones of [dns] zones (example.net)")
    );
    assert!(d.records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_dns_provider_is_the_one_used_and_a_missing_secret_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    // FAST's [dns] table with `provider`, and the cloudflare table after it.
    let with = |provider: &str, token_env: &str| {
        config(&format!(
            "{}\n[dns.cloudflare]\ntoken_env = \"{token_env}\"\n",
            FAST.replace("[dns]", &format!("[dns]\nprovider = \"{provider}\""))
        ))
    };
    let store = open(&db_path(&dir), &with("sim", "X")).await;
    let clock = system_clock();
    let ctx_for = |cfg: &mailfleet::config::Config| sim_ctx(&store, cfg, clock.clone());

    let cfg = with("cloudflare", "MAILFLEET_TEST_CF_TOKEN_SET");
    std::env::set_var("MAILFLEET_TEST_CF_TOKEN_SET", "cf-secret-value");
    let ctx = ctx_for(&cfg);
    assert_eq!(ctx.mail.problem(), None);
    let dns = ctx.mail.dns().expect("usable").expect("a provider");
    assert_eq!(dns.name(), "cloudflare");

    let cfg = with("cloudflare", "MAILFLEET_TEST_CF_TOKEN_UNSET");
    let problem = ctx_for(&cfg).mail.problem().expect("a problem");
    assert!(
        problem.contains("dns.cloudflare.token_env")
            && problem.contains("MAILFLEET_TEST_CF_TOKEN_UNSET"),
        "{problem}"
    );
    // A request on that config fails with the same words (and no secret in them).
    let ctx = ctx_for(&cfg);
    let id = create_in(&ctx, "mx1", "example.org").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let err = d.request.error.unwrap_or_default();
    assert!(
        err.starts_with("dns_publish: dns.cloudflare.token_env"),
        "{err}"
    );

    let cfg = with("none", "X");
    assert!(ctx_for(&cfg).mail.dns().expect("usable").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_clears_what_an_interrupted_certificate_order_left() {
    let clock = system_clock();
    let (_dir, cfg, store, id) = one_completed_node(clock.clone()).await;
    // What an order killed between publishing its challenge and removing it leaves behind
    // (say, during a renewal), beside a record of the zone owner's at another name.
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock.clone());
    let txt = |name: &str, value: &str| mailfleet::domain::records::PlannedRecord {
        purpose: "txt",
        name: name.into(),
        rtype: "TXT",
        ttl: 60,
        content: value.into(),
        strings: vec![value.into()],
    };
    dns.publish(
        "example.org",
        &[
            txt(
                "_acme-challenge.mx1.example.org.",
                "left-by-an-interrupted-order",
            ),
            txt("_acme-challenge.www.example.org.", "the-owner-s-own"),
        ],
    )
    .await
    .expect("publish");
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    ask_deprovision(&ctx, &id).await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "deprovisioned", "{:?}", d.request.error);
    assert!(txt_at(
        &dns,
        "example.org",
        "_acme-challenge.mx1.example.org.",
        "TXT"
    )
    .await
    .is_empty());
    assert_eq!(
        txt_at(
            &dns,
            "example.org",
            "_acme-challenge.www.example.org.",
            "TXT"
        )
        .await,
        ["\"the-owner-s-own\""]
    );
    let released = resource_detail(&d, "certificate");
    assert!(
        released.contains("1 challenge record(s) cleared"),
        "{released}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_key_signs_only_once_the_older_is_retired() {
    use mailfleet::dkim::{active_keys, make_key, Algorithm};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let now = chrono::Utc::now();
    make_key(&store, &cfg, now, "example.org", "mf1", Algorithm::Rsa2048)
        .await
        .expect("mf1");
    // A rotation under way: mf2 exists but does not answer yet.
    make_key(&store, &cfg, now, "example.org", "mf2", Algorithm::Rsa2048)
        .await
        .expect("mf2");
    let keys = active_keys(&store, "example.org").await.expect("keys");
    assert_eq!(keys.rsa.map(|(s, _)| s).as_deref(), Some("mf1"));
    assert!(store
        .retire_dkim_key("example.org", "mf1", now)
        .await
        .expect("retire"));
    let keys = active_keys(&store, "example.org").await.expect("keys");
    assert_eq!(keys.rsa.map(|(s, _)| s).as_deref(), Some("mf2"));
}

/// A kill in the middle of an order leaves its challenge record in a live node's zone.
/// Reconcile finds and removes it, and reports it; a challenge record of an order that is
/// under way — a renewal whose claim holds, or a request a worker holds (the pipeline orders
/// its certificate while it holds the lease) — is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_removes_challenge_records_no_order_in_flight_uses() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let clock = system_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let left = create_in(&ctx, "mx1", "example.org").await;
    let renewing = create_in(&ctx, "mx2", "example.org").await;
    let leased = create_in(&ctx, "mx3", "example.org").await;
    assert!(engine::run_until_idle(ctx.clone()).await.succeeded());
    let dns = SimDns::new(store.clone(), cfg.providers.sim.clone(), clock.clone());
    for host in ["mx1", "mx2", "mx3"] {
        let name = format!("_acme-challenge.{host}.example.org.");
        put_txt(&dns, "acme-challenge", &name, &format!("token-of-{host}")).await;
    }
    // mx2: another process is renewing its certificate; mx3: a worker holds the request.
    let now = clock.now();
    let cert = store
        .request_detail(&renewing)
        .await
        .expect("detail")
        .certificates[0]
        .id
        .clone();
    let lease = engine::renew::renewal_lease(&cfg);
    let claimed = store
        .cert_claim_renewal(&cert, "engine@elsewhere:1:0001", now, now + lease)
        .await
        .expect("claim");
    assert_eq!(claimed, Some(None));
    store
        .lease_for_command(
            &leased,
            "engine@elsewhere:1:0001",
            now,
            Duration::from_secs(600),
        )
        .await
        .expect("lease");

    let report = engine::reconcile::reconcile(&ctx).await.expect("reconcile");
    assert_eq!(report.challenges_removed.len(), 1, "{report:?}");
    let removed = &report.challenges_removed[0];
    assert_eq!(removed.request_id, left);
    assert_eq!(removed.hostname, "mx1.example.org");
    assert_eq!(removed.name, "_acme-challenge.mx1.example.org.");
    assert_eq!((removed.zone.as_str(), removed.records), ("example.org", 1));
    let at = |host: &str| {
        let name = format!("_acme-challenge.{host}.example.org.");
        let dns = &dns;
        async move { txt_at(dns, "example.org", &name, "TXT").await }
    };
    assert!(at("mx1").await.is_empty());
    assert_eq!(at("mx2").await.len(), 1, "the renewal's record stays");
    assert_eq!(at("mx3").await.len(), 1, "the held request's record stays");
    // The node's other records are untouched.
    assert!(!txt_at(&dns, "example.org", "mx1.example.org.", "A")
        .await
        .is_empty());

    // Nothing is left to find the second time.
    let again = engine::reconcile::reconcile(&ctx).await.expect("reconcile");
    assert!(again.challenges_removed.is_empty(), "{again:?}");
}
