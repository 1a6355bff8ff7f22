//! Console state and `update`: the only place UI state changes. Drawing reads this; the
//! runner executes the effects `update` asks for (engine commands, loads).

use super::action::{Action, View, VIEWS};
use super::form::Form;
use super::keymap::Keymap;
use super::nodes::Timeline;
use super::quota::Quotas;
use super::rowindex::RowIndex;
use super::table::{self, TableState};
use super::theme::Theme;
use super::warmup::WarmupLog;
use crate::config::Config;
use crate::domain::ids::short;
use crate::domain::RequestState;
use crate::engine::Command;
use crate::store::{
    ConsoleDelta, ConsoleNode, ConsoleRequest, ConsoleSnapshot, EventRow, FirstPage, RequestDetail,
    Word,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use tui_input::Input;
use uuid::Uuid;

/// What `update` asks the runner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(Vec<Command>),
    LoadDetail(String),
    /// The node's warm-up and daily log (the Warm-up view's charts and history).
    LoadWarmup(String),
    LoadEvents {
        older_than: Option<i64>,
    },
    /// The last hour's events, for the Triage view.
    LoadRecent,
    /// What the node detail shows beyond the snapshot (heartbeats, transitions, its
    /// certificate).
    LoadNode(String),
    Quit {
        drain: bool,
    },
}

#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    Filter(Input),
    Command(Input),
    Form(Box<Form>),
    Confirm(Confirm),
    Reason(Reason),
    /// The `A` (note) or `S` (duration and reason) prompt for an alert.
    Alert(super::triage::AlertPrompt),
    Help,
}

#[derive(Debug, Clone)]
pub struct Confirm {
    pub title: String,
    pub lines: Vec<String>,
    pub on_yes: Pending,
    /// Lines scrolled past, when the list is longer than the screen.
    pub scroll: usize,
}

#[derive(Debug, Clone)]
pub enum Pending {
    Commands(Vec<Command>),
    Quit,
}

#[derive(Debug, Clone)]
pub struct Reason {
    pub input: Input,
    pub ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub text: String,
    pub error: bool,
    /// When it was said: it goes after [`STATUS_FOR`], or at the next action.
    pub at: std::time::Instant,
}

/// How long a message stays on the status line when nothing else happens.
pub const STATUS_FOR: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct EventsState {
    pub rows: Vec<EventRow>,
    pub follow: bool,
    pub exhausted: bool,
    pub filter: String,
}

pub struct App {
    pub view: View,
    pub keymap: Keymap,
    pub cfg: Arc<Config>,
    pub read_only: bool,
    pub actor: String,
    pub db_label: String,
    pub theme: Theme,
    pub now: DateTime<Utc>,
    pub tick: u64,
    pub snap: Arc<ConsoleSnapshot>,
    /// Where each node is in `snap.nodes`, by id; each request in `snap.requests`; each
    /// request's node, by the request's id. Ids are 16-byte numbers, not text.
    node_ids: RowIndex,
    request_ids: RowIndex,
    /// Nodes by the request that made them.
    node_of: RowIndex,
    /// While the whole fleet is still being read: how many nodes there are (the Fleet view
    /// shows its first page meanwhile).
    pub loading_total: Option<usize>,
    pub tables: Vec<TableState>,
    pub events: EventsState,
    /// The Triage view's rows and its last hour (see `tui::triage`).
    pub triage: super::triage::TriageState,
    pub pipeline_state: usize,
    pub mode: Mode,
    pub detail: Option<(String, Option<Box<RequestDetail>>)>,
    /// The node listing timeline open beside the list (Enter in the Blacklist and Alerts
    /// views); it shares the pane, its keys and its scroll with `detail`, and only one of
    /// the two is open.
    pub timeline: Option<Timeline>,
    /// The selected node's daily warm-up log is open in the pane (Enter in the Warm-up
    /// view); it follows the selection, and shares the pane with `detail` and `timeline`.
    pub warm_history: bool,
    /// The Warm-up view's selected node's log, as loaded.
    pub warm: WarmupLog,
    /// Each node's sparkline of its recent warm-up days, by index into `snap.nodes`: made
    /// when its row arrives, for the nodes with warm-up history only.
    pub sparks: Vec<Option<Box<str>>>,
    /// The fleet's daily sending capacity: today's caps of the warming and active nodes
    /// summed (an active node's is the last cap of its warm-up), kept as rows change.
    pub capacity: i64,
    /// The detail pane has the keys (Enter on an open pane): movement scrolls it.
    pub detail_focus: bool,
    /// Lines the detail pane is scrolled down by.
    pub detail_scroll: u16,
    pub status: Option<Status>,
    pub mouse: bool,
    pub quit: bool,
    /// Rows the current view showed at the last draw: what PgUp/PgDn move by.
    pub page: usize,
    /// Where the last draw put the table's rows, and the index of the first: what a mouse
    /// click maps back to a row.
    pub rows_drawn: Option<(ratatui::layout::Rect, usize)>,
    /// Figures the header and the pipeline show, counted when data arrives (not per frame).
    pub counts: Counts,
    /// Each tenant's quota and use, built when data arrives: the Approvals view's panel and
    /// its QUOTA IF APPROVED column read it.
    pub quotas: Quotas,
    /// False until the first snapshot arrives: the screen says "loading", not "0 nodes".
    pub loaded: bool,
    /// When rows last arrived: ages on screen count in seconds for a minute after.
    pub data_at: Option<std::time::Instant>,
    /// Work too big for the input loop (a whole snapshot, a sort or filter of a large
    /// view), handed to the runner to do elsewhere; see `Job`.
    pub jobs: Vec<Job>,
    /// The job whose result is awaited: older results are dropped (the newest wins), and
    /// deltas wait for it (`queued`) so the rows it was given do not change under it; and
    /// for any older job still running on the same rows, so that a change never copies
    /// the fleet to leave that job its own.
    pub pending: Option<u64>,
    /// The views the pending job is making (the title says so meanwhile).
    pub pending_views: Vec<View>,
    queued: Vec<ConsoleDelta>,
    jobs_made: u64,
}

/// Hands the memory a whole read freed (the rows as they were read, the old snapshot)
/// back to the system: glibc keeps freed memory in its arenas otherwise, and a console
/// that read 100,000 rows would hold twice what it uses.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Rows a view may filter or sort on the input loop; more, and the work is a `Job`.
pub const INLINE_ROWS: usize = 20_000;

/// Work for elsewhere: a scratch console with the same settings, views and data, that
/// makes the asked-for views (or takes the whole snapshot) where waiting does not block
/// input. Its result comes back through `App::install`.
pub struct Job {
    pub id: u64,
    pub scratch: Box<App>,
    pub work: Work,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.work {
            Work::Snapshot(_) => "snapshot".to_string(),
            Work::Views(v) => format!("{v:?}"),
            Work::Filter(v) => format!("filter {v:?}"),
        };
        write!(f, "Job({}, {what})", self.id)
    }
}

