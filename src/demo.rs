//! The demo fleet behind `mailfleet demo`. This module owns what a demo database contains: a
//! realistic, internally consistent fleet of sending nodes with 30 days of history, and the
//! rule that only a database marked as a demo may be overwritten.
//!
//! Everything follows from the seed and `now`: the same pair gives the same database, ids
//! included (they are UUIDv7 built from each row's own time and the seeded generator). The
//! rows are what the engine itself would have written: every transition is legal and has
//! its outbox events, resources match the state, and the simulated cloud's inventory holds
//! exactly the instances the requests own, so the engine can pick up the in-flight requests
//! and `reconcile` finds nothing to report. Warm-up follows the real plans and day-boundary
//! rule (`domain::warmup`): nodes registered in the last 16 days are walked day by day, each
//! closed day decided by `decide` on its own counts; older ones are past warm-up.
//!
//! Generation runs on a blocking thread and streams batches to the store, which writes each
//! in one transaction (the SQL is in `store::demo`). Outbox events, transitions and audit
//! rows are written last, sorted by time, so their sequence numbers follow the clock.

use crate::clock::ts;
use crate::config::{format_duration, ClusterHealth, Config, StoreConfig};
use crate::domain::approval::{first_match, ApprovalRule, RequestFacts, RuleMatch};
use crate::domain::ids::short;
use crate::domain::warmup::{decide, DayCounts, Decision, Thresholds, WarmupPlan};
use crate::domain::{event_names, RequestState, ResourceKind, Step, STEPS};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What demo to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSpec {
    /// Nodes in service (from completed or suspended requests).
    pub nodes: usize,
    pub seed: u64,
}

impl Default for DemoSpec {
    fn default() -> Self {
        Self {
            nodes: 200,
            seed: 42,
        }
    }
}

/// What a demo holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Nodes in service (as asked for).
    pub nodes: usize,
    pub requests: usize,
    pub events: usize,
    /// Blocklist listings, current and past.
    pub listings: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path} is not a demo database; refusing to overwrite it")]
    NotADemo { path: String },
    #[error("cannot remove {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the database already holds requests; a demo needs a fresh database")]
    NotEmpty,
    #[error("the config cannot make a demo fleet: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the demo generator stopped unexpectedly")]
    Generator,
}

/// Makes `path` ready for a fresh demo: nothing there is fine; a demo database is removed
/// (with its `-wal` and `-shm` files); anything else is refused and left untouched.
pub async fn prepare_path(path: &Path) -> Result<(), DemoError> {
    let shown = path.display().to_string();
    let not_demo = || DemoError::NotADemo {
        path: shown.clone(),
    };
    match tokio::fs::symlink_metadata(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(DemoError::Io {
                path: shown.clone(),
                error,
            })
        }
        Ok(meta) if !meta.is_file() => return Err(not_demo()),
        Ok(_) => {}
    }
    let demo = match Store::open_read_only(path, &StoreConfig::default()).await {
        Ok(store) => store.is_demo().await.unwrap_or(false),
        Err(_) => false,
    };
    if !demo {
        return Err(not_demo());
    }
    for file in [
        path.to_path_buf(),
        suffixed(path, "-wal"),
        suffixed(path, "-shm"),
    ] {
        match tokio::fs::remove_file(&file).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(DemoError::Io {
                    path: file.display().to_string(),
                    error,
                })
            }
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Fills a freshly opened store (whose catalog is already synced from `cfg`) with a demo
/// fleet, and marks it as a demo database.
pub async fn generate(
    store: &Store,
    cfg: &Config,
    spec: &DemoSpec,
    now: DateTime<Utc>,
) -> Result<DemoSummary, DemoError> {
    let mut world = World::from_config(cfg, now)?;
    if !store.demo_is_empty().await? {
        return Err(DemoError::NotEmpty);
    }
    store.mark_demo().await?;
    // Real keys for the tenants' domains (kept as any key is): the demo's DKIM records
    // publish them, and new nodes of those domains sign with them.
    let mut domains: Vec<String> = world.tenants.iter().map(|t| t.domain.clone()).collect();
    domains.sort();
    domains.dedup();
    let made = futures::future::try_join_all(domains.iter().map(|d| async move {
        crate::dkim::ensure_keys(store, cfg, now, d)
            .await
            .map(|(keys, _)| (d.clone(), keys.rsa))
            .map_err(|e| DemoError::Config(format!("DKIM key for {d}: {e}")))
    }))
    .await?;
    for (d, rsa) in made {
        if let Some(k) = rsa {
            world.dkim.insert(d, k);
        }
    }
    world.certs = Some(demo_certs(store, cfg)?);
    let cache_before = store.demo_cache_size(BULK_CACHE_KIB).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<DemoBatch>(1);
    let spec = *spec;
    let generator = tokio::task::spawn_blocking(move || Generator::new(world, spec).run(&tx));
    let mut failed = None;
    while let Some(batch) = rx.recv().await {
        if let Err(e) = store.demo_insert_batch(batch).await {
            failed = Some(e);
            break;
        }
    }
    drop(rx);
    let out = generator.await.map_err(|_| DemoError::Generator);
    let restored = store.demo_cache_size(cache_before).await;
    if let Some(e) = failed {
        return Err(e.into());
    }
    restored?;
    out?
}

/// Plan indices from the smallest.
fn plans_by_size(cfg: &Config) -> Vec<usize> {
    let mut by_size: Vec<usize> = (0..cfg.plans.len()).collect();
    by_size.sort_by_key(|i| {
        let p = &cfg.plans[*i];
        (p.cpu, p.memory_gb, p.storage_gb, *i)
    });
    by_size
}

/// How often the plan of this size rank is ordered: most senders are small.
fn size_weight(rank: usize) -> f64 {
    const SIZE_WEIGHTS: [f64; 5] = [30.0, 35.0, 22.0, 10.0, 3.0];
    SIZE_WEIGHTS.get(rank).copied().unwrap_or(2.0)
}

/// The config a demo of `spec.nodes` nodes runs best with: tenant quotas and cluster
/// capacities scaled up (never down) so that the fleet fits with room for new orders. The
/// default config fits the default demo unchanged; a 100,000-node demo needs this for the
/// engine to admit anything new.
pub fn config_for(cfg: &Config, spec: &DemoSpec) -> Config {
    let mut out = cfg.clone();
    // The demo's addresses are documentation ranges and its listings are generated: asking
    // real blocklists about them would only report errors.
    out.blocklists.monitor = false;
    // What the fleet holds, on the usual plan mix, plus what is in flight; kept within the
    // 80% of a quota (or cluster) that the generator aims for.
    let mut average = [1.0, 0.0, 0.0, 0.0];
    let mut total = 0.0;
    for (rank, i) in plans_by_size(cfg).into_iter().enumerate() {
        let (p, w) = (&cfg.plans[i], size_weight(rank));
        average[1] += f64::from(p.cpu) * w;
        average[2] += f64::from(p.memory_gb) * w;
        average[3] += f64::from(p.storage_gb) * w;
        total += w;
    }
    for a in average.iter_mut().skip(1) {
        *a /= total.max(1.0);
    }
    let held = spec.nodes as f64 * 1.1 / 0.8;
    let factor = |have: [u64; 4]| -> u64 {
        (0..4)
            .map(|d| (held * average[d] / have[d].max(1) as f64).ceil())
            .fold(1.0, f64::max) as u64
    };
    let sum = |v: &mut dyn Iterator<Item = [u64; 4]>| {
        v.fold([0u64; 4], |a, b| {
            [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
        })
    };
    let quotas = sum(&mut cfg.tenants.iter().map(|t| {
        [
            t.quota.nodes,
            t.quota.cpu,
            t.quota.memory_gb,
            t.quota.storage_gb,
        ]
    }));
    let by = factor(quotas);
    for t in &mut out.tenants {
        let q = &mut t.quota;
        q.nodes = q.nodes.saturating_mul(by);
        q.cpu = q.cpu.saturating_mul(by);
        q.memory_gb = q.memory_gb.saturating_mul(by);
        q.storage_gb = q.storage_gb.saturating_mul(by);
    }
    let capacities = sum(&mut cfg.clusters.iter().map(|c| {
        let cap = &c.capacity;
        [cap.vm_slots, cap.cpu, cap.memory_gb, cap.storage_gb]
    }));
    let by = factor(capacities);
    for c in &mut out.clusters {
        let cap = &mut c.capacity;
        cap.vm_slots = cap.vm_slots.saturating_mul(by);
        cap.cpu = cap.cpu.saturating_mul(by);
        cap.memory_gb = cap.memory_gb.saturating_mul(by);
        cap.storage_gb = cap.storage_gb.saturating_mul(by);
    }
    out
}

// ---------------------------------------------------------------------------
// Rows, as the store writes them
// ---------------------------------------------------------------------------

/// One transaction's worth of generated rows.
#[derive(Debug, Default)]
pub(crate) struct DemoBatch {
    pub requests: Vec<RequestIns>,
    /// (request, prerequisite)
    pub deps: Vec<(String, String)>,
    pub steps: Vec<StepIns>,
    pub tasks: Vec<TaskIns>,
    pub resources: Vec<ResourceIns>,
    pub nodes: Vec<NodeIns>,
    pub node_warmup: Vec<NodeWarmupIns>,
    pub warmup_days: Vec<WarmupDayIns>,
    pub sims: Vec<SimIns>,
    pub listings: Vec<ListingIns>,
    pub dns_records: Vec<DnsRecordIns>,
    pub certs: Vec<crate::store::NewCertIns>,
    /// Records the simulated DNS holds (shared ones repeat: written once).
    pub sim_dns: Vec<SimDnsIns>,
    pub transitions: Vec<TransitionIns>,
    pub events: Vec<EventIns>,
    pub audit: Vec<AuditIns>,
}

#[derive(Debug)]
pub(crate) struct RequestIns {
    pub id: String,
    pub tenant: String,
    pub region: String,
    pub plan: String,
    pub kind: String,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    pub label: String,
    pub domain: String,
    pub state: &'static str,
    pub requested_by: &'static str,
    pub cluster: Option<String>,
    pub approval_rule: Option<String>,
    pub approval_reason: Option<String>,
    pub wait_reason: Option<String>,
    pub teardown: Option<&'static str>,
    pub error: Option<String>,
    pub needs_attention: bool,
    pub fence: i64,
    pub next_run_at: String,
    pub progress_at: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug)]
pub(crate) struct StepIns {
    pub request_id: String,
    pub step: &'static str,
    pub position: i64,
    pub status: &'static str,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct TaskIns {
    pub request_id: String,
    pub step: &'static str,
    pub name: &'static str,
    pub position: i64,
    pub status: &'static str,
    pub detail: Option<String>,
    pub updated_at: String,
}

#[derive(Debug)]
pub(crate) struct ResourceIns {
    pub id: String,
    pub request_id: String,
    pub seq: i64,
    pub kind: &'static str,
    pub status: &'static str,
    pub provider: Option<&'static str>,
    pub provider_ref: Option<String>,
    pub tenant: String,
    pub cluster: Option<String>,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    pub slots: u32,
    pub detail: Option<String>,
    pub created_at: String,
    pub released_at: Option<String>,
}

#[derive(Debug)]
pub(crate) struct NodeIns {
    pub id: String,
    pub request_id: String,
    pub provider_id: String,
    pub tenant: String,
    pub label: String,
    pub hostname: String,
    pub ip_address: String,
    pub region: String,
    pub cluster: Option<String>,
    pub plan: String,
    pub status: &'static str,
    pub status_reason: Option<String>,
    pub resume_status: Option<&'static str>,
    pub reputation_score: i64,
    pub current_load: i64,
    pub created_at: String,
    pub updated_at: String,
    pub last_heartbeat: Option<String>,
    pub cert_not_after: Option<String>,
}

#[derive(Debug)]
pub(crate) struct NodeWarmupIns {
    pub node_id: String,
    pub plan: String,
    pub day: i64,
    pub days: i64,
    pub cap: i64,
    pub status: &'static str,
    pub reason: Option<String>,
    pub started_at: String,
    pub day_started_at: String,
    pub updated_at: String,
}

#[derive(Debug)]
pub(crate) struct WarmupDayIns {
    pub node_id: String,
    pub date: String,
    pub day: i64,
    pub cap: i64,
    pub scheduled: i64,
    pub sent: i64,
    pub delivered: i64,
    pub deferred: i64,
    pub bounced: i64,
    pub complaints: i64,
    pub decision: Option<&'static str>,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub(crate) struct SimIns {
    pub id: String,
    pub idempotency_key: String,
    pub cluster: String,
    pub region: String,
    pub label: String,
    pub plan: String,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    pub ip: String,
    pub power: &'static str,
    pub firewall: Option<&'static str>,
    pub rdns: Option<String>,
    pub mail_stack: bool,
    pub ready_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

#[derive(Debug)]
pub(crate) struct DnsRecordIns {
    pub request_id: String,
    pub position: i64,
    pub zone: String,
    pub purpose: &'static str,
    pub name: String,
    pub rtype: &'static str,
    pub ttl: u32,
    pub content: String,
    pub want: String,
    pub owned: bool,
    pub status: &'static str,
    pub seen: Option<String>,
    pub published_at: String,
    pub verified_at: Option<String>,
    pub removed_at: Option<String>,
}

#[derive(Debug)]
pub(crate) struct SimDnsIns {
    pub zone: String,
    pub name: String,
    pub rtype: &'static str,
    pub ttl: u32,
    pub content: String,
    pub created_at: String,
}

#[derive(Debug)]
pub(crate) struct ListingIns {
    pub id: String,
    pub node_id: String,
    pub ip_address: String,
    pub provider: &'static str,
    pub code: &'static str,
    pub meaning: &'static str,
    pub listed_at: String,
    pub delisted_at: Option<String>,
    pub details: Option<String>,
}

#[derive(Debug)]
pub(crate) struct TransitionIns {
    pub request_id: String,
    pub from: Option<&'static str>,
    pub to: &'static str,
    pub actor: &'static str,
    pub reason: Option<String>,
    pub at: String,
}

#[derive(Debug)]
pub(crate) struct EventIns {
    pub id: String,
    pub name: &'static str,
    pub request_id: Option<String>,
    pub node_id: Option<String>,
    pub tenant: Option<String>,
    pub actor: &'static str,
    pub payload: String,
    pub at: String,
}

#[derive(Debug)]
pub(crate) struct AuditIns {
    pub at: String,
    pub actor: &'static str,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: Option<String>,
}

// ---------------------------------------------------------------------------
// Fixed vocabulary
// ---------------------------------------------------------------------------

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// How far back the history goes (a little under 30 days, so all of it is "the last 30").
const HISTORY: i64 = 30 * DAY - HOUR;

/// Requests per store write in the first phase; timeline entries per write in the second.
const REQUESTS_PER_BATCH: usize = 2_000;
const TIMELINE_PER_BATCH: usize = 20_000;
/// The writer's page cache while a demo is written (KiB, as a negative `cache_size`).
const BULK_CACHE_KIB: i64 = -64 * 1024;

/// Who acts. Index 0 is the engine.
const ACTORS: [&str; 5] = ["engine@demo", "alice", "bob", "ops-lead", "sre-oncall"];
const ENGINE: u8 = 0;
const ALICE: u8 = 1;
const BOB: u8 = 2;
const OPS_LEAD: u8 = 3;
const SRE: u8 = 4;

/// How often the demo puts a node on each warm-up plan, by name; plans not named here
/// (custom ones from the config) are not picked.
const WARMUP_MIX: [(&str, f64); 4] = [
    ("standard", 0.68),
    ("aggressive", 0.20),
    ("conservative", 0.07),
    ("dedicated-ip", 0.05),
];
/// Nodes registered before the last 16 days are past warm-up in the demo: they finished
/// at their 16th day boundary, without a day-by-day log. (Every built-in plan is longer
/// than that; the demo's 30 days of history cannot hold a whole plan.)
const SETTLED_DAYS: i64 = 16;
/// The engine runs a day boundary within this long after UTC midnight.
const BOUNDARY_LAG: i64 = 30 * SEC;
/// The longest day-by-day warm-up log the demo writes for one node.
const WALK_MAX_DAYS: usize = 30;
/// Mixed into a request's seed for its warm-up, so that the rest of its life does not
/// depend on how many days it warmed.
const WARMUP_SALT: u64 = 0x3a7d_0c5e_9b21_f00d;

/// Blocklist zones: (zone, weight, [(code, tag, meaning)]).
struct Zone {
    zone: &'static str,
    weight: f64,
    codes: &'static [(&'static str, &'static str, &'static str)],
}

