//! The background executor. It claims requests from the store (admitting queued ones),
//! runs their pipeline steps and teardowns on tokio tasks, detects stuck requests, executes
//! operators' commands, and shuts down gracefully. It is the only writer of request and
//! node state; every write goes through the store, fenced by the lease it holds.

mod acme_glue;
mod breakers;
pub mod ca;
pub mod challenges;
pub mod clusters;
pub mod commands;
pub mod idle;
pub mod mail;
mod pipeline;
pub use pipeline::SMTP_FIREWALL;
pub mod caps;
pub mod reconcile;
pub mod renew;
pub mod retry;
pub mod scaling;
pub mod sim_agents;

/// A live node as its provisioning request recorded it (its instance and address), for
/// reaching it; an error when the request has no instance or address on record.
pub async fn node_ref(
    store: &crate::store::Store,
    request_id: &str,
    hostname: &str,
    domain: &str,
) -> Result<crate::access::NodeRef, String> {
    let live = store
        .live_resources(request_id)
        .await
        .map_err(|e| e.to_string())?;
    let get = |k: crate::domain::ResourceKind| {
        live.iter()
            .find(|r| r.kind == k.as_str())
            .and_then(|r| r.provider_ref.clone())
    };
    let (Some(instance_id), Some(ip)) = (
        get(crate::domain::ResourceKind::Instance),
        get(crate::domain::ResourceKind::Ip).and_then(|ip| ip.parse().ok()),
    ) else {
        return Err(format!("{hostname}: no instance or address recorded"));
    };
    Ok(crate::access::NodeRef {
        instance_id,
        ip,
        hostname: hostname.to_string(),
        domain: domain.trim_end_matches('.').to_ascii_lowercase(),
    })
}
mod teardown;
mod wakes;

pub use commands::{Command, CommandError, Outcome};
pub use idle::{IdleOutcome, Left};

