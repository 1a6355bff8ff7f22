//! A real PowerDNS authoritative server on loopback, for the DNSBL tests and the blocklist
//! bench. It owns a temp dir (config, sqlite database, control socket, log), the
//! `pdns_server` child and its two ports; zones and records are written straight into the
//! gsqlite3 database, which the server reads on every query (caches and the zone cache are
//! off unless [`PdnsOptions::caches`] asks for them), so a new record answers at once.
//!
//! It must not touch anything outside its temp dir and never listens off 127.0.0.1.
//!
//! Included by `tests/*.rs` as `#[path = "support/pdns.rs"] mod pdns;` and by benches as
//! `#[path = "../tests/support/pdns.rs"] mod pdns;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the server and the backend's schema.
const PDNS_BINARY: &str = "/usr/sbin/pdns_server";
const SQLITE_SCHEMA: &str = "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql";
const INSTALL_HINT: &str = "apt-get install -y pdns-server pdns-backend-sqlite3";
/// TTL of records added without one.
pub const DEFAULT_TTL: u32 = 60;
/// How long `start` waits for the server to answer before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to run the server. Tests want the defaults (no caches: what was just written answers);
/// a benchmark of the *client* may turn the caches on so the server is not the bottleneck.
#[derive(Debug, Clone, Default)]
pub struct PdnsOptions {
    /// Packet and query caches on (60 s). Records added after the first query of a name may
    /// then be answered stale for up to a minute.
    pub caches: bool,
}

pub struct Pdns {
    dir: tempfile::TempDir,
    child: Child,
    dns_port: u16,
    web_port: u16,
    api_key: String,
}

impl Pdns {
    /// Starts `pdns_server` on 127.0.0.1 with no caches. `Ok(None)` (after a "skipping" line
    /// on stderr) when the binary is missing and `MAILFLEET_REQUIRE_SERVICES` is not "1";
    /// with it set, a missing binary is an `Err` that says how to install it.
    pub fn start() -> Result<Option<Pdns>, String> {
        Self::start_with(&PdnsOptions::default())
    }

    pub fn start_with(options: &PdnsOptions) -> Result<Option<Pdns>, String> {
        let Some(binary) = find_binary() else {
            if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
                return Err(format!(
                    "pdns_server not installed and MAILFLEET_REQUIRE_SERVICES=1: run `{INSTALL_HINT}`"
                ));
            }
            eprintln!("skipping: pdns_server not installed (install with `{INSTALL_HINT}`)");
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("mailfleet-pdns-")
            .tempdir()
            .map_err(|e| format!("pdns: temp dir: {e}"))?;
        let db = dir.path().join("pdns.sqlite3");
        create_database(&db)?;
        let dns_port = free_dns_port()?;
        let web_port = free_tcp_port()?;
        let api_key = format!("mailfleet-test-{}-{dns_port}", std::process::id());
        let conf = config_text(dir.path(), &db, dns_port, web_port, &api_key, options);
        std::fs::write(dir.path().join("pdns.conf"), conf)
            .map_err(|e| format!("pdns: write pdns.conf: {e}"))?;
        let log = std::fs::File::create(dir.path().join("pdns.log"))
            .map_err(|e| format!("pdns: create log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("pdns: clone log handle: {e}"))?;
        let child = Command::new(&binary)
            .arg(format!("--config-dir={}", dir.path().display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("pdns: spawn {}: {e}", binary.display()))?;
        let mut pdns = Pdns {
            dir,
            child,
            dns_port,
            web_port,
            api_key,
        };
        pdns.wait_ready()?;
        Ok(Some(pdns))
    }

    /// `127.0.0.1:PORT`, UDP and TCP.
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.dns_port))
    }

