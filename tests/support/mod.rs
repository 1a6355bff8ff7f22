//! Shared test harness: temp databases, fast configs, engines on the simulated cloud, and
//! helpers that wait for the store to reach a condition.
#![allow(dead_code)]

use mailfleet::clock::{SharedClock, SystemClock};
use mailfleet::config::{self, Config};
use mailfleet::engine::commands::CreateRequest;
use mailfleet::engine::{self, Command, Ctx, Outcome};
use mailfleet::providers::sim::SimProvider;
use mailfleet::providers::{Provider, Registry};
use mailfleet::store::{RequestFilter, RequestRow, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Engine settings that make the simulated cloud quick, for tests in real time.
pub const FAST: &str = r#"
[engine]
tick = "20ms"
retry_backoff = ["10ms", "20ms", "40ms"]
retry_cap = "100ms"
poll_interval = "10ms"
lease_ttl = "600ms"
shutdown_grace = "2s"
[providers.sim]
delay_ms = [0, 3]
boot_ms = [5, 40]
[dns]
propagation_interval = "20ms"
propagation_timeout = "5s"
"#;

pub fn config(overrides: &str) -> Config {
    config::from_layers(&[
        (
            "(built-in defaults)".to_string(),
            config::DEFAULT_TOML.to_string(),
        ),
        // The engine starts the blocklist monitor and the sim nodes' agents
        // (`engine::spawn`); tests that want them turn them back on (the monitor with a
        // resolver of their own). A provider's circuit, opened by a
        // flaky simulated cloud, is probed again in moments rather than 30 s.
        (
            "(tests)".to_string(),
            "[blocklists]\nmonitor = false\n[providers.limits]\nbreaker_cooldown = \"50ms\"\n\
             [providers.sim]\nagents = false\n"
                .to_string(),
        ),
        ("(postgres tests)".to_string(), pg_layer()),
        ("test".to_string(), overrides.to_string()),
    ])
    .expect("test config is valid")
}

#[path = "postgres.rs"]
pub mod pg;

/// Whether this run's store tests go to PostgreSQL (`MAILFLEET_TEST_BACKEND=postgres`)
/// rather than to SQLite files.
pub fn on_postgres() -> bool {
    std::env::var("MAILFLEET_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// The test's database: an SQLite file in `dir`, or, on PostgreSQL, a new database of the
/// test's own (its URL), dropped when the test process ends.
pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    if on_postgres() {
        // One database per test directory: a test that opens its store twice (two
        // engines, a restart) opens the same one.
        use std::collections::HashMap;
        use std::sync::Mutex;
        static BY_DIR: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
        let mut by_dir = BY_DIR.lock().unwrap_or_else(|p| p.into_inner());
        let url = by_dir
            .get_or_insert_with(HashMap::new)
            .entry(dir.path().to_path_buf())
            .or_insert_with(pg_database)
            .clone();
        return PathBuf::from(url);
    }
    dir.path().join("mailfleet.db")
}

/// On PostgreSQL, key files go to a folder of this test process's own (on SQLite they sit
/// beside each test's database file).
fn pg_layer() -> String {
    if !on_postgres() {
        return String::new();
    }
    format!(
        "[store]\nkey_dir = {:?}\n",
        pg_key_dir().display().to_string()
    )
}

fn pg_key_dir() -> PathBuf {
    std::env::temp_dir().join(format!("mailfleet-test-keys-{}", std::process::id()))
}

/// Runs `sql` on the test's database directly, behind the store's back (what an older
/// mailfleet, or a person with a SQL shell, could have left): SQLite or PostgreSQL.
pub fn raw_execute(db: &Path, sql: &str) {
    let (db, sql) = (db.to_string_lossy().into_owned(), sql.to_owned());
    // The synchronous PostgreSQL client may not run on a runtime's thread.
    std::thread::spawn(move || {
        if db.starts_with("postgres://") {
            let mut c = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
            c.batch_execute(&sql).expect("raw sql");
        } else {
            let c = rusqlite::Connection::open(&db).expect("open");
            c.execute_batch(&sql).expect("raw sql");
        }
    })
    .join()
    .expect("no panic");
}

/// One integer `sql` answers, read from the test's database directly: SQLite or
/// PostgreSQL.
pub fn raw_count(db: &Path, sql: &str) -> i64 {
    let (db, sql) = (db.to_string_lossy().into_owned(), sql.to_owned());
    std::thread::spawn(move || {
        if db.starts_with("postgres://") {
            let mut c = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
            c.query_one(&sql, &[]).expect("raw sql").get::<_, i64>(0)
        } else {
            let c = rusqlite::Connection::open(&db).expect("open");
            c.query_row(&sql, [], |r| r.get(0)).expect("raw sql")
        }
    })
    .join()
    .expect("no panic")
}

/// Whether a PostgreSQL server can be had for a test that needs one whatever the backend;
/// `false` (and a word on stderr) where there is none and no initdb to start one. Under
/// MAILFLEET_REQUIRE_SERVICES=1 a missing server fails instead (see `pg::PgServer`).
pub fn postgres_available() -> bool {
    let found = std::thread::spawn(pg::PgServer::shared)
        .join()
        .expect("no panic")
        .expect("a PostgreSQL server");
    if found.is_none() {
        eprintln!("no PostgreSQL server and no initdb: skipped");
    }
    found.is_some()
}

/// A new database on the test PostgreSQL server (see `pg::PgServer::shared`), dropped at
/// exit.
pub fn pg_database() -> String {
    use std::sync::{Mutex, Once};
    static MADE: Mutex<Vec<pg::TestDb>> = Mutex::new(Vec::new());
    static AT_EXIT: Once = Once::new();
    extern "C" fn drop_all() {
        let made = std::mem::take(&mut *MADE.lock().unwrap_or_else(|p| p.into_inner()));
        drop(made);
        let _ = std::fs::remove_dir_all(pg_key_dir());
    }
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(drop_all) };
    });
    // The synchronous client may not run on a runtime's thread, where most tests ask.
    let db = std::thread::spawn(pg::TestDb::new)
        .join()
        .expect("no panic")
        .expect("a PostgreSQL server for the tests")
        .expect(
            "MAILFLEET_TEST_BACKEND=postgres needs a PostgreSQL server (or initdb to start one)",
        );
    let url = db.url();
    MADE.lock().unwrap_or_else(|p| p.into_inner()).push(db);
    url
}

