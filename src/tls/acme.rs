//! The ACME conversation: accounts, and orders from "new" to the downloaded chain, with the
//! challenge records published for it and removed after it.

use super::cert::inspect;
use super::error::{chain, clean, from_acme, problem_text, problem_type};
use super::http01::Http01Server;
use super::orders::{names_key, settle_abandoned, NoJournal, OrderJournal};
use super::{AcmeSettings, Challenge, Issued, TlsError};
use crate::dns::propagation::{wait_verified, RecordStatus};
use crate::dns::{DnsError, DnsProvider, Published};
use crate::domain::records::{split_txt, PlannedRecord};
use crate::domain::validate::validate_domain;
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeStatus,
    ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, Order, OrderStatus,
};
use rustls_pki_types::PrivateKeyDer;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The problem a CA answers when asked for an account it does not know.
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
/// One request to the CA, start to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TTL of a dns-01 record: short, it is gone again within minutes.
const CHALLENGE_TTL: u32 = 60;
/// Polls never come faster than this, whatever the settings say.
const MIN_POLL: Duration = Duration::from_millis(50);
/// Nor slower than this (or the first pause, if that is longer).
const MAX_POLL: Duration = Duration::from_secs(10);
/// Pauses between attempts to remove the challenge records.
const CLEANUP_PAUSES: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// An ACME account at one CA directory, ready to order certificates. Cheap to clone.
#[derive(Clone)]
pub struct Account {
    inner: instant_acme::Account,
    directory: String,
}

impl Account {
    /// The account's URL at the CA.
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// The directory the account belongs to.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    pub(super) fn inner(&self) -> &instant_acme::Account {
        &self.inner
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id())
            .field("directory", &self.directory)
            .finish()
    }
}

/// Revokes the leaf of `chain_pem` at the account's CA with reason cessationOfOperation
/// (RFC 5280 §5.3.1): the node it was for is gone. A certificate the CA already holds
/// revoked counts as revoked.
pub async fn revoke(account: &Account, chain_pem: &str) -> Result<(), TlsError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let leaf = chain_pem
        .find(BEGIN)
        .and_then(|start| {
            let rest = &chain_pem[start..];
            rest.find(END).map(|end| &rest[..end + END.len()])
        })
        .ok_or_else(|| TlsError::Config("revoke: the chain holds no certificate".into()))?;
    let (_, der) = rsa::pkcs8::der::pem::decode_vec(leaf.as_bytes())
        .map_err(|e| TlsError::Config(format!("revoke: the certificate is not PEM: {e}")))?;
    let der = rustls_pki_types::CertificateDer::from(der);
    let request = instant_acme::RevocationRequest {
        certificate: &der,
        reason: Some(instant_acme::RevocationReason::CessationOfOperation),
    };
    match account.inner.revoke(&request).await {
        Ok(()) => Ok(()),
        Err(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:alreadyRevoked") =>
        {
            Ok(())
        }
        Err(e) => Err(from_acme(e, "revoke the certificate")),
    }
}

// ---- HTTP ------------------------------------------------------------------------------------

/// instant-acme's requests sent with the reqwest client the crate already uses (rustls, the
/// web roots plus any extra roots from the settings; no redirects, HTTPS only).
#[derive(Clone)]
struct AcmeHttp {
    client: reqwest::Client,
}

