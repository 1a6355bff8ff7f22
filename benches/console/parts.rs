//! The four measurements: first frame with rows, idle CPU, key-to-frame, peak RSS.

use crate::fixture::{self, Db, Writer, WriterReport};
use crate::pty::{self, Console, Launch};
use crate::{figure, min_median, verdict, Opts};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

pub const ROWS: u16 = 50;
pub const COLS: u16 = 160;
/// Changes a second the writer commits while keys are timed and memory is watched.
const WRITES_PER_S: u32 = 50;
const KEY_TIMEOUT: Duration = Duration::from_secs(10);
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The databases the chosen parts need, made once.
pub struct Dbs {
    pub empty: Option<Db>,
    pub ten: Option<Db>,
    pub five_hundred: Option<Db>,
    pub big: Option<Db>,
}

impl Dbs {
    pub fn make(rt: &tokio::runtime::Runtime, dir: &Path, opts: &Opts) -> Dbs {
        let t = Instant::now();
        let empty = opts.wants("first").then(|| fixture::empty(dir));
        let ten = opts
            .wants("keys")
            .then(|| fixture::demo(rt, dir, "ten", 10));
        let five_hundred = opts
            .wants("idle")
            .then(|| fixture::demo(rt, dir, "five-hundred", 500));
        let big = fixture::demo(rt, dir, "big", opts.big_nodes);
        let dbs = Dbs {
            empty,
            ten: ten.map(|m| m.finish(rt, 0)),
            five_hundred: five_hundred.map(|m| m.finish(rt, 0)),
            big: Some(big.finish(rt, opts.min_events)),
        };
        println!("  (databases ready in {:.1} s)", t.elapsed().as_secs_f64());
        dbs
    }
}

fn launch<'a>(db: &'a Db, home: &'a Path) -> Launch<'a> {
    Launch {
        db: &db.path,
        config: &db.config,
        home,
        rows: ROWS,
        cols: COLS,
    }
}

/// The Fleet view shows rows.
fn fleet_rows(s: &vt100::Screen) -> bool {
    pty::title_position(s, "Fleet").is_some_and(|(_, total)| total > 0)
}

/// The Fleet view shows the empty fleet (not a loading screen).
fn empty_fleet(s: &vt100::Screen) -> bool {
    pty::title_position(s, "Fleet").is_some() && pty::shows(s, "Nothing here yet")
}

