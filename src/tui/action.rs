//! The one way UI state changes: every key, command-line word and engine report becomes an
//! Action, and `App::update` is the only thing that applies one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    Fleet,
    Requests,
    Approvals,
    Blacklist,
    Warmup,
    Events,
    Pipeline,
}

pub const VIEWS: [View; 7] = [
    View::Fleet,
    View::Requests,
    View::Approvals,
    View::Blacklist,
    View::Warmup,
    View::Events,
    View::Pipeline,
];

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Fleet => "fleet",
            View::Requests => "requests",
            View::Approvals => "approvals",
            View::Blacklist => "blacklist",
            View::Warmup => "warmup",
            View::Events => "events",
            View::Pipeline => "pipeline",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Fleet => "Fleet",
            View::Requests => "Requests",
            View::Approvals => "Approvals",
            View::Blacklist => "Blacklist",
            View::Warmup => "Warm-up",
            View::Events => "Events",
            View::Pipeline => "Pipeline",
        }
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
    Follow,
    ToggleMouse,
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
            Action::Follow => "follow",
            Action::ToggleMouse => "mouse",
        }
    }
}
