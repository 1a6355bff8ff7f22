//! The Triage view: one screen that answers "what is broken, and why" at 3 a.m. Its rows
//! are open alerts (the worst first, then the longest open; silenced ones last), failed
//! and stalled requests, nodes out of rotation (unhealthy, paused) with the reason, and
//! open circuit breakers; below them, the last hour's events. Enter jumps to the row's
//! subject (its node's detail, its request's), and Esc comes back; `A` acknowledges an
//! alert and `S` silences one for a while, each with who and why, recorded by the engine.
//!
//! Rows are made when data arrives, never while drawing. Which nodes and requests belong
//! here is kept as rows change (a set of indices each), so a delta at 100,000 nodes costs
//! the rows it carries, not a walk of the fleet.

use super::action::View;
use super::app::{App, Effect, Mode};
use super::table::severity_rank;
use crate::clock::{age, parse_ts};
use crate::domain::ids::short;
use crate::domain::validate::sanitize;
use crate::engine::Command;
use crate::store::{AlertRow, ConsoleNode, ConsoleRequest, EventRow};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use tui_input::Input;

/// What a triage row is about, and so where Enter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Alert { id: String, node_id: Option<String> },
    Request(uuid::Uuid),
    Node(uuid::Uuid),
    Breaker(String),
}

/// One row of the Triage view, its cells made (and sanitized) when it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageRow {
    pub subject: Subject,
    /// "HIGH alert", "failed", "stalled", "unhealthy", "paused", "breaker open".
    pub what: String,
    /// The severity the WHAT column is coloured by: high, medium, low, or none.
    pub severity: &'static str,
    /// The node's label, the request's short id and label, the provider.
    pub name: String,
    /// How long it has been so, or "-".
    pub since: Option<DateTime<Utc>>,
    /// open, "acked by alice", "silenced 2h by bob": who has it.
    pub state: String,
    pub why: String,
    /// What the selection is kept by.
    pub key: String,
}

/// The node statuses that put a node on the triage screen.
fn node_needs_triage(n: &ConsoleNode) -> bool {
    matches!(&*n.status, "unhealthy" | "paused")
}

/// The requests that do: failed (its resources may still be held until it is rolled
/// back), or stalled (the engine set it aside: `needs_attention`).
fn request_needs_triage(r: &ConsoleRequest) -> bool {
    &*r.state == "failed" || r.needs_attention
}

/// The input the `A` and `S` prompts read: a note, or "DURATION REASON".
#[derive(Debug, Clone)]
pub struct AlertPrompt {
    pub input: Input,
    pub alert_id: String,
    /// Silencing (else acknowledging).
    pub silence: bool,
    /// The alert, as the prompt's title shows it.
    pub what: String,
}

/// The Triage view's own state beside its table.
#[derive(Debug, Clone, Default)]
pub struct TriageState {
    pub rows: Vec<TriageRow>,
    /// Indices into `snap.nodes` / `snap.requests` of the rows that belong here.
    nodes: BTreeSet<usize>,
    requests: BTreeSet<usize>,
    /// The last hour's events, newest first, as last loaded.
    pub recent: Vec<EventRow>,
    /// The view a jump came from: Esc goes back there.
    pub back_to: Option<View>,
}

impl TriageState {
    /// The node at index `i` of the snapshot, as it now is.
    pub fn note_node(&mut self, i: usize, n: &ConsoleNode) {
        if node_needs_triage(n) {
            self.nodes.insert(i);
        } else {
            self.nodes.remove(&i);
        }
    }

    pub fn note_request(&mut self, i: usize, r: &ConsoleRequest) {
        if request_needs_triage(r) {
            self.requests.insert(i);
        } else {
            self.requests.remove(&i);
        }
    }

