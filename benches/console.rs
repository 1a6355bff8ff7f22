//! `cargo bench --bench console`: what a person at the console waits on, measured on the
//! real binary (built in release by `cargo bench`) in a pseudo-terminal, its screen read back
//! through a terminal emulator. Nothing here reaches into the console's internals: the bench
//! knows the command line, the database, and what the screen shows.
//!
//! The figures, each as min/median over `MAILFLEET_BENCH_RUNS` runs (default 3):
//!
//! - **key-to-frame** (`keys`): the time from writing a navigation key (j/k, Down/Up,
//!   PgDn/PgUp, g/G, Home/End) to the pty until the first complete frame whose table title
//!   (`Fleet <selected>/<total>`) shows the position that key leads to; ~300 keys a run
//!   after a warm-up, 30–130 ms apart, while a writer commits 50 changes/s (node pauses and
//!   resumes, which the Fleet view shows) to the same database. p99 and p50 with the big
//!   fleet and with 10 nodes, measured in the same run; target: big p99 / small p99 ≤ 1.2.
//!   Also, at the big fleet (informational): switching views (`2`, `1`) until the other
//!   view's title shows, and typing a filter character until the title's total is the one
//!   that filter gives.
//! - **first frame with rows** (`first`): from spawning the process to the first complete
//!   frame that shows the fleet's rows (a `Fleet 1/<n>` title, n > 0), with the big fleet
//!   (100,000 nodes, ~1,000,000 events) vs an empty database (the first frame that shows
//!   the empty fleet's "Nothing here yet", not a loading screen); target ratio ≤ 1.5.
//! - **idle CPU** (`idle`): user+system CPU of the console process (`/proc/PID/stat`) over
//!   60 s once rows are on screen and a settling pause has passed, nobody typing and no
//!   writer, with 500 nodes and with the big fleet; target < 0.1% of a core (< 60 ms/60 s).
//!   The frames drawn in the window are printed beside it.
//! - **peak RSS** (`rss`): `VmHWM` of the console process after 90 s with the big fleet, its
//!   engine running and the 50 changes/s writer on; the Requests and Events views are opened
//!   once at the start, as a person would. Target < 100 MB.
//!
//! A frame is complete where ratatui ends one (the cursor hidden or shown after the cells;
//! or the end of a synchronized update), so a half-written frame never counts; the time is
//! taken on the reader thread as soon as that frame is parsed.
//!
//! The databases are demo fleets (`mailfleet::demo::generate`, run with the settings
//! `mailfleet demo` uses for a fleet that size), settled by `mailfleet work --until-idle`
//! (with the simulated cloud's delays cut short for that run only),
//! made once per bench run in a temp dir under `MAILFLEET_BENCH_DIR` (default `.`, the
//! same disk as the engine bench's).
//!
//! Knobs: `MAILFLEET_BENCH_ONLY=keys,first,idle,rss` (any of them), `MAILFLEET_BENCH_RUNS`,
//! `MAILFLEET_BENCH_IDLE_S` (idle window, default 60), `MAILFLEET_BENCH_SETTLE_S` (pause
//! before the idle window, default 10), `MAILFLEET_BENCH_RSS_S` (default 90),
//! `MAILFLEET_BENCH_KEYS` (timed keys a run, default 300), `MAILFLEET_BENCH_NODES` (the big
//! fleet, default 100000), `MAILFLEET_BENCH_EVENTS` (its least events, default 1000000).
//! `MAILFLEET_BENCH_KEEP=1` keeps the temp dir (databases, settings, logs);
//! `MAILFLEET_BENCH_DBS=DIR` makes the databases in DIR, or reuses those already there.
//! Figures from shorter, smaller or reused-database runs say so in the JSON
//! (`"defaults": false`).
//!
//! Ends with one JSON line.

#[path = "console/fixture.rs"]
mod fixture;
#[path = "console/parts.rs"]
mod parts;
#[path = "console/pty.rs"]
mod pty;

use serde_json::{json, Value};
use std::time::Duration;

