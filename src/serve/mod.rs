//! `mailfleet serve`'s HTTPS listener (hyper on rustls): agents' reports, `/healthz` and
//! `/metrics` (Prometheus text).
//!
//! A report is taken only when everything about it holds: the agent is known, its signing
//! time is within `[serve] max_skew` of ours, its HMAC-SHA256 under the node's own token
//! verifies over that time and the body, the body is at most [`MAX_BODY`] bytes of a
//! well-formed report, and its sequence number is above the last one taken. Anything else
//! is refused with a status and a reason, counted by reason, and never written.

use crate::agent::report::{self, Report, MAX_BODY};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::store::{Accepted, Store};
use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Why reports were refused (the `result` label of `mailfleet_agent_reports_total`).
pub const RESULTS: [&str; 8] = [
    "accepted",
    "unknown_agent",
    "stale",
    "bad_signature",
    "malformed",
    "oversized",
    "replay",
    "not_registered",
];

/// How long the first report of a batch waits for others to be written with it, and the
/// most written together: one commit a second instead of one a report (10,000 nodes at
/// 30 s are 333 reports a second). An agent reporting every 30 s hears back within about
/// a second. Each commit costs its sync, its share of the checkpoints and, after the page
/// splits that random inserts into the heartbeats' index make, a walk of the writer's
/// whole page cache inside SQLite (`pcache1TruncateUnsafe`, milliseconds at 16 MiB); so
/// fewer, larger commits cost less per report (measured with `cargo bench --bench serve`).
pub const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);
const BATCH_MOST: usize = 1000;

/// A checked report waiting to be written, and where its outcome goes.
struct Pending {
    agent: String,
    /// When the token it was checked with was issued.
    issued: String,
    report: Report,
    reply: tokio::sync::oneshot::Sender<Result<Accepted, String>>,
}

/// An agent's token (unsealed) and when it was issued: which token it is.
type Token = (Zeroizing<Vec<u8>>, String);

/// What the listener shares.
pub struct Server {
    store: Store,
    clock: SharedClock,
    key_env: String,
    max_skew: chrono::Duration,
    /// Each agent's token, unsealed, with when it was issued.
    tokens: Mutex<HashMap<String, Arc<Token>>>,
    counts: [AtomicU64; RESULTS.len()],
    /// Checked reports waiting to be written together (see [`Server::queue`]).
    batch: Mutex<Batch>,
}

/// The reports checked and waiting for the next write, and which batch they are.
#[derive(Default)]
struct Batch {
    /// Counts the batches begun: a timer writes only the batch it was started for.
    generation: u64,
    waiting: Vec<Pending>,
}

