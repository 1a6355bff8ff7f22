//! The demo database: every state present, a history the state machine allows, resources
//! and the simulated cloud in agreement, the overwrite guard, an engine that can carry on
//! from the generated fleet, a warm-up history the day-boundary rule would have written,
//! and determinism.

mod support;

use chrono::{DateTime, Utc};
use mailfleet::config::Config;
use mailfleet::demo::{config_for, generate, prepare_path, DemoError, DemoSpec, DemoSummary};
use mailfleet::domain::warmup::{
    builtin_specs, decide, DayCounts, Decision, Thresholds, WarmupPlan,
};
use mailfleet::domain::{transition, RequestEvent, RequestState, ALL_STATES};
use mailfleet::engine;
use mailfleet::engine::reconcile::reconcile;
use mailfleet::store::Store;
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const EVENTS: [RequestEvent; 14] = [
    RequestEvent::RequireApproval,
    RequestEvent::Approve,
    RequestEvent::Reject,
    RequestEvent::Admit,
    RequestEvent::StepSucceeded,
    RequestEvent::StepFailed,
    RequestEvent::AwaitInput,
    RequestEvent::InputProvided,
    RequestEvent::Suspend,
    RequestEvent::Reactivate,
    RequestEvent::Rollback,
    RequestEvent::Deprovision,
    RequestEvent::TeardownFinished {
        remaining: 0,
        deprovision: false,
    },
    RequestEvent::TeardownFinished {
        remaining: 0,
        deprovision: true,
    },
];

fn legal(from: RequestState, to: RequestState) -> bool {
    EVENTS.iter().any(|e| transition(from, *e) == Ok(to))
}

fn state(s: &str) -> RequestState {
    s.parse().expect("a known state")
}

async fn demo(
    path: &Path,
    cfg: &Config,
    spec: DemoSpec,
    now: DateTime<Utc>,
) -> (Store, DemoSummary) {
    let store = open(path, cfg).await;
    let summary = generate(&store, cfg, &spec, now).await.expect("demo");
    (store, summary)
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open read-only")
}

