//! The only place SQL lives. Opens the database, applies the embedded migrations, and
//! funnels every write through one writer that groups concurrent writes into one
//! transaction (group commit): each write runs in its own savepoint, so one failing write
//! never takes the others down, and a batch costs one commit instead of one per write.
//!
//! SQLite is driven through rusqlite on blocking threads: a batch of writes, or one read,
//! runs start to finish on one thread. (sqlx's SQLite driver hands every statement to a
//! worker thread and back; measured here at ~55 µs a statement, it capped the engine at
//! ~65 pipelines/s.) Reads use a small pool of read-only connections; WAL lets them run
//! beside the writer. Running on tokio's blocking pool also keeps tokio's paused test clock
//! from jumping ahead while a query runs.

mod acme_orders;
mod catalog;
pub(crate) mod certs;
mod claims;
mod console;
mod demo;
mod dkim;
mod dns;
mod events;
mod nodes;
mod probe;
mod reputation;
mod requests;
#[macro_use]
mod rows;
pub mod sim;
mod sim_dns;
mod steps;
mod warmup;

pub use acme_orders::ChallengeHolder;
pub use certs::{CertRow, NewCert, NewCertIns};
pub use claims::{Admission, Claim, ClaimOutcome, ClusterSpec};
pub use console::{
    ConsoleNode, ConsoleRequest, ConsoleSnapshot, ListingRow, NodeWarmup, StepSummary,
};
pub use dkim::DkimKeyRow;
pub use dns::{DnsRecordRow, PlannedWrite};
pub use events::EventFilter;
pub use nodes::{NewNode, NodeFilter};
pub use probe::VersionProbe;
pub use reputation::{AlertCounts, AlertRow, CheckApplied, CheckTarget};
pub use requests::{NewRequest, RequestFilter, TeardownAsked};
pub use rows::*;
pub use sim_dns::{SimDnsNew, SimDnsRecord};
pub use steps::{Fenced, LastTask, ResourceWrite, TaskMark};
pub use warmup::{WarmNode, WarmupDay, WarmupState};

use crate::config::{StoreConfig, Synchronous};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

pub type Conn = Connection;

/// Most writes the writer groups into one transaction.
const MAX_BATCH: usize = 512;

/// Most reads that run at once; each keeps its connection open for the next read, so a busy
/// engine never pays for opening a connection and parsing the schema again.
const MAX_READERS: usize = 8;

/// The schema, in order. Applied once each, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../assets/migrations/0001_init.sql")),
    (2, include_str!("../../assets/migrations/0002_warmup.sql")),
    (
        3,
        include_str!("../../assets/migrations/0003_approval_rules.sql"),
    ),
    (
        4,
        include_str!("../../assets/migrations/0004_reputation.sql"),
    ),
    (
        5,
        include_str!("../../assets/migrations/0005_warmup_days.sql"),
    ),
    (
        6,
        include_str!("../../assets/migrations/0006_dkim_keys.sql"),
    ),
    (
        7,
        include_str!("../../assets/migrations/0007_mail_records.sql"),
    ),
    (8, include_str!("../../assets/migrations/0008_sim_dns.sql")),
    (
        9,
        include_str!("../../assets/migrations/0009_dns_owner_index.sql"),
    ),
    (
        10,
        include_str!("../../assets/migrations/0010_cert_lifecycle.sql"),
    ),
    (
        11,
        include_str!("../../assets/migrations/0011_acme_orders.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not a mailfleet database: {why}")]
    NotADatabase { path: String, why: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
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
type JobFn = Box<dyn FnOnce(&Conn) -> Result<Payload, StoreError> + Send>;

struct Job {
    run: JobFn,
    reply: oneshot::Sender<Result<Payload, StoreError>>,
}

/// What the writer has done: for benchmarks and the console's status line.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    /// Time spent inside transactions, in microseconds.
    pub busy_us: AtomicU64,
    /// Of that, time spent committing (writing the WAL and syncing it), in microseconds.
    pub commit_us: AtomicU64,
    /// Of that, time the writer's thread was on a CPU, in microseconds (where the platform
    /// tells; else 0).
    pub cpu_us: AtomicU64,
}

/// CPU time the calling thread has used, in microseconds.
fn thread_cpu_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    settings: StoreConfig,
    readers: Mutex<Vec<Conn>>,
    read_slots: Arc<tokio::sync::Semaphore>,
    writer: Option<mpsc::Sender<Job>>,
    changes: watch::Receiver<u64>,
    /// The commit count the checkpointer has copied into the database file through.
    copied: watch::Receiver<u64>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn not_db(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::NotADatabase {
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn classify_open_error(e: rusqlite::Error, path: &Path) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_db(path, "the file is not an SQLite database"),
        Some(ErrorCode::CannotOpen) => not_db(path, format!("it cannot be opened ({e})")),
        _ => StoreError::Sql(e),
    }
}