    /// What a job made from a whole snapshot: its rows and sets (the last hour and the
    /// way back stay).
    pub fn take_index(&mut self, from: &mut TriageState) {
        self.rows = std::mem::take(&mut from.rows);
        self.nodes = std::mem::take(&mut from.nodes);
        self.requests = std::mem::take(&mut from.requests);
    }

    /// Every node and request afresh (a whole snapshot).
    pub fn index_all(&mut self, nodes: &[ConsoleNode], requests: &[ConsoleRequest]) {
        self.nodes = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| node_needs_triage(n))
            .map(|(i, _)| i)
            .collect();
        self.requests = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| request_needs_triage(r))
            .map(|(i, _)| i)
            .collect();
    }
}

fn clean(s: &str) -> String {
    sanitize(s).into_owned()
}

/// "acked by alice", "silenced 2h by bob: deploying the fix", or "open".
fn alert_state(a: &AlertRow, state: &str, now: DateTime<Utc>) -> String {
    match state {
        "silenced" => {
            let left = a
                .silenced_until
                .as_deref()
                .and_then(parse_ts)
                .map(|until| age(until, now))
                .unwrap_or_default();
            format!(
                "silenced {left} by {}",
                clean(a.silenced_by.as_deref().unwrap_or("?"))
            )
        }
        "acked" => format!("acked by {}", clean(a.acked_by.as_deref().unwrap_or("?"))),
        other => other.to_string(),
    }
}

/// The row of alert `a`; `now_ts` is the console's time as stored times are written.
fn alert_row(app: &App, a: &AlertRow, now_ts: &str) -> TriageRow {
    let now = app.now;
    let name = a
        .node_label
        .as_deref()
        .map(clean)
        .unwrap_or_else(|| clean(&a.subject));
    let mut why = format!("{}: {}", clean(&a.kind), clean(&a.message));
    let state = a.state_at(now_ts);
    let note = match state {
        "silenced" => a.silence_reason.as_deref(),
        "acked" => a.ack_note.as_deref(),
        _ => None,
    };
    if let Some(note) = note.filter(|n| !n.trim().is_empty()) {
        why.push_str(&format!(" [{}]", clean(note)));
    }
    TriageRow {
        subject: Subject::Alert {
            id: a.id.clone(),
            node_id: a.node_id.clone(),
        },
        what: format!("{} alert", a.severity.to_uppercase()),
        severity: match a.severity.as_str() {
            "high" => "high",
            "medium" => "medium",
            _ => "low",
        },
        name,
        since: parse_ts(&a.raised_at),
        state: alert_state(a, state, now),
        why,
        key: format!("alert:{}", a.id),
    }
}

/// What the `A`/`S` prompt's input asks for, or what is wrong with it.
fn alert_command(p: &AlertPrompt) -> Result<Command, String> {
    let text = p.input.value().trim();
    if !p.silence {
        let note = (!text.is_empty()).then(|| text.to_string());
        if let Some(n) = &note {
            crate::domain::validate::validate_reason("note", n).map_err(|e| e.to_string())?;
        }
        return Ok(Command::AckAlert {
            id: p.alert_id.clone(),
            note,
        });
    }
    let (dur, reason) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let duration = crate::config::parse_duration(dur)
        .map_err(|e| format!("for: {e} (type e.g. \"2h deploying the fix\")"))?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err("reason: say why after the duration (\"2h deploying the fix\")".into());
    }
    crate::domain::validate::validate_reason("reason", reason).map_err(|e| e.to_string())?;
    if duration > crate::engine::commands::MAX_SILENCE {
        return Err("for: a silence lasts at most 7d".into());
    }
    Ok(Command::SilenceAlert {
        id: p.alert_id.clone(),
        duration,
        reason: reason.to_string(),
    })
}

