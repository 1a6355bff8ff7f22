//! The only place SQL lives. Opens the database, runs the embedded migrations, and funnels
//! every write through one writer task that groups concurrent writes into one transaction
//! (group commit): each write runs in its own savepoint, so one failing write never takes
//! the others down, and a batch costs one commit instead of one per write.
//!
//! Reads go through a separate read-only pool; WAL lets them run beside the writer.

mod catalog;
mod claims;
mod events;
mod nodes;
mod requests;
mod rows;
pub mod sim;
mod steps;

pub use claims::{Admission, Claim, ClaimOutcome, ClusterSpec};
pub use events::EventFilter;
pub use nodes::{NewNode, NodeFilter};
pub use requests::{NewRequest, RequestFilter, TeardownAsked};
pub use rows::*;
pub use steps::{Fenced, ResourceWrite};

use crate::config::{StoreConfig, Synchronous};
use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

pub type Conn = SqliteConnection;

/// Most writes the writer groups into one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not a mailfleet database: {why}")]
    NotADatabase { path: String, why: String },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("request {0} was taken over by another worker (its lease expired)")]
    FenceLost(String),
    #[error("no request matches {0:?}")]
    NotFound(String),
    #[error("{what} {prefix:?} is ambiguous: it matches {first} and {second}")]
    Ambiguous {
        what: &'static str,
        prefix: String,
        first: String,
        second: String,
    },
    #[error("{0}")]
    Rejected(String),
    #[error("the database is open read-only (--read-only)")]
    ReadOnly,
    #[error("the store's writer has stopped")]
    Closed,
}

type Payload = Box<dyn Any + Send>;
type JobFn =
    Box<dyn for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<Payload, StoreError>> + Send>;

struct Job {
    run: JobFn,
    reply: oneshot::Sender<Result<Payload, StoreError>>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Read connections. Deliberately not an sqlx pool: a pool puts a tokio timer around every
/// acquire, which tokio's paused clock (in tests) fires at once while the query runs on
/// SQLite's thread. A handful of connections behind async mutexes needs no timer.
struct Readers {
    conns: Vec<tokio::sync::Mutex<Conn>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    async fn get(&self) -> tokio::sync::MutexGuard<'_, Conn> {
        for c in &self.conns {
            if let Ok(g) = c.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        self.conns[i].lock().await
    }
}

/// Holds tokio's paused clock still while a query runs on SQLite's own thread. Tokio does
/// not advance a paused clock while a blocking task runs, so this parks one until dropped.
/// Off (and free) unless a test asks for it with `Store::hold_clock_during_io`.
pub(crate) struct ClockHold(Option<std::sync::mpsc::Sender<()>>);

impl ClockHold {
    fn new(on: bool) -> ClockHold {
        if !on {
            return ClockHold(None);
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        drop(tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        }));
        ClockHold(Some(tx))
    }
}

/// A read connection, with the clock held while it is in use (when asked).
pub(crate) struct ReadGuard<'a> {
    conn: tokio::sync::MutexGuard<'a, Conn>,
    _hold: ClockHold,
}

impl std::ops::Deref for ReadGuard<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for ReadGuard<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

const READERS: usize = 4;