pub enum Work {
    Snapshot(Arc<ConsoleSnapshot>),
    /// Views made again: filtered and sorted.
    Views(Vec<View>),
    /// A view whose filter changed (and nothing else): a narrower filter thins out the
    /// rows it shows (see `table::refilter`).
    Filter(View),
}

impl Job {
    /// Does the work (off the loop); the scratch console comes back with the result.
    pub fn run(mut self) -> Job {
        match &self.work {
            Work::Snapshot(snap) => self.scratch.set_snapshot(snap.clone()),
            Work::Views(views) => {
                for v in views {
                    self.scratch.refresh(*v);
                }
            }
            Work::Filter(v) => self.scratch.refilter(*v),
        }
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Nodes per status, sorted by status (a status no node has left is absent).
    pub node_status: BTreeMap<Word, usize>,
    /// Requests per state, in `PIPELINE` order.
    pub states: [usize; 14],
    pub needs_attention: usize,
    /// Requests awaiting approval, per tenant (a tenant with none is absent).
    pub pending: BTreeMap<Word, usize>,
}

impl Counts {
    pub fn state(&self, s: RequestState) -> usize {
        PIPELINE
            .iter()
            .position(|p| *p == s)
            .map(|i| self.states[i])
            .unwrap_or(0)
    }
}

impl Counts {
    fn add_node(&mut self, n: &ConsoleNode, sign: isize) {
        let count = self.node_status.entry(n.status.clone()).or_default();
        *count = count.saturating_add_signed(sign);
        if *count == 0 {
            self.node_status.remove(&n.status);
        }
    }

    fn add_request(&mut self, r: &ConsoleRequest, sign: isize) {
        let state = r.state();
        if let Some(i) = PIPELINE.iter().position(|s| *s == state) {
            self.states[i] = self.states[i].saturating_add_signed(sign);
        }
        if r.needs_attention {
            self.needs_attention = self.needs_attention.saturating_add_signed(sign);
        }
        if state == RequestState::PendingApproval {
            let count = self.pending.entry(r.tenant.clone()).or_default();
            *count = count.saturating_add_signed(sign);
            if *count == 0 {
                self.pending.remove(&r.tenant);
            }
        }
    }
}

/// What a node adds to the fleet's daily capacity: its cap today while warming, its last
/// one once active.
fn capacity_of(n: &ConsoleNode) -> i64 {
    match &n.warmup {
        Some(w) if matches!(&*n.status, "warming" | "active") => w.cap,
        _ => 0,
    }
}

fn spark_of(n: &ConsoleNode) -> Option<Box<str>> {
    let sent = n.warmup.as_ref()?.recent_sent.as_ref()?;
    Some(super::warmup::sparkline(sent).into_boxed_str())
}

/// The states the pipeline view draws, in its order.
pub const PIPELINE: [RequestState; 14] = crate::domain::ALL_STATES;

impl App {
    pub fn new(
        cfg: Arc<Config>,
        keymap: Keymap,
        actor: String,
        db_label: String,
        read_only: bool,
        theme: Theme,
    ) -> App {
        App {
            view: View::Fleet,
            keymap,
            cfg,
            read_only,
            actor,
            db_label,
            theme,
            now: Utc::now(),
            tick: 0,
            snap: Arc::new(ConsoleSnapshot::default()),
            node_ids: RowIndex::default(),
            request_ids: RowIndex::default(),
            node_of: RowIndex::default(),
            loading_total: None,
            tables: VIEWS
                .iter()
                .map(|v| TableState::new(table::default_sort(*v)))
                .collect(),
            events: EventsState {
                follow: true,
                ..Default::default()
            },
            triage: Default::default(),
            pipeline_state: 0,
            mode: Mode::Normal,
            detail: None,
            timeline: None,
            warm_history: false,
            warm: WarmupLog::default(),
            sparks: Vec::new(),
            capacity: 0,
            detail_focus: false,
            detail_scroll: 0,
            status: None,
            mouse: false,
            quit: false,
            page: 20,
            rows_drawn: None,
            counts: Counts::default(),
            quotas: Quotas::default(),
            loaded: false,
            data_at: None,
            jobs: Vec::new(),
            pending: None,
            pending_views: Vec::new(),
            queued: Vec::new(),
            jobs_made: 0,
        }
    }

    /// A console with this one's settings, views (sort, filter, selection) and data, for
    /// a job; no rows of its own are made until it runs.
    fn scratch(&self) -> Box<App> {
        let mut s = App::new(
            self.cfg.clone(),
            self.keymap.clone(),
            self.actor.clone(),
            String::new(),
            self.read_only,
            self.theme,
        );
        s.now = self.now;
        s.pipeline_state = self.pipeline_state;
        s.snap = self.snap.clone();
        // No id maps: they only find a selection again, which `install` does here.
        s.quotas = self.quotas.clone();
        s.loaded = self.loaded;
        s.tables = self.tables.iter().map(TableState::without_rows).collect();
        Box::new(s)
    }

    /// Hands `work` to a job; returns its id.
    fn defer(&mut self, work: Work, views: Vec<View>) -> u64 {
        self.jobs_made += 1;
        let id = self.jobs_made;
        let scratch = match &work {
            // The scratch console needs only the settings: the snapshot replaces the rest.
            Work::Snapshot(_) => {
                let mut s = self.scratch();
                s.snap = Arc::default();
                s
            }
            Work::Views(_) => self.scratch(),
            // The view's rows as they stand, which a narrower filter only thins out.
            Work::Filter(v) => {
                let mut s = self.scratch();
                let (from, to) = (&self.tables[v.index()], &mut s.tables[v.index()]);
                to.visible = from.visible.clone();
                to.made_for = from.made_for;
                s
            }
        };
        self.pending = Some(id);
        self.pending_views = views;
        self.jobs.push(Job { id, scratch, work });
        id
    }

    /// Rebuilds view `v`: here when it is small, else as a job (the newest one wins).
    fn rebuild_view(&mut self, v: View) {
        if self.inline(v) {
            self.refresh(v);
        } else {
            self.defer(Work::Views(vec![v]), vec![v]);
        }
    }

    /// View `v` after its filter (alone) changed: like `rebuild_view`.
    fn refilter_view(&mut self, v: View) {
        if self.inline(v) {
            self.refilter(v);
        } else {
            self.defer(Work::Filter(v), vec![v]);
        }
    }

    /// Whether view `v` is small enough to be made on the loop (or must be: a snapshot
    /// is being made).
    fn inline(&self, v: View) -> bool {
        let rows = match v {
            View::Fleet | View::Warmup => self.snap.nodes.len(),
            View::Requests | View::Approvals | View::Pipeline => self.snap.requests.len(),
            _ => 0,
        };
        rows <= INLINE_ROWS || self.pending_snapshot()
    }

