//! Operators' commands: validated here, executed by the engine (in-process, or directly by
//! the CLI through the same function). A refused command writes nothing.

use super::pipeline::{call, Stop};
use super::Ctx;
use crate::domain::approval::{first_match, RequestFacts};
use crate::domain::batch::{self, BatchItem};
use crate::domain::hostname::effective_hostname;
use crate::domain::ids::{new_id, short};
use crate::domain::validate::{validate_domain, validate_label, validate_reason, NameError};
use crate::domain::{transition_for, RequestEvent, RequestState, ResourceKind};
use crate::store::{Claim, NewRequest, RequestRow, StoreError, TeardownAsked};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub tenant: String,
    pub region: String,
    pub plan: String,
    pub label: String,
    pub domain: Option<String>,
    /// Id prefixes, resolved as git resolves them.
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(CreateRequest),
    Approve {
        id: String,
        reason: Option<String>,
    },
    Reject {
        id: String,
        reason: String,
    },
    Suspend {
        id: String,
        reason: Option<String>,
    },
    Reactivate {
        id: String,
        reason: Option<String>,
    },
    Rollback {
        id: String,
        reason: Option<String>,
    },
    Deprovision {
        id: String,
        reason: Option<String>,
    },
    /// An administrator enters the access details of a request waiting for them (a
    /// manual provider's server): its IP address and SSH port.
    Provide {
        id: String,
        ip: std::net::Ipv4Addr,
        ssh_port: u16,
    },
    /// A connectivity test of one cluster (changes nothing).
    TestCluster {
        name: String,
    },
    /// Take a serving node out of rotation.
    PauseNode {
        id: String,
        reason: Option<String>,
    },
    /// Put a paused node back in rotation, whatever paused it but a suspended service, or
    /// bring one in maintenance back.
    ResumeNode {
        id: String,
    },
    /// Take a serving node out of rotation for work on it.
    MaintainNode {
        id: String,
        reason: Option<String>,
    },
    /// Move a node to another plan: files a resize request (its own steps, rolled back by
    /// reverting the provider's upgrade).
    ResizeNode {
        id: String,
        plan: String,
        reason: Option<String>,
    },
    /// Check a node's IP on the blocklists now, and act on the answers.
    CheckNode {
        id: String,
    },
    /// Resume a node's warm-up from its day, the start of its week, or day 1.
    WarmupResume {
        id: String,
        from: crate::domain::warmup::ResumeFrom,
    },
    /// Stretch (above 100%) or compress (below 100%) the rest of a node's warm-up: 150
    /// makes the remaining days half as many again.
    WarmupPace {
        id: String,
        percent: u32,
    },
    /// On-call takes an open alert ("I have it"), with an optional note.
    AckAlert {
        id: String,
        note: Option<String>,
    },
    /// Keep an open alert from the alert sinks for a while, saying why; a zero duration
    /// ends a silence.
    SilenceAlert {
        id: String,
        duration: std::time::Duration,
        reason: String,
    },
}

