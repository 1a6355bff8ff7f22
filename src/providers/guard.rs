//! A circuit breaker and a bulkhead around one provider client: every call the engine
//! makes to a cloud goes through its `Guard` (the registry wraps each client once).
//!
//! - **Breaker.** Calls that fail as the provider's trouble (timeouts, 5xx, rate limits:
//!   `Transient`) are counted; an answer of any kind (success, not found, refused) resets
//!   the count, since the provider answered. After `breaker_failures` in a row the circuit
//!   opens: calls fail at once as `Unavailable`, carrying when it is tried again, and the
//!   engine parks the request until then instead of spending its retries. After
//!   `breaker_cooldown` the circuit is half-open: one call (a request's, or the engine's
//!   probe) goes through; its success closes the circuit, its failure opens it again.
//! - **Bulkhead.** At most `max_in_flight` calls to the provider at once; the rest queue
//!   for a slot, up to the call timeout, then fail as `Transient` without counting against
//!   the breaker (the limit is ours, not the provider's trouble).
//!
//! Opening and closing are written to the store (`provider_breakers`, with an event each),
//! so that admission holds queued requests on an open provider, `cluster list` and the
//! console show it, and another engine on the same database sees it.

use super::{ErrorKind, Instance, InstanceSpec, Provider, ProviderError, ProviderResult};
use crate::clock::SharedClock;
use crate::config::ProviderLimits;
use crate::store::{BreakerChange, Store};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    /// Past its cooldown: the next call is a probe.
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// The breaker's memory. Pure: the caller passes the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    threshold: u32,
    cooldown: chrono::Duration,
    /// Transient failures in a row.
    pub failures: u32,
    /// Set while open: since when, and when the next probe may go.
    pub opened_at: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// A probe is out (half-open): other calls wait for its answer.
    probing: bool,
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Call,
    /// Go ahead as the half-open probe.
    Probe,
    /// Do not call; try again at this time.
    Refuse(DateTime<Utc>),
}

/// How a call went, for the breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The provider answered (success, or an error of its own: not found, refused).
    Answered,
    /// The provider's trouble: a timeout, a 5xx, a rate limit.
    Trouble(String),
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown: chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX),
            failures: 0,
            opened_at: None,
            retry_at: None,
            last_error: None,
            probing: false,
        }
    }

    pub fn circuit(&self, now: DateTime<Utc>) -> Circuit {
        match self.retry_at {
            None => Circuit::Closed,
            Some(at) if now >= at => Circuit::HalfOpen,
            Some(_) => Circuit::Open,
        }
    }

    /// Whether a call may go now.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Admit {
        match self.circuit(now) {
            Circuit::Closed => Admit::Call,
            Circuit::Open => Admit::Refuse(self.retry_at.unwrap_or(now)),
            Circuit::HalfOpen if self.probing => {
                // The probe's answer decides; until then, try again shortly.
                Admit::Refuse(now + chrono::Duration::seconds(1))
            }
            Circuit::HalfOpen => {
                self.probing = true;
                Admit::Probe
            }
        }
    }

    /// Takes a call's answer; returns what changed (the circuit opened, or closed).
    pub fn settle(&mut self, now: DateTime<Utc>, probe: bool, answer: Answer) -> Option<Circuit> {
        if probe {
            self.probing = false;
        }
        match answer {
            Answer::Answered => {
                self.failures = 0;
                let was_open = self.retry_at.is_some();
                // A call let through before the circuit opened may answer after it did:
                // only the probe closes it.
                if was_open && probe {
                    self.retry_at = None;
                    self.opened_at = None;
                    return Some(Circuit::Closed);
                }
                None
            }
            Answer::Trouble(why) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(why);
                if probe || (self.retry_at.is_none() && self.failures >= self.threshold) {
                    if self.opened_at.is_none() {
                        self.opened_at = Some(now);
                    }
                    self.retry_at = Some(now + self.cooldown);
                    return Some(Circuit::Open);
                }
                None
            }
        }
    }

    /// A probe that never answered (its caller gave up): another may go.
    pub fn abandon_probe(&mut self) {
        self.probing = false;
    }
}

