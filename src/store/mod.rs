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
mod admission;
mod agents;
mod breakers;
mod catalog;
pub(crate) mod certs;
mod claims;
mod console;
mod copy;
mod demo;
mod dkim;
mod dns;
mod events;
mod keyfiles;
mod manual;
mod nodes;
mod open;
pub mod pg;
mod probe;
mod reputation;
mod requests;
mod resize;
pub mod sql;
#[macro_use]
mod rows;
pub mod lab;
mod scaling;
pub mod sim;
mod sim_agents;
mod sim_dns;
mod ssh;
mod steps;
mod sync;
mod triage;
mod warmup;

pub use acme_orders::ChallengeHolder;
pub use agents::{heartbeat_subject, Accepted, CapToPush, KeptToken};
pub use breakers::{circuit_open, BreakerChange, BreakerRow, BREAKER_WAIT};
pub use certs::{CertRow, NewCert, NewCertIns};
pub use claims::{Admission, Claim, ClaimAsk, ClaimOutcome, ClusterSpec};
pub use console::{
    ConsoleDelta, ConsoleNode, ConsoleReader, ConsoleRequest, ConsoleSnapshot, ConsoleUpdate,
    FirstPage, ListingRow, NodeWarmup, Searched, StepSummary, WarmupFigures, Word,
};
pub use copy::{migrate_to, Copied};
pub use dkim::DkimKeyRow;
pub use dns::{DnsRecordRow, PlannedWrite};
pub use events::EventFilter;
pub use keyfiles::is_current_record;
pub use manual::{unusable_ip, ManualAccess};
pub use nodes::{Moved, NewNode, NodeFilter, NodeTransitionRow};
use open::{check_is_ours, connect, connect_lite, not_db, open_writer, schema_state};
pub use open::{Access, Opened, Schema, SCHEMA_VERSION};
pub use probe::VersionProbe;
pub use reputation::{AlertCounts, AlertRow, CheckApplied, CheckTarget};
pub use requests::{NewRequest, RequestFilter, TeardownAsked};
pub use resize::{NewResize, ResizeTarget};
pub use rows::*;
pub use scaling::{CauseState, FleetUsage, HighQueue};
pub use sim_agents::SimAgentNode;
pub use sim_dns::{SimDnsNew, SimDnsRecord};
pub use ssh::KeptIdentity;
pub use steps::{Fenced, LastTask, ResourceWrite, TaskMark};
pub use triage::{AlertRefusal, HeartbeatRow, NodeCert, NodeDetail};
pub use warmup::{WarmNode, WarmupDay, WarmupState};

use crate::config::StoreConfig;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

pub use sql::Conn;

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
    (
        12,
        include_str!("../../assets/migrations/0012_hostname_unique.sql"),
    ),
    (
        13,
        include_str!("../../assets/migrations/0013_change_seq.sql"),
    ),
    (
        14,
        include_str!("../../assets/migrations/0014_warmup_closed_index.sql"),
    ),
    (
        15,
        include_str!("../../assets/migrations/0015_stamp_once.sql"),
    ),
    (
        16,
        include_str!("../../assets/migrations/0016_fewer_pages.sql"),
    ),
    (
        17,
        include_str!("../../assets/migrations/0017_held_totals.sql"),
    ),
    (
        18,
        include_str!("../../assets/migrations/0018_node_transitions.sql"),
    ),
    (
        19,
        include_str!("../../assets/migrations/0019_provider_breakers.sql"),
    ),
    (
        20,
        include_str!("../../assets/migrations/0020_manual_access.sql"),
    ),
    (21, include_str!("../../assets/migrations/0021_resize.sql")),
    (
        22,
        include_str!("../../assets/migrations/0022_lab_instances.sql"),
    ),
    (23, include_str!("../../assets/migrations/0023_ssh.sql")),
    (24, include_str!("../../assets/migrations/0024_agents.sql")),
    (
        25,
        include_str!("../../assets/migrations/0025_alert_routing.sql"),
    ),
    (
        26,
        include_str!("../../assets/migrations/0026_pushed_caps.sql"),
    ),
    (
        27,
        include_str!("../../assets/migrations/0027_alert_triage.sql"),
    ),
    (28, include_str!("../../assets/migrations/0028_scaling.sql")),
    (
        29,
        include_str!("../../assets/migrations/0029_resolved_notices.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not a mailfleet database: {why}")]
    NotADatabase { path: String, why: String },
    #[error("database error: {0}")]
    Sql(DbError),
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
    #[error(
        "{path}: the file does not exist; run `mailfleet init` (or `mailfleet demo`) to create one"
    )]
    Missing { path: String },
    #[error(
        "{path}: the file is read-only (or its directory is); this command needs to write to it"
    )]
    ReadOnlyFile { path: String },
    #[error("{path} was written by a newer mailfleet (schema {found}; this build knows up to {known}); refusing to open it")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{path} holds schema {found}; this build needs {known}: run `mailfleet init` to bring it up to date")]
    Behind {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the store's writer has stopped")]
    Closed,
}

