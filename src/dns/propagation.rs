//! Whether planned records answer, as planned, from a zone's authoritative server: asked
//! directly (no recursion, no cache), until every record does or the time is up.

use crate::domain::records::PlannedRecord;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Where a planned record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    Planned,
    Published,
    Verified,
}

/// One record's check: what was asked and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub name: String,
    pub rtype: String,
    pub want: String,
    pub status: RecordStatus,
    /// What the server answered (empty when nothing).
    pub got: Vec<String>,
}

fn resolver(server: SocketAddr, timeout: Duration) -> TokioResolver {
    let mut rc = ResolverConfig::new();
    rc.add_name_server(NameServerConfig::new(server, Protocol::Udp));
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.recursion_desired = false;
    TokioResolver::builder_with_config(rc, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// The record's answers in the planned record's own text form.
async fn answers(r: &TokioResolver, name: &str, rtype: &str) -> Vec<String> {
    let t = match rtype {
        "A" => RecordType::A,
        "MX" => RecordType::MX,
        "TXT" => RecordType::TXT,
        _ => return Vec::new(),
    };
    let Ok(lookup) = r.lookup(name, t).await else {
        return Vec::new();
    };
    lookup
        .iter()
        .filter_map(|d| match d {
            RData::A(a) => Some(a.0.to_string()),
            RData::MX(mx) => Some(format!(
                "{} {}",
                mx.preference(),
                mx.exchange().to_ascii().to_ascii_lowercase()
            )),
            RData::TXT(txt) => Some(
                txt.txt_data()
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

/// Asks `server` for every record once.
pub async fn check_once(
    server: SocketAddr,
    records: &[PlannedRecord],
    timeout: Duration,
) -> Vec<Seen> {
    let r = resolver(server, timeout);
    let mut out = Vec::with_capacity(records.len());
    for rec in records {
        let got = answers(&r, &rec.name, rec.rtype).await;
        let want = rec.content.to_ascii_lowercase();
        let ok = got.iter().any(|g| {
            if rec.rtype == "TXT" {
                *g == rec.content
            } else {
                g.to_ascii_lowercase() == want
            }
        });
        out.push(Seen {
            name: rec.name.clone(),
            rtype: rec.rtype.to_string(),
            want: rec.content.clone(),
            status: if ok {
                RecordStatus::Verified
            } else {
                RecordStatus::Published
            },
            got,
        });
    }
    out
}

/// Asks until every record answers as planned or `within` has passed, pausing `every`
/// between rounds; returns the last round.
pub async fn wait_verified(
    server: SocketAddr,
    records: &[PlannedRecord],
    within: Duration,
    every: Duration,
) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = check_once(server, records, every.max(Duration::from_millis(200))).await;
        if seen.iter().all(|s| s.status == RecordStatus::Verified)
            || tokio::time::Instant::now() >= deadline
        {
            return seen;
        }
        tokio::time::sleep(every).await;
    }
}

/// What a record should answer: its name, type and the value a resolver gives (TXT: the
/// strings joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub rtype: String,
    pub want: String,
}

/// Asks every server for every record once. A record is verified only when each server
/// answers it as planned; the text says what each one answered.
pub async fn check_servers(
    servers: &[SocketAddr],
    items: &[Wanted],
    timeout: Duration,
) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, Vec<String>)> = vec![(!servers.is_empty(), Vec::new()); items.len()];
    for server in servers {
        let r = resolver(*server, timeout);
        for (i, w) in items.iter().enumerate() {
            let got = answers(&r, &w.name, &w.rtype).await;
            let ok = got.iter().any(|g| {
                if w.rtype == "TXT" {
                    *g == w.want
                } else {
                    g.eq_ignore_ascii_case(&w.want)
                }
            });
            out[i].0 &= ok;
            let said = if got.is_empty() {
                "nothing".to_string()
            } else {
                got.join(" | ")
            };
            out[i].1.push(format!("{server}: {said}"));
        }
    }
    out.into_iter()
        .map(|(ok, said)| {
            let text = crate::domain::validate::sanitize(&said.join("; ")).into_owned();
            (ok, text.chars().take(400).collect())
        })
        .collect()
}

/// The zone's authoritative servers, from its NS records through the system resolver.
pub async fn zone_servers(zone: &str) -> Result<Vec<SocketAddr>, String> {
    let r = TokioResolver::builder(TokioConnectionProvider::default())
        .map_err(|e| format!("the system resolver: {e}"))?
        .build();
    let fqdn = format!("{}.", zone.trim_end_matches('.'));
    let ns = r
        .lookup(fqdn.as_str(), RecordType::NS)
        .await
        .map_err(|e| format!("NS of {fqdn}: {e}"))?;
    let mut out = Vec::new();
    for d in ns.iter() {
        if let RData::NS(name) = d {
            if let Ok(ips) = r.lookup_ip(name.0.to_ascii()).await {
                out.extend(ips.iter().map(|ip| SocketAddr::new(ip, 53)));
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no address for any NS of {fqdn}"));
    }
    Ok(out)
}

/// Forward-confirmed reverse DNS, asked over DNS: the PTR names of `ip`, and for each the
/// IPv4 addresses its A records give. Asks `server` (an authoritative server for both
/// zones), else the system resolver.
pub async fn reverse_and_forward(
    server: Option<SocketAddr>,
    ip: std::net::Ipv4Addr,
    timeout: Duration,
) -> Result<Vec<(String, Vec<std::net::Ipv4Addr>)>, String> {
    let r = match server {
        Some(s) => resolver(s, timeout),
        None => TokioResolver::builder(TokioConnectionProvider::default())
            .map_err(|e| format!("the system resolver: {e}"))?
            .build(),
    };
    let names = r
        .reverse_lookup(std::net::IpAddr::V4(ip))
        .await
        .map_err(|e| format!("PTR of {ip}: {e}"))?;
    let mut out = Vec::new();
    for name in names.iter() {
        let host = name.0.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let host = crate::domain::validate::sanitize(&host).into_owned();
        let forward = match r.ipv4_lookup(format!("{host}.")).await {
            Ok(l) => l.iter().map(|a| a.0).collect(),
            Err(_) => Vec::new(),
        };
        out.push((host, forward));
    }
    Ok(out)
}
