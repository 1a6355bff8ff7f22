//! The simulated cloud: the embedded default for demos and tests. It behaves like a cloud,
//! not a stub: every call takes time and may fail with a message; creation is asynchronous
//! (poll until the IP appears); its inventory lives in the same database, so a crash cannot
//! make it forget what exists; IPs come from documentation ranges.

use super::{
    ErrorKind, Instance, InstanceSpec, InstanceStatus, Probe, Provider, ProviderError,
    ProviderResult,
};
use crate::access::{NodeAccess, NodeRef};
use crate::clock::{parse_ts, SharedClock};
use crate::config::SimConfig;
use crate::domain::ids::new_id;
use crate::store::sim::{SimChange, SimCreate, SimCreated, SimInstanceRow};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

pub const NAME: &str = "sim";

/// What a flaky cloud says when it fails.
const FAILURES: [&str; 6] = [
    "503 Service Unavailable: the API is overloaded, try again",
    "504 Gateway Timeout: upstream did not answer in time",
    "429 Too Many Requests: rate limit of 10 calls/s exceeded",
    "500 Internal Server Error: hypervisor did not acknowledge the task",
    "409 Conflict: another task is running on this instance",
    "connection reset by peer",
];

pub struct SimProvider {
    store: Store,
    cfg: SimConfig,
    clock: SharedClock,
    rng: Mutex<StdRng>,
    pools: Vec<(u32, u32)>,
}

impl std::fmt::Debug for SimProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProvider")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Parses "198.51.100.0/24" into the usable host range (network and broadcast left out).
pub fn parse_pool(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if !(8..=30).contains(&len) {
        return None;
    }
    let net = u32::from(addr) & (u32::MAX << (32 - len));
    let size = 1u32 << (32 - len);
    Some((net + 1, net + size - 2))
}

impl SimProvider {
    pub fn new(store: Store, cfg: SimConfig, clock: SharedClock) -> Self {
        let pools = cfg.ip_pools.iter().filter_map(|p| parse_pool(p)).collect();
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
            store,
            cfg,
            clock,
            pools,
        }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn between(&self, range: [u64; 2]) -> u64 {
        let [lo, hi] = range;
        if hi <= lo {
            lo
        } else {
            self.rng().gen_range(lo..=hi)
        }
    }

    /// Every call: the network and API take their time, and sometimes fail.
    async fn call(&self, what: &str) -> ProviderResult<()> {
        let ms = self.between(self.cfg.delay_ms);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let (fail, pick) = {
            let mut rng = self.rng();
            (
                rng.gen::<f64>() < self.cfg.failure_rate,
                rng.gen_range(0..FAILURES.len()),
            )
        };
        if fail {
            return Err(ProviderError::new(
                NAME,
                ErrorKind::Transient,
                format!("{what}: {}", FAILURES[pick]),
            ));
        }
        Ok(())
    }

    fn store_err(e: StoreError) -> ProviderError {
        ProviderError::new(
            NAME,
            ErrorKind::Transient,
            format!("inventory unavailable: {e}"),
        )
    }

    fn to_instance(&self, row: &SimInstanceRow) -> Instance {
        let now = self.clock.now();
        let built = parse_ts(&row.ready_at).is_none_or(|t| t <= now);
        let status = match (row.deleted_at.is_some(), row.power.as_str(), built) {
            (true, _, _) => InstanceStatus::Deleted,
            (false, "building", false) => InstanceStatus::Building,
            (false, "stopped", _) => InstanceStatus::Stopped,
            _ => InstanceStatus::Running,
        };
        Instance {
            id: row.id.clone(),
            idempotency_key: Some(row.idempotency_key.clone()),
            label: row.label.clone(),
            region: row.region.clone(),
            status,
            ip: if status == InstanceStatus::Building {
                None
            } else {
                row.ip.parse().ok()
            },
            firewall: row.firewall.clone(),
            rdns: row.rdns.clone(),
        }
    }

    async fn live(&self, id: &str) -> ProviderResult<Instance> {
        match self.store.sim_get(id).await.map_err(Self::store_err)? {
            Some(row) if row.deleted_at.is_none() => Ok(self.to_instance(&row)),
            _ => Err(ProviderError::new(
                NAME,
                ErrorKind::NotFound,
                format!("404 Not Found: no instance {id}"),
            )),
        }
    }