    /// `http://127.0.0.1:PORT` of the webserver; the API is under `/api/v1`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port)
    }

    /// Value for the `X-API-Key` header.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The server's log so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    /// One HTTP/1.0 request to the API with the key; returns the status and body.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        self.api_client().request(method, path, body)
    }

    /// Puts records in `zone` through the API, as its owner would: `rrsets` is the JSON
    /// array of a PATCH (each with `changetype`).
    pub fn patch_zone(&self, zone: &str, rrsets: &str) -> Result<(), String> {
        let path = format!("/api/v1/servers/localhost/zones/{}.", normalize(zone));
        let body = format!(r#"{{"rrsets": {rrsets}}}"#);
        match self.api("PATCH", &path, Some(&body))? {
            (204, _) => Ok(()),
            (status, text) => Err(format!("pdns: PATCH {path}: HTTP {status}: {text}")),
        }
    }

    /// Every record `zone` holds but its SOA and NS, as (name, type, content), sorted.
    pub fn records(&self, zone: &str) -> Vec<(String, String, String)> {
        let path = format!("/api/v1/servers/localhost/zones/{}.", normalize(zone));
        let (status, text) = self.api("GET", &path, None).expect("api");
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let mut out = Vec::new();
        for rr in v["rrsets"].as_array().into_iter().flatten() {
            for r in rr["records"].as_array().into_iter().flatten() {
                out.push((
                    rr["name"].as_str().unwrap_or("").to_string(),
                    rr["type"].as_str().unwrap_or("").to_string(),
                    r["content"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        out.retain(|(_, t, _)| t != "SOA" && t != "NS");
        out.sort();
        out
    }

    /// A handle on the API that outlives a borrow of the server (for spawned tasks).
    pub fn api_client(&self) -> PdnsApi {
        PdnsApi {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, self.web_port)),
            key: self.api_key.clone(),
        }
    }

    /// Creates a NATIVE zone with a SOA and an NS record at its apex. `zone` may end with a
    /// dot or not; names are stored lowercase.
    pub fn add_zone(&self, zone: &str) -> Result<(), String> {
        let zone = normalize(zone);
        let conn = self.open_db()?;
        conn.execute(
            "INSERT INTO domains (name, type) VALUES (?1, 'NATIVE')",
            [&zone],
        )
        .map_err(|e| format!("pdns: add zone {zone}: {e}"))?;
        drop(conn);
        self.add_records(
            &zone,
            &[
                (
                    "@".to_string(),
                    "SOA".to_string(),
                    format!("ns1.{zone} hostmaster.{zone} 1 10800 3600 604800 60"),
                ),
                ("@".to_string(), "NS".to_string(), format!("ns1.{zone}")),
            ],
        )
    }

    /// Adds one record with [`DEFAULT_TTL`]. See [`Pdns::add_records`] for names and content.
    pub fn add_record(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
        content: &str,
    ) -> Result<(), String> {
        self.add_records(
            zone,
            &[(name.to_string(), rtype.to_string(), content.to_string())],
        )
    }

    /// Adds `(name, type, content)` records in one transaction, each with [`DEFAULT_TTL`].
    ///
    /// Names: `"@"` or `""` is the apex; a name ending with a dot is absolute and must lie in
    /// the zone; anything else is relative to the zone (`"2.0.0.127"` under `bl.test` is
    /// `2.0.0.127.bl.test`). TXT content is given without quotes: it is quoted (and split into
    /// 255-octet strings) here, as PowerDNS stores it.
    pub fn add_records(
        &self,
        zone: &str,
        records: &[(String, String, String)],
    ) -> Result<(), String> {
        let zone = normalize(zone);
        let mut conn = self.open_db()?;
        let tx = conn
            .transaction()
            .map_err(|e| format!("pdns: begin: {e}"))?;
        let domain_id: i64 = tx
            .query_row("SELECT id FROM domains WHERE name = ?1", [&zone], |row| {
                row.get(0)
            })
            .map_err(|e| format!("pdns: zone {zone} not found (add_zone first): {e}"))?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 1)",
                )
                .map_err(|e| format!("pdns: prepare insert: {e}"))?;
            for (name, rtype, content) in records {
                let fqdn = absolute_name(&zone, name)?;
                let rtype = rtype.to_ascii_uppercase();
                let content = if rtype == "TXT" {
                    quote_txt(content)
                } else {
                    content.clone()
                };
                insert
                    .execute(rusqlite::params![
                        domain_id,
                        fqdn,
                        rtype,
                        content,
                        DEFAULT_TTL
                    ])
                    .map_err(|e| format!("pdns: insert {fqdn} {rtype}: {e}"))?;
            }
        }
        tx.commit().map_err(|e| format!("pdns: commit: {e}"))
    }

    fn open_db(&self) -> Result<rusqlite::Connection, String> {
        let conn = rusqlite::Connection::open(self.dir.path().join("pdns.sqlite3"))
            .map_err(|e| format!("pdns: open database: {e}"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| format!("pdns: busy timeout: {e}"))?;
        Ok(conn)
    }

    /// Polls a UDP query (any answer, even REFUSED, means the server is serving) and then the
    /// API, for at most [`START_TIMEOUT`]; fails early if the child exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut dns_up = false;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "pdns_server exited during start-up ({status}); log:\n{}",
                    self.log()
                ));
            }
            if !dns_up {
                dns_up = udp_probe(self.dns_addr());
            }
            if dns_up
                && matches!(
                    self.api("GET", "/api/v1/servers/localhost", None),
                    Ok((200, _))
                )
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "pdns_server did not answer within {START_TIMEOUT:?} (dns up: {dns_up}); log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// The server's HTTP API: raw HTTP/1.0 over a `TcpStream`, with the `X-API-Key` header.
#[derive(Debug, Clone)]
pub struct PdnsApi {
    addr: SocketAddr,
    key: String,
}

