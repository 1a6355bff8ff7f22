//! `cargo bench --bench blocklist`: 1,000 IPs on 6 zones (6,000 checks) against a local
//! PowerDNS (tests/support/pdns.rs) whose zones hold a known truth for every (ip, zone): ~10%
//! listed with Spamhaus codes (half with a TXT reason), ~3% the error code 127.255.255.254,
//! the rest not listed. Times `Checker::check_all` (one warm-up, then 3 runs: best and
//! median checks/s), then the p99 latency of single checks run 64 at a time, and counts
//! misclassifications against the truth. Then runs the same checks with pydnsbl
//! (benches/pydnsbl_compare.py, in a venv cached at TARGET/pydnsbl-venv) on the same server.
//! pydnsbl is given its best of concurrency 64 and its default 200, and a fresh c-ares channel
//! per timed run (c-ares caches answers per channel, and pycares cannot turn that off).
//! Ours is measured at concurrency 64 and 256 (where PowerDNS's receive buffer starts to drop
//! queries: each lost query is sent again after a learnt RTO, and the window shrinks), and so
//! is dnsperf (Debian's `dnsperf`, when installed) sending the same A queries to the same
//! server with as many in flight: the rate a dedicated load generator reaches.
//! Prints every tool's figures; the last line is one JSON object.
//!
//! Honesty checks printed beside the rates: the server's own `udp-queries` counter per check
//! for each tool (ours is ~1.1: the A query, plus the TXT for listings; pydnsbl's 1.0), and
//! the server's ceiling measured by a bare UDP client (no resolver library), which shows
//! whether the server or the client is the bottleneck on this machine.
//!
//! The server runs with its packet and query caches on (all records are loaded before the
//! first query, so nothing is stale): the figures are the clients', not the sqlite
//! backend's. MAILFLEET_BENCH_PDNS_CACHES=0 turns them off. Ours runs as a task on a
//! multi-threaded runtime like the console's; MAILFLEET_BENCH_RUNTIME=current_thread for one
//! thread.

#[path = "../tests/support/pdns.rs"]
mod pdns;

use futures::stream::{self, StreamExt};
use mailfleet::reputation::dnsbl::{
    Checker, CheckerConfig, Codes, Severity, Status, Verdict, Zone,
};
use pdns::{Pdns, PdnsApi, PdnsOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IPS: usize = 1000;
const ZONES: usize = 6;
const RUNS: usize = 3;
const CONCURRENCY: usize = 64;
/// Each concurrency ours and dnsperf are measured at.
const CONCURRENCIES: [usize; 2] = [64, 256];
/// Times dnsperf goes through the query file (6,000 queries each).
const DNSPERF_PASSES: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(2);
const SPAMHAUS_LISTING_CODES: [u8; 7] = [2, 3, 4, 9, 10, 11, 30];
const PIP_TIME_LIMIT: Duration = Duration::from_secs(300);
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(300);

/// What the zone says about one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Truth {
    Listed {
        code: Ipv4Addr,
        reason: Option<String>,
    },
    ErrorCode,
    NotListed,
}

impl Truth {
    fn label(&self) -> &'static str {
        match self {
            Truth::Listed { .. } => "listed",
            Truth::ErrorCode => "error",
            Truth::NotListed => "not_listed",
        }
    }
}

struct Fixture {
    ips: Vec<Ipv4Addr>,
    zones: Vec<Zone>,
    truth: HashMap<(Ipv4Addr, String), Truth>,
}

