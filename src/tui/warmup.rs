//! The console's side of warm-up: the sparklines of each node's recent sending (made once
//! per snapshot, never while drawing), a warm-up's health in words, the selected node's
//! daily log (loaded off the loop when the selection moves to another node, its chart series
//! made when it arrives), the fleet's capacity for the header, and the operator's
//! `:warmup resume` and `:warmup pace` commands. Nothing here writes: the engine does, when
//! it gets the commands asked for here.

use super::action::View;
use super::app::{App, Confirm, Effect, Mode, Pending};
use super::theme::Theme;
use crate::domain::validate::sanitize;
use crate::domain::warmup::ResumeFrom;
use crate::engine::Command;
use crate::store::{ConsoleNode, WarmupState};
use ratatui::style::Style;

/// Seed 001: the fleet scales out (horizontally) at a share of its sending capacity,
/// `[scaling] capacity_threshold` (80% unless configured), as a whole percentage.
pub fn scale_out_percent(cfg: &crate::config::Config) -> i64 {
    (cfg.scaling.capacity_threshold * 100.0).round() as i64
}

/// How many days of the sparkline the Fleet view's WARM-UP column shows at most.
const FLEET_SPARK_DAYS: usize = 7;

/// The width of the Fleet view's WARM-UP column.
const FLEET_WARMUP_WIDTH: usize = 14;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One block per day, scaled to the busiest day; a day that sent nothing is a space.
pub fn sparkline(sent: &[u32]) -> String {
    let max = u64::from(sent.iter().copied().max().unwrap_or(0));
    sent.iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let level = (u64::from(v) * 8).div_ceil(max).clamp(1, 8);
                BARS[level as usize - 1]
            }
        })
        .collect()
}

/// A node the Warm-up view lists: its warm-up is under way or stopped (held, paused), and
/// the node is still in the fleet.
pub fn under_way(n: &ConsoleNode) -> bool {
    n.warmup
        .as_ref()
        .is_some_and(|w| matches!(&*w.status, "warming" | "held" | "paused"))
        && &*n.status != "decommissioned"
}

/// The Fleet view's WARM-UP cell: the plan day, then the last days' sparkline (or today's
/// cap when there is no history yet); a hold or pause says so first.
pub fn fleet_cell(app: &App, i: usize, n: &ConsoleNode) -> String {
    let Some(w) = n.warmup.as_ref().filter(|w| &*w.status != "completed") else {
        return "-".into();
    };
    let mut head = format!("d{}/{}", w.day, w.days);
    if &*w.status != "warming" {
        head.push(' ');
        head.push_str(&w.status.to_uppercase());
    }
    match app.sparks.get(i).and_then(|s| s.as_deref()) {
        Some(spark) => {
            let room = FLEET_WARMUP_WIDTH
                .saturating_sub(head.chars().count() + 1)
                .min(FLEET_SPARK_DAYS);
            let days = spark.chars().count();
            let tail: String = spark.chars().skip(days.saturating_sub(room)).collect();
            if tail.is_empty() {
                head
            } else {
                format!("{head} {tail}")
            }
        }
        None if &*w.status == "warming" => {
            format!("{head} {}/d", super::table::short_count(w.cap))
        }
        None => head,
    }
}

/// How a warm-up is doing, from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Repeating a day: yesterday's signals were soft-bad.
    Held(String),
    /// Stopped: its warm-up paused it, or the node is out of rotation (paused by an operator
    /// or a listing, unhealthy, in maintenance): the node's status, and why.
    Stopped(String, String),
}

impl Health {
    /// "ok", "held: bounces 3.4% …", "paused: complaints …".
    pub fn text(&self) -> String {
        match self {
            Health::Ok => "ok".into(),
            Health::Held(why) => format!("held: {why}"),
            Health::Stopped(status, why) => format!("{status}: {why}"),
        }
    }

    /// The order to look at them in: stopped first, then held, then healthy.
    pub fn rank(&self) -> u8 {
        match self {
            Health::Stopped(..) => 0,
            Health::Held(_) => 1,
            Health::Ok => 2,
        }
    }

    pub fn style(&self, th: &Theme) -> Style {
        match self {
            Health::Ok => th.ok(),
            Health::Held(_) => th.warn(),
            Health::Stopped(..) => th.error(),
        }
    }
}

/// The order of node `i`'s health (as `Health::rank`), without making its words: what
/// sorting by it compares.
pub fn health_rank(app: &App, i: usize) -> u8 {
    let Some(n) = app.snap.nodes.get(i) else {
        return 2;
    };
    match n.warmup.as_ref().map(|w| &*w.status) {
        Some("paused") => 0,
        _ if !matches!(&*n.status, "warming" | "active") => 0,
        Some("held") => 1,
        _ => 2,
    }
}