use crate::clock::SharedClock;
use crate::config::{ClusterHealth, Config};
use crate::domain::capacity::{Amounts, Health};
use crate::domain::RetryPolicy;
use crate::providers::{Binding, ProviderError, Registry};
use crate::store::{Admission, ClaimAsk, ClusterSpec, Store, StoreError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;

/// What every task of the engine shares.
pub struct Ctx {
    pub store: Store,
    /// Each cluster's provider and the way to its machines.
    pub providers: Registry,
    pub clock: SharedClock,
    pub cfg: Arc<Config>,
    /// This engine's identity in leases: `engine@host:pid:random`.
    pub owner: String,
    pub policy: RetryPolicy,
    /// DNS records, DKIM keys and certificates (`[dns]`, `[tls]`).
    pub mail: mail::Mail,
    admission: Admission,
    rng: Mutex<SmallRng>,
    shutting_down: AtomicBool,
    wake: Notify,
}

impl Ctx {
    pub fn new(
        store: Store,
        providers: Registry,
        clock: SharedClock,
        cfg: Arc<Config>,
    ) -> Arc<Ctx> {
        let e = &cfg.engine;
        let policy = RetryPolicy {
            backoff: e.retry_backoff.clone(),
            cap: e.retry_cap,
            max_retries: e.max_retries,
            jitter: e.retry_jitter,
        };
        let admission = Admission {
            max_in_flight_per_tenant: i64::from(e.max_in_flight_per_tenant),
            quotas: cfg
                .tenants
                .iter()
                .map(|t| {
                    let q = &t.quota;
                    (
                        t.name.clone(),
                        amounts(q.nodes, q.cpu, q.memory_gb, q.storage_gb),
                    )
                })
                .collect(),
            clusters: cfg
                .clusters
                .iter()
                .map(|c| ClusterSpec {
                    name: c.name.clone(),
                    provider: c.provider.clone(),
                    region: c.region.clone(),
                    default: c.default,
                    health: match c.health {
                        ClusterHealth::Online => Health::Online,
                        ClusterHealth::Degraded => Health::Degraded,
                        ClusterHealth::Offline => Health::Offline,
                    },
                    capacity: amounts(
                        c.capacity.vm_slots,
                        c.capacity.cpu,
                        c.capacity.memory_gb,
                        c.capacity.storage_gb,
                    ),
                })
                .collect(),
        };
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let owner = format!(
            "engine@{host}:{}:{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let mail = mail::Mail::from_config(&cfg, &store, &clock);
        Arc::new(Ctx {
            mail,
            store,
            providers,
            clock,
            policy,
            admission,
            owner,
            rng: Mutex::new(SmallRng::from_entropy()),
            shutting_down: AtomicBool::new(false),
            wake: Notify::new(),
            cfg,
        })
    }

    /// Where warming nodes' daily sending counts come from: the simulated cloud makes them
    /// up; with a real provider they are what agents report into the store.
    pub fn counts_feed(&self) -> Arc<dyn crate::warmup::SendingCounts> {
        if self.providers.all_sim() {
            Arc::new(crate::warmup::sim::SimCounts {
                seed: self.cfg.providers.sim.seed,
            })
        } else {
            Arc::new(crate::warmup::Reported)
        }
    }

    /// The provider and machine access of a request's cluster.
    pub fn cluster(&self, name: Option<&str>) -> Result<&Binding, ProviderError> {
        match name {
            Some(n) => self.providers.cluster(n),
            None => Err(ProviderError::new(
                "engine",
                crate::providers::ErrorKind::Invalid,
                "the request was never placed in a cluster",
            )),
        }
    }

    /// What admission checks: tenant limits, quotas, clusters.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub(crate) fn jitter(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).gen()
    }

    pub(crate) fn lease_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now() + chrono::Duration::from_std(self.cfg.engine.lease_ttl).unwrap_or_default()
    }

    fn stopping(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

fn amounts(units: u64, cpu: u64, memory_gb: u64, storage_gb: u64) -> Amounts {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Amounts {
        units: i(units),
        cpu: i(cpu),
        memory_gb: i(memory_gb),
        storage_gb: i(storage_gb),
    }
}

/// A command on its way to the engine, with where to send the outcome.
pub struct CommandMsg {
    pub actor: String,
    pub command: Command,
    pub reply: oneshot::Sender<Result<Outcome, CommandError>>,
}

/// How the console (or anything else in-process) talks to a running engine.
pub struct EngineHandle {
    commands: mpsc::Sender<CommandMsg>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The warm-up day boundaries.
    warmup: tokio::task::JoinHandle<()>,
    /// Certificate renewals.
    renew: tokio::task::JoinHandle<()>,
    /// Warm-up caps installed on the nodes.
    caps: tokio::task::JoinHandle<()>,
    scaling: tokio::task::JoinHandle<()>,
    /// The simulated nodes' agents, when `[providers.sim] agents` is on.
    sim_agents: Option<tokio::task::JoinHandle<()>>,
    /// The blocklist monitor, when it is on.
    monitor: Option<crate::reputation::monitor::MonitorHandle>,
    ctx: Arc<Ctx>,
}

impl EngineHandle {
    /// Sends a command and waits for its outcome.
    pub async fn send(&self, actor: &str, command: Command) -> Result<Outcome, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(CommandMsg {
                actor: actor.to_string(),
                command,
                reply,
            })
            .await
            .map_err(|_| CommandError::EngineStopped)?;
        rx.await.map_err(|_| CommandError::EngineStopped)?
    }

    pub fn sender(&self) -> mpsc::Sender<CommandMsg> {
        self.commands.clone()
    }

    /// A counter that moves after every commit: the engine's updates.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.ctx.store.changes()
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Stops claiming, waits up to the grace period for in-flight steps, releases leases.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(m) = self.monitor {
            m.stop().await;
        }
        let _ = self.task.await;
        let _ = self.warmup.await;
        let _ = self.renew.await;
        let _ = self.caps.await;
        let _ = self.scaling.await;
        if let Some(t) = self.sim_agents {
            let _ = t.await;
        }
    }

    /// Stops at once, as a crash would: tasks are dropped mid-step and leases are kept until
    /// they expire. For crash tests.
    pub fn kill(self) {
        if let Some(m) = self.monitor {
            m.abort();
        }
        self.task.abort();
        self.warmup.abort();
        self.renew.abort();
        self.caps.abort();
        self.scaling.abort();
        if let Some(t) = &self.sim_agents {
            t.abort();
        }
    }
}

