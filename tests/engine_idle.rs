//! An idle engine does nothing: no write transactions, no reads, while nothing changes and
//! nothing falls due; and it still wakes at once for what it has to do (capacity freed, a
//! retry falling due, another process's request). On tokio's paused clock.

mod support;

use chrono::{DateTime, TimeZone, Utc};
use mailfleet::clock::{parse_ts, SharedClock, TokioClock};
use mailfleet::engine::{self, Command};
use mailfleet::store::{RequestRow, Store};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A zero-delay cloud, and one cluster in dallas with room for a single server.
const ONE_SLOT: &str = r#"
[engine]
retry_jitter = 0.0
[providers.sim]
delay_ms = [0, 0]
boot_ms = [0, 0]
[dns]
propagation_interval = "20ms"
propagation_timeout = "5s"
[[clusters]]
name = "tiny"
provider = "sim"
region = "dallas"
default = true
capacity = { cpu = 512, memory_gb = 1024, storage_gb = 20000, vm_slots = 1 }
"#;

/// Noon, so that no warm-up day boundary falls inside a test.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0)
        .single()
        .expect("a time")
}

fn paused_clock() -> SharedClock {
    Arc::new(TokioClock::new(noon()))
}

/// What the store has done so far: write transactions, writes, reads.
fn activity(store: &Store) -> (u64, u64, u64) {
    let st = store.writer_stats();
    (
        st.batches.load(Relaxed),
        st.jobs.load(Relaxed),
        store.reads(),
    )
}

fn by_label<'a>(rows: &'a [RequestRow], label: &str) -> &'a RequestRow {
    rows.iter()
        .find(|r| r.label == label)
        .unwrap_or_else(|| panic!("no request {label}"))
}

/// When `id` first entered `state`.
async fn entered(store: &Store, id: &str, state: &str) -> DateTime<Utc> {
    let d = store.request_detail(id).await.expect("detail");
    let t = d
        .transitions
        .iter()
        .find(|t| t.to_state == state)
        .unwrap_or_else(|| panic!("{} never entered {state}", d.request.label));
    parse_ts(&t.at).expect("a timestamp")
}

/// node-a completes and holds the only slot; node-b waits for capacity.
async fn one_running_one_waiting(
    store: &Store,
    ctx: &Arc<engine::Ctx>,
) -> (engine::EngineHandle, Vec<RequestRow>) {
    create(ctx, "acme", "dallas", "ssd-1", "node-a").await;
    create(ctx, "acme", "dallas", "ssd-1", "node-b").await;
    let handle = engine::spawn(ctx.clone());
    let rows = wait_for(
        store,
        Duration::from_secs(120),
        "node-a completed, node-b waiting",
        |rows| {
            by_label(rows, "node-a").state == "completed"
                && by_label(rows, "node-b").wait_reason.is_some()
        },
    )
    .await;
    (handle, rows)
}

