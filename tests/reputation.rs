//! Issue 5 end to end: the blocklist monitor against a real PowerDNS on loopback. Nodes are
//! provisioned on the simulated cloud; their IPs are then listed (and delisted) in test
//! zones, and the monitor's checks open and close listings, pause and resume nodes, and
//! raise and resolve alerts — each change once, with its outbox events.

#[path = "support/pdns.rs"]
mod pdns;
mod support;

use mailfleet::engine::commands::{execute, Command};
use mailfleet::reputation::monitor::Monitor;
use mailfleet::store::{EventFilter, NodeFilter, NodeRow, Store};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn settings(dns: std::net::SocketAddr) -> String {
    format!(
        r#"
[blocklists]
monitor = false
resolver = "{dns}"
timeout = "1s"
interval = "10m"
auto_resume = true

[[blocklists.zones]]
zone = "high.bl.test"
severity = "high"
codes = "spamhaus"

[[blocklists.zones]]
zone = "medium.bl.test"
severity = "medium"
codes = "generic"

[[blocklists.zones]]
zone = "refusing.bl.test"
severity = "high"
codes = "generic"
"#
    )
}

async fn node(store: &Store, label: &str) -> NodeRow {
    store
        .list_nodes(&NodeFilter::default())
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.label == label)
        .expect("the node")
}

