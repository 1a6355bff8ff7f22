//! The store against temp SQLite files (or, with MAILFLEET_TEST_BACKEND=postgres, a
//! PostgreSQL database per test): fencing, group-commit isolation, refusing files that
//! are not ours, id resolution, and claims that never hand one request to two workers.

mod support;

use chrono::Utc;
use mailfleet::domain::{RequestEvent, ResourceKind, Step};
use mailfleet::store::{Fenced, ResourceWrite, Store, StoreError, TaskMark};
use std::time::Duration;
use support::*;

/// One request on the simulated cloud, claimed by worker "a": the store, the request and
/// the claim's fence.
async fn one_claimed_request() -> (tempfile::TempDir, Store, mailfleet::store::RequestRow, i64) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-1").await;
    let claim = store
        .claim("a", Utc::now(), Duration::from_secs(30), 1, ctx.admission())
        .await
        .expect("claim")
        .claims
        .remove(0);
    (dir, store, req, claim.fence)
}

fn fenced(id: &str, fence: i64) -> Fenced {
    let now = Utc::now();
    Fenced {
        id: id.to_string(),
        fence,
        actor: "tester".into(),
        now,
        lease_until: now + chrono::Duration::seconds(30),
        marks: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_taken_over_cannot_write() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-1").await;
    let adm = ctx.admission().clone();
    let first = store
        .claim("a", Utc::now(), Duration::from_millis(1), 10, &adm)
        .await
        .expect("claim");
    assert_eq!(first.claims.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The lease expired; another worker claims and gets a higher fence.
    let second = store
        .claim("b", Utc::now(), Duration::from_secs(30), 10, &adm)
        .await
        .expect("claim");
    assert_eq!(second.claims.len(), 1);
    assert!(second.claims[0].fence > first.claims[0].fence);
    let stale = fenced(&req.id, first.claims[0].fence);
    let last = mailfleet::store::LastTask {
        task: "wait_for_ip",
        detail: "198.51.100.7 assigned".into(),
        resource: Some(ResourceWrite {
            kind: Some(ResourceKind::Ip),
            allocated: true,
            provider: Some("sim".into()),
            provider_ref: Some("198.51.100.7".into()),
            detail: None,
        }),
        node: None,
    };
    let err = store
        .complete_step(&stale, Step::Allocate, last)
        .await
        .expect_err("stale fence refused");
    assert!(matches!(err, StoreError::FenceLost(_)), "{err}");
    let err = store
        .task_done(&stale, Step::Allocate, "create_instance", None, None)
        .await
        .expect_err("refused");
    assert!(matches!(err, StoreError::FenceLost(_)));
    // Nothing the stale worker tried is visible; the new one can write.
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "allocating");
    assert!(d
        .tasks
        .iter()
        .all(|t| t.name != "create_instance" && t.name != "wait_for_ip"));
    assert!(
        d.resources.iter().all(|r| r.kind != "ip"),
        "{:?}",
        d.resources
    );
    store
        .task_done(
            &fenced(&req.id, second.claims[0].fence),
            Step::Allocate,
            "create_instance",
            None,
            None,
        )
        .await
        .expect("current fence writes");
}

/// SQLite's automatic checkpoint is off on the writer; the store's own checkpointer copies
/// committed writes back into the database file while the store stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_the_database_file_while_the_store_is_open() {
    if on_postgres() {
        // SQLite's file and its WAL; PostgreSQL keeps its own files.
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let path = db_path(&dir);
    let store = open(&path, &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    for i in 0..20 {
        create(&ctx, "acme", "dallas", "ssd-1", &format!("n{i}")).await;
    }
    // The file alone, without its WAL, as a copy: it holds only what was checkpointed.
    let in_file = || {
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).expect("copy");
        let conn = rusqlite::Connection::open(&copy).expect("open copy");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
            .expect("count");
        drop(conn);
        let _ = std::fs::remove_file(&copy);
        n
    };
    // `settled` returns once the checkpointer has copied every commit so far.
    store.settled().await;
    assert_eq!(
        in_file(),
        20,
        "the 20 requests were copied from the WAL into the file"
    );
    let wal = std::fs::metadata(dir.path().join("mailfleet.db-wal")).expect("the WAL");
    assert!(wal.len() > 0, "the store is still open on its WAL");
    drop(ctx);
    drop(store);
}

/// Sub-tasks a worker finished without a write of their own ride with its next write: in
/// its transaction, with their own times, on a step that succeeds or fails; and never from
/// a worker whose lease was taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sub_tasks_ride_with_the_next_write() {
    let (_dir, store, req, fence) = one_claimed_request().await;
    let mark = |task: &'static str, detail: &str, at: chrono::DateTime<Utc>| TaskMark {
        step: if task == "firewall" {
            Step::Configure
        } else {
            Step::Allocate
        },
        task,
        detail: detail.into(),
        at,
    };
    let task = |d: &mailfleet::store::RequestDetail, name: &str| {
        d.tasks.iter().find(|t| t.name == name).cloned()
    };

    // A stale worker's marks are refused with its write.
    let mut stale = fenced(&req.id, fence - 1);
    stale.marks = vec![mark("wait_for_ip", "stale", Utc::now())];
    let err = store
        .task_done(&stale, Step::Allocate, "create_instance", None, None)
        .await
        .expect_err("stale fence refused");
    assert!(matches!(err, StoreError::FenceLost(_)), "{err}");
    let d = store.request_detail(&req.id).await.expect("detail");
    assert!(task(&d, "wait_for_ip").is_none(), "{:?}", d.tasks);

    // The current worker's mark is written done, at its own time, with the next write.
    let earlier = Utc::now() - chrono::Duration::seconds(7);
    let mut f = fenced(&req.id, fence);
    f.marks = vec![mark("wait_for_ip", "198.51.100.7 assigned", earlier)];
    store
        .task_done(
            &f,
            Step::Allocate,
            "create_instance",
            Some("i-1".into()),
            None,
        )
        .await
        .expect("write");
    let d = store.request_detail(&req.id).await.expect("detail");
    let ip = task(&d, "wait_for_ip").expect("the mark was written");
    assert_eq!(ip.status, "done");
    assert_eq!(ip.detail.as_deref(), Some("198.51.100.7 assigned"));
    assert_eq!(ip.updated_at, mailfleet::clock::ts(earlier));
    assert_eq!(
        task(&d, "create_instance").expect("own task").status,
        "done"
    );

    // A failing step writes the marks it carries with its failure.
    let mut f = fenced(&req.id, fence);
    f.marks = vec![mark("firewall", "profile smtp", Utc::now())];
    store
        .fail_step(&f, Step::Allocate, "wait_for_ip: gone".into())
        .await
        .expect("fail");
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "failed");
    let fw = task(&d, "firewall").expect("the failing write carried the mark");
    assert_eq!(
        (fw.step.as_str(), fw.status.as_str()),
        ("configure", "done")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_claiming_at_once_never_share_a_request() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&FAST.replace("[engine]", "[engine]\nmax_in_flight_per_tenant = 100"));
    let a = open(&db_path(&dir), &cfg).await;
    let b = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&a, &cfg, system_clock());
    for i in 0..40 {
        create(
            &ctx,
            ["acme", "globex"][i % 2],
            "dallas",
            "ssd-1",
            &format!("n{i}"),
        )
        .await;
    }
    let adm = ctx.admission().clone();
    let mut claimed = Vec::new();
    for _ in 0..5 {
        let (x, y) = tokio::join!(
            a.claim("a", Utc::now(), Duration::from_secs(30), 5, &adm),
            b.claim("b", Utc::now(), Duration::from_secs(30), 5, &adm)
        );
        claimed.extend(x.expect("a").claims.into_iter().map(|c| c.id));
        claimed.extend(y.expect("b").claims.into_iter().map(|c| c.id));
    }
    let n = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), n, "a request was claimed twice");
    assert_eq!(n, 40, "between them they claimed everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_write_does_not_undo_its_batch_neighbours() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let ok = create(&ctx, "acme", "dallas", "ssd-1", "ok").await;
    let bad = create(&ctx, "acme", "dallas", "ssd-1", "bad").await;
    // Many concurrent writes land in shared transactions; the illegal ones must fail alone.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let store = store.clone();
        let (ok, bad) = (ok.id.clone(), bad.id.clone());
        set.spawn(async move {
            if i % 2 == 0 {
                store
                    .decide(&bad, RequestEvent::Approve, "x", None, Utc::now())
                    .await
                    .map(|_| ())
            } else {
                store
                    .decide(
                        &ok,
                        RequestEvent::Reject,
                        "x",
                        Some("dup".into()),
                        Utc::now(),
                    )
                    .await
                    .map(|_| ())
            }
        });
    }
    let mut failures = 0;
    while let Some(r) = set.join_next().await {
        if r.expect("join").is_err() {
            failures += 1;
        }
    }
    // Every approve of a queued request fails; only the first rejection of `ok` succeeds.
    assert_eq!(failures, 15 + 14);
    assert_eq!(
        store
            .get_request(&ok.id)
            .await
            .expect("get")
            .expect("row")
            .state,
        "rejected"
    );
    assert!(
        store
            .writer_stats()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
            < 30,
        "writes were grouped"
    );
    assert_eq!(
        store
            .get_request(&bad.id)
            .await
            .expect("get")
            .expect("row")
            .state,
        "queued"
    );
    let d = store.request_detail(&bad.id).await.expect("detail");
    assert_eq!(
        d.transitions.len(),
        1,
        "no stray transition from a failed write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_cannot_finish_while_a_resource_is_held() {
    let (_dir, store, req, fence) = one_claimed_request().await;
    let f = fenced(&req.id, fence);
    let instance = ResourceWrite {
        kind: Some(ResourceKind::Instance),
        allocated: true,
        provider: Some("sim".into()),
        provider_ref: Some("sim-1".into()),
        detail: None,
    };
    store
        .task_done(&f, Step::Allocate, "create_instance", None, Some(instance))
        .await
        .expect("record");
    store
        .fail_step(&f, Step::Allocate, "boom".into())
        .await
        .expect("fail");
    store
        .start_teardown(&f, "test".into(), false)
        .await
        .expect("teardown");
    store
        .release_resource(&f, ResourceKind::Quota, None)
        .await
        .expect("release");
    let err = store
        .finish_teardown(&f)
        .await
        .expect_err("still holds capacity and the instance");
    assert!(
        err.to_string().contains("still holds 2 resource(s)"),
        "{err}"
    );
    store
        .release_resource(&f, ResourceKind::Capacity, None)
        .await
        .expect("release");
    store
        .release_resource(&f, ResourceKind::Instance, None)
        .await
        .expect("release");
    assert_eq!(
        store.finish_teardown(&f).await.expect("now it may"),
        mailfleet::domain::RequestState::RolledBack
    );
}

