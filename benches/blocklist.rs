//! `cargo bench --bench blocklist`: 1,000 IPs on 6 zones (6,000 checks) against a local
//! PowerDNS (tests/support/pdns.rs) whose zones hold a known truth for every (ip, zone): ~10%
//! listed with Spamhaus codes (half with a TXT reason), ~3% the error code 127.255.255.254,
//! the rest not listed.
//!
//! At each concurrency (64 and 256: where PowerDNS's receive buffer starts to drop queries,
//! each lost query is sent again after a learnt RTO and the window shrinks), mailfleet and
//! dnsperf (Debian's `dnsperf`, skipped when absent) take turns, RUNS rounds, the order
//! swapped every round: mailfleet runs `Checker::check_all` PASSES times (30,000 checks),
//! dnsperf sends the same 6,000 A queries PASSES times (30,000 queries) with as many in
//! flight, to the same server. Each round's ratio (mailfleet checks/s ÷ dnsperf queries/s)
//! is taken from two runs seconds apart, so load from elsewhere on the machine weighs on
//! both; min and median over the rounds are reported, of each rate and of the ratios. A
//! check is an A query plus, for a listing, a TXT query, so checks/s is the stricter figure.
//! Then the p99 latency of single checks run `concurrency` at a time, and misclassifications
//! against the truth in every run (worst run reported).
//!
//! Then pydnsbl (benches/pydnsbl_compare.py, in a venv cached at TARGET/pydnsbl-venv) on the
//! same server, given its best of concurrency 64 and its default 200 and a fresh c-ares
//! channel per timed run (c-ares caches answers per channel, and pycares cannot turn that
//! off); mailfleet's min and median at each concurrency are divided by pydnsbl's best.
//! Prints every tool's figures; the last line is one JSON object.
//!
//! Honesty checks printed beside the rates: the server's own `udp-queries` counter per check
//! for each tool (ours is ~1.1: the A query, plus the TXT for listings; pydnsbl's 1.0), and
//! the server's ceiling measured by a bare UDP client (no resolver library).
//!
//! The server runs with its packet and query caches on (all records are loaded before the
//! first query, so nothing is stale): the figures are the clients', not the sqlite
//! backend's. MAILFLEET_BENCH_PDNS_CACHES=0 turns them off. Ours runs as a task on a
//! multi-threaded runtime like the console's; MAILFLEET_BENCH_RUNTIME=current_thread for one
//! thread. MAILFLEET_BENCH_PYDNSBL=0 skips pydnsbl.

#[path = "../tests/support/pdns.rs"]
mod pdns;

use futures::stream::{self, StreamExt};
use mailfleet::reputation::dnsbl::{
    Checker, CheckerConfig, Codes, Severity, Status, Verdict, Zone,
};
use pdns::{Pdns, PdnsOptions};
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
/// Rounds per concurrency (one mailfleet run and one dnsperf run each).
const RUNS: usize = 3;
/// Passes through the 6,000 checks (mailfleet) or queries (dnsperf) in one run.
const PASSES: usize = 5;
/// The concurrency of the server-ceiling client.
const CONCURRENCY: usize = 64;
/// Each concurrency ours and dnsperf are measured at.
const CONCURRENCIES: [usize; 2] = [64, 256];
const TIMEOUT: Duration = Duration::from_secs(2);
const SPAMHAUS_LISTING_CODES: [u8; 7] = [2, 3, 4, 9, 10, 11, 30];
const PIP_TIME_LIMIT: Duration = Duration::from_secs(300);
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(300);
/// The targets of issue 13 item 7, printed beside the figures.
const TARGET_VS_DNSPERF: f64 = 0.7;
const TARGET_VS_PYDNSBL: f64 = 5.0;

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

