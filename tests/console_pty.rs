//! The real binary in a pseudo-terminal, its screen read back through a terminal emulator:
//! start on a fresh database, provision from the form, watch the request complete.

use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FAST: &str = r#"
[engine]
tick = "50ms"
poll_interval = "20ms"
retry_backoff = ["20ms"]
[providers.sim]
delay_ms = [0, 5]
boot_ms = [20, 60]
"#;

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
}

impl Screen {
    fn text(&self) -> String {
        self.parser.lock().expect("parser").screen().contents()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.text();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn provision_from_the_form_and_watch_it_complete() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("fast.toml");
    std::fs::write(&cfg, FAST).expect("config");
    // Only init (and demo, work) create a database.
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .args([
            "--db",
            dir.path().join("m.db").to_str().expect("utf-8"),
            "init",
        ])
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("MAILFLEET_CONFIG")
        .env_remove("MAILFLEET_DB")
        .output()
        .expect("run init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let pty = native_pty_system();
    let pair = pty
        .openpty(PtySize {
            rows: 30,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("pty");
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_mailfleet"));
    cmd.args([
        "--db",
        dir.path().join("m.db").to_str().expect("utf-8"),
        "--config",
        cfg.to_str().expect("utf-8"),
    ]);
    cmd.env("XDG_STATE_HOME", dir.path());
    cmd.env("XDG_CONFIG_HOME", dir.path());
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("MAILFLEET_CONFIG");
    cmd.env_remove("MAILFLEET_DB");
    let mut child = pair.slave.spawn_command(cmd).expect("spawn");
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().expect("reader");
    let mut writer = pair.master.take_writer().expect("writer");
    let parser = Arc::new(Mutex::new(vt100::Parser::new(30, 120, 0)));
    let p2 = parser.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p2.lock().expect("parser").process(&buf[..n]);
        }
    });
    let screen = Screen { parser };
    screen.wait_for("the console", |s| {
        s.contains("1 Fleet") && s.contains("Nothing here yet")
    });

    let mut send = |bytes: &[u8]| {
        writer.write_all(bytes).expect("write");
        writer.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(150));
    };
    send(b"p");
    screen.wait_for("the form", |s| s.contains("Provision a node"));
    send(b"node-pty-1");
    screen.wait_for("the label accepted", |s| {
        s.contains("node-pty-1") && s.contains('✓')
    });
    send(b"\r");
    send(b"2");
    let done = screen.wait_for("the request to complete", |s| {
        s.lines()
            .any(|l| l.contains("node-pty-1") && l.contains("completed"))
    });
    assert!(done.contains("✓✓✓✓"), "all four steps done:\n{done}");
    send(b"1");
    screen.wait_for("the node in the fleet", |s| {
        s.lines()
            .any(|l| l.contains("node-pty-1") && l.contains("warming"))
    });
    // A change written by another process shows up on its own.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .args([
            "--db",
            dir.path().join("m.db").to_str().expect("utf-8"),
            "--config",
            cfg.to_str().expect("utf-8"),
        ])
        .args([
            "request",
            "create",
            "--tenant",
            "globex",
            "--region",
            "seattle",
            "--plan",
            "ssd-2",
            "--label",
            "from-another-shell",
        ])
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("MAILFLEET_CONFIG")
        .env_remove("MAILFLEET_DB")
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    send(b"2");
    screen.wait_for("the other process's request", |s| {
        s.contains("from-another-shell")
    });
    // Nothing in flight, so q quits without asking.
    screen.wait_for("the other process's request to complete", |s| {
        s.lines()
            .any(|l| l.contains("from-another-shell") && l.contains("completed"))
    });
    send(b"q");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the console did not quit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
