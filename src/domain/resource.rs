//! What a request holds while it lives: the kinds of resources the pipeline allocates, and a
//! pure model of holding and releasing them that the property tests drive.

use super::state::{transition, RequestEvent, RequestState, TransitionError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// The tenant's quota, reserved at admission.
    Quota,
    /// The cluster's capacity, reserved at admission.
    Capacity,
    /// A cloud instance. Recorded as an intent before the create call.
    Instance,
    /// The instance's public IPv4 address.
    Ip,
    /// The firewall profile applied to the instance.
    Firewall,
    /// The reverse DNS (PTR) record of the IP.
    Rdns,
    /// The node registered in the fleet.
    Node,
    /// The records the configure step published (`dns_records` holds each one).
    Dns,
    /// The node's TLS certificate (`certificates` holds it).
    Certificate,
    /// A resize: the provider's upgrade order, applied but not yet confirmed. Released by
    /// confirming it, or by reverting it in a rollback. Recorded as an intent before the call.
    Upgrade,
    /// A resize: what the new plan needs beyond the old one, added to the node's own quota
    /// and capacity rows while the resize runs. Released by folding the new plan into those
    /// rows, or by taking it back out in a rollback.
    ResizeHold,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quota => "quota",
            Self::Capacity => "capacity",
            Self::Instance => "instance",
            Self::Ip => "ip",
            Self::Firewall => "firewall",
            Self::Rdns => "rdns",
            Self::Node => "node",
            Self::Dns => "dns",
            Self::Certificate => "certificate",
            Self::Upgrade => "upgrade",
            Self::ResizeHold => "resize_hold",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceKind> {
        [
            Self::Quota,
            Self::Capacity,
            Self::Instance,
            Self::Ip,
            Self::Firewall,
            Self::Rdns,
            Self::Node,
            Self::Dns,
            Self::Certificate,
            Self::Upgrade,
            Self::ResizeHold,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A request as the property tests see it: its state plus what it holds. Resources are
/// allocated only while a step runs and released only while rolling back, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifecycle {
    pub state: Option<RequestState>,
    pub held: Vec<ResourceKind>,
    pub deprovision: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    Request(RequestEvent),
    Allocate(ResourceKind),
    ReleaseNewest,
    FinishTeardown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("cannot allocate a {kind:?} while {state}")]
    AllocateOutsideStep {
        state: RequestState,
        kind: ResourceKind,
    },
    #[error("cannot release while {state}")]
    ReleaseOutsideTeardown { state: RequestState },
    #[error("nothing left to release")]
    NothingHeld,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            state: Some(RequestState::Queued),
            held: Vec::new(),
            deprovision: false,
        }
    }

    pub fn state(&self) -> RequestState {
        self.state.unwrap_or(RequestState::Queued)
    }

    /// Applies one event; an illegal one leaves the lifecycle untouched.
    pub fn apply(&mut self, event: LifecycleEvent) -> Result<(), LifecycleError> {
        let state = self.state();
        match event {
            LifecycleEvent::Request(ev) => {
                if matches!(ev, RequestEvent::TeardownFinished { .. }) {
                    return self.apply(LifecycleEvent::FinishTeardown);
                }
                let next = transition(state, ev)?;
                if ev == RequestEvent::Deprovision {
                    self.deprovision = true;
                }
                self.state = Some(next);
            }
            LifecycleEvent::Allocate(kind) => {
                if !state.is_in_flight() {
                    return Err(LifecycleError::AllocateOutsideStep { state, kind });
                }
                self.held.push(kind);
            }
            LifecycleEvent::ReleaseNewest => {
                if state != RequestState::RollingBack {
                    return Err(LifecycleError::ReleaseOutsideTeardown { state });
                }
                if self.held.pop().is_none() {
                    return Err(LifecycleError::NothingHeld);
                }
            }
            LifecycleEvent::FinishTeardown => {
                let remaining = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
                let next = transition(
                    state,
                    RequestEvent::TeardownFinished {
                        remaining,
                        deprovision: self.deprovision,
                    },
                )?;
                self.state = Some(next);
            }
        }
        Ok(())
    }
}
