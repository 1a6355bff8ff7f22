//! Issue 16's bench: `mailfleet serve` taking heartbeats from 10,000 nodes at 30 s
//! intervals, and what that costs it in CPU.
//!
//! A demo fleet of `MAILFLEET_BENCH_NODES` nodes (default 10000) is made in a temp dir,
//! each live node issued an agent token (sealed in the database). The real `mailfleet
//! serve` process then runs on it (its engine, the heartbeat watch and the HTTPS listener),
//! and this process plays the agents: every node sends one signed report every 30 s, spread
//! evenly over the interval, over `MAILFLEET_BENCH_CONNS` keep-alive TLS connections
//! (default 500; a real agent keeps its own connection open between reports). The first
//! round (one interval) is measured on its own: a serve just started loads the agents'
//! tokens and meets each agent's connection for the first time. After that round and 10 s
//! more, for `MAILFLEET_BENCH_S` seconds (default 60), it measures:
//!
//! - **CPU** of the serve process (user+system, `/proc/PID/stat`), as a percentage of one
//!   core, with every agent reporting as it does from then on. Target < 5%.
//! - reports accepted per second, and the latency of each report (p50, p99), as an agent
//!   sees it.
//!
//! The demo fleet comes with requests in flight and queued behind its tenants' limits;
//! before `serve` starts, `mailfleet work --until-idle` (on the simulated cloud with its
//! delays at zero) finishes them, so that what is measured is a fleet in service reporting,
//! not the provisioning of a few hundred more nodes. What a person has to decide
//! (approvals, access details, quota) stays waiting, as it would.
//!
//! Every report must be accepted, and each is a heartbeat row afterwards. Ends with one
//! JSON line.
//!
//! `MAILFLEET_BENCH_SETTLED=FILE` keeps the settled fleet in FILE, or starts from it when it
//! is there (for repeated runs while tuning).

use mailfleet::agent::report::{self, Report};
use mailfleet::config::{self, Config};
use mailfleet::demo::DemoSpec;
use serde_json::json;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("name") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64((utime + stime) as f64 / hz)
}

/// Context switches of all of the process's threads so far (voluntary and not).
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

