//! Scaling (seed 001): a fleet busy over the window files one scale-out, through the
//! approval rules, naming why; a node whose queue stays long files one resize of it; never
//! two live for one cause, and a cause an operator turned down is quiet for a window. On
//! tokio's paused clock, with heartbeats written as `serve` writes them.

mod support;

use chrono::{DateTime, TimeZone, Utc};
use mailfleet::agent::report::Report;
use mailfleet::clock::{SharedClock, TokioClock};
use mailfleet::config::Config;
use mailfleet::engine::scaling::{self, CAPACITY, SCALER};
use mailfleet::engine::{self, commands, Command, Ctx};
use mailfleet::store::{EventFilter, NodeRow, RequestRow, Store};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A zero-delay cloud with room for a few servers in dallas; a warm-up whose every day
/// allows 144,000 messages (100 a minute); scale-outs go to seattle, where a rule holds
/// them for an approver; a node's queue counts as long at 1,000 messages held 15 minutes.
const WORLD: &str = r#"
[engine]
retry_jitter = 0.0
[providers.sim]
delay_ms = [0, 0]
boot_ms = [0, 0]
[dns]
propagation_interval = "20ms"
propagation_timeout = "5s"
[[clusters]]
name = "dal"
provider = "sim"
region = "dallas"
default = true
capacity = { cpu = 512, memory_gb = 1024, storage_gb = 20000, vm_slots = 20 }
[[clusters]]
name = "sea"
provider = "sim"
region = "seattle"
default = true
capacity = { cpu = 512, memory_gb = 1024, storage_gb = 20000, vm_slots = 20 }
[[approval_rules]]
name = "Seattle orders"
regions = ["seattle"]
[warmup]
default_plan = "flat"
[[warmup.plans]]
name = "flat"
caps = [144000, 144000, 144000]
[scaling]
enabled = true
capacity_threshold = 0.8
window = "30m"
tenant = "acme"
region = "seattle"
plan = "ssd-2"
label_prefix = "grow"
queue_threshold = 1000
queue_minutes = 15
"#;

/// The test settings (`support::config`'s), this world, and `extra` laid over them.
fn world(extra: &str) -> Config {
    let mut layers = vec![
        (
            "(built-in defaults)".to_string(),
            mailfleet::config::DEFAULT_TOML.to_string(),
        ),
        (
            "(tests)".to_string(),
            "[blocklists]\nmonitor = false\n[providers.sim]\nagents = false\n".to_string(),
        ),
        ("world".to_string(), WORLD.to_string()),
    ];
    if !extra.is_empty() {
        layers.push(("extra".to_string(), extra.to_string()));
    }
    mailfleet::config::from_layers(&layers).expect("test config is valid")
}

/// Noon, so that no warm-up day boundary falls inside a test.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0)
        .single()
        .expect("a time")
}

struct Fleet {
    store: Store,
    ctx: Arc<Ctx>,
    nodes: Vec<Agent>,
    _dir: tempfile::TempDir,
}

/// A node and its agent: the token's issue time and the next sequence number.
struct Agent {
    node: NodeRow,
    issued: String,
    seq: u64,
}

/// `count` nodes provisioned in dallas and serving (warming), each with an agent token.
async fn fleet(count: usize, extra: &str) -> Fleet {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = world(extra);
    let store = open(&db_path(&dir), &cfg).await;
    let clock: SharedClock = Arc::new(TokioClock::new(noon()));
    let ctx = sim_ctx(&store, &cfg, clock);
    for i in 0..count {
        create(&ctx, "acme", "dallas", "ssd-1", &format!("node-{i}")).await;
    }
    let outcome = engine::run_until_idle(ctx.clone()).await;
    assert!(outcome.succeeded(), "{outcome:?}");
    let mut nodes = Vec::new();
    for r in all_requests(&store).await {
        assert_eq!(r.state, "completed", "{} {}", r.label, r.state);
        let node = store
            .list_nodes(&Default::default())
            .await
            .expect("nodes")
            .into_iter()
            .find(|n| n.request_id.as_deref() == Some(r.id.as_str()))
            .expect("a node");
        assert_eq!(node.status, "warming", "{node:?}");
        store
            .save_agent_token(&r.id, Some(vec![7; 32]), None, ctx.clock.now())
            .await
            .expect("token");
        let issued = store
            .agent_token(&r.id)
            .await
            .expect("read")
            .expect("kept")
            .issued_at;
        nodes.push(Agent {
            node,
            issued,
            seq: 0,
        });
    }
    nodes.sort_by(|a, b| a.node.label.cmp(&b.node.label));
    Fleet {
        store,
        ctx,
        nodes,
        _dir: dir,
    }
}