/// Min, median and max of some figures.
#[derive(Debug, Clone, Copy)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            min: *v.first()?,
            median: v[v.len() / 2],
            max: *v.last()?,
        })
    }

    fn json(self, digits: i32) -> Value {
        let r = |x: f64| {
            let k = 10f64.powi(digits);
            (x * k).round() / k
        };
        json!({"min": r(self.min), "median": r(self.median), "max": r(self.max)})
    }
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
        "blocklist: {IPS} IPs x {ZONES} zones on PowerDNS at {} (caches {}): {listed} listed, {errors} error codes, {} not listed; {RUNS} rounds per concurrency, {PASSES} passes per run",
        server.dns_addr(),
        if caches { "on" } else { "off" },
        fixture.truth.len() - listed - errors,
    );

    let fixture = Arc::new(fixture);
    let dnsperf = DnsPerf::prepare(&fixture);
    let levels: Vec<Level> = CONCURRENCIES
        .iter()
        .map(|&c| measure_level(&server, &fixture, dnsperf.as_ref(), c))
        .collect();
    let ceiling = raw_udp_ceiling(&server, &fixture);
    match ceiling {
        Some(q) => println!(
            "server ceiling: {q:.0} queries/s from a bare UDP client ({CONCURRENCY} in flight, one socket, no parsing)"
        ),
        None => println!("server ceiling: not measured (lost answers)"),
    }

    let py = if std::env::var("MAILFLEET_BENCH_PYDNSBL").as_deref() == Ok("0") {
        Err("MAILFLEET_BENCH_PYDNSBL=0".to_string())
    } else {
        run_pydnsbl(&server, &fixture)
    };
    match &py {
        Ok(v) => println!(
            "pydnsbl {}: {} checks/s best (concurrency {}), {} median, {} min; {} server queries per check; {} misclassified (worst run; {} error codes reported as listed)",
            v["versions"]["pydnsbl"].as_str().unwrap_or("?"), v["checks_per_s"], v["best_concurrency"], v["checks_per_s_median"],
            v["checks_per_s_min"], v["queries_per_check"], v["misclassified"], v["error_as_listed"]
        ),
        Err(why) => println!("pydnsbl: not measured: {why}"),
    }
    let py_rate = py.as_ref().ok().and_then(|v| v["checks_per_s"].as_f64());
    for level in &levels {
        if let (Some(p), Some(ours)) = (py_rate, level.ours.rates) {
            println!(
                "mailfleet / pydnsbl at concurrency {}: {:.2} min, {:.2} median (target >= {TARGET_VS_PYDNSBL})",
                level.concurrency,
                ours.min / p,
                ours.median / p
            );
        }
    }
    let by_concurrency: Vec<Value> = levels.iter().map(|l| l.json(py_rate)).collect();
    let first = &levels[0];
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({
            "bench": "blocklist",
            "ips": IPS,
            "zones": ZONES,
            "checks": IPS * ZONES,
            "rounds": RUNS,
            "passes_per_run": PASSES,
            "pdns_caches": caches,
            "concurrency": first.concurrency,
            "checks_per_s": first.ours.rates.map(|r| r.max.round()),
            "checks_per_s_median": first.ours.rates.map(|r| r.median.round()),
            "checks_per_s_min": first.ours.rates.map(|r| r.min.round()),
            "p99_ms": round2(first.ours.p99_ms),
            "queries_per_check": first.ours.queries_per_check.map(round2),
            "misclassified": levels.iter().map(|l| l.ours.misclassified).max(),
            "pydnsbl_checks_per_s": py_rate,
            "pydnsbl_checks_per_s_median": py.as_ref().ok().map(|v| v["checks_per_s_median"].clone()),
            "pydnsbl_queries_per_check": py.as_ref().ok().map(|v| v["queries_per_check"].clone()),
            "pydnsbl_misclassified": py.as_ref().ok().map(|v| v["misclassified"].clone()),
            "pydnsbl_error_as_listed": py.as_ref().ok().map(|v| v["error_as_listed"].clone()),
            "pydnsbl_why_missing": py.as_ref().err(),
            "ratio": py_rate.zip(first.ours.rates).map(|(p, r)| round2(r.median / p)),
            "server_ceiling_qps": ceiling.map(f64::round),
            "targets": {"vs_dnsperf": TARGET_VS_DNSPERF, "vs_pydnsbl": TARGET_VS_PYDNSBL, "misclassified": 0},
            "targets_met": levels.iter().all(|l| l.meets_targets(py_rate)),
            "by_concurrency": by_concurrency,
        })
    );
}

/// Both clients at one concurrency.
struct Level {
    concurrency: usize,
    ours: Ours,
    /// dnsperf's queries/s per round, or why it was not run.
    perf: Result<Vec<PerfRun>, String>,
    /// mailfleet checks/s ÷ dnsperf queries/s, round by round.
    ratios: Vec<f64>,
}

impl Level {
    fn perf_rates(&self) -> Option<Spread> {
        let runs = self.perf.as_ref().ok()?;
        Spread::of(&runs.iter().map(|r| r.qps).collect::<Vec<_>>())
    }

    fn meets_targets(&self, py_rate: Option<f64>) -> bool {
        let vs_dnsperf = Spread::of(&self.ratios).is_some_and(|r| r.median >= TARGET_VS_DNSPERF);
        let vs_py = py_rate
            .zip(self.ours.rates)
            .is_some_and(|(p, r)| r.median / p >= TARGET_VS_PYDNSBL);
        vs_dnsperf && vs_py && self.ours.misclassified == 0
    }