/// Writes one batch of checked reports in one transaction and answers each.
async fn write_batch(store: Store, clock: SharedClock, batch: Vec<Pending>) {
    let (items, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|p| ((p.agent, p.issued, p.report), p.reply))
        .unzip();
    match store.accept_reports(items, clock.now()).await {
        Ok(results) => {
            for (r, reply) in results.into_iter().zip(replies) {
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
        }
        Err(e) => {
            let why = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
    }
}

impl Server {
    /// The listener's state.
    pub fn new(store: Store, cfg: &Config, clock: SharedClock) -> Arc<Server> {
        Arc::new(Server {
            batch: Mutex::new(Batch::default()),
            store,
            clock,
            key_env: cfg.dkim.key_env.clone(),
            max_skew: chrono::Duration::from_std(cfg.serve.max_skew)
                .unwrap_or_else(|_| chrono::Duration::minutes(5)),
            tokens: Mutex::new(HashMap::new()),
            counts: Default::default(),
        })
    }

    /// Queues a checked report for the next batch write. The first report of a batch
    /// starts a timer that writes the batch after [`BATCH_WAIT`]; a batch that reaches
    /// [`BATCH_MOST`] is written at once. The writes are tasks of their own, so a report's
    /// connection going away does not stop the others' batch. No task waits on a channel
    /// between batches: a report wakes no other task or thread until its batch is written.
    fn queue(self: &Arc<Self>, p: Pending) {
        let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        b.waiting.push(p);
        if b.waiting.len() >= BATCH_MOST {
            b.generation += 1;
            let full = std::mem::take(&mut b.waiting);
            drop(b);
            tokio::spawn(write_batch(self.store.clone(), self.clock.clone(), full));
        } else if b.waiting.len() == 1 {
            let generation = b.generation;
            drop(b);
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(BATCH_WAIT).await;
                let due = {
                    let mut b = me.batch.lock().unwrap_or_else(|e| e.into_inner());
                    if b.generation != generation {
                        return;
                    }
                    b.generation += 1;
                    std::mem::take(&mut b.waiting)
                };
                write_batch(me.store.clone(), me.clock.clone(), due).await;
            });
        }
    }

    fn count(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many reports ended each way, by result.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        RESULTS
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// The agent's token, read (and unsealed) once.
    async fn token(&self, agent: &str) -> Result<Option<Arc<Token>>, String> {
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
        {
            return Ok(Some(t.clone()));
        }
        let Some(t) = crate::agent::token_of(&self.store, &self.key_env, agent).await? else {
            return Ok(None);
        };
        let t = Arc::new(t);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent.to_string(), t.clone());
        Ok(Some(t))
    }

    /// Loads every live agent's token into the cache in one read (unsealed on a blocking
    /// thread), so that a serve just started does not read and unseal them one by one on
    /// each agent's first report. A token cached meanwhile (perhaps a newer one) is kept.
    /// Returns how many were loaded.
    pub async fn preload_tokens(&self) -> Result<usize, String> {
        let kept = self
            .store
            .live_agent_tokens()
            .await
            .map_err(|e| e.to_string())?;
        let (store, key_env) = (self.store.clone(), self.key_env.clone());
        let unsealed = tokio::task::spawn_blocking(move || {
            kept.into_iter()
                .filter_map(|(agent, k)| {
                    let file = k
                        .file
                        .as_deref()
                        .map(|f| store.key_path(f).display().to_string());
                    let bytes = crate::dkim::recover(
                        &key_env,
                        k.sealed.as_deref(),
                        file.as_deref(),
                        &format!("agent/{agent}"),
                    );
                    // One that cannot be unsealed is read again at its first report, and
                    // its error said there.
                    bytes.ok().map(|b| (agent, Arc::new((b, k.issued_at))))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let n = unsealed.len();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for (agent, token) in unsealed {
            tokens.entry(agent).or_insert(token);
        }
        Ok(n)
    }

    /// Forgets a cached token (a new one was issued).
    pub fn forget_token(&self, agent: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(agent);
    }

    /// Judges one report; the status and what to say.
    async fn take(self: &Arc<Self>, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
        let refuse = |result: &str, status: StatusCode, why: String| {
            self.count(result);
            (status, format!("{result}: {why}"))
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(agent) = header(report::AGENT_HEADER).filter(|a| {
            !a.is_empty()
                && a.len() <= 64
                && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }) else {
            return refuse(
                "unknown_agent",
                StatusCode::UNAUTHORIZED,
                format!("no well-formed {} header", report::AGENT_HEADER),
            );
        };
        let Some(time) = header(report::TIME_HEADER).and_then(|t| t.parse::<i64>().ok()) else {
            return refuse(
                "stale",
                StatusCode::UNAUTHORIZED,
                format!("no {} header", report::TIME_HEADER),
            );
        };
        let now = self.clock.now();
        let skew = (now.timestamp() - time).abs();
        if skew > self.max_skew.num_seconds() {
            return refuse(
                "stale",
                StatusCode::UNAUTHORIZED,
                format!("signed {skew} s away from this server's clock"),
            );
        }
        if body.len() > MAX_BODY {
            return refuse(
                "oversized",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{} bytes, at most {MAX_BODY}", body.len()),
            );
        }
        let mut r: Option<Report> = None;
        // Checked against the token as read; if the agent has been given a new one since
        // (bootstrapped again), read again, once.
        for fresh in [false, true] {
            if fresh {
                self.forget_token(agent);
            }
            let token = match self.token(agent).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return refuse(
                        "unknown_agent",
                        StatusCode::UNAUTHORIZED,
                        "no such agent".into(),
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent token unreadable");
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the agent's token cannot be read".into(),
                    );
                }
            };
            let signature = header(report::SIGNATURE_HEADER).unwrap_or("");
            if !report::verify(&token.0, time, body, signature) {
                if fresh {
                    return refuse(
                        "bad_signature",
                        StatusCode::UNAUTHORIZED,
                        "the signature does not verify".into(),
                    );
                }
                continue;
            }
            // Only a body whose signature verified is read.
            let report = match r.take() {
                Some(r) => r,
                None => match serde_json::from_slice::<Report>(body) {
                    Ok(r) => r,
                    Err(e) => {
                        let why = crate::domain::validate::sanitize(&e.to_string()).into_owned();
                        return refuse("malformed", StatusCode::BAD_REQUEST, why);
                    }
                },
            };
            if let Some(why) = report.problem() {
                return refuse("malformed", StatusCode::BAD_REQUEST, why);
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.queue(Pending {
                agent: agent.to_string(),
                issued: token.1.clone(),
                report: report.clone(),
                reply,
            });
            let written = answer
                .await
                .unwrap_or_else(|_| Err("the writer stopped".to_string()));
            if matches!(written, Ok(Accepted::OldToken)) {
                if fresh {
                    return refuse(
                        "bad_signature",
                        StatusCode::UNAUTHORIZED,
                        "signed with a token that is no longer the agent's".into(),
                    );
                }
                r = Some(report);
                continue;
            }
            return self.answer(written);
        }
        (StatusCode::SERVICE_UNAVAILABLE, "not recorded".into())
    }

    /// The answer to a report the writer took (or not).
    fn answer(&self, written: Result<Accepted, String>) -> (StatusCode, String) {
        let refuse = |result: &str, status: StatusCode, why: String| {
            self.count(result);
            (status, format!("{result}: {why}"))
        };
        match written {
            Ok(Accepted::Recorded { recovered, .. }) => {
                self.count("accepted");
                let said = if recovered {
                    "taken; node healthy again"
                } else {
                    "taken"
                };
                (StatusCode::OK, said.into())
            }
            Ok(Accepted::Replay { last_seq }) => refuse(
                "replay",
                StatusCode::CONFLICT,
                format!("sequence not above {last_seq}"),
            ),
            Ok(Accepted::NoNode) => refuse(
                "not_registered",
                StatusCode::CONFLICT,
                "its node is not registered yet".into(),
            ),
            Ok(Accepted::OldToken) => refuse(
                "bad_signature",
                StatusCode::UNAUTHORIZED,
                "signed with a token that is no longer the agent's".into(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "report not recorded");
                (StatusCode::SERVICE_UNAVAILABLE, "not recorded".into())
            }
        }
    }

    /// `/metrics` in Prometheus text format.
    pub async fn metrics(&self) -> Result<String, String> {
        use std::fmt::Write as _;
        let g = self
            .store
            .gauges(self.clock.now())
            .await
            .map_err(|e| e.to_string())?;
        let mut s = String::new();
        let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        };
        let label = |k: &str, v: &str| format!("{{{k}=\"{}\"}}", v.replace(['"', '\\', '\n'], "_"));
        family(
            "mailfleet_requests",
            "Provisioning requests by state.",
            "gauge",
            g.requests
                .iter()
                .map(|(k, v)| (label("state", k), *v as f64))
                .collect(),
        );
        family(
            "mailfleet_nodes",
            "Nodes by status.",
            "gauge",
            g.nodes
                .iter()
                .map(|(k, v)| (label("status", k), *v as f64))
                .collect(),
        );
        family(
            "mailfleet_alerts_open",
            "Open alerts by severity.",
            "gauge",
            g.alerts
                .iter()
                .map(|(k, v)| (label("severity", k), *v as f64))
                .collect(),
        );
        family(
            "mailfleet_provider_circuit_open",
            "1 when a provider's circuit breaker is open.",
            "gauge",
            g.circuits
                .iter()
                .map(|(k, open)| (label("provider", k), if *open { 1.0 } else { 0.0 }))
                .collect(),
        );
        family(
            "mailfleet_agents",
            "Live nodes with a monitoring agent.",
            "gauge",
            vec![(String::new(), g.agents as f64)],
        );
        family(
            "mailfleet_heartbeat_age_max_seconds",
            "Age of the oldest last heartbeat among live nodes with an agent.",
            "gauge",
            vec![(String::new(), g.oldest_heartbeat_secs)],
        );
        family(
            "mailfleet_agent_reports_total",
            "Agent reports received, by what became of them.",
            "counter",
            self.counts()
                .into_iter()
                .map(|(k, v)| (label("result", k), v as f64))
                .collect(),
        );
        Ok(s)
    }
}

/// What a route answers.
type Answer = hyper::Response<http_body_util::Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    let mut resp = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

fn text(status: StatusCode, body: String) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

/// The routes: `POST /v1/report`, `GET /healthz`, `GET /metrics`. Written on hyper
/// directly: the report is the one hot path, and a router's layers (boxed services and
/// middleware futures per request) were a fifth of the listener's time per report in
/// `cargo bench --bench serve`.
pub async fn route(
    server: Arc<Server>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Answer, std::convert::Infallible> {
    use hyper::Method;
    let path = req.uri().path();
    let allowed = match path {
        "/v1/report" => Method::POST,
        "/healthz" | "/metrics" => Method::GET,
        _ => return Ok(text(StatusCode::NOT_FOUND, "no such path\n".into())),
    };
    if req.method() != allowed {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes {allowed}\n"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(allowed.as_str()) {
            resp.headers_mut().insert(hyper::header::ALLOW, v);
        }
        return Ok(resp);
    }
    Ok(match path {
        "/v1/report" => report(&server, req).await,
        "/healthz" => match server.store.gauges(server.clock.now()).await {
            Ok(_) => text(StatusCode::OK, "ok\n".into()),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the database cannot be read: {e}\n"),
            ),
        },
        _ => match server.metrics().await {
            Ok(body) => answer(StatusCode::OK, "text/plain; version=0.0.4", body),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
        },
    })
}

/// `POST /v1/report`: the body read up to [`MAX_BODY`] bytes, then judged.
async fn report(server: &Arc<Server>, req: hyper::Request<hyper::body::Incoming>) -> Answer {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let too_big = |server: &Server| {
        server.count("oversized");
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("oversized: more than {MAX_BODY} bytes"),
        )
    };
    // A declared length over the limit is refused before anything is read.
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_big(server);
    }
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_big(server),
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "the body could not be read\n".into(),
            )
        }
    };
    let (status, said) = server.take(&parts.headers, &body).await;
    text(status, said)
}

