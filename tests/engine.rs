//! Engine behaviour: rollback order, the fairness limit, backoff between retries, stuck
//! detection, graceful shutdown. Time-dependent tests run on tokio's paused clock.

mod support;

use async_trait::async_trait;
use mailfleet::access::{NodeAccess, NodeRef};
use mailfleet::clock::{parse_ts, SharedClock, TokioClock};
use mailfleet::engine;
use mailfleet::providers::sim::SimProvider;
use mailfleet::providers::{
    ErrorKind, Instance, InstanceSpec, InstanceStatus, Probe, Provider, ProviderError,
    ProviderResult, Registry,
};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// The sim cloud with scripted misbehaviour and a log of every call.
struct Scripted {
    inner: SimProvider,
    log: Mutex<Vec<String>>,
    fail_probes: bool,
    fail_creates: AtomicU32,
    /// Deletes that fail (transiently) before one goes through.
    fail_deletes: AtomicU32,
    never_ready: bool,
}

impl Scripted {
    fn new(inner: SimProvider) -> Self {
        Self {
            inner,
            log: Mutex::new(Vec::new()),
            fail_probes: false,
            fail_creates: AtomicU32::new(0),
            fail_deletes: AtomicU32::new(0),
            never_ready: false,
        }
    }
    fn note(&self, s: String) {
        self.log.lock().expect("log").push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "sim"
    }
    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance> {
        self.note(format!("create {}", spec.label));
        if self.fail_creates.load(Ordering::SeqCst) > 0 {
            self.fail_creates.fetch_sub(1, Ordering::SeqCst);
            return Err(ProviderError::new(
                "sim",
                ErrorKind::Transient,
                "503 Service Unavailable",
            ));
        }
        self.inner.create(spec).await
    }
    async fn find(&self, key: &str) -> ProviderResult<Option<Instance>> {
        self.note("find".into());
        self.inner.find(key).await
    }
    async fn status(&self, id: &str) -> ProviderResult<Instance> {
        let mut inst = self.inner.status(id).await?;
        if self.never_ready && inst.status != InstanceStatus::Deleted {
            inst.status = InstanceStatus::Building;
            inst.ip = None;
        }
        Ok(inst)
    }
    async fn delete(&self, id: &str) -> ProviderResult<()> {
        self.note("delete".into());
        if self.fail_deletes.load(Ordering::SeqCst) > 0 {
            self.fail_deletes.fetch_sub(1, Ordering::SeqCst);
            return Err(ProviderError::new(
                "sim",
                ErrorKind::Transient,
                "502 Bad Gateway from the delete endpoint",
            ));
        }
        self.inner.delete(id).await
    }
    async fn suspend(&self, id: &str) -> ProviderResult<()> {
        self.inner.suspend(id).await
    }
    async fn resume(&self, id: &str) -> ProviderResult<()> {
        self.inner.resume(id).await
    }
    async fn resize(&self, id: &str, plan: &str, cpu: i64, m: i64, s: i64) -> ProviderResult<()> {
        self.note(format!("resize {plan}"));
        self.inner.resize(id, plan, cpu, m, s).await
    }
    async fn confirm_resize(&self, id: &str) -> ProviderResult<()> {
        self.note("confirm_resize".into());
        self.inner.confirm_resize(id).await
    }
    async fn revert_resize(&self, id: &str) -> ProviderResult<()> {
        self.note("revert_resize".into());
        self.inner.revert_resize(id).await
    }
    async fn set_firewall(&self, id: &str, profile: &str) -> ProviderResult<()> {
        self.note(format!("firewall {profile}"));
        self.inner.set_firewall(id, profile).await
    }
    async fn set_rdns(&self, id: &str, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()> {
        self.note(format!("rdns {}", name.unwrap_or("reset")));
        self.inner.set_rdns(id, ip, name).await
    }
    async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
        self.inner.inventory().await
    }
}

/// The simulated machines behind the scripted cloud, with the same script.
#[async_trait]
impl NodeAccess for Scripted {
    fn name(&self) -> &str {
        "sim"
    }
    async fn bootstrap(&self, node: &NodeRef, user_data: &str) -> ProviderResult<()> {
        self.note("bootstrap".into());
        self.inner.bootstrap(node, user_data).await
    }
    async fn probe(&self, node: &NodeRef, probe: Probe) -> ProviderResult<String> {
        self.note(format!("probe {probe:?}"));
        if self.fail_probes {
            return Err(ProviderError::new(
                "sim",
                ErrorKind::Invalid,
                "554 5.7.1 relay access denied",
            ));
        }
        self.inner.probe(node, probe).await
    }
}

