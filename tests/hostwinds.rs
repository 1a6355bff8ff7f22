//! The Hostwinds provider against a contract server that keeps real inventory and answers
//! as Hostwinds does (tests/support/hostwinds_fake.rs): the full pipeline, rollback of an
//! instance that never gets an IP, reconcile, resize, and the key kept out of everything.

#[path = "support/hostwinds_fake.rs"]
mod hostwinds_fake;
mod support;

use hostwinds_fake::{HostwindsFake, Trouble};
use mailfleet::engine;
use mailfleet::providers::{ErrorKind, InstanceSpec, InstanceStatus, Registry};
use std::time::Duration;
use support::*;

/// A key long enough to be redacted wherever it might show up.
fn key_for(test: &str) -> String {
    format!("hw-{test}-Zq81sK3mXv0Lp2Rt")
}

/// Dallas served by Hostwinds (the fake), its nodes checked by what Hostwinds reports. The
/// key is in `env` (a variable of this test's own: tests run side by side).
fn hw_config(fake: &HostwindsFake, env: &str, extra: &str) -> mailfleet::config::Config {
    config(&hw_toml(fake, env, extra))
}

/// The TOML of `hw_config`.
fn hw_toml(fake: &HostwindsFake, env: &str, extra: &str) -> String {
    let fast = FAST.replace(
        "[engine]\n",
        "[engine]\ncall_timeout = \"400ms\"\nstuck_after = \"3s\"\n",
    );
    format!(
        r#"{fast}
[providers.hostwinds]
api_key_env = "{env}"
endpoint = "{endpoint}"
template = "debian-12"
smtp_firewall = "SMTP-587"
locations = {{ dallas = 3 }}
plans = {{ ssd-1 = 101, ssd-2 = 102, ssd-4 = 104, ssd-8 = 108, ssd-16 = 116 }}
[[clusters]]
name = "hw-dallas"
provider = "hostwinds"
region = "dallas"
default = true
access = "provider-view"
capacity = {{ cpu = 64, memory_gb = 256, storage_gb = 4000, vm_slots = 20 }}
{extra}"#,
        endpoint = fake.endpoint()
    )
}

/// A store and engine on `fake` (key in `env`), with one request for `label` run until
/// the engine is idle.
struct Run {
    dir: tempfile::TempDir,
    store: mailfleet::store::Store,
    ctx: std::sync::Arc<engine::Ctx>,
    req: mailfleet::store::RequestRow,
}

async fn provision(fake: &HostwindsFake, env: &str, label: &str) -> Run {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = hw_config(fake, env, "");
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", label).await;
    engine::run_until_idle(ctx.clone()).await;
    Run {
        dir,
        store,
        ctx,
        req,
    }
}

/// The config `run` was made with (its fake's endpoint and key variable).
fn hw_cfg_of(run: &Run) -> mailfleet::config::Config {
    (*run.ctx.cfg).clone()
}