/// The listener's certificate chain and key (PEM), and the root agents trust (PEM).
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: Zeroizing<String>,
    /// The root of a certificate `serve` made for itself; `None` for one from the config.
    pub root_pem: Option<String>,
}

/// Where `serve` keeps a certificate of its own.
pub fn own_dir(store: &Store) -> PathBuf {
    store.key_dir("serve")
}

/// The configured certificate, or one of its own: made (with a root) on first start, kept
/// in `serve/` beside the database (the key 0600), and made again when it no longer covers
/// the listen address and names.
pub fn identity(cfg: &Config, store: &Store) -> Result<Identity, String> {
    let s = &cfg.serve;
    if !s.tls_cert.is_empty() {
        let chain_pem =
            std::fs::read_to_string(&s.tls_cert).map_err(|e| format!("serve.tls_cert: {e}"))?;
        let key_pem = Zeroizing::new(
            std::fs::read_to_string(&s.tls_key).map_err(|e| format!("serve.tls_key: {e}"))?,
        );
        return Ok(Identity {
            chain_pem,
            key_pem,
            root_pem: None,
        });
    }
    let dir = own_dir(store);
    let listen: SocketAddr = s
        .listen
        .parse()
        .map_err(|_| format!("serve.listen: {:?} is not IP:PORT", s.listen))?;
    let mut names = vec![listen.ip().to_string(), "localhost".to_string()];
    names.extend(s.names.iter().cloned());
    // The name agents are told to report to is one it answers for.
    if let Some(host) = s
        .agent_url
        .strip_prefix("https://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
    {
        if !host.is_empty() && !names.contains(&host) {
            names.push(host);
        }
    }
    let names_file = dir.join("names");
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    if let (Ok(chain), Ok(key), Ok(root), Ok(had)) = (
        read("serve.crt"),
        read("serve.key"),
        read("root.pem"),
        std::fs::read_to_string(&names_file),
    ) {
        if had.trim() == names.join(",") {
            return Ok(Identity {
                chain_pem: chain,
                key_pem: Zeroizing::new(key),
                root_pem: Some(root),
            });
        }
    }
    let made = make_identity(&names).map_err(|e| format!("serve's certificate: {e}"))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |f: &str, text: &str, mode: u32| -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(f);
        let aside = dir.join(format!("{f}.new"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&aside)
            .map_err(|e| format!("{}: {e}", aside.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("{}: {e}", aside.display()))?;
        std::fs::rename(&aside, &path).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("serve.key", &made.key_pem, 0o600)?;
    write("serve.crt", &made.chain_pem, 0o644)?;
    write("root.pem", made.root_pem.as_deref().unwrap_or(""), 0o644)?;
    write("names", &names.join(","), 0o644)?;
    Ok(made)
}

fn make_identity(names: &[String]) -> Result<Identity, rcgen::Error> {
    let root_key = rcgen::KeyPair::generate()?;
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new())?;
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "mailfleet serve root");
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let root_pem = root.self_signed(&root_key)?.pem();
    let key = rcgen::KeyPair::generate()?;
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "mailfleet serve");
    leaf.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) => Ok(rcgen::SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    let issuer = rcgen::Issuer::from_params(&root, &root_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Identity {
        chain_pem: format!("{}{}", cert.pem(), root_pem),
        key_pem: Zeroizing::new(key.serialize_pem()),
        root_pem: Some(root_pem),
    })
}

