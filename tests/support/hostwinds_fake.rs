//! A contract server for Hostwinds' cloud API on 127.0.0.1, for tests/hostwinds.rs. It keeps
//! a real inventory and answers as Hostwinds does: one form-POST endpoint with `action=` and
//! `API=`; errors with HTTP 200 as `[{"result":"error",...}]`; a wrong key gets HTTP 401 and
//! "Not Authorized!"; `add_instance` returns at once and the instance is `building` with no
//! `main_ip` for a number of polls; `terminate`, `boot`, `shutdown`, `set_rdns`,
//! `set_instance_firewall`, and a resize as `upgrade_instance` → `upgrade_server` →
//! `confirm_upgrade`/`revert_upgrade`, one order at a time.
//!
//! A test can script trouble: fail the next calls with a 5xx or with an error answer, stall
//! an answer past the client's timeout, make new instances never get an IP, and add an
//! instance behind mailfleet's back (an orphan).
//!
//! Included as `#[path = "support/hostwinds_fake.rs"] mod hostwinds_fake;`.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Vm {
    pub serviceid: u64,
    pub srvrname: String,
    pub rid: u64,
    pub location_id: u64,
    pub template: String,
    pub main_ip: String,
    /// Polls of `get_instance` left before the instance is active with its IP.
    pub polls_left: u32,
    pub status: String,
    pub vm_state: String,
    pub firewall: Option<String>,
    pub rdns: Option<String>,
    /// An upgrade ordered (rid) and whether it was applied.
    pub upgrade: Option<(u64, bool)>,
}

/// Trouble for the next call of an action (or of any action, with "*").
#[derive(Debug, Clone)]
pub enum Trouble {
    Http(u16),
    Error(String),
    Stall(Duration),
}

#[derive(Debug, Default)]
struct State {
    key: String,
    vms: BTreeMap<u64, Vm>,
    next_id: u64,
    next_ip: u32,
    build_polls: u32,
    never_ip: bool,
    trouble: HashMap<String, VecDeque<Trouble>>,
    /// Every call: the action and its fields (the key left out).
    log: Vec<(String, BTreeMap<String, String>)>,
    /// Every request body as received, to prove what the client sent.
    bodies: Vec<String>,
}

pub struct HostwindsFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HostwindsFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HostwindsFake {
    /// Listens on a free loopback port; calls must carry `API={key}`. New instances take
    /// `build_polls` polls of `get_instance` to get their IP.
    pub async fn start(key: &str, build_polls: u32) -> HostwindsFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            next_id: 7_000_001,
            next_ip: u32::from(std::net::Ipv4Addr::new(192, 0, 2, 10)),
            build_polls,
            ..State::default()
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
        HostwindsFake {
            addr,
            state,
            server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/cloud/api.php", self.addr)
    }

    pub fn vms(&self) -> Vec<Vm> {
        self.lock().vms.values().cloned().collect()
    }

    /// Instances not terminated.
    pub fn live(&self) -> Vec<Vm> {
        self.vms()
            .into_iter()
            .filter(|v| v.status != "terminated")
            .collect()
    }

    /// The actions called, in order.
    pub fn actions(&self) -> Vec<String> {
        self.lock().log.iter().map(|(a, _)| a.clone()).collect()
    }

    pub fn calls(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.lock().log.clone()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.lock().bodies.clone()
    }

    /// Trouble for the next call of `action` ("*": of any action), in order.
    pub fn trouble(&self, action: &str, t: Trouble) {
        self.lock()
            .trouble
            .entry(action.to_string())
            .or_default()
            .push_back(t);
    }

    /// New instances never get an IP.
    pub fn never_ip(&self) {
        self.lock().never_ip = true;
    }

    /// An instance made outside mailfleet (in Hostwinds' panel).
    pub fn add_foreign(&self, name: &str) -> u64 {
        let mut st = self.lock();
        let id = make_vm(&mut st, name, 101, 3, "debian-12");
        if let Some(vm) = st.vms.get_mut(&id) {
            vm.polls_left = 0;
            vm.vm_state = "active".into();
        }
        id
    }
}

fn make_vm(st: &mut State, srvrname: &str, rid: u64, location_id: u64, template: &str) -> u64 {
    let id = st.next_id;
    st.next_id += 1;
    let ip = std::net::Ipv4Addr::from(st.next_ip).to_string();
    st.next_ip += 1;
    st.vms.insert(
        id,
        Vm {
            serviceid: id,
            srvrname: srvrname.to_string(),
            rid,
            location_id,
            template: template.to_string(),
            main_ip: ip,
            polls_left: st.build_polls,
            status: "active".into(),
            vm_state: if st.build_polls == 0 {
                "active"
            } else {
                "building"
            }
            .into(),
            firewall: None,
            rdns: None,
            upgrade: None,
        },
    );
    id
}

