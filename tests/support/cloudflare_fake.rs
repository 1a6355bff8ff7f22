//! A small in-memory fake of Cloudflare's API v4 on 127.0.0.1, for tests/cloudflare.rs. It
//! answers what `dns::cloudflare` uses, in Cloudflare's documented shapes: the envelope
//! (`success`, `errors`, `messages`, `result`, `result_info`), `GET /zones?name=`,
//! `GET|POST /zones/{id}/dns_records` (filters `name` and `type`, pages) and
//! `DELETE /zones/{id}/dns_records/{id}`. It checks what Cloudflare checks that matters
//! here: the bearer token (403, code 10000), an A record's address (9005), an MX's priority
//! (1004 with 9100 in its chain), the TTL (9021), an identical record (81058), a record or
//! zone that is not there (81044, 7003). TXT content is kept and returned as sent.
//!
//! A test can look at what it holds (`records`), add records of its own that the code under
//! test must leave alone (`insert_foreign`), make the next request fail (`fail_next`), and
//! make pages small (`set_max_per_page`) to exercise paging.
//!
//! Included as `#[path = "support/cloudflare_fake.rs"] mod cloudflare_fake;`.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

/// One record as the fake holds it (Cloudflare's fields, names without the trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub rtype: String,
    pub content: String,
    pub ttl: u32,
    pub priority: Option<u16>,
    pub proxied: bool,
}

#[derive(Debug)]
struct State {
    token: String,
    zones: Vec<(String, String)>,
    records: Vec<Rec>,
    next_id: u64,
    failures: VecDeque<u16>,
    max_per_page: usize,
    /// "METHOD /path?query" of every request, in order.
    log: Vec<String>,
}