/// Every byte of the database directory (database, WAL): where a key must never be.
fn disk_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        if let Ok(b) = std::fs::read(e.path()) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_provisioned_at_hostwinds_once_even_when_the_create_times_out() {
    let key = key_for("pipeline");
    std::env::set_var("MF_TEST_HW_KEY_PIPELINE", &key);
    let fake = HostwindsFake::start(&key, 3).await;
    // The first create is made but answered too late; the retry must find it, not buy a
    // second. Then a 5xx and an error answer (HTTP 200) on the way, both retried.
    fake.trouble("add_instance", Trouble::Stall(Duration::from_millis(900)));
    fake.trouble("set_instance_firewall", Trouble::Http(502));
    fake.trouble(
        "set_rdns",
        Trouble::Error("Service temporarily unavailable, try again".into()),
    );
    let Run {
        dir,
        store,
        ctx,
        req,
    } = provision(&fake, "MF_TEST_HW_KEY_PIPELINE", "hw-node-1").await;

    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    assert_eq!(d.request.cluster.as_deref(), Some("hw-dallas"));
    let vms = fake.vms();
    assert_eq!(vms.len(), 1, "one instance bought: {vms:?}");
    let vm = &vms[0];
    assert_eq!(
        vm.srvrname, req.id,
        "the request id is the instance's srvrname"
    );
    assert_eq!((vm.rid, vm.location_id), (101, 3), "ssd-1 in dallas");
    assert_eq!(vm.template, "debian-12");
    assert_eq!(vm.firewall.as_deref(), Some("SMTP-587"));
    assert_eq!(
        vm.rdns.as_deref(),
        Some(format!("hw-node-1.{}", mailfleet::domain::hostname::DEFAULT_DOMAIN).as_str())
    );
    let actions = fake.actions();
    let adds = actions.iter().filter(|a| *a == "add_instance").count();
    assert_eq!(adds, 1, "the retry found the first instance: {actions:?}");
    assert!(
        actions.iter().filter(|a| *a == "get_instance").count() >= 3,
        "the create was polled until it had its IP: {actions:?}"
    );
    let inst = d
        .resources
        .iter()
        .find(|r| r.kind == "instance")
        .expect("instance resource");
    assert_eq!(inst.provider.as_deref(), Some("hostwinds"));
    assert_eq!(
        inst.provider_ref.as_deref(),
        Some(vm.serviceid.to_string().as_str())
    );
    let ip = d.resources.iter().find(|r| r.kind == "ip").expect("ip");
    assert_eq!(ip.provider_ref.as_deref(), Some(vm.main_ip.as_str()));

    // The key went to Hostwinds in every call, and nowhere else.
    assert!(fake.bodies().iter().all(|b| b.contains(&key)));
    drop(ctx);
    drop(store);
    assert!(!contains(&disk_bytes(&dir), &key), "the key is on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_not_authorized_and_the_error_names_the_variable_not_the_key() {
    let key = key_for("wrong");
    let fake = HostwindsFake::start(&key, 1).await;
    let wrong = key_for("wrong-one");
    std::env::set_var("MF_TEST_HW_KEY_WRONG", &wrong);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = hw_config(&fake, "MF_TEST_HW_KEY_WRONG", "");
    let store = open(&db_path(&dir), &cfg).await;
    let reg = Registry::build(&cfg, &store, &system_clock()).expect("registry");
    let p = reg.cluster("hw-dallas").expect("bound").provider.clone();
    let e = p.status("7000001").await.expect_err("not authorized");
    assert_eq!(e.kind, ErrorKind::Invalid, "not worth retrying: {e}");
    assert!(e.message.contains("not authorized"), "{e}");
    assert!(e.message.contains("MF_TEST_HW_KEY_WRONG"), "{e}");
    assert!(!e.to_string().contains(&wrong), "{e}");

    // A request on the cluster fails at once, without retries. Its rollback cannot learn
    // from Hostwinds whether the create made an instance, so it does not claim the intent
    // released: it stalls, marked for a person, and says why.
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "hw-refused").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "rolling_back");
    assert!(d.request.needs_attention);
    let why = d.request.error.clone().unwrap_or_default();
    assert!(why.contains("not authorized"), "{why}");
    let stall = d.request.wait_reason.clone().unwrap_or_default();
    assert!(stall.contains("not authorized"), "{stall}");
    let failed_at = d
        .transitions
        .iter()
        .find(|t| t.to_state == "failed")
        .expect("failed");
    assert!(failed_at
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("not authorized"));
    assert!(
        fake.actions()
            .iter()
            .filter(|a| *a == "get_instances")
            .count()
            <= 3,
        "a refusal is not retried: {:?}",
        fake.actions()
    );
    assert!(fake.vms().is_empty());
    drop(ctx);
    drop(store);
    assert!(!contains(&disk_bytes(&dir), &wrong), "the key is on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_gets_an_ip_is_terminated_by_the_rollback() {
    let key = key_for("noip");
    std::env::set_var("MF_TEST_HW_KEY_NOIP", &key);
    let fake = HostwindsFake::start(&key, 1).await;
    fake.never_ip();
    let Run {
        dir: _dir,
        store,
        ctx: _ctx,
        req,
    } = provision(&fake, "MF_TEST_HW_KEY_NOIP", "hw-no-ip").await;
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    assert_eq!(fake.vms().len(), 1, "it was bought");
    assert!(fake.live().is_empty(), "and terminated: {:?}", fake.vms());
    assert!(fake.actions().contains(&"terminate".to_string()));
    assert!(d.resources.iter().all(|r| r.status == "released"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_an_instance_no_request_owns() {
    let key = key_for("reconcile");
    std::env::set_var("MF_TEST_HW_KEY_RECONCILE", &key);
    let fake = HostwindsFake::start(&key, 1).await;
    let Run {
        dir: _dir,
        store,
        ctx,
        req,
    } = provision(&fake, "MF_TEST_HW_KEY_RECONCILE", "hw-owned").await;
    assert_eq!(
        store
            .request_detail(&req.id)
            .await
            .expect("d")
            .request
            .state,
        "completed"
    );
    let foreign = fake.add_foreign("made-in-the-panel");
    let report = engine::reconcile::reconcile(&ctx).await.expect("reconcile");
    let orphans: Vec<&str> = report
        .orphans
        .iter()
        .map(|o| o.instance_id.as_str())
        .collect();
    assert_eq!(orphans, [foreign.to_string().as_str()], "{report:?}");
    assert_eq!(report.orphans[0].provider, "hostwinds");
    assert_eq!(report.orphans[0].region, "dallas");
    assert!(report.missing.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_orders_applies_and_confirms_and_reverts_when_it_fails() {
    let key = key_for("resize");
    std::env::set_var("MF_TEST_HW_KEY_RESIZE", &key);
    let fake = HostwindsFake::start(&key, 0).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = hw_config(&fake, "MF_TEST_HW_KEY_RESIZE", "");
    let store = open(&db_path(&dir), &cfg).await;
    let reg = Registry::build(&cfg, &store, &system_clock()).expect("registry");
    let p = reg.cluster("hw-dallas").expect("bound").provider.clone();
    let spec = InstanceSpec {
        idempotency_key: "req-resize".into(),
        label: "r".into(),
        hostname: "r.example.net".into(),
        region: "dallas".into(),
        cluster: "hw-dallas".into(),
        plan: "ssd-1".into(),
        cpu: 1,
        memory_gb: 1,
        storage_gb: 25,
        ssh_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMailfleetTestKey mailfleet".into()),
    };
    let inst = p.create(&spec).await.expect("create");
    // The instance is made with mailfleet's key for root.
    let (_, add) = fake
        .calls()
        .into_iter()
        .find(|(a, _)| a == "add_instance")
        .expect("add_instance");
    assert_eq!(add.get("keys"), spec.ssh_key.as_ref(), "{add:?}");
    assert_eq!(
        p.status(&inst.id).await.expect("status").status,
        InstanceStatus::Running
    );
    p.resize(&inst.id, "ssd-4", 4, 8, 160)
        .await
        .expect("resize");
    assert_eq!(fake.vms()[0].rid, 101, "applied, not yet confirmed");
    p.confirm_resize(&inst.id).await.expect("confirm");
    assert_eq!(fake.vms()[0].rid, 104);
    let tail: Vec<String> = fake.actions().into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        ["confirm_upgrade", "upgrade_server", "upgrade_instance"]
    );
    // A confirm retried after Hostwinds took it finds nothing to do, and says so by
    // succeeding.
    p.confirm_resize(&inst.id).await.expect("confirm again");
    assert_eq!(fake.vms()[0].rid, 104);

    fake.trouble(
        "upgrade_server",
        Trouble::Error("hypervisor refused the upgrade".into()),
    );
    let e = p
        .resize(&inst.id, "ssd-8", 8, 16, 320)
        .await
        .expect_err("fails");
    assert!(e.message.contains("hypervisor refused"), "{e}");
    assert_eq!(
        fake.actions().last().map(String::as_str),
        Some("revert_upgrade")
    );
    assert_eq!(fake.vms()[0].rid, 104, "the failed upgrade was reverted");
    assert!(fake.vms()[0].upgrade.is_none(), "no order left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_resized_at_hostwinds_by_its_own_request_and_a_refused_confirm_reverts_it() {
    use mailfleet::engine::commands::{execute, Command, Outcome};
    let key = key_for("noderesize");
    std::env::set_var("MF_TEST_HW_KEY_NODERESIZE", &key);
    let fake = HostwindsFake::start(&key, 2).await;
    let run = provision(&fake, "MF_TEST_HW_KEY_NODERESIZE", "grow-1").await;
    let store = &run.store;
    let node = store
        .list_nodes(&mailfleet::store::NodeFilter::default())
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.label == "grow-1")
        .expect("node");
    let file = |plan: &str| Command::ResizeNode {
        id: node.id.clone(),
        plan: plan.to_string(),
        reason: None,
    };
    let resize = |plan: &'static str| {
        let ctx = run.ctx.clone();
        let cmd = file(plan);
        async move {
            match execute(&ctx, "ops", cmd).await.expect("filed") {
                Outcome::Created(r) => *r,
                other => panic!("{other:?}"),
            }
        }
    };
    let up = resize("ssd-4").await;
    engine::run_until_idle(sim_ctx(store, &hw_cfg_of(&run), system_clock())).await;
    let row = store.get_request(&up.id).await.expect("read").expect("row");
    assert_eq!(row.state, "completed", "{:?}", row.error);
    let vm = fake.vms().into_iter().next().expect("vm");
    assert_eq!(vm.rid, 104, "Hostwinds has the instance on ssd-4's rid");
    assert!(vm.upgrade.is_none());
    let acts = fake.actions();
    let from = acts
        .iter()
        .position(|a| a == "upgrade_instance")
        .expect("ordered");
    let upgrade: Vec<&str> = acts[from..]
        .iter()
        .map(String::as_str)
        .filter(|a| a.contains("upgrade"))
        .collect();
    assert_eq!(
        upgrade,
        ["upgrade_instance", "upgrade_server", "confirm_upgrade"]
    );

    // Billing refuses the next confirmation: the upgrade is reverted, the node stays on ssd-4.
    fake.trouble(
        "confirm_upgrade",
        Trouble::Error("the upgrade invoice could not be charged".into()),
    );
    let again = resize("ssd-8").await;
    engine::run_until_idle(sim_ctx(store, &hw_cfg_of(&run), system_clock())).await;
    let d = store.request_detail(&again.id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    assert!(
        d.request
            .error
            .as_deref()
            .unwrap_or("")
            .contains("could not be charged"),
        "{:?}",
        d.request.error
    );
    let vm = fake.vms().into_iter().next().expect("vm");
    assert_eq!(vm.rid, 104, "still on ssd-4");
    assert!(vm.upgrade.is_none(), "no order left open");
    assert_eq!(
        fake.actions().last().map(String::as_str),
        Some("revert_upgrade")
    );
    let n = store.get_node(&node.id).await.expect("node");
    assert_eq!(n.plan, "ssd-4");
}

#[tokio::test]
async fn a_hostwinds_cluster_without_its_key_or_mappings_is_refused_at_start_up() {
    let fake = HostwindsFake::start("unused-key-000000000", 0).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = hw_config(&fake, "MF_TEST_HW_KEY_NEVER_SET", "");
    let store = open(&db_path(&dir), &cfg).await;
    let e = Registry::build(&cfg, &store, &system_clock())
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("hw-dallas")
            && e.to_string().contains("providers.hostwinds.api_key_env")
            && e.to_string().contains("MF_TEST_HW_KEY_NEVER_SET"),
        "{e}"
    );

    // One Hostwinds cluster in dallas, with what each case changes.
    let refused = |locations: &str, plans: &str, access: &str| {
        let text = format!(
            "[providers.hostwinds]\napi_key_env = \"K\"\ntemplate = \"t\"\n\
             locations = {{ {locations} }}\nplans = {{ {plans} }}\n\
             [[clusters]]\nname = \"hw\"\nprovider = \"hostwinds\"\nregion = \"dallas\"\n{access}\n\
             capacity = {{ cpu = 1, memory_gb = 1, storage_gb = 1, vm_slots = 1 }}\n"
        );
        mailfleet::config::from_layers(&[
            (
                "(built-in defaults)".into(),
                mailfleet::config::DEFAULT_TOML.into(),
            ),
            ("test".into(), text),
        ])
        .expect_err("refused")
        .to_string()
    };
    let all_plans = "ssd-1 = 1, ssd-2 = 2, ssd-4 = 4, ssd-8 = 8, ssd-16 = 16";
    let view = "access = \"provider-view\"";
    let bad_region = refused("seattle = 2", all_plans, view);
    assert!(
        bad_region.contains("clusters[")
            && bad_region.contains(".region")
            && bad_region.contains("location_id"),
        "{bad_region}"
    );
    let no_plan = refused("dallas = 2", "ssd-1 = 1", view);
    assert!(
        no_plan.contains("providers.hostwinds.plans") && no_plan.contains("ssd-2"),
        "{no_plan}"
    );
    // Without `access`, a real cloud's nodes are reached over SSH, and they send their test
    // message to mailfleet's sink: its address must be one they can reach.
    let ssh = refused("dallas = 2", all_plans, "");
    assert!(
        ssh.contains("verify.sink_listen") && ssh.contains("provider-view"),
        "{ssh}"
    );
}

/// Hostwinds answers 503 five times running. After three in a row the circuit opens: the
/// request waits for it (deferred, not failed) instead of spending its retries, the engine
/// probes, each failed probe opens it again, and a probe that succeeds closes it; the request
/// then completes with one instance. Without the breaker its four attempts would all have
/// failed and it would have rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_parks_the_request_and_a_probe_that_succeeds_lets_it_finish() {
    let key = key_for("breaker");
    std::env::set_var("MF_TEST_HW_KEY_BREAKER", &key);
    let fake = HostwindsFake::start(&key, 1).await;
    for _ in 0..5 {
        fake.trouble("*", Trouble::Http(503));
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = hw_config(
        &fake,
        "MF_TEST_HW_KEY_BREAKER",
        "[providers.limits]\nbreaker_failures = 3\nbreaker_cooldown = \"300ms\"\nmax_in_flight = 2\n",
    );
    assert_eq!(cfg.engine.max_retries, 3);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "hw-breaker").await;
    let out = engine::run_until_idle(ctx.clone()).await;
    assert!(out.succeeded(), "{out:?}");

    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    assert_eq!(d.request.wait_reason, None);
    assert_eq!(fake.live().len(), 1, "one instance");
    let events: Vec<(String, serde_json::Value)> = store
        .list_events(&mailfleet::store::EventFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.name.starts_with("provider."))
        .map(|e| (e.name, serde_json::from_str(&e.payload).unwrap_or_default()))
        .collect();
    // Oldest first: opened after three, opened again by each of the two failed probes,
    // closed by the good one.
    let events: Vec<_> = events.into_iter().rev().collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "provider.circuit_opened",
            "provider.circuit_opened",
            "provider.circuit_opened",
            "provider.circuit_closed"
        ],
        "{events:?}"
    );
    let failures: Vec<&serde_json::Value> =
        events[..3].iter().map(|(_, p)| &p["failures"]).collect();
    assert_eq!(failures, [3, 4, 5]);
    assert_eq!(events[0].1["provider"], "hostwinds");
    let deferred: Vec<String> = store
        .list_audit(1000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|a| a.action == "request.deferred")
        .filter_map(|a| a.detail)
        .collect();
    // Newest first: the first time it was parked is the last row.
    let first = deferred.last().expect("the request was parked");
    assert!(
        first.starts_with(
            "provider unavailable: hostwinds: circuit open after 3 failed calls in a row"
        ),
        "{deferred:?}"
    );
    assert!(
        deferred.iter().all(|d| !d.contains(&key)),
        "the key is not in the reason"
    );
    let listed = engine::clusters::clusters(&store, &cfg)
        .await
        .expect("clusters");
    let hw = listed
        .iter()
        .find(|c| c.name == "hw-dallas")
        .expect("cluster");
    assert_eq!((hw.circuit.state.as_str(), hw.max_in_flight), ("closed", 2));
}

