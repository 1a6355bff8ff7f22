//! One worker running one claimed request: its pipeline steps, one sub-task at a time, each
//! provider call retried with backoff; then completion, failure or teardown.

use super::retry::{with_retry, RetryNote};
use super::{teardown, Ctx, WorkerError};
use crate::domain::{RequestState, ResourceKind, Step};
use crate::providers::{InstanceStatus, Probe, ProviderError};
use crate::store::{Claim, Fenced, LastTask, RequestRow, ResourceWrite, StoreError, TaskMark};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::sync::watch;

/// Domain used for hostnames when a request names none.
pub const DEFAULT_DOMAIN: &str = crate::domain::hostname::DEFAULT_DOMAIN;

/// The firewall profile that opens SMTP (25), submission (587) and SSH.
pub const SMTP_FIREWALL: &str = "smtp";

/// What the parts of one worker share: the heartbeat's signal, and the sub-tasks finished
/// since the worker's last write.
#[derive(Clone)]
pub(crate) struct Signals {
    /// A teardown the operator asked for while this worker ran.
    pub cancel: watch::Receiver<Option<String>>,
    /// Done sub-tasks waiting to ride with the next write (see `TaskMark`).
    marks: Arc<std::sync::Mutex<Vec<TaskMark>>>,
}

impl Signals {
    pub(super) fn cancelled(&self) -> Option<String> {
        self.cancel.borrow().clone()
    }

    /// The worker's fenced identity for its next write, carrying the waiting marks.
    pub(super) fn fenced(&self, ctx: &Ctx, claim: &Claim) -> Fenced {
        let mut f = fenced(ctx, claim);
        f.marks = std::mem::take(&mut *self.marks.lock().unwrap_or_else(|p| p.into_inner()));
        f
    }
}

/// Why a step stopped early.
pub(crate) enum Stop {
    Failed(String),
    Cancelled(String),
    Store(StoreError),
    /// The provider's circuit is open: the request waits until `until` (the lease given
    /// back, `wait_reason` saying why), spending none of its retries.
    Deferred {
        until: chrono::DateTime<chrono::Utc>,
        why: String,
    },
    /// A person must enter the server's access details (a manual provider).
    AwaitInput(String),
}

