//! What an agent reports, and how a report is signed: HMAC-SHA256 under the node's own
//! token over the timestamp and the body, so that the server can tell the node sent it,
//! that nobody changed it, and (with the report's sequence number, which only goes up)
//! that it is not a replay.

use serde::{Deserialize, Serialize};

/// The header naming the agent (its node's provisioning request).
pub const AGENT_HEADER: &str = "x-mailfleet-agent";
/// The header carrying the Unix time the report was signed at.
pub const TIME_HEADER: &str = "x-mailfleet-time";
/// The header carrying the signature, hex.
pub const SIGNATURE_HEADER: &str = "x-mailfleet-signature";
/// The largest report body the server reads.
pub const MAX_BODY: usize = 16 * 1024;

/// One heartbeat: the node's state when it was measured, and its mail since the previous
/// report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Goes up by one with each report the agent makes; kept across its restarts.
    pub seq: u64,
    /// When it was measured (RFC 3339, the node's clock).
    pub measured_at: String,
    /// CPU busy, percent of all cores.
    pub cpu_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    /// Bytes free on the filesystem of the mail queue.
    pub queue_free: u64,
    /// Messages in the Postfix queue.
    pub queue_len: u64,
    /// Network bytes since the previous report.
    pub net_rx: u64,
    pub net_tx: u64,
    /// Deliveries since the previous report, from the Postfix log.
    pub delivered: u64,
    pub bounced: u64,
    pub deferred: u64,
    pub complaints: u64,
}

impl Report {
    /// What is wrong with a report, naming the field; `None` when it makes sense.
    pub fn problem(&self) -> Option<String> {
        if self.seq == 0 {
            return Some("seq: must be at least 1".into());
        }
        if chrono::DateTime::parse_from_rfc3339(&self.measured_at).is_err() {
            return Some(format!(
                "measured_at: {:?} is not an RFC 3339 time",
                crate::domain::validate::sanitize(
                    &self.measured_at.chars().take(40).collect::<String>()
                )
            ));
        }
        if !self.cpu_pct.is_finite() || !(0.0..=100.0).contains(&self.cpu_pct) {
            return Some(format!("cpu_pct: {} is not a percentage", self.cpu_pct));
        }
        if self.mem_used > self.mem_total {
            return Some("mem_used: more than mem_total".into());
        }
        // Counts beyond what any node could do in one interval are not counts.
        const MOST: u64 = 100_000_000;
        for (field, v) in [
            ("queue_len", self.queue_len),
            ("delivered", self.delivered),
            ("bounced", self.bounced),
            ("deferred", self.deferred),
            ("complaints", self.complaints),
        ] {
            if v > MOST {
                return Some(format!("{field}: {v} is beyond belief"));
            }
        }
        None
    }
}

fn mac(token: &[u8], time: i64, body: &[u8]) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(time.to_string().as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    ctx.sign()
}

/// The signature of `body` sent at `time` under `token`, hex.
pub fn sign(token: &[u8], time: i64, body: &[u8]) -> String {
    hex(mac(token, time, body).as_ref())
}

/// Whether `signature` (hex) is `body`'s at `time` under `token`; compared in constant
/// time.
pub fn verify(token: &[u8], time: i64, body: &[u8], signature: &str) -> bool {
    let Some(given) = unhex(signature) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let mut msg = time.to_string().into_bytes();
    msg.push(b'\n');
    msg.extend_from_slice(body);
    ring::hmac::verify(&key, &msg, &given).is_ok()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            seq: 1,
            measured_at: "2026-12-07T10:00:00Z".into(),
            cpu_pct: 12.5,
            mem_used: 1,
            mem_total: 2,
            queue_free: 3,
            queue_len: 0,
            net_rx: 0,
            net_tx: 0,
            delivered: 10,
            bounced: 1,
            deferred: 0,
            complaints: 0,
        }
    }

    #[test]
    fn a_signature_holds_for_its_body_time_and_token_only() {
        let body = serde_json::to_vec(&report()).expect("json");
        let sig = sign(b"token-a", 1000, &body);
        assert_eq!(sig.len(), 64);
        assert!(verify(b"token-a", 1000, &body, &sig));
        assert!(!verify(b"token-b", 1000, &body, &sig), "another token");
        assert!(!verify(b"token-a", 1001, &body, &sig), "another time");
        let mut changed = body.clone();
        changed[5] ^= 1;
        assert!(!verify(b"token-a", 1000, &changed, &sig), "another body");
        assert!(!verify(b"token-a", 1000, &body, "zz"), "not hex");
    }

    #[test]
    fn a_report_that_makes_no_sense_names_its_field() {
        assert_eq!(report().problem(), None);
        let mut r = report();
        r.cpu_pct = f64::NAN;
        assert!(r.problem().expect("bad").starts_with("cpu_pct"));
        let mut r = report();
        r.measured_at = "yesterday".into();
        assert!(r.problem().expect("bad").starts_with("measured_at"));
        let mut r = report();
        r.seq = 0;
        assert!(r.problem().expect("bad").starts_with("seq"));
        let mut r = report();
        r.mem_used = 5;
        assert!(r.problem().expect("bad").starts_with("mem_used"));
    }
}
