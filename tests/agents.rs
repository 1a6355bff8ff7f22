//! Issue 16: the monitoring agent and `serve`. A real `mailfleet agent` process reports to
//! the HTTPS listener on loopback, with its node's own token: its heartbeats arrive, its
//! Postfix log's deliveries reach the node's warm-up day, and reports it could not send
//! while the server was away arrive late, none lost. Stopped, its node goes unhealthy after
//! the missed heartbeats, with an alert, and comes back when it reports again. Forged,
//! replayed, stale, oversized and malformed reports are refused, counted, and never written.

mod support;

use mailfleet::agent::report::{self, Report};
use mailfleet::engine;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// The agent process, killed when the test ends however it ends.
struct Agent(Child);

impl Agent {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn agent(server: &str, id: &str, dir: &Path, log: &Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .args(["agent", "--server", server, "--id", id])
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--ca-file")
        .arg(dir.join("serve").join("root.pem"))
        .arg("--state-dir")
        .arg(dir.join("agent-state"))
        .arg("--maillog")
        .arg(log)
        .arg("--queue-dir")
        .arg(dir)
        .args(["--interval", "150ms"])
        .env_remove("MAILFLEET_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("XDG_STATE_HOME", dir)
        .env("MAILFLEET_LOG", "debug")
        .spawn()
        .expect("spawn the agent");
    Agent(child)
}

/// Every log file under `dir`, for a failure's message.
fn walk(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&walk(&p));
        } else if p.extension().is_some_and(|x| x == "log") || p.to_string_lossy().contains("log.")
        {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

async fn heartbeats(store: &mailfleet::store::Store, node: &str) -> Vec<i64> {
    let path = store.path().to_path_buf();
    let node = node.to_string();
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(path).expect("open");
        let mut st = c
            .prepare("SELECT seq FROM node_heartbeats WHERE node_id = ? ORDER BY seq")
            .expect("prepare");
        st.query_map([node], |r| r.get(0))
            .expect("query")
            .collect::<Result<Vec<i64>, _>>()
            .expect("rows")
    })
    .await
    .expect("join")
}

