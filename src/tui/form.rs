//! The provision form: tenant, region and plan chosen from the config; label, domain and
//! prerequisites typed. Every field is checked as it changes and nothing is submitted until
//! all are valid.

use crate::config::Config;
use crate::domain::hostname::{effective_hostname, holds_hostname};
use crate::domain::ids::{short, valid_prefix};
use crate::domain::validate::{validate_domain, validate_label};
use crate::engine::commands::CreateRequest;
use crate::store::ConsoleRequest;
use std::collections::HashMap;
use tui_input::Input;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Choice,
    Text,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldKind,
    pub choices: Vec<String>,
    pub choice: usize,
    pub input: Input,
    pub error: Option<String>,
}

impl Field {
    fn choice(name: &'static str, choices: Vec<String>) -> Field {
        Field {
            name,
            kind: FieldKind::Choice,
            choices,
            choice: 0,
            input: Input::default(),
            error: None,
        }
    }

    fn text(name: &'static str) -> Field {
        Field {
            name,
            kind: FieldKind::Text,
            choices: vec![],
            choice: 0,
            input: Input::default(),
            error: None,
        }
    }

    pub fn value(&self) -> String {
        match self.kind {
            FieldKind::Choice => self.choices.get(self.choice).cloned().unwrap_or_default(),
            FieldKind::Text => self.input.value().trim().to_string(),
        }
    }
}

/// What a form is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A new request (the provision form).
    Create,
    /// The access details of a request awaiting them: its id and label.
    Provide { id: String, label: String },
}

#[derive(Debug, Clone)]
pub struct Form {
    pub purpose: Purpose,
    pub fields: Vec<Field>,
    pub focus: usize,
    /// Set when submit was tried with an invalid field.
    pub tried: bool,
    /// Hostnames held by live requests, from the console's latest snapshot, each with who
    /// holds it ("7f3a1b2c (acme)"): the label is checked against them as it is typed,
    /// without asking the database. Admission checks again, and has the last word.
    pub held: HashMap<String, String>,
}

/// The hostnames the requests of a snapshot hold, for [`Form::held`].
pub fn held_hostnames(requests: &[ConsoleRequest]) -> HashMap<String, String> {
    requests
        .iter()
        .filter(|r| !r.steps.resize && holds_hostname(r.state()))
        .map(|r| {
            (
                effective_hostname(&r.label, r.domain.as_deref()),
                format!("{} ({})", short(&r.id.to_string()), r.tenant),
            )
        })
        .collect()
}

/// Keeps [`Form::held`] as request `r` changed: its hostname is held while its state
/// holds one, and let go when it no longer does.
pub fn update_held(held: &mut HashMap<String, String>, r: &ConsoleRequest) {
    // A resize holds no hostname (its node's request does).
    if r.steps.resize {
        return;
    }
    let host = effective_hostname(&r.label, r.domain.as_deref());
    let who = format!("{} ({})", short(&r.id.to_string()), r.tenant);
    if holds_hostname(r.state()) {
        held.insert(host, who);
    } else if held.get(&host) == Some(&who) {
        held.remove(&host);
    }
}

pub const TENANT: usize = 0;
pub const REGION: usize = 1;
pub const PLAN: usize = 2;
pub const LABEL: usize = 3;
pub const DOMAIN: usize = 4;
pub const DEPENDS: usize = 5;

impl Form {
    pub fn new(cfg: &Config, held: HashMap<String, String>) -> Form {
        let mut f = Form {
            purpose: Purpose::Create,
            fields: vec![
                Field::choice(
                    "tenant",
                    cfg.tenants.iter().map(|t| t.name.clone()).collect(),
                ),
                Field::choice(
                    "region",
                    cfg.regions().into_iter().map(str::to_string).collect(),
                ),
                Field::choice(
                    "plan",
                    cfg.plans
                        .iter()
                        .map(|p| {
                            format!("{} ({}c {}G {}G)", p.name, p.cpu, p.memory_gb, p.storage_gb)
                        })
                        .collect(),
                ),
                Field::text("label"),
                Field::text("domain"),
                Field::text("depends-on"),
            ],
            focus: LABEL,
            tried: false,
            held,
        };
        f.validate();
        f
    }

    /// The access-details form of request `id` (a manual provider's server): its IPv4
    /// address and SSH port (22 to start with).
    pub fn provide(id: &str, label: &str) -> Form {
        let mut port = Field::text("ssh-port");
        port.input = Input::new("22".into());
        let mut f = Form {
            purpose: Purpose::Provide {
                id: id.to_string(),
                label: label.to_string(),
            },
            fields: vec![Field::text("ip"), port],
            focus: 0,
            tried: false,
            held: HashMap::new(),
        };
        f.validate();
        f
    }

