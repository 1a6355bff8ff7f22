//! End-to-end tests of the `mailfleet` binary as a script would use it: every test runs the
//! real executable in its own temporary directory, with its own database and a config that
//! makes the simulated cloud fast, and with HOME and the XDG directories pointed into that
//! directory so a developer's own settings never leak in.

#[path = "support/echo_fake.rs"]
mod echo_fake;

use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Settings that make the simulated cloud and the engine quick.
const FAST_CONFIG: &str = r#"[engine]
tick = "20ms"
retry_backoff = ["10ms"]
poll_interval = "10ms"
[providers.sim]
delay_ms = [0, 2]
boot_ms = [0, 5]
"#;

/// A run that takes longer than this is treated as hung (a guard, not a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(120);

/// One isolated mailfleet installation: a temp dir with a database and a config.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A fleet with its database made by `mailfleet init`.
    fn new() -> Fleet {
        let fleet = Fleet::without_db();
        fleet.ok(&["init"]);
        fleet
    }

    /// A fleet whose database does not exist yet.
    fn without_db() -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("fast.toml"), FAST_CONFIG).expect("write config");
        Fleet { dir }
    }

    /// Adds `text` to the fleet's config.
    fn configure(&self, text: &str) {
        let path = self.path("fast.toml");
        let mut config = std::fs::read_to_string(&path).expect("read config");
        config.push_str(text);
        std::fs::write(&path, config).expect("write config");
    }

    /// Hands the fleet's directory and files to `uid` (a second account on this machine),
    /// so that commands run as that account can use them. Needs root.
    fn hand_to(&self, uid: u32) {
        assert_root();
        for entry in walk(self.dir.path()) {
            std::os::unix::fs::chown(&entry, Some(uid), Some(uid)).expect("chown");
        }
    }

    /// Runs `args` on this fleet as the account `uid` (not root: the permission bits then
    /// hold). Needs root to switch.
    fn run_as(&self, uid: u32, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        assert_root();
        let mut cmd = self.bare();
        cmd.uid(uid)
            .gid(uid)
            .arg("--db")
            .arg(self.db())
            .arg("--config")
            .arg(self.path("fast.toml"))
            .args(args);
        run_guarded(cmd, args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("m.db")
    }

    /// The binary with a clean environment and no arguments yet.
    fn bare(&self) -> Command {
        let home = self.dir.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailfleet"));
        cmd.current_dir(home)
            .env_remove("MAILFLEET_CONFIG")
            .env_remove("MAILFLEET_DB")
            .env_remove("MAILFLEET_LOG")
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("xdg-config"))
            .env("XDG_DATA_HOME", home.join("xdg-data"))
            .env("XDG_STATE_HOME", home.join("xdg-state"))
            .env("USER", "tester")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary with exactly `args` (no `--db` or `--config` added).
    fn run_raw(&self, args: &[&str]) -> Output {
        let mut cmd = self.bare();
        cmd.args(args);
        run_guarded(cmd, args)
    }

    /// Runs the binary on this fleet's database and fast config.
    fn run(&self, args: &[&str]) -> Output {
        let db = self.db();
        let config = self.path("fast.toml");
        let mut cmd = self.bare();
        cmd.arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&config)
            .args(args);
        run_guarded(cmd, args)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mailfleet {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Runs a command that must succeed and print one JSON document.
    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("mailfleet {args:?} printed invalid JSON ({e}):\n{text}"))
    }

    /// Creates a request and returns its full id.
    fn create(&self, tenant: &str, region: &str, plan: &str, label: &str) -> String {
        self.create_with(&[
            "request", "create", "--tenant", tenant, "--region", region, "--plan", plan, "--label",
            label,
        ])
    }

    fn create_with(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.push("--json");
        let v = self.json(&all);
        let id = v["id"].as_str().expect("created request has an id");
        assert_eq!(id.len(), 36, "ids are full UUIDs: {id}");
        id.to_string()
    }

    fn show(&self, id: &str) -> Value {
        self.json(&["request", "show", id, "--json"])
    }

    fn state(&self, id: &str) -> String {
        self.show(id)["state"]
            .as_str()
            .expect("state is a string")
            .to_string()
    }

    fn work(&self) {
        self.ok(&["work", "--until-idle"]);
    }

    /// Every event in the outbox, one JSON object per line, oldest first.
    fn events(&self) -> Vec<Value> {
        let text = self.ok(&["events", "--json", "--limit", "1000"]);
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {line}"));
                assert!(v.is_object(), "each event line is an object: {line}");
                v
            })
            .collect()
    }

    /// What a script can read back: all requests and all events.
    fn snapshot(&self) -> (Value, Vec<Value>) {
        (self.json(&["request", "list", "--json"]), self.events())
    }

    /// A fleet holding one completed request, so refusals have something to leave alone.
    fn with_completed_request() -> (Fleet, String) {
        let fleet = Fleet::new();
        let id = fleet.create("acme", "dallas", "ssd-1", "node-done");
        fleet.work();
        assert_eq!(fleet.state(&id), "completed");
        (fleet, id)
    }
}

/// A second account for the tests that need two people (four-eyes) or permission bits
/// that hold (root ignores them): `nobody` on most systems.
const OTHER_UID: u32 = 65534;

fn assert_root() {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs commands as a second account and needs root"
    );
}

/// The name mailfleet records for the account `uid`: its user-database name, lowercased,
/// or `uid-N` when it has none.
fn account_of(uid: u32) -> String {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: getpwuid returns null or a pointer to an entry that stays valid until the
    // next call; the lock keeps the tests' threads from calling it at once, and the name is
    // copied out before the lock is released.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return format!("uid-{uid}");
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .to_lowercase()
    }
}

/// The account these tests run as.
fn my_account() -> String {
    // SAFETY: getuid cannot fail and touches no memory.
    account_of(unsafe { libc::getuid() })
}

/// Every file and directory under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let more: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .expect("read dir")
                .map(|e| e.expect("dir entry").path())
                .collect();
            out.extend(more);
        }
        i += 1;
    }
    out
}

/// Runs `cmd` to completion, reading its output, and kills it if it hangs.
fn run_guarded(mut cmd: Command, args: &[&str]) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start mailfleet");
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mailfleet") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailfleet {args:?} did not finish within {HANG_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Checks a refused command: non-zero exit, exactly one line on stderr, which contains
/// every one of `words` (case-insensitive). Returns that line.
fn assert_one_line_error(out: &Output, args: &[&str], words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "mailfleet {args:?} should have failed; stdout: {}; stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "mailfleet {args:?} should print exactly one line on stderr, got: {stderr:?}"
    );
    let line = lines[0];
    assert!(!line.trim().is_empty(), "the error line is empty");
    let lower = line.to_lowercase();
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "the error for {args:?} should mention {word:?}: {line}"
        );
    }
    line.to_string()
}

/// Runs `args` against the fleet, expects a one-line refusal mentioning `words`, and checks
/// that no request or event changed.
fn assert_refused_without_writing(fleet: &Fleet, args: &[&str], words: &[&str]) -> String {
    let before = fleet.snapshot();
    let out = fleet.run(args);
    let line = assert_one_line_error(&out, args, words);
    let after = fleet.snapshot();
    assert_eq!(before.0, after.0, "{args:?} changed the requests");
    assert_eq!(before.1, after.1, "{args:?} wrote events");
    line
}

fn event_names_of(events: &[Value], request: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["request_id"] == request)
        .map(|e| e["name"].as_str().expect("event name").to_string())
        .collect()
}

fn seq_of(events: &[Value], request: &str, name: &str) -> i64 {
    let found: Vec<i64> = events
        .iter()
        .filter(|e| e["request_id"] == request && e["name"] == name)
        .map(|e| e["seq"].as_i64().expect("seq is an integer"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} event for {request}, found {found:?}"
    );
    found[0]
}

/// The transitions of a request that went to `to_state`.
fn transitions_to<'a>(detail: &'a Value, to_state: &str) -> Vec<&'a Value> {
    detail["transitions"]
        .as_array()
        .expect("transitions is an array")
        .iter()
        .filter(|t| t["to_state"] == to_state)
        .collect()
}

fn node_of(fleet: &Fleet, request: &str) -> Value {
    let nodes = fleet.json(&["node", "list", "--json"]);
    let mine: Vec<&Value> = nodes
        .as_array()
        .expect("node list is an array")
        .iter()
        .filter(|n| n["request_id"] == request)
        .collect();
    assert_eq!(mine.len(), 1, "one node for {request}: {nodes:#}");
    mine[0].clone()
}

// ---------------------------------------------------------------------------------------------
// A request's whole life
// ---------------------------------------------------------------------------------------------

