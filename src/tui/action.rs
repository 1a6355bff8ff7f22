//! The one way UI state changes: every key, command-line word and engine report becomes an
//! Action, and `App::update` is the only thing that applies one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// What is broken and why: open alerts, failed and stalled requests, nodes out of
    /// rotation, open circuit breakers, and the last hour. First in the tab order.
    Triage,
    Fleet,
    Requests,
    Approvals,
    Blacklist,
    Warmup,
    Events,
    Pipeline,
    Alerts,
}

pub const VIEWS: [View; 9] = [
    View::Triage,
    View::Fleet,
    View::Requests,
    View::Approvals,
    View::Blacklist,
    View::Warmup,
    View::Events,
    View::Pipeline,
    View::Alerts,
];

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Triage => "triage",
            View::Fleet => "fleet",
            View::Requests => "requests",
            View::Approvals => "approvals",
            View::Blacklist => "blacklist",
            View::Warmup => "warmup",
            View::Events => "events",
            View::Pipeline => "pipeline",
            View::Alerts => "alerts",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Triage => "Triage",
            View::Fleet => "Fleet",
            View::Requests => "Requests",
            View::Approvals => "Approvals",
            View::Blacklist => "Blacklist",
            View::Warmup => "Warm-up",
            View::Events => "Events",
            View::Pipeline => "Pipeline",
            View::Alerts => "Alerts",
        }
    }

    /// The title in a tab line too narrow for the full ones.
    pub fn short_title(self) -> &'static str {
        match self {
            View::Triage => "Triage",
            View::Fleet => "Fleet",
            View::Requests => "Reqs",
            View::Approvals => "Approv",
            View::Blacklist => "Black",
            View::Warmup => "Warm",
            View::Events => "Events",
            View::Pipeline => "Pipe",
            View::Alerts => "Alerts",
        }
    }

    /// Whether the view's rows stand for nodes (a node, a listing of one, an alert about
    /// one), so that check, pause and resume apply to the selected row's node.
    pub fn lists_nodes(self) -> bool {
        matches!(
            self,
            View::Fleet | View::Warmup | View::Blacklist | View::Alerts | View::Triage
        )
    }

    pub fn index(self) -> usize {
        VIEWS.iter().position(|v| *v == self).unwrap_or(0)
    }

    pub fn parse(s: &str) -> Option<View> {
        VIEWS.iter().copied().find(|v| v.name() == s)
    }
}

/// Everything a person can ask of the console. Keymaps in the config name these in
/// snake_case (`q = "quit"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Quit,
    Help,
    NextView,
    PrevView,
    ShowFleet,
    ShowRequests,
    ShowApprovals,
    ShowBlacklist,
    ShowWarmup,
    ShowEvents,
    ShowPipeline,
    ShowAlerts,
    ShowTriage,
    CommandLine,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Left,
    Right,
    Open,
    Back,
    Filter,
    SortPrev,
    SortNext,
    SortReverse,
    /// Sort by this column of the current view; again reverses. Bound to Shift+letter at
    /// run time (see `table::sort_letters`), so it has no name in `[keys]`.
    #[serde(skip)]
    SortBy(usize),
    Mark,
    /// Marks every row the view shows (after the filter), or clears the marks when they
    /// all are marked already.
    MarkAll,
    /// A mouse click on the n-th row of the current view (see `App::row_at`); on the row
    /// already selected it opens it.
    #[serde(skip)]
    Select(usize),
    Provision,
    Approve,
    Reject,
    Suspend,
    Reactivate,
    Rollback,
    /// Check the selected row's node on the blocklists now (Fleet, Warm-up, Blacklist,
    /// Alerts).
    CheckNode,
    /// Take the selected row's node out of rotation, after a confirmation.
    PauseNode,
    /// Put the selected row's paused node back in rotation, after a confirmation.
    ResumeNode,
    /// Enter the access details of the selected request awaiting them (a manual provider).
    Provide,
    Follow,
    ToggleMouse,
    /// Acknowledge the selected alert (Triage, Alerts), with an optional note.
    AckAlert,
    /// Silence the selected alert for a while, saying why (Triage, Alerts).
    SilenceAlert,
    /// The request that made the selected row's node, in its detail pane (Fleet, Triage).
    OpenRequest,
}

impl Action {
    /// Changes the fleet: disabled with --read-only.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Action::Provision
                | Action::Approve
                | Action::Reject
                | Action::Suspend
                | Action::Reactivate
                | Action::Rollback
                | Action::CheckNode
                | Action::PauseNode
                | Action::ResumeNode
                | Action::Provide
                | Action::AckAlert
                | Action::SilenceAlert
        )
    }

    /// The words the footer and help show.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::NextView => "next view",
            Action::PrevView => "previous view",
            Action::ShowFleet => "fleet",
            Action::ShowRequests => "requests",
            Action::ShowApprovals => "approvals",
            Action::ShowBlacklist => "blacklist",
            Action::ShowWarmup => "warm-up",
            Action::ShowEvents => "events",
            Action::ShowPipeline => "pipeline",
            Action::ShowAlerts => "alerts",
            Action::ShowTriage => "triage",
            Action::CommandLine => "command",
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page up",
            Action::PageDown => "page down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::Left => "left",
            Action::Right => "right",
            Action::Open => "open",
            Action::Back => "back",
            Action::Filter => "filter",
            Action::SortPrev => "sort ←",
            Action::SortNext => "sort →",
            Action::SortReverse => "reverse sort",
            Action::SortBy(_) => "sort by column",
            Action::Select(_) => "select",
            Action::Mark => "mark",
            Action::MarkAll => "mark all / none",
            Action::Provision => "provision",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Suspend => "suspend",
            Action::Reactivate => "reactivate",
            Action::Rollback => "roll back",
            Action::CheckNode => "check node now",
            Action::PauseNode => "pause node",
            Action::ResumeNode => "resume node",
            Action::Provide => "enter access details",
            Action::Follow => "follow",
            Action::ToggleMouse => "mouse",
            Action::AckAlert => "acknowledge alert",
            Action::SilenceAlert => "silence alert",
            Action::OpenRequest => "node's request",
        }
    }
}