const ZONES: [Zone; 4] = [
    Zone {
        zone: "zen.spamhaus.org",
        weight: 0.45,
        codes: &[
            (
                "127.0.0.2",
                "SBL",
                "Spamhaus SBL: a verified source of spam",
            ),
            (
                "127.0.0.3",
                "CSS",
                "Spamhaus CSS: low-reputation (snowshoe) sending",
            ),
            (
                "127.0.0.4",
                "XBL",
                "Spamhaus XBL: exploited host (botnet or open proxy)",
            ),
        ],
    },
    Zone {
        zone: "bl.spamcop.net",
        weight: 0.25,
        codes: &[(
            "127.0.0.2",
            "SpamCop",
            "SpamCop: reported by spam recipients",
        )],
    },
    Zone {
        zone: "b.barracudacentral.org",
        weight: 0.15,
        codes: &[(
            "127.0.0.2",
            "BRBL",
            "Barracuda Reputation Block List: poor sender reputation",
        )],
    },
    Zone {
        zone: "psbl.surriel.com",
        weight: 0.15,
        codes: &[("127.0.0.2", "PSBL", "PSBL: mail seen at spam traps")],
    },
];

fn zone_details(zone: usize, ip: &str) -> String {
    match zone {
        0 => format!("https://check.spamhaus.org/listed/?searchterm={ip}"),
        1 => format!("Blocked - see https://www.spamcop.net/bl.shtml?{ip}"),
        2 => format!(
            "Client host blocked using Barracuda Reputation, see http://www.barracudanetworks.com/reputation/?r=1&ip={ip}"
        ),
        _ => format!("Listed in PSBL, see https://psbl.org/listing?ip={ip}"),
    }
}

/// What a flaky cloud answers when a call fails.
const TRANSIENT: [&str; 5] = [
    "503 Service Unavailable: the API is overloaded, try again",
    "504 Gateway Timeout: upstream did not answer in time",
    "429 Too Many Requests: rate limit of 10 calls/s exceeded",
    "500 Internal Server Error: hypervisor did not acknowledge the task",
    "409 Conflict: another task is running on this instance",
];

const SUSPEND_REASONS: [&str; 4] = [
    "invoice overdue (30 days)",
    "abuse report: phishing complaint from a recipient ISP",
    "customer asked to pause sending",
    "compliance review of the sending domain",
];
const REACTIVATE_REASONS: [&str; 3] = [
    "invoice paid",
    "abuse case closed",
    "customer resumed sending",
];
const DEPROVISION_REASONS: [&str; 4] = [
    "customer cancelled the service",
    "consolidating onto larger plans",
    "moving this sender to another region",
    "end of contract",
];
const APPROVE_REASONS: [&str; 3] = [
    "approved: within this quarter's budget",
    "approved: capacity confirmed with finance",
    "approved for the launch campaign",
];
const REJECT_REASONS: [&str; 3] = [
    "over budget for this quarter; order ssd-8 instead",
    "duplicate of an existing order",
    "capacity in this region is reserved for the migration",
];
const ROLLBACK_REASONS: [&str; 3] = [
    "ordered in the wrong region",
    "label typo; ordering again",
    "customer cancelled before delivery",
];
const MAINTENANCE_REASONS: [&str; 4] = [
    "kernel upgrade",
    "postfix queue migration",
    "disk replacement by the provider",
    "TLS certificate rotation",
];
const AWAIT_REASON: &str =
    "manual provider: waiting for an administrator to enter the server's IP address and SSH port (request provide)";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn at(ms: i64) -> String {
    ts(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

fn uuid7(rng: &mut StdRng, ms: i64) -> String {
    let mut bytes = [0u8; 10];
    rng.fill(&mut bytes);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap_or(0), &bytes)
        .into_uuid()
        .to_string()
}

fn between(rng: &mut StdRng, lo: i64, hi: i64) -> i64 {
    if hi > lo {
        rng.gen_range(lo..=hi)
    } else {
        lo
    }
}

fn weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    if weights.is_empty() || total <= 0.0 {
        return 0;
    }
    let mut x = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// One of a fixed list (never empty: checked when compiling).
fn pick<T: Copy, const N: usize>(rng: &mut StdRng, items: &[T; N]) -> T {
    const { assert!(N > 0) };
    items[rng.gen_range(0..N)]
}

/// One of a list, if it has any.
fn choose<T: Copy>(rng: &mut StdRng, items: &[T]) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        Some(items[rng.gen_range(0..items.len())])
    }
}

/// The n-th demo address: the documentation ranges first (.1–.199 of each, leaving the
/// rest of the simulated cloud's pools free for new instances), then 100.64.0.0/10.
fn demo_ip(n: u32) -> Ipv4Addr {
    const DOC: [[u8; 3]; 3] = [[198, 51, 100], [203, 0, 113], [192, 0, 2]];
    const PER: u32 = 199;
    let block = (n / PER) as usize;
    if let Some(prefix) = DOC.get(block) {
        let host = (n % PER) as u8 + 1;
        return Ipv4Addr::new(prefix[0], prefix[1], prefix[2], host);
    }
    // 100.64.0.0/10, skipping .0 and .255 in the last octet.
    let k = n - PER * DOC.len() as u32;
    let per_24 = 254;
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    Ipv4Addr::from(base + (k / per_24) * 256 + (k % per_24) + 1)
}

fn state_of(step: Step) -> RequestState {
    match step {
        Step::Allocate | Step::Resize => RequestState::Allocating,
        Step::Configure => RequestState::Configuring,
        Step::Activate => RequestState::Activating,
        Step::Verify | Step::Confirm => RequestState::Verifying,
    }
}

fn step_index(step: Step) -> usize {
    match step {
        Step::Allocate | Step::Resize => 0,
        Step::Configure | Step::Confirm => 1,
        Step::Activate => 2,
        Step::Verify => 3,
    }
}

/// The provider call a sub-task makes, as the engine names it in errors.
fn call_of(task: &str) -> &'static str {
    match task {
        "create_instance" => "create",
        "firewall" => "set_firewall",
        "rdns" => "set_rdns",
        "mail_stack" => "bootstrap",
        "start_services" => "resume",
        "smtp_probe" | "submission_probe" | "test_message" => "probe",
        _ => "status",
    }
}

/// Compensation order of a teardown (as the engine runs them).
fn release_rank(kind: ResourceKind) -> u8 {
    match kind {
        ResourceKind::Node => 0,
        ResourceKind::Certificate => 1,
        ResourceKind::Dns => 2,
        ResourceKind::Rdns => 3,
        ResourceKind::Instance | ResourceKind::Upgrade => 4,
        ResourceKind::Firewall => 5,
        ResourceKind::Ip => 6,
        ResourceKind::Capacity | ResourceKind::ResizeHold => 7,
        ResourceKind::Quota => 8,
    }
}

// ---------------------------------------------------------------------------
// The world, from the config
// ---------------------------------------------------------------------------

type Amounts = [i64; 4];

struct TenantW {
    name: String,
    domain: String,
    quota: Amounts,
    weight: f64,
}

struct RegionW {
    name: String,
    code: String,
    /// Default cluster first, online ones before the others.
    clusters: Vec<usize>,
    weight: f64,
}

struct ClusterW {
    name: String,
    capacity: Amounts,
}

struct PlanW {
    name: String,
    kind: String,
    cpu: u32,
    memory_gb: u32,
    storage_gb: u32,
    weight: f64,
    /// Position from the smallest plan.
    rank: usize,
}

impl PlanW {
    fn need(&self) -> Amounts {
        [
            1,
            i64::from(self.cpu),
            i64::from(self.memory_gb),
            i64::from(self.storage_gb),
        ]
    }
}

struct World {
    tenants: Vec<TenantW>,
    regions: Vec<RegionW>,
    clusters: Vec<ClusterW>,
    plans: Vec<PlanW>,
    /// Plan indices from the smallest.
    by_size: Vec<usize>,
    rules: Vec<ApprovalRule>,
    limit: usize,
    max_retries: u32,
    backoff_ms: Vec<i64>,
    /// Warm-up plans (the built-in ones and the config's), how often each is picked, and
    /// the thresholds of the day boundary.
    warm_plans: Vec<WarmupPlan>,
    warm_weights: Vec<f64>,
    thresholds: Thresholds,
    now: i64,
    /// Each tenant domain's DKIM key (selector, public key), made before the fleet is.
    dkim: std::collections::HashMap<String, (String, String)>,
    /// What the demo's certificates are signed with and how their key is kept.
    certs: Option<DemoCerts>,
}

/// The demo's certificates: signed by a simulated root made for the demo, all for one leaf
/// key (a fleet of 100,000 demo nodes would otherwise mean as many key files), kept as any
/// key is: sealed per certificate under `[dkim] key_env`, or in one 0600 file.
struct DemoCerts {
    root: crate::engine::ca::Root,
    leaf: rcgen::KeyPair,
    der: zeroize::Zeroizing<Vec<u8>>,
    seal: Option<zeroize::Zeroizing<[u8; 32]>>,
    file: Option<String>,
}

impl World {
    fn from_config(cfg: &Config, now: DateTime<Utc>) -> Result<World, DemoError> {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if cfg.tenants.is_empty() {
            return Err(DemoError::Config("it defines no tenants".into()));
        }
        if cfg.plans.is_empty() {
            return Err(DemoError::Config("it defines no plans".into()));
        }
        if cfg.clusters.is_empty() {
            return Err(DemoError::Config("it defines no clusters".into()));
        }
        let tenants = cfg
            .tenants
            .iter()
            .map(|t| TenantW {
                name: t.name.clone(),
                domain: format!("{}-mail.example.net", t.name),
                quota: [
                    as_i64(t.quota.nodes),
                    as_i64(t.quota.cpu),
                    as_i64(t.quota.memory_gb),
                    as_i64(t.quota.storage_gb),
                ],
                weight: (t.quota.nodes.max(1)) as f64,
            })
            .collect();
        let clusters: Vec<ClusterW> = cfg
            .clusters
            .iter()
            .map(|c| ClusterW {
                name: c.name.clone(),
                capacity: [
                    as_i64(c.capacity.vm_slots),
                    as_i64(c.capacity.cpu),
                    as_i64(c.capacity.memory_gb),
                    as_i64(c.capacity.storage_gb),
                ],
            })
            .collect();
        let mut regions: Vec<RegionW> = Vec::new();
        for name in cfg.regions() {
            let mut members: Vec<usize> = cfg
                .clusters
                .iter()
                .enumerate()
                .filter(|(_, c)| c.region == name)
                .map(|(i, _)| i)
                .collect();
            members.sort_by_key(|i| {
                let c = &cfg.clusters[*i];
                (c.health != ClusterHealth::Online, !c.default)
            });
            let weight = members
                .iter()
                .map(|i| cfg.clusters[*i].capacity.vm_slots as f64)
                .sum::<f64>()
                .max(1.0);
            let mut code: String = name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .take(3)
                .collect();
            if code.is_empty() {
                code = "reg".into();
            }
            if regions.iter().any(|r| r.code == code) {
                code = format!("{code}{}", regions.len() + 1);
            }
            regions.push(RegionW {
                name: name.to_string(),
                code,
                clusters: members,
                weight,
            });
        }
        let by_size = plans_by_size(cfg);
        let mut plans: Vec<PlanW> = cfg
            .plans
            .iter()
            .map(|p| PlanW {
                name: p.name.clone(),
                kind: p.kind.clone(),
                cpu: p.cpu,
                memory_gb: p.memory_gb,
                storage_gb: p.storage_gb,
                weight: 0.0,
                rank: 0,
            })
            .collect();
        for (rank, i) in by_size.iter().enumerate() {
            plans[*i].rank = rank;
            plans[*i].weight = size_weight(rank);
        }
        let rules = cfg.approval_rules();
        let mut backoff_ms: Vec<i64> = cfg
            .engine
            .retry_backoff
            .iter()
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .collect();
        if backoff_ms.is_empty() {
            backoff_ms.push(5 * SEC);
        }
        let warm_plans = cfg.warmup_plans();
        let mut warm_weights: Vec<f64> = warm_plans
            .iter()
            .map(|p| {
                WARMUP_MIX
                    .iter()
                    .find(|(name, _)| *name == p.name)
                    .map_or(0.0, |(_, w)| *w)
            })
            .collect();
        if warm_weights.iter().sum::<f64>() <= 0.0 {
            // No built-in plan by its usual name: the default plan for everyone.
            for (p, w) in warm_plans.iter().zip(warm_weights.iter_mut()) {
                *w = if p.name == cfg.warmup.default_plan {
                    1.0
                } else {
                    0.0
                };
            }
        }
        if warm_plans.is_empty() || warm_weights.iter().sum::<f64>() <= 0.0 {
            return Err(DemoError::Config("it has no usable warm-up plan".into()));
        }
        Ok(World {
            tenants,
            regions,
            clusters,
            plans,
            by_size,
            rules,
            limit: usize::try_from(cfg.engine.max_in_flight_per_tenant)
                .unwrap_or(1)
                .max(1),
            max_retries: cfg.engine.max_retries,
            backoff_ms,
            warm_plans,
            warm_weights,
            thresholds: Thresholds::default(),
            now: now.timestamp_millis(),
            dkim: std::collections::HashMap::new(),
            certs: None,
        })
    }

