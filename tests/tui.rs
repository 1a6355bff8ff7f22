//! The console without a terminal: every view drawn on ratatui's TestBackend with a fixed
//! clock and data (insta snapshots), escape sequences neutralised, narrow screens, and a
//! headless App driven through Actions against a real engine.

mod support;

use chrono::{DateTime, TimeZone, Utc};
use mailfleet::store::{ConsoleNode, ConsoleRequest, ConsoleSnapshot, ListingRow, StepSummary};
use mailfleet::tui::action::{Action, View, VIEWS};
use mailfleet::tui::app::{App, Effect, Mode};
use mailfleet::tui::keymap::Keymap;
use mailfleet::tui::theme::Theme;
use ratatui::backend::TestBackend;
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

fn request(n: u32, tenant: &str, label: &str, state: &str, min_ago: i64) -> ConsoleRequest {
    ConsoleRequest {
        id: id(n),
        tenant: tenant.into(),
        region: "dallas".into(),
        plan: "ssd-1".into(),
        cpu: 1,
        memory_gb: 1,
        storage_gb: 30,
        label: label.into(),
        state: state.into(),
        requested_by: "alice".into(),
        approval_rule: None,
        approval_reason: None,
        wait_reason: None,
        error: None,
        needs_attention: false,
        created_at: at(min_ago),
        steps: StepSummary::default(),
    }
}

fn node(n: u32, req: u32, label: &str, ip: &str, status: &str) -> ConsoleNode {
    ConsoleNode {
        id: id(1000 + n),
        request_id: Some(id(req)),
        provider_id: Some(format!("sim-{n:04}")),
        tenant: "acme".into(),
        label: label.into(),
        hostname: format!("{label}.fleet.example.net"),
        ip_address: Some(ip.into()),
        region: "dallas".into(),
        plan: "ssd-1".into(),
        status: status.into(),
        status_reason: None,
        reputation_score: 90 + n as i64,
        current_load: 10 * n as i64,
        created_at: at(600),
        last_heartbeat: Some(mailfleet::clock::ts(now() - chrono::Duration::seconds(12))),
        warmup: (status == "warming").then(|| mailfleet::store::NodeWarmup {
            plan: "standard".into(),
            day: 12,
            days: 42,
            cap: 95,
            status: "warming".into(),
        }),
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
    };
    requests[2].steps = StepSummary {
        attempts: 2,
        failed_step: None,
    };
    requests[5].steps = StepSummary {
        attempts: 6,
        failed_step: Some(4),
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
    }];
    ConsoleSnapshot {
        nodes,
        requests,
        listings,
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

fn render(app: &mut App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    term.draw(|f| mailfleet::tui::views::draw(f, app))
        .expect("draw");
    let buf = term.backend().buffer().clone();
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
        .find(|r| r.label == label)
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
        .find(|r| r.id == sel)
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
        .find(|r| r.label == "big-1")
        .expect("big")
        .id
        .clone();
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