/// One provider client behind its breaker and bulkhead.
pub struct Guard {
    inner: Arc<dyn Provider>,
    breaker: Mutex<Breaker>,
    slots: Semaphore,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    /// How long a call may wait for a slot, and then take.
    call_timeout: Duration,
    clock: SharedClock,
    store: Option<Store>,
}

/// What the console and `cluster list` show of a guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardView {
    pub provider: String,
    pub circuit: Circuit,
    pub failures: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

/// Undoes a call's bookkeeping if its future is dropped before it answers (a caller's
/// timeout, a cancelled worker).
struct InFlight<'a> {
    guard: &'a Guard,
    probe: bool,
    settled: bool,
    /// When the call went to the provider (it had its slot).
    called_at: Option<tokio::time::Instant>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.guard.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.settled {
            return;
        }
        let g = self.guard;
        // Dropped after a whole call timeout at the provider (the caller's own timer, set to
        // the same length, went first): that is a timeout, and counts as one.
        let timed_out = self
            .called_at
            .is_some_and(|t| t.elapsed() >= g.call_timeout);
        if !timed_out {
            if self.probe {
                g.lock().abandon_probe();
            }
            return;
        }
        let now = g.clock.now();
        let (changed, snapshot) = {
            let mut b = g.lock();
            let why = g.timed_out().to_string();
            let changed = b.settle(now, self.probe, Answer::Trouble(why));
            (changed, b.clone())
        };
        if let Some(circuit) = changed {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (store, name) = (g.store.clone(), g.inner.name().to_string());
                rt.spawn(record(store, name, circuit, snapshot, now));
            }
        }
    }
}

/// Logs a circuit that opened or closed and writes it to the store.
async fn record(
    store: Option<Store>,
    name: String,
    circuit: Circuit,
    b: Breaker,
    now: DateTime<Utc>,
) {
    match circuit {
        Circuit::Open => tracing::warn!(
            provider = %name,
            failures = b.failures,
            retry_at = ?b.retry_at,
            "provider circuit open"
        ),
        _ => tracing::info!(provider = %name, "provider circuit closed"),
    }
    let Some(store) = store else {
        return;
    };
    let change = BreakerChange {
        provider: name.clone(),
        open: circuit == Circuit::Open,
        failures: b.failures,
        opened_at: b.opened_at,
        retry_at: b.retry_at,
        last_error: b.last_error.clone(),
        now,
    };
    if let Err(e) = store.record_breaker(change).await {
        tracing::warn!(provider = %name, error = %e, "provider circuit not recorded");
    }
}

