//! The console: a full-screen, keyboard-driven view of the fleet, its requests and their
//! history, with the engine running in the same process.
//!
//! One loop: terminal keys become Actions, `App::update` applies them and asks for effects
//! (engine commands, loads), background tasks bring data back as messages, and the screen is
//! drawn only when something changed — on input, new data, or the clock: each second while
//! something moves (requests in flight, rows that changed in the last minute, a status
//! message to expire), else once a minute.

pub mod action;
pub mod app;
pub mod filter;
pub mod form;
pub mod keymap;
pub mod nodes;
pub mod quota;
pub mod rowindex;
pub mod table;
pub mod theme;
pub mod triage;
pub mod views;
pub mod warmup;

use crate::engine::{self, Command, CommandMsg};
use crate::store::{
    ConsoleDelta, ConsoleReader, ConsoleSnapshot, ConsoleUpdate, EventFilter, EventRow, FirstPage,
    RequestDetail, Store, WarmupState,
};
use action::Action;
use app::{App, Effect, Mode};
use color_eyre::eyre::{eyre, Result};
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, MouseEventKind};
use futures::StreamExt;
use keymap::{Key, Keymap};
use ratatui::backend::Backend;
use ratatui::Terminal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tui_input::backend::crossterm::EventHandler;

/// What reaches the loop.
#[derive(Debug)]
pub enum Msg {
    Input(Event),
    /// The first rows, before the whole fleet is read.
    FirstPage(FirstPage),
    Snapshot(Arc<ConsoleSnapshot>),
    /// What changed since the last snapshot or delta.
    Delta(Box<ConsoleDelta>),
    /// A job done off the loop (see `app::Job`).
    Built(Box<app::Job>),
    Events(Vec<EventRow>, bool),
    Detail(Box<RequestDetail>),
    /// The last hour's events (the Triage view).
    Recent(Vec<EventRow>),
    /// What the node detail loaded.
    Node(Box<crate::store::NodeDetail>),
    /// A node's warm-up and its daily log (`None`: the node has no warm-up).
    Warmup(String, Option<Box<WarmupState>>),
    Outcome(String, bool),
    /// The store changed: reload what is on screen besides the snapshot.
    Changed,
    Tick,
}

/// Runs the console until the person quits.
pub async fn run(env: crate::cli::Env, read_only: bool) -> Result<()> {
    let keymap = Keymap::new(&env.cfg.keys).map_err(|e| eyre!("config: {e}"))?;
    let theme = theme::Theme::from_env();
    let db_label = env.store.path().display().to_string();
    let mut app = App::new(
        env.cfg.clone(),
        keymap,
        env.actor.clone(),
        db_label,
        read_only,
        theme,
    );
    let engine = match read_only {
        true => None,
        false => Some(engine::spawn(env.ctx()?)),
    };
    let commands = engine.as_ref().map(|e| e.sender());

    // Raw mode, the alternate screen, and the terminal put back on a panic; then the
    // console's own terminal, which writes each frame in one go: stdout alone goes out
    // in pieces of 1 KiB, and a full page of the fleet (a page down, a scroll) is
    // 10–20 KiB, each piece a wakeup of the terminal at the far end of the SSH session.
    drop(ratatui::try_init()?);
    let mut terminal = Terminal::new(ratatui::backend::CrosstermBackend::new(
        std::io::BufWriter::with_capacity(FRAME_BUFFER, std::io::stdout()),
    ))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let tasks = spawn_sources(&env.store, tx.clone());
    let result = run_loop(&mut terminal, &mut app, &env.store, commands, tx, rx).await;
    for t in tasks {
        t.abort();
    }
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    ratatui::restore();
    if let Some(engine) = engine {
        eprintln!("mailfleet: stopping the engine (finishing in-flight steps)…");
        engine.shutdown().await;
    }
    result
}

/// The bytes of output held until a frame ends: more than the largest frame.
const FRAME_BUFFER: usize = 256 * 1024;

