//! The request state machine of `mailfleet::domain`, checked against the table in
//! `architecture.md` ("The request state machine"): every (state, event) pair, the terminal
//! states, the names, the outbox events, and properties of the `Lifecycle` model over random
//! event sequences.

use std::collections::{BTreeSet, HashSet};

use mailfleet::domain::resource::LifecycleError;
use mailfleet::domain::state::TransitionError;
use mailfleet::domain::{
    event_names, transition, Lifecycle, LifecycleEvent, RequestEvent, RequestState, ResourceKind,
    ALL_STATES,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use RequestEvent as E;
use RequestState as S;

// ---------------------------------------------------------------------------------------------
// The expected table, written independently of `transition`.
// ---------------------------------------------------------------------------------------------

/// Every state, in the order of the architecture table, with its documented name.
const STATES: [(RequestState, &str); 14] = [
    (S::Queued, "queued"),
    (S::PendingApproval, "pending_approval"),
    (S::Allocating, "allocating"),
    (S::Configuring, "configuring"),
    (S::Activating, "activating"),
    (S::AwaitingInput, "awaiting_input"),
    (S::Verifying, "verifying"),
    (S::Completed, "completed"),
    (S::Suspended, "suspended"),
    (S::Failed, "failed"),
    (S::RollingBack, "rolling_back"),
    (S::RolledBack, "rolled_back"),
    (S::Deprovisioned, "deprovisioned"),
    (S::Rejected, "rejected"),
];

const TERMINAL: [RequestState; 3] = [S::RolledBack, S::Deprovisioned, S::Rejected];

const fn teardown(remaining: u32, deprovision: bool) -> RequestEvent {
    E::TeardownFinished {
        remaining,
        deprovision,
    }
}

/// Every event variant; `TeardownFinished` with remaining ∈ {0, 1} × deprovision ∈ {no, yes}.
const EVENTS: [RequestEvent; 16] = [
    E::RequireApproval,
    E::Approve,
    E::Reject,
    E::Admit,
    E::StepSucceeded,
    E::StepFailed,
    E::AwaitInput,
    E::InputProvided,
    E::Suspend,
    E::Reactivate,
    E::Rollback,
    E::Deprovision,
    teardown(0, false),
    teardown(0, true),
    teardown(1, false),
    teardown(1, true),
];

/// The legal arrows of the architecture table, one row per (state, event) pair that moves.
const LEGAL: [(RequestState, RequestEvent, RequestState); 27] = [
    // queued → pending_approval, allocating, rejected
    (S::Queued, E::RequireApproval, S::PendingApproval),
    (S::Queued, E::Admit, S::Allocating),
    (S::Queued, E::Reject, S::Rejected),
    // pending_approval → queued, rejected
    (S::PendingApproval, E::Approve, S::Queued),
    (S::PendingApproval, E::Reject, S::Rejected),
    // allocating → configuring, awaiting_input, failed, rolling_back
    (S::Allocating, E::StepSucceeded, S::Configuring),
    (S::Allocating, E::AwaitInput, S::AwaitingInput),
    (S::Allocating, E::StepFailed, S::Failed),
    (S::Allocating, E::Rollback, S::RollingBack),
    // configuring → activating, failed, rolling_back
    (S::Configuring, E::StepSucceeded, S::Activating),
    (S::Configuring, E::StepFailed, S::Failed),
    (S::Configuring, E::Rollback, S::RollingBack),
    // activating → verifying, failed, rolling_back
    (S::Activating, E::StepSucceeded, S::Verifying),
    (S::Activating, E::StepFailed, S::Failed),
    (S::Activating, E::Rollback, S::RollingBack),
    // awaiting_input → allocating (the access details came), rolling_back
    (S::AwaitingInput, E::InputProvided, S::Allocating),
    (S::AwaitingInput, E::Rollback, S::RollingBack),
    // verifying → completed, failed, rolling_back
    (S::Verifying, E::StepSucceeded, S::Completed),
    (S::Verifying, E::StepFailed, S::Failed),
    (S::Verifying, E::Rollback, S::RollingBack),
    // completed → suspended, rolling_back (deprovision)
    (S::Completed, E::Suspend, S::Suspended),
    (S::Completed, E::Deprovision, S::RollingBack),
    // suspended → completed (reactivate), rolling_back (deprovision)
    (S::Suspended, E::Reactivate, S::Completed),
    (S::Suspended, E::Deprovision, S::RollingBack),
    // failed → rolling_back
    (S::Failed, E::Rollback, S::RollingBack),
    // rolling_back → rolled_back, deprovisioned (only once nothing is held)
    (S::RollingBack, teardown(0, false), S::RolledBack),
    (S::RollingBack, teardown(0, true), S::Deprovisioned),
];

fn expected(state: RequestState, event: RequestEvent) -> Option<RequestState> {
    LEGAL
        .iter()
        .find(|(s, e, _)| *s == state && *e == event)
        .map(|(_, _, next)| *next)
}

/// Exhaustive on purpose (no wildcard): a new state stops this file compiling until the
/// tables above are updated.
fn state_slot(state: RequestState) -> usize {
    match state {
        S::Queued => 0,
        S::PendingApproval => 1,
        S::Allocating => 2,
        S::Configuring => 3,
        S::Activating => 4,
        S::AwaitingInput => 5,
        S::Verifying => 6,
        S::Completed => 7,
        S::Suspended => 8,
        S::Failed => 9,
        S::RollingBack => 10,
        S::RolledBack => 11,
        S::Deprovisioned => 12,
        S::Rejected => 13,
    }
}

/// Exhaustive on purpose (no wildcard): a new event stops this file compiling until the
/// tables above are updated.
fn event_slot(event: RequestEvent) -> usize {
    match event {
        E::RequireApproval => 0,
        E::Approve => 1,
        E::Reject => 2,
        E::Admit => 3,
        E::StepSucceeded => 4,
        E::StepFailed => 5,
        E::AwaitInput => 6,
        E::InputProvided => 7,
        E::Suspend => 8,
        E::Reactivate => 9,
        E::Rollback => 10,
        E::Deprovision => 11,
        E::TeardownFinished { .. } => 12,
    }
}

/// The (from, to) pairs that `transition` allows for some event.
fn moves_allowed_by_transition() -> BTreeSet<(RequestState, RequestState)> {
    let mut moves = BTreeSet::new();
    for (state, _) in STATES {
        for event in EVENTS {
            if let Ok(next) = transition(state, event) {
                moves.insert((state, next));
            }
        }
    }
    moves
}

// ---------------------------------------------------------------------------------------------
// Transition table
// ---------------------------------------------------------------------------------------------

#[test]
fn every_state_event_pair_matches_the_table() {
    // The test's lists cover every variant, and agree with the crate's own list of states.
    let states: BTreeSet<usize> = STATES.iter().map(|(s, _)| state_slot(*s)).collect();
    assert_eq!(states.len(), 14, "STATES must list each state once");
    let crate_states: BTreeSet<RequestState> = ALL_STATES.iter().copied().collect();
    let test_states: BTreeSet<RequestState> = STATES.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        crate_states, test_states,
        "ALL_STATES must list every state once"
    );
    assert_eq!(ALL_STATES.len(), 14);
    let events: BTreeSet<usize> = EVENTS.iter().map(|e| event_slot(*e)).collect();
    assert_eq!(
        events.len(),
        13,
        "EVENTS must cover every RequestEvent variant"
    );

    // The expected table itself has no duplicate rows.
    let rows: HashSet<(RequestState, RequestEvent)> =
        LEGAL.iter().map(|(s, e, _)| (*s, *e)).collect();
    assert_eq!(rows.len(), LEGAL.len(), "duplicate row in LEGAL");

    let mut legal = 0;
    let mut mismatches = Vec::new();
    for (state, _) in STATES {
        for event in EVENTS {
            let got = transition(state, event);
            match (expected(state, event), &got) {
                (Some(next), Ok(actual)) if *actual == next => legal += 1,
                (None, Err(_)) => {}
                (want, _) => mismatches.push(format!(
                    "{state} + {event:?}: expected {}, got {got:?}",
                    want.map_or_else(|| "an error".to_owned(), |s| format!("Ok({s})"))
                )),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "transition disagrees with the table:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(legal, 27, "number of legal (state, event) pairs changed");
    assert_eq!(legal, LEGAL.len());
}

#[test]
fn terminal_states_accept_no_event() {
    for state in TERMINAL {
        assert!(state.is_terminal(), "{state} should be terminal");
        for event in EVENTS {
            let got = transition(state, event);
            assert!(got.is_err(), "{state} + {event:?} gave {got:?}");
        }
    }
    // ...and they are the only states nothing leaves.
    for (state, _) in STATES {
        let leaves = EVENTS.iter().any(|e| transition(state, *e).is_ok());
        assert_eq!(
            leaves,
            !TERMINAL.contains(&state),
            "{state}: terminal means no event leaves it"
        );
        assert_eq!(state.is_terminal(), TERMINAL.contains(&state), "{state}");
    }
}

#[test]
fn teardown_is_illegal_while_anything_is_held() {
    for remaining in [1, 2, 7, u32::MAX] {
        for deprovision in [false, true] {
            assert_eq!(
                transition(S::RollingBack, teardown(remaining, deprovision)),
                Err(TransitionError::StillHolding { remaining }),
                "remaining={remaining} deprovision={deprovision}"
            );
        }
    }

    // The lifecycle model counts what it holds itself: claiming `remaining: 0` does not help.
    let mut lc = Lifecycle::new();
    for ev in [
        LifecycleEvent::Request(E::Admit),
        LifecycleEvent::Allocate(ResourceKind::Quota),
        LifecycleEvent::Request(E::Rollback),
    ] {
        lc.apply(ev).unwrap();
    }
    assert_eq!(lc.state(), S::RollingBack);
    let before = lc.clone();
    assert_eq!(
        lc.apply(LifecycleEvent::FinishTeardown),
        Err(LifecycleError::Transition(TransitionError::StillHolding {
            remaining: 1
        }))
    );
    assert!(lc
        .apply(LifecycleEvent::Request(teardown(0, false)))
        .is_err());
    assert_eq!(lc, before, "a refused teardown changes nothing");
    lc.apply(LifecycleEvent::ReleaseNewest).unwrap();
    lc.apply(LifecycleEvent::FinishTeardown).unwrap();
    assert_eq!(lc.state(), S::RolledBack);
    assert!(lc.held.is_empty());
}

#[test]
fn rollback_of_a_completed_request_points_to_deprovision() {
    for state in [S::Completed, S::Suspended] {
        let err = transition(state, E::Rollback).unwrap_err();
        assert_eq!(err, TransitionError::UseDeprovision, "{state}");
        assert!(err.to_string().contains("deprovision"), "{err}");
        assert_eq!(transition(state, E::Deprovision), Ok(S::RollingBack));
    }
    // Deprovision is only for finished services; unfinished ones roll back.
    for state in [S::Queued, S::Allocating, S::Verifying, S::Failed] {
        assert!(transition(state, E::Deprovision).is_err(), "{state}");
    }
}

#[test]
fn state_names_round_trip() {
    for (state, name) in STATES {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        assert!(is_snake_case(name), "{name:?} is not snake_case");
        assert_eq!(name.parse::<RequestState>(), Ok(state));
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<RequestState>(&json).unwrap(), state);
    }
    let names: HashSet<&str> = STATES.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names.len(), STATES.len(), "state names must be distinct");

    for bad in [
        "",
        "Queued",
        "pending-approval",
        "PendingApproval",
        "rolled back",
        "done",
    ] {
        assert!(bad.parse::<RequestState>().is_err(), "{bad:?} parsed");
        assert!(serde_json::from_str::<RequestState>(&format!("\"{bad}\"")).is_err());
    }
}

fn is_snake_case(s: &str) -> bool {
    !s.is_empty()
        && s.split('_')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// `family.name`, both lowercase words joined by hyphens: "provisioning.step-completed".
fn is_dotted_event_name(s: &str) -> bool {
    let kebab = |part: &str| {
        !part.is_empty()
            && part
                .split('-')
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
    };
    matches!(s.split_once('.'), Some((family, name)) if kebab(family) && kebab(name))
}

#[test]
fn event_names_cover_every_legal_transition() {
    assert!(is_dotted_event_name("provisioning.step-completed"));
    assert!(!is_dotted_event_name("Provisioning.completed"));
    assert!(!is_dotted_event_name("provisioning"));
    assert!(!is_dotted_event_name("provisioning.rolled_back"));

    let mut published: BTreeSet<&str> = BTreeSet::new();
    let started = event_names(None, S::Queued);
    assert!(started.contains(&"provisioning.started"), "{started:?}");
    published.extend(started.iter().copied());

    let moves: BTreeSet<(RequestState, RequestState)> =
        LEGAL.iter().map(|(f, _, t)| (*f, *t)).collect();
    for (from, to) in moves {
        let names = event_names(Some(from), to);
        assert!(!names.is_empty(), "{from} → {to} publishes nothing");
        for name in names {
            assert!(
                is_dotted_event_name(name),
                "{from} → {to}: bad name {name:?}"
            );
        }
        published.extend(names.iter().copied());
    }

    for seed in [
        "provisioning.started",
        "provisioning.step-completed",
        "resource.allocated",
        "service.activated",
        "provisioning.completed",
        "provisioning.failed",
        "service.suspended",
        "service.reactivated",
        "provisioning.rolled-back",
    ] {
        assert!(
            published.contains(seed),
            "seed event {seed} is never published; published: {published:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The lifecycle model
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fixed_sequence_completes_then_deprovisions_releasing_three_resources() {
    use LifecycleEvent::{Allocate, FinishTeardown, ReleaseNewest, Request};
    use ResourceKind::{Firewall, Instance, Quota};

    let mut lc = Lifecycle::new();
    assert_eq!(lc.state(), S::Queued);
    for ev in [
        Request(E::Admit),
        Allocate(Quota),
        Allocate(Instance),
        Request(E::StepSucceeded),
        Allocate(Firewall),
        Request(E::StepSucceeded),
        Request(E::StepSucceeded),
        Request(E::StepSucceeded),
    ] {
        lc.apply(ev)
            .unwrap_or_else(|e| panic!("{ev:?} in {}: {e}", lc.state()));
    }
    assert_eq!(lc.state(), S::Completed);
    assert_eq!(lc.held, [Quota, Instance, Firewall]);
    assert_eq!(
        lc.apply(ReleaseNewest),
        Err(LifecycleError::ReleaseOutsideTeardown {
            state: S::Completed
        })
    );
    assert!(lc.apply(FinishTeardown).is_err());
    assert_eq!(lc.held, [Quota, Instance, Firewall]);

    // Completed holds: rollback is refused, deprovision starts the teardown.
    assert_eq!(
        lc.apply(Request(E::Rollback)),
        Err(LifecycleError::Transition(TransitionError::UseDeprovision))
    );
    assert_eq!(lc.state(), S::Completed);
    lc.apply(Request(E::Deprovision)).unwrap();
    assert_eq!(lc.state(), S::RollingBack);
    assert!(
        lc.apply(Allocate(Quota)).is_err(),
        "no allocation while rolling back"
    );

    // Released newest first; teardown only finishes at zero.
    for expect_left in [vec![Quota, Instance], vec![Quota], vec![]] {
        assert!(lc.apply(FinishTeardown).is_err());
        lc.apply(ReleaseNewest).unwrap();
        assert_eq!(lc.held, expect_left);
    }
    assert_eq!(lc.apply(ReleaseNewest), Err(LifecycleError::NothingHeld));
    lc.apply(FinishTeardown).unwrap();
    assert_eq!(lc.state(), S::Deprovisioned);
    assert!(lc.held.is_empty());

    let done = lc.clone();
    for ev in [
        Request(E::Admit),
        Allocate(Quota),
        ReleaseNewest,
        FinishTeardown,
    ] {
        assert!(
            lc.apply(ev).is_err(),
            "{ev:?} accepted after deprovisioning"
        );
    }
    assert_eq!(lc, done);
}

#[test]
fn a_failed_request_rolls_back_not_deprovisions() {
    use LifecycleEvent::{Allocate, FinishTeardown, ReleaseNewest, Request};
    let mut lc = Lifecycle::new();
    for ev in [
        Request(E::RequireApproval),
        Request(E::Approve),
        Request(E::Admit),
        Allocate(ResourceKind::Capacity),
        Request(E::StepFailed),
        Request(E::Rollback),
        ReleaseNewest,
        // Even a caller that asks for deprovisioned gets rolled_back: nothing was completed.
        Request(teardown(0, true)),
    ] {
        lc.apply(ev)
            .unwrap_or_else(|e| panic!("{ev:?} in {}: {e}", lc.state()));
    }
    assert_eq!(lc.state(), S::RolledBack);
    assert!(lc.held.is_empty());
    assert!(lc.apply(FinishTeardown).is_err());
}

fn request_event() -> impl Strategy<Value = RequestEvent> {
    prop_oneof![
        1 => Just(E::RequireApproval),
        2 => Just(E::Approve),
        1 => Just(E::Reject),
        5 => Just(E::Admit),
        12 => Just(E::StepSucceeded),
        1 => Just(E::StepFailed),
        1 => Just(E::AwaitInput),
        2 => Just(E::InputProvided),
        1 => Just(E::Suspend),
        1 => Just(E::Reactivate),
        1 => Just(E::Rollback),
        3 => Just(E::Deprovision),
        1 => (0..3u32, any::<bool>()).prop_map(|(r, d)| teardown(r, d)),
    ]
}

fn resource_kind() -> impl Strategy<Value = ResourceKind> {
    prop_oneof![
        Just(ResourceKind::Quota),
        Just(ResourceKind::Capacity),
        Just(ResourceKind::Instance),
        Just(ResourceKind::Ip),
        Just(ResourceKind::Firewall),
        Just(ResourceKind::Rdns),
        Just(ResourceKind::Node),
    ]
}

fn lifecycle_event() -> impl Strategy<Value = LifecycleEvent> {
    prop_oneof![
        10 => request_event().prop_map(LifecycleEvent::Request),
        2 => resource_kind().prop_map(LifecycleEvent::Allocate),
        4 => Just(LifecycleEvent::ReleaseNewest),
        2 => Just(LifecycleEvent::FinishTeardown),
    ]
}

fn sequence() -> impl Strategy<Value = Vec<LifecycleEvent>> {
    prop::collection::vec(lifecycle_event(), 0..=60)
}

/// Applies the events to a fresh lifecycle and returns every lifecycle it passed through,
/// starting with the fresh one. Refused events must leave the lifecycle exactly as it was.
fn run(events: &[LifecycleEvent]) -> Result<Vec<Lifecycle>, TestCaseError> {
    let mut lc = Lifecycle::new();
    let mut trail = vec![lc.clone()];
    for ev in events {
        let before = lc.clone();
        match lc.apply(*ev) {
            Ok(()) => trail.push(lc.clone()),
            Err(e) => prop_assert_eq!(&lc, &before, "refused {:?} ({}) changed it", ev, e),
        }
    }
    Ok(trail)
}

proptest! {
    #![proptest_config(Config::with_cases(512))]

    #[test]
    fn no_illegal_state_is_reached(events in sequence()) {
        let allowed = moves_allowed_by_transition();
        let mut lc = Lifecycle::new();
        for ev in &events {
            let before = lc.clone();
            match lc.apply(*ev) {
                Err(e) => prop_assert_eq!(&lc, &before, "refused {:?} ({}) changed it", ev, e),
                Ok(()) => {
                    let (from, to) = (before.state(), lc.state());
                    prop_assert!(
                        from == to || allowed.contains(&(from, to)),
                        "{:?} jumped {} → {}", ev, from, to
                    );
                    match ev {
                        LifecycleEvent::Request(E::TeardownFinished { .. })
                        | LifecycleEvent::FinishTeardown => {
                            prop_assert_eq!(from, S::RollingBack);
                            prop_assert!(matches!(to, S::RolledBack | S::Deprovisioned));
                        }
                        LifecycleEvent::Request(re) => {
                            prop_assert_eq!(Ok(to), transition(from, *re));
                        }
                        LifecycleEvent::Allocate(_) | LifecycleEvent::ReleaseNewest => {
                            prop_assert_eq!(from, to, "{:?} moved the state", ev);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn terminal_requests_hold_nothing(events in sequence()) {
        for lc in run(&events)? {
            if TERMINAL.contains(&lc.state()) {
                prop_assert!(lc.held.is_empty(), "{} holds {:?}", lc.state(), lc.held);
            }
        }
    }

    #[test]
    fn nothing_is_held_before_admission(events in sequence()) {
        for lc in run(&events)? {
            if matches!(lc.state(), S::Queued | S::PendingApproval | S::Rejected) {
                prop_assert!(lc.held.is_empty(), "{} holds {:?}", lc.state(), lc.held);
            }
        }
    }

    #[test]
    fn deprovisioned_only_after_completion(events in sequence()) {
        let trail = run(&events)?;
        let end = trail.last().map(Lifecycle::state);
        if end == Some(S::Deprovisioned) {
            prop_assert!(
                trail.iter().any(|lc| lc.state() == S::Completed),
                "deprovisioned without ever completing: {:?}", events
            );
        }
    }
}

/// The generator actually reaches the interesting ends, so the properties above are not
/// vacuous.
#[test]
fn random_sequences_reach_completed_deprovisioned_and_rolled_back() {
    let mut runner = TestRunner::deterministic();
    let strategy = sequence();
    let mut reached: BTreeSet<RequestState> = BTreeSet::new();
    let mut deprovisioned_holding_before = 0;
    for _ in 0..512 {
        let events = strategy.new_tree(&mut runner).unwrap().current();
        let trail = run(&events).unwrap();
        reached.extend(trail.iter().map(Lifecycle::state));
        if trail.last().map(Lifecycle::state) == Some(S::Deprovisioned)
            && trail.iter().any(|lc| !lc.held.is_empty())
        {
            deprovisioned_holding_before += 1;
        }
    }
    for state in [
        S::Completed,
        S::Suspended,
        S::AwaitingInput,
        S::Failed,
        S::RolledBack,
        S::Deprovisioned,
        S::Rejected,
    ] {
        assert!(
            reached.contains(&state),
            "generator never reached {state}: {reached:?}"
        );
    }
    assert!(
        deprovisioned_holding_before >= 5,
        "only {deprovisioned_holding_before} runs deprovisioned after holding something"
    );
}