/// What went wrong in the database, in mailfleet's own terms whichever engine said it: the
/// kind the store's callers act on, and the engine's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    pub kind: DbErrorKind,
    message: String,
}

/// The kinds of database error the store tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Another connection holds a lock it needs; trying again later may work.
    Busy,
    /// A constraint (unique, foreign key, check, not null) refused the change.
    Constraint,
    /// The database (or its disk) is full, or at its configured size limit.
    Full,
    /// A row held a value of another type than the code expects.
    Type,
    /// A one-row read found no row (see `sql::OptionalExtension`).
    NoRows,
    /// The connection to the database server was lost (or the server is shutting down);
    /// a new connection may work.
    Lost,
    /// Anything else.
    Other,
}

impl DbError {
    pub fn new(kind: DbErrorKind, message: impl Into<String>) -> DbError {
        DbError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        use rusqlite::ErrorCode;
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbErrorKind::Busy,
            Some(ErrorCode::ConstraintViolation) => DbErrorKind::Constraint,
            Some(ErrorCode::DiskFull) => DbErrorKind::Full,
            _ => match e {
                rusqlite::Error::QueryReturnedNoRows => DbErrorKind::NoRows,
                rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..) => DbErrorKind::Type,
                _ => DbErrorKind::Other,
            },
        };
        DbError::new(kind, e.to_string())
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> StoreError {
        StoreError::Sql(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sql(e.into())
    }
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
    /// Of that, time spent committing (writing the WAL), in microseconds. With
    /// `synchronous = "full"` the sync that makes a commit durable runs beside the writer
    /// (see `sync`), not in this time.
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
    /// The SQLite file, or the PostgreSQL URL as it may be shown.
    path: PathBuf,
    /// PostgreSQL: where it is and how to log in.
    pg: Option<Arc<pg::Target>>,
    settings: StoreConfig,
    readers: Mutex<Vec<Conn>>,
    read_slots: Arc<tokio::sync::Semaphore>,
    writer: Option<mpsc::Sender<Job>>,
    changes: watch::Receiver<u64>,
    /// The commit count the checkpointer has copied into the database file through.
    copied: watch::Receiver<u64>,
    stats: Arc<WriterStats>,
    /// Reads run so far (`Store::reads`).
    reads: AtomicU64,
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
        Self::open_as(path, cfg, Access::Create)
            .await
            .map(|(s, _)| s)
    }

    /// Opens an existing database for reading only: every write is refused.
    pub async fn open_read_only(path: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        Self::open_as(path, cfg, Access::ReadOnly)
            .await
            .map(|(s, _)| s)
    }

    /// Opens the database at `path` as `access` says; reports what opening did.
    pub async fn open_as(
        path: &Path,
        cfg: &StoreConfig,
        access: Access,
    ) -> Result<(Store, Opened), StoreError> {
        Self::open_syncing(path, cfg, access, sync::sync_data()).await
    }

    /// `open_as`, with the writes made durable by `sync` (where `synchronous = "full"`).
    pub(crate) async fn open_syncing(
        path: &Path,
        cfg: &StoreConfig,
        access: Access,
        sync: sync::SyncFn,
    ) -> Result<(Store, Opened), StoreError> {
        if let Some(url) = path.to_str().filter(|s| pg::is_url(s)) {
            return Self::open_postgres(url, cfg, access).await;
        }
        let (path, settings) = (path.to_path_buf(), cfg.clone());
        let p2 = path.clone();
        let (writer_conn, opened) = tokio::task::spawn_blocking(
            move || -> Result<(Option<rusqlite::Connection>, Opened), StoreError> {
                match access {
                    Access::Create | Access::Write => {
                        let (conn, opened) = open_writer(&p2, &settings, access == Access::Create)?;
                        Ok((Some(conn), opened))
                    }
                    Access::Read | Access::ReadOnly => {
                        if !p2.exists() {
                            return Err(StoreError::Missing {
                                path: p2.display().to_string(),
                            });
                        }
                        let conn = connect_lite(&p2, &settings, true)?;
                        check_is_ours(&conn, &p2)?;
                        let state = schema_state(&conn, &p2)?;
                        drop(conn);
                        match (state, access) {
                            (Schema::Current, _) => Ok((None, Opened::default())),
                            (Schema::Behind(found), Access::Read) => {
                                // Reading needs the current schema: the only write a read
                                // makes. A file that cannot take it says what it needs.
                                let (conn, opened) =
                                    open_writer(&p2, &settings, false).map_err(|e| match e {
                                        StoreError::ReadOnlyFile { path } => StoreError::Behind {
                                            path,
                                            found,
                                            known: SCHEMA_VERSION,
                                        },
                                        other => other,
                                    })?;
                                drop(conn);
                                Ok((None, opened))
                            }
                            (Schema::Behind(found), _) => Err(StoreError::Behind {
                                path: p2.display().to_string(),
                                found,
                                known: SCHEMA_VERSION,
                            }),
                            (Schema::Empty, _) => Err(not_db(
                                &p2,
                                "it holds no mailfleet schema; run `mailfleet init` to create one",
                            )),
                        }
                    }
                }
            },
        )
        .await
        .map_err(|_| StoreError::Closed)??;
        let (changes_tx, changes) = watch::channel(0u64);
        let (copied_tx, copied) = watch::channel(0u64);
        let stats = Arc::new(WriterStats::default());
        let writer = match writer_conn {
            Some(conn) => {
                // Durable before acknowledged, with the syncing beside the writer (see
                // `sync`): SQLite itself then commits without waiting on the disk.
                // Only a WAL has a file of its own to sync; a file system where SQLite
                // could not use one keeps SQLite's own syncing.
                let wal = conn
                    .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))?
                    .eq_ignore_ascii_case("wal");
                let syncer = match cfg.synchronous {
                    crate::config::Synchronous::Full if wal => {
                        conn.pragma_update(None, "synchronous", "NORMAL")?;
                        // The file name SQLite opened (symbolic links resolved): its WAL
                        // sits beside that, not beside a link to it.
                        let db = conn
                            .path()
                            .map(PathBuf::from)
                            .unwrap_or_else(|| path.clone());
                        Some(sync::Syncer::start(db, sync).map_err(|e| {
                            StoreError::Rejected(format!("cannot start the store's syncer: {e}"))
                        })?)
                    }
                    _ => None,
                };
                let (tx, rx) = mpsc::channel::<Job>(4096);
                tokio::spawn(checkpointer(
                    path.clone(),
                    cfg.clone(),
                    changes_tx.subscribe(),
                    copied_tx,
                ));
                tokio::spawn(writer_task(
                    Conn::from(conn),
                    rx,
                    changes_tx,
                    stats.clone(),
                    syncer,
                    None,
                ));
                Some(tx)
            }
            None => None,
        };
        let store = Store::assemble(path, None, cfg, writer, changes, copied, stats);
        Ok((store, opened))
    }

    /// A store from its parts, as opening made them.
    fn assemble(
        path: PathBuf,
        pg: Option<Arc<pg::Target>>,
        cfg: &StoreConfig,
        writer: Option<mpsc::Sender<Job>>,
        changes: watch::Receiver<u64>,
        copied: watch::Receiver<u64>,
        stats: Arc<WriterStats>,
    ) -> Store {
        Store {
            inner: Arc::new(Inner {
                path,
                pg,
                settings: cfg.clone(),
                readers: Mutex::new(Vec::new()),
                read_slots: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
                writer,
                changes,
                copied,
                stats,
                reads: AtomicU64::new(0),
            }),
        }
    }

    /// Opens a PostgreSQL database (`--db postgres://...`) as `access` says.
    async fn open_postgres(
        url: &str,
        cfg: &StoreConfig,
        access: Access,
    ) -> Result<(Store, Opened), StoreError> {
        let target = Arc::new(pg::Target::parse(url, cfg)?);
        let t = target.clone();
        let (writer_conn, opened) = tokio::task::spawn_blocking(move || pg::open(&t, access))
            .await
            .map_err(|_| StoreError::Closed)??;
        let (changes_tx, changes) = watch::channel(0u64);
        // Nothing to copy on PostgreSQL: `settled` returns at once.
        let (_copied_tx, copied) = watch::channel(0u64);
        let stats = Arc::new(WriterStats::default());
        let writer = writer_conn.map(|conn| {
            let (tx, rx) = mpsc::channel::<Job>(4096);
            tokio::spawn(writer_task(
                conn,
                rx,
                changes_tx,
                stats.clone(),
                None,
                Some(target.clone()),
            ));
            tx
        });
        let path = PathBuf::from(target.shown());
        let store = Store::assemble(path, Some(target), cfg, writer, changes, copied, stats);
        Ok((store, opened))
    }

    /// The SQLite file, or the PostgreSQL URL (as it may be shown).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Which engine the store runs on.
    pub fn dialect(&self) -> sql::Dialect {
        match self.inner.pg {
            Some(_) => sql::Dialect::Postgres,
            None => sql::Dialect::Sqlite,
        }
    }

    /// PostgreSQL: where it is (for the version probe's listening connection).
    pub(crate) fn pg_target(&self) -> Option<Arc<pg::Target>> {
        self.inner.pg.clone()
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
        if self.inner.writer.is_none() || self.inner.pg.is_some() {
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

    /// How many reads this store has run (the version probe's are not counted): for tests
    /// and benchmarks that check a loop sleeps when it has nothing to do.
    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Relaxed)
    }

    /// Runs `f` on a read-only connection on a blocking thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        inner.reads.fetch_add(1, Relaxed);
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
            let conn = match (pooled, &inner.pg) {
                (Some(c), _) => c,
                (None, Some(t)) => t.connect(true)?,
                (None, None) => connect(&inner.path, &inner.settings, true)?,
            };
            let out = f(&conn);
            // A PostgreSQL connection the server or the network closed is let go; the next
            // read connects again.
            if !conn.is_broken() {
                let mut idle = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_READERS {
                    idle.push(conn);
                }
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

/// The writer. Each time a write arrives after a quiet spell, one blocking task takes the
/// connection and runs batch after batch for as long as writes keep coming, then hands the
/// connection back and waits. The next batch starts as soon as one has committed, with
/// whatever queued meanwhile; the replies of a committed batch go out once the syncer
/// (when there is one: `synchronous = "full"`) has made it durable, or at once. Handing
/// each batch to the blocking pool instead left the one writer idle about a fifth of the
/// time in `cargo bench --bench engine`: between batches it waited for a runtime worker,
/// busy with the pipelines that queued the writes, to poll it again. (A blocking task,
/// unlike a thread of its own, also keeps tokio's paused test clock from jumping ahead
/// while a write runs; so it waits for the syncer before it ends.)
async fn writer_task(
    conn: Conn,
    mut rx: mpsc::Receiver<Job>,
    changes: watch::Sender<u64>,
    stats: Arc<WriterStats>,
    syncer: Option<sync::Syncer>,
    reconnect: Option<Arc<pg::Target>>,
) {
    let mut held = Some((conn, changes, syncer));
    while let Some(first) = rx.recv().await {
        let Some((conn, changes, syncer)) = held.take() else {
            return;
        };
        let stats = stats.clone();
        let reconnect = reconnect.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let mut next = Some(first);
            while let Some(first) = next {
                if let Some(t) = &reconnect {
                    // PostgreSQL: the server (or the network) may have closed the
                    // connection since the last batch, which only a statement finds out.
                    // The transaction is begun here, where a lost connection can still be
                    // made again with nothing of the batch done; a batch that finds no
                    // server at all fails (`run_batch` begins again and says why), and
                    // the one after tries again.
                    let lost = match begin_write(&conn) {
                        Err(StoreError::Sql(e)) => e.kind == DbErrorKind::Lost,
                        Err(_) => false,
                        Ok(()) => false,
                    } || conn.is_broken();
                    if lost {
                        match t.connect(false) {
                            Ok(c) => {
                                conn = c;
                                let _ = begin_write(&conn);
                            }
                            Err(e) => tracing::warn!(error = %e, "store: cannot reconnect"),
                        }
                    }
                }
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                run_counted(&conn, batch, &stats, &changes, syncer.as_ref());
                next = rx.try_recv().ok();
                if next.is_none() {
                    // The writes now waiting for their replies are what would come next.
                    if let Some(s) = &syncer {
                        s.drain();
                    }
                    next = rx.try_recv().ok();
                }
            }
            (conn, changes, syncer, rx)
        })
        .await;
        match done {
            Ok((conn, changes, syncer, back)) => {
                held = Some((conn, changes, syncer));
                rx = back;
            }
            Err(_) => return,
        }
    }
}

