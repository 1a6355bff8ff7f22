//! Where certificates come from: a real ACME CA (`[tls] acme = URL`, through `crate::tls`),
//! the simulated CA of the embedded default (`"sim"`), or nowhere (`"none"`).
//!
//! The simulated CA behaves like a CA, not a stub: it proves the name with a dns-01 style
//! challenge through the (simulated) DNS provider — a TXT record at `_acme-challenge.NAME`
//! that it reads back before issuing, and removes afterwards — takes its time, and signs a
//! real X.509 certificate (90 days) with a root it makes when the process starts.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::dns::{DnsProvider, Published};
use crate::domain::records::{split_txt, PlannedRecord};
use crate::providers::{ErrorKind, ProviderError};
use crate::store::{NewCert, Store};
use crate::tls::{Issued, TlsError};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

pub const SIM_CA: &str = "sim-ca";

/// The common name of every simulated root.
const SIM_ROOT_NAME: &str = "mailfleet simulated CA";

pub enum Ca {
    None,
    Sim(SimCa),
    Acme(Box<super::acme_glue::AcmeCa>),
    /// The config names a CA that cannot be used as it stands.
    Broken(String),
}

impl Ca {
    pub fn from_config(cfg: &Config, store: &Store, clock: &SharedClock) -> Ca {
        match cfg.tls.acme.as_str() {
            "none" => Ca::None,
            "sim" => Ca::Sim(SimCa::new(cfg.providers.sim.delay_ms, clock.clone())),
            _ => match super::acme_glue::AcmeCa::new(cfg, store) {
                Ok(a) => Ca::Acme(Box::new(a)),
                Err(e) => Ca::Broken(e),
            },
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, Ca::None)
    }

    pub fn problem(&self) -> Option<String> {
        match self {
            Ca::Broken(e) => Some(e.clone()),
            _ => None,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Ca::None => "none",
            Ca::Sim(_) => SIM_CA,
            Ca::Acme(_) => "acme",
            Ca::Broken(_) => "acme",
        }
    }

    /// A certificate for `names`, proved through `dns` in `zone`.
    pub async fn obtain(
        &self,
        dns: Option<&dyn DnsProvider>,
        zone: &str,
        names: &[String],
    ) -> Result<Issued, ProviderError> {
        match self {
            Ca::None | Ca::Broken(_) => Err(self.unusable()),
            Ca::Sim(s) => s.obtain(dns, zone, names).await,
            Ca::Acme(a) => a.obtain(dns, zone, names).await.map_err(tls_error),
        }
    }

    /// Revokes a certificate this CA issued (its chain as PEM): the node is gone.
    pub async fn revoke(&self, chain_pem: &str) -> Result<(), ProviderError> {
        match self {
            Ca::None | Ca::Broken(_) => Err(self.unusable()),
            Ca::Sim(s) => s.revoke(chain_pem).await,
            Ca::Acme(a) => a.revoke(chain_pem).await.map_err(tls_error),
        }
    }

    /// Why a CA that is none, or broken, cannot be asked.
    fn unusable(&self) -> ProviderError {
        let why = match self {
            Ca::Broken(e) => e.clone(),
            _ => "[tls] acme = \"none\": no CA to ask".to_string(),
        };
        ProviderError::new("tls", ErrorKind::Invalid, why)
    }
}

/// [`keep_cert`] on the blocking pool: writing (and syncing) a key file must not hold up
/// the runtime's workers.
pub async fn keep_cert_off_thread(
    store: &Store,
    cfg: &Arc<Config>,
    hostname: &str,
    issued: Issued,
) -> Result<NewCert, String> {
    let (store, cfg, host) = (store.clone(), cfg.clone(), hostname.to_string());
    tokio::task::spawn_blocking(move || keep_cert(&store, &cfg, &host, issued))
        .await
        .map_err(|e| format!("keeping the certificate's key stopped: {e}"))?
}

/// An ACME failure as the engine's retry policy sees it.
pub(crate) fn tls_error(e: TlsError) -> ProviderError {
    let kind = if e.retryable() {
        ErrorKind::Transient
    } else {
        ErrorKind::Invalid
    };
    ProviderError::new("acme", kind, e.to_string())
}

/// Reads an issued chain and keeps its key; the result is ready for the store.
pub fn keep_cert(
    store: &Store,
    cfg: &Config,
    hostname: &str,
    issued: Issued,
) -> Result<NewCert, String> {
    let info = crate::tls::inspect(&issued.chain_pem).map_err(|e| e.to_string())?;
    let id = crate::domain::ids::new_id();
    let (_, der) = rsa::pkcs8::der::pem::decode_vec(issued.key_pem.as_bytes())
        .map_err(|_| "the certificate's key is not PEM".to_string())?;
    let der = zeroize::Zeroizing::new(der);
    let dir = store.key_dir("tls");
    // Named by the certificate's id: a hostname may be longer than a file name may.
    let kept = crate::dkim::keep(
        &cfg.dkim.key_env,
        &dir,
        &format!("cert-{id}"),
        &der,
        &format!("cert/{id}"),
    )
    .map_err(|e| {
        format!(
            "the certificate's key: {}",
            e.to_string().trim_start_matches("dkim: ")
        )
    })?;
    Ok(NewCert {
        id,
        hostname: hostname.to_string(),
        names: info.names,
        issuer: info.issuer,
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        chain_pem: issued.chain_pem,
        key_sealed: kept.sealed,
        key_file: kept
            .file
            .as_deref()
            .map(|f| store.key_record(std::path::Path::new(f))),
    })
}

/// The simulated CA's root: its parameters, key and certificate (PEM).
pub type Root = Arc<(rcgen::CertificateParams, rcgen::KeyPair, String)>;