impl App {
    /// The triage rows again, from the snapshot and the kept sets.
    pub(super) fn rebuild_triage(&mut self) {
        let now_ts = crate::clock::ts(self.now);
        let s = &self.snap;
        let mut alerts: Vec<&AlertRow> = s
            .alerts
            .iter()
            .filter(|a| a.resolved_at.is_none())
            .collect();
        alerts.sort_by_key(|a| {
            let state = a.state_at(&now_ts);
            (
                state == "silenced",
                severity_rank(Some(&a.severity)),
                state == "acked",
                a.raised_at.as_str(),
            )
        });
        let mut rows: Vec<TriageRow> = alerts.iter().map(|a| alert_row(self, a, &now_ts)).collect();
        let mut requests: Vec<&ConsoleRequest> = self
            .triage
            .requests
            .iter()
            .filter_map(|i| s.requests.get(*i))
            .filter(|r| request_needs_triage(r))
            .collect();
        // Failed before stalled, the oldest first.
        requests.sort_by_key(|r| (&*r.state != "failed", r.created_at));
        for r in requests {
            let failed = &*r.state == "failed";
            let why = if failed {
                r.error.as_deref().unwrap_or("failed")
            } else {
                r.wait_reason.as_deref().unwrap_or("stalled")
            };
            rows.push(TriageRow {
                subject: Subject::Request(r.id),
                what: if failed { "failed" } else { "stalled" }.to_string(),
                severity: if failed { "high" } else { "medium" },
                name: format!("{} {}", short(&r.id.to_string()), clean(&r.label)),
                since: DateTime::from_timestamp_millis(r.created_at),
                state: clean(&r.state),
                why: clean(why),
                key: format!("request:{}", r.id),
            });
        }
        let mut nodes: Vec<&ConsoleNode> = self
            .triage
            .nodes
            .iter()
            .filter_map(|i| s.nodes.get(*i))
            .filter(|n| node_needs_triage(n))
            .collect();
        // Unhealthy (it stopped answering) before paused, then by label.
        nodes.sort_by(|a, b| {
            (&*a.status != "unhealthy", &a.label).cmp(&(&*b.status != "unhealthy", &b.label))
        });
        for n in nodes {
            let unhealthy = &*n.status == "unhealthy";
            rows.push(TriageRow {
                subject: Subject::Node(n.id),
                what: n.status.to_string(),
                severity: if unhealthy { "high" } else { "medium" },
                name: clean(&n.label),
                since: if unhealthy {
                    n.last_heartbeat
                        .and_then(|t| DateTime::from_timestamp(t, 0))
                } else {
                    None
                },
                state: n.ip_address.map(|ip| ip.to_string()).unwrap_or_default(),
                why: n
                    .status_reason
                    .as_deref()
                    .map(clean)
                    .unwrap_or_else(|| "no reason recorded".into()),
                key: format!("node:{}", n.id),
            });
        }
        for b in s.circuits.iter().filter(|b| b.open) {
            rows.push(TriageRow {
                subject: Subject::Breaker(b.provider.clone()),
                what: "breaker open".into(),
                severity: "high",
                name: clean(&b.provider),
                since: b.opened_at.as_deref().and_then(parse_ts),
                state: b
                    .retry_at
                    .as_deref()
                    .and_then(parse_ts)
                    .map(|t| format!("retry in {}", age(t, self.now)))
                    .unwrap_or_default(),
                why: format!(
                    "{} failures: {}",
                    b.failures,
                    clean(b.last_error.as_deref().unwrap_or("-"))
                ),
                key: format!("breaker:{}", b.provider),
            });
        }
        self.triage.rows = rows;
    }

    /// The last hour's events arrived.
    pub fn set_recent(&mut self, rows: Vec<EventRow>) {
        self.triage.recent = rows;
    }

    /// The alert the selected row is, in the Triage and Alerts views.
    fn selected_alert(&self) -> Option<&AlertRow> {
        let t = self.table();
        let i = *t.visible.get(t.selected)?;
        match self.view {
            View::Alerts => self.snap.alerts.get(i),
            View::Triage => match &self.triage.rows.get(i)?.subject {
                Subject::Alert { id, .. } => self.snap.alerts.iter().find(|a| &a.id == id),
                _ => None,
            },
            _ => None,
        }
    }

