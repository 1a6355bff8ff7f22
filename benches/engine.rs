//! `cargo bench --bench engine`: 1,000 requests through all four steps on SQLite with a
//! zero-delay simulated cloud, against a bare loop of one-row INSERT + COMMIT on the same
//! disk with the same durability settings. Prints its figures, then one JSON line.

use mailfleet::clock::{SharedClock, SystemClock};
use mailfleet::config;
use mailfleet::engine::{self, commands::CreateRequest, Command, Ctx};
use mailfleet::providers::Registry;
use mailfleet::store::{RequestFilter, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUESTS: usize = 1000;
const BARE_COMMITS: usize = 3000;

/// The workload, not tuning: one tenant whose limit, quota and cluster are large enough for
/// all 1,000 requests, on a simulated cloud that answers at once. The engine runs on its
/// default settings (`max_concurrent`, `tick`, `poll_interval`, ...).
const BENCH_CONFIG: &str = r#"
[engine]
max_in_flight_per_tenant = 1000
[providers.sim]
delay_ms = [0, 0]
boot_ms = [0, 0]
ip_pools = ["100.64.0.0/16"]
[[clusters]]
name = "bench"
provider = "sim"
region = "dallas"
default = true
capacity = { cpu = 100000, memory_gb = 100000, storage_gb = 10000000, vm_slots = 100000 }
[[tenants]]
name = "acme"
quota = { nodes = 100000, cpu = 100000, memory_gb = 100000, storage_gb = 10000000 }
"#;

/// One-row INSERT + COMMIT in a loop, with the journal mode and synchronous setting the
/// store is configured with, through the same SQLite library. (With "full" the store's
/// writer leaves the sync to its syncer thread, which acknowledges nothing before it is
/// durable: the same promise as SQLite's FULL, which this loop uses.)
fn bare_commit_rate(dir: &std::path::Path, sync: config::Synchronous) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("bare.db")).expect("bare db");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    let sync = match sync {
        config::Synchronous::Full => "FULL",
        config::Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).expect("sync");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .expect("table");
    let start = Instant::now();
    for i in 0..BARE_COMMITS {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        conn.prepare_cached("INSERT INTO t (v) VALUES (?)")
            .and_then(|mut s| s.execute([format!("row {i}")]))
            .expect("insert");
        conn.execute_batch("COMMIT").expect("commit");
    }
    BARE_COMMITS as f64 / start.elapsed().as_secs_f64()
}

