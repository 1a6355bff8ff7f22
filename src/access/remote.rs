//! A cluster's machines reached for real (`access = "ssh"`): the mail stack installed over
//! SSH sub-task by sub-task (see [`crate::bootstrap`]), host keys pinned on first contact,
//! and the node checked as a peer would check it: its SMTP service (banner, STARTTLS, the
//! certificate mailfleet issued for it), and a test message sent through its own Postfix
//! to mailfleet's sink, whose DKIM signature and SPF are checked by mail-auth.
//!
//! Errors are sorted for the engine's retry policy: a node that does not answer yet is
//! transient (retried with backoff); a node that answers wrongly (a refused key, a changed
//! host key, a command that fails, a message that fails its checks) is not.

use super::sink::Sink;
use super::ssh::{self, Identity, InstallError, Session, SshError};
use super::{NodeAccess, NodeRef};
use crate::bootstrap::{Bundle, Contents, Layout, Task};
use crate::clock::SharedClock;
use crate::config::{Config, VerifyConfig};
use crate::lab::LabSpec;
use crate::providers::{ErrorKind, Probe, ProviderError, ProviderResult};
use crate::store::Store;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const SSH: &str = "ssh";

fn err(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(SSH, kind, message)
}

fn ssh_err(e: SshError) -> ProviderError {
    let kind = match e {
        SshError::Connect { .. } | SshError::Session { .. } => ErrorKind::Transient,
        SshError::HostKeyChanged { .. } | SshError::Refused { .. } | SshError::Key(_) => {
            ErrorKind::Invalid
        }
    };
    err(kind, e.to_string())
}

/// A fault the lab injects on purpose (`[providers.lab] faults`), for rehearsing failures:
/// the sub-task `task` of nodes labelled `label` fails as a real one would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub label: String,
    pub task: FaultAt,
}

/// Where a lab fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAt {
    /// A bootstrap sub-task fails.
    Task(Task),
    /// The node routes the sink's domain to a port where nothing listens: its test message
    /// never arrives.
    TestMessage,
}

impl Fault {
    /// `LABEL:TASK`, TASK one of the bootstrap's sub-tasks or `test_message`.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let (label, task) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not \"LABEL:TASK\""))?;
        let task = if task == "test_message" {
            FaultAt::TestMessage
        } else {
            Task::ALL
                .into_iter()
                .find(|t| t.as_str() == task)
                .map(FaultAt::Task)
                .ok_or_else(|| {
                    format!(
                        "{task:?} is not a bootstrap sub-task ({}) nor test_message",
                        Task::ALL.map(Task::as_str).join(", ")
                    )
                })?
        };
        crate::domain::validate::validate_label("label", label).map_err(|e| e.to_string())?;
        Ok(Fault {
            label: label.to_string(),
            task,
        })
    }
}

/// Reaches nodes over SSH and SMTP.
pub struct SshAccess {
    store: Store,
    clock: SharedClock,
    key_env: String,
    /// Set for a lab cluster: its hosts keep their files under their folders.
    lab: Option<LabSpec>,
    faults: Vec<Fault>,
    verify: VerifyConfig,
    resolver: Option<SocketAddr>,
    /// The `mailfleet` program agents run (`[serve] agent_program`, else this one).
    program: Option<std::path::PathBuf>,
    timeout: Duration,
    identity: tokio::sync::OnceCell<Identity>,
    sink: tokio::sync::Mutex<Option<Arc<Sink>>>,
}