/// Every cluster on the scripted cloud.
fn scripted_ctx(
    store: &mailfleet::store::Store,
    cfg: &mailfleet::config::Config,
    clock: SharedClock,
    provider: &Arc<Scripted>,
) -> Arc<mailfleet::engine::Ctx> {
    let providers = Registry::uniform(cfg, provider.clone(), provider.clone());
    mailfleet::engine::Ctx::new(store.clone(), providers, clock, Arc::new(cfg.clone()))
}

fn scripted(
    store: &mailfleet::store::Store,
    cfg: &mailfleet::config::Config,
    clock: SharedClock,
    f: impl FnOnce(&mut Scripted),
) -> Arc<Scripted> {
    let mut s = Scripted::new(SimProvider::new(
        store.clone(),
        cfg.providers.sim.clone(),
        clock,
    ));
    f(&mut s);
    Arc::new(s)
}

#[tokio::test(start_paused = true)]
async fn failed_verify_rolls_back_in_reverse_order_and_frees_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let clock = tokio_clock();
    let provider = scripted(&store, &cfg, clock.clone(), |s| s.fail_probes = true);
    let ctx = scripted_ctx(&store, &cfg, clock, &provider);
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-1").await;
    engine::run_until_idle(ctx.clone()).await;

    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let path: Vec<&str> = d.transitions.iter().map(|t| t.to_state.as_str()).collect();
    assert_eq!(
        path,
        [
            "queued",
            "allocating",
            "configuring",
            "activating",
            "verifying",
            "failed",
            "rolling_back",
            "rolled_back"
        ]
    );
    assert!(
        d.request
            .error
            .as_deref()
            .unwrap_or("")
            .contains("relay access denied"),
        "{:?}",
        d.request.error
    );
    assert!(
        d.resources.iter().all(|r| r.status == "released"),
        "everything released: {:?}",
        d.resources
    );
    // The provider saw the teardown in reverse: PTR reset before the instance is deleted.
    let calls = provider.calls();
    let setup_end = calls
        .iter()
        .position(|c| c.starts_with("probe"))
        .expect("probed");
    let teardown: Vec<&String> = calls[setup_end + 1..].iter().collect();
    assert_eq!(teardown, ["rdns reset", "delete"]);
    assert_eq!(d.node.expect("node").status, "decommissioned");
    // Quota and capacity are back where they started.
    assert!(!store
        .tenant_usage()
        .await
        .expect("usage")
        .contains_key("acme"));
    assert!(store.cluster_usage().await.expect("usage").is_empty());
    let report = mailfleet::engine::reconcile::reconcile(&ctx)
        .await
        .expect("reconcile");
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
}

/// A node whose verify step fails, so that it is rolled back, on a cloud that refuses the
/// first `refusals` deletes; the request is made, nothing is run yet.
struct FailingRollback {
    /// Kept until the test ends: the database lives in it.
    _dir: tempfile::TempDir,
    cfg: mailfleet::config::Config,
    store: mailfleet::store::Store,
    provider: Arc<Scripted>,
    ctx: Arc<mailfleet::engine::Ctx>,
    req: mailfleet::store::RequestRow,
}

async fn failing_rollback(
    label: &str,
    refusals: impl FnOnce(&mailfleet::config::Config) -> u32,
) -> FailingRollback {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let clock = tokio_clock();
    let refusals = refusals(&cfg);
    let provider = scripted(&store, &cfg, clock.clone(), |s| {
        s.fail_probes = true;
        s.fail_deletes = AtomicU32::new(refusals);
    });
    let ctx = scripted_ctx(&store, &cfg, clock, &provider);
    let req = create(&ctx, "acme", "dallas", "ssd-1", label).await;
    FailingRollback {
        _dir: dir,
        cfg,
        store,
        provider,
        ctx,
        req,
    }
}