/// Runs one batch, counts it in the writer's figures, tells the watchers of a commit that
/// changed rows, and replies (through the syncer, if there is one and the batch committed).
fn run_counted(
    conn: &Conn,
    batch: Vec<Job>,
    stats: &WriterStats,
    changes: &watch::Sender<u64>,
    syncer: Option<&sync::Syncer>,
) {
    if let Some(why) = syncer.and_then(sync::Syncer::failed) {
        for job in batch {
            let _ = job.reply.send(Err(StoreError::Rejected(why.clone())));
        }
        return;
    }
    stats.batches.fetch_add(1, Relaxed);
    stats.jobs.fetch_add(batch.len() as u64, Relaxed);
    let started = std::time::Instant::now();
    let cpu0 = thread_cpu_us();
    let before = conn.total_changes();
    let (replies, committed) = run_batch(conn, batch, stats);
    // Only a batch that changed rows counts as a change: an empty claim does not.
    let changed = committed && conn.total_changes() != before;
    stats
        .cpu_us
        .fetch_add(thread_cpu_us().saturating_sub(cpu0), Relaxed);
    stats
        .busy_us
        .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    match syncer {
        Some(s) if committed => s.hand(replies),
        _ => {
            for (reply, r) in replies {
                let _ = reply.send(r);
            }
        }
    }
    if changed {
        changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Runs one group of jobs in one transaction; returns the replies (not sent yet) and
/// whether the transaction committed.
fn run_batch(conn: &Conn, batch: Vec<Job>, stats: &WriterStats) -> (Vec<sync::Reply>, bool) {
    let begun = if conn.is_autocommit() {
        begin_write(conn)
    } else {
        // The writer began it already (PostgreSQL: see `writer_task`).
        Ok(())
    };
    if let Err(e) = begun {
        let why = match &e {
            StoreError::Sql(d) if d.kind == DbErrorKind::Lost => "database unreachable",
            _ => "database busy",
        };
        let msg = format!("{why}: {e}");
        for job in batch {
            let _ = job.reply.send(Err(StoreError::Rejected(msg.clone())));
        }
        return (Vec::new(), false);
    }
    // No stamp is open between transactions (see `stamp`); this one starts with none.
    if let Err(e) = close_stamp(conn) {
        let _ = conn.execute_batch("ROLLBACK");
        let msg = e.to_string();
        for job in batch {
            let _ = job.reply.send(Err(StoreError::Rejected(msg.clone())));
        }
        return (Vec::new(), false);
    }
    let single = batch.len() == 1;
    let mut results = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        // A lone job needs no savepoint: if it fails, the whole transaction rolls back.
        let outcome = if single {
            (job.run)(conn)
        } else {
            run_in_savepoint(conn, job.run)
        };
        results.push((job.reply, outcome));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back itself (it does on a full disk, an
            // I/O error or out of memory), taking every earlier job's writes with it. No
            // job may go on outside a transaction: each statement would commit on its own.
            let why = match results.last() {
                Some((_, Err(e))) => e.to_string(),
                _ => "the transaction ended early".to_owned(),
            };
            let lost = format!("rolled back with the batch after: {why}");
            for (_, r) in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(StoreError::Rejected(lost.clone()));
                }
            }
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Rejected(lost.clone())));
            }
            return (results, false);
        }
    }
    let any_ok = results.iter().any(|(_, r)| r.is_ok());
    let committed = if single && !any_ok {
        let _ = conn.execute_batch("ROLLBACK");
        false
    } else {
        let commit_started = std::time::Instant::now();
        // The stamp is closed in the transaction it was opened in, before it commits.
        let commit = close_stamp(conn).and_then(|()| Ok(conn.execute_batch("COMMIT")?));
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
    (results, committed && any_ok)
}

