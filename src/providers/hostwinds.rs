//! Hostwinds' cloud API: one form-POST endpoint, `action=NAME` and `API=KEY`. Errors come
//! with HTTP 200 as `{"result":"error",...}` (or an array of them), so every answer's
//! `result` is checked. Creation is asynchronous: `add_instance` returns at once and the
//! instance is polled with `get_instance` until it has a `main_ip` and a settled state.
//! The request id goes into `srvrname`, so a retried create finds the instance the first
//! call made instead of buying a second one.

use super::{
    ErrorKind, Instance, InstanceSpec, InstanceStatus, Provider, ProviderError, ProviderResult,
};
use crate::config::HostwindsConfig;
use async_trait::async_trait;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

pub const NAME: &str = "hostwinds";

pub struct Hostwinds {
    cfg: HostwindsConfig,
    key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Hostwinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Hostwinds")
            .field("endpoint", &self.cfg.endpoint)
            .finish()
    }
}

fn err(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(NAME, kind, message)
}

impl Hostwinds {
    pub fn new(cfg: HostwindsConfig, key: String, timeout: Duration) -> Result<Self, String> {
        crate::untrusted::remember_secret(&key);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("mailfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("providers.hostwinds: cannot build the HTTP client: {e}"))?;
        Ok(Self { cfg, key, http })
    }

    /// One API call. The answer's `success` payload when it has one, else the answer.
    async fn call(&self, action: &str, params: &[(&str, String)]) -> ProviderResult<Value> {
        let mut form: Vec<(&str, &str)> = vec![("action", action), ("API", self.key.as_str())];
        form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        let resp = self
            .http
            .post(&self.cfg.endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                // reqwest's text names the URL, never the form; still, nothing unredacted.
                let what = if e.is_timeout() {
                    "no answer in time".to_string()
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    "the request failed".to_string()
                };
                err(
                    ErrorKind::Transient,
                    crate::untrusted::untrusted_text(&format!("{action}: {what}: {e}")),
                )
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| {
            err(
                ErrorKind::Transient,
                crate::untrusted::untrusted_text(&format!("{action}: reading the answer: {e}")),
            )
        })?;
        let said = crate::untrusted::untrusted_text(&body);
        if status.as_u16() == 401 || status.as_u16() == 403 || body.contains("Not Authorized") {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "{action}: not authorized (HTTP {}): check the key in {} and that this host's IPv4 is allow-listed for it",
                    status.as_u16(),
                    self.cfg.api_key_env
                ),
            ));
        }
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(err(
                ErrorKind::Transient,
                format!("{action}: HTTP {}: {said}", status.as_u16()),
            ));
        }
        if !status.is_success() {
            return Err(err(
                ErrorKind::Invalid,
                format!("{action}: HTTP {}: {said}", status.as_u16()),
            ));
        }
        let v: Value = serde_json::from_str(&body).map_err(|_| {
            err(
                ErrorKind::Transient,
                format!("{action}: the answer is not JSON: {said}"),
            )
        })?;
        if let Some(e) = error_in(&v) {
            return Err(classify(action, &e));
        }
        Ok(match v {
            Value::Object(mut m) if m.contains_key("success") => {
                m.remove("success").unwrap_or(Value::Null)
            }
            other => other,
        })
    }

    fn location(&self, region: &str) -> ProviderResult<u32> {
        self.cfg.locations.get(region).copied().ok_or_else(|| {
            err(
                ErrorKind::Invalid,
                format!("region {region:?} has no Hostwinds location_id"),
            )
        })
    }

    fn rid(&self, plan: &str) -> ProviderResult<u32> {
        self.cfg.plans.get(plan).copied().ok_or_else(|| {
            err(
                ErrorKind::Invalid,
                format!("plan {plan:?} has no Hostwinds rid"),
            )
        })
    }

    fn region_of(&self, location: Option<u64>) -> String {
        location
            .and_then(|l| {
                self.cfg
                    .locations
                    .iter()
                    .find(|(_, id)| u64::from(**id) == l)
                    .map(|(r, _)| r.clone())
            })
            .or_else(|| location.map(|l| format!("location {l}")))
            .unwrap_or_default()
    }

    /// An instance object as mailfleet sees it; an instance in `error` is an error.
    fn instance(&self, v: &Value) -> ProviderResult<Instance> {
        let id = text(v, "serviceid")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                err(
                    ErrorKind::Transient,
                    "the instance in the answer has no serviceid",
                )
            })?;
        let field = |k: &str| text(v, k).unwrap_or_default().to_ascii_lowercase();
        let (status, vm, task, power) = (
            field("status"),
            field("vm_state"),
            field("task_state"),
            field("power_state"),
        );
        let ip: Option<Ipv4Addr> = text(v, "main_ip").and_then(|s| s.trim().parse().ok());
        if vm == "error" || status == "error" {
            return Err(err(
                ErrorKind::Invalid,
                format!("instance {id} is in an error state at Hostwinds"),
            ));
        }
        let deleted = matches!(status.as_str(), "terminated" | "cancelled" | "deleted")
            || matches!(vm.as_str(), "deleted" | "soft_deleted");
        let busy = !matches!(task.as_str(), "" | "none" | "null");
        let state = if deleted {
            InstanceStatus::Deleted
        } else if busy || vm == "building" || status == "pending" || ip.is_none() {
            InstanceStatus::Building
        } else if matches!(vm.as_str(), "stopped" | "shutoff" | "suspended" | "paused")
            || matches!(power.as_str(), "shutdown" | "stopped" | "off")
        {
            InstanceStatus::Stopped
        } else {
            InstanceStatus::Running
        };
        let label = text(v, "hostname")
            .or_else(|| text(v, "srvrname"))
            .unwrap_or_default();
        Ok(Instance {
            idempotency_key: text(v, "srvrname").filter(|s| !s.is_empty()),
            label: crate::untrusted::untrusted_text(&label),
            region: self.region_of(v.get("location_id").and_then(number)),
            status: state,
            ip: if state == InstanceStatus::Building {
                None
            } else {
                ip
            },
            firewall: text(v, "firewall").filter(|s| !s.is_empty()),
            rdns: text(v, "rdns").filter(|s| !s.is_empty()),
            id,
        })
    }

    /// Every instance of the account (deleted ones too, when Hostwinds still lists them).
    async fn all(&self) -> ProviderResult<Vec<Instance>> {
        let v = self.call("get_instances", &[]).await?;
        let items: Vec<&Value> = match &v {
            Value::Array(a) => a.iter().collect(),
            Value::Object(m) => m.values().filter(|x| x.is_object()).collect(),
            _ => Vec::new(),
        };
        items.into_iter().map(|i| self.instance(i)).collect()
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        let v = self
            .call("get_instance", &[("serviceid", id.to_string())])
            .await?;
        self.instance(&v)
    }

    async fn simple(&self, action: &str, id: &str, extra: &[(&str, String)]) -> ProviderResult<()> {
        let mut params = vec![("serviceid", id.to_string())];
        params.extend(extra.iter().cloned());
        self.call(action, &params).await.map(|_| ())
    }
}