/// Starts the console and waits until it shows rows; `None` (and the screen printed) if it
/// never does.
fn start_with_rows(db: &Db, home: &Path) -> Option<(Console, Duration)> {
    let console = Console::start(&launch(db, home));
    let shown = if db.nodes == 0 {
        console.wait_for(LOAD_TIMEOUT, empty_fleet)
    } else {
        console.wait_for(LOAD_TIMEOUT, fleet_rows)
    };
    match shown {
        Some(at) => {
            let after = at.saturating_duration_since(console.spawned);
            Some((console, after))
        }
        None => {
            println!(
                "  the console never showed the fleet; its screen:\n{}",
                console.text()
            );
            console.quit(Duration::from_secs(20));
            None
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// First frame with rows
// ---------------------------------------------------------------------------

pub fn first_frame(dbs: &Dbs, opts: &Opts, home: &Path) -> Value {
    let (Some(empty), Some(big)) = (&dbs.empty, &dbs.big) else {
        return json!({"skipped": true});
    };
    println!("first frame with rows (from spawn):");
    let (mut e, mut b, mut ratios) = (vec![], vec![], vec![]);
    for run in 1..=opts.runs {
        let empty_ms = start_with_rows(empty, home).map(|(c, after)| {
            c.quit(Duration::from_secs(30));
            ms(after)
        });
        let big_ms = start_with_rows(big, home).map(|(c, after)| {
            let shown = c.with_screen(|s| pty::title_position(s, "Fleet"));
            c.quit(Duration::from_secs(60));
            (ms(after), shown)
        });
        let empty_ms = empty_ms.unwrap_or(f64::NAN);
        let (big_ms, shown) = big_ms.unwrap_or((f64::NAN, None));
        let ratio = big_ms / empty_ms;
        println!(
            "  run {run}: empty {empty_ms:>8.1} ms   big {big_ms:>8.1} ms (title then: {})   ratio {ratio:.2}",
            shown
                .map(|(s, t)| format!("Fleet {s}/{t}"))
                .unwrap_or_else(|| "-".into())
        );
        e.push(empty_ms);
        b.push(big_ms);
        ratios.push(ratio);
    }
    let (_, median) = min_median(&ratios);
    let met = median <= 1.5;
    println!(
        "  ratio big/empty: min {:.2} median {median:.2} (target <= 1.5: {})",
        min_median(&ratios).0,
        verdict(met)
    );
    json!({
        "empty_ms": figure(&e), "big_ms": figure(&b), "ratio": figure(&ratios),
        "target_ratio_max": 1.5, "met": met,
    })
}

// ---------------------------------------------------------------------------
// Idle CPU
// ---------------------------------------------------------------------------

pub fn idle_cpu(dbs: &Dbs, opts: &Opts, home: &Path) -> Value {
    let mut out = serde_json::Map::new();
    println!(
        "idle CPU over {} s (after rows are on screen and {} s more):",
        opts.idle.as_secs(),
        opts.settle.as_secs()
    );
    let mut all_met = true;
    for (name, db) in [("500", &dbs.five_hundred), ("big", &dbs.big)] {
        let Some(db) = db else { continue };
        let mut pcts = vec![];
        for run in 1..=opts.runs {
            let Some((console, _)) = start_with_rows(db, home) else {
                pcts.push(f64::NAN);
                continue;
            };
            std::thread::sleep(opts.settle);
            let (cpu0, frames0, t0) =
                (pty::cpu_time(console.pid), console.frames(), Instant::now());
            std::thread::sleep(opts.idle);
            let (cpu1, frames1, window) =
                (pty::cpu_time(console.pid), console.frames(), t0.elapsed());
            let rss = pty::status_mb(console.pid, "VmRSS:").unwrap_or(f64::NAN);
            console.quit(Duration::from_secs(60));
            let used = match (cpu0, cpu1) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => {
                    pcts.push(f64::NAN);
                    continue;
                }
            };
            let pct = used.as_secs_f64() / window.as_secs_f64() * 100.0;
            println!(
                "  {name:>4} nodes run {run}: {:>7.0} ms CPU in {:.0} s = {pct:.3}% of a core; {} frames drawn; RSS {rss:.0} MB",
                ms(used),
                window.as_secs_f64(),
                frames1 - frames0
            );
            pcts.push(pct);
        }
        let (min, median) = min_median(&pcts);
        let met = median < 0.1;
        all_met &= met;
        println!(
            "  {name:>4} nodes: min {min:.3}% median {median:.3}% (target < 0.1%: {})",
            verdict(met)
        );
        out.insert(
            format!("{name}_pct_of_core"),
            json!({"figure": figure(&pcts), "met": met}),
        );
    }
    out.insert("window_s".into(), opts.idle.as_secs().into());
    out.insert("target_pct_max".into(), 0.1.into());
    out.insert("met".into(), all_met.into());
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// Key-to-frame
// ---------------------------------------------------------------------------

/// A navigation key: its bytes and what it does to the selected position.
#[derive(Debug, Clone, Copy)]
enum Move {
    Down,
    Up,
    PageDown,
    PageUp,
    Top,
    Bottom,
}

const KEYS: &[(&str, &[u8], Move, u32)] = &[
    ("j", b"j", Move::Down, 20),
    ("k", b"k", Move::Up, 20),
    ("down", b"\x1b[B", Move::Down, 10),
    ("up", b"\x1b[A", Move::Up, 10),
    ("pgdn", b"\x1b[6~", Move::PageDown, 12),
    ("pgup", b"\x1b[5~", Move::PageUp, 12),
    ("g", b"g", Move::Top, 4),
    ("home", b"\x1b[H", Move::Top, 4),
    ("G", b"G", Move::Bottom, 4),
    ("end", b"\x1b[F", Move::Bottom, 4),
];

/// The 1-based position a move leads to.
fn after(m: Move, sel: usize, total: usize, page: usize) -> usize {
    match m {
        Move::Down => (sel + 1).min(total),
        Move::Up => sel.saturating_sub(1).max(1),
        Move::PageDown => (sel + page).min(total),
        Move::PageUp => sel.saturating_sub(page).max(1),
        Move::Top => 1,
        Move::Bottom => total,
    }
}

fn pick_key(rng: &mut SmallRng) -> (&'static str, &'static [u8], Move) {
    let sum: u32 = KEYS.iter().map(|k| k.3).sum();
    let mut at = rng.gen_range(0..sum);
    for &(name, bytes, m, w) in KEYS {
        if at < w {
            return (name, bytes, m);
        }
        at -= w;
    }
    (KEYS[0].0, KEYS[0].1, KEYS[0].2)
}

fn position(c: &Console, view: &'static str) -> Option<(usize, usize)> {
    c.with_screen(|s| pty::title_position(s, view))
}

/// One key that moves the Fleet selection to `want`: the time to the frame that shows it.
fn press_to(c: &mut Console, bytes: &[u8], want: usize) -> Option<Duration> {
    c.press(bytes, KEY_TIMEOUT, move |s| {
        pty::title_position(s, "Fleet").is_some_and(|(sel, _)| sel == want)
    })
}

/// What one console did under the keys.
struct KeyRun {
    times: Vec<f64>,
    missed: usize,
    views: Vec<f64>,
    filter: Vec<f64>,
    writer: WriterReport,
}

/// Navigation keys (and, with `extras`, view switches and filter typing) against a console
/// whose database a writer changes `WRITES_PER_S` times a second.
fn key_run(db: &Db, opts: &Opts, home: &Path, extras: bool) -> Option<KeyRun> {
    let (mut c, _) = start_with_rows(db, home)?;
    let writer = Writer::start(db, WRITES_PER_S);
    std::thread::sleep(Duration::from_secs(2));
    let navigated = navigate(&mut c, opts);
    let (views, filter) = match (&navigated, extras) {
        (Some(_), true) => (view_switches(&mut c), filter_typing(&mut c, db)),
        _ => (vec![], vec![]),
    };
    let writer = writer.stop();
    if navigated.is_none() {
        println!("  the keys could not be driven; the screen:\n{}", c.text());
    }
    c.quit(Duration::from_secs(60));
    let (times, missed) = navigated?;
    Some(KeyRun {
        times,
        missed,
        views,
        filter,
        writer,
    })
}

/// `opts.keys` timed navigation keys after 20 untimed ones, 30–130 ms apart: the times (ms)
/// and how many keys never showed their effect within `KEY_TIMEOUT`.
fn navigate(c: &mut Console, opts: &Opts) -> Option<(Vec<f64>, usize)> {
    let mut rng = SmallRng::seed_from_u64(13);
    let (mut sel, mut total) = position(c, "Fleet")?;
    // The page: from the top, one PgDn.
    if sel != 1 {
        press_to(c, b"g", 1)?;
    }
    c.press(b"\x1b[6~", KEY_TIMEOUT, |s| {
        pty::title_position(s, "Fleet").is_some_and(|(sel, _)| sel != 1)
    })?;
    sel = position(c, "Fleet")?.0;
    let page = sel.saturating_sub(1).max(1);
    let (mut times, mut missed) = (Vec::with_capacity(opts.keys), 0);
    let warm_up = 20;
    let mut pressed = 0;
    while pressed < opts.keys + warm_up {
        let (_, bytes, m) = pick_key(&mut rng);
        let want = after(m, sel, total, page);
        if want == sel {
            continue;
        }
        pressed += 1;
        match press_to(c, bytes, want) {
            Some(d) if pressed > warm_up => times.push(ms(d)),
            Some(_) => {}
            None => {
                missed += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        (sel, total) = position(c, "Fleet").unwrap_or((want, total));
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..130)));
    }
    Some((times, missed))
}

/// `2` then `1`, ten times each: to the frame that shows the other view's title.
fn view_switches(c: &mut Console) -> Vec<f64> {
    let mut out = vec![];
    for _ in 0..10 {
        for (key, view) in [(b"2", "Requests"), (b"1", "Fleet")] {
            if let Some(d) = c.press(key, KEY_TIMEOUT, move |s| {
                pty::title_position(s, view).is_some()
            }) {
                out.push(ms(d));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    out
}

/// A node's label typed into the Fleet filter, a character at a time. A first pass learns
/// the total each prefix gives (waiting a second after each); three more are timed: each
/// character from the write to the frame that shows its prefix and that total. Only the
/// characters after `node-` that change the total are timed (the others cannot be told
/// from the frame before).
fn filter_typing(c: &mut Console, db: &Db) -> Vec<f64> {
    let Some(label) = middle_label(db) else {
        return vec![];
    };
    let Some((_, all)) = position(c, "Fleet") else {
        return vec![];
    };
    let prefixes: Vec<String> = (1..=label.len())
        .filter(|n| label.is_char_boundary(*n))
        .map(|n| label[..n].to_string())
        .collect();
    let echo = |p: &str| {
        let line = format!("/{p}");
        move |s: &vt100::Screen| pty::filter_line(s, &line)
    };
    // Learn.
    c.press(b"/", KEY_TIMEOUT, echo(""));
    let mut totals = vec![];
    for p in &prefixes {
        let ch = &p[p.len() - p.chars().last().map_or(1, char::len_utf8)..];
        c.press(ch.as_bytes(), KEY_TIMEOUT, echo(p));
        std::thread::sleep(Duration::from_secs(1));
        totals.push(position(c, "Fleet").map_or(usize::MAX, |(_, t)| t));
    }
    c.press(b"\x1b", KEY_TIMEOUT, move |s| {
        pty::title_position(s, "Fleet").is_some_and(|(_, t)| t == all)
    });
    let mut out = vec![];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        c.press(b"/", KEY_TIMEOUT, echo(""));
        let mut before = all;
        for (i, p) in prefixes.iter().enumerate() {
            let ch = &p[p.len() - p.chars().last().map_or(1, char::len_utf8)..];
            let (want, line) = (totals[i], format!("/{p}"));
            let d = c.press(ch.as_bytes(), KEY_TIMEOUT, move |s| {
                pty::filter_line(s, &line)
                    && pty::title_position(s, "Fleet").is_some_and(|(_, t)| t == want)
            });
            if let Some(d) = d {
                if p.len() > "node-".len() && want != before {
                    out.push(ms(d));
                }
            }
            before = want;
            std::thread::sleep(Duration::from_millis(80));
        }
        c.press(b"\x1b", KEY_TIMEOUT, move |s| {
            pty::title_position(s, "Fleet").is_some_and(|(_, t)| t == all)
        });
    }
    out
}

/// The label of a node in the middle of the fleet (read from the database).
fn middle_label(db: &Db) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(&db.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(
        "SELECT label FROM nodes ORDER BY label LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM nodes)",
        [],
        |r| r.get(0),
    )
    .ok()
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

pub fn keys(dbs: &Dbs, opts: &Opts, home: &Path) -> Value {
    let (Some(ten), Some(big)) = (&dbs.ten, &dbs.big) else {
        return json!({"skipped": true});
    };
    println!(
        "key-to-frame ({} keys a run, writer at {WRITES_PER_S} changes/s):",
        opts.keys
    );
    let (mut p99s, mut p50s, mut ratios) = ([vec![], vec![]], [vec![], vec![]], vec![]);
    let (mut views, mut filter) = (vec![], vec![]);
    for run in 1..=opts.runs {
        let mut p99 = [f64::NAN; 2];
        for (i, (name, db)) in [("10", ten), ("big", big)].into_iter().enumerate() {
            let Some(r) = key_run(db, opts, home, i == 1) else {
                println!("  run {run} {name}: the console did not start");
                continue;
            };
            let (p50, p) = (percentile(&r.times, 0.5), percentile(&r.times, 0.99));
            println!(
                "  run {run} {name:>4} nodes: p50 {p50:>7.1} ms  p99 {p:>7.1} ms  max {:>7.1} ms  ({} keys, {} missed; writer {:.1} changes/s)",
                percentile(&r.times, 1.0),
                r.times.len(),
                r.missed,
                r.writer.rate()
            );
            if !r.views.is_empty() || !r.filter.is_empty() {
                println!(
                    "  run {run} {name:>4} nodes: view switch p50 {:.1} ms max {:.1} ms ({}); filter char p50 {:.1} ms max {:.1} ms ({})",
                    percentile(&r.views, 0.5),
                    percentile(&r.views, 1.0),
                    r.views.len(),
                    percentile(&r.filter, 0.5),
                    percentile(&r.filter, 1.0),
                    r.filter.len()
                );
            }
            // A key whose frame never came counts as the slowest possible.
            p99[i] = if r.missed * 100 > r.times.len() {
                f64::INFINITY
            } else {
                p
            };
            p99s[i].push(p99[i]);
            p50s[i].push(p50);
            views.extend(r.views);
            filter.extend(r.filter);
        }
        ratios.push(p99[1] / p99[0]);
    }
    let (rmin, rmed) = min_median(&ratios);
    let met = rmed <= 1.2;
    println!(
        "  p99 ratio big/10: min {rmin:.2} median {rmed:.2} (target <= 1.2: {})",
        verdict(met)
    );
    json!({
        "p99_ms_10": figure(&p99s[0]), "p99_ms_big": figure(&p99s[1]),
        "p50_ms_10": figure(&p50s[0]), "p50_ms_big": figure(&p50s[1]),
        "ratio_p99": figure(&ratios), "target_ratio_max": 1.2, "met": met,
        "view_switch_ms_big": {"p50": percentile(&views, 0.5), "p99": percentile(&views, 0.99), "n": views.len()},
        "filter_char_ms_big": {"p50": percentile(&filter, 0.5), "p99": percentile(&filter, 0.99), "n": filter.len()},
        "writes_per_s": WRITES_PER_S,
    })
}

// ---------------------------------------------------------------------------
// Peak RSS
// ---------------------------------------------------------------------------

pub fn peak_rss(dbs: &Dbs, opts: &Opts, home: &Path) -> Value {
    let Some(big) = &dbs.big else {
        return json!({"skipped": true});
    };
    println!(
        "peak RSS over {} s (big fleet, engine running, writer at {WRITES_PER_S} changes/s):",
        opts.rss_window.as_secs()
    );
    let mut peaks = vec![];
    for run in 1..=opts.runs {
        let Some((mut c, _)) = start_with_rows(big, home) else {
            peaks.push(f64::NAN);
            continue;
        };
        let writer = Writer::start(big, WRITES_PER_S);
        for (key, view) in [(b"2", "Requests"), (b"6", "Events"), (b"1", "Fleet")] {
            c.press(key, Duration::from_secs(60), move |s| {
                pty::title_position(s, view).is_some()
            });
        }
        let end = c.spawned + opts.rss_window;
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let hwm = pty::status_mb(c.pid, "VmHWM:").unwrap_or(f64::NAN);
        let rss = pty::status_mb(c.pid, "VmRSS:").unwrap_or(f64::NAN);
        let w = writer.stop();
        c.quit(Duration::from_secs(60));
        println!(
            "  run {run}: peak {hwm:.1} MB (resident at the end {rss:.1} MB; writer {:.1} changes/s)",
            w.rate()
        );
        peaks.push(hwm);
    }
    let (min, median) = min_median(&peaks);
    let met = median < 100.0;
    println!(
        "  peak RSS: min {min:.1} MB median {median:.1} MB (target < 100 MB: {})",
        verdict(met)
    );
    json!({"peak_mb": figure(&peaks), "target_mb_max": 100.0, "met": met, "window_s": opts.rss_window.as_secs()})
}
