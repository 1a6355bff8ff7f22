//! The mail parts of the configure and verify steps: the domain's DKIM keys, the node's DNS
//! records (published through the configured DNS provider, checked from the zone's
//! authoritative servers), its certificate, and its forward-confirmed rDNS. Also the
//! compensations that undo them.

use super::pipeline::{call, fenced, StepRun, Stop};
use super::Ctx;
use crate::clock::SharedClock;
use crate::config::{Config, DnsProviderKind};
use crate::dns::propagation::{check_servers, zone_servers, Wanted};
use crate::dns::{DnsError, DnsProvider, Published};
use crate::domain::records::{plan, PlannedRecord, RecordInput};
use crate::domain::ResourceKind;
use crate::providers::{ErrorKind, ProviderError};
use crate::store::{Claim, DnsRecordRow, PlannedWrite, ResourceWrite, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where the records are checked from.
enum Check {
    /// Through the provider's own API (the simulated DNS has no server to ask).
    Provider,
    /// These authoritative servers, from `[dns] nameservers`.
    Servers(Vec<SocketAddr>),
    /// The zone's NS, through the system resolver.
    ZoneNs,
}

/// The DNS side of the pipeline, built once from the config.
pub struct Mail {
    dns: Result<Option<Arc<dyn DnsProvider>>, String>,
    check: Check,
    pub ca: super::ca::Ca,
}

/// The environment variable `name`, or an error naming it (never a value).
fn secret(name: &str, key: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(format!(
            "{key}: the environment variable {name} is not set (it holds the secret)"
        )),
    }
}

impl Mail {
    pub fn from_config(cfg: &Config, store: &Store, clock: &SharedClock) -> Mail {
        // Whatever the clients below are sent, no answer may repeat it into our errors.
        crate::untrusted::remember_config(cfg);
        let d = &cfg.dns;
        let timeout = cfg.engine.call_timeout;
        let dns: Result<Option<Arc<dyn DnsProvider>>, String> = match d.provider {
            DnsProviderKind::None => Ok(None),
            DnsProviderKind::Sim => Ok(Some(Arc::new(crate::dns::sim::SimDns::new(
                store.clone(),
                cfg.providers.sim.clone(),
                clock.clone(),
            )))),
            DnsProviderKind::Powerdns => {
                secret(&d.powerdns.api_key_env, "dns.powerdns.api_key_env").and_then(|key| {
                    crate::dns::powerdns::PowerDns::new(
                        &d.powerdns.api_url,
                        &d.powerdns.server,
                        key,
                        timeout,
                    )
                    .map(|p| Some(Arc::new(p) as Arc<dyn DnsProvider>))
                })
            }
            DnsProviderKind::Cloudflare => {
                secret(&d.cloudflare.token_env, "dns.cloudflare.token_env").and_then(|token| {
                    crate::dns::cloudflare::Cloudflare::new(&d.cloudflare.api_url, token, timeout)
                        .map(|p| Some(Arc::new(p) as Arc<dyn DnsProvider>))
                })
            }
        };
        let check = if d.provider == DnsProviderKind::Sim {
            Check::Provider
        } else if d.nameservers.is_empty() {
            Check::ZoneNs
        } else {
            Check::Servers(
                d.nameservers
                    .iter()
                    .filter_map(|n| crate::config::mail::parse_nameserver(n).ok())
                    .collect(),
            )
        };
        Mail {
            dns,
            check,
            ca: super::ca::Ca::from_config(cfg, store, clock),
        }
    }

    /// The DNS provider; `None` when records are managed elsewhere; an error when the
    /// config names one that cannot be used (a secret not set).
    pub fn dns(&self) -> Result<Option<&Arc<dyn DnsProvider>>, String> {
        self.dns.as_ref().map(Option::as_ref).map_err(Clone::clone)
    }

    /// A problem that would stop every request, for `mailfleet work` to report at start.
    pub fn problem(&self) -> Option<String> {
        self.dns
            .as_ref()
            .err()
            .cloned()
            .or_else(|| self.ca.problem())
    }

    /// Asks where the config says, once, whether each record answers as wanted.
    pub async fn check(
        &self,
        zone: &str,
        rows: &[DnsRecordRow],
        timeout: Duration,
    ) -> Result<Vec<(bool, String)>, String> {
        match &self.check {
            Check::Provider => {
                let Some(dns) = self.dns()? else {
                    return Ok(Vec::new());
                };
                let mut keys: Vec<(String, String)> = rows
                    .iter()
                    .map(|r| (r.name.clone(), r.rtype.clone()))
                    .collect();
                keys.sort();
                keys.dedup();
                // An API call that fails says nothing about the zone: asked again (a few
                // times) before it counts as no answer.
                let mut answer = dns.lookup_many(zone, &keys).await;
                for _ in 0..3 {
                    match &answer {
                        Err(e) if e.retryable() => answer = dns.lookup_many(zone, &keys).await,
                        _ => break,
                    }
                }
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let found = match &answer {
                        Ok(sets) => keys
                            .iter()
                            .position(|(n, t)| *n == r.name && *t == r.rtype)
                            .and_then(|i| sets.get(i))
                            .cloned()
                            .unwrap_or_default(),
                        Err(e) => {
                            out.push((false, format!("{}: {e}", dns.name())));
                            continue;
                        }
                    };
                    let ok = found.iter().any(|p| p.content.trim() == r.content.trim());
                    let said = if found.is_empty() {
                        "nothing".to_string()
                    } else {
                        found
                            .iter()
                            .map(|p| p.content.as_str())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    };
                    // What the zone holds is the zone's text, not ours.
                    let said = crate::untrusted::untrusted_text(&said);
                    out.push((ok, format!("{}: {said}", dns.name())));
                }
                Ok(out)
            }
            Check::Servers(servers) => Ok(check_servers(servers, &wanted(rows), timeout).await),
            Check::ZoneNs => {
                let servers = zone_servers(zone).await?;
                Ok(check_servers(&servers, &wanted(rows), timeout).await)
            }
        }
    }
}

