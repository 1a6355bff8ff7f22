//! The console reads only what changed: the store hands out the rows written since a
//! reader's last read (stamped with one change sequence by triggers), and a console that
//! applies those deltas row by row shows exactly what one that read everything shows — the
//! same rows in the same order in every view, the same counts, capacity and sparklines.

mod support;

use mailfleet::store::{ConsoleDelta, ConsoleReader, ConsoleSnapshot, ConsoleUpdate, Store};
use mailfleet::tui::action::{Action, View, VIEWS};
use mailfleet::tui::app::App;
use mailfleet::tui::keymap::Keymap;
use mailfleet::tui::theme::Theme;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use support::*;

fn new_app(cfg: &mailfleet::config::Config) -> App {
    App::new(
        Arc::new(cfg.clone()),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "db".into(),
        false,
        Theme::plain(),
    )
}

async fn demo(dir: &tempfile::TempDir, nodes: usize) -> (Store, mailfleet::config::Config) {
    let spec = mailfleet::demo::DemoSpec { nodes, seed: 11 };
    let cfg = mailfleet::demo::config_for(&config(""), &spec);
    let store = open(&db_path(dir), &cfg).await;
    mailfleet::demo::generate(&store, &cfg, &spec, chrono::Utc::now())
        .await
        .expect("demo");
    (store, cfg)
}

async fn read(store: &Store, reader: ConsoleReader) -> (ConsoleUpdate, ConsoleReader) {
    store.console_read(reader).await.expect("console read")
}

/// What a view shows, by row id, in order, and where its selection is.
fn shown(app: &App, v: View) -> (Vec<String>, Option<String>) {
    let t = &app.tables[v.index()];
    let id = |i: &usize| match v {
        View::Fleet | View::Warmup => app.snap.nodes[*i].id.to_string(),
        View::Requests | View::Approvals | View::Pipeline => app.snap.requests[*i].id.to_string(),
        View::Blacklist => app.snap.listings[*i].id.clone(),
        View::Alerts => app.snap.alerts[*i].id.clone(),
        View::Events => String::new(),
        View::Triage => app.triage.rows[*i].key.clone(),
    };
    (
        t.visible.iter().map(id).collect(),
        t.visible.get(t.selected).map(id),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_holds_only_the_rows_a_commit_touched() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _cfg) = demo(&dir, 300).await;
    let (first, reader) = read(&store, ConsoleReader::new()).await;
    let ConsoleUpdate::Full(snap) = first else {
        panic!("the first read is everything");
    };
    assert!(snap.nodes.len() >= 300, "{}", snap.nodes.len());
    let (again, reader) = read(&store, reader).await;
    assert!(matches!(again, ConsoleUpdate::Nothing), "{again:?}");

    let db = rusqlite::Connection::open(db_path(&dir)).expect("db");
    let three: Vec<String> = snap.nodes[10..13]
        .iter()
        .map(|n| n.id.to_string())
        .collect();
    db.execute(
        "UPDATE nodes SET reputation_score = 7 WHERE id IN (?1, ?2, ?3)",
        rusqlite::params![three[0], three[1], three[2]],
    )
    .expect("update");
    let (update, reader) = read(&store, reader).await;
    let ConsoleUpdate::Delta(d) = update else {
        panic!("a delta, not {update:?}");
    };
    let mut got: Vec<String> = d.nodes.iter().map(|n| n.id.to_string()).collect();
    got.sort();
    let mut want = three.clone();
    want.sort();
    assert_eq!(got, want, "three rows changed, three rows read");
    assert!(d.nodes.iter().all(|n| n.reputation_score == 7));
    assert!(d.requests.is_empty() && d.seq > snap.seq);
    assert!(d.quota_use.is_none(), "no request changed");

    // A node's warm-up is part of its row; a request's steps part of the request's.
    let warming = snap
        .nodes
        .iter()
        .find(|n| n.warmup.is_some())
        .expect("a node with a warm-up");
    db.execute(
        "UPDATE node_warmup SET cap = cap + 1 WHERE node_id = ?1",
        [warming.id.to_string()],
    )
    .expect("warm-up");
    let req = &snap.requests[5];
    db.execute(
        "UPDATE request_steps SET attempts = attempts + 1 WHERE request_id = ?1 AND position = 1",
        [req.id.to_string()],
    )
    .expect("steps");
    let (update, reader) = read(&store, reader).await;
    let ConsoleUpdate::Delta(d) = update else {
        panic!("a delta, not {update:?}");
    };
    assert_eq!(d.nodes.len(), 1);
    assert_eq!(d.nodes[0].id, warming.id);
    assert_eq!(
        d.nodes[0].warmup.as_ref().map(|w| w.cap),
        warming.warmup.as_ref().map(|w| w.cap + 1)
    );
    assert_eq!(d.requests.len(), 1);
    assert_eq!(d.requests[0].steps.attempts, req.steps.attempts + 1);
    assert!(
        d.quota_use.is_some(),
        "a request changed: its tenant's use is read again"
    );

    // Writing a row as it was is still a write (the engine avoids those, see item 2), but
    // nothing else is read with it.
    db.execute(
        "UPDATE requests SET label = label WHERE id = ?1",
        [req.id.to_string()],
    )
    .expect("same");
    let (update, reader) = read(&store, reader).await;
    let ConsoleUpdate::Delta(d) = update else {
        panic!("a delta, not {update:?}");
    };
    assert_eq!((d.nodes.len(), d.requests.len()), (0, 1));
    assert!(d.circuits.is_none(), "no circuit changed");

    // A provider's circuit opening reaches the console as the small table, and no rows.
    let now = chrono::Utc::now();
    store
        .record_breaker(mailfleet::store::BreakerChange {
            provider: "sim".into(),
            open: true,
            failures: 5,
            opened_at: Some(now),
            retry_at: Some(now + chrono::Duration::seconds(30)),
            last_error: Some("sim: 503".into()),
            now,
        })
        .await
        .expect("breaker");
    let (update, _) = read(&store, reader).await;
    let ConsoleUpdate::Delta(d) = update else {
        panic!("a delta, not {update:?}");
    };
    assert_eq!((d.nodes.len(), d.requests.len()), (0, 0));
    let circuits = d.circuits.expect("the circuits, read again");
    assert!(
        circuits.iter().any(|c| c.provider == "sim" && c.open),
        "{circuits:?}"
    );
    let (update, _) = read(&store, ConsoleReader::new()).await;
    let ConsoleUpdate::Full(full) = update else {
        panic!("a first read is everything");
    };
    assert!(full.circuits.iter().any(|c| c.provider == "sim" && c.open));
}