pub struct CloudflareFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CloudflareFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CloudflareFake {
    /// Listens on a free loopback port; requests must carry `Bearer {token}`.
    pub async fn start(token: &str) -> CloudflareFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            zones: Vec::new(),
            records: Vec::new(),
            next_id: 1,
            failures: VecDeque::new(),
            max_per_page: 5_000,
            log: Vec::new(),
        }));
        let shared = state.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CloudflareFake {
            addr,
            state,
            server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the client is configured with (Cloudflare's `.../client/v4`).
    pub fn base_url(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// Adds a zone (name without the trailing dot); returns its id.
    pub fn add_zone(&self, name: &str) -> String {
        let mut st = self.lock();
        let id = format!("{:032x}", 0x2f00_0000u64 + st.zones.len() as u64);
        st.zones
            .push((id.clone(), name.trim_end_matches('.').to_string()));
        id
    }

    /// A record put there by someone else (as Cloudflare's dashboard would); returns its id.
    pub fn insert_foreign(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
        content: &str,
        priority: Option<u16>,
    ) -> String {
        let mut st = self.lock();
        let zone_id = st
            .zones
            .iter()
            .find(|(_, n)| n == zone.trim_end_matches('.'))
            .map(|(id, _)| id.clone())
            .expect("insert_foreign: add the zone first");
        let id = new_id(&mut st);
        st.records.push(Rec {
            id: id.clone(),
            zone_id,
            name: name.trim_end_matches('.').to_string(),
            rtype: rtype.to_string(),
            content: content.to_string(),
            ttl: 1,
            priority,
            proxied: false,
        });
        id
    }

    pub fn records(&self) -> Vec<Rec> {
        self.lock().records.clone()
    }

    /// The records at `name` (no trailing dot) of type `rtype`.
    pub fn records_at(&self, name: &str, rtype: &str) -> Vec<Rec> {
        self.records()
            .into_iter()
            .filter(|r| r.name == name && r.rtype == rtype)
            .collect()
    }

    /// The next request is answered with `status` (429, or a 5xx) instead.
    pub fn fail_next(&self, status: u16) {
        self.lock().failures.push_back(status);
    }

    /// Caps `per_page` as Cloudflare caps it, so a short listing spans several pages.
    pub fn set_max_per_page(&self, n: usize) {
        self.lock().max_per_page = n.max(1);
    }

    /// Every request so far, as "METHOD /path?query".
    pub fn requests(&self) -> Vec<String> {
        self.lock().log.clone()
    }
}

fn new_id(st: &mut State) -> String {
    st.next_id += 1;
    format!("{:032x}", 0x7ec0_0000_0000u64 + st.next_id)
}

fn envelope(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok(result: Value) -> Response<Full<Bytes>> {
    envelope(
        StatusCode::OK,
        json!({"success": true, "errors": [], "messages": [], "result": result}),
    )
}

fn fail(status: u16, errors: Value) -> Response<Full<Bytes>> {
    envelope(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"success": false, "errors": errors, "messages": [], "result": null}),
    )
}

fn validation(code: u16, message: &str) -> Response<Full<Bytes>> {
    fail(
        400,
        json!([{"code": 1004, "message": "DNS Validation Error",
                "error_chain": [{"code": code, "message": message}]}]),
    )
}

/// Query parameters, form-decoded.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// One page of `items`, with Cloudflare's `result_info`.
fn page_of(items: Vec<Value>, q: &[(String, String)], max: usize) -> Response<Full<Bytes>> {
    let per_page = param(q, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, max);
    let page = param(q, "page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let total_pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    envelope(
        StatusCode::OK,
        json!({"success": true, "errors": [], "messages": [], "result": slice,
               "result_info": {"page": page, "per_page": per_page, "count": slice.len(),
                               "total_count": total, "total_pages": total_pages}}),
    )
}

fn record_json(r: &Rec, zone_name: &str) -> Value {
    let mut v = json!({
        "id": r.id, "zone_id": r.zone_id, "zone_name": zone_name, "name": r.name,
        "type": r.rtype, "content": r.content, "proxiable": matches!(r.rtype.as_str(), "A" | "AAAA" | "CNAME"),
        "proxied": r.proxied, "ttl": r.ttl, "settings": {}, "meta": {}, "comment": null,
        "tags": [], "created_on": "2026-01-01T00:00:00.000000Z",
        "modified_on": "2026-01-01T00:00:00.000000Z",
    });
    if let Some(p) = r.priority {
        v["priority"] = json!(p);
    }
    v
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let q = query(&req);
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let line = match q.is_empty() {
        true => format!("{method} {path}"),
        false => format!(
            "{method} {path}?{}",
            q.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        ),
    };
    st.log.push(line);
    Ok(answer(&mut st, &method, &path, &q, auth.as_deref(), &body))
}

fn answer(
    st: &mut State,
    method: &Method,
    path: &str,
    q: &[(String, String)],
    auth: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if let Some(status) = st.failures.pop_front() {
        if status == 429 {
            return fail(
                429,
                json!([{"code": 971, "message": "Please wait and consider throttling your request speed"}]),
            );
        }
        // Cloudflare's edge answers a 5xx with an HTML page, not the API's envelope.
        let mut resp = Response::new(Full::new(Bytes::from(format!(
            "<html><head><title>{status} Bad Gateway</title></head><body>cloudflare</body></html>"
        ))));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return resp;
    }
    match auth.and_then(|a| a.strip_prefix("Bearer ")) {
        None => {
            return fail(
                400,
                json!([{"code": 6003, "message": "Invalid request headers",
                        "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}]}]),
            )
        }
        Some(t) if t != st.token => {
            return fail(
                403,
                json!([{"code": 10000, "message": "Authentication error"}]),
            )
        }
        Some(_) => {}
    }
    let Some(rest) = path.strip_prefix("/client/v4") else {
        return no_route();
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["zones"]) => {
            let name = param(q, "name");
            let zones: Vec<Value> = st
                .zones
                .iter()
                .filter(|(_, n)| name.is_none_or(|want| want == n))
                .map(|(id, n)| json!({"id": id, "name": n, "status": "active", "paused": false, "type": "full"}))
                .collect();
            page_of(zones, q, 50)
        }
        (_, ["zones", zid, "dns_records", ..]) => {
            let Some(zone_name) = st
                .zones
                .iter()
                .find(|(id, _)| id == zid)
                .map(|(_, n)| n.clone())
            else {
                return fail(
                    404,
                    json!([{"code": 7003, "message": format!("Could not route to {rest}, perhaps your object identifier is invalid?")}]),
                );
            };
            records(st, method, zid, &zone_name, &parts[3..], q, body)
        }
        _ => no_route(),
    }
}

fn no_route() -> Response<Full<Bytes>> {
    fail(
        404,
        json!([{"code": 7000, "message": "No route for that URI"}]),
    )
}

fn records(
    st: &mut State,
    method: &Method,
    zid: &str,
    zone_name: &str,
    rest: &[&str],
    q: &[(String, String)],
    body: &[u8],
) -> Response<Full<Bytes>> {
    match (method, rest) {
        (&Method::GET, []) => {
            let name = param(q, "name").map(|n| n.trim_end_matches('.').to_ascii_lowercase());
            let rtype = param(q, "type");
            let found: Vec<Value> = st
                .records
                .iter()
                .filter(|r| r.zone_id == zid)
                .filter(|r| {
                    name.as_ref()
                        .is_none_or(|n| *n == r.name.to_ascii_lowercase())
                })
                .filter(|r| rtype.is_none_or(|t| t == r.rtype))
                .map(|r| record_json(r, zone_name))
                .collect();
            let max = st.max_per_page;
            page_of(found, q, max)
        }
        (&Method::POST, []) => create(st, zid, zone_name, body),
        (&Method::DELETE, [rid]) => {
            let before = st.records.len();
            st.records.retain(|r| !(r.zone_id == zid && r.id == *rid));
            if st.records.len() == before {
                return fail(
                    404,
                    json!([{"code": 81044, "message": "Record does not exist."}]),
                );
            }
            ok(json!({"id": rid}))
        }
        _ => no_route(),
    }
}

fn create(st: &mut State, zid: &str, zone_name: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return fail(
            400,
            json!([{"code": 9207, "message": "Request body is invalid."}]),
        );
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (rtype, content) = (text("type"), text("content"));
    let name = text("name").trim_end_matches('.').to_ascii_lowercase();
    if !(name == zone_name || name.ends_with(&format!(".{zone_name}"))) {
        return validation(9000, "DNS name is invalid.");
    }
    if !matches!(
        rtype.as_str(),
        "A" | "AAAA" | "CNAME" | "MX" | "TXT" | "NS" | "PTR" | "CAA" | "SRV"
    ) {
        return fail(
            400,
            json!([{"code": 9003, "message": "Invalid 'type' of record."}]),
        );
    }
    let ttl = v.get("ttl").and_then(Value::as_u64).unwrap_or(1);
    if ttl != 1 && !(60..=86_400).contains(&ttl) {
        return fail(
            400,
            json!([{"code": 9021, "message": "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for automatic."}]),
        );
    }
    if rtype == "A" && content.parse::<Ipv4Addr>().is_err() {
        return fail(
            400,
            json!([{"code": 9005, "message": "Content for A record must be a valid IPv4 address."}]),
        );
    }
    let priority = v
        .get("priority")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok());
    if rtype == "MX" && priority.is_none() {
        return validation(9100, "priority is a required field.");
    }
    if content.is_empty() || (rtype == "TXT" && content.len() > 2048) {
        return validation(9004, "Content for record is invalid.");
    }
    let identical = st.records.iter().any(|r| {
        r.zone_id == zid
            && r.name == name
            && r.rtype == rtype
            && r.content == content
            && r.priority == priority.filter(|_| rtype == "MX")
    });
    if identical {
        return fail(
            400,
            json!([{"code": 81058, "message": "An identical record already exists."}]),
        );
    }
    let rec = Rec {
        id: new_id(st),
        zone_id: zid.to_string(),
        name,
        priority: priority.filter(|_| rtype == "MX"),
        rtype,
        content,
        ttl: u32::try_from(ttl).unwrap_or(1),
        proxied: v.get("proxied").and_then(Value::as_bool).unwrap_or(false),
    };
    let out = record_json(&rec, zone_name);
    st.records.push(rec);
    ok(out)
}