fn wanted(rows: &[DnsRecordRow]) -> Vec<Wanted> {
    rows.iter()
        .map(|r| Wanted {
            name: r.name.clone(),
            rtype: r.rtype.clone(),
            want: r.want.clone(),
        })
        .collect()
}

/// The zone a hostname is published in: the longest configured zone it ends in, or else
/// the request's domain.
pub fn zone_for(cfg: &Config, hostname: &str, domain: &str) -> Result<String, String> {
    let host = hostname.trim_end_matches('.').to_ascii_lowercase();
    let inside = |z: &str| crate::dns::in_zone(&host, z);
    if cfg.dns.zones.is_empty() {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        return if inside(&d) {
            Ok(d)
        } else {
            Err(format!("hostname {host} is not inside the domain {d}"))
        };
    }
    cfg.dns
        .zones
        .iter()
        .filter(|z| inside(z))
        .max_by_key(|z| z.len())
        .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
        .ok_or_else(|| {
            format!(
                "hostname {host} is in none of the zones of [dns] zones ({})",
                cfg.dns.zones.join(", ")
            )
        })
}

/// A DNS failure as the engine's retry policy sees it.
pub(crate) fn as_provider_error(provider: &str, e: DnsError) -> ProviderError {
    let kind = if e.retryable() {
        ErrorKind::Transient
    } else {
        ErrorKind::Invalid
    };
    ProviderError::new(provider, kind, e.to_string())
}

/// The records planned for a node, from the config and the domain's keys.
pub fn record_input(
    cfg: &Config,
    domain: &str,
    hostname: &str,
    ip: &str,
    keys: &crate::dkim::ActiveKeys,
) -> RecordInput {
    let d = &cfg.dns;
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    RecordInput {
        domain: domain.to_string(),
        hostname: hostname.to_string(),
        ip: ip.to_string(),
        selector: keys
            .rsa
            .as_ref()
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| cfg.dkim.selector.clone()),
        dkim_rsa: keys.rsa.as_ref().map(|(_, p)| p.clone()),
        dkim_ed25519: keys.ed25519.clone(),
        dmarc: d.dmarc,
        dmarc_rua: nonempty(&d.dmarc_rua),
        spf_extra: d.spf_extra.clone(),
        mta_sts_id: nonempty(&d.mta_sts_id),
        tls_rpt_rua: nonempty(&d.tls_rpt_rua),
        ttl: d.ttl,
    }
}