    fn approval(&self, tenant: usize, region: usize, plan: usize) -> Option<RuleMatch> {
        let p = &self.plans[plan];
        let facts = RequestFacts {
            tenant: &self.tenants[tenant].name,
            region: &self.regions[region].name,
            kind: &p.kind,
            cpu: p.cpu,
            memory_gb: p.memory_gb,
            storage_gb: p.storage_gb,
        };
        first_match(&self.rules, &facts)
    }

    fn smaller(&self, plan: usize) -> Option<usize> {
        let rank = self.plans[plan].rank;
        rank.checked_sub(1).map(|r| self.by_size[r])
    }
}

// ---------------------------------------------------------------------------
// Pass A: what each request becomes
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeFate {
    Active,
    Warming,
    /// Warming, held once and then paused by the day boundary (so that every demo has one).
    WarmupPaused,
    Listed,
    Bounce,
    Maintenance,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unwind {
    AfterFailure,
    Deprovision,
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Node(NodeFate),
    Suspended,
    Deprovisioned,
    RolledBack { operator: bool },
    RejectedByApprover,
    RejectedPrereq,
    Queued { tenant_limit: bool },
    PendingApproval,
    InFlight(Step),
    AwaitingInput,
    Failed,
    RollingBack(Unwind),
}

impl Fate {
    /// Whether the request holds quota and capacity now.
    fn holds(self) -> bool {
        matches!(
            self,
            Fate::Node(_)
                | Fate::Suspended
                | Fate::InFlight(_)
                | Fate::AwaitingInput
                | Fate::Failed
                | Fate::RollingBack(_)
        )
    }

    /// Whether it got past admission (and so an IP, unless it stopped before).
    fn admitted(self) -> bool {
        !matches!(
            self,
            Fate::Queued { .. }
                | Fate::PendingApproval
                | Fate::RejectedByApprover
                | Fate::RejectedPrereq
        )
    }

    /// Whether its timeline ends at a point anchored just before `now`.
    fn anchored(self) -> bool {
        matches!(
            self,
            Fate::InFlight(_)
                | Fate::Failed
                | Fate::RollingBack(Unwind::AfterFailure | Unwind::Stalled)
        )
    }
}

struct Slot {
    fate: Fate,
    tenant: usize,
    region: usize,
    plan: usize,
    cluster: usize,
    /// Creation time (exact, except for anchored fates and dependents).
    approx: i64,
    seed: u64,
    /// Slot index of the prerequisite.
    dep: Option<usize>,
    label: String,
    ip: Option<Ipv4Addr>,
}

struct Shaper<'w> {
    w: &'w World,
    tenant_used: Vec<Amounts>,
    cluster_used: Vec<Amounts>,
}

fn fits(used: Amounts, need: Amounts, cap: Amounts, share: f64) -> bool {
    (0..4).all(|i| ((used[i] + need[i]) as f64) <= cap[i] as f64 * share)
}

fn add(a: &mut Amounts, b: Amounts) {
    for i in 0..4 {
        a[i] += b[i];
    }
}

impl Shaper<'_> {
    fn tenant(&self, rng: &mut StdRng) -> usize {
        let weights: Vec<f64> = self.w.tenants.iter().map(|t| t.weight).collect();
        weighted(rng, &weights)
    }

    fn region(&self, rng: &mut StdRng) -> usize {
        let weights: Vec<f64> = self.w.regions.iter().map(|r| r.weight).collect();
        weighted(rng, &weights)
    }

    /// A plan and cluster for a request; requests that hold resources now stay within 80%
    /// of their tenant's quota and 85% of the cluster while that is possible, so that the
    /// demo leaves room for new orders.
    fn shape(
        &mut self,
        rng: &mut StdRng,
        tenant: usize,
        region: usize,
        holds: bool,
        avoid_approval: bool,
    ) -> (usize, usize) {
        let w = self.w;
        let weights: Vec<f64> = w.plans.iter().map(|p| p.weight).collect();
        let mut plan = weighted(rng, &weights);
        if avoid_approval {
            while w.approval(tenant, region, plan).is_some() {
                match w.smaller(plan) {
                    Some(p) => plan = p,
                    None => break,
                }
            }
        }
        if holds {
            while !fits(
                self.tenant_used[tenant],
                w.plans[plan].need(),
                w.tenants[tenant].quota,
                0.8,
            ) {
                match w.smaller(plan) {
                    Some(p) => plan = p,
                    None => break,
                }
            }
        }
        let need = w.plans[plan].need();
        let members = &w.regions[region].clusters;
        let cluster = if holds {
            members
                .iter()
                .copied()
                .find(|c| fits(self.cluster_used[*c], need, w.clusters[*c].capacity, 0.85))
                .unwrap_or(members[0])
        } else if rng.gen_bool(0.7) || members.len() == 1 {
            members[0]
        } else {
            members[rng.gen_range(0..members.len())]
        };
        if holds {
            add(&mut self.tenant_used[tenant], need);
            add(&mut self.cluster_used[cluster], need);
        }
        (plan, cluster)
    }
}

fn scaled(n: usize, per: usize, min: usize, max: usize) -> usize {
    (n / per).clamp(min, max.max(min))
}

fn plan_slots(w: &World, spec: &DemoSpec, rng: &mut StdRng) -> Vec<Slot> {
    let n = spec.nodes;
    let now = w.now;
    let share = |p: f64, min: usize| ((n as f64 * p).round() as usize).max(min);

    // The fleet: nodes in service.
    let mut fleet: Vec<Fate> = Vec::with_capacity(n);
    let mut left = n;
    for (count, fate) in [
        (share(0.02, 2), Fate::Suspended),
        (share(0.15, 1), Fate::Node(NodeFate::Warming)),
        (share(0.005, 1), Fate::Node(NodeFate::WarmupPaused)),
        (share(0.03, 1), Fate::Node(NodeFate::Listed)),
        (share(0.02, 1), Fate::Node(NodeFate::Bounce)),
        (share(0.02, 1), Fate::Node(NodeFate::Maintenance)),
        (share(0.015, 1), Fate::Node(NodeFate::Unhealthy)),
    ] {
        let k = count.min(left);
        left -= k;
        fleet.extend(std::iter::repeat_n(fate, k));
    }
    fleet.extend(std::iter::repeat_n(Fate::Node(NodeFate::Active), left));

    // Requests in flight: at most the tenants' limits allow, filled tenant by tenant so the
    // first tenant sits at its limit.
    let per_state = if n >= 5_000 { 3 } else { 2 };
    let room = w.limit * w.tenants.len();
    let in_flight_total = (per_state * 4).min(room);
    let mut in_flight: Vec<(Fate, usize)> = Vec::new();
    let mut tenant_load = vec![0usize; w.tenants.len()];
    for i in 0..in_flight_total {
        let step = STEPS[i % 4];
        let tenant = tenant_load.iter().position(|l| *l < w.limit).unwrap_or(0);
        tenant_load[tenant] += 1;
        in_flight.push((Fate::InFlight(step), tenant));
    }
    let full: Vec<usize> = (0..w.tenants.len())
        .filter(|t| tenant_load[*t] >= w.limit)
        .collect();

    let rolled_back = (n / 25).max(2);
    let rejected = (n / 50).max(2);
    let mut others: Vec<Fate> = Vec::new();
    others.extend(std::iter::repeat_n(
        Fate::AwaitingInput,
        scaled(n, 2_000, 2, 10),
    ));
    others.extend(std::iter::repeat_n(Fate::Failed, scaled(n, 5_000, 2, 5)));
    for unwind in [Unwind::AfterFailure, Unwind::Deprovision] {
        others.extend(std::iter::repeat_n(
            Fate::RollingBack(unwind),
            scaled(n, 5_000, 1, 5),
        ));
    }
    others.push(Fate::RollingBack(Unwind::Stalled));
    for i in 0..rolled_back {
        others.push(Fate::RolledBack {
            operator: i % 4 == 1,
        });
    }
    others.extend(std::iter::repeat_n(Fate::Deprovisioned, (n / 33).max(2)));
    let combos: Vec<(usize, usize, usize)> = (0..w.tenants.len())
        .flat_map(|t| (0..w.regions.len()).map(move |r| (t, r)))
        .flat_map(|(t, r)| (0..w.plans.len()).map(move |p| (t, r, p)))
        .filter(|(t, r, p)| w.approval(*t, *r, *p).is_some())
        .collect();
    if !combos.is_empty() {
        others.extend(std::iter::repeat_n(
            Fate::PendingApproval,
            scaled(n, 100, 2, 100),
        ));
    }
    let by_approver = if combos.is_empty() { 0 } else { rejected / 2 };
    others.extend(std::iter::repeat_n(Fate::RejectedByApprover, by_approver));
    let rejected_prereq = rejected - by_approver;
    let queued = scaled(n, 50, 4, 300);

    let mut shaper = Shaper {
        w,
        tenant_used: vec![[0; 4]; w.tenants.len()],
        cluster_used: vec![[0; 4]; w.clusters.len()],
    };
    let mut slots: Vec<Slot> = Vec::new();
    let push = |slots: &mut Vec<Slot>,
                rng: &mut StdRng,
                fate: Fate,
                tenant: usize,
                region: usize,
                plan: usize,
                cluster: usize| {
        let approx = match fate {
            Fate::Node(NodeFate::Warming) => now - between(rng, 4 * HOUR, 15 * DAY + 12 * HOUR),
            Fate::Node(NodeFate::WarmupPaused) => now - between(rng, 3 * DAY, 15 * DAY + 12 * HOUR),
            Fate::Node(_) | Fate::Suspended | Fate::RollingBack(Unwind::Deprovision) => {
                now - between(rng, 16 * DAY + 12 * HOUR, HISTORY)
            }
            Fate::Deprovisioned => now - between(rng, 2 * DAY, HISTORY),
            Fate::RolledBack { .. } | Fate::RejectedByApprover => {
                now - between(rng, 4 * HOUR, HISTORY)
            }
            Fate::PendingApproval => now - between(rng, 10 * MIN, 2 * DAY),
            Fate::AwaitingInput => now - between(rng, 4 * HOUR, 3 * DAY),
            Fate::Queued { .. } => now - between(rng, 30 * SEC, 15 * MIN),
            _ => now - 5 * MIN,
        };
        slots.push(Slot {
            fate,
            tenant,
            region,
            plan,
            cluster,
            approx,
            seed: rng.gen(),
            dep: None,
            label: String::new(),
            ip: None,
        });
    };

    // Holders first, so the budget goes to what holds resources now.
    for (fate, tenant) in &in_flight {
        let region = shaper.region(rng);
        let (plan, cluster) = shaper.shape(rng, *tenant, region, true, true);
        push(&mut slots, rng, *fate, *tenant, region, plan, cluster);
    }
    for fate in fleet.iter().chain(others.iter().filter(|f| f.holds())) {
        let tenant = shaper.tenant(rng);
        let region = shaper.region(rng);
        let (plan, cluster) = shaper.shape(rng, tenant, region, true, false);
        push(&mut slots, rng, *fate, tenant, region, plan, cluster);
    }
    for fate in others.iter().filter(|f| !f.holds()) {
        match fate {
            Fate::PendingApproval | Fate::RejectedByApprover => {
                // Only planned when some order needs approval.
                if let Some((tenant, region, plan)) = choose(rng, &combos) {
                    let cluster = w.regions[region].clusters[0];
                    push(&mut slots, rng, *fate, tenant, region, plan, cluster);
                }
            }
            _ => {
                let tenant = shaper.tenant(rng);
                let region = shaper.region(rng);
                let (plan, cluster) = shaper.shape(rng, tenant, region, false, false);
                push(&mut slots, rng, *fate, tenant, region, plan, cluster);
            }
        }
    }
    // Prerequisites: dependents wait for (or were rejected because of) another request.
    // Their exact creation time follows from the prerequisite's (see `build`).
    let rolled: Vec<usize> = (0..slots.len())
        .filter(|i| matches!(slots[*i].fate, Fate::RolledBack { .. }))
        .collect();
    let waitable: Vec<usize> = (0..slots.len())
        .filter(|i| matches!(slots[*i].fate, Fate::InFlight(_) | Fate::PendingApproval))
        .collect();
    for _ in 0..rejected_prereq {
        let Some(target) = choose(rng, &rolled) else {
            break;
        };
        let tenant = slots[target].tenant;
        let after = slots[target].approx + 10 * SEC;
        let region = shaper.region(rng);
        let (plan, cluster) = shaper.shape(rng, tenant, region, false, true);
        push(
            &mut slots,
            rng,
            Fate::RejectedPrereq,
            tenant,
            region,
            plan,
            cluster,
        );
        if let Some(last) = slots.last_mut() {
            last.dep = Some(target);
            last.approx = after;
        }
    }
    for q in 0..queued {
        let at_limit = if q % 2 == 0 || waitable.is_empty() {
            choose(rng, &full)
        } else {
            None
        };
        let limited = at_limit.is_some();
        let (tenant, dep) = if let Some(tenant) = at_limit {
            (tenant, None)
        } else if waitable.is_empty() {
            (shaper.tenant(rng), None)
        } else {
            let target = waitable[(q / 2) % waitable.len()];
            (slots[target].tenant, Some(target))
        };
        let region = shaper.region(rng);
        let (plan, cluster) = shaper.shape(rng, tenant, region, false, true);
        let fate = Fate::Queued {
            tenant_limit: limited,
        };
        push(&mut slots, rng, fate, tenant, region, plan, cluster);
        if let Some(last) = slots.last_mut() {
            last.dep = dep;
        }
    }
    slots
}

// ---------------------------------------------------------------------------
// Pass C: one request's whole life
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum AuditKind {
    Create,
    Admit,
    Approve,
    Reject,
    Suspend,
    Reactivate,
    Deprovision,
}

impl AuditKind {
    fn action(self) -> &'static str {
        match self {
            AuditKind::Create => "request.create",
            AuditKind::Admit => "request.admit",
            AuditKind::Approve => "request.approve",
            AuditKind::Reject => "request.reject",
            AuditKind::Suspend => "request.suspend",
            AuditKind::Reactivate => "request.reactivate",
            AuditKind::Deprovision => "request.deprovision",
        }
    }
}

struct Tr {
    from: Option<RequestState>,
    to: RequestState,
    actor: u8,
    reason: Option<Cow<'static, str>>,
    at: i64,
    audit: Option<AuditKind>,
}