/// The bench's settings, from the environment.
#[derive(Debug, Clone)]
pub struct Opts {
    pub runs: usize,
    pub only: Vec<String>,
    pub idle: Duration,
    pub settle: Duration,
    pub rss_window: Duration,
    pub keys: usize,
    pub big_nodes: usize,
    pub min_events: u64,
    pub dir: std::path::PathBuf,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Opts {
    fn from_env() -> Opts {
        let only = std::env::var("MAILFLEET_BENCH_ONLY")
            .ok()
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Opts {
            runs: env_num("MAILFLEET_BENCH_RUNS", 3usize).max(1),
            only,
            idle: Duration::from_secs(env_num("MAILFLEET_BENCH_IDLE_S", 60)),
            settle: Duration::from_secs(env_num("MAILFLEET_BENCH_SETTLE_S", 10)),
            rss_window: Duration::from_secs(env_num("MAILFLEET_BENCH_RSS_S", 90)),
            keys: env_num("MAILFLEET_BENCH_KEYS", 300usize).max(10),
            big_nodes: env_num("MAILFLEET_BENCH_NODES", 100_000usize).clamp(1, 100_000),
            min_events: env_num("MAILFLEET_BENCH_EVENTS", 1_000_000u64),
            dir: std::env::var_os("MAILFLEET_BENCH_DIR")
                .map(Into::into)
                .unwrap_or_else(|| ".".into()),
        }
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }

    /// Whether the figures are the (full windows, full fleet, enough runs).
    fn defaults(&self) -> bool {
        self.runs >= 3
            && self.idle >= Duration::from_secs(60)
            && self.rss_window >= Duration::from_secs(90)
            && self.keys >= 300
            && self.big_nodes == 100_000
            && self.min_events >= 1_000_000
    }
}

/// Min and median of a list of figures.
pub fn min_median(v: &[f64]) -> (f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    };
    (s[0], median)
}

/// `{"min": .., "median": .., "runs": [..]}`, rounded for reading.
pub fn figure(v: &[f64]) -> Value {
    let (min, median) = min_median(v);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "min": round(min),
        "median": round(median),
        "runs": v.iter().map(|x| round(*x)).collect::<Vec<_>>(),
    })
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn main() {
    let opts = Opts::from_env();
    std::fs::create_dir_all(&opts.dir).expect("bench dir");
    let dir = tempfile::Builder::new()
        .prefix("console-bench-")
        .tempdir_in(&opts.dir)
        .expect("temp dir");
    // Databases kept from an earlier run (quick checks only), or made in the temp dir.
    let kept = std::env::var_os("MAILFLEET_BENCH_DBS").map(std::path::PathBuf::from);
    let db_dir = kept.clone().unwrap_or_else(|| dir.path().to_path_buf());
    std::fs::create_dir_all(&db_dir).expect("database dir");
    // Key files and logs of everything this bench runs stay beside its databases. Set
    // before any thread starts.
    for var in ["XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"] {
        std::env::set_var(var, &db_dir);
    }
    std::env::remove_var("MAILFLEET_CONFIG");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "console bench: the real binary in a {}×{} pty; {} run(s); parts: {}",
        parts::COLS,
        parts::ROWS,
        opts.runs,
        if opts.only.is_empty() {
            "keys, first, idle, rss".to_string()
        } else {
            opts.only.join(", ")
        }
    );
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), "console".into());
    out.insert("runs".into(), opts.runs.into());
    out.insert(
        "defaults".into(),
        (opts.defaults() && kept.is_none()).into(),
    );
    out.insert("big_nodes".into(), opts.big_nodes.into());

    let dbs = parts::Dbs::make(&rt, &db_dir, &opts);
    if let Some(big) = &dbs.big {
        out.insert("big_events".into(), big.events.into());
    }
    if opts.wants("first") {
        out.insert(
            "first_frame".into(),
            parts::first_frame(&dbs, &opts, &db_dir),
        );
    }
    if opts.wants("idle") {
        out.insert("idle_cpu".into(), parts::idle_cpu(&dbs, &opts, &db_dir));
    }
    if opts.wants("keys") {
        out.insert("key_to_frame".into(), parts::keys(&dbs, &opts, &db_dir));
    }
    if opts.wants("rss") {
        out.insert("peak_rss".into(), parts::peak_rss(&dbs, &opts, &db_dir));
    }
    let all_met = out
        .values()
        .filter_map(|v| v.get("met"))
        .all(|m| m.as_bool() == Some(true));
    out.insert("all_met".into(), all_met.into());
    if std::env::var_os("MAILFLEET_BENCH_KEEP").is_some() {
        println!("  (kept {})", dir.keep().display());
    }
    println!("{}", Value::Object(out));
}
