//! `cargo bench --bench console`: frame time of the Fleet and Requests views at 10, 10,000
//! and 100,000 rows (200×60); time to first frame on an empty database and on one with
//! 100,000 nodes and 1,000,000 events; peak RSS. Prints its figures, then one JSON line.

use chrono::Utc;
use mailfleet::config;
use mailfleet::store::{
    ConsoleNode, ConsoleRequest, ConsoleSnapshot, NodeWarmup, StepSummary, Store,
};
use mailfleet::tui::action::Action;
use mailfleet::tui::app::App;
use mailfleet::tui::keymap::Keymap;
use mailfleet::tui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const FRAMES: usize = 300;

fn synthetic(n: usize) -> ConsoleSnapshot {
    let now = mailfleet::clock::ts(Utc::now());
    let statuses = [
        "active",
        "warming",
        "active",
        "paused",
        "active",
        "maintenance",
    ];
    let tenants: Vec<Arc<str>> = ["acme", "globex", "initech"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let regions: Vec<Arc<str>> = ["dallas", "seattle", "amsterdam", "eu-west-1"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let (plan, completed, configuring, bench): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) = (
        "ssd-1".into(),
        "completed".into(),
        "configuring".into(),
        "bench".into(),
    );
    let statuses: Vec<Arc<str>> = statuses.into_iter().map(Arc::from).collect();
    let (warm_plan, warming): (Arc<str>, Arc<str>) = (Arc::from("standard"), Arc::from("warming"));
    let mut nodes = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let rid = format!("01a20000-0000-7000-8000-{i:012x}");
        requests.push(ConsoleRequest {
            id: rid.clone(),
            tenant: tenants[i % 3].clone(),
            region: regions[i % 4].clone(),
            plan: plan.clone(),
            cpu: 1,
            memory_gb: 1,
            storage_gb: 30,
            label: format!("node-{i:06}"),
            domain: None,
            state: if i % 10 == 0 {
                configuring.clone()
            } else {
                completed.clone()
            },
            requested_by: bench.clone(),
            approval_rule: None,
            approval_reason: None,
            wait_reason: None,
            error: None,
            needs_attention: false,
            created_at: now.clone(),
            steps: StepSummary {
                attempts: 4,
                failed_step: None,
            },
        });
        nodes.push(ConsoleNode {
            id: format!("01a20000-0000-7000-9000-{i:012x}"),
            request_id: Some(rid),
            provider_id: Some(format!("sim-{i}")),
            tenant: tenants[i % 3].clone(),
            label: format!("node-{i:06}"),
            hostname: format!("node-{i:06}.fleet.example.net"),
            ip_address: Some(std::net::Ipv4Addr::from(0x6440_0000u32 + i as u32).to_string()),
            region: regions[i % 4].clone(),
            plan: plan.clone(),
            status: statuses[i % statuses.len()].clone(),
            status_reason: None,
            reputation_score: (i % 60) as i64 + 40,
            current_load: (i % 95) as i64,
            created_at: now.clone(),
            last_heartbeat: Some(now.clone()),
            warmup: (&*statuses[i % statuses.len()] == "warming").then(|| NodeWarmup {
                plan: warm_plan.clone(),
                day: (i % 42) as i64 + 1,
                days: 42,
                cap: 10 + (i % 42) as i64 * 12,
                status: warming.clone(),
            }),
            cert_expires: Some(1_800_000_000 + i as i64),
        });
    }
    let mut snap = ConsoleSnapshot {
        nodes,
        requests,
        listings: vec![],
        ..Default::default()
    };
    // Every warming node has its last 14 days, as the store gives them, so the Fleet frame
    // draws sparklines; the capacity figures feed the header.
    let w = &mut snap.warmup;
    for (i, n) in snap.nodes.iter().enumerate() {
        if let Some(warm) = &n.warmup {
            let days: Box<[u32]> = (0..14u32).map(|d| (d + 1) * (i as u32 % 97 + 3)).collect();
            w.recent_sent.insert(i, days);
            w.capacity += warm.cap;
        }
    }
    w.closed_sent = w.capacity * 3 / 5;
    w.closed_cap = w.capacity;
    snap
}