/// Starts the engine on the current tokio runtime: its claim loop and every background
/// loop beside it (warm-up, certificate renewal, and the blocklist monitor when
/// `[blocklists] monitor` is on). The one place they start; the console and `work` call it.
pub fn spawn(ctx: Arc<Ctx>) -> EngineHandle {
    let monitor =
        crate::reputation::monitor::spawn(ctx.store.clone(), ctx.cfg.clone(), ctx.clock.clone());
    let (tx, rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let warmup = tokio::spawn(crate::warmup::run(
        ctx.store.clone(),
        ctx.cfg.clone(),
        ctx.counts_feed(),
        ctx.clock.clone(),
        stop_rx.clone(),
    ));
    let renew = tokio::spawn(renew::run(ctx.clone(), stop_rx.clone()));
    let caps = tokio::spawn(caps::run(ctx.clone(), stop_rx.clone()));
    let scaling = tokio::spawn(scaling::run(ctx.clone(), stop_rx.clone()));
    let sim_agents = ctx
        .cfg
        .providers
        .sim
        .agents
        .then(|| tokio::spawn(sim_agents::run(ctx.clone(), stop_rx.clone())));
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            main_loop(ctx, rx, stop_rx, false).await;
        }
    });
    EngineHandle {
        commands: tx,
        shutdown: stop_tx,
        task,
        warmup,
        renew,
        caps,
        scaling,
        sim_agents,
        monitor,
        ctx,
    }
}

/// Runs until nothing is left that the engine can move, waiting for retries scheduled for
/// later, then shuts down gracefully. The outcome names what is left: requests waiting for a
/// person, and requests an error keeps from moving (see `idle` for the rule).
pub async fn run_until_idle(ctx: Arc<Ctx>) -> IdleOutcome {
    let (_tx, rx) = mpsc::channel(1);
    let (_stop_tx, stop_rx) = watch::channel(false);
    main_loop(ctx, rx, stop_rx, true).await
}

