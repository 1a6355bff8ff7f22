//! The manual provider (seed 002): for vendor-managed servers mailfleet does not buy. Its
//! "instance" is the request's server at the vendor, known once an administrator enters its
//! IP address and SSH port (`mailfleet request provide`); until then the allocate step
//! leaves the request awaiting input. The network (firewall, PTR) and the server's power
//! are the vendor's: the pipeline leaves those tasks to the vendor and says so.

use super::{
    ErrorKind, Instance, InstanceSpec, InstanceStatus, Provider, ProviderError, ProviderResult,
};
use crate::clock::SharedClock;
use crate::store::{ManualAccess, Store, StoreError};
use async_trait::async_trait;
use std::net::Ipv4Addr;

pub const NAME: &str = "manual";
const PREFIX: &str = "manual-";

pub struct ManualProvider {
    store: Store,
    clock: SharedClock,
}

fn store_error(e: StoreError) -> ProviderError {
    ProviderError::new(NAME, ErrorKind::Transient, format!("the store: {e}"))
}

/// The instance id of a request's server: `manual-<request id>`.
fn instance_id(request_id: &str) -> String {
    format!("{PREFIX}{request_id}")
}

fn request_of(id: &str) -> ProviderResult<&str> {
    id.strip_prefix(PREFIX).ok_or_else(|| {
        ProviderError::new(
            NAME,
            ErrorKind::NotFound,
            format!("{id:?} is not a manual server"),
        )
    })
}

fn instance(request_id: &str, label: &str, access: Option<&ManualAccess>) -> Instance {
    let live = access.filter(|a| !a.released);
    Instance {
        id: instance_id(request_id),
        idempotency_key: Some(request_id.to_string()),
        label: label.to_string(),
        region: String::new(),
        status: match (access, live) {
            (_, Some(_)) => InstanceStatus::Running,
            (Some(_), None) => InstanceStatus::Deleted,
            (None, None) => InstanceStatus::Building,
        },
        ip: live.map(|a| a.ip),
        firewall: None,
        rdns: None,
    }
}

impl ManualProvider {
    pub fn new(store: Store, clock: SharedClock) -> ManualProvider {
        ManualProvider { store, clock }
    }

    async fn lookup(&self, request_id: &str) -> ProviderResult<Instance> {
        let access = self
            .store
            .manual_access(request_id)
            .await
            .map_err(store_error)?;
        Ok(instance(request_id, request_id, access.as_ref()))
    }

    fn vendors(what: &str) -> ProviderError {
        ProviderError::new(
            NAME,
            ErrorKind::Invalid,
            format!("{what} of a vendor-managed server is done at its vendor, not by mailfleet"),
        )
    }
}

#[async_trait]
impl Provider for ManualProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn vendor_managed(&self) -> bool {
        true
    }

    /// Nothing is bought: the request's server is the one its access details name.
    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance> {
        let mut inst = self.lookup(&spec.idempotency_key).await?;
        inst.label = spec.label.clone();
        inst.region = spec.region.clone();
        Ok(inst)
    }

    async fn find(&self, key: &str) -> ProviderResult<Option<Instance>> {
        Ok(Some(self.lookup(key).await?))
    }

    async fn status(&self, id: &str) -> ProviderResult<Instance> {
        self.lookup(request_of(id)?).await
    }

    /// The server goes back to its vendor: mailfleet forgets its access details.
    async fn delete(&self, id: &str) -> ProviderResult<()> {
        self.store
            .release_manual_access(request_of(id)?, self.clock.now())
            .await
            .map_err(store_error)
    }

    /// The vendor keeps the server running; the node leaves rotation in mailfleet.
    async fn suspend(&self, id: &str) -> ProviderResult<()> {
        request_of(id).map(|_| ())
    }

    async fn resume(&self, id: &str) -> ProviderResult<()> {
        request_of(id).map(|_| ())
    }

    async fn resize(&self, _: &str, _: &str, _: i64, _: i64, _: i64) -> ProviderResult<()> {
        Err(Self::vendors("resizing"))
    }

    async fn confirm_resize(&self, _: &str) -> ProviderResult<()> {
        Ok(())
    }

    async fn revert_resize(&self, _: &str) -> ProviderResult<()> {
        Ok(())
    }

    async fn set_firewall(&self, _: &str, _: &str) -> ProviderResult<()> {
        Err(Self::vendors("the firewall"))
    }

    async fn set_rdns(&self, _: &str, _: Ipv4Addr, _: Option<&str>) -> ProviderResult<()> {
        Err(Self::vendors("the PTR record"))
    }

    async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
        let live = self.store.manual_access_live().await.map_err(store_error)?;
        Ok(live
            .iter()
            .map(|a| instance(&a.request_id, &a.request_id, Some(a)))
            .collect())
    }
}