/// A new simulated root: a self-signed CA certificate and its key.
pub fn make_root() -> Result<Root, rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, SIM_ROOT_NAME);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let pem = p.self_signed(&key)?.pem();
    Ok(Arc::new((p, key, pem)))
}

/// A leaf certificate for `names` with `key`, signed by `root`, valid over the days from
/// `before` to `after`; the chain (leaf, then root) as PEM.
pub fn sign_leaf(
    root: &Root,
    key: &rcgen::KeyPair,
    names: &[String],
    before: chrono::DateTime<chrono::Utc>,
    after: chrono::DateTime<chrono::Utc>,
    mut serial: [u8; 16],
) -> Result<String, rcgen::Error> {
    let mut p = rcgen::CertificateParams::new(names.to_vec())?;
    let (y, m, d) = ymd(before);
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(after);
    p.not_after = rcgen::date_time_ymd(y, m, d);
    // A positive serial with no leading zero octet.
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let issuer = rcgen::Issuer::from_params(&root.0, &root.1);
    let cert = p.signed_by(key, &issuer)?;
    Ok(format!("{}{}", cert.pem(), root.2))
}

/// The simulated CA.
pub struct SimCa {
    delay_ms: [u64; 2],
    clock: SharedClock,
    root: std::sync::OnceLock<Result<Root, String>>,
}

fn sim_err(kind: ErrorKind, m: impl Into<String>) -> ProviderError {
    ProviderError::new(SIM_CA, kind, m)
}

fn ymd(t: chrono::DateTime<chrono::Utc>) -> (i32, u8, u8) {
    use chrono::Datelike;
    (t.year(), t.month() as u8, t.day() as u8)
}

impl SimCa {
    pub fn new(delay_ms: [u64; 2], clock: SharedClock) -> SimCa {
        SimCa {
            delay_ms,
            clock,
            root: std::sync::OnceLock::new(),
        }
    }

    fn root(&self) -> Result<Root, ProviderError> {
        self.root
            .get_or_init(|| make_root().map_err(|e| format!("cannot make the simulated root: {e}")))
            .clone()
            .map_err(|e| sim_err(ErrorKind::Invalid, e))
    }

    async fn pause(&self) {
        let [lo, hi] = self.delay_ms;
        let ms = if hi > lo {
            rand::thread_rng().gen_range(lo..=hi)
        } else {
            lo
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn obtain(
        &self,
        dns: Option<&dyn DnsProvider>,
        zone: &str,
        names: &[String],
    ) -> Result<Issued, ProviderError> {
        let root = self.root()?;
        for name in names {
            crate::domain::validate::validate_domain("hostname", name)
                .map_err(|e| sim_err(ErrorKind::Invalid, e.to_string()))?;
        }
        // The challenge: a token published, read back, then removed whatever happened.
        if let Some(dns) = dns {
            let token: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(43)
                .map(char::from)
                .collect();
            let records: Vec<PlannedRecord> = names
                .iter()
                .map(|n| PlannedRecord {
                    purpose: "acme-challenge",
                    name: format!("_acme-challenge.{}.", n.trim_end_matches('.')),
                    rtype: "TXT",
                    ttl: 60,
                    content: token.clone(),
                    strings: split_txt(&token),
                })
                .collect();
            let dns_err = |e: crate::dns::DnsError| {
                let kind = if e.retryable() {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Invalid
                };
                sim_err(kind, format!("dns-01: {e}"))
            };
            let added = dns.publish(zone, &records).await.map_err(dns_err)?;
            self.pause().await;
            let mut failed = None;
            for r in &records {
                let want = Published::of(r);
                match dns.lookup(zone, &r.name, "TXT").await {
                    Ok(found)
                        if found
                            .iter()
                            .any(|p| p.content.trim() == want.content.trim()) => {}
                    Ok(_) => {
                        failed = Some(sim_err(
                            ErrorKind::Invalid,
                            format!(
                                "dns-01 challenge for {} failed: no TXT record with the token",
                                r.name
                            ),
                        ))
                    }
                    Err(e) => failed = Some(dns_err(e)),
                }
            }
            let removed = dns.remove(zone, &added).await.map_err(dns_err);
            if let Some(e) = failed {
                return Err(e);
            }
            removed?;
        }
        self.pause().await;
        let now = self.clock.now();
        let mut serial = [0u8; 16];
        rand::thread_rng().fill(&mut serial);
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let issue = || -> Result<Issued, rcgen::Error> {
            let key = rcgen::KeyPair::generate()?;
            let (before, after) = (
                now - chrono::Duration::days(1),
                now + chrono::Duration::days(90),
            );
            let chain_pem = sign_leaf(&root, &key, names, before, after, serial)?;
            Ok(Issued {
                chain_pem,
                key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
                not_before: before,
                not_after: after,
                names: names.to_vec(),
                serial: hex(&serial),
            })
        };
        issue().map_err(|e| sim_err(ErrorKind::Invalid, format!("cannot sign: {e}")))
    }
}

impl SimCa {
    /// The simulated CA takes its time and accepts what it issued (any run's root: they
    /// share one name); it keeps no revocation list to publish.
    async fn revoke(&self, chain_pem: &str) -> Result<(), ProviderError> {
        let info = crate::tls::inspect(chain_pem)
            .map_err(|e| sim_err(ErrorKind::Invalid, format!("revoke: {e}")))?;
        if !info.issuer.contains(SIM_ROOT_NAME) {
            return Err(sim_err(
                ErrorKind::Invalid,
                format!(
                    "revoke: not issued by the simulated CA (issuer {})",
                    info.issuer
                ),
            ));
        }
        self.pause().await;
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