impl StepRun<'_> {
    pub(super) fn domain(&self) -> String {
        self.req
            .domain
            .clone()
            .unwrap_or_else(|| super::pipeline::DEFAULT_DOMAIN.to_string())
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }

    fn dns_resource(
        &self,
        provider: &str,
        zone: &str,
        allocated: bool,
        detail: String,
    ) -> ResourceWrite {
        ResourceWrite {
            kind: Some(ResourceKind::Dns),
            allocated,
            provider: Some(provider.to_string()),
            provider_ref: Some(zone.to_string()),
            detail: Some(detail),
        }
    }

    /// `dkim_key`: the domain's keys, made the first time a node of the domain needs them.
    /// Keys belong to the domain, not to the request: a rollback leaves them.
    pub(super) async fn dkim_key(&self) -> Result<crate::dkim::ActiveKeys, Stop> {
        let domain = self.domain();
        let (keys, made) = crate::dkim::ensure_keys(
            &self.ctx.store,
            &self.ctx.cfg,
            self.ctx.clock.now(),
            &domain,
        )
        .await
        .map_err(|e| Stop::Failed(format!("dkim_key: {e}")))?;
        let selectors = [keys.rsa.as_ref(), keys.ed25519.as_ref()]
            .into_iter()
            .flatten()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let detail = if made.is_empty() {
            format!("{domain} signs with selector {selectors}")
        } else {
            format!("new key for {domain}, selector {selectors}")
        };
        // Written with the record plan, dns_publish's first write.
        self.done_soon("dkim_key", detail);
        Ok(keys)
    }

    /// `dns_publish`: the node's records into its zone. The plan is recorded before the
    /// call; records already in the zone are marked as not ours, so a rollback leaves them.
    pub(super) async fn dns_publish(
        &self,
        ip: std::net::Ipv4Addr,
        keys: &crate::dkim::ActiveKeys,
    ) -> Result<(), Stop> {
        const TASK: &str = "dns_publish";
        let dns = match self.ctx.mail.dns() {
            Err(e) => return Err(Stop::Failed(format!("{TASK}: {e}"))),
            Ok(None) => {
                return self
                    .done(TASK, "skipped: [dns] provider = \"none\"".into(), None)
                    .await
            }
            Ok(Some(d)) => d.clone(),
        };
        let (host, domain) = (self.hostname(), self.domain());
        let planned = plan(&record_input(
            &self.ctx.cfg,
            &domain,
            &host,
            &ip.to_string(),
            keys,
        ))
        .map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?;
        let zone = zone_for(&self.ctx.cfg, &host, &domain)
            .map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?;
        let name = dns.name().to_string();
        // What the zone holds already, by name and type: one question for them all.
        let mut keys: Vec<(String, String)> = planned
            .iter()
            .map(|r| (r.name.clone(), r.rtype.to_string()))
            .collect();
        keys.sort();
        keys.dedup();
        let there = self
            .call(TASK, || {
                let (dns, zone, name, keys) =
                    (dns.clone(), zone.clone(), name.clone(), keys.clone());
                async move {
                    dns.lookup_many(&zone, &keys)
                        .await
                        .map_err(|e| as_provider_error(&name, e))
                }
            })
            .await?;
        // The domain's own DMARC record, where it has one unlike ours, stands (a second one
        // would break both): the node relies on it as a record that was there already.
        let mut planned = planned;
        let mut kept_dmarc = false;
        if self.ctx.cfg.dns.keep_existing_dmarc {
            for r in planned.iter_mut().filter(|r| r.purpose == "dmarc") {
                let held = keys
                    .iter()
                    .position(|(n, t)| *n == r.name && t == r.rtype)
                    .and_then(|i| there.get(i));
                let theirs = held.and_then(|h| {
                    h.iter()
                        .map(|p| crate::dns::txt_text(&p.content))
                        .find(|t| t.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
                });
                if let Some(text) = theirs.filter(|t| *t != r.content) {
                    r.strings = crate::domain::records::split_txt(&text);
                    r.content = text;
                    kept_dmarc = true;
                }
            }
        }
        let mut writes = Vec::with_capacity(planned.len());
        for r in &planned {
            let p = Published::of(r);
            let held = keys
                .iter()
                .position(|(n, t)| *n == r.name && t == r.rtype)
                .and_then(|i| there.get(i));
            writes.push(PlannedWrite {
                zone: zone.clone(),
                purpose: r.purpose.to_string(),
                name: p.name.clone(),
                rtype: p.rtype.clone(),
                ttl: p.ttl,
                present: held
                    .is_some_and(|h| h.iter().any(|x| x.content.trim() == p.content.trim())),
                content: p.content,
                want: r.content.clone(),
            });
        }
        let f = self.fenced();
        let intent = self.dns_resource(
            &name,
            &zone,
            false,
            format!("publishing {} records in {zone}", planned.len()),
        );
        if let Some(c) = self
            .ctx
            .store
            .plan_dns(&f, self.step, TASK, &name, writes, intent)
            .await?
        {
            return Err(Stop::Cancelled(c));
        }
        let added = self
            .call(TASK, || {
                let (dns, zone, name, planned) =
                    (dns.clone(), zone.clone(), name.clone(), planned.clone());
                async move {
                    dns.publish(&zone, &planned)
                        .await
                        .map_err(|e| as_provider_error(&name, e))
                }
            })
            .await?;
        let n_added = added.len();
        let mut detail = format!(
            "{} records in {zone} via {name}: {n_added} added, {} already there",
            planned.len(),
            planned.len() - n_added.min(planned.len())
        );
        if kept_dmarc {
            detail.push_str("; the domain's own DMARC record kept");
        }
        let f = self.fenced();
        match self
            .ctx
            .store
            .dns_published(
                &f,
                self.step,
                TASK,
                added
                    .into_iter()
                    .map(|p| (p.name, p.rtype, p.content))
                    .collect(),
                self.dns_resource(&name, &zone, true, detail),
            )
            .await?
        {
            Some(c) => Err(Stop::Cancelled(c)),
            None => Ok(()),
        }
    }

    /// `tls_certificate`: a certificate for the hostname from the configured CA.
    pub(super) async fn tls_certificate(&self) -> Result<(), Stop> {
        const TASK: &str = "tls_certificate";
        if !self.ctx.mail.ca.enabled() {
            return self
                .done(TASK, "skipped: [tls] acme = \"none\"".into(), None)
                .await;
        }
        let dns = self
            .ctx
            .mail
            .dns()
            .map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?
            .cloned();
        let (host, domain) = (self.hostname(), self.domain());
        let zone = zone_for(&self.ctx.cfg, &host, &domain)
            .map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?;
        let ca = &self.ctx.mail.ca;
        // The order is on record before it starts: if it is interrupted, the rollback still
        // knows to clear the challenge records it may have left.
        let intent = ResourceWrite {
            kind: Some(ResourceKind::Certificate),
            allocated: false,
            provider: Some(ca.name().to_string()),
            provider_ref: None,
            detail: Some(format!("ordering a certificate for {host}")),
        };
        let f = self.fenced();
        if let Some(c) = self
            .ctx
            .store
            .record_resource(&f, self.step, TASK, intent)
            .await?
        {
            return Err(Stop::Cancelled(c));
        }
        let issued = self
            .call(TASK, || {
                let (dns, zone, host) = (dns.clone(), zone.clone(), host.clone());
                async move { ca.obtain(dns.as_deref(), &zone, &[host]).await }
            })
            .await?;
        let cert = super::ca::keep_cert_off_thread(&self.ctx.store, &self.ctx.cfg, &host, issued)
            .await
            .map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?;
        let detail = format!(
            "{} from {}, serial {}, valid until {}",
            host,
            cert.issuer,
            cert.serial,
            cert.not_after.format("%Y-%m-%d")
        );
        let f = self.fenced();
        match self
            .ctx
            .store
            .cert_issued(&f, self.step, TASK, cert, ca.name(), detail)
            .await?
        {
            Some(c) => Err(Stop::Cancelled(c)),
            None => Ok(()),
        }
    }

    /// `dns_propagation`: asks until every published record answers as planned, or the
    /// time is up. Each round's answers are recorded on the records.
    pub(super) async fn dns_propagation(
        &self,
        ip: std::net::Ipv4Addr,
    ) -> Result<Vec<DnsRecordRow>, Stop> {
        const TASK: &str = "dns_propagation";
        if self.ctx.mail.dns().map(|d| d.is_none()).unwrap_or(false) {
            self.done(TASK, "skipped: [dns] provider = \"none\"".into(), None)
                .await?;
            return Ok(Vec::new());
        }
        let d = &self.ctx.cfg.dns;
        let mut known = self.ctx.store.dns_records(&self.claim.id).await?;
        if known.is_empty() {
            // Configured before records were published (a database from an earlier
            // version, or a demo fleet): they are published now, then checked.
            let keys = self.dkim_key().await?;
            self.dns_publish(ip, &keys).await?;
            known = self.ctx.store.dns_records(&self.claim.id).await?;
        }
        let deadline = tokio::time::Instant::now() + d.propagation_timeout;
        loop {
            // The first round checks what was just read; later rounds read again.
            let now_known = if known.is_empty() {
                self.ctx.store.dns_records(&self.claim.id).await?
            } else {
                std::mem::take(&mut known)
            };
            let rows: Vec<DnsRecordRow> = now_known
                .into_iter()
                .filter(|r| r.status == "published" || r.status == "verified")
                .collect();
            if rows.is_empty() {
                return Err(Stop::Failed(format!(
                    "{TASK}: no published records recorded for this request"
                )));
            }
            let zone = rows[0].zone.clone();
            let round = self
                .ctx
                .mail
                .check(
                    &zone,
                    &rows,
                    d.propagation_interval.min(Duration::from_secs(5)),
                )
                .await
                .map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?;
            let f = self.fenced();
            let results: Vec<(i64, bool, String)> = rows
                .iter()
                .zip(&round)
                .map(|(r, (ok, said))| (r.position, *ok, said.clone()))
                .collect();
            let missing: Vec<String> = rows
                .iter()
                .zip(&round)
                .filter(|(_, (ok, _))| !ok)
                .map(|(r, (_, said))| format!("{} {} ({said})", r.name, r.rtype))
                .collect();
            // All answering: the sub-task is done in the same write as the answers.
            let done = missing.is_empty().then(|| {
                (
                    self.step,
                    TASK,
                    format!("{} records answer as planned in {zone}", rows.len()),
                )
            });
            if let Some(c) = self.ctx.store.dns_checked(&f, results, done).await? {
                return Err(Stop::Cancelled(c));
            }
            if missing.is_empty() {
                return Ok(self.ctx.store.dns_records(&self.claim.id).await?);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Stop::Failed(format!(
                    "{TASK}: {} of {} records do not answer as planned after {}: {}",
                    missing.len(),
                    rows.len(),
                    crate::config::format_duration(d.propagation_timeout),
                    missing.join("; ")
                )));
            }
            if let Some(c) = self.signals.cancelled() {
                return Err(Stop::Cancelled(c));
            }
            tokio::time::sleep(d.propagation_interval).await;
        }
    }

    /// The mail stack installed over SSH, one recorded sub-task at a time (see
    /// [`crate::bootstrap::Task`]): the node's files rendered from its hostname, the
    /// domain's DKIM key, its certificate, today's warm-up cap and mailfleet's sink; each
    /// sub-task retried while the node does not answer, and failing the step with what the
    /// node said when it answers wrongly. Every sub-task is idempotent: a resumed configure
    /// runs them all again.
    pub(super) async fn install_over_ssh(
        &self,
        ssh: &crate::access::remote::SshAccess,
        node: &crate::access::NodeRef,
        keys: &crate::dkim::ActiveKeys,
    ) -> Result<(), Stop> {
        use crate::bootstrap::{render, NodeConfig, Task};
        let first = Task::ALL[0].as_str();
        let fail = |task: &str, e: String| Stop::Failed(format!("{task}: {e}"));
        let Some((selector, _)) = keys.rsa.clone() else {
            return Err(fail(
                first,
                format!("the domain {} has no RSA DKIM key", node.domain),
            ));
        };
        let key_env = &self.ctx.cfg.dkim.key_env;
        let dkim = crate::access::remote::dkim_private_pem(
            &self.ctx.store,
            key_env,
            &node.domain,
            &selector,
        )
        .await
        .map_err(|e| fail("opendkim", e))?;
        let Some((chain, cert_key)) =
            crate::access::remote::cert_pems(&self.ctx.store, key_env, &node.hostname)
                .await
                .map_err(|e| fail("tls_install", e))?
        else {
            return Err(fail(
                "tls_install",
                format!(
                    "no certificate for {}: a node reached over SSH serves the one mailfleet obtains ([tls] acme)",
                    node.hostname
                ),
            ));
        };
        let sink = ssh
            .sink_route_for(node)
            .map_err(|e| fail(first, e.to_string()))?;
        let layout = self.call(first, || ssh.layout(node)).await?;
        let daily_cap = self.ctx.cfg.default_warmup_plan().map(|p| p.cap(1));
        let config = NodeConfig {
            hostname: node.hostname.clone(),
            domain: node.domain.clone(),
            ip: node.ip,
            selector,
            dkim_key: Some(dkim.to_string()),
            cert_chain: Some(chain),
            cert_key: Some(cert_key.to_string()),
            daily_cap,
            relay_networks: Vec::new(),
            sink: Some(sink),
            agent: self.agent_install(ssh).await?,
        };
        let bundle = render(&config, &layout);
        drop(config);
        for task in Task::ALL {
            let evidence = self
                .call(task.as_str(), || ssh.install(node, &bundle, task))
                .await?;
            self.done(
                task.as_str(),
                crate::untrusted::untrusted_text(&evidence),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// The agent to install on the node, when `[serve] agent_url` is set: a new token
    /// for it (kept sealed; the one it had stops working), and `serve`'s root.
    async fn agent_install(
        &self,
        ssh: &crate::access::remote::SshAccess,
    ) -> Result<Option<crate::bootstrap::AgentInstall>, Stop> {
        let cfg = &self.ctx.cfg;
        if cfg.serve.agent_url.is_empty() {
            return Ok(None);
        }
        let fail = |e: String| Stop::Failed(format!("agent: {e}"));
        let id = crate::serve::identity(cfg, &self.ctx.store).map_err(fail)?;
        let root_pem = match id.root_pem {
            Some(r) => r,
            // A configured chain: its last certificate is what agents anchor at.
            None => id
                .chain_pem
                .rfind("-----BEGIN CERTIFICATE-----")
                .map(|i| id.chain_pem[i..].to_string())
                .ok_or_else(|| fail("serve.tls_cert holds no certificate".into()))?,
        };
        let token = crate::agent::issue_token(
            &self.ctx.store,
            &cfg.dkim.key_env,
            &self.claim.id,
            self.ctx.clock.now(),
        )
        .await
        .map_err(fail)?;
        Ok(Some(crate::bootstrap::AgentInstall {
            url: cfg.serve.agent_url.clone(),
            id: self.claim.id.clone(),
            token: Some(token.to_string()),
            root_pem,
            interval_secs: cfg.serve.heartbeat_interval.as_secs().max(1),
            program: ssh.agent_program(),
        }))
    }

    /// `rdns_confirm` for a node reached over SSH: the PTR of its address, asked over DNS,
    /// names the hostname, and the hostname's A record gives the address back; asked again
    /// until `[dns] propagation_timeout`.
    async fn rdns_over_dns(
        &self,
        resolver: Option<SocketAddr>,
        ip: std::net::Ipv4Addr,
    ) -> Result<(), Stop> {
        const TASK: &str = "rdns_confirm";
        let host = self.hostname();
        let d = &self.ctx.cfg.dns;
        let deadline = tokio::time::Instant::now() + d.propagation_timeout;
        let asked = resolver
            .map(|r| r.to_string())
            .unwrap_or_else(|| "the system resolver".into());
        loop {
            let answer = crate::dns::propagation::reverse_and_forward(
                resolver,
                ip,
                d.propagation_interval.min(Duration::from_secs(5)),
            )
            .await;
            let why = match &answer {
                Ok(names) => match names.iter().find(|(n, _)| *n == host) {
                    Some((_, fwd)) if fwd.contains(&ip) => {
                        self.done_soon(TASK, format!("PTR {ip} → {host} → {ip} (asked {asked})"));
                        return Ok(());
                    }
                    Some((_, fwd)) => format!(
                        "{host} resolves to {}, not back to {ip}",
                        if fwd.is_empty() {
                            "nothing".to_string()
                        } else {
                            fwd.iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                    None if names.is_empty() => format!("{ip} has no PTR"),
                    None => format!(
                        "the PTR of {ip} names {}, not {host}",
                        names
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
                Err(e) => e.clone(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Stop::Failed(format!("{TASK}: {why} (asked {asked})")));
            }
            if let Some(c) = self.signals.cancelled() {
                return Err(Stop::Cancelled(c));
            }
            tokio::time::sleep(d.propagation_interval).await;
        }
    }

    /// `rdns_confirm`: the PTR the provider holds names the hostname, and the hostname's A
    /// record gives the same IP back (forward-confirmed reverse DNS).
    pub(super) async fn rdns_confirm(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        records: &[DnsRecordRow],
    ) -> Result<(), Stop> {
        const TASK: &str = "rdns_confirm";
        let host = self.hostname();
        if let Some(ssh) = self.binding()?.access.ssh() {
            return self.rdns_over_dns(ssh.resolver(), ip).await;
        }
        let p = &self.binding()?.provider;
        if p.vendor_managed() {
            self.done_soon(
                TASK,
                format!("not checked: the PTR of {ip} is the vendor's to set (manual provider)"),
            );
            return Ok(());
        }
        let inst = self.call(TASK, || p.status(id)).await?;
        let ptr = inst
            .rdns
            .as_deref()
            .map(|p| p.trim_end_matches('.').to_ascii_lowercase());
        if ptr.as_deref() != Some(host.as_str()) {
            return Err(Stop::Failed(format!(
                "{TASK}: the PTR of {ip} is {}, not {host}",
                ptr.as_deref().unwrap_or("unset")
            )));
        }
        let forward: Vec<String> = if records.is_empty() {
            // Records are managed elsewhere: ask the system resolver.
            let r = hickory_resolver::TokioResolver::builder(
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            )
            .map_err(|e| Stop::Failed(format!("{TASK}: the system resolver: {e}")))?
            .build();
            match r.ipv4_lookup(format!("{host}.")).await {
                Ok(l) => l.iter().map(|a| a.0.to_string()).collect(),
                Err(e) => {
                    return Err(Stop::Failed(format!("{TASK}: A of {host}: {e}")));
                }
            }
        } else {
            records
                .iter()
                .filter(|r| r.rtype == "A" && r.status == "verified")
                .map(|r| r.want.clone())
                .collect()
        };
        if !forward.iter().any(|a| *a == ip.to_string()) {
            return Err(Stop::Failed(format!(
                "{TASK}: {host} resolves to {}, not back to {ip}",
                if forward.is_empty() {
                    "nothing".to_string()
                } else {
                    forward.join(", ")
                }
            )));
        }
        // Written with tls_check's result, which follows at once.
        self.done_soon(TASK, format!("PTR {ip} → {host} → {ip}"));
        Ok(())
    }

    /// `tls_check`: the request's certificate is in force and covers the hostname.
    pub(super) async fn tls_check(&self) -> Result<(), Stop> {
        const TASK: &str = "tls_check";
        if !self.ctx.mail.ca.enabled() {
            return self
                .done(TASK, "skipped: [tls] acme = \"none\"".into(), None)
                .await;
        }
        let host = self.hostname();
        let mut certs = self.ctx.store.request_certificates(&self.claim.id).await?;
        if certs.iter().all(|c| c.status != "active") {
            // Configured before certificates were obtained: one is obtained now.
            self.tls_certificate().await?;
            certs = self.ctx.store.request_certificates(&self.claim.id).await?;
        }
        let Some(c) = certs.iter().find(|c| c.status == "active") else {
            return Err(Stop::Failed(format!(
                "{TASK}: no certificate recorded for {host}"
            )));
        };
        let Some((chain, _, _)) = self.ctx.store.cert_material(&c.id).await? else {
            return Err(Stop::Failed(format!(
                "{TASK}: certificate {} is gone",
                c.id
            )));
        };
        let info = crate::tls::inspect(&chain).map_err(|e| Stop::Failed(format!("{TASK}: {e}")))?;
        let now = self.ctx.clock.now();
        if !info.names.iter().any(|n| n.eq_ignore_ascii_case(&host)) {
            return Err(Stop::Failed(format!(
                "{TASK}: the certificate covers {}, not {host}",
                info.names.join(", ")
            )));
        }
        if info.not_before > now || info.not_after <= now {
            return Err(Stop::Failed(format!(
                "{TASK}: the certificate is valid {} to {}, not now",
                info.not_before, info.not_after
            )));
        }
        // Local work; the probes (quick calls) and the step's completion follow, and the
        // mark rides with the next write.
        self.done_soon(
            TASK,
            format!(
                "{host}: valid until {} ({} days)",
                info.not_after.format("%Y-%m-%d"),
                (info.not_after - now).num_days()
            ),
        );
        Ok(())
    }
}

/// Rollback of the `dns` resource: this request's own records are removed from the zone,
/// except those another live request relies on (handed to it instead).
pub(super) async fn remove_records(ctx: &Ctx, claim: &Claim) -> Result<String, Stop> {
    let f = fenced(ctx, claim);
    let rows = ctx.store.dns_to_remove(&f).await?;
    if !rows.is_empty() {
        let dns = match ctx.mail.dns() {
            Ok(Some(d)) => d.clone(),
            Ok(None) => {
                return Err(Stop::Failed(format!(
                    "remove_records: {} records of this request are in the zone, and [dns] provider is now \"none\"",
                    rows.len()
                )))
            }
            Err(e) => return Err(Stop::Failed(format!("remove_records: {e}"))),
        };
        let mut zones: Vec<String> = rows.iter().map(|r| r.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        for zone in zones {
            let these: Vec<Published> = rows
                .iter()
                .filter(|r| r.zone == zone)
                .map(|r| Published {
                    name: r.name.clone(),
                    rtype: r.rtype.clone(),
                    ttl: u32::try_from(r.ttl).unwrap_or(300),
                    content: r.content.clone(),
                })
                .collect();
            let name = dns.name().to_string();
            call(ctx, claim, None, "remove_records", None, || {
                let (dns, zone, these, name) =
                    (dns.clone(), zone.clone(), these.clone(), name.clone());
                async move {
                    dns.remove(&zone, &these)
                        .await
                        .map_err(|e| as_provider_error(&name, e))
                }
            })
            .await?;
        }
    }
    ctx.store.dns_removed(&fenced(ctx, claim)).await?;
    Ok(format!("{} records removed from the zone", rows.len()))
}

/// Rollback of the `certificate` resource: it is retired (the node is gone; its key is
/// never used again), and any challenge record an interrupted order left at
/// `_acme-challenge.HOSTNAME` (a name that is this node's alone) is cleared.
pub(super) async fn retire_certificate(ctx: &Ctx, claim: &Claim) -> Result<String, Stop> {
    let mut cleared = 0;
    if let (Ok(Some(dns)), Some(req)) = (ctx.mail.dns(), ctx.store.get_request(&claim.id).await?) {
        let domain = req
            .domain
            .clone()
            .unwrap_or_else(|| super::pipeline::DEFAULT_DOMAIN.to_string());
        let host = format!("{}.{}", req.label, domain.trim_end_matches('.'));
        if let Ok(zone) = zone_for(&ctx.cfg, &host, &domain) {
            let names = [host];
            cleared = call(ctx, claim, None, "clear_challenge", None, || async {
                clear_challenges(dns.as_ref(), &zone, &names)
                    .await
                    .map_err(|e| as_provider_error(dns.name(), e))
            })
            .await?;
        }
    }
    // Revoked at the CA: the node is gone, and its key went with a disk the provider reuses.
    // A revocation that fails is recorded on the certificate and does not hold up the
    // teardown.
    let mut revoked = Vec::new();
    if ctx.cfg.tls.revoke_on_teardown && !matches!(ctx.mail.ca, super::ca::Ca::None) {
        let active = ctx.store.request_certificates(&claim.id).await?;
        for c in active.into_iter().filter(|c| c.status == "active") {
            let Some((chain, _, _)) = ctx.store.cert_material(&c.id).await? else {
                continue;
            };
            let outcome = call(ctx, claim, None, "revoke_certificate", None, || {
                ctx.mail.ca.revoke(&chain)
            })
            .await;
            revoked.push(match outcome {
                Ok(()) => (c.id, Ok(())),
                Err(Stop::Store(e)) => return Err(Stop::Store(e)),
                Err(other) => {
                    let why = other.describe();
                    tracing::warn!(host = %c.hostname, error = %why, "certificate not revoked");
                    (c.id, Err(why))
                }
            });
        }
    }
    let (n, files) = ctx
        .store
        .cert_retired(&fenced(ctx, claim), revoked.clone())
        .await?;
    // A key file is reported destroyed only once it is gone from the disk: found by the
    // path recorded relative to the database's folder, whatever folder this runs in.
    let mut destroyed = Vec::new();
    let mut kept = Vec::new();
    for file in files {
        let path = ctx.store.key_path(&file);
        match std::fs::remove_file(&path) {
            Ok(()) => destroyed.push(file),
            // Gone already, where this build's record says it is. An older record names a
            // folder that is not known: not found is not proof it is gone.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && crate::store::is_current_record(&file) =>
            {
                destroyed.push(file)
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete a retired certificate's key");
                kept.push(format!("{}: {e}", path.display()));
            }
        }
    }
    ctx.store
        .cert_key_files_destroyed(&fenced(ctx, claim), destroyed)
        .await?;
    let mut said = if kept.is_empty() {
        format!("{n} certificate(s) retired, keys destroyed")
    } else {
        format!(
            "{n} certificate(s) retired; key file NOT deleted ({}), still recorded",
            kept.join("; ")
        )
    };
    let ok = revoked.iter().filter(|(_, r)| r.is_ok()).count();
    if ok > 0 {
        said.push_str(&format!("; {ok} revoked"));
    }
    if let Some((_, Err(why))) = revoked.iter().find(|(_, r)| r.is_err()) {
        said.push_str(&format!("; not revoked: {why}"));
    }
    if cleared > 0 {
        said.push_str(&format!("; {cleared} challenge record(s) cleared"));
    }
    Ok(said)
}

/// Removes every TXT record at `_acme-challenge.NAME` for these names (what an order cut
/// off left; the names are a node's alone); returns how many.
pub(super) async fn clear_challenges(
    dns: &dyn DnsProvider,
    zone: &str,
    names: &[String],
) -> Result<usize, DnsError> {
    let mut cleared = 0;
    for name in names {
        let at = format!("_acme-challenge.{}.", name.trim_end_matches('.')).to_ascii_lowercase();
        let left = dns.lookup(zone, &at, "TXT").await?;
        if !left.is_empty() {
            dns.remove(zone, &left).await?;
            cleared += left.len();
        }
    }
    Ok(cleared)
}

/// What `mailfleet dkim rotate` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotated {
    pub domain: String,
    pub zone: String,
    pub old_selectors: Vec<String>,
    pub new_selectors: Vec<String>,
    /// The new records, as a zone-file snippet.
    pub records: String,
    /// The new records answered from the zone before the old keys were retired.
    pub verified: bool,
    /// The old selectors' records were removed from the zone.
    pub old_removed: bool,
    pub kept: Vec<String>,
}

/// Rotates a domain's DKIM keys: new keys under new selectors are made, their records
/// published and checked until they answer, and only then are the old keys retired (and,
/// unless `keep_old`, their records removed). It needs a DNS provider: without one nothing
/// could publish the new selector first.
pub async fn rotate_dkim(
    mail: &Mail,
    store: &Store,
    cfg: &Config,
    now: chrono::DateTime<chrono::Utc>,
    domain: &str,
    keep_old: bool,
) -> Result<Rotated, String> {
    use crate::dkim::{active_keys, free_selector, make_key, next_selector, Algorithm};
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    crate::domain::validate::validate_domain("domain", &domain).map_err(|e| e.to_string())?;
    let old = active_keys(store, &domain)
        .await
        .map_err(|e| e.to_string())?;
    let Some((old_rsa, _)) = old.rsa.clone() else {
        return Err(format!(
            "domain: {domain} has no DKIM key to rotate; make one with `mailfleet dkim new {domain}`"
        ));
    };
    let Some(dns) = mail.dns()?.cloned() else {
        return Err(format!(
            "[dns] provider is \"none\": a rotation publishes the new selector itself; make a key with `mailfleet dkim new {domain} --selector NAME`, publish its record, then retire the old one"
        ));
    };
    let sel = free_selector(store, &domain, &next_selector(&old_rsa))
        .await
        .map_err(|e| e.to_string())?;
    let mut made = vec![make_key(store, cfg, now, &domain, &sel, Algorithm::Rsa2048)
        .await
        .map_err(|e| e.to_string())?];
    if old.ed25519.is_some() || cfg.dns.ed25519 {
        let ed = free_selector(store, &domain, &format!("{sel}-ed"))
            .await
            .map_err(|e| e.to_string())?;
        made.push(
            make_key(store, cfg, now, &domain, &ed, Algorithm::Ed25519)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let keys = crate::dkim::ActiveKeys {
        rsa: Some((sel.clone(), made[0].public_b64.clone())),
        ed25519: made
            .get(1)
            .map(|m| (m.selector.clone(), m.public_b64.clone())),
    };
    let records: Vec<PlannedRecord> = plan(&record_input(
        cfg,
        &domain,
        &format!("mx.{domain}"),
        "192.0.2.1",
        &keys,
    ))
    .map_err(|e| e.to_string())?
    .into_iter()
    .filter(|r| r.purpose.starts_with("dkim"))
    .collect();
    let mut out = Rotated {
        domain: domain.clone(),
        zone: String::new(),
        old_selectors: [old.rsa.as_ref(), old.ed25519.as_ref()]
            .into_iter()
            .flatten()
            .map(|(s, _)| s.clone())
            .collect(),
        new_selectors: made.iter().map(|m| m.selector.clone()).collect(),
        records: crate::domain::records::zone_snippet(&records),
        verified: false,
        old_removed: false,
        kept: made.iter().map(|m| m.kept.clone()).collect(),
    };
    let zone = zone_for(cfg, &domain, &domain)?;
    out.zone = zone.clone();
    let undo = |why: String| async move {
        for m in &made {
            let _ = store.retire_dkim_key(&m.domain, &m.selector, now).await;
        }
        why
    };
    let added = match dns.publish(&zone, &records).await {
        Ok(a) => a,
        Err(e) => {
            return Err(undo(format!(
                "publishing the new selector: {e}; the old key stays in force"
            ))
            .await)
        }
    };
    let rows: Vec<DnsRecordRow> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = Published::of(r);
            DnsRecordRow {
                request_id: String::new(),
                position: i as i64,
                zone: zone.clone(),
                purpose: r.purpose.to_string(),
                name: p.name,
                rtype: p.rtype,
                ttl: i64::from(p.ttl),
                content: p.content,
                want: r.content.clone(),
                provider: dns.name().to_string(),
                owned: true,
                status: "published".into(),
                seen: None,
                published_at: None,
                verified_at: None,
                removed_at: None,
            }
        })
        .collect();
    let deadline = tokio::time::Instant::now() + cfg.dns.propagation_timeout;
    loop {
        let round = mail.check(&zone, &rows, Duration::from_secs(2)).await?;
        if !round.is_empty() && round.iter().all(|(ok, _)| *ok) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = dns.remove(&zone, &added).await;
            let said: Vec<String> = round.into_iter().map(|(_, s)| s).collect();
            return Err(undo(format!(
                "the new selector does not answer from the zone after {} ({}); it was withdrawn and the old key stays in force",
                crate::config::format_duration(cfg.dns.propagation_timeout),
                said.join("; ")
            ))
            .await);
        }
        tokio::time::sleep(cfg.dns.propagation_interval).await;
    }
    out.verified = true;
    for (sel, public) in [old.rsa.as_ref(), old.ed25519.as_ref()]
        .into_iter()
        .flatten()
    {
        store
            .retire_dkim_key(&domain, sel, now)
            .await
            .map_err(|e| e.to_string())?;
        if keep_old {
            continue;
        }
        let name = format!("{sel}._domainkey.{domain}.");
        let there = dns
            .lookup(&zone, &name, "TXT")
            .await
            .map_err(|e| e.to_string())?;
        // Only the old key's own record: its p= value, whatever the quoting.
        let mine: Vec<Published> = there
            .into_iter()
            .filter(|p| {
                p.content
                    .replace(['"', ' '], "")
                    .contains(&format!("p={public}"))
            })
            .collect();
        dns.remove(&zone, &mine).await.map_err(|e| e.to_string())?;
    }
    out.old_removed = !keep_old;
    Ok(out)
}