    fn pending_snapshot(&self) -> bool {
        self.pending.is_some() && self.pending_views.len() == VIEWS.len()
    }

    /// A whole snapshot: taken here when it is small, else made ready by a job.
    pub fn receive_snapshot(&mut self, snap: Arc<ConsoleSnapshot>) {
        if snap.nodes.len().max(snap.requests.len()) <= INLINE_ROWS {
            self.pending = None;
            self.pending_views.clear();
            self.queued.clear();
            self.set_snapshot(snap);
            return;
        }
        // Deltas read before this snapshot are in it.
        self.queued.clear();
        self.defer(Work::Snapshot(snap), VIEWS.to_vec());
    }

    /// What changed: applied now, or once no job holds the rows (see `pending`).
    pub fn receive_delta(&mut self, d: ConsoleDelta) {
        self.queued.push(d);
        self.apply_queued();
    }

    /// Applies the deltas that waited, if no job holds the rows any more; returns whether
    /// it did.
    fn apply_queued(&mut self) -> bool {
        let free = self.pending.is_none() && Arc::strong_count(&self.snap) == 1;
        if !free || self.queued.is_empty() {
            return false;
        }
        for d in std::mem::take(&mut self.queued) {
            self.apply_delta(d);
        }
        true
    }

    /// A job's result: taken if it is the newest asked for, keeping each selection on its
    /// row; then the deltas that waited for it. Returns whether the screen changed (an
    /// older result is dropped, but the deltas may have waited for it alone).
    pub fn install(&mut self, job: Job) -> bool {
        if self.pending != Some(job.id) {
            drop(job);
            return self.apply_queued();
        }
        let mut s = *job.scratch;
        let (views, read) = match job.work {
            Work::Snapshot(read) => (VIEWS.to_vec(), Some(read)),
            Work::Views(views) => (views, None),
            Work::Filter(v) => (vec![v], None),
        };
        // Each view's selection, by key, before its rows change.
        let keep: Vec<Option<String>> = views
            .iter()
            .map(|v| self.tables[v.index()].selected_key(self, *v))
            .collect();
        let whole = read.is_some();
        if let Some(read) = read {
            // The job's own handle on the snapshot goes now: the deltas that waited for it
            // change it in place, and a second handle would make each of them copy the
            // whole fleet first.
            drop(read);
            self.snap = std::mem::take(&mut s.snap);
            self.node_ids = std::mem::take(&mut s.node_ids);
            self.request_ids = std::mem::take(&mut s.request_ids);
            self.node_of = std::mem::take(&mut s.node_of);
            self.counts = std::mem::take(&mut s.counts);
            self.capacity = s.capacity;
            self.sparks = std::mem::take(&mut s.sparks);
            self.quotas = std::mem::take(&mut s.quotas);
            self.triage.take_index(&mut s.triage);
            self.loaded = true;
            self.loading_total = None;
            if let Mode::Form(form) = &mut self.mode {
                form.held = super::form::held_hostnames(&self.snap.requests);
                form.validate();
            }
        }
        for (v, keep) in views.iter().zip(keep) {
            let i = v.index();
            self.tables[i].take_rows(&mut s.tables[i]);
            let mut t = std::mem::take(&mut self.tables[i]);
            t.reselect(self, *v, keep);
            self.tables[i] = t;
        }
        if whole {
            self.rebuild_timeline();
        }
        self.pending = None;
        self.pending_views.clear();
        // A view whose sort, filter or stage changed while the job ran is made again.
        let stale: Vec<View> = views
            .iter()
            .copied()
            .filter(|v| {
                let i = v.index();
                let (now, then) = (&self.tables[i], &s.tables[i]);
                now.sort_col != then.sort_col
                    || now.asc != then.asc
                    || now.filter != then.filter
                    || (*v == View::Pipeline && self.pipeline_state != s.pipeline_state)
            })
            .collect();
        drop(s);
        if whole {
            give_back_memory();
        }
        for v in stale {
            self.rebuild_view(v);
        }
        self.apply_queued();
        true
    }

    /// When the clock next needs the screen drawn, drawn at `now`: in a second while
    /// something on it moves by the second (rows changed less than a minute ago: their
    /// ages count in seconds, a step in flight spins), else in a minute; and when the
    /// status message is due to go, if sooner.
    pub fn next_tick(&self, now: std::time::Instant) -> std::time::Instant {
        let minute = std::time::Duration::from_secs(60);
        // Requests in flight move only when rows change; ones an engine left behind (none
        // runs, or it stopped) do not keep the clock going.
        let moving = self
            .data_at
            .is_some_and(|at| now.saturating_duration_since(at) < minute);
        let mut next = now
            + if moving {
                std::time::Duration::from_secs(1)
            } else {
                minute
            };
        if let Some(st) = &self.status {
            next = next.min((st.at + STATUS_FOR).max(now));
        }
        next
    }

    /// The node a request made, if it is in the fleet.
    pub fn node_of_request(&self, request_id: &Uuid) -> Option<&ConsoleNode> {
        let i = self
            .node_of
            .get(request_id, |i| self.snap.nodes.get(i)?.request_id)?;
        self.snap.nodes.get(i)
    }

    /// Where the node with this id is in `snap.nodes`.
    pub fn node_index(&self, id: Uuid) -> Option<usize> {
        self.node_ids.get(&id, |i| Some(self.snap.nodes.get(i)?.id))
    }

    /// Where the request with this id is in `snap.requests`.
    pub fn request_index(&self, id: Uuid) -> Option<usize> {
        self.request_ids
            .get(&id, |i| Some(self.snap.requests.get(i)?.id))
    }

    pub fn table(&self) -> &TableState {
        &self.tables[self.view.index()]
    }

    fn table_mut(&mut self) -> &mut TableState {
        let i = self.view.index();
        &mut self.tables[i]
    }

    /// The first page of the Fleet view, before the whole fleet is read: shown (and
    /// navigable) until the snapshot replaces it.
    pub fn set_first_page(&mut self, page: FirstPage) {
        if self.loaded {
            return;
        }
        self.loading_total = Some(page.total);
        let snap = ConsoleSnapshot {
            nodes: page.nodes,
            ..Default::default()
        };
        self.index_rows(&snap);
        self.sparks = snap.nodes.iter().map(spark_of).collect();
        self.snap = Arc::new(snap);
        let mut t = std::mem::take(&mut self.tables[View::Fleet.index()]);
        table::rebuild(self, View::Fleet, &mut t);
        self.tables[View::Fleet.index()] = t;
    }

