//! DNS blocklist (DNSBL) checks over a real resolver (RFC 5782): an A query on the reversed
//! octets under the zone, and a TXT query at the same name for the reason.
//!
//! Every answer is exactly one of listed, not listed, error (the list refused the query or
//! answered with an error code, such as Spamhaus 127.255.255.254 for a query through a
//! public resolver — never a listing) or unknown (a timeout or SERVFAIL — never clean).

use super::wire;
use futures::stream::{self, StreamExt};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a zone's return codes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codes {
    /// Spamhaus ZEN: .2 SBL, .3 CSS, .4 XBL, .9 DROP, .10/.11 PBL, .30 BCL; 127.255.255.x
    /// are errors.
    Spamhaus,
    /// Any 127.0.0.0/8 answer is a listing, except 127.255.255.0/24 (errors on most lists).
    Generic,
}

/// What a listing on a zone means for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    /// Pauses the node at once.
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One blocklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub zone: String,
    pub severity: Severity,
    pub codes: Codes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Listed,
    NotListed,
    Error,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Listed => "listed",
            Status::NotListed => "not_listed",
            Status::Error => "error",
            Status::Unknown => "unknown",
        }
    }
}

/// The answer for one IP on one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ip: Ipv4Addr,
    pub zone: String,
    pub status: Status,
    /// The A record the list answered with (the most telling one when there are several).
    pub code: Option<Ipv4Addr>,
    /// What the code means on this zone ("SBL", "PBL", "query through a public resolver").
    pub meaning: Option<String>,
    /// The TXT record (often a removal URL), or why the check failed.
    pub reason: Option<String>,
}

impl Verdict {
    /// The first http(s) URL in the reason, if it holds one: where to ask for delisting.
    pub fn delist_url(&self) -> Option<&str> {
        delist_url(self.reason.as_deref()?)
    }
}

/// The first http(s) URL in a TXT reason.
pub fn delist_url(text: &str) -> Option<&str> {
    let start = text.find("https://").or_else(|| text.find("http://"))?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '>' || c == ')')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether a zone can be trusted: it must list 127.0.0.2 and must not list 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneHealth {
    pub zone: String,
    pub usable: bool,
    pub why: Option<String>,
}

/// The name queried for `ip` on `zone`: 192.0.2.10 on zen.spamhaus.org is
/// 10.2.0.192.zen.spamhaus.org. (fully qualified, so no search domain is tried).
pub fn query_name(ip: Ipv4Addr, zone: &str) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.{}.", zone.trim_end_matches('.'))
}

/// What one return code means on a zone: `Ok(meaning)` for a listing, `Err(why)` for an
/// answer that is not a listing (an error code, or no DNSBL answer at all).
pub fn read_code(codes: Codes, code: Ipv4Addr) -> Result<String, String> {
    let [a, b, c, d] = code.octets();
    if a != 127 {
        return Err(format!(
            "answer {code} is outside 127.0.0.0/8: not a blocklist answer"
        ));
    }
    if (b, c) == (255, 255) {
        return Err(match (codes, d) {
            (Codes::Spamhaus, 252) => "error 127.255.255.252: typo in the zone name".to_string(),
            (Codes::Spamhaus, 254) => "error 127.255.255.254: query through a public or open resolver; use your own resolver or a DQS key".to_string(),
            (Codes::Spamhaus, 255) => "error 127.255.255.255: too many queries (rate limited)".to_string(),
            _ => format!("error code {code}: the list refused to answer"),
        });
    }
    match codes {
        Codes::Spamhaus => match (b, c, d) {
            (0, 0, 2) => Ok("SBL".into()),
            (0, 0, 3) => Ok("CSS".into()),
            (0, 0, 4..=7) => Ok("XBL".into()),
            (0, 0, 9) => Ok("DROP".into()),
            (0, 0, 10 | 11) => Ok("PBL".into()),
            (0, 0, 30) => Ok("BCL".into()),
            _ => Ok(format!("listed ({code})")),
        },
        Codes::Generic => Ok(format!("listed ({code})")),
    }
}

