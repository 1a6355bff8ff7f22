//! The console without a terminal: every view drawn on ratatui's TestBackend with a fixed
//! clock and data (insta snapshots), escape sequences neutralised, narrow screens, and a
//! headless App driven through Actions against a real engine.

mod support;

use chrono::{DateTime, TimeZone, Utc};
use mailfleet::store::{
    ConsoleNode, ConsoleRequest, ConsoleSnapshot, ListingRow, StepSummary, Usage,
};
use mailfleet::tui::action::{Action, View, VIEWS};
use mailfleet::tui::app::{App, Effect, Mode};
use mailfleet::tui::keymap::Keymap;
use mailfleet::tui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn at(min_ago: i64) -> String {
    mailfleet::clock::ts(now() - chrono::Duration::minutes(min_ago))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .expect("fixed time")
}

fn id(n: u32) -> String {
    format!("01a20000-0000-7000-8000-0000{n:08x}")
}

fn uid(n: u32) -> uuid::Uuid {
    id(n).parse().expect("uuid")
}

/// Minutes ago, as the console's rows hold times: unix milliseconds.
fn at_ms(min_ago: i64) -> i64 {
    (now() - chrono::Duration::minutes(min_ago)).timestamp_millis()
}

fn request(n: u32, tenant: &str, label: &str, state: &str, min_ago: i64) -> ConsoleRequest {
    ConsoleRequest {
        id: uid(n),
        tenant: tenant.into(),
        region: "dallas".into(),
        plan: "ssd-1".into(),
        cpu: 1,
        memory_gb: 1,
        storage_gb: 30,
        label: label.into(),
        domain: None,
        state: state.into(),
        requested_by: "alice".into(),
        approval_rule: None,
        approval_reason: None,
        wait_reason: None,
        error: None,
        needs_attention: false,
        created_at: at_ms(min_ago),
        steps: StepSummary::default(),
        upper: Default::default(),
    }
}

fn node(n: u32, req: u32, label: &str, ip: &str, status: &str) -> ConsoleNode {
    ConsoleNode {
        id: uid(1000 + n),
        request_id: Some(uid(req)),
        provider_id: Some(format!("sim-{n:04}").into()),
        tenant: "acme".into(),
        label: label.into(),
        ip_address: Some(ip.parse().expect("ip")),
        region: "dallas".into(),
        plan: "ssd-1".into(),
        status: status.into(),
        status_reason: None,
        reputation_score: 90 + n as i64,
        current_load: 10 * n as i64,
        created_at: at_ms(600),
        last_heartbeat: Some((now() - chrono::Duration::seconds(12)).timestamp()),
        warmup: (status == "warming").then(|| {
            Box::new(mailfleet::store::NodeWarmup {
                plan: "standard".into(),
                day: 12,
                days: 42,
                cap: 95,
                status: "warming".into(),
                reason: None,
                recent_sent: None,
            })
        }),
        cert_expires: Some((now() + chrono::Duration::days(60 + i64::from(n))).timestamp()),
        upper: Default::default(),
    }
}

fn fixture() -> ConsoleSnapshot {
    let mut requests = vec![
        request(1, "acme", "node-dal-001", "completed", 600),
        request(2, "acme", "node-dal-002", "completed", 580),
        request(3, "globex", "node-dal-003", "configuring", 3),
        request(4, "initech", "node-dal-004", "queued", 2),
        request(5, "acme", "big-eu-1", "pending_approval", 45),
        request(6, "globex", "node-dal-006", "rolled_back", 120),
        request(7, "acme", "node-dal-007", "rolling_back", 30),
    ];
    requests[3].wait_reason = Some("tenant limit: initech has 5/5 in flight".into());
    requests[4].approval_rule = Some("High-Resource VPS Approval".into());
    requests[4].approval_reason =
        Some("High-Resource VPS Approval: cpu 16 ≥ 16, region eu-west-1".into());
    requests[4].plan = "ssd-16".into();
    requests[0].steps = StepSummary {
        attempts: 4,
        failed_step: None,
        ..Default::default()
    };
    requests[2].steps = StepSummary {
        attempts: 2,
        failed_step: None,
        ..Default::default()
    };
    requests[5].steps = StepSummary {
        attempts: 6,
        failed_step: Some(4),
        ..Default::default()
    };
    requests[5].error =
        Some("verify: smtp_probe: connect 198.51.100.9:25: connection refused".into());
    requests[6].needs_attention = true;
    requests[6].error = Some("rollback stalled releasing instance: 503".into());
    let nodes = vec![
        node(1, 1, "node-dal-001", "198.51.100.7", "active"),
        node(2, 2, "node-dal-002", "198.51.100.8", "warming"),
    ];
    let listings = vec![ListingRow {
        id: id(9000),
        node_id: Some(id(1002)),
        node_label: Some("node-dal-002".into()),
        ip_address: "198.51.100.8".into(),
        zone: "zen.spamhaus.org".into(),
        code: Some("127.0.0.2".into()),
        meaning: Some("SBL".into()),
        listed_at: at(90),
        delisted_at: None,
        details: Some("https://check.spamhaus.org/".into()),
        severity: Some("high".into()),
    }];
    ConsoleSnapshot {
        nodes,
        requests,
        listings,
        ..Default::default()
    }
}

fn app_with(snap: ConsoleSnapshot) -> App {
    let cfg = Arc::new(config(""));
    let mut app = App::new(
        cfg,
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "/tmp/demo.db".into(),
        false,
        Theme::plain(),
    );
    app.set_snapshot(Arc::new(snap));
    app.now = now();
    app
}

fn render_buffer(app: &mut App, w: u16, h: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    term.draw(|f| mailfleet::tui::views::draw(f, app))
        .expect("draw");
    term.backend().buffer().clone()
}

