//! Chaos: 200 requests, 30% of provider calls failing, engines killed and restarted at
//! random. Nothing is lost, nothing is orphaned, and quota and capacity come back exactly.

mod support;

use mailfleet::engine::{self, reconcile::reconcile};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_requests_through_failures_and_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let overrides = FAST
        .replace(
            "[providers.sim]",
            "[providers.sim]\nfailure_rate = 0.3\nseed = 3",
        )
        .replace(
            "[engine]",
            "[engine]\nmax_in_flight_per_tenant = 20\nmax_concurrent = 64",
        );
    let cfg = config(&overrides);
    let path = db_path(&dir);
    {
        let store = open(&path, &cfg).await;
        let ctx = sim_ctx(&store, &cfg, system_clock());
        for i in 0..200 {
            let tenant = ["acme", "globex", "initech"][i % 3];
            let region = ["dallas", "seattle", "amsterdam"][i % 3];
            create(&ctx, tenant, region, "ssd-1", &format!("c{i}")).await;
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut restarts = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let store = open(&path, &cfg).await;
        let rows = all_requests(&store).await;
        if all_terminal_or_completed(&rows) && rows.iter().all(|r| !r.needs_attention) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chaos run did not settle"
        );
        let handle = engine::spawn(sim_ctx(&store, &cfg, system_clock()));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..900))).await;
        if rng.gen_bool(0.7) {
            handle.kill();
        } else {
            handle.shutdown().await;
        }
        restarts += 1;
    }
    assert!(
        restarts >= 3,
        "the engine was restarted mid-run ({restarts} times)"
    );

    let store = open(&path, &cfg).await;
    let rows = all_requests(&store).await;
    assert_eq!(rows.len(), 200, "no request lost");
    let completed: Vec<_> = rows.iter().filter(|r| r.state == "completed").collect();
    let rolled_back = rows.iter().filter(|r| r.state == "rolled_back").count();
    assert_eq!(completed.len() + rolled_back, 200);
    assert!(rolled_back > 0, "30% failures made some requests roll back");
    for r in &rows {
        let d = store.request_detail(&r.id).await.expect("detail");
        if r.state == "rolled_back" {
            assert!(
                d.resources.iter().all(|x| x.status == "released"),
                "{} leaks {:?}",
                r.label,
                d.resources
            );
        }
    }
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let report = reconcile(&ctx).await.expect("reconcile");
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        store.sim_list_live().await.expect("inventory").len(),
        completed.len()
    );
    // Quota in use is exactly what the completed requests hold.
    let usage = store.tenant_usage().await.expect("usage");
    for tenant in ["acme", "globex", "initech"] {
        let want = completed.iter().filter(|r| r.tenant == tenant).count() as i64;
        assert_eq!(
            usage.get(tenant).map(|u| u.nodes).unwrap_or(0),
            want,
            "{tenant} quota"
        );
        let cpu: i64 = completed
            .iter()
            .filter(|r| r.tenant == tenant)
            .map(|r| r.cpu)
            .sum();
        assert_eq!(
            usage.get(tenant).map(|u| u.cpu).unwrap_or(0),
            cpu,
            "{tenant} cpu"
        );
    }
}
