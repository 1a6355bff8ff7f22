//! The node lifecycle: the statuses a sending node goes through and the pure `transition`
//! function that says whether an event may move it, and where. The store writes what this
//! decides (`store::nodes::transition`), with the transition's row and its event, in one
//! transaction; nothing else writes a node's status.
//!
//! ```text
//! provisioning → warming → active ⇄ maintenance
//!                  │  ▲      │ ▲
//!                  ▼  │      ▼ │
//!           paused (blocklist, bounces, warm-up, operator, service) → back where it was
//!           unhealthy (missed heartbeats)                           → back where it was
//! any of them → decommissioned (for good)
//! ```
//!
//! A node taken out of rotation (paused, in maintenance, unhealthy) remembers the status to
//! go back to (`resume`). A pause remembers its cause too: the blocklist monitor lifts only
//! the pauses it made, and a service suspension is lifted only by reactivating the service.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a sending node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Its server is being made; it sends nothing.
    Provisioning,
    /// Sending under its warm-up plan's daily cap.
    Warming,
    /// Warmed up: sending at full volume.
    Active,
    /// Out of rotation for work an operator is doing on it.
    Maintenance,
    /// Out of rotation because of a blocklist, its bounces, its warm-up, an operator or a
    /// suspended service.
    Paused,
    /// Out of rotation because its agent stopped answering.
    Unhealthy,
    /// Gone for good.
    Decommissioned,
}

pub const ALL_NODE_STATUSES: [NodeStatus; 7] = [
    NodeStatus::Provisioning,
    NodeStatus::Warming,
    NodeStatus::Active,
    NodeStatus::Maintenance,
    NodeStatus::Paused,
    NodeStatus::Unhealthy,
    NodeStatus::Decommissioned,
];

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Provisioning => "provisioning",
            NodeStatus::Warming => "warming",
            NodeStatus::Active => "active",
            NodeStatus::Maintenance => "maintenance",
            NodeStatus::Paused => "paused",
            NodeStatus::Unhealthy => "unhealthy",
            NodeStatus::Decommissioned => "decommissioned",
        }
    }

    /// "an active node", "a node in maintenance": for messages.
    pub fn a_node(self) -> &'static str {
        match self {
            NodeStatus::Provisioning => "a provisioning node",
            NodeStatus::Warming => "a warming node",
            NodeStatus::Active => "an active node",
            NodeStatus::Maintenance => "a node in maintenance",
            NodeStatus::Paused => "a paused node",
            NodeStatus::Unhealthy => "an unhealthy node",
            NodeStatus::Decommissioned => "a decommissioned node",
        }
    }

    /// Sends mail (is in rotation).
    pub fn serving(self) -> bool {
        matches!(self, NodeStatus::Warming | NodeStatus::Active)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_NODE_STATUSES
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL_NODE_STATUSES.iter().map(|n| n.as_str()).collect();
                format!(
                    "unknown node status {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Why a node is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseCause {
    /// Its IP is on a blocklist (the reputation monitor).
    Blocklist,
    /// Its bounce rate is too high.
    Bounces,
    /// Its warm-up stopped it (a bad day).
    Warmup,
    /// An operator took it out of rotation.
    Operator,
    /// Its request's service is suspended.
    Service,
}

impl PauseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseCause::Blocklist => "blocklist",
            PauseCause::Bounces => "bounces",
            PauseCause::Warmup => "warmup",
            PauseCause::Operator => "operator",
            PauseCause::Service => "service",
        }
    }
}

impl fmt::Display for PauseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PauseCause {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            PauseCause::Blocklist,
            PauseCause::Bounces,
            PauseCause::Warmup,
            PauseCause::Operator,
            PauseCause::Service,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| format!("unknown pause cause {s:?}"))
    }
}

/// What happens to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeEvent {
    /// Its server answered and it was registered: it starts its warm-up.
    Registered,
    /// Its warm-up finished.
    WarmupCompleted,
    /// Taken out of rotation for this cause.
    Pause(PauseCause),
    /// A pause is lifted. `Some(cause)` lifts only a pause of that cause (the machine that
    /// paused it, or the service reactivated); `None` is an operator lifting any pause but a
    /// suspended service's.
    Resume(Option<PauseCause>),
    /// An operator takes it out of rotation for work on it.
    EnterMaintenance,
    /// The work is done.
    LeaveMaintenance,
    /// Its agent missed its heartbeats.
    HeartbeatsMissed,
    /// Its agent answers again.
    HeartbeatsBack,
    /// Torn down.
    Decommission,
}