/// Random changes of every kind the console shows, applied as deltas to one console and
/// read whole by another: after each round both show the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_keep_every_view_as_a_full_read_would() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, cfg) = demo(&dir, 400).await;
    let mut live = new_app(&cfg);
    let (first, mut reader) = read(&store, ConsoleReader::new()).await;
    let ConsoleUpdate::Full(snap) = first else {
        panic!("the first read is everything");
    };
    live.set_snapshot(Arc::new(snap));
    // Sorted by columns whose values the changes move, and filtered, so rows move between
    // places and in and out of views; the selection is somewhere in the middle.
    let sorts = [
        (View::Fleet, Action::SortBy(5)),
        (View::Requests, Action::SortBy(3)),
        (View::Warmup, Action::SortBy(2)),
        (View::Approvals, Action::SortBy(7)),
    ];
    for (v, sort) in sorts {
        live.update(match v {
            View::Fleet => Action::ShowFleet,
            View::Requests => Action::ShowRequests,
            View::Warmup => Action::ShowWarmup,
            _ => Action::ShowApprovals,
        });
        live.update(sort);
        for _ in 0..7 {
            live.update(Action::Down);
        }
    }
    live.update(Action::ShowPipeline);
    live.update(Action::Right);
    live.update(Action::ShowFleet);
    live.apply_filter("acme");

    let db = rusqlite::Connection::open(db_path(&dir)).expect("db");
    let mut rng = SmallRng::seed_from_u64(5);
    let statuses = ["active", "paused", "warming", "maintenance", "unhealthy"];
    let states = [
        "completed",
        "queued",
        "configuring",
        "pending_approval",
        "failed",
    ];
    for round in 0..12 {
        let node_ids: Vec<String> = live.snap.nodes.iter().map(|n| n.id.to_string()).collect();
        let request_ids: Vec<String> = live
            .snap
            .requests
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        for _ in 0..rng.gen_range(1..25) {
            let node = &node_ids[rng.gen_range(0..node_ids.len())];
            let req = &request_ids[rng.gen_range(0..request_ids.len())];
            match rng.gen_range(0..7) {
                0 => db.execute(
                    "UPDATE nodes SET reputation_score = ?1 WHERE id = ?2",
                    rusqlite::params![rng.gen_range(0..100), node],
                ),
                1 => db.execute(
                    "UPDATE nodes SET status = ?1 WHERE id = ?2",
                    rusqlite::params![statuses[rng.gen_range(0..statuses.len())], node],
                ),
                2 => db.execute(
                    "UPDATE node_warmup SET cap = ?1 WHERE node_id = ?2",
                    rusqlite::params![rng.gen_range(10..5000), node],
                ),
                3 => db.execute(
                    "UPDATE requests SET state = ?1 WHERE id = ?2",
                    rusqlite::params![states[rng.gen_range(0..states.len())], req],
                ),
                4 => db.execute(
                    "UPDATE requests SET needs_attention = NOT needs_attention WHERE id = ?1",
                    [req],
                ),
                5 => db.execute(
                    "UPDATE nodes SET tenant = 'acme', label = label || 'x' WHERE id = ?1",
                    [node],
                ),
                _ => db.execute(
                    "UPDATE request_steps SET status = 'failed' WHERE request_id = ?1 AND position = 2",
                    [req],
                ),
            }
            .expect("change");
        }
        let selected: Vec<Option<String>> = VIEWS.iter().map(|v| shown(&live, *v).1).collect();
        let (update, r) = read(&store, reader).await;
        reader = r;
        match update {
            ConsoleUpdate::Delta(d) => live.apply_delta(d),
            other => panic!("round {round}: a delta, not {other:?}"),
        }
        let whole: ConsoleSnapshot = store.console_snapshot().await.expect("snapshot");
        let mut fresh = new_app(&cfg);
        fresh.tables = live.tables.clone();
        fresh.pipeline_state = live.pipeline_state;
        fresh.set_snapshot(Arc::new(whole));
        for v in VIEWS {
            if v == View::Events {
                continue;
            }
            let (a, b) = (shown(&live, v), shown(&fresh, v));
            if let Some(p) = (0..a.0.len().max(b.0.len())).find(|p| a.0.get(*p) != b.0.get(*p)) {
                panic!(
                    "round {round}: the {v:?} view's rows differ at {p} of {}/{}: {:?} vs {:?}",
                    a.0.len(),
                    b.0.len(),
                    a.0.get(p),
                    b.0.get(p)
                );
            }
            // The selection stays on its row while the row is shown.
            if let Some(was) = &selected[v.index()] {
                if a.0.contains(was) {
                    assert_eq!(a.1.as_ref(), Some(was), "round {round}: {v:?} selection");
                }
            }
        }
        assert_eq!(
            live.counts.node_status, fresh.counts.node_status,
            "round {round}"
        );
        assert_eq!(live.counts.states, fresh.counts.states, "round {round}");
        assert_eq!(
            live.counts.needs_attention, fresh.counts.needs_attention,
            "round {round}"
        );
        assert_eq!(live.capacity, fresh.capacity, "round {round}");
        let sparks = |app: &App| {
            let mut s: Vec<(String, Option<Box<str>>)> = app
                .snap
                .nodes
                .iter()
                .zip(&app.sparks)
                .map(|(n, s)| (n.id.to_string(), s.clone()))
                .collect();
            s.sort();
            s
        };
        assert_eq!(sparks(&live), sparks(&fresh), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_page_is_the_fleet_by_label_before_the_whole_fleet_is_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, cfg) = demo(&dir, 300).await;
    let page = store.console_first_page(40).await.expect("first page");
    let whole = store.console_snapshot().await.expect("snapshot");
    assert_eq!(page.total, whole.nodes.len());
    let mut labels: Vec<(String, String)> = whole
        .nodes
        .iter()
        .map(|n| (n.label.to_string(), n.id.to_string()))
        .collect();
    labels.sort();
    let got: Vec<(String, String)> = page
        .nodes
        .iter()
        .map(|n| (n.label.to_string(), n.id.to_string()))
        .collect();
    assert_eq!(got, labels[..40].to_vec());

    // The console shows it, says it is still reading, and takes the whole fleet after.
    let mut app = new_app(&cfg);
    app.set_first_page(page);
    assert_eq!(app.table().visible.len(), 40);
    assert_eq!(app.loading_total, Some(whole.nodes.len()));
    let screen = render(&mut app);
    assert!(
        screen.contains(&format!("Fleet 1/{} reading…", whole.nodes.len())),
        "{screen}"
    );
    assert!(screen.contains(&labels[0].0), "{screen}");
    app.update(Action::Down);
    app.update(Action::Down);
    let third = labels[2].1.clone();
    app.set_snapshot(Arc::new(whole));
    assert_eq!(app.loading_total, None);
    assert_eq!(
        shown(&app, View::Fleet).1,
        Some(third),
        "the selection stays"
    );
}