    /// `A` and `S`: the prompt for the selected alert's note, or its silence.
    pub(super) fn ask_alert(&mut self, silence: bool) -> Vec<Effect> {
        let verb = if silence { "silence" } else { "acknowledge" };
        if !matches!(self.view, View::Triage | View::Alerts) {
            self.say(
                format!("{verb}: select an alert in the Triage or Alerts view"),
                true,
            );
            return vec![];
        }
        let Some(a) = self.selected_alert() else {
            self.say(format!("{verb}: the selected row is not an alert"), true);
            return vec![];
        };
        if a.resolved_at.is_some() {
            self.say(format!("{verb}: this alert is resolved"), true);
            return vec![];
        }
        let what = format!(
            "{} {}: {}",
            a.severity.to_uppercase(),
            short(&a.id),
            clean(&a.message)
        );
        self.mode = Mode::Alert(AlertPrompt {
            input: Input::default(),
            alert_id: a.id.clone(),
            silence,
            what,
        });
        vec![]
    }

    /// Enter in the `A`/`S` prompt: the command, or a status line saying what is wrong
    /// with the input (the prompt stays open, with what was typed, to fix it).
    pub fn submit_alert(&mut self) -> Vec<Effect> {
        let Mode::Alert(p) = &self.mode else {
            return vec![];
        };
        match alert_command(p) {
            Ok(c) => {
                self.mode = Mode::Normal;
                vec![Effect::Send(vec![c])]
            }
            Err(e) => {
                self.say(e, true);
                vec![]
            }
        }
    }

    /// Enter on a triage row: go to its subject. A node (or an alert about one) opens in
    /// the Fleet view with its detail; a request in the Requests view with its detail; an
    /// alert about no node in the Alerts view; a breaker in the Pipeline view. Esc with
    /// nothing left to close comes back here.
    pub(super) fn jump_from_triage(&mut self) -> Vec<Effect> {
        let t = self.table();
        let Some(row) = t
            .visible
            .get(t.selected)
            .and_then(|i| self.triage.rows.get(*i))
        else {
            return vec![];
        };
        let subject = row.subject.clone();
        let out = match subject {
            Subject::Node(id) => self.go_to_node(&id.to_string()),
            Subject::Alert {
                node_id: Some(node),
                ..
            } if self.node_by_id(&node).is_some() => self.go_to_node(&node),
            Subject::Alert { id, .. } => {
                let found = self.snap.alerts.iter().position(|a| a.id == id);
                let out = self.show(View::Alerts);
                if let Some(i) = found {
                    self.select_row(View::Alerts, i);
                }
                out
            }
            Subject::Request(id) => {
                let out = self.show(View::Requests);
                if let Some(i) = self.request_index(id) {
                    self.select_row(View::Requests, i);
                }
                let mut out = out;
                out.extend(self.open_request());
                out
            }
            Subject::Breaker(_) => self.show(View::Pipeline),
        };
        self.triage.back_to = Some(View::Triage);
        out
    }

    /// The Fleet view with node `id` selected and its detail open.
    fn go_to_node(&mut self, id: &str) -> Vec<Effect> {
        let mut out = self.show(View::Fleet);
        if let Some(i) = id.parse().ok().and_then(|u| self.node_index(u)) {
            self.select_row(View::Fleet, i);
        }
        out.extend(self.open_node());
        out
    }

    /// Selects row `i` of view `v`, clearing the view's filter if it hides the row.
    fn select_row(&mut self, v: View, i: usize) {
        let k = v.index();
        if self.tables[k].position(i).is_none() && !self.tables[k].filter.is_empty() {
            self.tables[k].filter.clear();
            self.refresh(v);
        }
        if let Some(p) = self.tables[k].position(i) {
            self.tables[k].selected = p;
        }
    }
}