/// Begins the writer's transaction: SQLite's write lock at once (`BEGIN IMMEDIATE`); on
/// PostgreSQL, the stamp row's lock (see `pg`).
fn begin_write(conn: &Conn) -> Result<(), StoreError> {
    match conn.dialect() {
        sql::Dialect::Sqlite => Ok(conn.execute_batch("BEGIN IMMEDIATE")?),
        sql::Dialect::Postgres => {
            conn.execute_batch("BEGIN")?;
            pg::lock_for_write(conn).inspect_err(|_| {
                let _ = conn.execute_batch("ROLLBACK");
            })
        }
    }
}

/// Opens the change stamp of the writer's transaction, if it is not open yet, and returns
/// it: the sequence that every row the console shows and this transaction changes is to
/// carry (migration 0015). The first call bumps the counter once; later calls in the same
/// transaction return the same value. A statement that writes such a row may set
/// `change_seq` to it itself, which spares the triggers their second write of the row;
/// the triggers stamp whatever the statement does not, with this value while it is open.
/// The writer closes it before the transaction commits (`close_stamp`), so no committed
/// state holds an open stamp. A job's savepoint rolls back its opening with the rest.
pub(crate) fn stamp(conn: &Conn) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE change_counter SET seq = seq + 1 - open, open = 1 WHERE id = 1 RETURNING seq",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Closes the transaction's change stamp, if one is open: run before every commit.
fn close_stamp(conn: &Conn) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE change_counter SET open = 0 WHERE open = 1")?
        .execute([])?;
    Ok(())
}