fn new_app(cfg: &Arc<config::Config>) -> App {
    App::new(
        cfg.clone(),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "bench".into(),
        "bench.db".into(),
        false,
        Theme::from_env(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of drawing `view` with `n` rows, in microseconds.
fn frame_times(cfg: &Arc<config::Config>, n: usize, view: Action) -> (f64, f64) {
    let mut app = new_app(cfg);
    app.set_snapshot(Arc::new(synthetic(n)));
    app.update(view);
    app.update(Action::Down);
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    for _ in 0..20 {
        term.draw(|f| mailfleet::tui::views::draw(f, &mut app))
            .expect("draw");
    }
    let mut times = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES {
        app.tick = i as u64;
        let t = Instant::now();
        term.draw(|f| mailfleet::tui::views::draw(f, &mut app))
            .expect("draw");
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Opens the store and draws the first frame (before data), then until the snapshot is on
/// screen. Returns (first frame ms, data on screen ms).
async fn first_frame(cfg: &Arc<config::Config>, path: &std::path::Path) -> (f64, f64) {
    let t = Instant::now();
    let store = Store::open(path, &cfg.store).await.expect("store");
    let mut app = new_app(cfg);
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    term.draw(|f| mailfleet::tui::views::draw(f, &mut app))
        .expect("draw");
    let first = t.elapsed().as_secs_f64() * 1e3;
    let snap = store.console_snapshot().await.expect("snapshot");
    app.set_snapshot(Arc::new(snap));
    term.draw(|f| mailfleet::tui::views::draw(f, &mut app))
        .expect("draw");
    (first, t.elapsed().as_secs_f64() * 1e3)
}

/// In a child process: the console's memory with the big database loaded and drawn.
async fn console_rss(cfg: &Arc<config::Config>, path: &std::path::Path) -> f64 {
    let store = Store::open(path, &cfg.store).await.expect("store");
    let mut app = new_app(cfg);
    app.set_snapshot(Arc::new(store.console_snapshot().await.expect("snapshot")));
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    for view in [Action::ShowFleet, Action::ShowRequests, Action::ShowEvents] {
        app.update(view);
        term.draw(|f| mailfleet::tui::views::draw(f, &mut app))
            .expect("draw");
    }
    let events = store
        .list_events(&Default::default())
        .await
        .expect("events");
    app.set_events(events, false);
    term.draw(|f| mailfleet::tui::views::draw(f, &mut app))
        .expect("draw");
    peak_rss_mb()
}

/// The median of five openings, so one slow disk moment does not decide the figure.
fn median_first_frame(
    rt: &tokio::runtime::Runtime,
    cfg: &Arc<config::Config>,
    path: &std::path::Path,
) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (0..5)
        .map(|_| rt.block_on(first_frame(cfg, path)))
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first = runs[2].0;
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    (first, runs[2].1)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = Arc::new(
        config::from_layers(&[("(built-in defaults)".into(), config::DEFAULT_TOML.into())])
            .expect("config"),
    );
    if let Some(path) = std::env::var_os("MAILFLEET_BENCH_RSS_DB") {
        println!(
            "{}",
            rt.block_on(console_rss(&cfg, std::path::Path::new(&path)))
        );
        return;
    }
    let mut json = serde_json::Map::new();
    println!("console bench: 200×60, {FRAMES} frames per case");
    for (name, action) in [
        ("fleet", Action::ShowFleet),
        ("requests", Action::ShowRequests),
    ] {
        let mut p50s = Vec::new();
        for n in [10, 10_000, 100_000] {
            let (p50, p99) = frame_times(&cfg, n, action);
            println!("  {name:<8} {n:>7} rows: p50 {p50:>8.1} µs   p99 {p99:>8.1} µs");
            json.insert(format!("{name}_{n}_p50_us"), p50.into());
            json.insert(format!("{name}_{n}_p99_us"), p99.into());
            p50s.push(p50);
        }
        let ratio = p50s[2] / p50s[0];
        println!(
            "  {name:<8} 100k/10 ratio {ratio:.2} (target <= 1.5: {})",
            if ratio <= 1.5 { "met" } else { "NOT met" }
        );
        json.insert(format!("{name}_ratio"), ratio.into());
    }

    if std::env::var_os("MAILFLEET_BENCH_FRAMES_ONLY").is_some() {
        println!("{}", serde_json::Value::Object(json));
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (empty_first, empty_data) = median_first_frame(&rt, &cfg, &dir.path().join("empty.db"));
    println!(
        "  first frame, empty db:      {empty_first:>8.1} ms (data on screen {empty_data:.1} ms)"
    );
    json.insert("first_frame_empty_ms".into(), empty_first.into());
    match big_database(&rt, &cfg, dir.path()) {
        Some(path) => {
            let (big_first, big_data) = median_first_frame(&rt, &cfg, &path);
            let ratio = big_first / empty_first.max(0.001);
            println!("  first frame, 100k/1M db:    {big_first:>8.1} ms (data on screen {big_data:.1} ms)");
            println!(
                "  first-frame ratio {ratio:.2} (target <= 2: {})",
                if ratio <= 2.0 { "met" } else { "NOT met" }
            );
            json.insert("first_frame_big_ms".into(), big_first.into());
            json.insert("data_on_screen_big_ms".into(), big_data.into());
            json.insert("first_frame_ratio".into(), ratio.into());
            let out = std::process::Command::new(std::env::current_exe().expect("exe"))
                .env("MAILFLEET_BENCH_RSS_DB", &path)
                .output()
                .expect("child");
            let rss: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            println!("  peak RSS of the console with the 100k/1M database: {rss:.1} MB (target < 150 MB: {})", if rss < 150.0 { "met" } else { "NOT met" });
            json.insert("peak_rss_mb".into(), rss.into());
        }
        None => println!("  first frame, 100k/1M db:    skipped"),
    }
    println!("{}", serde_json::Value::Object(json));
}

/// A database with 100,000 nodes and about 1,000,000 events, made once per run.
fn big_database(
    rt: &tokio::runtime::Runtime,
    cfg: &Arc<config::Config>,
    dir: &std::path::Path,
) -> Option<std::path::PathBuf> {
    let path = dir.join("big.db");
    let t = Instant::now();
    rt.block_on(async {
        let store = Store::open(&path, &cfg.store).await.expect("store");
        store.sync_catalog(cfg, Utc::now()).await.expect("catalog");
        let spec = mailfleet::demo::DemoSpec {
            nodes: 100_000,
            seed: 7,
        };
        let summary = mailfleet::demo::generate(&store, cfg, &spec, Utc::now())
            .await
            .expect("demo");
        println!(
            "  (built the big database in {:.1} s: {} nodes, {} events)",
            t.elapsed().as_secs_f64(),
            summary.nodes,
            summary.events
        );
    });
    Some(path)
}