impl SshAccess {
    pub fn new(
        store: Store,
        cfg: &Config,
        clock: SharedClock,
        lab: Option<LabSpec>,
    ) -> Result<SshAccess, String> {
        let faults = if lab.is_some() {
            cfg.providers
                .lab
                .faults
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    Fault::parse(f).map_err(|e| format!("providers.lab.faults[{i}]: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(SshAccess {
            store,
            clock,
            key_env: cfg.dkim.key_env.clone(),
            lab,
            faults,
            verify: cfg.verify.clone(),
            resolver: cfg.verify.resolver(&cfg.dns),
            program: if cfg.serve.agent_program.is_empty() {
                std::env::current_exe().ok()
            } else {
                Some(cfg.serve.agent_program.clone().into())
            },
            timeout: cfg.engine.call_timeout,
            identity: tokio::sync::OnceCell::new(),
            sink: tokio::sync::Mutex::new(None),
        })
    }

    /// The DNS server the PTR, DKIM and SPF checks ask (`None`: the system's).
    pub fn resolver(&self) -> Option<SocketAddr> {
        self.resolver
    }

    fn faulted(&self, node: &NodeRef, at: FaultAt) -> bool {
        let label = node.hostname.split('.').next().unwrap_or("");
        self.faults.iter().any(|f| f.task == at && f.label == label)
    }

    /// mailfleet's sink as `node` routes to it: its domain and address.
    pub fn sink_route_for(&self, node: &NodeRef) -> ProviderResult<(String, SocketAddr)> {
        let (domain, mut addr) = self.sink_route()?;
        if self.faulted(node, FaultAt::TestMessage) {
            addr.set_port(addr.port().wrapping_add(1).max(1));
        }
        Ok((domain, addr))
    }

    /// mailfleet's sink as the nodes route to it: its domain and address.
    pub fn sink_route(&self) -> ProviderResult<(String, SocketAddr)> {
        let addr = if !self.verify.sink_listen.is_empty() {
            self.verify.sink_listen.parse().map_err(|_| {
                err(
                    ErrorKind::Invalid,
                    format!(
                        "verify.sink_listen {:?} is not IP:PORT",
                        self.verify.sink_listen
                    ),
                )
            })?
        } else if let Some(lab) = &self.lab {
            SocketAddr::from((lab.gateway(), crate::config::LAB_SINK_PORT))
        } else {
            return Err(err(
                ErrorKind::Invalid,
                "verify.sink_listen is not set: the node has nowhere to send its test message",
            ));
        };
        Ok((self.verify.sink_domain.clone(), addr))
    }

    /// Where the node keeps its files: a lab host's under its folder, any other node's in
    /// the Debian packages' own places.
    pub async fn layout(&self, node: &NodeRef) -> ProviderResult<Layout> {
        let Some(lab) = &self.lab else {
            return Ok(Layout::debian());
        };
        let row = self
            .store
            .lab_get(&node.instance_id)
            .await
            .map_err(|e| err(ErrorKind::Transient, format!("lab inventory: {e}")))?
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("no lab instance {}", node.instance_id),
                )
            })?;
        Ok(Layout::lab(&lab.host_dir(&row.host_id)))
    }

    /// mailfleet's SSH public key, as an OpenSSH line (made the first time it is needed).
    pub async fn public_key(&self) -> ProviderResult<String> {
        Ok(self.identity().await?.public.clone())
    }

    async fn identity(&self) -> ProviderResult<&Identity> {
        self.identity
            .get_or_try_init(|| async {
                super::provisioning_identity(&self.store, &self.key_env, self.clock.now())
                    .await
                    .map_err(|e| err(ErrorKind::Invalid, e))
            })
            .await
    }

    /// A session on the node as root: its host key checked against the pin, or pinned on
    /// first contact.
    async fn session(&self, node: &NodeRef) -> ProviderResult<Session> {
        let id = self.identity().await?;
        let pinned = self
            .store
            .pinned_host_key(&node.instance_id)
            .await
            .map_err(|e| err(ErrorKind::Transient, format!("host key pins: {e}")))?;
        let addr = SocketAddr::from((node.ip, 22));
        let s = ssh::connect(addr, pinned.as_deref(), id, self.timeout)
            .await
            .map_err(ssh_err)?;
        if pinned.is_none() {
            self.store
                .pin_host_key(
                    &node.instance_id,
                    &node.ip.to_string(),
                    &s.host_key,
                    self.clock.now(),
                )
                .await
                .map_err(|e| err(ErrorKind::Transient, format!("pinning the host key: {e}")))?;
        }
        Ok(s)
    }

    /// Where the node runs `mailfleet` from: a lab host shares this machine's program; any
    /// other node gets a copy at [`crate::bootstrap::AGENT_PROGRAM`].
    pub fn agent_program(&self) -> std::path::PathBuf {
        match (&self.lab, &self.program) {
            (Some(_), Some(exe)) => exe.clone(),
            _ => crate::bootstrap::AGENT_PROGRAM.into(),
        }
    }

    /// Copies this `mailfleet` program to the node for its agent, unless the same one is
    /// there already.
    async fn put_program(&self, s: &Session) -> Result<(), InstallError> {
        let exe = self
            .program
            .clone()
            .ok_or_else(|| InstallError::Node("this program's path is not known".into()))?;
        let bytes = tokio::fs::read(&exe)
            .await
            .map_err(|e| InstallError::Node(format!("{}: {e}", exe.display())))?;
        let digest = super::super::agent::report::hex(
            ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
        );
        let target = crate::bootstrap::AGENT_PROGRAM;
        let there = s
            .exec(&format!("sha256sum {target} 2>/dev/null"), None)
            .await?;
        if there.stdout.split_whitespace().next() == Some(digest.as_str()) {
            return Ok(());
        }
        let out = s.put(target, 0o755, &bytes).await?;
        if !out.ok() {
            return Err(InstallError::Node(format!(
                "writing {target}: {}",
                out.tail()
            )));
        }
        Ok(())
    }

    /// One bootstrap sub-task on the node; its evidence.
    pub async fn install(
        &self,
        node: &NodeRef,
        bundle: &Bundle,
        task: Task,
    ) -> ProviderResult<String> {
        let bundle = if self.faulted(node, FaultAt::Task(task)) {
            &inject(bundle, task)
        } else {
            bundle
        };
        let s = self.session(node).await?;
        let first = s.host_key.clone();
        let wants_program = task == Task::Agent
            && self.lab.is_none()
            && bundle.files.iter().any(|f| f.task == Task::Agent);
        let out = if wants_program {
            match self.put_program(&s).await {
                Ok(()) => ssh::install_task(&s, bundle, task).await,
                Err(e) => Err(e),
            }
        } else {
            ssh::install_task(&s, bundle, task).await
        };
        s.close().await;
        match out {
            Ok(evidence) if task == Task::Packages => Ok(format!("{evidence} (host key {first})")),
            Ok(evidence) => Ok(evidence),
            Err(InstallError::Ssh(e)) => Err(ssh_err(e)),
            Err(InstallError::Node(e)) => Err(err(ErrorKind::Invalid, e)),
        }
    }

    /// The sink, started on first use (and again should it be gone); another process that
    /// still holds its port is waited for a little.
    async fn sink(&self) -> ProviderResult<Arc<Sink>> {
        let mut held = self.sink.lock().await;
        if let Some(s) = held.as_ref() {
            return Ok(s.clone());
        }
        let (domain, addr) = self.sink_route()?;
        let mut last = None;
        for _ in 0..20 {
            match Sink::start(addr, &domain).await {
                Ok(s) => {
                    let s = Arc::new(s);
                    *held = Some(s.clone());
                    return Ok(s);
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        Err(err(
            ErrorKind::Transient,
            format!(
                "the sink cannot listen on {addr}: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }

    /// A renewed certificate put on the node in place of the old one, Postfix reloaded, and
    /// the node checked to serve it on port 25. Its evidence.
    pub async fn install_certificate(
        &self,
        node: &NodeRef,
        cert_id: &str,
        chain: &str,
        key_pem: &str,
    ) -> ProviderResult<String> {
        let layout = self.layout(node).await?;
        let config = crate::bootstrap::NodeConfig {
            cert_chain: Some(chain.to_string()),
            cert_key: Some(key_pem.to_string()),
            ..bare_config(node)
        };
        let mut bundle = crate::bootstrap::render(&config, &layout);
        bundle.files.retain(|f| f.task == Task::Tls);
        bundle.commands = vec![(
            Task::Tls,
            format!(
                "postfix -c {} reload",
                ssh::shell_quote(&layout.postfix_dir.display().to_string())
            ),
        )];
        let s = self.session(node).await?;
        let out = ssh::install_task(&s, &bundle, Task::Tls).await;
        s.close().await;
        match out {
            Ok(_) => {}
            Err(InstallError::Ssh(e)) => return Err(ssh_err(e)),
            Err(InstallError::Node(e)) => return Err(err(ErrorKind::Invalid, e)),
        }
        let seen = self.smtp_serving(node, 25, cert_id, chain).await?;
        Ok(format!("installed and Postfix reloaded; {seen}"))
    }

    /// The warm-up's daily cap enforced on the node: its master.cf rendered with the cap's
    /// hourly limit (none once the warm-up is over) and Postfix reloaded. Its evidence.
    pub async fn install_rate_limit(
        &self,
        node: &NodeRef,
        daily_cap: Option<u64>,
    ) -> ProviderResult<String> {
        let layout = self.layout(node).await?;
        let config = crate::bootstrap::NodeConfig {
            daily_cap,
            ..bare_config(node)
        };
        let mut bundle = crate::bootstrap::render(&config, &layout);
        bundle
            .files
            .retain(|f| f.task == Task::Postfix && f.path.ends_with("master.cf"));
        let dir = ssh::shell_quote(&layout.postfix_dir.display().to_string());
        bundle.commands = vec![(
            Task::Postfix,
            format!("postfix -c {dir} check && postfix -c {dir} reload"),
        )];
        let s = self.session(node).await?;
        let out = ssh::install_task(&s, &bundle, Task::Postfix).await;
        s.close().await;
        match out {
            Ok(_) => Ok(match crate::bootstrap::hourly_limit(daily_cap) {
                Some(h) => format!(
                    "{h} messages an hour per client (daily cap {})",
                    daily_cap.unwrap_or(0)
                ),
                None => "no rate limit (warm-up over)".to_string(),
            }),
            Err(InstallError::Ssh(e)) => Err(ssh_err(e)),
            Err(InstallError::Node(e)) => Err(err(ErrorKind::Invalid, e)),
        }
    }

    /// The SMTP service on `port`, checked as a peer would: the banner names the node,
    /// STARTTLS is offered, and the certificate it serves is the one mailfleet issued for
    /// its hostname, valid for it under the CA that issued it.
    async fn smtp(&self, node: &NodeRef, port: u16) -> ProviderResult<String> {
        let (cert_id, chain) = self
            .store
            .active_cert_for_host(&node.hostname)
            .await
            .map_err(|e| err(ErrorKind::Transient, format!("certificates: {e}")))?
            .ok_or_else(|| {
                err(
                    ErrorKind::Invalid,
                    format!(
                        "no certificate recorded for {}: nothing to check its STARTTLS against",
                        node.hostname
                    ),
                )
            })?;
        self.smtp_serving(node, port, &cert_id, &chain).await
    }

    /// [`smtp`](Self::smtp), the node expected to serve certificate `cert_id` (`chain`).
    async fn smtp_serving(
        &self,
        node: &NodeRef,
        port: u16,
        cert_id: &str,
        chain: &str,
    ) -> ProviderResult<String> {
        let certs = pem_certs(chain);
        let (Some(leaf), Some(issuer)) = (certs.first(), certs.last()) else {
            return Err(err(
                ErrorKind::Invalid,
                format!("certificate {cert_id}: its chain holds no certificate"),
            ));
        };
        // Anchored at the top of the chain the CA gave: the node must serve a chain that
        // leads there, valid for its hostname.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(issuer.clone()).map_err(|e| {
            err(
                ErrorKind::Invalid,
                format!("certificate {cert_id}: its issuer is not usable as a root: {e}"),
            )
        })?;
        let addr = SocketAddr::from((node.ip, port));
        let seen = super::smtp::check(addr, &node.hostname, roots, self.timeout)
            .await
            .map_err(|e| {
                // Not answering yet is worth waiting for; answering wrongly is not.
                let kind = if e.contains("connect:") || e.contains("no complete answer") {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Invalid
                };
                err(kind, e)
            })?;
        if seen.leaf.as_deref() != Some(leaf.as_ref()) {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "{addr}: the node serves another certificate than the one mailfleet issued for {} ({cert_id})",
                    node.hostname
                ),
            ));
        }
        Ok(format!(
            "{}; serves certificate {cert_id}",
            seen.describe(&node.hostname)
        ))
    }

    /// A test message through the node's own Postfix to the sink, which checks it.
    async fn test_message(&self, node: &NodeRef) -> ProviderResult<String> {
        let sink = self.sink().await?;
        let token = format!(
            "{}-{:08x}",
            node.instance_id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase(),
            rand::random::<u32>()
        );
        let to = sink.address_for(&token);
        let from = format!("postmaster@{}", node.hostname);
        let now = self.clock.now();
        let message = format!(
            "From: mailfleet <postmaster@{domain}>\r\nTo: <{to}>\r\nSubject: mailfleet verification of {host}\r\n\
             Date: {date}\r\nMessage-ID: <{token}@{host}>\r\n\r\n\
             This message was sent by mailfleet to verify that {host} sends authenticated mail.\r\n",
            domain = node.domain,
            host = node.hostname,
            date = now.to_rfc2822(),
        );
        let s = self.session(node).await?;
        let sent = s
            .exec(
                &format!(
                    "/usr/sbin/sendmail -f {} -- {}",
                    ssh::shell_quote(&from),
                    ssh::shell_quote(&to)
                ),
                Some(message.as_bytes()),
            )
            .await
            .map_err(ssh_err);
        let sent = match sent {
            Ok(o) => o,
            Err(e) => {
                s.close().await;
                return Err(e);
            }
        };
        if !sent.ok() {
            s.close().await;
            return Err(err(
                ErrorKind::Invalid,
                format!("sendmail on the node refused the message: {}", sent.tail()),
            ));
        }
        let started = tokio::time::Instant::now();
        let got = sink.wait_for(&token, self.verify.message_timeout).await;
        let Some(got) = got else {
            // What the node's queue says of it is the evidence.
            let queue = s
                .exec("postqueue -p | tail -n 4", None)
                .await
                .map(|o| o.tail())
                .unwrap_or_default();
            s.close().await;
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "no test message reached the sink ({}) within {}; the node's queue: {}",
                    sink.addr(),
                    crate::config::format_duration(self.verify.message_timeout),
                    crate::domain::validate::sanitize(&queue)
                ),
            ));
        };
        s.close().await;
        let took = started.elapsed();
        if got.peer != std::net::IpAddr::V4(node.ip) {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "the test message came from {}, not from the node's address {}",
                    got.peer, node.ip
                ),
            ));
        }
        let auth = match self.resolver {
            Some(r) => super::verdict::authenticator(r),
            None => super::verdict::system_authenticator(),
        }
        .map_err(|e| err(ErrorKind::Transient, e))?;
        let v = super::verdict::check(
            &auth,
            &got.data,
            &node.domain,
            got.peer,
            &got.helo,
            &got.mail_from,
        )
        .await;
        let said = |r: &Result<String, String>| match r {
            Ok(s) | Err(s) => crate::domain::validate::sanitize(s).into_owned(),
        };
        let evidence = format!(
            "arrived at the sink from {} (HELO {}) after {} ms; DKIM {}; SPF {}",
            got.peer,
            crate::domain::validate::sanitize(&got.helo),
            took.as_millis(),
            said(&v.dkim),
            said(&v.spf)
        );
        if v.passed() {
            Ok(evidence)
        } else {
            Err(err(ErrorKind::Invalid, evidence))
        }
    }
}

