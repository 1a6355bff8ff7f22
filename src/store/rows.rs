//! Rows as the store hands them out. Timestamps stay RFC 3339 text; states are parsed into
//! domain types by the accessors.

use crate::domain::{RequestState, Step, StepStatus};
use serde::Serialize;

/// Implements `from_row` by reading each field from the column of the same name.
macro_rules! from_row {
    ($t:ident { $($f:ident),* $(,)? }) => {
        impl $t {
            pub(crate) fn from_row(r: &crate::store::sql::Row<'_>) -> crate::store::sql::SqlResult<Self> {
                Ok(Self { $($f: r.get(stringify!($f))?),* })
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRow {
    pub id: String,
    pub tenant: String,
    pub region: String,
    pub plan: String,
    pub kind: String,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    pub label: String,
    pub domain: Option<String>,
    pub state: String,
    pub requested_by: String,
    pub cluster: Option<String>,
    pub approval_rule: Option<String>,
    /// Which version of the rule (as mirrored in `approval_rules`) held the request.
    pub approval_rule_version: Option<i64>,
    pub approval_reason: Option<String>,
    pub wait_reason: Option<String>,
    pub teardown: Option<String>,
    pub cancel_requested: Option<String>,
    pub error: Option<String>,
    pub needs_attention: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<String>,
    pub fence: i64,
    pub next_run_at: String,
    pub progress_at: String,
    pub created_at: String,
    pub updated_at: String,
    /// `provision` or `resize` (see [`crate::domain::Operation`]).
    pub operation: String,
    /// A resize: the provisioning request of the node it resizes.
    pub target: Option<String>,
    /// A resize: the plan the node was on when it was filed.
    pub from_plan: Option<String>,
    /// Filed by the engine's scaling (seed 001): the cause it answers, `capacity` or
    /// `queue:<node id>`.
    pub scaling_cause: Option<String>,
}

impl RequestRow {
    /// What the request does. Only names written from `Operation::as_str` are stored.
    pub fn operation(&self) -> crate::domain::Operation {
        crate::domain::Operation::parse(&self.operation)
            .unwrap_or(crate::domain::Operation::Provision)
    }

    /// The state as the domain type. The column only ever holds names written from
    /// `RequestState::as_str`, so a parse failure means a corrupted row: shown as failed.
    pub fn state(&self) -> RequestState {
        self.state.parse().unwrap_or(RequestState::Failed)
    }

    /// What holds the request, in words: an approval (and the rule), or what admission is
    /// waiting for (a prerequisite, the tenant's in-flight limit, cluster capacity).
    pub fn why_waiting(&self) -> Option<String> {
        match self.state() {
            RequestState::PendingApproval => {
                Some(match (&self.approval_reason, &self.approval_rule) {
                    (Some(why), _) => format!("awaiting approval ({why})"),
                    (None, Some(rule)) => format!("awaiting approval ({rule})"),
                    (None, None) => "awaiting approval".to_string(),
                })
            }
            RequestState::Queued => self.wait_reason.clone(),
            // A compensation being retried, or stalled (then it needs attention).
            RequestState::RollingBack => self.wait_reason.clone(),
            // Access details a person must enter; a provider whose circuit is open.
            RequestState::AwaitingInput
            | RequestState::Allocating
            | RequestState::Configuring
            | RequestState::Activating
            | RequestState::Verifying => self.wait_reason.clone(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRow {
    pub request_id: String,
    pub step: String,
    pub position: i64,
    pub status: String,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl StepRow {
    pub fn step(&self) -> Option<Step> {
        Step::parse(&self.step)
    }
    pub fn status(&self) -> StepStatus {
        StepStatus::parse(&self.status).unwrap_or(StepStatus::Pending)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub request_id: String,
    pub step: String,
    pub name: String,
    pub position: i64,
    pub status: String,
    pub detail: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionRow {
    pub id: i64,
    pub request_id: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub actor: String,
    pub reason: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceRow {
    pub id: String,
    pub request_id: String,
    pub seq: i64,
    pub kind: String,
    pub status: String,
    pub provider: Option<String>,
    pub provider_ref: Option<String>,
    pub tenant: String,
    pub cluster: Option<String>,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
    pub slots: i64,
    pub detail: Option<String>,
    pub created_at: String,
    pub released_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub id: String,
    pub request_id: Option<String>,
    pub provider_id: Option<String>,
    pub tenant: String,
    pub label: String,
    pub hostname: String,
    pub ip_address: Option<String>,
    pub region: String,
    pub cluster: Option<String>,
    pub plan: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub resume_status: Option<String>,
    pub reputation_score: i64,
    pub current_load: i64,
    pub created_at: String,
    pub updated_at: String,
    pub last_heartbeat: Option<String>,
    /// When its certificate expires (RFC 3339), if it has one.
    pub cert_not_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub name: String,
    pub request_id: Option<String>,
    pub node_id: Option<String>,
    pub tenant: Option<String>,
    pub actor: String,
    pub payload: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

/// Everything about one request, for `request show` and the detail pane.
#[derive(Debug, Clone, Serialize)]
pub struct RequestDetail {
    pub request: RequestRow,
    pub depends_on: Vec<String>,
    pub steps: Vec<StepRow>,
    pub tasks: Vec<TaskRow>,
    pub transitions: Vec<TransitionRow>,
    pub resources: Vec<ResourceRow>,
    pub events: Vec<EventRow>,
    pub node: Option<NodeRow>,
    /// The DNS records the configure step planned and published, as they stand.
    pub records: Vec<super::DnsRecordRow>,
    /// Its certificates, newest first (never their keys).
    pub certificates: Vec<super::CertRow>,
}

/// Use of a tenant's quota or a cluster's capacity, summed over live reservations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub nodes: i64,
    pub cpu: i64,
    pub memory_gb: i64,
    pub storage_gb: i64,
}

from_row!(RequestRow {
    id,
    tenant,
    region,
    plan,
    kind,
    cpu,
    memory_gb,
    storage_gb,
    label,
    domain,
    state,
    requested_by,
    cluster,
    approval_rule,
    approval_rule_version,
    approval_reason,
    wait_reason,
    teardown,
    cancel_requested,
    error,
    needs_attention,
    lease_owner,
    lease_expires_at,
    fence,
    next_run_at,
    progress_at,
    created_at,
    updated_at,
    operation,
    target,
    from_plan,
    scaling_cause
});
from_row!(StepRow {
    request_id,
    step,
    position,
    status,
    attempts,
    started_at,
    finished_at,
    error
});
from_row!(TaskRow {
    request_id,
    step,
    name,
    position,
    status,
    detail,
    updated_at
});
from_row!(TransitionRow {
    id,
    request_id,
    from_state,
    to_state,
    actor,
    reason,
    at
});
from_row!(ResourceRow {
    id,
    request_id,
    seq,
    kind,
    status,
    provider,
    provider_ref,
    tenant,
    cluster,
    cpu,
    memory_gb,
    storage_gb,
    slots,
    detail,
    created_at,
    released_at
});
from_row!(NodeRow {
    id,
    request_id,
    provider_id,
    tenant,
    label,
    hostname,
    ip_address,
    region,
    cluster,
    plan,
    status,
    status_reason,
    resume_status,
    reputation_score,
    current_load,
    created_at,
    updated_at,
    last_heartbeat,
    cert_not_after
});
from_row!(EventRow {
    seq,
    id,
    name,
    request_id,
    node_id,
    tenant,
    actor,
    payload,
    at
});
from_row!(AuditRow {
    id,
    at,
    actor,
    action,
    target,
    detail
});
