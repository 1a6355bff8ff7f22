//! The real `mailfleet` binary in a pseudo-terminal, its output read back through a terminal
//! emulator (vt100) on a reader thread that judges the screen at the end of every frame.
//!
//! A frame ends where ratatui ends one: after the cells it writes the cursor state, hidden
//! (`ESC[?25l`) or shown (`ESC[?25h`, with the filter or command line open); a console that
//! wraps frames in synchronized updates ends them with `ESC[?2026l`. Judging the screen only
//! there means a half-written frame (the title already new, the rows not yet) never counts.
//! The moment a frame satisfies the awaited condition is taken on the reader thread, as soon as
//! the bytes are parsed: no polling, no sleeps.

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What ends a frame in the byte stream.
const FRAME_ENDS: [&[u8]; 3] = [b"\x1b[?25l", b"\x1b[?25h", b"\x1b[?2026l"];

type Condition = Box<dyn Fn(&vt100::Screen) -> bool + Send>;

struct Watch {
    condition: Condition,
    met_at: Option<Instant>,
}

struct State {
    parser: vt100::Parser,
    /// Complete frames seen so far.
    frames: u64,
    watch: Option<Watch>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// How the console is started: the database, the settings file, the screen size.
pub struct Launch<'a> {
    pub db: &'a Path,
    pub config: &'a Path,
    /// XDG directories (state, config, data) point here, so no user file leaks in.
    pub home: &'a Path,
    pub rows: u16,
    pub cols: u16,
}

pub struct Console {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    shared: Arc<Shared>,
    // Kept open for as long as the console runs.
    _master: Box<dyn MasterPty + Send>,
    /// Just before the process was spawned.
    pub spawned: Instant,
    pub pid: u32,
}

impl Console {
    pub fn start(launch: &Launch) -> Console {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: launch.rows,
                cols: launch.cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_mailfleet"));
        cmd.arg("--db");
        cmd.arg(launch.db);
        cmd.arg("--config");
        cmd.arg(launch.config);
        for var in ["XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"] {
            cmd.env(var, launch.home);
        }
        cmd.env("TERM", "xterm-256color");
        for var in [
            "MAILFLEET_CONFIG",
            "MAILFLEET_DB",
            "MAILFLEET_LOG",
            "NO_COLOR",
        ] {
            cmd.env_remove(var);
        }
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = pair.master.take_writer().expect("pty writer");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                parser: vt100::Parser::new(launch.rows, launch.cols, 0),
                frames: 0,
                watch: None,
                closed: false,
            }),
            changed: Condvar::new(),
        });
        let spawned = Instant::now();
        let child = pair.slave.spawn_command(cmd).expect("spawn mailfleet");
        drop(pair.slave);
        let pid = child.process_id().expect("pid of the console");
        let for_reader = shared.clone();
        std::thread::spawn(move || read_frames(&mut *reader, &for_reader));
        Console {
            child,
            writer,
            shared,
            _master: pair.master,
            spawned,
            pid,
        }
    }

    /// Waits until a frame satisfies `condition` (the screen as it is now counts too);
    /// returns when that frame arrived, or `None` after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&vt100::Screen) -> bool + Send + 'static,
    ) -> Option<Instant> {
        let mut st = self.shared.state.lock().expect("screen");
        if condition(st.parser.screen()) {
            return Some(Instant::now());
        }
        st.watch = Some(Watch {
            condition: Box::new(condition),
            met_at: None,
        });
        self.await_watch(st, timeout)
    }

    /// Writes `keys` and waits for the first frame after them that satisfies `condition`;
    /// returns the time from the write to that frame, or `None` after `timeout`.
    pub fn press(
        &mut self,
        keys: &[u8],
        timeout: Duration,
        condition: impl Fn(&vt100::Screen) -> bool + Send + 'static,
    ) -> Option<Duration> {
        {
            let mut st = self.shared.state.lock().expect("screen");
            st.watch = Some(Watch {
                condition: Box::new(condition),
                met_at: None,
            });
        }
        let sent = Instant::now();
        self.writer.write_all(keys).expect("write keys");
        self.writer.flush().expect("flush keys");
        let st = self.shared.state.lock().expect("screen");
        self.await_watch(st, timeout)
            .map(|at| at.saturating_duration_since(sent))
    }

    /// Writes keys without waiting for anything.
    pub fn send(&mut self, keys: &[u8]) {
        self.writer.write_all(keys).expect("write keys");
        self.writer.flush().expect("flush keys");
    }

    fn await_watch(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        timeout: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = st.watch.as_ref().and_then(|w| w.met_at) {
                st.watch = None;
                return Some(at);
            }
            let now = Instant::now();
            if st.closed || now >= deadline {
                st.watch = None;
                return None;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .expect("screen")
                .0;
        }
    }

    /// The screen's text as it is now.
    pub fn text(&self) -> String {
        self.shared
            .state
            .lock()
            .expect("screen")
            .parser
            .screen()
            .contents()
    }

    /// Reads the screen as it is now.
    pub fn with_screen<R>(&self, f: impl FnOnce(&vt100::Screen) -> R) -> R {
        f(self.shared.state.lock().expect("screen").parser.screen())
    }

    pub fn frames(&self) -> u64 {
        self.shared.state.lock().expect("screen").frames
    }

    /// Asks the console to quit (`q`); kills it if it has not gone within `grace`.
    pub fn quit(mut self, grace: Duration) {
        self.send(b"q");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "  (the console did not quit within {grace:?}; killing pid {})",
            self.pid
        );
        // Drop kills it.
    }
}

