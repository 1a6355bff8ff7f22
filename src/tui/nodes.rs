//! The console's side of reputation: a node's listing timeline (the pane Enter opens in the
//! Blacklist and Alerts views), and checking, pausing and resuming the selected row's node
//! from the views that list nodes. Timelines are built from the snapshot when opened and
//! when new data arrives, never while drawing; nothing here writes: the engine does, when
//! it gets the commands asked for here. Pause and resume apply to the marked nodes (Fleet
//! and Warm-up views) or else the selected row's, after one confirmation listing them.

use super::action::View;
use super::app::{App, Confirm, Effect, Mode, Pending};
use super::table::severity_rank;
use crate::clock::{age, parse_ts};
use crate::domain::ids::short;
use crate::domain::node::NodeStatus;
use crate::domain::validate::sanitize;
use crate::engine::Command;
use crate::store::ListingRow;

/// One line of a node's timeline: a listing opened or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// When, as stored (RFC 3339, UTC): what the entries are ordered by.
    pub at: String,
    /// A listing opened (else one closed).
    pub listed: bool,
    pub severity: Option<String>,
    /// The whole line, sanitized, in local time: "2026-11-20 10:00 listed on
    /// zen.spamhaus.org (SBL, high) — reason" or "… delisted from zen.spamhaus.org after 3h".
    pub text: String,
}

/// Everything the console knows about one node's standing on the blocklists.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub node_id: String,
    pub label: String,
    pub ip: Option<String>,
    /// The node's status; `None` when the node is no longer in the fleet.
    pub status: Option<String>,
    /// Why it has that status (why it is paused), as the engine wrote it.
    pub status_reason: Option<String>,
    /// The zones it is listed on now, "zen.spamhaus.org (SBL, high) for 1h", each with
    /// the delist URL its reason gives, if any.
    pub listed_now: Vec<(String, Option<String>)>,
    /// Its open alerts, the worst first: (severity, "blocklist: … (raised 1h ago)").
    pub alerts: Vec<(String, String)>,
    /// Every listing of the node the snapshot holds, on every zone, oldest first.
    pub entries: Vec<TimelineEntry>,
    /// What was loaded from the store for it: heartbeats, transitions, certificate.
    pub more: Option<Box<crate::store::NodeDetail>>,
}

fn clean(s: &str) -> String {
    sanitize(s).into_owned()
}

/// A stored time as local time to the minute: "2026-11-20 10:00".
fn local_minute(ts: &str) -> String {
    parse_ts(ts)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| clean(ts))
}