#[tokio::test(start_paused = true)]
async fn an_idle_engine_with_a_request_waiting_on_capacity_writes_and_reads_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(ONE_SLOT);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, paused_clock());
    let (handle, rows) = one_running_one_waiting(&store, &ctx).await;
    let waiting = by_label(&rows, "node-b").clone();
    assert_eq!(waiting.state, "queued");
    assert!(
        waiting
            .wait_reason
            .as_deref()
            .is_some_and(|w| w.starts_with("capacity: no cluster in dallas has room")),
        "{:?}",
        waiting.wait_reason
    );
    // Let whatever the start set going settle.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut probe = store.version_probe();
    assert!(probe.changed(&store).await.expect("probe"), "first look");
    let before = activity(&store);

    // Twenty minutes: the old engine looked every 500 ms and rewrote node-b every 5 s.
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;

    assert_eq!(
        activity(&store),
        before,
        "(transactions, writes, reads) moved while nothing changed"
    );
    assert!(
        !probe.changed(&store).await.expect("probe"),
        "nothing committed: data_version did not move"
    );
    let now = store
        .get_request(&waiting.id)
        .await
        .expect("read")
        .expect("node-b");
    assert_eq!(now.state, "queued");
    assert_eq!(now.wait_reason, waiting.wait_reason);
    assert_eq!(now.next_run_at, waiting.next_run_at, "not even next_run_at");
    assert_eq!(now.updated_at, waiting.updated_at);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn freed_capacity_admits_the_waiting_request_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(ONE_SLOT);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, paused_clock());
    let (handle, rows) = one_running_one_waiting(&store, &ctx).await;
    let (a, b) = (
        by_label(&rows, "node-a").id.clone(),
        by_label(&rows, "node-b").id.clone(),
    );
    // Long enough that a 5 s recheck would have come round several times.
    tokio::time::sleep(Duration::from_secs(33)).await;
    handle
        .send(
            "tester",
            Command::Deprovision {
                id: a.clone(),
                reason: None,
            },
        )
        .await
        .expect("deprovision");
    wait_for(
        &store,
        Duration::from_secs(120),
        "node-b completed",
        |rows| by_label(rows, "node-b").state == "completed",
    )
    .await;
    let freed = entered(&store, &a, "deprovisioned").await;
    let admitted = entered(&store, &b, "allocating").await;
    assert!(
        admitted <= freed + chrono::Duration::milliseconds(100),
        "node-b was admitted {} ms after node-a freed its slot",
        (admitted - freed).num_milliseconds()
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_scheduled_for_later_is_claimed_then_and_not_looked_at_before() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&ONE_SLOT.replace("vm_slots = 1", "vm_slots = 10"));
    let store = open(&db_path(&dir), &cfg).await;
    let clock = paused_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-r").await;
    // Admitted and leased by someone else, who gives it back for a retry in ten minutes.
    let claimed = store
        .claim(
            "tester",
            clock.now(),
            Duration::from_secs(30),
            1,
            ctx.admission(),
        )
        .await
        .expect("claim");
    assert_eq!(claimed.claims.len(), 1);
    let retry_at = clock.now() + chrono::Duration::minutes(10);
    store
        .release_lease(&req.id, claimed.claims[0].fence, Some(retry_at))
        .await
        .expect("release");

    let handle = engine::spawn(ctx.clone());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = activity(&store);
    tokio::time::sleep(Duration::from_secs(8 * 60)).await;
    assert_eq!(
        activity(&store),
        before,
        "(transactions, writes, reads) moved before the retry was due"
    );
    let rows = wait_for(
        &store,
        Duration::from_secs(300),
        "node-r completed",
        |rows| rows[0].state == "completed",
    )
    .await;
    assert_eq!(rows.len(), 1);
    let resumed = entered(&store, &req.id, "configuring").await;
    assert!(
        resumed >= retry_at,
        "not before its time: {resumed} < {retry_at}"
    );
    assert!(
        resumed <= retry_at + chrono::Duration::seconds(1),
        "claimed {} ms after it fell due",
        (resumed - retry_at).num_milliseconds()
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn another_process_s_request_is_picked_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&ONE_SLOT.replace("vm_slots = 1", "vm_slots = 10"));
    let store = open(&db_path(&dir), &cfg).await;
    let clock = paused_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let handle = engine::spawn(ctx.clone());
    tokio::time::sleep(Duration::from_secs(60)).await;

    // A second store on the same file: what `mailfleet request create` in another shell
    // does. Its commit reaches this engine only through the database.
    let other = open(&db_path(&dir), &cfg).await;
    let other_ctx = sim_ctx(&other, &cfg, clock.clone());
    let req = create(&other_ctx, "acme", "dallas", "ssd-1", "from-afar").await;
    wait_for(
        &store,
        Duration::from_secs(120),
        "from-afar completed",
        |rows| {
            rows.iter()
                .any(|r| r.label == "from-afar" && r.state == "completed")
        },
    )
    .await;
    let created = parse_ts(&req.created_at).expect("ts");
    let admitted = entered(&store, &req.id, "allocating").await;
    let tick = chrono::Duration::from_std(cfg.engine.tick).expect("tick");
    assert!(
        admitted <= created + tick + chrono::Duration::milliseconds(100),
        "noticed {} ms after it was made (engine.tick is {} ms)",
        (admitted - created).num_milliseconds(),
        tick.num_milliseconds()
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_finds_the_same_wait_reason_opens_no_transaction() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    for i in 0..7 {
        create(&ctx, "acme", "dallas", "ssd-1", &format!("node-{i}")).await;
    }
    let ttl = Duration::from_secs(30);
    let first = store
        .claim("tester", Utc::now(), ttl, 100, ctx.admission())
        .await
        .expect("claim");
    assert_eq!((first.admitted, first.waiting), (5, 2));
    assert!(first.wrote);
    let waiting_before: Vec<RequestRow> = all_requests(&store)
        .await
        .into_iter()
        .filter(|r| r.wait_reason.is_some())
        .collect();
    assert_eq!(waiting_before.len(), 2);
    let (batches, jobs, _) = activity(&store);

    let again = store
        .claim("tester", Utc::now(), ttl, 100, ctx.admission())
        .await
        .expect("claim again");
    assert_eq!((again.admitted, again.waiting), (0, 2));
    assert!(!again.wrote, "nothing changed, so nothing was written");
    let (batches2, jobs2, _) = activity(&store);
    assert_eq!((batches2, jobs2), (batches, jobs), "no write transaction");
    let waiting_after: Vec<RequestRow> = all_requests(&store)
        .await
        .into_iter()
        .filter(|r| r.wait_reason.is_some())
        .collect();
    for (b, a) in waiting_before.iter().zip(&waiting_after) {
        assert_eq!(
            (&a.id, &a.wait_reason, &a.next_run_at),
            (&b.id, &b.wait_reason, &b.next_run_at)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_health_that_did_not_change_is_not_written_again() {
    use mailfleet::reputation::dnsbl::ZoneHealth;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let health = |usable: bool| {
        vec![
            ZoneHealth {
                zone: "zen.example".into(),
                usable: true,
                why: None,
            },
            ZoneHealth {
                zone: "bl.example".into(),
                usable,
                why: (!usable).then(|| "test entry not listed".to_string()),
            },
        ]
    };
    store
        .record_zone_health(health(false), Utc::now())
        .await
        .expect("first");
    let (batches, jobs, _) = activity(&store);
    store
        .record_zone_health(health(false), Utc::now())
        .await
        .expect("same again");
    assert_eq!(
        activity(&store).0,
        batches,
        "the same health opened a write transaction"
    );
    assert_eq!(activity(&store).1, jobs);
    store
        .record_zone_health(health(true), Utc::now())
        .await
        .expect("recovered");
    assert_eq!(activity(&store).0, batches + 1, "a change is written");
    let open = store.alerts(true, 10).await.expect("alerts");
    assert!(
        open.iter().all(|a| !a.subject.contains("bl.example")),
        "the recovered zone's alert is resolved: {open:?}"
    );
}

/// Admission holds queued requests on a provider whose circuit is open, saying so, and
/// admits them once it is recorded closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_holds_queued_requests_with_the_reason_until_it_closes() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-held").await;
    let now = Utc::now();
    let circuit = |open: bool| mailfleet::store::BreakerChange {
        provider: "sim".into(),
        open,
        failures: 5,
        opened_at: open.then_some(now),
        retry_at: open.then(|| now + chrono::Duration::seconds(30)),
        last_error: open.then(|| "sim: HTTP 503".to_string()),
        now,
    };
    store.record_breaker(circuit(true)).await.expect("open");
    let ttl = Duration::from_secs(30);
    let held = store
        .claim("tester", Utc::now(), ttl, 100, ctx.admission())
        .await
        .expect("claim");
    assert_eq!((held.admitted, held.waiting), (0, 1));
    let row = store
        .get_request(&req.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, "queued");
    let why = row.wait_reason.expect("a wait reason");
    assert!(
        why.starts_with("provider unavailable: sim: circuit open after 5 failed calls in a row (last: sim: HTTP 503); tried again at "),
        "{why}"
    );
    let listed = mailfleet::engine::clusters::clusters(&store, &cfg)
        .await
        .expect("clusters");
    assert!(listed
        .iter()
        .filter(|c| c.provider == "sim")
        .all(|c| c.circuit.state == "open"));

    store.record_breaker(circuit(false)).await.expect("closed");
    let admitted = store
        .claim("tester", Utc::now(), ttl, 100, ctx.admission())
        .await
        .expect("claim");
    assert_eq!(admitted.admitted, 1);
    let row = store
        .get_request(&req.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((row.state.as_str(), row.wait_reason), ("allocating", None));
    let names: Vec<String> = store
        .list_events(&mailfleet::store::EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with("provider."))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"provider.circuit_opened".to_string()));
    assert!(names.contains(&"provider.circuit_closed".to_string()));
}

/// A context that ran until idle once runs again: the second run moves a request created
/// after the first, instead of claiming and releasing it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_until_idle_on_the_same_context_does_the_work() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    for label in ["node-first", "node-second"] {
        let req = create(&ctx, "acme", "dallas", "ssd-1", label).await;
        let run = mailfleet::engine::run_until_idle(ctx.clone());
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the run ends");
        assert!(out.succeeded(), "{out:?}");
        let row = store
            .get_request(&req.id)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(row.state, "completed", "{label}");
    }
}
