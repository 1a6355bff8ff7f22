//! The sink's verdict on a test message: does its DKIM signature verify for the node's
//! domain, and does SPF pass for the address it came from? Checked by mail-auth against a
//! named DNS server (the one the node's records are published on), never hand-written
//! crypto.

use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, SpfResult};
use std::net::{IpAddr, SocketAddr};

/// What was checked, each with its evidence or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `d=DOMAIN s=SELECTOR a=ALGORITHM` of the signature that verified.
    pub dkim: Result<String, String>,
    pub spf: Result<String, String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.dkim.is_ok() && self.spf.is_ok()
    }
}

/// An authenticator that asks only `dns` (UDP, then TCP), with no cache between checks.
pub fn authenticator(dns: SocketAddr) -> Result<MessageAuthenticator, String> {
    let servers = NameServerConfigGroup::from_ips_clear(&[dns.ip()], dns.port(), true);
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 2;
    MessageAuthenticator::new(config, opts).map_err(|e| format!("DNS resolver: {e}"))
}

/// An authenticator that asks the system's resolvers.
pub fn system_authenticator() -> Result<MessageAuthenticator, String> {
    MessageAuthenticator::new_system_conf().map_err(|e| format!("the system resolver: {e}"))
}

/// Checks a message received from `peer` (which said HELO `helo`, MAIL FROM `mail_from`):
/// a DKIM signature of `domain` must verify, and SPF must pass for the sender's domain.
pub async fn check(
    auth: &MessageAuthenticator,
    raw: &[u8],
    domain: &str,
    peer: IpAddr,
    helo: &str,
    mail_from: &str,
) -> Verdict {
    let dkim = match AuthenticatedMessage::parse(raw) {
        None => Err("the message could not be parsed".to_string()),
        Some(msg) => {
            let outputs = auth.verify_dkim(&msg).await;
            let mut why = Vec::new();
            let mut good = None;
            for out in &outputs {
                let sig = out.signature();
                let who = sig
                    .map(|s| format!("d={} s={}", s.d, s.s))
                    .unwrap_or_else(|| "an unreadable signature".into());
                match out.result() {
                    DkimResult::Pass if sig.is_some_and(|s| s.d.eq_ignore_ascii_case(domain)) => {
                        good = Some(format!("{who}: pass"));
                        break;
                    }
                    DkimResult::Pass => why.push(format!("{who}: passes, but not for {domain}")),
                    other => why.push(format!("{who}: {}", describe(other))),
                }
            }
            match (good, outputs.is_empty()) {
                (Some(g), _) => Ok(g),
                (None, true) => Err("the message is not DKIM-signed".to_string()),
                (None, false) => Err(why.join("; ")),
            }
        }
    };
    let params = SpfParameters::verify_mail_from(peer, helo, "mailfleet.invalid", mail_from);
    let out = auth.verify_spf(params).await;
    let spf = match out.result() {
        SpfResult::Pass => Ok(format!("{}: pass for {peer}", out.domain())),
        other => Err(format!(
            "{}: {} for {peer}",
            out.domain(),
            format!("{other:?}").to_ascii_lowercase()
        )),
    };
    Verdict { dkim, spf }
}

fn describe(r: &DkimResult) -> String {
    match r {
        DkimResult::Pass => "pass".into(),
        DkimResult::Neutral(e) => format!("neutral ({e})"),
        DkimResult::Fail(e) => format!("fail ({e})"),
        DkimResult::PermError(e) => format!("permanent error ({e})"),
        DkimResult::TempError(e) => format!("temporary error ({e})"),
        DkimResult::None => "none".into(),
    }
}