fn render(app: &mut App, w: u16, h: u16) -> String {
    let buf = render_buffer(app, w, h);
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

#[test]
fn every_view_snapshot() {
    for v in VIEWS {
        let mut app = app_with(fixture());
        app.update(match v {
            View::Fleet => Action::ShowFleet,
            View::Requests => Action::ShowRequests,
            View::Approvals => Action::ShowApprovals,
            View::Blacklist => Action::ShowBlacklist,
            View::Warmup => Action::ShowWarmup,
            View::Events => Action::ShowEvents,
            View::Pipeline => Action::ShowPipeline,
            View::Alerts => Action::ShowAlerts,
            View::Triage => Action::ShowTriage,
        });
        app.now = now();
        insta::assert_snapshot!(format!("view_{}", v.name()), render(&mut app, 110, 22));
    }
}

#[test]
fn help_and_confirmation_snapshots() {
    let mut app = app_with(fixture());
    app.update(Action::Help);
    insta::assert_snapshot!("help", render(&mut app, 110, 50));
    let mut app = app_with(fixture());
    app.update(Action::ShowFleet);
    app.update(Action::Top);
    app.update(Action::Rollback);
    insta::assert_snapshot!("confirm_deprovision", render(&mut app, 110, 22));
}

#[test]
fn escape_sequences_never_reach_the_terminal() {
    let mut snap = fixture();
    snap.nodes[0].label = "evil\x1b]2;pwned\x07".into();
    snap.nodes[0].status_reason = Some("\x1b[2J".into());
    snap.requests[0].label = "evil\x1b[2Jlabel".into();
    snap.requests[3].wait_reason = Some("wait\x1b[31m\u{9b}1mred".into());
    for v in [Action::ShowFleet, Action::ShowRequests] {
        let mut app = app_with(snap.clone());
        app.update(v);
        let screen = render(&mut app, 120, 20);
        assert!(
            !screen.contains('\x1b') && !screen.contains('\x07') && !screen.contains('\u{9b}'),
            "{screen}"
        );
        assert!(
            screen.contains("evil]2;pwned") || screen.contains("evil[2Jlabel"),
            "shown as harmless text:\n{screen}"
        );
    }
}

#[test]
fn narrow_screens_drop_columns_but_keep_the_essentials() {
    for v in [
        Action::ShowFleet,
        Action::ShowRequests,
        Action::ShowApprovals,
        Action::ShowBlacklist,
        Action::ShowPipeline,
    ] {
        let mut app = app_with(fixture());
        app.update(v);
        let screen = render(&mut app, 80, 24);
        assert!(
            !screen.contains("LOAD") || v != Action::ShowFleet,
            "low-priority column dropped at 80 wide"
        );
        if v == Action::ShowFleet {
            assert!(
                screen.contains("LABEL")
                    && screen.contains("STATUS")
                    && screen.contains("node-dal-001"),
                "{screen}"
            );
        }
        // Any size, however small, draws without panicking.
        let _ = render(&mut app, 20, 6);
    }
}

#[test]
fn footer_and_help_come_from_the_one_keymap() {
    let mut o = BTreeMap::new();
    o.insert("ctrl-p".to_string(), "provision".to_string());
    o.insert("p".to_string(), "none".to_string());
    let cfg = Arc::new(config(""));
    let mut app = App::new(
        cfg,
        Keymap::new(&o).expect("keys"),
        "alice".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    app.now = now();
    let screen = render(&mut app, 140, 10);
    assert!(screen.contains("ctrl-p provision"), "{screen}");
    app.update(Action::Help);
    let help = render(&mut app, 140, 60);
    assert!(
        help.contains("ctrl-p") && !help.contains("          p  provision"),
        "{help}"
    );
}

#[test]
fn read_only_disables_every_change() {
    let cfg = Arc::new(config(""));
    let mut app = App::new(
        cfg,
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "db".into(),
        true,
        Theme::plain(),
    );
    app.set_snapshot(Arc::new(fixture()));
    app.update(Action::ShowRequests);
    for a in [
        Action::Provision,
        Action::Approve,
        Action::Reject,
        Action::Suspend,
        Action::Reactivate,
        Action::Rollback,
    ] {
        assert!(app.update(a).is_empty(), "{a:?} produced effects");
        assert!(matches!(app.mode, Mode::Normal), "{a:?} opened something");
    }
    app.now = now();
    assert!(render(&mut app, 110, 10).contains("READ-ONLY"));
}

/// Issue 12, item 9: an error on the status line went with the user across views for
/// minutes. It now goes at the next action, or after ten seconds.
#[test]
fn a_status_error_goes_at_the_next_action_or_after_ten_seconds() {
    let mut app = app_with(fixture());
    app.update(Action::ShowRequests);
    let mut dirty = false;
    let said = |app: &mut App| render(app, 110, 12).contains("approve failed: busy");
    mailfleet::tui::handle(
        &mut app,
        mailfleet::tui::Msg::Outcome("approve failed: busy".into(), true),
        &mut dirty,
    );
    assert!(said(&mut app));
    app.update(Action::ShowFleet);
    assert!(!said(&mut app), "the next action clears it");

    mailfleet::tui::handle(
        &mut app,
        mailfleet::tui::Msg::Outcome("approve failed: busy".into(), true),
        &mut dirty,
    );
    let at = app.status.as_ref().expect("said").at;
    assert!(!app.expire_status(at + Duration::from_secs(9)));
    assert!(said(&mut app), "still there after 9 s");
    assert!(app.expire_status(at + Duration::from_secs(10)));
    assert!(!said(&mut app), "gone after 10 s");
}

/// The provision form marks a label whose hostname a live request holds, from the
/// console's own snapshot, before anything is submitted; another domain, or the hostname
/// of a rolled-back request, is free.
#[test]
fn provision_form_marks_a_hostname_another_request_holds() {
    use crossterm::event::KeyCode;
    let mut app = App::new(
        Arc::new(config("")),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    app.set_snapshot(Arc::new(fixture()));
    app.now = now();
    app.update(Action::Provision);
    // globex asks for acme's completed node-dal-001 (both under the default domain).
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    for c in "node-dal-001".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let holder = id(1);
    let want = format!("hostname taken by {} (acme)", &holder[holder.len() - 8..]);
    let Mode::Form(form) = &app.mode else {
        panic!("the form is open")
    };
    assert_eq!(form.fields[0].value(), "globex");
    assert_eq!(form.fields[3].error.as_deref(), Some(want.as_str()));
    let screen = render(&mut app, 110, 30);
    assert!(screen.contains(&want), "{screen}");
    assert!(
        key(&mut app, KeyCode::Enter).is_empty(),
        "a held hostname submits nothing"
    );
    // Under another domain the same label is free.
    key(&mut app, KeyCode::Tab);
    for c in "globex.example.com".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let Mode::Form(form) = &app.mode else {
        panic!("the form is open")
    };
    assert_eq!(form.fields[3].error, None);

    // A rolled-back request's hostname is free; a snapshot that arrives while the form is
    // open marks what became held since.
    app.update(Action::Provision);
    for c in "node-dal-006".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let Mode::Form(form) = &app.mode else {
        panic!("the form is open")
    };
    assert_eq!(form.fields[3].error, None);
    let mut snap = fixture();
    snap.requests
        .push(request(8, "initech", "node-dal-006", "queued", 0));
    app.set_snapshot(Arc::new(snap));
    let Mode::Form(form) = &app.mode else {
        panic!("the form is open")
    };
    let queued = id(8);
    assert_eq!(
        form.fields[3].error.as_deref(),
        Some(
            format!(
                "hostname taken by {} (initech)",
                &queued[queued.len() - 8..]
            )
            .as_str()
        )
    );
}

/// Runs effects the way the console's loop does, and feeds back what they produce.
async fn pump(
    app: &mut App,
    store: &mailfleet::store::Store,
    handle: &mailfleet::engine::EngineHandle,
    effects: Vec<Effect>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = handle.sender();
    let expected = effects
        .iter()
        .filter(|e| !matches!(e, Effect::Quit { .. }))
        .count();
    for e in effects {
        mailfleet::tui::perform(app, e, store, Some(&sender), &tx);
    }
    let mut dirty = false;
    for _ in 0..expected {
        if let Some(msg) = rx.recv().await {
            let more = mailfleet::tui::handle(app, msg, &mut dirty);
            assert!(more.is_empty());
        }
    }
}

async fn refresh(app: &mut App, store: &mailfleet::store::Store) {
    app.set_snapshot(Arc::new(store.console_snapshot().await.expect("snapshot")));
}

async fn until(
    app: &mut App,
    store: &mailfleet::store::Store,
    what: &str,
    ok: impl Fn(&App) -> bool,
) {
    for _ in 0..500 {
        refresh(app, store).await;
        if ok(app) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn key(app: &mut App, code: crossterm::event::KeyCode) -> Vec<Effect> {
    mailfleet::tui::key(
        app,
        crossterm::event::KeyEvent::new(code, crossterm::event::KeyModifiers::NONE),
    )
}

fn state_of(app: &App, label: &str) -> Option<String> {
    app.snap
        .requests
        .iter()
        .find(|r| &*r.label == label)
        .map(|r| r.state.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_console_provisions_approves_suspends_and_quits() {
    use crossterm::event::KeyCode;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let handle = mailfleet::engine::spawn(sim_ctx(&store, &cfg, system_clock()));
    let mut app = App::new(
        Arc::new(cfg.clone()),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    refresh(&mut app, &store).await;

    // p opens the form; an invalid label is refused, a valid one submits.
    app.update(Action::Provision);
    for c in "Bad_Label".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert!(
        key(&mut app, KeyCode::Enter).is_empty(),
        "an invalid form submits nothing"
    );
    let Mode::Form(form) = &app.mode else {
        panic!("form still open")
    };
    assert!(form.fields[3].error.is_some());
    for _ in 0..9 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "node-1".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let effects = key(&mut app, KeyCode::Enter);
    assert!(
        matches!(effects.as_slice(), [Effect::Send(_)]),
        "{effects:?}"
    );
    pump(&mut app, &store, &handle, effects).await;
    until(&mut app, &store, "node-1 completed", |a| {
        state_of(a, "node-1").as_deref() == Some("completed")
    })
    .await;

    // A big node in eu-west-1 waits for approval; approve it from the Approvals view.
    app.update(Action::Provision);
    let Mode::Form(form) = &mut app.mode else {
        panic!("form")
    };
    let region = form.fields[1]
        .choices
        .iter()
        .position(|c| c == "eu-west-1")
        .expect("region");
    let plan = form.fields[2]
        .choices
        .iter()
        .position(|c| c.starts_with("ssd-16"))
        .expect("plan");
    form.fields[1].choice = region;
    form.fields[2].choice = plan;
    for c in "big-1".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let effects = key(&mut app, KeyCode::Enter);
    pump(&mut app, &store, &handle, effects).await;
    until(&mut app, &store, "big-1 pending", |a| {
        state_of(a, "big-1").as_deref() == Some("pending_approval")
    })
    .await;
    app.update(Action::ShowApprovals);
    assert_eq!(app.table().visible.len(), 1);
    // alice asked for it, so alice may not approve it: the refusal is on screen.
    let effects = app.update(Action::Approve);
    pump(&mut app, &store, &handle, effects).await;
    let said = app.status.as_ref().expect("a status line");
    assert!(said.error, "{}", said.text);
    assert!(said.text.contains("alice requested it"), "{}", said.text);
    refresh(&mut app, &store).await;
    assert_eq!(state_of(&app, "big-1").as_deref(), Some("pending_approval"));
    // A second person approves it.
    app.actor = "bob".into();
    let effects = app.update(Action::Approve);
    pump(&mut app, &store, &handle, effects).await;
    until(&mut app, &store, "big-1 completed", |a| {
        state_of(a, "big-1").as_deref() == Some("completed")
    })
    .await;

    app.actor = "alice".into();

    // Suspend node-1 from the Fleet view, after a confirmation.
    app.update(Action::ShowFleet);
    app.update(Action::Top);
    let sel = app.selected_request().expect("a node row");
    let label = app
        .snap
        .requests
        .iter()
        .find(|r| r.id.to_string() == sel)
        .map(|r| r.label.clone())
        .expect("req");
    assert!(app.update(Action::Suspend).is_empty(), "suspend asks first");
    let effects = app.confirm(true);
    pump(&mut app, &store, &handle, effects).await;
    until(&mut app, &store, "suspended", |a| {
        state_of(a, &label).as_deref() == Some("suspended")
    })
    .await;

    // Every action is in the history with its actor.
    let d = store.request_detail(&sel).await.expect("detail");
    assert!(d
        .transitions
        .iter()
        .any(|t| t.to_state == "suspended" && t.actor == "alice"));
    let big = app
        .snap
        .requests
        .iter()
        .find(|r| &*r.label == "big-1")
        .expect("big")
        .id
        .to_string();
    let d = store.request_detail(&big).await.expect("detail");
    assert!(d
        .transitions
        .iter()
        .any(|t| t.to_state == "queued" && t.actor == "bob"));

    // q with nothing in flight quits at once.
    refresh(&mut app, &store).await;
    assert_eq!(
        app.update(Action::Quit),
        vec![Effect::Quit { drain: false }]
    );
    handle.shutdown().await;
}

/// The labels of the Requests view's rows, top to bottom, as drawn.
fn request_labels(app: &mut App) -> Vec<String> {
    render(app, 110, 22)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("node-") || w.starts_with("big-"))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn shift_letter_sorts_by_a_column_and_again_reverses() {
    let mut app = app_with(fixture());
    app.update(Action::ShowRequests);
    // L is the LABEL column's letter in the Requests view (no key is bound to L).
    key(&mut app, crossterm::event::KeyCode::Char('L'));
    let asc = request_labels(&mut app);
    let mut sorted = asc.clone();
    sorted.sort();
    assert_eq!(asc, sorted, "sorted by label, ascending");
    assert_eq!(asc.len(), 7);
    key(&mut app, crossterm::event::KeyCode::Char('L'));
    let desc = request_labels(&mut app);
    sorted.reverse();
    assert_eq!(desc, sorted, "the same letter again reverses");
    // R is bound (roll back), so REGION-like clashes move to the next free letter; in the
    // Fleet view, REGION sorts on E. Pressing R never sorts: it asks to roll back.
    let letters = mailfleet::tui::table::sort_letters(View::Fleet, |c| app.keymap.is_bound(c));
    assert_eq!(letters[2], Some('E'));
    assert!(!letters.contains(&Some('R')) && !letters.contains(&Some('G')));
    let shown = render(&mut app, 110, 22);
    assert!(shown.contains("sorted by label ↓"), "{shown}");
}

#[test]
fn with_the_mouse_on_a_click_selects_a_row_and_a_second_click_opens_it() {
    use crossterm::event::{Event, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
    let mut app = app_with(fixture());
    app.update(Action::ShowRequests);
    app.update(Action::ToggleMouse);
    assert!(app.mouse);
    let screen = render(&mut app, 110, 22);
    // Find the screen line that shows node-dal-001 and click on it.
    let y = screen
        .lines()
        .position(|l| l.contains("node-dal-001"))
        .expect("row on screen") as u16;
    let click = |app: &mut App| {
        let mut dirty = false;
        mailfleet::tui::handle(
            app,
            mailfleet::tui::Msg::Input(Event::Mouse(MouseEvent {
                kind: MouseEventKind::Down(MouseButton::Left),
                column: 20,
                row: y,
                modifiers: KeyModifiers::NONE,
            })),
            &mut dirty,
        )
    };
    assert_ne!(app.selected_request().as_deref(), Some(id(1).as_str()));
    assert!(click(&mut app).is_empty());
    assert_eq!(
        app.selected_request().as_deref(),
        Some(id(1).as_str()),
        "the clicked row is selected"
    );
    assert!(app.detail.is_none());
    let effects = click(&mut app);
    assert!(
        matches!(&app.detail, Some((d, _)) if *d == id(1)),
        "a second click opens the row"
    );
    assert!(!effects.is_empty(), "opening loads the detail");
    // A click outside the rows does nothing.
    let before = app.table().selected;
    let mut dirty = false;
    mailfleet::tui::handle(
        &mut app,
        mailfleet::tui::Msg::Input(Event::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 20,
            row: 0,
            modifiers: KeyModifiers::NONE,
        })),
        &mut dirty,
    );
    assert_eq!(app.table().selected, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_pane_takes_the_keys_to_scroll_and_gives_them_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let id = create(&ctx, "acme", "dallas", "ssd-1", "scroll-me")
        .await
        .id;
    mailfleet::engine::run_until_idle(ctx.clone()).await;
    let mut app = app_with(ConsoleSnapshot::default());
    refresh(&mut app, &store).await;
    // The new node starts the default warm-up plan (standard: 42 days from 10/day), and
    // the Fleet view says so.
    let w = app.snap.nodes[0]
        .warmup
        .clone()
        .expect("the node is warming");
    assert_eq!((&*w.plan, w.day, w.days, w.cap), ("standard", 1, 42, 10));
    assert!(render(&mut app, 110, 30).contains("d1/42 10/d"));
    app.update(Action::ShowRequests);
    let effects = app.update(Action::Open);
    assert!(!effects.is_empty());
    app.set_detail(store.request_detail(&id).await.expect("detail"));
    assert!(!app.detail_focus);
    let first = render(&mut app, 110, 30);
    assert!(first.contains("enter scrolls"), "{first}");
    // The first line of the pane: the state, tenant and label.
    let head = |s: &str| s.contains("completed  acme · scroll-me");
    assert!(head(&first), "{first}");

    // Enter on the open pane gives it the keys: movement scrolls the pane, not the list.
    app.update(Action::Open);
    assert!(app.detail_focus);
    let selected = app.table().selected;
    app.update(Action::PageDown);
    let scrolled = render(&mut app, 110, 30);
    assert!(app.detail_scroll > 0);
    assert!(
        !head(&scrolled),
        "scrolled past the first line:\n{scrolled}"
    );
    assert!(scrolled.contains("esc back to the list"));
    assert_eq!(app.table().selected, selected, "the list did not move");
    // Scrolling stops at the end of the pane's content.
    app.update(Action::Bottom);
    render(&mut app, 110, 30);
    let bottom = app.detail_scroll;
    app.update(Action::Down);
    render(&mut app, 110, 30);
    assert_eq!(app.detail_scroll, bottom, "no scrolling past the end");
    app.update(Action::Top);
    assert!(head(&render(&mut app, 110, 30)));

    // Esc gives the keys back to the list with the pane still open; Esc again closes it.
    app.update(Action::Back);
    assert!(!app.detail_focus && app.detail.is_some());
    app.update(Action::Back);
    assert!(app.detail.is_none());
}

/// Four requests waiting for approval: acme's in eu-west-1 past the breach (5 h), globex's
/// past the warning (90 min), a fresh one of initech's (10 min) and a fresh one of acme's in
/// amsterdam under another rule; acme would go over its cpu quota, initech near it.
fn approvals_fixture() -> ConsoleSnapshot {
    let pending = |n, tenant: &str, region: &str, label: &str, min_ago, rule: &str| {
        let mut r = request(n, tenant, label, "pending_approval", min_ago);
        r.region = region.into();
        r.plan = "ssd-16".into();
        (r.cpu, r.memory_gb, r.storage_gb) = (16, 32, 500);
        r.approval_rule = Some(rule.into());
        r.approval_reason = Some(format!("{rule}: cpu 16 ≥ 16, region {region}").into());
        r
    };
    let high = "High-Resource VPS Approval";
    let mut snap = ConsoleSnapshot {
        requests: vec![
            pending(21, "initech", "eu-west-1", "big-init-1", 10, high),
            pending(22, "acme", "eu-west-1", "big-acme-1", 300, high),
            pending(23, "globex", "eu-west-1", "big-glob-1", 90, high),
            pending(24, "acme", "amsterdam", "big-acme-2", 5, "Amsterdam Review"),
            request(25, "acme", "node-dal-025", "completed", 900),
        ],
        ..Default::default()
    };
    let used = |nodes, cpu, memory_gb, storage_gb| Usage {
        nodes,
        cpu,
        memory_gb,
        storage_gb,
    };
    snap.quota_use = [
        ("acme".to_string(), used(30, 390, 600, 9_000)),
        ("globex".to_string(), used(4, 64, 128, 2_000)),
        ("initech".to_string(), used(10, 170, 200, 3_000)),
    ]
    .into_iter()
    .collect();
    snap
}

fn colour_app(snap: ConsoleSnapshot) -> App {
    let mut app = app_with(snap);
    app.theme = Theme { color: true };
    app
}

/// The screen row that shows `text`.
fn row_of(screen: &str, text: &str) -> u16 {
    screen
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text} not on screen:\n{screen}")) as u16
}

#[test]
fn approvals_view_puts_the_oldest_first_colours_ages_by_sla_and_shows_quotas() {
    let mut app = colour_app(approvals_fixture());
    app.update(Action::ShowApprovals);
    app.now = now();
    let buf = render_buffer(&mut app, 120, 30);
    let screen = render(&mut app, 120, 30);
    insta::assert_snapshot!("approvals_queue_with_quotas", screen);

    // Oldest first: the breached request heads the queue, the freshest ends it.
    let order: Vec<u16> = ["big-acme-1", "big-glob-1", "big-init-1", "big-acme-2"]
        .iter()
        .map(|l| {
            let id = app
                .snap
                .requests
                .iter()
                .find(|r| &*r.label == *l)
                .map(|r| mailfleet::domain::ids::short(&r.id.to_string()).to_string())
                .expect("request");
            row_of(&screen, &id)
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{screen}");

    // AGE is red past breach_after (4 h), amber past warn_after (1 h), plain before. The
    // AGE column starts right inside the table's border.
    use ratatui::style::Color;
    let age_fg = |y: u16| buf[(1, y)].fg;
    assert_eq!(age_fg(order[0]), Color::Red, "5h: breached");
    assert_eq!(age_fg(order[1]), Color::Yellow, "90m: past the warning");
    assert_eq!(age_fg(order[2]), Color::Reset, "10m: fresh");

    // QUOTA IF APPROVED: acme's cpu would go over (red), initech's would be at 93 % (amber).
    assert!(screen.contains("cpu 406/400"), "{screen}");
    assert!(screen.contains("cpu 186/200"), "{screen}");
    let x = screen
        .lines()
        .nth(order[0] as usize)
        .and_then(|l| l.find("cpu 406/400"))
        .map(|b| {
            screen.lines().nth(order[0] as usize).expect("line")[..b]
                .chars()
                .count()
        })
        .expect("quota cell") as u16;
    assert_eq!(buf[(x, order[0])].fg, Color::Red);
    assert_eq!(buf[(x, order[2])].fg, Color::Yellow);

    // Enter opens the oldest request, whole, in the detail pane.
    assert_eq!(app.update(Action::Open), vec![Effect::LoadDetail(id(22))]);
}

#[test]
fn a_confirmation_with_a_long_line_wraps_it_and_keeps_its_answer_keys() {
    // A request in flight makes q ask first; the second line of that question is longer
    // than the box is wide.
    let mut app = app_with(fixture());
    app.update(Action::Quit);
    assert!(matches!(app.mode, Mode::Confirm(_)));
    let screen = render(&mut app, 110, 22);
    assert!(screen.contains("y yes   n/esc no"), "{screen}");
    assert!(screen.contains("shutdown grace)."), "{screen}");
}

#[test]
fn the_quota_panel_makes_way_for_the_queue_on_small_screens() {
    let mut app = app_with(approvals_fixture());
    app.update(Action::ShowApprovals);
    assert!(render(&mut app, 120, 30).contains("Quotas"));
    // 80×24 still has room for it (figures without bars) and for the queue.
    let small = render(&mut app, 80, 24);
    assert!(
        small.contains("Quotas") && small.contains("390/400"),
        "{small}"
    );
    assert!(small.contains("QUOTA IF APPROVED"), "{small}");
    assert_eq!(
        small.lines().filter(|l| l.contains("ssd-16:")).count(),
        4,
        "all four requests listed:\n{small}"
    );
    // Under 20 rows it is left out.
    let tiny = render(&mut app, 80, 19);
    assert!(!tiny.contains("Quotas"), "{tiny}");
    assert!(tiny.contains("Approvals 1/4"), "{tiny}");
}

/// The labels of the rows the current view keeps.
fn visible_labels(app: &App) -> Vec<String> {
    let mut out: Vec<String> = app
        .table()
        .visible
        .iter()
        .map(|i| match app.view {
            View::Fleet | View::Warmup => app.snap.nodes[*i].label.to_string(),
            _ => app.snap.requests[*i].label.to_string(),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn filter_terms_match_their_field_combine_with_words_and_invert() {
    let mut app = app_with(approvals_fixture());
    app.update(Action::ShowApprovals);
    // Typed as a person types it: / then the text.
    key(&mut app, crossterm::event::KeyCode::Char('/'));
    for c in "tenant:acme region:eu-west-1".chars() {
        key(&mut app, crossterm::event::KeyCode::Char(c));
    }
    key(&mut app, crossterm::event::KeyCode::Enter);
    assert_eq!(visible_labels(&app), ["big-acme-1"]);

    let cases: &[(&str, &[&str])] = &[
        ("tenant:ACME", &["big-acme-1", "big-acme-2"]),
        ("rule:high", &["big-acme-1", "big-glob-1", "big-init-1"]),
        ("rule:amsterdam", &["big-acme-2"]),
        ("Rule:High tenant:glob", &["big-glob-1"]),
        ("!tenant:acme", &["big-glob-1", "big-init-1"]),
        ("!rule:high region:eu", &["big-acme-2"]),
        // Words and terms together, all must match; a word may be anywhere in the row.
        ("tenant:acme 2", &["big-acme-2"]),
        ("region:eu-west-1 init", &["big-init-1"]),
        ("state:pending plan:ssd-16 label:glob", &["big-glob-1"]),
        ("requester:alice tenant:nobody", &[]),
        // A lone "!" (half typed) hides nothing.
        (
            "!",
            &["big-acme-1", "big-acme-2", "big-glob-1", "big-init-1"],
        ),
    ];
    for (text, want) in cases {
        app.apply_filter(text);
        assert_eq!(visible_labels(&app), *want, "filter {text:?}");
    }

    // Node views know tenant:, region: and status:.
    let mut app = app_with(fixture());
    app.update(Action::ShowFleet);
    app.apply_filter("status:warm tenant:acme region:dal");
    assert_eq!(visible_labels(&app), ["node-dal-002"]);
    app.apply_filter("!status:warm");
    assert_eq!(visible_labels(&app), ["node-dal-001"]);
    app.apply_filter("tenant:globex");
    assert!(visible_labels(&app).is_empty());
}

/// Fifty requests of acme's waiting for approval, ages 1..=50 minutes.
fn fifty_pending() -> ConsoleSnapshot {
    let requests = (1..=50)
        .map(|n| {
            let mut r = request(
                100 + n,
                "acme",
                &format!("big-{n:02}"),
                "pending_approval",
                n.into(),
            );
            r.approval_rule = Some("High-Resource VPS Approval".into());
            r.plan = "ssd-16".into();
            r
        })
        .collect();
    ConsoleSnapshot {
        requests,
        ..Default::default()
    }
}

#[test]
fn mark_all_toggles_and_a_long_confirmation_scrolls() {
    use crossterm::event::KeyCode;
    let mut app = app_with(fifty_pending());
    app.actor = "bob".into();
    app.update(Action::ShowApprovals);
    key(&mut app, KeyCode::Char('V'));
    assert_eq!(app.table().marks.len(), 50);
    // Again: all were marked, so none are.
    key(&mut app, KeyCode::Char('V'));
    assert!(app.table().marks.is_empty());
    // ctrl-a does the same; with a filter, only the rows shown are marked.
    app.apply_filter("big-0");
    mailfleet::tui::key(
        &mut app,
        crossterm::event::KeyEvent::new(
            KeyCode::Char('a'),
            crossterm::event::KeyModifiers::CONTROL,
        ),
    );
    assert_eq!(app.table().marks.len(), 9);
    app.update(Action::MarkAll);
    app.apply_filter("");
    app.update(Action::MarkAll);
    assert_eq!(app.table().marks.len(), 50);

    // One confirmation lists them all: id, tenant, label, plan and rule, as much as fits,
    // with what does not counted.
    assert!(key(&mut app, KeyCode::Char('a')).is_empty(), "asks first");
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert_eq!(c.lines.len(), 50);
    assert_eq!(c.title, "Approve 50 request(s)?");
    let screen = render(&mut app, 80, 24);
    insta::assert_snapshot!("confirm_bulk_approve", screen);
    assert!(screen.contains("… and 36 more (j/↓ scrolls)"), "{screen}");
    // Oldest first, like the queue: big-50 heads the list.
    let first = screen
        .lines()
        .position(|l| l.contains("big-50"))
        .expect("first");
    assert!(
        screen.lines().nth(first).is_some_and(|l| l
            .contains(mailfleet::domain::ids::short(&id(150)))
            && l.contains("acme")
            && l.contains("ssd-16")
            && l.contains("High-Resource VPS Approval")),
        "{screen}"
    );
    // j scrolls; the list stops at its end.
    for _ in 0..100 {
        key(&mut app, KeyCode::Char('j'));
        render(&mut app, 80, 24);
    }
    let end = render(&mut app, 80, 24);
    assert!(
        end.contains("… 36 more above") && end.contains("big-01"),
        "{end}"
    );
    key(&mut app, KeyCode::Char('k'));
    assert!(render(&mut app, 80, 24).contains("… 35 more above"));

    // y sends one approval per marked request, and the marks clear.
    let effects = key(&mut app, KeyCode::Char('y'));
    let [Effect::Send(cmds)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(cmds.len(), 50);
    assert!(cmds
        .iter()
        .all(|c| matches!(c, mailfleet::engine::Command::Approve { .. })));
    assert!(app.table().marks.is_empty());
}

/// The bulk rejection's reason has the same limit as `request reject --reason`: a longer
/// one is refused on the status line, naming the limit, and the prompt keeps it to shorten.
#[test]
fn a_bulk_rejection_reason_over_the_limit_sends_nothing() {
    use crossterm::event::KeyCode;
    let mut app = app_with(fifty_pending());
    app.update(Action::ShowApprovals);
    app.update(Action::MarkAll);
    key(&mut app, KeyCode::Char('x'));
    for _ in 0..501 {
        key(&mut app, KeyCode::Char('w'));
    }
    assert!(key(&mut app, KeyCode::Enter).is_empty(), "nothing sent");
    let said = app.status.as_ref().expect("a status line");
    assert!(said.error, "{}", said.text);
    assert!(
        said.text.contains("reason")
            && said.text.contains("501")
            && said.text.contains("at most 500"),
        "{}",
        said.text
    );
    assert!(matches!(&app.mode, Mode::Reason(r) if r.ids.len() == 50));
    key(&mut app, KeyCode::Backspace);
    let effects = key(&mut app, KeyCode::Enter);
    assert!(matches!(effects.as_slice(), [Effect::Send(cmds)] if cmds.len() == 50));
}

#[test]
fn reject_asks_one_reason_for_every_marked_request() {
    use crossterm::event::KeyCode;
    let mut app = app_with(fifty_pending());
    app.update(Action::ShowApprovals);
    app.update(Action::MarkAll);
    key(&mut app, KeyCode::Char('x'));
    assert!(matches!(&app.mode, Mode::Reason(r) if r.ids.len() == 50));
    for c in "duplicate order".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let effects = key(&mut app, KeyCode::Enter);
    let [Effect::Send(cmds)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(cmds.len(), 50);
    assert!(cmds.iter().all(|c| matches!(
        c,
        mailfleet::engine::Command::Reject { reason, .. } if reason == "duplicate order"
    )));
    assert!(app.table().marks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_counts_what_each_tenant_holds() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    create(&ctx, "globex", "dallas", "ssd-4", "held-1").await;
    create(&ctx, "globex", "dallas", "ssd-2", "held-2").await;
    mailfleet::engine::run_until_idle(ctx.clone()).await;
    let snap = store.console_snapshot().await.expect("snapshot");
    assert_eq!(
        snap.quota_use.get("globex"),
        Some(&Usage {
            nodes: 2,
            cpu: 6,
            memory_gb: 10,
            storage_gb: 150
        })
    );
    assert!(!snap.quota_use.contains_key("acme"));
    let mut app = app_with(snap);
    app.update(Action::ShowApprovals);
    let screen = render(&mut app, 120, 30);
    assert!(screen.contains("6/300"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_console_approves_fifty_requests_in_four_keystrokes() {
    use crossterm::event::KeyCode;
    use mailfleet::engine::commands::CreateRequest;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    // Alice orders fifty big nodes in eu-west-1: the default rule holds each for approval.
    // Spread so that every tenant's quota has room for its share (acme 25, globex 18,
    // initech 12 of these).
    let ctx = sim_ctx(&store, &cfg, system_clock());
    for n in 0..50 {
        let tenant = match n {
            0..20 => "acme",
            20..38 => "globex",
            _ => "initech",
        };
        let cmd = mailfleet::engine::Command::Create(CreateRequest {
            tenant: tenant.into(),
            region: "eu-west-1".into(),
            plan: "ssd-16".into(),
            label: format!("bulk-{n:02}"),
            domain: None,
            depends_on: vec![],
        });
        mailfleet::engine::commands::execute(&ctx, "alice", cmd)
            .await
            .expect("create");
    }
    let handle = mailfleet::engine::spawn(sim_ctx(&store, &cfg, system_clock()));
    let mut app = App::new(
        Arc::new(cfg.clone()),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "bob".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    refresh(&mut app, &store).await;
    assert_eq!(
        app.counts
            .state(mailfleet::domain::RequestState::PendingApproval),
        50
    );

    // Bob: 3 (Approvals), V (mark all), a (approve), y (once, for all fifty).
    let mut keystrokes = 0;
    let mut press = |app: &mut App, code| {
        keystrokes += 1;
        key(app, code)
    };
    press(&mut app, KeyCode::Char('3'));
    assert_eq!(app.view, View::Approvals);
    assert_eq!(app.table().visible.len(), 50);
    press(&mut app, KeyCode::Char('V'));
    assert!(press(&mut app, KeyCode::Char('a')).is_empty());
    let shown = render(&mut app, 100, 30);
    assert!(shown.contains("Approve 50 request(s)?"), "{shown}");
    let effects = press(&mut app, KeyCode::Char('y'));
    assert!(keystrokes <= 5, "{keystrokes} keystrokes");
    pump(&mut app, &store, &handle, effects).await;
    let said = app.status.clone().expect("a status line");
    assert!(
        !said.error && said.text.contains("50 of 50"),
        "{}",
        said.text
    );

    // Every one left pending_approval, and its history says bob let it go.
    let rows = all_requests(&store).await;
    assert_eq!(rows.len(), 50);
    for r in &rows {
        assert_ne!(r.state, "pending_approval", "{}", r.label);
        let d = store.request_detail(&r.id).await.expect("detail");
        assert!(
            d.transitions
                .iter()
                .any(|t| t.from_state.as_deref() == Some("pending_approval") && t.actor == "bob"),
            "{}: {:?}",
            r.label,
            d.transitions
        );
    }
    refresh(&mut app, &store).await;
    assert!(app.table().visible.is_empty() && app.table().marks.is_empty());
    handle.shutdown().await;
}

/// The Requests view says what holds each waiting request (an approval, a prerequisite),
/// and `:cluster test NAME` reports a cluster's round trip on the status line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_say_why_they_wait_and_clusters_can_be_tested_from_the_console() {
    use mailfleet::engine::commands::{execute, Command, CreateRequest, Outcome};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    let big = create(&ctx, "acme", "eu-west-1", "ssd-16", "big-1").await;
    assert_eq!(big.state, "pending_approval");
    let after = execute(
        &ctx,
        "tester",
        Command::Create(CreateRequest {
            tenant: "acme".into(),
            region: "dallas".into(),
            plan: "ssd-1".into(),
            label: "after-big".into(),
            domain: None,
            depends_on: vec![big.id.clone()],
        }),
    )
    .await
    .expect("create");
    let Outcome::Created(after) = after else {
        panic!("created")
    };
    let mut app = App::new(
        Arc::new(cfg.clone()),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    until(&mut app, &store, "the dependent waits", |a| {
        a.snap
            .requests
            .iter()
            .any(|r| r.id.to_string() == after.id && r.wait_reason.is_some())
    })
    .await;
    app.update(Action::ShowRequests);
    app.now = chrono::Utc::now();
    let screen = render(&mut app, 160, 12);
    let short = &big.id[big.id.len() - 8..];
    assert!(
        screen.contains("awaiting approval: High-Resource VPS Approval"),
        "{screen}"
    );
    assert!(
        screen.contains(&format!(
            "waiting for prerequisite {short} (pending_approval)"
        )),
        "{screen}"
    );

    let effects = app.run_command(":cluster test sim-dallas");
    pump(&mut app, &store, &handle, effects).await;
    let said = app.status.clone().expect("status");
    assert!(!said.error, "{}", said.text);
    assert!(
        said.text
            .starts_with("cluster sim-dallas (sim in dallas): ok in "),
        "{}",
        said.text
    );
    let effects = app.run_command(":cluster test nowhere");
    pump(&mut app, &store, &handle, effects).await;
    let said = app.status.clone().expect("status");
    assert!(
        said.error && said.text.contains("unknown cluster"),
        "{}",
        said.text
    );
    handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Reputation: the Blacklist and Alerts views, the header badge, the node timeline, and the
// node keys (c check, P pause, U resume).

fn alert(
    n: u32,
    severity: &str,
    kind: &str,
    node: Option<(u32, &str)>,
    message: &str,
    min_ago: i64,
    resolved_min_ago: Option<i64>,
) -> mailfleet::store::AlertRow {
    mailfleet::store::AlertRow {
        id: id(8000 + n),
        severity: severity.into(),
        kind: kind.into(),
        subject: match node {
            Some((nid, _)) => format!("node:{}:{kind}", id(1000 + nid)),
            None => "zone:dnsbl.example.net".into(),
        },
        node_id: node.map(|(nid, _)| id(1000 + nid)),
        node_label: node.map(|(_, label)| label.to_string()),
        message: message.into(),
        raised_at: at(min_ago),
        resolved_at: resolved_min_ago.map(at),
        resolution: resolved_min_ago.map(|_| "delisted".to_string()),
        ..Default::default()
    }
}

/// node-dal-001 active; node-dal-002 paused by the monitor for an open high listing on
/// zen.spamhaus.org (its reason holds a delist URL), after an earlier medium listing on
/// barracuda that lasted 3 h; alerts open and resolved, as the store orders them (open
/// first, then resolved, each newest first).
fn reputation_fixture() -> ConsoleSnapshot {
    let mut snap = fixture();
    snap.nodes[1].status = "paused".into();
    snap.nodes[1].warmup = None;
    snap.nodes[1].status_reason = Some("blocklist: listed on zen.spamhaus.org (SBL)".into());
    snap.listings = vec![
        ListingRow {
            id: id(9000),
            node_id: Some(id(1002)),
            node_label: Some("node-dal-002".into()),
            ip_address: "198.51.100.8".into(),
            zone: "zen.spamhaus.org".into(),
            code: Some("127.0.0.2".into()),
            meaning: Some("SBL".into()),
            listed_at: at(90),
            delisted_at: None,
            details: Some("Listed by SBL, see https://check.spamhaus.org/sbl/query/SBL123".into()),
            severity: Some("high".into()),
        },
        ListingRow {
            id: id(9001),
            node_id: Some(id(1002)),
            node_label: Some("node-dal-002".into()),
            ip_address: "198.51.100.8".into(),
            zone: "b.barracudacentral.org".into(),
            code: Some("127.0.0.2".into()),
            meaning: Some("listed".into()),
            listed_at: at(1560),
            delisted_at: Some(at(1380)),
            details: Some("Client host blocked using Barracuda Reputation".into()),
            severity: Some("medium".into()),
        },
    ];
    snap.alerts = vec![
        alert(
            1,
            "low",
            "zone",
            None,
            "blocklist dnsbl.example.net is unusable: lists 127.0.0.1",
            30,
            None,
        ),
        alert(
            2,
            "high",
            "blocklist",
            Some((2, "node-dal-002")),
            "node-dal-002 198.51.100.8 is listed on zen.spamhaus.org (SBL)",
            90,
            None,
        ),
        alert(
            3,
            "medium",
            "bounce",
            Some((1, "node-dal-001")),
            "node-dal-001 bounce rate 6.2% is above 5.0%",
            300,
            Some(120),
        ),
        alert(
            4,
            "medium",
            "blocklist",
            Some((2, "node-dal-002")),
            "node-dal-002 198.51.100.8 is listed on b.barracudacentral.org (listed)",
            1560,
            Some(1380),
        ),
    ];
    snap.alert_counts = mailfleet::store::AlertCounts {
        high: 1,
        medium: 0,
        low: 1,
    };
    snap
}

#[test]
fn blacklist_view_lists_what_is_listed_now_first_with_its_delist_url() {
    let mut app = app_with(reputation_fixture());
    key(&mut app, crossterm::event::KeyCode::Char('4'));
    assert_eq!(app.view, View::Blacklist);
    let screen = render(&mut app, 120, 20);
    insta::assert_snapshot!("blacklist_listed_and_history", screen);
    let listed = row_of(&screen, "zen.spamhaus.org");
    let history = row_of(&screen, "b.barracudacentral.org");
    assert!(listed < history, "listed now comes first:\n{screen}");
    let line = |y: u16| {
        screen
            .lines()
            .nth(y as usize)
            .unwrap_or_default()
            .to_string()
    };
    // The URL as far as it fits; the timeline and a wider screen show it whole.
    assert!(
        line(listed).contains("https://check.spamhaus.org/sbl/query"),
        "{screen}"
    );
    assert!(line(listed).contains("high") && line(listed).contains("1h"));
    assert!(line(history).contains("medium") && line(history).contains("3h"));
    assert!(line(history)
        .trim_end_matches('│')
        .trim_end()
        .ends_with('-'));
    // Wide enough for everything: since when (UTC) and the reason too.
    let wide = render(&mut app, 170, 12);
    assert!(
        wide.contains("LISTED (UTC)") && wide.contains("11-22 10:30 1h"),
        "{wide}"
    );
    assert!(wide.contains("LISTED: Listed by SBL"), "{wide}");
    assert!(
        wide.contains("https://check.spamhaus.org/sbl/query/SBL123"),
        "{wide}"
    );
    // At 80 columns: IP, NODE, ZONE, MEANING and FOR stay.
    let narrow = render(&mut app, 80, 20);
    let head = narrow
        .lines()
        .find(|l| l.contains("ZONE"))
        .expect("column titles");
    for title in ["IP", "NODE", "ZONE", "MEANING", "FOR"] {
        assert!(head.contains(title), "{title} kept at 80:\n{narrow}");
    }
    assert!(narrow.contains("zen.spamhaus.org") && narrow.contains("SBL"));
}

#[test]
fn alerts_view_puts_the_worst_open_alerts_first_and_shows_resolved_ones_when_asked() {
    let mut app = app_with(reputation_fixture());
    key(&mut app, crossterm::event::KeyCode::Char('8'));
    assert_eq!(app.view, View::Alerts);
    let screen = render(&mut app, 120, 20);
    insta::assert_snapshot!("alerts_open_then_resolved", screen);
    // The high alert before the low one, though the low one is newer.
    let rows: Vec<u16> = [
        "listed on zen.spamhaus.org",
        "dnsbl.example.net is unusable",
    ]
    .iter()
    .map(|t| row_of(&screen, t))
    .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}\n{screen}");
    // Resolved alerts are history: not listed until the filter asks about state.
    assert!(!screen.contains("bounce rate"), "{screen}");
    app.apply_filter("state:");
    let screen = render(&mut app, 120, 20);
    let rows: Vec<u16> = [
        "listed on zen.spamhaus.org",
        "dnsbl.example.net is unusable",
        "listed on b.barracudacentral",
        "bounce rate",
    ]
    .iter()
    .map(|t| row_of(&screen, t))
    .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}\n{screen}");
    assert!(screen.contains("resolved 2h ago"), "{screen}");
    // :alerts gets there too, and the view fits 80 columns with what matters.
    let mut app = app_with(reputation_fixture());
    app.run_command(":alerts");
    assert_eq!(app.view, View::Alerts);
    let narrow = render(&mut app, 80, 20);
    let head = narrow
        .lines()
        .find(|l| l.contains("SEVERITY"))
        .expect("column titles");
    for title in ["SEVERITY", "RAISED", "STATE", "NODE", "WHAT"] {
        assert!(head.contains(title), "{title} kept at 80:\n{narrow}");
    }
}

#[test]
fn the_header_badge_counts_open_alerts_by_severity_within_80_columns() {
    let mut snap = reputation_fixture();
    snap.alert_counts = mailfleet::store::AlertCounts {
        high: 2,
        medium: 3,
        low: 1,
    };
    let mut app = colour_app(snap.clone());
    let screen = render(&mut app, 80, 24);
    let header = screen.lines().next().expect("header");
    assert!(header.contains("▲ 2 high · 3 med · 1 low"), "{header}");
    // Less important parts made way; what needs attention stayed.
    assert!(header.contains("need attention"), "{header}");
    assert!(!header.contains("/tmp/demo.db"), "{header}");
    let buf = render_buffer(&mut app, 80, 24);
    let x_of = |text: &str| {
        let b = header.find(text).expect("on the header");
        header[..b].chars().count() as u16
    };
    use ratatui::style::Color;
    assert_eq!(buf[(x_of("2 high"), 0)].fg, Color::Red);
    assert_eq!(buf[(x_of("3 med"), 0)].fg, Color::Yellow);
    // Without colour it reads the same, high still stands out (bold).
    let mut plain = app_with(snap.clone());
    let buf = render_buffer(&mut plain, 80, 24);
    assert!(buf[(x_of("2 high"), 0)]
        .modifier
        .contains(ratatui::style::Modifier::BOLD));
    // Only the severities that have open alerts; none, no badge.
    snap.alert_counts = mailfleet::store::AlertCounts {
        high: 0,
        medium: 0,
        low: 4,
    };
    let mut app = app_with(snap.clone());
    let header = render(&mut app, 80, 24).lines().next().map(str::to_string);
    assert!(
        header
            .as_deref()
            .is_some_and(|h| h.contains("▲ 4 low ·") && !h.contains("high")),
        "{header:?}"
    );
    snap.alert_counts = Default::default();
    let mut app = app_with(snap);
    assert!(!render(&mut app, 120, 24).contains('▲'));
    // Even read-only on a small screen, the badge stays.
    let mut app = app_with(reputation_fixture());
    app.read_only = true;
    let header = render(&mut app, 50, 24);
    assert!(
        header
            .lines()
            .next()
            .is_some_and(|h| h.contains("[READ-ONLY] as alice ▲ 1 high · 1 low")),
        "{header}"
    );
}

/// A provider whose circuit is open is named on the header, in the error colour, even at
/// 80 columns with alerts beside it; a closed one is not.
#[test]
fn the_header_names_a_provider_whose_circuit_is_open() {
    let mut snap = reputation_fixture();
    let circuit = |provider: &str, open: bool| mailfleet::store::BreakerRow {
        provider: provider.into(),
        open,
        failures: if open { 5 } else { 0 },
        opened_at: None,
        retry_at: None,
        last_error: None,
        updated_at: "2026-12-07T06:00:00Z".into(),
    };
    snap.circuits = vec![circuit("hostwinds", true), circuit("sim", false)];
    let mut app = colour_app(snap.clone());
    let screen = render(&mut app, 80, 24);
    let header = screen.lines().next().expect("header");
    assert!(header.contains("hostwinds circuit open"), "{header}");
    assert!(!header.contains("sim circuit"), "{header}");
    assert!(header.contains("▲"), "the alert badge stays: {header}");
    let buf = render_buffer(&mut app, 80, 24);
    let x = header[..header.find("hostwinds circuit").expect("on the header")]
        .chars()
        .count() as u16;
    assert_eq!(buf[(x, 0)].fg, ratatui::style::Color::Red);
    snap.circuits = vec![circuit("hostwinds", false)];
    let mut app = app_with(snap);
    assert!(!render(&mut app, 120, 24).contains("circuit open"));
}

#[test]
fn the_header_says_who_you_are_even_at_80_columns() {
    let mut snap = reputation_fixture();
    snap.alert_counts = mailfleet::store::AlertCounts {
        high: 2,
        medium: 3,
        low: 1,
    };
    let mut app = app_with(snap.clone());
    app.actor = "carol (via ci-bot)".into();
    app.read_only = true;
    let screen = render(&mut app, 80, 24);
    let header = screen.lines().next().expect("header");
    assert!(
        header.starts_with(" mailfleet [READ-ONLY] as carol via ci-bot ▲ 2 high"),
        "{header}"
    );
    // A long name is cut, and the rest of the header keeps its place.
    app.actor = format!("{} (via {})", "a".repeat(64), "b".repeat(64));
    let screen = render(&mut app, 80, 24);
    let header = screen.lines().next().expect("header");
    assert!(
        header.contains(&format!("as {}… ▲ 2 high", "a".repeat(31))),
        "{header}"
    );
    assert!(header.chars().count() <= 80, "{header}");
}

fn local_minute(min_ago: i64) -> String {
    (now() - chrono::Duration::minutes(min_ago))
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

#[test]
fn enter_on_a_listing_shows_every_listing_of_its_node_oldest_first_and_why_it_is_paused() {
    use crossterm::event::KeyCode;
    let mut app = app_with(reputation_fixture());
    app.update(Action::ShowBlacklist);
    // The history row (barracuda): the timeline is the node's, every zone.
    app.update(Action::Down);
    // The heartbeats, transitions and certificate are loaded for it.
    assert_eq!(key(&mut app, KeyCode::Enter), [Effect::LoadNode(id(1002))]);
    let t = app.timeline.clone().expect("a timeline");
    assert_eq!(t.node_id, id(1002));
    let texts: Vec<&str> = t.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            format!(
                "{} listed on b.barracudacentral.org (listed, medium) — Client host blocked using Barracuda Reputation",
                local_minute(1560)
            ),
            format!(
                "{} delisted from b.barracudacentral.org after 3h",
                local_minute(1380)
            ),
            format!(
                "{} listed on zen.spamhaus.org (SBL, high) — Listed by SBL, see https://check.spamhaus.org/sbl/query/SBL123",
                local_minute(90)
            ),
        ]
    );
    let screen = render(&mut app, 230, 30);
    assert!(
        screen.contains("paused  node-dal-002 · 198.51.100.8"),
        "{screen}"
    );
    assert!(
        screen.contains("why: blocklist: listed on zen.spamhaus.org (SBL)"),
        "{screen}"
    );
    assert!(
        screen.contains("listed now on zen.spamhaus.org (SBL, high) for 1h · delist at https://check.spamhaus.org/sbl/query/SBL123"),
        "{screen}"
    );
    assert!(
        screen.contains("high   blocklist: node-dal-002"),
        "{screen}"
    );
    assert!(
        screen.contains("delisted from b.barracudacentral.org after 3h"),
        "{screen}"
    );
    assert!(screen.contains("c check node now  P pause node  U resume node"));

    // Enter again gives the pane the keys; esc gives them back, esc again closes it.
    key(&mut app, KeyCode::Enter);
    assert!(app.detail_focus);
    key(&mut app, KeyCode::Esc);
    assert!(!app.detail_focus && app.timeline.is_some());
    key(&mut app, KeyCode::Esc);
    assert!(app.timeline.is_none());

    // New data rebuilds an open timeline.
    app.update(Action::Open);
    let mut snap = reputation_fixture();
    snap.listings[0].delisted_at = Some(at(10));
    app.set_snapshot(Arc::new(snap));
    let t = app.timeline.clone().expect("still open");
    assert!(t.listed_now.is_empty() && t.entries.len() == 4);

    // From the Alerts view (the worst first): Enter on an alert about a node opens that
    // node's timeline; on one about a zone it says there is no node.
    let mut app = app_with(reputation_fixture());
    app.update(Action::ShowAlerts);
    app.update(Action::Open);
    assert_eq!(
        app.timeline.as_ref().map(|t| t.node_id.clone()),
        Some(id(1002))
    );
    app.update(Action::Back);
    app.update(Action::Down);
    app.update(Action::Open);
    assert!(app.timeline.is_none());
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.contains("not about a node")));
    // Switching views closes it.
    app.update(Action::ShowFleet);
    assert!(app.timeline.is_none() && !app.pane_open());
}

#[test]
fn c_checks_p_pauses_and_u_resumes_the_selected_node_p_and_u_after_a_confirmation() {
    use crossterm::event::KeyCode;
    use mailfleet::engine::Command;
    let mut app = app_with(reputation_fixture());
    app.update(Action::ShowBlacklist);

    // c: at once.
    let effects = key(&mut app, KeyCode::Char('c'));
    assert_eq!(
        effects,
        vec![Effect::Send(vec![Command::CheckNode { id: id(1002) }])]
    );
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("checking node-dal-002")));

    // P on a paused node: nothing to confirm.
    assert!(key(&mut app, KeyCode::Char('P')).is_empty());
    assert!(matches!(app.mode, Mode::Normal));
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.contains("is paused")));

    // U: asks first, naming the node and its IP; n sends nothing, y sends the resume.
    assert!(key(&mut app, KeyCode::Char('U')).is_empty());
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert!(
        c.title.contains("node-dal-002") && c.title.contains("198.51.100.8"),
        "{}",
        c.title
    );
    assert!(c
        .lines
        .iter()
        .any(|l| l.contains("blocklist: listed on zen.spamhaus.org")));
    assert!(c
        .lines
        .iter()
        .any(|l| l.contains("still listed on zen.spamhaus.org")));
    let screen = render(&mut app, 100, 24);
    assert!(
        screen.contains("Resume node node-dal-002 (198.51.100.8)?"),
        "{screen}"
    );
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    assert!(matches!(app.mode, Mode::Normal));
    key(&mut app, KeyCode::Char('U'));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Effect::Send(vec![Command::ResumeNode { id: id(1002) }])]
    );

    // The same keys in the Fleet view, on the selected node.
    app.update(Action::ShowFleet);
    app.update(Action::Top);
    assert!(key(&mut app, KeyCode::Char('P')).is_empty(), "asks first");
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert!(c.title.contains("node-dal-001") && c.title.contains("198.51.100.7"));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Effect::Send(vec![Command::PauseNode {
            id: id(1001),
            reason: None
        }])]
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('c')),
        vec![Effect::Send(vec![Command::CheckNode { id: id(1001) }])]
    );
    assert!(key(&mut app, KeyCode::Char('U')).is_empty());
    assert!(
        matches!(app.mode, Mode::Normal),
        "an active node is not resumed"
    );

    // Where rows are not nodes, the keys say where they work.
    app.update(Action::ShowRequests);
    assert!(key(&mut app, KeyCode::Char('c')).is_empty());
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.contains("Fleet")));

    // Read-only: none of them does anything.
    let mut app = app_with(reputation_fixture());
    app.read_only = true;
    for v in [Action::ShowBlacklist, Action::ShowFleet, Action::ShowAlerts] {
        app.update(v);
        app.update(Action::Down);
        for k in ['c', 'P', 'U'] {
            assert!(key(&mut app, KeyCode::Char(k)).is_empty(), "{k} in {v:?}");
            assert!(
                matches!(app.mode, Mode::Normal),
                "{k} in {v:?} opened something"
            );
            assert!(app
                .status
                .as_ref()
                .is_some_and(|s| s.text.starts_with("read-only")));
        }
    }
    let screen = render(&mut app, 110, 22);
    assert!(
        !screen.contains("P pause"),
        "the footer hides them:\n{screen}"
    );
}

#[test]
fn alerts_filter_on_severity_kind_and_words() {
    use crossterm::event::KeyCode;
    let mut snap = reputation_fixture();
    // On-call has the zone alert.
    snap.alerts[0].acked_by = Some("carol".into());
    snap.alerts[0].acked_at = Some(snap.alerts[0].raised_at.clone());
    let mut app = app_with(snap);
    app.update(Action::ShowAlerts);
    key(&mut app, KeyCode::Char('/'));
    for c in "severity:high".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let ids = |app: &App| -> Vec<String> {
        app.table()
            .visible
            .iter()
            .map(|i| app.snap.alerts[*i].id.clone())
            .collect()
    };
    assert_eq!(ids(&app), [id(8002)]);
    // Resolved alerts are history: hidden unless the filter asks about state (`state:`
    // alone shows them all). Open ones first, the worst first, then the longest open.
    let cases: &[(&str, &[u32])] = &[
        ("", &[8002, 8001]),
        ("severity:medium", &[]),
        ("severity:medium state:", &[8004, 8003]),
        ("state:resolved", &[8004, 8003]),
        ("state:open", &[8002]),
        ("state:acked", &[8001]),
        ("carol", &[8001]),
        ("kind:blocklist", &[8002]),
        ("kind:blocklist state:", &[8002, 8004]),
        ("severity:medium kind:bounce state:", &[8003]),
        ("!severity:medium", &[8002, 8001]),
        ("barracuda state:resolved", &[8004]),
        ("node:dal-001 state:", &[8003]),
        ("kind:zone unusable", &[8001]),
    ];
    for (text, want) in cases {
        app.apply_filter(text);
        let want: Vec<String> = want.iter().map(|n| id(*n)).collect();
        assert_eq!(ids(&app), want, "filter {text:?}");
    }
    // The Blacklist view knows severity:, zone: and node:.
    let mut app = app_with(reputation_fixture());
    app.update(Action::ShowBlacklist);
    app.apply_filter("severity:high");
    assert_eq!(app.table().visible, [0]);
    app.apply_filter("zone:barracuda");
    assert_eq!(app.table().visible, [1]);
}

#[test]
fn the_fleet_view_says_why_a_node_is_paused() {
    let mut app = app_with(reputation_fixture());
    app.update(Action::ShowFleet);
    let wide = render(&mut app, 160, 12);
    let line = wide
        .lines()
        .find(|l| l.contains("node-dal-002"))
        .expect("row");
    assert!(
        line.contains("paused") && line.contains("blocklist: listed on zen.spamhaus.org"),
        "{wide}"
    );
}

/// Against a real engine and store: P in the Fleet view pauses through the engine, the
/// detail pane says why, the snapshot carries alerts (open first), and U resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_from_the_console_go_through_the_engine() {
    use crossterm::event::KeyCode;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let req = create(&ctx, "acme", "dallas", "ssd-1", "pause-me").await.id;
    mailfleet::engine::run_until_idle(ctx.clone()).await;
    let handle = mailfleet::engine::spawn(sim_ctx(&store, &cfg, system_clock()));
    let mut app = App::new(
        Arc::new(cfg.clone()),
        Keymap::new(&BTreeMap::new()).expect("keys"),
        "alice".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    refresh(&mut app, &store).await;
    app.update(Action::ShowFleet);
    app.update(Action::Top);
    assert!(key(&mut app, KeyCode::Char('P')).is_empty());
    let effects = key(&mut app, KeyCode::Char('y'));
    pump(&mut app, &store, &handle, effects).await;
    let said = app.status.clone().expect("status");
    assert!(!said.error && said.text.contains("paused"), "{}", said.text);
    until(&mut app, &store, "paused", |a| {
        a.snap.nodes.iter().any(|n| &*n.status == "paused")
    })
    .await;
    // Enter on the node: the node's own detail, with why it is out of rotation and the
    // transition that put it there.
    let effects = app.update(Action::Open);
    pump(&mut app, &store, &handle, effects).await;
    app.now = chrono::Utc::now();
    let screen = render(&mut app, 110, 40);
    assert!(screen.contains("why: paused by alice"), "{screen}");
    assert!(screen.contains("no heartbeat received"), "{screen}");
    assert!(
        screen.contains("→ paused  alice: paused by alice"),
        "{screen}"
    );
    // r: the request that made it.
    assert!(key(&mut app, KeyCode::Char('r')).contains(&Effect::LoadDetail(req.clone())));
    app.set_detail(store.request_detail(&req).await.expect("detail"));
    let screen = render(&mut app, 110, 30);
    assert!(screen.contains("paused: paused by alice"), "{screen}");

    // A zone that fails its health check raises a low alert; when it recovers the alert
    // resolves, and a second failure's alert is listed before it.
    let zone = |usable| mailfleet::reputation::dnsbl::ZoneHealth {
        zone: "dnsbl.example.net".into(),
        usable,
        why: (!usable).then(|| "lists 127.0.0.1".to_string()),
    };
    let t0 = chrono::Utc::now();
    store
        .record_zone_health(vec![zone(false)], t0)
        .await
        .expect("health");
    store
        .record_zone_health(vec![zone(true)], t0 + chrono::Duration::seconds(1))
        .await
        .expect("health");
    store
        .record_zone_health(vec![zone(false)], t0 + chrono::Duration::seconds(2))
        .await
        .expect("health");
    refresh(&mut app, &store).await;
    assert_eq!(app.snap.alert_counts.low, 1);
    let states: Vec<bool> = app
        .snap
        .alerts
        .iter()
        .map(|a| a.resolved_at.is_some())
        .collect();
    assert_eq!(states, [false, true]);
    app.update(Action::Back);
    assert!(render(&mut app, 110, 30).contains("▲ 1 low"));

    // U resumes it, after a confirmation.
    app.update(Action::ShowFleet);
    assert!(key(&mut app, KeyCode::Char('U')).is_empty());
    let effects = key(&mut app, KeyCode::Char('y'));
    pump(&mut app, &store, &handle, effects).await;
    until(&mut app, &store, "resumed", |a| {
        a.snap.nodes.iter().all(|n| &*n.status != "paused")
    })
    .await;
    handle.shutdown().await;
}

#[test]
fn listing_reasons_and_alert_messages_cannot_drive_the_terminal() {
    let mut snap = reputation_fixture();
    snap.listings[0].details = Some(
        "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07 see https://ok.example/x\x1b[2J".into(),
    );
    snap.listings[0].zone = "zen.spamhaus.org\x1b[31m".into();
    snap.alerts[1].message = "listed\x1b[2J\u{9b}1m on zen".into();
    snap.nodes[1].status_reason = Some("blocklist\x1b]2;pwned\x07".into());
    let clean = |screen: &str| {
        !screen.contains('\x1b') && !screen.contains('\x07') && !screen.contains('\u{9b}')
    };
    // Triage shows the alert's message and the paused node's reason.
    let mut app = app_with(snap.clone());
    app.update(Action::ShowTriage);
    let screen = render(&mut app, 200, 30);
    assert!(clean(&screen), "{screen}");
    assert!(screen.contains("blocklist]2;pwned"), "{screen}");
    for v in [Action::ShowBlacklist, Action::ShowAlerts] {
        let mut app = app_with(snap.clone());
        app.update(v);
        if v == Action::ShowBlacklist {
            // The history row; in the Alerts view the first is the open one about a node.
            app.update(Action::Down);
        }
        let list = render(&mut app, 200, 20);
        assert!(clean(&list), "{list}");
        app.update(Action::Open);
        assert!(app.timeline.is_some());
        let pane = render(&mut app, 200, 30);
        assert!(clean(&pane), "{pane}");
        assert!(pane.contains("why: blocklist]2;pwned"), "{pane}");
        app.update(Action::ResumeNode);
        let confirm = render(&mut app, 120, 30);
        assert!(clean(&confirm), "{confirm}");
    }
}

/// Beside `fixture()`'s warming node-dal-002: node-dal-003, held, and node-dal-004, whose
/// warm-up paused it; each with its recent days.
fn warmup_fixture() -> ConsoleSnapshot {
    let mut snap = fixture();
    let mut held = node(3, 3, "node-dal-003", "198.51.100.9", "warming");
    if let Some(w) = &mut held.warmup {
        w.day = 6;
        w.cap = 770;
        w.status = "held".into();
    }
    let mut paused = node(4, 4, "node-dal-004", "198.51.100.10", "paused");
    paused.warmup = Some(Box::new(mailfleet::store::NodeWarmup {
        plan: "standard".into(),
        day: 11,
        days: 42,
        cap: 4100,
        status: "paused".into(),
        reason: None,
        recent_sent: None,
    }));
    paused.status_reason = Some("warm-up: complaints 0.15% of 4100 sent, above 0.10%".into());
    snap.nodes.extend([held, paused]);
    fn warm(snap: &mut ConsoleSnapshot, i: usize) -> &mut mailfleet::store::NodeWarmup {
        snap.nodes[i].warmup.as_deref_mut().expect("a warm-up")
    }
    warm(&mut snap, 1).recent_sent = Some(vec![10, 20, 40, 80, 80, 40, 0, 80].into());
    warm(&mut snap, 2).recent_sent = Some(vec![390, 550, 770, 700].into());
    warm(&mut snap, 3).recent_sent = Some(warmup_log().log.iter().map(|d| d.sent as u32).collect());
    warm(&mut snap, 2).reason = Some("bounces 3.51% of 700 sent, above 3.00%".into());
    warm(&mut snap, 3).reason = Some("complaints 0.15% of 4100 sent, above 0.10%".into());
    snap
}

/// node-dal-004's log: eleven days, the fifth held (bounces), the last paused (complaints).
fn warmup_log() -> mailfleet::store::WarmupState {
    let days: [(i64, i64, i64, i64, i64, &str, &str); 11] = [
        (1, 200, 200, 2, 0, "advanced", ""),
        (2, 280, 278, 3, 0, "advanced", ""),
        (3, 390, 390, 5, 0, "advanced", ""),
        (4, 550, 549, 8, 0, "advanced", ""),
        (
            5,
            770,
            770,
            27,
            0,
            "held",
            "bounces 3.51% of 770 sent, above 3.00%",
        ),
        (5, 770, 768, 9, 0, "advanced", ""),
        (6, 1080, 1080, 12, 1, "advanced", ""),
        (7, 1500, 1497, 20, 1, "advanced", ""),
        (8, 2100, 2100, 30, 2, "advanced", ""),
        (9, 2900, 2899, 41, 2, "advanced", ""),
        (
            10,
            4100,
            4100,
            120,
            6,
            "paused",
            "complaints 0.15% of 4100 sent, above 0.10%",
        ),
    ];
    mailfleet::store::WarmupState {
        plan: "standard".into(),
        day: 11,
        days: 42,
        cap: 4100,
        status: "paused".into(),
        reason: Some("complaints 0.15% of 4100 sent, above 0.10%".into()),
        date: Some("2026-11-21".into()),
        log: days
            .iter()
            .enumerate()
            .map(
                |(i, (day, cap, sent, bounced, complaints, decision, reason))| {
                    mailfleet::store::WarmupDay {
                        date: format!("2026-11-{:02}", 10 + i),
                        day: *day,
                        cap: *cap,
                        scheduled: *cap,
                        sent: *sent,
                        delivered: sent - bounced - sent / 50,
                        deferred: sent / 50,
                        bounced: *bounced,
                        complaints: *complaints,
                        decision: Some(decision.to_string()),
                        reason: (!reason.is_empty()).then(|| reason.to_string()),
                    }
                },
            )
            .collect(),
    }
}

fn screen_of(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
        .collect()
}

#[test]
fn warmup_view_charts_cap_against_sent_and_marks_the_held_and_paused_days() {
    use mailfleet::tui::Msg;
    let mut app = colour_app(warmup_fixture());
    // Stopped warm-ups first: the paused one, the held one, then the healthy one; the
    // selected node's log is asked for.
    let effects = app.update(Action::ShowWarmup);
    assert_eq!(effects, vec![Effect::LoadWarmup(id(1004))]);
    app.now = now();
    let screen = render(&mut app, 140, 40);
    assert!(screen.contains("loading…"), "{screen}");
    let rows: Vec<u16> = ["node-dal-004", "node-dal-003", "node-dal-002"]
        .iter()
        .map(|l| row_of(&screen, l))
        .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{screen}");
    assert!(
        screen.contains("paused: complaints 0.15% of 4100"),
        "{screen}"
    );
    assert!(
        screen.contains("held: bounces 3.51% of 700 sent"),
        "{screen}"
    );

    // A log for another node (the selection moved on) is not shown; this one is.
    let mut dirty = false;
    let stale = mailfleet::tui::handle(
        &mut app,
        Msg::Warmup(id(1003), Some(Box::new(warmup_log()))),
        &mut dirty,
    );
    assert!(stale.is_empty() && app.selected_warmup().is_none());
    mailfleet::tui::handle(
        &mut app,
        Msg::Warmup(id(1004), Some(Box::new(warmup_log()))),
        &mut dirty,
    );
    assert!(dirty && app.selected_warmup().is_some());

    let mut plain = app_with(warmup_fixture());
    plain.update(Action::ShowWarmup);
    plain.set_warmup(id(1004), Some(warmup_log()));
    plain.now = now();
    insta::assert_snapshot!("warmup_charts", render(&mut plain, 140, 40));

    // The charts sit beside the list; in them, the legend names the markers, and the held
    // day is drawn as a yellow block, the paused day as a red bar, off the legend's row.
    let buf = render_buffer(&mut app, 140, 40);
    let lines = screen_of(&buf);
    let chart_x = lines[2]
        .find("┌ node-dal-004 · day 11/42")
        .map(|b| lines[2][..b].chars().count())
        .expect("the chart beside the list") as u16;
    let legend_row = |text: &str| {
        lines
            .iter()
            .position(|l| {
                l.chars()
                    .skip(chart_x as usize)
                    .collect::<String>()
                    .contains(text)
            })
            .unwrap_or_else(|| panic!("{text} in a legend:\n{}", lines.join("\n"))) as u16
    };
    use ratatui::style::Color;
    for (name, symbol, colour) in [
        ("█ held", "█", Color::Yellow),
        ("▄ paused", "▄", Color::Red),
    ] {
        let legend = legend_row(name);
        let marks = (chart_x..140)
            .flat_map(|x| (4..20u16).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                y != legend && buf[(x, y)].symbol() == symbol && buf[(x, y)].fg == colour
            })
            .count();
        assert_eq!(marks, 1, "one {name} day marked");
    }
    for named in [
        "cap",
        "• sent",
        "bounces % · hold 3% · pause 5%",
        "complaints % · pause 0.1%",
    ] {
        legend_row(named);
    }

    // Enter: the whole log in the pane, newest first, with its rates.
    app.update(Action::Open);
    assert!(app.warm_history && app.pane_open());
    let screen = render(&mut app, 140, 40);
    assert!(screen.contains("DECISION"), "{screen}");
    let paused_day = row_of(&screen, "2026-11-20");
    let held_day = row_of(&screen, "2026-11-14");
    assert!(paused_day < held_day, "newest first:\n{screen}");
    let held_line = screen.lines().nth(held_day as usize).unwrap_or_default();
    assert!(
        held_line.contains("3.51%") && held_line.contains("held"),
        "{held_line}"
    );
    app.update(Action::Back);
    assert!(!app.warm_history);

    // Moving to another node asks for its log; the cached one is not shown for it.
    assert_eq!(app.update(Action::Down), vec![Effect::LoadWarmup(id(1003))]);
    assert!(app.selected_warmup().is_none());
    assert!(render(&mut app, 140, 40).contains("loading…"));
}

#[test]
fn the_fleet_view_draws_a_sparkline_of_each_warming_nodes_recent_days() {
    let mut app = app_with(warmup_fixture());
    assert_eq!(
        app.sparks.iter().flatten().count(),
        3,
        "made once, when the snapshot arrived"
    );
    app.now = now();
    let screen = render(&mut app, 140, 24);
    let line = |label: &str| {
        screen
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_default()
            .to_string()
    };
    // The last seven of its days, scaled to the busiest of the fourteen; a day that sent
    // nothing stays blank.
    assert!(line("node-dal-002").contains("d12/42 ▂▄██▄ █"), "{screen}");
    assert!(line("node-dal-003").contains("d6/42 HELD ▆██"), "{screen}");
    assert!(line("node-dal-004").contains("d11/42 PAUSED"), "{screen}");
    // Sorting by health compares the same order the words say, without making them.
    for i in 0..app.snap.nodes.len() {
        assert_eq!(
            mailfleet::tui::warmup::health_rank(&app, i),
            mailfleet::tui::warmup::health(&app, i).rank()
        );
    }
    // Without history, today's cap as before.
    let mut snap = warmup_fixture();
    for n in &mut snap.nodes {
        if let Some(w) = n.warmup.as_deref_mut() {
            w.recent_sent = None;
        }
    }
    let mut app = app_with(snap);
    assert!(render(&mut app, 140, 24).contains("d12/42 95/d"));
}

#[test]
fn the_header_shows_the_fleets_capacity_and_warns_from_80_percent_used() {
    let mut snap = fixture();
    // The warming node's cap is the fleet's capacity.
    if let Some(w) = snap.nodes[1].warmup.as_deref_mut() {
        w.cap = 1_200_000;
    }
    snap.warmup.closed_sent = 756_000;
    snap.warmup.closed_cap = 1_200_000;
    let mut app = colour_app(snap.clone());
    let header = render(&mut app, 160, 24)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        header.contains("cap 1.2M/day · used 63% (scaling off; 80% is high)"),
        "{header}"
    );
    let buf = render_buffer(&mut app, 160, 24);
    let x = header[..header.find("used").expect("used")].chars().count() as u16;
    use ratatui::style::Color;
    assert_ne!(buf[(x, 0)].fg, Color::Yellow, "63% is no warning");

    snap.warmup.closed_sent = 1_020_000;
    let mut app = colour_app(snap.clone());
    // With [scaling] on, the hint is when the engine files a scale-out.
    let mut cfg = (*app.cfg).clone();
    cfg.scaling.enabled = true;
    app.cfg = Arc::new(cfg);
    let header = render(&mut app, 160, 24)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(header.contains("used 85% (scale out at 80%)"), "{header}");
    let buf = render_buffer(&mut app, 160, 24);
    let x = header[..header.find("used").expect("used")].chars().count() as u16;
    assert_eq!(buf[(x, 0)].fg, Color::Yellow, "85% is a warning");
    // At 80 columns the hint and the less important parts make way; the warning stays.
    let header = render(&mut app, 80, 24)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(header.contains("used 85%"), "{header}");
    assert!(header.contains("need attention"), "{header}");
    assert!(!header.contains("scale out"), "{header}");
    assert!(header.trim_end().chars().count() <= 80, "{header}");
    // No capacity known (no warm-up at all): nothing said.
    let mut snap = fixture();
    for n in &mut snap.nodes {
        n.warmup = None;
    }
    let mut app = app_with(snap);
    assert!(!render(&mut app, 160, 24).contains("cap "));
}

#[test]
fn marked_nodes_pause_after_one_confirmation_listing_them() {
    use crossterm::event::KeyCode;
    use mailfleet::engine::Command;
    let mut app = app_with(warmup_fixture());
    app.update(Action::ShowWarmup);
    for _ in 0..3 {
        key(&mut app, KeyCode::Char(' '));
    }
    assert_eq!(app.table().marks.len(), 3);
    app.now = now();
    assert!(render(&mut app, 140, 40).contains("*node-dal-003"));
    assert!(key(&mut app, KeyCode::Char('P')).is_empty(), "asks first");
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert_eq!(c.title, "Pause 2 nodes?");
    let text = c.lines.join("\n");
    assert!(
        text.contains("pause node-dal-003 (198.51.100.9, warming)")
            && text.contains("pause node-dal-002 (198.51.100.8, warming)")
            && text.contains("not paused (not warming or active): node-dal-004"),
        "{text}"
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Effect::Send(vec![
            Command::PauseNode {
                id: id(1003),
                reason: None
            },
            Command::PauseNode {
                id: id(1002),
                reason: None
            },
        ])]
    );
    assert!(app.table().marks.is_empty(), "the marks clear");

    // In the Fleet view too, marks are nodes; U resumes the one paused among them.
    app.update(Action::ShowFleet);
    app.update(Action::MarkAll);
    assert_eq!(app.table().marks.len(), 4);
    key(&mut app, KeyCode::Char('U'));
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert!(
        c.title.starts_with("Resume node node-dal-004"),
        "{}",
        c.title
    );
    assert_eq!(
        app.confirm(true),
        vec![Effect::Send(vec![Command::ResumeNode { id: id(1004) }])]
    );
}

/// Types a `:` command and Enter, as a person would.
fn type_command(app: &mut App, text: &str) -> Vec<Effect> {
    use crossterm::event::KeyCode;
    key(app, KeyCode::Char(':'));
    for ch in text.chars() {
        key(app, KeyCode::Char(ch));
    }
    key(app, KeyCode::Enter)
}

#[test]
fn warmup_commands_resume_and_pace_after_a_confirmation_and_never_when_read_only() {
    use crossterm::event::KeyCode;
    use mailfleet::domain::warmup::ResumeFrom;
    use mailfleet::engine::Command;
    let mut app = app_with(warmup_fixture());
    app.update(Action::ShowWarmup);

    assert!(
        type_command(&mut app, "warmup resume week").is_empty(),
        "asks first"
    );
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert!(
        c.title.contains("from the first day of its week"),
        "{}",
        c.title
    );
    assert!(
        c.lines.iter().any(|l| l.contains("node-dal-004")
            && l.contains("day 11/42")
            && l.contains("→ day 8")),
        "{:?}",
        c.lines
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Effect::Send(vec![Command::WarmupResume {
            id: id(1004),
            from: ResumeFrom::Week
        }])]
    );

    assert!(type_command(&mut app, "warmup pace 1.5").is_empty());
    let Mode::Confirm(c) = &app.mode else {
        panic!("a confirmation")
    };
    assert!(
        c.lines
            .iter()
            .any(|l| l.contains("the 31 day(s) left become 47")),
        "{:?}",
        c.lines
    );
    assert_eq!(
        app.confirm(true),
        vec![Effect::Send(vec![Command::WarmupPace {
            id: id(1004),
            percent: 150
        }])]
    );
    // n sends nothing.
    type_command(&mut app, "warmup pace 0.75");
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());

    // A factor the engine would refuse is refused here, saying what is accepted.
    for bad in ["fast", "9", "0.1"] {
        assert!(type_command(&mut app, &format!("warmup pace {bad}")).is_empty());
        assert!(matches!(app.mode, Mode::Normal));
        let status = app.status.as_ref().expect("a status line");
        assert!(
            status.error
                && status.text.contains("is not a factor from 0.25")
                && status.text.contains(bad),
            "{}",
            status.text
        );
    }
    assert!(type_command(&mut app, "warmup resume tomorrow").is_empty());
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.contains("day, week or start")));
    assert!(type_command(&mut app, "warmup").is_empty(), "the view");
    assert_eq!(app.view, View::Warmup);
    assert_eq!(
        App::complete("warmup r").as_deref(),
        Some("warmup resume "),
        "tab completes the words"
    );
    assert_eq!(App::complete("war").as_deref(), Some("warmup"));

    // Read-only: nothing is sent, and nothing asks.
    let mut app = app_with(warmup_fixture());
    app.read_only = true;
    app.update(Action::ShowWarmup);
    for cmd in ["warmup resume week", "warmup pace 1.5"] {
        assert!(type_command(&mut app, cmd).is_empty());
        assert!(matches!(app.mode, Mode::Normal));
        assert!(app
            .status
            .as_ref()
            .is_some_and(|s| s.error && s.text.starts_with("read-only")));
    }
    let screen = render(&mut app, 140, 40);
    assert!(!screen.contains(":warmup resume|pace"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_carries_each_warm_ups_recent_days_and_the_fleets_capacity() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = mailfleet::demo::DemoSpec {
        nodes: 400,
        seed: 7,
    };
    let cfg = mailfleet::demo::config_for(&config(""), &spec);
    let store = open(&db_path(&dir), &cfg).await;
    store.sync_catalog(&cfg, now()).await.expect("catalog");
    mailfleet::demo::generate(&store, &cfg, &spec, now())
        .await
        .expect("demo");
    let snap = store.console_snapshot().await.expect("snapshot");
    let mut logs = Vec::new();
    for n in &snap.nodes {
        logs.push(store.node_warmup(&n.id.to_string()).await.expect("warm-up"));
    }
    // The window: the fourteen dates up to the newest in the log.
    let newest = logs
        .iter()
        .flatten()
        .flat_map(|w| w.log.iter().map(|d| d.date.clone()))
        .max()
        .expect("the demo has warm-up days");
    let start = (chrono::NaiveDate::parse_from_str(&newest, "%Y-%m-%d").expect("date")
        - chrono::Duration::days(13))
    .to_string();
    let pos = |date: &str| {
        let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date");
        let s = chrono::NaiveDate::parse_from_str(&start, "%Y-%m-%d").expect("date");
        (d - s).num_days() as usize
    };
    let (mut under_way, mut capacity) = (0, 0);
    for (n, log) in snap.nodes.iter().zip(&logs) {
        let w = n.warmup.as_ref();
        assert_eq!(w.map(|w| w.cap), log.as_ref().map(|l| l.cap), "{}", n.label);
        if matches!(&*n.status, "warming" | "active") {
            capacity += w.map_or(0, |w| w.cap);
        }
        let going = w.is_some_and(|w| matches!(&*w.status, "warming" | "held" | "paused"));
        let recent: Vec<(usize, u32)> = log
            .iter()
            .flat_map(|l| &l.log)
            .filter(|d| d.date >= start)
            .map(|d| (pos(&d.date), d.sent as u32))
            .collect();
        let expected = match (going, recent.first(), recent.last()) {
            (true, Some(first), Some(last)) => {
                let mut v = vec![0u32; last.0 - first.0 + 1];
                for (p, sent) in &recent {
                    v[p - first.0] = *sent;
                }
                Some(v)
            }
            _ => None,
        };
        under_way += usize::from(expected.is_some());
        assert_eq!(
            w.and_then(|w| w.recent_sent.as_ref()).map(|s| s.to_vec()),
            expected,
            "{}",
            n.label
        );
        let stopped = w.is_some_and(|w| matches!(&*w.status, "held" | "paused"));
        assert_eq!(
            w.and_then(|w| w.reason.as_deref()),
            log.as_ref()
                .and_then(|l| l.reason.as_deref())
                .filter(|_| stopped),
            "{}",
            n.label
        );
    }
    assert!(
        under_way > 10,
        "the demo has warm-ups under way ({under_way})"
    );
    // The console sums the fleet's capacity from the same rows.
    let app = app_with(snap.clone());
    assert_eq!(app.capacity, capacity);
    // Yesterday: the newest date a day was closed on, over the days closed on it.
    let closed: Vec<&mailfleet::store::WarmupDay> = logs
        .iter()
        .flatten()
        .flat_map(|w| &w.log)
        .filter(|d| d.decision.is_some())
        .collect();
    let date = closed.iter().map(|d| d.date.clone()).max();
    assert_eq!(snap.warmup.closed_date, date);
    let on = |d: &&&mailfleet::store::WarmupDay| Some(&d.date) == date.as_ref();
    assert_eq!(
        snap.warmup.closed_sent,
        closed.iter().filter(on).map(|d| d.sent).sum::<i64>()
    );
    assert_eq!(
        snap.warmup.closed_cap,
        closed.iter().filter(on).map(|d| d.cap).sum::<i64>()
    );

    // On screen: the header's capacity, and the Warm-up view loads the selected log.
    let mut app = app_with(snap);
    let header = render(&mut app, 200, 30)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(header.contains("/day · used "), "{header}");
    let effects = app.update(Action::ShowWarmup);
    let [Effect::LoadWarmup(id)] = effects.as_slice() else {
        panic!("the selected node's log is asked for: {effects:?}")
    };
    let state = store.node_warmup(id).await.expect("warm-up");
    app.set_warmup(id.clone(), state);
    let screen = render(&mut app, 160, 40);
    assert!(screen.contains("cap vs sent per day"), "{screen}");
}

/// `i` on a request awaiting input opens its access-details form: each field is checked
/// as it is typed, nothing is sent while one is wrong, and enter sends the details. On any
/// other request it says what it needs.
#[test]
fn i_enters_the_access_details_of_a_request_awaiting_them() {
    use crossterm::event::KeyCode;
    let mut snap = fixture();
    snap.requests = vec![request(9, "acme", "vendor-9", "awaiting_input", 5)];
    let mut app = app_with(snap);
    app.update(Action::ShowRequests);
    assert!(key(&mut app, KeyCode::Char('i')).is_empty());
    let Mode::Form(form) = &app.mode else {
        panic!("the access-details form is open")
    };
    assert_eq!(form.fields[1].value(), "22", "SSH's port to start with");
    for c in "127.0.0.1".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let screen = render(&mut app, 100, 24);
    assert!(screen.contains("Access details of vendor-9"), "{screen}");
    assert!(
        screen.contains("127.0.0.1 is a loopback address"),
        "{screen}"
    );
    assert!(key(&mut app, KeyCode::Enter).is_empty(), "nothing sent");
    for _ in 0..9 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "192.0.2.7".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('0'));
    let Mode::Form(form) = &app.mode else {
        panic!("the form is open")
    };
    assert_eq!(form.fields[1].value(), "220");
    assert_eq!(
        (
            form.fields[0].error.as_deref(),
            form.fields[1].error.as_deref()
        ),
        (None, None)
    );
    let sent = key(&mut app, KeyCode::Enter);
    assert_eq!(
        sent,
        vec![Effect::Send(vec![mailfleet::engine::Command::Provide {
            id: id(9),
            ip: "192.0.2.7".parse().expect("ip"),
            ssh_port: 220,
        }])]
    );
    assert!(matches!(app.mode, Mode::Normal));

    // Elsewhere it says what it needs and opens nothing.
    let mut app = app_with(fixture());
    app.update(Action::ShowRequests);
    assert!(key(&mut app, KeyCode::Char('i')).is_empty());
    assert!(matches!(app.mode, Mode::Normal));
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.contains("select a request awaiting input")));
}

