//! Reaching a node itself, not its cloud: installing the mail stack and checking that it
//! answers. A cloud's API creates, powers and deletes machines (`providers`); what runs on a
//! machine is reached through the machine (SSH, SMTP), which is this module's job.
//!
//! Two kinds today: the simulated cloud's machines ([`crate::providers::sim::SimProvider`]
//! implements [`NodeAccess`] from its inventory), and [`ProviderView`], which checks what the
//! cluster's provider reports of the instance, for a real cloud whose machines this process
//! cannot reach (contract tests, demos against a provider's test account). SSH bootstrap
//! and real SMTP checks come with the lab of real hosts.

pub mod remote;
pub mod sink;
pub mod smtp;
pub mod ssh;
pub mod verdict;

use crate::providers::{ErrorKind, InstanceStatus, Probe, Provider, ProviderError, ProviderResult};
use async_trait::async_trait;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The node a bootstrap or check is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    /// The instance's id at its provider.
    pub instance_id: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
    /// The domain it sends for (and signs as).
    pub domain: String,
}

#[async_trait]
pub trait NodeAccess: Send + Sync {
    /// How the node is reached, for messages and records ("sim", "provider-view", ...).
    fn name(&self) -> &str;
    /// Installs the mail stack (cloud-init user data or an SSH script).
    async fn bootstrap(&self, node: &NodeRef, user_data: &str) -> ProviderResult<()>;
    /// Runs a verify check; returns what the server answered.
    async fn probe(&self, node: &NodeRef, probe: Probe) -> ProviderResult<String>;
    /// The access that reaches the machine itself over SSH, installing the mail stack sub-task
    /// by sub-task instead of by cloud-init.
    fn ssh(&self) -> Option<&remote::SshAccess> {
        None
    }
}

/// Checks a node by what its provider reports: running, with the IP the pipeline recorded.
/// Nothing is installed and nothing is connected to; the answers say so. For clusters whose
/// machines this process cannot reach (`access = "provider-view"`).
pub struct ProviderView {
    provider: Arc<dyn Provider>,
}

pub const PROVIDER_VIEW: &str = "provider-view";

impl ProviderView {
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self { provider }
    }

    async fn running(&self, node: &NodeRef, what: &str) -> ProviderResult<()> {
        let inst = self.provider.status(&node.instance_id).await?;
        let fail = |kind, msg: String| Err(ProviderError::new(PROVIDER_VIEW, kind, msg));
        match inst.status {
            InstanceStatus::Running => {}
            InstanceStatus::Building => {
                return fail(
                    ErrorKind::Transient,
                    format!("{what}: instance {} is still building", node.instance_id),
                )
            }
            s => {
                return fail(
                    ErrorKind::Invalid,
                    format!("{what}: instance {} is {s:?}", node.instance_id),
                )
            }
        }
        if inst.ip != Some(node.ip) {
            return fail(
                ErrorKind::Invalid,
                format!(
                    "{what}: the provider reports instance {} at {}, not {}",
                    node.instance_id,
                    inst.ip
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "no IP".into()),
                    node.ip
                ),
            );
        }
        Ok(())
    }
}

#[async_trait]
impl NodeAccess for ProviderView {
    fn name(&self) -> &str {
        PROVIDER_VIEW
    }

    async fn bootstrap(&self, node: &NodeRef, user_data: &str) -> ProviderResult<()> {
        if user_data.trim().is_empty() {
            return Err(ProviderError::new(
                PROVIDER_VIEW,
                ErrorKind::Invalid,
                "bootstrap: empty user data",
            ));
        }
        self.running(node, "bootstrap").await
    }

    async fn probe(&self, node: &NodeRef, probe: Probe) -> ProviderResult<String> {
        self.running(node, "probe").await?;
        Ok(format!(
            "{:?}: instance {} running at {} by its provider (node not contacted)",
            probe, node.instance_id, node.ip
        ))
    }
}

/// mailfleet's provisioning identity: the one in the store, or a new one made and kept
/// (sealed under `$key_env`, else in a file beside the database).
pub async fn provisioning_identity(
    store: &crate::store::Store,
    key_env: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ssh::Identity, String> {
    const NAME: &str = "provisioning";
    let aad = "ssh/provisioning";
    let kept = match store.ssh_identity(NAME).await.map_err(|e| e.to_string())? {
        Some(k) => k,
        None => {
            let (_, der) = ssh::Identity::generate().map_err(|e| e.to_string())?;
            let dir = store.key_dir("ssh");
            let k = crate::dkim::keep(key_env, &dir, "provisioning", &der, aad)
                .map_err(|e| format!("the SSH key: {e}"))?;
            let public = ssh::Identity::from_pkcs8(&der)
                .map_err(|e| e.to_string())?
                .public;
            store
                .save_ssh_identity(
                    NAME,
                    crate::store::KeptIdentity {
                        public_key: public,
                        key_sealed: k.sealed,
                        key_file: k.file.map(|f| store.key_record(std::path::Path::new(&f))),
                    },
                    now,
                )
                .await
                .map_err(|e| e.to_string())?
        }
    };
    let file = kept
        .key_file
        .as_deref()
        .map(|f| store.key_path(f).display().to_string());
    let der = crate::dkim::recover(key_env, kept.key_sealed.as_deref(), file.as_deref(), aad)
        .map_err(|e| format!("the SSH key: {e}"))?;
    ssh::Identity::from_pkcs8(&der).map_err(|e| e.to_string())
}