/// Every file under `dir`, recursively, as bytes.
fn tree_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            all.extend(tree_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_stays_out_of_a_workers_logs_and_output_even_when_hostwinds_echoes_it() {
    let key = key_for("logs");
    let fake = HostwindsFake::start(&key, 2).await;
    // Hostwinds answers the create with an error that quotes the key back: retried (it says
    // to try again), and the text goes to the retry note, the log and the events.
    fake.trouble(
        "add_instance",
        Trouble::Error(format!(
            "API key {key} is over its rate limit, try again shortly"
        )),
    );
    // Then refuses the firewall profile, quoting the key again: the request fails with
    // that as its error, and is rolled back.
    fake.trouble(
        "set_instance_firewall",
        Trouble::Error(format!(
            "profile SMTP-587 is not permitted for API key {key}"
        )),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let cfg_path = dir.path().join("hw.toml");
    let toml = format!(
        "{}\n[blocklists]\nmonitor = false\n",
        hw_toml(&fake, "MF_TEST_HW_KEY_LOGS", "")
    );
    std::fs::write(&cfg_path, toml).expect("config");
    let db = db_path(&dir);
    let state = dir.path().join("state");
    let run = |args: &'static [&'static str]| {
        let (db, cfg_path, state, key) = (db.clone(), cfg_path.clone(), state.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
                .arg("--db")
                .arg(&db)
                .arg("--config")
                .arg(&cfg_path)
                .args(args)
                .env("MF_TEST_HW_KEY_LOGS", &key)
                .env("MAILFLEET_LOG", "trace")
                .env("XDG_STATE_HOME", &state)
                .env("XDG_CONFIG_HOME", &state)
                .env_remove("MAILFLEET_CONFIG")
                .output()
                .expect("run mailfleet")
        })
    };
    let mut said = Vec::new();
    for args in [
        &["init"][..],
        &[
            "request", "create", "--tenant", "acme", "--region", "dallas", "--plan", "ssd-1",
            "--label", "hw-logs",
        ][..],
        &["work", "--until-idle"][..],
        &["request", "list", "--json"][..],
        &["events", "--json"][..],
    ] {
        let out = run(args).await.expect("joined");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        said.extend(out.stdout);
        said.extend(out.stderr);
    }
    let text = String::from_utf8_lossy(&said).into_owned();
    assert!(
        text.contains("not permitted for API key [redacted]"),
        "the echoed refusal is the request's error, redacted: {text}"
    );
    assert!(
        fake.actions()
            .iter()
            .filter(|a| *a == "add_instance")
            .count()
            >= 2,
        "the create was retried"
    );
    assert!(!contains(&said, &key), "the key reached the output");
    let files = tree_bytes(dir.path());
    assert!(
        contains(&files, "TRACE") || contains(&files, "DEBUG"),
        "a log was written"
    );
    assert!(!contains(&files, &key), "the key reached a file");
}
