//! PostgreSQL as the store's engine, for teams that share one: where it differs from
//! SQLite (connecting, the schema and its migrations, locking, hearing of other processes'
//! commits). The transaction scripts are the same (see `sql`).
//!
//! Writes are serialised across every process on the database the way SQLite serialises
//! them on a file: each write transaction first locks the change-stamp row
//! (`change_counter`), which it would lock anyway to stamp what it changes. The store's
//! scripts read, decide and write inside one transaction, as they do on SQLite, and see
//! every earlier commit; stamps are handed out in commit order, which the consoles'
//! incremental reads rely on. Reads never wait for writes (MVCC).

use super::{Access, Conn, Opened, Schema, StoreError, MIGRATIONS, SCHEMA_VERSION};
use crate::config::StoreConfig;
use std::path::PathBuf;
use std::str::FromStr;

/// PostgreSQL's schema, in order; a database starts at the first (the schema as of that
/// SQLite migration) and takes the later ones as they come.
pub(super) const PG_MIGRATIONS: &[(i64, &str)] = &[(
    29,
    include_str!("../../assets/migrations-postgres/0029_schema.sql"),
)];

/// Every process's migrations wait on this advisory lock (an arbitrary constant: "mailfleet").
const MIGRATION_LOCK: i64 = 0x6d61_696c_666c_6565;

/// The channel commits are announced on.
pub const CHANNEL: &str = "mailfleet_changes";