    fn json(&self, py_rate: Option<f64>) -> Value {
        let perf_lost = self
            .perf
            .as_ref()
            .ok()
            .map(|runs| runs.iter().map(|r| r.lost_pct).fold(0.0, f64::max));
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "concurrency": self.concurrency,
            "checks_per_s": self.ours.rates.map(|r| r.json(0)),
            "queries_per_s": self.ours.rates.zip(self.ours.queries_per_check).map(|(r, q)| (r.median * q).round()),
            "p99_ms": round2(self.ours.p99_ms),
            "misclassified": self.ours.misclassified,
            "resent": self.ours.resent,
            "smallest_window": self.ours.smallest_window,
            "cpu_us_per_check": self.ours.cpu_us.map(|r| r.json(2)),
            "dnsperf_qps": self.perf_rates().map(|r| r.json(0)),
            "dnsperf_cpu_us_per_query": self.perf.as_ref().ok().and_then(|runs| Spread::of(&runs.iter().map(|r| r.cpu_us).collect::<Vec<_>>())).map(|r| r.json(2)),
            "dnsperf_lost_pct": perf_lost.map(round2),
            "dnsperf_why_missing": self.perf.as_ref().err(),
            "vs_dnsperf": Spread::of(&self.ratios).map(|r| r.json(2)),
            "vs_pydnsbl": py_rate.zip(self.ours.rates).map(|(p, r)| json!({
                "min": round2(r.min / p), "median": round2(r.median / p)
            })),
            "targets_met": self.meets_targets(py_rate),
        })
    }
}

/// RUNS rounds of mailfleet and dnsperf at `concurrency`, then the latency of single checks.
fn measure_level(
    server: &Pdns,
    fixture: &Arc<Fixture>,
    dnsperf: Result<&DnsPerf, &String>,
    concurrency: usize,
) -> Level {
    let ours = OursAt::start(server.dns_addr(), fixture.clone(), concurrency);
    let api = server.api_client();
    let mut rates = Vec::with_capacity(RUNS);
    let mut perf_runs = Vec::with_capacity(RUNS);
    let mut perf_failed: Option<String> = dnsperf.err().cloned();
    let mut ratios = Vec::with_capacity(RUNS);
    let mut misclassified = 0;
    let mut queries_per_check: Option<f64> = None;
    let mut examples = Vec::new();
    let mut cpu = Vec::with_capacity(RUNS);
    for round in 0..RUNS {
        let mut our_run = || {
            let before = api.statistic("udp-queries").ok();
            let run = ours.timed_run();
            if let (Some(b), Some(a)) = (before, api.statistic("udp-queries").ok()) {
                let per_check = (a - b) as f64 / run.checks as f64;
                queries_per_check = Some(queries_per_check.map_or(per_check, |q| q.min(per_check)));
            }
            misclassified = misclassified.max(run.misclassified);
            cpu.push(run.cpu_us);
            examples.extend(run.examples.into_iter().take(5 - examples.len().min(5)));
            run.rate
        };
        let mut perf_run = || match (dnsperf, &perf_failed) {
            (Ok(d), None) => match d.run_once(server.dns_addr(), concurrency) {
                Ok(r) => Some(r),
                Err(e) => {
                    perf_failed = Some(e);
                    None
                }
            },
            _ => None,
        };
        // Swapped every round, so neither always runs on a machine the other just warmed.
        let (rate, perf) = if round % 2 == 0 {
            let rate = our_run();
            (rate, perf_run())
        } else {
            let perf = perf_run();
            (our_run(), perf)
        };
        rates.push(rate);
        if let Some(p) = perf {
            ratios.push(rate / p.qps);
            println!(
                "  round {}: mailfleet {rate:.0} checks/s ({:.1} µs CPU per check), dnsperf {:.0} queries/s ({:.1} µs CPU per query, {:.2}% lost): {:.2}",
                round + 1,
                cpu.last().copied().unwrap_or_default(),
                p.qps,
                p.cpu_us,
                p.lost_pct,
                rate / p.qps
            );
            perf_runs.push(p);
        } else {
            println!(
                "  round {}: mailfleet {rate:.0} checks/s ({:.1} µs CPU per check)",
                round + 1,
                cpu.last().copied().unwrap_or_default()
            );
        }
    }
    let (p99_ms, latency_wrong) = ours.latency();
    misclassified = misclassified.max(latency_wrong);
    let pacing = ours.checker.pacing();
    let level = Level {
        concurrency,
        ours: Ours {
            rates: Spread::of(&rates),
            cpu_us: Spread::of(&cpu),
            p99_ms,
            queries_per_check,
            misclassified,
            examples,
            resent: pacing.losses,
            smallest_window: pacing.smallest_window,
        },
        perf: match perf_failed {
            Some(why) => Err(why),
            None => Ok(perf_runs),
        },
        ratios,
    };
    level.print();
    level
}