/// The input reader and the store watcher.
fn spawn_sources(
    store: &Store,
    tx: mpsc::UnboundedSender<Msg>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let input = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut events = EventStream::new();
            while let Some(Ok(ev)) = events.next().await {
                if tx.send(Msg::Input(ev)).is_err() {
                    return;
                }
            }
        })
    };
    let watcher = {
        let (tx, store) = (tx.clone(), store.clone());
        tokio::spawn(async move { watch(store, tx).await })
    };
    vec![input, watcher]
}

/// How many rows the first screen reads before the whole fleet: more than a tall terminal
/// shows.
const FIRST_PAGE: usize = 200;

/// Sends the first page, then the whole snapshot, then what changed whenever anything
/// commits (checked five times a second, and soon after this process's own commits): at
/// most one read at a time, off the loop, and each one reads only the rows written since
/// the last (see `ConsoleReader`).
async fn watch(store: Store, tx: mpsc::UnboundedSender<Msg>) {
    match store.console_first_page(FIRST_PAGE).await {
        Ok(page) => {
            if tx.send(Msg::FirstPage(page)).is_err() {
                return;
            }
        }
        Err(e) => tracing::warn!(error = %e, "loading the console's first page failed"),
    }
    let mut probe = store.version_probe();
    let mut local = store.changes();
    let mut local_open = true;
    let mut reader = Some(ConsoleReader::new());
    let mut last_change = std::time::Instant::now();
    loop {
        match probe.changed(&store).await {
            Ok(true) => {
                last_change = std::time::Instant::now();
                let r = reader.take().unwrap_or_default();
                match store.console_read(r).await {
                    Ok((update, r)) => {
                        reader = Some(r);
                        let msg = match update {
                            ConsoleUpdate::Nothing => None,
                            ConsoleUpdate::Delta(d) => Some(Msg::Delta(Box::new(d))),
                            ConsoleUpdate::Full(s) => Some(Msg::Snapshot(Arc::new(s))),
                        };
                        if let Some(msg) = msg {
                            if tx.send(msg).is_err() || tx.send(Msg::Changed).is_err() {
                                return;
                            }
                        }
                    }
                    // The next read starts again from everything.
                    Err(e) => tracing::warn!(error = %e, "reading the console's rows failed"),
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "watching the store failed"),
        }
        // Five times a second while things change, once a second after ten quiet seconds.
        let quiet = last_change.elapsed() > Duration::from_secs(10);
        let every = Duration::from_millis(if quiet { 1000 } else { 200 });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // A store without a writer (read-only) has no commits of its own to tell of:
            // its channel is closed, and waiting on it would return at once, every time.
            changed = local.changed(), if local_open => match changed {
                Ok(()) => tokio::time::sleep(Duration::from_millis(30)).await,
                Err(_) => local_open = false,
            },
        }
    }
}

