//! Issue 16, item 4: the simulated cloud's nodes report as agents do. With `[providers.sim]
//! agents` on, the engine plays each sim node's agent: its reports go through the store's
//! heartbeat path (heartbeat rows, the node's last heartbeat, deliveries on its open
//! warm-up day), so the demo runs on reported figures. A node whose agent is down
//! (unhealthy) reports nothing; a paused node reports but sends nothing.

mod support;

use mailfleet::engine;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_nodes_report_through_the_heartbeat_path_and_their_counts_reach_the_warm_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let mut ids = Vec::new();
    for label in ["sa-1", "sa-2", "sa-3"] {
        ids.push(create(&ctx, "acme", "dallas", "ssd-1", label).await.id);
    }
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    let mut nodes = Vec::new();
    for r in &ids {
        let n = store
            .list_nodes(&Default::default())
            .await
            .expect("nodes")
            .into_iter()
            .find(|n| n.request_id.as_deref() == Some(r.as_str()))
            .expect("its node");
        nodes.push(n);
    }
    assert!(nodes.iter().all(|n| n.status == "warming"), "{nodes:?}");
    // One node's agent is down; another is paused by an operator.
    let db = db_path(&dir);
    let down = nodes[1].id.clone();
    tokio::task::spawn_blocking(move || {
        rusqlite::Connection::open(db)
            .expect("db")
            .execute("UPDATE nodes SET status = 'unhealthy' WHERE id = ?", [down])
            .expect("down")
    })
    .await
    .expect("join");
    store
        .pause_node(&nodes[2].id, "alice", None, chrono::Utc::now())
        .await
        .expect("pause")
        .expect("paused");

    // Twelve hours of reports in one round: a warming node's half day of its cap.
    let now = chrono::Utc::now();
    let reported = engine::sim_agents::round(&ctx, now - chrono::Duration::hours(12), now).await;
    assert_eq!(reported, 2, "the unhealthy node's agent is down");
    let seen = |i: usize| {
        let store = store.clone();
        let id = nodes[i].id.clone();
        async move { store.node_detail(&id).await.expect("detail") }
    };
    let sending = seen(0).await;
    assert_eq!(sending.heartbeats.len(), 1);
    let hb = &sending.heartbeats[0];
    let cap = store
        .node_warmup(&nodes[0].id)
        .await
        .expect("warm-up")
        .expect("warming")
        .cap;
    // SimCounts sends 88–100% of the cap a day; half a day of it, give or take rounding.
    let sent = hb.delivered + hb.bounced + hb.deferred;
    assert!(
        sent * 2 >= cap * 80 / 100 && sent * 2 <= cap + 2,
        "sent {sent} in 12h of a {cap}/day cap"
    );
    assert!(hb.cpu_pct > 0.0 && hb.mem_total > 0 && hb.queue_free > 0);
    let n = store.get_node(&nodes[0].id).await.expect("node");
    assert!(n
        .last_heartbeat
        .is_some_and(|t| t >= mailfleet::clock::ts(now)));
    // The deliveries are on its open warm-up day, as an agent's are.
    let w = store
        .node_warmup(&nodes[0].id)
        .await
        .expect("w")
        .expect("w");
    let today = w.log.last().expect("the open day");
    assert_eq!(today.sent as u64, sent as u64, "{today:?}");
    // The paused node reports, and sent nothing; the down one reports nothing.
    let paused = seen(2).await;
    assert_eq!(paused.heartbeats.len(), 1);
    assert_eq!(
        paused.heartbeats[0].delivered + paused.heartbeats[0].bounced,
        0
    );
    assert!(seen(1).await.heartbeats.is_empty());
    assert_eq!(
        store.get_node(&nodes[1].id).await.expect("node").status,
        "unhealthy",
        "a down agent brings nothing back"
    );

    // A node given an agent token has a real agent: the engine no longer plays its own.
    mailfleet::agent::issue_token(&store, &cfg.dkim.key_env, &ids[0], chrono::Utc::now())
        .await
        .expect("token");
    let later = now + chrono::Duration::minutes(1);
    let reported = engine::sim_agents::round(&ctx, now, later).await;
    assert_eq!(reported, 1, "only the paused node's agent is still played");
    assert_eq!(seen(0).await.heartbeats.len(), 1);

    // Heartbeats older than [serve] heartbeat_retention (7d) go, the recent ones stay.
    engine::sim_agents::prune(&store, &cfg, now + chrono::Duration::days(7)).await;
    assert_eq!(
        seen(2).await.heartbeats.len(),
        2,
        "exactly a week old: kept"
    );
    engine::sim_agents::prune(&store, &cfg, later + chrono::Duration::days(7)).await;
    assert_eq!(seen(2).await.heartbeats.len(), 1, "the older one went");
    engine::sim_agents::prune(&store, &cfg, later + chrono::Duration::days(8)).await;
    for i in 0..3 {
        assert!(seen(i).await.heartbeats.is_empty());
    }
}