#[test]
fn script_drives_a_request_through_its_whole_life() {
    let fleet = Fleet::new();
    let created = fleet.json(&[
        "request",
        "create",
        "--tenant",
        "acme",
        "--region",
        "dallas",
        "--plan",
        "ssd-1",
        "--label",
        "node-life",
        "--json",
    ]);
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["state"], "queued");

    fleet.work();
    let detail = fleet.show(&id);
    for field in [
        "id",
        "state",
        "tenant",
        "region",
        "plan",
        "label",
        "steps",
        "depends_on",
        "error",
        "created_at",
        "updated_at",
    ] {
        assert!(
            detail.get(field).is_some(),
            "request JSON lacks {field}: {detail:#}"
        );
    }
    assert_eq!(detail["id"], id.as_str());
    assert_eq!(detail["state"], "completed");
    assert_eq!(detail["tenant"], "acme");
    assert_eq!(detail["region"], "dallas");
    assert_eq!(detail["plan"], "ssd-1");
    assert_eq!(detail["label"], "node-life");
    assert_eq!(detail["depends_on"], json!([]));
    assert_eq!(detail["error"], Value::Null);
    let steps = detail["steps"].as_array().expect("steps is an array");
    let names: Vec<&str> = steps
        .iter()
        .map(|s| s["name"].as_str().expect("step name"))
        .collect();
    assert_eq!(names, ["allocate", "configure", "activate", "verify"]);
    for step in steps {
        assert_eq!(step["status"], "done", "step not done: {step}");
        assert!(
            step["attempts"].as_i64().expect("attempts is an integer") >= 1,
            "a done step was attempted: {step}"
        );
    }

    // Suspend: the request and its node both show it. This account acts for alice, as an
    // automation account would.
    let me = my_account();
    fleet.configure(&format!("[identity]\nimpersonators = [\"{me}\"]\n"));
    fleet.ok(&["--as", "alice", "request", "suspend", &id]);
    assert_eq!(fleet.state(&id), "suspended");
    assert_eq!(node_of(&fleet, &id)["status"], "paused");

    fleet.ok(&["--as", "alice", "request", "reactivate", &id]);
    assert_eq!(fleet.state(&id), "completed");
    assert_ne!(node_of(&fleet, &id)["status"], "paused");

    // A completed service is torn down with deprovision, not rollback.
    assert_refused_without_writing(
        &fleet,
        &["--as", "alice", "request", "rollback", &id],
        &["deprovision"],
    );
    assert_eq!(fleet.state(&id), "completed");

    fleet.ok(&[
        "--as",
        "alice",
        "request",
        "deprovision",
        &id,
        "--reason",
        "x",
    ]);
    fleet.work();
    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "deprovisioned");

    let report = fleet.json(&["reconcile", "--json"]);
    assert_eq!(
        report,
        json!({"orphans": [], "missing": [], "challenges_removed": [], "challenges_failed": []})
    );

    let events = fleet.events();
    let names = event_names_of(&events, &id);
    for wanted in [
        "provisioning.started",
        "provisioning.completed",
        "service.suspended",
        "service.reactivated",
        "service.deprovisioned",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no {wanted} event in {names:?}"
        );
    }

    // Every operator action is recorded with the operator's name, and the account it
    // came through.
    let alice = format!("alice (via {me})");
    let suspended = transitions_to(&detail, "suspended");
    assert_eq!(suspended.len(), 1, "{detail:#}");
    assert_eq!(suspended[0]["actor"], alice.as_str());
    let reactivated: Vec<&Value> = transitions_to(&detail, "completed")
        .into_iter()
        .filter(|t| t["from_state"] == "suspended")
        .collect();
    assert_eq!(reactivated.len(), 1, "{detail:#}");
    assert_eq!(reactivated[0]["actor"], alice.as_str());
    let torn_down = transitions_to(&detail, "rolling_back");
    assert_eq!(torn_down.len(), 1, "{detail:#}");
    assert_eq!(torn_down[0]["actor"], alice.as_str());
    assert_eq!(torn_down[0]["reason"], "x");
}

// ---------------------------------------------------------------------------------------------
// Approval
// ---------------------------------------------------------------------------------------------

#[test]
fn approval_gate_then_approve() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "eu-west-1", "ssd-16", "node-big");
    assert_eq!(fleet.state(&id), "pending_approval");

    // Four-eyes: another account approves.
    fleet.hand_to(OTHER_UID);
    let args = ["request", "approve", &id, "--json"];
    let out = fleet.run_as(OTHER_UID, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let approved: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(approved["state"], "queued");
    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "queued");
    let to_queued: Vec<&Value> = transitions_to(&detail, "queued")
        .into_iter()
        .filter(|t| t["from_state"] == "pending_approval")
        .collect();
    assert_eq!(to_queued.len(), 1, "{detail:#}");
    assert_eq!(to_queued[0]["actor"], account_of(OTHER_UID).as_str());

    fleet.work();
    assert_eq!(fleet.state(&id), "completed");
    assert_refused_without_writing(
        &fleet,
        &["request", "reject", &id, "--reason", "too late"],
        &["reject"],
    );
    assert_eq!(fleet.state(&id), "completed");
}

#[test]
fn reject_needs_a_reason() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "eu-west-1", "ssd-16", "node-big");
    assert_eq!(fleet.state(&id), "pending_approval");
    assert_refused_without_writing(&fleet, &["request", "reject", &id], &["reason"]);
    assert_refused_without_writing(
        &fleet,
        &["request", "reject", &id, "--reason", "   "],
        &["reason"],
    );
    assert_eq!(fleet.state(&id), "pending_approval");
}

#[test]
fn rejection_with_a_reason_ends_rejected_with_the_reason_as_error() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "eu-west-1", "ssd-16", "node-big");
    fleet.ok(&["request", "reject", &id, "--reason", "too big for eu"]);
    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "rejected");
    assert_eq!(detail["error"], "too big for eu");
    let rejected = transitions_to(&detail, "rejected");
    assert_eq!(rejected.len(), 1, "{detail:#}");
    assert_eq!(rejected[0]["actor"], my_account().as_str());

    // The engine leaves a rejected request alone.
    fleet.work();
    assert_eq!(fleet.state(&id), "rejected");
}

#[test]
fn a_reason_longer_than_500_characters_is_refused_naming_the_field_and_limit() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "eu-west-1", "ssd-16", "node-big");
    let long = "é".repeat(501);
    for args in [
        vec!["request", "reject", id.as_str(), "--reason", long.as_str()],
        vec!["request", "approve", id.as_str(), "--reason", long.as_str()],
    ] {
        assert_refused_without_writing(&fleet, &args, &["reason", "501", "at most 500"]);
    }
    assert_eq!(fleet.state(&id), "pending_approval");
    let longest = "é".repeat(500);
    fleet.ok(&["request", "reject", &id, "--reason", &longest]);
    assert_eq!(fleet.show(&id)["error"], longest.as_str());
}

/// `--json` output escapes what JSON lets through raw but a terminal acts on (a C1 CSI)
/// or displays in another order (a right-to-left override), and the text reads back the
/// same.
#[test]
fn json_output_escapes_c1_controls_and_bidi_overrides() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "eu-west-1", "ssd-16", "node-big");
    let reason = "see \u{9b}31m ticket \u{202e}exe.txt\u{200b} now";
    fleet.ok(&["request", "reject", &id, "--reason", reason]);
    for args in [
        vec!["request", "show", id.as_str(), "--json"],
        vec!["request", "list", "--json"],
        vec!["events", "--json", "--limit", "1000"],
    ] {
        let text = fleet.ok(&args);
        assert!(
            text.contains(r"\u009b31m ticket \u202eexe.txt\u200b now"),
            "{args:?}: {text}"
        );
        for c in ['\u{9b}', '\u{202e}', '\u{200b}'] {
            assert!(!text.contains(c), "{args:?} printed {c:?} raw");
        }
    }
    assert_eq!(fleet.show(&id)["error"], reason, "reads back the same");
}

// ---------------------------------------------------------------------------------------------
// Bad input: one line on stderr, a non-zero exit, nothing written
// ---------------------------------------------------------------------------------------------

fn create_args<'a>(
    tenant: &'a str,
    region: &'a str,
    plan: &'a str,
    label: &'a str,
) -> Vec<&'a str> {
    vec![
        "request", "create", "--tenant", tenant, "--region", region, "--plan", plan, "--label",
        label,
    ]
}

#[test]
fn unknown_tenant_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    assert_refused_without_writing(
        &fleet,
        &create_args("nosuchco", "dallas", "ssd-1", "node-x"),
        &["tenant", "nosuchco"],
    );
}

#[test]
fn unknown_plan_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    assert_refused_without_writing(
        &fleet,
        &create_args("acme", "dallas", "ssd-999", "node-x"),
        &["plan", "ssd-999"],
    );
}

#[test]
fn unknown_region_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    assert_refused_without_writing(
        &fleet,
        &create_args("acme", "atlantis", "ssd-1", "node-x"),
        &["region", "atlantis"],
    );
}

#[test]
fn empty_label_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    assert_refused_without_writing(
        &fleet,
        &create_args("acme", "dallas", "ssd-1", ""),
        &["label"],
    );
}

#[test]
fn label_of_64_characters_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    let long = "a".repeat(64);
    assert_refused_without_writing(
        &fleet,
        &create_args("acme", "dallas", "ssd-1", &long),
        &["label", "63"],
    );
    // 63 characters is still a valid label.
    let longest = "a".repeat(63);
    fleet.create("acme", "dallas", "ssd-1", &longest);
}

#[test]
fn label_that_is_not_a_hostname_label_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    assert_refused_without_writing(
        &fleet,
        &create_args("acme", "dallas", "ssd-1", "Bad_Label"),
        &["label", "Bad_Label"],
    );
}

#[test]
fn label_with_control_characters_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    let line = assert_refused_without_writing(
        &fleet,
        &create_args("acme", "dallas", "ssd-1", "node\x1b[2J"),
        &["label", "control"],
    );
    assert!(
        !line.contains('\x1b'),
        "the escape sequence reached the terminal: {line:?}"
    );
}

#[test]
fn unknown_request_id_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    let line =
        assert_refused_without_writing(&fleet, &["request", "approve", "ffffffff"], &["ffffffff"]);
    let lower = line.to_lowercase();
    assert!(
        lower.contains("no request matches") || lower.contains("unknown"),
        "the error should say no request matches: {line}"
    );
}