impl AcmeHttp {
    fn new(settings: &AcmeSettings) -> Result<AcmeHttp, TlsError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent(concat!("mailfleet/", env!("CARGO_PKG_VERSION")));
        for (i, pem) in settings.extra_roots_pem.iter().enumerate() {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                TlsError::Config(format!(
                    "extra_roots_pem[{i}] is not a PEM certificate: {}",
                    chain(&e)
                ))
            })?;
            if certs.is_empty() {
                return Err(TlsError::Config(format!(
                    "extra_roots_pem[{i}] holds no PEM certificate"
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| {
            TlsError::Config(format!("cannot build the HTTP client: {}", chain(&e)))
        })?;
        Ok(AcmeHttp { client })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut head = http::Response::builder()
                .status(resp.status())
                .version(resp.version());
            if let Some(headers) = head.headers_mut() {
                headers.extend(resp.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, ()) = head.body(())?.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}

fn check_directory(settings: &AcmeSettings) -> Result<String, TlsError> {
    let directory = settings.directory.trim();
    let url = reqwest::Url::parse(directory).map_err(|e| {
        TlsError::Config(format!(
            "directory {:?} is not a URL: {e}",
            clean(directory)
        ))
    })?;
    if url.scheme() != "https" {
        return Err(TlsError::Config(format!(
            "directory {:?} must be an https URL",
            clean(directory)
        )));
    }
    Ok(directory.to_string())
}

// ---- accounts --------------------------------------------------------------------------------

/// The part of stored credentials that says which CA they are for.
#[derive(serde::Deserialize)]
struct StoredDirectory {
    #[serde(default)]
    directory: Option<String>,
}

/// Reads stored credentials without ever putting their text in a message.
fn parse_credentials(json: &str) -> Result<(AccountCredentials, Option<String>), TlsError> {
    let unreadable = |e: serde_json::Error| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "do not hold what an account needs",
            _ => "are not JSON",
        };
        TlsError::Config(format!(
            "the stored account credentials {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    };
    let credentials: AccountCredentials = serde_json::from_str(json).map_err(unreadable)?;
    let stored: StoredDirectory = serde_json::from_str(json).map_err(unreadable)?;
    Ok((credentials, stored.directory))
}

/// The account of `existing` credentials when they are for `settings.directory` and the CA
/// still knows them; otherwise a new account, with its credentials (JSON, secret: the
/// account key is in them) for the caller to keep for next time.
pub async fn account(
    settings: &AcmeSettings,
    existing: Option<&str>,
) -> Result<(Account, Option<Zeroizing<String>>), TlsError> {
    let directory = check_directory(settings)?;
    let http = AcmeHttp::new(settings)?;
    if let Some(json) = existing {
        let (credentials, stored_directory) = parse_credentials(json)?;
        if stored_directory.as_deref().map(str::trim) == Some(directory.as_str()) {
            let key_der = credentials.private_key().clone_key();
            let key = instant_acme::Key::from_pkcs8_der(key_der.clone_key()).map_err(|_| {
                TlsError::Config("the stored account key cannot be used".to_string())
            })?;
            let found = instant_acme::Account::builder_with_http(Box::new(http.clone()))
                .from_key((key, PrivateKeyDer::Pkcs8(key_der)), directory.clone())
                .await;
            match found {
                Ok((inner, _)) => return Ok((Account { inner, directory }, None)),
                Err(instant_acme::Error::Api(p))
                    if p.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST) =>
                {
                    tracing::info!(
                        %directory,
                        "the CA no longer knows the stored ACME account; registering a new one"
                    );
                }
                Err(e) => {
                    return Err(from_acme(
                        e,
                        &format!("look up the stored account at {directory}"),
                    ))
                }
            }
        } else {
            tracing::info!(
                %directory,
                "the stored ACME account is for another directory; registering a new one"
            );
        }
    }
    for c in &settings.contact {
        if c.is_empty()
            || c.chars().any(|ch| ch.is_control() || ch.is_whitespace())
            || !c.contains(':')
        {
            return Err(TlsError::Config(format!(
                "contact {:?} is not a URL like mailto:ops@example.com",
                clean(c)
            )));
        }
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (inner, credentials) = instant_acme::Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            None,
        )
        .await
        .map_err(|e| from_acme(e, &format!("register an account at {directory}")))?;
    let json = serde_json::to_string(&credentials).map_err(|_| {
        TlsError::Config("cannot serialize the new account's credentials".to_string())
    })?;
    Ok((Account { inner, directory }, Some(Zeroizing::new(json))))
}

// ---- orders ----------------------------------------------------------------------------------

/// One pending authorization's challenge, as we answer it.
struct Task {
    /// As the order names it (`*.example.com` for a wildcard).
    name: String,
    /// The name the dns-01 record goes under (without `*.`).
    base: String,
    token: String,
    key_authorization: Zeroizing<String>,
    dns_value: String,
}

/// The names, lowercase, without duplicates; each a valid DNS name (a leading `*.` allowed
/// with dns-01), inside `zone` for dns-01.
fn check_names(
    names: &[String],
    zone: &str,
    challenge: &Challenge,
) -> Result<Vec<String>, TlsError> {
    if names.is_empty() {
        return Err(TlsError::Config(
            "no names to order a certificate for".to_string(),
        ));
    }
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for raw in names {
        let name = raw.trim_end_matches('.').to_ascii_lowercase();
        let bad = |why: String| TlsError::BadName {
            name: clean(raw),
            why,
        };
        let (wildcard, base) = match name.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, name.as_str()),
        };
        validate_domain("name", base).map_err(|e| bad(e.to_string()))?;
        match challenge {
            Challenge::Dns01 => {
                if base != zone && !base.ends_with(&format!(".{zone}")) {
                    return Err(bad(format!(
                        "not inside zone {}, where its dns-01 record would go",
                        clean(&zone)
                    )));
                }
            }
            Challenge::Http01 { .. } if wildcard => {
                return Err(bad("a wildcard can only be proved by dns-01".to_string()));
            }
            Challenge::Http01 { .. } => {}
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn challenge_type(challenge: &Challenge) -> ChallengeType {
    match challenge {
        Challenge::Dns01 => ChallengeType::Dns01,
        Challenge::Http01 { .. } => ChallengeType::Http01,
    }
}

fn type_label(t: &ChallengeType) -> String {
    match t {
        ChallengeType::Dns01 => "dns-01".to_string(),
        ChallengeType::Http01 => "http-01".to_string(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".to_string(),
        ChallengeType::DeviceAttest01 => "device-attest-01".to_string(),
        ChallengeType::Unknown(s) => clean(s),
        _ => "unknown".to_string(),
    }
}

/// Orders a certificate for `names` and returns it with its new key. dns-01 records go into
/// `zone` through `dns`; they, and the http-01 listener, are gone again when this returns,
/// whatever happened. Removal is tried three times; records that still cannot be removed
/// are reported in a [`TlsError::Leftover`] when the order failed, and in a warning in the
/// log when the certificate was issued (it is returned all the same: a stray challenge
/// record is harmless, a lost certificate costs an order against the CA's rate limits).
///
/// Dropping the future before it completes skips that cleanup: await it to the end.
pub async fn obtain(
    settings: &AcmeSettings,
    account: &Account,
    dns: &dyn DnsProvider,
    zone: &str,
    names: &[String],
) -> Result<Issued, TlsError> {
    obtain_recorded(settings, account, dns, zone, names, &NoJournal).await
}

/// [`obtain`], keeping the order in `journal` from before its first challenge is answered
/// until it ends; orders for the same names that an earlier attempt left unfinished have
/// their pending authorizations deactivated first.
pub async fn obtain_recorded(
    settings: &AcmeSettings,
    account: &Account,
    dns: &dyn DnsProvider,
    zone: &str,
    names: &[String],
    journal: &dyn OrderJournal,
) -> Result<Issued, TlsError> {
    let directory = check_directory(settings)?;
    if directory != account.directory {
        return Err(TlsError::Config(format!(
            "the account is for {}, the settings for {}",
            clean(&account.directory),
            clean(&directory)
        )));
    }
    let names = check_names(names, zone, &settings.challenge)?;
    let key = names_key(&names);
    settle_abandoned(account, journal, &key).await?;
    let mut published: Vec<Published> = Vec::new();
    let mut listener: Option<Http01Server> = None;
    let mut placed = Placed {
        journal,
        key: &key,
        url: None,
    };
    let result = run_order(
        settings,
        account,
        dns,
        zone,
        &names,
        &mut published,
        &mut listener,
        &mut placed,
    )
    .await;
    drop(listener);
    let cleanup = remove_records(dns, zone, &published).await;
    if let Some(url) = &placed.url {
        // A failed order's pending authorizations are deactivated now; one cut off before
        // this point stays kept, and the next order for these names settles it.
        if result.is_err() {
            let _ = settle_abandoned(account, journal, &key).await;
        } else if let Err(e) = journal.done(url).await {
            tracing::warn!(error = %e, "a finished order could not be forgotten; the next order settles it");
        }
    }
    match (result, cleanup) {
        (Ok(issued), Ok(())) => Ok(issued),
        (Ok(issued), Err(e)) => {
            let names: Vec<&str> = published.iter().map(|r| r.name.as_str()).collect();
            tracing::warn!(
                error = %e,
                zone = %clean(zone),
                records = ?names,
                "certificate issued, but its challenge records could not be removed"
            );
            Ok(issued)
        }
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(cleanup)) => Err(TlsError::Leftover {
            error: Box::new(error),
            records: published,
            cleanup,
        }),
    }
}

/// Removes the records, trying again a couple of times on transient failures.
async fn remove_records(
    dns: &dyn DnsProvider,
    zone: &str,
    records: &[Published],
) -> Result<(), DnsError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut pauses = CLEANUP_PAUSES.iter();
    loop {
        match dns.remove(zone, records).await {
            Ok(()) => return Ok(()),
            Err(e) if e.retryable() => match pauses.next() {
                Some(pause) => tokio::time::sleep(*pause).await,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Waits the current pause and grows it; `false` when the deadline would pass first.
async fn pause(delay: &mut Duration, deadline: Instant, cap: Duration) -> bool {
    if Instant::now() + *delay > deadline {
        return false;
    }
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(cap);
    true
}

/// Where an order is kept once placed, and its URL.
struct Placed<'a> {
    journal: &'a dyn OrderJournal,
    key: &'a str,
    url: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn run_order(
    settings: &AcmeSettings,
    account: &Account,
    dns: &dyn DnsProvider,
    zone: &str,
    names: &[String],
    published: &mut Vec<Published>,
    listener: &mut Option<Http01Server>,
    placed: &mut Placed<'_>,
) -> Result<Issued, TlsError> {
    let all = names.join(", ");
    let kind = challenge_type(&settings.challenge);
    let label = settings.challenge.label();
    let first_pause = settings.poll_interval.max(MIN_POLL);
    let cap = first_pause.max(MAX_POLL);

    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .inner
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| from_acme(e, &format!("new order for {all}")))?;
    // Kept before any challenge is answered: a cut-off attempt is found by the next one.
    placed.journal.placed(order.url(), placed.key).await?;
    placed.url = Some(order.url().to_string());

    // 1. What each authorization still asks for (a valid one, reused, asks nothing).
    let mut tasks: Vec<Task> = Vec::new();
    let mut any_invalid = false;
    {
        let mut authorizations = order.authorizations();
        while let Some(next) = authorizations.next().await {
            let mut authz =
                next.map_err(|e| from_acme(e, &format!("read the authorizations for {all}")))?;
            let name = authz.identifier().to_string();
            let base = match authz.identifier().identifier {
                Identifier::Dns(d) => d.to_ascii_lowercase(),
                _ => name.clone(),
            };
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Invalid => {
                    any_invalid = true;
                    continue;
                }
                other => {
                    return Err(TlsError::OrderInvalid {
                        names: all,
                        detail: format!("the authorization for {} is {other:?}", clean(&name)),
                    })
                }
            }
            let Some(challenge) = authz.challenge(kind.clone()) else {
                return Err(TlsError::Rejected {
                    what: format!("{label} challenge for {}", clean(&name)),
                    detail: "the CA does not offer this challenge for this name".to_string(),
                    problem: None,
                });
            };
            let key_authorization = challenge.key_authorization();
            tasks.push(Task {
                name: clean(&name),
                base,
                token: challenge.token.clone(),
                key_authorization: Zeroizing::new(key_authorization.as_str().to_string()),
                dns_value: key_authorization.dns_value(),
            });
        }
    }
    if any_invalid {
        return Err(explain_invalid(&mut order, &all).await);
    }

    if !tasks.is_empty() {
        // 2. Answer the challenges where the CA will look.
        match &settings.challenge {
            Challenge::Dns01 => publish_and_wait(settings, dns, zone, &tasks, published).await?,
            Challenge::Http01 { listen } => {
                let answers: HashMap<String, String> = tasks
                    .iter()
                    .map(|t| (t.token.clone(), t.key_authorization.to_string()))
                    .collect();
                let server = Http01Server::start(*listen, answers).await?;
                tracing::debug!(addr = %server.addr(), names = %all, "http-01 responder listening");
                *listener = Some(server);
            }
        }

        // 3. Tell the CA to look.
        if let Err(error) = set_ready(&mut order, &kind, label, &all).await {
            // A challenge already failed is better told than the refusal to start it.
            if !error.retryable() {
                if let failed @ TlsError::ChallengeFailed { .. } =
                    explain_invalid(&mut order, &all).await
                {
                    return Err(failed);
                }
            }
            return Err(error);
        }
    }

    // 4. Wait for the CA to validate.
    let deadline = Instant::now() + settings.order_timeout;
    let mut delay = first_pause;
    loop {
        let state = order
            .refresh()
            .await
            .map_err(|e| from_acme(e, &format!("poll the order for {all}")))?;
        match state.status {
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => break,
            OrderStatus::Invalid => return Err(explain_invalid(&mut order, &all).await),
            OrderStatus::Pending => {}
        }
        if !pause(&mut delay, deadline, cap).await {
            return Err(TlsError::Timeout {
                what: format!("{label} validation of {all}"),
                detail: format!(
                    "the CA had not validated within {}s",
                    settings.order_timeout.as_secs_f32()
                ),
            });
        }
    }

    // 5. A fresh key and CSR, and the chain once issued.
    let key_pem = if order.state().status == OrderStatus::Ready {
        Zeroizing::new(
            order
                .finalize()
                .await
                .map_err(|e| from_acme(e, &format!("finalize the order for {all}")))?,
        )
    } else {
        // Finalized before (an order reused by the CA): its key is not ours to have.
        return Err(TlsError::OrderInvalid {
            names: all,
            detail: "the CA answered with an order already finalized".to_string(),
        });
    };
    let mut delay = first_pause;
    let chain_pem = loop {
        match order.state().status {
            OrderStatus::Valid | OrderStatus::Processing => {
                if let Some(chain) = order
                    .certificate()
                    .await
                    .map_err(|e| from_acme(e, &format!("download the certificate for {all}")))?
                {
                    break chain;
                }
            }
            OrderStatus::Invalid => {
                let detail = order
                    .state()
                    .error
                    .as_ref()
                    .map(problem_text)
                    .unwrap_or_else(|| "the CA refused to issue it".to_string());
                return Err(TlsError::OrderInvalid { names: all, detail });
            }
            OrderStatus::Ready | OrderStatus::Pending => {
                order
                    .refresh()
                    .await
                    .map_err(|e| from_acme(e, &format!("poll the order for {all}")))?;
            }
        }
        if !pause(&mut delay, deadline, cap).await {
            return Err(TlsError::Timeout {
                what: format!("certificate for {all}"),
                detail: format!(
                    "the CA had not issued it within {}s",
                    settings.order_timeout.as_secs_f32()
                ),
            });
        }
    };

    // 6. What was issued.
    let info = inspect(&chain_pem)?;
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !info.names.iter().any(|c| c == *n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(TlsError::Certificate {
            what: format!("certificate for {all}"),
            detail: format!("it does not cover {}", missing.join(", ")),
        });
    }
    Ok(Issued {
        chain_pem,
        key_pem,
        not_before: info.not_before,
        not_after: info.not_after,
        names: info.names,
        serial: info.serial,
    })
}

/// Tells the CA to look at the challenge of every pending authorization.
async fn set_ready(
    order: &mut Order,
    kind: &ChallengeType,
    label: &str,
    all: &str,
) -> Result<(), TlsError> {
    let mut authorizations = order.authorizations();
    while let Some(next) = authorizations.next().await {
        let mut authz =
            next.map_err(|e| from_acme(e, &format!("read the authorizations for {all}")))?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = clean(&authz.identifier().to_string());
        let Some(mut challenge) = authz.challenge(kind.clone()) else {
            continue;
        };
        challenge.set_ready().await.map_err(|e| {
            from_acme(
                e,
                &format!("tell the CA the {label} challenge for {name} is ready"),
            )
        })?;
    }
    Ok(())
}

/// Publishes the dns-01 records and waits until every nameserver answers them.
async fn publish_and_wait(
    settings: &AcmeSettings,
    dns: &dyn DnsProvider,
    zone: &str,
    tasks: &[Task],
    published: &mut Vec<Published>,
) -> Result<(), TlsError> {
    let records: Vec<PlannedRecord> = tasks
        .iter()
        .map(|t| PlannedRecord {
            purpose: "acme-challenge",
            name: format!("_acme-challenge.{}.", t.base),
            rtype: "TXT",
            ttl: CHALLENGE_TTL,
            content: t.dns_value.clone(),
            strings: split_txt(&t.dns_value),
        })
        .collect();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    match dns.publish(zone, &records).await {
        Ok(added) => published.extend(added),
        Err(error) => {
            // Some providers may have written part of it: remove all of it (the values are
            // this order's own, so nothing else can be taken away).
            published.extend(records.iter().map(Published::of));
            return Err(TlsError::Dns {
                what: format!(
                    "publish the dns-01 record for {} in zone {}",
                    names.join(", "),
                    clean(zone)
                ),
                error,
            });
        }
    }
    if settings.nameservers.is_empty() {
        return Ok(());
    }
    let rounds = futures::future::join_all(settings.nameservers.iter().map(|ns| {
        let records = &records;
        async move {
            (
                *ns,
                wait_verified(
                    *ns,
                    records,
                    settings.propagation_timeout,
                    settings.poll_interval.max(MIN_POLL),
                )
                .await,
            )
        }
    }))
    .await;
    for (ns, seen) in rounds {
        if let Some((i, s)) = seen
            .iter()
            .enumerate()
            .find(|(_, s)| s.status != RecordStatus::Verified)
        {
            let got = if s.got.is_empty() {
                "nothing".to_string()
            } else {
                s.got
                    .iter()
                    .map(|g| clean(g))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            return Err(TlsError::Timeout {
                what: format!(
                    "dns-01 challenge for {}",
                    tasks.get(i).map(|t| t.name.as_str()).unwrap_or("?")
                ),
                detail: format!(
                    "{} TXT did not answer from {ns} within {}s (it answers {got})",
                    s.name,
                    settings.propagation_timeout.as_secs_f32()
                ),
            });
        }
    }
    Ok(())
}

/// Why an order is invalid: the first failed challenge, in the CA's words.
async fn explain_invalid(order: &mut Order, all: &str) -> TlsError {
    let order_error = order.state().error.clone();
    let mut authorizations = order.authorizations();
    let mut blamed = None;
    while let Some(next) = authorizations.next().await {
        let Ok(mut authz) = next else { continue };
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if state.status != AuthorizationStatus::Invalid {
            continue;
        }
        let name = clean(&state.identifier().to_string());
        let failed = state
            .challenges
            .iter()
            .find(|c| c.error.is_some())
            .or_else(|| {
                state
                    .challenges
                    .iter()
                    .find(|c| c.status == ChallengeStatus::Invalid)
            });
        blamed = Some(match failed {
            Some(c) => TlsError::ChallengeFailed {
                name,
                challenge: type_label(&c.r#type),
                detail: c
                    .error
                    .as_ref()
                    .map(problem_text)
                    .unwrap_or_else(|| "the CA gives no reason".to_string()),
                problem: c.error.as_ref().and_then(problem_type),
            },
            None => TlsError::OrderInvalid {
                names: all.to_string(),
                detail: format!("the authorization for {name} is invalid"),
            },
        });
        break;
    }
    blamed.unwrap_or_else(|| TlsError::OrderInvalid {
        names: all.to_string(),
        detail: order_error
            .as_ref()
            .map(problem_text)
            .unwrap_or_else(|| "the CA gives no reason".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_checked_against_the_zone_and_challenge() {
        let ok = check_names(
            &names(&["MX1.example.test.", "mx1.example.test", "*.example.test"]),
            "example.test",
            &Challenge::Dns01,
        )
        .expect("names");
        assert_eq!(ok, ["mx1.example.test", "*.example.test"]);
        let err = check_names(
            &names(&["mx1.other.test"]),
            "example.test",
            &Challenge::Dns01,
        )
        .expect_err("outside");
        assert_eq!(
            err.to_string(),
            "acme: mx1.other.test: not inside zone example.test, where its dns-01 record would go"
        );
        assert!(!err.retryable());
        let http = Challenge::Http01 {
            listen: "127.0.0.1:80".parse().expect("addr"),
        };
        assert!(check_names(&names(&["mx1.other.test"]), "example.test", &http).is_ok());
        let err = check_names(&names(&["*.example.test"]), "", &http).expect_err("wildcard");
        assert!(
            err.to_string().contains("only be proved by dns-01"),
            "{err}"
        );
        let err = check_names(
            &names(&["bad_name.example.test\u{1b}"]),
            "example.test",
            &Challenge::Dns01,
        )
        .expect_err("bad");
        assert!(matches!(err, TlsError::BadName { .. }));
        assert!(!err.to_string().contains('\u{1b}'));
        assert!(matches!(
            check_names(&[], "example.test", &Challenge::Dns01),
            Err(TlsError::Config(_))
        ));
    }

    #[test]
    fn stored_credentials_never_show_in_errors() {
        let secret =
            r#"{"id": "https://ca/acct/1", "key_pkcs8": 12, "directory": "SECRET-KEY-MATERIAL"}"#;
        let err = parse_credentials(secret).err().expect("unreadable");
        let text = err.to_string();
        assert!(text.contains("do not hold what an account needs"), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("acct"), "{text}");
        let err = parse_credentials("{\"key_pkcs8\": \"c2VjcmV0")
            .err()
            .expect("not json");
        assert!(err.to_string().contains("are not JSON"), "{err}");
        assert!(!err.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn settings_want_an_https_directory() {
        let mut s = AcmeSettings::new("http://ca.example/dir");
        assert!(matches!(check_directory(&s), Err(TlsError::Config(_))));
        s.directory = "not a url".into();
        assert!(matches!(check_directory(&s), Err(TlsError::Config(_))));
        s.directory = " https://ca.example/dir ".into();
        assert_eq!(check_directory(&s).expect("ok"), "https://ca.example/dir");
    }

    #[tokio::test]
    async fn bad_extra_roots_are_refused() {
        let mut s = AcmeSettings::new("https://ca.example/dir");
        s.extra_roots_pem = vec!["nothing here".into()];
        let err = account(&s, None).await.expect_err("no pem");
        assert!(err.to_string().contains("extra_roots_pem[0]"), "{err}");
    }
}