fn render(app: &mut App) -> String {
    let mut term =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(140, 30)).expect("terminal");
    term.draw(|f| mailfleet::tui::views::draw(f, app))
        .expect("draw");
    let buf = term.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// A fleet bigger than the loop sorts in place, made by hand.
fn big_snapshot(n: usize) -> ConsoleSnapshot {
    use mailfleet::store::Word;
    let statuses: [Word; 3] = ["active".into(), "paused".into(), "warming".into()];
    let (tenant, region, plan): (Word, Word, Word) =
        ("acme".into(), "dallas".into(), "ssd-1".into());
    let nodes = (0..n)
        .map(|i| mailfleet::store::ConsoleNode {
            id: uuid::Uuid::from_u128(0x1000_0000 + i as u128),
            request_id: None,
            provider_id: None,
            tenant: tenant.clone(),
            label: format!("node-{:06}", (i * 7919) % n).into(),
            ip_address: None,
            region: region.clone(),
            plan: plan.clone(),
            status: statuses[i % 3].clone(),
            status_reason: None,
            reputation_score: (i % 97) as i64,
            current_load: 0,
            created_at: i as i64,
            last_heartbeat: None,
            warmup: None,
            cert_expires: None,
            upper: Default::default(),
        })
        .collect();
    ConsoleSnapshot {
        nodes,
        ..Default::default()
    }
}

