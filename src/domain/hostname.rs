//! A node's hostname: its request's label under the request's domain (or the default one).
//! Its A record, PTR and certificate all carry this name, so at most one request holds it
//! at a time: from the moment it is created until it is rolled back, deprovisioned or
//! rejected.

use super::ids::short;
use super::RequestState;

/// Domain used for hostnames when a request names none.
pub const DEFAULT_DOMAIN: &str = "fleet.example.net";

/// The hostname a request's node gets, as DNS compares it: lowercase, no trailing dot.
pub fn effective_hostname(label: &str, domain: Option<&str>) -> String {
    let domain = domain.unwrap_or(DEFAULT_DOMAIN).trim_end_matches('.');
    format!("{}.{}", label.trim_end_matches('.'), domain).to_ascii_lowercase()
}

/// Whether a request in `state` holds its hostname: every state but the terminal ones
/// (a completed or suspended node is live; a queued or failed one is on its way, or on
/// its way back, and may still publish under the name).
pub fn holds_hostname(state: RequestState) -> bool {
    !state.is_terminal()
}

/// Who holds a hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnameHolder {
    pub request_id: String,
    pub tenant: String,
    pub state: String,
}

impl HostnameHolder {
    /// The refusal of a second request for `hostname`, naming the holder.
    pub fn refusal(&self, hostname: &str) -> String {
        format!(
            "hostname {hostname} is already held by request {} of tenant {} ({}); choose another label or domain",
            short(&self.request_id),
            self.tenant,
            self.state
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_normalised_and_defaults_its_domain() {
        assert_eq!(
            effective_hostname("node-1", Some("Example.COM.")),
            "node-1.example.com"
        );
        assert_eq!(
            effective_hostname("node-1", None),
            "node-1.fleet.example.net"
        );
    }

    #[test]
    fn only_terminal_requests_let_go_of_their_hostname() {
        assert!(holds_hostname(RequestState::Completed));
        assert!(holds_hostname(RequestState::Suspended));
        assert!(holds_hostname(RequestState::Queued));
        assert!(holds_hostname(RequestState::RollingBack));
        assert!(!holds_hostname(RequestState::RolledBack));
        assert!(!holds_hostname(RequestState::Deprovisioned));
        assert!(!holds_hostname(RequestState::Rejected));
    }
}