fn tls_config(id: &Identity) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(id.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate chain: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
        .map_err(|e| format!("the private key: {e}"))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))
}

/// A running listener; it stops when dropped.
pub struct Listening {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    server: Arc<Server>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Its connections end with its runtime; once joined, the port is free again.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A batch its timer did not live to write: those reports were not answered, and
        // their agents send them again. The next listener starts a batch of its own.
        let mut b = self.server.batch.lock().unwrap_or_else(|e| e.into_inner());
        b.generation += 1;
        b.waiting.clear();
    }
}

/// Listens on `addr` with TLS from `id`, serving `server`'s routes.
///
/// The listener, its connections and the batch writes of their reports run on a thread of
/// their own with a single-threaded runtime. On the engine's multi-threaded runtime a
/// report woke about five threads (the connection's worker, an idle worker looking for
/// work, the batch writer and back); on one thread a report costs the wake for its socket,
/// and the batch the hand-off to the store's writer. Measured with `cargo bench --bench
/// serve` (10,000 agents): see the issue notes. One thread takes thousands of reports a
/// second, far above what 100,000 nodes at 30 s send.
pub async fn listen(
    addr: SocketAddr,
    id: &Identity,
    server: Arc<Server>,
) -> Result<Listening, String> {
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(id)?));
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("serve.listen {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("serve.listen {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the listener's runtime: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let held = server.clone();
    let thread = std::thread::Builder::new()
        .name("mailfleet-listen".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    tracing::error!("serve: the listening socket cannot be used");
                    return;
                };
                let preload = held.clone();
                tokio::spawn(async move {
                    match preload.preload_tokens().await {
                        Ok(n) => tracing::info!(tokens = n, "serve: agents' tokens loaded"),
                        Err(e) => tracing::warn!(error = %e, "serve: agents' tokens not loaded"),
                    }
                });
                tokio::select! {
                    _ = accept_loop(listener, tls, held) => {}
                    _ = stopped => {}
                }
            });
        })
        .map_err(|e| format!("the listener's thread: {e}"))?;
    Ok(Listening {
        addr,
        stop: Some(stop),
        thread: Some(thread),
        server,
    })
}