/// A history entry that is not a transition: a node event, an audit row, or both.
struct Extra {
    at: i64,
    actor: u8,
    event: Option<(&'static str, String)>,
    audit: Option<(&'static str, Option<String>, Option<String>)>,
}

#[derive(Clone)]
struct StepP {
    status: &'static str,
    attempts: i64,
    started: Option<i64>,
    finished: Option<i64>,
    error: Option<String>,
}

struct TaskP {
    step: Step,
    index: usize,
    status: &'static str,
    detail: String,
    at: i64,
}

struct ResP {
    id: String,
    kind: ResourceKind,
    seq: i64,
    allocated: bool,
    provider_ref: Option<String>,
    detail: String,
    created: i64,
    released: Option<i64>,
}

struct SimP {
    id: String,
    power: &'static str,
    firewall: bool,
    rdns: bool,
    mail_stack: bool,
    ready: i64,
    created: i64,
    updated: i64,
    deleted: Option<i64>,
}

struct NodeP {
    id: String,
    status: &'static str,
    reason: Option<String>,
    resume: Option<&'static str>,
    reputation: i64,
    load: i64,
    created: i64,
    updated: i64,
    heartbeat: i64,
}

/// A node's warm-up: where it is on its plan, and its day-by-day log.
struct WarmP {
    /// Index into `World::warm_plans`.
    plan: usize,
    day: u32,
    cap: u64,
    status: &'static str,
    reason: Option<String>,
    started: i64,
    day_started: i64,
    updated: i64,
    days: Vec<WarmDayP>,
}

/// One UTC day of a warming node; `decision` is `None` while the day is open.
struct WarmDayP {
    /// The day's UTC midnight.
    date: i64,
    day: u32,
    cap: u64,
    scheduled: u64,
    counts: DayCounts,
    decision: Option<&'static str>,
    reason: Option<String>,
}

/// Where a walk through a node's warm-up days ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalkEnd {
    /// The node still sends: the walk reaches `now`, and today stays open.
    Now,
    /// The node is listed on `ZONES[zone]` at the stop and sends nothing after; the next
    /// day boundary pauses its warm-up (today stays open if that boundary is still ahead).
    Listed(usize),
    /// The node is taken out of service at the stop; its last day never closes.
    Stopped,
}

/// How a node's warm-up days tend to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mood {
    /// Any health, including nodes bad enough to be paused.
    Any,
    /// Healthy, or with bounce spikes or deferral waves that hold it now and then.
    Calm,
    /// Held once, then paused by bad numbers.
    PauseOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Clean,
    Bouncy,
    Deferrals,
    Risky,
}

/// The kind of day a warming node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayKind {
    Clean,
    BounceSpike,
    Deferrals,
    Pause,
}

/// A day's counts for a node with `cap` that sent during `share` of the day: a little
/// under the cap, with rates by the kind of day. A clean day stays within the hold
/// thresholds and a spike within the pause ones (checked in whole messages); deferral
/// waves and bad days go past them, though tiny volumes round either way.
fn day_counts(rng: &mut StdRng, cap: u64, share: f64, kind: DayKind) -> (u64, DayCounts) {
    let share = share.clamp(0.0, 1.0);
    let sent = ((cap as f64 * share * rng.gen_range(0.86..0.99)).round() as u64).min(cap);
    let scheduled = ((cap as f64 * share).ceil() as u64).clamp(sent, cap.max(sent));
    let part = |r: f64| (sent as f64 * r).round() as u64;
    let over = |r: f64| (sent as f64 * r).ceil() as u64;
    let mut bounced = part(rng.gen_range(0.005..0.02)).min(sent * 3 / 100);
    let mut deferred = part(rng.gen_range(0.01..0.05)).min(sent / 10);
    let mut complaints = part(rng.gen_range(0.0..0.0005)).min(sent / 1000);
    match kind {
        DayKind::Clean => {}
        DayKind::BounceSpike => bounced = part(rng.gen_range(0.032..0.048)).min(sent * 5 / 100),
        DayKind::Deferrals => deferred = over(rng.gen_range(0.12..0.30)),
        DayKind::Pause => {
            if rng.gen_bool(0.5) {
                complaints = over(rng.gen_range(0.0015..0.004));
            } else {
                bounced = over(rng.gen_range(0.055..0.09));
            }
        }
    }
    let bounced = bounced.min(sent);
    let deferred = deferred.min(sent - bounced);
    let counts = DayCounts {
        sent,
        delivered: sent - bounced - deferred,
        deferred,
        bounced,
        complaints,
    };
    (scheduled, counts)
}

/// `YYYY-MM-DD` of a UTC time.
fn date_of(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

struct ListP {
    id: String,
    zone: usize,
    code: usize,
    listed: i64,
    delisted: Option<i64>,
    details: Option<String>,
}

/// How a step ends in a request's history.
#[derive(Debug, Clone, Copy)]
enum Halt {
    Complete,
    /// `done` sub-tasks finished; the next one is under way (`retrying` after a failure).
    Partial {
        done: usize,
        retrying: bool,
    },
    /// `done` sub-tasks finished; the next one exhausted its retries.
    Fail {
        done: usize,
    },
    /// `done` sub-tasks finished; an operator asked for a rollback.
    Cancel {
        done: usize,
    },
    /// A manual provider needs input (activate only).
    Input,
    /// No progress for the stuck limit (configure's mail stack).
    Stuck,
}

#[derive(Debug, Clone, Copy)]
enum TearEnd {
    Finish,
    Partial,
    Stall,
}

/// What dependents need to know about their prerequisite.
#[derive(Clone)]
struct DepInfo {
    id: String,
    state: RequestState,
    created: i64,
    end: i64,
}

struct Flow<'a> {
    w: &'a World,
    s: &'a Slot,
    rng: StdRng,
    t: i64,
    id: String,
    created: i64,
    requested_by: u8,
    approval: Option<RuleMatch>,
    state: RequestState,
    trs: Vec<Tr>,
    steps: [StepP; 4],
    tasks: Vec<TaskP>,
    res: Vec<ResP>,
    sim: Option<SimP>,
    node: Option<NodeP>,
    extras: Vec<Extra>,
    listings: Vec<ListP>,
    warm: Option<WarmP>,
    /// The certificate the configure step obtained: its id and serial.
    cert: Option<(String, [u8; 16])>,
    dep: Option<DepInfo>,
    error: Option<String>,
    wait_reason: Option<String>,
    teardown: Option<&'static str>,
    needs_attention: bool,
    next_run_at: i64,
    updated: i64,
    fence: i64,
    seq: i64,
}