impl Level {
    fn print(&self) {
        let c = self.concurrency;
        let o = &self.ours;
        if let Some(r) = o.rates {
            println!(
                "mailfleet at concurrency {c}: {:.0} checks/s min, {:.0} median, {:.0} max over {RUNS} runs of {PASSES} x check_all; p99 {:.2} ms per check; {} server queries per check; {} misclassified (worst run); {} queries sent again, window down to {}",
                r.min,
                r.median,
                r.max,
                o.p99_ms,
                o.queries_per_check.map_or("?".to_string(), |q| format!("{q:.3}")),
                o.misclassified,
                o.resent,
                o.smallest_window,
            );
        }
        for line in &o.examples {
            println!("  misclassified: {line}");
        }
        match (&self.perf, self.perf_rates(), Spread::of(&self.ratios)) {
            (Ok(_), Some(p), Some(ratio)) => println!(
                "dnsperf at concurrency {c}: {:.0} queries/s min, {:.0} median, {:.0} max; mailfleet / dnsperf round by round: {:.2} min, {:.2} median (target >= {TARGET_VS_DNSPERF})",
                p.min, p.median, p.max, ratio.min, ratio.median
            ),
            (Err(why), _, _) => println!("dnsperf at concurrency {c}: not measured: {why}"),
            _ => println!("dnsperf at concurrency {c}: no run"),
        }
    }
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
    /// Checks/s of each run (PASSES x check_all).
    rates: Option<Spread>,
    /// CPU µs per check of each run.
    cpu_us: Option<Spread>,
    p99_ms: f64,
    /// Queries the server received per check (A, plus TXT for listings), fewest of the runs.
    queries_per_check: Option<f64>,
    /// Wrong verdicts in the worst pass (of IPS × ZONES).
    misclassified: usize,
    examples: Vec<String>,
    /// Queries sent again after going unanswered for an RTO, over every run.
    resent: u64,
    /// The smallest the window of queries in flight became.
    smallest_window: usize,
}

/// One timed run of ours.
struct Run {
    rate: f64,
    checks: usize,
    /// CPU time of this process per check, in µs (every thread: the client's cost).
    cpu_us: f64,
    misclassified: usize,
    examples: Vec<String>,
}

/// A checker at one concurrency, on a runtime like the console's (multi-threaded, one worker
/// per core; MAILFLEET_BENCH_RUNTIME=current_thread runs it on one thread instead). Every
/// measurement runs as a task spawned on it.
struct OursAt {
    rt: tokio::runtime::Runtime,
    checker: Arc<Checker>,
    fixture: Arc<Fixture>,
    concurrency: usize,
}

impl OursAt {
    fn start(dns: SocketAddr, fixture: Arc<Fixture>, concurrency: usize) -> OursAt {
        let current = std::env::var("MAILFLEET_BENCH_RUNTIME").as_deref() == Ok("current_thread");
        let rt = if current {
            tokio::runtime::Builder::new_current_thread()
        } else {
            tokio::runtime::Builder::new_multi_thread()
        }
        .enable_all()
        .build()
        .expect("tokio runtime");
        let checker = rt.block_on(async {
            Checker::new(&CheckerConfig {
                resolver: Some(dns),
                timeout: TIMEOUT,
                concurrency,
            })
            .expect("build checker")
        });
        let ours = OursAt {
            rt,
            checker: Arc::new(checker),
            fixture,
            concurrency,
        };
        let (checker, fixture) = (ours.checker.clone(), ours.fixture.clone());
        let warm = ours.run(async move {
            for zone in &fixture.zones {
                let health = checker.health(zone).await;
                assert!(health.usable, "bench zone unusable: {health:?}");
            }
            // Warm-up: the server's packet cache, and our code paths.
            checker.check_all(&fixture.ips, &fixture.zones).await.len()
        });
        assert_eq!(
            warm,
            ours.fixture.truth.len(),
            "check_all answers every pair"
        );
        ours
    }

    /// Runs `task` as a task spawned on the runtime, and waits for it.
    fn run<F>(&self, task: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt
            .block_on(self.rt.spawn(task))
            .expect("the measuring task finishes")
    }