/// Issue 12, item 9: a rolled-back request says why it failed, not what its rollback's last
/// retry said; a stalled rollback says so beside that reason, and once it finishes it
/// carries no "rollback stalled" note.
#[tokio::test(start_paused = true)]
async fn a_rolled_back_request_keeps_why_it_failed_through_retries_and_a_stall() {
    let FailingRollback {
        _dir: _keep,
        store,
        provider,
        ctx,
        req,
        cfg: _,
    } = failing_rollback("node-r", |_| u32::MAX).await;
    let engine = engine::spawn(ctx.clone());
    let limit = Duration::from_secs(600);
    // Every delete refused: the rollback stalls, and says so beside why the request failed.
    let rows = wait_for(&store, limit, "a stalled rollback", |rows| {
        rows.iter().any(|r| r.needs_attention)
    })
    .await;
    let r = &rows[0];
    assert_eq!(r.state, "rolling_back");
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("relay access denied"), "{error}");
    let note = r.why_waiting().unwrap_or_default();
    assert!(
        note.starts_with("rollback stalled releasing instance") && note.contains("Bad Gateway"),
        "{note}"
    );
    // The cloud answers again after two more refusals (retried within the step).
    provider.fail_deletes.store(2, Ordering::SeqCst);
    wait_for(&store, limit, "the rollback to finish", |rows| {
        rows.iter().all(|r| r.state == "rolled_back")
    })
    .await;
    engine.shutdown().await;
    let d = store.request_detail(&req.id).await.expect("detail");
    let error = d.request.error.clone().unwrap_or_default();
    assert!(error.contains("relay access denied"), "{error}");
    assert!(!error.contains("Bad Gateway"), "{error}");
    assert_eq!(d.request.wait_reason, None);
    assert_eq!(d.request.why_waiting(), None);
    assert!(!d.request.needs_attention);
    assert_eq!(provider.fail_deletes.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn no_tenant_has_more_than_five_requests_in_flight() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, tokio_clock());
    for i in 0..14 {
        create(&ctx, "acme", "dallas", "ssd-1", &format!("node-{i}")).await;
    }
    for i in 0..3 {
        create(&ctx, "globex", "dallas", "ssd-1", &format!("g-{i}")).await;
    }
    engine::run_until_idle(ctx.clone()).await;
    let rows = all_requests(&store).await;
    assert!(rows.iter().all(|r| r.state == "completed"), "all completed");
    // Replay every transition in commit order and count in-flight requests per tenant.
    let mut tenant_of = std::collections::HashMap::new();
    let mut transitions = Vec::new();
    for r in &rows {
        tenant_of.insert(r.id.clone(), r.tenant.clone());
        transitions.extend(
            store
                .request_detail(&r.id)
                .await
                .expect("detail")
                .transitions,
        );
    }
    transitions.sort_by_key(|t| t.id);
    let mut flying: std::collections::HashMap<String, i32> = Default::default();
    let mut max_acme = 0;
    for t in &transitions {
        let tenant = &tenant_of[&t.request_id];
        let entered = t.to_state == "allocating";
        let left = t.from_state.as_deref() == Some("verifying") || t.to_state == "failed";
        let n = flying.entry(tenant.clone()).or_default();
        if entered {
            *n += 1;
        }
        if left {
            *n -= 1;
        }
        assert!(*n <= 5, "{tenant} had {n} in flight");
        if tenant == "acme" {
            max_acme = max_acme.max(*n);
        }
    }
    assert_eq!(
        max_acme, 5,
        "the limit was reached, so the test did test it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_say_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    for i in 0..7 {
        create(&ctx, "acme", "dallas", "ssd-1", &format!("node-{i}")).await;
    }
    let adm = ctx_admission(&ctx);
    let out = store
        .claim(
            "tester",
            chrono::Utc::now(),
            Duration::from_secs(30),
            100,
            &adm,
        )
        .await
        .expect("claim");
    assert_eq!(out.admitted, 5);
    assert_eq!(out.waiting, 2);
    let waiting: Vec<String> = all_requests(&store)
        .await
        .into_iter()
        .filter_map(|r| r.wait_reason)
        .collect();
    assert_eq!(
        waiting,
        vec!["tenant limit: acme has 5/5 in flight".to_string(); 2]
    );
}

fn ctx_admission(ctx: &mailfleet::engine::Ctx) -> mailfleet::store::Admission {
    ctx.admission().clone()
}