#[test]
fn action_illegal_in_the_state_is_refused_without_writing() {
    let (fleet, id) = Fleet::with_completed_request();
    assert_refused_without_writing(
        &fleet,
        &["request", "approve", &id],
        &["completed", "approv"],
    );
    assert_eq!(fleet.state(&id), "completed");
}

#[test]
fn db_that_is_not_a_database_is_refused_and_left_untouched() {
    let fleet = Fleet::new();
    let text = fleet.path("notes.txt");
    std::fs::write(&text, "hello, not sqlite\n").expect("write text file");
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| !n.starts_with("xdg-"))
            .collect();
        names.sort();
        names
    };
    let files_before = listing(fleet.dir.path());
    let text_arg = text.to_str().expect("utf-8 path");
    let config = fleet.path("fast.toml");
    let config_arg = config.to_str().expect("utf-8 path");
    let mut create = vec!["--db", text_arg, "--config", config_arg];
    create.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
    for args in [
        create,
        vec!["--db", text_arg, "--config", config_arg, "request", "list"],
        vec![
            "--db",
            text_arg,
            "--config",
            config_arg,
            "work",
            "--until-idle",
        ],
        vec!["--db", text_arg, "--read-only", "request", "list"],
    ] {
        let out = fleet.run_raw(&args);
        assert_one_line_error(&out, &args, &["notes.txt", "not", "database"]);
        assert_eq!(
            std::fs::read(&text).expect("read text file"),
            b"hello, not sqlite\n",
            "{args:?} changed the file"
        );
        assert!(
            !fleet.path("notes.txt-wal").exists() && !fleet.path("notes.txt-shm").exists(),
            "{args:?} left SQLite side files next to the text file"
        );
        assert_eq!(
            listing(fleet.dir.path()),
            files_before,
            "{args:?} created files"
        );
    }
}

#[test]
fn config_with_a_mistyped_key_is_refused_without_writing() {
    let (fleet, _) = Fleet::with_completed_request();
    let bad = fleet.path("bad.toml");
    std::fs::write(&bad, "[engine]\nmax_in_fligt = 5\n").expect("write config");
    let db = fleet.db();
    let db_arg = db.to_str().expect("utf-8 path");
    let bad_arg = bad.to_str().expect("utf-8 path");
    let before = fleet.snapshot();
    let mut create = vec!["--db", db_arg, "--config", bad_arg];
    create.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
    for args in [
        create,
        vec!["--db", db_arg, "--config", bad_arg, "work", "--until-idle"],
    ] {
        let out = fleet.run_raw(&args);
        assert_one_line_error(&out, &args, &["max_in_fligt", "line 2"]);
    }
    assert_eq!(
        before,
        fleet.snapshot(),
        "a refused command wrote something"
    );
}

// ---------------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------------

#[test]
fn short_ids_resolve_and_ambiguity_is_reported() {
    let fleet = Fleet::new();
    // Three requests in quick succession: UUIDv7 ids begin with the time, so at least two
    // of them share their first 8 hex digits (one 65-second boundary can split at most one
    // neighbouring pair).
    let ids: Vec<String> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|label| fleet.create("acme", "dallas", "ssd-1", label))
        .collect();

    let table = fleet.ok(&["request", "list"]);
    for (id, label) in ids.iter().zip(["node-a", "node-b", "node-c"]) {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().any(|cell| cell == label))
            .unwrap_or_else(|| panic!("no row for {label} in:\n{table}"));
        let short = row.split_whitespace().next().expect("id column");
        assert_eq!(short.len(), 8, "short id {short:?} in row {row:?}");
        assert!(id.ends_with(short), "{short} is not the end of {id}");
        assert_eq!(fleet.show(short)["id"], id.as_str(), "short id {short}");
        assert_eq!(fleet.show(id)["id"], id.as_str(), "full id {id}");
    }

    let prefix = ids
        .windows(2)
        .find(|pair| pair[0][..8] == pair[1][..8])
        .map(|pair| pair[0][..8].to_string())
        .unwrap_or_else(|| panic!("no two ids share their first 8 hex digits: {ids:?}"));
    let out = fleet.run(&["request", "show", &prefix]);
    assert_one_line_error(&out, &["request", "show", &prefix], &["ambiguous"]);
    assert_refused_without_writing(
        &fleet,
        &["request", "reject", &prefix, "--reason", "which one?"],
        &["ambiguous"],
    );
}

// ---------------------------------------------------------------------------------------------
// Read-only
// ---------------------------------------------------------------------------------------------

#[test]
fn read_only_refuses_changes() {
    let (fleet, id) = Fleet::with_completed_request();
    let mut create = vec!["--read-only"];
    create.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
    assert_refused_without_writing(&fleet, &create, &["read-only"]);
    assert_refused_without_writing(
        &fleet,
        &["--read-only", "request", "suspend", &id],
        &["read-only"],
    );
    assert_refused_without_writing(
        &fleet,
        &["--read-only", "work", "--until-idle"],
        &["read-only"],
    );
    assert_eq!(fleet.state(&id), "completed");

    // Reading still works.
    let listed = fleet.json(&["--read-only", "request", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Dependencies
// ---------------------------------------------------------------------------------------------

#[test]
fn dependency_waits_for_its_prerequisite() {
    let fleet = Fleet::new();
    let a = fleet.create("acme", "dallas", "ssd-1", "node-first");
    let b = fleet.create_with(&[
        "request",
        "create",
        "--tenant",
        "acme",
        "--region",
        "dallas",
        "--plan",
        "ssd-1",
        "--label",
        "node-second",
        "--depends-on",
        &a,
    ]);
    let before = fleet.show(&b);
    assert_eq!(before["state"], "queued");
    assert_eq!(before["depends_on"], json!([a.as_str()]));

    fleet.work();
    assert_eq!(fleet.state(&a), "completed");
    assert_eq!(fleet.state(&b), "completed");

    let events = fleet.events();
    let a_completed = seq_of(&events, &a, "provisioning.completed");
    let b_admitted = seq_of(&events, &b, "provisioning.admitted");
    assert!(
        b_admitted > a_completed,
        "B was admitted (seq {b_admitted}) before A completed (seq {a_completed})"
    );
}

#[test]
fn tenants_and_clusters_show_use_and_limits_and_clusters_answer_a_test() {
    let (fleet, id) = Fleet::with_completed_request();
    let tenants = fleet.json(&["tenant", "list", "--json"]);
    let acme = tenants
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == "acme")
        .expect("acme");
    // One ssd-1 (1 cpu, 1 GB, 30 GB) is held by acme against the built-in quota.
    assert_eq!(
        acme["used"],
        json!({"units": 1, "cpu": 1, "memory_gb": 1, "storage_gb": 30})
    );
    assert_eq!(
        acme["limit"],
        json!({"units": 200, "cpu": 400, "memory_gb": 800, "storage_gb": 20000})
    );
    let text = fleet.ok(&["tenant", "list"]);
    assert!(text.contains("acme") && text.contains("1/400"), "{text}");

    let clusters = fleet.json(&["cluster", "list", "--json"]);
    let cluster = fleet.show(&id)["cluster"]
        .as_str()
        .expect("a cluster")
        .to_string();
    let held = clusters
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["name"] == cluster.as_str())
        .expect("the request's cluster");
    assert_eq!(held["used"]["cpu"], 1);
    assert_eq!(
        held["free"]["cpu"].as_i64().expect("free cpu") + 1,
        held["capacity"]["cpu"].as_i64().expect("cpu")
    );
    assert_eq!(held["health"], "online");

    let report = fleet.json(&["cluster", "test", &cluster, "--json"]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["latency_ms"].as_f64().expect("latency") >= 0.0);
    assert_eq!(
        report["detail"],
        format!("1 live instances in {cluster}"),
        "the sim answers from its inventory"
    );
    let text = fleet.ok(&["cluster", "test", &cluster]);
    assert!(
        text.contains(" ms: ") && text.contains(": ok in "),
        "{text}"
    );

    let out = fleet.run(&["cluster", "test", "nowhere"]);
    assert_one_line_error(&out, &["cluster", "test", "nowhere"], &["unknown cluster"]);
}

#[test]
fn request_import_orders_a_batch_and_a_cycle_writes_nothing() {
    let fleet = Fleet::new();
    let base = fleet.create("acme", "dallas", "ssd-1", "base-1");
    let batch = format!(
        r#"
[[requests]]
key = "web"
tenant = "acme"
region = "dallas"
plan = "ssd-1"
label = "web-1"
depends_on = ["db"]

[[requests]]
key = "db"
tenant = "acme"
region = "dallas"
plan = "ssd-2"
label = "db-1"
depends_on = ["{}"]
"#,
        &base[base.len() - 8..]
    );
    std::fs::write(fleet.path("batch.toml"), &batch).expect("write");
    let path = fleet.path("batch.toml");
    let made = fleet.json(&["request", "import", path.to_str().expect("utf-8"), "--json"]);
    let made = made.as_array().expect("a list");
    let keys: Vec<&str> = made
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["db", "web"], "prerequisites first");
    let db = made[0]["id"].as_str().expect("id").to_string();
    let web = made[1]["id"].as_str().expect("id").to_string();
    assert_eq!(fleet.show(&web)["depends_on"], json!([db]));
    assert_eq!(fleet.show(&db)["depends_on"], json!([base]));
    fleet.work();
    assert_eq!(fleet.state(&web), "completed");

    let cyclic = batch
        .replace("web-1", "web-2")
        .replace("db-1", "db-2")
        .replace(&format!("[\"{}\"]", &base[base.len() - 8..]), "[\"web\"]");
    std::fs::write(fleet.path("cycle.toml"), cyclic).expect("write");
    let path = fleet.path("cycle.toml");
    let line = assert_refused_without_writing(
        &fleet,
        &["request", "import", path.to_str().expect("utf-8")],
        &["dependency cycle", "nothing was imported"],
    );
    assert!(line.contains("web → db → web"), "{line}");

    std::fs::write(fleet.path("batch.yaml"), "x").expect("write");
    let path = fleet.path("batch.yaml");
    assert_refused_without_writing(
        &fleet,
        &["request", "import", path.to_str().expect("utf-8")],
        &[".toml or .json"],
    );
}