/// Classifies the A answers of one lookup. Any listing code makes it listed (meanings
/// joined: "SBL, XBL"); answers that are all error codes make it an error.
pub fn classify_answers(
    codes: Codes,
    answers: &[Ipv4Addr],
) -> (Status, Option<Ipv4Addr>, Option<String>) {
    let mut listed: Vec<(Ipv4Addr, String)> = Vec::new();
    let mut errors: Vec<(Ipv4Addr, String)> = Vec::new();
    for &a in answers {
        match read_code(codes, a) {
            Ok(m) => listed.push((a, m)),
            Err(e) => errors.push((a, e)),
        }
    }
    if let Some((first, _)) = listed.first() {
        let mut meanings: Vec<&str> = listed.iter().map(|(_, m)| m.as_str()).collect();
        meanings.dedup();
        return (Status::Listed, Some(*first), Some(meanings.join(", ")));
    }
    match errors.first() {
        Some((code, why)) => (Status::Error, Some(*code), Some(why.clone())),
        None => (Status::NotListed, None, None),
    }
}

/// Where and how to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerConfig {
    /// A recursive resolver of one's own; `None` uses the system's (/etc/resolv.conf).
    pub resolver: Option<SocketAddr>,
    /// Time limit for one query.
    pub timeout: Duration,
    /// Queries in flight at once.
    pub concurrency: usize,
}

/// Checks IPs on blocklists through one resolver, with no cache (every check asks again).
pub struct Checker {
    /// The fast path: kept-open sockets to the one resolver.
    udp: super::udp::UdpDns,
    /// For the rare reply too big for UDP: hickory's resolver, which retries over TCP.
    resolver: TokioResolver,
    concurrency: usize,
}

/// What went wrong in one lookup.
enum Lookup<T> {
    Found(T),
    /// NXDOMAIN, or the name exists with no record of this type.
    Nothing,
    /// The server refused the query or answered with an error code.
    Refused(String),
    /// A timeout, SERVFAIL or a network error: the answer is not known.
    Unknown(String),
}

fn lookup_error<T>(e: &ResolveError) -> Lookup<T> {
    let Some(proto) = e.proto() else {
        return Lookup::Unknown(e.to_string());
    };
    match proto.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain | ResponseCode::NoError => Lookup::Nothing,
            ResponseCode::ServFail => Lookup::Unknown("SERVFAIL".into()),
            other => Lookup::Refused(format!("the server answered {other}")),
        },
        ProtoErrorKind::Timeout => Lookup::Unknown("timed out".into()),
        _ => Lookup::Unknown(proto.to_string()),
    }
}