/// The loop itself, on any backend (a real terminal, or a test's).
pub async fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    store: &Store,
    commands: Option<mpsc::Sender<CommandMsg>>,
    tx: mpsc::UnboundedSender<Msg>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> Result<()> {
    let mut dirty = true;
    let mut mouse = false;
    let mut tick_at = tokio::time::Instant::now();
    loop {
        if dirty {
            app.now = chrono::Utc::now();
            terminal.draw(|f| views::draw(f, app))?;
            dirty = false;
            tick_at = tokio::time::Instant::from_std(app.next_tick(std::time::Instant::now()));
        }
        if mouse != app.mouse {
            mouse = app.mouse;
            let _ = if mouse {
                crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture)
            } else {
                crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture)
            };
        }
        let first = tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => m,
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(tick_at) => Msg::Tick,
        };
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for msg in batch {
            let effects = handle(app, msg, &mut dirty);
            for e in effects {
                if let Effect::Quit { .. } = e {
                    return Ok(());
                }
                perform(app, e, store, commands.as_ref(), &tx);
            }
            for job in std::mem::take(&mut app.jobs) {
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send(Msg::Built(Box::new(job.run())));
                });
            }
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Applies one message to the app; returns the effects it asked for.
pub fn handle(app: &mut App, msg: Msg, dirty: &mut bool) -> Vec<Effect> {
    match msg {
        Msg::Input(Event::Key(k)) if k.kind != KeyEventKind::Release => {
            *dirty = true;
            key(app, k)
        }
        Msg::Input(Event::Mouse(m)) if app.mouse => {
            *dirty = true;
            match m.kind {
                MouseEventKind::ScrollDown => app.update(Action::Down),
                MouseEventKind::ScrollUp => app.update(Action::Up),
                MouseEventKind::Down(crossterm::event::MouseButton::Left)
                    if matches!(app.mode, app::Mode::Normal) =>
                {
                    match app.row_at(m.column, m.row) {
                        Some(pos) => app.update(Action::Select(pos)),
                        None => vec![],
                    }
                }
                _ => vec![],
            }
        }
        Msg::Input(Event::Resize(..)) => {
            *dirty = true;
            vec![]
        }
        Msg::Input(_) => vec![],
        Msg::FirstPage(p) => {
            app.set_first_page(p);
            *dirty = true;
            vec![]
        }
        // A whole snapshot is the fleet as it stands, not a change: only deltas keep the
        // clock going by the second.
        Msg::Snapshot(s) => {
            app.receive_snapshot(s);
            *dirty = true;
            vec![]
        }
        Msg::Delta(d) => {
            app.receive_delta(*d);
            app.data_at = Some(std::time::Instant::now());
            *dirty = true;
            vec![]
        }
        Msg::Built(job) => {
            if app.install(*job) {
                *dirty = true;
            }
            app.follow_selection().into_iter().collect()
        }
        Msg::Events(rows, appended) => {
            app.set_events(rows, appended);
            *dirty = true;
            vec![]
        }
        Msg::Detail(d) => {
            app.set_detail(*d);
            *dirty = true;
            vec![]
        }
        Msg::Recent(rows) => {
            app.set_recent(rows);
            *dirty = true;
            vec![]
        }
        Msg::Node(d) => {
            app.set_node_detail(*d);
            *dirty = true;
            vec![]
        }
        Msg::Warmup(id, state) => {
            app.set_warmup(id, state.map(|s| *s));
            *dirty = true;
            vec![]
        }
        Msg::Outcome(text, error) => {
            app.say(text, error);
            *dirty = true;
            vec![]
        }
        Msg::Changed => {
            let mut out = vec![];
            if let Some((id, _)) = &app.detail {
                out.push(Effect::LoadDetail(id.clone()));
            }
            if app.view == action::View::Events && app.events.follow {
                out.push(Effect::LoadEvents { older_than: None });
            }
            if app.view == action::View::Triage {
                out.push(Effect::LoadRecent);
            }
            if let Some(t) = &app.timeline {
                out.push(Effect::LoadNode(t.node_id.clone()));
            }
            out.extend(app.reload_warmup());
            out
        }
        Msg::Tick => {
            app.tick += 1;
            if app.view == action::View::Triage {
                // Silences end and ages grow with the clock alone.
                app.retriage();
            }
            app.expire_status(std::time::Instant::now());
            *dirty = true;
            vec![]
        }
    }
}