impl PdnsApi {
    /// One request; returns the status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let addr = self.addr;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("pdns api: connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| format!("pdns api: {e}"))?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.key,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("pdns api: send: {e}"))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| format!("pdns api: read: {e}"))?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("pdns api: no status line in {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// One counter from `/statistics`, such as `udp-queries` (queries received over UDP).
    pub fn statistic(&self, name: &str) -> Result<u64, String> {
        let path = format!("/api/v1/servers/localhost/statistics?statistic={name}");
        let (status, body) = self.request("GET", &path, None)?;
        if status != 200 {
            return Err(format!("pdns api: statistic {name}: HTTP {status}: {body}"));
        }
        // The answer is `[{"name": NAME, "type": "StatisticItem", "value": "123"}]`.
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("pdns api: statistic {name}: {e}: {body}"))?;
        json[0]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("pdns api: statistic {name}: no value in {body}"))
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- fixtures -------------------------------------------------------------------------------

/// The reversed-octet name of an IPv4 address, relative to a DNSBL zone.
pub fn reversed(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}")
}

/// `(name, "A", code)` plus `(name, "TXT", reason)` when there is a reason.
pub fn listing(ip: Ipv4Addr, code: &str, reason: Option<&str>) -> Vec<(String, String, String)> {
    let name = reversed(ip);
    let mut out = vec![(name.clone(), "A".to_string(), code.to_string())];
    if let Some(reason) = reason {
        out.push((name, "TXT".to_string(), reason.to_string()));
    }
    out
}