/// A console on a big fleet made by hand, its Fleet sorted by REP, descending (a sort
/// asked twice: ascending, then reversed), the jobs done.
fn by_rep_descending(cfg: &mailfleet::config::Config, n: usize) -> App {
    let mut app = new_app(cfg);
    app.set_snapshot(Arc::new(big_snapshot(n)));
    for _ in 0..2 {
        app.update(Action::SortBy(5));
        settle(&mut app);
    }
    app
}

/// Runs the jobs a console asked for, as the runner would.
fn settle(app: &mut App) {
    while let Some(job) = app.jobs.pop() {
        app.install(job.run());
    }
}

#[test]
fn big_sorts_run_as_jobs_and_the_newest_result_wins() {
    let n = mailfleet::tui::app::INLINE_ROWS + 5_000;
    let cfg = config("");
    let mut app = new_app(&cfg);
    app.receive_snapshot(Arc::new(big_snapshot(n)));
    // Too big for the loop: nothing is taken until the job is done.
    assert!(!app.loaded);
    let job = app.jobs.pop().expect("a job for the snapshot");
    assert!(app.install(job.run()));
    assert!(app.loaded && app.pending.is_none());
    assert_eq!(app.table().visible.len(), n);

    // The reference: the same data sorted on the spot.
    let mut reference = by_rep_descending(&cfg, n);

    app.update(Action::SortBy(5));
    let first = app.jobs.pop().expect("a job for the sort");
    // Asked again before the first is done: the first one's result is dropped.
    app.update(Action::SortBy(5));
    let second = app.jobs.pop().expect("a second job");
    assert!(app.pending_views.contains(&View::Fleet));
    assert!(render(&mut app).contains("sorting…"));
    // A change that arrives meanwhile waits for the result, then moves its row.
    let mut changed = app.snap.nodes[42].clone();
    changed.reputation_score = 1_000;
    app.receive_delta(mailfleet::store::ConsoleDelta {
        seq: 1,
        nodes: vec![changed.clone()],
        ..Default::default()
    });
    assert_eq!(app.snap.nodes[42].reputation_score, 42, "not yet");
    assert!(!app.install(first.run()), "an older result is dropped");
    assert!(app.install(second.run()));
    assert_eq!(app.snap.nodes[42].reputation_score, 1_000);
    reference.apply_delta(mailfleet::store::ConsoleDelta {
        seq: 1,
        nodes: vec![changed],
        ..Default::default()
    });
    assert!(shown(&app, View::Fleet).0 == shown(&reference, View::Fleet).0);
    // Descending by REP: the changed row leads.
    assert_eq!(app.table().visible[0], 42);
    assert!(!render(&mut app).contains("sorting…"));
}

