//! The bench's databases and its writer.
//!
//! Each database is a demo fleet made by `mailfleet::demo::generate` (what `mailfleet demo`
//! makes), with the settings `mailfleet::demo::config_for` gives a fleet of its size (the
//! ones `mailfleet demo` runs its console with) written to a file beside it, then settled by
//! `mailfleet work --until-idle` (with the simulated cloud's delays cut short, see
//! `write_settle_config`) so no work is due when the console opens it.
//!
//! The writer is another client of the same database: a thread with its own `Store` that
//! pauses and resumes nodes through the store's public methods (what an operator's `node
//! pause` and `node resume` do), at an even rate. Each is one committed transaction that
//! changes a row the Fleet view shows (its STATUS), with its transition and outbox event.

use mailfleet::config::{self, Config};
use mailfleet::demo::DemoSpec;
use mailfleet::store::{NodeFilter, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A database made for the bench, with the settings file the console is opened with.
#[derive(Debug, Clone)]
pub struct Db {
    pub path: PathBuf,
    pub config: PathBuf,
    pub nodes: usize,
    pub events: u64,
}

fn defaults() -> Config {
    config::from_layers(&[("(built-in defaults)".into(), config::DEFAULT_TOML.into())])
        .expect("built-in config")
}

/// The settings a demo of `nodes` nodes runs with, written to `dir/NAME.toml`.
fn write_config(dir: &Path, name: &str, nodes: usize) -> (PathBuf, Config) {
    let spec = DemoSpec { nodes, seed: 7 };
    let cfg = mailfleet::demo::config_for(&defaults(), &spec);
    let path = dir.join(format!("{name}.toml"));
    let text = toml::to_string(&cfg).expect("settings as TOML");
    std::fs::write(&path, text).expect("write the settings");
    (path, cfg)
}

/// The settings the settling run uses: the fleet's own, with the simulated cloud's delays
/// and the retry backoff cut short and more pipelines at once, so the demo's requests in
/// flight finish in seconds rather than the many minutes their realistic timings take. The
/// catalog (plans, clusters, tenants, quotas) is the same, so the database ends as the
/// fleet's own settings would leave it.
fn write_settle_config(dir: &Path, name: &str, cfg: &Config) -> PathBuf {
    let mut fast = cfg.clone();
    fast.engine.retry_backoff = vec![Duration::from_millis(20)];
    fast.engine.poll_interval = Duration::from_millis(20);
    fast.engine.max_in_flight_per_tenant = fast.engine.max_in_flight_per_tenant.max(32);
    fast.providers.sim.delay_ms = [0, 5];
    fast.providers.sim.boot_ms = [20, 60];
    let path = dir.join(format!("{name}-settle.toml"));
    let text = toml::to_string(&fast).expect("settings as TOML");
    std::fs::write(&path, text).expect("write the settings");
    path
}

/// An initialised database with nothing in it (`mailfleet init`).
pub fn empty(dir: &Path) -> Db {
    let (config, _) = write_config(dir, "empty", 1);
    let path = dir.join("empty.db");
    run_cli(&path, &config, dir, &["init"]);
    Db {
        path,
        config,
        nodes: 0,
        events: 0,
    }
}

/// A demo fleet being settled by `mailfleet work --until-idle` (see [`Making::finish`]).
pub struct Making {
    db: Db,
    cfg: Config,
    name: String,
    made: Option<(Duration, usize, usize)>,
    /// The settling run: its output and how long it took.
    settle: std::thread::JoinHandle<(std::io::Result<std::process::Output>, Duration)>,
}

/// Makes a demo fleet of `nodes` nodes (unless `dir/NAME.db` exists: a kept database is
/// reused) and starts settling it; several settle at once.
pub fn demo(rt: &tokio::runtime::Runtime, dir: &Path, name: &str, nodes: usize) -> Making {
    let (config, cfg) = write_config(dir, name, nodes);
    let path = dir.join(format!("{name}.db"));
    let t = Instant::now();
    let made = (!path.exists()).then(|| {
        let summary = rt.block_on(async {
            let store = Store::open(&path, &cfg.store).await.expect("open store");
            store
                .sync_catalog(&cfg, chrono::Utc::now())
                .await
                .expect("catalog");
            let spec = DemoSpec { nodes, seed: 7 };
            mailfleet::demo::generate(&store, &cfg, &spec, chrono::Utc::now())
                .await
                .expect("demo fleet")
        });
        (t.elapsed(), summary.nodes, summary.requests)
    });
    let settle_config = write_settle_config(dir, name, &cfg);
    let mut settle = cli(&path, &settle_config, dir, &["work", "--until-idle"]);
    let settle = std::thread::spawn(move || {
        let t = Instant::now();
        (settle.output(), t.elapsed())
    });
    Making {
        db: Db {
            path,
            config,
            nodes,
            events: 0,
        },
        cfg,
        name: name.to_string(),
        made,
        settle,
    }
}

impl Making {
    /// Waits for the fleet to settle, then tops it up to at least `min_events` events.
    pub fn finish(self, rt: &tokio::runtime::Runtime, min_events: u64) -> Db {
        let Making {
            mut db,
            cfg,
            name,
            made,
            settle,
        } = self;
        let (out, settled) = settle.join().expect("settling thread");
        report(&["work", "--until-idle"], out);
        db.events = count_events(&db.path);
        if db.events < min_events {
            top_up_events(rt, &db.path, &cfg, min_events - db.events);
            db.events = count_events(&db.path);
        }
        match made {
            Some((took, nodes, requests)) => println!(
                "  database {name}: {nodes} nodes, {requests} requests, {} events (made in {:.1} s, settled in {:.1} s)",
                db.events,
                took.as_secs_f64(),
                settled.as_secs_f64()
            ),
            None => println!(
                "  database {name}: reused, {} events (settled in {:.1} s)",
                db.events,
                settled.as_secs_f64()
            ),
        }
        db
    }
}

/// A CLI command against the database, with the bench's XDG directories.
fn cli(db: &Path, config: &Path, home: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"));
    cmd.arg("--db")
        .arg(db)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("XDG_STATE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("XDG_DATA_HOME", home)
        .env_remove("MAILFLEET_CONFIG")
        .env_remove("MAILFLEET_DB");
    cmd
}

/// Runs one CLI command against the database.
fn run_cli(db: &Path, config: &Path, home: &Path, args: &[&str]) {
    report(args, cli(db, config, home, args).output());
}

/// A failure is said, not fatal: a run until idle that leaves requests waiting for a
/// person exits non-zero.
fn report(args: &[&str], out: std::io::Result<std::process::Output>) {
    let out = out.expect("run mailfleet");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().rev().take(3).collect();
        println!(
            "  (mailfleet {} exited {}: {})",
            args.join(" "),
            out.status,
            last.join(" | ")
        );
    }
}

fn count_events(db: &Path) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database to count events");
    conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .expect("count events")
}

