//! What can go wrong while getting a certificate, sorted into what is worth trying again
//! (the network, the CA's own trouble, rate limits, time running out) and what is not as it
//! stands (a failed challenge, an invalid order, a bad name or setting).
//!
//! Every message names what failed; the CA's text in it passes `crate::untrusted` (secrets
//! redacted, control characters out, bounded). None holds key material (account keys,
//! certificate keys and stored credentials never reach one).

use crate::dns::{DnsError, Published};
use std::net::SocketAddr;

/// ACME problem types (RFC 8555 §6.7) are `urn:ietf:params:acme:error:` followed by this.
const ACME_ERROR: &str = "urn:ietf:params:acme:error:";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The settings, the stored account credentials or the account handed in cannot be used
    /// as they stand.
    #[error("acme: {0}")]
    Config(String),
    /// A name that cannot go in a certificate, or that the configured challenge cannot
    /// prove.
    #[error("acme: {name}: {why}")]
    BadName { name: String, why: String },
    /// The CA could not be reached or failed on its side: connection errors, 5xx, bad
    /// nonces, answers that could not be read.
    #[error("acme: {what}: {detail}")]
    Unavailable { what: String, detail: String },
    /// The CA's rate limits.
    #[error("acme: {what}: rate limited by the CA: {detail}")]
    RateLimited { what: String, detail: String },
    /// Waited as long as the settings allow: for the challenge record to answer from the
    /// authoritative servers, for the CA to validate, for the certificate to be issued.
    #[error("acme: {what}: {detail}")]
    Timeout { what: String, detail: String },
    /// The CA refused a request as it stands. `problem` is the problem type without the
    /// `urn:ietf:params:acme:error:` prefix.
    #[error("acme: {what}: refused by the CA: {detail}")]
    Rejected {
        what: String,
        detail: String,
        problem: Option<String>,
    },
    /// The CA tried the challenge for `name` and it failed; `detail` is the CA's.
    #[error("acme: {challenge} challenge for {name} failed: {detail}")]
    ChallengeFailed {
        name: String,
        challenge: String,
        detail: String,
        problem: Option<String>,
    },
    /// The order became invalid without a failed challenge to blame.
    #[error("acme: the order for {names} is invalid: {detail}")]
    OrderInvalid { names: String, detail: String },
    /// The DNS provider could not publish (or remove) a challenge record.
    #[error("acme: {what}: {error}")]
    Dns { what: String, error: DnsError },
    /// The http-01 listener could not be started.
    #[error("acme: http-01 listener on {listen}: {detail}")]
    Listener { listen: SocketAddr, detail: String },
    /// What the CA issued cannot be read, or does not cover what was asked for.
    #[error("acme: {what}: {detail}")]
    Certificate { what: String, detail: String },
    /// `error`, after which the challenge records could not be removed either: they are in
    /// `records`, for the caller to remove later.
    #[error("{error}; and the challenge records {} could not be removed: {cleanup}", record_names(.records))]
    Leftover {
        error: Box<TlsError>,
        records: Vec<Published>,
        cleanup: DnsError,
    },
}

impl TlsError {
    /// Whether the same request may succeed later: network trouble, the CA's 5xx, rate
    /// limits, time running out, a DNS provider's transient failure. A failed challenge or
    /// an invalid order is not: the order is spent, and the same setup would fail again.
    pub fn retryable(&self) -> bool {
        match self {
            TlsError::Unavailable { .. }
            | TlsError::RateLimited { .. }
            | TlsError::Timeout { .. }
            | TlsError::Listener { .. } => true,
            TlsError::Dns { error, .. } => error.retryable(),
            TlsError::Leftover { error, .. } => error.retryable(),
            TlsError::Config(_)
            | TlsError::BadName { .. }
            | TlsError::Rejected { .. }
            | TlsError::ChallengeFailed { .. }
            | TlsError::OrderInvalid { .. }
            | TlsError::Certificate { .. } => false,
        }
    }

    /// Challenge records that are still published (only after a failed cleanup).
    pub fn leftover(&self) -> &[Published] {
        match self {
            TlsError::Leftover { records, .. } => records,
            _ => &[],
        }
    }

    /// The CA's problem type (without its URN prefix), when the CA gave one.
    pub fn problem(&self) -> Option<&str> {
        match self {
            TlsError::Rejected { problem, .. } | TlsError::ChallengeFailed { problem, .. } => {
                problem.as_deref()
            }
            TlsError::Leftover { error, .. } => error.problem(),
            _ => None,
        }
    }
}

fn record_names(records: &[Published]) -> String {
    let mut names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// Outside text (a CA's problem detail, a transport error) made safe for a message:
/// secrets redacted, control and invisible characters removed, cut to a bounded length.
pub(crate) fn clean(text: &str) -> String {
    crate::untrusted::untrusted_text(text)
}

/// An error and its causes, as one line.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    clean(&out)
}

/// The problem type without its URN prefix.
pub(crate) fn problem_type(problem: &instant_acme::Problem) -> Option<String> {
    problem
        .r#type
        .as_deref()
        .map(|t| clean(t.strip_prefix(ACME_ERROR).unwrap_or(t)))
}