/// The domain's DKIM private key of `selector`, as PEM (for the node's OpenDKIM).
pub async fn dkim_private_pem(
    store: &Store,
    key_env: &str,
    domain: &str,
    selector: &str,
) -> Result<zeroize::Zeroizing<String>, String> {
    let row = store
        .dkim_keys()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|k| k.domain == domain && k.selector == selector)
        .ok_or_else(|| format!("the domain {domain} has no DKIM key {selector}"))?;
    let sealed = store
        .dkim_sealed(domain, selector)
        .await
        .map_err(|e| e.to_string())?;
    let file = row
        .key_file
        .as_deref()
        .map(|f| store.key_path(f).display().to_string());
    let der = crate::dkim::recover(
        key_env,
        sealed.as_deref(),
        file.as_deref(),
        &format!("{domain}/{selector}"),
    )
    .map_err(|e| format!("the DKIM key {selector} of {domain}: {e}"))?;
    Ok(crate::dkim::pkcs8_pem(&der))
}

/// The active certificate of `hostname`: its chain and its key, as PEM.
pub async fn cert_pems(
    store: &Store,
    key_env: &str,
    hostname: &str,
) -> Result<Option<(String, zeroize::Zeroizing<String>)>, String> {
    let Some((id, _)) = store
        .active_cert_for_host(hostname)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let (chain, sealed, file) = store
        .cert_material(&id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("certificate {id} is gone"))?;
    let file = file.map(|f| store.key_path(&f).display().to_string());
    let der = crate::dkim::recover(
        key_env,
        sealed.as_deref(),
        file.as_deref(),
        &format!("cert/{id}"),
    )
    .map_err(|e| format!("the key of certificate {id}: {e}"))?;
    Ok(Some((chain, crate::dkim::pkcs8_pem(&der))))
}