/// A key, as the current mode reads it.
pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let ev = Event::Key(k);
    match &mut app.mode {
        Mode::Normal => match app.keymap.action_in(&Key::from_event(&k), app.view) {
            Some(a) => app.update(a),
            None => vec![],
        },
        Mode::Help => {
            app.mode = Mode::Normal;
            vec![]
        }
        Mode::Filter(input) => match k.code {
            KeyCode::Esc => {
                app.mode = Mode::Normal;
                app.apply_filter("")
            }
            KeyCode::Enter => {
                app.mode = Mode::Normal;
                vec![]
            }
            _ => {
                input.handle_event(&ev);
                let text = input.value().to_string();
                app.apply_filter(&text)
            }
        },
        Mode::Command(input) => match k.code {
            KeyCode::Esc => {
                app.mode = Mode::Normal;
                vec![]
            }
            KeyCode::Tab => {
                if let Some(done) = App::complete(input.value()) {
                    *input = tui_input::Input::new(done);
                }
                vec![]
            }
            KeyCode::Enter => {
                let text = input.value().to_string();
                app.run_command(&text)
            }
            _ => {
                input.handle_event(&ev);
                vec![]
            }
        },
        Mode::Form(form) => match k.code {
            KeyCode::Esc => {
                let what = match form.purpose {
                    form::Purpose::Create => "provision form",
                    form::Purpose::Provide { .. } => "access details",
                };
                app.mode = Mode::Normal;
                app.say(format!("{what} abandoned; nothing was written"), false);
                vec![]
            }
            KeyCode::Tab | KeyCode::Down => {
                form.next();
                vec![]
            }
            KeyCode::BackTab | KeyCode::Up => {
                form.prev();
                vec![]
            }
            KeyCode::Left | KeyCode::Right if form.focused().kind == form::FieldKind::Choice => {
                form.cycle(k.code == KeyCode::Right);
                form.validate();
                vec![]
            }
            KeyCode::Enter => match form.submit() {
                Some(command) => {
                    let said = match &command {
                        Command::Create(req) => format!("provisioning {}…", req.label),
                        Command::Provide { ip, ssh_port, .. } => {
                            format!("access details sent: {ip}, SSH port {ssh_port}")
                        }
                        _ => String::new(),
                    };
                    app.mode = Mode::Normal;
                    app.say(said, false);
                    vec![Effect::Send(vec![command])]
                }
                None => vec![],
            },
            _ => {
                if form.focused().kind == form::FieldKind::Text {
                    form.focused().input.handle_event(&ev);
                    form.validate();
                }
                vec![]
            }
        },
        Mode::Confirm(_) => match k.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => app.confirm(true),
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => app.confirm(false),
            KeyCode::Down | KeyCode::Char('j') => {
                app.scroll_confirm(1);
                vec![]
            }
            KeyCode::Up | KeyCode::Char('k') => {
                app.scroll_confirm(-1);
                vec![]
            }
            KeyCode::PageDown | KeyCode::Char(' ') => {
                app.scroll_confirm(app.page.max(1) as isize);
                vec![]
            }
            KeyCode::PageUp => {
                app.scroll_confirm(-(app.page.max(1) as isize));
                vec![]
            }
            _ => vec![],
        },
        Mode::Reason(r) => match k.code {
            KeyCode::Esc => {
                app.mode = Mode::Normal;
                app.say("rejection abandoned", false);
                vec![]
            }
            KeyCode::Enter => app.submit_reason(),
            _ => {
                r.input.handle_event(&ev);
                vec![]
            }
        },
        Mode::Alert(p) => match k.code {
            KeyCode::Esc => {
                app.mode = Mode::Normal;
                vec![]
            }
            KeyCode::Enter => app.submit_alert(),
            _ => {
                p.input.handle_event(&ev);
                vec![]
            }
        },
    }
}