/// A problem document in words: its detail, its type, and the first few subproblems.
pub(crate) fn problem_text(problem: &instant_acme::Problem) -> String {
    let mut out = problem
        .detail
        .as_deref()
        .map(clean)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "no detail given".to_string());
    if let Some(t) = problem_type(problem) {
        out.push_str(&format!(" ({t})"));
    }
    for sub in problem.subproblems.iter().take(3) {
        let who = sub
            .identifier
            .as_ref()
            .map(|i| match i {
                instant_acme::Identifier::Dns(d) => clean(d),
                instant_acme::Identifier::Ip(ip) => ip.to_string(),
                _ => "an identifier".to_string(),
            })
            .unwrap_or_else(|| "an identifier".to_string());
        let detail = sub.detail.as_deref().map(clean).unwrap_or_default();
        out.push_str(&format!("; {who}: {detail}"));
    }
    out
}

/// A problem document the CA answered while doing `what`.
pub(crate) fn from_problem(problem: &instant_acme::Problem, what: &str) -> TlsError {
    let kind = problem_type(problem);
    let what = clean(what);
    let detail = problem_text(problem);
    let status = problem.status.unwrap_or(0);
    match kind.as_deref() {
        Some("rateLimited") => TlsError::RateLimited { what, detail },
        Some("serverInternal" | "badNonce") => TlsError::Unavailable { what, detail },
        _ if status == 429 => TlsError::RateLimited { what, detail },
        _ if status >= 500 => TlsError::Unavailable { what, detail },
        _ => TlsError::Rejected {
            what,
            detail,
            problem: kind,
        },
    }
}

/// An error of the ACME client while doing `what`.
pub(crate) fn from_acme(error: instant_acme::Error, what: &str) -> TlsError {
    use instant_acme::Error as E;
    let unavailable = |detail: String| TlsError::Unavailable {
        what: clean(what),
        detail,
    };
    match error {
        E::Api(problem) => from_problem(&problem, what),
        E::Timeout(_) => TlsError::Timeout {
            what: clean(what),
            detail: "the CA did not get there in time".to_string(),
        },
        E::Http(e) => unavailable(chain(&e)),
        E::Json(e) => unavailable(format!(
            "unreadable answer from the CA: {}",
            clean(&e.to_string())
        )),
        E::Other(e) => unavailable(chain(e.as_ref())),
        E::Str(s) => unavailable(clean(s)),
        E::InvalidUri(e) => TlsError::Config(format!(
            "{}: invalid URL: {}",
            clean(what),
            clean(&e.to_string())
        )),
        E::Crypto | E::KeyRejected => {
            TlsError::Config(format!("{}: the account key cannot be used", clean(what)))
        }
        E::Unsupported(s) => TlsError::Rejected {
            what: clean(what),
            detail: format!("the CA does not support {}", clean(s)),
            problem: None,
        },
        other => unavailable(chain(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> instant_acme::Problem {
        serde_json::from_str(json).expect("problem json")
    }

    #[test]
    fn problems_sort_into_retryable_and_terminal() {
        let limited = from_problem(
            &problem(
                r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
            ),
            "new order for a.example",
        );
        assert!(matches!(limited, TlsError::RateLimited { .. }));
        assert!(limited.retryable());
        let internal = from_problem(
            &problem(r#"{"type":"urn:ietf:params:acme:error:serverInternal","status":500}"#),
            "x",
        );
        assert!(internal.retryable());
        let refused = from_problem(
            &problem(
                r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"no \u001b[31mway","status":400}"#,
            ),
            "new order for a.example",
        );
        assert!(!refused.retryable());
        assert_eq!(refused.problem(), Some("rejectedIdentifier"));
        let text = refused.to_string();
        assert_eq!(
            text,
            "acme: new order for a.example: refused by the CA: no [31mway (rejectedIdentifier)"
        );
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn dns_errors_keep_their_retryability_and_leftovers_their_cause() {
        let transient = TlsError::Dns {
            what: "publish".into(),
            error: DnsError::Transient("503".into()),
        };
        assert!(transient.retryable());
        let record = Published {
            name: "_acme-challenge.a.example.".into(),
            rtype: "TXT".into(),
            ttl: 60,
            content: "\"x\"".into(),
        };
        let left = TlsError::Leftover {
            error: Box::new(TlsError::ChallengeFailed {
                name: "a.example".into(),
                challenge: "dns-01".into(),
                detail: "no TXT record".into(),
                problem: Some("unauthorized".into()),
            }),
            records: vec![record.clone()],
            cleanup: DnsError::Transient("timeout".into()),
        };
        assert!(!left.retryable());
        assert_eq!(left.leftover(), [record]);
        assert_eq!(left.problem(), Some("unauthorized"));
        assert!(left
            .to_string()
            .contains("records _acme-challenge.a.example. could not be removed: timeout"));
    }

    #[test]
    fn long_details_are_cut() {
        let long = "x".repeat(1000);
        assert_eq!(
            clean(&long).chars().count(),
            crate::untrusted::MAX_UNTRUSTED + 1
        );
    }

    #[test]
    fn a_problem_that_echoes_a_known_secret_is_redacted() {
        crate::untrusted::remember_secret("acme-echo-Secret-77");
        let refused = from_problem(
            &problem(
                r#"{"type":"urn:ietf:params:acme:error:malformed","detail":"bad JWS acme-echo-Secret-77","status":400}"#,
            ),
            "new order",
        );
        assert_eq!(
            refused.to_string(),
            "acme: new order: refused by the CA: bad JWS [redacted] (malformed)"
        );
    }
}