async fn main_loop(
    ctx: Arc<Ctx>,
    mut commands: mpsc::Receiver<CommandMsg>,
    mut stop: watch::Receiver<bool>,
    until_idle: bool,
) -> IdleOutcome {
    let mut outcome = IdleOutcome::default();
    // A run that ended before on this context left it stopping (its workers gave their
    // leases back at once): this run starts it again, or every claim it made would be
    // released unworked, round after round.
    ctx.shutting_down.store(false, Ordering::SeqCst);
    // Probes providers whose circuit is open; it ends with the loop.
    let prober = tokio::spawn(breakers::probe_loop(ctx.clone()));
    let _prober = pipeline::AbortOnDrop(prober);
    // Store errors in a row (a claim, a worker's write, the until-idle check), with no
    // worker finishing cleanly between them: retried as the policy says.
    let mut failures = 0u32;
    let mut workers: JoinSet<Option<String>> = JoinSet::new();
    let mut wakes = wakes::Moments::new(&ctx);
    let mut others = wakes::OtherProcesses::new(&ctx);
    let mut local = wakes::LocalCommits::new(&ctx);
    let mut commands_open = true;
    // What a claim reads, as of the last commit that made the loop look (see
    // `Store::claim_inputs`).
    let mut inputs: Option<String> = None;
    loop {
        let mut trouble: Option<String> = None;
        // Woken by nothing but a commit: the loop looks again only if the commit changed
        // something a claim reads. `serve` commits heartbeats ten times a second at 10,000
        // nodes; each would otherwise re-decide every request waiting for admission.
        let mut by_commit = false;
        let deadline = wakes.deadline(&ctx);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                wakes.again = None;
                if wakes.stuck_due(&ctx) {
                    look_for_stuck(&ctx, &mut wakes).await;
                }
            }
            changed = others.committed(&ctx) => {
                if !changed {
                    continue;
                }
                by_commit = true;
            }
            () = local.committed() => by_commit = true,
            () = ctx.wake.notified() => wakes.dirty = true,
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                let mut ended = vec![done];
                // Every worker that has finished frees its slot now, so one claim refills
                // them all instead of one claim per finished worker.
                while let Some(done) = workers.try_join_next() {
                    ended.push(done);
                }
                for done in ended {
                    match note_worker_end(done) {
                        Some(e) => {
                            failures = failures.saturating_add(1);
                            trouble = Some(format!("a write failed: {e}"));
                        }
                        None => failures = 0,
                    }
                }
                wakes.dirty = true;
            }
            msg = commands.recv(), if commands_open => match msg {
                Some(msg) => {
                    let ctx2 = ctx.clone();
                    tokio::spawn(async move {
                        let out = commands::execute(&ctx2, &msg.actor, msg.command).await;
                        ctx2.wake.notify_one();
                        let _ = msg.reply.send(out);
                    });
                }
                None => commands_open = false,
            },
            _ = stop.changed() => break,
        }
        if local.take() && !by_commit {
            // Another wake looks anyway; the commit it also saw is looked at with it.
            wakes.dirty = true;
        }
        if by_commit {
            match ctx.store.claim_inputs().await {
                // Unchanged since a look that saw them (nothing left `dirty` unlooked at):
                // the claim would find what it found then, and its next due moment is
                // already in `wakes`.
                Ok(now) if !wakes.dirty && inputs.as_ref() == Some(&now) => continue,
                Ok(now) => inputs = Some(now),
                Err(e) => {
                    tracing::warn!(error = %e, "reading what claims depend on failed; looking anyway");
                    inputs = None;
                }
            }
            wakes.dirty = true;
        }
        let claimed = match schedule(&ctx, &mut workers, wakes.dirty).await {
            Ok(s) => {
                if s.looked {
                    wakes.dirty = false;
                }
                wakes.due = s.next_due;
                s.claimed
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming work failed; trying again");
                failures = failures.saturating_add(1);
                trouble = Some(format!("claim failed: {e}"));
                if !until_idle {
                    let wait = ctx.policy.delay(failures, ctx.jitter());
                    wakes.again = Some(
                        ctx.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    );
                }
                0
            }
        };
        if !until_idle {
            continue;
        }
        if let Some(why) = trouble {
            match back_off(&ctx, failures, why).await {
                Some(out) => {
                    outcome = out;
                    break;
                }
                None => {
                    // Waited as the policy says: try again now.
                    wakes.again = Some(ctx.clock.now());
                    continue;
                }
            }
        }
        if !workers.is_empty() || claimed > 0 {
            continue;
        }
        match idle::check(&ctx).await {
            Ok(next) => {
                failures = 0;
                match next {
                    idle::Next::Again => wakes.again = Some(ctx.clock.now()),
                    // Sleeping in the loop's own wait, so that a commit wakes it sooner.
                    idle::Next::WaitUntil(at) => wakes.again = Some(at),
                    idle::Next::Done(out) => {
                        outcome = out;
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading what is left to do failed; trying again");
                failures = failures.saturating_add(1);
                let why = format!("reading the requests failed: {e}");
                match back_off(&ctx, failures, why).await {
                    Some(out) => {
                        outcome = out;
                        break;
                    }
                    None => wakes.again = Some(ctx.clock.now()),
                }
            }
        }
    }
    ctx.shutting_down.store(true, Ordering::SeqCst);
    let grace = ctx.cfg.engine.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = workers.len(),
            "shutdown grace ran out; abandoning in-flight steps"
        );
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    if let Err(e) = ctx.store.release_all_leases(&ctx.owner).await {
        tracing::warn!(error = %e, "could not release leases; they expire on their own");
    }
    outcome
}

