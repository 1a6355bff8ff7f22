//! The request state machine: states, the events that move a request between them, and the
//! pure `transition` function. No I/O and no clock here; the engine decides *when* an event
//! happens, this module decides whether it may.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a provisioning request stands. The first eleven are the seed's; `rejected`,
/// `awaiting_input` and `deprovisioned` are the ones users expect beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Queued,
    PendingApproval,
    Allocating,
    Configuring,
    Activating,
    AwaitingInput,
    Verifying,
    Completed,
    Suspended,
    Failed,
    RollingBack,
    RolledBack,
    Deprovisioned,
    Rejected,
}

/// Something that happens to a request. Which events are legal depends on the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestEvent {
    /// An approval rule matched at admission.
    RequireApproval,
    /// An approver said yes; the request goes back to the queue.
    Approve,
    /// Refused at admission, by an approver, or because a prerequisite failed.
    Reject,
    /// Prerequisites, a tenant slot and capacity are there: step 1 starts.
    Admit,
    /// The current step finished; the next one starts (or the request completes).
    StepSucceeded,
    /// The current step exhausted its retries, or made no progress for too long.
    StepFailed,
    /// A manual provider needs an administrator to enter access details.
    AwaitInput,
    /// The administrator entered them.
    InputProvided,
    /// An operator stopped the service.
    Suspend,
    /// An operator restarted a suspended service.
    Reactivate,
    /// Tear down an unfinished or failed request.
    Rollback,
    /// Tear down a completed (or suspended) service on request.
    Deprovision,
    /// Every compensation ran. `remaining` counts resources still held: anything above zero
    /// makes this event illegal, so a request is never reported released while it holds
    /// something.
    TeardownFinished { remaining: u32, deprovision: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a {state} request cannot {event}")]
    Illegal {
        state: RequestState,
        event: &'static str,
    },
    #[error("a completed request is torn down with deprovision, not rollback")]
    UseDeprovision,
    #[error("teardown is not finished: {remaining} resource(s) still held")]
    StillHolding { remaining: u32 },
}

pub const ALL_STATES: [RequestState; 14] = [
    RequestState::Queued,
    RequestState::PendingApproval,
    RequestState::Allocating,
    RequestState::Configuring,
    RequestState::Activating,
    RequestState::AwaitingInput,
    RequestState::Verifying,
    RequestState::Completed,
    RequestState::Suspended,
    RequestState::Failed,
    RequestState::RollingBack,
    RequestState::RolledBack,
    RequestState::Deprovisioned,
    RequestState::Rejected,
];

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::PendingApproval => "pending_approval",
            Self::Allocating => "allocating",
            Self::Configuring => "configuring",
            Self::Activating => "activating",
            Self::AwaitingInput => "awaiting_input",
            Self::Verifying => "verifying",
            Self::Completed => "completed",
            Self::Suspended => "suspended",
            Self::Failed => "failed",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::Deprovisioned => "deprovisioned",
            Self::Rejected => "rejected",
        }
    }

    /// No event leaves these states.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::RolledBack | Self::Deprovisioned | Self::Rejected
        )
    }

    /// The pipeline step this state runs, if any.
    pub fn step(self) -> Option<super::Step> {
        use super::Step;
        match self {
            // A manual provider's server is waited for in allocate (its access details).
            Self::Allocating | Self::AwaitingInput => Some(Step::Allocate),
            Self::Configuring => Some(Step::Configure),
            Self::Activating => Some(Step::Activate),
            Self::Verifying => Some(Step::Verify),
            _ => None,
        }
    }

    /// States in which the engine has work to do without anyone's input.
    pub fn is_engine_driven(self) -> bool {
        matches!(
            self,
            Self::Queued
                | Self::Allocating
                | Self::Configuring
                | Self::Activating
                | Self::Verifying
                | Self::Failed
                | Self::RollingBack
        )
    }

    /// States that count against a tenant's in-flight limit.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Self::Allocating | Self::Configuring | Self::Activating | Self::Verifying
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL_STATES.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}; expected one of {}", names.join(", "))
            })
    }
}

impl RequestEvent {
    pub fn verb(self) -> &'static str {
        match self {
            Self::RequireApproval => "require approval",
            Self::Approve => "be approved",
            Self::Reject => "be rejected",
            Self::Admit => "be admitted",
            Self::StepSucceeded => "complete a step",
            Self::StepFailed => "fail a step",
            Self::AwaitInput => "wait for input",
            Self::InputProvided => "take input",
            Self::Suspend => "be suspended",
            Self::Reactivate => "be reactivated",
            Self::Rollback => "be rolled back",
            Self::Deprovision => "be deprovisioned",
            Self::TeardownFinished { .. } => "finish a teardown",
        }
    }
}