impl<'a> Flow<'a> {
    fn new(w: &'a World, s: &'a Slot, base: i64, dep: Option<DepInfo>) -> Flow<'a> {
        let mut rng = StdRng::seed_from_u64(s.seed);
        let id = uuid7(&mut rng, base);
        let requested_by = match rng.gen_range(0..20) {
            0..=6 => ALICE,
            7..=12 => BOB,
            13..=15 => OPS_LEAD,
            _ => SRE,
        };
        let approval = w.approval(s.tenant, s.region, s.plan);
        let pending = StepP {
            status: "pending",
            attempts: 0,
            started: None,
            finished: None,
            error: None,
        };
        Flow {
            w,
            s,
            rng,
            t: base,
            id,
            created: base,
            requested_by,
            approval,
            state: RequestState::Queued,
            trs: Vec::new(),
            steps: [pending.clone(), pending.clone(), pending.clone(), pending],
            tasks: Vec::new(),
            res: Vec::new(),
            sim: None,
            node: None,
            extras: Vec::new(),
            listings: Vec::new(),
            warm: None,
            cert: None,
            dep,
            error: None,
            wait_reason: None,
            teardown: None,
            needs_attention: false,
            next_run_at: base,
            updated: base,
            fence: 0,
            seq: 0,
        }
    }

    fn gap(&mut self, lo: i64, hi: i64) {
        self.t += between(&mut self.rng, lo, hi);
    }

    fn tenant(&self) -> &'a str {
        &self.w.tenants[self.s.tenant].name
    }

    fn cluster(&self) -> &'a str {
        &self.w.clusters[self.s.cluster].name
    }

    fn plan(&self) -> &'a PlanW {
        &self.w.plans[self.s.plan]
    }

    fn host(&self) -> String {
        format!("{}.{}", self.s.label, self.w.tenants[self.s.tenant].domain)
    }

    fn domain(&self) -> String {
        self.w.tenants[self.s.tenant].domain.clone()
    }

    fn ip(&self) -> String {
        self.s
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "192.0.2.254".into())
    }

    fn tr(
        &mut self,
        to: RequestState,
        actor: u8,
        reason: Option<Cow<'static, str>>,
        audit: Option<AuditKind>,
    ) {
        let from = if self.trs.is_empty() {
            None
        } else {
            Some(self.state)
        };
        self.trs.push(Tr {
            from,
            to,
            actor,
            reason,
            at: self.t,
            audit,
        });
        self.state = to;
        self.updated = self.t;
    }

    fn extra_event(&mut self, at: i64, actor: u8, name: &'static str, payload: serde_json::Value) {
        self.extras.push(Extra {
            at,
            actor,
            event: Some((name, payload.to_string())),
            audit: None,
        });
    }

    fn extra_audit(
        &mut self,
        at: i64,
        actor: u8,
        action: &'static str,
        target: Option<String>,
        detail: Option<String>,
    ) {
        self.extras.push(Extra {
            at,
            actor,
            event: None,
            audit: Some((action, target, detail)),
        });
    }

    // --- admission -------------------------------------------------------------------

    fn create(&mut self) {
        self.tr(
            RequestState::Queued,
            self.requested_by,
            Some(Cow::Borrowed("created")),
            Some(AuditKind::Create),
        );
        if let Some(m) = self.approval.clone() {
            self.tr(
                RequestState::PendingApproval,
                ENGINE,
                Some(Cow::Owned(m.reason)),
                None,
            );
        }
    }

    fn approver(&mut self) -> u8 {
        if self.rng.gen_bool(0.7) {
            OPS_LEAD
        } else {
            ALICE
        }
    }

    fn approve(&mut self) {
        if self.state != RequestState::PendingApproval {
            return;
        }
        self.gap(10 * MIN, 3 * HOUR);
        let who = self.approver();
        let why = pick(&mut self.rng, &APPROVE_REASONS);
        self.tr(
            RequestState::Queued,
            who,
            Some(Cow::Borrowed(why)),
            Some(AuditKind::Approve),
        );
        self.next_run_at = self.t;
    }

    fn admit(&mut self) {
        self.approve();
        // Usually a tick away; sometimes the tenant had to wait for a slot.
        if self.rng.gen_bool(0.1) {
            self.gap(MIN, 12 * MIN);
        } else {
            self.gap(300, 4 * SEC);
        }
        self.next_run_at = self.t - between(&mut self.rng, 0, 400);
        let cluster = self.cluster();
        self.tr(
            RequestState::Allocating,
            ENGINE,
            Some(Cow::Owned(format!("cluster {cluster}"))),
            Some(AuditKind::Admit),
        );
        self.fence += 1;
        for kind in [ResourceKind::Quota, ResourceKind::Capacity] {
            self.add_res(kind, None, String::new(), self.t);
        }
        let t = self.t;
        self.steps[0] = StepP {
            status: "running",
            attempts: 1,
            started: Some(t),
            finished: None,
            error: None,
        };
        self.tasks.push(TaskP {
            step: Step::Allocate,
            index: 0,
            status: "done",
            detail: format!("quota and capacity reserved on {cluster}"),
            at: t,
        });
    }

    fn add_res(
        &mut self,
        kind: ResourceKind,
        provider_ref: Option<String>,
        detail: String,
        at: i64,
    ) {
        self.seq += 1;
        let id = uuid7(&mut self.rng, at);
        let allocated = !(kind == ResourceKind::Instance && provider_ref.is_none());
        self.res.push(ResP {
            id,
            kind,
            seq: self.seq,
            allocated,
            provider_ref,
            detail,
            created: at,
            released: None,
        });
    }

    // --- the pipeline ----------------------------------------------------------------

    fn retry_note(&mut self, task: &str, retry: u32) -> String {
        let i = (retry as usize).saturating_sub(1);
        let base = self.w.backoff_ms[i.min(self.w.backoff_ms.len() - 1)];
        let jittered = (base as f64 * self.rng.gen_range(0.8..1.2)) as i64;
        let wait = format_duration(Duration::from_millis(u64::try_from(jittered).unwrap_or(0)));
        let why = self.failure(task);
        format!(
            "retry {retry}/{} in {wait}: sim: {}: {why}",
            self.w.max_retries,
            call_of(task)
        )
    }

    fn failure(&mut self, task: &str) -> String {
        let ip = self.ip();
        match task {
            "smtp_probe" => format!("connect {ip}:25: connection refused"),
            "submission_probe" => format!("connect {ip}:587: timed out (firewall)"),
            "test_message" => format!("connect {ip}:25: connection refused"),
            _ => pick(&mut self.rng, &TRANSIENT).to_string(),
        }
    }

    fn task_time(&mut self, step: Step, index: usize) -> i64 {
        let (lo, hi) = match (step, index) {
            (Step::Allocate | Step::Resize | Step::Confirm, _) => (400, 2_500),
            (Step::Configure, 4) => (5 * SEC, 20 * SEC),
            (Step::Configure, 5) => (25 * SEC, 95 * SEC),
            (Step::Configure, _) => (200, 1_500),
            (Step::Activate, 0) => (300, 2_000),
            (Step::Activate, 1) => (800, 4_000),
            (Step::Activate, _) => (20, 200),
            (Step::Verify, 0) => (2 * SEC, 12 * SEC),
            (Step::Verify, 5) => (400, 3_000),
            (Step::Verify, _) => (200, 1_500),
        };
        between(&mut self.rng, lo, hi)
    }

    /// Runs one sub-task to completion, with its effects.
    fn task(&mut self, step: Step, index: usize) {
        let si = step_index(step);
        if self.rng.gen_bool(0.04) {
            // A transient failure, retried after the backoff.
            let base = self.w.backoff_ms[0];
            self.t += base + between(&mut self.rng, 0, base / 5) + 300;
            self.steps[si].attempts += 1;
        }
        let started = self.t;
        let d = self.task_time(step, index);
        self.t += d;
        let cluster = self.cluster();
        let host = self.host();
        let ip = self.ip();
        let detail = match (step, index) {
            (Step::Allocate, 1) => {
                let sim_id = format!("sim-{:012x}", self.rng.gen::<u64>() & 0xffff_ffff_ffff);
                let boot = between(&mut self.rng, 2 * SEC, 8 * SEC);
                self.sim = Some(SimP {
                    id: sim_id.clone(),
                    power: "building",
                    firewall: false,
                    rdns: false,
                    mail_stack: false,
                    ready: self.t + boot,
                    created: self.t,
                    updated: self.t,
                    deleted: None,
                });
                let detail = format!("instance {sim_id} in {cluster}");
                self.add_res(
                    ResourceKind::Instance,
                    Some(sim_id),
                    detail.clone(),
                    started,
                );
                detail
            }
            (Step::Allocate, _) => {
                // Polls until the instance is built and has its address.
                let ready = self.sim.as_ref().map(|s| s.ready).unwrap_or(self.t);
                self.t = self.t.max(ready) + between(&mut self.rng, 0, 1_000);
                self.add_res(
                    ResourceKind::Ip,
                    Some(ip.clone()),
                    format!("IPv4 {ip}"),
                    self.t,
                );
                format!("{ip} assigned")
            }
            (Step::Configure, 0) => {
                let t = self.t;
                if let Some(sim) = self.sim.as_mut() {
                    sim.firewall = true;
                    sim.updated = t;
                }
                let detail = "profile smtp: 22, 25, 587 open".to_string();
                self.add_res(
                    ResourceKind::Firewall,
                    Some("smtp".into()),
                    detail.clone(),
                    t,
                );
                detail
            }
            (Step::Configure, 1) => {
                let t = self.t;
                if let Some(sim) = self.sim.as_mut() {
                    sim.rdns = true;
                    sim.updated = t;
                }
                let detail = format!("PTR {ip} → {host}");
                self.add_res(ResourceKind::Rdns, Some(host.clone()), detail.clone(), t);
                detail
            }
            (Step::Configure, 2) => format!("new key for {}, selector mf1", self.domain()),
            (Step::Configure, 3) => {
                let zone = self.domain();
                let detail = format!("5 records in {zone} via sim: 3 added, 2 already there");
                let t = self.t;
                self.add_res(ResourceKind::Dns, Some(zone), detail.clone(), t);
                detail
            }
            (Step::Configure, 4) => {
                let until = chrono::DateTime::from_timestamp_millis(self.t + 90 * 86_400 * 1000)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default();
                let mut serial: [u8; 16] = self.rng.gen();
                serial[0] = (serial[0] & 0x7f) | 0x01;
                let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
                let detail = format!(
                    "{host} from CN=mailfleet simulated CA, serial {hex}, valid until {until}"
                );
                let t = self.t;
                let id = uuid7(&mut self.rng, t);
                self.cert = Some((id.clone(), serial));
                self.add_res(ResourceKind::Certificate, Some(id), detail.clone(), t);
                detail
            }
            (Step::Configure, _) => {
                let t = self.t;
                if let Some(sim) = self.sim.as_mut() {
                    sim.mail_stack = true;
                    sim.updated = t;
                }
                "postfix, ufw and fail2ban installed by cloud-init".to_string()
            }
            (Step::Activate, 0) => {
                let t = self.t;
                if let Some(sim) = self.sim.as_mut() {
                    sim.power = "running";
                    sim.updated = t;
                }
                "postfix started".to_string()
            }
            (Step::Activate, 1) => "the provider reports the instance running".to_string(),
            (Step::Activate, _) => {
                let t = self.t;
                let node_id = uuid7(&mut self.rng, t);
                let detail = format!("node {} registered as warming", short(&node_id));
                self.node = Some(NodeP {
                    id: node_id.clone(),
                    status: "warming",
                    reason: Some("registered by the activate step".into()),
                    resume: None,
                    reputation: 100,
                    load: 0,
                    created: t,
                    updated: t,
                    heartbeat: t,
                });
                self.add_res(ResourceKind::Node, Some(node_id), detail.clone(), t);
                detail
            }
            (Step::Verify, 0) => format!("5 records answer as planned in {}", self.domain()),
            (Step::Verify, 1) => format!("PTR {ip} → {host} → {ip}"),
            (Step::Verify, 2) => {
                let until = chrono::DateTime::from_timestamp_millis(self.t + 89 * 86_400 * 1000)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default();
                format!("{host}: valid until {until} (89 days)")
            }
            (Step::Verify, 3) => format!("220 {host} ESMTP Postfix (Ubuntu)"),
            (Step::Verify, 4) => format!("250-{host} STARTTLS offered on 587"),
            // The demo's history has no resizes.
            (Step::Resize | Step::Confirm, _) => String::new(),
            (Step::Verify, _) => {
                let queued_as = self
                    .sim
                    .as_ref()
                    .map(|s| s.id.get(4..).unwrap_or("").to_uppercase())
                    .unwrap_or_default();
                format!("250 2.0.0 Ok: queued as {queued_as}")
            }
        };
        self.tasks.push(TaskP {
            step,
            index,
            status: "done",
            detail,
            at: self.t,
        });
    }

    fn complete_step(&mut self, step: Step) {
        let si = step_index(step);
        let t = self.t;
        self.steps[si].status = "done";
        self.steps[si].finished = Some(t);
        self.steps[si].error = None;
        let next = STEPS.get(si + 1).copied();
        if let Some(next) = next {
            let ni = step_index(next);
            self.steps[ni].status = "running";
            self.steps[ni].started = Some(t);
            self.steps[ni].attempts += 1;
            self.tr(state_of(next), ENGINE, None, None);
        } else {
            self.tr(RequestState::Completed, ENGINE, None, None);
        }
        self.error = None;
    }

    fn run_step(&mut self, step: Step, halt: Halt) {
        let first = if step == Step::Allocate { 1 } else { 0 };
        let count = step.tasks().len();
        let done = match halt {
            Halt::Complete => count - first,
            Halt::Partial { done, .. } | Halt::Fail { done } | Halt::Cancel { done } => {
                done.min(count - first - 1)
            }
            Halt::Input => 0,
            Halt::Stuck => 2,
        };
        for index in first..first + done {
            self.gap(5, 80);
            self.task(step, index);
        }
        let next = first + done;
        let si = step_index(step);
        match halt {
            Halt::Complete => {
                self.gap(5, 60);
                self.complete_step(step);
            }
            Halt::Partial { retrying, .. } => {
                self.gap(50, 600);
                if step == Step::Allocate && next == 1 {
                    self.intent();
                } else if retrying {
                    let task = step.tasks()[next];
                    let note = self.retry_note(task, 1);
                    self.steps[si].attempts += 1;
                    self.steps[si].error = Some(note.clone());
                    self.error = Some(note.clone());
                    self.tasks.push(TaskP {
                        step,
                        index: next,
                        status: "retrying",
                        detail: note,
                        at: self.t,
                    });
                }
            }
            Halt::Fail { .. } => {
                if step == Step::Allocate && next == 1 {
                    self.intent_resource();
                }
                let task = step.tasks()[next];
                let mut last = String::new();
                for retry in 1..=self.w.max_retries {
                    self.gap(100, 2_000);
                    last = self.retry_note(task, retry);
                    let i = (retry as usize - 1).min(self.w.backoff_ms.len() - 1);
                    self.t += self.w.backoff_ms[i];
                }
                self.gap(100, 2_000);
                let why = self.failure(task);
                let msg = format!("{task}: sim: {}: {why}", call_of(task));
                self.steps[si].attempts += i64::from(self.w.max_retries);
                if !last.is_empty() {
                    self.tasks.push(TaskP {
                        step,
                        index: next,
                        status: "retrying",
                        detail: last.clone(),
                        at: self.t,
                    });
                    self.steps[si].error = Some(last);
                }
                self.fail(step, msg);
            }
            Halt::Stuck => {
                // The mail stack never reported back.
                self.t += 30 * MIN + between(&mut self.rng, 0, 40 * SEC);
                let msg = format!("stuck: no progress for 30m in step {}", step.as_str());
                self.fence += 1;
                self.fail(step, msg);
            }
            Halt::Cancel { .. } => {
                self.gap(200, 5_000);
                let who = pick(&mut self.rng, &[ALICE, BOB, OPS_LEAD, SRE]);
                let why = pick(&mut self.rng, &ROLLBACK_REASONS);
                self.extra_audit(
                    self.t,
                    who,
                    "request.rollback",
                    Some(self.id.clone()),
                    Some(why.to_string()),
                );
                self.gap(300, 8 * SEC);
                let reason = format!("rollback requested by an operator during {}", step.as_str());
                self.tr(
                    RequestState::RollingBack,
                    ENGINE,
                    Some(Cow::Owned(reason)),
                    None,
                );
                self.teardown = Some("rollback");
                let t = self.t;
                for s in self.steps.iter_mut().filter(|s| s.status == "running") {
                    s.status = "failed";
                    s.finished = Some(t);
                }
            }
            Halt::Input => {
                self.gap(300, 2 * SEC);
                self.tr(
                    RequestState::AwaitingInput,
                    ENGINE,
                    Some(Cow::Borrowed(AWAIT_REASON)),
                    None,
                );
            }
        }
    }

    /// The instance's intent, recorded before the create call.
    fn intent_resource(&mut self) -> String {
        let detail = format!(
            "creating {} ({}) in {}",
            self.s.label,
            self.plan().name,
            self.cluster()
        );
        let t = self.t;
        self.add_res(ResourceKind::Instance, None, detail.clone(), t);
        detail
    }

    /// The create call is under way: its intent is on record, the instance not yet.
    fn intent(&mut self) {
        let detail = self.intent_resource();
        let t = self.t;
        self.tasks.push(TaskP {
            step: Step::Allocate,
            index: 1,
            status: "running",
            detail,
            at: t,
        });
    }

    fn fail(&mut self, step: Step, msg: String) {
        let si = step_index(step);
        self.steps[si].status = "failed";
        self.steps[si].finished = Some(self.t);
        self.steps[si].error = Some(msg.clone());
        self.error = Some(msg.clone());
        self.tr(RequestState::Failed, ENGINE, Some(Cow::Owned(msg)), None);
        self.next_run_at = self.t;
    }

    fn full_pipeline(&mut self) {
        self.admit();
        for step in STEPS {
            self.run_step(step, Halt::Complete);
        }
    }

    /// Runs the steps before `step`, then `step` up to `halt`.
    fn pipeline_until(&mut self, step: Step, halt: Halt) {
        self.admit();
        for s in STEPS {
            if s == step {
                self.run_step(s, halt);
                return;
            }
            self.run_step(s, Halt::Complete);
        }
    }

    fn random_failure(&mut self, steps: &[Step]) -> (Step, usize) {
        let weights: Vec<f64> = steps
            .iter()
            .map(|s| match s {
                Step::Allocate | Step::Configure | Step::Resize => 3.0,
                Step::Activate | Step::Verify | Step::Confirm => 2.0,
            })
            .collect();
        let step = steps[weighted(&mut self.rng, &weights)];
        let max = if step == Step::Allocate { 1 } else { 2 };
        (step, self.rng.gen_range(0..=max))
    }

    // --- teardown ----------------------------------------------------------------------

    fn auto_rollback(&mut self) {
        self.gap(20, 600);
        self.tr(
            RequestState::RollingBack,
            ENGINE,
            Some(Cow::Borrowed("automatic rollback after a failed step")),
            None,
        );
        self.teardown = Some("rollback");
        self.next_run_at = self.t;
    }

    fn deprovision(&mut self, when: i64) {
        self.t = when;
        let who = pick(&mut self.rng, &[ALICE, BOB, OPS_LEAD]);
        let why = pick(&mut self.rng, &DEPROVISION_REASONS);
        self.tr(
            RequestState::RollingBack,
            who,
            Some(Cow::Borrowed(why)),
            Some(AuditKind::Deprovision),
        );
        self.teardown = Some("deprovision");
        self.fence += 1;
        self.next_run_at = self.t;
        self.gap(100, 900);
        self.fence += 1;
    }

    fn release(&mut self, i: usize) {
        let t = self.t;
        let kind = self.res[i].kind;
        let ip = self.ip();
        let detail = match kind {
            ResourceKind::Node => {
                if let Some(node) = self.node.as_mut() {
                    node.status = "decommissioned";
                    node.reason = Some("decommissioned by teardown".into());
                    node.resume = None;
                    node.load = 0;
                    node.updated = t;
                }
                "node decommissioned".to_string()
            }
            ResourceKind::Rdns => {
                if let Some(sim) = self.sim.as_mut() {
                    sim.rdns = false;
                    sim.updated = t;
                }
                format!("PTR of {ip} reset")
            }
            // The demo's history has no resizes.
            ResourceKind::Upgrade | ResourceKind::ResizeHold => String::new(),
            ResourceKind::Instance => match self.res[i].provider_ref.clone() {
                Some(id) => {
                    if let Some(sim) = self.sim.as_mut() {
                        sim.deleted = Some(t);
                        sim.power = "stopped";
                        sim.updated = t;
                    }
                    format!("instance {id} deleted")
                }
                None => "the create call never made an instance".to_string(),
            },
            ResourceKind::Dns => format!("records of {} removed from the zone", self.host()),
            ResourceKind::Certificate => "1 certificate(s) retired".to_string(),
            ResourceKind::Firewall => "detached with the instance".to_string(),
            ResourceKind::Ip => format!("{ip} returned with the instance"),
            ResourceKind::Capacity => format!("capacity returned to {}", self.cluster()),
            ResourceKind::Quota => format!("quota returned to {}", self.tenant()),
        };
        self.res[i].released = Some(t);
        self.res[i].detail = detail;
    }

    fn tear_down(&mut self, end: TearEnd) {
        let mut held: Vec<usize> = (0..self.res.len())
            .filter(|i| self.res[*i].released.is_none())
            .collect();
        held.sort_by_key(|i| (release_rank(self.res[*i].kind), -self.res[*i].seq));
        let stall_at = held
            .iter()
            .position(|i| self.res[*i].kind == ResourceKind::Instance);
        let upto = match end {
            TearEnd::Finish => held.len(),
            TearEnd::Partial => self.rng.gen_range(0..held.len().max(1)),
            TearEnd::Stall => stall_at.unwrap_or(0),
        };
        for i in held.iter().take(upto) {
            self.gap(150, 2_500);
            self.release(*i);
        }
        match end {
            TearEnd::Finish => {
                self.gap(50, 400);
                let deprovision = self.teardown == Some("deprovision");
                let to = if deprovision {
                    RequestState::Deprovisioned
                } else {
                    RequestState::RolledBack
                };
                self.tr(to, ENGINE, None, None);
                if deprovision {
                    self.error = None;
                }
            }
            TearEnd::Partial => {}
            TearEnd::Stall => {
                // Delete was refused on every retry.
                for i in 0..self.w.max_retries as usize {
                    self.gap(100, 2_000);
                    self.t += self.w.backoff_ms[i.min(self.w.backoff_ms.len() - 1)];
                }
                self.gap(100, 2_000);
                let error = format!(
                    "rollback stalled releasing instance: delete_instance: sim: delete: {}",
                    TRANSIENT[4]
                );
                // The stall is the request's note; its error still says why it failed.
                self.wait_reason = Some(error.clone());
                self.needs_attention = true;
                self.next_run_at = self.t + 5 * MIN;
                self.extra_audit(
                    self.t,
                    ENGINE,
                    "request.teardown-stalled",
                    Some(self.id.clone()),
                    Some(error),
                );
            }
        }
    }

    // --- a node's life in the fleet --------------------------------------------------

    fn node_id(&self) -> String {
        self.node.as_ref().map(|n| n.id.clone()).unwrap_or_default()
    }

    fn node_status(&self) -> &'static str {
        self.node.as_ref().map(|n| n.status).unwrap_or("warming")
    }

    fn set_node(&mut self, status: &'static str, reason: Option<String>, when: i64) {
        if let Some(node) = self.node.as_mut() {
            node.status = status;
            node.reason = reason;
            node.updated = when;
        }
    }

    // --- warm-up ---------------------------------------------------------------------

    /// The generator of this node's warm-up (its plan first), apart from the rest of its
    /// life.
    fn warm_rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.s.seed ^ WARMUP_SALT)
    }

    /// For a node past warm-up: its plan and when it completed (its 16th day boundary).
    fn settled_at(&self, registered: i64) -> (StdRng, usize, i64) {
        let mut rng = self.warm_rng();
        let plan = weighted(&mut rng, &self.w.warm_weights);
        let first = (registered.div_euclid(DAY) + 1) * DAY;
        let when = first + (SETTLED_DAYS - 1) * DAY + between(&mut rng, SEC, BOUNDARY_LAG);
        (rng, plan, when)
    }

    /// When this node would finish warm-up if it is past it (see `settle_warmup`).
    fn settles_at(&self) -> i64 {
        let registered = self.node.as_ref().map_or(self.t, |n| n.created);
        self.settled_at(registered).2
    }

    /// A node registered long enough ago to be past warm-up: its plan completed, with one
    /// `warmup.completed` event and no day-by-day log. Returns when it completed.
    fn settle_warmup(&mut self) -> i64 {
        let Some(registered) = self.node.as_ref().map(|n| n.created) else {
            return self.t;
        };
        let (_, plan_index, when) = self.settled_at(registered);
        let plan = &self.w.warm_plans[plan_index];
        let (days, cap) = (plan.days(), plan.cap(plan.days()));
        self.warm = Some(WarmP {
            plan: plan_index,
            day: days,
            cap,
            status: "completed",
            reason: None,
            started: registered,
            day_started: when,
            updated: when,
            days: Vec::new(),
        });
        let node_id = self.node_id();
        let label = self.s.label.clone();
        self.extra_event(
            when,
            ENGINE,
            "warmup.completed",
            json!({"node_id": node_id, "label": label, "days": days, "daily_cap": cap}),
        );
        self.set_node("active", Some("warm-up finished".into()), when);
        when
    }

    /// Walks a warming node's days from its registration to `stop` (at most `now`), as
    /// the engine's day boundaries would have: each closed day's counts go through
    /// `decide`, whose decision advances, holds, pauses or completes the node, with the
    /// events the engine writes.
    fn walk_warmup(&mut self, stop: i64, end: WalkEnd, mood: Mood) {
        let Some(registered) = self.node.as_ref().map(|n| n.created) else {
            return;
        };
        let w = self.w;
        let now = w.now;
        let stop = stop.min(now);
        let (mut rng, plan_index, _) = self.settled_at(registered);
        let plan = &w.warm_plans[plan_index];
        let health = match mood {
            Mood::PauseOnce => Health::Risky,
            Mood::Any | Mood::Calm => {
                let weights = [0.70, 0.13, 0.11, if mood == Mood::Any { 0.06 } else { 0.0 }];
                [
                    Health::Clean,
                    Health::Bouncy,
                    Health::Deferrals,
                    Health::Risky,
                ][weighted(&mut rng, &weights)]
            }
        };
        // Boundaries close while the engine runs them: up to `now`, or the stop for a
        // node taken out of service.
        let limit = if end == WalkEnd::Stopped { stop } else { now };
        let first = (registered.div_euclid(DAY) + 1) * DAY;
        let closing = if first + BOUNDARY_LAG <= limit {
            usize::try_from((limit - BOUNDARY_LAG - first) / DAY + 1).unwrap_or(0)
        } else {
            0
        };
        let closing = closing.min(WALK_MAX_DAYS);
        // A node meant to pause does so on a full day, after one held day.
        let (forced_hold, forced_pause) = if mood == Mood::PauseOnce && closing > 0 {
            let pause = if closing >= 2 {
                rng.gen_range(1..closing)
            } else {
                0
            };
            let hold = (pause > 0).then(|| rng.gen_range(0..pause));
            (hold, Some(pause))
        } else {
            (None, None)
        };
        let node_id = self.node_id();
        let label = self.s.label.clone();
        let mut warm = WarmP {
            plan: plan_index,
            day: 1,
            cap: plan.cap(1),
            status: "warming",
            reason: None,
            started: registered,
            day_started: registered,
            updated: registered,
            days: Vec::new(),
        };
        let mut wave = 0u32;
        let mut date = registered.div_euclid(DAY) * DAY;
        loop {
            let index = warm.days.len();
            let boundary = date + DAY;
            let closes = index < closing;
            if !closes && (index >= WALK_MAX_DAYS || end == WalkEnd::Stopped) {
                break;
            }
            let kind = if forced_pause == Some(index) {
                DayKind::Pause
            } else if forced_hold == Some(index) {
                DayKind::Deferrals
            } else {
                match health {
                    Health::Clean => DayKind::Clean,
                    Health::Bouncy if rng.gen_bool(0.3) => DayKind::BounceSpike,
                    Health::Bouncy => DayKind::Clean,
                    Health::Deferrals => {
                        if wave == 0 && rng.gen_bool(0.22) {
                            wave = rng.gen_range(1..=3);
                        }
                        if wave > 0 {
                            wave -= 1;
                            DayKind::Deferrals
                        } else {
                            DayKind::Clean
                        }
                    }
                    Health::Risky if mood == Mood::PauseOnce => DayKind::Clean,
                    Health::Risky if index >= 1 && rng.gen_bool(0.12) => DayKind::Pause,
                    Health::Risky if rng.gen_bool(0.15) => DayKind::BounceSpike,
                    Health::Risky => DayKind::Clean,
                }
            };
            let sending = boundary.min(stop) - registered.max(date);
            let share = sending.max(0) as f64 / DAY as f64;
            let (scheduled, counts) = day_counts(&mut rng, warm.cap, share, kind);
            let mut row = WarmDayP {
                date,
                day: warm.day,
                cap: warm.cap,
                scheduled,
                counts,
                decision: None,
                reason: None,
            };
            if !closes {
                // Today, still open: what the node sent so far.
                warm.days.push(row);
                break;
            }
            let decided = boundary + between(&mut rng, SEC, BOUNDARY_LAG);
            let listed_on = match end {
                WalkEnd::Listed(zone) if decided > stop => Some(ZONES[zone].zone),
                _ => None,
            };
            let decision = decide(plan, warm.day, &counts, listed_on, &w.thresholds);
            warm.updated = decided;
            let mut done = false;
            match decision {
                Decision::Advance { day, cap } => {
                    row.decision = Some("advanced");
                    warm.day = day;
                    warm.cap = cap;
                    warm.status = "warming";
                    warm.reason = None;
                    warm.day_started = decided;
                    self.extra_event(
                        decided,
                        ENGINE,
                        "warmup.advanced",
                        json!({"node_id": node_id, "label": label, "day": day, "daily_cap": cap}),
                    );
                }
                Decision::Hold { reason } => {
                    row.decision = Some("held");
                    row.reason = Some(reason.clone());
                    warm.status = "held";
                    warm.day_started = decided;
                    self.extra_event(
                        decided,
                        ENGINE,
                        "warmup.held",
                        json!({"node_id": node_id, "label": label, "day": warm.day,
                               "daily_cap": warm.cap, "reason": reason}),
                    );
                    warm.reason = Some(reason);
                }
                Decision::Pause { reason } => {
                    row.decision = Some("paused");
                    row.reason = Some(reason.clone());
                    warm.status = "paused";
                    // A listing paused the node when it came; the boundary only stops
                    // its warm-up.
                    if listed_on.is_none() {
                        self.pause(decided, ENGINE, reason.clone());
                    }
                    warm.reason = Some(reason);
                    done = true;
                }
                Decision::Complete => {
                    row.decision = Some("completed");
                    warm.status = "completed";
                    warm.reason = None;
                    warm.day_started = decided;
                    self.extra_event(
                        decided,
                        ENGINE,
                        "warmup.completed",
                        json!({"node_id": node_id, "label": label, "days": plan.days(),
                               "daily_cap": warm.cap}),
                    );
                    self.set_node("active", Some("warm-up finished".into()), decided);
                    done = true;
                }
            }
            warm.days.push(row);
            if done || listed_on.is_some() {
                break;
            }
            date = boundary;
        }
        self.warm = Some(warm);
    }

    /// Any node without a warm-up yet (one registered by a request still in the pipeline
    /// or rolled back): its days from registration until it was torn down, or until now.
    fn finish_warmup(&mut self) {
        if self.warm.is_some() {
            return;
        }
        let Some(node) = self.node.as_ref() else {
            return;
        };
        if node.status == "decommissioned" {
            let stop = node.updated;
            self.walk_warmup(stop, WalkEnd::Stopped, Mood::Calm);
        } else {
            self.walk_warmup(self.w.now, WalkEnd::Now, Mood::Calm);
        }
    }

    fn pause(&mut self, when: i64, actor: u8, reason: String) {
        let from = self.node_status();
        let node_id = self.node_id();
        self.extra_event(
            when,
            actor,
            "node.paused",
            json!({"node_id": node_id, "from": from, "to": "paused", "reason": reason}),
        );
        self.set_node("paused", Some(reason), when);
        if let Some(node) = self.node.as_mut() {
            node.resume = Some(from);
        }
    }

    fn resume(&mut self, when: i64, actor: u8, reason: String) {
        let to = self
            .node
            .as_ref()
            .and_then(|n| n.resume)
            .unwrap_or("active");
        let node_id = self.node_id();
        self.extra_event(
            when,
            actor,
            "node.resumed",
            json!({"node_id": node_id, "from": "paused", "to": to, "reason": reason}),
        );
        self.set_node(to, Some(reason), when);
        if let Some(node) = self.node.as_mut() {
            node.resume = None;
        }
    }

    /// A blocklist zone and one of its codes.
    fn pick_zone(&mut self) -> (usize, usize) {
        let weights: Vec<f64> = ZONES.iter().map(|z| z.weight).collect();
        let zone = weighted(&mut self.rng, &weights);
        let code = self.rng.gen_range(0..ZONES[zone].codes.len());
        (zone, code)
    }

    /// A blocklist listing from `listed`, lifted at `delisted` if given.
    fn listing(&mut self, listed: i64, delisted: Option<i64>) {
        let (zone, code) = self.pick_zone();
        self.listing_on(zone, code, listed, delisted);
    }

    /// A listing on `ZONES[zone]` with its `code`.
    fn listing_on(&mut self, zone: usize, code: usize, listed: i64, delisted: Option<i64>) {
        let (code_text, tag, meaning) = ZONES[zone].codes[code];
        let ip = self.ip();
        let details = self.rng.gen_bool(0.6).then(|| zone_details(zone, &ip));
        let id = uuid7(&mut self.rng, listed);
        self.listings.push(ListP {
            id,
            zone,
            code,
            listed,
            delisted,
            details: details.clone(),
        });
        let node_id = self.node_id();
        let z = ZONES[zone].zone;
        self.extra_event(
            listed,
            ENGINE,
            "node.blacklisted",
            json!({"node_id": node_id, "ip": ip, "label": self.s.label, "provider": z,
                   "code": code_text, "meaning": meaning, "details": details}),
        );
        self.pause(listed, ENGINE, format!("listed on {z} ({tag})"));
        if let Some(d) = delisted {
            self.extra_event(
                d,
                ENGINE,
                "node.delisted",
                json!({"node_id": node_id, "ip": ip, "provider": z, "code": code_text,
                       "listed_hours": (d - listed) / HOUR}),
            );
            self.resume(d, ENGINE, format!("delisted from {z}"));
        }
    }

    fn suspend(&mut self, when: i64) {
        self.t = when;
        let who = pick(&mut self.rng, &[ALICE, BOB, OPS_LEAD, SRE]);
        let why = pick(&mut self.rng, &SUSPEND_REASONS);
        self.fence += 1;
        self.tr(
            RequestState::Suspended,
            who,
            Some(Cow::Borrowed(why)),
            Some(AuditKind::Suspend),
        );
        let actor = ACTORS[who as usize];
        self.pause(when, who, format!("service suspended by {actor}: {why}"));
        if let Some(sim) = self.sim.as_mut() {
            sim.power = "stopped";
            sim.updated = when;
        }
        if let Some(node) = self.node.as_mut() {
            node.heartbeat = when;
        }
    }

    fn reactivate(&mut self, when: i64) {
        self.t = when;
        let who = pick(&mut self.rng, &[ALICE, BOB, OPS_LEAD]);
        let why = pick(&mut self.rng, &REACTIVATE_REASONS);
        self.fence += 1;
        self.tr(
            RequestState::Completed,
            who,
            Some(Cow::Borrowed(why)),
            Some(AuditKind::Reactivate),
        );
        let actor = ACTORS[who as usize];
        self.resume(when, who, format!("service reactivated by {actor}"));
        if let Some(sim) = self.sim.as_mut() {
            sim.power = "running";
            sim.updated = when;
        }
    }

    fn heartbeat_recent(&mut self) -> i64 {
        self.w.now - between(&mut self.rng, 0, 29 * SEC)
    }

    fn finish_node(&mut self, reputation: (i64, i64), load: (i64, i64), heartbeat: i64) {
        let rep = between(&mut self.rng, reputation.0, reputation.1);
        let ld = between(&mut self.rng, load.0, load.1);
        if let Some(node) = self.node.as_mut() {
            node.reputation = rep;
            node.load = ld;
            node.heartbeat = heartbeat;
        }
    }

    fn node_life(&mut self, fate: NodeFate) {
        let now = self.w.now;
        let Some(registered) = self.node.as_ref().map(|n| n.created) else {
            return;
        };
        match fate {
            NodeFate::Active => {
                let warmed = self.settle_warmup() + 10 * MIN;
                let mid = (warmed + now) / 2;
                if self.rng.gen_bool(0.08) && mid - warmed > 2 * DAY {
                    let listed = between(&mut self.rng, warmed + HOUR, mid - DAY);
                    let delisted = (listed + between(&mut self.rng, 3 * HOUR, 4 * DAY)).min(mid);
                    self.listing(listed, Some(delisted));
                }
                if self.rng.gen_bool(0.03) && now - DAY - mid > 6 * HOUR {
                    let s = between(&mut self.rng, mid, now - DAY - 6 * HOUR);
                    self.suspend(s);
                    let r = s + between(&mut self.rng, 2 * HOUR, 20 * HOUR);
                    self.reactivate(r);
                }
                let hb = self.heartbeat_recent();
                self.finish_node((80, 100), (20, 95), hb);
            }
            NodeFate::Warming | NodeFate::WarmupPaused => {
                let mood = if fate == NodeFate::Warming {
                    Mood::Any
                } else {
                    Mood::PauseOnce
                };
                self.walk_warmup(now, WalkEnd::Now, mood);
                let hb = self.heartbeat_recent();
                if self.node_status() == "paused" {
                    self.finish_node((45, 75), (0, 0), hb);
                } else {
                    self.finish_node((70, 95), (5, 40), hb);
                }
            }
            NodeFate::Listed => {
                let listed = between(
                    &mut self.rng,
                    (registered + 2 * HOUR).max(now - 10 * DAY),
                    now - 10 * MIN,
                );
                // Listed while still warming: the warm-up pauses at the next boundary.
                let (zone, code) = self.pick_zone();
                if listed > self.settles_at() {
                    self.settle_warmup();
                } else {
                    self.walk_warmup(listed, WalkEnd::Listed(zone), Mood::Calm);
                }
                self.listing_on(zone, code, listed, None);
                let hb = self.heartbeat_recent();
                self.finish_node((40, 65), (0, 0), hb);
            }
            NodeFate::Bounce => {
                let warmed = self.settle_warmup() + HOUR;
                let when = between(
                    &mut self.rng,
                    (registered + 2 * HOUR).max(now - 3 * DAY).max(warmed),
                    now - 10 * MIN,
                );
                let reason = if self.rng.gen_bool(0.7) {
                    format!("bounce rate {:.1}% > 5%", self.rng.gen_range(5.2..9.8))
                } else {
                    format!(
                        "complaint rate {:.2}% > 0.3%",
                        self.rng.gen_range(0.31..0.6)
                    )
                };
                self.pause(when, ENGINE, reason);
                let hb = self.heartbeat_recent();
                self.finish_node((45, 70), (0, 0), hb);
            }
            NodeFate::Maintenance => {
                self.settle_warmup();
                let when = now - between(&mut self.rng, 5 * MIN, 6 * HOUR);
                let who = pick(&mut self.rng, &[SRE, OPS_LEAD]);
                let why = pick(&mut self.rng, &MAINTENANCE_REASONS);
                let reason = format!("{why} ({})", ACTORS[who as usize]);
                let from = self.node_status();
                self.set_node("maintenance", Some(reason.clone()), when);
                if let Some(node) = self.node.as_mut() {
                    node.resume = Some(from);
                }
                let node_id = self.node_id();
                self.extra_audit(when, who, "node.maintenance", Some(node_id), Some(reason));
                let hb = self.heartbeat_recent();
                self.finish_node((75, 100), (0, 10), hb);
            }
            NodeFate::Unhealthy => {
                let hb = now - between(&mut self.rng, 95 * SEC, 20 * MIN);
                let when = hb + 90 * SEC;
                self.settle_warmup();
                let node_id = self.node_id();
                let from = self.node_status();
                self.extra_event(
                    when,
                    ENGINE,
                    "node.unhealthy",
                    json!({"node_id": node_id, "from": from, "missed_heartbeats": 3,
                           "last_heartbeat": at(hb)}),
                );
                self.set_node("unhealthy", Some("missed 3 heartbeats (90 s)".into()), when);
                if let Some(node) = self.node.as_mut() {
                    node.resume = Some(from);
                }
                self.finish_node((60, 90), (0, 0), hb);
            }
        }
    }

    // --- the whole life, by fate -----------------------------------------------------

    fn live(mut self) -> Flow<'a> {
        let now = self.w.now;
        self.create();
        match self.s.fate {
            Fate::Node(fate) => {
                self.full_pipeline();
                self.node_life(fate);
            }
            Fate::Suspended => {
                self.full_pipeline();
                let done = self.t;
                let warmed = self.settle_warmup();
                let when = between(&mut self.rng, done.max(warmed) + HOUR, now - 30 * MIN);
                self.suspend(when);
                let rep = between(&mut self.rng, 50, 90);
                if let Some(node) = self.node.as_mut() {
                    node.reputation = rep;
                }
            }
            Fate::Deprovisioned | Fate::RollingBack(Unwind::Deprovision) => {
                self.full_pipeline();
                let done = self.t;
                let when = if self.s.fate == Fate::Deprovisioned {
                    between(&mut self.rng, done + 6 * HOUR, now - HOUR)
                } else {
                    now - between(&mut self.rng, 25 * SEC, 60 * SEC)
                };
                // Taken down while still warming: its days until then.
                if when > self.settles_at() {
                    self.settle_warmup();
                } else {
                    self.walk_warmup(when, WalkEnd::Stopped, Mood::Calm);
                }
                let hb = when - between(&mut self.rng, 0, 29 * SEC);
                self.finish_node((70, 100), (0, 0), hb);
                self.deprovision(when);
                let end = if self.s.fate == Fate::Deprovisioned {
                    TearEnd::Finish
                } else {
                    TearEnd::Partial
                };
                self.tear_down(end);
            }
            Fate::RolledBack { operator } => {
                if operator {
                    let (step, done) = self.random_failure(&STEPS);
                    self.pipeline_until(step, Halt::Cancel { done });
                } else if self.rng.gen_bool(0.1) {
                    self.pipeline_until(Step::Configure, Halt::Stuck);
                    self.gap(100, 3 * SEC);
                    self.fence += 1;
                    self.auto_rollback();
                } else {
                    let (step, done) = self.random_failure(&STEPS);
                    self.pipeline_until(step, Halt::Fail { done });
                    self.auto_rollback();
                }
                self.tear_down(TearEnd::Finish);
            }
            Fate::RejectedByApprover => {
                self.gap(10 * MIN, 3 * HOUR);
                let who = self.approver();
                let why = pick(&mut self.rng, &REJECT_REASONS);
                self.tr(
                    RequestState::Rejected,
                    who,
                    Some(Cow::Borrowed(why)),
                    Some(AuditKind::Reject),
                );
                self.error = Some(why.to_string());
                self.next_run_at = self.t;
            }
            Fate::RejectedPrereq => {
                let (dep_short, dep_end) = self
                    .dep
                    .as_ref()
                    .map(|d| (short(&d.id).to_string(), d.end))
                    .unwrap_or_default();
                self.t = self.t.max(dep_end) + between(&mut self.rng, 200, 3 * SEC);
                let why = format!("prerequisite {dep_short} ended rolled_back");
                self.tr(
                    RequestState::Rejected,
                    ENGINE,
                    Some(Cow::Owned(why.clone())),
                    None,
                );
                self.error = Some(why);
                self.next_run_at = self.t;
            }
            Fate::Queued { tenant_limit } => {
                let checked = now - between(&mut self.rng, 0, 4_500);
                self.next_run_at = checked.max(self.created) + 5 * SEC;
                self.wait_reason = if tenant_limit {
                    Some(format!(
                        "tenant limit: {} has {}/{} in flight",
                        self.tenant(),
                        self.w.limit,
                        self.w.limit
                    ))
                } else {
                    self.dep
                        .as_ref()
                        .map(|d| format!("waiting for prerequisite {} ({})", short(&d.id), d.state))
                };
            }
            Fate::PendingApproval => {}
            Fate::InFlight(step) => {
                let halt = if step == Step::Allocate {
                    Halt::Partial {
                        done: self.rng.gen_range(0..=1),
                        retrying: false,
                    }
                } else {
                    Halt::Partial {
                        done: self.rng.gen_range(0..=2),
                        retrying: self.rng.gen_bool(0.3),
                    }
                };
                self.pipeline_until(step, halt);
            }
            Fate::AwaitingInput => self.pipeline_until(Step::Allocate, Halt::Input),
            Fate::Failed => {
                let (step, done) = self.random_failure(&STEPS);
                self.pipeline_until(step, Halt::Fail { done });
            }
            Fate::RollingBack(Unwind::AfterFailure) => {
                let (step, done) = self.random_failure(&STEPS);
                self.pipeline_until(step, Halt::Fail { done });
                self.auto_rollback();
                self.tear_down(TearEnd::Partial);
            }
            Fate::RollingBack(Unwind::Stalled) => {
                let (step, done) =
                    self.random_failure(&[Step::Configure, Step::Activate, Step::Verify]);
                self.pipeline_until(step, Halt::Fail { done });
                self.auto_rollback();
                self.tear_down(TearEnd::Stall);
            }
        }
        self
    }
}

