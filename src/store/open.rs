//! Opening a database: a connection that writes nothing until the file is known to be ours
//! and not newer than this build, the writer's settings, and the migrations, applied under
//! one exclusive transaction.

use super::{StoreError, MIGRATIONS, WAL_RESTART_FRAMES};
use crate::config::{StoreConfig, Synchronous};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

/// Opening is SQLite's own business: it works on rusqlite's connection, and hands the
/// store its connection through the seam (`super::Conn`) once done.
type Conn = Connection;

pub(super) fn not_db(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::NotADatabase {
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn classify_open_error(e: rusqlite::Error, path: &Path) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_db(path, "the file is not an SQLite database"),
        Some(ErrorCode::CannotOpen) => not_db(path, format!("it cannot be opened ({e})")),
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnlyFile {
            path: path.display().to_string(),
        },
        _ => e.into(),
    }
}

/// Opens a connection and reads the schema, which fails on a file that is not a database
/// before anything is written. Sets nothing that writes.
fn open_conn(path: &Path, cfg: &StoreConfig, flags: OpenFlags) -> Result<Conn, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| classify_open_error(e, path))?;
    conn.busy_timeout(cfg.busy_timeout)?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| classify_open_error(e, path))?;
    Ok(conn)
}

/// The writer's settings; the first (WAL) is written into the file's header.
fn configure_writer(conn: &Conn, path: &Path, cfg: &StoreConfig) -> Result<(), StoreError> {
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
    Ok(())
}

fn finish_conn(conn: &Conn) -> Result<(), StoreError> {
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// Each reader's page cache, KiB.
const READER_CACHE_KIB: i64 = 256;

pub(super) fn connect(
    path: &Path,
    cfg: &StoreConfig,
    read_only: bool,
) -> Result<super::Conn, StoreError> {
    connect_lite(path, cfg, read_only).map(super::Conn::from)
}

pub(super) fn connect_lite(
    path: &Path,
    cfg: &StoreConfig,
    read_only: bool,
) -> Result<Conn, StoreError> {
    let conn = if read_only {
        let conn = open_read_conn(path, cfg)?;
        // Readers keep little: every commit empties a reader's cache before its next read,
        // and the big reads (the console's first load, a listing) walk pages once. Up to
        // eight pooled readers at SQLite's 2 MiB each held 16 MiB for nothing.
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
        conn
    } else {
        let conn = open_conn(path, cfg, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure_writer(&conn, path, cfg)?;
        conn
    };
    finish_conn(&conn)?;
    Ok(conn)
}

/// A read-only connection. A WAL database in a directory this process cannot write, with
/// no `-shm` file beside it, cannot be read the usual way (SQLite would have to create the
/// `-shm`); when no `-wal` file is there either, every commit is in the file itself and it
/// is read as immutable.
fn open_read_conn(path: &Path, cfg: &StoreConfig) -> Result<Conn, StoreError> {
    match open_conn(path, cfg, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Err(StoreError::NotADatabase { .. })
        | Err(StoreError::Sql(_))
        | Err(StoreError::ReadOnlyFile { .. })
            if !side_file(path, "-shm").exists()
                && !side_file(path, "-wal").exists()
                && path.exists() =>
        {
            let uri = immutable_uri(path);
            open_conn(
                Path::new(&uri),
                cfg,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(|e| match e {
                StoreError::NotADatabase { why, .. } => not_db(path, why),
                other => other,
            })
        }
        other => other,
    }
}

fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `file:PATH?immutable=1`, with the characters a URI path may not hold escaped.
fn immutable_uri(path: &Path) -> String {
    let mut out = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'?' | b'#' | b'%' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(char::from(*b)),
        }
    }
    out.push_str("?immutable=1");
    out
}

/// Refuses a database that holds tables but is not mailfleet's, so we never write into
/// another program's file.
pub(super) fn check_is_ours(conn: &Conn, path: &Path) -> Result<(), StoreError> {
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

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Where a database's schema stands against this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// No mailfleet schema at all (a new or empty file).
    Empty,
    /// Some migrations are not applied yet; the newest applied one.
    Behind(i64),
    Current,
}

/// Reads which migrations the database holds; refuses one written by a newer mailfleet.
/// Only reads.
pub(super) fn schema_state(conn: &Conn, path: &Path) -> Result<Schema, StoreError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(Schema::Empty);
    }
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let newest = applied.last().copied().unwrap_or(0);
    if let Some(unknown) = applied
        .iter()
        .rev()
        .find(|v| !MIGRATIONS.iter().any(|(known, _)| known == *v))
    {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: newest.max(*unknown),
            known: SCHEMA_VERSION,
        });
    }
    Ok(match newest {
        0 => Schema::Empty,
        _ if applied.len() < MIGRATIONS.len() => Schema::Behind(newest),
        _ => Schema::Current,
    })
}

