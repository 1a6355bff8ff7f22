//! A real ACME CA for the pipeline and the renewal task: the settings from `[tls]`, the
//! account registered once per directory and its credentials kept like any other secret
//! (sealed under `[dkim] key_env`, or in a 0600 file).

use crate::config::{ChallengeKind, Config};
use crate::dns::DnsProvider;
use crate::store::Store;
use crate::tls::{AcmeSettings, Challenge, Issued, TlsError};
use std::net::SocketAddr;

pub struct AcmeCa {
    settings: AcmeSettings,
    /// `[dns] nameservers`; empty: the zone's NS, looked up per order.
    nameservers: Vec<SocketAddr>,
    store: Store,
    key_env: String,
    account: tokio::sync::Mutex<Option<crate::tls::Account>>,
}

impl AcmeCa {
    pub fn new(cfg: &Config, store: &Store) -> Result<AcmeCa, String> {
        let t = &cfg.tls;
        let directory = t
            .directory()
            .ok_or_else(|| "tls.acme: not an ACME directory".to_string())?;
        let mut settings = AcmeSettings::new(directory);
        settings.contact = t.contact.clone();
        settings.order_timeout = t.order_timeout;
        settings.propagation_timeout = cfg.dns.propagation_timeout;
        settings.poll_interval = cfg
            .dns
            .propagation_interval
            .min(std::time::Duration::from_secs(2));
        settings.challenge = match t.challenge {
            ChallengeKind::Dns01 => Challenge::Dns01,
            ChallengeKind::Http01 => Challenge::Http01 {
                listen: t.http_listen.parse().map_err(|_| {
                    format!("tls.http_listen: {:?} is not \"IP:PORT\"", t.http_listen)
                })?,
            },
        };
        for (i, path) in t.ca_roots.iter().enumerate() {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("tls.ca_roots[{i}]: {path}: {e}"))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "tls.ca_roots[{i}]: {path}: holds no PEM certificate"
                ));
            }
            settings.extra_roots_pem.push(pem);
        }
        Ok(AcmeCa {
            settings,
            nameservers: cfg
                .dns
                .nameservers
                .iter()
                .filter_map(|n| crate::config::mail::parse_nameserver(n).ok())
                .collect(),
            store: store.clone(),
            key_env: cfg.dkim.key_env.clone(),
            account: tokio::sync::Mutex::new(None),
        })
    }

    fn aad(&self) -> String {
        format!("acme/{}", self.settings.directory)
    }

    /// The account: loaded from what was kept, or registered and kept.
    async fn account(&self) -> Result<crate::tls::Account, TlsError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let store_err =
            |e: crate::store::StoreError| TlsError::Config(format!("the ACME account: {e}"));
        let kept = self
            .store
            .acme_account(&self.settings.directory)
            .await
            .map_err(store_err)?;
        let existing = match kept {
            Some((sealed, file)) => {
                let file = file.map(|f| self.store.key_path(&f).display().to_string());
                let bytes = crate::dkim::recover(
                    &self.key_env,
                    sealed.as_deref(),
                    file.as_deref(),
                    &self.aad(),
                )
                .map_err(|e| TlsError::Config(format!("the ACME account: {e}")))?;
                Some(zeroize::Zeroizing::new(
                    String::from_utf8(bytes.to_vec()).map_err(|_| {
                        TlsError::Config("the kept ACME account is unreadable".into())
                    })?,
                ))
            }
            None => None,
        };
        let (account, fresh) =
            crate::tls::account(&self.settings, existing.as_deref().map(String::as_str)).await?;
        if let Some(creds) = fresh {
            let creds = zeroize::Zeroizing::new(creds);
            let dir = self.store.key_dir("tls");
            let stem = format!("acme-account-{}", crate::domain::ids::new_id());
            let kept = crate::dkim::keep(&self.key_env, &dir, &stem, creds.as_bytes(), &self.aad())
                .map_err(|e| TlsError::Config(format!("the ACME account: {e}")))?;
            let first = self
                .store
                .save_acme_account(
                    &self.settings.directory,
                    kept.sealed,
                    kept.file
                        .as_deref()
                        .map(|f| self.store.key_record(std::path::Path::new(f))),
                    chrono::Utc::now(),
                )
                .await
                .map_err(store_err)?;
            if !first {
                // Another process kept one first; ours stays unused.
                if let Some(f) = kept.file {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Revokes a certificate at this CA, as the account that ordered it.
    pub async fn revoke(&self, chain_pem: &str) -> Result<(), TlsError> {
        let account = self.account().await?;
        crate::tls::revoke(&account, chain_pem).await
    }

    pub async fn obtain(
        &self,
        dns: Option<&dyn DnsProvider>,
        zone: &str,
        names: &[String],
    ) -> Result<Issued, TlsError> {
        let account = self.account().await?;
        let mut settings = self.settings.clone();
        if settings.challenge == Challenge::Dns01 {
            settings.nameservers = if self.nameservers.is_empty() {
                crate::dns::propagation::zone_servers(zone)
                    .await
                    .map_err(|e| {
                        TlsError::Config(format!("the authoritative servers of {zone}: {e}"))
                    })?
            } else {
                self.nameservers.clone()
            };
        }
        let Some(dns) = dns else {
            return Err(TlsError::Config(
                "dns-01 needs a DNS provider, and [dns] provider is \"none\"".into(),
            ));
        };
        let journal = StoreJournal {
            store: &self.store,
            directory: &self.settings.directory,
        };
        crate::tls::obtain_recorded(&settings, &account, dns, zone, names, &journal).await
    }
}

/// Orders in flight, kept in the store (`acme_orders`).
struct StoreJournal<'a> {
    store: &'a Store,
    directory: &'a str,
}

fn journal_error(e: crate::store::StoreError) -> TlsError {
    TlsError::Config(format!("keeping the ACME order: {e}"))
}

#[async_trait::async_trait]
impl crate::tls::OrderJournal for StoreJournal<'_> {
    async fn unfinished(&self, names: &str) -> Result<Vec<String>, TlsError> {
        self.store
            .acme_orders_unfinished(self.directory, names)
            .await
            .map_err(journal_error)
    }

    async fn placed(&self, url: &str, names: &str) -> Result<(), TlsError> {
        let by = format!("pid {}", std::process::id());
        self.store
            .acme_order_placed(url, self.directory, names, &by, chrono::Utc::now())
            .await
            .map_err(journal_error)
    }

    async fn done(&self, url: &str) -> Result<(), TlsError> {
        self.store.acme_order_done(url).await.map_err(journal_error)
    }
}
