//! Which provider serves which cluster, built once at start-up: the one place where
//! provider clients are made from the config.

use super::guard::Guard;
use super::{Provider, ProviderError};
use crate::access::{NodeAccess, ProviderView};
use crate::clock::SharedClock;
use crate::config::{AccessKind, Config};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;

/// A cluster's cloud and the way to its machines.
#[derive(Clone)]
pub struct Binding {
    pub provider: Arc<dyn Provider>,
    pub access: Arc<dyn NodeAccess>,
}

/// Cluster name → its provider. Clusters on the same kind of provider share one client.
#[derive(Clone, Default)]
pub struct Registry {
    clusters: HashMap<String, Binding>,
    /// Each distinct provider client once, in config order.
    providers: Vec<Arc<dyn Provider>>,
    /// The breaker and bulkhead of each client `build` made (tests that bring their own
    /// provider have none).
    guards: Vec<Arc<Guard>>,
}

/// Why the registry could not be built: a cluster's provider cannot be used as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(pub String);

impl Registry {
    /// Builds every cluster's provider from the config. A secret the config names but the
    /// environment does not hold is an error here, at start-up, naming the cluster and field.
    pub fn build(
        cfg: &Config,
        store: &Store,
        clock: &SharedClock,
    ) -> Result<Registry, RegistryError> {
        let sim = Arc::new(super::sim::SimProvider::new(
            store.clone(),
            cfg.providers.sim.clone(),
            clock.clone(),
        ));
        // Each client behind its breaker and bulkhead (see `guard`).
        let guard = |inner: Arc<dyn Provider>| -> Arc<Guard> {
            Arc::new(Guard::new(
                inner,
                &cfg.providers.limits,
                cfg.engine.call_timeout,
                clock.clone(),
                Some(store.clone()),
            ))
        };
        let mut guarded_sim: Option<Arc<Guard>> = None;
        let mut manual: Option<Arc<Guard>> = None;
        let mut hostwinds: Option<Arc<Guard>> = None;
        let mut lab: Option<Arc<Guard>> = None;
        let mut ssh: [Option<Arc<crate::access::remote::SshAccess>>; 2] = [None, None];
        let mut reg = Registry::default();
        for (i, c) in cfg.clusters.iter().enumerate() {
            let provider: Arc<Guard> = match c.provider.as_str() {
                "sim" => guarded_sim
                    .get_or_insert_with(|| guard(sim.clone()))
                    .clone(),
                "manual" => manual
                    .get_or_insert_with(|| {
                        guard(Arc::new(super::manual::ManualProvider::new(
                            store.clone(),
                            clock.clone(),
                        )))
                    })
                    .clone(),
                "hostwinds" => match &hostwinds {
                    Some(h) => h.clone(),
                    None => {
                        let h = guard(hostwinds_client(cfg, i)?);
                        hostwinds = Some(h.clone());
                        h
                    }
                },
                "lab" => match &lab {
                    Some(l) => l.clone(),
                    None => {
                        let spec = cfg
                            .providers
                            .lab
                            .spec()
                            .map_err(|e| RegistryError(format!("clusters[{i}]: {e}")))?;
                        let mut provider = super::lab::LabProvider::new(
                            store.clone(),
                            spec,
                            clock.clone(),
                            cfg.dkim.key_env.clone(),
                        );
                        if let Some(dns) = lab_ptr_dns(cfg)
                            .map_err(|e| RegistryError(format!("clusters[{i}]: {e}")))?
                        {
                            provider = provider.with_ptr(dns);
                        }
                        let l = guard(Arc::new(provider));
                        lab = Some(l.clone());
                        l
                    }
                },
                other => {
                    return Err(RegistryError(format!(
                        "clusters[{i}].provider: {other:?} is not a known provider"
                    )))
                }
            };
            if !reg.guards.iter().any(|g| Arc::ptr_eq(g, &provider)) {
                reg.guards.push(provider.clone());
            }
            let provider: Arc<dyn Provider> = provider;
            let access: Arc<dyn NodeAccess> = match c.access() {
                AccessKind::Sim => sim.clone(),
                AccessKind::ProviderView => Arc::new(ProviderView::new(provider.clone())),
                AccessKind::Ssh => {
                    // One per kind of machine, shared: each runs the sink on one address.
                    let is_lab = c.provider == "lab";
                    let slot = &mut ssh[usize::from(is_lab)];
                    match slot {
                        Some(a) => a.clone(),
                        None => {
                            let lab =
                                if is_lab {
                                    Some(cfg.providers.lab.spec().map_err(|e| {
                                        RegistryError(format!("clusters[{i}]: {e}"))
                                    })?)
                                } else {
                                    None
                                };
                            let a = Arc::new(
                                crate::access::remote::SshAccess::new(
                                    store.clone(),
                                    cfg,
                                    clock.clone(),
                                    lab,
                                )
                                .map_err(|e| RegistryError(format!("clusters[{i}]: {e}")))?,
                            );
                            *slot = Some(a.clone());
                            a
                        }
                    }
                }
            };
            reg.bind(&c.name, provider, access);
        }
        Ok(reg)
    }