/// A second request for a hostname another request holds is refused before anything is
/// written, and the refusal names the holder: here another tenant's completed node, asked
/// for again with the default domain spelt out (with a trailing dot).
#[test]
fn hostname_held_by_another_tenant_is_refused_at_create_naming_the_holder() {
    let (fleet, id) = Fleet::with_completed_request();
    let nodes_before = fleet.json(&["node", "list", "--json"]);
    let short = &id[id.len() - 8..];
    for domain in [None, Some("fleet.example.net.")] {
        let mut args = create_args("globex", "dallas", "ssd-1", "node-done");
        if let Some(d) = domain {
            args.extend(["--domain", d]);
        }
        let line = assert_refused_without_writing(
            &fleet,
            &args,
            &[
                "hostname node-done.fleet.example.net",
                short,
                "tenant acme",
                "completed",
                "choose another label or domain",
            ],
        );
        assert!(!line.contains("globex"), "{line}");
    }
    // Nothing was allocated for it either.
    assert_eq!(fleet.json(&["node", "list", "--json"]), nodes_before);
    // The same label under another domain is another hostname.
    fleet.create_with(&[
        "request",
        "create",
        "--tenant",
        "globex",
        "--region",
        "dallas",
        "--plan",
        "ssd-1",
        "--label",
        "node-done",
        "--domain",
        "globex.example.com",
    ]);
}

/// A deprovisioned request lets go of its hostname: it can be asked for again.
#[test]
fn hostname_of_a_deprovisioned_request_is_free_again() {
    let (fleet, id) = Fleet::with_completed_request();
    fleet.ok(&["request", "deprovision", &id]);
    fleet.work();
    assert_eq!(fleet.state(&id), "deprovisioned");
    let again = fleet.create("globex", "dallas", "ssd-1", "node-done");
    fleet.work();
    assert_eq!(fleet.state(&again), "completed");
}

/// An import is refused whole when one of its requests wants a held hostname, and when two
/// of its requests want the same one.
#[test]
fn import_of_a_held_or_doubled_hostname_writes_nothing() {
    let (fleet, id) = Fleet::with_completed_request();
    let nodes_before = fleet.json(&["node", "list", "--json"]);
    let item = |key: &str, tenant: &str, label: &str, domain: &str| {
        format!(
            "[[requests]]\nkey = \"{key}\"\ntenant = \"{tenant}\"\nregion = \"dallas\"\nplan = \"ssd-1\"\nlabel = \"{label}\"\ndomain = \"{domain}\"\n"
        )
    };
    let held = item("fresh", "acme", "node-new", "example.com")
        + &item("taken", "initech", "node-done", "fleet.example.net");
    std::fs::write(fleet.path("held.toml"), held).expect("write");
    let path = fleet.path("held.toml");
    assert_refused_without_writing(
        &fleet,
        &["request", "import", path.to_str().expect("utf-8")],
        &[
            "hostname node-done.fleet.example.net",
            &id[id.len() - 8..],
            "tenant acme",
            "nothing was imported",
        ],
    );
    let doubled =
        item("one", "acme", "mx-1", "example.com") + &item("two", "globex", "mx-1", "example.com.");
    std::fs::write(fleet.path("doubled.toml"), doubled).expect("write");
    let path = fleet.path("doubled.toml");
    assert_refused_without_writing(
        &fleet,
        &["request", "import", path.to_str().expect("utf-8")],
        &[
            "\"one\"",
            "\"two\"",
            "hostname mx-1.example.com",
            "nothing was imported",
        ],
    );
    assert_eq!(fleet.json(&["node", "list", "--json"]), nodes_before);
}

/// Every file under `dir` (the database, its WAL, the log, key files) that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                found.push(path);
            }
        }
    }
    found
}

/// A DNS API that repeats the key it was sent in its error bodies (long ones, with escape
/// sequences): the request fails and says why, but the key is in no file of the fleet
/// (database, WAL, log) and in no output, and the message is bounded and clean.
#[test]
fn an_api_echoing_its_key_gets_it_into_no_file_and_no_output() {
    const KEY: &str = "pdns-Key-9fQ27xLmZ";
    let api = echo_fake::EchoFake::start(2);
    let fleet = Fleet::new();
    let cfg = format!(
        "{FAST_CONFIG}[dns]\nprovider = \"powerdns\"\n[dns.powerdns]\napi_url = \"{}\"\napi_key_env = \"MAILFLEET_TEST_ECHO_KEY\"\n",
        api.url()
    );
    std::fs::write(fleet.path("fast.toml"), cfg).expect("config");
    let id = fleet.create_with(&[
        "request",
        "create",
        "--tenant",
        "acme",
        "--region",
        "dallas",
        "--plan",
        "ssd-1",
        "--label",
        "mx-1",
        "--domain",
        "example.com",
    ]);
    let mut outputs = Vec::new();
    let mut cmd = fleet.bare();
    let work = ["work", "--until-idle"];
    cmd.arg("--db")
        .arg(fleet.db())
        .arg("--config")
        .arg(fleet.path("fast.toml"))
        .args(work)
        .env("MAILFLEET_TEST_ECHO_KEY", KEY);
    let out = run_guarded(cmd, &work);
    outputs.push(out.stdout);
    outputs.push(out.stderr);
    assert!(
        api.served() > 2,
        "the API was asked, and answered 503 then 422"
    );

    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "rolled_back");
    let error = detail["error"].as_str().expect("an error").to_string();
    assert!(
        error.contains("HTTP 422") && error.contains("X-API-Key=[redacted]"),
        "{error}"
    );
    assert!(
        !error.contains('\u{1b}') && !error.contains('\u{7}'),
        "{error}"
    );
    assert!(
        error.chars().count() <= 600,
        "bounded: {} chars",
        error.chars().count()
    );
    assert!(error.ends_with('…'), "{error}");
    for args in [
        vec!["request", "show", id.as_str(), "--json"],
        vec!["request", "show", id.as_str()],
        vec!["events", "--json", "--limit", "1000"],
        vec!["request", "list", "--json"],
    ] {
        outputs.push(fleet.run(&args).stdout);
    }
    for (i, out) in outputs.iter().enumerate() {
        let text = String::from_utf8_lossy(out);
        assert!(!text.contains(KEY), "output {i} holds the key: {text}");
    }
    // The retry notes said why too, and without the key.
    let events = fleet.events();
    assert!(
        events.iter().any(|e| e.to_string().contains("[redacted]")),
        "the failure is in the events"
    );
    // Nothing of the fleet's on disk holds it: not the database, its WAL, nor the log.
    assert!(fleet.path("m.db").exists());
    let found = files_holding(fleet.dir.path(), KEY.as_bytes());
    assert!(found.is_empty(), "the key is in {found:?}");
}

#[test]
fn warmup_plans_are_listed_and_each_prints_its_days_and_nodes_show_their_warmup() {
    let (fleet, id) = Fleet::with_completed_request();
    let text = fleet.ok(&["warmup", "plans"]);
    for name in ["conservative", "standard *", "aggressive", "dedicated-ip"] {
        assert!(text.contains(name), "{text}");
    }
    let plan = fleet.json(&["warmup", "plan", "standard", "--json"]);
    assert_eq!(plan["name"], "standard");
    let days = plan["days"].as_array().expect("days");
    assert_eq!(days.len(), 42);
    assert_eq!(days[0], json!({"day": 1, "cap": 10}));
    assert_eq!(days[41], json!({"day": 42, "cap": 500}));
    let caps: Vec<i64> = days
        .iter()
        .map(|d| d["cap"].as_i64().expect("cap"))
        .collect();
    assert!(caps.windows(2).all(|w| w[0] <= w[1]), "caps never decrease");
    let dedicated = fleet.json(&["warmup", "plan", "dedicated-ip", "--json"]);
    let days = dedicated["days"].as_array().expect("days");
    assert_eq!((days.len(), &days[44]["cap"]), (45, &json!(50000)));
    let out = fleet.run(&["warmup", "plan", "turbo"]);
    assert_one_line_error(
        &out,
        &["warmup", "plan", "turbo"],
        &["unknown warm-up plan"],
    );

    let node = node_of(&fleet, &id);
    let node_id = node["id"].as_str().expect("node id").to_string();
    let shown = fleet.json(&["node", "show", &node_id, "--json"]);
    assert_eq!(
        shown["warmup"],
        json!({"plan": "standard", "day": 1, "days": 42, "cap": 10, "status": "warming", "reason": null})
    );
}