/// User plus system CPU time this process has used so far, on all its threads.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    // Keys sealed in the database, as a deployment should run (`[dkim] key_env`): without
    // it each certificate's key is a file of its own, written and synced, which measures
    // the disk more than the engine.
    if std::env::var("MAILFLEET_DKIM_KEY").is_err() {
        use base64::Engine;
        let key: [u8; 32] = rand::random();
        std::env::set_var(
            "MAILFLEET_DKIM_KEY",
            base64::engine::general_purpose::STANDARD.encode(key),
        );
    }
    let dir =
        tempfile::tempdir_in(std::env::var("MAILFLEET_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("tmp");
    let cfg = config::from_layers(&[
        ("(built-in defaults)".into(), config::DEFAULT_TOML.into()),
        ("bench".into(), BENCH_CONFIG.into()),
    ])
    .expect("bench config");
    let store = Store::open(&dir.path().join("engine.db"), &cfg.store)
        .await
        .expect("store");
    let clock: SharedClock = Arc::new(SystemClock);
    store
        .sync_catalog(&cfg, clock.now())
        .await
        .expect("catalog");
    let providers = Registry::build(&cfg, &store, &clock).expect("providers");
    let ctx = Ctx::new(
        store.clone(),
        providers,
        clock.clone(),
        Arc::new(cfg.clone()),
    );

    // A domain's first node makes its DKIM key (RSA 2048): a one-off per domain, timed on
    // its own so that the pipelines measure the steady state.
    let keyed = Instant::now();
    mailfleet::dkim::ensure_keys(&store, &cfg, clock.now(), "fleet.example.net")
        .await
        .expect("the domain's key");
    let key_secs = keyed.elapsed().as_secs_f64();

    let created = Instant::now();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let ctx = ctx.clone();
        creates.spawn(async move {
            let cmd = Command::Create(CreateRequest {
                tenant: "acme".into(),
                region: "dallas".into(),
                plan: "ssd-1".into(),
                label: format!("bench-{i}"),
                domain: None,
                depends_on: vec![],
            });
            engine::commands::execute(&ctx, "bench", cmd)
                .await
                .expect("create");
        });
    }
    while creates.join_next().await.is_some() {}
    let create_secs = created.elapsed().as_secs_f64();

    let started = Instant::now();
    let cpu_before = cpu_secs();
    let reads_before = store.reads();
    engine::run_until_idle(ctx.clone()).await;
    let pipeline_secs = started.elapsed().as_secs_f64();
    let pipeline_cpu = cpu_secs() - cpu_before;
    let rows = store
        .list_requests(&RequestFilter::default())
        .await
        .expect("list");
    let reads = store.reads() - reads_before;
    let st = store.writer_stats();
    let writer_cpu = st.cpu_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    let (batches, jobs, busy, commit) = (
        st.batches.load(std::sync::atomic::Ordering::Relaxed),
        st.jobs.load(std::sync::atomic::Ordering::Relaxed),
        st.busy_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
        st.commit_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
    );
    let completed = rows.iter().filter(|r| r.state == "completed").count();
    assert_eq!(completed, REQUESTS, "every pipeline completed");
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let bare = bare_commit_rate(dir.path(), cfg.store.synchronous);
    let pipelines_per_sec = REQUESTS as f64 / pipeline_secs;
    let ratio = pipelines_per_sec / bare;
    let target = 1.0 / 8.0;
    println!(
        "engine bench: {REQUESTS} requests, SQLite synchronous={:?}, zero-delay sim cloud, simulated DNS and CA, keys sealed",
        cfg.store.synchronous
    );
    println!(
        "  create:         {:>9.1} requests/s ({create_secs:.2} s)",
        REQUESTS as f64 / create_secs
    );
    println!("  domain key:     {key_secs:>9.2} s (RSA 2048, once per domain)");
    println!("  full pipelines: {pipelines_per_sec:>9.1} /s ({pipeline_secs:.2} s for all 4 steps of {REQUESTS})");
    println!(
        "  cpu:            {:>9.2} ms per pipeline ({pipeline_cpu:.2} s user+sys on all threads)",
        pipeline_cpu * 1000.0 / REQUESTS as f64
    );
    println!("  writer:         {batches} transactions for {jobs} writes ({:.1} writes each), busy {busy:.2} s (on a CPU {writer_cpu:.2} s), of which committing {commit:.2} s", jobs as f64 / batches.max(1) as f64);
    println!(
        "  reads:          {reads} ({:.1} per pipeline)",
        reads as f64 / REQUESTS as f64
    );
    println!("  bare commits:   {bare:>9.1} /s (one-row INSERT + COMMIT, same disk and settings)");
    println!(
        "  ratio:          {ratio:>9.3} (target >= {target:.3}: {})",
        if ratio >= target { "met" } else { "NOT met" }
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "engine", "requests": REQUESTS, "pipelines_per_sec": pipelines_per_sec,
            "bare_commits_per_sec": bare, "ratio": ratio, "target_ratio": target, "target_met": ratio >= target,
            "create_per_sec": REQUESTS as f64 / create_secs,
            "domain_key_secs": key_secs, "cpu_ms_per_pipeline": pipeline_cpu * 1000.0 / REQUESTS as f64,
            "writes_per_request_incl_create": jobs as f64 / REQUESTS as f64, "writer_busy_secs": busy, "writer_cpu_secs": writer_cpu,
            "reads_per_pipeline": reads as f64 / REQUESTS as f64,
        })
    );
}