fn connect(path: &Path, cfg: &StoreConfig, read_only: bool) -> Result<Conn, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| classify_open_error(e, path))?;
    conn.busy_timeout(cfg.busy_timeout)?;
    // Touch the file: a file that is not a database fails here, before anything is written.
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| classify_open_error(e, path))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| classify_open_error(e, path))?;
        let sync = match cfg.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        // Each grouped write runs in a savepoint; its journal stays in memory instead of a
        // temporary file written (and rewritten) on every batch.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The one writer keeps what it works on in memory (16 MiB, filled only as pages are
        // touched) rather than reading it back from the file on every batch.
        conn.pragma_update(None, "cache_size", -16_000)?;
        // The WAL is copied back into the file mostly by the store's checkpointer, beside
        // the writer (see `checkpointer`); the writer's own checkpoint, at a threshold four
        // times SQLite's, is left only to let the WAL start over, and finds little to copy.
        // A WAL grown large in a burst is cut back to this size once it starts over.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_RESTART_FRAMES)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        if cfg.max_size_kib > 0 {
            // SQLite counts pages; it keeps a database already past the limit at its size.
            let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let kib = i64::try_from(cfg.max_size_kib).unwrap_or(i64::MAX);
            let pages = kib.saturating_mul(1024) / page.max(1);
            conn.pragma_update(None, "max_page_count", pages.max(1))?;
        }
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Refuses a database that holds tables but is not mailfleet's, so we never write into
/// another program's file.
fn check_is_ours(conn: &Conn, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )?;
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    let app: Option<String> = if tables.iter().any(|t| t == "meta") {
        conn.query_row("SELECT value FROM meta WHERE key = 'app'", [], |r| r.get(0))
            .optional()?
    } else {
        None
    };
    if app.as_deref() == Some("mailfleet") {
        return Ok(());
    }
    Err(not_db(
        path,
        format!(
            "it is an SQLite database of another program (tables: {}); refusing to write to it",
            tables
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

fn migrate(conn: &Conn) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")?;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let applied = conn.execute_batch(sql).and_then(|()| {
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    rusqlite::params![version, crate::clock::ts(chrono::Utc::now())],
                )
            });
            match applied {
                Ok(_) => conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
            }
        }
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('app', 'mailfleet') ON CONFLICT (key) DO NOTHING",
        [],
    )?;
    Ok(())
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
        let (path, settings) = (path.to_path_buf(), cfg.clone());
        let p2 = path.clone();
        let writer_conn =
            tokio::task::spawn_blocking(move || -> Result<Option<Conn>, StoreError> {
                if read_only {
                    if !p2.exists() {
                        return Err(not_db(&p2, "the file does not exist"));
                    }
                    let conn = connect(&p2, &settings, true)?;
                    check_is_ours(&conn, &p2)?;
                    return Ok(None);
                }
                if let Some(parent) = p2.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        not_db(&p2, format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                let conn = connect(&p2, &settings, false)?;
                check_is_ours(&conn, &p2)?;
                migrate(&conn)?;
                Ok(Some(conn))
            })
            .await
            .map_err(|_| StoreError::Closed)??;
        let (changes_tx, changes) = watch::channel(0u64);
        let (copied_tx, copied) = watch::channel(0u64);
        let stats = Arc::new(WriterStats::default());
        let writer = writer_conn.map(|conn| {
            let (tx, rx) = mpsc::channel::<Job>(4096);
            tokio::spawn(checkpointer(
                path.clone(),
                cfg.clone(),
                changes_tx.subscribe(),
                copied_tx,
            ));
            tokio::spawn(writer_task(conn, rx, changes_tx, stats.clone()));
            tx
        });
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                settings: cfg.clone(),
                readers: Mutex::new(Vec::new()),
                read_slots: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
                writer,
                changes,
                copied,
                stats,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A counter that moves after every commit of this process that changed rows.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.clone()
    }

    /// Waits until the checkpointer has run after every commit made so far. With no reader
    /// holding an older snapshot (PASSIVE mode leaves what one still needs), the database
    /// file alone then holds those commits and stays as it is until the next write: a copy
    /// of the file, or a check that something left it untouched, means what it says.
    /// Returns at once for a read-only store; gives up when the store closes.
    pub async fn settled(&self) {
        if self.inner.writer.is_none() {
            return;
        }
        let target = *self.inner.changes.borrow();
        let mut copied = self.inner.copied.clone();
        // An error means the checkpointer ended with the writer: nothing more will change.
        let _ = copied.wait_for(|through| *through >= target).await;
    }

    pub(crate) fn settings(&self) -> &StoreConfig {
        &self.inner.settings
    }

    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Runs `f` on a read-only connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let slot = inner
            .read_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => connect(&inner.path, &inner.settings, true)?,
            };
            let out = f(&conn);
            let mut idle = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` inside the writer's transaction (in its own savepoint) and returns its result
    /// once the transaction has committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = self.inner.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        let (reply, rx) = oneshot::channel();
        let run: JobFn = Box::new(move |conn| f(conn).map(|v| Box::new(v) as Payload));
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
}

/// WAL frames (pages) past which the writer's commit checkpoints too, so that the WAL can
/// start over (only a checkpoint on the writer's own connection, between its transactions,
/// reliably finds it wholly copied): 16 MiB of 4 KiB pages. Measured with
/// `cargo bench --bench engine`, the WAL then stays under 20 MB; with the checkpointer
/// alone it grew past 100 MB.
const WAL_RESTART_FRAMES: i64 = 4096;

/// The least time between two checkpoints.
const CHECKPOINT_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// Copies the WAL back into the database file, beside the writer rather than in its way.
/// SQLite's own automatic checkpoint (at its default 1,000 pages) ran inside whichever
/// commit crossed the threshold, and every write queued behind that commit waited for the
/// copy and its sync: about a sixth of the pipelines' throughput in
/// `cargo bench --bench engine`. This task runs after
/// commits, at most once per `CHECKPOINT_GAP`, on its own connection and in PASSIVE mode, so
/// that it never blocks the writer or a reader and copies only what no reader still needs;
/// what is left is copied next time. It ends with the writer.
/// It reports in `copied` the commit count it has copied through, for `Store::settled`.
async fn checkpointer(
    path: PathBuf,
    settings: StoreConfig,
    mut commits: watch::Receiver<u64>,
    copied: watch::Sender<u64>,
) {
    let mut conn: Option<Conn> = None;
    while commits.changed().await.is_ok() {
        let through = *commits.borrow_and_update();
        let (c, p, s) = (conn.take(), path.clone(), settings.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<Conn, StoreError> {
            let c = match c {
                Some(c) => c,
                None => connect(&p, &s, false)?,
            };
            // One row: whether it was blocked, the WAL's frames, the frames copied. Whatever
            // it could not copy yet is copied by a later round.
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))?;
            Ok(c)
        })
        .await;
        match done {
            Ok(Ok(c)) => {
                conn = Some(c);
                copied.send_replace(through);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "checkpoint failed; tried again after the next commit")
            }
            Err(_) => return,
        }
        tokio::time::sleep(CHECKPOINT_GAP).await;
    }
}

async fn writer_task(
    conn: Conn,
    mut rx: mpsc::Receiver<Job>,
    changes: watch::Sender<u64>,
    stats: Arc<WriterStats>,
) {
    let mut conn = Some(conn);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(c) = conn.take() else {
            return;
        };
        stats.batches.fetch_add(1, Relaxed);
        stats.jobs.fetch_add(batch.len() as u64, Relaxed);
        let started = std::time::Instant::now();
        let batch_stats = stats.clone();
        let done = tokio::task::spawn_blocking(move || {
            let cpu0 = thread_cpu_us();
            let before = c.total_changes();
            // Only a batch that changed rows counts as a change: an empty claim does not.
            let committed = run_batch(&c, batch, &batch_stats) && c.total_changes() != before;
            batch_stats
                .cpu_us
                .fetch_add(thread_cpu_us().saturating_sub(cpu0), Relaxed);
            (c, committed)
        })
        .await;
        stats
            .busy_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        match done {
            Ok((c, committed)) => {
                conn = Some(c);
                if committed {
                    changes.send_modify(|v| *v = v.wrapping_add(1));
                }
            }
            Err(_) => return,
        }
    }
}

/// Runs one group of jobs in one transaction; returns whether anything committed.
fn run_batch(conn: &Conn, batch: Vec<Job>, stats: &WriterStats) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let msg = e.to_string();
        for job in batch {
            let _ = job
                .reply
                .send(Err(StoreError::Rejected(format!("database busy: {msg}"))));
        }
        return false;
    }
    let single = batch.len() == 1;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        // A lone job needs no savepoint: if it fails, the whole transaction rolls back.
        let outcome = if single {
            (job.run)(conn)
        } else {
            run_in_savepoint(conn, job.run)
        };
        results.push((job.reply, outcome));
    }
    let any_ok = results.iter().any(|(_, r)| r.is_ok());
    let committed = if single && !any_ok {
        let _ = conn.execute_batch("ROLLBACK");
        false
    } else {
        let commit_started = std::time::Instant::now();
        let commit = conn.execute_batch("COMMIT");
        stats
            .commit_us
            .fetch_add(commit_started.elapsed().as_micros() as u64, Relaxed);
        match commit {
            Ok(()) => true,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                let msg = format!("commit failed: {e}");
                for (_, r) in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(StoreError::Rejected(msg.clone()));
                    }
                }
                false
            }
        }
    };
    for (reply, r) in results {
        let _ = reply.send(r);
    }
    committed && any_ok
}

fn run_in_savepoint(conn: &Conn, run: JobFn) -> Result<Payload, StoreError> {
    let exec = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    exec("SAVEPOINT job")?;
    let outcome = run(conn);
    if outcome.is_err() {
        exec("ROLLBACK TO job")?;
    }
    exec("RELEASE job")?;
    outcome
}

/// `?, ?, ?` for an IN list of `n` values.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Collects a query's rows.
pub(crate) fn rows<T>(
    conn: &Conn,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let out = stmt
        .query_map(params, map)?
        .collect::<Result<Vec<T>, _>>()?;
    Ok(out)
}