/// The fixture's addresses and what the zone says about each.
pub mod fixture {
    use std::net::Ipv4Addr;
    /// Health entry: must be listed (A 127.0.0.2, TXT "test entry").
    pub const HEALTH_LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
    /// Health entry: must not be listed.
    pub const HEALTH_CLEAN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
    /// Listed, code 127.0.0.2 (SBL), with a TXT reason ([`SBL_REASON`]).
    pub const SBL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    pub const SBL_REASON: &str = "Listed: see https://check.example/lookup?ip=192.0.2.10";
    /// Listed, code 127.0.0.4 (XBL), no TXT.
    pub const XBL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
    /// Listed, code 127.0.0.10 (PBL), no TXT.
    pub const PBL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
    /// No record: NXDOMAIN.
    pub const CLEAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
    /// Answers 127.255.255.254 (Spamhaus: query came through a public resolver).
    pub const ERR_PUBLIC_RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
    /// Answers 127.255.255.252 (Spamhaus: typo in the zone name).
    pub const ERR_TYPO: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 31);
    /// Answers 127.255.255.255 (Spamhaus: too many queries).
    pub const ERR_RATE_LIMITED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 32);
    /// Answers 10.0.0.1: outside 127.0.0.0/8, so a broken list, not a listing.
    pub const NON_LOOPBACK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 40);
}

/// Creates `zone` as a test DNSBL with the entries in [`fixture`].
pub fn blocklist_fixture(p: &Pdns, zone: &str) -> Result<(), String> {
    use fixture::*;
    p.add_zone(zone)?;
    let mut records = listing(HEALTH_LISTED, "127.0.0.2", Some("test entry"));
    records.extend(listing(SBL, "127.0.0.2", Some(SBL_REASON)));
    records.extend(listing(XBL, "127.0.0.4", None));
    records.extend(listing(PBL, "127.0.0.10", None));
    records.extend(listing(ERR_PUBLIC_RESOLVER, "127.255.255.254", None));
    records.extend(listing(ERR_TYPO, "127.255.255.252", None));
    records.extend(listing(ERR_RATE_LIMITED, "127.255.255.255", None));
    records.extend(listing(NON_LOOPBACK, "10.0.0.1", None));
    p.add_records(zone, &records)
}

/// Creates `zone` as a list that refuses the caller: it lists 127.0.0.2 as it should, but
/// also 127.0.0.1 (RFC 5782 §5 says it must not) and [`fixture::CLEAN`] — its answers mean
/// nothing, and a health check must say so.
pub fn refusing_fixture(p: &Pdns, zone: &str) -> Result<(), String> {
    use fixture::*;
    p.add_zone(zone)?;
    let mut records = listing(HEALTH_LISTED, "127.0.0.2", Some("test entry"));
    records.extend(listing(HEALTH_CLEAN, "127.0.0.2", Some("you are refused")));
    records.extend(listing(CLEAN, "127.0.0.2", None));
    p.add_records(zone, &records)
}

/// Makes the A lookup of `ip` under an existing `zone` answer SERVFAIL: the record's content
/// is not an address, so the server's backend fails on it and PowerDNS sends SERVFAIL.
pub fn servfail_entry(p: &Pdns, zone: &str, ip: Ipv4Addr) -> Result<(), String> {
    p.add_record(zone, &reversed(ip), "A", "not-an-address")
}

/// A UDP socket on 127.0.0.1 that receives queries and never answers: point a resolver at
/// [`SilentResolver::addr`] to get a real timeout. (A port with nothing bound may instead give
/// "connection refused" at once, from the ICMP port-unreachable.) Keep it alive while in use.
pub struct SilentResolver {
    socket: UdpSocket,
}

impl SilentResolver {
    pub fn bind() -> Result<SilentResolver, String> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("silent resolver: bind: {e}"))?;
        Ok(SilentResolver { socket })
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

// ---- helpers ---------------------------------------------------------------------------------

/// `MAILFLEET_PDNS_SERVER` names the binary to use (a path that is not a file counts as "not
/// installed"); otherwise Debian's path, then `PATH`.
fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MAILFLEET_PDNS_SERVER") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let fixed = PathBuf::from(PDNS_BINARY);
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pdns_server"))
            .find(|p| p.is_file())
    })
}

