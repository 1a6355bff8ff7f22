//! Alert routing: each alert raised (a node unhealthy, a bounce rate, a listing, a busy
//! CPU) is sent once to the configured sinks — email through an SMTP relay — by whichever
//! engine process claims it first; a failure is kept on the alert and tried again when its
//! claim lapses. `mailfleet alerts test` sends a synthetic one at once.

use crate::clock::SharedClock;
use crate::config::AlertingConfig;
use crate::store::{AlertRow, Store};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// How long a claim on an alert holds: a send that takes longer may be sent twice.
const CLAIM: Duration = Duration::from_secs(120);

fn rank(severity: &str) -> u8 {
    match severity {
        "high" => 3,
        "medium" => 2,
        _ => 1,
    }
}

/// The configured sinks.
pub struct Router {
    cfg: AlertingConfig,
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Router {
    /// The sinks the config names; `None` when it names none.
    pub fn from_config(cfg: &AlertingConfig) -> Result<Option<Router>, String> {
        if cfg.email_relay.is_empty() {
            return Ok(None);
        }
        let (host, port) = cfg
            .email_relay
            .rsplit_once(':')
            .ok_or_else(|| "alerting.email_relay: not HOST:PORT".to_string())?;
        let port: u16 = port
            .parse()
            .map_err(|_| "alerting.email_relay: not HOST:PORT".to_string())?;
        let tls = |required: bool| -> Result<Tls, String> {
            let p = TlsParameters::new(host.to_string())
                .map_err(|e| format!("alerting.email_relay: {e}"))?;
            Ok(if required {
                Tls::Required(p)
            } else {
                Tls::Opportunistic(p)
            })
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(20)))
            .tls(match cfg.email_tls.as_str() {
                "none" => Tls::None,
                "opportunistic" => tls(false)?,
                _ => tls(true)?,
            });
        if !cfg.email_user_env.is_empty() {
            let get = |name: &str| {
                match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(format!(
                    "alerting: the environment variable {name} is not set (it holds the relay's credentials)"
                )),
            }
            };
            b = b.credentials(Credentials::new(
                get(&cfg.email_user_env)?,
                get(&cfg.email_password_env)?,
            ));
        }
        let from: Mailbox = cfg
            .email_from
            .parse()
            .map_err(|e| format!("alerting.email_from: {e}"))?;
        let to = cfg
            .email_to
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse::<Mailbox>()
                    .map_err(|e| format!("alerting.email_to[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Router {
            cfg: cfg.clone(),
            smtp: b.build(),
            from,
            to,
        }))
    }

    /// Whether an alert of this severity is sent.
    pub fn wants(&self, severity: &str) -> bool {
        rank(severity) >= rank(&self.cfg.min_severity)
    }

    /// Sends one alert; what the relay said, or why it was not sent.
    pub async fn send(&self, a: &AlertRow) -> Result<String, String> {
        let clean = |s: &str| crate::domain::validate::sanitize(s).replace(['\r', '\n'], " ");
        // A resolved alert's notice says so first, and how it ended.
        let (tag, ended) = match (&a.resolved_at, &a.resolution) {
            (Some(at), why) => (
                "RESOLVED ".to_string(),
                format!(
                    "resolved: {at} ({})\n",
                    why.as_deref().map(clean).unwrap_or_else(|| "-".into())
                ),
            ),
            (None, _) => (String::new(), String::new()),
        };
        let subject = format!(
            "[mailfleet {tag}{}] {}: {}",
            a.severity.to_ascii_uppercase(),
            clean(&a.kind),
            clean(&a.message).chars().take(120).collect::<String>()
        );
        let body = format!(
            "{}\n\nseverity: {}\nkind: {}\nsubject: {}\nnode: {}\nraised: {}\n{ended}alert: {}\n\n\
             See it with `mailfleet alerts`, or in the console.\n",
            clean(&a.message),
            a.severity,
            clean(&a.kind),
            clean(&a.subject),
            a.node_label
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| "-".into()),
            a.raised_at,
            a.id
        );
        let mut m = Message::builder().from(self.from.clone()).subject(subject);
        for t in &self.to {
            m = m.to(t.clone());
        }
        let message = m.body(body).map_err(|e| format!("the message: {e}"))?;
        let answer = self
            .smtp
            .send(message)
            .await
            .map_err(|e| format!("{}: {e}", self.cfg.email_relay))?;
        Ok(format!(
            "sent to {} through {}: {}",
            self.to.len(),
            self.cfg.email_relay,
            answer.message().collect::<Vec<_>>().join(" ")
        ))
    }
}

/// Sends what is waiting, once; returns how many were sent.
pub async fn pass(store: &Store, router: &Router, clock: &SharedClock) -> usize {
    let now = clock.now();
    let until = now + chrono::Duration::from_std(CLAIM).unwrap_or_default();
    let due = match store.claim_alerts_to_send(50, now, until).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "alerting: cannot read the alerts to send");
            return 0;
        }
    };
    let mut sent = 0;
    for a in due {
        let outcome = if router.wants(&a.severity) {
            router.send(&a).await.map(|said| {
                tracing::info!(alert = %a.id, %said, "alert sent");
            })
        } else {
            // Below the threshold: told nobody, on purpose.
            Ok(())
        };
        if outcome.is_ok() && router.wants(&a.severity) {
            sent += 1;
        }
        if let Err(why) = &outcome {
            tracing::warn!(alert = %a.id, error = %why, "alert not sent; tried again later");
        }
        if let Err(e) = store
            .alert_sent(
                &a.id,
                outcome.map_err(|e| crate::untrusted::untrusted_text(&e)),
                clock.now(),
            )
            .await
        {
            tracing::warn!(error = %e, "alerting: cannot record a send");
        }
    }
    sent
}

/// Sends alerts as they are raised, every few seconds, for as long as it runs.
pub async fn run(store: Store, router: Router, clock: SharedClock) {
    loop {
        pass(&store, &router, &clock).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A synthetic alert, for `mailfleet alerts test`.
pub fn test_alert(now: chrono::DateTime<chrono::Utc>) -> AlertRow {
    AlertRow {
        id: "test".into(),
        severity: "high".into(),
        kind: "test".into(),
        subject: "test".into(),
        node_id: None,
        node_label: None,
        message: "a test alert from mailfleet alerts test: alert routing works".into(),
        raised_at: crate::clock::ts(now),
        ..Default::default()
    }
}