/// A node's life is kept as transitions: `node show` lists them (who, when, why), an
/// operator's maintenance is one, a refusal names the node and what may, and a status
/// filter the lifecycle does not know is refused naming the flag.
#[test]
fn node_show_lists_the_nodes_transitions_and_refusals_name_what_may() {
    let (fleet, id) = Fleet::with_completed_request();
    let node = node_of(&fleet, &id);
    let node_id = node["id"].as_str().expect("node id").to_string();
    let said = fleet.ok(&["node", "maintenance", &node_id, "--reason", "disk swap"]);
    assert!(said.contains("in maintenance"), "{said}");
    let args = ["node", "pause", node_id.as_str()];
    let out = fleet.run(&args);
    assert_one_line_error(&out, &args, &["a node in maintenance cannot be paused"]);
    fleet.ok(&["node", "resume", &node_id]);

    let text = fleet.ok(&["node", "show", &node_id]);
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "transitions:")
        .skip(1)
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("provisioning → warming  by engine@"),
        "{text}"
    );
    assert!(
        lines[1].contains("warming → maintenance  by ") && lines[1].ends_with(": disk swap"),
        "{text}"
    );
    assert!(lines[2].contains("maintenance → warming"), "{text}");
    let shown = fleet.json(&["node", "show", &node_id, "--json"]);
    let moves: Vec<(&str, &str)> = shown["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap_or("-"),
                t["to"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("provisioning", "warming"),
            ("warming", "maintenance"),
            ("maintenance", "warming")
        ]
    );

    let args = ["node", "list", "--status", "sleeping"];
    let out = fleet.run(&args);
    assert_one_line_error(
        &out,
        &args,
        &["--status", "unknown node status \"sleeping\""],
    );
}

/// `node resize` files a request of its own that the engine runs to a node on the new
/// plan; the lists show it as a resize (from→to, two steps), and a refusal names the flag.
#[test]
fn node_resize_files_a_request_that_moves_the_node_to_the_new_plan() {
    let (fleet, id) = Fleet::with_completed_request();
    let node = node_of(&fleet, &id);
    let node_id = node["id"].as_str().expect("node id").to_string();
    let short_node = &node_id[node_id.len() - 8..];
    let args = ["node", "resize", short_node, "--plan", "ssd-99"];
    assert_refused_without_writing(&fleet, &args, &["plan: unknown plan \"ssd-99\""]);
    let filed = fleet.json(&["node", "resize", short_node, "--plan", "ssd-4", "--json"]);
    assert_eq!(filed["operation"], "resize");
    assert_eq!(filed["from_plan"], "ssd-1");
    assert_eq!(filed["target"].as_str(), Some(id.as_str()));
    let steps: Vec<&str> = filed["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(steps, ["resize", "confirm"]);
    fleet.ok(&["work", "--until-idle"]);
    let resize = filed["id"].as_str().expect("id");
    let list = fleet.ok(&["request", "list"]);
    let line = list
        .lines()
        .find(|l| resize.ends_with(l.split_whitespace().next().unwrap_or("-")))
        .expect("the resize listed");
    assert!(
        line.contains("completed") && line.contains("ssd-1→ssd-4") && line.contains("2/2"),
        "{line}"
    );
    let shown = fleet.json(&["node", "show", &node_id, "--json"]);
    assert_eq!(shown["plan"], "ssd-4");
    assert_eq!(shown["resizes"][0]["id"].as_str(), Some(resize));
    assert_eq!(shown["resizes"][0]["from_plan"], "ssd-1");
    let text = fleet.ok(&["node", "show", &node_id]);
    assert!(
        text.lines()
            .any(|l| l.contains("ssd-1→ssd-4  completed  by ")),
        "{text}"
    );
}

/// `bootstrap render` prints what a node's bootstrap installs: Postfix named for the node,
/// OpenDKIM for its domain, the warm-up's cap as a rate limit, and its private keys named,
/// never shown.
#[test]
fn bootstrap_render_shows_what_a_node_runs_without_its_secrets() {
    let (fleet, id) = Fleet::with_completed_request();
    let node = node_of(&fleet, &id);
    let node_id = node["id"].as_str().expect("node id").to_string();
    let host = node["hostname"].as_str().expect("hostname").to_string();
    let text = fleet.ok(&["bootstrap", "render", &node_id]);
    for want in [
        format!("myhostname = {host}\n"),
        "### /etc/postfix/master.cf".to_string(),
        "-o smtpd_client_message_rate_limit=1\n".to_string(),
        "SigningTable refile:/etc/opendkim/SigningTable".to_string(),
        "(the domain's DKIM private key: installed from the store, not shown here)".to_string(),
        "tcp dport { 22, 25, 465, 587 } accept".to_string(),
        "postfix -c /etc/postfix check".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in\n{text}");
    }
    assert!(!text.contains("PRIVATE KEY-----"), "{text}");
    let args = ["bootstrap", "render", "ffffffff"];
    let out = fleet.run(&args);
    assert_one_line_error(&out, &args, &["ffffffff"]);
}

/// `request provide` checks what it is given before anything moves: an address that is
/// not IPv4, a port out of range, and a request that is not waiting for input are each one
/// line naming what is wrong.
#[test]
fn request_provide_refuses_bad_access_details_naming_the_flag() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "dallas", "ssd-1", "node-p");
    for (args, words) in [
        (
            vec![
                "request",
                "provide",
                id.as_str(),
                "--ip",
                "999.1.1.1",
                "--ssh-port",
                "22",
            ],
            vec!["--ip", "is not an IPv4 address"],
        ),
        (
            vec![
                "request",
                "provide",
                id.as_str(),
                "--ip",
                "192.0.2.9",
                "--ssh-port",
                "70000",
            ],
            vec!["--ssh-port", "not a port"],
        ),
        (
            vec![
                "request",
                "provide",
                id.as_str(),
                "--ip",
                "192.0.2.9",
                "--ssh-port",
                "22",
            ],
            vec!["request", "is queued: it cannot take input"],
        ),
    ] {
        let out = fleet.run(&args);
        assert_one_line_error(&out, &args, &words);
    }
    assert_eq!(fleet.state(&id), "queued");
}