struct Inner {
    hold_clock: Arc<std::sync::atomic::AtomicBool>,
    read: Readers,
    writer: Option<mpsc::Sender<Job>>,
    changes: watch::Receiver<u64>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        Self::open_with(path, cfg, false).await
    }

    /// Opens an existing database for reading only: every write is refused.
    pub async fn open_read_only(path: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        Self::open_with(path, cfg, true).await
    }

    async fn open_with(
        path: &Path,
        cfg: &StoreConfig,
        read_only: bool,
    ) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let not_db = |why: String| StoreError::NotADatabase {
            path: shown.clone(),
            why,
        };
        if read_only && !path.exists() {
            return Err(not_db("the file does not exist".into()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| not_db(format!("cannot create {}: {e}", parent.display())))?;
        }
        let sync = match cfg.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(cfg.busy_timeout)
            .foreign_keys(true)
            .log_statements(tracing::log::LevelFilter::Trace);

        let (changes_tx, changes_rx) = watch::channel(0u64);
        let hold_clock = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = if read_only {
            None
        } else {
            let mut conn = base
                .clone()
                .create_if_missing(true)
                .connect()
                .await
                .map_err(|e| classify_open_error(e, &shown))?;
            check_is_ours(&mut conn, &shown).await?;
            MIGRATOR.run(&mut conn).await?;
            sqlx::query("INSERT INTO meta (key, value) VALUES ('app', 'mailfleet') ON CONFLICT (key) DO NOTHING")
                .execute(&mut conn)
                .await?;
            let (tx, rx) = mpsc::channel::<Job>(4096);
            tokio::spawn(writer_task(conn, rx, changes_tx, hold_clock.clone()));
            Some(tx)
        };
        let mut conns = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = base
                .clone()
                .read_only(true)
                .connect()
                .await
                .map_err(|e| classify_open_error(e, &shown))?;
            conns.push(tokio::sync::Mutex::new(conn));
        }
        let read = Readers {
            conns,
            next: std::sync::atomic::AtomicUsize::new(0),
        };
        if read_only {
            let mut conn = read.get().await;
            check_is_ours(&mut conn, &shown).await?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                hold_clock,
                read,
                writer,
                changes: changes_rx,
                path: path.to_path_buf(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn is_read_only(&self) -> bool {
        self.inner.writer.is_none()
    }

    /// A counter that moves after every commit this process makes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.clone()
    }

    /// A read connection (read-only; sees every committed write).
    pub(crate) async fn read(&self) -> ReadGuard<'_> {
        let hold = ClockHold::new(self.inner.hold_clock.load(std::sync::atomic::Ordering::Relaxed));
        ReadGuard {
            conn: self.inner.read.get().await,
            _hold: hold,
        }
    }

    /// For tests on tokio's paused clock (current-thread runtime): keeps the clock from
    /// jumping ahead to the next timer while a query runs on SQLite's thread, so timeouts
    /// and backoff measure engine time, not database waits.
    pub fn hold_clock_during_io(&self, on: bool) {
        self.inner.hold_clock.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` inside the writer's transaction (in its own savepoint) and returns its result
    /// once the transaction has committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let writer = self.inner.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        let (reply, rx) = oneshot::channel();
        let run: JobFn = Box::new(move |conn| {
            Box::pin(async move { f(conn).await.map(|v| Box::new(v) as Payload) })
        });
        writer
            .send(Job { run, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        let payload = rx.await.map_err(|_| StoreError::Closed)??;
        payload
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Closed)
    }

    /// SQLite's `PRAGMA data_version`: changes when *another* connection (this process's
    /// writer or another process) commits. The console's store watcher polls it.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.read().await;
        let v: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut *conn)
            .await?;
        Ok(v)
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./assets/migrations");

fn classify_open_error(e: sqlx::Error, path: &str) -> StoreError {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("file is encrypted") {
        StoreError::NotADatabase {
            path: path.to_string(),
            why: "the file is not an SQLite database".into(),
        }
    } else if text.contains("unable to open") {
        StoreError::NotADatabase {
            path: path.to_string(),
            why: format!("it cannot be opened ({text})"),
        }
    } else {
        StoreError::Sql(e)
    }
}

/// Refuses a database that holds tables but is not mailfleet's, so we never write into
/// another program's file.
async fn check_is_ours(conn: &mut Conn, path: &str) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| classify_open_error(e, path))?;
    if tables.is_empty() {
        return Ok(());
    }
    let ours = tables.iter().any(|t| t == "meta") && tables.iter().any(|t| t == "_sqlx_migrations");
    let app: Option<String> = if ours {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'app'")
            .fetch_optional(&mut *conn)
            .await?
    } else {
        None
    };
    if app.as_deref() == Some("mailfleet") {
        Ok(())
    } else {
        Err(StoreError::NotADatabase {
            path: path.to_string(),
            why: format!(
                "it is an SQLite database of another program (tables: {}); refusing to write to it",
                tables
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

async fn writer_task(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Job>,
    changes: watch::Sender<u64>,
    hold_clock: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let hold = ClockHold::new(hold_clock.load(std::sync::atomic::Ordering::Relaxed));
        let committed = run_batch(&mut conn, &mut batch).await;
        drop(hold);
        if committed {
            changes.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
    let _ = conn.close().await;
}

/// Runs one group of jobs in one transaction; returns whether anything committed.
async fn run_batch(conn: &mut Conn, batch: &mut Vec<Job>) -> bool {
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        let msg = e.to_string();
        for job in batch.drain(..) {
            let _ = job
                .reply
                .send(Err(StoreError::Sql(sqlx::Error::Protocol(msg.clone()))));
        }
        return false;
    }
    let mut results: Vec<(
        oneshot::Sender<Result<Payload, StoreError>>,
        Result<Payload, StoreError>,
    )> = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let outcome = run_in_savepoint(conn, job.run).await;
        results.push((job.reply, outcome));
    }
    let committed = match sqlx::query("COMMIT").execute(&mut *conn).await {
        Ok(_) => true,
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            let msg = format!("commit failed: {e}");
            for (_, r) in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(StoreError::Sql(sqlx::Error::Protocol(msg.clone())));
                }
            }
            false
        }
    };
    let any_ok = results.iter().any(|(_, r)| r.is_ok());
    for (reply, r) in results {
        let _ = reply.send(r);
    }
    committed && any_ok
}

async fn run_in_savepoint(conn: &mut Conn, run: JobFn) -> Result<Payload, StoreError> {
    sqlx::query("SAVEPOINT job").execute(&mut *conn).await?;
    let outcome = run(conn).await;
    match &outcome {
        Ok(_) => {
            sqlx::query("RELEASE job").execute(&mut *conn).await?;
        }
        Err(_) => {
            sqlx::query("ROLLBACK TO job").execute(&mut *conn).await?;
            sqlx::query("RELEASE job").execute(&mut *conn).await?;
        }
    }
    outcome
}

/// `?, ?, ?` for an IN list of `n` values.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}