impl NodeEvent {
    /// The event's name in the event log.
    pub fn event_name(self) -> &'static str {
        match self {
            NodeEvent::Registered => "node.registered",
            NodeEvent::WarmupCompleted => "node.activated",
            NodeEvent::Pause(_) => "node.paused",
            NodeEvent::Resume(_) => "node.resumed",
            NodeEvent::EnterMaintenance => "node.maintenance",
            NodeEvent::LeaveMaintenance => "node.maintenance_done",
            NodeEvent::HeartbeatsMissed => "node.unhealthy",
            NodeEvent::HeartbeatsBack => "node.healthy",
            NodeEvent::Decommission => "node.decommissioned",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            NodeEvent::Registered => "be registered",
            NodeEvent::WarmupCompleted => "complete its warm-up",
            NodeEvent::Pause(_) => "be paused",
            NodeEvent::Resume(_) => "be resumed",
            NodeEvent::EnterMaintenance => "go into maintenance",
            NodeEvent::LeaveMaintenance => "leave maintenance",
            NodeEvent::HeartbeatsMissed => "be marked unhealthy",
            NodeEvent::HeartbeatsBack => "be marked healthy",
            NodeEvent::Decommission => "be decommissioned",
        }
    }
}

/// A node's status with what it remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub status: NodeStatus,
    /// Where it goes back to when taken out of rotation.
    pub resume: Option<NodeStatus>,
    /// Why it is paused.
    pub cause: Option<PauseCause>,
}

impl NodeState {
    pub fn new(status: NodeStatus) -> NodeState {
        NodeState {
            status,
            resume: None,
            cause: None,
        }
    }
}

/// Why an event may not move a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeRefusal {
    #[error("{} cannot {verb}{}", status.a_node(), only(allowed))]
    NotFrom {
        status: NodeStatus,
        verb: &'static str,
        allowed: &'static str,
    },
    #[error("the node is already paused ({cause})")]
    AlreadyPaused { cause: PauseCause },
    #[error("the node was paused by {cause}, not {asked}: its pause stays")]
    PausedByOther {
        cause: PauseCause,
        asked: PauseCause,
    },
    #[error("the node's service is suspended: reactivate its request instead")]
    ServiceSuspended,
}

fn only(allowed: &str) -> String {
    if allowed.is_empty() {
        String::new()
    } else {
        format!(": only {allowed}")
    }
}