#[tokio::test]
async fn files_that_are_not_ours_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config("");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, not sqlite\n").expect("write");
    let err = Store::open(&text, &cfg.store).await.expect_err("refused");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
    assert_eq!(std::fs::read(&text).expect("read"), b"hello, not sqlite\n");

    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).expect("other db");
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        .expect("table");
    drop(conn);
    let err = Store::open(&other, &cfg.store).await.expect_err("refused");
    assert!(
        err.to_string()
            .contains("another program (tables: invoices)"),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&other).expect("reopen");
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(tables, 1, "no table of ours was added");
}

#[tokio::test]
async fn read_only_store_refuses_writes_and_missing_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config("");
    let err = Store::open_read_only(&db_path(&dir), &cfg.store)
        .await
        .expect_err("missing");
    // A PostgreSQL database always exists: one without the schema is named for what it is.
    let missing = if on_postgres() {
        "holds no mailfleet schema"
    } else {
        "does not exist"
    };
    assert!(err.to_string().contains(missing), "{err}");
    drop(open(&db_path(&dir), &cfg).await);
    let ro = Store::open_read_only(&db_path(&dir), &cfg.store)
        .await
        .expect("opens");
    let err = ro
        .sync_catalog(&cfg, Utc::now())
        .await
        .expect_err("read-only");
    assert!(matches!(err, StoreError::ReadOnly));
    assert!(ro
        .list_requests(&Default::default())
        .await
        .expect("reads work")
        .is_empty());
}

