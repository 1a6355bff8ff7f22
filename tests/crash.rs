//! Crash safety: an engine killed at any moment loses nothing and leaks nothing. The next
//! engine on the same database waits out the dead one's leases and resumes its steps; the
//! request id as idempotency key keeps a retried create from making a second instance.

mod support;

use mailfleet::engine::{self, reconcile::reconcile};
use mailfleet::store::Store;
use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// Everything a finished run must satisfy: every request completed or rolled back, every
/// rolled-back request holds nothing, every completed one holds exactly one of each
/// resource, and the provider's inventory matches the store.
async fn assert_nothing_lost_or_leaked(
    store: &Store,
    cfg: &mailfleet::config::Config,
    expected: usize,
) {
    let rows = all_requests(store).await;
    assert_eq!(rows.len(), expected, "no request lost");
    let mut completed = 0;
    for r in &rows {
        let d = store.request_detail(&r.id).await.expect("detail");
        match r.state.as_str() {
            "completed" => {
                completed += 1;
                let mut kinds: Vec<&str> = d
                    .resources
                    .iter()
                    .filter(|x| x.status == "allocated")
                    .map(|x| x.kind.as_str())
                    .collect();
                kinds.sort_unstable();
                assert_eq!(kinds, COMPLETED_KINDS, "{} holds one of each", r.label);
                assert!(
                    d.records.iter().all(|x| x.status == "verified"),
                    "{}: {:?}",
                    r.label,
                    d.records
                );
            }
            "rolled_back" => {
                assert!(
                    d.resources.iter().all(|x| x.status == "released"),
                    "{} rolled back but holds {:?}",
                    r.label,
                    d.resources
                );
                assert!(
                    d.records.iter().all(|x| x.status == "removed"),
                    "{} rolled back but its records stand: {:?}",
                    r.label,
                    d.records
                );
            }
            other => panic!("request {} ended {other}", r.label),
        }
    }
    let ctx = sim_ctx(store, cfg, system_clock());
    let report = reconcile(&ctx).await.expect("reconcile");
    assert!(report.orphans.is_empty(), "orphans: {:?}", report.orphans);
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert_eq!(
        store.sim_list_live().await.expect("inventory").len(),
        completed,
        "one instance per completed request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_dropped_mid_step_is_resumed_by_the_next_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&FAST.replace("boot_ms = [5, 40]", "boot_ms = [100, 300]"));
    let first = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&first, &cfg, system_clock());
    for i in 0..20 {
        let tenant = ["acme", "globex", "initech"][i % 3];
        create(&ctx, tenant, "dallas", "ssd-1", &format!("node-{i}")).await;
    }
    let handle = engine::spawn(ctx);
    wait_for(&first, Duration::from_secs(20), "steps under way", |rows| {
        rows.iter()
            .filter(|r| r.lease_owner.is_some() && r.state != "queued")
            .count()
            >= 5
    })
    .await;
    handle.kill();
    let held = all_requests(&first)
        .await
        .iter()
        .filter(|r| r.lease_owner.is_some())
        .count();
    assert!(held > 0, "the kill left leases behind, as a crash would");
    drop(first);

    // A new engine, with its own connection, as a new process would have.
    let second = open(&db_path(&dir), &cfg).await;
    engine::run_until_idle(sim_ctx(&second, &cfg, system_clock())).await;
    let rows = all_requests(&second).await;
    assert!(
        rows.iter().all(|r| r.state == "completed"),
        "{:?}",
        rows.iter().map(|r| &r.state).collect::<Vec<_>>()
    );
    assert_nothing_lost_or_leaked(&second, &cfg, 20).await;
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailfleet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_worker_process_at_random_moments_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let overrides = format!(
        "{}\n",
        FAST.replace("failure_rate", "x").replace(
            "[providers.sim]",
            "[providers.sim]\nfailure_rate = 0.1\nseed = 7"
        )
    )
    .replace("boot_ms = [5, 40]", "boot_ms = [50, 200]");
    let cfg_path = dir.path().join("test.toml");
    std::fs::write(&cfg_path, &overrides).expect("config");
    let db = db_path(&dir);
    let run = |args: &[&str]| {
        let out = bin()
            .args([
                "--db",
                db.to_str().expect("utf-8"),
                "--config",
                cfg_path.to_str().expect("utf-8"),
            ])
            .args(args)
            .env("XDG_STATE_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("MAILFLEET_CONFIG")
            .output()
            .expect("run mailfleet");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init"]);
    for i in 0..24 {
        let tenant = ["acme", "globex", "initech"][i % 3];
        run(&[
            "request",
            "create",
            "--tenant",
            tenant,
            "--region",
            "seattle",
            "--plan",
            "ssd-2",
            "--label",
            &format!("n{i}"),
        ]);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..6 {
        let mut child = bin()
            .args([
                "--db",
                db.to_str().expect("utf-8"),
                "--config",
                cfg_path.to_str().expect("utf-8"),
                "work",
            ])
            .env("XDG_STATE_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("MAILFLEET_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..700))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    run(&["work", "--until-idle"]);

    let cfg = config(&overrides);
    let store = open(&db, &cfg).await;
    let rows = all_requests(&store).await;
    assert!(
        rows.iter().any(|r| r.state == "completed"),
        "some work got done"
    );
    assert_nothing_lost_or_leaked(&store, &cfg, 24).await;
}