/// The error an answer carries: `{"result":"error",...}`, alone or in an array.
fn error_in(v: &Value) -> Option<String> {
    let one = |o: &Value| -> Option<String> {
        if o.get("result").and_then(Value::as_str) != Some("error") {
            return None;
        }
        let msg = ["message", "ERROR", "error"]
            .iter()
            .filter_map(|k| o.get(*k).and_then(Value::as_str))
            .find(|s| !s.trim().is_empty())
            .unwrap_or("no message");
        Some(crate::untrusted::untrusted_text(msg))
    };
    match v {
        Value::Array(a) => a.iter().find_map(one),
        o => one(o),
    }
}

fn classify(action: &str, message: &str) -> ProviderError {
    let m = message.to_ascii_lowercase();
    let kind = if m.contains("not found")
        || m.contains("does not exist")
        || m.contains("invalid serviceid")
    {
        ErrorKind::NotFound
    } else if [
        "try again",
        "temporar",
        "busy",
        "in progress",
        "timed out",
        "timeout",
        "rate limit",
    ]
    .iter()
    .any(|w| m.contains(w))
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Invalid
    };
    err(kind, format!("{action}: {message}"))
}

/// Hostwinds refuses to confirm or revert when no upgrade order is open ("no applied
/// upgrade to confirm"): for a retried confirm or revert, that is the work already done.
fn nothing_pending(e: &ProviderError) -> bool {
    let m = e.message.to_ascii_lowercase();
    e.kind == ErrorKind::Invalid
        && m.contains("upgrade")
        && (m.contains(": no ") || m.contains("no pending"))
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A field as text, whether Hostwinds sent it as a string or a number.
fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The service ids an `add_instance` answer names, wherever it puts them.
fn service_ids(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Array(a) => a.iter().for_each(|x| out.extend(service_ids(x))),
        Value::Object(m) => {
            for k in ["serviceid", "serviceids", "id"] {
                match m.get(k) {
                    Some(Value::Array(a)) => out.extend(a.iter().filter_map(text_of)),
                    Some(x) => out.extend(text_of(x)),
                    None => {}
                }
            }
        }
        x => out.extend(text_of(x)),
    }
    out
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Provider for Hostwinds {
    fn name(&self) -> &str {
        NAME
    }

    async fn create(&self, spec: &InstanceSpec) -> ProviderResult<Instance> {
        // A retried create (after a timeout, or a crash) finds what the first one bought.
        if let Some(inst) = self.find(&spec.idempotency_key).await? {
            if inst.status != InstanceStatus::Deleted {
                return Ok(inst);
            }
        }
        let mut params = vec![
            ("template", self.cfg.template.clone()),
            ("rid", self.rid(&spec.plan)?.to_string()),
            ("location_id", self.location(&spec.region)?.to_string()),
            ("srvrname", spec.idempotency_key.clone()),
            ("qty", "1".to_string()),
        ];
        // mailfleet's key for root: the bootstrap logs in with it.
        if let Some(key) = &spec.ssh_key {
            params.push(("keys", key.clone()));
        }
        let v = self.call("add_instance", &params).await?;
        if let Some(id) = service_ids(&v).into_iter().next() {
            return self.get(&id).await;
        }
        // No id in the answer: the listing knows it once Hostwinds has it.
        match self.find(&spec.idempotency_key).await? {
            Some(inst) if inst.status != InstanceStatus::Deleted => Ok(inst),
            _ => Err(err(
                ErrorKind::Transient,
                "add_instance: accepted, but the instance is not listed yet",
            )),
        }
    }

    async fn find(&self, key: &str) -> ProviderResult<Option<Instance>> {
        let mut found: Vec<Instance> = self
            .all()
            .await?
            .into_iter()
            .filter(|i| i.idempotency_key.as_deref() == Some(key))
            .collect();
        // A live one first, if Hostwinds still lists a terminated one too.
        found.sort_by_key(|i| i.status == InstanceStatus::Deleted);
        Ok(found.into_iter().next())
    }

    async fn status(&self, id: &str) -> ProviderResult<Instance> {
        self.get(id).await
    }

    async fn delete(&self, id: &str) -> ProviderResult<()> {
        match self.simple("terminate", id, &[]).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn suspend(&self, id: &str) -> ProviderResult<()> {
        self.simple("shutdown", id, &[]).await
    }

    async fn resume(&self, id: &str) -> ProviderResult<()> {
        self.simple("boot", id, &[]).await
    }

    /// `upgrade_instance` (the order) → `upgrade_server`; `confirm_upgrade` comes with
    /// [`Provider::confirm_resize`]. An upgrade that fails after the order is reverted
    /// (`revert_upgrade`), so that a retry can order again.
    async fn resize(
        &self,
        id: &str,
        plan: &str,
        _cpu: i64,
        _memory_gb: i64,
        _storage_gb: i64,
    ) -> ProviderResult<()> {
        let rid = self.rid(plan)?;
        self.simple("upgrade_instance", id, &[("rid", rid.to_string())])
            .await?;
        if let Err(e) = self.simple("upgrade_server", id, &[]).await {
            if let Err(r) = self.simple("revert_upgrade", id, &[]).await {
                return Err(err(
                    r.kind,
                    format!(
                        "{}; reverting the upgrade also failed: {}",
                        e.message, r.message
                    ),
                ));
            }
            return Err(e);
        }
        Ok(())
    }

    async fn confirm_resize(&self, id: &str) -> ProviderResult<()> {
        match self.simple("confirm_upgrade", id, &[]).await {
            Err(e) if nothing_pending(&e) => Ok(()),
            other => other,
        }
    }

    async fn revert_resize(&self, id: &str) -> ProviderResult<()> {
        match self.simple("revert_upgrade", id, &[]).await {
            Err(e) if nothing_pending(&e) || e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn set_firewall(&self, id: &str, profile: &str) -> ProviderResult<()> {
        let name = if profile == crate::engine::SMTP_FIREWALL {
            self.cfg.smtp_firewall.clone()
        } else {
            profile.to_string()
        };
        self.simple("set_instance_firewall", id, &[("name", name)])
            .await
    }

    async fn set_rdns(&self, id: &str, ip: Ipv4Addr, name: Option<&str>) -> ProviderResult<()> {
        self.simple(
            "set_rdns",
            id,
            &[
                ("ip", ip.to_string()),
                ("rdns", name.unwrap_or("").to_string()),
            ],
        )
        .await
    }

    async fn inventory(&self) -> ProviderResult<Vec<Instance>> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .filter(|i| i.status != InstanceStatus::Deleted)
            .collect())
    }

    async fn ping(&self, cluster: &str) -> ProviderResult<String> {
        let n = self.inventory().await?.len();
        Ok(format!(
            "{n} live instances in the account (cluster {cluster})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client() -> Hostwinds {
        let cfg = HostwindsConfig {
            api_key_env: "HW_TEST_KEY".into(),
            endpoint: "http://127.0.0.1:9/".into(),
            template: "debian-12".into(),
            smtp_firewall: "SMTP".into(),
            locations: [("dallas".to_string(), 3)].into_iter().collect(),
            plans: [("ssd-1".to_string(), 101)].into_iter().collect(),
        };
        Hostwinds::new(cfg, "k".repeat(24), Duration::from_secs(1)).expect("client")
    }

    #[test]
    fn errors_are_found_alone_or_in_an_array() {
        let e = json!([{"result":"error","action":"get_instance","message":"Instance not found","ERROR":"x"}]);
        assert_eq!(error_in(&e).as_deref(), Some("Instance not found"));
        assert_eq!(
            classify("get_instance", "Instance not found").kind,
            ErrorKind::NotFound
        );
        let e = json!({"result":"error","ERROR":"another upgrade is in progress"});
        assert_eq!(
            classify("upgrade_instance", &error_in(&e).expect("error")).kind,
            ErrorKind::Transient
        );
        assert_eq!(
            classify("add_instance", "rid is required").kind,
            ErrorKind::Invalid
        );
        assert_eq!(error_in(&json!({"result":"success"})), None);
    }

    #[test]
    fn instance_states_map_to_what_the_pipeline_waits_for() {
        let c = client();
        let base = json!({"serviceid": 77, "srvrname": "req-1", "location_id": 3, "main_ip": "192.0.2.7",
                          "status": "active", "vm_state": "active", "task_state": null, "power_state": "running"});
        let i = c.instance(&base).expect("instance");
        assert_eq!(
            (i.id.as_str(), i.status, i.region.as_str()),
            ("77", InstanceStatus::Running, "dallas")
        );
        assert_eq!(i.ip, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(i.idempotency_key.as_deref(), Some("req-1"));
        let mut building = base.clone();
        building["task_state"] = json!("spawning");
        assert_eq!(
            c.instance(&building).expect("i").status,
            InstanceStatus::Building
        );
        assert_eq!(c.instance(&building).expect("i").ip, None);
        let mut no_ip = base.clone();
        no_ip["main_ip"] = json!("");
        assert_eq!(
            c.instance(&no_ip).expect("i").status,
            InstanceStatus::Building
        );
        let mut off = base.clone();
        off["vm_state"] = json!("stopped");
        assert_eq!(c.instance(&off).expect("i").status, InstanceStatus::Stopped);
        let mut gone = base.clone();
        gone["status"] = json!("terminated");
        assert_eq!(
            c.instance(&gone).expect("i").status,
            InstanceStatus::Deleted
        );
        let mut broken = base;
        broken["vm_state"] = json!("error");
        assert_eq!(
            c.instance(&broken).expect_err("error state").kind,
            ErrorKind::Invalid
        );
        assert!(
            c.instance(&json!({"main_ip": "192.0.2.1"})).is_err(),
            "no serviceid"
        );
    }

    #[test]
    fn service_ids_are_found_where_the_answer_puts_them() {
        assert_eq!(service_ids(&json!({"serviceid": 9})), ["9"]);
        assert_eq!(service_ids(&json!({"serviceids": ["4", 5]})), ["4", "5"]);
        assert_eq!(service_ids(&json!([{"serviceid": "12"}])), ["12"]);
        assert!(service_ids(&json!({"message": "queued"})).is_empty());
    }

    #[test]
    fn the_key_is_not_in_the_debug_text() {
        let c = client();
        assert!(!format!("{c:?}").contains(&"k".repeat(24)));
    }
}