    fn index_rows(&mut self, snap: &ConsoleSnapshot) {
        let (nodes, requests) = (&snap.nodes, &snap.requests);
        self.node_ids = RowIndex::build(nodes.len(), |i| Some(nodes.get(i)?.id));
        self.node_of = RowIndex::build(nodes.len(), |i| nodes.get(i)?.request_id);
        self.request_ids = RowIndex::build(requests.len(), |i| Some(requests.get(i)?.id));
    }

    /// Everything from the store: rebuild every view's rows (filter and sort happen here,
    /// never while drawing), keeping each selection on the same item.
    pub fn set_snapshot(&mut self, mut snap: Arc<ConsoleSnapshot>) {
        // Rows made by hand (tests, benches) get their filter text here; the store's have it.
        if snap.nodes.iter().any(|n| !n.upper.is_indexed())
            || snap.requests.iter().any(|r| !r.upper.is_indexed())
        {
            let s = Arc::make_mut(&mut snap);
            s.nodes.iter_mut().for_each(ConsoleNode::index);
            s.requests.iter_mut().for_each(ConsoleRequest::index);
        }
        let keep: Vec<Option<String>> = VIEWS
            .iter()
            .map(|v| self.tables[v.index()].selected_key(self, *v))
            .collect();
        self.index_rows(&snap);
        let mut counts = Counts::default();
        for n in &snap.nodes {
            counts.add_node(n, 1);
        }
        for r in &snap.requests {
            counts.add_request(r, 1);
        }
        self.counts = counts;
        self.capacity = snap.nodes.iter().map(capacity_of).sum();
        self.sparks = snap.nodes.iter().map(spark_of).collect();
        self.quotas = Quotas::build(&self.cfg, &snap, &self.counts.pending);
        if let Mode::Form(form) = &mut self.mode {
            form.held = super::form::held_hostnames(&snap.requests);
            form.validate();
        }
        self.triage.index_all(&snap.nodes, &snap.requests);
        self.snap = snap;
        self.loaded = true;
        self.loading_total = None;
        self.rebuild_triage();
        for (v, keep) in VIEWS.into_iter().zip(keep) {
            let i = v.index();
            let mut t = std::mem::take(&mut self.tables[i]);
            // Positions from before belong to other rows: found again by key.
            t.pos.clear();
            t.made_for = None;
            table::rebuild(self, v, &mut t);
            t.reselect(self, v, keep);
            self.tables[i] = t;
        }
        self.rebuild_timeline();
    }

    /// What changed in the store: the changed rows replace theirs, new rows join, and each
    /// view moves only those rows. Counts, capacity, sparklines and quotas follow the same
    /// rows; the small tables (listings, alerts) come whole when they changed.
    pub fn apply_delta(&mut self, d: ConsoleDelta) {
        if !self.loaded {
            return;
        }
        // Each view's selected row, to keep the selection on it.
        let selected: Vec<Option<usize>> = self
            .tables
            .iter()
            .map(|t| t.visible.get(t.selected).copied())
            .collect();
        let requests_changed = !d.requests.is_empty();
        // Sorting the Approvals view by QUOTA IF APPROVED compares what the quotas say:
        // when a request changed, every row's figure may have, so that view is sorted anew.
        let approvals = View::Approvals.index();
        let whole = requests_changed && self.tables[approvals].sort_col == 7;
        // One row at a time: replaced, then moved in each view, so that every other row
        // is where its values sort while this one moves.
        for mut n in d.nodes {
            if !n.upper.is_indexed() {
                n.index();
            }
            self.counts.add_node(&n, 1);
            self.capacity = self.capacity.saturating_add(capacity_of(&n));
            let spark = spark_of(&n);
            let s = Arc::make_mut(&mut self.snap);
            let i = match self.node_ids.get(&n.id, |i| Some(s.nodes.get(i)?.id)) {
                Some(i) => {
                    let old = std::mem::replace(&mut s.nodes[i], n);
                    self.counts.add_node(&old, -1);
                    self.capacity = self.capacity.saturating_sub(capacity_of(&old));
                    i
                }
                None => {
                    let i = s.nodes.len();
                    let (id, request) = (n.id, n.request_id);
                    s.nodes.push(n);
                    let nodes = &s.nodes;
                    self.node_ids.insert(id, i, |k| Some(nodes.get(k)?.id));
                    if let Some(r) = request {
                        self.node_of.insert(r, i, |k| nodes.get(k)?.request_id);
                    }
                    i
                }
            };
            if self.sparks.len() <= i {
                self.sparks.resize(i + 1, None);
            }
            self.sparks[i] = spark;
            if let Some(n) = self.snap.nodes.get(i) {
                self.triage.note_node(i, n);
            }
            self.place_row(&[View::Fleet, View::Warmup], i);
        }
        for mut r in d.requests {
            if !r.upper.is_indexed() {
                r.index();
            }
            self.counts.add_request(&r, 1);
            if let Mode::Form(form) = &mut self.mode {
                super::form::update_held(&mut form.held, &r);
            }
            let s = Arc::make_mut(&mut self.snap);
            let i = match self.request_ids.get(&r.id, |i| Some(s.requests.get(i)?.id)) {
                Some(i) => {
                    let old = std::mem::replace(&mut s.requests[i], r);
                    self.counts.add_request(&old, -1);
                    i
                }
                None => {
                    let i = s.requests.len();
                    let id = r.id;
                    s.requests.push(r);
                    let requests = &s.requests;
                    self.request_ids
                        .insert(id, i, |k| Some(requests.get(k)?.id));
                    i
                }
            };
            if let Some(r) = self.snap.requests.get(i) {
                self.triage.note_request(i, r);
            }
            if whole {
                self.place_row(&[View::Requests, View::Pipeline], i);
            } else {
                self.place_row(&[View::Requests, View::Approvals, View::Pipeline], i);
            }
        }
        for (t, row) in self.tables.iter_mut().zip(selected) {
            if let Some(p) = row.and_then(|row| t.position(row)) {
                t.selected = p;
            } else {
                t.selected = t.selected.min(t.visible.len().saturating_sub(1));
            }
        }
        let small: Vec<View> = [
            d.listings.is_some().then_some(View::Blacklist),
            d.alerts.is_some().then_some(View::Alerts),
        ]
        .into_iter()
        .flatten()
        .collect();
        let small_keys: Vec<Option<String>> = small
            .iter()
            .map(|v| self.tables[v.index()].selected_key(self, *v))
            .collect();
        let s = Arc::make_mut(&mut self.snap);
        if let Some(l) = d.listings {
            s.listings = l;
        }
        if let Some((alerts, counts)) = d.alerts {
            s.alerts = alerts;
            s.alert_counts = counts;
        }
        if let Some(q) = d.quota_use {
            s.quota_use = q;
        }
        if let Some(w) = d.warmup {
            s.warmup = w;
        }
        if let Some(c) = d.circuits {
            s.circuits = c;
        }
        s.seq = d.seq;
        if requests_changed {
            self.quotas = Quotas::build(&self.cfg, &self.snap, &self.counts.pending);
            if let Mode::Form(form) = &mut self.mode {
                form.validate();
            }
        }
        let mut rebuild: Vec<(View, Option<String>)> = small.into_iter().zip(small_keys).collect();
        if whole {
            rebuild.push((View::Approvals, None));
        }
        for (v, keep) in rebuild {
            let i = v.index();
            let mut t = std::mem::take(&mut self.tables[i]);
            if keep.is_some() {
                t.pos.clear();
            }
            table::rebuild(self, v, &mut t);
            if keep.is_some() {
                t.reselect(self, v, keep);
            }
            self.tables[i] = t;
        }
        self.rebuild_timeline();
        // What is broken may have changed with any of it: the triage rows are few.
        self.retriage();
    }

