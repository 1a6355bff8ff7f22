//! TLS certificates for nodes, from an ACME CA (RFC 8555) through `instant-acme`.
//!
//! [`account`] registers an ACME account, or loads the one whose credentials the caller kept
//! (a secret: the account key is in them). [`obtain`] orders a certificate: each name is
//! proved by a dns-01 record published through the zone's [`DnsProvider`] and asked of the
//! zone's authoritative servers until it answers (only then is the CA told to look), or by
//! an http-01 answer from a small listener of our own. The order is polled with backoff
//! until it is ready, finalized with a fresh key and CSR, and the chain downloaded. The
//! challenge records are removed again whatever happened. [`inspect`] reads a chain's leaf;
//! [`renew_due`] says when to renew.
//!
//! [`DnsProvider`]: crate::dns::DnsProvider

mod acme;
mod cert;
mod error;
mod http01;
mod orders;

pub use acme::{account, obtain, obtain_recorded, revoke, Account};
pub use cert::{inspect, renew_due, CertInfo, DEFAULT_RENEW_DAYS};
pub use error::TlsError;
pub use orders::{names_key, NoJournal, OrderJournal, OrderView};

use chrono::{DateTime, Utc};
use std::net::SocketAddr;
use std::time::Duration;

/// How the CA is to check that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A TXT record at `_acme-challenge.NAME`, through the DNS provider. Wildcards need it.
    Dns01,
    /// `http://NAME/.well-known/acme-challenge/TOKEN`, answered by a listener on `listen`
    /// for the order's duration (the CA connects to port 80 of the name's address: `listen`
    /// must be that port, or where it is forwarded to).
    Http01 { listen: SocketAddr },
}

impl Challenge {
    /// Its name in ACME: `dns-01`, `http-01`.
    pub fn label(&self) -> &'static str {
        match self {
            Challenge::Dns01 => "dns-01",
            Challenge::Http01 { .. } => "http-01",
        }
    }
}

/// Where and how certificates are ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The CA's directory URL (https), e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Account contacts, e.g. `mailto:ops@example.com`; used when an account is registered.
    pub contact: Vec<String>,
    /// PEM certificates trusted for the CA's HTTPS besides the usual web roots (a test CA's
    /// own certificate, an internal CA).
    pub extra_roots_pem: Vec<String>,
    pub challenge: Challenge,
    /// The zone's authoritative servers: a dns-01 record must answer from every one of them
    /// before the CA is told to look. Empty: the CA is told at once.
    pub nameservers: Vec<SocketAddr>,
    /// How long a dns-01 record may take to answer from `nameservers`.
    pub propagation_timeout: Duration,
    /// The first pause between polls (of the nameservers, of the order); later pauses grow.
    pub poll_interval: Duration,
    /// How long the CA may take from "ready" to the issued certificate.
    pub order_timeout: Duration,
}

impl AcmeSettings {
    /// dns-01 against `directory`, with Let's-Encrypt-friendly pacing: two minutes for the
    /// record to answer, polls from two seconds, five minutes for the order.
    pub fn new(directory: impl Into<String>) -> AcmeSettings {
        AcmeSettings {
            directory: directory.into(),
            contact: Vec::new(),
            extra_roots_pem: Vec::new(),
            challenge: Challenge::Dns01,
            nameservers: Vec::new(),
            propagation_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(2),
            order_timeout: Duration::from_secs(300),
        }
    }
}

/// A certificate as issued, with its private key.
pub struct Issued {
    /// The leaf first, then the intermediates, as the CA sent them.
    pub chain_pem: String,
    /// PKCS#8 PEM of the certificate's key (ECDSA P-256), made for this order.
    pub key_pem: zeroize::Zeroizing<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// The names the certificate covers (from its subjectAltName).
    pub names: Vec<String>,
    /// Lowercase hex.
    pub serial: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("names", &self.names)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &format_args!("(redacted)"))
            .finish()
    }
}