impl Fleet {
    fn now(&self) -> DateTime<Utc> {
        self.ctx.clock.now()
    }

    /// One heartbeat from node `i`: `delivered` since its last one, `queue` messages queued.
    async fn beat(&mut self, i: usize, delivered: u64, queue: u64) {
        let now = self.now();
        let a = &mut self.nodes[i];
        a.seq += 1;
        let report = Report {
            seq: a.seq,
            measured_at: now.to_rfc3339(),
            cpu_pct: 20.0,
            mem_used: 1 << 29,
            mem_total: 1 << 30,
            queue_free: 1 << 33,
            queue_len: queue,
            net_rx: 1000,
            net_tx: 1000,
            delivered,
            bounced: 0,
            deferred: 0,
            complaints: 0,
        };
        let agent = a.node.request_id.clone().expect("made by a request");
        let got = self
            .store
            .accept_report(&agent, &a.issued, report, now)
            .await
            .expect("accepted");
        assert!(
            matches!(got, mailfleet::store::Accepted::Recorded { .. }),
            "{got:?}"
        );
    }

    /// `minutes` minutes of heartbeats, one a minute from every node: each delivers what
    /// `delivered(node, minute)` says and reports `queue(node, minute)` queued.
    async fn minutes(
        &mut self,
        minutes: u32,
        delivered: impl Fn(usize, u32) -> u64,
        queue: impl Fn(usize, u32) -> u64,
    ) {
        for m in 0..minutes {
            tokio::time::sleep(Duration::from_secs(60)).await;
            for i in 0..self.nodes.len() {
                self.beat(i, delivered(i, m), queue(i, m)).await;
            }
        }
    }

    async fn filed(&self) -> Vec<RequestRow> {
        all_requests(&self.store)
            .await
            .into_iter()
            .filter(|r| r.requested_by == SCALER)
            .collect()
    }

    /// One look; the requests it filed (a refusal fails the test).
    async fn look(&self) -> Vec<RequestRow> {
        scaling::pass(&self.ctx)
            .await
            .into_iter()
            .map(|a| a.outcome.unwrap_or_else(|why| panic!("{}: {why}", a.cause)))
            .collect()
    }
}

/// The reason the request's history records when it was filed.
async fn filed_reason(store: &Store, id: &str) -> String {
    let d = store.request_detail(id).await.expect("detail");
    d.transitions
        .iter()
        .find(|t| t.from_state.is_none())
        .and_then(|t| t.reason.clone())
        .expect("a first transition with a reason")
}