    /// PASSES x check_all, timed as one run; misclassifications of the worst pass.
    fn timed_run(&self) -> Run {
        let (checker, fixture) = (self.checker.clone(), self.fixture.clone());
        let cpu_before = cpu_time(libc::RUSAGE_SELF);
        let mut run = self.run(async move {
            let fixture = &*fixture;
            let started = Instant::now();
            let mut passes = Vec::with_capacity(PASSES);
            for _ in 0..PASSES {
                passes.push(checker.check_all(&fixture.ips, &fixture.zones).await);
            }
            let took = started.elapsed();
            let checks = passes.iter().map(Vec::len).sum::<usize>();
            let mut run = Run {
                rate: checks as f64 / took.as_secs_f64(),
                checks,
                cpu_us: 0.0,
                misclassified: 0,
                examples: Vec::new(),
            };
            for verdicts in &passes {
                let why: Vec<String> = verdicts.iter().filter_map(|v| wrong(v, fixture)).collect();
                run.misclassified = run.misclassified.max(why.len());
                run.examples.extend(why.into_iter().take(5));
            }
            run
        });
        // Includes checking the verdicts against the truth: a little more than the client's.
        let cpu = cpu_time(libc::RUSAGE_SELF).saturating_sub(cpu_before);
        run.cpu_us = cpu.as_secs_f64() * 1e6 / run.checks as f64;
        run
    }

    /// Per-check latency: the same checks, `concurrency` in flight, each timed on its own
    /// (RUNS passes). The p99 in ms, and the misclassified of the worst pass.
    fn latency(&self) -> (f64, usize) {
        let (checker, fixture) = (self.checker.clone(), self.fixture.clone());
        let concurrency = self.concurrency;
        self.run(async move {
            let fixture = &*fixture;
            // (ip, zone index): a reference in the stream's item trips the Send check.
            let pairs: Vec<(Ipv4Addr, usize)> = fixture
                .ips
                .iter()
                .flat_map(|ip| (0..fixture.zones.len()).map(move |z| (*ip, z)))
                .collect();
            let mut latencies: Vec<Duration> = Vec::with_capacity(pairs.len() * RUNS);
            let mut worst = 0;
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
                let wrong_here = timed
                    .iter()
                    .filter(|(v, _)| wrong(v, fixture).is_some())
                    .count();
                worst = worst.max(wrong_here);
                latencies.extend(timed.iter().map(|(_, took)| *took));
            }
            latencies.sort();
            let p99 = latencies[(latencies.len() * 99).div_ceil(100).saturating_sub(1)];
            (p99.as_secs_f64() * 1000.0, worst)
        })
    }
}

/// CPU time (user + system) used so far by this process (`RUSAGE_SELF`) or by its children
/// that were waited for (`RUSAGE_CHILDREN`).
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given, which outlives the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Why a verdict disagrees with the truth, if it does.
fn wrong(v: &Verdict, fixture: &Fixture) -> Option<String> {
    let Some(truth) = fixture.truth.get(&(v.ip, v.zone.clone())) else {
        return Some(format!("{} on {}: not a pair of the fixture", v.ip, v.zone));
    };
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

/// The query file dnsperf reads: every check's A query, in the fixture's order.
struct DnsPerf {
    _dir: tempfile::TempDir,
    list: PathBuf,
}

struct PerfRun {
    qps: f64,
    /// dnsperf's CPU time per query sent, in µs.
    cpu_us: f64,
    /// Queries dnsperf counted as lost.
    lost_pct: f64,
}

impl DnsPerf {
    fn prepare(fixture: &Fixture) -> Result<DnsPerf, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let list = dir.path().join("queries.txt");
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
        Ok(DnsPerf { _dir: dir, list })
    }

    /// One run: PASSES times through the list, `concurrency` queries outstanding.
    fn run_once(&self, addr: SocketAddr, concurrency: usize) -> Result<PerfRun, String> {
        let cpu_before = cpu_time(libc::RUSAGE_CHILDREN);
        let text = run_bounded(
            Command::new("dnsperf")
                .arg("-s")
                .arg(addr.ip().to_string())
                .arg("-p")
                .arg(addr.port().to_string())
                .arg("-d")
                .arg(&self.list)
                .arg("-n")
                .arg(PASSES.to_string())
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
        let lost_pct = match (figure("Queries sent"), figure("Queries lost")) {
            (Some(sent), Some(lost)) if sent > 0.0 => lost * 100.0 / sent,
            _ => 0.0,
        };
        let sent = figure("Queries sent").unwrap_or(0.0).max(1.0);
        let cpu = cpu_time(libc::RUSAGE_CHILDREN).saturating_sub(cpu_before);
        Ok(PerfRun {
            qps,
            lost_pct,
            cpu_us: cpu.as_secs_f64() * 1e6 / sent,
        })
    }
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