/// Builds a request's life. Anchored fates are built twice: once to learn how long their
/// history is, then for real so that it ends just before `now`.
fn build<'a>(w: &'a World, s: &'a Slot, dep: Option<DepInfo>) -> Flow<'a> {
    let base = match (&s.fate, &dep) {
        (Fate::RejectedPrereq, Some(d)) => {
            let mut rng = StdRng::seed_from_u64(s.seed ^ 0x0dd5_eed5);
            let room = ((d.end - d.created) / 2).max(1);
            d.created + between(&mut rng, room.min(5 * SEC), room.min(30 * SEC))
        }
        (Fate::Queued { .. }, Some(d)) => {
            let mut rng = StdRng::seed_from_u64(s.seed ^ 0x0dd5_eed5);
            let earliest = d.created + 5 * SEC;
            (w.now - between(&mut rng, 20 * SEC, 10 * MIN)).max(earliest.min(w.now - SEC))
        }
        _ if s.fate.anchored() => {
            let probe = Flow::new(w, s, 0, dep.clone()).live();
            let length = probe.t;
            let mut rng = StdRng::seed_from_u64(s.seed ^ 0x00a1_1c40);
            let gap = match s.fate {
                Fate::RollingBack(Unwind::Stalled) => between(&mut rng, 30 * SEC, 4 * MIN),
                Fate::Failed => between(&mut rng, 2 * SEC, 30 * SEC),
                _ => between(&mut rng, SEC, 15 * SEC),
            };
            w.now - gap - length
        }
        _ => s.approx,
    };
    let mut flow = Flow::new(w, s, base, dep).live();
    flow.finish_warmup();
    flow
}