/// A run until idle waits for every retry the engine has scheduled, and the demo's stalled
/// rollbacks are due up to `retry_cap` (5 minutes) after its "now": their retries are brought
/// forward, so a test on the wall clock does not sit them out.
fn stalled_retries_due_now(path: &Path) {
    let conn = Connection::open(path).expect("open");
    let now = mailfleet::clock::ts(Utc::now());
    conn.execute(
        "UPDATE requests SET next_run_at = ?1 WHERE needs_attention = 1 AND next_run_at > ?1",
        [now],
    )
    .expect("bring the stalled retries forward");
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn strings(conn: &Connection, sql: &str) -> Vec<String> {
    let mut st = conn.prepare(sql).expect(sql);
    let rows = st.query_map([], |r| r.get::<_, String>(0)).expect(sql);
    rows.collect::<Result<_, _>>().expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_demo_has_every_state_and_a_consistent_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let cfg = config("");
    let now = Utc::now();
    let (store, summary) = demo(&path, &cfg, DemoSpec::default(), now).await;
    assert_eq!(summary.nodes, 200);
    let conn = read_only(&path);
    let now_ts = mailfleet::clock::ts(now);

    // Each configured request's records: verified where the verify step checked them,
    // removed where it rolled back; every live one is in the simulated zone, and the zone
    // holds a record of a rolled-back node only where it is the domain's (DKIM, DMARC).
    let verified = count(
        &conn,
        "SELECT COUNT(*) FROM dns_records d JOIN requests r ON r.id = d.request_id
         WHERE r.state IN ('completed', 'suspended') AND d.status = 'verified'",
    );
    assert!(verified >= 5 * 100, "{verified} verified records");
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM dns_records d JOIN requests r ON r.id = d.request_id
             WHERE (r.state IN ('completed', 'suspended') AND d.status <> 'verified')
                OR (r.state IN ('rolled_back', 'deprovisioned') AND d.status <> 'removed')"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM dns_records d WHERE d.status <> 'removed' AND NOT EXISTS
               (SELECT 1 FROM sim_dns_records z WHERE z.name = d.name AND z.rtype = d.rtype AND z.content = d.content)"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM sim_dns_records z WHERE NOT EXISTS
               (SELECT 1 FROM dns_records d WHERE d.name = z.name AND d.rtype = z.rtype AND d.content = z.content
                  AND (d.status <> 'removed' OR d.purpose IN ('dkim', 'dmarc')))"
        ),
        0
    );
    // The tenants' domains have real keys; their DKIM records publish them.
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM dns_records d WHERE d.purpose = 'dkim' AND NOT EXISTS
               (SELECT 1 FROM dkim_keys k WHERE d.want = 'v=DKIM1; k=rsa; p=' || k.public_key)"
        ),
        0
    );

    // Each configured request has its certificate: active while it lives (its node shows the
    // expiry), retired once its rollback released it; a real chain, for the node's name.
    let active = count(
        &conn,
        "SELECT COUNT(*) FROM certificates c JOIN requests r ON r.id = c.request_id
         WHERE c.status = 'active' AND r.state IN ('completed', 'suspended')",
    );
    assert!(active >= 100, "{active} active certificates");
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM certificates c JOIN resources x
               ON x.request_id = c.request_id AND x.kind = 'certificate'
             WHERE (x.status = 'released') <> (c.status = 'retired')"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM nodes n JOIN certificates c ON c.request_id = n.request_id
             WHERE c.status = 'active' AND n.cert_not_after IS NOT c.not_after"
        ),
        0
    );
    for (host, chain) in conn
        .prepare("SELECT hostname, chain_pem FROM certificates LIMIT 20")
        .expect("sql")
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("sql")
        .map(|r| r.expect("row"))
    {
        let info = mailfleet::tls::inspect(&chain).expect("a real chain");
        assert_eq!(info.names, [host]);
        assert_eq!(info.issuer, "CN=mailfleet simulated CA");
    }

    // Every listing has its zone's severity and the alert the monitor would have raised:
    // open while listed, resolved once delisted.
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM ip_blacklist_events WHERE severity IS NULL"
        ),
        0
    );
    let listings = count(&conn, "SELECT COUNT(*) FROM ip_blacklist_events");
    assert!(listings > 0);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM ip_blacklist_events b JOIN alerts a ON a.id = 'al-' || b.id
             WHERE (b.delisted_at IS NULL) = (a.resolved_at IS NULL)
               AND a.severity = CASE b.severity WHEN 'high' THEN 'high' ELSE 'medium' END"
        ),
        listings
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM ip_blacklist_events WHERE blacklist_provider = 'zen.spamhaus.org'
               AND severity <> 'high'"
        ),
        0
    );

    // 200 nodes in service, one per completed or suspended request.
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM nodes n JOIN requests r ON r.id = n.request_id
             WHERE r.state IN ('completed', 'suspended')"
        ),
        200
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM requests r WHERE r.state IN ('completed', 'suspended')
               AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.request_id = r.id)"
        ),
        0
    );
    // Every other node belongs to a request past its activate step, or was torn down.
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM nodes n JOIN requests r ON r.id = n.request_id
             WHERE r.state NOT IN ('completed', 'suspended', 'verifying', 'failed', 'rolling_back')
               AND n.status <> 'decommissioned'"
        ),
        0
    );
    // A realistic mix of node statuses, all distinct IPs.
    let statuses: HashMap<String, i64> = {
        let mut st = conn
            .prepare("SELECT status, COUNT(*) FROM nodes n JOIN requests r ON r.id = n.request_id WHERE r.state IN ('completed','suspended') GROUP BY status")
            .expect("statuses");
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("statuses");
        rows.collect::<Result<_, _>>().expect("statuses")
    };
    for s in ["active", "warming", "paused", "maintenance", "unhealthy"] {
        assert!(
            statuses.get(s).copied().unwrap_or(0) >= 1,
            "no {s} node: {statuses:?}"
        );
    }
    let warming = statuses.get("warming").copied().unwrap_or(0);
    assert!((20..=40).contains(&warming), "warming {warming}");
    assert!(
        statuses.get("active").copied().unwrap_or(0) > 120,
        "{statuses:?}"
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(DISTINCT ip_address) FROM nodes"),
        count(&conn, "SELECT COUNT(*) FROM nodes")
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM nodes WHERE ip_address NOT LIKE '198.51.100.%' AND ip_address NOT LIKE '203.0.113.%'"
        ),
        0,
        "a 200-node fleet fits in the documentation ranges"
    );
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM nodes n JOIN requests r ON r.id = n.request_id
                 WHERE r.state = 'completed' AND n.status IN ('active', 'warming', 'paused', 'maintenance')
                   AND n.last_heartbeat < '{}'",
                mailfleet::clock::ts(now - chrono::Duration::seconds(30))
            )
        ),
        0,
        "running nodes sent a heartbeat in the last 30 s"
    );
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM nodes WHERE status = 'unhealthy' AND last_heartbeat > '{}'",
                mailfleet::clock::ts(now - chrono::Duration::seconds(90))
            )
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM nodes WHERE reputation_score NOT BETWEEN 40 AND 100 OR current_load NOT BETWEEN 0 AND 95"),
        0
    );

    // Every state, at least twice.
    let by_state: HashMap<String, i64> = store
        .count_by_state()
        .await
        .expect("count")
        .into_iter()
        .collect();
    for s in ALL_STATES {
        let n = by_state.get(s.as_str()).copied().unwrap_or(0);
        assert!(n >= 2, "{s}: only {n} request(s); {by_state:?}");
    }
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM requests WHERE state = 'queued' AND wait_reason IS NULL"
        ),
        0,
        "every queued request says why it waits"
    );
    assert!(
        count(&conn, "SELECT COUNT(*) FROM request_deps d JOIN requests r ON r.id = d.request_id WHERE r.state = 'queued'") >= 1
    );
    assert!(count(&conn, "SELECT COUNT(*) FROM requests WHERE wait_reason LIKE 'tenant limit: % has 5/5 in flight'") >= 1);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM requests WHERE state = 'pending_approval' AND (plan <> 'ssd-16' OR region <> 'eu-west-1' OR approval_rule IS NULL OR approval_reason NOT LIKE 'High-Resource VPS Approval: %')"),
        0
    );
    assert!(count(&conn, "SELECT COUNT(*) FROM requests WHERE state = 'rolling_back' AND needs_attention = 1 AND wait_reason LIKE 'rollback stalled%'") >= 1);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM requests WHERE state IN ('failed', 'rejected') AND error IS NULL"
        ),
        0
    );
    assert!(
        count(&conn, "SELECT COUNT(*) FROM step_tasks t JOIN requests r ON r.id = t.request_id WHERE r.state IN ('allocating','configuring','activating','verifying')") >= 4,
        "in-flight requests show their sub-tasks"
    );
    // The fleet's history covers 30 days.
    let oldest = strings(&conn, "SELECT MIN(created_at) FROM requests").remove(0);
    assert!(
        oldest < mailfleet::clock::ts(now - chrono::Duration::days(25)),
        "{oldest}"
    );
    assert!(
        oldest >= mailfleet::clock::ts(now - chrono::Duration::days(30)),
        "{oldest}"
    );

    // Each request's transitions: legal, in order, from creation to its current state.
    let mut trs: BTreeMap<String, Vec<(Option<String>, String, String)>> = BTreeMap::new();
    {
        let mut st = conn
            .prepare("SELECT request_id, from_state, to_state, at FROM transitions ORDER BY request_id, id")
            .expect("transitions");
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .expect("transitions");
        for row in rows {
            let (id, from, to, at) = row.expect("row");
            trs.entry(id).or_default().push((from, to, at));
        }
    }
    let requests: Vec<(String, String)> = {
        let mut st = conn
            .prepare("SELECT id, state FROM requests")
            .expect("requests");
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("requests");
        rows.collect::<Result<_, _>>().expect("requests")
    };
    assert_eq!(requests.len(), summary.requests);
    assert_eq!(trs.len(), requests.len(), "every request has transitions");
    for (id, current) in &requests {
        let chain = &trs[id];
        assert_eq!(chain[0].0, None, "{id} starts with creation");
        assert_eq!(chain[0].1, "queued", "{id} starts queued");
        for pair in chain.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            let from = next.0.as_deref().expect("from_state after the first");
            assert_eq!(from, prev.1, "{id}: chain broken");
            assert!(
                legal(state(from), state(&next.1)),
                "{id}: {from} → {} is illegal",
                next.1
            );
            assert!(next.2 >= prev.2, "{id}: transitions out of time order");
        }
        let last = chain.last().expect("last");
        assert_eq!(&last.1, current, "{id}: last transition is not its state");
        assert!(last.2 <= now_ts, "{id}: a transition in the future");
    }

    // Every transition left its outbox events, at the same time.
    let mut events: HashMap<(String, String, String), i64> = HashMap::new();
    {
        let mut st = conn
            .prepare("SELECT request_id, at, name FROM events WHERE request_id IS NOT NULL")
            .expect("events");
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .expect("events");
        for row in rows {
            *events.entry(row.expect("event")).or_default() += 1;
        }
    }
    for (id, chain) in &trs {
        for (from, to, at) in chain {
            let names = mailfleet::domain::event_names(from.as_deref().map(state), state(to));
            assert!(!names.is_empty());
            for name in names {
                let key = (id.clone(), at.clone(), name.to_string());
                let n = events
                    .get_mut(&key)
                    .unwrap_or_else(|| panic!("no {name} event for {id} at {at}"));
                assert!(*n > 0, "{name} for {id} at {at} used twice");
                *n -= 1;
            }
        }
    }
    let total_events = count(&conn, "SELECT COUNT(*) FROM events");
    assert_eq!(total_events as usize, summary.events);
    // The outbox's order is the clock's.
    let ats = strings(&conn, "SELECT at FROM events ORDER BY seq");
    assert!(
        ats.windows(2).all(|w| w[0] <= w[1]),
        "event seq is not time order"
    );
    for name in [
        "node.blacklisted",
        "node.paused",
        "node.delisted",
        "warmup.advanced",
        "warmup.completed",
    ] {
        assert!(
            count(
                &conn,
                &format!("SELECT COUNT(*) FROM events WHERE name = '{name}'")
            ) >= 1,
            "no {name} event"
        );
    }

    // Resources match the state.
    let kinds = |sql: &str| -> HashMap<String, Vec<(String, String)>> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut st = conn.prepare(sql).expect(sql);
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .expect(sql);
        for row in rows {
            let (id, kind, status) = row.expect("row");
            out.entry(id).or_default().push((kind, status));
        }
        out
    };
    let held = kinds("SELECT request_id, kind, status FROM resources");
    for (id, current) in &requests {
        let res = held.get(id).cloned().unwrap_or_default();
        match current.as_str() {
            "rolled_back" | "deprovisioned" => {
                assert!(
                    res.iter().all(|(_, s)| s == "released"),
                    "{id} ({current}) holds {res:?}"
                )
            }
            "rejected" | "queued" | "pending_approval" => {
                assert!(res.is_empty(), "{id} ({current}) has resources {res:?}")
            }
            "completed" | "suspended" => {
                let mut k: Vec<&str> = res.iter().map(|(k, _)| k.as_str()).collect();
                k.sort_unstable();
                assert_eq!(k, COMPLETED_KINDS, "{id}");
                assert!(res.iter().all(|(_, s)| s == "allocated"), "{id}: {res:?}");
            }
            _ => assert!(
                res.iter().any(|(k, s)| k == "quota" && s != "released")
                    || current == "rolling_back",
                "{id} ({current}) holds no quota"
            ),
        }
    }

    // Blocklist: about a tenth of the fleet listed in 30 days; open listings pause their node.
    let listed_nodes = count(
        &conn,
        "SELECT COUNT(DISTINCT node_id) FROM ip_blacklist_events",
    );
    assert!(
        (8..=40).contains(&listed_nodes),
        "{listed_nodes} nodes listed"
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM ip_blacklist_events") as usize,
        summary.listings
    );
    assert!(
        count(
            &conn,
            "SELECT COUNT(*) FROM ip_blacklist_events WHERE delisted_at IS NULL"
        ) >= 1
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM ip_blacklist_events b JOIN nodes n ON n.id = b.node_id WHERE b.delisted_at IS NULL AND (n.status <> 'paused' OR n.status_reason NOT LIKE 'listed on %')"),
        0
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM ip_blacklist_events b JOIN nodes n ON n.id = b.node_id WHERE b.ip_address <> n.ip_address"),
        0
    );
    assert!(count(&conn, "SELECT COUNT(*) FROM nodes WHERE status = 'paused' AND status_reason LIKE 'service suspended by %'") >= 2);
    assert!(count(&conn, "SELECT COUNT(*) FROM audit WHERE actor IN ('alice', 'bob', 'ops-lead', 'sre-oncall') AND action IN ('request.suspend', 'request.approve', 'request.deprovision', 'request.reject')") >= 4);

    // The simulated cloud holds exactly what the requests own.
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let report = reconcile(&ctx).await.expect("reconcile");
    assert!(report.orphans.is_empty(), "orphans: {:?}", report.orphans);
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM sim_instances s JOIN nodes n ON n.provider_id = s.id WHERE s.deleted_at IS NULL AND s.ip <> n.ip_address"),
        0
    );
    assert!(store.is_demo().await.expect("is_demo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_to_overwrite_a_real_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(FAST);

    // A real database with one request.
    let real = dir.path().join("real.db");
    let store = open(&real, &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    create(&ctx, "acme", "dallas", "ssd-1", "node-real-001").await;
    assert!(!store.is_demo().await.expect("is_demo"));
    // The store's checkpointer copies the WAL into the file after a commit; wait for it, so
    // that any change to the file below is prepare_path's.
    store.settled().await;
    let before = std::fs::read(&real).expect("read");
    let err = prepare_path(&real).await.expect_err("must refuse");
    assert!(matches!(err, DemoError::NotADemo { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a demo database; refusing to overwrite it",
            real.display()
        )
    );
    assert_eq!(
        std::fs::read(&real).expect("read"),
        before,
        "the file changed"
    );
    assert_eq!(all_requests(&store).await.len(), 1);

    // Some other file.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "not a database").expect("write");
    assert!(matches!(
        prepare_path(&other).await,
        Err(DemoError::NotADemo { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(&other).expect("read"),
        "not a database"
    );

    // Nothing there yet: fine.
    let fresh = dir.path().join("fresh.db");
    prepare_path(&fresh).await.expect("a missing file is fine");

    // A demo database is removed, with its WAL files.
    let old = dir.path().join("demo.db");
    let (demo_store, _) = demo(&old, &cfg, DemoSpec { nodes: 5, seed: 1 }, Utc::now()).await;
    assert!(demo_store.is_demo().await.expect("is_demo"));
    drop(demo_store);
    prepare_path(&old).await.expect("a demo database may go");
    assert!(!old.exists());
    for suffix in ["-wal", "-shm"] {
        let mut p = old.clone().into_os_string();
        p.push(suffix);
        assert!(!Path::new(&p).exists(), "{suffix} left behind");
    }
    // ... and a fresh demo can take its place.
    let (again, summary) = demo(&old, &cfg, DemoSpec { nodes: 5, seed: 1 }, Utc::now()).await;
    assert_eq!(summary.nodes, 5);
    assert!(again.is_demo().await.expect("is_demo"));

    // A store that already holds requests is not filled.
    assert!(matches!(
        generate(&store, &cfg, &DemoSpec::default(), Utc::now()).await,
        Err(DemoError::NotEmpty)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_can_run_on_a_demo_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let cfg = config(FAST);
    let (store, _) = demo(&path, &cfg, DemoSpec { nodes: 30, seed: 7 }, Utc::now()).await;
    let before = all_requests(&store).await;
    let in_flight: Vec<String> = before
        .iter()
        .filter(|r| {
            matches!(
                r.state.as_str(),
                "allocating" | "configuring" | "activating" | "verifying"
            )
        })
        .map(|r| r.id.clone())
        .collect();
    assert!(in_flight.len() >= 8, "{} in flight", in_flight.len());
    let unwinding: Vec<String> = before
        .iter()
        .filter(|r| matches!(r.state.as_str(), "failed" | "rolling_back") && !r.needs_attention)
        .map(|r| r.id.clone())
        .collect();
    assert!(unwinding.len() >= 3);

    stalled_retries_due_now(&path);
    let ctx = sim_ctx(&store, &cfg, system_clock());
    tokio::time::timeout(
        Duration::from_secs(120),
        engine::run_until_idle(ctx.clone()),
    )
    .await
    .expect("the engine went idle");

    let after: HashMap<String, String> = all_requests(&store)
        .await
        .into_iter()
        .map(|r| (r.id, r.state))
        .collect();
    let stuck: Vec<&String> = after
        .values()
        .filter(|s| {
            matches!(
                s.as_str(),
                "allocating" | "configuring" | "activating" | "verifying" | "failed"
            )
        })
        .collect();
    assert!(stuck.is_empty(), "left mid-pipeline: {stuck:?}");
    for id in &in_flight {
        assert_eq!(
            after[id], "completed",
            "in-flight request {id} did not complete"
        );
    }
    for id in &unwinding {
        assert!(
            matches!(after[id].as_str(), "rolled_back" | "deprovisioned"),
            "{id}: {}",
            after[id]
        );
    }
    // Queued requests held back by the tenant limit got their turn.
    let limited: HashSet<String> = before
        .iter()
        .filter(|r| {
            r.wait_reason
                .as_deref()
                .is_some_and(|w| w.starts_with("tenant limit"))
        })
        .map(|r| r.id.clone())
        .collect();
    assert!(!limited.is_empty());
    for id in &limited {
        assert_eq!(after[id], "completed", "{id}");
    }
    let report = reconcile(&ctx).await.expect("reconcile");
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_makes_the_same_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("");
    let now = Utc::now();
    let spec = DemoSpec {
        nodes: 60,
        seed: 99,
    };
    let fingerprint = |path: &Path| {
        let conn = read_only(path);
        (
            strings(&conn, "SELECT id || ' ' || label || ' ' || state || ' ' || created_at FROM requests ORDER BY id"),
            strings(&conn, "SELECT label || ' ' || ip_address || ' ' || status FROM nodes ORDER BY label"),
            strings(&conn, "SELECT id || ' ' || name || ' ' || at FROM events ORDER BY seq"),
            strings(&conn, "SELECT node_id || ' ' || plan || ' ' || day || ' ' || cap || ' ' || status || ' ' || COALESCE(reason, '-') || ' ' || day_started_at FROM node_warmup ORDER BY node_id"),
            strings(&conn, "SELECT node_id || ' ' || date || ' ' || day || ' ' || cap || ' ' || scheduled || ' ' || sent || ' ' || delivered || ' ' || deferred || ' ' || bounced || ' ' || complaints || ' ' || COALESCE(decision, 'open') || ' ' || COALESCE(reason, '-') FROM warmup_days ORDER BY node_id, date"),
        )
    };
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let c = dir.path().join("c.db");
    let (_sa, summary_a) = demo(&a, &cfg, spec, now).await;
    let (_sb, summary_b) = demo(&b, &cfg, spec, now).await;
    let (_sc, _) = demo(&c, &cfg, DemoSpec { seed: 100, ..spec }, now).await;
    assert_eq!(summary_a, summary_b);
    let (fa, fb, fc) = (fingerprint(&a), fingerprint(&b), fingerprint(&c));
    assert!(!fa.3.is_empty() && !fa.4.is_empty(), "no warm-up rows");
    assert_eq!(fa, fb, "same seed and time, different demo");
    assert_ne!(fa.1, fc.1, "another seed should make another fleet");
    assert_ne!(
        fa.4, fc.4,
        "another seed should make another warm-up history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_demo_leaves_room_for_new_orders() {
    let base = config(FAST);
    // The demo asks no real blocklist about its made-up addresses.
    let mut expected = base.clone();
    expected.blocklists.monitor = false;
    assert_eq!(
        config_for(&base, &DemoSpec::default()),
        expected,
        "the default demo fits as is"
    );
    let spec = DemoSpec {
        nodes: 2_000,
        seed: 5,
    };
    let cfg = config_for(&base, &spec);
    cfg.validate().expect("a scaled config is still valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, summary) = demo(&db_path(&dir), &cfg, spec, Utc::now()).await;
    assert!(
        summary.events >= spec.nodes * 10,
        "{} events",
        summary.events
    );
    let usage = store.tenant_usage().await.expect("usage");
    for t in &cfg.tenants {
        let used = usage.get(&t.name).map(|u| u.nodes).unwrap_or(0);
        assert!(
            used > 0 && (used as u64) < t.quota.nodes,
            "{}: {used}/{}",
            t.name,
            t.quota.nodes
        );
    }
    let clusters = store.cluster_usage().await.expect("usage");
    for c in &cfg.clusters {
        let used = clusters.get(&c.name).map(|u| u.cpu).unwrap_or(0);
        assert!(
            (used as u64) < c.capacity.cpu,
            "{}: cpu {used}/{}",
            c.name,
            c.capacity.cpu
        );
    }
    // A new order goes through alongside the demo's own backlog.
    stalled_retries_due_now(&db_path(&dir));
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let new = create(&ctx, "initech", "seattle", "ssd-2", "node-new-0001").await;
    tokio::time::timeout(
        Duration::from_secs(120),
        engine::run_until_idle(ctx.clone()),
    )
    .await
    .expect("the engine went idle");
    let row = store
        .get_request(&new.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(row.state, "completed", "{row:?}");
    let report = reconcile(&ctx).await.expect("reconcile");
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
}

/// Measures a large demo: `cargo test --release --test demo -- --ignored --nocapture`
/// (`DEMO_NODES` sets the size, `DEMO_DB` keeps the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes a while; run with --release to measure"]
async fn a_demo_of_100k_nodes() {
    let nodes: usize = std::env::var("DEMO_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    // DEMO_DB keeps the database for a look afterwards.
    let path = std::env::var_os("DEMO_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| db_path(&dir));
    prepare_path(&path).await.expect("prepare");
    let spec = DemoSpec { nodes, seed: 42 };
    let cfg = config_for(&config(""), &spec);
    let store = open(&path, &cfg).await;
    let started = Instant::now();
    let summary = generate(&store, &cfg, &spec, Utc::now())
        .await
        .expect("demo");
    let took = started.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "demo: {} nodes, {} requests, {} events, {} listings in {:.1} s ({} MB)",
        summary.nodes,
        summary.requests,
        summary.events,
        summary.listings,
        took.as_secs_f64(),
        size / 1_000_000
    );
    assert_eq!(summary.nodes, nodes);
    assert!(summary.events >= nodes * 10, "{} events", summary.events);
}

/// One `warmup_days` row, as written.
#[derive(Debug)]
struct WarmDay {
    date: String,
    day: u32,
    cap: u64,
    scheduled: u64,
    counts: DayCounts,
    decision: Option<String>,
    reason: Option<String>,
}

/// The decision as `warmup_days` records it.
fn recorded(d: &Decision) -> (&'static str, Option<String>) {
    match d {
        Decision::Advance { .. } => ("advanced", None),
        Decision::Hold { reason } => ("held", Some(reason.clone())),
        Decision::Pause { reason } => ("paused", Some(reason.clone())),
        Decision::Complete => ("completed", None),
    }
}

fn next_date(date: &str) -> String {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("a date");
    (d + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_warmup_history_follows_the_plans_and_the_day_boundary_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let cfg = config("");
    let now = Utc::now();
    let (_store, _) = demo(&path, &cfg, DemoSpec::default(), now).await;
    let conn = read_only(&path);
    let plans: HashMap<String, WarmupPlan> = builtin_specs()
        .iter()
        .map(|s| {
            let p = s.build().expect("a built-in plan builds");
            (p.name.clone(), p)
        })
        .collect();
    let th = Thresholds::default();

    // Every node has a warm-up, on a built-in plan, started when it was registered.
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM nodes n WHERE NOT EXISTS (SELECT 1 FROM node_warmup w WHERE w.node_id = n.id)"),
        0,
        "a node without a warm-up"
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM node_warmup w JOIN nodes n ON n.id = w.node_id WHERE w.started_at <> n.created_at"),
        0
    );
    let mix: HashMap<String, i64> = {
        let mut st = conn
            .prepare("SELECT plan, COUNT(*) FROM node_warmup GROUP BY plan")
            .expect("mix");
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("mix");
        rows.collect::<Result<_, _>>().expect("mix")
    };
    let standard = mix.get("standard").copied().unwrap_or(0);
    assert!(
        mix.iter()
            .all(|(plan, n)| plan == "standard" || *n < standard),
        "mostly standard: {mix:?}"
    );
    assert!(mix.len() >= 3, "a mix of plans: {mix:?}");

    // Where each node is: its plan's cap for its day.
    struct Warm {
        plan: String,
        day: u32,
        days: u32,
        cap: u64,
        status: String,
        reason: Option<String>,
        node_status: String,
        node_reason: Option<String>,
        resume: Option<String>,
        started: String,
    }
    let warm: BTreeMap<String, Warm> = {
        let mut st = conn
            .prepare(
                "SELECT w.node_id, w.plan, w.day, w.days, w.cap, w.status, w.reason, n.status,
                        n.status_reason, n.resume_status, w.started_at
                 FROM node_warmup w JOIN nodes n ON n.id = w.node_id",
            )
            .expect("node_warmup");
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Warm {
                        plan: r.get(1)?,
                        day: r.get(2)?,
                        days: r.get(3)?,
                        cap: r.get(4)?,
                        status: r.get(5)?,
                        reason: r.get(6)?,
                        node_status: r.get(7)?,
                        node_reason: r.get(8)?,
                        resume: r.get(9)?,
                        started: r.get(10)?,
                    },
                ))
            })
            .expect("node_warmup");
        rows.collect::<Result<_, _>>().expect("node_warmup")
    };
    for (id, w) in &warm {
        let plan = plans
            .get(&w.plan)
            .unwrap_or_else(|| panic!("{id}: unknown plan {}", w.plan));
        assert_eq!(w.days, plan.days(), "{id}");
        assert_eq!(w.cap, plan.cap(w.day), "{id}: cap of day {}", w.day);
        match w.status.as_str() {
            "completed" => assert_eq!(w.day, w.days, "{id}"),
            "warming" => assert!(w.reason.is_none() && w.day < w.days, "{id}"),
            "held" | "paused" => assert!(w.reason.is_some(), "{id}: {} without a reason", w.status),
            other => panic!("{id}: warm-up status {other}"),
        }
        // A node warming in service is warming or held in its warm-up.
        if w.node_status == "warming" {
            assert!(
                matches!(w.status.as_str(), "warming" | "held"),
                "{id}: {}",
                w.status
            );
        }
        // Paused by its numbers: the node says why, and resumes into warming.
        if w.status == "paused" && w.node_status != "decommissioned" {
            assert_eq!(w.node_status, "paused", "{id}");
            assert_eq!(w.resume.as_deref(), Some("warming"), "{id}");
            let reason = w.reason.as_deref().unwrap_or_default();
            if !reason.starts_with("IP listed on ") {
                assert_eq!(w.node_reason.as_deref(), Some(reason), "{id}");
            }
        }
    }

    // Each warming node's days: one a UTC day from its registration, each closed one
    // decided by the rule on its own counts, chained day to day, and ending where the
    // node is now.
    let mut logs: BTreeMap<String, Vec<WarmDay>> = BTreeMap::new();
    {
        let mut st = conn
            .prepare(
                "SELECT node_id, date, day, cap, scheduled, sent, delivered, deferred, bounced,
                        complaints, decision, reason
                 FROM warmup_days ORDER BY node_id, date",
            )
            .expect("warmup_days");
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    WarmDay {
                        date: r.get(1)?,
                        day: r.get(2)?,
                        cap: r.get(3)?,
                        scheduled: r.get(4)?,
                        counts: DayCounts {
                            sent: r.get(5)?,
                            delivered: r.get(6)?,
                            deferred: r.get(7)?,
                            bounced: r.get(8)?,
                            complaints: r.get(9)?,
                        },
                        decision: r.get(10)?,
                        reason: r.get(11)?,
                    },
                ))
            })
            .expect("warmup_days");
        for row in rows {
            let (id, day) = row.expect("row");
            logs.entry(id).or_default().push(day);
        }
    }
    assert!(!logs.is_empty(), "no warm-up days");
    let listings: Vec<(String, String, String)> = {
        let mut st = conn
            .prepare("SELECT node_id, blacklist_provider, listed_at FROM ip_blacklist_events")
            .expect("listings");
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("listings");
        rows.collect::<Result<_, _>>().expect("listings")
    };
    let today = now.format("%Y-%m-%d").to_string();
    let oldest = (now - chrono::Duration::days(31))
        .format("%Y-%m-%d")
        .to_string();
    let (mut held, mut paused_by_numbers) = (0, 0);
    for (id, days) in &logs {
        let w = warm
            .get(id)
            .unwrap_or_else(|| panic!("{id}: days but no warm-up"));
        assert_ne!(
            w.status, "completed",
            "{id}: a settled node has no day-by-day log"
        );
        let plan = &plans[&w.plan];
        assert_eq!(
            days[0].date,
            w.started[..10],
            "{id}: the log starts on registration day"
        );
        assert_eq!((days[0].day, days[0].cap), (1, plan.cap(1)), "{id}");
        assert!(
            days.len() <= 31 && days[0].date >= oldest,
            "{id}: {} days",
            days.len()
        );
        for pair in days.windows(2) {
            assert_eq!(
                pair[1].date,
                next_date(&pair[0].date),
                "{id}: a day missing"
            );
            let (before, after) = (&pair[0], &pair[1]);
            match before.decision.as_deref() {
                Some("advanced") => {
                    assert_eq!(
                        (after.day, after.cap),
                        (before.day + 1, plan.cap(before.day + 1)),
                        "{id}"
                    )
                }
                Some("held") => {
                    assert_eq!((after.day, after.cap), (before.day, before.cap), "{id}")
                }
                other => panic!("{id}: a day after {other:?} on {}", before.date),
            }
        }
        for d in days {
            let c = &d.counts;
            assert!(
                c.sent <= d.cap && c.sent <= d.scheduled && d.scheduled <= d.cap,
                "{id}: {d:?}"
            );
            assert_eq!(c.delivered + c.deferred + c.bounced, c.sent, "{id}: {d:?}");
            let Some(decision) = d.decision.as_deref() else {
                continue;
            };
            // A day that ended after a listing came is paused by it.
            let reason = d.reason.as_deref().unwrap_or_default();
            let listed_on = reason.strip_prefix("IP listed on ");
            if let Some(zone) = listed_on {
                let end = format!("{}T", next_date(&d.date));
                assert!(
                    listings
                        .iter()
                        .any(|(n, z, at)| n == id && z == zone && *at < end),
                    "{id}: paused for a listing on {zone} that did not happen by {}",
                    d.date
                );
            }
            let again = decide(plan, d.day, c, listed_on, &th);
            assert_eq!(
                recorded(&again),
                (decision, d.reason.clone()),
                "{id} on {}: {d:?}",
                d.date
            );
            held += usize::from(decision == "held");
            paused_by_numbers += usize::from(decision == "paused" && listed_on.is_none());
        }
        // Where the log ends is where the node is.
        let last = days.last().expect("a day");
        match last.decision.as_deref() {
            None => {
                assert!(
                    matches!(w.status.as_str(), "warming" | "held"),
                    "{id}: open day while {}",
                    w.status
                );
                assert_eq!((last.day, last.cap), (w.day, w.cap), "{id}");
                assert!(
                    last.date == today || next_date(&last.date) == today,
                    "{id}: open on {}",
                    last.date
                );
            }
            Some("advanced") => {
                assert_eq!(
                    (w.status.as_str(), w.day),
                    ("warming", last.day + 1),
                    "{id}"
                );
            }
            Some("held") => {
                assert_eq!((w.status.as_str(), w.day), ("held", last.day), "{id}");
                assert_eq!(w.reason, last.reason, "{id}");
            }
            Some("paused") => {
                assert_eq!((w.status.as_str(), w.day), ("paused", last.day), "{id}");
                assert_eq!(w.reason, last.reason, "{id}");
            }
            Some(other) => assert_eq!(
                (w.status.as_str(), other),
                ("completed", "completed"),
                "{id}"
            ),
        }
    }
    // Open days only for nodes still sending, and only today's (or yesterday's, in the
    // seconds before its boundary ran).
    assert!(
        count(
            &conn,
            "SELECT COUNT(*) FROM warmup_days WHERE decision IS NULL"
        ) >= 20,
        "warming nodes show today so far"
    );
    assert!(held >= 1, "no held day");
    assert!(paused_by_numbers >= 1, "no warm-up paused by its numbers");

    // The events say what the days decided.
    let decisions = |d: &str| {
        count(
            &conn,
            &format!("SELECT COUNT(*) FROM warmup_days WHERE decision = '{d}'"),
        )
    };
    let events = |name: &str| {
        count(
            &conn,
            &format!("SELECT COUNT(*) FROM events WHERE name = '{name}'"),
        )
    };
    assert_eq!(events("warmup.advanced"), decisions("advanced"));
    assert_eq!(events("warmup.held"), decisions("held"));
    assert_eq!(
        events("warmup.completed"),
        count(
            &conn,
            "SELECT COUNT(*) FROM node_warmup WHERE status = 'completed'"
        )
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM events e JOIN warmup_days d ON d.node_id = e.node_id
             WHERE e.name = 'warmup.advanced' AND d.decision = 'advanced'
               AND json_extract(e.payload, '$.day') = d.day + 1
               AND substr(e.at, 1, 10) = date(d.date, '+1 day')"
        ),
        decisions("advanced"),
        "every advance has its event, the next day, naming the new day"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM events e JOIN warmup_days d ON d.node_id = e.node_id
             WHERE e.name = 'warmup.held' AND d.decision = 'held'
               AND substr(e.at, 1, 10) = date(d.date, '+1 day')
               AND json_extract(e.payload, '$.day') = d.day
               AND json_extract(e.payload, '$.daily_cap') = d.cap
               AND json_extract(e.payload, '$.reason') = d.reason"
        ),
        decisions("held"),
        "every hold has its event with the reason"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM warmup_days d WHERE d.decision = 'paused'
               AND d.reason NOT LIKE 'IP listed on %'
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.node_id = d.node_id
                   AND e.name = 'node.paused' AND json_extract(e.payload, '$.reason') = d.reason
                   AND substr(e.at, 1, 10) = date(d.date, '+1 day'))"
        ),
        0,
        "a warm-up pause without its node.paused event"
    );
}
