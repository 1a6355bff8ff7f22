//! Pure domain types and rules: the request state machine, steps, resources, retry policy,
//! approval rules, validation. No I/O, no async, no clock.

pub mod actor;
pub mod approval;
pub mod batch;
pub mod capacity;
pub mod hostname;
pub mod ids;
pub mod node;
pub mod records;
pub mod resource;
pub mod retry;
pub mod state;
pub mod step;
pub mod validate;
pub mod warmup;

pub use resource::{Lifecycle, LifecycleEvent, ResourceKind};
pub use retry::RetryPolicy;
pub use state::{
    event_names, event_names_for, transition, transition_for, Operation, RequestEvent,
    RequestState, TransitionError, ALL_STATES,
};
pub use step::{Step, StepStatus, BOOTSTRAP_TASKS, RESIZE_STEPS, STEPS};
