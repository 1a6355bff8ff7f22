//! `mailfleet db migrate-to postgres://...`: a SQLite history copied into an empty
//! PostgreSQL database in one transaction, then checked inside that transaction (row counts
//! and a checksum of every table's rows on both sides) and committed only when they agree.
//! A target that holds anything of its own is refused before a row is written.
//!
//! Rows go in as they are, stamps and sequence numbers included: the copy's triggers are
//! switched off for the transaction (the totals and stamps they keep are copied too), the
//! identity columns carry on after the largest copied value, and key files recorded relative
//! to the SQLite file's folder are recorded by their absolute path (the copy's key folder is
//! elsewhere).

use super::sql::{params_from_iter, Conn, FromSql, ToSql, Value, ValueRef};
use super::{pg, StoreError};
use crate::config::StoreConfig;
use std::path::Path;

/// Every table, parents before children (PostgreSQL checks foreign keys as rows go in).
const TABLES: &[&str] = &[
    "meta",
    "change_counter",
    "tenants",
    "plans",
    "clusters",
    "approval_rules",
    "requests",
    "request_deps",
    "request_steps",
    "step_tasks",
    "transitions",
    "resources",
    "held_totals",
    "nodes",
    "node_transitions",
    "node_checks",
    "node_heartbeats",
    "node_warmup",
    "warmup_days",
    "audit",
    "events",
    "ip_blacklist_events",
    "alerts",
    "zone_health",
    "dkim_keys",
    "dns_records",
    "sim_dns_records",
    "certificates",
    "acme_accounts",
    "acme_orders",
    "provider_breakers",
    "manual_access",
    "sim_instances",
    "lab_instances",
    "ssh_host_keys",
    "ssh_identity",
    "agent_tokens",
];

/// Tables only SQLite has, or that each database keeps for itself.
const NOT_COPIED: &[&str] = &["sqlite_sequence", "schema_migrations"];

/// Identity columns that carry on after the copy: (table, column).
const IDENTITIES: &[(&str, &str)] = &[
    ("transitions", "id"),
    ("audit", "id"),
    ("events", "seq"),
    ("node_transitions", "seq"),
];

/// Tables the copy inserts in their SQLite rowid order (PostgreSQL's `rowid` identity then
/// keeps that order, which the console's reads follow).
const IN_ROWID_ORDER: &[&str] = &[
    "requests",
    "nodes",
    "node_heartbeats",
    "certificates",
    "dkim_keys",
];

/// What a copy did, table by table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    pub table: String,
    pub rows: u64,
    /// SHA-256 of the table's rows (as a sum of each row's digest: independent of order),
    /// the same on both sides.
    pub checksum: String,
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database at `to`.
pub fn migrate_to(
    from: &Path,
    to: &str,
    cfg: &StoreConfig,
    base_dir: &Path,
) -> Result<Vec<Copied>, StoreError> {
    let src = super::open::connect(from, cfg, true)?;
    let target = pg::Target::parse(to, cfg)?;
    let (dst, _) = pg::open(&target, super::Access::Create)?;
    let dst = dst.ok_or(StoreError::Closed)?;
    check_tables(&src)?;
    dst.execute_batch("BEGIN")?;
    let done = copy_all(&src, &dst, base_dir, target.shown());
    match done {
        Ok(report) => {
            dst.execute_batch("COMMIT")?;
            Ok(report)
        }
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Refuses a source with tables this build does not know how to copy.
fn check_tables(src: &Conn) -> Result<(), StoreError> {
    let names: Vec<String> = super::rows(
        src,
        "SELECT name FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !TABLES.contains(&n.as_str()) && !NOT_COPIED.contains(&n.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(StoreError::Rejected(format!(
            "the SQLite database holds tables this mailfleet does not copy: {unknown:?}"
        )));
    }
    Ok(())
}