/// The whole state machine. Every (state, event) pair gives the next state or says why not.
pub fn transition(
    state: RequestState,
    event: RequestEvent,
) -> Result<RequestState, TransitionError> {
    use RequestEvent as E;
    use RequestState as S;
    let next = match (state, event) {
        (S::Queued, E::RequireApproval) => S::PendingApproval,
        (S::Queued, E::Admit) => S::Allocating,
        (S::Queued | S::PendingApproval, E::Reject) => S::Rejected,
        (S::PendingApproval, E::Approve) => S::Queued,

        (S::Allocating, E::StepSucceeded) => S::Configuring,
        (S::Configuring, E::StepSucceeded) => S::Activating,
        (S::Activating, E::StepSucceeded) => S::Verifying,
        (S::Verifying, E::StepSucceeded) => S::Completed,
        (S::Allocating, E::AwaitInput) => S::AwaitingInput,
        (S::AwaitingInput, E::InputProvided) => S::Allocating,
        (S::Allocating | S::Configuring | S::Activating | S::Verifying, E::StepFailed) => S::Failed,

        (
            S::Allocating
            | S::Configuring
            | S::Activating
            | S::AwaitingInput
            | S::Verifying
            | S::Failed,
            E::Rollback,
        ) => S::RollingBack,
        (S::Completed | S::Suspended, E::Rollback) => return Err(TransitionError::UseDeprovision),
        (S::Completed | S::Suspended, E::Deprovision) => S::RollingBack,
        (S::Completed, E::Suspend) => S::Suspended,
        (S::Suspended, E::Reactivate) => S::Completed,

        (S::RollingBack, E::TeardownFinished { remaining, .. }) if remaining > 0 => {
            return Err(TransitionError::StillHolding { remaining })
        }
        (
            S::RollingBack,
            E::TeardownFinished {
                deprovision: false, ..
            },
        ) => S::RolledBack,
        (
            S::RollingBack,
            E::TeardownFinished {
                deprovision: true, ..
            },
        ) => S::Deprovisioned,

        (state, event) => {
            return Err(TransitionError::Illegal {
                state,
                event: event.verb(),
            })
        }
    };
    Ok(next)
}