/// Brings the schema up to date in one exclusive transaction: another process opening the
/// same file at the same time waits, then finds the work done. Returns the migrations
/// applied.
fn migrate(conn: &Conn, path: &Path) -> Result<Vec<i64>, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| classify_open_error(e, path))?;
    let applied = (|| -> Result<Vec<i64>, StoreError> {
        check_is_ours(conn, path)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")?;
        schema_state(conn, path)?;
        let mut applied = Vec::new();
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> = conn
                .query_row(
                    "SELECT version FROM schema_migrations WHERE version = ?1",
                    [version],
                    |r| r.get(0),
                )
                .optional()?;
            if done.is_none() {
                conn.execute_batch(sql)?;
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    rusqlite::params![version, crate::clock::ts(chrono::Utc::now())],
                )?;
                applied.push(*version);
            }
        }
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('app', 'mailfleet') ON CONFLICT (key) DO NOTHING",
            [],
        )?;
        Ok(applied)
    })();
    match applied {
        Ok(applied) => {
            conn.execute_batch("COMMIT")
                .map_err(|e| classify_open_error(e, path))?;
            Ok(applied)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create the file (and its directory) if missing; bring the schema up to date.
    Create,
    /// An existing file, for changing: the schema is brought up to date.
    Write,
    /// An existing file, for reading: nothing is written, unless the schema is behind this
    /// build's (then only the migrations are).
    Read,
    /// An existing file, and nothing is ever written (`--read-only`).
    ReadOnly,
}

/// What opening found and did, for `mailfleet init`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// The file was created by this open.
    pub created: bool,
    /// Migrations applied by this open.
    pub applied: Vec<i64>,
}

/// Opens the writer's connection on `path` (creating it if `create`): checks the file is
/// ours and not newer than this build before anything is written, then switches to WAL and
/// migrates.
pub(super) fn open_writer(
    path: &Path,
    cfg: &StoreConfig,
    create: bool,
) -> Result<(Conn, Opened), StoreError> {
    let existed = path.exists();
    if !existed && !create {
        return Err(StoreError::Missing {
            path: path.display().to_string(),
        });
    }
    if create {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| not_db(path, format!("cannot create {}: {e}", parent.display())))?;
        }
    }
    let flags = if create {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    // Processes opening one new file at once can meet in a lock order SQLite resolves by
    // answering BUSY at once, without waiting on the busy timeout (two switching it to WAL
    // together is one). Every step below is safe to run again (the migrations are one
    // transaction), so the whole opening is tried again within the busy timeout.
    let deadline = std::time::Instant::now() + cfg.busy_timeout;
    loop {
        match open_writer_once(path, cfg, flags) {
            Err(StoreError::Sql(e))
                if e.kind == super::DbErrorKind::Busy && std::time::Instant::now() < deadline =>
            {
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 2..25);
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
            Err(e) => return Err(e),
            Ok((conn, applied)) => {
                return Ok((
                    conn,
                    Opened {
                        created: !existed,
                        applied,
                    },
                ))
            }
        }
    }
}