#[tokio::test(start_paused = true)]
async fn retries_wait_out_the_backoff_and_are_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        r#"
[engine]
retry_backoff = ["5s", "10s", "20s", "40s"]
retry_jitter = 0.0
tick = "1s"
poll_interval = "1s"
[providers.sim]
delay_ms = [0, 0]
boot_ms = [0, 0]
"#,
    );
    let store = open(&db_path(&dir), &cfg).await;
    let clock: SharedClock = Arc::new(TokioClock::new(chrono::Utc::now()));
    let provider = scripted(&store, &cfg, clock.clone(), |s| {
        s.fail_creates = AtomicU32::new(2)
    });
    let ctx = scripted_ctx(&store, &cfg, clock, &provider);
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-1").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:#?}", d.steps);
    let allocate = d
        .steps
        .iter()
        .find(|s| s.step == "allocate")
        .expect("allocate");
    assert_eq!(allocate.attempts, 3, "first attempt and two retries");
    let at = |to: &str| {
        parse_ts(
            &d.transitions
                .iter()
                .find(|t| t.to_state == to)
                .expect(to)
                .at,
        )
        .expect("ts")
    };
    let waited = at("configuring") - at("allocating");
    assert!(
        waited >= chrono::Duration::seconds(15),
        "5 s then 10 s of backoff, waited {waited}"
    );
    assert!(
        waited < chrono::Duration::seconds(60),
        "but not much longer: {waited}"
    );
    assert_eq!(
        provider
            .calls()
            .iter()
            .filter(|c| c.starts_with("create"))
            .count(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_without_progress_for_30_minutes_is_failed_and_rolled_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        r#"
[engine]
tick = "10s"
poll_interval = "30s"
stuck_after = "30m"
[providers.sim]
delay_ms = [0, 0]
boot_ms = [0, 0]
"#,
    );
    let store = open(&db_path(&dir), &cfg).await;
    let start = chrono::Utc::now();
    let clock: SharedClock = Arc::new(TokioClock::new(start));
    let provider = scripted(&store, &cfg, clock.clone(), |s| s.never_ready = true);
    let ctx = scripted_ctx(&store, &cfg, clock, &provider);
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-1").await;
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let failed = d
        .transitions
        .iter()
        .find(|t| t.to_state == "failed")
        .expect("failed");
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap_or("")
            .starts_with("stuck: no progress for 30m in step allocate"),
        "{failed:?}"
    );
    let when = parse_ts(&failed.at).expect("ts") - start;
    assert!(
        when >= chrono::Duration::minutes(30),
        "not before 30 minutes: {when}"
    );
    assert!(when < chrono::Duration::minutes(32), "soon after: {when}");
    assert!(
        provider.calls().contains(&"delete".to_string()),
        "the half-built instance was deleted"
    );
    assert!(d.resources.iter().all(|r| r.status == "released"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_every_lease() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&FAST.replace("boot_ms = [5, 40]", "boot_ms = [400, 600]"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    for i in 0..4 {
        create(&ctx, "acme", "dallas", "ssd-1", &format!("node-{i}")).await;
    }
    let handle = engine::spawn(ctx.clone());
    wait_for(&store, Duration::from_secs(10), "work in flight", |rows| {
        rows.iter().any(|r| r.lease_owner.is_some())
    })
    .await;
    handle.shutdown().await;
    let rows = all_requests(&store).await;
    assert!(
        rows.iter().all(|r| r.lease_owner.is_none()),
        "no lease left behind"
    );
    // Another engine picks up where this one stopped.
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    assert!(all_requests(&store)
        .await
        .iter()
        .all(|r| r.state == "completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_running_request_stops_its_worker_and_tears_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&FAST.replace("boot_ms = [5, 40]", "boot_ms = [60000, 60000]"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "node-1").await;
    let handle = engine::spawn(ctx.clone());
    wait_for(
        &store,
        Duration::from_secs(10),
        "instance creating",
        |rows| {
            rows.iter()
                .any(|r| r.state == "allocating" && r.lease_owner.is_some())
        },
    )
    .await;
    let out = handle
        .send(
            "alice",
            engine::Command::Rollback {
                id: req.id.clone(),
                reason: Some("wrong region".into()),
            },
        )
        .await
        .expect("rollback accepted");
    assert!(
        matches!(out, engine::Outcome::TeardownSignalled { .. }),
        "{out:?}"
    );
    wait_for(&store, Duration::from_secs(10), "rolled back", |rows| {
        rows[0].state == "rolled_back"
    })
    .await;
    handle.shutdown().await;
    let d = store.request_detail(&req.id).await.expect("detail");
    assert!(d.resources.iter().all(|r| r.status == "released"));
    let audit = store.list_audit(50).await.expect("audit");
    assert!(audit
        .iter()
        .any(|a| a.actor == "alice" && a.action == "request.rollback"));
}

/// A rollback whose delete is refused on every retry stalls: it stays rolling_back, marked
/// for attention, with its next try scheduled `retry_cap` later. A run until idle waits for
/// that try instead of ending with the request half torn down.
#[tokio::test(start_paused = true)]
async fn until_idle_waits_for_a_stalled_rollback_to_be_retried() {
    // One call's retries (1 + max_retries attempts) all fail: the first teardown stalls.
    let FailingRollback {
        _dir: _keep,
        cfg,
        store,
        provider,
        ctx,
        req,
    } = failing_rollback("node-1", |cfg| cfg.engine.max_retries + 1).await;
    let refusals = cfg.engine.max_retries + 1;
    let out = engine::run_until_idle(ctx.clone()).await;

    assert!(out.succeeded(), "{out:?}");
    assert!(out.stuck.is_empty() && out.waiting.is_empty(), "{out:?}");
    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back", "{:?}", d.request);
    assert!(d.resources.iter().all(|r| r.status == "released"));
    let deletes = provider.calls().iter().filter(|c| *c == "delete").count();
    assert_eq!(
        deletes as u32,
        refusals + 1,
        "the stalled delete was tried again"
    );
}

/// A rollback that keeps stalling is not waited for forever: once it has stalled more times
/// in the run than the retry policy retries a call, the run ends and names it.
#[tokio::test(start_paused = true)]
async fn until_idle_names_a_rollback_that_keeps_stalling() {
    let FailingRollback {
        _dir: _keep,
        cfg,
        store,
        provider,
        ctx,
        req,
    } = failing_rollback("node-1", |_| u32::MAX).await;
    let out = engine::run_until_idle(ctx.clone()).await;

    assert!(!out.succeeded());
    assert_eq!(out.stuck.len(), 1, "{out:?}");
    let left = &out.stuck[0];
    assert_eq!(
        (left.id.as_str(), left.label.as_str()),
        (req.id.as_str(), "node-1")
    );
    assert_eq!(left.state, "rolling_back");
    assert!(
        left.why.contains("rollback stalled releasing instance")
            && left.why.contains("502 Bad Gateway")
            && left.why.contains("relay access denied"),
        "{left:?}"
    );
    // Every try was a full round of the policy's retries; it was given max_retries more.
    let deletes = provider.calls().iter().filter(|c| *c == "delete").count() as u32;
    let per_try = cfg.engine.max_retries + 1;
    assert_eq!(deletes, per_try * (1 + cfg.engine.max_retries));
    let row = store.get_request(&req.id).await.expect("get").expect("row");
    assert_eq!(row.state, "rolling_back");
}

/// A manual provider (seed 002): the request stops at awaiting_input, saying what it waits
/// for and from whom; bad access details are refused naming the field; given them, the
/// pipeline goes on to a node at that address, with the firewall and PTR left to the
/// vendor (no resource claims them); an address is one live request's; a deprovision gives
/// the server back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_server_waits_for_its_access_details_then_is_provisioned() {
    use mailfleet::engine::commands::{execute, Command};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!(
        "{FAST}
[[clusters]]
name = \"vendor-dallas\"
provider = \"manual\"
region = \"dallas\"
default = true
access = \"provider-view\"
capacity = {{ cpu = 64, memory_gb = 256, storage_gb = 4000, vm_slots = 20 }}
"
    ));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    // A run ends by shutting its engine down: each run gets an engine of its own.
    let run = || engine::run_until_idle(sim_ctx(&store, &cfg, system_clock()));
    let req = create(&ctx, "acme", "dallas", "ssd-1", "vendor-1").await;
    let out = run().await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.waiting.len(), 1, "{out:?}");
    let row = store
        .get_request(&req.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, "awaiting_input");
    let why = row.wait_reason.expect("what it waits for");
    assert!(
        why.contains("request provide") && why.contains("--ip IP --ssh-port PORT"),
        "{why}"
    );

    let provide_to = |id: &str, ip: &str, port: u16| Command::Provide {
        id: id.to_string(),
        ip: ip.parse().expect("ip"),
        ssh_port: port,
    };
    let provide = |ip: &str, port: u16| provide_to(&req.id, ip, port);
    let err = execute(&ctx, "admin", provide("127.0.0.1", 22))
        .await
        .expect_err("loopback");
    assert!(
        err.to_string()
            .contains("--ip: 127.0.0.1 is a loopback address"),
        "{err}"
    );
    let err = execute(&ctx, "admin", provide("192.0.2.55", 0))
        .await
        .expect_err("port 0");
    assert!(err.to_string().contains("--ssh-port"), "{err}");
    assert_eq!(
        store
            .get_request(&req.id)
            .await
            .expect("read")
            .expect("row")
            .state,
        "awaiting_input",
        "a refusal changes nothing"
    );
    execute(&ctx, "admin", provide("192.0.2.55", 2222))
        .await
        .expect("provide");
    // Given again once it has moved on: refused by the state machine.
    let err = execute(&ctx, "admin", provide("192.0.2.56", 22))
        .await
        .expect_err("no longer waiting");
    assert!(err.to_string().contains("allocating"), "{err}");
    let out = run().await;
    assert!(out.succeeded() && out.waiting.is_empty(), "{out:?}");

    let d = store.request_detail(&req.id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    let node = store
        .list_nodes(&mailfleet::store::NodeFilter::default())
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.label == "vendor-1")
        .expect("node");
    assert_eq!(node.ip_address.as_deref(), Some("192.0.2.55"));
    // Its vendor resizes it, not mailfleet: refused before anything is filed.
    let e = resize(&ctx, &node.id, "ssd-2").await.expect_err("vendor's");
    assert!(e.to_string().contains("the vendor resizes it"), "{e}");
    let kinds: Vec<&str> = d.resources.iter().map(|r| r.kind.as_str()).collect();
    assert!(
        !kinds.contains(&"firewall") && !kinds.contains(&"rdns"),
        "{kinds:?}"
    );
    let inst = d
        .resources
        .iter()
        .find(|r| r.kind == "instance")
        .expect("instance");
    assert_eq!(
        inst.provider_ref.as_deref(),
        Some(format!("manual-{}", req.id).as_str())
    );
    let vendor: Vec<&str> = d
        .tasks
        .iter()
        .filter(|t| t.name == "firewall" || t.name == "rdns")
        .filter_map(|t| t.detail.as_deref())
        .collect();
    assert_eq!(vendor.len(), 2, "{vendor:?}");
    assert!(
        vendor.iter().all(|t| t.starts_with("left to the vendor")),
        "{vendor:?}"
    );
    let audit = store.list_audit(100).await.expect("audit");
    assert!(audit
        .iter()
        .any(|a| a.action == "request.provide" && a.actor == "admin"));

    // The address is this request's while it lives.
    let other = create(&ctx, "acme", "dallas", "ssd-1", "vendor-2").await;
    run().await;
    let err = execute(&ctx, "admin", provide_to(&other.id, "192.0.2.55", 22))
        .await
        .expect_err("taken");
    assert!(
        err.to_string().contains("192.0.2.55 is already request"),
        "{err}"
    );
    execute(
        &ctx,
        "admin",
        Command::Deprovision {
            id: req.id.clone(),
            reason: Some("vendor contract ended".into()),
        },
    )
    .await
    .expect("deprovision");
    run().await;
    let access = store
        .manual_access(&req.id)
        .await
        .expect("read")
        .expect("access");
    assert!(access.released, "the server went back to its vendor");
    execute(&ctx, "admin", provide_to(&other.id, "192.0.2.55", 22))
        .await
        .expect("free again");
}

/// The node `req` made.
async fn node_of(store: &mailfleet::store::Store, req: &str) -> mailfleet::store::NodeRow {
    store
        .list_nodes(&mailfleet::store::NodeFilter::default())
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.request_id.as_deref() == Some(req))
        .expect("node")
}