#[tokio::test]
async fn ids_resolve_by_prefix_or_short_form_and_ambiguity_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let a = create(&ctx, "acme", "dallas", "ssd-1", "a").await;
    let b = create(&ctx, "acme", "dallas", "ssd-1", "b").await;
    let short_a = &a.id[a.id.len() - 8..];
    assert_eq!(
        store.resolve_request_id(short_a).await.expect("short"),
        a.id
    );
    assert_eq!(store.resolve_request_id(&b.id).await.expect("full"), b.id);
    assert_eq!(
        store.resolve_request_id(&b.id[..30]).await.expect("prefix"),
        b.id
    );
    let common: String =
        a.id.chars()
            .zip(b.id.chars())
            .take_while(|(x, y)| x == y)
            .map(|(x, _)| x)
            .collect();
    assert!(
        common.len() >= 8,
        "UUIDv7 ids made together share their time prefix"
    );
    let err = store
        .resolve_request_id(&common)
        .await
        .expect_err("ambiguous");
    assert!(err.to_string().contains("ambiguous"), "{err}");
    assert!(matches!(
        store.resolve_request_id("ffffffff").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.resolve_request_id("7f3a%").await,
        Err(StoreError::Rejected(_))
    ));
}

#[tokio::test]
async fn every_transition_leaves_its_event_in_the_same_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "eu-west-1", "ssd-16", "big").await;
    store
        .decide(
            &req.id,
            RequestEvent::Approve,
            "ops-lead",
            Some("ok".into()),
            Utc::now(),
        )
        .await
        .expect("approve");
    let d = store.request_detail(&req.id).await.expect("detail");
    let states: Vec<&str> = d.transitions.iter().map(|t| t.to_state.as_str()).collect();
    assert_eq!(states, ["queued", "pending_approval", "queued"]);
    let names: Vec<&str> = d.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "provisioning.started",
            "approval.requested",
            "approval.granted"
        ]
    );
    assert_eq!(d.transitions[2].actor, "ops-lead");
    assert_eq!(d.transitions[2].reason.as_deref(), Some("ok"));
    let audit = store.list_audit(10).await.expect("audit");
    assert!(audit
        .iter()
        .any(|a| a.action == "request.approve" && a.actor == "ops-lead"));
}