#[test]
fn a_resize_shows_its_two_steps() {
    let mut snap = fixture();
    let mut r = request(90, "acme", "grow-1", "verifying", 1);
    r.plan = "ssd-1→ssd-4".into();
    r.steps = StepSummary {
        attempts: 2,
        resize: true,
        ..Default::default()
    };
    let mut failed = request(91, "acme", "grow-2", "rolled_back", 2);
    failed.plan = "ssd-2→ssd-8".into();
    failed.steps = StepSummary {
        attempts: 3,
        failed_step: Some(2),
        resize: true,
    };
    snap.requests.push(r);
    snap.requests.push(failed);
    let mut app = app_with(snap);
    app.update(Action::ShowRequests);
    let screen = render(&mut app, 160, 40);
    let row = |label: &str| {
        screen
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("{label} on\n{screen}"))
            .to_string()
    };
    let grow = row("grow-1");
    // The first step done, the second running: two cells, not provisioning's four.
    assert!(
        grow.contains("✓◐ ")
            || grow.contains("✓◓ ")
            || grow.contains("✓◑ ")
            || grow.contains("✓◒ "),
        "{grow}"
    );
    let bad = row("grow-2");
    assert!(bad.contains("✓✗ "), "{bad}");
}

/// Issue 16, item 6: the Triage view answers "what is broken and why" on one screen, the
/// worst first; Enter goes to the subject and Esc comes back; `A` and `S` acknowledge and
/// silence an alert with who and why (the engine records them: tests/alerting.rs).
#[test]
fn triage_lists_what_is_broken_worst_first_and_enter_jumps_to_it() {
    use crossterm::event::KeyCode;
    use mailfleet::engine::Command;
    let mut snap = reputation_fixture();
    // node-dal-001's agent went quiet; request 6 failed; the Hostwinds breaker is open.
    snap.nodes[0].status = "unhealthy".into();
    snap.nodes[0].status_reason = Some("no heartbeat for 1m30s (3 missed)".into());
    snap.requests[5].state = "failed".into();
    snap.requests[5].error = Some("allocate: provider refused the plan".into());
    snap.requests[6].needs_attention = true;
    snap.requests[6].wait_reason = Some("provider unreachable (3 stalls)".into());
    snap.circuits = vec![mailfleet::store::BreakerRow {
        provider: "hostwinds".into(),
        open: true,
        failures: 5,
        opened_at: Some(at(4)),
        retry_at: Some(at(-1)),
        last_error: Some("HTTP 503 from add_instance".into()),
        updated_at: at(4),
    }];
    let mut app = app_with(snap);
    assert!(key(&mut app, KeyCode::Char('0')).contains(&Effect::LoadRecent));
    assert_eq!(app.view, View::Triage);
    // First in the tab order.
    assert_eq!(mailfleet::tui::action::VIEWS[0], View::Triage);
    app.now = now();
    // What the rows say of time is made with them: again, at the fixture's clock.
    app.retriage();
    let screen = render(&mut app, 120, 30);
    insta::assert_snapshot!("triage", screen);
    // Open alerts by severity, then failed and stalled requests, then nodes out of
    // rotation (unhealthy before paused) with why, then open breakers.
    let rows: Vec<u16> = [
        "HIGH alert",
        "LOW alert",
        "allocate: provider refused the plan",
        "provider unreachable (3 stalls)",
        "no heartbeat for 1m30s",
        "blocklist: listed on zen.spamhaus.org",
        "HTTP 503 from add_instance",
    ]
    .iter()
    .map(|t| row_of(&screen, t))
    .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}\n{screen}");
    assert!(
        !screen.contains("bounce rate"),
        "resolved alerts are not broken:\n{screen}"
    );

    // Enter on the high alert (about node-dal-002): the Fleet view, that node selected,
    // its detail loading; Esc closes it, Esc again is back at Triage.
    assert_eq!(key(&mut app, KeyCode::Enter), [Effect::LoadNode(id(1002))]);
    assert_eq!(app.view, View::Fleet);
    assert_eq!(app.selected_node_id(), Some(id(1002)));
    assert!(app.timeline.is_some());
    key(&mut app, KeyCode::Esc);
    assert!(!app.pane_open() && app.view == View::Fleet);
    assert!(key(&mut app, KeyCode::Esc).contains(&Effect::LoadRecent));
    assert_eq!(app.view, View::Triage);
    // Enter on the failed request: the Requests view with its detail.
    app.update(Action::Down);
    app.update(Action::Down);
    let effects = key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Requests);
    assert_eq!(effects, [Effect::LoadDetail(uid(6).to_string())]);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.view, View::Triage);

    // A on the high alert: a note, then the engine is asked to record it.
    app.update(Action::Top);
    assert!(key(&mut app, KeyCode::Char('A')).is_empty());
    assert!(matches!(app.mode, Mode::Alert(_)));
    for c in "on it".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        [Effect::Send(vec![Command::AckAlert {
            id: id(8002),
            note: Some("on it".into()),
        }])]
    );
    // S wants a duration and a reason: a bad one is said and the prompt stays.
    key(&mut app, KeyCode::Char('S'));
    for c in "soon".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert!(matches!(app.mode, Mode::Alert(_)));
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.starts_with("for:")));
    for _ in 0..4 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "2h provider maintenance".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        [Effect::Send(vec![Command::SilenceAlert {
            id: id(8002),
            duration: std::time::Duration::from_secs(7200),
            reason: "provider maintenance".into(),
        }])]
    );
    // Not on a row that is no alert.
    app.update(Action::Bottom);
    assert!(key(&mut app, KeyCode::Char('A')).is_empty());
    assert!(matches!(app.mode, Mode::Normal));
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.error && s.text.contains("not an alert")));

    // An acknowledged alert says who has it; a silenced one goes after the others.
    let mut snap = (*app.snap).clone();
    snap.alerts[1].acked_by = Some("carol".into());
    snap.alerts[1].acked_at = Some(at(1));
    snap.alerts[0].silenced_by = Some("dave".into());
    snap.alerts[0].silenced_until = Some(at(-60));
    snap.alerts[0].silence_reason = Some("zone owner paged".into());
    app.set_snapshot(Arc::new(snap));
    let screen = render(&mut app, 120, 30);
    assert!(screen.contains("acked by carol"), "{screen}");
    assert!(screen.contains("silenced 1h by dave"), "{screen}");
    assert!(
        row_of(&screen, "acked by carol") < row_of(&screen, "silenced 1h by dave"),
        "{screen}"
    );

    // At 120 columns the Fleet view shows why a node is out of rotation.
    app.update(Action::ShowFleet);
    let screen = render(&mut app, 120, 20);
    assert!(screen.contains("REASON"), "{screen}");
    assert!(screen.contains("no heartbeat for 1m30s"), "{screen}");
}

/// `name:value` with a name the view does not know is plain text: the status line says so
/// and names the fields the view knows, rather than leaving an empty list to be believed.
#[test]
fn a_filter_field_the_view_does_not_know_is_said_not_silently_empty() {
    let mut app = app_with(fixture());
    app.update(Action::ShowFleet);
    app.apply_filter("state:open");
    assert!(app.table().visible.is_empty());
    let said = app.status.clone().expect("a hint");
    assert!(!said.error);
    assert!(
        said.text
            .contains("Fleet knows tenant: region: status: label:")
            && said.text.contains("\"state:\" is matched as plain text"),
        "{}",
        said.text
    );
    // A field the view knows says nothing.
    app.status = None;
    app.apply_filter("status:active");
    assert!(app.status.is_none());
    assert_eq!(app.table().visible.len(), 1);
}