#[tokio::test(start_paused = true)]
async fn a_fleet_busy_over_the_window_files_one_scale_out_held_for_approval() {
    let mut f = fleet(2, "").await;
    // 90 a minute on a cap of 100 a minute, for longer than the window.
    f.minutes(36, |_, _| 90, |_, _| 0).await;

    let filed = f.look().await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    let r = &filed[0];
    assert_eq!(r.requested_by, SCALER);
    assert_eq!(r.scaling_cause.as_deref(), Some(CAPACITY));
    assert_eq!(
        (&r.tenant[..], &r.region[..], &r.plan[..]),
        ("acme", "seattle", "ssd-2")
    );
    assert!(
        r.label.starts_with("grow-20260302") && r.label.len() == "grow-20260302123600".len(),
        "labelled with the time it was filed: {}",
        r.label
    );
    assert_eq!(
        r.state, "pending_approval",
        "the rule applies as to anyone's"
    );
    assert_eq!(r.approval_rule.as_deref(), Some("Seattle orders"));
    let why = filed_reason(&f.store, &r.id).await;
    assert!(
        why.starts_with(
            "created: fleet used 90% of capacity over 30m (5,400 of 6,000 messages; 2 nodes, 288,000/day"
        ),
        "{why}"
    );
    let events = f
        .store
        .list_events(&EventFilter {
            name: Some("scaling.requested".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].request_id.as_deref(), Some(r.id.as_str()));
    assert!(
        events[0].payload.contains("fleet used 90%"),
        "{}",
        events[0].payload
    );

    // The condition holds on: no second request while the first is pending.
    f.minutes(5, |_, _| 90, |_, _| 0).await;
    assert!(f.look().await.is_empty());
    assert_eq!(f.filed().await.len(), 1);

    // Filing for the same cause by another way is refused by the store, naming the first.
    let again = commands::create_for(
        &f.ctx,
        SCALER,
        commands::CreateRequest {
            tenant: "acme".into(),
            region: "seattle".into(),
            plan: "ssd-2".into(),
            label: "grow-other".into(),
            domain: None,
            depends_on: vec![],
        },
        commands::Cause {
            key: CAPACITY.into(),
            reason: "by hand".into(),
        },
    )
    .await
    .expect_err("a second live request for the cause");
    let short = &r.id[r.id.len() - 8..];
    assert!(
        again
            .to_string()
            .contains("cause capacity already has request")
            && again.to_string().contains(short),
        "{again}"
    );
    assert_eq!(f.filed().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_fleet_below_the_threshold_or_not_watched_long_enough_files_nothing() {
    let mut f = fleet(2, "").await;
    // 79%: just under.
    f.minutes(36, |_, _| 79, |_, _| 0).await;
    assert!(f.look().await.is_empty());

    // Busy, but reporting only for the last 20 minutes of a fresh fleet: the window was not
    // watched whole.
    let mut g = fleet(2, "").await;
    tokio::time::sleep(Duration::from_secs(40 * 60)).await;
    g.minutes(20, |_, _| 100, |_, _| 0).await;
    assert!(g.look().await.is_empty());
    // Ten minutes more and the window is watched whole (reports since 30 minutes ago):
    // 100% of 30 minutes' capacity, filed.
    g.minutes(11, |_, _| 100, |_, _| 0).await;
    let filed = g.look().await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0].scaling_cause.as_deref(), Some(CAPACITY));
}

#[tokio::test(start_paused = true)]
async fn a_queue_long_for_the_whole_window_files_one_resize_of_that_node() {
    let mut f = fleet(2, "").await;
    // node-0's queue stays at 5,000 and more; node-1's is short.
    f.minutes(
        20,
        |_, _| 1,
        |i, m| if i == 0 { 5000 + u64::from(m) } else { 10 },
    )
    .await;
    let filed = f.look().await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    let r = &filed[0];
    let node = &f.nodes[0].node;
    assert_eq!(r.operation, "resize");
    assert_eq!(r.target, node.request_id, "a resize of node-0");
    assert_eq!(r.from_plan.as_deref(), Some("ssd-1"));
    assert_eq!(r.plan, "ssd-2", "the next larger plan of its kind");
    assert_eq!(
        r.scaling_cause.as_deref(),
        Some(format!("queue:{}", node.id).as_str())
    );
    assert_eq!(r.state, "queued", "no rule holds a resize in dallas");
    let why = filed_reason(&f.store, &r.id).await;
    assert!(
        why.contains("node node-0 queued at least 5,004 messages for 15m")
            && why.contains("threshold 1,000): ssd-1 to ssd-2"),
        "{why}"
    );

    // Still long: no second resize while the first is live.
    f.minutes(3, |_, _| 1, |i, _| if i == 0 { 6000 } else { 10 })
        .await;
    assert!(f.look().await.is_empty());
    assert_eq!(f.filed().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_queue_long_for_part_of_the_window_files_nothing() {
    let mut f = fleet(1, "").await;
    // Short for 8 minutes, then long for 12: not long for 15 minutes yet.
    f.minutes(20, |_, _| 1, |_, m| if m < 8 { 10 } else { 5000 })
        .await;
    assert!(f.look().await.is_empty());
    // One dip in the middle of the window: still not.
    f.minutes(10, |_, _| 1, |_, m| if m == 4 { 999 } else { 5000 })
        .await;
    assert!(f.look().await.is_empty());
    // Fifteen minutes and more without a dip since the last short report: filed.
    f.minutes(11, |_, _| 1, |_, _| 5000).await;
    let filed = f.look().await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0].operation, "resize");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_scale_out_is_not_filed_again_until_a_whole_window_after() {
    let mut f = fleet(2, "").await;
    f.minutes(31, |_, _| 95, |_, _| 0).await;
    let first = f.look().await;
    assert_eq!(first.len(), 1);
    let id = first[0].id.clone();

    // An approver turns it down.
    let out = commands::execute(
        &f.ctx,
        "ops-lead",
        Command::Reject {
            id: id.clone(),
            reason: "not this week".into(),
        },
    )
    .await
    .expect("rejected");
    assert_eq!(
        out.describe(),
        format!("request {} is now rejected", &id[id.len() - 8..])
    );
    let rejected = f
        .store
        .get_request(&id)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(rejected.state, "rejected");

    // The fleet stays busy: nothing for a whole window after the rejection.
    assert!(f.look().await.is_empty(), "not at once");
    f.minutes(29, |_, _| 95, |_, _| 0).await;
    assert!(f.look().await.is_empty(), "not within the window");
    assert_eq!(f.filed().await.len(), 1);
    // A window measured wholly after the rejection still finds it busy: filed anew.
    f.minutes(2, |_, _| 95, |_, _| 0).await;
    let second = f.look().await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second[0].id, id);
    assert_eq!(second[0].state, "pending_approval");
    assert_eq!(f.filed().await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_scaling_resize_is_cancelled_by_rejecting_it_and_stays_quiet() {
    let mut f = fleet(1, "").await;
    f.minutes(16, |_, _| 1, |_, _| 5000).await;
    let filed = f.look().await;
    assert_eq!(filed.len(), 1);
    let id = filed[0].id.clone();
    assert_eq!(filed[0].state, "queued");
    commands::execute(
        &f.ctx,
        "ops-lead",
        Command::Reject {
            id: id.clone(),
            reason: "the queue is a backlog, not load".into(),
        },
    )
    .await
    .expect("a queued request is cancelled by rejecting it");
    f.minutes(10, |_, _| 1, |_, _| 5000).await;
    assert!(f.look().await.is_empty(), "quiet for the window");
    f.minutes(6, |_, _| 1, |_, _| 5000).await;
    assert_eq!(f.look().await.len(), 1, "held for a whole window since");
}

#[tokio::test(start_paused = true)]
async fn the_running_engine_files_once_after_heartbeats() {
    let mut f = fleet(2, "").await;
    f.minutes(31, |_, _| 90, |_, _| 0).await;
    let handle = engine::spawn(f.ctx.clone());
    // Its first look files the scale-out; more heartbeats (commits) file nothing more.
    let rows = wait_for(&f.store, Duration::from_secs(60), "a scale-out", |rows| {
        rows.iter().any(|r| r.requested_by == SCALER)
    })
    .await;
    assert_eq!(rows.iter().filter(|r| r.requested_by == SCALER).count(), 1);
    f.minutes(5, |_, _| 90, |_, _| 0).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(f.filed().await.len(), 1);
    handle.shutdown().await;
}

/// What the store has done so far: write transactions, writes, reads.
fn activity(store: &Store) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let st = store.writer_stats();
    (
        st.batches.load(Relaxed),
        st.jobs.load(Relaxed),
        store.reads(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_idle_engine_with_scaling_on_reads_nothing() {
    let f = fleet(2, "").await;
    let handle = engine::spawn(f.ctx.clone());
    // Let the start settle: the first look, and the one the start's own writes call for
    // after `[scaling] interval`.
    tokio::time::sleep(Duration::from_secs(150)).await;
    let before = activity(&f.store);
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    assert_eq!(
        activity(&f.store),
        before,
        "no reads, no writes while nothing changes"
    );
    handle.shutdown().await;
    assert!(f.filed().await.is_empty());

    // Off, a busy fleet files nothing.
    let mut g = fleet(2, "[scaling]\nenabled = false\n").await;
    g.minutes(31, |_, _| 100, |_, _| 0).await;
    assert!(scaling::pass(&g.ctx).await.is_empty());
}

#[test]
fn every_scaling_key_is_checked_naming_it() {
    let bad = [
        ("capacity_threshold = 1.5", "scaling.capacity_threshold"),
        ("capacity_threshold = 0.0", "scaling.capacity_threshold"),
        ("window = \"30s\"", "scaling.window"),
        ("window = \"2d\"", "scaling.window"),
        ("queue_threshold = 0", "scaling.queue_threshold"),
        ("queue_minutes = 0", "scaling.queue_minutes"),
        ("interval = \"0s\"", "scaling.interval"),
        ("label_prefix = \"Bad_Prefix\"", "scaling.label_prefix"),
        ("domain = \"not a domain\"", "scaling.domain"),
        ("tenant = \"nobody\"", "scaling.tenant"),
        ("region = \"mars\"", "scaling.region"),
        ("plan = \"ssd-99\"", "scaling.plan"),
        ("resize_plan = \"ssd-99\"", "scaling.resize_plan"),
        (
            "enabled = true\nregion = \"dallas\"\nplan = \"ssd-1\"",
            "scaling.tenant",
        ),
        (
            "enabled = true\ntenant = \"acme\"\nplan = \"ssd-1\"",
            "scaling.region",
        ),
        (
            "enabled = true\ntenant = \"acme\"\nregion = \"dallas\"",
            "scaling.plan",
        ),
    ];
    for (line, key) in bad {
        let layer = format!("[scaling]\n{line}\n");
        let err = mailfleet::config::from_layers(&[
            (
                "(built-in defaults)".to_string(),
                mailfleet::config::DEFAULT_TOML.to_string(),
            ),
            ("test".to_string(), layer),
        ])
        .expect_err(line);
        assert!(err.to_string().contains(key), "{line}: {err}");
    }
    // The built-in defaults: off, and valid.
    let cfg = config("");
    assert!(!cfg.scaling.enabled);
    assert_eq!(cfg.scaling.capacity_threshold, 0.8);
    assert_eq!(cfg.scaling.window, Duration::from_secs(1800));
}
