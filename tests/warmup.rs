//! Issue 6: warm-up day boundaries. The rules on a fixed clock (advance, hold, pause,
//! resume, pace), and a simulated month of boundaries under tokio's paused time, with the
//! simulated cloud's daily numbers.

mod support;

use chrono::{DateTime, Duration as Days, TimeZone, Utc};
use mailfleet::domain::warmup::{DayCounts, ResumeFrom};
use mailfleet::engine::commands::{execute, Command};
use mailfleet::store::{EventFilter, NodeFilter, Store};
use mailfleet::warmup::{close_days, date_at, sim::SimCounts, Reported};
use std::sync::Arc;
use std::time::Duration;
use support::*;

async fn events_named(store: &Store, name: &str) -> usize {
    store
        .list_events(&EventFilter {
            limit: 100_000,
            name: Some(name.into()),
            ..Default::default()
        })
        .await
        .expect("events")
        .iter()
        .filter(|e| e.name == name)
        .count()
}

fn counts(sent: u64, bounced: u64, deferred: u64, complaints: u64) -> DayCounts {
    DayCounts {
        sent,
        delivered: sent - bounced - deferred,
        deferred,
        bounced,
        complaints,
    }
}

/// One node on the standard plan, then its days closed by hand with chosen numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_boundary_advances_holds_pauses_and_operators_resume_and_pace() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    create(&ctx, "acme", "dallas", "ssd-1", "mx-warm").await;
    wait_for(&store, Duration::from_secs(30), "the node", |rows| {
        rows.iter().all(|r| r.state == "completed")
    })
    .await;
    handle.shutdown().await;
    let node = store
        .list_nodes(&NodeFilter::default())
        .await
        .expect("nodes")
        .remove(0);
    let w = store
        .node_warmup(&node.id)
        .await
        .expect("w")
        .expect("warm-up");
    assert_eq!(
        (w.plan.as_str(), w.day, w.days, w.cap),
        ("standard", 1, 42, 10)
    );
    let day1 = chrono::NaiveDate::parse_from_str(w.date.as_deref().expect("date"), "%Y-%m-%d")
        .expect("date");
    let noon = |d: chrono::NaiveDate| -> DateTime<Utc> {
        Utc.from_utc_datetime(&d.and_hms_opt(12, 0, 0).expect("noon"))
    };

    // Nothing closes before the day is over.
    assert!(close_days(&store, &cfg, &Reported, noon(day1))
        .await
        .expect("close")
        .is_empty());

    // Day 1: healthy → day 2 at the plan's cap.
    store
        .record_sending_counts(&node.id, day1, counts(10, 0, 0, 0))
        .await
        .expect("counts");
    let done = close_days(&store, &cfg, &Reported, noon(day1 + Days::days(1)))
        .await
        .expect("close");
    assert_eq!(done.len(), 1, "{done:?}");
    let w = store.node_warmup(&node.id).await.expect("w").expect("w");
    let standard = cfg
        .warmup_plans()
        .into_iter()
        .find(|p| p.name == "standard")
        .expect("plan");
    assert_eq!(
        (w.day, w.cap, w.status.as_str()),
        (2, standard.cap(2) as i64, "warming")
    );

    // Day 2: 4% bounces → held, same day and cap, with the reason.
    let day2 = day1 + Days::days(1);
    store
        .record_sending_counts(&node.id, day2, counts(100, 4, 0, 0))
        .await
        .expect("counts");
    close_days(&store, &cfg, &Reported, noon(day2 + Days::days(1)))
        .await
        .expect("close");
    let w = store.node_warmup(&node.id).await.expect("w").expect("w");
    assert_eq!((w.day, w.status.as_str()), (2, "held"));
    assert_eq!(
        w.reason.as_deref(),
        Some("bounces 4.00% of 100 sent, above 3.00%")
    );

    // Day 3 (still plan day 2): complaints 0.2% → paused, out of rotation, with the reason.
    let day3 = day2 + Days::days(1);
    store
        .record_sending_counts(&node.id, day3, counts(1000, 0, 0, 2))
        .await
        .expect("counts");
    close_days(&store, &cfg, &Reported, noon(day3 + Days::days(1)))
        .await
        .expect("close");
    let n = store.get_node(&node.id).await.expect("node");
    assert_eq!(n.status, "paused");
    assert_eq!(
        n.status_reason.as_deref(),
        Some("warm-up: complaints 0.20% of 1000 sent, above 0.10%")
    );
    // A paused node's days do not close.
    assert!(
        close_days(&store, &cfg, &Reported, noon(day3 + Days::days(5)))
            .await
            .expect("close")
            .is_empty()
    );

    // The whole log, with each decision.
    let w = store.node_warmup(&node.id).await.expect("w").expect("w");
    let decisions: Vec<(i64, Option<&str>)> = w
        .log
        .iter()
        .map(|d| (d.day, d.decision.as_deref()))
        .collect();
    assert_eq!(
        decisions,
        [
            (1, Some("advanced")),
            (2, Some("held")),
            (2, Some("paused"))
        ]
    );
    assert_eq!(events_named(&store, "warmup.advanced").await, 1);
    assert_eq!(events_named(&store, "warmup.held").await, 1);
    assert_eq!(events_named(&store, "node.paused").await, 1);

    // The operator restarts the plan: day 1, back in rotation.
    let out = execute(
        &ctx,
        "oncall",
        Command::WarmupResume {
            id: node.id.clone(),
            from: ResumeFrom::Start,
        },
    )
    .await
    .expect("resume");
    assert_eq!(
        out.describe(),
        "node mx-warm: warm-up resumed on day 1 at 10/day"
    );
    assert_eq!(
        store.get_node(&node.id).await.expect("node").status,
        "warming"
    );
    // ... and slows the rest down by half again: 41 days left become 62.
    execute(
        &ctx,
        "oncall",
        Command::WarmupPace {
            id: node.id.clone(),
            percent: 150,
        },
    )
    .await
    .expect("pace");
    let w = store.node_warmup(&node.id).await.expect("w").expect("w");
    assert_eq!((w.day, w.days), (1, 1 + 62));
    assert_eq!(w.plan, "standard (paced)");
    assert_eq!(events_named(&store, "warmup.paced").await, 1);
    // Compressing past what is allowed is refused, and nothing changes.
    let err = execute(
        &ctx,
        "oncall",
        Command::WarmupPace {
            id: node.id.clone(),
            percent: 10,
        },
    )
    .await
    .expect_err("too fast");
    assert!(
        err.to_string().starts_with("pace: 0.1 is not a factor"),
        "{err}"
    );
    // Bad counts are refused with what is wrong.
    let err = store
        .record_sending_counts(&node.id, day3, counts(10, 0, 0, 0).with_sent(5))
        .await
        .expect_err("inconsistent");
    assert!(err.to_string().contains("must not exceed sent"), "{err}");
}