/// The health of node `i`'s warm-up (sanitized: the reasons come from outside).
pub fn health(app: &App, i: usize) -> Health {
    let s = &app.snap;
    let Some(n) = s.nodes.get(i) else {
        return Health::Ok;
    };
    let status = n.warmup.as_ref().map(|w| &*w.status).unwrap_or("");
    let why = |fallback: &str| {
        let text = n
            .warmup
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .or(n.status_reason.as_deref())
            .unwrap_or(fallback);
        sanitize(text).into_owned()
    };
    match status {
        "paused" => Health::Stopped("paused".into(), why("no reason recorded")),
        _ if !matches!(&*n.status, "warming" | "active") => Health::Stopped(
            sanitize(&n.status).into_owned(),
            sanitize(n.status_reason.as_deref().unwrap_or("no reason recorded")).into_owned(),
        ),
        "held" => Health::Held(why("no reason recorded")),
        _ => Health::Ok,
    }
}

/// The fleet's capacity for the header: "cap 1.2M/day", and yesterday's use in percent
/// when a day has been closed.
pub fn capacity(app: &App) -> Option<(String, Option<i64>)> {
    let w = &app.snap.warmup;
    if app.capacity <= 0 && w.closed_cap <= 0 {
        return None;
    }
    let used = (w.closed_cap > 0).then(|| {
        let percent = i128::from(w.closed_sent.max(0)) * 100 / i128::from(w.closed_cap);
        i64::try_from(percent).unwrap_or(i64::MAX)
    });
    Some((
        format!("cap {}/day", super::table::short_count(app.capacity)),
        used,
    ))
}

/// One chart point per day: x is the day's place in the log (0 = its first day).
pub type Points = Vec<(f64, f64)>;

/// A node's warm-up log with what its charts draw, made once when it arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupChart {
    pub state: WarmupState,
    /// The day's cap, and what it sent.
    pub cap: Points,
    pub sent: Points,
    /// The days the day boundary held, and paused, at what they sent.
    pub held: Points,
    pub paused: Points,
    /// Bounces and complaints, in percent of what was sent (days that sent nothing have
    /// no rate).
    pub bounces: Points,
    pub complaints: Points,
    pub max_volume: f64,
    pub max_bounces: f64,
    pub max_complaints: f64,
}

fn percent(n: i64, of: i64) -> Option<f64> {
    (of > 0).then(|| n as f64 * 100.0 / of as f64)
}

impl WarmupChart {
    pub fn new(state: WarmupState) -> WarmupChart {
        let n = state.log.len();
        let (mut cap, mut sent) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut held, mut paused) = (Vec::new(), Vec::new());
        let (mut bounces, mut complaints) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut max_volume, mut max_bounces, mut max_complaints) = (0f64, 0f64, 0f64);
        for (x, d) in state.log.iter().enumerate() {
            let (x, y) = (x as f64, d.sent as f64);
            cap.push((x, d.cap as f64));
            sent.push((x, y));
            max_volume = max_volume.max(y).max(d.cap as f64);
            match d.decision.as_deref() {
                Some("held") => held.push((x, y)),
                Some("paused") => paused.push((x, y)),
                _ => {}
            }
            if let Some(b) = percent(d.bounced, d.sent) {
                bounces.push((x, b));
                max_bounces = max_bounces.max(b);
            }
            if let Some(p) = percent(d.complaints, d.sent) {
                complaints.push((x, p));
                max_complaints = max_complaints.max(p);
            }
        }
        WarmupChart {
            state,
            cap,
            sent,
            held,
            paused,
            bounces,
            complaints,
            max_volume,
            max_bounces,
            max_complaints,
        }
    }

    /// The log's first and last dates as "MM-DD".
    pub fn date_span(&self) -> (String, String) {
        let md = |d: Option<&crate::store::WarmupDay>| {
            d.map(|d| sanitize(d.date.get(5..).unwrap_or(&d.date)).into_owned())
                .unwrap_or_default()
        };
        (md(self.state.log.first()), md(self.state.log.last()))
    }
}

/// The selected node's warm-up log, as the Warm-up view draws it.
#[derive(Debug, Clone, Default)]
pub struct WarmupLog {
    /// The node whose log was last asked for: the selected row's.
    pub wanted: Option<String>,
    /// The last log that arrived, for the node it is of (`None` inside: it has no warm-up).
    pub loaded: Option<(String, Option<Box<WarmupChart>>)>,
}