    /// Moves row `i` (new or changed) where each of `views` now shows it.
    fn place_row(&mut self, views: &[View], i: usize) {
        for v in views {
            let k = v.index();
            let mut t = std::mem::take(&mut self.tables[k]);
            table::place(self, *v, &mut t, i);
            self.tables[k] = t;
        }
    }

    pub fn set_events(&mut self, rows: Vec<EventRow>, appended: bool) {
        if appended {
            if rows.is_empty() {
                self.events.exhausted = true;
            }
            self.events.rows.extend(rows);
        } else {
            self.events.exhausted = false;
            self.events.rows = rows;
        }
        self.refresh(View::Events);
    }

    pub fn set_detail(&mut self, d: RequestDetail) {
        if let Some((id, slot)) = &mut self.detail {
            if *id == d.request.id {
                *slot = Some(Box::new(d));
            }
        }
    }

    /// The Triage view's rows made again (the clock moved).
    pub fn retriage(&mut self) {
        self.rebuild_triage();
        self.refresh(View::Triage);
    }

    /// View `v` made again now, on the loop.
    pub(super) fn refresh(&mut self, v: View) {
        let i = v.index();
        let mut t = std::mem::take(&mut self.tables[i]);
        table::rebuild(self, v, &mut t);
        self.tables[i] = t;
    }

    fn refilter(&mut self, v: View) {
        let i = v.index();
        let mut t = std::mem::take(&mut self.tables[i]);
        table::refilter(self, v, &mut t);
        self.tables[i] = t;
    }