/// Issue 16: a warm-up paused for bounces above the pause rate raises the node's medium
/// "bounce" alert with the decision, naming the rate; a hold for bounces, or a pause for
/// complaints, does not; the operator's resume resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_for_bounces_raises_a_medium_bounce_alert_that_the_resume_resolves() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    create(&ctx, "acme", "dallas", "ssd-1", "mx-bounce").await;
    wait_for(&store, Duration::from_secs(30), "the node", |rows| {
        rows.iter().all(|r| r.state == "completed")
    })
    .await;
    handle.shutdown().await;
    let node = store
        .list_nodes(&NodeFilter::default())
        .await
        .expect("nodes")
        .remove(0);
    let w = store.node_warmup(&node.id).await.expect("w").expect("w");
    let day1 = chrono::NaiveDate::parse_from_str(w.date.as_deref().expect("date"), "%Y-%m-%d")
        .expect("date");
    let noon = |d: chrono::NaiveDate| -> DateTime<Utc> {
        Utc.from_utc_datetime(&d.and_hms_opt(12, 0, 0).expect("noon"))
    };
    let bounce_alerts = |open_only: bool| {
        let store = store.clone();
        async move {
            store
                .alerts(open_only, 100)
                .await
                .expect("alerts")
                .into_iter()
                .filter(|a| a.kind == "bounce")
                .collect::<Vec<_>>()
        }
    };

    // 4% bounces: held, but not an alert.
    store
        .record_sending_counts(&node.id, day1, counts(100, 4, 0, 0))
        .await
        .expect("counts");
    close_days(&store, &cfg, &Reported, noon(day1 + Days::days(1)))
        .await
        .expect("close");
    assert_eq!(
        store
            .node_warmup(&node.id)
            .await
            .expect("w")
            .expect("w")
            .status,
        "held"
    );
    assert!(bounce_alerts(false).await.is_empty());

    // 7% bounces: paused, and the medium alert raised with it.
    let day2 = day1 + Days::days(1);
    store
        .record_sending_counts(&node.id, day2, counts(200, 14, 0, 0))
        .await
        .expect("counts");
    close_days(&store, &cfg, &Reported, noon(day2 + Days::days(1)))
        .await
        .expect("close");
    assert_eq!(
        store.get_node(&node.id).await.expect("node").status,
        "paused"
    );
    let open_now = bounce_alerts(true).await;
    assert_eq!(open_now.len(), 1, "{open_now:?}");
    let a = &open_now[0];
    assert_eq!(
        (
            a.severity.as_str(),
            a.node_id.as_deref(),
            a.message.as_str()
        ),
        (
            "medium",
            Some(node.id.as_str()),
            "mx-bounce bounce rate 7.0% (14 of 200 sent) is above 5.0%: warm-up paused"
        )
    );

    // The operator resumes it: the alert is resolved, saying by whom.
    execute(
        &ctx,
        "oncall",
        Command::WarmupResume {
            id: node.id.clone(),
            from: ResumeFrom::Day,
        },
    )
    .await
    .expect("resume");
    assert!(bounce_alerts(true).await.is_empty());
    let all = bounce_alerts(false).await;
    assert_eq!(
        all.iter()
            .map(|a| a.resolution.as_deref())
            .collect::<Vec<_>>(),
        [Some("warm-up resumed by oncall")]
    );

    // Paused again, for complaints with few bounces: no bounce alert.
    // (A resumed warm-up starts on the real today, before the days closed above.)
    let w = store.node_warmup(&node.id).await.expect("w").expect("w");
    let day = chrono::NaiveDate::parse_from_str(w.date.as_deref().expect("date"), "%Y-%m-%d")
        .expect("date");
    store
        .record_sending_counts(&node.id, day, counts(1000, 10, 0, 2))
        .await
        .expect("counts");
    close_days(&store, &cfg, &Reported, noon(day + Days::days(1)))
        .await
        .expect("close");
    assert_eq!(
        store.get_node(&node.id).await.expect("node").status,
        "paused"
    );
    assert!(bounce_alerts(true).await.is_empty());
    assert_eq!(bounce_alerts(false).await.len(), 1);
}