#[test]
fn dkim_keys_are_made_with_their_record_and_the_private_half_never_shows() {
    let fleet = Fleet::new();
    // No sealing key in the environment: the private key goes to a 0600 file.
    let made = fleet.json(&["dkim", "new", "example.com", "--json"]);
    assert_eq!(made["selector"], "mf1");
    let public = made["public_key"].as_str().expect("public").to_string();
    assert_eq!(public.len(), 392, "RSA 2048");
    assert_eq!(made["record"]["name"], "mf1._domainkey.example.com.");
    assert_eq!(
        made["record"]["content"],
        format!("v=DKIM1; k=rsa; p={public}")
    );
    assert_eq!(
        made["record"]["strings"].as_array().expect("strings").len(),
        2
    );
    let file = fleet.path("dkim").join("example.com.mf1.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let pem = std::fs::read_to_string(&file).expect("pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !made.to_string().contains(&body[..40]),
        "no private key in the output"
    );

    // With a sealing key: sealed in the database, no file, nothing readable in the DB.
    let mut cmd = fleet.bare();
    cmd.env(
        "MAILFLEET_DKIM_KEY",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    .arg("--db")
    .arg(fleet.db())
    .args([
        "dkim",
        "new",
        "example.org",
        "--selector",
        "s2026",
        "--json",
    ]);
    let out = run_guarded(cmd, &["dkim", "new", "example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fleet.path("dkim").join("example.org.s2026.key").exists());
    let keys = fleet.json(&["dkim", "list", "--json"]);
    let stored: Vec<(&str, &str)> = keys
        .as_array()
        .expect("list")
        .iter()
        .map(|k| {
            (
                k["domain"].as_str().expect("d"),
                k["stored"].as_str().expect("s"),
            )
        })
        .collect();
    assert_eq!(stored, [("example.com", "file"), ("example.org", "sealed")]);
    assert!(
        !keys.to_string().contains("PRIVATE"),
        "the list shows no private key"
    );

    // The same selector again is refused in one line, and nothing is written.
    let out = fleet.run(&["dkim", "new", "example.com"]);
    assert_one_line_error(
        &out,
        &["dkim", "new", "example.com"],
        &["already has a key with selector mf1"],
    );
    assert_eq!(
        fleet
            .json(&["dkim", "list", "--json"])
            .as_array()
            .expect("list")
            .len(),
        2
    );
    // A bad sealing key names the variable, never its value.
    let mut cmd = fleet.bare();
    cmd.env("MAILFLEET_DKIM_KEY", "c2VjcmV0")
        .arg("--db")
        .arg(fleet.db())
        .args(["dkim", "new", "example.net"]);
    let out = run_guarded(cmd, &["dkim", "new", "example.net"]);
    let line = assert_one_line_error(
        &out,
        &["dkim", "new", "example.net"],
        &["MAILFLEET_DKIM_KEY: must hold 32 bytes"],
    );
    assert!(!line.contains("c2VjcmV0"));
}

/// Issue 12, item 9: `dns plan` left the DKIM record out although `dkim new` had made the
/// domain's key; it now plans the record with the stored key (and its Ed25519 partner).
#[test]
fn dns_plan_uses_the_domains_stored_dkim_key() {
    let fleet = Fleet::new();
    let args = [
        "dns",
        "plan",
        "--domain",
        "example.com",
        "--hostname",
        "mx1.example.com",
        "--ip",
        "192.0.2.10",
        "--json",
    ];
    let purposes = |plan: &Value| -> Vec<String> {
        plan.as_array()
            .expect("records")
            .iter()
            .map(|r| r["purpose"].as_str().expect("purpose").to_string())
            .collect()
    };
    let made = fleet.json(&["dkim", "new", "example.com", "--ed25519", "--json"]);
    let plan = fleet.json(&args);
    assert_eq!(
        purposes(&plan),
        ["a", "mx", "spf", "dkim", "dkim-ed25519", "dmarc"]
    );
    let dkim = &plan.as_array().expect("records")[3];
    assert_eq!(dkim["name"], "mf1._domainkey.example.com.");
    assert_eq!(dkim["content"], made["record"]["content"]);
    let ed = &plan.as_array().expect("records")[4];
    assert_eq!(ed["name"], "mf1-ed._domainkey.example.com.");
    assert_eq!(ed["content"], made["records"][1]["content"]);
    // A key given on the command line wins; another domain has no stored key.
    let mut given = args.to_vec();
    given.extend(["--dkim-public-key", "QUJD"]);
    let plan = fleet.json(&given);
    assert!(
        plan.to_string().contains("v=DKIM1; k=rsa; p=QUJD"),
        "{plan}"
    );
    let mut other = args.to_vec();
    other[3] = "example.org";
    other[5] = "mx1.example.org";
    assert_eq!(purposes(&fleet.json(&other)), ["a", "mx", "spf", "dmarc"]);
    // Planning needs no database: one that cannot be read is said, and the plan stands.
    std::fs::write(fleet.path("junk.db"), "not a database").expect("junk");
    let mut cmd = fleet.bare();
    cmd.arg("--db").arg(fleet.path("junk.db")).args(args);
    let out = run_guarded(cmd, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no stored DKIM key used"), "{stderr}");
    let plan: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(purposes(&plan), ["a", "mx", "spf", "dmarc"]);
}

#[test]
fn records_and_certificates_show_and_tls_status_and_dkim_rotate_work_from_the_shell() {
    let (fleet, id) = Fleet::with_completed_request();
    let show = fleet.show(&id);
    let records = show["records"].as_array().expect("records");
    let purposes: Vec<&str> = records
        .iter()
        .map(|r| r["purpose"].as_str().expect("purpose"))
        .collect();
    assert_eq!(purposes, ["a", "mx", "spf", "dkim", "dmarc"]);
    assert!(records.iter().all(|r| r["status"] == "verified"), "{show}");
    assert_eq!(show["certificates"][0]["status"], "active");
    assert_eq!(
        show["certificates"][0]["names"],
        json!(["node-done.fleet.example.net"])
    );
    assert!(!show.to_string().contains("PRIVATE KEY"));
    let text = fleet.ok(&["request", "show", &id]);
    assert!(text.contains("dns records:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("verified") && l.contains("_dmarc.fleet.example.net.")),
        "{text}"
    );
    assert!(
        text.contains("certificate active  node-done.fleet.example.net"),
        "{text}"
    );

    let tls = fleet.json(&["tls", "status", "--json"]);
    let list = tls.as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["hostname"], "node-done.fleet.example.net");
    assert_eq!(list[0]["renewal_due"], false);
    assert_eq!(list[0]["renewing"], false);
    assert_eq!(list[0]["key_stored"], "file");
    let text = fleet.ok(&["tls", "status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("node-done.fleet.example.net") && l.contains(" days")),
        "{text}"
    );

    // Rotation: mf2 published and answering, then mf1 retired and its record removed.
    let r = fleet.json(&["dkim", "rotate", "fleet.example.net", "--json"]);
    assert_eq!(r["old_selectors"], json!(["mf1"]));
    assert_eq!(r["new_selectors"], json!(["mf2"]));
    assert_eq!(r["verified"], true);
    assert_eq!(r["old_removed"], true);
    let keys = fleet.json(&["dkim", "list", "--json"]);
    let state: Vec<(String, bool)> = keys
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["selector"].as_str().expect("sel").to_string(),
                k["retired_at"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [("mf1".to_string(), true), ("mf2".to_string(), false)]
    );
    // A domain with no key has nothing to rotate: one line, nothing made.
    let out = fleet.run(&["dkim", "rotate", "example.com"]);
    assert_one_line_error(
        &out,
        &["dkim", "rotate", "example.com"],
        &["example.com has no DKIM key to rotate"],
    );
    // An Ed25519 key beside the RSA one: two records, the second k=ed25519.
    let made = fleet.json(&["dkim", "new", "example.net", "--ed25519", "--json"]);
    let recs = made["records"].as_array().expect("records");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["name"], "mf1-ed._domainkey.example.net.");
    assert!(recs[1]["content"]
        .as_str()
        .expect("content")
        .starts_with("v=DKIM1; k=ed25519; p="));
}

/// Item 3 of issue 12: a relative `--db` used to record key files relative to the shell's
/// folder, so a deprovision run from another folder said "keys destroyed" and left the
/// 0600 key on disk. Now the path is recorded relative to the database's folder and the
/// file is gone, wherever the commands run from.
#[test]
fn a_relative_db_keeps_key_files_beside_it_and_a_teardown_from_elsewhere_deletes_them() {
    let fleet = Fleet::new();
    let home = fleet.dir.path().to_path_buf();
    std::fs::create_dir_all(home.join("site/data")).expect("mkdir");
    std::fs::create_dir_all(home.join("elsewhere")).expect("mkdir");
    let config = fleet.path("fast.toml");
    let run_in = |dir: &str, db: &str, args: &[&str]| -> String {
        let mut cmd = fleet.bare();
        cmd.current_dir(home.join(dir))
            .arg("--db")
            .arg(db)
            .arg("--config")
            .arg(&config)
            .args(args);
        let out = run_guarded(cmd, args);
        assert!(
            out.status.success(),
            "mailfleet {args:?} in {dir} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // Made from the database's own folder, with a bare relative path.
    run_in("site/data", "m.db", &["work", "--until-idle"]);
    let created = run_in(
        "site/data",
        "m.db",
        &[
            "request",
            "create",
            "--tenant",
            "acme",
            "--region",
            "dallas",
            "--plan",
            "ssd-1",
            "--label",
            "node-keys",
            "--json",
        ],
    );
    let id = serde_json::from_str::<Value>(&created).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    run_in("site/data", "m.db", &["work", "--until-idle"]);
    let keys: Vec<PathBuf> = std::fs::read_dir(home.join("site/data/tls"))
        .expect("the key folder is beside the database")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(keys.len(), 1, "one certificate key: {keys:?}");
    let db = rusqlite::Connection::open(home.join("site/data/m.db")).expect("open");
    let recorded: String = db
        .query_row("SELECT key_file FROM certificates", [], |r| r.get(0))
        .expect("a key file is recorded");
    assert!(
        !Path::new(&recorded).is_absolute() && recorded.starts_with("tls/"),
        "recorded relative to the database's folder: {recorded}"
    );

    // Torn down from another folder, through another relative path.
    run_in(
        "elsewhere",
        "../site/data/m.db",
        &["request", "deprovision", &id],
    );
    run_in("elsewhere", "../site/data/m.db", &["work", "--until-idle"]);
    assert!(!keys[0].exists(), "{} is still on disk", keys[0].display());
    let detail: Value = serde_json::from_str(&run_in(
        "elsewhere",
        "../site/data/m.db",
        &["request", "show", &id, "--json"],
    ))
    .expect("json");
    assert_eq!(detail["state"], "deprovisioned");
    let certs = detail["certificates"].as_array().expect("certificates");
    assert!(
        certs.iter().all(|c| c["key_stored"] == "destroyed"),
        "{certs:?}"
    );
}

#[test]
fn work_refuses_to_start_when_the_dns_secret_is_not_set() {
    let fleet = Fleet::new();
    let cfg = format!(
        "{FAST_CONFIG}[dns]\nprovider = \"powerdns\"\n[dns.powerdns]\napi_key_env = \"MAILFLEET_TEST_NEVER_SET\"\n"
    );
    std::fs::write(fleet.path("fast.toml"), cfg).expect("config");
    let out = fleet.run(&["work", "--until-idle"]);
    assert_one_line_error(
        &out,
        &["work"],
        &[
            "dns.powerdns.api_key_env",
            "MAILFLEET_TEST_NEVER_SET",
            "not set",
        ],
    );
    // reconcile still compares the inventory, and says why it looked at no zone.
    let report = fleet.json(&["reconcile", "--json"]);
    assert_eq!(report["orphans"], json!([]));
    let why = report["challenges_not_checked"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("MAILFLEET_TEST_NEVER_SET"), "{report}");
}

// ---------------------------------------------------------------------------------------------
// Who acts: the account running the command, never a name it claims
// ---------------------------------------------------------------------------------------------

#[test]
fn the_actor_is_the_account_and_as_is_refused_unless_it_may_impersonate() {
    let fleet = Fleet::new();
    let me = my_account();
    // $USER is anyone's to set: it names nobody.
    let mut cmd = fleet.bare();
    cmd.env("USER", "carol")
        .arg("--db")
        .arg(fleet.db())
        .arg("--config")
        .arg(fleet.path("fast.toml"))
        .args(create_args("acme", "dallas", "ssd-1", "node-mine"))
        .arg("--json");
    let out = run_guarded(cmd, &["request", "create"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = made["id"].as_str().expect("id");
    assert_eq!(fleet.show(id)["requested_by"], me.as_str());

    // --as: refused, naming the account and the setting that would allow it.
    let mut args = vec!["--as", "carol"];
    args.extend(create_args("acme", "dallas", "ssd-1", "node-carol"));
    assert_refused_without_writing(
        &fleet,
        &args,
        &["--as", &me, "carol", "[identity] impersonators"],
    );
    assert_refused_without_writing(
        &fleet,
        &["--as", "carol", "request", "reject", id, "--reason", "x"],
        &["--as", &me, "impersonators"],
    );
}

#[test]
fn an_impersonating_account_is_recorded_beside_the_name_it_acts_for() {
    let fleet = Fleet::new();
    let me = my_account();
    fleet.configure(&format!(
        "[identity]\nimpersonators = [\"{}\"]\n",
        me.to_uppercase()
    ));
    let mut args = vec!["--as", "Carol"];
    args.extend(create_args("acme", "dallas", "ssd-1", "node-carol"));
    args.push("--json");
    let made = fleet.json(&args);
    let id = made["id"].as_str().expect("id");
    let carol = format!("carol (via {me})");
    let detail = fleet.show(id);
    assert_eq!(detail["requested_by"], carol.as_str());
    assert_eq!(
        transitions_to(&detail, "queued")[0]["actor"],
        carol.as_str()
    );
    let events = fleet.events();
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["request_id"] == id && e["name"] == "provisioning.started")
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0]["actor"], carol.as_str(), "{:?}", started[0]);
}

#[test]
fn actor_names_are_one_rule_everywhere_and_bad_ones_are_shown_escaped() {
    let fleet = Fleet::new();
    let me = my_account();
    fleet.configure(&format!("[identity]\nimpersonators = [\"{me}\"]\n"));
    for (name, shown) in [
        ("b\u{200b}ob", "\\u{200b}"),
        ("bob\u{202e}", "\\u{202e}"),
        ("", "\"\""),
        ("bo b", "bo b"),
    ] {
        let mut args = vec!["--as", name];
        args.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
        let line = assert_refused_without_writing(&fleet, &args, &["--as", shown, "user name"]);
        assert!(
            !line.contains('\u{200b}') && !line.contains('\u{202e}'),
            "{line}"
        );
    }
    let long = "a".repeat(65);
    let mut args = vec!["--as", long.as_str()];
    args.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
    assert_refused_without_writing(&fleet, &args, &["--as", &long, "64"]);

    // The same rule for the names in the config, which name the key.
    for (text, key) in [
        ("[approvals]\napprovers = [\"b\u{200b}ob\"]\n", "approvals.approvers[0]"),
        (
            "[[tenants]]\nname = \"acme\"\nquota = { nodes = 1, cpu = 1, memory_gb = 1, storage_gb = 1 }\napprovers = [\"ok\", \"x\u{202e}y\"]\n",
            "tenants[0].approvers[1]",
        ),
        ("[identity]\nimpersonators = [\"ci bot\"]\n", "identity.impersonators[0]"),
    ] {
        let path = fleet.path("names.toml");
        std::fs::write(&path, text).expect("config");
        let db = fleet.db();
        let args = [
            "--db",
            db.to_str().expect("utf-8"),
            "--config",
            path.to_str().expect("utf-8"),
            "request",
            "list",
        ];
        let out = fleet.run_raw(&args);
        let line = assert_one_line_error(&out, &args, &[key, "user name"]);
        assert!(!line.contains('\u{200b}') && !line.contains('\u{202e}'), "{line}");
    }
}

#[test]
fn four_eyes_compares_the_people_and_the_accounts_behind_them() {
    let fleet = Fleet::new();
    let me = my_account();
    let other = account_of(OTHER_UID);
    // Approver names in the config are compared lowercased, as actors are.
    fleet.configure(&format!(
        "[identity]\nimpersonators = [\"{me}\"]\n[approvals]\napprovers = [\"Carol\", \"DAVE\", \"{me}\", \"{}\"]\n",
        other.to_uppercase()
    ));
    let mut args = vec!["--as", "carol"];
    args.extend(create_args("acme", "eu-west-1", "ssd-16", "node-big"));
    args.push("--json");
    let id = fleet.json(&args)["id"].as_str().expect("id").to_string();
    assert_eq!(fleet.state(&id), "pending_approval");
    // Not carol, whoever types it; not another name through the same account; not the
    // account itself.
    for who in [
        vec!["--as", "carol"],
        vec!["--as", "CAROL"],
        vec!["--as", "dave"],
        vec![],
    ] {
        let mut args = who.clone();
        args.extend(["request", "approve", id.as_str()]);
        assert_refused_without_writing(&fleet, &args, &["cannot approve", "requested it"]);
    }
    assert_eq!(fleet.state(&id), "pending_approval");
    // Another account may.
    fleet.hand_to(OTHER_UID);
    let out = fleet.run_as(OTHER_UID, &["request", "approve", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "queued");
    let approved = transitions_to(&detail, "queued");
    assert_eq!(approved.last().expect("approved")["actor"], other.as_str());
}

// ---------------------------------------------------------------------------------------------
// Opening a database: init creates it, once, safely; nothing else does
// ---------------------------------------------------------------------------------------------

#[test]
fn four_processes_creating_one_new_database_at_once_all_succeed() {
    let fleet = Fleet::without_db();
    for round in 0..20 {
        let db = fleet.path(&format!("round-{round}/m.db"));
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = fleet.bare();
                cmd.arg("--db")
                    .arg(&db)
                    .arg("--config")
                    .arg(fleet.path("fast.toml"))
                    .arg("init");
                std::thread::spawn(move || run_guarded(cmd, &["init"]))
            })
            .collect();
        for racer in racers {
            let out = racer.join().expect("racer");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let db_arg = db.to_str().expect("utf-8");
        let args = ["--db", db_arg, "request", "list", "--json"];
        let out = fleet.run_raw(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The database's bytes and modification time, for checking nothing wrote to it.
fn file_state(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    let bytes = std::fs::read(path).expect("read the database");
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    (bytes, mtime)
}

/// Closes every change into the database file itself: the last connection to close copies
/// the WAL back and removes it.
fn quiesce(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "the WAL is still there");
}

#[test]
fn a_database_from_a_newer_mailfleet_is_refused_and_left_as_it_is() {
    let (fleet, _) = Fleet::with_completed_request();
    let db = fleet.db();
    // What a newer build would leave: a migration this one does not know. In rollback
    // journal mode, so that switching it to WAL would show in the file's header.
    quiesce(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 'later')",
        [],
    )
    .expect("insert");
    conn.pragma_update(None, "journal_mode", "DELETE")
        .expect("rollback journal");
    drop(conn);
    let before = file_state(&db);
    let mut create = vec![];
    create.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
    for args in [
        vec!["request", "list"],
        create,
        vec!["work", "--until-idle"],
        vec!["init"],
        vec![],
        vec!["--read-only", "request", "list"],
    ] {
        let out = fleet.run(&args);
        assert_one_line_error(
            &out,
            &args,
            &[
                "m.db",
                "newer mailfleet",
                "schema 999",
                "this build knows up to",
            ],
        );
        assert!(file_state(&db) == before, "{args:?} wrote to the file");
        assert!(!fleet.path("m.db-wal").exists(), "{args:?} made a WAL");
    }
}

#[test]
fn only_init_demo_and_work_create_a_database() {
    let fleet = Fleet::without_db();
    let typo = fleet.path("tpyo/m.db");
    let typo_arg = typo.to_str().expect("utf-8");
    let config = fleet.path("fast.toml");
    let config_arg = config.to_str().expect("utf-8");
    let mut create = vec![];
    create.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
    for command in [
        vec!["request", "list"],
        create,
        vec!["node", "list"],
        vec!["events"],
        vec!["tls", "status"],
        vec!["warmup", "resume", "n1"],
        vec![],
        vec!["--read-only", "request", "list"],
    ] {
        let mut args = vec!["--db", typo_arg, "--config", config_arg];
        args.extend(command);
        let out = fleet.run_raw(&args);
        assert_one_line_error(
            &out,
            &args,
            &["tpyo/m.db", "does not exist", "mailfleet init"],
        );
        assert!(!fleet.path("tpyo").exists(), "{args:?} made the directory");
    }

    // init makes it, and says so; again, it finds it up to date.
    let init = ["--db", typo_arg, "--config", config_arg, "init"];
    let out = fleet.run_raw(&init);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"));
    assert!(typo.exists());
    let again = fleet.run_raw(&init);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let json = ["--db", typo_arg, "init", "--json"];
    let v: Value = serde_json::from_slice(&fleet.run_raw(&json).stdout).expect("JSON");
    assert_eq!(v["created"], false);
    assert_eq!(v["applied"], json!([]));
    let listed = fleet.run_raw(&["--db", typo_arg, "request", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");

    // work starts on a new database too.
    let fresh = fleet.path("new/w.db");
    let args = [
        "--db",
        fresh.to_str().expect("utf-8"),
        "--config",
        config_arg,
        "work",
        "--until-idle",
    ];
    let out = fleet.run_raw(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fresh.exists());
}

// ---------------------------------------------------------------------------------------------
// Reading writes nothing, and works on a file this account may not change
// ---------------------------------------------------------------------------------------------

/// Every command that only reads, on a fleet with one completed request and its node.
fn read_commands(request: &str, node: &str) -> Vec<Vec<String>> {
    [
        vec!["request", "list"],
        vec!["request", "show", request],
        vec!["node", "list", "--json"],
        vec!["node", "show", node],
        vec!["events", "--limit", "5"],
        vec!["alerts"],
        vec!["tls", "status"],
        vec!["tenant", "list"],
        vec!["cluster", "list"],
        vec!["cluster", "test", "sim-dallas"],
        vec!["dkim", "list"],
        vec!["warmup", "plans"],
        vec!["warmup", "plan", "standard"],
        vec!["warmup", "show", node],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .collect()
}

#[test]
fn read_commands_leave_the_database_byte_for_byte_as_it_was() {
    let (fleet, id) = Fleet::with_completed_request();
    let node = node_of(&fleet, &id)["id"]
        .as_str()
        .expect("node id")
        .to_string();
    let db = fleet.db();
    quiesce(&db);
    let before = file_state(&db);
    let wal = fleet.path("m.db-wal");
    for args in read_commands(&id, &node) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fleet.ok(&args);
        assert!(file_state(&db) == before, "{args:?} wrote to the file");
        assert!(
            std::fs::read(&wal).unwrap_or_default().is_empty(),
            "{args:?} wrote to the WAL"
        );
    }
}

#[test]
fn read_commands_work_on_a_read_only_file_and_changes_name_it() {
    use std::os::unix::fs::PermissionsExt;
    let (fleet, id) = Fleet::with_completed_request();
    let node = node_of(&fleet, &id)["id"]
        .as_str()
        .expect("node id")
        .to_string();
    let db = fleet.db();
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    // Another account, which may read the file and its directory but write neither (root
    // would write them whatever the bits say).
    let check = |when: &str| {
        set_mode(&db, 0o444);
        set_mode(fleet.dir.path(), 0o555);
        let before = file_state(&db);
        for args in read_commands(&id, &node) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = fleet.run_as(OTHER_UID, &args);
            assert!(
                out.status.success(),
                "{when}: {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut create = vec![];
        create.extend(create_args("acme", "dallas", "ssd-1", "node-x"));
        for args in [
            create,
            vec!["request", "suspend", &id],
            vec!["node", "pause", &node],
            vec!["work", "--until-idle"],
            vec!["init"],
        ] {
            let out = fleet.run_as(OTHER_UID, &args);
            assert_one_line_error(&out, &args, &[&db.display().to_string(), "read-only"]);
        }
        assert!(file_state(&db) == before, "{when}: the file changed");
        set_mode(fleet.dir.path(), 0o755);
        set_mode(&db, 0o644);
    };
    // As the last writer left it (its WAL and shared-memory files beside it)...
    check("with the WAL beside it");
    // ...and with every change in the file and nothing beside it.
    quiesce(&db);
    assert!(!fleet.path("m.db-shm").exists());
    check("with nothing beside it");
}

/// A database as an older mailfleet left it: every migration but the newest this build knows.
/// Returns the newest migration it holds and the one it lacks.
fn older_database(path: &Path) -> (i64, i64) {
    let number = |file: &Path| -> i64 {
        // NNNN_name.sql is migration NNNN.
        let name = file.file_name().expect("name").to_string_lossy();
        name[..4].parse().expect("numbered")
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("migrations")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let lacking = number(&files.pop().expect("a migration"));
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .expect("table");
    let mut newest = 0;
    for file in &files {
        conn.execute_batch(&std::fs::read_to_string(file).expect("read migration"))
            .expect("apply");
        newest = number(file);
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 'before')",
            [newest],
        )
        .expect("record");
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('app', 'mailfleet')",
        [],
    )
    .expect("meta");
    (newest, lacking)
}

#[test]
fn an_older_database_is_brought_up_to_date_by_init_or_the_first_read() {
    let fleet = Fleet::without_db();
    let (old, _) = older_database(&fleet.db());
    // --read-only never writes, so it says what is needed.
    let args = ["--read-only", "request", "list"];
    let out = fleet.run(&args);
    assert_one_line_error(
        &out,
        &args,
        &["m.db", &format!("holds schema {old}"), "mailfleet init"],
    );
    // A read upgrades it (the only write a read makes) and then reads.
    let listed = fleet.json(&["request", "list", "--json"]);
    assert_eq!(listed, json!([]));
    let again = fleet.ok(&["init"]);
    assert!(again.contains("up to date"), "{again}");

    // init says what it applied.
    std::fs::remove_file(fleet.db()).expect("remove");
    for side in ["m.db-wal", "m.db-shm"] {
        let _ = std::fs::remove_file(fleet.path(side));
    }
    let (_, lacking) = older_database(&fleet.db());
    let said = fleet.ok(&["init"]);
    assert!(
        said.contains("brought up to date") && said.contains(&format!("applied {lacking}")),
        "{said}"
    );
    fleet.create("acme", "dallas", "ssd-1", "node-after");
}

/// The last 8 hex digits of an id, as the CLI shows it.
fn short_id(id: &str) -> &str {
    &id[id.len() - 8..]
}

/// A database that cannot grow (`[store] max_size_kib` below its size: the disk-full error
/// SQLite gives) makes the engine's writes fail (its claims, or its workers' steps). The run
/// retries as the policy says, then fails naming each request it could not move and why,
/// instead of exiting 0 with them queued or looping forever.
#[test]
fn work_until_idle_fails_naming_requests_a_full_disk_leaves_queued() {
    let fleet = Fleet::new();
    let ids: Vec<String> = (1..=12)
        .map(|i| fleet.create("acme", "dallas", "ssd-1", &format!("node-{i}")))
        .collect();
    // Leases the failed run cannot release (a full disk) expire quickly.
    let full = FAST_CONFIG.replace("[engine]\n", "[engine]\nlease_ttl = \"1s\"\n");
    std::fs::write(
        fleet.path("full.toml"),
        format!("{full}[store]\nmax_size_kib = 1\n"),
    )
    .expect("config");
    let db = fleet.db();
    let db = db.to_str().expect("utf-8 path");
    let args = ["--db", db, "--config", "full.toml", "work", "--until-idle"];
    let out = fleet.run_raw(&args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The log goes to stderr too; the error is the last line.
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("error: work --until-idle: 12 requests left: "),
        "{stderr}"
    );
    for (i, id) in ids.iter().enumerate() {
        let state = fleet.state(id);
        let named = format!("{} node-{} {state} (", short_id(id), i + 1);
        assert!(line.contains(&named), "{named:?} is not in: {line}");
    }
    assert_eq!(
        line.matches("database or disk is full").count(),
        12,
        "{line}"
    );
    // With room to grow, the same requests go through.
    fleet.work();
    for id in &ids {
        assert_eq!(fleet.state(id), "completed");
    }
}

/// A request waiting for an approver is not an error: the run succeeds and says on stderr
/// what waits on whom.
#[test]
fn work_until_idle_succeeds_and_names_what_waits_for_a_person() {
    let fleet = Fleet::new();
    let big = fleet.create("acme", "eu-west-1", "ssd-16", "node-big");
    let small = fleet.create("acme", "dallas", "ssd-1", "node-small");
    let out = fleet.run(&["work", "--until-idle"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(fleet.state(&small), "completed");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mailfleet: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let expected = format!(
        "mailfleet: waiting for a person: {} node-big pending_approval (awaiting approval",
        short_id(&big)
    );
    assert!(lines[0].starts_with(&expected), "{stderr}");
}

/// A certificate order killed mid-way leaves its challenge record in the node's zone (here
/// the simulated DNS's, as it would be left). `reconcile` removes it and says so in its
/// JSON, beside `orphans` and `missing`.
#[test]
fn reconcile_removes_a_challenge_record_a_killed_order_left() {
    let fleet = Fleet::new();
    let id = fleet.create("acme", "dallas", "ssd-1", "node-1");
    fleet.work();
    let conn = rusqlite::Connection::open(fleet.db()).expect("open");
    let zone: String = conn
        .query_row(
            "SELECT zone FROM sim_dns_records WHERE name LIKE 'node-1.%' AND rtype = 'A'",
            [],
            |r| r.get(0),
        )
        .expect("the node's A record");
    let name = format!("_acme-challenge.node-1.{zone}");
    let count = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM sim_dns_records WHERE name = ?1",
            [&name],
            |r| r.get(0),
        )
        .expect("count")
    };
    conn.execute(
        "INSERT INTO sim_dns_records (zone, name, rtype, ttl, content, created_at)
         VALUES (?1, ?2, 'TXT', 60, '\"left-by-a-killed-order\"', '2026-01-01T00:00:00.000000Z')",
        [&zone, &name],
    )
    .expect("plant");
    assert_eq!(count(&conn), 1);

    // --read-only changes nothing, at the DNS provider either: it lists what it would remove.
    let looked = fleet.json(&["--read-only", "reconcile", "--json"]);
    assert_eq!(looked["challenges_removed"], json!([]));
    assert_eq!(looked["challenges_left"][0]["name"], json!(name));
    assert_eq!(count(&conn), 1, "--read-only removed nothing");

    let report = fleet.json(&["reconcile", "--json"]);
    let bare = zone.trim_end_matches('.');
    assert_eq!(report["orphans"], json!([]));
    assert_eq!(report["missing"], json!([]));
    assert_eq!(
        report["challenges_removed"],
        json!([{
            "request_id": id,
            "hostname": format!("node-1.{bare}"),
            "name": name,
            "zone": bare,
            "records": 1
        }])
    );
    assert_eq!(report["challenges_failed"], json!([]));
    assert_eq!(count(&conn), 0);
    let again = fleet.json(&["reconcile", "--json"]);
    assert_eq!(again["challenges_removed"], json!([]));
    let text = fleet.ok(&["reconcile"]);
    assert!(text.contains("no orphans"), "{text}");
}