impl Stop {
    /// The words of a stop that is not the store's.
    pub(crate) fn describe(&self) -> String {
        match self {
            Stop::Failed(m) | Stop::Cancelled(m) | Stop::AwaitInput(m) => m.clone(),
            Stop::Deferred { why, .. } => why.clone(),
            Stop::Store(e) => e.to_string(),
        }
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn fenced(ctx: &Ctx, claim: &Claim) -> Fenced {
    Fenced {
        id: claim.id.clone(),
        fence: claim.fence,
        actor: ctx.owner.clone(),
        now: ctx.clock.now(),
        lease_until: ctx.lease_until(),
        marks: Vec::new(),
    }
}

/// Runs one claim to its end. Returns the store error the worker stopped on, if it did (a
/// lease lost to another worker is not one).
pub(crate) async fn run_claim(ctx: Arc<Ctx>, claim: Claim) -> Option<String> {
    let (cancel_tx, cancel_rx) = watch::channel(None);
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let hb = {
        let (ctx, claim) = (ctx.clone(), claim.clone());
        tokio::spawn(async move {
            let every = ctx.cfg.engine.lease_ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                match ctx.store.heartbeat(&fenced(&ctx, &claim)).await {
                    Ok(cancel) => {
                        if cancel.is_some() {
                            let _ = cancel_tx.send(cancel);
                        }
                    }
                    Err(StoreError::FenceLost(_)) => {
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        })
    };
    let _hb = AbortOnDrop(hb);
    let signals = Signals {
        cancel: cancel_rx,
        marks: Arc::default(),
    };
    let result = tokio::select! {
        r = drive(&ctx, &claim, &signals) => r,
        _ = lost_rx.wait_for(|lost| *lost) => Err(WorkerError::Store(StoreError::FenceLost(claim.id.clone()))),
    };
    match result {
        Ok(()) => None,
        Err(WorkerError::Store(StoreError::FenceLost(_))) => {
            tracing::info!(request = %claim.id, "lease lost; another worker has the request");
            None
        }
        Err(e) => {
            tracing::warn!(request = %claim.id, error = %e, "worker stopped; the request will be retried");
            let later = ctx.clock.now() + chrono::Duration::seconds(5);
            let _ = ctx
                .store
                .release_lease(&claim.id, claim.fence, Some(later))
                .await;
            Some(e.to_string())
        }
    }
}

async fn drive(ctx: &Arc<Ctx>, claim: &Claim, signals: &Signals) -> Result<(), WorkerError> {
    let mut state = claim.state;
    // Read once: while this worker holds the lease, nobody else changes what it runs.
    let mut req: Option<RequestRow> = None;
    let found = Found::default();
    loop {
        if ctx.stopping() && state != RequestState::RollingBack {
            ctx.store
                .release_lease(&claim.id, claim.fence, Some(ctx.clock.now()))
                .await?;
            return Ok(());
        }
        match state {
            RequestState::Allocating
            | RequestState::Configuring
            | RequestState::Activating
            | RequestState::Verifying => {
                if req.is_none() {
                    req = ctx.store.get_request(&claim.id).await?;
                }
                let Some(req) = req.as_ref() else {
                    return Err(StoreError::NotFound(claim.id.clone()).into());
                };
                let Some(step) = req.operation().step(state) else {
                    return Ok(());
                };
                let run = StepRun {
                    ctx,
                    claim,
                    req,
                    step,
                    signals,
                    found: &found,
                };
                match run.run().await {
                    Ok(last) => {
                        state = ctx
                            .store
                            .complete_step(&signals.fenced(ctx, claim), step, last)
                            .await?;
                        if state == RequestState::Completed {
                            return Ok(());
                        }
                    }
                    Err(Stop::Deferred { until, why }) => {
                        ctx.store
                            .defer(&signals.fenced(ctx, claim), why, until)
                            .await?;
                        return Ok(());
                    }
                    Err(Stop::AwaitInput(why)) => {
                        ctx.store
                            .await_input(&signals.fenced(ctx, claim), why)
                            .await?;
                        return Ok(());
                    }
                    Err(Stop::Cancelled(what)) => {
                        let reason = format!("{what} requested by an operator during {step}");
                        ctx.store
                            .start_teardown(&signals.fenced(ctx, claim), reason, false)
                            .await?;
                        state = RequestState::RollingBack;
                    }
                    Err(Stop::Failed(msg)) => {
                        ctx.store
                            .fail_step(&signals.fenced(ctx, claim), step, msg)
                            .await?;
                        state = RequestState::Failed;
                    }
                    Err(Stop::Store(e)) => return Err(e.into()),
                }
            }
            RequestState::Failed => {
                let reason = "automatic rollback after a failed step".to_string();
                ctx.store
                    .start_teardown(&fenced(ctx, claim), reason, false)
                    .await?;
                state = RequestState::RollingBack;
            }
            RequestState::RollingBack => {
                teardown::run(ctx, claim).await?;
                return Ok(());
            }
            _ => {
                ctx.store
                    .release_lease(&claim.id, claim.fence, None)
                    .await?;
                return Ok(());
            }
        }
    }
}

/// Calls a provider operation with the engine's retry policy, recording each retry on the
/// request. Shared by steps and compensations.
pub(crate) async fn call<T, Op, Fut>(
    ctx: &Ctx,
    claim: &Claim,
    step: Option<Step>,
    task: &'static str,
    signals: Option<&Signals>,
    op: Op,
) -> Result<T, Stop>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    if let Some(c) = signals.and_then(Signals::cancelled) {
        return Err(Stop::Cancelled(c));
    }
    let hook = |note: RetryNote| async move {
        let cancel = ctx
            .store
            .note_retry(
                &match signals {
                    Some(s) => s.fenced(ctx, claim),
                    None => fenced(ctx, claim),
                },
                step,
                task,
                // The error in the note is the provider's text.
                crate::untrusted::untrusted_text(&note.describe()),
            )
            .await?;
        match (cancel, signals.is_some()) {
            (Some(c), true) => Err(Stop::Cancelled(c)),
            _ => Ok(()),
        }
    };
    match with_retry(
        &ctx.policy,
        ctx.cfg.engine.call_timeout,
        || ctx.jitter(),
        hook,
        op,
    )
    .await?
    {
        Ok(v) => Ok(v),
        Err(e) if e.kind == crate::providers::ErrorKind::Unavailable => Err(Stop::Deferred {
            until: e.retry_at.unwrap_or_else(|| ctx.clock.now()),
            why: format!(
                "{}{}",
                crate::store::BREAKER_WAIT,
                crate::untrusted::untrusted_text(&e.to_string())
            ),
        }),
        Err(e) => Err(Stop::Failed(format!(
            "{task}: {}",
            crate::untrusted::untrusted_text(&e.to_string())
        ))),
    }
}

/// What earlier steps of this worker found: the instance and its IP.
#[derive(Default)]
struct Found {
    instance: std::sync::Mutex<Option<(String, Ipv4Addr)>>,
}

pub(super) struct StepRun<'a> {
    pub(super) ctx: &'a Arc<Ctx>,
    pub(super) claim: &'a Claim,
    pub(super) req: &'a RequestRow,
    pub(super) step: Step,
    pub(super) signals: &'a Signals,
    found: &'a Found,
}

impl StepRun<'_> {
    /// Runs the step's sub-tasks; the last one is returned, to be recorded with the step's
    /// completion in one write.
    async fn run(&self) -> Result<LastTask, Stop> {
        match self.step {
            Step::Allocate => self.allocate().await,
            Step::Configure => self.configure().await,
            Step::Activate => self.activate().await,
            Step::Verify => self.verify().await,
            Step::Resize => self.resize().await,
            Step::Confirm => self.confirm().await,
        }
    }

    /// The request's cluster: its provider, and the way to its machines.
    pub(super) fn binding(&self) -> Result<&crate::providers::Binding, Stop> {
        self.ctx
            .cluster(self.req.cluster.as_deref())
            .map_err(|e| Stop::Failed(e.to_string()))
    }

    pub(super) fn hostname(&self) -> String {
        format!(
            "{}.{}",
            self.req.label,
            self.req.domain.as_deref().unwrap_or(DEFAULT_DOMAIN)
        )
    }

    pub(super) async fn call<T, Op, Fut>(&self, task: &'static str, op: Op) -> Result<T, Stop>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        call(
            self.ctx,
            self.claim,
            Some(self.step),
            task,
            Some(self.signals),
            op,
        )
        .await
    }