async fn until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reports_its_node_goes_unhealthy_when_it_stops_and_comes_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!(
        "{FAST}\n[serve]\nlisten = \"127.0.0.1:0\"\nheartbeat_interval = \"150ms\"\nmissed_heartbeats = 3\n"
    ));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "hb-1").await;
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    let node = store
        .request_detail(&req.id)
        .await
        .expect("detail")
        .node
        .expect("a node");
    assert_eq!(node.status, "warming");

    // The node's token, as the bootstrap would install it.
    let token =
        mailfleet::agent::issue_token(&store, &cfg.dkim.key_env, &req.id, chrono::Utc::now())
            .await
            .expect("token");
    std::fs::write(dir.path().join("token"), token.as_bytes()).expect("token file");

    // serve's own certificate, kept beside the database: agents trust its root.
    let id = mailfleet::serve::identity(&cfg, &store).expect("identity");
    assert!(id.root_pem.is_some());
    let server = mailfleet::serve::Server::new(store.clone(), &cfg, system_clock());
    let listening =
        mailfleet::serve::listen("127.0.0.1:0".parse().expect("addr"), &id, server.clone())
            .await
            .expect("listen");
    let port = listening.addr.port();
    let url = format!("https://127.0.0.1:{port}");
    let watch = tokio::spawn(mailfleet::serve::watch_heartbeats(
        store.clone(),
        std::sync::Arc::new(cfg.clone()),
        system_clock(),
    ));

    // A Postfix log with one delivery of each kind.
    let log = dir.path().join("maillog");
    std::fs::write(
        &log,
        "Dec  7 10:00:01 hb-1 postfix/smtp[1]: 1A: to=<a@example.com>, relay=x[192.0.2.1]:25, status=sent (250 ok)\n\
         Dec  7 10:00:02 hb-1 postfix/smtp[1]: 1B: to=<b@example.com>, relay=x[192.0.2.1]:25, status=sent (250 ok)\n\
         Dec  7 10:00:03 hb-1 postfix/smtp[1]: 1C: to=<c@example.com>, relay=x[192.0.2.1]:25, status=bounced (550 no such user)\n\
         Dec  7 10:00:04 hb-1 postfix/smtp[1]: 1D: to=<d@example.com>, relay=none, status=deferred (timed out)\n",
    )
    .expect("log");
    let mut child = agent(&url, &req.id, dir.path(), &log);
    until("heartbeats", Duration::from_secs(20), || async {
        heartbeats(&store, &node.id).await.len() >= 2
    })
    .await;
    let n = store.get_node(&node.id).await.expect("node");
    assert!(n.last_heartbeat.is_some(), "{n:?}");
    // Its deliveries reached the node's warm-up day, counted once.
    let w = store
        .node_warmup(&node.id)
        .await
        .expect("warmup")
        .expect("warming");
    let today = w.log.last().expect("a day");
    assert_eq!(
        (today.sent, today.delivered, today.bounced, today.deferred),
        (4, 2, 1, 1),
        "{today:?}"
    );

    // The server goes away: the agent keeps its reports and sends them when it is back.
    let before = heartbeats(&store, &node.id).await;
    drop(listening);
    let spool = dir.path().join("agent-state").join("spool");
    let kept = || std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    let start = tokio::time::Instant::now();
    while kept() < 2 {
        if start.elapsed() > Duration::from_secs(20) {
            panic!(
                "no reports kept while the server is away: {}\n{}",
                kept(),
                walk(dir.path())
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let spooled = kept();
    assert_eq!(
        heartbeats(&store, &node.id).await.len(),
        before.len(),
        "nothing arrives while the server is away"
    );
    let listening = mailfleet::serve::listen(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        &id,
        server.clone(),
    )
    .await
    .expect("listen again");
    until("the kept reports", Duration::from_secs(20), || async {
        heartbeats(&store, &node.id).await.len() >= before.len() + spooled
    })
    .await;
    let seqs = heartbeats(&store, &node.id).await;
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every report arrived, once, none lost");

    // The agent stops: after three missed intervals the node is unhealthy, out of rotation,
    // with an alert.
    child.stop();
    until("unhealthy", Duration::from_secs(20), || async {
        store.get_node(&node.id).await.expect("node").status == "unhealthy"
    })
    .await;
    let alerts = store.alerts(true, 50).await.expect("alerts");
    let alert = alerts
        .iter()
        .find(|a| a.kind == "heartbeat")
        .expect("a heartbeat alert");
    assert_eq!(alert.severity, "high");
    assert!(alert.message.contains("no heartbeat"), "{alert:?}");

    // It reports again: the node is back where it was, the alert resolved.
    let mut child = agent(&url, &req.id, dir.path(), &log);
    until("recovered", Duration::from_secs(20), || async {
        store.get_node(&node.id).await.expect("node").status == "warming"
    })
    .await;
    let open = store.alerts(true, 50).await.expect("alerts");
    assert!(
        !open.iter().any(|a| a.kind == "heartbeat"),
        "the alert is resolved: {open:?}"
    );
    let transitions = store.node_transitions(&node.id).await.expect("transitions");
    let path: Vec<&str> = transitions.iter().map(|t| t.to.as_str()).collect();
    assert!(
        path.windows(2).any(|w| w == ["unhealthy", "warming"]),
        "{path:?}"
    );
    child.stop();

    // Bad reports: each refused with its reason, counted, never written. A report the
    // agent sent just before it stopped may still be in serve's batch: counted once the
    // count holds still for longer than a batch waits.
    let mut written = heartbeats(&store, &node.id).await.len();
    loop {
        tokio::time::sleep(mailfleet::serve::BATCH_WAIT + Duration::from_millis(400)).await;
        let now = heartbeats(&store, &node.id).await.len();
        if now == written {
            break;
        }
        written = now;
    }
    let root = reqwest::Certificate::from_pem(id.root_pem.as_deref().expect("root").as_bytes())
        .expect("root");
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .build()
        .expect("client");
    let endpoint = format!("{url}/v1/report");
    let last = *heartbeats(&store, &node.id).await.last().expect("some") as u64;
    let make = |seq: u64| Report {
        seq,
        measured_at: chrono::Utc::now().to_rfc3339(),
        cpu_pct: 5.0,
        mem_used: 1,
        mem_total: 2,
        queue_free: 3,
        queue_len: 0,
        net_rx: 0,
        net_tx: 0,
        delivered: 100,
        bounced: 0,
        deferred: 0,
        complaints: 0,
    };
    let send = |agent: String, time: i64, body: Vec<u8>, sig: String| {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        async move {
            let r = http
                .post(&endpoint)
                .header(report::AGENT_HEADER, agent)
                .header(report::TIME_HEADER, time.to_string())
                .header(report::SIGNATURE_HEADER, sig)
                .body(body)
                .send()
                .await
                .expect("send");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let now = chrono::Utc::now().timestamp();
    let body = serde_json::to_vec(&make(last)).expect("json");
    let key = token.as_bytes();
    // A replay: the last report's sequence number again, properly signed.
    let (status, said) = send(
        req.id.clone(),
        now,
        body.clone(),
        report::sign(key, now, &body),
    )
    .await;
    assert_eq!(status, 409, "{said}");
    assert!(said.starts_with("replay"), "{said}");
    // Forged: signed with another token.
    let body = serde_json::to_vec(&make(last + 1)).expect("json");
    let (status, said) = send(
        req.id.clone(),
        now,
        body.clone(),
        report::sign(b"not-the-token", now, &body),
    )
    .await;
    assert_eq!(
        (status, said.starts_with("bad_signature")),
        (401, true),
        "{said}"
    );
    // Signed right, then changed in transit.
    let sig = report::sign(key, now, &body);
    let mut changed = body.clone();
    let at = changed.len() - 3;
    changed[at] = b'9';
    let (status, said) = send(req.id.clone(), now, changed, sig).await;
    assert_eq!(
        (status, said.starts_with("bad_signature")),
        (401, true),
        "{said}"
    );
    // Stale: signed ten minutes ago.
    let old = now - 600;
    let (status, said) = send(
        req.id.clone(),
        old,
        body.clone(),
        report::sign(key, old, &body),
    )
    .await;
    assert_eq!((status, said.starts_with("stale")), (401, true), "{said}");
    // Oversized.
    let big = vec![b' '; report::MAX_BODY + 1];
    let (status, _) = send(
        req.id.clone(),
        now,
        big.clone(),
        report::sign(key, now, &big),
    )
    .await;
    assert_eq!(status, 413);
    // Malformed, though signed.
    let junk = b"{\"seq\": \"many\"}".to_vec();
    let (status, said) = send(
        req.id.clone(),
        now,
        junk.clone(),
        report::sign(key, now, &junk),
    )
    .await;
    assert_eq!(
        (status, said.starts_with("malformed")),
        (400, true),
        "{said}"
    );
    let mut nonsense = make(last + 1);
    nonsense.cpu_pct = 250.0;
    let nonsense = serde_json::to_vec(&nonsense).expect("json");
    let (status, said) = send(
        req.id.clone(),
        now,
        nonsense.clone(),
        report::sign(key, now, &nonsense),
    )
    .await;
    assert_eq!(status, 400, "{said}");
    assert!(said.contains("cpu_pct"), "{said}");
    // An agent nobody issued a token to.
    let (status, said) = send(
        "stranger".into(),
        now,
        body.clone(),
        report::sign(key, now, &body),
    )
    .await;
    assert_eq!(
        (status, said.starts_with("unknown_agent")),
        (401, true),
        "{said}"
    );
    assert_eq!(
        heartbeats(&store, &node.id).await.len(),
        written,
        "nothing written"
    );

    // The good one still goes through.
    let (status, said) = send(
        req.id.clone(),
        now,
        body.clone(),
        report::sign(key, now, &body),
    )
    .await;
    assert_eq!(status, 200, "{said}");

    // The node is given a new token (bootstrapped again): serve takes reports signed with
    // it at once, and no longer those signed with the old one.
    let new_token =
        mailfleet::agent::issue_token(&store, &cfg.dkim.key_env, &req.id, chrono::Utc::now())
            .await
            .expect("a new token");
    let first = serde_json::to_vec(&make(1)).expect("json");
    let (status, said) = send(
        req.id.clone(),
        now,
        first.clone(),
        report::sign(key, now, &first),
    )
    .await;
    assert_eq!(
        (status, said.starts_with("bad_signature")),
        (401, true),
        "{said}"
    );
    let (status, said) = send(
        req.id.clone(),
        now,
        first.clone(),
        report::sign(new_token.as_bytes(), now, &first),
    )
    .await;
    assert_eq!(status, 200, "{said}");
    let key = new_token.as_bytes();
    let last = 0;

    // A node near its CPU's limit raises a low alert; one with room again lifts it.
    let mut busy = make(last + 2);
    busy.cpu_pct = 97.0;
    let busy = serde_json::to_vec(&busy).expect("json");
    let (status, said) = send(
        req.id.clone(),
        now,
        busy.clone(),
        report::sign(key, now, &busy),
    )
    .await;
    assert_eq!(status, 200, "{said}");
    let open_alerts = store.alerts(true, 50).await.expect("alerts");
    let cpu = open_alerts
        .iter()
        .find(|a| a.kind == "cpu")
        .expect("a cpu alert");
    assert_eq!(cpu.severity, "low");
    assert!(cpu.message.contains("CPU 97% busy"), "{cpu:?}");
    let calm = serde_json::to_vec(&make(last + 3)).expect("json");
    let (status, said) = send(
        req.id.clone(),
        now,
        calm.clone(),
        report::sign(key, now, &calm),
    )
    .await;
    assert_eq!(status, 200, "{said}");
    let open_alerts = store.alerts(true, 50).await.expect("alerts");
    assert!(
        !open_alerts.iter().any(|a| a.kind == "cpu"),
        "{open_alerts:?}"
    );

    // /healthz and /metrics.
    let health = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "mailfleet_nodes{status=\"warming\"} 1",
        "mailfleet_requests{state=\"completed\"} 1",
        "mailfleet_agents 1",
        "mailfleet_agent_reports_total{result=\"bad_signature\"} 3",
        "mailfleet_agent_reports_total{result=\"stale\"} 1",
        "mailfleet_agent_reports_total{result=\"oversized\"} 1",
        "mailfleet_agent_reports_total{result=\"malformed\"} 2",
        "mailfleet_agent_reports_total{result=\"unknown_agent\"} 1",
        "# TYPE mailfleet_heartbeat_age_max_seconds gauge",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Ours, and any report of the agent's own that was taken just as the server went away
    // (it sends it again; the server says it has it).
    let replays: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mailfleet_agent_reports_total{result=\"replay\"} "))
        .and_then(|v| v.parse().ok())
        .expect("replays counted");
    assert!(replays >= 1, "{metrics}");
    watch.abort();
    drop(listening);
}

/// `mailfleet serve` as an operator runs it: it says where it listens and which root its
/// agents trust, answers /healthz over HTTPS with that root, and `node agent-token` writes a
/// node's token to a file only root can read (a new one replaces the old).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_says_where_it_listens_and_answers_health_checks() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tmp");
    let overrides = format!("{FAST}\n[serve]\nlisten = \"127.0.0.1:0\"\n");
    let cfg_path = dir.path().join("serve.toml");
    std::fs::write(&cfg_path, &overrides).expect("config");
    let cfg = config(&overrides);
    let db = db_path(&dir);
    let store = open(&db, &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "hb-cli").await;
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    let node = store
        .request_detail(&req.id)
        .await
        .expect("detail")
        .node
        .expect("node");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mailfleet"))
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&cfg_path)
            .args(args)
            .env("XDG_STATE_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("MAILFLEET_CONFIG")
            .output()
            .expect("run")
    };
    let out_file = dir.path().join("node.token");
    let out = cli(&[
        "node",
        "agent-token",
        &node.id,
        "--out",
        out_file.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("mode 0600"), "{said}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_file)
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&out_file).expect("token");
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(!said.contains(&token), "the token is not printed");
    // Never over an existing file.
    let again = cli(&[
        "node",
        "agent-token",
        &node.id,
        "--out",
        out_file.to_str().expect("utf-8"),
    ]);
    assert!(!again.status.success());

    let mut serve = Agent(
        Command::new(env!("CARGO_BIN_EXE_mailfleet"))
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
            .expect("serve"),
    );
    let mut line = String::new();
    std::io::BufReader::new(serve.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its first line");
    let url = line
        .split_whitespace()
        .nth(1)
        .expect("an address")
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    let root_path = dir.path().join("serve").join("root.pem");
    assert!(line.contains(&root_path.display().to_string()), "{line}");
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(&root_path).expect("root")).expect("root");
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .build()
        .expect("client");
    let get = |path: &str| {
        let request = http.get(format!("{url}{path}"));
        async move { request.send().await.expect("an answer") }
    };
    let health = get("/healthz").await;
    assert_eq!(health.status().as_u16(), 200);
    // A path it does not serve, and a route asked with the wrong method.
    assert_eq!(get("/v1/nothing").await.status().as_u16(), 404);
    let wrong = get("/v1/report").await;
    assert_eq!(wrong.status().as_u16(), 405);
    assert_eq!(
        wrong.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let metrics = get("/metrics").await;
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(metrics
        .text()
        .await
        .expect("text")
        .contains("mailfleet_agent_reports_total"));
    // Without the root, the listener is not trusted.
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .build()
        .expect("client");
    assert!(stranger.get(format!("{url}/healthz")).send().await.is_err());
    serve.stop();
}

/// serve's own certificate is for the address agents are told to report to, beside the
/// one it listens on.
#[tokio::test]
async fn serve_s_certificate_covers_the_agents_address() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!(
        "{FAST}\n[serve]\nlisten = \"0.0.0.0:8443\"\nagent_url = \"https://mailfleet.example.test:8443\"\n"
    ));
    let store = open(&db_path(&dir), &cfg).await;
    let id = mailfleet::serve::identity(&cfg, &store).expect("identity");
    let info = mailfleet::tls::inspect(&id.chain_pem).expect("a certificate");
    assert!(
        info.names.iter().any(|n| n == "mailfleet.example.test"),
        "{:?}",
        info.names
    );
}

/// serve loads every live agent's token at its start in one read: both nodes' here. A
/// token it cannot read is left to be read, and refused with its reason, at the agent's
/// first report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_loads_the_live_agents_tokens_at_its_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let a = create(&ctx, "acme", "dallas", "ssd-1", "tok-a").await;
    let b = create(&ctx, "acme", "dallas", "ssd-1", "tok-b").await;
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    for req in [&a, &b] {
        mailfleet::agent::issue_token(&store, &cfg.dkim.key_env, &req.id, chrono::Utc::now())
            .await
            .expect("token");
    }
    let server = mailfleet::serve::Server::new(store.clone(), &cfg, system_clock());
    assert_eq!(server.preload_tokens().await, Ok(2));
    // A token whose file is gone cannot be read: it is left to the agent's first report.
    let kept = store.agent_token(&b.id).await.expect("read").expect("kept");
    // (No sealing key in the tests' settings: tokens are kept in files beside the database.)
    let f = kept.file.expect("kept in a file");
    std::fs::remove_file(store.key_path(&f)).expect("remove");
    let again = mailfleet::serve::Server::new(store.clone(), &cfg, system_clock());
    assert_eq!(again.preload_tokens().await, Ok(1));
}
