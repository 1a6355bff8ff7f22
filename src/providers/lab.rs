//! The lab as a cloud (`provider = "lab"`): each instance a real host on this machine, a
//! network namespace with its own address and SSH server (see [`crate::lab`]), recorded in
//! the database so that a crash cannot make the lab forget what it made. Creating,
//! deleting and listing go through the same interface as any cloud's.

use super::{
    ErrorKind, Instance, InstanceSpec, InstanceStatus, Provider, ProviderError, ProviderResult,
};
use crate::clock::SharedClock;
use crate::dns::DnsProvider;
use crate::lab::LabSpec;
use crate::store::lab::{LabChange, LabInstanceRow, LabNew};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const NAME: &str = "lab";

pub struct LabProvider {
    store: Store,
    spec: LabSpec,
    clock: SharedClock,
    /// The environment variable holding the sealing key mailfleet's SSH identity is kept
    /// under (`[dkim] key_env`): every host takes its public half for root.
    key_env: String,
    /// That public half, read (or made) once.
    authorized_key: tokio::sync::OnceCell<String>,
    /// The DNS server the lab's reverse zone is on (`[dns] provider = "powerdns"`):
    /// `set_rdns` writes a real PTR there. `None`: the PTR is only recorded.
    ptr: Option<Arc<dyn DnsProvider>>,
}

fn err(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(NAME, kind, message)
}

fn store_err(e: StoreError) -> ProviderError {
    err(ErrorKind::Transient, format!("inventory unavailable: {e}"))
}

impl LabProvider {
    pub fn new(store: Store, spec: LabSpec, clock: SharedClock, key_env: String) -> Self {
        Self {
            store,
            spec,
            clock,
            key_env,
            authorized_key: tokio::sync::OnceCell::new(),
            ptr: None,
        }
    }

    /// PTR records written into `dns`, in the lab's reverse zone.
    pub fn with_ptr(mut self, dns: Arc<dyn DnsProvider>) -> Self {
        self.ptr = Some(dns);
        self
    }

    /// Makes the PTR of `ip` name `name` (and only it), or removes it.
    async fn write_ptr(&self, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()> {
        let Some(dns) = &self.ptr else {
            return Ok(());
        };
        let zone = self.spec.reverse_zone();
        let o = ip.octets();
        let at = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
        let want = name.map(|n| format!("{}.", n.trim_end_matches('.').to_ascii_lowercase()));
        let dns_err = |e: crate::dns::DnsError| {
            let kind = if e.retryable() {
                ErrorKind::Transient
            } else {
                ErrorKind::Invalid
            };
            err(kind, format!("PTR of {ip} in {zone}: {e}"))
        };
        let there = dns.lookup(&zone, &at, "PTR").await.map_err(dns_err)?;
        let stale: Vec<_> = there
            .into_iter()
            .filter(|p| Some(p.content.to_ascii_lowercase()) != want)
            .collect();
        dns.remove(&zone, &stale).await.map_err(dns_err)?;
        if let Some(content) = want {
            let record = crate::domain::records::PlannedRecord {
                purpose: "ptr",
                name: at,
                rtype: "PTR",
                ttl: 60,
                content,
                strings: Vec::new(),
            };
            dns.publish(&zone, &[record]).await.map_err(dns_err)?;
        }
        Ok(())
    }

    /// Runs the lab's machinery (processes, `ip`) off the async threads.
    async fn machine<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&LabSpec) -> Result<T, crate::lab::LabError> + Send + 'static,
    ) -> ProviderResult<T> {
        let spec = self.spec.clone();
        let what = what.to_string();
        tokio::task::spawn_blocking(move || f(&spec))
            .await
            .map_err(|e| err(ErrorKind::Transient, format!("{what}: {e}")))?
            .map_err(|e| err(ErrorKind::Transient, format!("{what}: {e}")))
    }

    /// The instance as the machine has it.
    async fn to_instance(&self, row: &LabInstanceRow) -> ProviderResult<Instance> {
        let status = if row.deleted_at.is_some() {
            InstanceStatus::Deleted
        } else {
            let host_id = row.host_id.clone();
            let host = self.machine("status", move |l| l.host(&host_id)).await?;
            match host {
                Some(h) if h.sshd_pid.is_some() => InstanceStatus::Running,
                Some(_) if row.power == "stopped" => InstanceStatus::Stopped,
                // Made in the inventory but not (or not fully) on the machine: a create
                // that will be finished when it is asked again.
                _ => InstanceStatus::Building,
            }
        };
        Ok(Instance {
            id: row.id.clone(),
            idempotency_key: Some(row.idempotency_key.clone()),
            label: row.label.clone(),
            region: row.region.clone(),
            status,
            ip: if status == InstanceStatus::Running || status == InstanceStatus::Stopped {
                row.ip.parse().ok()
            } else {
                None
            },
            firewall: row.firewall.clone(),
            rdns: row.rdns.clone(),
        })
    }

    async fn live(&self, id: &str) -> ProviderResult<LabInstanceRow> {
        match self.store.lab_get(id).await.map_err(store_err)? {
            Some(row) if row.deleted_at.is_none() => Ok(row),
            _ => Err(err(ErrorKind::NotFound, format!("no lab instance {id}"))),
        }
    }

    async fn change(&self, id: &str, change: LabChange) -> ProviderResult<()> {
        if self
            .store
            .lab_update(id, change, self.clock.now())
            .await
            .map_err(store_err)?
        {
            Ok(())
        } else {
            Err(err(ErrorKind::NotFound, format!("no lab instance {id}")))
        }
    }
}