/// "SBL, high": what a listing means and how bad it is, as far as either is known.
fn listing_what(l: &ListingRow) -> String {
    [
        l.meaning.as_deref().or(l.code.as_deref()),
        l.severity.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

fn listed_line(l: &ListingRow) -> String {
    let mut text = format!("{} listed on {}", local_minute(&l.listed_at), l.zone);
    let what = listing_what(l);
    if !what.is_empty() {
        text.push_str(&format!(" ({what})"));
    }
    if let Some(reason) = l.details.as_deref().filter(|r| !r.trim().is_empty()) {
        text.push_str(&format!(" — {reason}"));
    }
    clean(&text)
}

impl Timeline {
    /// The timeline of `node_id` from the snapshot: the node's listings (all zones), its
    /// open alerts, and its status and why.
    pub fn build(app: &App, node_id: &str) -> Timeline {
        let s = &app.snap;
        let node = app.node_by_id(node_id);
        let listings: Vec<&ListingRow> = s
            .listings
            .iter()
            .filter(|l| l.node_id.as_deref() == Some(node_id))
            .collect();
        let mut alerts: Vec<&crate::store::AlertRow> = s
            .alerts
            .iter()
            .filter(|a| a.node_id.as_deref() == Some(node_id) && a.resolved_at.is_none())
            .collect();
        alerts.sort_by_key(|a| severity_rank(Some(&a.severity)));
        let label = node
            .map(|n| n.label.to_string())
            .or_else(|| listings.iter().find_map(|l| l.node_label.clone()))
            .or_else(|| alerts.iter().find_map(|a| a.node_label.clone()))
            .unwrap_or_else(|| short(node_id).to_string());
        let mut entries = Vec::with_capacity(listings.len() * 2);
        let mut listed_now = Vec::new();
        for l in &listings {
            entries.push(TimelineEntry {
                at: l.listed_at.clone(),
                listed: true,
                severity: l.severity.clone(),
                text: listed_line(l),
            });
            let since = parse_ts(&l.listed_at);
            match &l.delisted_at {
                Some(d) => {
                    let after = match (since, parse_ts(d)) {
                        (Some(from), Some(to)) => age(to, from),
                        _ => "-".into(),
                    };
                    entries.push(TimelineEntry {
                        at: d.clone(),
                        listed: false,
                        severity: l.severity.clone(),
                        text: clean(&format!(
                            "{} delisted from {} after {after}",
                            local_minute(d),
                            l.zone
                        )),
                    });
                }
                None => {
                    let what = listing_what(l);
                    let what = if what.is_empty() {
                        String::new()
                    } else {
                        format!(" ({what})")
                    };
                    let so_far = since.map(|t| age(app.now, t)).unwrap_or_default();
                    let url = l
                        .details
                        .as_deref()
                        .and_then(crate::reputation::dnsbl::delist_url)
                        .map(clean);
                    listed_now.push((clean(&format!("{}{what} for {so_far}", l.zone)), url));
                }
            }
        }
        // Stored times sort as text; equal times keep the snapshot's order.
        entries.sort_by(|a, b| a.at.cmp(&b.at));
        Timeline {
            node_id: node_id.to_string(),
            label: clean(&label),
            ip: node
                .and_then(|n| n.ip_address.map(|ip| ip.to_string()))
                .or_else(|| listings.first().map(|l| l.ip_address.clone()))
                .map(|ip| clean(&ip)),
            status: node.map(|n| n.status.to_string()),
            status_reason: node.and_then(|n| n.status_reason.as_deref()).map(clean),
            listed_now,
            alerts: alerts
                .iter()
                .map(|a| {
                    let raised = parse_ts(&a.raised_at)
                        .map(|t| format!(" (raised {} ago)", age(app.now, t)))
                        .unwrap_or_default();
                    (
                        a.severity.clone(),
                        clean(&format!("{}: {}{raised}", a.kind, a.message)),
                    )
                })
                .collect(),
            entries,
            more: None,
        }
    }
}

/// What a node action needs of the selected node, copied out of the snapshot.
struct Target {
    id: String,
    label: String,
    ip: Option<String>,
    status: String,
    status_reason: Option<String>,
}

impl App {
    /// The id of the node the selected row stands for: the node itself, or the node of a
    /// listing or an alert (which may be one no longer in the fleet).
    pub fn selected_node_id(&self) -> Option<String> {
        let t = self.table();
        let idx = *t.visible.get(t.selected)?;
        let s = &self.snap;
        match self.view {
            View::Fleet | View::Warmup => s.nodes.get(idx).map(|n| n.id.to_string()),
            View::Blacklist => s.listings.get(idx)?.node_id.clone(),
            View::Alerts => s.alerts.get(idx)?.node_id.clone(),
            View::Triage => match &self.triage.rows.get(idx)?.subject {
                super::triage::Subject::Node(id) => Some(id.to_string()),
                super::triage::Subject::Alert { node_id, .. } => node_id.clone(),
                _ => None,
            },
            View::Requests | View::Approvals | View::Events | View::Pipeline => None,
        }
    }

    /// A listing pane, a request pane, a warm-up log or none is open beside the list.
    pub fn pane_open(&self) -> bool {
        self.detail.is_some() || self.timeline.is_some() || self.warm_history
    }

    /// Enter in the Blacklist and Alerts views: the selected row's node's timeline; Enter
    /// on the node already shown gives the pane the keys, to scroll.
    pub(super) fn open_timeline(&mut self) -> Vec<Effect> {
        if self.table().visible.is_empty() {
            return vec![];
        }
        let Some(node_id) = self.selected_node_id() else {
            self.say(
                if self.view == View::Alerts {
                    "open: this alert is not about a node"
                } else {
                    "open: no node holds this listing's IP"
                },
                true,
            );
            return vec![];
        };
        self.show_node(node_id)
    }

    /// Enter in the Fleet view: the selected node's detail (status and why, heartbeats
    /// and metrics, warm-up, listings, transitions, certificate).
    pub(super) fn open_node(&mut self) -> Vec<Effect> {
        match self.selected_node_id() {
            Some(id) => self.show_node(id),
            None => vec![],
        }
    }

    /// Node `node_id` in the pane; Enter on the node already shown gives the pane the
    /// keys, to scroll.
    fn show_node(&mut self, node_id: String) -> Vec<Effect> {
        if self.timeline.as_ref().is_some_and(|t| t.node_id == node_id) {
            self.detail_focus = true;
            return vec![];
        }
        self.detail = None;
        self.warm_history = false;
        self.detail_focus = false;
        self.detail_scroll = 0;
        self.timeline = Some(Timeline::build(self, &node_id));
        vec![Effect::LoadNode(node_id)]
    }

    /// The open timeline again, from new data (what was loaded for it stays until it is
    /// loaded again).
    pub(super) fn rebuild_timeline(&mut self) {
        if let Some(old) = self.timeline.take() {
            let mut t = Timeline::build(self, &old.node_id);
            t.more = old.more;
            self.timeline = Some(t);
        }
    }

    /// The node detail's heartbeats, transitions and certificate arrived: kept if that
    /// node is still the one shown.
    pub fn set_node_detail(&mut self, d: crate::store::NodeDetail) {
        if let Some(t) = &mut self.timeline {
            if t.node_id == d.node_id {
                t.more = Some(Box::new(d));
            }
        }
    }

    /// The selected row's node, or a status line saying why there is none.
    fn node_target(&mut self, verb: &str) -> Option<Target> {
        if !self.view.lists_nodes() {
            self.say(
                format!("{verb}: select a node in the Fleet, Warm-up, Blacklist or Alerts view"),
                true,
            );
            return None;
        }
        let Some(id) = self.selected_node_id() else {
            self.say(
                format!("{verb}: the selected row is not about a node"),
                true,
            );
            return None;
        };
        let found = match self.view {
            View::Fleet | View::Warmup => {
                let t = self.table();
                t.visible
                    .get(t.selected)
                    .and_then(|i| self.snap.nodes.get(*i))
            }
            _ => self.node_by_id(&id),
        };
        let Some(n) = found else {
            self.say(
                format!("{verb}: node {} is no longer in the fleet", short(&id)),
                true,
            );
            return None;
        };
        Some(Target {
            id: n.id.to_string(),
            label: clean(&n.label),
            ip: n.ip_address.map(|ip| ip.to_string()),
            status: n.status.to_string(),
            status_reason: n.status_reason.as_deref().map(clean),
        })
    }

    /// The zones a node is listed on now, from the snapshot.
    fn zones_listing(&self, node_id: &str) -> Vec<String> {
        self.snap
            .listings
            .iter()
            .filter(|l| l.node_id.as_deref() == Some(node_id) && l.delisted_at.is_none())
            .map(|l| clean(&l.zone))
            .collect()
    }

    /// `c`: checks the selected row's node on the blocklists now.
    pub(super) fn check_node(&mut self) -> Vec<Effect> {
        let Some(n) = self.node_target("check") else {
            return vec![];
        };
        let Some(ip) = &n.ip else {
            self.say(
                format!("check: node {} has no IP address yet", n.label),
                true,
            );
            return vec![];
        };
        self.say(
            format!("checking {} ({ip}) on the blocklists…", n.label),
            false,
        );
        vec![Effect::Send(vec![Command::CheckNode { id: n.id }])]
    }

    /// The marked nodes (Fleet and Warm-up views), as indices into the snapshot: in the
    /// order the view shows them, then any the filter hides.
    pub(super) fn marked_nodes(&self) -> Vec<usize> {
        let t = self.table();
        if t.marks.is_empty() || !matches!(self.view, View::Fleet | View::Warmup) {
            return vec![];
        }
        let mut out: Vec<usize> = t
            .marks
            .iter()
            .filter_map(|m| self.node_index(m.parse().ok()?))
            .collect();
        out.sort_by_key(|i| (t.position(*i).unwrap_or(usize::MAX), *i));
        out
    }

    /// The nodes a node action applies to: the marked ones, else the selected row's (with
    /// a status line saying why there is none).
    fn node_targets(&mut self, verb: &str) -> Vec<Target> {
        let marked = self.marked_nodes();
        if marked.is_empty() {
            return self.node_target(verb).into_iter().collect();
        }
        marked
            .into_iter()
            .filter_map(|i| self.snap.nodes.get(i))
            .map(|n| Target {
                id: n.id.to_string(),
                label: clean(&n.label),
                ip: n.ip_address.map(|ip| ip.to_string()),
                status: n.status.to_string(),
                status_reason: n.status_reason.as_deref().map(clean),
            })
            .collect()
    }

    /// `P`: asks whether to take the marked nodes, or the selected row's, out of rotation.
    pub(super) fn ask_pause(&mut self) -> Vec<Effect> {
        let targets = self.node_targets("pause");
        let Some(first) = targets.first() else {
            return vec![];
        };
        // The lifecycle's rule (domain::node): a pause takes a serving node out.
        let can = |n: &Target| {
            n.status
                .parse::<NodeStatus>()
                .is_ok_and(NodeStatus::serving)
        };
        if targets.len() == 1 && !can(first) {
            self.say(
                format!(
                    "pause: {} is {}: only a warming or active node can be paused",
                    first.label, first.status
                ),
                true,
            );
            return vec![];
        }
        let (go, skip): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(can);
        if go.is_empty() {
            self.say(
                format!(
                    "pause: none of the {} marked nodes is warming or active",
                    skip.len()
                ),
                true,
            );
            return vec![];
        }
        let mut lines = Vec::new();
        for n in &go {
            let ip = n.ip.as_deref().unwrap_or("no IP");
            lines.push(format!("pause {} ({ip}, {})", n.label, n.status));
            if go.len() == 1 {
                lines.push(
                    "  it leaves rotation and sends nothing until it is resumed (U)".to_string(),
                );
            }
            let zones = self.zones_listing(&n.id);
            if !zones.is_empty() {
                lines.push(format!("  listed now on {}", zones.join(", ")));
            }
        }
        if go.len() > 1 {
            lines.push("they leave rotation and send nothing until they are resumed (U)".into());
        }
        self.confirm_nodes(
            "Pause",
            lines,
            go,
            &skip,
            "not paused (not warming or active)",
            |n| Command::PauseNode {
                id: n.id,
                reason: None,
            },
        )
    }

    /// `U`: asks whether to put the marked paused nodes, or the selected row's, back in
    /// rotation.
    pub(super) fn ask_resume(&mut self) -> Vec<Effect> {
        let targets = self.node_targets("resume");
        let Some(first) = targets.first() else {
            return vec![];
        };
        // Resume lifts a pause or ends maintenance (domain::node).
        let can = |n: &Target| matches!(n.status.as_str(), "paused" | "maintenance");
        if targets.len() == 1 && !can(first) {
            self.say(
                format!(
                    "resume: {} is {}: only a paused node or one in maintenance can be resumed",
                    first.label, first.status
                ),
                true,
            );
            return vec![];
        }
        let (go, skip): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(can);
        if go.is_empty() {
            self.say(
                format!(
                    "resume: none of the {} marked nodes is paused or in maintenance",
                    skip.len()
                ),
                true,
            );
            return vec![];
        }
        let mut lines = Vec::new();
        for n in &go {
            lines.push(format!(
                "resume {} ({})",
                n.label,
                n.ip.as_deref().unwrap_or("no IP")
            ));
            lines.push(format!(
                "  {}: {}",
                n.status,
                n.status_reason.as_deref().unwrap_or("no reason recorded")
            ));
            let zones = self.zones_listing(&n.id);
            if !zones.is_empty() {
                lines.push(format!(
                    "  still listed on {}: it would send from a listed IP",
                    zones.join(", ")
                ));
            }
        }
        self.confirm_nodes(
            "Resume",
            lines,
            go,
            &skip,
            "not resumed (not paused or in maintenance)",
            |n| Command::ResumeNode { id: n.id },
        )
    }

    /// One confirmation for pausing or resuming `go` (the lines describe each), naming those
    /// left out and why; yes sends one command per node.
    fn confirm_nodes(
        &mut self,
        verb: &str,
        mut lines: Vec<String>,
        go: Vec<Target>,
        skip: &[Target],
        skipped_because: &str,
        make: impl Fn(Target) -> Command,
    ) -> Vec<Effect> {
        if !skip.is_empty() {
            lines.push(format!(
                "{skipped_because}: {}",
                skip.iter()
                    .map(|n| n.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let title = match go.as_slice() {
            [one] => format!(
                "{verb} node {} ({})?",
                one.label,
                one.ip.as_deref().unwrap_or("no IP")
            ),
            many => format!("{verb} {} nodes?", many.len()),
        };
        self.mode = Mode::Confirm(Confirm {
            title,
            lines,
            on_yes: Pending::Commands(go.into_iter().map(make).collect()),
            scroll: 0,
        });
        vec![]
    }
}