/// Fails what is stuck (a read first; it writes only when something is), then works out
/// when to look next. Waiting requests are looked at again too: a rare safety net that
/// writes nothing when nothing changed.
async fn look_for_stuck(ctx: &Ctx, wakes: &mut wakes::Moments) {
    let now = ctx.clock.now();
    let after = ctx.cfg.engine.stuck_after;
    if let Err(e) = ctx.store.fail_stuck(now, after, &ctx.owner).await {
        tracing::warn!(error = %e, "stuck detection failed");
    }
    wakes.dirty = true;
    wakes.stuck = match ctx.store.next_stuck_check(now, after).await {
        Ok(at) => at,
        Err(e) => {
            tracing::warn!(error = %e, "stuck detection cannot tell when to look next");
            now + chrono::Duration::from_std(ctx.cfg.engine.tick).unwrap_or_default()
        }
    };
}

/// After `failures` store errors in a row, the last being `error`: waits as the retry
/// policy says and returns `None`, or, once the policy gives up, the run's outcome.
async fn back_off(ctx: &Ctx, failures: u32, error: String) -> Option<IdleOutcome> {
    if ctx.policy.may_retry(failures) {
        tokio::time::sleep(ctx.policy.delay(failures, ctx.jitter())).await;
        return None;
    }
    // Reading may still work when writing does not (a full disk).
    let rows = ctx.store.unfinished(&ctx.owner).await.unwrap_or_default();
    Some(idle::gave_up(&rows, ctx.clock.now(), error))
}

/// The store error a worker stopped on, if it did.
fn note_worker_end(done: Result<Option<String>, tokio::task::JoinError>) -> Option<String> {
    match done {
        Ok(stopped) => stopped,
        Err(e) => {
            if e.is_panic() {
                tracing::error!(error = %e, "a worker panicked; its lease will expire and another worker resumes");
            }
            None
        }
    }
}

/// What one round of scheduling did.
struct Scheduled {
    claimed: usize,
    /// Whether it looked at the store (there was room to claim).
    looked: bool,
    /// When claimable work next falls due, if it looked.
    next_due: Option<chrono::DateTime<chrono::Utc>>,
}

/// Claims what there is room for and starts a worker on each claim. Waiting requests are
/// looked at again only when `recheck_waiting` (something committed since the last look).
async fn schedule(
    ctx: &Arc<Ctx>,
    workers: &mut JoinSet<Option<String>>,
    recheck_waiting: bool,
) -> Result<Scheduled, StoreError> {
    let room = (ctx.cfg.engine.max_concurrent as usize).saturating_sub(workers.len());
    if room == 0 || ctx.stopping() {
        return Ok(Scheduled {
            claimed: 0,
            looked: false,
            next_due: None,
        });
    }
    let out = ctx
        .store
        .claim_as(ClaimAsk {
            owner: &ctx.owner,
            now: ctx.clock.now(),
            lease_ttl: ctx.cfg.engine.lease_ttl,
            limit: room,
            admission: &ctx.admission,
            recheck_waiting,
            clock: Some(&ctx.clock),
        })
        .await?;
    let n = out.claims.len();
    for claim in out.claims {
        let ctx = ctx.clone();
        workers.spawn(pipeline::run_claim(ctx, claim));
    }
    Ok(Scheduled {
        claimed: n,
        looked: true,
        next_due: out.next_due,
    })
}

/// Errors a worker stops on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
}