/// Two creates of one hostname at the same time, through two stores on one file (as two
/// processes would): the check and the insert are one transaction, so exactly one of them
/// gets the name, every time, and the other is told who holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_creates_of_one_hostname_at_once_admit_exactly_one() {
    use mailfleet::engine::commands::{execute, Command, CreateRequest, Outcome};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let first = open(&db_path(&dir), &cfg).await;
    let second = open(&db_path(&dir), &cfg).await;
    let a = sim_ctx(&first, &cfg, system_clock());
    let b = sim_ctx(&second, &cfg, system_clock());
    let order = |tenant: &str, label: &str| {
        Command::Create(CreateRequest {
            tenant: tenant.into(),
            region: "dallas".into(),
            plan: "ssd-1".into(),
            label: label.into(),
            domain: Some("example.com".into()),
            depends_on: vec![],
        })
    };
    for round in 0..20 {
        let label = format!("race-{round}");
        // Same context twice too: the writer may put both in one transaction.
        let other = if round % 2 == 0 { &b } else { &a };
        let (x, y) = tokio::join!(
            execute(&a, "tester", order("acme", &label)),
            execute(other, "tester", order("globex", &label)),
        );
        let (won, lost) = match (x, y) {
            (Ok(Outcome::Created(r)), Err(e)) | (Err(e), Ok(Outcome::Created(r))) => (r, e),
            other => panic!("round {round}: want one created and one refused, got {other:?}"),
        };
        let why = lost.to_string();
        let short = &won.id[won.id.len() - 8..];
        assert!(
            why.contains(&format!("hostname {label}.example.com"))
                && why.contains(short)
                && why.contains(&format!("tenant {}", won.tenant)),
            "round {round}: {why}"
        );
    }
    let rows = all_requests(&first).await;
    assert_eq!(rows.len(), 20, "one request per hostname");
}

/// A database written before the check at creation may hold two live requests of one
/// hostname. Admission is the backstop: the later one is rejected before anything is
/// allocated for it, naming the holder; the first goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_rejects_a_second_holder_of_a_hostname_left_from_before() {
    use mailfleet::engine::commands::{execute, Command, CreateRequest, Outcome};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let first = create_in(&ctx, "node-x", "example.com").await;
    let cmd = Command::Create(CreateRequest {
        tenant: "globex".into(),
        region: "dallas".into(),
        plan: "ssd-1".into(),
        label: "node-y".into(),
        domain: Some("example.com.".into()),
        depends_on: vec![],
    });
    let Ok(Outcome::Created(second)) = execute(&ctx, "tester", cmd).await else {
        panic!("created")
    };
    // What an older mailfleet let through: the second request now wants the same name.
    raw_execute(
        &db_path(&dir),
        &format!(
            "UPDATE requests SET label = 'node-x' WHERE id = '{}'",
            second.id
        ),
    );
    mailfleet::engine::run_until_idle(ctx.clone()).await;
    let a = store
        .get_request(&first)
        .await
        .expect("get")
        .expect("first");
    let b = store
        .get_request(&second.id)
        .await
        .expect("get")
        .expect("second");
    assert_eq!(a.state, "completed");
    assert_eq!(b.state, "rejected");
    let why = b.error.unwrap_or_default();
    assert!(
        why.contains("hostname node-x.example.com is already held by request")
            && why.contains(&first[first.len() - 8..])
            && why.contains("tenant acme"),
        "{why}"
    );
    assert!(
        store
            .live_resources(&second.id)
            .await
            .expect("resources")
            .is_empty(),
        "nothing was allocated for the second"
    );
}
