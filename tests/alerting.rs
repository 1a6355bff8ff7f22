//! Issue 16, item 7: alerts go to the configured sinks. Email through an SMTP relay (here
//! mailfleet's own sink, a real SMTP server on loopback): `mailfleet alerts test` sends a
//! synthetic one at once; a raised alert is sent once, by the engine's router; one that
//! could not be sent keeps why and is sent when its claim lapses.

mod support;

use mailfleet::access::sink::Sink;
use mailfleet::engine;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A clock this far ahead of the wall clock.
#[derive(Debug)]
struct Ahead(chrono::Duration);

impl mailfleet::clock::Clock for Ahead {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.0
    }
}

/// Runs the `mailfleet` program on the test's database and config, as an operator would.
fn mailfleet(
    dir: &std::path::Path,
    db: &std::path::Path,
    cfg: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .arg("--db")
        .arg(db)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("XDG_STATE_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env_remove("MAILFLEET_CONFIG")
        .output()
        .expect("mailfleet runs")
}

fn alerting(relay: &str) -> String {
    format!(
        "[alerting]\nemail_relay = \"{relay}\"\nemail_tls = \"none\"\n\
         email_from = \"mailfleet@example.test\"\nemail_to = [\"probe-ops@ops.test\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_sent_once_by_email_and_a_failed_send_is_tried_again() {
    let sink = Sink::start("127.0.0.1:0".parse().expect("addr"), "ops.test")
        .await
        .expect("sink");
    let dir = tempfile::tempdir().expect("tmp");
    let overrides = format!("{FAST}\n{}", alerting(&sink.addr().to_string()));
    let cfg_path = dir.path().join("alerts.toml");
    std::fs::write(&cfg_path, &overrides).expect("config");
    let cfg = config(&overrides);
    let db = db_path(&dir);
    let store = open(&db, &cfg).await;

    // `alerts test`, as an operator checks the routing before an incident needs it.
    let out = mailfleet(dir.path(), &db, &cfg_path, &["alerts", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("test alert sent to 1 through"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = sink
        .wait_for("ops", Duration::from_secs(10))
        .await
        .expect("the test alert arrives");
    let subject = got.header("Subject").expect("subject");
    assert!(subject.starts_with("[mailfleet HIGH] test:"), "{subject}");
    assert_eq!(got.mail_from, "mailfleet@example.test");

    // A real alert: a node whose agent went quiet.
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "al-1").await;
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    mailfleet::agent::issue_token(&store, &cfg.dkim.key_env, &req.id, chrono::Utc::now())
        .await
        .expect("token");
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let marked = store
        .mark_silent_nodes(later - chrono::Duration::minutes(1), later)
        .await
        .expect("check");
    assert_eq!(marked.len(), 1);

    // The relay is down at first: nothing is sent, the alert keeps why.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let broken = mailfleet::alerting::Router::from_config(
        &config(&format!("{FAST}\n{}", alerting(&dead_addr.to_string()))).alerting,
    )
    .expect("router")
    .expect("a sink");
    let now: mailfleet::clock::SharedClock = Arc::new(Ahead(chrono::Duration::zero()));
    assert_eq!(mailfleet::alerting::pass(&store, &broken, &now).await, 0);
    let path = db.clone();
    let (notified, error): (Option<String>, Option<String>) =
        tokio::task::spawn_blocking(move || {
            rusqlite::Connection::open(path)
                .expect("db")
                .query_row(
                    "SELECT notified_at, notify_error FROM alerts WHERE kind = 'heartbeat'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("alert")
        })
        .await
        .expect("join");
    assert!(notified.is_none());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains(&dead_addr.to_string())),
        "{error:?}"
    );

    // While the failed send's claim holds, nobody sends it; once it lapses, it goes out.
    let router = mailfleet::alerting::Router::from_config(&cfg.alerting)
        .expect("router")
        .expect("a sink");
    assert_eq!(mailfleet::alerting::pass(&store, &router, &now).await, 0);
    let lapsed: mailfleet::clock::SharedClock = Arc::new(Ahead(chrono::Duration::minutes(3)));
    assert_eq!(mailfleet::alerting::pass(&store, &router, &lapsed).await, 1);
    let got = sink
        .wait_for("ops", Duration::from_secs(10))
        .await
        .expect("the alert arrives");
    let subject = got.header("Subject").expect("subject");
    assert!(
        subject.starts_with("[mailfleet HIGH] heartbeat:"),
        "{subject}"
    );
    assert!(subject.contains("no heartbeat"), "{subject}");
    // Once: nothing more to send.
    let much_later: mailfleet::clock::SharedClock = Arc::new(Ahead(chrono::Duration::hours(2)));
    assert_eq!(
        mailfleet::alerting::pass(&store, &router, &much_later).await,
        0
    );

    // The agent reports again: the node comes back, the alert resolves, and its resolution
    // is sent, once.
    let issued = store
        .agent_token(&req.id)
        .await
        .expect("read")
        .expect("kept")
        .issued_at;
    let back = store
        .accept_report(
            &req.id,
            &issued,
            mailfleet::agent::report::Report {
                seq: 1,
                measured_at: chrono::Utc::now().to_rfc3339(),
                cpu_pct: 10.0,
                mem_used: 1,
                mem_total: 2,
                queue_free: 1,
                queue_len: 0,
                net_rx: 0,
                net_tx: 0,
                delivered: 0,
                bounced: 0,
                deferred: 0,
                complaints: 0,
            },
            chrono::Utc::now() + chrono::Duration::hours(2),
        )
        .await
        .expect("report");
    assert!(
        matches!(
            back,
            mailfleet::store::Accepted::Recorded {
                recovered: true,
                ..
            }
        ),
        "{back:?}"
    );
    assert_eq!(
        mailfleet::alerting::pass(&store, &router, &much_later).await,
        1
    );
    let got = sink
        .wait_for("ops", Duration::from_secs(10))
        .await
        .expect("the resolution arrives");
    let subject = got.header("Subject").expect("subject");
    assert!(
        subject.starts_with("[mailfleet RESOLVED HIGH] heartbeat:"),
        "{subject}"
    );
    assert_eq!(
        mailfleet::alerting::pass(&store, &router, &much_later).await,
        0
    );
}

/// Issue 16, item 6: on-call acknowledges an alert (who, when, a note) and silences one
/// for a while (who, until when, why): both recorded on the alert, in the audit log and as
/// events; a silenced alert is not paged until its silence ends; a resolved alert and bad
/// input are refused with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_and_silenced_alerts_say_who_and_why_and_a_silence_holds_the_page() {
    use mailfleet::engine::Command;
    let sink = Sink::start("127.0.0.1:0".parse().expect("addr"), "ops.test")
        .await
        .expect("sink");
    let dir = tempfile::tempdir().expect("tmp");
    let overrides = format!("{FAST}\n{}", alerting(&sink.addr().to_string()));
    let cfg_path = dir.path().join("alerts.toml");
    std::fs::write(&cfg_path, &overrides).expect("config");
    let cfg = config(&overrides);
    let db = db_path(&dir);
    let store = open(&db, &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let mut alerts = Vec::new();
    for label in ["quiet-1", "quiet-2"] {
        let req = create(&ctx, "acme", "dallas", "ssd-1", label).await;
        engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
        mailfleet::agent::issue_token(&store, &cfg.dkim.key_env, &req.id, chrono::Utc::now())
            .await
            .expect("token");
    }
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let marked = store
        .mark_silent_nodes(later - chrono::Duration::minutes(1), later)
        .await
        .expect("check");
    assert_eq!(marked.len(), 2);
    for a in store.alerts(true, 10).await.expect("alerts") {
        alerts.push(a.id);
    }
    assert_eq!(alerts.len(), 2);
    let (silenced, acked) = (alerts[0].clone(), alerts[1].clone());

    // Bad input names its field; nothing is written.
    let refused = |r: Result<mailfleet::engine::Outcome, mailfleet::engine::CommandError>| {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = refused(
        execute_as(
            &ctx,
            "carol",
            Command::SilenceAlert {
                id: silenced.clone(),
                duration: Duration::from_secs(3600),
                reason: "  ".into(),
            },
        )
        .await,
    );
    assert!(e.starts_with("reason:"), "{e}");
    let e = refused(
        execute_as(
            &ctx,
            "carol",
            Command::SilenceAlert {
                id: silenced.clone(),
                duration: Duration::from_secs(8 * 24 * 3600),
                reason: "forever".into(),
            },
        )
        .await,
    );
    assert!(e.starts_with("for:"), "{e}");
    assert!(store
        .alert(&silenced)
        .await
        .expect("read")
        .is_some_and(|a| a.silenced_until.is_none()));

    // carol silences one for 2h, by a prefix of its id as lists show it.
    let prefix = &silenced[silenced.len() - 8..];
    let out = execute_as(
        &ctx,
        "carol",
        Command::SilenceAlert {
            id: prefix.to_string(),
            duration: Duration::from_secs(2 * 3600),
            reason: "provider maintenance until 05:00".into(),
        },
    )
    .await
    .expect("silence");
    assert!(
        out.describe().contains("silenced for 2h"),
        "{}",
        out.describe()
    );
    let a = store.alert(&silenced).await.expect("read").expect("alert");
    assert_eq!(a.silenced_by.as_deref(), Some("carol"));
    assert_eq!(
        a.silence_reason.as_deref(),
        Some("provider maintenance until 05:00")
    );
    assert_eq!(
        a.state_at(&mailfleet::clock::ts(chrono::Utc::now())),
        "silenced"
    );

    // The other is acknowledged from the command line, with a note.
    let out = mailfleet(
        dir.path(),
        &db,
        &cfg_path,
        &["alerts", "ack", &acked, "--reason", "looking at it"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("acknowledged by"), "{said}");
    let a = store.alert(&acked).await.expect("read").expect("alert");
    assert!(a.acked_by.as_deref().is_some_and(|w| !w.is_empty()));
    assert_eq!(a.ack_note.as_deref(), Some("looking at it"));
    // `alerts` lists who has each.
    let out = mailfleet(dir.path(), &db, &cfg_path, &["alerts"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("silenced by carol") && list.contains("acked by"),
        "{list}"
    );

    // Recorded: the audit log and the outbox say who did what.
    let audit = store.list_audit(20).await.expect("audit");
    assert!(audit.iter().any(|r| r.action == "alert.silence"
        && r.actor == "carol"
        && r.detail
            .as_deref()
            .is_some_and(|d| d.contains("provider maintenance"))));
    assert!(audit.iter().any(|r| r.action == "alert.ack"));
    let events = store
        .list_events(&mailfleet::store::EventFilter {
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("events");
    for name in ["alert.silenced", "alert.acknowledged"] {
        assert!(events.iter().any(|e| e.name == name), "{name}");
    }

    // The router pages the acknowledged one (acknowledging is not muting) and holds the
    // silenced one until its silence ends.
    let router = mailfleet::alerting::Router::from_config(&cfg.alerting)
        .expect("router")
        .expect("a sink");
    let now: mailfleet::clock::SharedClock = Arc::new(Ahead(chrono::Duration::zero()));
    assert_eq!(mailfleet::alerting::pass(&store, &router, &now).await, 1);
    let got = sink
        .wait_for("ops", Duration::from_secs(10))
        .await
        .expect("the acknowledged alert is paged");
    assert!(got
        .header("Subject")
        .is_some_and(|s| s.contains("heartbeat")));
    assert_eq!(mailfleet::alerting::pass(&store, &router, &now).await, 0);
    let after: mailfleet::clock::SharedClock = Arc::new(Ahead(chrono::Duration::minutes(121)));
    assert_eq!(mailfleet::alerting::pass(&store, &router, &after).await, 1);

    // A resolved alert is not acknowledged or silenced.
    let path = db.clone();
    let id = acked.clone();
    tokio::task::spawn_blocking(move || {
        rusqlite::Connection::open(path)
            .expect("db")
            .execute(
                "UPDATE alerts SET resolved_at = '2026-01-01T00:00:00Z' WHERE id = ?",
                [id],
            )
            .expect("resolve")
    })
    .await
    .expect("join");
    let e = refused(
        execute_as(
            &ctx,
            "carol",
            Command::AckAlert {
                id: acked.clone(),
                note: None,
            },
        )
        .await,
    );
    assert!(e.contains("is resolved"), "{e}");
}

async fn execute_as(
    ctx: &Arc<mailfleet::engine::Ctx>,
    actor: &str,
    c: mailfleet::engine::Command,
) -> Result<mailfleet::engine::Outcome, mailfleet::engine::CommandError> {
    mailfleet::engine::commands::execute(ctx, actor, c).await
}

#[test]
fn bad_alerting_settings_name_their_field() {
    let bad = |extra: &str| {
        mailfleet::config::from_layers(&[
            (
                "(built-in defaults)".to_string(),
                mailfleet::config::DEFAULT_TOML.to_string(),
            ),
            ("test".to_string(), format!("[alerting]\n{extra}")),
        ])
        .expect_err("refused")
        .to_string()
    };
    assert!(
        bad("email_relay = \"smtp.example.com\"\nemail_to = [\"a@example.com\"]\n")
            .contains("alerting.email_relay")
    );
    assert!(bad("email_relay = \"smtp.example.com:25\"\n").contains("alerting.email_to"));
    assert!(
        bad("email_relay = \"smtp.example.com:25\"\nemail_to = [\"not an address\"]\n")
            .contains("alerting.email_to[0]")
    );
    assert!(bad("min_severity = \"urgent\"\n").contains("alerting.min_severity"));
    assert!(bad("email_user_env = \"U\"\n").contains("alerting.email_password_env"));
}