/// What a request does. Every request provisioned a node until resizes came; a resize
/// (`mailfleet node resize`) changes the plan of a node a provisioning request made, runs
/// its own two steps and is rolled back by reverting the provider's upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Provision,
    Resize,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Resize => "resize",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        [Self::Provision, Self::Resize]
            .into_iter()
            .find(|o| o.as_str() == s)
    }

    /// The steps it runs, in order.
    pub fn steps(self) -> &'static [super::Step] {
        match self {
            Self::Provision => &super::STEPS,
            Self::Resize => &super::step::RESIZE_STEPS,
        }
    }

    /// The step a request in `state` runs, if any.
    pub fn step(self, state: RequestState) -> Option<super::Step> {
        match self {
            Self::Provision => state.step(),
            Self::Resize => match state {
                RequestState::Allocating => Some(super::Step::Resize),
                RequestState::Verifying => Some(super::Step::Confirm),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state machine of a request doing `op`. A resize goes queued → (pending_approval) →
/// allocating (its resize step) → verifying (its confirm step) → completed, or from a
/// failed step through rolling_back (the upgrade reverted) to rolled_back. It never waits
/// for input, is never suspended, and once completed is history: undoing it is another
/// resize.
pub fn transition_for(
    op: Operation,
    state: RequestState,
    event: RequestEvent,
) -> Result<RequestState, TransitionError> {
    use RequestEvent as E;
    use RequestState as S;
    match op {
        Operation::Provision => transition(state, event),
        Operation::Resize => match (state, event) {
            (S::Allocating, E::StepSucceeded) => Ok(S::Verifying),
            (
                S::Configuring | S::Activating | S::AwaitingInput | S::Suspended | S::Deprovisioned,
                _,
            )
            | (S::Allocating, E::AwaitInput)
            | (S::Completed, _)
            | (_, E::Suspend | E::Reactivate | E::Deprovision) => Err(TransitionError::Illegal {
                state,
                event: event.verb(),
            }),
            _ => transition(state, event),
        },
    }
}

/// The outbox events a transition of a request doing `op` publishes, in order.
pub fn event_names_for(
    op: Operation,
    from: Option<RequestState>,
    to: RequestState,
) -> &'static [&'static str] {
    use RequestState as S;
    const STEP: &str = "resize.step-completed";
    match op {
        Operation::Provision => event_names(from, to),
        Operation::Resize => match (from, to) {
            (None, _) => &["resize.requested"],
            (Some(S::Queued), S::PendingApproval) => &["approval.requested"],
            (Some(S::PendingApproval), S::Queued) => &["approval.granted"],
            (Some(S::PendingApproval), S::Rejected) => &["approval.rejected"],
            (_, S::Rejected) => &["resize.rejected"],
            (Some(S::Queued), S::Allocating) => &["resize.admitted"],
            (Some(S::Allocating), S::Verifying) => &[STEP, "resize.applied"],
            (Some(S::Verifying), S::Completed) => &[STEP, "resize.completed"],
            (_, S::Failed) => &["resize.failed"],
            (_, S::RollingBack) => &["resize.reverting"],
            (_, S::RolledBack) => &["resize.reverted"],
            _ => &["resize.changed"],
        },
    }
}

/// The outbox events a transition publishes, in order. Every transition publishes at least
/// one, so nothing changes state without leaving history.
pub fn event_names(from: Option<RequestState>, to: RequestState) -> &'static [&'static str] {
    use RequestState as S;
    const STEP: &str = "provisioning.step-completed";
    match (from, to) {
        (None, _) => &["provisioning.started"],
        (Some(S::Queued), S::PendingApproval) => &["approval.requested"],
        (Some(S::PendingApproval), S::Queued) => &["approval.granted"],
        (Some(S::PendingApproval), S::Rejected) => &["approval.rejected"],
        (_, S::Rejected) => &["provisioning.rejected"],
        (Some(S::Queued), S::Allocating) => &["provisioning.admitted"],
        (Some(S::Allocating), S::Configuring) => &[STEP, "resource.allocated"],
        (Some(S::Configuring), S::Activating) => &[STEP],
        (Some(S::Activating), S::Verifying) => &[STEP, "service.activated"],
        (Some(S::Verifying), S::Completed) => &[STEP, "provisioning.completed"],
        (Some(S::AwaitingInput), S::Allocating) => &["provisioning.input-provided"],
        (_, S::AwaitingInput) => &["provisioning.awaiting-input"],
        (Some(S::Suspended), S::Completed) => &["service.reactivated"],
        (_, S::Suspended) => &["service.suspended"],
        (_, S::Failed) => &["provisioning.failed"],
        (Some(S::Completed | S::Suspended), S::RollingBack) => &["service.deprovisioning"],
        (_, S::RollingBack) => &["provisioning.rolling-back"],
        (_, S::RolledBack) => &["provisioning.rolled-back"],
        (_, S::Deprovisioned) => &["service.deprovisioned"],
        _ => &["provisioning.changed"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestEvent as E;
    use RequestState as S;

    #[test]
    fn a_resize_runs_two_steps_and_is_reverted_not_suspended_or_deprovisioned() {
        let op = Operation::Resize;
        let mut s = S::Queued;
        for e in [E::Admit, E::StepSucceeded, E::StepSucceeded] {
            s = transition_for(op, s, e).expect("legal");
        }
        assert_eq!(s, S::Completed);
        assert_eq!(op.step(S::Allocating), Some(crate::domain::Step::Resize));
        assert_eq!(op.step(S::Verifying), Some(crate::domain::Step::Confirm));
        assert_eq!(op.step(S::Configuring), None);
        // A completed resize is history.
        for e in [E::Suspend, E::Deprovision, E::Rollback] {
            assert!(transition_for(op, S::Completed, e).is_err(), "{e:?}");
        }
        // It never waits for input.
        assert!(transition_for(op, S::Allocating, E::AwaitInput).is_err());
        // A failed step rolls it back like any request.
        let failed = transition_for(op, S::Verifying, E::StepFailed).expect("fails");
        let back = transition_for(op, failed, E::Rollback).expect("rolls back");
        let done = E::TeardownFinished {
            remaining: 0,
            deprovision: false,
        };
        assert_eq!(transition_for(op, back, done), Ok(S::RolledBack));
        // Provisioning is unchanged.
        assert_eq!(
            transition_for(Operation::Provision, S::Allocating, E::StepSucceeded),
            Ok(S::Configuring)
        );
        assert_eq!(
            event_names_for(op, Some(S::Verifying), S::Completed),
            ["resize.step-completed", "resize.completed"]
        );
    }
}