/// Whether `--db` names a PostgreSQL database.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Where the database is and how to log in. The password, if any, comes from the
/// environment variable the config names (`store.password_env`, PGPASSWORD by default),
/// never from the URL: a URL is shown, logged and seen in `ps`.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    /// The URL as it may be shown.
    shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    pub fn parse(url: &str, cfg: &StoreConfig) -> Result<Target, StoreError> {
        let bad = |why: String| StoreError::Rejected(format!("--db: {why}"));
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| bad(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_password().is_some() {
            return Err(bad(format!(
                "the URL holds a password; leave it out and set it in the environment variable {} instead",
                cfg.password_env
            )));
        }
        if let Ok(pw) = std::env::var(&cfg.password_env) {
            if !pw.is_empty() {
                config.password(pw);
            }
        }
        if config.get_dbname().is_none() {
            return Err(bad(
                "the URL names no database (postgres://HOST/DATABASE)".into()
            ));
        }
        config.application_name("mailfleet");
        config.connect_timeout(cfg.busy_timeout.max(std::time::Duration::from_secs(1)));
        Ok(Target {
            config,
            shown: url.to_owned(),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The folder key files go in (see `StoreConfig::key_dir`).
    pub fn key_base(&self, cfg: &StoreConfig) -> PathBuf {
        if let Some(dir) = &cfg.key_dir {
            return std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        }
        let host = match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("postgres");
        let name: String = format!("{host}-{port}-{db}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        crate::config::data_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("postgres")
            .join(name)
    }

    fn client(&self) -> Result<postgres::Client, StoreError> {
        let mut c = self.config.connect(postgres::NoTls).map_err(|e| {
            StoreError::Rejected(format!(
                "cannot connect to {}: {}",
                self.shown,
                super::sql::pg_error(&e)
            ))
        })?;
        // Timestamps are RFC 3339 text, as on SQLite; the few date functions the SQL uses
        // read them in UTC.
        c.batch_execute("SET TIME ZONE 'UTC'")
            .map_err(|e| StoreError::Sql(super::sql::pg_error(&e)))?;
        Ok(c)
    }

    /// A connection for the store's scripts (`read_only`: a reader's, refusing writes).
    pub(super) fn connect(&self, read_only: bool) -> Result<Conn, StoreError> {
        let mut c = self.client()?;
        if read_only {
            c.batch_execute("SET default_transaction_read_only = on")
                .map_err(|e| StoreError::Sql(super::sql::pg_error(&e)))?;
        }
        Ok(Conn::postgres(c))
    }

    /// A connection that listens for commits (see `Listener`).
    pub(super) fn listen(&self) -> Result<postgres::Client, StoreError> {
        let mut c = self.client()?;
        c.batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| StoreError::Sql(super::sql::pg_error(&e)))?;
        Ok(c)
    }
}

/// Refuses a database that holds tables but is not mailfleet's.
fn check_is_ours(conn: &Conn, t: &Target) -> Result<(), StoreError> {
    let tables: Vec<String> = super::rows(
        conn,
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = current_schema() ORDER BY table_name",
        [],
        |r| r.get(0),
    )?;
    if tables.is_empty() {
        return Ok(());
    }
    if tables.iter().any(|t| t == "meta") {
        let app: Option<String> = super::sql::OptionalExtension::optional(conn.query_row(
            "SELECT value FROM meta WHERE key = 'app'",
            [],
            |r| r.get(0),
        ))?;
        if app.as_deref() == Some("mailfleet") {
            return Ok(());
        }
    }
    Err(StoreError::NotADatabase {
        path: t.shown.clone(),
        why: format!(
            "it holds another program's tables ({}); refusing to write to it",
            tables
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Where the database's schema stands against this build.
fn schema_state(conn: &Conn, t: &Target) -> Result<Schema, StoreError> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                         WHERE table_schema = current_schema() AND table_name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(Schema::Empty);
    }
    let applied: Vec<i64> = super::rows(
        conn,
        "SELECT version FROM schema_migrations ORDER BY version",
        [],
        |r| r.get(0),
    )?;
    let newest = applied.last().copied().unwrap_or(0);
    if newest > SCHEMA_VERSION
        || applied
            .iter()
            .any(|v| !MIGRATIONS.iter().any(|(known, _)| known == v))
    {
        return Err(StoreError::TooNew {
            path: t.shown.clone(),
            found: newest,
            known: SCHEMA_VERSION,
        });
    }
    Ok(match newest {
        0 => Schema::Empty,
        n if n < SCHEMA_VERSION => Schema::Behind(n),
        _ => Schema::Current,
    })
}

/// Brings the schema up to date in one transaction, under a lock every process's
/// migrations take: another opening at once waits, then finds the work done.
fn migrate(conn: &Conn, t: &Target) -> Result<Vec<i64>, StoreError> {
    conn.execute_batch("BEGIN")?;
    let applied = (|| -> Result<Vec<i64>, StoreError> {
        conn.query_row(
            "SELECT pg_advisory_xact_lock(?1)::text",
            [MIGRATION_LOCK],
            |_| Ok(()),
        )?;
        check_is_ours(conn, t)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        let state = schema_state(conn, t)?;
        let from = match state {
            Schema::Current => return Ok(Vec::new()),
            Schema::Behind(n) => n,
            Schema::Empty => 0,
        };
        let mut applied = Vec::new();
        for (version, sql) in PG_MIGRATIONS.iter().filter(|(v, _)| *v > from) {
            conn.execute_batch(sql)?;
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                super::sql::params![version, crate::clock::ts(chrono::Utc::now())],
            )?;
            applied.push(*version);
        }
        // The announcements other processes listen for: one per transaction that moved the
        // stamp (PostgreSQL folds a transaction's identical notifications into one).
        conn.execute_batch(&format!(
            "CREATE OR REPLACE FUNCTION announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$;
             DROP TRIGGER IF EXISTS change_counter_announce ON change_counter;
             CREATE TRIGGER change_counter_announce AFTER UPDATE ON change_counter
                 FOR EACH STATEMENT EXECUTE FUNCTION announce_change();"
        ))?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('app', 'mailfleet') ON CONFLICT (key) DO NOTHING",
            [],
        )?;
        Ok(applied)
    })();
    match applied {
        Ok(applied) => {
            conn.execute_batch("COMMIT")?;
            Ok(applied)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Opens the database as `access` says: the writer's connection (when it writes) and what
/// opening did.
pub(super) fn open(t: &Target, access: Access) -> Result<(Option<Conn>, Opened), StoreError> {
    match access {
        Access::Create | Access::Write => {
            let conn = t.connect(false)?;
            let applied = migrate(&conn, t)?;
            let created = applied.first() == PG_MIGRATIONS.first().map(|(v, _)| v);
            Ok((Some(conn), Opened { created, applied }))
        }
        Access::Read | Access::ReadOnly => {
            let conn = t.connect(access == Access::ReadOnly)?;
            check_is_ours(&conn, t)?;
            match (schema_state(&conn, t)?, access) {
                (Schema::Current, _) => Ok((None, Opened::default())),
                (Schema::Behind(_), Access::Read) => {
                    drop(conn);
                    let conn = t.connect(false)?;
                    let applied = migrate(&conn, t)?;
                    Ok((
                        None,
                        Opened {
                            created: false,
                            applied,
                        },
                    ))
                }
                (Schema::Behind(found), _) => Err(StoreError::Behind {
                    path: t.shown.clone(),
                    found,
                    known: SCHEMA_VERSION,
                }),
                (Schema::Empty, _) => Err(StoreError::NotADatabase {
                    path: t.shown.clone(),
                    why: "it holds no mailfleet schema; run `mailfleet init` to create one".into(),
                }),
            }
        }
    }
}

/// Takes the database's write lock for this transaction: the change-stamp row, which every
/// write transaction holds until it commits (see the module's notes).
pub(super) fn lock_for_write(conn: &Conn) -> Result<(), StoreError> {
    conn.prepare_cached("SELECT id FROM change_counter WHERE id = 1 FOR UPDATE")?
        .query_row([], |_| Ok(()))?;
    Ok(())
}

impl super::Store {
    /// PostgreSQL: the role the server authenticated this process as (`session_user`).
    pub async fn session_user(&self) -> Result<String, StoreError> {
        self.read(|c| Ok(c.query_row("SELECT session_user::text", [], |r| r.get(0))?))
            .await
    }
}
