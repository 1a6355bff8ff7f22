//! `[dns]` and `[tls]`: where a node's records are published and verified, and where its
//! certificate comes from. Secrets (the PowerDNS API key, the Cloudflare token) are named by
//! the environment variable that holds them, never written here.

use super::{duration_serde, ConfigError};
use crate::domain::records::DmarcPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which DNS provider publishes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnsProviderKind {
    /// The simulated DNS that goes with the simulated cloud (records kept in the database).
    #[default]
    Sim,
    Powerdns,
    Cloudflare,
    /// Records are someone else's business: the DNS sub-tasks are skipped, and say so.
    None,
}

impl DnsProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Powerdns => "powerdns",
            Self::Cloudflare => "cloudflare",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    pub provider: DnsProviderKind,
    /// Zones we may publish in. A node's zone is the longest of these that its hostname
    /// ends in; with none listed, it is the request's domain.
    pub zones: Vec<String>,
    /// The authoritative servers to verify against, "IP" or "IP:PORT". Empty: the zone's
    /// NS records, looked up through the system resolver.
    pub nameservers: Vec<String>,
    pub ttl: u32,
    /// How long the verify step waits for every record to answer as planned.
    #[serde(with = "duration_serde")]
    pub propagation_timeout: Duration,
    /// The pause between two rounds of checks.
    #[serde(with = "duration_serde")]
    pub propagation_interval: Duration,
    pub dmarc: DmarcPolicy,
    /// Where aggregate DMARC reports go; empty: dmarc-reports@DOMAIN.
    pub dmarc_rua: String,
    /// A domain that already publishes a DMARC record of its own keeps it: the node relies
    /// on that record (verified, never removed by a rollback) instead of ours. When false,
    /// such a domain fails the request, naming the record.
    pub keep_existing_dmarc: bool,
    /// More SPF mechanisms beside the node's ip4: ("include:_spf.example.net", ...).
    pub spf_extra: Vec<String>,
    /// Publish an MTA-STS record (`_mta-sts`) with this policy id; empty: none.
    pub mta_sts_id: String,
    /// Publish a TLS-RPT record reporting to this address; empty: none.
    pub tls_rpt_rua: String,
    /// Publish an Ed25519 DKIM key beside the RSA one (RFC 8463).
    pub ed25519: bool,
    pub powerdns: PowerDnsConfig,
    pub cloudflare: CloudflareConfig,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            provider: DnsProviderKind::Sim,
            zones: Vec::new(),
            nameservers: Vec::new(),
            ttl: 300,
            propagation_timeout: Duration::from_secs(300),
            propagation_interval: Duration::from_secs(2),
            dmarc: DmarcPolicy::None,
            dmarc_rua: String::new(),
            keep_existing_dmarc: true,
            spf_extra: Vec::new(),
            mta_sts_id: String::new(),
            tls_rpt_rua: String::new(),
            ed25519: false,
            powerdns: PowerDnsConfig::default(),
            cloudflare: CloudflareConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PowerDnsConfig {
    /// The API's root, e.g. "http://127.0.0.1:8081".
    pub api_url: String,
    pub server: String,
    /// The environment variable holding the API key.
    pub api_key_env: String,
}

impl Default for PowerDnsConfig {
    fn default() -> Self {
        PowerDnsConfig {
            api_url: "http://127.0.0.1:8081".into(),
            server: "localhost".into(),
            api_key_env: "MAILFLEET_PDNS_API_KEY".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CloudflareConfig {
    pub api_url: String,
    /// The environment variable holding the API token.
    pub token_env: String,
}

impl Default for CloudflareConfig {
    fn default() -> Self {
        CloudflareConfig {
            api_url: "https://api.cloudflare.com/client/v4".into(),
            token_env: "MAILFLEET_CLOUDFLARE_TOKEN".into(),
        }
    }
}

/// How a certificate's names are proved to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ChallengeKind {
    #[default]
    #[serde(rename = "dns-01")]
    Dns01,
    #[serde(rename = "http-01")]
    Http01,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// "sim" (a simulated CA, for the simulated cloud), "none" (no certificates), or an
    /// ACME directory URL.
    pub acme: String,
    pub challenge: ChallengeKind,
    /// Where the http-01 responder listens ("IP:PORT"), for `challenge = "http-01"`.
    pub http_listen: String,
    /// Contact addresses for the ACME account ("mailto:ops@example.com").
    pub contact: Vec<String>,
    /// PEM files of roots to trust for the ACME directory's own HTTPS (a private CA).
    pub ca_roots: Vec<String>,
    /// Renew this many days before a certificate expires.
    pub renew_before_days: u32,
    /// How often the renewal task looks for certificates to renew.
    #[serde(with = "duration_serde")]
    pub renew_check: Duration,
    /// How long one order may take, challenges included.
    #[serde(with = "duration_serde")]
    pub order_timeout: Duration,
    /// Revoke a node's certificate at its CA (reason cessationOfOperation) when the node is
    /// torn down. Its key is destroyed either way.
    pub revoke_on_teardown: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            acme: "sim".into(),
            challenge: ChallengeKind::Dns01,
            http_listen: String::new(),
            contact: Vec::new(),
            ca_roots: Vec::new(),
            renew_before_days: 30,
            renew_check: Duration::from_secs(3600),
            order_timeout: Duration::from_secs(300),
            revoke_on_teardown: true,
        }
    }
}