/// A node an action applies to, copied out of the snapshot.
pub(super) struct WarmTarget {
    id: String,
    label: String,
    ip: String,
    status: String,
    /// (status, day, days) of its warm-up.
    warmup: Option<(String, i64, i64)>,
}

fn usage() -> &'static str {
    "usage: :warmup resume day|week|start, or :warmup pace FACTOR (0.25 to 4: 1.5 makes the days left half as many again, 0.75 a quarter fewer)"
}

/// A pace factor as typed ("1.5", "x1.5", "×0.75") in percent, if it is one the engine
/// takes (0.25 to 4).
pub fn pace_percent(text: &str) -> Option<u32> {
    let t = text.trim().trim_start_matches(['x', '×']);
    let factor: f64 = t.parse().ok()?;
    (factor.is_finite() && (0.25..=4.0).contains(&factor)).then(|| (factor * 100.0).round() as u32)
}

impl App {
    /// In the Warm-up view, asks for the selected node's log when the selection has moved to
    /// another node.
    pub(super) fn follow_selection(&mut self) -> Option<Effect> {
        if self.view != View::Warmup {
            return None;
        }
        let id = self.selected_node_id();
        if id == self.warm.wanted {
            return None;
        }
        self.warm.wanted = id.clone();
        id.map(Effect::LoadWarmup)
    }

    /// The store changed: the selected node's log again (a day may have closed).
    pub fn reload_warmup(&mut self) -> Option<Effect> {
        self.warm.wanted = None;
        self.follow_selection()
    }

    /// A node's log arrived; kept if it is still the one wanted (the selection may have
    /// moved on while it loaded).
    pub fn set_warmup(&mut self, node_id: String, state: Option<WarmupState>) {
        if self.warm.wanted.as_deref() != Some(node_id.as_str()) {
            return;
        }
        self.warm.loaded = Some((node_id, state.map(|s| Box::new(WarmupChart::new(s)))));
    }

    /// The selected node's log: `None` until it arrives, `Some(None)` when the node has no
    /// warm-up.
    pub fn selected_warmup(&self) -> Option<Option<&WarmupChart>> {
        let id = self.selected_node_id()?;
        match &self.warm.loaded {
            Some((loaded, chart)) if *loaded == id => Some(chart.as_deref()),
            _ => None,
        }
    }

    /// Enter in the Warm-up view: the selected node's daily log in the pane (it follows the
    /// selection); Enter again gives the pane the keys, to scroll.
    pub(super) fn open_history(&mut self) -> Vec<Effect> {
        if self.table().visible.is_empty() {
            return vec![];
        }
        if self.warm_history {
            self.detail_focus = true;
            return vec![];
        }
        self.detail = None;
        self.timeline = None;
        self.detail_focus = false;
        self.detail_scroll = 0;
        self.warm_history = true;
        vec![]
    }