trait WithSent {
    fn with_sent(self, sent: u64) -> Self;
}

impl WithSent for DayCounts {
    fn with_sent(mut self, sent: u64) -> Self {
        self.sent = sent;
        self
    }
}

/// A month of day boundaries on a demo fleet under paused time: the engine's boundary task
/// wakes once a day, every warming node gets one decision per day, each decision is an
/// event, caps follow the plans, and the simulated numbers produce holds and pauses.
#[tokio::test(start_paused = true)]
async fn a_simulated_month_of_day_boundaries() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    // Start just after midnight, so each advance of a day crosses one boundary.
    let start = Utc
        .with_ymd_and_hms(2026, 11, 2, 0, 5, 0)
        .single()
        .expect("start");
    let clock: mailfleet::clock::SharedClock = Arc::new(mailfleet::clock::TokioClock::new(start));
    let spec = mailfleet::demo::DemoSpec {
        nodes: 120,
        seed: 5,
    };
    let demo_cfg = mailfleet::demo::config_for(&cfg, &spec);
    mailfleet::demo::generate(&store, &demo_cfg, &spec, start)
        .await
        .expect("demo");
    let warming: Vec<String> = store
        .list_nodes(&NodeFilter {
            status: Some("warming".into()),
            ..Default::default()
        })
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert!(
        warming.len() >= 10,
        "the demo has warming nodes: {}",
        warming.len()
    );
    let before_events = events_named(&store, "warmup.advanced").await
        + events_named(&store, "warmup.held").await
        + events_named(&store, "warmup.completed").await
        + events_named(&store, "node.paused").await;
    let mut logged_before = std::collections::HashMap::new();
    for id in &warming {
        let w = store.node_warmup(id).await.expect("w").expect("w");
        logged_before.insert(
            id.clone(),
            w.log.iter().filter(|d| d.decision.is_some()).count(),
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(mailfleet::warmup::run(
        store.clone(),
        Arc::new(demo_cfg.clone()),
        Arc::new(SimCounts { seed: 9 }),
        clock.clone(),
        stop_rx,
    ));
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        let today = date_at(&demo_cfg, clock.now());
        // Let the task finish the boundary it woke for.
        for _ in 0..10_000 {
            if store
                .warm_nodes_due(today, 1)
                .await
                .expect("due")
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(store
            .warm_nodes_due(today, 1)
            .await
            .expect("due")
            .is_empty());
    }
    stop_tx.send(true).expect("stop");
    task.await.expect("task");

    let plans = demo_cfg.warmup_plans();
    let (mut holds, mut pauses, mut decided) = (0, 0, 0);
    for id in &warming {
        let w = store.node_warmup(id).await.expect("w").expect("w");
        let new: Vec<_> = w
            .log
            .iter()
            .filter(|d| d.decision.is_some())
            .skip(logged_before[id])
            .collect();
        decided += new.len();
        // One decision per day, on consecutive dates, until it paused or completed.
        for pair in new.windows(2) {
            let a = chrono::NaiveDate::parse_from_str(&pair[0].date, "%Y-%m-%d").expect("d");
            let b = chrono::NaiveDate::parse_from_str(&pair[1].date, "%Y-%m-%d").expect("d");
            assert_eq!(b, a + Days::days(1), "{id}: days in a row");
            match pair[0].decision.as_deref() {
                Some("advanced") => assert_eq!(pair[1].day, pair[0].day + 1),
                Some("held") => assert_eq!(pair[1].day, pair[0].day),
                other => panic!("{id}: a day after {other:?}"),
            }
        }
        let plan = plans.iter().find(|p| w.plan == p.name).expect("plan");
        for d in &new {
            assert_eq!(
                d.cap as u64,
                plan.cap(d.day as u32),
                "{id} day {}: the plan's cap",
                d.day
            );
        }
        match new.last().and_then(|d| d.decision.as_deref()) {
            Some("paused") => {
                pauses += 1;
                let n = store.get_node(id).await.expect("node");
                assert_eq!(n.status, "paused");
                assert!(n
                    .status_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("warm-up: ")));
            }
            Some("completed") => {
                assert_eq!(store.get_node(id).await.expect("node").status, "active");
            }
            _ => assert_eq!(new.len(), 30, "{id}: still warming after 30 boundaries"),
        }
        holds += new
            .iter()
            .filter(|d| d.decision.as_deref() == Some("held"))
            .count();
    }
    assert!(holds > 0, "the simulated numbers hold some nodes");
    assert!(pauses > 0, "the simulated numbers pause some nodes");
    let after_events = events_named(&store, "warmup.advanced").await
        + events_named(&store, "warmup.held").await
        + events_named(&store, "warmup.completed").await
        + events_named(&store, "node.paused").await;
    assert_eq!(
        after_events - before_events,
        decided,
        "every decision is an event"
    );
}