/// One try at [`open_writer`]'s work on an existing (or just created) file.
fn open_writer_once(
    path: &Path,
    cfg: &StoreConfig,
    flags: OpenFlags,
) -> Result<(Conn, Vec<i64>), StoreError> {
    let conn = open_conn(path, cfg, flags)?;
    if conn.is_readonly(rusqlite::DatabaseName::Main)? {
        return Err(StoreError::ReadOnlyFile {
            path: path.display().to_string(),
        });
    }
    check_is_ours(&conn, path)?;
    schema_state(&conn, path)?;
    configure_writer(&conn, path, cfg)?;
    finish_conn(&conn)?;
    let applied = migrate(&conn, path)?;
    Ok((conn, applied))
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// An in-memory database with the migrations before `version` applied.
    fn before(version: i64) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        // Rows of requests that the test does not make.
        conn.pragma_update(None, "foreign_keys", "OFF")
            .expect("pragma");
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < version) {
            conn.execute_batch(sql)
                .unwrap_or_else(|e| panic!("migration {v}: {e}"));
        }
        conn
    }

    /// The first column of every row `sql` reads, as text.
    fn texts(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
        conn.prepare(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn apply(conn: &rusqlite::Connection, version: i64) {
        let (_, sql) = MIGRATIONS
            .iter()
            .find(|(v, _)| *v == version)
            .expect("known migration");
        conn.execute_batch(sql).expect("apply");
    }

    #[test]
    fn migration_16_keeps_removed_records_out_of_the_live_indexes() {
        let conn = before(16);
        conn.execute_batch(
            "INSERT INTO dns_records (request_id, position, zone, purpose, name, rtype, ttl, content, want,
                                      provider, owned, status, published_at, verified_at, removed_at) VALUES
                 ('r1', 0, 'x.', 'a', 'a.x.', 'A', 300, '1.2.3.4', '1.2.3.4', 'sim', 1, 'verified', 'p', 'v', NULL),
                 ('r2', 0, 'x.', 'a', 'b.x.', 'A', 300, '1.2.3.5', '1.2.3.5', 'sim', 1, 'removed', 'p', 'v', 'gone'),
                 ('r3', 0, 'x.', 'a', 'c.x.', 'A', 300, '1.2.3.6', '1.2.3.6', 'sim', 1, 'removed', 'p', NULL, NULL);",
        )
        .expect("rows as 0015 left them");
        apply(&conn, 16);

        // A removed record keeps or gets its time; the live ones are those without.
        // Named, the index must serve the query (SQLite refuses it otherwise).
        let live = texts(
            &conn,
            "SELECT name FROM dns_records INDEXED BY dns_records_live WHERE name > '' AND removed_at IS NULL",
        );
        assert_eq!(live, vec!["a.x.".to_string()]);
        let times = texts(
            &conn,
            "SELECT removed_at FROM dns_records WHERE status = 'removed' ORDER BY name",
        );
        assert_eq!(times, vec!["gone".to_string(), "p".to_string()]);
        let index: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE name = 'events_by_name'",
                [],
                |r| r.get(0),
            )
            .ok();
        assert_eq!(index, None);
    }

    /// The running totals against the sums they stand for: every (kind, owner) with live
    /// rows matches, and every other total is zero.
    fn assert_totals_match(conn: &rusqlite::Connection, when: &str) {
        type Sums = std::collections::BTreeMap<(String, String), (i64, i64, i64, i64)>;
        let read = |sql: &str| -> Sums {
            conn.prepare(sql)
                .expect("prepare")
                .query_map([], |r| {
                    Ok((
                        (r.get(0)?, r.get(1)?),
                        (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                    ))
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let sums = read(
            "SELECT kind, CASE kind WHEN 'quota' THEN tenant ELSE cluster END AS owner,
                    COUNT(*), SUM(cpu), SUM(memory_gb), SUM(storage_gb)
             FROM resources
             WHERE kind IN ('quota', 'capacity') AND status <> 'released' AND owner IS NOT NULL
             GROUP BY kind, owner",
        );
        let totals = read(
            "SELECT kind, owner, units, cpu, memory_gb, storage_gb FROM held_totals WHERE units <> 0
                 OR cpu <> 0 OR memory_gb <> 0 OR storage_gb <> 0",
        );
        assert_eq!(totals, sums, "{when}");
    }

    #[test]
    fn migration_18_starts_each_nodes_history_with_the_status_it_had() {
        let conn = before(18);
        conn.execute_batch(
            "INSERT INTO nodes (id, tenant, label, hostname, region, plan, status, status_reason,
                                pause_cause, created_at, updated_at) VALUES
                 ('n1', 'acme', 'a', 'a.x', 'r', 'p', 'warming', NULL, NULL, 't1', 't2'),
                 ('n2', 'acme', 'b', 'b.x', 'r', 'p', 'paused', 'blocklist: listed on z', 'blocklist', 't1', 't3');",
        )
        .expect("nodes");
        apply(&conn, 18);
        type Row = (String, String, Option<String>, String, Option<String>);
        let rows: Vec<Row> = conn
            .prepare("SELECT node_id, at, from_status, to_status || '/' || reason, cause FROM node_transitions ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            rows,
            [
                (
                    "n1".into(),
                    "t2".into(),
                    None,
                    "warming/status when transitions began to be kept".into(),
                    None
                ),
                (
                    "n2".into(),
                    "t3".into(),
                    None,
                    "paused/status when transitions began to be kept: blocklist: listed on z"
                        .into(),
                    Some("blocklist".into())
                ),
            ]
        );
    }

    #[test]
    fn migration_17_totals_what_is_held_and_keeps_it_through_every_write() {
        let conn = before(17);
        let insert = |id: &str,
                      kind: &str,
                      status: &str,
                      tenant: &str,
                      cluster: Option<&str>,
                      cpu: i64| {
            conn.execute(
                "INSERT INTO resources (id, request_id, seq, kind, status, tenant, cluster, cpu, memory_gb,
                                        storage_gb, slots, created_at)
                 VALUES (?1, ?1, 1, ?2, ?3, ?4, ?5, ?6, ?6 * 2, ?6 * 10, 1, 't')",
                rusqlite::params![id, kind, status, tenant, cluster, cpu],
            )
            .expect("insert");
        };
        // As 0016 left them: live and released rows of both kinds, one capacity row
        // without a cluster, and rows of other kinds.
        insert("a", "quota", "allocated", "acme", Some("dal"), 2);
        insert("b", "quota", "allocated", "acme", Some("dal"), 4);
        insert("c", "quota", "released", "acme", Some("dal"), 8);
        insert("d", "quota", "allocated", "globex", Some("sea"), 1);
        insert("e", "capacity", "allocated", "acme", Some("dal"), 2);
        insert("f", "capacity", "released", "acme", Some("dal"), 4);
        insert("g", "capacity", "allocated", "acme", None, 16);
        insert("h", "instance", "allocated", "acme", Some("dal"), 32);
        apply(&conn, 17);
        assert_totals_match(&conn, "after the migration");
        let acme: (i64, i64) = conn
            .query_row(
                "SELECT units, cpu FROM held_totals WHERE kind = 'quota' AND owner = 'acme'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("acme's quota");
        assert_eq!(acme, (2, 6));

        // Then a few hundred writes of every shape the triggers must follow.
        let tenants = ["acme", "globex", "initech"];
        let clusters = [Some("dal"), Some("sea"), None];
        let kinds = ["quota", "capacity", "instance"];
        let statuses = ["intent", "allocated", "released"];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| -> usize {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as usize) % n
        };
        for step in 0..400 {
            let id = format!("r{}", next(40));
            let what = match next(6) {
                0 | 1 => {
                    conn.execute(
                        "INSERT INTO resources (id, request_id, seq, kind, status, tenant, cluster, cpu, memory_gb,
                                                storage_gb, slots, created_at)
                         VALUES (?1, ?1, 1, ?2, ?3, ?4, ?5, ?6, ?6 * 2, ?6 * 10, 1, 't')
                         ON CONFLICT (id) DO NOTHING",
                        rusqlite::params![
                            id,
                            kinds[next(3)],
                            statuses[next(3)],
                            tenants[next(3)],
                            clusters[next(3)],
                            next(8) as i64 + 1
                        ],
                    )
                    .expect("insert");
                    "insert"
                }
                2 => {
                    conn.execute(
                        "UPDATE resources SET status = 'released' WHERE id = ?1",
                        [&id],
                    )
                    .expect("release");
                    "release"
                }
                3 => {
                    conn.execute(
                        "UPDATE resources SET cpu = ?2, storage_gb = ?2 * 3 WHERE id = ?1",
                        rusqlite::params![id, next(8) as i64],
                    )
                    .expect("resize");
                    "resize"
                }
                4 => {
                    conn.execute(
                        "UPDATE resources SET tenant = ?2, cluster = ?3, kind = ?4, status = ?5 WHERE id = ?1",
                        rusqlite::params![
                            id,
                            tenants[next(3)],
                            clusters[next(3)],
                            kinds[next(3)],
                            statuses[next(3)]
                        ],
                    )
                    .expect("move");
                    "move"
                }
                _ => {
                    conn.execute("DELETE FROM resources WHERE id = ?1", [&id])
                        .expect("delete");
                    "delete"
                }
            };
            assert_totals_match(&conn, &format!("step {step}: {what} {id}"));
        }
    }
}