pub async fn open(path: &Path, cfg: &Config) -> Store {
    let store = Store::open(path, &cfg.store).await.expect("open store");
    store
        .sync_catalog(cfg, chrono::Utc::now())
        .await
        .expect("catalog");
    store
}

/// The resources a completed request holds, one of each, in sorted order.
pub const COMPLETED_KINDS: [&str; 9] = [
    "capacity",
    "certificate",
    "dns",
    "firewall",
    "instance",
    "ip",
    "node",
    "quota",
    "rdns",
];

pub fn sim_ctx(store: &Store, cfg: &Config, clock: SharedClock) -> Arc<Ctx> {
    let providers = Registry::build(cfg, store, &clock).expect("providers");
    Ctx::new(store.clone(), providers, clock, Arc::new(cfg.clone()))
}

/// Every cluster on `provider`, its machines reached through the simulated cloud.
pub fn ctx_with(
    store: &Store,
    cfg: &Config,
    clock: SharedClock,
    provider: Arc<dyn Provider>,
) -> Arc<Ctx> {
    let machines = Arc::new(SimProvider::new(
        store.clone(),
        cfg.providers.sim.clone(),
        clock.clone(),
    ));
    let providers = Registry::uniform(cfg, provider, machines);
    Ctx::new(store.clone(), providers, clock, Arc::new(cfg.clone()))
}

/// Wall time that moves with tokio's clock, for tests on paused time.
pub fn tokio_clock() -> SharedClock {
    Arc::new(mailfleet::clock::TokioClock::new(chrono::Utc::now()))
}

pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

pub async fn create(
    ctx: &Arc<Ctx>,
    tenant: &str,
    region: &str,
    plan: &str,
    label: &str,
) -> RequestRow {
    let cmd = Command::Create(CreateRequest {
        tenant: tenant.into(),
        region: region.into(),
        plan: plan.into(),
        label: label.into(),
        domain: None,
        depends_on: vec![],
    });
    match engine::commands::execute(ctx, "tester", cmd)
        .await
        .expect("create")
    {
        Outcome::Created(r) => *r,
        other => panic!("unexpected outcome {other:?}"),
    }
}

pub async fn all_requests(store: &Store) -> Vec<RequestRow> {
    store
        .list_requests(&RequestFilter::default())
        .await
        .expect("list")
}

/// Polls the store until `done` holds for the list of requests, or panics after `limit`.
pub async fn wait_for(
    store: &Store,
    limit: Duration,
    what: &str,
    done: impl Fn(&[RequestRow]) -> bool,
) -> Vec<RequestRow> {
    let start = tokio::time::Instant::now();
    loop {
        let rows = all_requests(store).await;
        if done(&rows) {
            return rows;
        }
        if start.elapsed() > limit {
            let states: Vec<String> = rows
                .iter()
                .map(|r| format!("{} {}", r.label, r.state))
                .collect();
            panic!("timed out waiting for {what}; states: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn all_terminal_or_completed(rows: &[RequestRow]) -> bool {
    rows.iter().all(|r| {
        matches!(
            r.state.as_str(),
            "completed" | "rolled_back" | "rejected" | "deprovisioned"
        )
    })
}

/// Creates an acme order in dallas for `label` in `domain`; returns its id.
pub async fn create_in(ctx: &Arc<Ctx>, label: &str, domain: &str) -> String {
    let cmd = Command::Create(CreateRequest {
        tenant: "acme".into(),
        region: "dallas".into(),
        plan: "ssd-1".into(),
        label: label.into(),
        domain: Some(domain.into()),
        depends_on: vec![],
    });
    match engine::commands::execute(ctx, "tester", cmd)
        .await
        .expect("create")
    {
        Outcome::Created(r) => r.id,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// Asks, as "tester", for a request to be deprovisioned (the engine does it).
pub async fn ask_deprovision(ctx: &Arc<Ctx>, id: &str) {
    engine::commands::execute(
        ctx,
        "tester",
        Command::Deprovision {
            id: id.to_string(),
            reason: Some("test".into()),
        },
    )
    .await
    .expect("deprovision");
}