fn copy_all(
    src: &Conn,
    dst: &Conn,
    base_dir: &Path,
    shown: &str,
) -> Result<Vec<Copied>, StoreError> {
    // Nothing of the target's own may be there: its data tables are empty (the catalog and
    // the stamp row are what creating the schema put there, and are replaced).
    for t in TABLES {
        if matches!(*t, "meta" | "change_counter") {
            continue;
        }
        let n: i64 = dst.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
        if n > 0 {
            return Err(StoreError::Rejected(format!(
                "{shown} is not empty ({t} holds {n} rows); migrate-to copies into an empty database only"
            )));
        }
    }
    for t in TABLES {
        dst.execute_batch(&format!("ALTER TABLE {t} DISABLE TRIGGER USER"))?;
    }
    dst.execute_batch("DELETE FROM change_counter; DELETE FROM meta")?;
    let mut report = Vec::new();
    for t in TABLES {
        let cols = columns(src, t)?;
        let list = cols.join(", ");
        let order = if IN_ROWID_ORDER.contains(t) {
            " ORDER BY rowid"
        } else {
            ""
        };
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let mut insert = dst.prepare(&format!(
            "INSERT INTO {t} ({list}) OVERRIDING SYSTEM VALUE VALUES ({})",
            marks.join(", ")
        ))?;
        let mut read = src.prepare(&format!("SELECT {list} FROM {t}{order}"))?;
        let mut rows = read.query([])?;
        let (mut n, mut sum) = (0u64, [0u64; 4]);
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(cols.len());
            for (i, c) in cols.iter().enumerate() {
                let v = Value::column_result(r.get_ref(i)?)?;
                values.push(rebase(c, v, base_dir));
            }
            add_digest(&mut sum, &values);
            insert.execute(params_from_iter(values.iter()))?;
            n += 1;
        }
        // Read back what went in, through the same seam, and compare.
        let mut back = dst.prepare(&format!("SELECT {list} FROM {t}"))?;
        let mut rows = back.query([])?;
        let (mut m, mut check) = (0u64, [0u64; 4]);
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                values.push(Value::column_result(r.get_ref(i)?)?);
            }
            add_digest(&mut check, &values);
            m += 1;
        }
        if (n, sum) != (m, check) {
            return Err(StoreError::Rejected(format!(
                "{t}: the copy does not match ({n} rows read, {m} written, checksums {} and {}); nothing was copied",
                hex(&sum),
                hex(&check)
            )));
        }
        report.push(Copied {
            table: (*t).to_owned(),
            rows: n,
            checksum: hex(&sum),
        });
    }
    for (t, c) in IDENTITIES {
        dst.execute_batch(&format!(
            "SELECT setval(pg_get_serial_sequence('{t}', '{c}'), COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)"
        ))?;
    }
    dst.execute(
        "INSERT INTO meta (key, value) VALUES ('app', 'mailfleet') ON CONFLICT (key) DO NOTHING",
        [],
    )?;
    for t in TABLES {
        dst.execute_batch(&format!("ALTER TABLE {t} ENABLE TRIGGER USER"))?;
    }
    Ok(report)
}

/// A table's columns as SQLite has them (PostgreSQL's `rowid` identity is its own).
fn columns(src: &Conn, table: &str) -> Result<Vec<String>, StoreError> {
    super::rows(
        src,
        &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
        [],
        |r| r.get(0),
    )
}

/// A key file recorded relative to the SQLite file's folder, by its absolute path.
fn rebase(column: &str, v: Value, base_dir: &Path) -> Value {
    match v {
        Value::Text(p) if column == "key_file" && !Path::new(&p).is_absolute() => {
            Value::Text(base_dir.join(p).display().to_string())
        }
        v => v,
    }
}

/// Adds one row's SHA-256 to a running sum (so that the order rows come in does not
/// matter). Each value is written with its kind and length, so that no two rows encode
/// alike.
fn add_digest(sum: &mut [u64; 4], values: &[Value]) {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for v in values {
        match ToSql::to_sql(v) {
            ValueRef::Null => h.update(b"n"),
            ValueRef::Integer(i) => {
                h.update(b"i");
                h.update(&i.to_be_bytes());
            }
            ValueRef::Real(f) => {
                h.update(b"r");
                h.update(&f.to_bits().to_be_bytes());
            }
            ValueRef::Text(s) => {
                h.update(b"t");
                h.update(&(s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            ValueRef::Blob(b) => {
                h.update(b"b");
                h.update(&(b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    let d = h.finish();
    for (i, part) in d.as_ref().chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(part);
        sum[i] = sum[i].wrapping_add(u64::from_be_bytes(word));
    }
}

fn hex(sum: &[u64; 4]) -> String {
    sum.iter().map(|w| format!("{w:016x}")).collect()
}
