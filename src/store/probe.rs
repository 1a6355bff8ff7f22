//! Noticing commits from anywhere: this process's writer, a `mailfleet work` in another
//! shell, a second console.
//!
//! On SQLite, `PRAGMA data_version` moves when another connection commits, so the probe
//! keeps one connection of its own to ask. On PostgreSQL, every transaction that moves the
//! change stamp announces itself (`NOTIFY`, see `pg`); the probe keeps a listening
//! connection on a thread of its own, which raises a flag when an announcement arrives, and
//! asking is reading the flag.

use super::{connect, pg, Conn, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct VersionProbe {
    conn: Option<Conn>,
    last: Option<i64>,
    listener: Option<Listener>,
}

impl Store {
    pub fn version_probe(&self) -> VersionProbe {
        VersionProbe {
            conn: None,
            last: None,
            listener: self.pg_target().map(Listener::start),
        }
    }
}

impl VersionProbe {
    /// True when something committed since the last call (and on the first call).
    pub async fn changed(&mut self, store: &Store) -> Result<bool, StoreError> {
        if let Some(l) = &self.listener {
            return Ok(l.heard.swap(false, Ordering::AcqRel));
        }
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let (path, settings) = (store.path().to_path_buf(), store.settings().clone());
                tokio::task::spawn_blocking(move || connect(&path, &settings, true))
                    .await
                    .map_err(|_| StoreError::Closed)??
            }
        };
        // Asked here, not on a blocking thread: it reads a counter in the shared memory
        // of the WAL index (microseconds), and a hand-off to a thread five times a second
        // costs more than the question.
        let v: crate::store::sql::SqlResult<i64> = conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)));
        self.conn = Some(conn);
        let v = v?;
        let changed = self.last != Some(v);
        self.last = Some(v);
        Ok(changed)
    }
}

/// A connection that listens for PostgreSQL's announcements of commits, on its own thread.
struct Listener {
    /// Raised by an announcement (and at the start, and after the connection was lost and
    /// made again: anything may have changed meanwhile); lowered by the asking.
    heard: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// How long the listening thread waits for an announcement before it looks at `stop`.
const LISTEN_WAIT: Duration = Duration::from_millis(250);

impl Listener {
    fn start(target: Arc<pg::Target>) -> Listener {
        let heard = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heard.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("mailfleet-listen-pg".into())
            .spawn(move || listen(&target, &h, &s));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the listening thread; changes are noticed by the next read");
        }
        Listener { heard, stop }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn listen(target: &pg::Target, heard: &AtomicBool, stop: &AtomicBool) {
    let mut pause = Duration::from_millis(100);
    while !stop.load(Ordering::Acquire) {
        let mut client = match target.listen() {
            Ok(c) => {
                pause = Duration::from_millis(100);
                // Whatever committed while no one listened.
                heard.store(true, Ordering::Release);
                c
            }
            Err(e) => {
                tracing::debug!(error = %e, "listening for changes: cannot connect; trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        while !stop.load(Ordering::Acquire) && !client.is_closed() {
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(LISTEN_WAIT);
            // Each announcement raises the flag at once; a quiet spell (or a lost
            // connection) ends the round.
            while let Ok(Some(_)) = postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                heard.store(true, Ordering::Release);
            }
        }
    }
}