    /// Every cluster of the config served by the same provider and access (tests and tools
    /// that bring their own provider).
    pub fn uniform(
        cfg: &Config,
        provider: Arc<dyn Provider>,
        access: Arc<dyn NodeAccess>,
    ) -> Registry {
        let mut reg = Registry::default();
        for c in &cfg.clusters {
            reg.bind(&c.name, provider.clone(), access.clone());
        }
        reg
    }

    /// Binds (or rebinds) one cluster.
    pub fn bind(
        &mut self,
        cluster: &str,
        provider: Arc<dyn Provider>,
        access: Arc<dyn NodeAccess>,
    ) {
        if !self.providers.iter().any(|p| Arc::ptr_eq(p, &provider)) {
            self.providers.push(provider.clone());
        }
        self.clusters
            .insert(cluster.to_string(), Binding { provider, access });
        let bound: Vec<Arc<dyn Provider>> =
            self.clusters.values().map(|b| b.provider.clone()).collect();
        self.providers
            .retain(|p| bound.iter().any(|b| Arc::ptr_eq(p, b)));
    }

    /// The cluster's provider and access; an error that names the cluster when it has none.
    pub fn cluster(&self, name: &str) -> Result<&Binding, ProviderError> {
        self.clusters.get(name).ok_or_else(|| {
            ProviderError::new(
                "engine",
                super::ErrorKind::Invalid,
                format!(
                    "cluster {:?} has no provider in this process (is it still in the config?)",
                    crate::domain::validate::sanitize(name)
                ),
            )
        })
    }

    /// Each distinct provider client once.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// Each provider's breaker and bulkhead.
    pub fn guards(&self) -> &[Arc<Guard>] {
        &self.guards
    }

    /// Whether every cluster runs on the simulated cloud.
    pub fn all_sim(&self) -> bool {
        self.providers.iter().all(|p| p.name() == super::sim::NAME)
    }
}

/// The PowerDNS a lab writes its hosts' PTR records into: the one `[dns]` publishes with.
fn lab_ptr_dns(cfg: &Config) -> Result<Option<Arc<dyn crate::dns::DnsProvider>>, String> {
    let d = &cfg.dns;
    if d.provider != crate::config::DnsProviderKind::Powerdns {
        return Ok(None);
    }
    let key = match std::env::var(&d.powerdns.api_key_env) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => {
            return Err(format!(
                "dns.powerdns.api_key_env names {}, which is not set (the lab writes its PTR records with it)",
                d.powerdns.api_key_env
            ))
        }
    };
    let p = crate::dns::powerdns::PowerDns::new(
        &d.powerdns.api_url,
        &d.powerdns.server,
        key,
        cfg.engine.call_timeout,
    )?;
    Ok(Some(Arc::new(p)))
}

fn hostwinds_client(cfg: &Config, i: usize) -> Result<Arc<dyn Provider>, RegistryError> {
    let name = &cfg.clusters[i].name;
    let Some(h) = &cfg.providers.hostwinds else {
        return Err(RegistryError(format!(
            "clusters[{i}].provider: cluster {name:?} uses hostwinds, which needs a [providers.hostwinds] section"
        )));
    };
    let key = match std::env::var(&h.api_key_env) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => {
            return Err(RegistryError(format!(
                "clusters[{i}] ({name}): providers.hostwinds.api_key_env names {}, which is not set (it holds the API key)",
                h.api_key_env
            )))
        }
    };
    let client = super::hostwinds::Hostwinds::new(h.clone(), key, cfg.engine.call_timeout)
        .map_err(|e| RegistryError(format!("clusters[{i}] ({name}): {e}")))?;
    Ok(Arc::new(client))
}