    /// Applies a change; when the instance is missing or not in a state for it, reads it to
    /// say why (`what` names the call).
    async fn change(&self, id: &str, what: &str, change: SimChange) -> ProviderResult<()> {
        let ok = self
            .store
            .sim_update(id, change.clone(), self.clock.now())
            .await
            .map_err(Self::store_err)?;
        if ok {
            return Ok(());
        }
        let inst = self.live(id).await?;
        if let SimChange::Rdns { ip, .. } = &change {
            if inst.ip.map(|i| i.to_string()).as_deref() != Some(ip.as_str()) {
                return Err(ProviderError::new(
                    NAME,
                    ErrorKind::Invalid,
                    format!("{what}: {ip} is not assigned to instance {id}"),
                ));
            }
        }
        Self::running(&inst, what)?;
        Err(ProviderError::new(
            NAME,
            ErrorKind::Transient,
            format!("{what}: instance {id} did not take the change"),
        ))
    }

    fn running(inst: &Instance, what: &str) -> ProviderResult<()> {
        match inst.status {
            InstanceStatus::Running => Ok(()),
            InstanceStatus::Building => Err(ProviderError::new(
                NAME,
                ErrorKind::Transient,
                format!("{what}: instance {} is still building", inst.id),
            )),
            s => Err(ProviderError::new(
                NAME,
                ErrorKind::Invalid,
                format!("{what}: instance {} is {s:?}", inst.id),
            )),
        }
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance> {
        self.call("create").await?;
        let boot = self.between(self.cfg.boot_ms);
        let now = self.clock.now();
        let ip_candidates: Vec<Ipv4Addr> = {
            let mut rng = self.rng();
            (0..8)
                .filter_map(|_| {
                    let (lo, hi) = *self.pools.get(rng.gen_range(0..self.pools.len().max(1)))?;
                    Some(Ipv4Addr::from(rng.gen_range(lo..=hi)))
                })
                .collect()
        };
        let created = self
            .store
            .sim_create(
                SimCreate {
                    id: format!("sim-{}", &new_id()[24..]),
                    idempotency_key: spec.idempotency_key.clone(),
                    cluster: spec.cluster.clone(),
                    region: spec.region.clone(),
                    label: spec.label.clone(),
                    plan: spec.plan.clone(),
                    cpu: spec.cpu,
                    memory_gb: spec.memory_gb,
                    storage_gb: spec.storage_gb,
                    ready_at: now
                        + chrono::Duration::milliseconds(i64::try_from(boot).unwrap_or(0)),
                    ip_candidates,
                    ip_pools: self.pools.clone(),
                },
                now,
            )
            .await
            .map_err(Self::store_err)?;
        match created {
            SimCreated::New(row) | SimCreated::Existing(row) => Ok(self.to_instance(&row)),
            SimCreated::PoolExhausted => Err(ProviderError::new(
                NAME,
                ErrorKind::Transient,
                format!(
                    "create: no free IPv4 address left in {}",
                    self.cfg.ip_pools.join(", ")
                ),
            )),
        }
    }

    async fn find(&self, key: &str) -> ProviderResult<Option<Instance>> {
        self.call("find").await?;
        let row = self
            .store
            .sim_find_by_key(key)
            .await
            .map_err(Self::store_err)?;
        Ok(row.map(|r| self.to_instance(&r)))
    }

    async fn status(&self, id: &str) -> ProviderResult<Instance> {
        self.call("status").await?;
        self.live(id).await
    }

    async fn delete(&self, id: &str) -> ProviderResult<()> {
        self.call("delete").await?;
        match self.change(id, "delete", SimChange::Delete).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn suspend(&self, id: &str) -> ProviderResult<()> {
        self.call("suspend").await?;
        let inst = self.live(id).await?;
        if inst.status == InstanceStatus::Stopped {
            return Ok(());
        }
        Self::running(&inst, "suspend")?;
        self.change(id, "suspend", SimChange::Power("stopped".into()))
            .await
    }

    async fn resume(&self, id: &str) -> ProviderResult<()> {
        self.call("resume").await?;
        self.change(id, "resume", SimChange::Power("running".into()))
            .await
    }

    /// The instance restarts on its new size (building again for a boot's time); its
    /// former size is kept until the resize is confirmed or reverted.
    async fn resize(
        &self,
        id: &str,
        plan: &str,
        cpu: i64,
        memory_gb: i64,
        storage_gb: i64,
    ) -> ProviderResult<()> {
        self.call("resize").await?;
        let inst = self.live(id).await?;
        Self::running(&inst, "resize")?;
        let boot = self.between(self.cfg.boot_ms);
        let resize = SimChange::Resize {
            cpu,
            memory_gb,
            storage_gb,
            plan: plan.to_string(),
            ready_at: self.clock.now()
                + chrono::Duration::milliseconds(i64::try_from(boot).unwrap_or(0)),
        };
        self.change(id, "resize", resize).await
    }

    async fn confirm_resize(&self, id: &str) -> ProviderResult<()> {
        self.call("confirm_resize").await?;
        self.live(id).await?;
        self.change(id, "confirm_resize", SimChange::ConfirmResize)
            .await
    }

    async fn revert_resize(&self, id: &str) -> ProviderResult<()> {
        self.call("revert_resize").await?;
        match self.live(id).await {
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        self.change(id, "revert_resize", SimChange::RevertResize)
            .await
    }

    async fn set_firewall(&self, id: &str, profile: &str) -> ProviderResult<()> {
        self.call("set_firewall").await?;
        self.change(id, "set_firewall", SimChange::Firewall(profile.to_string()))
            .await
    }

    async fn set_rdns(&self, id: &str, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()> {
        self.call("set_rdns").await?;
        let rdns = SimChange::Rdns {
            ip: ip.to_string(),
            name: name.map(str::to_string),
        };
        self.change(id, "set_rdns", rdns).await
    }

    async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
        self.call("inventory").await?;
        let rows = self.store.sim_list_live().await.map_err(Self::store_err)?;
        Ok(rows.iter().map(|r| self.to_instance(r)).collect())
    }

    /// The API's latency (and failure rate) plus a query of the simulated inventory.
    async fn ping(&self, cluster: &str) -> ProviderResult<String> {
        self.call("ping").await?;
        let n = self
            .store
            .sim_count_live(cluster)
            .await
            .map_err(Self::store_err)?;
        Ok(format!("{n} live instances in {cluster}"))
    }
}

/// The simulated cloud's machines: installed and checked through its inventory.
#[async_trait]
impl NodeAccess for SimProvider {
    fn name(&self) -> &str {
        NAME
    }

    async fn bootstrap(&self, node: &NodeRef, user_data: &str) -> ProviderResult<()> {
        self.call("bootstrap").await?;
        if user_data.trim().is_empty() {
            return Err(ProviderError::new(
                NAME,
                ErrorKind::Invalid,
                "bootstrap: empty user data",
            ));
        }
        self.change(&node.instance_id, "bootstrap", SimChange::MailStack)
            .await
    }

    async fn probe(&self, node: &NodeRef, probe: Probe) -> ProviderResult<String> {
        self.call("probe").await?;
        let id = node.instance_id.as_str();
        let row = match self.store.sim_get(id).await.map_err(Self::store_err)? {
            Some(r) if r.deleted_at.is_none() => r,
            _ => {
                return Err(ProviderError::new(
                    NAME,
                    ErrorKind::NotFound,
                    format!("no instance {id}"),
                ))
            }
        };
        let inst = self.to_instance(&row);
        let ip = row.ip.clone();
        let refused = |port: u16| {
            ProviderError::new(
                NAME,
                ErrorKind::Transient,
                format!("connect {ip}:{port}: connection refused"),
            )
        };
        let port = if probe == Probe::Submission { 587 } else { 25 };
        if inst.status != InstanceStatus::Running || !row.mail_stack {
            return Err(refused(port));
        }
        if row.firewall.as_deref() != Some("smtp") {
            return Err(ProviderError::new(
                NAME,
                ErrorKind::Transient,
                format!("connect {ip}:{port}: timed out (firewall)"),
            ));
        }
        let host = row.rdns.clone().unwrap_or_else(|| row.label.clone());
        Ok(match probe {
            Probe::Smtp => format!("220 {host} ESMTP Postfix (Ubuntu)"),
            Probe::Submission => format!("250-{host} STARTTLS offered on 587"),
            Probe::TestMessage => {
                format!("250 2.0.0 Ok: queued as {}", &row.id[4..].to_uppercase())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_leave_out_network_and_broadcast() {
        let (lo, hi) = parse_pool("198.51.100.0/24").expect("pool");
        assert_eq!(Ipv4Addr::from(lo), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(Ipv4Addr::from(hi), Ipv4Addr::new(198, 51, 100, 254));
        assert!(parse_pool("10.0.0.0/31").is_none());
        assert!(parse_pool("nonsense").is_none());
    }
}
