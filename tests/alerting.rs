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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&cfg_path)
        .args(["alerts", "test"])
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("MAILFLEET_CONFIG")
        .output()
        .expect("alerts test");
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
