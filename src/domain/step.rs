//! The steps requests run, their sub-tasks and per-step status. Pure data. A provisioning
//! request runs the four of [`STEPS`]; a resize runs the two of [`RESIZE_STEPS`].

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Allocate,
    Configure,
    Activate,
    Verify,
    /// A resize: the provider's upgrade ordered and applied.
    Resize,
    /// A resize: the node checked on its new size, then the upgrade confirmed.
    Confirm,
}

pub const STEPS: [Step; 4] = [
    Step::Allocate,
    Step::Configure,
    Step::Activate,
    Step::Verify,
];

pub const RESIZE_STEPS: [Step; 2] = [Step::Resize, Step::Confirm];

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocate => "allocate",
            Self::Configure => "configure",
            Self::Activate => "activate",
            Self::Verify => "verify",
            Self::Resize => "resize",
            Self::Confirm => "confirm",
        }
    }

    pub fn position(self) -> i64 {
        match self {
            Self::Allocate | Self::Resize => 1,
            Self::Configure | Self::Confirm => 2,
            Self::Activate => 3,
            Self::Verify => 4,
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        STEPS
            .iter()
            .chain(RESIZE_STEPS.iter())
            .copied()
            .find(|st| st.as_str() == s)
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
            Self::Resize => &["reserve_capacity", "upgrade", "wait_running"],
            Self::Confirm => &["smtp_probe", "confirm_upgrade", "record_plan"],
        }
    }

    /// Where a sub-task sits in its step, for ordering (from 1): its place in
    /// [`tasks`](Self::tasks); an SSH bootstrap's sub-tasks ([`BOOTSTRAP_TASKS`]) sit
    /// between `tls_certificate` and the `mail_stack` summary that follows them.
    pub fn task_position(self, task: &str) -> i64 {
        let tasks = self.tasks();
        let at = |t: &str| tasks.iter().position(|x| *x == t);
        let pos = match (self, BOOTSTRAP_TASKS.iter().position(|x| *x == task)) {
            (Self::Configure, Some(i)) => at("mail_stack").unwrap_or(0) + i,
            (Self::Configure, None) if task == "mail_stack" => {
                at("mail_stack").unwrap_or(0) + BOOTSTRAP_TASKS.len()
            }
            _ => at(task).unwrap_or(0),
        };
        pos as i64 + 1
    }
}

/// The sub-tasks of a bootstrap over SSH, recorded in the configure step in this order
/// (the names of [`crate::bootstrap::Task`]).
pub const BOOTSTRAP_TASKS: [&str; 8] = [
    "packages",
    "tls_install",
    "opendkim",
    "postfix",
    "nftables",
    "fail2ban",
    "reload",
    "agent",
];

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