/// Where `event` takes a node in `now`, or why it may not.
pub fn transition(now: NodeState, event: NodeEvent) -> Result<NodeState, NodeRefusal> {
    use NodeStatus as S;
    let refuse = |allowed: &'static str| NodeRefusal::NotFrom {
        status: now.status,
        verb: event.verb(),
        allowed,
    };
    // Out of rotation, remembering where to go back to.
    let out = |status: NodeStatus, cause: Option<PauseCause>| NodeState {
        status,
        resume: Some(now.status),
        cause,
    };
    let back = || NodeState::new(now.resume.unwrap_or(S::Warming));
    if now.status == S::Decommissioned {
        return Err(refuse(""));
    }
    match event {
        NodeEvent::Registered => match now.status {
            S::Provisioning => Ok(NodeState::new(S::Warming)),
            _ => Err(refuse("a provisioning node can")),
        },
        NodeEvent::WarmupCompleted => match now.status {
            S::Warming => Ok(NodeState::new(S::Active)),
            // Finished while out of rotation: it comes back active.
            S::Paused | S::Maintenance | S::Unhealthy if now.resume == Some(S::Warming) => {
                Ok(NodeState {
                    resume: Some(S::Active),
                    ..now
                })
            }
            _ => Err(refuse("a warming node can")),
        },
        NodeEvent::Pause(cause) => match now.status {
            S::Warming | S::Active => Ok(out(S::Paused, Some(cause))),
            // A suspended service stops whatever the node was doing.
            S::Maintenance | S::Unhealthy if cause == PauseCause::Service => {
                Ok(out(S::Paused, Some(cause)))
            }
            S::Paused => {
                let held = now.cause.unwrap_or(PauseCause::Operator);
                // A suspension takes over any other pause, so that neither the machine nor
                // an operator lifts it while the service is suspended; where to go back to
                // stays.
                if cause == PauseCause::Service && held != PauseCause::Service {
                    Ok(NodeState {
                        cause: Some(cause),
                        ..now
                    })
                } else {
                    Err(NodeRefusal::AlreadyPaused { cause: held })
                }
            }
            _ => Err(refuse("a warming or active node can be paused")),
        },
        NodeEvent::Resume(asked) => {
            if now.status != S::Paused {
                return Err(refuse("a paused node can be resumed"));
            }
            let held = now.cause.unwrap_or(PauseCause::Operator);
            match asked {
                Some(asked) if asked != held => {
                    Err(NodeRefusal::PausedByOther { cause: held, asked })
                }
                None if held == PauseCause::Service => Err(NodeRefusal::ServiceSuspended),
                _ => Ok(back()),
            }
        }
        NodeEvent::EnterMaintenance => match now.status {
            S::Warming | S::Active => Ok(out(S::Maintenance, None)),
            _ => Err(refuse("a warming or active node can")),
        },
        NodeEvent::LeaveMaintenance => match now.status {
            S::Maintenance => Ok(back()),
            _ => Err(refuse("a node in maintenance can")),
        },
        NodeEvent::HeartbeatsMissed => match now.status {
            S::Warming | S::Active => Ok(out(S::Unhealthy, None)),
            _ => Err(refuse("a warming or active node can")),
        },
        NodeEvent::HeartbeatsBack => match now.status {
            S::Unhealthy => Ok(back()),
            _ => Err(refuse("an unhealthy node can")),
        },
        NodeEvent::Decommission => Ok(NodeState::new(S::Decommissioned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeStatus as S;

    fn at(status: NodeStatus) -> NodeState {
        NodeState::new(status)
    }

    fn go(now: NodeState, events: &[NodeEvent]) -> Result<NodeState, NodeRefusal> {
        events.iter().try_fold(now, |s, e| transition(s, *e))
    }

    #[test]
    fn a_node_warms_up_then_serves_and_is_decommissioned() {
        let s = go(
            at(S::Provisioning),
            &[NodeEvent::Registered, NodeEvent::WarmupCompleted],
        )
        .expect("lifecycle");
        assert_eq!(s, at(S::Active));
        assert_eq!(
            transition(s, NodeEvent::Decommission).map(|s| s.status),
            Ok(S::Decommissioned)
        );
    }

    #[test]
    fn out_of_rotation_goes_back_where_it_was() {
        for from in [S::Warming, S::Active] {
            for (away, back) in [
                (
                    NodeEvent::Pause(PauseCause::Blocklist),
                    NodeEvent::Resume(Some(PauseCause::Blocklist)),
                ),
                (NodeEvent::EnterMaintenance, NodeEvent::LeaveMaintenance),
                (NodeEvent::HeartbeatsMissed, NodeEvent::HeartbeatsBack),
            ] {
                let out = transition(at(from), away).expect("away");
                assert_eq!(out.resume, Some(from));
                assert!(!out.status.serving());
                assert_eq!(transition(out, back), Ok(at(from)), "{away:?} from {from}");
            }
        }
    }

    #[test]
    fn the_monitor_lifts_only_its_own_pause_and_an_operator_not_a_suspension() {
        let by_operator =
            transition(at(S::Active), NodeEvent::Pause(PauseCause::Operator)).expect("pause");
        assert_eq!(
            transition(by_operator, NodeEvent::Resume(Some(PauseCause::Blocklist))),
            Err(NodeRefusal::PausedByOther {
                cause: PauseCause::Operator,
                asked: PauseCause::Blocklist
            })
        );
        let suspended =
            transition(at(S::Active), NodeEvent::Pause(PauseCause::Service)).expect("suspend");
        assert_eq!(
            transition(suspended, NodeEvent::Resume(None)),
            Err(NodeRefusal::ServiceSuspended)
        );
        assert_eq!(
            transition(suspended, NodeEvent::Resume(Some(PauseCause::Service))),
            Ok(at(S::Active))
        );
    }

    #[test]
    fn a_suspension_takes_over_a_pause_and_keeps_where_to_go_back() {
        let listed =
            transition(at(S::Warming), NodeEvent::Pause(PauseCause::Blocklist)).expect("listed");
        let suspended =
            transition(listed, NodeEvent::Pause(PauseCause::Service)).expect("suspended");
        assert_eq!(suspended.cause, Some(PauseCause::Service));
        assert_eq!(suspended.resume, Some(S::Warming), "not 'paused'");
        // The monitor cannot lift it now, and a machine's second pause is refused.
        assert!(transition(suspended, NodeEvent::Resume(Some(PauseCause::Blocklist))).is_err());
        assert_eq!(
            transition(suspended, NodeEvent::Pause(PauseCause::Warmup)),
            Err(NodeRefusal::AlreadyPaused {
                cause: PauseCause::Service
            })
        );
        // A node in maintenance is suspended too.
        let m = transition(at(S::Active), NodeEvent::EnterMaintenance).expect("maintenance");
        let s = transition(m, NodeEvent::Pause(PauseCause::Service)).expect("suspended");
        assert_eq!(s.resume, Some(S::Maintenance));
        assert!(transition(m, NodeEvent::Pause(PauseCause::Blocklist)).is_err());
    }

    #[test]
    fn refusals_name_the_status_and_what_may() {
        let e = transition(at(S::Maintenance), NodeEvent::Resume(None)).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "a node in maintenance cannot be resumed: only a paused node can be resumed"
        );
        let e = transition(
            at(S::Decommissioned),
            NodeEvent::Pause(PauseCause::Operator),
        )
        .expect_err("refused");
        assert_eq!(e.to_string(), "a decommissioned node cannot be paused");
        assert!(transition(at(S::Active), NodeEvent::Registered).is_err());
        assert!(transition(at(S::Active), NodeEvent::WarmupCompleted).is_err());
        // A warm-up that finishes while the node is out of rotation brings it back active.
        let paused =
            transition(at(S::Warming), NodeEvent::Pause(PauseCause::Bounces)).expect("paused");
        let done = transition(paused, NodeEvent::WarmupCompleted).expect("completed");
        assert_eq!((done.status, done.resume), (S::Paused, Some(S::Active)));
        assert!(transition(at(S::Decommissioned), NodeEvent::Decommission).is_err());
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in ALL_NODE_STATUSES {
            assert_eq!(s.as_str().parse::<NodeStatus>(), Ok(s));
        }
        assert!("gone".parse::<NodeStatus>().is_err());
    }
}