/// A node's configuration with only its names: for re-rendering one part of it (its
/// certificate, its rate limit) where the rest is not needed.
fn bare_config(node: &NodeRef) -> crate::bootstrap::NodeConfig {
    crate::bootstrap::NodeConfig {
        hostname: node.hostname.clone(),
        domain: node.domain.clone(),
        ip: node.ip,
        selector: String::new(),
        dkim_key: None,
        cert_chain: None,
        cert_key: None,
        daily_cap: None,
        relay_networks: Vec::new(),
        sink: None,
        agent: None,
    }
}

/// The certificates of a PEM chain, in order.
fn pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// The bundle with `task` broken as a real mistake would break it: for Postfix, a
/// master.cf line it refuses; for the others, a command that fails.
fn inject(bundle: &Bundle, task: Task) -> Bundle {
    let mut b = bundle.clone();
    if task == Task::Postfix {
        for f in &mut b.files {
            if f.path.ends_with("master.cf") {
                if let Contents::Text(t) = &mut f.contents {
                    t.push_str("# injected by [providers.lab] faults\nbroken     inet  x       -       n       -       -       smtpd\n");
                }
            }
        }
    } else {
        b.commands.push((
            task,
            "echo 'fault injected by [providers.lab] faults' >&2; exit 1".into(),
        ));
    }
    b
}

