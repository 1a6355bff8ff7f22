//! PostgreSQL for the tests (issue 17): a database of the test's own on a real server.
//!
//! The server is the one at `MAILFLEET_TEST_PG` (a `postgres://` URL to an account that may
//! create databases), else one answering at 127.0.0.1:5432 as `postgres` with trust auth (as
//! this project's CI machines run), else a throwaway server this process starts: `initdb`
//! in a temp dir and `postgres` on a free loopback port (run as the `postgres` account when
//! the tests run as root, since PostgreSQL refuses root). Each [`TestDb`] is a fresh
//! database with a random name, dropped (connections and all) when it goes.
//!
//! Included by `tests/*.rs` as `#[path = "support/postgres.rs"] mod postgres;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "apt-get install -y postgresql";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A server the tests can make databases on.
pub struct PgServer {
    /// `postgres://USER@HOST:PORT` with no database: an account that may create them.
    base: String,
    /// A server of our own: its process and data dir, gone with this value.
    own: Option<(Child, tempfile::TempDir)>,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.own {
            stop(child);
        }
    }
}

/// Immediate shutdown (SIGQUIT): the postmaster ends its backends and then itself.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill only sends a signal to the server this process started.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The shared server's process id, when it is one this process started: stopped at exit
/// (a static is never dropped).
static SHARED_OWN: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);

extern "C" fn stop_shared_at_exit() {
    if let Ok(Some(pid)) = SHARED_OWN.lock().map(|g| *g) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: as in `stop`; at exit there is no one left to wait for it.
            unsafe {
                libc::kill(pid, libc::SIGQUIT);
            }
        }
    }
}

impl PgServer {
    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.base)
    }

    fn admin(&self) -> Result<postgres::Client, String> {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("postgres at {}: {e}", self.base))
    }

    /// The process's shared server (found or started once). `Ok(None)` after a "skipping"
    /// line when there is none and none can be started, unless `MAILFLEET_REQUIRE_SERVICES`
    /// is "1": then that is an error saying what to install.
    pub fn shared() -> Result<Option<&'static PgServer>, String> {
        static SERVER: OnceLock<Result<Option<PgServer>, String>> = OnceLock::new();
        SERVER
            .get_or_init(PgServer::find_or_start)
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    fn find_or_start() -> Result<Option<PgServer>, String> {
        if let Ok(url) = std::env::var("MAILFLEET_TEST_PG") {
            let server = PgServer {
                base: url.trim_end_matches('/').to_string(),
                own: None,
            };
            server.admin()?;
            return Ok(Some(server));
        }
        let local = PgServer {
            base: "postgres://postgres@127.0.0.1:5432".into(),
            own: None,
        };
        if local.admin().is_ok() {
            return Ok(Some(local));
        }
        let own = PgServer::start_own()?;
        if let Some((child, _)) = own.as_ref().and_then(|s| s.own.as_ref()) {
            if let Ok(mut g) = SHARED_OWN.lock() {
                *g = Some(child.id());
            }
            // SAFETY: registers a plain function with no captured state.
            unsafe {
                libc::atexit(stop_shared_at_exit);
            }
        }
        Ok(own)
    }

    /// Starts a throwaway server: `initdb` in a temp dir, `postgres` on a free port of
    /// 127.0.0.1, trust auth, no other listener (no Unix socket outside the temp dir).
    pub fn start_own() -> Result<Option<PgServer>, String> {
        let Some(bin) = find_bin_dir() else {
            if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
                return Err(format!(
                    "PostgreSQL not installed and MAILFLEET_REQUIRE_SERVICES=1: run `{INSTALL_HINT}`"
                ));
            }
            eprintln!("skipping: PostgreSQL not installed (install with `{INSTALL_HINT}`)");
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("mailfleet-pg-")
            .tempdir()
            .map_err(|e| format!("postgres: temp dir: {e}"))?;
        let data = dir.path().join("data");
        // PostgreSQL will not run as root: as root, the server runs as `postgres` (its
        // own process, so that stopping it stops the server).
        // SAFETY: geteuid only reads the process's user id.
        let as_root = unsafe { libc::geteuid() } == 0;
        let ids = if as_root {
            chown_to_postgres(dir.path())?;
            Some(postgres_ids()?)
        } else {
            None
        };
        let run = |program: &Path| -> Command {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new(program);
            if let Some((uid, gid)) = ids {
                c.uid(uid).gid(gid).current_dir("/");
            }
            c
        };
        let out = run(&bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(|e| format!("postgres: initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "postgres: initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("postgres: free port: {e}"))?
            .port();
        let log = std::fs::File::create(dir.path().join("postgres.log"))
            .map_err(|e| format!("postgres: log: {e}"))?;
        let child = run(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: start: {e}"))?;
        let server = PgServer {
            base: format!("postgres://postgres@127.0.0.1:{port}"),
            own: Some((child, dir)),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match server.admin() {
                Ok(_) => return Ok(Some(server)),
                Err(e) if Instant::now() > deadline => {
                    let log = server
                        .own
                        .as_ref()
                        .and_then(|(_, d)| {
                            std::fs::read_to_string(d.path().join("postgres.log")).ok()
                        })
                        .unwrap_or_default();
                    return Err(format!("postgres did not start: {e}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A new empty database of the caller's own on this server.
    pub fn database(&'static self) -> Result<TestDb, String> {
        let name = format!("mailfleet_test_{}", uuid::Uuid::now_v7().simple());
        self.admin()?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("postgres: create database {name}: {e}"))?;
        Ok(TestDb { server: self, name })
    }
}

/// A database of one test's own; dropped with it.
pub struct TestDb {
    server: &'static PgServer,
    pub name: String,
}

impl TestDb {
    pub fn url(&self) -> String {
        self.server.url(&self.name)
    }

    /// A database of its own on the shared server; `Ok(None)` when there is no server
    /// (see [`PgServer::shared`]).
    pub fn new() -> Result<Option<TestDb>, String> {
        match PgServer::shared()? {
            Some(server) => server.database().map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = self.server.admin() {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Debian keeps the server's programs in a versioned directory.
fn find_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().or_else(|| {
        // Elsewhere, on the PATH.
        let out = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        path.parent().map(Path::to_path_buf)
    })
}

/// The `postgres` account's user and group ids.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("postgres: id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "postgres: no `postgres` account to run the server as".to_string())
    };
    Ok((id("-u")?, id("-g")?))
}

fn chown_to_postgres(dir: &Path) -> Result<(), String> {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir)
        .status()
        .map_err(|e| format!("postgres: chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("postgres: chown of its temp dir failed (is there a `postgres` account?)".into())
    }
}