// ---------------------------------------------------------------------------
// Turning a life into rows
// ---------------------------------------------------------------------------

/// What the second phase needs of a request: its identity and its history.
struct Summary {
    id: String,
    tenant: usize,
    region: usize,
    plan: usize,
    cluster: usize,
    label: String,
    node_id: Option<String>,
    dep: Option<String>,
    state: RequestState,
    created: i64,
    trs: Vec<Tr>,
    extras: Vec<Extra>,
}

fn render(f: Flow<'_>, b: &mut DemoBatch) -> Summary {
    let w = f.w;
    let s = f.s;
    let tenant = &w.tenants[s.tenant];
    let region = &w.regions[s.region];
    let plan = &w.plans[s.plan];
    let cluster = &w.clusters[s.cluster];
    let admitted = !f.res.is_empty();
    let host = format!("{}.{}", s.label, tenant.domain);
    let ip =
        s.ip.map(|ip| ip.to_string())
            .unwrap_or_else(|| "192.0.2.254".into());
    let last = f.trs.last().map(|t| t.at).unwrap_or(f.created);
    b.requests.push(RequestIns {
        id: f.id.clone(),
        tenant: tenant.name.clone(),
        region: region.name.clone(),
        plan: plan.name.clone(),
        kind: plan.kind.clone(),
        cpu: plan.cpu,
        memory_gb: plan.memory_gb,
        storage_gb: plan.storage_gb,
        label: s.label.clone(),
        domain: tenant.domain.clone(),
        state: f.state.as_str(),
        requested_by: ACTORS[f.requested_by as usize],
        cluster: admitted.then(|| cluster.name.clone()),
        approval_rule: f.approval.as_ref().map(|m| m.rule.clone()),
        approval_reason: f.approval.as_ref().map(|m| m.reason.clone()),
        wait_reason: f.wait_reason.clone(),
        teardown: f.teardown,
        error: f.error.clone(),
        needs_attention: f.needs_attention,
        fence: f.fence,
        next_run_at: at(f.next_run_at),
        progress_at: at(last),
        created_at: at(f.created),
        updated_at: at(f.updated.max(last)),
    });
    if let Some(d) = &f.dep {
        b.deps.push((f.id.clone(), d.id.clone()));
    }
    for (i, step) in STEPS.iter().enumerate() {
        let p = &f.steps[i];
        b.steps.push(StepIns {
            request_id: f.id.clone(),
            step: step.as_str(),
            position: step.position(),
            status: p.status,
            attempts: p.attempts,
            started_at: p.started.map(at),
            finished_at: p.finished.map(at),
            error: p.error.clone(),
        });
    }
    for t in &f.tasks {
        b.tasks.push(TaskIns {
            request_id: f.id.clone(),
            step: t.step.as_str(),
            name: t.step.tasks()[t.index],
            position: t.index as i64 + 1,
            status: t.status,
            detail: Some(t.detail.clone()),
            updated_at: at(t.at),
        });
    }
    for r in &f.res {
        let carries = matches!(r.kind, ResourceKind::Quota | ResourceKind::Capacity);
        b.resources.push(ResourceIns {
            id: r.id.clone(),
            request_id: f.id.clone(),
            seq: r.seq,
            kind: r.kind.as_str(),
            status: match (r.released.is_some(), r.allocated) {
                (true, _) => "released",
                (false, true) => "allocated",
                (false, false) => "intent",
            },
            provider: (!carries).then_some("sim"),
            provider_ref: r.provider_ref.clone(),
            tenant: tenant.name.clone(),
            cluster: (r.kind != ResourceKind::Quota).then(|| cluster.name.clone()),
            cpu: if carries { plan.cpu } else { 0 },
            memory_gb: if carries { plan.memory_gb } else { 0 },
            storage_gb: if carries { plan.storage_gb } else { 0 },
            slots: u32::from(carries),
            detail: (!r.detail.is_empty()).then(|| r.detail.clone()),
            created_at: at(r.created),
            released_at: r.released.map(at),
        });
    }
    if let Some(sim) = &f.sim {
        b.sims.push(SimIns {
            id: sim.id.clone(),
            idempotency_key: f.id.clone(),
            cluster: cluster.name.clone(),
            region: region.name.clone(),
            label: s.label.clone(),
            plan: plan.name.clone(),
            cpu: plan.cpu,
            memory_gb: plan.memory_gb,
            storage_gb: plan.storage_gb,
            ip: ip.clone(),
            power: sim.power,
            firewall: sim.firewall.then_some("smtp"),
            rdns: sim.rdns.then(|| host.clone()),
            mail_stack: sim.mail_stack,
            ready_at: at(sim.ready),
            created_at: at(sim.created),
            updated_at: at(sim.updated),
            deleted_at: sim.deleted.map(at),
        });
    }
    if let Some(r) = f.res.iter().find(|r| r.kind == ResourceKind::Dns) {
        dns_rows(w, &f, r, &host, &ip, b);
    }
    let mut cert_not_after = None;
    if let (Some(r), Some((id, serial)), Some(certs)) = (
        f.res.iter().find(|r| r.kind == ResourceKind::Certificate),
        &f.cert,
        &w.certs,
    ) {
        if let Some(c) = cert_row(certs, &f.id, id, *serial, &host, r) {
            if r.released.is_none() {
                cert_not_after = Some(c.not_after.clone());
            }
            b.certs.push(c);
        }
    }
    if let Some(node) = &f.node {
        b.nodes.push(NodeIns {
            id: node.id.clone(),
            request_id: f.id.clone(),
            provider_id: f.sim.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
            tenant: tenant.name.clone(),
            label: s.label.clone(),
            hostname: host.clone(),
            ip_address: ip.clone(),
            region: region.name.clone(),
            cluster: Some(cluster.name.clone()),
            plan: plan.name.clone(),
            status: node.status,
            status_reason: node.reason.clone(),
            resume_status: node.resume,
            reputation_score: node.reputation,
            current_load: node.load,
            created_at: at(node.created),
            updated_at: at(node.updated),
            last_heartbeat: Some(at(node.heartbeat)),
            cert_not_after,
        });
        if let Some(warm) = &f.warm {
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            b.node_warmup.push(NodeWarmupIns {
                node_id: node.id.clone(),
                plan: w.warm_plans[warm.plan].name.clone(),
                day: i64::from(warm.day),
                days: i64::from(w.warm_plans[warm.plan].days()),
                cap: as_i64(warm.cap),
                status: warm.status,
                reason: warm.reason.clone(),
                started_at: at(warm.started),
                day_started_at: at(warm.day_started),
                updated_at: at(warm.updated),
            });
            for d in &warm.days {
                let c = &d.counts;
                b.warmup_days.push(WarmupDayIns {
                    node_id: node.id.clone(),
                    date: date_of(d.date),
                    day: i64::from(d.day),
                    cap: as_i64(d.cap),
                    scheduled: as_i64(d.scheduled),
                    sent: as_i64(c.sent),
                    delivered: as_i64(c.delivered),
                    deferred: as_i64(c.deferred),
                    bounced: as_i64(c.bounced),
                    complaints: as_i64(c.complaints),
                    decision: d.decision,
                    reason: d.reason.clone(),
                });
            }
        }
        for l in &f.listings {
            let (code, _, meaning) = ZONES[l.zone].codes[l.code];
            b.listings.push(ListingIns {
                id: l.id.clone(),
                node_id: node.id.clone(),
                ip_address: ip.clone(),
                provider: ZONES[l.zone].zone,
                code,
                meaning,
                listed_at: at(l.listed),
                delisted_at: l.delisted.map(at),
                details: l.details.clone(),
            });
        }
    }
    Summary {
        id: f.id,
        tenant: s.tenant,
        region: s.region,
        plan: s.plan,
        cluster: s.cluster,
        label: s.label.clone(),
        node_id: f.node.map(|n| n.id),
        dep: f.dep.map(|d| d.id),
        state: f.state,
        created: f.created,
        trs: f.trs,
        extras: f.extras,
    }
}