#[test]
fn a_filter_finds_words_in_any_case_without_rows_keeping_a_copy() {
    let cfg = config("");
    let mut snap = big_snapshot(10);
    snap.nodes[3].status_reason = Some("Abuse REPORT from Spamhaus".into());
    snap.nodes[4].ip_address = Some("198.51.100.77".parse().expect("ip"));
    let mut app = new_app(&cfg);
    app.set_snapshot(Arc::new(snap));
    app.apply_filter("report");
    assert_eq!(app.table().visible, vec![3]);
    app.apply_filter("spamhaus abuse");
    assert_eq!(app.table().visible, vec![3]);
    app.apply_filter("100.77");
    assert_eq!(app.table().visible, vec![4]);
    app.apply_filter("!report");
    assert_eq!(app.table().visible.len(), 9);
}

#[test]
fn an_idle_console_wakes_once_a_minute_and_each_second_only_while_rows_change() {
    use std::time::{Duration, Instant};
    let cfg = config("");
    let mut app = new_app(&cfg);
    app.set_snapshot(Arc::new(big_snapshot(10)));
    let now = Instant::now();
    assert_eq!(app.next_tick(now), now + Duration::from_secs(60), "idle");
    app.data_at = Some(now - Duration::from_secs(5));
    assert_eq!(
        app.next_tick(now),
        now + Duration::from_secs(1),
        "rows just changed"
    );
    app.data_at = Some(now - Duration::from_secs(61));
    assert_eq!(
        app.next_tick(now),
        now + Duration::from_secs(60),
        "quiet again"
    );
    // A status message goes when it is due, not a minute later.
    app.say("done", false);
    let said = app.status.as_ref().expect("status").at;
    assert_eq!(
        app.next_tick(said),
        said + mailfleet::tui::app::STATUS_FOR,
        "the message expires on time"
    );
}

/// Typing a filter into a fleet too big for the loop: each character narrows the rows the
/// view shows (kept in order, not sorted again), a character taken back widens them, and
/// at each step the view is what a console that filtered once would show. A change that
/// arrives after the filter goes by the filter as it is now, not as it was.
#[test]
fn a_filter_typed_on_a_big_fleet_shows_what_filtering_once_would() {
    let n = mailfleet::tui::app::INLINE_ROWS + 5_000;
    let cfg = config("");
    // Sorted by REP, descending, so the order the filter keeps is not the labels'.
    let mut app = by_rep_descending(&cfg, n);
    let once = |text: &str| {
        let mut r = by_rep_descending(&cfg, n);
        r.apply_filter(text);
        settle(&mut r);
        shown(&r, View::Fleet).0
    };
    for text in [
        "n",
        "no",
        "node-00",
        "node-001",
        "node-0012",
        "node-001",
        "status:p",
        "status:paused",
        "status:paused node-01",
        "!node-01",
        "",
    ] {
        app.apply_filter(text);
        assert!(app.pending.is_some(), "{text:?}: too big for the loop");
        settle(&mut app);
        let got = shown(&app, View::Fleet).0;
        assert!(
            got == once(text),
            "{text:?}: {} rows, not as filtering once",
            got.len()
        );
    }
    // A filter typed, then a row that changes so it no longer matches, and one that now
    // does: both go by the filter typed.
    app.apply_filter("status:active");
    settle(&mut app);
    let before = app.table().visible.len();
    let (mut leaves, mut joins) = (app.snap.nodes[0].clone(), app.snap.nodes[1].clone());
    assert_eq!((&*leaves.status, &*joins.status), ("active", "paused"));
    leaves.status = "paused".into();
    joins.status = "active".into();
    app.receive_delta(mailfleet::store::ConsoleDelta {
        seq: 1,
        nodes: vec![leaves, joins],
        ..Default::default()
    });
    let shown_now = &app.table().visible;
    assert_eq!(shown_now.len(), before);
    assert!(!shown_now.contains(&0) && shown_now.contains(&1));
    assert!(shown_now
        .iter()
        .all(|i| &*app.snap.nodes[*i].status == "active"));
}

