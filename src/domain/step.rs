//! The four pipeline steps, their sub-tasks and per-step status. Pure data.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Allocate,
    Configure,
    Activate,
    Verify,
}

pub const STEPS: [Step; 4] = [
    Step::Allocate,
    Step::Configure,
    Step::Activate,
    Step::Verify,
];

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocate => "allocate",
            Self::Configure => "configure",
            Self::Activate => "activate",
            Self::Verify => "verify",
        }
    }

    pub fn position(self) -> i64 {
        match self {
            Self::Allocate => 1,
            Self::Configure => 2,
            Self::Activate => 3,
            Self::Verify => 4,
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        STEPS.iter().copied().find(|st| st.as_str() == s)
    }

    /// The sub-tasks the engine records for this step, in the order it runs them.
    pub fn tasks(self) -> &'static [&'static str] {
        match self {
            Self::Allocate => &["reserve_capacity", "create_instance", "wait_for_ip"],
            Self::Configure => &[
                "firewall",
                "rdns",
                "dkim_key",
                "dns_publish",
                "tls_certificate",
                "mail_stack",
            ],
            Self::Activate => &["start_services", "wait_active", "register_node"],
            Self::Verify => &[
                "dns_propagation",
                "rdns_confirm",
                "tls_check",
                "smtp_probe",
                "submission_probe",
                "test_message",
            ],
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        [Self::Pending, Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
