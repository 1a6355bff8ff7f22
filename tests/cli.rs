//! End-to-end tests of the `mailfleet` binary as a script would use it: every test runs the
//! real executable in its own temporary directory, with its own database and a config that
//! makes the simulated cloud fast, and with HOME and the XDG directories pointed into that
//! directory so a developer's own settings never leak in.

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
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("fast.toml"), FAST_CONFIG).expect("write config");
        Fleet { dir }
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

    // Suspend: the request and its node both show it.
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

    // Every operator action is recorded with the operator's name.
    let suspended = transitions_to(&detail, "suspended");
    assert_eq!(suspended.len(), 1, "{detail:#}");
    assert_eq!(suspended[0]["actor"], "alice");
    let reactivated: Vec<&Value> = transitions_to(&detail, "completed")
        .into_iter()
        .filter(|t| t["from_state"] == "suspended")
        .collect();
    assert_eq!(reactivated.len(), 1, "{detail:#}");
    assert_eq!(reactivated[0]["actor"], "alice");
    let torn_down = transitions_to(&detail, "rolling_back");
    assert_eq!(torn_down.len(), 1, "{detail:#}");
    assert_eq!(torn_down[0]["actor"], "alice");
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

    let approved = fleet.json(&["--as", "ops-lead", "request", "approve", &id, "--json"]);
    assert_eq!(approved["state"], "queued");
    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "queued");
    let to_queued: Vec<&Value> = transitions_to(&detail, "queued")
        .into_iter()
        .filter(|t| t["from_state"] == "pending_approval")
        .collect();
    assert_eq!(to_queued.len(), 1, "{detail:#}");
    assert_eq!(to_queued[0]["actor"], "ops-lead");

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
    fleet.ok(&[
        "--as",
        "ops-lead",
        "request",
        "reject",
        &id,
        "--reason",
        "too big for eu",
    ]);
    let detail = fleet.show(&id);
    assert_eq!(detail["state"], "rejected");
    assert_eq!(detail["error"], "too big for eu");
    let rejected = transitions_to(&detail, "rejected");
    assert_eq!(rejected.len(), 1, "{detail:#}");
    assert_eq!(rejected[0]["actor"], "ops-lead");

    // The engine leaves a rejected request alone.
    fleet.work();
    assert_eq!(fleet.state(&id), "rejected");
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