/// How long the listener waits after a failed accept before the next.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts connections and serves each on its own task, until dropped.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    server: Arc<Server>,
) {
    // The connections are the listener's: stopping it ends them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            // One connection that went away before it was taken: the next one.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of file descriptors (or memory) fails every accept until some are
                // freed: wait a little rather than spin.
                tracing::warn!(error = %e, "serve: accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let (tls, server) = (tls.clone(), server.clone());
        connections.spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| route(server.clone(), req));
            // The head and the short body go out as one buffer, so one TLS record, rather
            // than a record for each part.
            let _ = hyper::server::conn::http1::Builder::new()
                .writev(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Marks nodes whose agents went quiet unhealthy, every heartbeat interval.
pub async fn watch_heartbeats(store: Store, cfg: Arc<Config>, clock: SharedClock) {
    let every = cfg.serve.heartbeat_interval;
    let quiet = chrono::Duration::from_std(every * cfg.serve.missed_heartbeats)
        .unwrap_or_else(|_| chrono::Duration::minutes(2));
    loop {
        tokio::time::sleep(every).await;
        let now = clock.now();
        match store.mark_silent_nodes(now - quiet, now).await {
            Ok(marked) if !marked.is_empty() => {
                tracing::warn!(nodes = ?marked, "nodes whose agents went quiet are unhealthy")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "heartbeat check failed"),
        }
        crate::engine::sim_agents::prune(&store, &cfg, now).await;
    }
}