/// The counter, whether a stamp is open, and the newest stamp of each table the console
/// reads, as committed.
fn stamps(db: &rusqlite::Connection) -> (i64, i64, i64) {
    let (seq, open): (i64, i64) = db
        .query_row("SELECT seq, open FROM change_counter", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("counter");
    let newest: i64 = db
        .query_row(
            "SELECT MAX(s) FROM (SELECT MAX(change_seq) AS s FROM requests
                UNION ALL SELECT MAX(change_seq) FROM nodes
                UNION ALL SELECT MAX(change_seq) FROM ip_blacklist_events
                UNION ALL SELECT MAX(change_seq) FROM alerts)",
            [],
            |r| r.get(0),
        )
        .expect("newest");
    (seq, open, newest)
}

/// The engine's writes stamp a request's (or node's) row once per transaction, in the
/// statement itself where they can: each write reaches a reader holding the sequence just
/// before it, the counter moves once per transaction however many rows and steps it
/// touches, no committed state holds an open stamp, and a write from outside the store
/// (which opens none) is stamped by the triggers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_write_reaches_a_reader_holding_the_sequence_before_it() {
    use mailfleet::domain::{ResourceKind, Step};
    use mailfleet::store::{Fenced, LastTask, NewNode, ResourceWrite};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "stamped-1").await;
    let db = rusqlite::Connection::open(db_path(&dir)).expect("db");
    let (first, mut reader) = read(&store, ConsoleReader::new()).await;
    let ConsoleUpdate::Full(snap) = first else {
        panic!("the first read is everything");
    };
    let mut seq = snap.seq;

    // Each write is one transaction: after it, the reader holding `seq` sees the request
    // (and the node, once there is one) and the counter has moved by exactly one.
    let mut after = |what: &str, update: ConsoleUpdate, node: bool| -> ConsoleDelta {
        let ConsoleUpdate::Delta(d) = update else {
            panic!("{what}: a delta, not {update:?}");
        };
        assert_eq!(d.seq, seq + 1, "{what}: one stamp for the transaction");
        assert!(
            d.requests.iter().any(|r| r.id.to_string() == req.id),
            "{what}: the request is in the delta"
        );
        assert_eq!(!d.nodes.is_empty(), node, "{what}: nodes {:?}", d.nodes);
        let (counter, open, newest) = stamps(&db);
        assert_eq!((counter, open), (d.seq, 0), "{what}: committed closed");
        assert!(newest <= counter, "{what}: no stamp beyond the counter");
        seq = d.seq;
        d
    };

    let claim = store
        .claim(
            "a",
            chrono::Utc::now(),
            std::time::Duration::from_secs(30),
            1,
            ctx.admission(),
        )
        .await
        .expect("claim")
        .claims
        .remove(0);
    let (u, r) = read(&store, reader).await;
    reader = r;
    let d = after("admit and lease", u, false);
    assert_eq!(d.requests[0].steps.attempts, 1, "allocate started");
    let f = || {
        let now = chrono::Utc::now();
        Fenced {
            id: req.id.clone(),
            fence: claim.fence,
            actor: "tester".into(),
            now,
            lease_until: now + chrono::Duration::seconds(30),
            marks: Vec::new(),
        }
    };
    store.heartbeat(&f()).await.expect("heartbeat");
    let (u, r) = read(&store, reader).await;
    reader = r;
    after("heartbeat", u, false);
    store
        .note_retry(&f(), Some(Step::Allocate), "create_instance", "busy".into())
        .await
        .expect("retry");
    let (u, r) = read(&store, reader).await;
    reader = r;
    let d = after("retry", u, false);
    assert_eq!(
        d.requests[0].steps.attempts, 2,
        "the retry's attempt is shown"
    );
    let last = |task: &'static str, node: Option<NewNode>| LastTask {
        task,
        detail: "done".into(),
        resource: Some(ResourceWrite {
            kind: Some(ResourceKind::Node),
            allocated: true,
            provider: Some("sim".into()),
            provider_ref: None,
            detail: None,
        })
        .filter(|_| node.is_some()),
        node,
    };
    for step in [Step::Allocate, Step::Configure] {
        store
            .complete_step(&f(), step, last("step", None))
            .await
            .expect("step");
        let (u, r) = read(&store, reader).await;
        reader = r;
        let d = after(step.as_str(), u, false);
        assert_eq!(d.requests[0].steps.attempts, 2 + step.position());
    }
    let node = NewNode {
        provider_id: "sim-1".into(),
        hostname: "stamped-1.fleet.example.net".into(),
        ip: "100.64.0.9".into(),
        warmup: Some(("standard".into(), 30, 50)),
        warmup_date: "2025-01-01".into(),
    };
    store
        .complete_step(&f(), Step::Activate, last("register_node", Some(node)))
        .await
        .expect("activate");
    let (u, r) = read(&store, reader).await;
    reader = r;
    let d = after("activate", u, true);
    assert!(d.nodes[0].warmup.is_some(), "the node's warm-up is read");

    // Outside the store: no stamp opened, the triggers stamp it as they always did.
    db.execute(
        "UPDATE request_steps SET attempts = attempts + 1 WHERE request_id = ?1 AND step = 'verify'",
        [&req.id],
    )
    .expect("foreign write");
    let (u, _) = read(&store, reader).await;
    after("a write from outside the store", u, false);
}