impl Guard {
    pub fn new(
        inner: Arc<dyn Provider>,
        limits: &ProviderLimits,
        call_timeout: Duration,
        clock: SharedClock,
        store: Option<Store>,
    ) -> Guard {
        let max = usize::try_from(limits.max_in_flight.max(1)).unwrap_or(1);
        Guard {
            inner,
            breaker: Mutex::new(Breaker::new(
                limits.breaker_failures,
                limits.breaker_cooldown,
            )),
            slots: Semaphore::new(max),
            max_in_flight: max,
            in_flight: AtomicUsize::new(0),
            call_timeout,
            clock,
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> GuardView {
        let b = self.lock().clone();
        GuardView {
            provider: self.inner.name().to_string(),
            circuit: b.circuit(self.clock.now()),
            failures: b.failures,
            retry_at: b.retry_at,
            last_error: b.last_error,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight,
        }
    }

    /// Takes up an open circuit another engine (or this one before a restart) recorded.
    pub fn restore(&self, opened_at: DateTime<Utc>, retry_at: DateTime<Utc>, why: Option<String>) {
        let mut b = self.lock();
        if b.retry_at.is_none() {
            b.opened_at = Some(opened_at);
            b.retry_at = Some(retry_at);
            b.last_error = why;
            b.failures = b.threshold;
        }
    }

    /// When an open circuit's probe may go (`None`: it is closed).
    pub fn probe_due(&self) -> Option<DateTime<Utc>> {
        self.lock().retry_at
    }

    /// A call that took the whole call timeout.
    fn timed_out(&self) -> ProviderError {
        ProviderError::new(
            self.inner.name(),
            ErrorKind::Transient,
            format!(
                "call timed out after {}",
                crate::config::format_duration(self.call_timeout)
            ),
        )
    }

    fn unavailable(&self, until: DateTime<Utc>) -> ProviderError {
        let b = self.lock();
        let mut e = ProviderError::new(
            self.inner.name(),
            ErrorKind::Unavailable,
            crate::store::circuit_open(b.failures, b.last_error.as_deref(), Some(until)),
        );
        e.retry_at = Some(until);
        e
    }

    /// Runs one call through the breaker and the bulkhead.
    async fn guarded<T>(&self, call: impl Future<Output = ProviderResult<T>>) -> ProviderResult<T> {
        // Bound first: the breaker's lock is released before `unavailable` takes it again.
        let admitted = self.lock().admit(self.clock.now());
        let probe = match admitted {
            Admit::Call => false,
            Admit::Probe => true,
            Admit::Refuse(until) => return Err(self.unavailable(until)),
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut flight = InFlight {
            guard: self,
            probe,
            settled: false,
            called_at: None,
        };
        let Ok(Ok(_slot)) = tokio::time::timeout(self.call_timeout, self.slots.acquire()).await
        else {
            return Err(ProviderError::new(
                self.inner.name(),
                ErrorKind::Transient,
                format!(
                    "{} calls to it already in flight (providers.limits.max_in_flight) for {}",
                    self.max_in_flight,
                    crate::config::format_duration(self.call_timeout)
                ),
            ));
        };
        flight.called_at = Some(tokio::time::Instant::now());
        let out = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        };
        let answer = match &out {
            Err(e) if e.kind == ErrorKind::Transient => Answer::Trouble(e.to_string()),
            _ => Answer::Answered,
        };
        let now = self.clock.now();
        let (changed, snapshot) = {
            let mut b = self.lock();
            let changed = b.settle(now, probe, answer);
            (changed, b.clone())
        };
        flight.settled = true;
        drop(flight);
        if let Some(circuit) = changed {
            let name = self.inner.name().to_string();
            record(self.store.clone(), name, circuit, snapshot, now).await;
        }
        out
    }

    /// The half-open probe when nothing else calls: one inventory round trip.
    pub async fn probe(&self) -> ProviderResult<()> {
        self.guarded(self.inner.inventory()).await.map(|_| ())
    }
}

#[async_trait]
impl Provider for Guard {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn vendor_managed(&self) -> bool {
        self.inner.vendor_managed()
    }
    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance> {
        self.guarded(self.inner.create(spec)).await
    }
    async fn find(&self, key: &str) -> ProviderResult<Option<Instance>> {
        self.guarded(self.inner.find(key)).await
    }
    async fn status(&self, id: &str) -> ProviderResult<Instance> {
        self.guarded(self.inner.status(id)).await
    }
    async fn delete(&self, id: &str) -> ProviderResult<()> {
        self.guarded(self.inner.delete(id)).await
    }
    async fn suspend(&self, id: &str) -> ProviderResult<()> {
        self.guarded(self.inner.suspend(id)).await
    }
    async fn resume(&self, id: &str) -> ProviderResult<()> {
        self.guarded(self.inner.resume(id)).await
    }
    async fn resize(
        &self,
        id: &str,
        plan: &str,
        cpu: i64,
        memory_gb: i64,
        storage_gb: i64,
    ) -> ProviderResult<()> {
        self.guarded(self.inner.resize(id, plan, cpu, memory_gb, storage_gb))
            .await
    }
    async fn confirm_resize(&self, id: &str) -> ProviderResult<()> {
        self.guarded(self.inner.confirm_resize(id)).await
    }
    async fn revert_resize(&self, id: &str) -> ProviderResult<()> {
        self.guarded(self.inner.revert_resize(id)).await
    }
    async fn set_firewall(&self, id: &str, profile: &str) -> ProviderResult<()> {
        self.guarded(self.inner.set_firewall(id, profile)).await
    }
    async fn set_rdns(&self, id: &str, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()> {
        self.guarded(self.inner.set_rdns(id, ip, name)).await
    }
    async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
        self.guarded(self.inner.inventory()).await
    }
    async fn ping(&self, cluster: &str) -> ProviderResult<String> {
        self.guarded(self.inner.ping(cluster)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use std::sync::atomic::AtomicU32;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn trouble() -> Answer {
        Answer::Trouble("503".into())
    }

    #[test]
    fn the_circuit_opens_after_n_troubles_in_a_row_and_an_answer_resets_the_count() {
        let mut b = Breaker::new(3, Duration::from_secs(30));
        assert_eq!(b.settle(t(0), false, trouble()), None);
        assert_eq!(b.settle(t(1), false, trouble()), None);
        // An answer (even "not found") means the provider is there.
        assert_eq!(b.settle(t(2), false, Answer::Answered), None);
        assert_eq!(b.failures, 0);
        for s in 3..5 {
            assert_eq!(b.settle(t(s), false, trouble()), None);
        }
        assert_eq!(b.settle(t(5), false, trouble()), Some(Circuit::Open));
        assert_eq!(b.retry_at, Some(t(35)));
        assert_eq!(b.admit(t(10)), Admit::Refuse(t(35)));
        assert_eq!(b.circuit(t(10)), Circuit::Open);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_answer_decides() {
        let mut b = Breaker::new(1, Duration::from_secs(30));
        assert_eq!(b.settle(t(0), false, trouble()), Some(Circuit::Open));
        assert_eq!(b.circuit(t(30)), Circuit::HalfOpen);
        assert_eq!(b.admit(t(30)), Admit::Probe);
        // Only one at a time.
        assert!(matches!(b.admit(t(30)), Admit::Refuse(_)));
        // The probe fails: open again for a full cooldown, still counted since t(0).
        assert_eq!(b.settle(t(31), true, trouble()), Some(Circuit::Open));
        assert_eq!((b.opened_at, b.retry_at), (Some(t(0)), Some(t(61))));
        assert_eq!(b.admit(t(61)), Admit::Probe);
        // A call let through earlier that answers late does not close it; the probe does.
        assert_eq!(b.settle(t(61), false, Answer::Answered), None);
        assert_eq!(b.circuit(t(62)), Circuit::HalfOpen);
        assert_eq!(
            b.settle(t(62), true, Answer::Answered),
            Some(Circuit::Closed)
        );
        assert_eq!(b.admit(t(62)), Admit::Call);
        assert_eq!((b.opened_at, b.retry_at), (None, None));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_go() {
        let mut b = Breaker::new(1, Duration::from_secs(1));
        b.settle(t(0), false, trouble());
        assert_eq!(b.admit(t(2)), Admit::Probe);
        b.abandon_probe();
        assert_eq!(b.admit(t(2)), Admit::Probe);
    }

    /// A provider whose calls fail while `failing`, and whose inventory waits for `gate`;
    /// it counts the calls that reach it and the most at once.
    #[derive(Default)]
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        calls: AtomicU32,
        now: AtomicU32,
        most: AtomicU32,
        gate: tokio::sync::Notify,
    }

    #[async_trait]
    impl Provider for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn create(&self, _: &InstanceSpec) -> ProviderResult<Instance> {
            unimplemented!()
        }
        async fn find(&self, _: &str) -> ProviderResult<Option<Instance>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(ProviderError::new(
                    "flaky",
                    ErrorKind::Transient,
                    "HTTP 503",
                ));
            }
            Ok(None)
        }
        async fn status(&self, _: &str) -> ProviderResult<Instance> {
            unimplemented!()
        }
        async fn delete(&self, _: &str) -> ProviderResult<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::new(
                "flaky",
                ErrorKind::NotFound,
                "no such instance",
            ))
        }
        async fn suspend(&self, _: &str) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn resume(&self, _: &str) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn resize(&self, _: &str, _: &str, _: i64, _: i64, _: i64) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn confirm_resize(&self, _: &str) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn revert_resize(&self, _: &str) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn set_firewall(&self, _: &str, _: &str) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn set_rdns(&self, _: &str, _: Ipv4Addr, _: Option<&str>) -> ProviderResult<()> {
            unimplemented!()
        }
        async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            self.gate.notified().await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![])
        }
    }

    fn guard(flaky: &Arc<Flaky>, failures: u32, max: u32) -> Guard {
        let limits = ProviderLimits {
            breaker_failures: failures,
            breaker_cooldown: Duration::from_millis(200),
            max_in_flight: max,
        };
        Guard::new(
            flaky.clone(),
            &limits,
            Duration::from_secs(5),
            Arc::new(SystemClock),
            None,
        )
    }

    #[tokio::test]
    async fn an_open_circuit_refuses_without_calling_and_a_probe_closes_it() {
        let flaky = Arc::new(Flaky::default());
        flaky.failing.store(true, Ordering::SeqCst);
        let g = guard(&flaky, 3, 4);
        for _ in 0..3 {
            let e = g.find("k").await.expect_err("503");
            assert_eq!(e.kind, ErrorKind::Transient);
        }
        assert_eq!(g.view().circuit, Circuit::Open);
        let e = g.find("k").await.expect_err("open");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.retry_at.is_some());
        assert!(
            e.message
                .contains("after 3 failed calls in a row (last: flaky: HTTP 503)"),
            "{e}"
        );
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            3,
            "the open circuit called nothing"
        );
        // "Not found" is an answer: it does not count as trouble.
        flaky.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(g.view().circuit, Circuit::HalfOpen);
        g.find("k").await.expect("the probe");
        assert_eq!(g.view().circuit, Circuit::Closed);
        assert_eq!(
            g.delete("i").await.expect_err("gone").kind,
            ErrorKind::NotFound
        );
        assert_eq!(g.view().failures, 0);
    }

    /// A caller whose own timer, as long as the guard's, drops the call at the timeout:
    /// the timeout still counts against the circuit.
    #[tokio::test(start_paused = true)]
    async fn calls_dropped_at_the_timeout_count_as_timeouts() {
        let flaky = Arc::new(Flaky::default());
        let g = guard(&flaky, 3, 4);
        for _ in 0..3 {
            let out = tokio::time::timeout(Duration::from_secs(5), g.inventory()).await;
            match out {
                Err(_) => {}
                Ok(r) => assert_eq!(r.expect_err("timed out").kind, ErrorKind::Transient),
            }
        }
        let v = g.view();
        assert_eq!((v.circuit, v.failures, v.in_flight), (Circuit::Open, 3, 0));
        assert!(v
            .last_error
            .is_some_and(|e| e.contains("timed out after 5s")));
        // Dropped before the timeout (a cancelled worker): not the provider's fault.
        let g = guard(&flaky, 1, 4);
        let _ = tokio::time::timeout(Duration::from_secs(1), g.inventory()).await;
        assert_eq!((g.view().circuit, g.view().failures), (Circuit::Closed, 0));
    }

    #[tokio::test]
    async fn no_more_than_max_in_flight_calls_reach_the_provider_at_once() {
        let flaky = Arc::new(Flaky::default());
        let g = Arc::new(guard(&flaky, 3, 2));
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move { g.inventory().await })
            })
            .collect();
        // Let every call start; two reach the provider, three queue.
        while flaky.now.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(flaky.now.load(Ordering::SeqCst), 2);
        assert_eq!(g.view().in_flight, 5, "two calling, three queued");
        while flaky.calls.load(Ordering::SeqCst) < 5 || flaky.now.load(Ordering::SeqCst) > 0 {
            flaky.gate.notify_waiters();
            tokio::task::yield_now().await;
        }
        for c in calls {
            c.await.expect("join").expect("inventory");
        }
        assert_eq!(flaky.most.load(Ordering::SeqCst), 2);
        assert_eq!(g.view().in_flight, 0);
    }
}