fn run_in_savepoint(conn: &Conn, run: JobFn) -> Result<Payload, StoreError> {
    let exec = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    exec("SAVEPOINT job")?;
    let outcome = run(conn);
    if outcome.is_err() && conn.is_autocommit() {
        // SQLite ended the transaction, savepoints and all: the caller sees it and stops.
        return outcome;
    }
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
    params: impl sql::Params,
    map: impl FnMut(&sql::Row<'_>) -> sql::SqlResult<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let out = stmt
        .query_map(params, map)?
        .collect::<Result<Vec<T>, _>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_are_told_apart_by_kind_in_mailfleet_s_own_terms() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kinds.db");
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch("CREATE TABLE t (v INTEGER UNIQUE NOT NULL)")
            .expect("table");
        c.execute("INSERT INTO t VALUES (1)", []).expect("row");
        let e = StoreError::from(c.execute("INSERT INTO t VALUES (1)", []).expect_err("dup"));
        let StoreError::Sql(e) = e else {
            panic!("not a database error: {e}")
        };
        assert_eq!(e.kind, DbErrorKind::Constraint);
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        let e = DbError::from(
            c.query_row("SELECT 'x'", [], |r| r.get::<_, i64>(0))
                .expect_err("text as a number"),
        );
        assert_eq!(e.kind, DbErrorKind::Type);
        // A second connection meets the first one's write lock.
        c.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let other = rusqlite::Connection::open(&path).expect("open");
        other
            .busy_timeout(std::time::Duration::ZERO)
            .expect("no wait");
        let e = DbError::from(other.execute_batch("BEGIN IMMEDIATE").expect_err("busy"));
        assert_eq!(e.kind, DbErrorKind::Busy);
        let e = DbError::from(other.execute_batch("SELEC 1").expect_err("syntax"));
        assert_eq!(e.kind, DbErrorKind::Other);
        // A database at its size limit.
        c.execute_batch("COMMIT").expect("unlock");
        let pages: i64 = c
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("pages");
        c.pragma_update(None, "max_page_count", pages)
            .expect("limit");
        let e = DbError::from(
            c.execute("INSERT INTO t VALUES (zeroblob(1000000))", [])
                .expect_err("full"),
        );
        assert_eq!(e.kind, DbErrorKind::Full);
    }

    fn job(
        run: impl FnOnce(&Conn) -> Result<(), StoreError> + Send + 'static,
    ) -> (Job, oneshot::Receiver<Result<Payload, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let run: JobFn = Box::new(move |conn| run(conn).map(|()| Box::new(()) as Payload));
        (Job { run, reply }, rx)
    }

    fn insert(x: i64) -> impl FnOnce(&Conn) -> Result<(), StoreError> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            Ok(())
        }
    }

    /// When SQLite rolls a batch's transaction back itself (as it may on a full disk), the
    /// jobs before the failing one lost their writes and say so, and the jobs after it do
    /// not run outside a transaction (each statement would commit alone).
    #[test]
    fn a_transaction_sqlite_rolled_back_fails_the_whole_batch_and_writes_nothing() {
        let conn = Conn::from(rusqlite::Connection::open_in_memory().expect("open"));
        conn.execute_batch(
            "CREATE TABLE t (x INTEGER);
             CREATE TABLE change_counter (id INTEGER PRIMARY KEY, seq INTEGER, open INTEGER);
             INSERT INTO change_counter VALUES (1, 0, 0);",
        )
        .expect("schema");
        let (first, first_rx) = job(insert(1));
        // Stands in for a statement SQLite answers by ending the transaction.
        let (failing, failing_rx) = job(|conn| {
            conn.execute_batch("ROLLBACK")?;
            Err(StoreError::Rejected("database or disk is full".into()))
        });
        let (last, last_rx) = job(insert(3));
        let stats = WriterStats::default();
        let (replies, committed) = run_batch(&conn, vec![first, failing, last], &stats);
        assert!(!committed);
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
        let said = |rx: oneshot::Receiver<Result<Payload, StoreError>>| match rx.blocking_recv() {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => "ok".to_owned(),
            Err(_) => "no reply".to_owned(),
        };
        assert_eq!(said(failing_rx), "database or disk is full");
        for rx in [first_rx, last_rx] {
            assert_eq!(
                said(rx),
                "rolled back with the batch after: database or disk is full"
            );
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 0, "no job's write may survive");
        assert!(conn.is_autocommit());
    }
}