    /// The fenced identity for this worker's next write, with the marks waiting for it.
    pub(super) fn fenced(&self) -> Fenced {
        self.signals.fenced(self.ctx, self.claim)
    }

    /// A sub-task finished with only its detail to record, and the worker writes again
    /// within moments (local work, or one quick lookup whose retries are noted by a write
    /// that carries the mark too): the mark rides with that write instead of taking a
    /// transaction of its own. A step that fails or is cancelled writes it with that.
    pub(super) fn done_soon(&self, task: &'static str, detail: String) {
        self.signals
            .marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TaskMark {
                step: self.step,
                task,
                detail,
                at: self.ctx.clock.now(),
            });
    }

    pub(super) async fn done(
        &self,
        task: &'static str,
        detail: String,
        resource: Option<ResourceWrite>,
    ) -> Result<(), Stop> {
        let f = self.fenced();
        match self
            .ctx
            .store
            .task_done(&f, self.step, task, Some(detail), resource)
            .await?
        {
            Some(c) => Err(Stop::Cancelled(c)),
            None => Ok(()),
        }
    }

    /// The instance and IP that the allocate step recorded.
    async fn instance(&self) -> Result<(String, Ipv4Addr), Stop> {
        if let Some(found) = self
            .found
            .instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(found);
        }
        // A resumed request: what allocate recorded is in the store.
        let live = self.ctx.store.live_resources(&self.claim.id).await?;
        let get = |k: ResourceKind| {
            live.iter()
                .find(|r| r.kind == k.as_str())
                .and_then(|r| r.provider_ref.clone())
        };
        let id = get(ResourceKind::Instance)
            .ok_or_else(|| Stop::Failed("no instance recorded for this request".into()))?;
        let ip = get(ResourceKind::Ip)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| Stop::Failed("no IP recorded for this request".into()))?;
        self.remember_instance(&id, ip);
        Ok((id, ip))
    }

    /// Keeps the instance and its IP for the worker's later steps: while it holds the lease
    /// nobody else changes them, so they are read from the store at most once.
    fn remember_instance(&self, id: &str, ip: Ipv4Addr) {
        *self
            .found
            .instance
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((id.to_string(), ip));
    }

    fn resource(
        &self,
        kind: ResourceKind,
        provider_ref: Option<String>,
        detail: String,
    ) -> ResourceWrite {
        ResourceWrite {
            kind: Some(kind),
            allocated: true,
            provider: self.binding().ok().map(|b| b.provider.name().to_string()),
            provider_ref,
            detail: Some(detail),
        }
    }

    fn last(
        &self,
        task: &'static str,
        detail: String,
        resource: Option<ResourceWrite>,
    ) -> LastTask {
        LastTask {
            task,
            detail,
            resource,
            node: None,
        }
    }

    async fn allocate(&self) -> Result<LastTask, Stop> {
        let binding = self.binding()?;
        let p = &binding.provider;
        let req = self.req;
        // A machine reached over SSH is made with mailfleet's key for root.
        let ssh_key = match binding.access.ssh() {
            Some(ssh) => Some(
                ssh.public_key()
                    .await
                    .map_err(|e| Stop::Failed(format!("create_instance: {e}")))?,
            ),
            None => None,
        };
        let spec = crate::providers::InstanceSpec {
            idempotency_key: req.id.clone(),
            label: req.label.clone(),
            hostname: self.hostname(),
            region: req.region.clone(),
            cluster: req.cluster.clone().unwrap_or_default(),
            plan: req.plan.clone(),
            cpu: req.cpu,
            memory_gb: req.memory_gb,
            storage_gb: req.storage_gb,
            ssh_key,
        };
        // The intent goes on record before the call: a crash after the provider made the
        // instance still leaves a trace that the teardown follows (by idempotency key).
        let intent = ResourceWrite {
            allocated: false,
            detail: Some(format!(
                "creating {} ({}) in {}",
                spec.label, spec.plan, spec.cluster
            )),
            ..self.resource(ResourceKind::Instance, None, String::new())
        };
        let f = self.fenced();
        if let Some(c) = self
            .ctx
            .store
            .record_resource(&f, self.step, "create_instance", intent)
            .await?
        {
            return Err(Stop::Cancelled(c));
        }
        let inst = self.call("create_instance", || p.create(&spec)).await?;
        let detail = format!("instance {} in {}", inst.id, spec.cluster);
        self.done(
            "create_instance",
            detail.clone(),
            Some(self.resource(ResourceKind::Instance, Some(inst.id.clone()), detail)),
        )
        .await?;
        if p.vendor_managed() && inst.status == InstanceStatus::Building {
            return Err(Stop::AwaitInput(format!(
                "manual provider: waiting for an administrator to enter the server's IP address \
                 and SSH port (mailfleet request provide {} --ip IP --ssh-port PORT)",
                crate::domain::ids::short(&req.id)
            )));
        }
        let ip = self
            .wait_for(&inst.id, "wait_for_ip", |s, ip| {
                ip.is_some() && s != InstanceStatus::Building
            })
            .await?;
        let ip =
            ip.ok_or_else(|| Stop::Failed("wait_for_ip: the provider reported no IP".into()))?;
        self.remember_instance(&inst.id, ip);
        Ok(self.last(
            "wait_for_ip",
            format!("{ip} assigned"),
            Some(self.resource(ResourceKind::Ip, Some(ip.to_string()), format!("IPv4 {ip}"))),
        ))
    }

    /// Polls the instance until `ready` says so; returns its IP.
    async fn wait_for(
        &self,
        id: &str,
        task: &'static str,
        ready: impl Fn(InstanceStatus, Option<Ipv4Addr>) -> bool,
    ) -> Result<Option<Ipv4Addr>, Stop> {
        loop {
            let p = &self.binding()?.provider;
            let inst = self.call(task, || p.status(id)).await?;
            if ready(inst.status, inst.ip) {
                return Ok(inst.ip);
            }
            if inst.status == InstanceStatus::Deleted {
                return Err(Stop::Failed(format!(
                    "{task}: instance {id} was deleted at the provider"
                )));
            }
            if let Some(c) = self.signals.cancelled() {
                return Err(Stop::Cancelled(c));
            }
            tokio::time::sleep(self.ctx.cfg.engine.poll_interval).await;
        }
    }

    async fn configure(&self) -> Result<LastTask, Stop> {
        let p = &self.binding()?.provider;
        let (id, ip) = self.instance().await?;
        let host = self.hostname();
        if p.vendor_managed() {
            // Not mailfleet's to set: recorded as what the vendor must do, with no resource
            // for a teardown to undo.
            self.done(
                "firewall",
                "left to the vendor: open 22, 25 and 587".into(),
                None,
            )
            .await?;
            self.done(
                "rdns",
                format!("left to the vendor: PTR {ip} → {host}"),
                None,
            )
            .await?;
        } else {
            self.call("firewall", || p.set_firewall(&id, SMTP_FIREWALL))
                .await?;
            let d = format!("profile {SMTP_FIREWALL}: 22, 25, 587 open");
            self.done(
                "firewall",
                d.clone(),
                Some(self.resource(ResourceKind::Firewall, Some(SMTP_FIREWALL.into()), d)),
            )
            .await?;
            self.call("rdns", || p.set_rdns(&id, ip, Some(&host)))
                .await?;
            let d = format!("PTR {ip} → {host}");
            self.done(
                "rdns",
                d.clone(),
                Some(self.resource(ResourceKind::Rdns, Some(host.clone()), d)),
            )
            .await?;
        }
        let keys = self.dkim_key().await?;
        self.dns_publish(ip, &keys).await?;
        self.tls_certificate().await?;
        let node = crate::access::NodeRef {
            instance_id: id.clone(),
            ip,
            hostname: host.clone(),
            domain: self.domain(),
        };
        let access = &self.binding()?.access;
        if let Some(ssh) = access.ssh() {
            self.install_over_ssh(ssh, &node, &keys).await?;
            return Ok(self.last(
                "mail_stack",
                format!("postfix, opendkim, nftables and fail2ban configured over SSH on {ip}"),
                None,
            ));
        }
        let user_data = cloud_init(&host);
        self.call("mail_stack", || access.bootstrap(&node, &user_data))
            .await?;
        Ok(self.last(
            "mail_stack",
            "postfix, ufw and fail2ban installed by cloud-init".into(),
            None,
        ))
    }

    async fn activate(&self) -> Result<LastTask, Stop> {
        let p = &self.binding()?.provider;
        let (id, ip) = self.instance().await?;
        self.call("start_services", || p.resume(&id)).await?;
        self.done("start_services", "postfix started".into(), None)
            .await?;
        self.wait_for(&id, "wait_active", |s, _| s == InstanceStatus::Running)
            .await?;
        // Written with the step's completion, which follows at once.
        self.done_soon(
            "wait_active",
            "the provider reports the instance running".into(),
        );
        // The node is registered, and recorded as the task's resource, by the write that
        // completes the step.
        Ok(LastTask {
            node: Some(crate::store::NewNode {
                provider_id: id.clone(),
                hostname: self.hostname(),
                ip: ip.to_string(),
                warmup: self
                    .ctx
                    .cfg
                    .default_warmup_plan()
                    .map(|p| (p.name.clone(), p.days(), p.cap(1))),
                warmup_date: crate::warmup::date_at(&self.ctx.cfg, self.ctx.clock.now())
                    .to_string(),
            }),
            ..self.last(
                "register_node",
                String::new(),
                Some(self.resource(ResourceKind::Node, None, String::new())),
            )
        })
    }

    async fn verify(&self) -> Result<LastTask, Stop> {
        let (id, ip) = self.instance().await?;
        let records = self.dns_propagation(ip).await?;
        let node = crate::access::NodeRef {
            instance_id: id.clone(),
            ip,
            hostname: self.hostname(),
            domain: self.domain(),
        };
        let access = &self.binding()?.access;
        self.rdns_confirm(&id, ip, &records).await?;
        self.tls_check().await?;
        for (task, probe) in [
            ("smtp_probe", Probe::Smtp),
            ("submission_probe", Probe::Submission),
        ] {
            let answer = self.call(task, || access.probe(&node, probe)).await?;
            // A quick probe follows, then the step's completion: the mark rides with that
            // write (or with a retry's note) instead of taking a transaction of its own.
            self.done_soon(
                task,
                crate::domain::validate::sanitize(&answer).into_owned(),
            );
        }
        let task = "test_message";
        let answer = self
            .call(task, || access.probe(&node, Probe::TestMessage))
            .await?;
        Ok(self.last(
            task,
            crate::domain::validate::sanitize(&answer).into_owned(),
            None,
        ))
    }

    /// A resize's first step: the provider's upgrade ordered and applied (the intent on
    /// record before the call), then the instance waited for until it runs on its new size.
    async fn resize(&self) -> Result<LastTask, Stop> {
        let p = &self.binding()?.provider;
        let req = self.req;
        let t = self.ctx.store.resize_target(&req.id).await?;
        let live = self.ctx.store.live_resources(&req.id).await?;
        let upgrade = live
            .iter()
            .find(|r| r.kind == ResourceKind::Upgrade.as_str());
        let from = req.from_plan.as_deref().unwrap_or("its plan");
        if upgrade.is_none_or(|r| r.status != "allocated") {
            if upgrade.is_some() {
                // A worker stopped during the call: whatever it left open is undone first,
                // so that the order placed next is the only one.
                self.call("upgrade", || p.revert_resize(&t.instance_id))
                    .await?;
            }
            let intent = ResourceWrite {
                allocated: false,
                detail: Some(format!(
                    "ordering {} → {} for instance {}",
                    from, req.plan, t.instance_id
                )),
                ..self.resource(
                    ResourceKind::Upgrade,
                    Some(t.instance_id.clone()),
                    String::new(),
                )
            };
            if let Some(c) = self
                .ctx
                .store
                .record_resource(&self.fenced(), self.step, "upgrade", intent)
                .await?
            {
                return Err(Stop::Cancelled(c));
            }
            self.call("upgrade", || {
                p.resize(
                    &t.instance_id,
                    &req.plan,
                    req.cpu,
                    req.memory_gb,
                    req.storage_gb,
                )
            })
            .await?;
            let detail = format!(
                "instance {} upgraded {} → {} (not yet confirmed)",
                t.instance_id, from, req.plan
            );
            self.done(
                "upgrade",
                detail.clone(),
                Some(self.resource(ResourceKind::Upgrade, Some(t.instance_id.clone()), detail)),
            )
            .await?;
        }
        self.wait_for(&t.instance_id, "wait_running", |s, _| {
            s == InstanceStatus::Running
        })
        .await?;
        Ok(self.last(
            "wait_running",
            format!("instance {} running on {}", t.instance_id, req.plan),
            None,
        ))
    }

    /// A resize's second step: the node answers on its new size, then the upgrade is
    /// confirmed; completing the step folds the new plan into the node.
    async fn confirm(&self) -> Result<LastTask, Stop> {
        let binding = self.binding()?;
        let req = self.req;
        let t = self.ctx.store.resize_target(&req.id).await?;
        let ip: Ipv4Addr = t.ip.parse().map_err(|_| {
            Stop::Failed(format!(
                "the node's recorded IP {:?} is not an address",
                t.ip
            ))
        })?;
        let node = crate::access::NodeRef {
            instance_id: t.instance_id.clone(),
            ip,
            hostname: t.hostname.clone(),
            domain: self.domain(),
        };
        let access = &binding.access;
        let answer = self
            .call("smtp_probe", || access.probe(&node, Probe::Smtp))
            .await?;
        self.done_soon(
            "smtp_probe",
            crate::domain::validate::sanitize(&answer).into_owned(),
        );
        let p = &binding.provider;
        self.call("confirm_upgrade", || p.confirm_resize(&t.instance_id))
            .await?;
        self.done_soon(
            "confirm_upgrade",
            format!("{} confirmed at {}", req.plan, p.name()),
        );
        Ok(self.last(
            "record_plan",
            format!(
                "node {} on {} ({} cpu, {} GB RAM, {} GB disk)",
                req.label, req.plan, req.cpu, req.memory_gb, req.storage_gb
            ),
            None,
        ))
    }
}

/// The cloud-init user data that installs a node's mail stack.
pub fn cloud_init(hostname: &str) -> String {
    format!(
        "#cloud-config\nhostname: {hostname}\nfqdn: {hostname}\npackage_update: true\npackages: [postfix, ufw, fail2ban]\n\
         runcmd:\n  - [ufw, allow, '22,25,587/tcp']\n  - [ufw, --force, enable]\n  - [postconf, -e, 'myhostname = {hostname}']\n  \
         - [systemctl, enable, --now, postfix, fail2ban]\n"
    )
}