impl Checker {
    pub fn new(cfg: &CheckerConfig) -> Result<Checker, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = cfg.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.num_concurrent_reqs = 1;
        opts.ndots = 0;
        let server = match cfg.resolver {
            Some(addr) => addr,
            None => {
                let (conf, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                    format!("blocklists.resolver: cannot read the system resolver: {e}")
                })?;
                conf.name_servers()
                    .iter()
                    .map(|ns| ns.socket_addr)
                    .next()
                    .ok_or("blocklists.resolver: the system names no resolver; set one")?
            }
        };
        let mut rc = ResolverConfig::new();
        rc.add_name_server(NameServerConfig::new(server, Protocol::Udp));
        rc.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
        let resolver = TokioResolver::builder_with_config(rc, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        // One driver reads them all, so a few suffice: more spread the ids and ports a forger
        // must guess, but each costs an empty read per wake.
        let sockets = cfg.concurrency.div_ceil(128).clamp(1, 4);
        let udp = super::udp::UdpDns::new(server, sockets, cfg.concurrency.max(1), cfg.timeout)
            .map_err(|e| format!("blocklists: cannot open a UDP socket: {e}"))?;
        Ok(Checker {
            udp,
            resolver,
            concurrency: cfg.concurrency.max(1),
        })
    }

    /// How the fast path paces itself: RTO, window, queries lost and sent again.
    pub fn pacing(&self) -> super::pacing::Pacing {
        self.udp.pacing()
    }

    async fn a(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        use super::udp::QueryError;
        let packet = match wire::encode_query(name, wire::TYPE_A) {
            Ok(p) => p,
            Err(e) => return Lookup::Refused(format!("{name:?} is not a DNS name: {e}")),
        };
        match self.udp.query(packet).await {
            Ok(reply) => match reply.response_code {
                ResponseCode::NoError if reply.a.is_empty() => Lookup::Nothing,
                ResponseCode::NoError => Lookup::Found(reply.a),
                ResponseCode::NXDomain => Lookup::Nothing,
                ResponseCode::ServFail => Lookup::Unknown("SERVFAIL".into()),
                other => Lookup::Refused(format!("the server answered {other}")),
            },
            Err(QueryError::Timeout) => Lookup::Unknown("timed out".into()),
            Err(QueryError::Io(e)) => Lookup::Unknown(e),
            Err(QueryError::Truncated) => self.a_by_resolver(name).await,
        }
    }

    /// The A lookup through hickory's resolver (UDP, then TCP when truncated).
    async fn a_by_resolver(&self, name: &str) -> Lookup<Vec<Ipv4Addr>> {
        match self.resolver.ipv4_lookup(name).await {
            Ok(l) => {
                let v: Vec<Ipv4Addr> = l.iter().map(|a| a.0).collect();
                if v.is_empty() {
                    Lookup::Nothing
                } else {
                    Lookup::Found(v)
                }
            }
            Err(e) => lookup_error(&e),
        }
    }

    async fn txt(&self, name: &str) -> Option<String> {
        let packet = wire::encode_query(name, wire::TYPE_TXT).ok()?;
        let text: Vec<String> = match self.udp.query(packet).await {
            Ok(reply) => reply
                .txt
                .iter()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect(),
            Err(super::udp::QueryError::Truncated) => {
                let l = self.resolver.txt_lookup(name).await.ok()?;
                l.iter()
                    .map(|t| {
                        t.txt_data()
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>()
                    })
                    .collect()
            }
            Err(_) => return None,
        };
        let joined = text.join(" ");
        let clean = crate::domain::validate::sanitize(&joined)
            .trim()
            .to_string();
        (!clean.is_empty()).then_some(clean)
    }

    /// One IP on one zone.
    pub async fn check(&self, ip: Ipv4Addr, zone: &Zone) -> Verdict {
        let name = query_name(ip, &zone.zone);
        let verdict = |status, code, meaning, reason| Verdict {
            ip,
            zone: zone.zone.clone(),
            status,
            code,
            meaning,
            reason,
        };
        match self.a(&name).await {
            Lookup::Nothing => verdict(Status::NotListed, None, None, None),
            Lookup::Refused(why) => verdict(Status::Error, None, Some(why), None),
            Lookup::Unknown(why) => verdict(Status::Unknown, None, Some(why), None),
            Lookup::Found(answers) => {
                let (status, code, meaning) = classify_answers(zone.codes, &answers);
                let reason = if status == Status::Listed {
                    self.txt(&name).await
                } else {
                    None
                };
                verdict(status, code, meaning, reason)
            }
        }
    }

    /// Every IP on every zone, at most `concurrency` queries at once; IP-major order.
    ///
    /// Twice as many checks as seats are kept asking: the client then has a query queued
    /// for each seat an answer frees, and sends it in the same wake that read the answer,
    /// so the server is never left idle while this task catches up.
    pub async fn check_all(&self, ips: &[Ipv4Addr], zones: &[Zone]) -> Vec<Verdict> {
        // By index, so the closure borrows nothing of its argument (the future stays Send
        // for any caller that spawns it).
        let per_ip = zones.len();
        if per_ip == 0 {
            return Vec::new();
        }
        // Unordered, then put back in place: in order, one query lost and sent again would
        // hold up every check behind it once `concurrency` of them had finished.
        let mut found: Vec<(usize, Verdict)> = stream::iter(0..ips.len() * per_ip)
            .map(|k| async move { (k, self.check(ips[k / per_ip], &zones[k % per_ip]).await) })
            .buffer_unordered(2 * self.concurrency)
            .collect()
            .await;
        found.sort_unstable_by_key(|(k, _)| *k);
        found.into_iter().map(|(_, v)| v).collect()
    }

    /// Health-checks each zone, then checks every IP on every zone. Answers from a zone
    /// that failed its health check are not trusted: a listed or clean answer there becomes
    /// an error saying why.
    pub async fn check_zones(
        &self,
        ips: &[Ipv4Addr],
        zones: &[Zone],
    ) -> (Vec<ZoneHealth>, Vec<Verdict>) {
        let health: Vec<ZoneHealth> = stream::iter(0..zones.len())
            .map(|i| self.health(&zones[i]))
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut verdicts = self.check_all(ips, zones).await;
        for v in &mut verdicts {
            let Some(h) = health.iter().find(|h| h.zone == v.zone && !h.usable) else {
                continue;
            };
            if matches!(v.status, Status::Listed | Status::NotListed) {
                v.status = Status::Error;
                v.meaning = Some(format!(
                    "zone unusable: {}",
                    h.why.as_deref().unwrap_or("failed its health check")
                ));
                v.reason = None;
            }
        }
        (health, verdicts)
    }

    /// The RFC 5782 test entries: 127.0.0.2 must be listed, 127.0.0.1 must not.
    pub async fn health(&self, zone: &Zone) -> ZoneHealth {
        let (two, one) = futures::join!(
            self.check(Ipv4Addr::new(127, 0, 0, 2), zone),
            self.check(Ipv4Addr::new(127, 0, 0, 1), zone)
        );
        let why = if one.status == Status::Listed {
            Some(
                "127.0.0.1 is listed: the list is refusing this resolver; its answers mean nothing"
                    .to_string(),
            )
        } else if two.status != Status::Listed {
            Some(format!(
                "127.0.0.2 is not listed ({}{}): the zone does not answer as a blocklist",
                two.status.as_str(),
                two.meaning.map(|m| format!(": {m}")).unwrap_or_default()
            ))
        } else if one.status != Status::NotListed {
            Some(format!(
                "127.0.0.1 gave {}{}",
                one.status.as_str(),
                one.meaning.map(|m| format!(": {m}")).unwrap_or_default()
            ))
        } else {
            None
        };
        ZoneHealth {
            zone: zone.zone.clone(),
            usable: why.is_none(),
            why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn names_reverse_the_octets() {
        assert_eq!(
            query_name(ip("192.0.2.10"), "zen.spamhaus.org"),
            "10.2.0.192.zen.spamhaus.org."
        );
        assert_eq!(
            query_name(ip("127.0.0.2"), "bl.test."),
            "2.0.0.127.bl.test."
        );
    }

    #[test]
    fn spamhaus_codes_table() {
        let cases = [
            ("127.0.0.2", Ok("SBL")),
            ("127.0.0.3", Ok("CSS")),
            ("127.0.0.4", Ok("XBL")),
            ("127.0.0.9", Ok("DROP")),
            ("127.0.0.10", Ok("PBL")),
            ("127.0.0.11", Ok("PBL")),
            ("127.0.0.30", Ok("BCL")),
            ("127.0.0.99", Ok("listed (127.0.0.99)")),
            ("127.255.255.252", Err("typo")),
            ("127.255.255.254", Err("public or open resolver")),
            ("127.255.255.255", Err("too many queries")),
            ("10.0.0.1", Err("outside 127.0.0.0/8")),
        ];
        for (code, want) in cases {
            let got = read_code(Codes::Spamhaus, ip(code));
            match want {
                Ok(m) => assert_eq!(got, Ok(m.to_string()), "{code}"),
                Err(part) => {
                    let e = got.expect_err(code);
                    assert!(e.contains(part), "{code}: {e}");
                }
            }
        }
    }

    #[test]
    fn generic_codes_never_list_error_ranges() {
        assert_eq!(
            read_code(Codes::Generic, ip("127.0.0.2")),
            Ok("listed (127.0.0.2)".into())
        );
        assert!(read_code(Codes::Generic, ip("127.255.255.254")).is_err());
        assert!(read_code(Codes::Generic, ip("8.8.8.8")).is_err());
    }

    #[test]
    fn several_answers_list_if_any_code_lists() {
        let (s, code, m) = classify_answers(
            Codes::Spamhaus,
            &[ip("127.255.255.254"), ip("127.0.0.4"), ip("127.0.0.2")],
        );
        assert_eq!(s, Status::Listed);
        assert_eq!(code, Some(ip("127.0.0.4")));
        assert_eq!(m.as_deref(), Some("XBL, SBL"));
        let (s, code, _) = classify_answers(Codes::Spamhaus, &[ip("127.255.255.254")]);
        assert_eq!((s, code), (Status::Error, Some(ip("127.255.255.254"))));
        assert_eq!(classify_answers(Codes::Generic, &[]).0, Status::NotListed);
    }

    #[test]
    fn delist_urls_are_found_in_reasons() {
        assert_eq!(
            delist_url("Listed: see https://check.example/lookup?ip=192.0.2.10 now"),
            Some("https://check.example/lookup?ip=192.0.2.10")
        );
        assert_eq!(delist_url("no url here"), None);
    }
}
