//! Noticing commits from anywhere: this process's writer, a `mailfleet work` in another
//! shell, a second console. SQLite's `PRAGMA data_version` moves when another connection
//! commits, so the probe keeps one connection of its own to ask.

use super::{connect, Conn, Store, StoreError};

pub struct VersionProbe {
    conn: Option<Conn>,
    last: Option<i64>,
}

impl Store {
    pub fn version_probe(&self) -> VersionProbe {
        VersionProbe {
            conn: None,
            last: None,
        }
    }
}

impl VersionProbe {
    /// True when something committed since the last call (and on the first call).
    pub async fn changed(&mut self, store: &Store) -> Result<bool, StoreError> {
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
        let v: Result<i64, rusqlite::Error> = conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)));
        self.conn = Some(conn);
        let v = v?;
        let changed = self.last != Some(v);
        self.last = Some(v);
        Ok(changed)
    }
}