/// Carries out an effect in the background; its result comes back as a message.
pub fn perform(
    app: &App,
    effect: Effect,
    store: &Store,
    commands: Option<&mpsc::Sender<CommandMsg>>,
    tx: &mpsc::UnboundedSender<Msg>,
) {
    let tx = tx.clone();
    match effect {
        Effect::Send(cmds) => {
            let Some(sender) = commands.cloned() else {
                let _ = tx.send(Msg::Outcome("read-only: no engine to send to".into(), true));
                return;
            };
            let actor = app.actor.clone();
            tokio::spawn(async move {
                let n = cmds.len();
                let (mut done, mut last_ok, mut first_err) = (0, String::new(), None);
                for command in cmds {
                    let (reply, rx) = tokio::sync::oneshot::channel();
                    if sender
                        .send(CommandMsg {
                            actor: actor.clone(),
                            command,
                            reply,
                        })
                        .await
                        .is_err()
                    {
                        first_err.get_or_insert("the engine has stopped".to_string());
                        break;
                    }
                    match rx.await {
                        Ok(Ok(outcome)) => {
                            done += 1;
                            last_ok = outcome.describe();
                        }
                        Ok(Err(e)) => {
                            first_err.get_or_insert(e.to_string());
                        }
                        Err(_) => {
                            first_err.get_or_insert("the engine has stopped".to_string());
                        }
                    }
                }
                let msg = match (n, first_err) {
                    (1, None) => Msg::Outcome(last_ok, false),
                    (_, None) => Msg::Outcome(format!("done: {done} of {n}"), false),
                    (1, Some(e)) => Msg::Outcome(e, true),
                    (_, Some(e)) => {
                        Msg::Outcome(format!("{done} of {n} done; first error: {e}"), true)
                    }
                };
                let _ = tx.send(msg);
            });
        }
        Effect::LoadDetail(id) => {
            let store = store.clone();
            tokio::spawn(async move {
                match store.request_detail(&id).await {
                    Ok(d) => {
                        let _ = tx.send(Msg::Detail(Box::new(d)));
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Outcome(e.to_string(), true));
                    }
                }
            });
        }
        Effect::LoadWarmup(id) => {
            let store = store.clone();
            tokio::spawn(async move {
                match store.node_warmup(&id).await {
                    Ok(state) => {
                        let _ = tx.send(Msg::Warmup(id, state.map(Box::new)));
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Outcome(e.to_string(), true));
                    }
                }
            });
        }
        Effect::LoadRecent => {
            let store = store.clone();
            let since = crate::clock::ts(app.now - chrono::Duration::hours(1));
            tokio::spawn(async move {
                let filter = EventFilter {
                    since: Some(since),
                    limit: 200,
                    ..Default::default()
                };
                if let Ok(rows) = store.list_events(&filter).await {
                    let _ = tx.send(Msg::Recent(rows));
                }
            });
        }
        Effect::LoadNode(id) => {
            let store = store.clone();
            tokio::spawn(async move {
                match store.node_detail(&id).await {
                    Ok(d) => {
                        let _ = tx.send(Msg::Node(Box::new(d)));
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Outcome(e.to_string(), true));
                    }
                }
            });
        }
        Effect::LoadEvents { older_than } => {
            let store = store.clone();
            let (filter, request) = events_filter(&app.events.filter, older_than);
            tokio::spawn(async move {
                let filter = match request {
                    None => filter,
                    Some(prefix) => match store.resolve_request_id(&prefix).await {
                        Ok(id) => EventFilter {
                            request_id: Some(id),
                            ..filter
                        },
                        Err(_) => EventFilter {
                            request_id: Some(prefix),
                            ..filter
                        },
                    },
                };
                if let Ok(rows) = store.list_events(&filter).await {
                    let _ = tx.send(Msg::Events(rows, older_than.is_some()));
                }
            });
        }
        Effect::Quit { .. } => {}
    }
}

/// The events filter: `tenant:NAME`, `request:ID`, or part of an event name. A request id
/// needs resolving first: it comes back beside the filter.
fn events_filter(text: &str, before: Option<i64>) -> (EventFilter, Option<String>) {
    let base = EventFilter {
        before,
        limit: 300,
        ..Default::default()
    };
    let t = text.trim();
    if let Some(tenant) = t.strip_prefix("tenant:") {
        return (
            EventFilter {
                tenant: Some(tenant.to_string()),
                ..base
            },
            None,
        );
    }
    if let Some(req) = t.strip_prefix("request:") {
        return (base, Some(req.to_string()));
    }
    (
        EventFilter {
            name: (!t.is_empty()).then(|| t.to_string()),
            ..base
        },
        None,
    )
}