impl TlsConfig {
    /// The ACME directory, when certificates come from a real CA.
    pub fn directory(&self) -> Option<&str> {
        match self.acme.as_str() {
            "sim" | "none" => None,
            d => Some(d),
        }
    }
}

pub(crate) fn env_name(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ConfigError::invalid(
            key,
            format!("{v:?} is not an environment variable name"),
        ));
    }
    Ok(())
}

pub(crate) fn http_url(key: &str, v: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("{v:?} is not an http(s) URL"),
        )),
    }
}

/// "IP" or "IP:PORT" (port 53 by default).
pub fn parse_nameserver(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an address (\"IP\" or \"IP:PORT\")"))
}

impl DnsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, z) in self.zones.iter().enumerate() {
            crate::domain::validate::validate_domain("zone", z)
                .map_err(|e| ConfigError::invalid(format!("dns.zones[{i}]"), e.to_string()))?;
        }
        for (i, n) in self.nameservers.iter().enumerate() {
            parse_nameserver(n)
                .map_err(|e| ConfigError::invalid(format!("dns.nameservers[{i}]"), e))?;
        }
        if !(60..=86_400).contains(&self.ttl) {
            return Err(ConfigError::invalid(
                "dns.ttl",
                format!("{} is outside 60..=86400 seconds", self.ttl),
            ));
        }
        if self.propagation_timeout.is_zero() || self.propagation_interval.is_zero() {
            return Err(ConfigError::invalid(
                "dns.propagation_timeout",
                "propagation_timeout and propagation_interval must be greater than zero",
            ));
        }
        if !self.dmarc_rua.is_empty()
            && (!self.dmarc_rua.contains('@')
                || self
                    .dmarc_rua
                    .chars()
                    .any(|c| c.is_whitespace() || c == ';'))
        {
            return Err(ConfigError::invalid(
                "dns.dmarc_rua",
                format!("{:?} is not a mail address", self.dmarc_rua),
            ));
        }
        match self.provider {
            DnsProviderKind::Powerdns => {
                http_url("dns.powerdns.api_url", &self.powerdns.api_url)?;
                env_name("dns.powerdns.api_key_env", &self.powerdns.api_key_env)?;
                if self.powerdns.server.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        "dns.powerdns.server",
                        "must not be empty",
                    ));
                }
            }
            DnsProviderKind::Cloudflare => {
                http_url("dns.cloudflare.api_url", &self.cloudflare.api_url)?;
                env_name("dns.cloudflare.token_env", &self.cloudflare.token_env)?;
            }
            DnsProviderKind::Sim | DnsProviderKind::None => {}
        }
        Ok(())
    }
}