async fn resize(
    ctx: &Arc<mailfleet::engine::Ctx>,
    node: &str,
    plan: &str,
) -> Result<mailfleet::store::RequestRow, mailfleet::engine::commands::CommandError> {
    use mailfleet::engine::commands::{execute, Command, Outcome};
    let cmd = Command::ResizeNode {
        id: node.to_string(),
        plan: plan.to_string(),
        reason: Some("more room for the queue".into()),
    };
    match execute(ctx, "ops", cmd).await? {
        Outcome::Created(r) => Ok(*r),
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn usage(u: &mailfleet::store::Usage) -> (i64, i64, i64, i64) {
    (u.nodes, u.cpu, u.memory_gb, u.storage_gb)
}

#[tokio::test(start_paused = true)]
async fn a_node_is_resized_by_a_request_of_its_own_and_its_plan_and_quota_follow() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let clock = tokio_clock();
    let provider = scripted(&store, &cfg, clock.clone(), |_| {});
    let ctx = scripted_ctx(&store, &cfg, clock, &provider);
    let req = create(&ctx, "acme", "dallas", "ssd-1", "web-1").await;
    engine::run_until_idle(ctx.clone()).await;
    let node = node_of(&store, &req.id).await;
    assert_eq!(node.plan, "ssd-1");

    // Refused, writing nothing: the plan it is on, a plan that does not exist.
    let e = resize(&ctx, &node.id, "ssd-1")
        .await
        .expect_err("same plan");
    assert!(e.to_string().contains("already on plan ssd-1"), "{e}");
    let e = resize(&ctx, &node.id, "ssd-64")
        .await
        .expect_err("no such plan");
    assert!(e.to_string().starts_with("plan: unknown plan"), "{e}");
    assert_eq!(all_requests(&store).await.len(), 1);

    let r = resize(&ctx, &node.id, "ssd-4").await.expect("filed");
    assert_eq!(r.operation, "resize");
    assert_eq!(r.target.as_deref(), Some(req.id.as_str()));
    assert_eq!(r.from_plan.as_deref(), Some("ssd-1"));
    assert_eq!(r.state, "queued");
    // One at a time, and the node is not torn down under it.
    let e = resize(&ctx, &node.id, "ssd-8").await.expect_err("second");
    assert!(e.to_string().contains("one at a time"), "{e}");
    let e = mailfleet::engine::commands::execute(
        &ctx,
        "ops",
        mailfleet::engine::Command::Deprovision {
            id: req.id.clone(),
            reason: None,
        },
    )
    .await
    .expect_err("deprovision while resizing");
    assert!(e.to_string().contains("while its resize"), "{e}");
    let e = mailfleet::engine::commands::execute(
        &ctx,
        "ops",
        mailfleet::engine::Command::Suspend {
            id: req.id.clone(),
            reason: None,
        },
    )
    .await
    .expect_err("suspend while resizing");
    assert!(e.to_string().contains("while its resize"), "{e}");

    let before = calls_len(&provider);
    engine::run_until_idle(ctx.clone()).await;
    let d = store.request_detail(&r.id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    let path: Vec<&str> = d.transitions.iter().map(|t| t.to_state.as_str()).collect();
    assert_eq!(path, ["queued", "allocating", "verifying", "completed"]);
    let steps: Vec<(&str, &str)> = d
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(steps, [("resize", "done"), ("confirm", "done")]);
    let tasks: Vec<&str> = d.tasks.iter().map(|t| t.name.as_str()).collect();
    for t in [
        "reserve_capacity",
        "upgrade",
        "wait_running",
        "smtp_probe",
        "confirm_upgrade",
        "record_plan",
    ] {
        assert!(tasks.contains(&t), "{t} in {tasks:?}");
    }
    assert!(
        d.resources.iter().all(|r| r.status == "released"),
        "the hold and the upgrade are folded in: {:?}",
        d.resources
    );
    // The provider was asked to upgrade, then to confirm, and nothing else changed.
    let calls: Vec<String> = provider.calls()[before..].to_vec();
    assert_eq!(
        calls,
        ["resize ssd-4", "probe Smtp", "confirm_resize"],
        "{calls:?}"
    );
    let inst = d_instance(&store, &req.id).await;
    let sim = store.sim_get(&inst).await.expect("read").expect("instance");
    assert_eq!((sim.plan.as_str(), sim.cpu, sim.memory_gb), ("ssd-4", 4, 8));
    // The node, its request and its reservation are on the new plan; the node was out of
    // rotation while its server restarted, and is back.
    let after = node_of(&store, &req.id).await;
    assert_eq!(
        (after.plan.as_str(), after.status.as_str()),
        ("ssd-4", "warming")
    );
    let moves: Vec<(String, String)> = store
        .node_transitions(&node.id)
        .await
        .expect("transitions")
        .into_iter()
        .map(|t| (t.to, t.reason))
        .collect();
    let tail = &moves[moves.len() - 2..];
    assert_eq!(tail[0].0, "maintenance", "{moves:?}");
    assert!(
        tail[0]
            .1
            .starts_with(&format!("resize {}", &r.id[r.id.len() - 8..])),
        "{moves:?}"
    );
    assert_eq!(tail[1].0, "warming", "{moves:?}");
    let p = store
        .get_request(&req.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (p.plan.as_str(), p.cpu, p.memory_gb, p.storage_gb),
        ("ssd-4", 4, 8, 100)
    );
    let used = store.tenant_usage().await.expect("usage");
    assert_eq!(usage(&used["acme"]), (1, 4, 8, 100));
    let events = store
        .list_events(&mailfleet::store::EventFilter::default())
        .await
        .expect("events");
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e.request_id.as_deref() == Some(r.id.as_str()))
        .map(|e| e.name.as_str())
        .collect();
    for n in [
        "resize.requested",
        "resize.admitted",
        "resize.applied",
        "resize.completed",
        "node.resized",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    // A completed resize is history: it is not rolled back (undoing it is another resize).
    let e = mailfleet::engine::commands::execute(
        &ctx,
        "ops",
        mailfleet::engine::Command::Rollback {
            id: r.id.clone(),
            reason: None,
        },
    )
    .await
    .expect_err("rollback of a completed resize");
    assert!(e.to_string().contains("cannot be rolled back"), "{e}");
    // Down again: a shrink needs no room, and gives back what it no longer holds.
    let down = resize(&ctx, &node.id, "ssd-2").await.expect("filed");
    engine::run_until_idle(ctx.clone()).await;
    assert_eq!(
        store
            .get_request(&down.id)
            .await
            .expect("read")
            .expect("row")
            .state,
        "completed"
    );
    let used = store.tenant_usage().await.expect("usage");
    assert_eq!(usage(&used["acme"]), (1, 2, 2, 50));
    // The resizes hold no hostname: once the node is gone, its name is free again.
    ask_deprovision(&ctx, &req.id).await;
    engine::run_until_idle(ctx.clone()).await;
    let again = create(&ctx, "acme", "dallas", "ssd-1", "web-1").await;
    assert_eq!(again.state, "queued");
}

fn calls_len(p: &Scripted) -> usize {
    p.calls().len()
}

async fn d_instance(store: &mailfleet::store::Store, req: &str) -> String {
    store
        .request_detail(req)
        .await
        .expect("detail")
        .resources
        .into_iter()
        .find(|r| r.kind == "instance")
        .and_then(|r| r.provider_ref)
        .expect("instance")
}

#[tokio::test(start_paused = true)]
async fn a_resize_whose_node_does_not_answer_is_reverted_and_gives_its_room_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let clock = tokio_clock();
    let ctx = sim_ctx(&store, &cfg, clock.clone());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "web-2").await;
    engine::run_until_idle(ctx.clone()).await;
    let node = node_of(&store, &req.id).await;
    // The node stops answering SMTP after the upgrade.
    let provider = scripted(&store, &cfg, clock.clone(), |s| s.fail_probes = true);
    let ctx = scripted_ctx(&store, &cfg, clock, &provider);
    let r = resize(&ctx, &node.id, "ssd-8").await.expect("filed");
    engine::run_until_idle(ctx.clone()).await;

    let d = store.request_detail(&r.id).await.expect("detail");
    assert_eq!(d.request.state, "rolled_back");
    let path: Vec<&str> = d.transitions.iter().map(|t| t.to_state.as_str()).collect();
    assert_eq!(
        path,
        [
            "queued",
            "allocating",
            "verifying",
            "failed",
            "rolling_back",
            "rolled_back"
        ]
    );
    assert!(
        d.request
            .error
            .as_deref()
            .unwrap_or("")
            .contains("relay access denied"),
        "{:?}",
        d.request.error
    );
    assert_eq!(
        provider.calls(),
        ["resize ssd-8", "probe Smtp", "revert_resize"],
        "upgraded, checked, reverted: never confirmed"
    );
    let released: Vec<(&str, &str)> = d
        .resources
        .iter()
        .map(|r| (r.kind.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(released.len(), 2, "an upgrade and a hold: {released:?}");
    assert!(
        released.iter().all(|(_, s)| *s == "released"),
        "{released:?}"
    );
    let inst = d_instance(&store, &req.id).await;
    let sim = store.sim_get(&inst).await.expect("read").expect("instance");
    assert_eq!(
        (sim.plan.as_str(), sim.cpu),
        ("ssd-1", 1),
        "back on its plan"
    );
    let after = node_of(&store, &req.id).await;
    assert_eq!(
        (after.plan.as_str(), after.status.as_str()),
        ("ssd-1", "warming"),
        "on its plan and back in rotation"
    );
    let used = store.tenant_usage().await.expect("usage");
    assert_eq!(usage(&used["acme"]), (1, 1, 1, 30), "the growth given back");
    let cap = store.cluster_usage().await.expect("usage");
    assert_eq!(cap.values().map(|u| u.cpu).sum::<i64>(), 1);
    // The node is in service on its old plan, and may be resized again.
    resize(&ctx, &node.id, "ssd-2").await.expect("again");
}

#[tokio::test(start_paused = true)]
async fn a_resize_past_the_tenants_quota_is_rejected_at_admission_and_holds_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!(
        "{FAST}
[[tenants]]
name = \"acme\"
quota = {{ nodes = 5, cpu = 6, memory_gb = 64, storage_gb = 1000 }}
"
    ));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, tokio_clock());
    let a = create(&ctx, "acme", "dallas", "ssd-2", "q-1").await;
    let b = create(&ctx, "acme", "dallas", "ssd-2", "q-2").await;
    engine::run_until_idle(ctx.clone()).await;
    let node = node_of(&store, &a.id).await;
    // 2 + 2 cpu held; ssd-8 would add 6 more: 10/6.
    let r = resize(&ctx, &node.id, "ssd-8").await.expect("filed");
    engine::run_until_idle(ctx.clone()).await;
    let row = store.get_request(&r.id).await.expect("read").expect("row");
    assert_eq!(row.state, "rejected");
    assert_eq!(
        row.error.as_deref(),
        Some("quota: acme: cpu 10/6 after this resize")
    );
    let used = store.tenant_usage().await.expect("usage");
    assert_eq!(usage(&used["acme"]), (2, 4, 4, 100), "nothing reserved");
    // ssd-4 adds 2: 6/6 fits.
    let r = resize(&ctx, &node.id, "ssd-4").await.expect("filed");
    engine::run_until_idle(ctx.clone()).await;
    let row = store.get_request(&r.id).await.expect("read").expect("row");
    assert_eq!(row.state, "completed", "{:?}", row.error);
    let _ = b;
}