async fn event_names(store: &Store, node_id: &str) -> Vec<String> {
    store
        .list_events(&EventFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.node_id.as_deref() == Some(node_id))
        .map(|e| e.name)
        .collect()
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_pause_alert_and_delistings_close_and_resume() {
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    for zone in ["high.bl.test", "medium.bl.test"] {
        pdns::blocklist_fixture(&dns, zone).expect("zone");
    }
    pdns::refusing_fixture(&dns, "refusing.bl.test").expect("zone");

    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!("{FAST}{}", settings(dns.dns_addr())));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    for label in ["mx-a", "mx-b", "mx-c"] {
        create(&ctx, "acme", "dallas", "ssd-1", label).await;
    }
    wait_for(&store, Duration::from_secs(30), "three nodes", |rows| {
        rows.iter().filter(|r| r.state == "completed").count() == 3
    })
    .await;
    handle.shutdown().await;
    let (a, b, c) = (
        node(&store, "mx-a").await,
        node(&store, "mx-b").await,
        node(&store, "mx-c").await,
    );
    let ip =
        |n: &NodeRow| -> Ipv4Addr { n.ip_address.as_deref().expect("ip").parse().expect("v4") };
    assert_eq!(a.status, "warming");

    // a: listed on the high zone, with a delist URL; b: on the medium zone; c: the high
    // zone answers an error code for it (a public-resolver refusal — never a listing).
    let url = "Listed: see https://check.example/lookup";
    dns.add_records(
        "high.bl.test",
        &pdns::listing(ip(&a), "127.0.0.2", Some(url)),
    )
    .expect("list a");
    dns.add_records("medium.bl.test", &pdns::listing(ip(&b), "127.0.0.3", None))
        .expect("list b");
    dns.add_records(
        "high.bl.test",
        &pdns::listing(ip(&c), "127.255.255.254", None),
    )
    .expect("error for c");

    let monitor =
        Monitor::new(store.clone(), Arc::new(cfg.clone()), system_clock()).expect("monitor");
    let zones = monitor.usable_zones().await.expect("zones");
    let names: Vec<&str> = zones.iter().map(|z| z.zone.as_str()).collect();
    assert_eq!(
        names,
        ["high.bl.test", "medium.bl.test"],
        "the refusing zone is not used"
    );
    let checked = monitor.pass(&zones).await.expect("pass");
    assert_eq!(checked, 3, "every node was due");

    // a is paused at once, with the reason on the node.
    let a2 = node(&store, "mx-a").await;
    assert_eq!(a2.status, "paused");
    assert_eq!(
        a2.status_reason.as_deref(),
        Some("blocklist: listed on high.bl.test (SBL)")
    );
    assert_eq!(a2.reputation_score, 50);
    let names_a = event_names(&store, &a.id).await;
    assert_eq!(count(&names_a, "node.blacklisted"), 1, "{names_a:?}");
    assert_eq!(count(&names_a, "node.paused"), 1, "{names_a:?}");
    // b stays in rotation with a medium alert; c is untouched.
    let b2 = node(&store, "mx-b").await;
    assert_eq!(b2.status, "warming");
    assert_eq!(b2.reputation_score, 80);
    let c2 = node(&store, "mx-c").await;
    assert_eq!((c2.status.as_str(), c2.reputation_score), ("warming", 100));
    assert!(event_names(&store, &c.id)
        .await
        .iter()
        .all(|n| n != "node.blacklisted"));

    let snap = store.console_snapshot().await.expect("snapshot");
    let open: Vec<_> = snap
        .listings
        .iter()
        .filter(|l| l.delisted_at.is_none())
        .collect();
    assert_eq!(open.len(), 2, "{open:?}");
    let la = open
        .iter()
        .find(|l| l.node_id.as_deref() == Some(&a.id))
        .expect("a's listing");
    assert_eq!(
        (
            la.zone.as_str(),
            la.code.as_deref(),
            la.meaning.as_deref(),
            la.details.as_deref()
        ),
        ("high.bl.test", Some("127.0.0.2"), Some("SBL"), Some(url))
    );
    assert_eq!(la.severity.as_deref(), Some("high"));
    let alerts = store.alerts(true, 100).await.expect("alerts");
    let sev = |node_id: &str| {
        alerts
            .iter()
            .filter(|x| x.node_id.as_deref() == Some(node_id))
            .map(|x| x.severity.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(sev(&a.id), ["high"]);
    assert_eq!(sev(&b.id), ["medium"]);
    assert!(alerts
        .iter()
        .any(|x| x.kind == "zone" && x.message.contains("refusing.bl.test")));
    assert_eq!(
        (
            snap.alert_counts.high,
            snap.alert_counts.medium,
            snap.alert_counts.low
        ),
        (1, 1, 1)
    );

    // Nothing is due again yet; checking again at once changes nothing and writes no
    // second listing.
    assert_eq!(monitor.pass(&zones).await.expect("pass"), 0);
    for n in [&a, &b] {
        monitor
            .check_node(&n.id, n.ip_address.as_deref().expect("ip"), &zones)
            .await
            .expect("check");
    }
    assert_eq!(
        count(&event_names(&store, &a.id).await, "node.blacklisted"),
        1
    );
    assert_eq!(store.alerts(true, 100).await.expect("alerts").len(), 3);

    // The high zone delists a (through the PowerDNS API); an operator's re-check closes the
    // listing, resolves the alert, and — auto-resume is on — resumes the node.
    let body = format!(
        r#"{{"rrsets":[{{"name":"{}.high.bl.test.","type":"A","changetype":"DELETE"}}]}}"#,
        pdns::reversed(ip(&a))
    );
    let (status, text) = dns
        .api(
            "PATCH",
            "/api/v1/servers/localhost/zones/high.bl.test.",
            Some(&body),
        )
        .expect("api");
    assert_eq!(status, 204, "{text}");
    let out = execute(&ctx, "oncall", Command::CheckNode { id: a.id.clone() })
        .await
        .expect("check");
    let said = out.describe();
    assert!(
        said.contains("0 listed, 2 not listed") && said.ends_with("; resumed"),
        "{said}"
    );
    let a3 = node(&store, "mx-a").await;
    assert_eq!((a3.status.as_str(), a3.reputation_score), ("warming", 100));
    let names_a = event_names(&store, &a.id).await;
    assert_eq!(count(&names_a, "node.delisted"), 1, "{names_a:?}");
    assert_eq!(count(&names_a, "node.resumed"), 1, "{names_a:?}");
    let snap = store.console_snapshot().await.expect("snapshot");
    let la = snap
        .listings
        .iter()
        .find(|l| l.node_id.as_deref() == Some(&a.id))
        .expect("a's listing");
    assert!(la.delisted_at.is_some(), "the delisting closed the event");
    let alerts = store.alerts(false, 100).await.expect("alerts");
    let a_alert = alerts
        .iter()
        .find(|x| x.node_id.as_deref() == Some(&a.id))
        .expect("a's alert");
    assert_eq!(a_alert.resolution.as_deref(), Some("delisted"));
}

/// An operator pauses a node (with the reason on it, once), and resumes it; both audited.
/// (That a delisting never resumes an operator's pause is the policy's unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_and_resumes_a_node_with_the_reason_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    create(&ctx, "acme", "dallas", "ssd-1", "mx-op").await;
    wait_for(&store, Duration::from_secs(30), "the node", |rows| {
        rows.iter().all(|r| r.state == "completed")
    })
    .await;
    handle.shutdown().await;
    let n = node(&store, "mx-op").await;
    let out = execute(
        &ctx,
        "oncall",
        Command::PauseNode {
            id: n.id.clone(),
            reason: Some("complaints from a mailbox provider".into()),
        },
    )
    .await
    .expect("pause");
    assert_eq!(out.describe(), "node mx-op paused");
    let p = node(&store, "mx-op").await;
    assert_eq!(p.status, "paused");
    assert_eq!(
        p.status_reason.as_deref(),
        Some("paused by oncall: complaints from a mailbox provider")
    );
    let err = execute(
        &ctx,
        "oncall",
        Command::PauseNode {
            id: n.id.clone(),
            reason: None,
        },
    )
    .await
    .expect_err("already paused");
    assert_eq!(
        err.to_string(),
        "node mx-op: the node is already paused (operator)"
    );
    execute(&ctx, "oncall", Command::ResumeNode { id: n.id.clone() })
        .await
        .expect("resume");
    assert_eq!(node(&store, "mx-op").await.status, "warming");

    // Maintenance takes it out of rotation; a pause is refused there, a suspended service
    // still stops it, and each comes back to where it was.
    let out = execute(
        &ctx,
        "oncall",
        Command::MaintainNode {
            id: n.id.clone(),
            reason: Some("kernel upgrade".into()),
        },
    )
    .await
    .expect("maintenance");
    assert_eq!(out.describe(), "node mx-op in maintenance");
    let err = execute(
        &ctx,
        "oncall",
        Command::PauseNode {
            id: n.id.clone(),
            reason: None,
        },
    )
    .await
    .expect_err("not serving");
    assert_eq!(
        err.to_string(),
        "node mx-op: a node in maintenance cannot be paused: only a warming or active node can be paused"
    );
    let req = n.request_id.clone().expect("request");
    for command in [
        Command::Suspend {
            id: req.clone(),
            reason: Some("unpaid".into()),
        },
        Command::Reactivate {
            id: req.clone(),
            reason: None,
        },
    ] {
        execute(&ctx, "billing", command).await.expect("service");
    }
    assert_eq!(node(&store, "mx-op").await.status, "maintenance");
    execute(&ctx, "oncall", Command::ResumeNode { id: n.id.clone() })
        .await
        .expect("maintenance done");
    assert_eq!(node(&store, "mx-op").await.status, "warming");

    // Every change is a transition, in order, with who and why; and an event each.
    let mut moves: Vec<(Option<String>, String, Option<String>, String)> = store
        .node_transitions(&n.id)
        .await
        .expect("transitions")
        .into_iter()
        .map(|t| (t.from, t.to, t.cause, t.actor))
        .collect();
    let step = |from: &str, to: &str, cause: Option<&str>, actor: &str| {
        (
            Some(from.to_string()),
            to.to_string(),
            cause.map(str::to_string),
            actor.to_string(),
        )
    };
    // Registered by the engine that ran the activate step (its owner name).
    assert!(moves[0].3.starts_with("engine@"), "{moves:?}");
    moves[0].3 = "engine".into();
    assert_eq!(
        moves,
        [
            step("provisioning", "warming", None, "engine"),
            step("warming", "paused", Some("operator"), "oncall"),
            step("paused", "warming", None, "oncall"),
            step("warming", "maintenance", None, "oncall"),
            step("maintenance", "paused", Some("service"), "billing"),
            step("paused", "maintenance", None, "billing"),
            step("maintenance", "warming", None, "oncall"),
        ]
    );
    let names = event_names(&store, &n.id).await;
    for (name, times) in [
        ("node.registered", 1),
        ("node.paused", 2),
        ("node.resumed", 2),
        ("node.maintenance", 1),
        ("node.maintenance_done", 1),
    ] {
        assert_eq!(count(&names, name), times, "{name}: {names:?}");
    }
    let audit = store.list_audit(100).await.expect("audit");
    assert!(audit
        .iter()
        .any(|a| a.action == "node.pause" && a.actor == "oncall"));
    assert!(audit
        .iter()
        .any(|a| a.action == "node.resume" && a.actor == "oncall"));
}

/// `mailfleet blocklist check` classifies against a real server, prints JSON, and exits 0
/// even when an IP is listed; bad input is one line naming it.
#[test]
fn the_one_shot_check_reports_each_ip_on_each_zone() {
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    pdns::blocklist_fixture(&dns, "high.bl.test").expect("zone");
    pdns::refusing_fixture(&dns, "refusing.bl.test").expect("zone");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bl.toml");
    std::fs::write(&cfg, settings(dns.dns_addr())).expect("config");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("c"))
            .env("XDG_DATA_HOME", dir.path().join("d"))
            .env("XDG_STATE_HOME", dir.path().join("s"))
            .env_remove("MAILFLEET_CONFIG")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .expect("run mailfleet")
    };
    let out = run(&[
        "blocklist",
        "check",
        "192.0.2.10",
        "192.0.2.20",
        "192.0.2.30",
        "--zones",
        "high.bl.test",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = v.as_array().expect("array");
    let got: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().expect("ip"),
                r["status"].as_str().expect("status"),
                r["meaning"].as_str(),
            )
        })
        .collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], ("192.0.2.10", "listed", Some("SBL")));
    assert_eq!(rows[0]["zone"], "high.bl.test");
    assert_eq!(rows[0]["code"], "127.0.0.2");
    assert_eq!(rows[0]["reason"], pdns::fixture::SBL_REASON);
    assert_eq!((got[1].0, got[1].1), ("192.0.2.20", "not_listed"));
    assert_eq!((got[2].0, got[2].1), ("192.0.2.30", "error"));
    assert!(got[2].2.expect("why").contains("public or open resolver"));

    // A zone that lists 127.0.0.1 is unusable: its answers become errors, with a warning.
    let out = run(&[
        "blocklist",
        "check",
        "192.0.2.20",
        "--zones",
        "refusing.bl.test",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("zone refusing.bl.test is unusable"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error") && stdout.contains("zone unusable"),
        "{stdout}"
    );

    let out = run(&["blocklist", "check", "192.0.2.300"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: IP: \"192.0.2.300\" is not an IPv4 address"
    );
}

/// The engine starts the blocklist monitor itself (the console and `work` start nothing
/// else): with `[blocklists] monitor` on, a node registered on a listed IP is checked and
/// paused by the monitor, through the node lifecycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_starts_the_monitor_which_pauses_a_listed_node() {
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    pdns::blocklist_fixture(&dns, "high.bl.test").expect("zone");
    // Every address of the simulated cloud's pool is listed.
    dns.add_records(
        "high.bl.test",
        &[(
            "*.100.51.198".to_string(),
            "A".to_string(),
            "127.0.0.2".to_string(),
        )],
    )
    .expect("wildcard");
    let settings = format!(
        r#"
[blocklists]
monitor = true
resolver = "{}"
timeout = "1s"
interval = "10m"
[[blocklists.zones]]
zone = "high.bl.test"
severity = "high"
codes = "spamhaus"
"#,
        dns.dns_addr()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let fast = FAST.replace(
        "[providers.sim]",
        "[providers.sim]\nip_pools = [\"198.51.100.0/24\"]",
    );
    let cfg = config(&format!("{fast}{settings}"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    create(&ctx, "acme", "dallas", "ssd-1", "mx-listed").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let n = loop {
        let found = store
            .list_nodes(&NodeFilter::default())
            .await
            .expect("nodes")
            .into_iter()
            .find(|n| n.label == "mx-listed" && n.status == "paused");
        if let Some(n) = found {
            break n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the monitor never paused the node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    handle.shutdown().await;
    assert!(n
        .ip_address
        .as_deref()
        .unwrap_or("")
        .starts_with("198.51.100."));
    let last = store
        .node_transitions(&n.id)
        .await
        .expect("transitions")
        .pop()
        .expect("a transition");
    assert_eq!(
        (last.to.as_str(), last.cause.as_deref(), last.actor.as_str()),
        ("paused", Some("blocklist"), "monitor")
    );
}