#[async_trait]
impl NodeAccess for SshAccess {
    fn name(&self) -> &str {
        SSH
    }

    /// Not used: the pipeline installs an SSH node sub-task by sub-task ([`Self::install`]).
    async fn bootstrap(&self, _: &NodeRef, _: &str) -> ProviderResult<()> {
        Err(err(
            ErrorKind::Invalid,
            "an SSH node is bootstrapped sub-task by sub-task, not by cloud-init",
        ))
    }

    async fn probe(&self, node: &NodeRef, probe: Probe) -> ProviderResult<String> {
        match probe {
            Probe::Smtp => self.smtp(node, 25).await,
            Probe::Submission => self.smtp(node, 587).await,
            Probe::TestMessage => self.test_message(node).await,
        }
    }

    fn ssh(&self) -> Option<&SshAccess> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_names_a_label_and_a_bootstrap_sub_task() {
        let f = Fault::parse("mx3:postfix").expect("fault");
        assert_eq!(
            (f.label.as_str(), f.task),
            ("mx3", FaultAt::Task(Task::Postfix))
        );
        let f = Fault::parse("mx3:test_message").expect("fault");
        assert_eq!(f.task, FaultAt::TestMessage);
        assert!(Fault::parse("mx3")
            .expect_err("no task")
            .contains("LABEL:TASK"));
        assert!(Fault::parse("mx3:dns")
            .expect_err("not a task")
            .contains("reload"));
        assert!(Fault::parse("MX 3:postfix").is_err());
    }

    #[test]
    fn an_injected_postfix_fault_is_a_master_cf_postfix_refuses() {
        let n = crate::bootstrap::NodeConfig {
            hostname: "mx1.example.com".into(),
            domain: "example.com".into(),
            ip: "192.0.2.1".parse().expect("ip"),
            selector: "mf1".into(),
            dkim_key: None,
            cert_chain: None,
            cert_key: None,
            daily_cap: None,
            relay_networks: vec![],
            sink: None,
            agent: None,
        };
        let b = crate::bootstrap::render(&n, &Layout::debian());
        let broken = inject(&b, Task::Postfix);
        let master = |b: &Bundle| {
            b.files
                .iter()
                .find(|f| f.path.ends_with("master.cf"))
                .map(|f| match &f.contents {
                    Contents::Text(t) => t.clone(),
                    _ => String::new(),
                })
                .unwrap_or_default()
        };
        assert!(!master(&b).contains("broken"));
        assert!(master(&broken).contains("broken     inet  x"));
        let other = inject(&b, Task::Opendkim);
        assert_eq!(other.commands.len(), b.commands.len() + 1);
    }
}