/// A big snapshot made off the loop while changes arrive: the changes that waited for it
/// are applied to it in place. One copy of the fleet, never two (a second handle on it
/// made the first of them copy all 100,000 rows: 70 MB more at the peak).
#[test]
fn changes_that_wait_for_a_big_snapshot_do_not_copy_it() {
    let n = mailfleet::tui::app::INLINE_ROWS + 5_000;
    let cfg = config("");
    let mut app = new_app(&cfg);
    let snap = Arc::new(big_snapshot(n));
    let mut changed = snap.nodes[7].clone();
    changed.reputation_score = 500;
    // Rows made by hand are indexed when they arrive (the store's come indexed).
    let mut indexed = (*snap).clone();
    indexed.nodes.iter_mut().for_each(|n| n.index());
    let snap = Arc::new(indexed);
    let at = Arc::as_ptr(&snap);
    app.receive_snapshot(snap);
    app.receive_delta(mailfleet::store::ConsoleDelta {
        seq: 1,
        nodes: vec![changed],
        ..Default::default()
    });
    let job = app.jobs.pop().expect("a job for the snapshot");
    assert!(app.install(job.run()));
    assert_eq!(app.snap.nodes[7].reputation_score, 500, "the change is in");
    assert!(
        std::ptr::eq(Arc::as_ptr(&app.snap), at),
        "the snapshot was copied to apply a change"
    );
    // Two filters typed in a row: the first one's job still runs on the rows when the
    // second's result comes, so a change waits for it too, then lands in place.
    app.apply_filter("node-0");
    let older = app.jobs.pop().expect("a job for the first filter");
    app.apply_filter("node-00");
    let newer = app.jobs.pop().expect("a job for the second");
    let mut again = app.snap.nodes[7].clone();
    again.reputation_score = 600;
    app.receive_delta(mailfleet::store::ConsoleDelta {
        seq: 2,
        nodes: vec![again],
        ..Default::default()
    });
    assert!(app.install(newer.run()));
    assert_eq!(
        app.snap.nodes[7].reputation_score, 500,
        "waits for the older job"
    );
    assert!(
        app.install(older.run()),
        "its result is dropped, the change applied"
    );
    assert_eq!(app.snap.nodes[7].reputation_score, 600);
    assert!(std::ptr::eq(Arc::as_ptr(&app.snap), at), "still one copy");
}

/// A narrower filter keeps the shown rows in the order they are shown and sorts nothing:
/// rows put out of their sort order by hand stay in that order (a rebuild would sort
/// them back). A filter that is not narrower sorts again.
#[test]
fn a_narrower_filter_thins_the_shown_rows_without_sorting_them() {
    let cfg = config("");
    let mut app = new_app(&cfg);
    app.set_snapshot(Arc::new(big_snapshot(100)));
    app.apply_filter("node-00");
    let sorted = app.table().visible.clone();
    assert!(sorted.len() > 2);
    let mut reversed = sorted.clone();
    reversed.reverse();
    app.tables[View::Fleet.index()].visible = reversed.clone();
    app.apply_filter("node-000");
    let kept: Vec<usize> = reversed
        .iter()
        .copied()
        .filter(|i| app.snap.nodes[*i].label.contains("node-000"))
        .collect();
    assert!(kept.len() > 1);
    assert_eq!(app.table().visible, kept, "thinned in the order shown");
    app.apply_filter("node-0");
    let mut resorted = app.table().visible.clone();
    resorted.sort_by(|a, b| app.snap.nodes[*a].label.cmp(&app.snap.nodes[*b].label));
    assert_eq!(app.table().visible, resorted, "a wider filter sorts again");
}