/// The longest silence: a week. Anything longer is a rule to change, not an alert to mute.
pub const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl Command {
    /// The reason the operator gave, for the commands that take one.
    fn reason(&self) -> Option<&str> {
        match self {
            Command::Reject { reason, .. } => Some(reason),
            Command::Approve { reason, .. }
            | Command::Suspend { reason, .. }
            | Command::Reactivate { reason, .. }
            | Command::Rollback { reason, .. }
            | Command::Deprovision { reason, .. }
            | Command::PauseNode { reason, .. }
            | Command::MaintainNode { reason, .. }
            | Command::ResizeNode { reason, .. }
            | Command::AckAlert { note: reason, .. } => reason.as_deref(),
            Command::SilenceAlert { reason, .. } => Some(reason),
            Command::Create(_)
            | Command::Provide { .. }
            | Command::TestCluster { .. }
            | Command::ResumeNode { .. }
            | Command::CheckNode { .. }
            | Command::WarmupResume { .. }
            | Command::WarmupPace { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Created(Box<RequestRow>),
    Changed {
        id: String,
        state: RequestState,
    },
    /// A worker holds the request; it rolls back after its current call.
    TeardownSignalled {
        id: String,
    },
    /// A cluster answered its connectivity test.
    ClusterTested(super::clusters::ConnectivityReport),
    /// A node was paused, resumed or checked.
    Node {
        id: String,
        text: String,
    },
    /// An alert was acknowledged or silenced.
    Alert {
        id: String,
        text: String,
    },
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Created(r) if r.operation() == crate::domain::Operation::Resize => format!(
                "request {} created ({}): resize node {} from {} to {}",
                short(&r.id),
                r.state,
                r.label,
                r.from_plan.as_deref().unwrap_or("?"),
                r.plan
            ),
            Outcome::Created(r) => format!("request {} created ({})", short(&r.id), r.state),
            Outcome::Changed { id, state } => format!("request {} is now {state}", short(id)),
            Outcome::ClusterTested(r) => r.describe(),
            Outcome::Node { text, .. } | Outcome::Alert { text, .. } => text.clone(),
            Outcome::TeardownSignalled { id } => {
                format!(
                    "request {}: rollback requested; the worker stops after its current call",
                    short(id)
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Provider(String),
    /// The actor may not do this (role, four-eyes).
    #[error("{0}")]
    Refused(String),
    #[error("the engine has stopped")]
    EngineStopped,
}

pub async fn execute(
    ctx: &Arc<Ctx>,
    actor: &str,
    command: Command,
) -> Result<Outcome, CommandError> {
    let now = ctx.clock.now();
    let store = &ctx.store;
    if let Some(reason) = command.reason() {
        validate_reason("reason", reason)?;
    }
    match command {
        Command::Create(c) => create(ctx, actor, c).await,
        Command::Approve { id, reason } => {
            let id = store.resolve_request_id(&id).await?;
            may_decide(ctx, actor, &id, "approve").await?;
            let state = store
                .decide(&id, RequestEvent::Approve, actor, reason, now)
                .await?;
            Ok(Outcome::Changed { id, state })
        }
        Command::Provide { id, ip, ssh_port } => {
            let id = store.resolve_request_id(&id).await?;
            let state = store.provide_access(&id, ip, ssh_port, actor, now).await?;
            Ok(Outcome::Changed { id, state })
        }
        Command::Reject { id, reason } => {
            let id = store.resolve_request_id(&id).await?;
            may_decide(ctx, actor, &id, "reject").await?;
            if reason.trim().is_empty() {
                return Err(CommandError::Invalid(
                    "reason: a rejection needs a reason (--reason TEXT)".into(),
                ));
            }
            let state = store
                .decide(&id, RequestEvent::Reject, actor, Some(reason), now)
                .await?;
            Ok(Outcome::Changed { id, state })
        }
        Command::Rollback { id, reason } => teardown(ctx, actor, &id, false, reason).await,
        Command::Deprovision { id, reason } => teardown(ctx, actor, &id, true, reason).await,
        Command::Suspend { id, reason } => {
            service(ctx, actor, &id, RequestEvent::Suspend, reason).await
        }
        Command::Reactivate { id, reason } => {
            service(ctx, actor, &id, RequestEvent::Reactivate, reason).await
        }
        Command::PauseNode { id, reason } => {
            let id = store.resolve_node_id(&id).await?;
            let node = store.get_node(&id).await?;
            let moved = store.pause_node(&id, actor, reason, now).await?;
            node_moved(node, moved, "paused")
        }
        Command::ResumeNode { id } => {
            let id = store.resolve_node_id(&id).await?;
            let node = store.get_node(&id).await?;
            let moved = store.resume_node(&id, actor, now).await?;
            node_moved(node, moved, "resumed")
        }
        Command::MaintainNode { id, reason } => {
            let id = store.resolve_node_id(&id).await?;
            let node = store.get_node(&id).await?;
            let moved = store.maintain_node(&id, actor, reason, now).await?;
            node_moved(node, moved, "in maintenance")
        }
        Command::CheckNode { id } => check_node(ctx, &id).await,
        Command::AckAlert { id, note } => {
            let id = store.resolve_alert_id(&id).await?;
            match store.ack_alert(&id, actor, note, now).await? {
                Ok(a) => Ok(Outcome::Alert {
                    text: format!(
                        "alert {} acknowledged by {}",
                        short(&id),
                        crate::domain::validate::sanitize(actor)
                    ),
                    id: a.id,
                }),
                Err(refused) => Err(CommandError::Invalid(refused.to_string())),
            }
        }
        Command::SilenceAlert {
            id,
            duration,
            reason,
        } => {
            if reason.trim().is_empty() {
                return Err(CommandError::Invalid(
                    "reason: a silence needs a reason (--reason TEXT)".into(),
                ));
            }
            if duration > MAX_SILENCE {
                return Err(CommandError::Invalid(format!(
                    "for: {} is longer than a silence may last (7d)",
                    crate::config::format_duration(duration)
                )));
            }
            let id = store.resolve_alert_id(&id).await?;
            let until = now + chrono::Duration::from_std(duration).unwrap_or_default();
            match store.silence_alert(&id, actor, until, reason, now).await? {
                Ok(a) => Ok(Outcome::Alert {
                    text: if duration.is_zero() {
                        format!("alert {}: silence ended", short(&id))
                    } else {
                        format!(
                            "alert {} silenced for {} (until {})",
                            short(&id),
                            crate::config::format_duration(duration),
                            until.format("%Y-%m-%d %H:%M UTC")
                        )
                    },
                    id: a.id,
                }),
                Err(refused) => Err(CommandError::Invalid(refused.to_string())),
            }
        }
        Command::ResizeNode { id, plan, reason } => {
            resize(ctx, actor, &id, &plan, reason, None).await
        }
        Command::WarmupResume { id, from } => {
            let id = store.resolve_node_id(&id).await?;
            let node = store.get_node(&id).await?;
            let caps = warmup_caps(ctx, &id).await?;
            let today = crate::warmup::date_at(&ctx.cfg, now);
            let (day, cap) = store
                .warmup_resume(&id, from, caps, actor, today, now)
                .await?;
            Ok(Outcome::Node {
                text: format!(
                    "node {}: warm-up resumed on day {day} at {cap}/day",
                    node.label
                ),
                id,
            })
        }
        Command::WarmupPace { id, percent } => {
            let factor = f64::from(percent) / 100.0;
            let id = store.resolve_node_id(&id).await?;
            let node = store.get_node(&id).await?;
            let state = store.node_warmup(&id).await?.ok_or_else(|| {
                CommandError::Invalid(format!("node {} has no warm-up", node.label))
            })?;
            let caps = warmup_caps(ctx, &id).await?;
            let day = u32::try_from(state.day).unwrap_or(1);
            let paced =
                crate::domain::warmup::repace(&caps, day, factor).map_err(CommandError::Invalid)?;
            let days = paced.len();
            store
                .warmup_set_schedule(&id, paced, factor, actor, now)
                .await?;
            Ok(Outcome::Node {
                text: format!(
                    "node {}: warm-up now ends after day {days} (was {})",
                    node.label,
                    caps.len()
                ),
                id,
            })
        }
        Command::TestCluster { name } => {
            let report = super::clusters::test(ctx, &name).await?;
            if report.ok {
                Ok(Outcome::ClusterTested(report))
            } else {
                Err(CommandError::Provider(report.describe()))
            }
        }
    }
}

/// The daily caps a node's warm-up follows: its own schedule, or its plan's.
async fn warmup_caps(ctx: &Arc<Ctx>, node_id: &str) -> Result<Vec<u64>, CommandError> {
    let Some((plan, schedule)) = ctx.store.warmup_schedule(node_id).await? else {
        return Err(CommandError::Invalid("the node has no warm-up".into()));
    };
    if let Some(caps) = schedule {
        return Ok(caps);
    }
    ctx.cfg
        .warmup_plans()
        .into_iter()
        .find(|p| p.name == plan)
        .map(|p| p.caps)
        .ok_or_else(|| {
            CommandError::Invalid(format!("warm-up plan {plan:?} is no longer in the config"))
        })
}

/// Checks a node's IP on every usable blocklist zone now, and applies what the answers mean.
async fn check_node(ctx: &Arc<Ctx>, id: &str) -> Result<Outcome, CommandError> {
    use crate::reputation::dnsbl::Status;
    use crate::reputation::policy::Change;
    let store = &ctx.store;
    let id = store.resolve_node_id(id).await?;
    let node = store.get_node(&id).await?;
    let Some(ip) = node.ip_address.clone() else {
        return Err(CommandError::Invalid(format!(
            "node {} has no IP address yet",
            node.label
        )));
    };
    let monitor =
        crate::reputation::monitor::Monitor::new(store.clone(), ctx.cfg.clone(), ctx.clock.clone())
            .map_err(CommandError::Invalid)?;
    let zones = monitor.usable_zones().await?;
    if zones.is_empty() {
        return Err(CommandError::Provider(format!(
            "no blocklist zone is usable from here (see the zone alerts): nothing to check {} on",
            node.label
        )));
    }
    let (verdicts, applied) = monitor.check_node(&id, &ip, &zones).await?;
    let count = |s: Status| verdicts.iter().filter(|v| v.status == s).count();
    let mut text = format!(
        "checked {} ({ip}) on {} zones: {} listed, {} not listed, {} error, {} unknown",
        node.label,
        zones.len(),
        count(Status::Listed),
        count(Status::NotListed),
        count(Status::Error),
        count(Status::Unknown)
    );
    if applied
        .changes
        .iter()
        .any(|c| matches!(c, Change::Pause { .. }))
    {
        text.push_str("; paused");
    }
    if applied.changes.contains(&Change::Resume) {
        text.push_str("; resumed");
    }
    Ok(Outcome::Node { id, text })
}

/// The approver role, and four-eyes: nobody approves a request they made, by name or
/// through the account that made it. Refusals say who, what and why: "ops-lead cannot
/// approve 7f3a: ops-lead requested it".
async fn may_decide(ctx: &Arc<Ctx>, actor: &str, id: &str, verb: &str) -> Result<(), CommandError> {
    use crate::domain::actor::Actor;
    let req = ctx
        .store
        .get_request(id)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
    if req.state() != RequestState::PendingApproval {
        // Not awaiting a decision: the state machine's refusal says why.
        return Ok(());
    }
    let who = crate::domain::validate::sanitize(actor);
    let me = Actor::parse(actor);
    if !ctx.cfg.may_approve(&me.name, &req.tenant) {
        return Err(CommandError::Refused(format!(
            "{who} cannot {verb} {}: {} is not an approver for {}",
            short(id),
            me.name,
            req.tenant
        )));
    }
    let requester = Actor::parse(&req.requested_by);
    if verb == "approve" && me.overlaps(&requester) {
        return Err(CommandError::Refused(format!(
            "{who} cannot approve {}: {} requested it",
            short(id),
            crate::domain::validate::sanitize(&req.requested_by)
        )));
    }
    Ok(())
}

async fn teardown(
    ctx: &Arc<Ctx>,
    actor: &str,
    id: &str,
    deprovision: bool,
    reason: Option<String>,
) -> Result<Outcome, CommandError> {
    let id = ctx.store.resolve_request_id(id).await?;
    match ctx
        .store
        .request_teardown(&id, deprovision, actor, reason, ctx.clock.now())
        .await?
    {
        TeardownAsked::Started => Ok(Outcome::Changed {
            id,
            state: RequestState::RollingBack,
        }),
        TeardownAsked::Signalled => Ok(Outcome::TeardownSignalled { id }),
    }
}

/// Suspend and reactivate call the provider, so the command takes the request's lease for
/// the call and writes the state change only once the provider has done it.
async fn service(
    ctx: &Arc<Ctx>,
    actor: &str,
    id: &str,
    event: RequestEvent,
    reason: Option<String>,
) -> Result<Outcome, CommandError> {
    let store = &ctx.store;
    let id = store.resolve_request_id(id).await?;
    let req = store
        .get_request(&id)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let state = req.state();
    if transition_for(req.operation(), state, event).is_err() {
        return Err(CommandError::Invalid(format!(
            "request {} is {state}: it cannot {}",
            short(&id),
            event.verb()
        )));
    }
    if let Some((resize, st)) = store.live_resize(&id).await? {
        return Err(CommandError::Invalid(format!(
            "request {} cannot {} while its resize {} is {st}: wait for the resize, or roll it back first",
            short(&id),
            event.verb(),
            short(&resize)
        )));
    }
    let instance = store
        .live_resources(&id)
        .await?
        .into_iter()
        .find(|r| r.kind == ResourceKind::Instance.as_str())
        .and_then(|r| r.provider_ref)
        .ok_or_else(|| {
            CommandError::Invalid(format!(
                "request {} has no instance to {}",
                short(&id),
                event.verb()
            ))
        })?;
    let fence = store
        .lease_for_command(&id, &ctx.owner, ctx.clock.now(), ctx.cfg.engine.lease_ttl)
        .await?;
    let claim = Claim {
        id: id.clone(),
        fence,
        state,
    };
    let p = match ctx.cluster(req.cluster.as_deref()) {
        Ok(b) => b.provider.clone(),
        Err(e) => {
            let _ = store.release_lease(&id, fence, None).await;
            return Err(CommandError::Invalid(format!(
                "request {}: {e}",
                short(&id)
            )));
        }
    };
    let (task, result) = if event == RequestEvent::Suspend {
        (
            "suspend",
            call(ctx, &claim, None, "suspend", None, || p.suspend(&instance)).await,
        )
    } else {
        (
            "reactivate",
            call(ctx, &claim, None, "reactivate", None, || {
                p.resume(&instance)
            })
            .await,
        )
    };
    let mut f = super::pipeline::fenced(ctx, &claim);
    f.actor = actor.to_string();
    match result {
        Ok(()) => {
            let state = store.apply_service_change(&f, event, reason).await?;
            Ok(Outcome::Changed { id, state })
        }
        Err(stop) => {
            let _ = store.release_lease(&id, fence, None).await;
            Err(match stop {
                Stop::Store(e) => CommandError::Store(e),
                other => CommandError::Provider(format!(
                    "{task} of request {} failed: {}",
                    short(&id),
                    other.describe()
                )),
            })
        }
    }
}

/// Why the engine files a request on its own (seed 001's scaling): the cause it answers
/// (`capacity`, `queue:<node id>`; the store keeps at most one live request per cause) and
/// the reason, with its figures, that the request's history shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub key: String,
    pub reason: String,
}

/// Files a provisioning request for `cause` exactly as `request create` files one: the
/// same checks against the config, the same approval rules, the same store write.
pub async fn create_for(
    ctx: &Arc<Ctx>,
    actor: &str,
    c: CreateRequest,
    cause: Cause,
) -> Result<Outcome, CommandError> {
    validate_reason("reason", &cause.reason)?;
    let mut new = prepare(ctx, actor, &c, &[]).await?;
    new.reason = Some(cause.reason);
    new.scaling_cause = Some(cause.key);
    let row = ctx.store.create_request(new, ctx.clock.now()).await?;
    Ok(Outcome::Created(Box::new(row)))
}

/// Files a resize of node `id` onto `plan` for `cause`, as `node resize` files one.
pub async fn resize_for(
    ctx: &Arc<Ctx>,
    actor: &str,
    id: &str,
    plan: &str,
    cause: Cause,
) -> Result<Outcome, CommandError> {
    validate_reason("reason", &cause.reason)?;
    resize(ctx, actor, id, plan, Some(cause.reason), Some(cause.key)).await
}

/// Files a resize of a node onto `plan`, through the approval rules as a create of that
/// plan would go. A node whose servers a vendor manages is not resized by mailfleet.
async fn resize(
    ctx: &Arc<Ctx>,
    actor: &str,
    id: &str,
    plan: &str,
    reason: Option<String>,
    scaling_cause: Option<String>,
) -> Result<Outcome, CommandError> {
    let cfg = &ctx.cfg;
    let Some(p) = cfg.plan(plan) else {
        return Err(CommandError::Invalid(format!(
            "plan: unknown plan {:?}; known: {}",
            crate::domain::validate::sanitize(plan),
            cfg.plans
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let node_id = ctx.store.resolve_node_id(id).await?;
    let node = ctx.store.get_node(&node_id).await?;
    if let Ok(b) = ctx.cluster(node.cluster.as_deref()) {
        if b.provider.vendor_managed() {
            return Err(CommandError::Invalid(format!(
                "node {}: its server is a vendor's (cluster {}, provider {}); the vendor resizes it",
                node.label,
                node.cluster.as_deref().unwrap_or("?"),
                b.provider.name()
            )));
        }
    }
    let rules = cfg.approval_rules();
    let facts = RequestFacts {
        tenant: &node.tenant,
        region: &node.region,
        kind: &p.kind,
        cpu: p.cpu,
        memory_gb: p.memory_gb,
        storage_gb: p.storage_gb,
    };
    let new = crate::store::NewResize {
        node_id,
        plan: p.name.clone(),
        kind: p.kind.clone(),
        cpu: p.cpu,
        memory_gb: p.memory_gb,
        storage_gb: p.storage_gb,
        requested_by: actor.to_string(),
        reason,
        approval: first_match(&rules, &facts),
        scaling_cause,
    };
    let row = ctx.store.create_resize(new, ctx.clock.now()).await?;
    Ok(Outcome::Created(Box::new(row)))
}

async fn create(ctx: &Arc<Ctx>, actor: &str, c: CreateRequest) -> Result<Outcome, CommandError> {
    let new = prepare(ctx, actor, &c, &[]).await?;
    let row = ctx.store.create_request(new, ctx.clock.now()).await?;
    Ok(Outcome::Created(Box::new(row)))
}

/// Validates an order against the config and resolves its prerequisites: `depends_on`
/// holds id prefixes of existing requests; `known` adds full ids that need no lookup (the
/// other members of an imported batch).
async fn prepare(
    ctx: &Arc<Ctx>,
    actor: &str,
    c: &CreateRequest,
    known: &[String],
) -> Result<NewRequest, CommandError> {
    let cfg = &ctx.cfg;
    let names = |v: Vec<&str>| v.join(", ");
    if cfg.tenant(&c.tenant).is_none() {
        return Err(CommandError::Invalid(format!(
            "tenant: unknown tenant {:?}; known: {}",
            crate::domain::validate::sanitize(&c.tenant),
            names(cfg.tenants.iter().map(|t| t.name.as_str()).collect())
        )));
    }
    let Some(plan) = cfg.plan(&c.plan) else {
        return Err(CommandError::Invalid(format!(
            "plan: unknown plan {:?}; known: {}",
            crate::domain::validate::sanitize(&c.plan),
            names(cfg.plans.iter().map(|p| p.name.as_str()).collect())
        )));
    };
    if !cfg.regions().contains(&c.region.as_str()) {
        return Err(CommandError::Invalid(format!(
            "region: unknown region {:?}; known: {}",
            crate::domain::validate::sanitize(&c.region),
            names(cfg.regions())
        )));
    }
    validate_label("label", &c.label)?;
    if let Some(d) = &c.domain {
        validate_domain("domain", d)?;
    }
    let mut deps: Vec<String> = known.to_vec();
    for prefix in &c.depends_on {
        let id = ctx
            .store
            .resolve_request_id(prefix)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(p) => {
                    CommandError::Invalid(format!("depends-on: no request matches {p:?}"))
                }
                other => other.into(),
            })?;
        if !deps.contains(&id) {
            deps.push(id);
        }
    }
    let rules = cfg.approval_rules();
    let facts = RequestFacts {
        tenant: &c.tenant,
        region: &c.region,
        kind: &plan.kind,
        cpu: plan.cpu,
        memory_gb: plan.memory_gb,
        storage_gb: plan.storage_gb,
    };
    let approval = first_match(&rules, &facts);
    Ok(NewRequest {
        tenant: c.tenant.clone(),
        region: c.region.clone(),
        plan: plan.name.clone(),
        kind: plan.kind.clone(),
        cpu: plan.cpu,
        memory_gb: plan.memory_gb,
        storage_gb: plan.storage_gb,
        label: c.label.clone(),
        domain: c.domain.clone(),
        depends_on: deps,
        requested_by: actor.to_string(),
        approval,
        reason: None,
        scaling_cause: None,
    })
}

/// Imports a batch: Kahn's algorithm orders it (a cycle refuses the whole batch, naming
/// it), every order is validated as `request create` would, and then all of them are
/// written in one transaction, so either the whole batch exists or none of it does.
pub async fn import(
    ctx: &Arc<Ctx>,
    actor: &str,
    items: &[BatchItem],
) -> Result<Vec<RequestRow>, CommandError> {
    let order = batch::order(items).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let deps = batch::internal_deps(items);
    let ids: Vec<String> = items.iter().map(|_| new_id()).collect();
    let mut news = Vec::with_capacity(items.len());
    for &i in &order {
        let item = &items[i];
        let (internal, external) = &deps[i];
        let c = CreateRequest {
            tenant: item.tenant.clone(),
            region: item.region.clone(),
            plan: item.plan.clone(),
            label: item.label.clone(),
            domain: item.domain.clone(),
            depends_on: external.clone(),
        };
        let known: Vec<String> = internal.iter().map(|j| ids[*j].clone()).collect();
        let new = prepare(ctx, actor, &c, &known).await.map_err(|e| {
            CommandError::Invalid(format!(
                "request {} (key {:?}): {e}; nothing was imported",
                i + 1,
                crate::domain::validate::sanitize(&item.key)
            ))
        })?;
        news.push((ids[i].clone(), new));
    }
    same_hostname_twice(items)?;
    ctx.store
        .create_requests(news, ctx.clock.now())
        .await
        .map_err(|e| match e {
            StoreError::Rejected(why) => {
                CommandError::Invalid(format!("{why}; nothing was imported"))
            }
            other => other.into(),
        })
}

/// Refuses a batch in which two requests would get the same hostname (each alone may be
/// free; together they are not), naming both.
fn same_hostname_twice(items: &[BatchItem]) -> Result<(), CommandError> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for (i, item) in items.iter().enumerate() {
        let host = effective_hostname(&item.label, item.domain.as_deref());
        if let Some(first) = seen.insert(host.clone(), i) {
            let key = |j: usize| crate::domain::validate::sanitize(&items[j].key).into_owned();
            return Err(CommandError::Invalid(format!(
                "requests {} (key {:?}) and {} (key {:?}) both want hostname {}; nothing was imported",
                first + 1,
                key(first),
                i + 1,
                key(i),
                crate::domain::validate::sanitize(&host)
            )));
        }
    }
    Ok(())
}

/// What an operator's node command did, or the lifecycle's refusal naming the node.
fn node_moved(
    node: crate::store::NodeRow,
    moved: Result<crate::store::Moved, crate::domain::node::NodeRefusal>,
    done: &str,
) -> Result<Outcome, CommandError> {
    match moved {
        Ok(_) => Ok(Outcome::Node {
            text: format!("node {} {done}", node.label),
            id: node.id,
        }),
        Err(refusal) => Err(CommandError::Invalid(format!(
            "node {}: {refusal}",
            node.label
        ))),
    }
}