impl Drop for Console {
    /// A console the bench is done with never outlives it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The reader thread: feeds the emulator and judges the screen at each frame's end.
fn read_frames(reader: &mut dyn Read, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so a marker split across two reads is still found.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let ends = frame_ends(&tail, chunk);
        let mut st = shared.state.lock().expect("screen");
        let mut from = 0;
        for end in ends {
            st.parser.process(&chunk[from..end]);
            from = end;
            st.frames += 1;
            judge(&mut st);
        }
        st.parser.process(&chunk[from..]);
        drop(st);
        shared.changed.notify_all();
        let keep = chunk.len().min(8);
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - keep..]);
    }
    shared.state.lock().expect("screen").closed = true;
    shared.changed.notify_all();
}

fn judge(st: &mut State) {
    let State { parser, watch, .. } = st;
    if let Some(w) = watch {
        if w.met_at.is_none() && (w.condition)(parser.screen()) {
            w.met_at = Some(Instant::now());
        }
    }
}

/// Offsets in `chunk` just past each frame-end marker (a marker may begin in `tail`).
fn frame_ends(tail: &[u8], chunk: &[u8]) -> Vec<usize> {
    let mut joined = Vec::with_capacity(tail.len() + chunk.len());
    joined.extend_from_slice(tail);
    joined.extend_from_slice(chunk);
    let mut ends = Vec::new();
    for (i, _) in joined.iter().enumerate().filter(|(_, b)| **b == 0x1b) {
        for m in FRAME_ENDS {
            if joined[i..].starts_with(m) {
                let end = i + m.len();
                // Markers wholly inside the tail were counted with the previous chunk.
                if end > tail.len() {
                    ends.push(end - tail.len());
                }
            }
        }
    }
    ends.sort_unstable();
    ends
}

/// The `<selected>/<total>` a list view's title shows (`" Fleet 12/100000  sorted by …"`).
pub fn title_position(screen: &vt100::Screen, view: &str) -> Option<(usize, usize)> {
    let (_, cols) = screen.size();
    let needle = format!("{view} ");
    screen.rows(0, cols).find_map(|row| {
        row.match_indices(&needle).find_map(|(at, _)| {
            let rest = &row[at + needle.len()..];
            let (sel, rest) = rest.split_once('/')?;
            let total: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((sel.parse().ok()?, total.parse().ok()?))
        })
    })
}

/// Whether any line of the screen contains `text`.
pub fn shows(screen: &vt100::Screen, text: &str) -> bool {
    let (_, cols) = screen.size();
    screen.rows(0, cols).any(|row| row.contains(text))
}

/// Whether a line of the screen, trimmed, is exactly `text` (the filter line: `/abc`).
pub fn filter_line(screen: &vt100::Screen, text: &str) -> bool {
    let (_, cols) = screen.size();
    screen.rows(0, cols).any(|row| row.trim() == text)
}

/// User and system CPU time of a process so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}

/// A `VmHWM`/`VmRSS`-style figure of `/proc/PID/status`, in MB.
pub fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