impl TlsConfig {
    pub(super) fn validate(&self, dns: &DnsConfig) -> Result<(), ConfigError> {
        if let Some(d) = self.directory() {
            http_url("tls.acme", d).map_err(|_| {
                ConfigError::invalid(
                    "tls.acme",
                    format!("{d:?} is neither \"sim\", \"none\" nor an ACME directory URL"),
                )
            })?;
            if self.challenge == ChallengeKind::Dns01
                && matches!(dns.provider, DnsProviderKind::None | DnsProviderKind::Sim)
            {
                return Err(ConfigError::invalid(
                    "tls.challenge",
                    format!(
                        "dns-01 needs a DNS provider a CA can query, and [dns] provider is {:?}",
                        dns.provider.as_str()
                    ),
                ));
            }
            if self.challenge == ChallengeKind::Http01 {
                self.http_listen
                    .parse::<std::net::SocketAddr>()
                    .map_err(|_| {
                        ConfigError::invalid(
                            "tls.http_listen",
                            format!(
                                "{:?} is not \"IP:PORT\" (needed for http-01)",
                                self.http_listen
                            ),
                        )
                    })?;
            }
        }
        for (i, c) in self.contact.iter().enumerate() {
            if !c.starts_with("mailto:") || !c.contains('@') {
                return Err(ConfigError::invalid(
                    format!("tls.contact[{i}]"),
                    format!("{c:?} is not \"mailto:ADDRESS\""),
                ));
            }
        }
        if self.renew_before_days == 0 || self.renew_before_days > 60 {
            return Err(ConfigError::invalid(
                "tls.renew_before_days",
                format!("{} is outside 1..=60", self.renew_before_days),
            ));
        }
        if self.renew_check.is_zero() || self.order_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "tls.renew_check",
                "renew_check and order_timeout must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// `[verify]`: how a node reached over SSH proves it sends authenticated mail. The node
/// sends a test message through its own Postfix to mailfleet's sink, which checks its DKIM
/// signature and SPF; the PTR of its address is looked up over DNS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyConfig {
    /// Where the sink listens ("IP:PORT"), an address the nodes can reach; nodes route
    /// `sink_domain` to it. Empty: a lab cluster's sink is on the lab's gateway, port 2525;
    /// other clusters need it set.
    pub sink_listen: String,
    /// The domain the test messages are addressed to (never resolved: the nodes route it).
    pub sink_domain: String,
    /// How long the sink waits for a node's test message.
    #[serde(with = "duration_serde")]
    pub message_timeout: Duration,
    /// The DNS server ("IP" or "IP:PORT") asked for the PTR, DKIM and SPF checks. Empty:
    /// the first of `[dns] nameservers`, else the system resolver.
    pub resolver: String,
}

/// The sink's port on a lab's gateway when `[verify] sink_listen` is empty.
pub const LAB_SINK_PORT: u16 = 2525;

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            sink_listen: String::new(),
            sink_domain: "sink.mailfleet.invalid".into(),
            message_timeout: Duration::from_secs(60),
            resolver: String::new(),
        }
    }
}

impl VerifyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.sink_listen.is_empty() {
            let a: std::net::SocketAddr = self.sink_listen.parse().map_err(|_| {
                ConfigError::invalid(
                    "verify.sink_listen",
                    format!("{:?} is not \"IP:PORT\"", self.sink_listen),
                )
            })?;
            if a.port() == 0 || a.ip().is_unspecified() {
                return Err(ConfigError::invalid(
                    "verify.sink_listen",
                    "must name an address and port the nodes can reach (not 0.0.0.0, not port 0)",
                ));
            }
        }
        crate::domain::validate::validate_domain("sink_domain", &self.sink_domain)
            .map_err(|e| ConfigError::invalid("verify.sink_domain", e.to_string()))?;
        if self.message_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "verify.message_timeout",
                "must be greater than zero",
            ));
        }
        if !self.resolver.is_empty() {
            parse_nameserver(&self.resolver)
                .map_err(|e| ConfigError::invalid("verify.resolver", e))?;
        }
        Ok(())
    }

    /// The DNS server the checks ask: `resolver`, else the first configured nameserver;
    /// `None`: the system resolver.
    pub fn resolver(&self, dns: &DnsConfig) -> Option<std::net::SocketAddr> {
        if !self.resolver.is_empty() {
            return parse_nameserver(&self.resolver).ok();
        }
        dns.nameservers
            .first()
            .and_then(|n| parse_nameserver(n).ok())
    }
}

/// `[serve]`: `mailfleet serve`, the engine with an HTTPS listener for agents, `/healthz`
/// and `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// "IP:PORT" it listens on.
    pub listen: String,
    /// PEM files of its certificate chain and key. Empty: a certificate of its own, from a
    /// root made on first start and kept beside the database (`serve/root.pem` is what
    /// agents trust).
    pub tls_cert: String,
    pub tls_key: String,
    /// Names and addresses its own certificate is for, beside the listen address and
    /// `agent_url`'s host.
    pub names: Vec<String>,
    /// The address nodes' agents report to (`https://HOST:PORT`, reaching `listen`). Set,
    /// the bootstrap installs an agent on each node reached over SSH; empty, none.
    pub agent_url: String,
    /// The `mailfleet` program agents run: a lab host runs it in place, any other node gets
    /// a copy. Empty: this program.
    pub agent_program: String,
    /// How often agents report.
    #[serde(with = "duration_serde")]
    pub heartbeat_interval: Duration,
    /// Reports missed in a row before a node is marked unhealthy.
    pub missed_heartbeats: u32,
    /// How far a report's signing time may be from ours.
    #[serde(with = "duration_serde")]
    pub max_skew: Duration,
    /// How long heartbeats are kept; older ones are deleted by the processes that write
    /// them (at least a day: scaling and the node detail read the recent ones).
    #[serde(with = "duration_serde")]
    pub heartbeat_retention: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8443".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            names: Vec::new(),
            agent_url: String::new(),
            agent_program: String::new(),
            heartbeat_interval: Duration::from_secs(30),
            missed_heartbeats: 3,
            max_skew: Duration::from_secs(300),
            heartbeat_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