fn create_database(db: &Path) -> Result<(), String> {
    let schema = std::fs::read_to_string(SQLITE_SCHEMA).map_err(|e| {
        format!(
            "pdns: read {SQLITE_SCHEMA} ({e}); is pdns-backend-sqlite3 installed? `{INSTALL_HINT}`"
        )
    })?;
    let conn = rusqlite::Connection::open(db).map_err(|e| format!("pdns: create database: {e}"))?;
    conn.execute_batch(&schema)
        .map_err(|e| format!("pdns: load schema: {e}"))?;
    // WAL lets the server read while a test writes.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| format!("pdns: WAL: {e}"))
}

fn config_text(
    dir: &Path,
    db: &Path,
    dns_port: u16,
    web_port: u16,
    api_key: &str,
    options: &PdnsOptions,
) -> String {
    let cache_ttl = if options.caches { 60 } else { 0 };
    format!(
        "launch=gsqlite3\n\
         gsqlite3-database={db}\n\
         local-address=127.0.0.1\n\
         local-port={dns_port}\n\
         api=yes\n\
         api-key={api_key}\n\
         webserver=yes\n\
         webserver-address=127.0.0.1\n\
         webserver-port={web_port}\n\
         webserver-allow-from=127.0.0.0/8\n\
         webserver-loglevel=none\n\
         socket-dir={dir}\n\
         guardian=no\n\
         daemon=no\n\
         disable-syslog=yes\n\
         loglevel=3\n\
         log-dns-queries=no\n\
         log-dns-details=no\n\
         query-cache-ttl={cache_ttl}\n\
         cache-ttl={cache_ttl}\n\
         negquery-cache-ttl={cache_ttl}\n\
         zone-cache-refresh-interval=0\n\
         security-poll-suffix=\n\
         receiver-threads=1\n\
         distributor-threads=2\n",
        db = db.display(),
        dir = dir.display(),
    )
}

/// A port free for both UDP and TCP on 127.0.0.1 (DNS listens on both).
fn free_dns_port() -> Result<u16, String> {
    for _ in 0..50 {
        let udp =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind udp: {e}"))?;
        let port = udp
            .local_addr()
            .map_err(|e| format!("udp addr: {e}"))?
            .port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no port free for both UDP and TCP on 127.0.0.1".to_string())
}

fn free_tcp_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind tcp: {e}"))?;
    Ok(listener
        .local_addr()
        .map_err(|e| format!("tcp addr: {e}"))?
        .port())
}

/// Sends a SOA query for `mailfleet-probe.test.` and reports whether anything came back.
fn udp_probe(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let mut query = vec![0x4d, 0x46, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["mailfleet-probe", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]);
    if socket.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == query[..2])
}

fn normalize(zone: &str) -> String {
    zone.trim_end_matches('.').to_ascii_lowercase()
}

fn absolute_name(zone: &str, name: &str) -> Result<String, String> {
    if name.is_empty() || name == "@" {
        return Ok(zone.to_string());
    }
    if let Some(abs) = name.strip_suffix('.') {
        let abs = abs.to_ascii_lowercase();
        if abs == zone || abs.ends_with(&format!(".{zone}")) {
            return Ok(abs);
        }
        return Err(format!("pdns: {name} is not inside zone {zone}"));
    }
    Ok(format!("{}.{zone}", name.to_ascii_lowercase()))
}

/// PowerDNS stores TXT content as one or more quoted strings of at most 255 octets, with `"`
/// and `\` escaped.
fn quote_txt(text: &str) -> String {
    let mut out = String::new();
    let mut chunk = String::new();
    let mut chunk_octets = 0;
    for ch in text.chars() {
        if chunk_octets + ch.len_utf8() > 255 {
            push_quoted(&mut out, &chunk);
            chunk.clear();
            chunk_octets = 0;
        }
        chunk.push(ch);
        chunk_octets += ch.len_utf8();
    }
    push_quoted(&mut out, &chunk);
    out
}

fn push_quoted(out: &mut String, chunk: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push('"');
    for ch in chunk.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}