fn main() {
    let nodes = knob("MAILFLEET_BENCH_NODES", 10_000) as usize;
    let conns = knob("MAILFLEET_BENCH_CONNS", 500) as usize;
    let window = Duration::from_secs(knob("MAILFLEET_BENCH_S", 60));
    let interval = Duration::from_secs(30);
    // The first round, then 10 s more before the window.
    let warm = interval + Duration::from_secs(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base = std::env::var("MAILFLEET_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let dir = tempfile::Builder::new()
        .prefix("mailfleet-serve-bench-")
        .tempdir_in(base)
        .expect("temp dir");
    // Tokens sealed in the database, as a production engine keeps them.
    let key_env = "MAILFLEET_BENCH_SEALING_KEY";
    std::env::set_var(key_env, "c2VydmUtYmVuY2gtc2VhbGluZy1rZXktMzItYnl0ZXM=");
    let port = free_port();
    let defaults =
        config::from_layers(&[("(built-in defaults)".into(), config::DEFAULT_TOML.into())])
            .expect("defaults");
    let spec = DemoSpec { nodes, seed: 7 };
    let mut cfg: Config = mailfleet::demo::config_for(&defaults, &spec);
    cfg.dkim.key_env = key_env.into();
    cfg.serve.listen = format!("127.0.0.1:{port}");
    cfg.serve.heartbeat_interval = interval;
    // No DNSBL queries from the bench machine: the ingest path is what is measured.
    cfg.blocklists.monitor = false;
    // This process plays the agents; the engine's own simulated ones would add reports.
    cfg.providers.sim.agents = false;
    let cfg_path = dir.path().join("serve.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).expect("toml")).expect("settings");
    let db = dir.path().join("mailfleet.db");

    // A settled fleet kept from an earlier run (MAILFLEET_BENCH_SETTLED names the file), so
    // that repeated runs measure serve without making and settling the fleet again.
    let kept = std::env::var_os("MAILFLEET_BENCH_SETTLED").map(std::path::PathBuf::from);
    let reuse = kept.as_ref().is_some_and(|k| k.exists());
    if let Some(k) = kept.as_ref().filter(|_| reuse) {
        std::fs::copy(k, &db).expect("the kept fleet");
        eprintln!("fleet from {}", k.display());
    }
    let t = Instant::now();
    // The live nodes' agents (their provisioning requests), as generated.
    let ids: Vec<String> = rt.block_on(async {
        let store = mailfleet::store::Store::open(&db, &cfg.store)
            .await
            .expect("store");
        if !reuse {
            mailfleet::demo::generate(&store, &cfg, &spec, chrono::Utc::now())
                .await
                .expect("demo fleet");
        }
        let live = store.list_nodes(&Default::default()).await.expect("nodes");
        live.into_iter()
            .filter(|n| n.status != "decommissioned")
            .filter_map(|n| n.request_id)
            .collect()
    });
    eprintln!(
        "fleet of {} nodes made in {:.1} s",
        ids.len(),
        t.elapsed().as_secs_f64()
    );

    // The fleet's own work finished first (see the header), on a cloud without delays.
    let t = Instant::now();
    let mut settle = cfg.clone();
    settle.providers.sim.delay_ms = [0, 0];
    settle.providers.sim.boot_ms = [0, 0];
    settle.dns.propagation_interval = Duration::from_millis(20);
    settle.engine.poll_interval = Duration::from_millis(20);
    settle.engine.tick = Duration::from_millis(50);
    settle.engine.retry_jitter = 0.0;
    settle.engine.retry_backoff = vec![Duration::from_millis(100)];
    let settle_path = dir.path().join("settle.toml");
    std::fs::write(&settle_path, toml::to_string(&settle).expect("toml")).expect("settings");
    if !reuse {
        let settled = Command::new(env!("CARGO_BIN_EXE_mailfleet"))
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&settle_path)
            .args(["work", "--until-idle"])
            .env("XDG_STATE_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("MAILFLEET_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("work --until-idle");
        assert!(settled.success(), "work --until-idle: {settled}");
        if let Some(k) = &kept {
            rusqlite::Connection::open(&db)
                .expect("db")
                .execute("VACUUM INTO ?", [k.display().to_string()])
                .expect("keep the settled fleet");
        }
    }
    eprintln!(
        "the fleet's requests in flight finished in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Tokens issued last, so that no agent has been quiet for long when serve starts.
    let agents: Vec<(String, Vec<u8>)> = rt.block_on(async {
        let store = mailfleet::store::Store::open(&db, &cfg.store)
            .await
            .expect("store");
        let mut out = Vec::new();
        for agent in ids {
            let token = mailfleet::agent::issue_token(&store, key_env, &agent, chrono::Utc::now())
                .await
                .expect("token");
            out.push((agent, token.as_bytes().to_vec()));
        }
        out
    });

    let mut serve = Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&cfg_path)
        .arg("serve")
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("MAILFLEET_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let pid = serve.id();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("serve's first line");
    let url = format!("https://127.0.0.1:{port}/v1/report");
    // The same process with no agent reporting: what its engine and heartbeat watch cost.
    std::thread::sleep(Duration::from_secs(5));
    let (i0, c0) = (Instant::now(), cpu_time(pid));
    std::thread::sleep(Duration::from_secs(knob("MAILFLEET_BENCH_IDLE_S", 15)));
    let idle_pct = (cpu_time(pid) - c0).as_secs_f64() / i0.elapsed().as_secs_f64() * 100.0;
    let root = std::fs::read(dir.path().join("serve").join("root.pem")).expect("root");

    let result = rt.block_on(async move {
        let root = reqwest::Certificate::from_pem(&root).expect("root");
        let clients: Vec<reqwest::Client> = (0..conns)
            .map(|_| {
                reqwest::Client::builder()
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(root.clone())
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client")
            })
            .collect();
        let clients = Arc::new(clients);
        let agents = Arc::new(agents);
        let n = agents.len();
        // Every agent once per interval, evenly spread: one report every interval/n.
        let gap = interval.as_secs_f64() / n as f64;
        let start = tokio::time::Instant::now();
        let total = warm + window;
        let sent = (total.as_secs_f64() / gap) as usize;
        let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(sent)));
        let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut cpu_start = None;
        let mut first_round = None;
        let round_start = cpu_time(pid);
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..sent {
            let due = start + Duration::from_secs_f64(k as f64 * gap);
            tokio::time::sleep_until(due).await;
            if first_round.is_none() && due >= start + interval {
                let cpu = cpu_time(pid) - round_start;
                first_round = Some(cpu.as_secs_f64() / interval.as_secs_f64() * 100.0);
            }
            if cpu_start.is_none() && due >= start + warm {
                cpu_start = Some((Instant::now(), cpu_time(pid), switches(pid)));
            }
            let measured = cpu_start.is_some();
            let (clients, agents, url) = (clients.clone(), agents.clone(), url.clone());
            let (latencies, failures) = (latencies.clone(), failures.clone());
            tasks.spawn(async move {
                let (agent, token) = &agents[k % n];
                let r = Report {
                    seq: (k / n) as u64 + 1,
                    measured_at: chrono::Utc::now().to_rfc3339(),
                    cpu_pct: 3.0,
                    mem_used: 512 << 20,
                    mem_total: 2 << 30,
                    queue_free: 10 << 30,
                    queue_len: 4,
                    net_rx: 100_000,
                    net_tx: 400_000,
                    delivered: 40,
                    bounced: 1,
                    deferred: 2,
                    complaints: 0,
                };
                let body = serde_json::to_vec(&r).expect("json");
                let time = chrono::Utc::now().timestamp();
                let t = Instant::now();
                let answer = clients[k % clients.len()]
                    .post(&url)
                    .header(report::AGENT_HEADER, agent)
                    .header(report::TIME_HEADER, time.to_string())
                    .header(report::SIGNATURE_HEADER, report::sign(token, time, &body))
                    .body(body)
                    .send()
                    .await;
                let ok = matches!(&answer, Ok(a) if a.status().is_success());
                if !ok {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if measured {
                    latencies
                        .lock()
                        .expect("lock")
                        .push(t.elapsed().as_secs_f64() * 1000.0);
                }
            });
            // Reap finished ones as we go.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let (t0, c0, s0) = cpu_start.expect("the window began");
        let elapsed = t0.elapsed();
        let cpu = cpu_time(pid) - c0;
        let switched = switches(pid).saturating_sub(s0);
        let mut l = latencies.lock().expect("lock").clone();
        l.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            l.get(((l.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        (
            sent,
            failures.load(std::sync::atomic::Ordering::Relaxed),
            l.len() as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
            q(0.5),
            q(0.99),
            switched as f64 / l.len().max(1) as f64,
            first_round.unwrap_or(0.0),
        )
    });
    let _ = serve.kill();
    let _ = serve.wait();
    let (sent, failed, rate, cpu_pct, p50, p99, per_report, first_pct) = result;
    // Every report is a heartbeat row.
    let rows: i64 = rusqlite::Connection::open(&db)
        .expect("db")
        .query_row("SELECT COUNT(*) FROM node_heartbeats", [], |r| r.get(0))
        .expect("count");
    println!("serve: {nodes} nodes reporting every 30 s over {conns} connections");
    println!("  reports sent {sent}, refused or failed {failed}, heartbeat rows {rows}");
    println!("  accepted {rate:.0} reports/s over {} s", window.as_secs());
    println!("  serve CPU {cpu_pct:.2}% of one core (target < 5%); {idle_pct:.2}% with no agent reporting");
    println!(
        "  first round after start (tokens loaded, each agent's first report): {first_pct:.2}%"
    );
    println!("  latency p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!("  serve's threads switched {per_report:.1} times per report");
    let ok = failed == 0 && rows == sent as i64 && cpu_pct < 5.0;
    println!(
        "{}",
        json!({
            "bench": "serve",
            "nodes": nodes,
            "connections": conns,
            "window_s": window.as_secs(),
            "reports": sent,
            "failed": failed,
            "heartbeat_rows": rows,
            "reports_per_s": rate,
            "serve_cpu_pct_of_core": cpu_pct,
            "serve_idle_cpu_pct_of_core": idle_pct,
            "first_round_cpu_pct_of_core": first_pct,
            "target_cpu_pct": 5.0,
            "p50_ms": p50,
            "p99_ms": p99,
            "context_switches_per_report": per_report,
            "defaults": nodes == 10_000 && conns == 500 && window.as_secs() == 60,
            "ok": ok,
        })
    );
}
