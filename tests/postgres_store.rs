//! What only PostgreSQL does for the store (issue 17): consoles hear other processes'
//! commits through LISTEN/NOTIFY, a connection the server closed is made again, the actor is
//! the database role, and a password never rides in the URL. Each test has a database of
//! its own on a real server (see `support::pg`).

mod support;

use mailfleet::store::{Store, StoreError};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::*;

/// A fresh database's URL, or `None` where no server can be had (the tests then say so
/// and stop, unless MAILFLEET_REQUIRE_SERVICES=1, when `pg_database` fails instead).
fn database() -> Option<PathBuf> {
    postgres_available().then(|| PathBuf::from(pg_database()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_hears_another_process_commit_through_listen_notify() {
    let Some(db) = database() else { return };
    let cfg = config(FAST);
    let writer = open(&db, &cfg).await;
    let console = Store::open_read_only(&db, &cfg.store).await.expect("open");
    let mut probe = console.version_probe();
    assert!(
        probe.changed(&console).await.expect("probe"),
        "the first look"
    );
    // Nothing commits: the probe stays quiet (the listener is up once it has settled).
    let mut quiet = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !probe.changed(&console).await.expect("probe") {
            quiet = true;
            break;
        }
    }
    assert!(
        quiet,
        "the probe kept saying changed with nothing committed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!probe.changed(&console).await.expect("probe"));
    // Another store (another process, as far as the database knows) commits.
    let ctx = sim_ctx(&writer, &cfg, system_clock());
    create(&ctx, "acme", "dallas", "ssd-1", "heard").await;
    let mut heard = false;
    for _ in 0..50 {
        if probe.changed(&console).await.expect("probe") {
            heard = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(heard, "the commit was not heard");
    // The console's incremental read sees the new request.
    let rows = console
        .list_requests(&Default::default())
        .await
        .expect("read");
    assert_eq!(rows.len(), 1);
}

/// Every connection of the store's is closed by the server (as a restart or a failover
/// does): the next write connects again and lands once; reads come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closed_are_made_again_and_nothing_is_doubled() {
    let Some(db) = database() else { return };
    let cfg = config(FAST);
    let store = open(&db, &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    create(&ctx, "acme", "dallas", "ssd-1", "before").await;
    let name = db
        .to_string_lossy()
        .rsplit('/')
        .next()
        .expect("name")
        .to_owned();
    let killed = raw_count(
        &db,
        &format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ),
    );
    assert!(killed >= 1, "the store's connections were there to close");
    // The writer finds its connection gone when it begins, and makes it again.
    create(&ctx, "acme", "dallas", "ssd-1", "after").await;
    // A pooled reader finds out on its first read; the read after connects again.
    let mut listed = None;
    for _ in 0..3 {
        match store.list_requests(&Default::default()).await {
            Ok(rows) => {
                listed = Some(rows);
                break;
            }
            Err(StoreError::Sql(e)) => eprintln!("a read on a closed connection: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
    let rows = listed.expect("reads come back");
    let mut labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    labels.sort();
    assert_eq!(labels, ["after", "before"], "each request once");
    assert_eq!(
        raw_count(&db, "SELECT COUNT(*) FROM transitions"),
        2,
        "one transition per request, none doubled"
    );
}

fn mailfleet(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tmp");
    Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .args(["--db", &db.to_string_lossy()])
        .args(args)
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path())
        .env_remove("MAILFLEET_DB")
        .env_remove("PGPASSWORD")
        .output()
        .expect("run mailfleet")
}

/// On a shared PostgreSQL the one who acts is the role the server authenticated, whoever
/// runs the command on whichever host; `--as` is a claim the config must allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_on_postgres_is_the_database_role() {
    let Some(db) = database() else { return };
    let out = mailfleet(
        &db,
        &[
            "request", "create", "--tenant", "acme", "--region", "dallas", "--plan", "ssd-1",
            "--label", "whose",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let role = raw_count(
        &db,
        "SELECT COUNT(*) FROM pg_roles WHERE rolname = session_user",
    );
    assert_eq!(role, 1);
    let by_role = raw_count(
        &db,
        "SELECT COUNT(*) FROM audit WHERE action = 'request.create' AND actor = session_user",
    );
    assert_eq!(by_role, 1, "the audit names the database role");
    let out = mailfleet(
        &db,
        &[
            "--as", "mallory", "request", "create", "--tenant", "acme", "--region", "dallas",
            "--plan", "ssd-1", "--label", "claimed",
        ],
    );
    assert!(!out.status.success(), "--as without leave is refused");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--as") && said.contains("impersonators"),
        "{said}"
    );
    assert_eq!(
        raw_count(&db, "SELECT COUNT(*) FROM requests WHERE label = 'claimed'"),
        0
    );
}

#[tokio::test]
async fn a_password_in_the_url_is_refused_without_being_shown() {
    let cfg = config("");
    let err = Store::open(
        std::path::Path::new("postgres://alice:hunter2@127.0.0.1:1/fleet"),
        &cfg.store,
    )
    .await
    .expect_err("refused");
    let said = err.to_string();
    assert!(said.contains("PGPASSWORD"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    let err = Store::open(std::path::Path::new("postgres://127.0.0.1:1"), &cfg.store)
        .await
        .expect_err("no database named");
    assert!(err.to_string().contains("names no database"), "{err}");
}

/// `db migrate-to`: a SQLite history (requests carried out on the simulated cloud, with
/// their nodes, steps, events and key files) copied into an empty PostgreSQL database, where
/// the engine carries on; a second copy into the now full database is refused and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_history_moves_to_postgres_whole_and_a_full_target_is_refused() {
    let Some(url) = database() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("history.db");
    let cfg = config(FAST);
    let lite = open(&file, &cfg).await;
    let ctx = sim_ctx(&lite, &cfg, system_clock());
    for i in 0..4 {
        create(
            &ctx,
            ["acme", "globex"][i % 2],
            "dallas",
            "ssd-1",
            &format!("m{i}"),
        )
        .await;
    }
    mailfleet::engine::run_until_idle(ctx.clone()).await;
    let before = all_requests(&lite).await;
    assert!(
        before.iter().any(|r| r.state == "completed"),
        "work was done"
    );
    let events = lite
        .list_events(&mailfleet::store::EventFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .expect("events");
    let keys = lite.dkim_keys().await.expect("keys");
    lite.settled().await;
    drop((ctx, lite));

    let migrate = |db: &std::path::Path| {
        let home = tempfile::tempdir().expect("home");
        Command::new(env!("CARGO_BIN_EXE_mailfleet"))
            .args(["--db", &file.to_string_lossy(), "db", "migrate-to"])
            .arg(db)
            .arg("--json")
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_STATE_HOME", home.path())
            .env_remove("MAILFLEET_DB")
            .env_remove("MAILFLEET_CONFIG")
            .output()
            .expect("run")
    };
    let out = migrate(&url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let copied = |t: &str| {
        said["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|x| x["table"] == t)
            .map(|x| x["rows"].as_u64().expect("rows"))
    };
    assert_eq!(copied("requests"), Some(before.len() as u64));
    assert_eq!(copied("events"), Some(events.len() as u64));

    let pg = open(&url, &cfg).await;
    let after = all_requests(&pg).await;
    let view = |rows: &[mailfleet::store::RequestRow]| {
        let mut v: Vec<(String, String, i64, String)> = rows
            .iter()
            .map(|r| (r.id.clone(), r.state.clone(), r.fence, r.updated_at.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(view(&after), view(&before), "every request as it was");
    let done = before
        .iter()
        .find(|r| r.state == "completed")
        .expect("a completed one");
    let d = pg.request_detail(&done.id).await.expect("detail");
    assert!(d.node.is_some() && !d.resources.is_empty() && !d.transitions.is_empty());
    // Key files recorded relative to the SQLite file's folder are found from PostgreSQL.
    let moved = pg.dkim_keys().await.expect("keys");
    assert_eq!(moved.len(), keys.len());
    for k in moved.iter().filter_map(|k| k.key_file.as_deref()) {
        assert!(
            pg.key_path(k).exists(),
            "{k} does not name the key file any more"
        );
    }
    // The engine carries on there: new rows take numbers after the copied ones.
    let ctx = sim_ctx(&pg, &cfg, system_clock());
    create(&ctx, "acme", "dallas", "ssd-1", "after-move").await;
    mailfleet::engine::run_until_idle(ctx.clone()).await;
    assert_eq!(all_requests(&pg).await.len(), before.len() + 1);

    // A second copy into the now full database is refused, and changes nothing.
    let rows = raw_count(&url, "SELECT COUNT(*) FROM requests");
    let out = migrate(&url);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("not empty"), "{why}");
    assert_eq!(raw_count(&url, "SELECT COUNT(*) FROM requests"), rows);
}