fn demo_certs(store: &Store, cfg: &Config) -> Result<DemoCerts, DemoError> {
    let bad = |e: String| DemoError::Config(format!("the demo's certificates: {e}"));
    let root = crate::engine::ca::make_root().map_err(|e| bad(e.to_string()))?;
    let leaf = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let der = zeroize::Zeroizing::new(leaf.serialize_der());
    let seal = crate::dkim::sealing_key(&cfg.dkim.key_env).map_err(|e| bad(e.to_string()))?;
    let file = match seal {
        Some(_) => None,
        None => {
            let dir = store.key_dir("tls");
            let kept = crate::dkim::keep(&cfg.dkim.key_env, &dir, "demo-certificates", &der, "")
                .map_err(|e| bad(e.to_string()))?;
            kept.file
                .map(|f| store.key_record(std::path::Path::new(&f)))
        }
    };
    Ok(DemoCerts {
        root,
        leaf,
        der,
        seal,
        file,
    })
}

/// The certificate the configure step obtained for a request: active, or retired once the
/// request was rolled back.
fn cert_row(
    c: &DemoCerts,
    request: &str,
    id: &str,
    serial: [u8; 16],
    host: &str,
    r: &ResP,
) -> Option<crate::store::NewCertIns> {
    let issued = chrono::DateTime::from_timestamp_millis(r.created)?;
    let chain = crate::engine::ca::sign_leaf(
        &c.root,
        &c.leaf,
        &[host.to_string()],
        issued - chrono::Duration::days(1),
        issued + chrono::Duration::days(90),
        serial,
    )
    .ok()?;
    let info = crate::tls::inspect(&chain).ok()?;
    let key_sealed = match &c.seal {
        Some(k) => Some(crate::dkim::seal(k, &c.der, format!("cert/{id}").as_bytes()).ok()?),
        None => None,
    };
    Some(crate::store::NewCertIns {
        id: id.to_string(),
        request_id: request.to_string(),
        hostname: host.to_string(),
        names: info.names,
        issuer: info.issuer,
        serial: info.serial,
        not_before: crate::clock::ts(info.not_before),
        not_after: crate::clock::ts(info.not_after),
        chain_pem: chain,
        key_sealed,
        key_file: c.file.clone(),
        status: if r.released.is_some() {
            "retired"
        } else {
            "active"
        },
        created_at: at(r.created),
    })
}

/// The records the configure step published for a request, as they stand: verified once the
/// verify step checked them, removed once rolled back. The domain's DKIM and DMARC records
/// were in the zone before any demo node (not the node's to remove).
fn dns_rows(w: &World, f: &Flow<'_>, r: &ResP, host: &str, ip: &str, b: &mut DemoBatch) {
    let domain = &w.tenants[f.s.tenant].domain;
    let input = crate::domain::records::RecordInput {
        domain: domain.clone(),
        hostname: host.to_string(),
        ip: ip.to_string(),
        selector: w
            .dkim
            .get(domain)
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| "mf1".into()),
        dkim_rsa: w.dkim.get(domain).map(|(_, p)| p.clone()),
        dkim_ed25519: None,
        dmarc: crate::domain::records::DmarcPolicy::None,
        dmarc_rua: None,
        spf_extra: Vec::new(),
        mta_sts_id: None,
        tls_rpt_rua: None,
        ttl: 300,
    };
    let Ok(records) = crate::domain::records::plan(&input) else {
        return;
    };
    let checked = f
        .tasks
        .iter()
        .find(|t| t.step == Step::Verify && t.index == 0 && t.status == "done")
        .map(|t| t.at);
    let status = match (r.released, checked) {
        (Some(_), _) => "removed",
        (None, Some(_)) => "verified",
        (None, None) => "published",
    };
    for (i, rec) in records.iter().enumerate() {
        let shared = matches!(rec.purpose, "dkim" | "dmarc");
        let content = rec.rdata();
        b.dns_records.push(DnsRecordIns {
            request_id: f.id.clone(),
            position: i as i64,
            zone: domain.clone(),
            purpose: rec.purpose,
            name: rec.name.clone(),
            rtype: rec.rtype,
            ttl: rec.ttl,
            content: content.clone(),
            want: rec.content.clone(),
            owned: !shared,
            status,
            seen: checked.map(|_| format!("sim: {content}")),
            published_at: at(r.created),
            verified_at: checked.map(at),
            removed_at: r.released.map(at),
        });
        if status != "removed" || shared {
            b.sim_dns.push(SimDnsIns {
                zone: format!("{domain}."),
                name: rec.name.clone(),
                rtype: rec.rtype,
                ttl: rec.ttl,
                content,
                created_at: at(r.created),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

struct Generator {
    w: World,
    spec: DemoSpec,
}

impl Generator {
    fn new(w: World, spec: DemoSpec) -> Self {
        Self { w, spec }
    }

    fn run(self, tx: &tokio::sync::mpsc::Sender<DemoBatch>) -> Result<DemoSummary, DemoError> {
        let w = &self.w;
        let mut rng = StdRng::seed_from_u64(self.spec.seed);
        let mut slots = plan_slots(w, &self.spec, &mut rng);

        // Pass B: labels in order of creation, addresses in order of allocation.
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by_key(|i| (slots[*i].approx, *i));
        let mut per_region = vec![0usize; w.regions.len()];
        let mut next_ip = 0u32;
        for i in &order {
            let s = &mut slots[*i];
            per_region[s.region] += 1;
            s.label = format!(
                "node-{}-{:04}",
                w.regions[s.region].code, per_region[s.region]
            );
            if s.fate.admitted() {
                s.ip = Some(demo_ip(next_ip));
                next_ip += 1;
            }
        }

        // Pass C: every request's life, in order of creation (ids are time-ordered, so
        // inserts append to the indexes), prerequisites before their dependents.
        let mut build_order: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| slots[*i].dep.is_none())
            .collect();
        build_order.extend(order.iter().copied().filter(|i| slots[*i].dep.is_some()));
        let mut summaries: Vec<Summary> = Vec::with_capacity(slots.len());
        let mut summary_of: Vec<Option<usize>> = vec![None; slots.len()];
        let mut batch = DemoBatch::default();
        let mut in_batch = 0;
        let mut listings = 0;
        for i in build_order {
            let s = &slots[i];
            let dep = s.dep.and_then(|d| summary_of[d]).map(|k| {
                let d = &summaries[k];
                DepInfo {
                    id: d.id.clone(),
                    state: d.state,
                    created: d.created,
                    end: d.trs.last().map(|t| t.at).unwrap_or(d.created),
                }
            });
            let flow = build(w, s, dep);
            listings += flow.listings.len();
            let summary = render(flow, &mut batch);
            summary_of[i] = Some(summaries.len());
            summaries.push(summary);
            in_batch += 1;
            if in_batch >= REQUESTS_PER_BATCH {
                send(tx, std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            send(tx, std::mem::take(&mut batch))?;
        }

        // Phase 2: the history, in time order.
        let mut timeline: Vec<(i64, u32, u16)> = Vec::new();
        for (r, s) in summaries.iter().enumerate() {
            let r = u32::try_from(r).unwrap_or(u32::MAX);
            for (k, t) in s.trs.iter().enumerate() {
                timeline.push((t.at, r, u16::try_from(k).unwrap_or(u16::MAX)));
            }
            for (k, e) in s.extras.iter().enumerate() {
                let k = s.trs.len() + k;
                timeline.push((e.at, r, u16::try_from(k).unwrap_or(u16::MAX)));
            }
        }
        timeline.sort_unstable();
        let mut id_rng = StdRng::seed_from_u64(self.spec.seed ^ 0xe7e7_e7e7);
        let mut events = 0usize;
        let mut batch = DemoBatch::default();
        for (n, (when, r, k)) in timeline.iter().enumerate() {
            let s = &summaries[*r as usize];
            let k = *k as usize;
            let stamp = at(*when);
            if let Some(t) = s.trs.get(k) {
                events += history_of_transition(w, s, t, &stamp, &mut id_rng, &mut batch);
            } else if let Some(e) = s.extras.get(k - s.trs.len()) {
                let actor = ACTORS[e.actor as usize];
                if let Some((name, payload)) = &e.event {
                    batch.events.push(EventIns {
                        id: uuid7(&mut id_rng, *when),
                        name,
                        request_id: Some(s.id.clone()),
                        node_id: s.node_id.clone(),
                        tenant: Some(w.tenants[s.tenant].name.clone()),
                        actor,
                        payload: payload.clone(),
                        at: stamp.clone(),
                    });
                    events += 1;
                }
                if let Some((action, target, detail)) = &e.audit {
                    batch.audit.push(AuditIns {
                        at: stamp,
                        actor,
                        action,
                        target: target.clone(),
                        detail: detail.clone(),
                    });
                }
            }
            if (n + 1) % TIMELINE_PER_BATCH == 0 {
                send(tx, std::mem::take(&mut batch))?;
            }
        }
        send(tx, batch)?;
        Ok(DemoSummary {
            nodes: self.spec.nodes,
            requests: summaries.len(),
            events,
            listings,
        })
    }
}

fn send(tx: &tokio::sync::mpsc::Sender<DemoBatch>, batch: DemoBatch) -> Result<(), DemoError> {
    tx.blocking_send(batch).map_err(|_| DemoError::Generator)
}

/// The rows one transition leaves: itself, its outbox events (with the payload the store
/// writes) and, for operators' actions, the audit entry. Returns the number of events.
fn history_of_transition(
    w: &World,
    s: &Summary,
    t: &Tr,
    stamp: &str,
    rng: &mut StdRng,
    b: &mut DemoBatch,
) -> usize {
    let tenant = &w.tenants[s.tenant];
    let actor = ACTORS[t.actor as usize];
    b.transitions.push(TransitionIns {
        request_id: s.id.clone(),
        from: t.from.map(RequestState::as_str),
        to: t.to.as_str(),
        actor,
        reason: t.reason.as_ref().map(|r| r.to_string()),
        at: stamp.to_string(),
    });
    let payload = match t.from {
        None => json!({
            "request_id": s.id, "tenant": tenant.name, "region": w.regions[s.region].name,
            "plan": w.plans[s.plan].name, "label": s.label, "domain": tenant.domain,
            "depends_on": s.dep.iter().collect::<Vec<_>>(),
        }),
        Some(from) => json!({
            "request_id": s.id, "tenant": tenant.name, "label": s.label,
            "region": w.regions[s.region].name, "from": from.as_str(), "to": t.to.as_str(),
            "step": from.step().map(|st| st.as_str()), "reason": t.reason.as_deref(),
        }),
    }
    .to_string();
    let names = event_names(t.from, t.to);
    for name in names {
        b.events.push(EventIns {
            id: uuid7(rng, t.at),
            name,
            request_id: Some(s.id.clone()),
            node_id: None,
            tenant: Some(tenant.name.clone()),
            actor,
            payload: payload.clone(),
            at: stamp.to_string(),
        });
    }
    if let Some(kind) = t.audit {
        let detail = match kind {
            AuditKind::Create => Some(format!(
                "{} {} {} {}",
                tenant.name, w.regions[s.region].name, w.plans[s.plan].name, s.label
            )),
            AuditKind::Admit => Some(w.clusters[s.cluster].name.clone()),
            _ => t.reason.as_ref().map(|r| r.to_string()),
        };
        b.audit.push(AuditIns {
            at: stamp.to_string(),
            actor,
            action: kind.action(),
            target: Some(s.id.clone()),
            detail,
        });
    }
    names.len()
}