    pub fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
            at: std::time::Instant::now(),
        });
    }

    /// Clears a status message said [`STATUS_FOR`] or longer before `now`; returns whether
    /// it did (the screen then needs drawing).
    pub fn expire_status(&mut self, now: std::time::Instant) -> bool {
        let old = self
            .status
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= STATUS_FOR);
        if old {
            self.status = None;
        }
        old
    }

    /// The id of the selected row's request, in views that list requests.
    pub fn selected_request(&self) -> Option<String> {
        let t = self.table();
        let idx = *t.visible.get(t.selected)?;
        match self.view {
            View::Requests | View::Approvals | View::Pipeline => {
                self.snap.requests.get(idx).map(|r| r.id.to_string())
            }
            View::Fleet | View::Warmup => self
                .snap
                .nodes
                .get(idx)
                .and_then(|n| n.request_id)
                .map(|r| r.to_string()),
            View::Blacklist => {
                let node = self.snap.listings.get(idx)?.node_id.as_deref()?;
                self.node_by_id(node)?.request_id.map(|r| r.to_string())
            }
            View::Events => self.events.rows.get(idx).and_then(|e| e.request_id.clone()),
            View::Alerts => {
                let node = self.snap.alerts.get(idx)?.node_id.as_deref()?;
                self.node_by_id(node)?.request_id.map(|r| r.to_string())
            }
            View::Triage => match &self.triage.rows.get(idx)?.subject {
                super::triage::Subject::Request(id) => Some(id.to_string()),
                super::triage::Subject::Node(id) => self
                    .node_index(*id)
                    .and_then(|i| self.snap.nodes.get(i)?.request_id)
                    .map(|r| r.to_string()),
                super::triage::Subject::Alert {
                    node_id: Some(node),
                    ..
                } => self.node_by_id(node)?.request_id.map(|r| r.to_string()),
                _ => None,
            },
        }
    }

    /// The selected row's request (or its node's) in the detail pane; Enter on the
    /// request already shown hands the pane the keys, to scroll.
    pub(super) fn open_request(&mut self) -> Vec<Effect> {
        let Some(id) = self.selected_request() else {
            if self.view != View::Events {
                self.say("open: the selected row has no request", true);
            }
            return vec![];
        };
        if self.detail.as_ref().is_some_and(|(open, _)| *open == id) {
            self.detail_focus = true;
            return vec![];
        }
        self.detail_focus = false;
        self.detail_scroll = 0;
        self.timeline = None;
        self.warm_history = false;
        self.detail = Some((id.clone(), None));
        vec![Effect::LoadDetail(id)]
    }

    /// The requests an action applies to: the marked rows' (in the order the view shows
    /// them, then any the filter hides), or else the selected one's.
    fn targets(&self) -> Vec<String> {
        let t = self.table();
        if t.marks.is_empty() {
            return self.selected_request().into_iter().collect();
        }
        if matches!(self.view, View::Fleet | View::Warmup) {
            // Marks are nodes here.
            return self
                .marked_nodes()
                .into_iter()
                .filter_map(|i| self.snap.nodes.get(i)?.request_id)
                .map(|r| r.to_string())
                .collect();
        }
        let mut out: Vec<String> = t
            .visible
            .iter()
            .filter_map(|i| table::mark_key(self, self.view, *i))
            .filter(|id| t.marks.contains(id))
            .collect();
        if out.len() < t.marks.len() {
            let shown: std::collections::HashSet<&String> = out.iter().collect();
            let hidden: Vec<String> = t
                .marks
                .iter()
                .filter(|id| !shown.contains(id))
                .cloned()
                .collect();
            out.extend(hidden);
        }
        out
    }

    fn request(&self, id: &str) -> Option<&ConsoleRequest> {
        let i = self.request_index(id.parse().ok()?)?;
        self.snap.requests.get(i)
    }

    /// The node with this id (as text), if it is in the fleet.
    pub fn node_by_id(&self, id: &str) -> Option<&ConsoleNode> {
        let i = self.node_index(id.parse().ok()?)?;
        self.snap.nodes.get(i)
    }

    /// Applies an action; in the Warm-up view, a selection that moved to another node also
    /// asks for that node's log.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        // What the status line said was about the last action; this one starts afresh.
        self.status = None;
        let mut out = self.apply(action);
        out.extend(self.follow_selection());
        out
    }

    fn apply(&mut self, action: Action) -> Vec<Effect> {
        if action.mutates() && self.read_only {
            self.say(
                format!("read-only: {} is disabled", action.describe()),
                true,
            );
            return vec![];
        }
        let page = self.page.max(1);
        match action {
            Action::Quit => return self.ask_quit(),
            Action::Help => self.mode = Mode::Help,
            Action::NextView => return self.show(VIEWS[(self.view.index() + 1) % VIEWS.len()]),
            Action::PrevView => {
                return self.show(VIEWS[(self.view.index() + VIEWS.len() - 1) % VIEWS.len()])
            }
            Action::ShowFleet => return self.show(View::Fleet),
            Action::ShowRequests => return self.show(View::Requests),
            Action::ShowApprovals => return self.show(View::Approvals),
            Action::ShowBlacklist => return self.show(View::Blacklist),
            Action::ShowWarmup => return self.show(View::Warmup),
            Action::ShowEvents => return self.show(View::Events),
            Action::ShowPipeline => return self.show(View::Pipeline),
            Action::ShowAlerts => return self.show(View::Alerts),
            Action::ShowTriage => return self.show(View::Triage),
            Action::AckAlert => return self.ask_alert(false),
            Action::SilenceAlert => return self.ask_alert(true),
            Action::OpenRequest => return self.open_request(),
            Action::CommandLine => self.mode = Mode::Command(Input::default()),
            Action::Filter => {
                let current = if self.view == View::Events {
                    self.events.filter.clone()
                } else {
                    self.table().filter.clone()
                };
                self.mode = Mode::Filter(Input::new(current));
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
                if self.detail_focus && self.pane_open() =>
            {
                let page = page.min(u16::MAX as usize) as u16;
                let s = self.detail_scroll;
                self.detail_scroll = match action {
                    Action::Up => s.saturating_sub(1),
                    Action::Down => s.saturating_add(1),
                    Action::PageUp => s.saturating_sub(page),
                    Action::PageDown => s.saturating_add(page),
                    Action::Top => 0,
                    _ => u16::MAX,
                };
            }
            Action::Up => return self.move_by(-1),
            Action::Down => return self.move_by(1),
            Action::PageUp => return self.move_by(-(page as i64)),
            Action::PageDown => return self.move_by(page as i64),
            Action::Top => return self.move_by(i64::MIN / 2),
            Action::Bottom => return self.move_by(i64::MAX / 2),
            Action::Left | Action::Right if self.view == View::Pipeline => {
                let n = PIPELINE.len();
                self.pipeline_state = if action == Action::Left {
                    (self.pipeline_state + n - 1) % n
                } else {
                    (self.pipeline_state + 1) % n
                };
                self.rebuild_view(View::Pipeline);
            }
            Action::Left | Action::Right => {}
            Action::Open if matches!(self.view, View::Blacklist | View::Alerts) => {
                return self.open_timeline()
            }
            Action::Open if self.view == View::Fleet => return self.open_node(),
            Action::Open if self.view == View::Triage => return self.jump_from_triage(),
            Action::Open if self.view == View::Warmup => return self.open_history(),
            Action::Open => return self.open_request(),
            Action::Back => {
                if self.detail_focus && self.pane_open() {
                    self.detail_focus = false;
                    return vec![];
                }
                self.detail_focus = false;
                self.detail_scroll = 0;
                let had_pane = self.pane_open();
                self.detail = None;
                self.timeline = None;
                self.warm_history = false;
                if !had_pane {
                    let t = self.table_mut();
                    if !t.marks.is_empty() {
                        t.marks.clear();
                    } else if !t.filter.is_empty() {
                        t.filter.clear();
                        self.rebuild_view(self.view);
                    } else if let Some(v) = self.triage.back_to.take() {
                        // Nothing left to close after a jump from Triage: back there.
                        return self.show(v);
                    }
                }
            }
            Action::SortPrev | Action::SortNext | Action::SortReverse => {
                let cols = table::columns(self.view).len().max(1);
                let t = self.table_mut();
                match action {
                    Action::SortPrev => t.sort_col = (t.sort_col + cols - 1) % cols,
                    Action::SortNext => t.sort_col = (t.sort_col + 1) % cols,
                    _ => t.asc = !t.asc,
                }
                self.rebuild_view(self.view);
            }
            Action::SortBy(col) => {
                if col >= table::columns(self.view).len() {
                    return vec![];
                }
                let t = self.table_mut();
                if t.sort_col == col {
                    t.asc = !t.asc;
                } else {
                    t.sort_col = col;
                    t.asc = true;
                }
                self.rebuild_view(self.view);
            }
            Action::Select(pos) => {
                let selected = self.table().selected;
                if pos == selected {
                    return self.apply(Action::Open);
                }
                return self.move_by(pos as i64 - selected as i64);
            }
            Action::Mark => {
                let t = self.table();
                let row = t.visible.get(t.selected).copied();
                if let Some(id) = row.and_then(|i| table::mark_key(self, self.view, i)) {
                    let t = self.table_mut();
                    if !t.marks.remove(&id) {
                        t.marks.insert(id);
                    }
                }
                return self.move_by(1);
            }
            Action::MarkAll => self.mark_all(),
            Action::Provision => {
                let held = super::form::held_hostnames(&self.snap.requests);
                self.mode = Mode::Form(Box::new(Form::new(&self.cfg, held)));
            }
            Action::Approve => {
                return self.confirm_each(
                    "Approve",
                    |id| Command::Approve { id, reason: None },
                    &[RequestState::PendingApproval],
                )
            }
            Action::Reject => {
                let ids = self.applicable(&[RequestState::Queued, RequestState::PendingApproval]);
                if ids.is_empty() {
                    self.say("reject: select (or mark) a queued or pending request", true);
                } else {
                    self.mode = Mode::Reason(Reason {
                        input: Input::default(),
                        ids,
                    });
                }
            }
            Action::Suspend => {
                return self.confirm_each(
                    "Suspend",
                    |id| Command::Suspend { id, reason: None },
                    &[RequestState::Completed],
                )
            }
            Action::Reactivate => {
                return self.confirm_each(
                    "Reactivate",
                    |id| Command::Reactivate { id, reason: None },
                    &[RequestState::Suspended],
                )
            }
            Action::Rollback => return self.ask_rollback(),
            Action::Provide => {
                let ids = self.applicable(&[RequestState::AwaitingInput]);
                match ids.as_slice() {
                    [id] => {
                        let label = self
                            .request(id)
                            .map(|r| r.label.to_string())
                            .unwrap_or_default();
                        self.mode = Mode::Form(Box::new(Form::provide(id, &label)));
                    }
                    [] => self.say(
                        "access details: select a request awaiting input (a manual provider's)",
                        true,
                    ),
                    _ => self.say("access details: one request at a time", true),
                }
            }
            Action::CheckNode => return self.check_node(),
            Action::PauseNode => return self.ask_pause(),
            Action::ResumeNode => return self.ask_resume(),
            Action::Follow => {
                self.events.follow = !self.events.follow;
                let on = self.events.follow;
                self.say(
                    if on {
                        "following new events"
                    } else {
                        "stopped following"
                    },
                    false,
                );
                if on {
                    return vec![Effect::LoadEvents { older_than: None }];
                }
            }
            Action::ToggleMouse => {
                self.mouse = !self.mouse;
                let on = self.mouse;
                self.say(if on { "mouse on" } else { "mouse off" }, false);
            }
        }
        vec![]
    }

    pub(super) fn show(&mut self, v: View) -> Vec<Effect> {
        self.view = v;
        self.detail = None;
        self.timeline = None;
        self.warm_history = false;
        self.detail_focus = false;
        self.detail_scroll = 0;
        self.triage.back_to = None;
        match v {
            View::Events => vec![Effect::LoadEvents { older_than: None }],
            View::Triage => vec![Effect::LoadRecent],
            _ => vec![],
        }
    }

    /// The row of the current view drawn at screen cell (`x`, `y`), if any.
    pub fn row_at(&self, x: u16, y: u16) -> Option<usize> {
        let (area, first) = self.rows_drawn?;
        let inside =
            x >= area.x && x < area.x + area.width && y >= area.y && y < area.y + area.height;
        inside.then(|| first + (y - area.y) as usize)
    }

    fn move_by(&mut self, delta: i64) -> Vec<Effect> {
        let view = self.view;
        let t = self.table_mut();
        let n = t.visible.len() as i64;
        if n == 0 {
            return vec![];
        }
        let next = (t.selected as i64).saturating_add(delta).clamp(0, n - 1) as usize;
        t.selected = next;
        if view == View::Events
            && next + 1 >= t.visible.len()
            && !self.events.exhausted
            && self.events.filter.is_empty()
        {
            let oldest = self.events.rows.last().map(|e| e.seq);
            return vec![Effect::LoadEvents { older_than: oldest }];
        }
        if view == View::Events && delta != 0 && next > 0 {
            self.events.follow = false;
        }
        vec![]
    }

    /// The targeted requests that are in one of `states`.
    fn applicable(&self, states: &[RequestState]) -> Vec<String> {
        self.targets()
            .into_iter()
            .filter(|id| {
                self.request(id)
                    .is_some_and(|r| states.contains(&r.state()))
            })
            .collect()
    }

    fn confirm_each(
        &mut self,
        verb: &str,
        make: fn(String) -> Command,
        states: &[RequestState],
    ) -> Vec<Effect> {
        let ids = self.applicable(states);
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        if ids.is_empty() {
            self.say(
                format!(
                    "{}: select (or mark) a {} request",
                    verb.to_lowercase(),
                    names.join(" or ")
                ),
                true,
            );
            return vec![];
        }
        let commands: Vec<Command> = ids.iter().cloned().map(make).collect();
        if ids.len() == 1 && verb != "Suspend" {
            return vec![Effect::Send(commands)];
        }
        // Pending requests are all in one state: the rule that holds each says more.
        let rule = states == [RequestState::PendingApproval];
        let lines = ids
            .iter()
            .map(|id| self.describe_request(id, rule))
            .collect();
        self.mode = Mode::Confirm(Confirm {
            title: format!("{verb} {} request(s)?", ids.len()),
            lines,
            on_yes: Pending::Commands(commands),
            scroll: 0,
        });
        vec![]
    }

    /// One line of a confirmation: id, tenant, label, plan, then the approval rule (`rule`)
    /// or the state.
    fn describe_request(&self, id: &str, rule: bool) -> String {
        match self.request(id) {
            Some(r) => format!(
                "{}  {}  {}  {}  {}",
                short(id),
                r.tenant,
                r.label,
                r.plan,
                if rule {
                    r.approval_rule.as_deref().unwrap_or("-")
                } else {
                    &r.state
                }
            ),
            None => short(id).to_string(),
        }
    }

    /// Marks every row the view shows, or, when they all are marked already, clears the
    /// marks.
    fn mark_all(&mut self) {
        let view = self.view;
        let t = self.table();
        let ids: Vec<String> = t
            .visible
            .iter()
            .filter_map(|i| table::mark_key(self, view, *i))
            .collect();
        if ids.is_empty() {
            self.say("mark all: no rows here to mark", true);
            return;
        }
        let all = ids.iter().all(|id| t.marks.contains(id));
        let t = self.table_mut();
        if all {
            let n = t.marks.len();
            t.marks.clear();
            self.say(format!("cleared {n} mark(s)"), false);
        } else {
            let n = ids.len();
            t.marks.extend(ids);
            self.say(format!("marked {n} row(s); press again to clear"), false);
        }
    }

    /// Scrolls an open confirmation's list (drawing stops it at the end, which depends on
    /// the screen).
    pub fn scroll_confirm(&mut self, delta: isize) {
        if let Mode::Confirm(c) = &mut self.mode {
            c.scroll = c.scroll.saturating_add_signed(delta);
        }
    }

    /// Rollback (or deprovision) names exactly what will be destroyed.
    fn ask_rollback(&mut self) -> Vec<Effect> {
        let ids = self.targets();
        if ids.is_empty() {
            self.say("roll back: select a request", true);
            return vec![];
        }
        let mut lines = Vec::new();
        let mut commands = Vec::new();
        for id in &ids {
            let Some(r) = self.request(id) else { continue };
            let state = r.state();
            let deprovision = matches!(state, RequestState::Completed | RequestState::Suspended);
            let legal = crate::domain::transition(
                state,
                if deprovision {
                    crate::domain::RequestEvent::Deprovision
                } else {
                    crate::domain::RequestEvent::Rollback
                },
            )
            .is_ok();
            if !legal {
                continue;
            }
            let verb = if deprovision {
                "deprovision"
            } else {
                "roll back"
            };
            lines.push(format!("{verb} {} ({}, {})", short(id), r.label, r.state));
            if let Some(n) = id.parse().ok().and_then(|id| self.node_of_request(&id)) {
                lines.push(format!(
                    "  destroys instance {}",
                    n.provider_id.as_deref().unwrap_or("-")
                ));
                lines.push(format!(
                    "  releases IP {}",
                    n.ip_address
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "-".into())
                ));
                lines.push(format!(
                    "  removes DNS: PTR and records of {}",
                    crate::domain::hostname::effective_hostname(&r.label, r.domain.as_deref())
                ));
                if n.cert_expires.is_some() {
                    lines.push(if self.cfg.tls.revoke_on_teardown {
                        "  revokes its certificate at the CA and destroys the key".to_string()
                    } else {
                        "  retires its certificate and destroys the key".to_string()
                    });
                }
            } else {
                lines.push(
                    "  releases whatever it holds (quota, capacity, any instance being built)"
                        .into(),
                );
            }
            commands.push(if deprovision {
                Command::Deprovision {
                    id: id.clone(),
                    reason: Some(format!("from the console by {}", self.actor)),
                }
            } else {
                Command::Rollback {
                    id: id.clone(),
                    reason: Some(format!("from the console by {}", self.actor)),
                }
            });
        }
        if commands.is_empty() {
            self.say(
                "roll back: nothing selected can be rolled back or deprovisioned",
                true,
            );
            return vec![];
        }
        self.mode = Mode::Confirm(Confirm {
            title: format!(
                "Destroy {} request(s)? This cannot be undone.",
                commands.len()
            ),
            lines,
            on_yes: Pending::Commands(commands),
            scroll: 0,
        });
        vec![]
    }

    fn ask_quit(&mut self) -> Vec<Effect> {
        let in_flight = self
            .snap
            .requests
            .iter()
            .filter(|r| r.state().is_in_flight() || r.state() == RequestState::RollingBack)
            .count();
        if in_flight == 0 {
            self.quit = true;
            return vec![Effect::Quit { drain: false }];
        }
        self.mode = Mode::Confirm(Confirm {
            title: "Quit?".into(),
            lines: vec![
                format!("{in_flight} request(s) are in flight."),
                "The engine stops claiming work and lets running steps finish (up to the shutdown grace).".into(),
                "Another mailfleet (or `mailfleet work`) picks up the rest.".into(),
            ],
            on_yes: Pending::Quit,
            scroll: 0,
        });
        vec![]
    }

    /// Answers a confirmation.
    pub fn confirm(&mut self, yes: bool) -> Vec<Effect> {
        let Mode::Confirm(c) = std::mem::replace(&mut self.mode, Mode::Normal) else {
            return vec![];
        };
        if !yes {
            self.say("cancelled", false);
            return vec![];
        }
        self.table_mut().marks.clear();
        match c.on_yes {
            Pending::Commands(cmds) => vec![Effect::Send(cmds)],
            Pending::Quit => {
                self.quit = true;
                vec![Effect::Quit { drain: true }]
            }
        }
    }

    /// Finishes the reject reason prompt.
    pub fn submit_reason(&mut self) -> Vec<Effect> {
        let Mode::Reason(r) = &self.mode else {
            return vec![];
        };
        let reason = r.input.value().trim().to_string();
        if reason.is_empty() {
            self.say("a rejection needs a reason", true);
            return vec![];
        }
        if let Err(e) = crate::domain::validate::validate_reason("reason", &reason) {
            // The prompt stays open with what was typed, to be shortened.
            self.say(e.to_string(), true);
            return vec![];
        }
        let cmds = r
            .ids
            .iter()
            .map(|id| Command::Reject {
                id: id.clone(),
                reason: reason.clone(),
            })
            .collect();
        self.mode = Mode::Normal;
        self.table_mut().marks.clear();
        vec![Effect::Send(cmds)]
    }

    /// Applies the filter typed so far (as you type).
    pub fn apply_filter(&mut self, text: &str) -> Vec<Effect> {
        if self.view == View::Events {
            self.events.filter = text.to_string();
            return vec![Effect::LoadEvents { older_than: None }];
        }
        self.table_mut().filter = text.to_string();
        self.table_mut().selected = 0;
        self.refilter_view(self.view);
        self.hint_unknown_field(text);
        self.follow_selection().into_iter().collect()
    }

    /// A `name:value` word whose name this view does not know matches as plain text (so
    /// `state:open` in the Fleet view finds nothing): the status line says so, and which
    /// names the view knows, instead of an empty list that seems to answer.
    fn hint_unknown_field(&mut self, text: &str) {
        let known = super::filter::fields(self.view);
        let unknown = text.split_whitespace().find_map(|w| {
            let (name, _) = w.trim_start_matches('!').split_once(':')?;
            let named = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic());
            let name = name.to_lowercase();
            (named && !known.iter().any(|(n, _)| *n == name)).then_some(name)
        });
        if let Some(name) = unknown {
            let names: Vec<String> = known.iter().map(|(n, _)| format!("{n}:")).collect();
            let knows = if names.is_empty() {
                "no name: fields".to_string()
            } else {
                names.join(" ")
            };
            self.say(
                format!(
                    "filter: {} knows {knows}; \"{name}:\" is matched as plain text",
                    self.view.title()
                ),
                false,
            );
        }
    }

    /// Runs a `:` command: a view name, `q`/`quit`, `help`, `cluster test NAME`, `warmup
    /// resume day|week|start`, `warmup pace FACTOR`.
    pub fn run_command(&mut self, text: &str) -> Vec<Effect> {
        let mut out = self.command(text);
        out.extend(self.follow_selection());
        out
    }

    fn command(&mut self, text: &str) -> Vec<Effect> {
        let word = text.trim().trim_start_matches(':');
        self.mode = Mode::Normal;
        if let Some(v) = View::parse(word) {
            return self.show(v);
        }
        let all: Vec<&str> = word.split_whitespace().collect();
        if let ["warmup", args @ ..] = all.as_slice() {
            return self.warmup_command(args);
        }
        let mut words = word.split_whitespace();
        if let (Some("cluster"), Some("test"), Some(name), None) =
            (words.next(), words.next(), words.next(), words.next())
        {
            self.say(format!("testing cluster {name} …"), false);
            return vec![Effect::Send(vec![Command::TestCluster {
                name: name.to_string(),
            }])];
        }
        match word {
            "q" | "quit" => self.apply(Action::Quit),
            "help" => self.apply(Action::Help),
            "" => vec![],
            other => {
                self.say(format!(":{} is not a command; try :fleet, :requests, :approvals, :blacklist, :warmup, :events, :pipeline, :alerts, :cluster test NAME, :warmup resume day|week|start, :warmup pace FACTOR, :q", crate::domain::validate::sanitize(other)), true);
                vec![]
            }
        }
    }

    /// Completes a `:` command from what was typed: the one command it starts, or else
    /// what all the commands it starts have in common beyond it.
    pub fn complete(text: &str) -> Option<String> {
        let word = text.trim_start().trim_start_matches(':');
        let mut all: Vec<&str> = VIEWS.iter().map(|v| v.name()).collect();
        all.extend([
            "quit",
            "help",
            "warmup resume day",
            "warmup resume week",
            "warmup resume start",
            "warmup pace ",
        ]);
        let hits: Vec<&str> = all.into_iter().filter(|n| n.starts_with(word)).collect();
        match hits.as_slice() {
            [] => None,
            [one] => Some(one.to_string()),
            [first, rest @ ..] => {
                let common = rest.iter().fold(first.len(), |n, h| {
                    first
                        .char_indices()
                        .zip(h.chars())
                        .take_while(|((_, a), b)| a == b)
                        .last()
                        .map_or(0, |((i, a), _)| (i + a.len_utf8()).min(n))
                });
                (common > word.len()).then(|| first[..common].to_string())
            }
        }
    }
}