/// Adds `missing` events the way the product records them: operator pauses and resumes of
/// nodes, each one transaction with its transition and outbox event.
fn top_up_events(rt: &tokio::runtime::Runtime, db: &Path, cfg: &Config, missing: u64) {
    println!("  (adding {missing} events by pausing and resuming nodes)");
    rt.block_on(async {
        let store = Store::open(db, &cfg.store).await.expect("open store");
        let mut changer = Changer::new(&store).await;
        let mut added = 0;
        while added < missing {
            if changer.change(&store).await {
                added += 1;
            }
        }
        changer.resume_all(&store).await;
    });
}

/// Pauses and resumes a fixed set of nodes spread over the fleet, in turn.
struct Changer {
    nodes: Vec<(String, bool)>,
    next: usize,
}

impl Changer {
    async fn new(store: &Store) -> Changer {
        let mut ids = Vec::new();
        for status in ["active", "warming"] {
            let filter = NodeFilter {
                status: Some(status.into()),
                tenant: None,
                limit: None,
            };
            ids.extend(
                store
                    .list_nodes(&filter)
                    .await
                    .expect("list nodes")
                    .into_iter()
                    .map(|n| n.id),
            );
        }
        assert!(!ids.is_empty(), "the fleet has no node to pause");
        ids.sort();
        // At most 500 nodes, evenly spread over the fleet.
        let step = ids.len().div_ceil(500);
        let nodes = ids
            .into_iter()
            .step_by(step)
            .map(|id| (id, false))
            .collect();
        Changer { nodes, next: 0 }
    }

    /// One committed change; false if the node could not take it (its status moved on).
    async fn change(&mut self, store: &Store) -> bool {
        let n = self.nodes.len();
        let (id, paused) = &mut self.nodes[self.next % n];
        self.next += 1;
        let now = chrono::Utc::now();
        let done = if *paused {
            store.resume_node(id, "bench", now).await
        } else {
            store
                .pause_node(id, "bench", Some("console bench".into()), now)
                .await
        };
        match done {
            Ok(Ok(_)) => {
                *paused = !*paused;
                true
            }
            Ok(Err(_)) => false,
            Err(e) => {
                eprintln!("  (writer: {e})");
                false
            }
        }
    }

    async fn resume_all(&mut self, store: &Store) {
        for (id, paused) in &mut self.nodes {
            if *paused
                && store
                    .resume_node(id, "bench", chrono::Utc::now())
                    .await
                    .is_ok()
            {
                *paused = false;
            }
        }
    }
}

/// What a writer did.
#[derive(Debug, Clone, Copy)]
pub struct WriterReport {
    pub changes: u64,
    pub elapsed: Duration,
}

impl WriterReport {
    pub fn rate(&self) -> f64 {
        self.changes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A writer committing `per_second` changes a second, evenly spread, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<WriterReport>>,
}

impl Writer {
    pub fn start(db: &Db, per_second: u32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (path, config, flag) = (db.path.clone(), db.config.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("writer runtime");
            rt.block_on(async move {
                let cfg = config::load(Some(&config)).expect("settings");
                let store = Store::open(&path, &cfg.store).await.expect("open store");
                let mut changer = Changer::new(&store).await;
                let _ = ready_tx.send(());
                let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
                let start = tokio::time::Instant::now();
                let mut changes = 0u64;
                let mut tick = 0u32;
                while !flag.load(Ordering::Relaxed) {
                    tick += 1;
                    tokio::time::sleep_until(start + period * tick).await;
                    if changer.change(&store).await {
                        changes += 1;
                    }
                }
                let elapsed = start.elapsed();
                changer.resume_all(&store).await;
                WriterReport { changes, elapsed }
            })
        });
        // The writer is ready (its nodes listed) before the caller starts timing.
        let _ = ready_rx.recv_timeout(Duration::from_secs(120));
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("a writer stops once")
            .join()
            .expect("writer thread")
    }
}

impl Drop for Writer {
    /// A writer left running (a part gave up early) stops with its owner.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