impl ServeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<std::net::SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "serve.listen",
                format!("{:?} is not \"IP:PORT\"", self.listen),
            )
        })?;
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err(ConfigError::invalid(
                "serve.tls_key",
                "tls_cert and tls_key go together: set both, or neither",
            ));
        }
        for (i, n) in self.names.iter().enumerate() {
            if n.parse::<std::net::IpAddr>().is_err() {
                crate::domain::validate::validate_domain("name", n).map_err(|e| {
                    ConfigError::invalid(format!("serve.names[{i}]"), e.to_string())
                })?;
            }
        }
        for (key, d) in [
            ("serve.heartbeat_interval", self.heartbeat_interval),
            ("serve.max_skew", self.max_skew),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if !self.agent_url.is_empty() {
            let rest = self.agent_url.strip_prefix("https://").unwrap_or("");
            if rest.is_empty() || rest.contains(['/', ' ', '\'', '"', '\\']) || !rest.contains(':')
            {
                return Err(ConfigError::invalid(
                    "serve.agent_url",
                    format!("{:?} is not \"https://HOST:PORT\"", self.agent_url),
                ));
            }
        }
        if self.heartbeat_retention < Duration::from_secs(86_400) {
            return Err(ConfigError::invalid(
                "serve.heartbeat_retention",
                "must be at least 1d (scaling and the node detail read the recent heartbeats)",
            ));
        }
        if self.missed_heartbeats == 0 {
            return Err(ConfigError::invalid(
                "serve.missed_heartbeats",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `[alerting]`: where alerts go beside the console and `mailfleet alerts`. Email through
/// an SMTP relay; its credentials are named by environment variables, never written here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// "HOST:PORT" of the SMTP relay. Empty: no email.
    pub email_relay: String,
    /// "required" (STARTTLS or nothing), "opportunistic", or "none" (a relay on loopback).
    pub email_tls: String,
    pub email_from: String,
    pub email_to: Vec<String>,
    /// Environment variables holding the relay's user name and password (both, or neither).
    pub email_user_env: String,
    pub email_password_env: String,
    /// The least severity sent: "low", "medium" or "high".
    pub min_severity: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            email_relay: String::new(),
            email_tls: "required".into(),
            email_from: "mailfleet@localhost".into(),
            email_to: Vec::new(),
            email_user_env: String::new(),
            email_password_env: String::new(),
            min_severity: "low".into(),
        }
    }
}

impl AlertingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.min_severity.as_str(), "low" | "medium" | "high") {
            return Err(ConfigError::invalid(
                "alerting.min_severity",
                format!("{:?} is not low, medium or high", self.min_severity),
            ));
        }
        if !matches!(
            self.email_tls.as_str(),
            "required" | "opportunistic" | "none"
        ) {
            return Err(ConfigError::invalid(
                "alerting.email_tls",
                format!(
                    "{:?} is not required, opportunistic or none",
                    self.email_tls
                ),
            ));
        }
        if self.email_user_env.is_empty() != self.email_password_env.is_empty() {
            return Err(ConfigError::invalid(
                "alerting.email_password_env",
                "email_user_env and email_password_env go together: set both, or neither",
            ));
        }
        if self.email_relay.is_empty() {
            return Ok(());
        }
        let (host, port) = self.email_relay.rsplit_once(':').unwrap_or(("", ""));
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ConfigError::invalid(
                "alerting.email_relay",
                format!("{:?} is not \"HOST:PORT\"", self.email_relay),
            ));
        }
        let address = |field: &str, a: &str| {
            a.parse::<lettre::Address>()
                .map(|_| ())
                .map_err(|e| ConfigError::invalid(field.to_string(), format!("{a:?}: {e}")))
        };
        address("alerting.email_from", &self.email_from)?;
        if self.email_to.is_empty() {
            return Err(ConfigError::invalid(
                "alerting.email_to",
                "an email relay is set, but nobody to send to",
            ));
        }
        for (i, a) in self.email_to.iter().enumerate() {
            address(&format!("alerting.email_to[{i}]"), a)?;
        }
        Ok(())
    }
}