    /// A title for the form's box.
    pub fn title(&self) -> String {
        match &self.purpose {
            Purpose::Create => {
                " Provision a node (tab moves, ←/→ choose, enter submits, esc abandons) ".into()
            }
            Purpose::Provide { label, .. } => format!(
                " Access details of {} (tab moves, enter submits, esc abandons) ",
                crate::domain::validate::sanitize(label)
            ),
        }
    }

    /// What submitting sends, if every field is valid.
    pub fn submit(&mut self) -> Option<crate::engine::Command> {
        match self.purpose.clone() {
            Purpose::Create => self.request().map(crate::engine::Command::Create),
            Purpose::Provide { id, .. } => {
                if !self.checked() {
                    return None;
                }
                Some(crate::engine::Command::Provide {
                    id,
                    ip: self.fields[0].value().parse().ok()?,
                    ssh_port: self.fields[1].value().parse().ok()?,
                })
            }
        }
    }

    /// The access details' checks: an IPv4 host address, a port from 1 to 65535.
    fn validate_provide(&mut self) -> bool {
        let ip = self.fields[0].value();
        self.fields[0].error = match ip.parse::<std::net::Ipv4Addr>() {
            _ if ip.is_empty() => Some("required".into()),
            Ok(addr) => crate::store::unusable_ip(addr).map(|why| format!("{addr} {why}")),
            Err(_) => Some("not an IPv4 address".into()),
        };
        let port = self.fields[1].value();
        self.fields[1].error = match port.parse::<u16>() {
            Ok(p) if p > 0 => None,
            _ => Some("a port from 1 to 65535".into()),
        };
        self.fields.iter().all(|f| f.error.is_none())
    }

    pub fn focused(&mut self) -> &mut Field {
        let i = self.focus.min(self.fields.len() - 1);
        &mut self.fields[i]
    }

    pub fn next(&mut self) {
        self.focus = (self.focus + 1) % self.fields.len();
    }

    pub fn prev(&mut self) {
        self.focus = (self.focus + self.fields.len() - 1) % self.fields.len();
    }

    /// Cycles a choice field.
    pub fn cycle(&mut self, forward: bool) {
        let f = self.focused();
        if f.kind == FieldKind::Choice && !f.choices.is_empty() {
            let n = f.choices.len();
            f.choice = if forward {
                (f.choice + 1) % n
            } else {
                (f.choice + n - 1) % n
            };
        }
    }

    /// Checks every field; true when all are valid.
    pub fn validate(&mut self) -> bool {
        if matches!(self.purpose, Purpose::Provide { .. }) {
            return self.validate_provide();
        }
        let label = self.fields[LABEL].value();
        self.fields[LABEL].error = if label.is_empty() {
            Some("required".into())
        } else {
            validate_label("label", &label).err().map(|e| e.to_string())
        };
        let domain = self.fields[DOMAIN].value();
        self.fields[DOMAIN].error = if domain.is_empty() {
            None
        } else {
            validate_domain("domain", &domain)
                .err()
                .map(|e| e.to_string())
        };
        if self.fields[LABEL].error.is_none() && self.fields[DOMAIN].error.is_none() {
            let host = effective_hostname(&label, (!domain.is_empty()).then_some(&*domain));
            if let Some(holder) = self.held.get(&host) {
                self.fields[LABEL].error = Some(format!("hostname taken by {holder}"));
            }
        }
        let deps = self.fields[DEPENDS].value();
        self.fields[DEPENDS].error = deps
            .split([',', ' '])
            .filter(|d| !d.is_empty())
            .find(|d| !valid_prefix(&d.to_ascii_lowercase()))
            .map(|d| {
                format!(
                    "{:?} is not a request id",
                    crate::domain::validate::sanitize(d)
                )
            });
        for i in [TENANT, REGION, PLAN] {
            self.fields[i].error = if self.fields[i].choices.is_empty() {
                Some("nothing configured".into())
            } else {
                None
            };
        }
        self.fields.iter().all(|f| f.error.is_none())
    }

    /// Validates for a submit: when a field is wrong, its error shows from now on and the
    /// focus goes to it.
    fn checked(&mut self) -> bool {
        if self.validate() {
            return true;
        }
        self.tried = true;
        self.focus = self
            .fields
            .iter()
            .position(|f| f.error.is_some())
            .unwrap_or(self.focus);
        false
    }

    /// The request to create, if every field is valid.
    pub fn request(&mut self) -> Option<CreateRequest> {
        if !self.checked() {
            return None;
        }
        let plan = self.fields[PLAN].value();
        let domain = self.fields[DOMAIN].value();
        Some(CreateRequest {
            tenant: self.fields[TENANT].value(),
            region: self.fields[REGION].value(),
            plan: plan.split(' ').next().unwrap_or_default().to_string(),
            label: self.fields[LABEL].value(),
            domain: (!domain.is_empty()).then_some(domain),
            depends_on: self.fields[DEPENDS]
                .value()
                .split([',', ' '])
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}