#[async_trait]
impl Provider for LabProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// The inventory row first (by idempotency key: a retried create finds it), then the
    /// host on the machine, made if it is not there yet.
    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance> {
        let new_id = crate::domain::ids::new_id();
        let n = LabNew {
            id: format!("lab-{}", &new_id[24..]),
            host_id: new_id[28..].to_string(),
            idempotency_key: spec.idempotency_key.clone(),
            cluster: spec.cluster.clone(),
            region: spec.region.clone(),
            label: spec.label.clone(),
            plan: spec.plan.clone(),
            range: self.spec.host_range(),
        };
        let row = self
            .store
            .lab_create(n, self.clock.now())
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                err(
                    ErrorKind::Transient,
                    format!(
                        "create: no free address left in the lab's subnet {}/{}",
                        self.spec.subnet.0, self.spec.subnet.1
                    ),
                )
            })?;
        if row.deleted_at.is_some() {
            return self.to_instance(&row).await;
        }
        let ip: Ipv4Addr = row.ip.parse().map_err(|_| {
            err(
                ErrorKind::Invalid,
                format!("create: bad address {}", row.ip),
            )
        })?;
        let key = self
            .authorized_key
            .get_or_try_init(|| async {
                crate::access::provisioning_identity(&self.store, &self.key_env, self.clock.now())
                    .await
                    .map(|id| id.public)
                    .map_err(|e| err(ErrorKind::Invalid, format!("create: {e}")))
            })
            .await?
            .clone();
        let host_id = row.host_id.clone();
        self.machine("create", move |l| {
            l.up()?;
            l.create_host(&host_id, ip, &key)
        })
        .await?;
        self.to_instance(&row).await
    }

    async fn find(&self, key: &str) -> ProviderResult<Option<Instance>> {
        match self.store.lab_find_by_key(key).await.map_err(store_err)? {
            Some(row) => Ok(Some(self.to_instance(&row).await?)),
            None => Ok(None),
        }
    }

    async fn status(&self, id: &str) -> ProviderResult<Instance> {
        match self.store.lab_get(id).await.map_err(store_err)? {
            Some(row) => self.to_instance(&row).await,
            None => Err(err(ErrorKind::NotFound, format!("no lab instance {id}"))),
        }
    }

    async fn delete(&self, id: &str) -> ProviderResult<()> {
        let row = match self.live(id).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Ok(ip) = row.ip.parse() {
            self.write_ptr(ip, None).await?;
        }
        let host_id = row.host_id.clone();
        self.machine("delete", move |l| l.delete_host(&host_id))
            .await?;
        self.change(id, LabChange::Delete).await?;
        // Its address may be another host's next, with another host key.
        self.store.forget_host_key(id).await.map_err(store_err)
    }

    async fn suspend(&self, id: &str) -> ProviderResult<()> {
        let row = self.live(id).await?;
        let host_id = row.host_id.clone();
        self.machine("suspend", move |l| l.stop_host(&host_id))
            .await?;
        self.change(id, LabChange::Power("stopped")).await
    }

    async fn resume(&self, id: &str) -> ProviderResult<()> {
        let row = self.live(id).await?;
        let host_id = row.host_id.clone();
        self.machine("resume", move |l| l.start_host(&host_id).map(|_| ()))
            .await?;
        self.change(id, LabChange::Power("running")).await
    }

    /// A lab host has the machine's resources: a resize records the plan, and confirming
    /// or reverting has nothing to do.
    async fn resize(&self, id: &str, plan: &str, _: i64, _: i64, _: i64) -> ProviderResult<()> {
        self.live(id).await?;
        self.change(id, LabChange::Plan(plan.to_string())).await
    }

    async fn confirm_resize(&self, _: &str) -> ProviderResult<()> {
        Ok(())
    }

    async fn revert_resize(&self, _: &str) -> ProviderResult<()> {
        Ok(())
    }

    /// Recorded: the host's own firewall is what the bootstrap installs in it.
    async fn set_firewall(&self, id: &str, profile: &str) -> ProviderResult<()> {
        self.change(id, LabChange::Firewall(profile.to_string()))
            .await
    }

    async fn set_rdns(&self, id: &str, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()> {
        let row = self.live(id).await?;
        if row.ip != ip.to_string() {
            return Err(err(
                ErrorKind::Invalid,
                format!("set_rdns: {ip} is not instance {id}'s address"),
            ));
        }
        self.write_ptr(ip, name).await?;
        self.change(id, LabChange::Rdns(name.map(String::from)))
            .await
    }

    async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
        let rows = self.store.lab_list_live().await.map_err(store_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.to_instance(r).await?);
        }
        Ok(out)
    }
}
