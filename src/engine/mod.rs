//! The background executor. It claims requests from the store (admitting queued ones),
//! runs their pipeline steps and teardowns on tokio tasks, detects stuck requests, executes
//! operators' commands, and shuts down gracefully. It is the only writer of request and
//! node state; every write goes through the store, fenced by the lease it holds.

mod acme_glue;
pub mod ca;
pub mod clusters;
pub mod commands;
pub mod mail;
mod pipeline;
pub mod reconcile;
pub mod renew;
pub mod retry;
mod teardown;

pub use commands::{Command, CommandError, Outcome};

use crate::clock::SharedClock;
use crate::config::{ClusterHealth, Config};
use crate::domain::capacity::{Amounts, Health};
use crate::domain::RetryPolicy;
use crate::providers::Provider;
use crate::store::{Admission, ClusterSpec, Store, StoreError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;

/// What every task of the engine shares.
pub struct Ctx {
    pub store: Store,
    pub provider: Arc<dyn Provider>,
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
        provider: Arc<dyn Provider>,
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
            recheck_after: Duration::from_secs(5).max(e.tick),
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
            provider,
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
        if self.provider.name() == crate::providers::sim::NAME {
            Arc::new(crate::warmup::sim::SimCounts {
                seed: self.cfg.providers.sim.seed,
            })
        } else {
            Arc::new(crate::warmup::Reported)
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
        let _ = self.task.await;
        let _ = self.warmup.await;
        let _ = self.renew.await;
    }

    /// Stops at once, as a crash would: tasks are dropped mid-step and leases are kept until
    /// they expire. For crash tests.
    pub fn kill(self) {
        self.task.abort();
        self.warmup.abort();
        self.renew.abort();
    }
}

/// Starts the engine on the current tokio runtime.
pub fn spawn(ctx: Arc<Ctx>) -> EngineHandle {
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
    let task = tokio::spawn(main_loop(ctx.clone(), rx, stop_rx, false));
    EngineHandle {
        commands: tx,
        shutdown: stop_tx,
        task,
        warmup,
        renew,
        ctx,
    }
}

/// Runs until no request can make progress, then shuts down gracefully.
pub async fn run_until_idle(ctx: Arc<Ctx>) {
    let (_tx, rx) = mpsc::channel(1);
    let (_stop_tx, stop_rx) = watch::channel(false);
    main_loop(ctx, rx, stop_rx, true).await;
}

async fn main_loop(
    ctx: Arc<Ctx>,
    mut commands: mpsc::Receiver<CommandMsg>,
    mut stop: watch::Receiver<bool>,
    until_idle: bool,
) {
    let mut workers: JoinSet<()> = JoinSet::new();
    let mut tick = tokio::time::interval(ctx.cfg.engine.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commands_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = ctx.store.fail_stuck(ctx.clock.now(), ctx.cfg.engine.stuck_after, &ctx.owner).await {
                    tracing::warn!(error = %e, "stuck detection failed");
                }
            }
            () = ctx.wake.notified() => {}
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                note_worker_end(done);
                // Every worker that has finished frees its slot now, so one claim refills
                // them all instead of one claim per finished worker.
                while let Some(done) = workers.try_join_next() {
                    note_worker_end(done);
                }
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
        let claimed = schedule(&ctx, &mut workers).await;
        if until_idle && workers.is_empty() && claimed == 0 && idle(&ctx).await {
            break;
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
}

fn note_worker_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a worker panicked; its lease will expire and another worker resumes");
        }
    }
}

/// Claims what there is room for and starts a worker on each claim.
async fn schedule(ctx: &Arc<Ctx>, workers: &mut JoinSet<()>) -> usize {
    let room = (ctx.cfg.engine.max_concurrent as usize).saturating_sub(workers.len());
    if room == 0 || ctx.stopping() {
        return 0;
    }
    let out = match ctx
        .store
        .claim(
            &ctx.owner,
            ctx.clock.now(),
            ctx.cfg.engine.lease_ttl,
            room,
            &ctx.admission,
        )
        .await
    {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(error = %e, "claiming work failed; trying again next tick");
            return 0;
        }
    };
    let n = out.claims.len();
    for claim in out.claims {
        let ctx = ctx.clone();
        workers.spawn(async move {
            pipeline::run_claim(ctx.clone(), claim).await;
            ctx.wake.notify_one();
        });
    }
    n
}

async fn idle(ctx: &Ctx) -> bool {
    match ctx.store.pending_work(ctx.clock.now()).await {
        Ok((now, later, leased)) => now == 0 && later == 0 && leased == 0,
        Err(_) => false,
    }
}

/// Errors a worker stops on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
}