fn view(vm: &Vm, never_ip: bool) -> Value {
    let building = vm.polls_left > 0 || never_ip;
    json!({
        "serviceid": vm.serviceid,
        "srvrname": vm.srvrname,
        "hostname": vm.srvrname,
        "location_id": vm.location_id,
        "main_ip": if building { "" } else { vm.main_ip.as_str() },
        "ips": if building { json!([]) } else { json!([vm.main_ip]) },
        "status": vm.status,
        "vm_state": if vm.status == "terminated" { "deleted" } else if building { "building" } else { vm.vm_state.as_str() },
        "task_state": if building { json!("spawning") } else { Value::Null },
        "power_state": if vm.vm_state == "stopped" { "shutdown" } else { "running" },
        "rid": vm.rid,
        "firewall": vm.firewall,
        "rdns": vm.rdns,
    })
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(action: &str, message: &str) -> Response<Full<Bytes>> {
    // Hostwinds' way: HTTP 200, an array holding the error.
    answer(
        StatusCode::OK,
        json!([{"result": "error", "action": action, "message": message, "ERROR": message}])
            .to_string(),
    )
}

fn ok(v: Value) -> Response<Full<Bytes>> {
    answer(
        StatusCode::OK,
        json!({"result": "success", "success": v}).to_string(),
    )
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, "bad body".into())),
    };
    let text = String::from_utf8_lossy(&body).to_string();
    // A form body decodes as a query string does.
    let fields: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://form/?{text}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let action = fields.get("action").cloned().unwrap_or_default();
    let trouble = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.bodies.push(text.clone());
        if fields.get("API") != Some(&st.key) {
            return Ok(answer(StatusCode::UNAUTHORIZED, "Not Authorized!".into()));
        }
        let mut logged = fields.clone();
        logged.remove("API");
        st.log.push((action.clone(), logged));
        let mut t = st.trouble.get_mut(&action).and_then(VecDeque::pop_front);
        if t.is_none() {
            t = st.trouble.get_mut("*").and_then(VecDeque::pop_front);
        }
        t
    };
    let stall = match trouble {
        Some(Trouble::Stall(d)) => Some(d),
        _ => None,
    };
    let resp = respond(&state, &action, &fields, trouble);
    // A stalled answer: the call took effect; only the answer is late.
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    Ok(resp)
}

fn respond(
    state: &Arc<Mutex<State>>,
    action: &str,
    fields: &BTreeMap<String, String>,
    trouble: Option<Trouble>,
) -> Response<Full<Bytes>> {
    let action = action.to_string();
    match trouble {
        Some(Trouble::Http(code)) => {
            return answer(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                "<html>upstream error</html>".into(),
            )
        }
        Some(Trouble::Error(m)) => return error(&action, &m),
        Some(Trouble::Stall(_)) | None => {}
    }
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let never_ip = st.never_ip;
    let id: Option<u64> = fields.get("serviceid").and_then(|s| s.parse().ok());
    let f = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let resp = match action.as_str() {
        "add_instance" => {
            let (Ok(rid), Ok(loc)) = (f("rid").parse::<u64>(), f("location_id").parse::<u64>())
            else {
                return error(&action, "rid and location_id are required");
            };
            if f("template").is_empty() {
                return error(&action, "template is required");
            }
            let id = make_vm(&mut st, &f("srvrname"), rid, loc, &f("template"));
            ok(json!({"serviceid": id, "message": "Instance is being created"}))
        }
        "get_instances" => {
            let all: Vec<Value> = st.vms.values().map(|v| view(v, never_ip)).collect();
            ok(Value::Array(all))
        }
        "get_instance_ids" => ok(json!(st.vms.keys().collect::<Vec<_>>())),
        _ => {
            let Some(vm) = id.and_then(|i| st.vms.get_mut(&i)) else {
                return error(&action, "Instance not found");
            };
            if vm.status == "terminated" && action != "get_instance" {
                return error(&action, "Instance not found");
            }
            match action.as_str() {
                "get_instance" => {
                    if vm.polls_left > 0 {
                        vm.polls_left -= 1;
                        if vm.polls_left == 0 {
                            vm.vm_state = "active".into();
                        }
                    }
                    ok(view(vm, never_ip))
                }
                "terminate" => {
                    vm.status = "terminated".into();
                    ok(json!({"message": "terminated"}))
                }
                "boot" => {
                    vm.vm_state = "active".into();
                    ok(json!({"message": "booting"}))
                }
                "shutdown" => {
                    vm.vm_state = "stopped".into();
                    ok(json!({"message": "shutting down"}))
                }
                "set_rdns" => {
                    if f("ip") != vm.main_ip {
                        return error(&action, "IP does not belong to this instance");
                    }
                    vm.rdns = Some(f("rdns")).filter(|s| !s.is_empty());
                    ok(json!({"message": "rDNS updated"}))
                }
                "set_instance_firewall" => {
                    vm.firewall = Some(f("name"));
                    ok(json!({"message": "firewall set"}))
                }
                "upgrade_instance" => {
                    if vm.upgrade.is_some() {
                        return error(
                            &action,
                            "an upgrade order is already open for this instance",
                        );
                    }
                    let Ok(rid) = f("rid").parse::<u64>() else {
                        return error(&action, "rid is required");
                    };
                    vm.upgrade = Some((rid, false));
                    ok(json!({"invoiceid": 55}))
                }
                "upgrade_server" => match vm.upgrade {
                    Some((rid, false)) => {
                        vm.upgrade = Some((rid, true));
                        ok(json!({"message": "upgrading"}))
                    }
                    _ => error(&action, "no upgrade order to apply"),
                },
                "confirm_upgrade" => match vm.upgrade.take() {
                    Some((rid, true)) => {
                        vm.rid = rid;
                        ok(json!({"message": "confirmed"}))
                    }
                    other => {
                        vm.upgrade = other;
                        error(&action, "no applied upgrade to confirm")
                    }
                },
                "revert_upgrade" => {
                    vm.upgrade = None;
                    ok(json!({"message": "reverted"}))
                }
                _ => error(&action, "Unknown action"),
            }
        }
    };
    resp
}
