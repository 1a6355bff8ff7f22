//! Cloud providers behind one trait: what a cloud's API does (create, status, delete,
//! power, resize, PTR, firewall, inventory). `sim` is the embedded default cloud;
//! `hostwinds` is Hostwinds' API. Reaching the machine itself (installing the mail stack,
//! checking it answers) is not a provider's job: see [`crate::access`]. Each cluster's
//! provider comes from the [`Registry`], built once at start-up.

pub mod guard;
pub mod hostwinds;
pub mod lab;
pub mod manual;
pub mod registry;
pub mod sim;

pub use registry::{Binding, Registry, RegistryError};

use async_trait::async_trait;
use serde::Serialize;
use std::net::Ipv4Addr;

/// What to create. The idempotency key is the request id: creating twice with the same key
/// returns the first instance instead of a second one.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub idempotency_key: String,
    pub label: String,
    pub hostname: String,
    pub region: String,
    pub cluster: String,
    pub plan: String,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    /// mailfleet's SSH public key (an OpenSSH line) for the instance's root account, when
    /// its cluster reaches its machines over SSH.
    pub ssh_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Building,
    Running,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub label: String,
    pub region: String,
    pub status: InstanceStatus,
    /// Set once the provider has assigned it.
    pub ip: Option<Ipv4Addr>,
    pub firewall: Option<String>,
    pub rdns: Option<String>,
}

/// A check the verify step runs against a running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// TCP 25 reachable and the SMTP banner answers.
    Smtp,
    /// TCP 587 reachable and STARTTLS offered.
    Submission,
    /// A test message accepted for the internal sink.
    TestMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying: timeouts, 5xx, rate limits.
    Transient,
    /// The instance does not exist (or no longer does).
    NotFound,
    /// The request was refused as it stands; retrying will not help.
    Invalid,
    /// Not called: the provider's circuit is open (see [`guard`]). Wait until `retry_at`
    /// instead of retrying.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    pub provider: String,
    pub kind: ErrorKind,
    pub message: String,
    /// For `Unavailable`: when the provider is tried again.
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ProviderError {
    pub fn new(provider: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            provider: provider.to_string(),
            kind,
            message: message.into(),
            retry_at: None,
        }
    }

    pub fn retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    /// Starts creating an instance; it is `Building` until it has an IP. Idempotent.
    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance>;
    /// The instance created with this idempotency key, if any (deleted ones included).
    async fn find(&self, idempotency_key: &str) -> ProviderResult<Option<Instance>>;
    async fn status(&self, id: &str) -> ProviderResult<Instance>;
    /// Deletes an instance; deleting one already gone succeeds.
    async fn delete(&self, id: &str) -> ProviderResult<()>;
    async fn suspend(&self, id: &str) -> ProviderResult<()>;
    async fn resume(&self, id: &str) -> ProviderResult<()>;
    /// Orders and applies a resize to `plan`: the instance runs on the new size (it may
    /// restart, and reads as building until it is back), but the change is final only once
    /// confirmed. A resize that fails part-way leaves no order open.
    async fn resize(
        &self,
        id: &str,
        plan: &str,
        cpu: i64,
        memory_gb: i64,
        storage_gb: i64,
    ) -> ProviderResult<()>;
    /// Makes an applied resize final. With none pending it succeeds: a confirm retried
    /// after the provider took it finds nothing left to do.
    async fn confirm_resize(&self, id: &str) -> ProviderResult<()>;
    /// Undoes a resize not yet confirmed: the instance goes back to its former size. With
    /// none pending it succeeds.
    async fn revert_resize(&self, id: &str) -> ProviderResult<()>;
    async fn set_firewall(&self, id: &str, profile: &str) -> ProviderResult<()>;
    /// Sets (or with `None`, resets) the PTR record of the instance's IP.
    async fn set_rdns(&self, id: &str, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()>;
    /// Every live instance the provider has.
    async fn inventory(&self) -> ProviderResult<Vec<Instance>>;
    /// Its servers are a vendor's, entered by an administrator (the manual provider): the
    /// allocate step waits for their access details, and the firewall, PTR and power are
    /// left to the vendor.
    fn vendor_managed(&self) -> bool {
        false
    }
    /// A connectivity check: one real round trip to the provider for `cluster`. Returns what
    /// it answered, in words. By default it lists the inventory.
    async fn ping(&self, cluster: &str) -> ProviderResult<String> {
        let _ = cluster;
        let n = self.inventory().await?.len();
        Ok(format!("{n} live instances"))
    }
}