    /// The nodes an action applies to: the marked ones (Fleet and Warm-up views), else the
    /// selected row's.
    fn warm_targets(&mut self, verb: &str) -> Vec<WarmTarget> {
        let found: Vec<usize> = if self.table().marks.is_empty() {
            let Some(id) = self.selected_node_id() else {
                self.say(
                    format!("{verb}: select a node (Warm-up or Fleet view), or mark some"),
                    true,
                );
                return vec![];
            };
            id.parse()
                .ok()
                .and_then(|id| self.node_index(id))
                .into_iter()
                .collect()
        } else {
            self.marked_nodes()
        };
        found
            .into_iter()
            .filter_map(|i| self.snap.nodes.get(i))
            .map(|n| WarmTarget {
                id: n.id.to_string(),
                label: sanitize(&n.label).into_owned(),
                ip: n
                    .ip_address
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "no IP".into()),
                status: n.status.to_string(),
                warmup: n
                    .warmup
                    .as_ref()
                    .map(|w| (w.status.to_string(), w.day, w.days)),
            })
            .collect()
    }

    /// `:warmup resume day|week|start` and `:warmup pace FACTOR`, on the marked nodes or
    /// the selected one, after a confirmation.
    pub(super) fn warmup_command(&mut self, args: &[&str]) -> Vec<Effect> {
        let verb = match args.first() {
            Some(&"resume") => "warm-up resume",
            Some(&"pace") => "warm-up pace",
            _ => {
                self.say(usage(), true);
                return vec![];
            }
        };
        if self.read_only {
            self.say(format!("read-only: {verb} is disabled"), true);
            return vec![];
        }
        match args {
            ["resume", from] => {
                let from = match *from {
                    "day" => ResumeFrom::Day,
                    "week" => ResumeFrom::Week,
                    "start" => ResumeFrom::Start,
                    other => {
                        self.say(
                            format!(
                                "warmup resume: {:?} is not day, week or start",
                                sanitize(other)
                            ),
                            true,
                        );
                        return vec![];
                    }
                };
                self.ask_warmup_resume(from)
            }
            ["pace", factor] => match pace_percent(factor) {
                Some(percent) => self.ask_warmup_pace(percent),
                None => {
                    self.say(
                        format!(
                            "warmup pace: {:?} is not a factor from 0.25 (four times faster) to 4 (four times slower); e.g. :warmup pace 1.5",
                            sanitize(factor)
                        ),
                        true,
                    );
                    vec![]
                }
            },
            _ => {
                self.say(usage(), true);
                vec![]
            }
        }
    }

    fn ask_warmup_resume(&mut self, from: ResumeFrom) -> Vec<Effect> {
        let targets = self.warm_targets("warmup resume");
        if targets.is_empty() {
            return vec![];
        }
        let (mut lines, mut commands, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for t in targets {
            match &t.warmup {
                Some((status, day, days))
                    if status != "completed"
                        && matches!(t.status.as_str(), "warming" | "paused") =>
                {
                    let to = from.day(u32::try_from(*day).unwrap_or(1));
                    lines.push(format!(
                        "{} ({}): day {day}/{days}, {status} → day {to}",
                        t.label, t.ip
                    ));
                    commands.push(Command::WarmupResume { id: t.id, from });
                }
                _ => skipped.push(t.label),
            }
        }
        if commands.is_empty() {
            self.say(
                "warmup resume: no selected node has a warm-up to resume (it must be warming or paused, its warm-up not completed)",
                true,
            );
            return vec![];
        }
        if !skipped.is_empty() {
            lines.push(format!(
                "not resumed (no warm-up under way): {}",
                skipped.join(", ")
            ));
        }
        let whence = match from {
            ResumeFrom::Day => "from the day it stopped on",
            ResumeFrom::Week => "from the first day of its week",
            ResumeFrom::Start => "from day 1",
        };
        self.mode = Mode::Confirm(Confirm {
            title: format!("Resume the warm-up of {} node(s) {whence}?", commands.len()),
            lines,
            on_yes: Pending::Commands(commands),
            scroll: 0,
        });
        vec![]
    }

    fn ask_warmup_pace(&mut self, percent: u32) -> Vec<Effect> {
        let targets = self.warm_targets("warmup pace");
        if targets.is_empty() {
            return vec![];
        }
        let factor = f64::from(percent) / 100.0;
        let (mut lines, mut commands, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for t in targets {
            match &t.warmup {
                Some((status, day, days)) if status != "completed" => {
                    let left = (days - day).max(0);
                    let after = ((left as f64 * factor).round() as i64).max(1);
                    lines.push(format!(
                        "{} ({}): day {day}/{days}: the {left} day(s) left become {after}",
                        t.label, t.ip
                    ));
                    commands.push(Command::WarmupPace { id: t.id, percent });
                }
                _ => skipped.push(t.label),
            }
        }
        if commands.is_empty() {
            self.say(
                "warmup pace: no selected node has a warm-up under way",
                true,
            );
            return vec![];
        }
        if !skipped.is_empty() {
            lines.push(format!(
                "not paced (no warm-up under way): {}",
                skipped.join(", ")
            ));
        }
        self.mode = Mode::Confirm(Confirm {
            title: format!(
                "Change the warm-up pace of {} node(s) by ×{factor}?",
                commands.len()
            ),
            lines,
            on_yes: Pending::Commands(commands),
            scroll: 0,
        });
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_busiest_day_and_leave_idle_days_blank() {
        assert_eq!(sparkline(&[10, 20, 40, 80]), "▁▂▄█");
        assert_eq!(sparkline(&[5, 0, 5]), "█ █");
        assert_eq!(sparkline(&[0, 0]), "  ");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[1, 1000]), "▁█");
    }

    #[test]
    fn pace_factors_are_read_as_percent_within_the_engines_bounds() {
        assert_eq!(pace_percent("1.5"), Some(150));
        assert_eq!(pace_percent("x0.75"), Some(75));
        assert_eq!(pace_percent("×2"), Some(200));
        assert_eq!(pace_percent("0.25"), Some(25));
        assert_eq!(pace_percent("4"), Some(400));
        for bad in ["0.2", "5", "fast", "NaN", "inf", "", "-1"] {
            assert_eq!(pace_percent(bad), None, "{bad}");
        }
    }
}