fn main() {
    let caches = std::env::var("MAILFLEET_BENCH_PDNS_CACHES").as_deref() != Ok("0");
    let server = match Pdns::start_with(&PdnsOptions { caches }) {
        Ok(Some(server)) => server,
        Ok(None) => {
            println!(
                "{}",
                json!({"bench": "blocklist", "skipped": "pdns_server not installed"})
            );
            return;
        }
        Err(e) => panic!("start PowerDNS: {e}"),
    };
    let fixture = load_fixture(&server);
    let listed = fixture
        .truth
        .values()
        .filter(|t| matches!(t, Truth::Listed { .. }))
        .count();
    let errors = fixture
        .truth
        .values()
        .filter(|t| **t == Truth::ErrorCode)
        .count();
    println!(
        "blocklist: {IPS} IPs x {ZONES} zones on PowerDNS at {} (caches {}): {listed} listed, {errors} error codes, {} not listed",
        server.dns_addr(),
        if caches { "on" } else { "off" },
        fixture.truth.len() - listed - errors,
    );

    let fixture = Arc::new(fixture);
    let mut levels = Vec::new();
    for concurrency in CONCURRENCIES {
        let ours = run_ours(
            server.dns_addr(),
            server.api_client(),
            fixture.clone(),
            concurrency,
        );
        println!(
            "mailfleet at concurrency {concurrency}: {:.0} checks/s best, {:.0} median over {RUNS} runs of check_all; p99 {:.2} ms per check; {} server queries per check; {} misclassified (worst run); {} queries sent again, window down to {}",
            ours.best,
            ours.median,
            ours.p99_ms,
            ours.queries_per_check.map_or("?".to_string(), |q| format!("{q:.3}")),
            ours.misclassified,
            ours.resent,
            ours.smallest_window,
        );
        for line in &ours.examples {
            println!("  misclassified: {line}");
        }
        let perf = run_dnsperf(&server, &fixture, concurrency);
        match &perf {
            Ok(p) => println!(
                "dnsperf at concurrency {concurrency}: {:.0} queries/s best, {:.0} median over {RUNS} runs; {:.2}% lost (worst run); mailfleet's checks/s are {:.2} of it",
                p.best,
                p.median,
                p.lost_pct,
                ours.best / p.best
            ),
            Err(why) => println!("dnsperf at concurrency {concurrency}: not measured: {why}"),
        }
        levels.push((concurrency, ours, perf));
    }
    let ours = &levels[0].1;
    let ceiling = raw_udp_ceiling(&server, &fixture);
    match ceiling {
        Some(q) => println!(
            "server ceiling: {q:.0} queries/s from a bare UDP client ({CONCURRENCY} in flight, one socket, no parsing)"
        ),
        None => println!("server ceiling: not measured (lost answers)"),
    }

    let py = run_pydnsbl(&server, &fixture);
    match &py {
        Ok(v) => println!(
            "pydnsbl {}: {} checks/s best (concurrency {}), {} median; {} server queries per check; {} misclassified (worst run; {} error codes reported as listed)",
            v["versions"]["pydnsbl"].as_str().unwrap_or("?"), v["checks_per_s"], v["best_concurrency"], v["checks_per_s_median"],
            v["queries_per_check"], v["misclassified"], v["error_as_listed"]
        ),
        Err(why) => println!("pydnsbl: not measured: {why}"),
    }
    let py_rate = py.as_ref().ok().and_then(|v| v["checks_per_s"].as_f64());
    let ratio = py_rate.map(|p| round2(ours.best / p));
    if let Some(r) = ratio {
        println!("ratio (mailfleet / pydnsbl checks per second): {r:.2}");
    }
    let by_concurrency: Vec<Value> = levels
        .iter()
        .map(|(c, o, perf)| {
            let perf = perf.as_ref().ok();
            json!({
                "concurrency": c,
                "checks_per_s": o.best.round(),
                "checks_per_s_median": o.median.round(),
                "p99_ms": round2(o.p99_ms),
                "misclassified": o.misclassified,
                "resent": o.resent,
                "smallest_window": o.smallest_window,
                "dnsperf_qps": perf.map(|p| p.best.round()),
                "dnsperf_qps_median": perf.map(|p| p.median.round()),
                "dnsperf_lost_pct": perf.map(|p| round2(p.lost_pct)),
                "vs_dnsperf": perf.map(|p| round2(o.best / p.best)),
                "vs_pydnsbl": py_rate.map(|p| round2(o.best / p)),
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "bench": "blocklist",
            "ips": IPS,
            "zones": ZONES,
            "checks": IPS * ZONES,
            "concurrency": CONCURRENCY,
            "pdns_caches": caches,
            "checks_per_s": ours.best.round(),
            "checks_per_s_median": ours.median.round(),
            "p99_ms": round2(ours.p99_ms),
            "queries_per_check": ours.queries_per_check.map(round2),
            "misclassified": ours.misclassified,
            "pydnsbl_checks_per_s": py_rate,
            "pydnsbl_queries_per_check": py.as_ref().ok().map(|v| v["queries_per_check"].clone()),
            "pydnsbl_misclassified": py.as_ref().ok().map(|v| v["misclassified"].clone()),
            "pydnsbl_error_as_listed": py.as_ref().ok().map(|v| v["error_as_listed"].clone()),
            "pydnsbl_why_missing": py.as_ref().err(),
            "ratio": ratio,
            "server_ceiling_qps": ceiling.map(f64::round),
            "by_concurrency": by_concurrency,
        })
    );
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---- the zones -------------------------------------------------------------------------------

fn load_fixture(server: &Pdns) -> Fixture {
    let mut rng = StdRng::seed_from_u64(5782);
    // 198.18.0.0/15 is set aside for benchmarks; these are only names in the test zones.
    let ips: Vec<Ipv4Addr> = (0..IPS)
        .map(|i| Ipv4Addr::new(198, 18, (i / 256) as u8, (i % 256) as u8))
        .collect();
    let zones: Vec<Zone> = (1..=ZONES)
        .map(|n| Zone {
            zone: format!("bl{n}.test"),
            severity: Severity::High,
            codes: Codes::Spamhaus,
        })
        .collect();
    let mut truth = HashMap::new();
    for zone in &zones {
        server.add_zone(&zone.zone).expect("add bench zone");
        let mut records =
            pdns::listing(Ipv4Addr::new(127, 0, 0, 2), "127.0.0.2", Some("test entry"));
        for (i, ip) in ips.iter().enumerate() {
            let roll = rng.gen_range(0..100);
            let t = if roll < 10 {
                let last = SPAMHAUS_LISTING_CODES[rng.gen_range(0..SPAMHAUS_LISTING_CODES.len())];
                let reason = rng.gen_bool(0.5).then(|| {
                    format!(
                        "Listed on {}: https://check.example/lookup?ip={ip}&n={i}",
                        zone.zone
                    )
                });
                Truth::Listed {
                    code: Ipv4Addr::new(127, 0, 0, last),
                    reason,
                }
            } else if roll < 13 {
                Truth::ErrorCode
            } else {
                Truth::NotListed
            };
            match &t {
                Truth::Listed { code, reason } => {
                    records.extend(pdns::listing(*ip, &code.to_string(), reason.as_deref()))
                }
                Truth::ErrorCode => records.extend(pdns::listing(*ip, "127.255.255.254", None)),
                Truth::NotListed => {}
            }
            truth.insert((*ip, zone.zone.clone()), t);
        }
        server
            .add_records(&zone.zone, &records)
            .expect("load bench zone");
    }
    Fixture { ips, zones, truth }
}

// ---- ours ------------------------------------------------------------------------------------

struct Ours {
    best: f64,
    median: f64,
    p99_ms: f64,
    /// Queries the server received per check (A, plus TXT for listings), fewest of the runs.
    queries_per_check: Option<f64>,
    /// Wrong verdicts in the worst run (of IPS × ZONES).
    misclassified: usize,
    examples: Vec<String>,
    /// Queries sent again after going unanswered for an RTO, over every run.
    resent: u64,
    /// The smallest the window of queries in flight became.
    smallest_window: usize,
}

/// Runs [`measure_ours`] as a task on a runtime like the console's (multi-threaded, one
/// worker per core); MAILFLEET_BENCH_RUNTIME=current_thread runs it on one thread instead.
fn run_ours(dns: SocketAddr, api: PdnsApi, fixture: Arc<Fixture>, concurrency: usize) -> Ours {
    let current = std::env::var("MAILFLEET_BENCH_RUNTIME").as_deref() == Ok("current_thread");
    let rt = if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    rt.block_on(async move { tokio::spawn(measure_ours(dns, api, fixture, concurrency)).await })
        .expect("the measuring task finishes")
}

async fn measure_ours(
    dns: SocketAddr,
    api: PdnsApi,
    fixture: Arc<Fixture>,
    concurrency: usize,
) -> Ours {
    let fixture = &*fixture;
    let udp_queries = || api.statistic("udp-queries").ok();
    let checker = Checker::new(&CheckerConfig {
        resolver: Some(dns),
        timeout: TIMEOUT,
        concurrency,
    })
    .expect("build checker");
    for zone in &fixture.zones {
        let health = checker.health(zone).await;
        assert!(health.usable, "bench zone unusable: {health:?}");
    }
    let checks = (fixture.ips.len() * fixture.zones.len()) as f64;
    let mut misclassified = 0;
    let mut examples = Vec::new();
    let mut tally = |verdicts: &mut dyn Iterator<Item = &Verdict>| {
        let mut run_wrong = 0;
        for v in verdicts {
            if let Some(why) = wrong(v, fixture) {
                run_wrong += 1;
                if examples.len() < 5 {
                    examples.push(why);
                }
            }
        }
        misclassified = misclassified.max(run_wrong);
    };
    // Warm-up: the server's packet cache, and our code paths.
    let warm = checker.check_all(&fixture.ips, &fixture.zones).await;
    assert_eq!(
        warm.len(),
        fixture.truth.len(),
        "check_all answers every pair"
    );
    let mut rates = Vec::with_capacity(RUNS);
    let mut queries: Option<f64> = None;
    for _ in 0..RUNS {
        let before = udp_queries();
        let started = Instant::now();
        let verdicts = checker.check_all(&fixture.ips, &fixture.zones).await;
        rates.push(checks / started.elapsed().as_secs_f64());
        if let (Some(b), Some(a)) = (before, udp_queries()) {
            let per_check = (a - b) as f64 / checks;
            queries = Some(queries.map_or(per_check, |q: f64| q.min(per_check)));
        }
        tally(&mut verdicts.iter());
    }
    rates.sort_by(f64::total_cmp);

    // Per-check latency: the same checks, `concurrency` in flight, each timed on its own.
    // (ip, zone index): a reference in the stream's item trips the Send check of the task.
    let pairs: Vec<(Ipv4Addr, usize)> = fixture
        .ips
        .iter()
        .flat_map(|ip| (0..fixture.zones.len()).map(move |z| (*ip, z)))
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(pairs.len() * RUNS);
    for _ in 0..RUNS {
        let timed: Vec<(Verdict, Duration)> = stream::iter(pairs.iter().copied())
            .map(|(ip, zone)| {
                let checker = &checker;
                let zone = &fixture.zones[zone];
                async move {
                    let started = Instant::now();
                    let v = checker.check(ip, zone).await;
                    (v, started.elapsed())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        tally(&mut timed.iter().map(|(v, _)| v));
        latencies.extend(timed.iter().map(|(_, took)| *took));
    }
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100).saturating_sub(1)];
    let pacing = checker.pacing();
    Ours {
        resent: pacing.losses,
        smallest_window: pacing.smallest_window,
        best: rates[rates.len() - 1],
        median: rates[rates.len() / 2],
        p99_ms: p99.as_secs_f64() * 1000.0,
        queries_per_check: queries,
        misclassified,
        examples,
    }
}

/// Why a verdict disagrees with the truth, if it does.
fn wrong(v: &Verdict, fixture: &Fixture) -> Option<String> {
    let truth = fixture.truth.get(&(v.ip, v.zone.clone()))?;
    let ok = match truth {
        Truth::Listed { code, reason } => {
            v.status == Status::Listed && v.code == Some(*code) && v.reason == *reason
        }
        Truth::ErrorCode => {
            v.status == Status::Error && v.code == Some(Ipv4Addr::new(127, 255, 255, 254))
        }
        Truth::NotListed => v.status == Status::NotListed && v.code.is_none(),
    };
    (!ok).then(|| format!("{} on {}: want {truth:?}, got {v:?}", v.ip, v.zone))
}

// ---- the server's ceiling ------------------------------------------------------------------

/// Queries per second the server answers to the least a client can do: the same A queries on
/// one UDP socket, CONCURRENCY in flight, answers matched by ID and not parsed. Best of RUNS.
/// Bounds what any checker can reach on this machine (the server shares its cores).
fn raw_udp_ceiling(server: &Pdns, fixture: &Fixture) -> Option<f64> {
    let names: Vec<String> = fixture
        .ips
        .iter()
        .flat_map(|ip| {
            fixture
                .zones
                .iter()
                .map(move |z| format!("{}.{}", pdns::reversed(*ip), z.zone))
        })
        .collect();
    let queries: Vec<Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| a_query(i as u16, n))
        .collect();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.connect(server.dns_addr()).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut best: Option<f64> = None;
    let mut buf = [0u8; 1500];
    for _ in 0..=RUNS {
        let started = Instant::now();
        let mut sent = 0;
        for q in queries.iter().take(CONCURRENCY) {
            socket.send(q).ok()?;
            sent += 1;
        }
        for _ in 0..queries.len() {
            socket.recv(&mut buf).ok()?;
            if sent < queries.len() {
                socket.send(&queries[sent]).ok()?;
                sent += 1;
            }
        }
        let rate = queries.len() as f64 / started.elapsed().as_secs_f64();
        best = Some(best.map_or(rate, |b: f64| b.max(rate)));
    }
    best
}

fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

// ---- dnsperf ---------------------------------------------------------------------------------

struct Perf {
    best: f64,
    median: f64,
    /// Queries dnsperf counted as lost, in the worst run.
    lost_pct: f64,
}

/// dnsperf sending every check's A query, `concurrency` outstanding, DNSPERF_PASSES times
/// through the list per run; best and median queries/s of RUNS runs.
fn run_dnsperf(server: &Pdns, fixture: &Fixture, concurrency: usize) -> Result<Perf, String> {
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let list = work.path().join("queries.txt");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&list).map_err(|e| format!("query file: {e}"))?,
    );
    for ip in &fixture.ips {
        for z in &fixture.zones {
            writeln!(out, "{}.{} A", pdns::reversed(*ip), z.zone)
                .map_err(|e| format!("query file: {e}"))?;
        }
    }
    out.flush().map_err(|e| format!("query file: {e}"))?;
    drop(out);
    let addr = server.dns_addr();
    let mut rates = Vec::with_capacity(RUNS);
    let mut lost_pct: f64 = 0.0;
    for _ in 0..RUNS {
        let text = run_bounded(
            Command::new("dnsperf")
                .arg("-s")
                .arg(addr.ip().to_string())
                .arg("-p")
                .arg(addr.port().to_string())
                .arg("-d")
                .arg(&list)
                .arg("-n")
                .arg(DNSPERF_PASSES.to_string())
                .arg("-q")
                .arg(concurrency.to_string())
                .arg("-t")
                .arg(TIMEOUT.as_secs().to_string()),
            SCRIPT_TIME_LIMIT,
        )
        .map_err(|e| {
            if e.starts_with("spawn") {
                "dnsperf is not installed (apt-get install dnsperf)".to_string()
            } else {
                format!("dnsperf: {e}")
            }
        })?;
        let figure = |label: &str| -> Option<f64> {
            let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
            line.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let qps = figure("Queries per second").ok_or("dnsperf printed no rate")?;
        if let (Some(sent), Some(lost)) = (figure("Queries sent"), figure("Queries lost")) {
            if sent > 0.0 {
                lost_pct = lost_pct.max(lost * 100.0 / sent);
            }
        }
        rates.push(qps);
    }
    rates.sort_by(f64::total_cmp);
    Ok(Perf {
        best: rates[rates.len() - 1],
        median: rates[rates.len() / 2],
        lost_pct,
    })
}

// ---- pydnsbl ---------------------------------------------------------------------------------

/// Runs benches/pydnsbl_compare.py in the cached venv; its JSON line, or why not.
fn run_pydnsbl(server: &Pdns, fixture: &Fixture) -> Result<Value, String> {
    let venv = target_dir()?.join("pydnsbl-venv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        println!("pydnsbl: creating a venv at {}", venv.display());
        run_bounded(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            PIP_TIME_LIMIT,
        )
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    }
    let has_pydnsbl = run_bounded(
        Command::new(&python).args(["-c", "import pydnsbl"]),
        Duration::from_secs(30),
    )
    .is_ok();
    if !has_pydnsbl {
        println!("pydnsbl: pip install pydnsbl into {}", venv.display());
        run_bounded(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pydnsbl",
            ]),
            PIP_TIME_LIMIT,
        )
        .map_err(|e| format!("pip install pydnsbl: {e}"))?;
    }

    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let truth_file = work.path().join("truth.tsv");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&truth_file).map_err(|e| format!("truth file: {e}"))?,
    );
    for ip in &fixture.ips {
        for zone in &fixture.zones {
            let t = &fixture.truth[&(*ip, zone.zone.clone())];
            writeln!(out, "{ip}\t{}\t{}", zone.zone, t.label())
                .map_err(|e| format!("truth file: {e}"))?;
        }
    }
    out.flush().map_err(|e| format!("truth file: {e}"))?;
    drop(out);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pydnsbl_compare.py");
    let zones: Vec<&str> = fixture.zones.iter().map(|z| z.zone.as_str()).collect();
    let stdout = run_bounded(
        Command::new(&python)
            .arg(&script)
            .arg("--server")
            .arg(server.dns_addr().to_string())
            .arg("--zones")
            .arg(zones.join(","))
            .arg("--truth")
            .arg(&truth_file)
            .arg("--runs")
            .arg(RUNS.to_string())
            .arg("--timeout")
            .arg(TIMEOUT.as_secs_f64().to_string())
            .arg("--api-url")
            .arg(server.api_url())
            .arg("--api-key")
            .arg(server.api_key()),
        SCRIPT_TIME_LIMIT,
    )?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("no JSON line from the script: {stdout}"))?;
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("script JSON: {e}: {line}"))?;
    match value.get("error") {
        Some(e) => Err(format!("pydnsbl_compare.py: {e}")),
        None => Ok(value),
    }
}

/// The cargo target dir: the bench binary lives in TARGET/release/deps/.
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no target dir above {}", exe.display()))
}

/// Runs a command to completion within `limit`; its stdout, or why it failed (with stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let out_path = work.path().join("stdout");
    let err_path = work.path().join("stderr");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{status}: {}{}", stdout.trim(), tail.join("\n")))
}
