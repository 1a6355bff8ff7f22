//! The store's connection seam: the transaction scripts in `store/` are written once against
//! this small interface (statements, parameters, rows), and it runs them on SQLite (rusqlite,
//! the embedded default) or on PostgreSQL (the synchronous `postgres` client, which, like
//! rusqlite, runs a statement on the calling thread: the store's writer and readers stay
//! closures on their own blocking threads, with no hop to another task per statement).
//!
//! The names follow rusqlite's (`prepare_cached`, `query_row`, `optional`, `params!`), so a
//! script reads the same on both. SQL is written once, in SQLite's spelling of parameters
//! (`?` and `?N`); for PostgreSQL each statement is rewritten to `$N` the first time it is
//! prepared on a connection, and kept prepared. Values are SQLite's five kinds; on
//! PostgreSQL a parameter is encoded as the type the server inferred for it, and a column is
//! decoded from the type it has, so the scripts see the same values on both.

use super::{DbError, DbErrorKind};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

pub type SqlResult<T> = Result<T, DbError>;

/// Which SQL engine a connection talks to, for the few statements spelt differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value as a statement takes it or a row gives it, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    pub fn as_str(&self) -> SqlResult<&'a str> {
        match self {
            ValueRef::Text(s) => Ok(s),
            other => Err(type_error(format!("expected text, found {}", other.kind()))),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Integer(_) => "an integer",
            ValueRef::Real(_) => "a real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "a blob",
        }
    }
}

/// A value owned: for parameter lists built at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Integer(v)
    }
}

fn type_error(msg: String) -> DbError {
    DbError::new(DbErrorKind::Type, msg)
}

/// What can be bound to a parameter.
pub trait ToSql {
    fn to_sql(&self) -> ValueRef<'_>;
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> ValueRef<'_> {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> ValueRef<'_> {
        match self {
            Some(v) => v.to_sql(),
            None => ValueRef::Null,
        }
    }
}

impl<T: ToSql + ?Sized> ToSql for Box<T> {
    fn to_sql(&self) -> ValueRef<'_> {
        (**self).to_sql()
    }
}

impl<T: ToSql + ?Sized> ToSql for std::sync::Arc<T> {
    fn to_sql(&self) -> ValueRef<'_> {
        (**self).to_sql()
    }
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> ValueRef<'_> {
                ValueRef::Integer(i64::from(*self))
            }
        }
    )*};
}
int_to_sql!(i64, i32, i16, i8, u32, u16, u8, bool);

macro_rules! wide_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> ValueRef<'_> {
                // No count, size or day the store keeps comes near 2^63.
                ValueRef::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
wide_to_sql!(usize, u64);

impl ToSql for f64 {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl ToSql for str {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToSql for String {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(s) => ValueRef::Text(s),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl ToSql for ValueRef<'_> {
    fn to_sql(&self) -> ValueRef<'_> {
        *self
    }
}

/// The null value, as a parameter.
#[derive(Debug, Clone, Copy)]
pub struct Null;

impl ToSql for Null {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Null
    }
}

/// What a column can be read as.
pub trait FromSql: Sized {
    fn column_result(v: ValueRef<'_>) -> SqlResult<Self>;
}

impl FromSql for i64 {
    fn column_result(v: ValueRef<'_>) -> SqlResult<i64> {
        match v {
            ValueRef::Integer(i) => Ok(i),
            other => Err(type_error(format!(
                "expected an integer, found {}",
                other.kind()
            ))),
        }
    }
}

macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> SqlResult<$t> {
                let i = i64::column_result(v)?;
                <$t>::try_from(i).map_err(|_| {
                    type_error(format!("{i} is out of range for {}", stringify!($t)))
                })
            }
        }
    )*};
}
int_from_sql!(i32, i16, u64, u32, u16, u8, usize);

impl FromSql for bool {
    fn column_result(v: ValueRef<'_>) -> SqlResult<bool> {
        Ok(i64::column_result(v)? != 0)
    }
}

impl FromSql for f64 {
    fn column_result(v: ValueRef<'_>) -> SqlResult<f64> {
        match v {
            ValueRef::Integer(i) => Ok(i as f64),
            ValueRef::Real(f) => Ok(f),
            other => Err(type_error(format!(
                "expected a real, found {}",
                other.kind()
            ))),
        }
    }
}

impl FromSql for String {
    fn column_result(v: ValueRef<'_>) -> SqlResult<String> {
        v.as_str().map(str::to_owned)
    }
}

impl FromSql for Box<str> {
    fn column_result(v: ValueRef<'_>) -> SqlResult<Box<str>> {
        v.as_str().map(Box::from)
    }
}

impl FromSql for Vec<u8> {
    fn column_result(v: ValueRef<'_>) -> SqlResult<Vec<u8>> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(type_error(format!(
                "expected a blob, found {}",
                other.kind()
            ))),
        }
    }
}

impl FromSql for Value {
    fn column_result(v: ValueRef<'_>) -> SqlResult<Value> {
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(s) => Value::Text(s.to_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn column_result(v: ValueRef<'_>) -> SqlResult<Option<T>> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::column_result(v).map(Some),
        }
    }
}

/// A statement's parameters: an array of values, `params![...]`, or `params_from_iter`.
pub trait Params {
    fn bind<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R;
}

impl Params for [&dyn ToSql; 0] {
    fn bind<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

impl Params for &[&dyn ToSql] {
    fn bind<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(self)
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn bind<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                let refs: [&dyn ToSql; $n] = std::array::from_fn(|i| &self[i] as &dyn ToSql);
                f(&refs)
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// Parameters from a list built at run time.
pub struct ParamsFromIter<T>(Vec<T>);

pub fn params_from_iter<T: ToSql>(values: impl IntoIterator<Item = T>) -> ParamsFromIter<T> {
    ParamsFromIter(values.into_iter().collect())
}

impl<T: ToSql> Params for ParamsFromIter<T> {
    fn bind<R>(&self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let refs: Vec<&dyn ToSql> = self.0.iter().map(|v| v as &dyn ToSql).collect();
        f(&refs)
    }
}

/// A statement's parameters, in order: `params![a, b, c]`.
#[macro_export]
macro_rules! sql_params {
    () => {
        &[] as &[&dyn $crate::store::sql::ToSql]
    };
    ($($v:expr),+ $(,)?) => {
        &[$(&$v as &dyn $crate::store::sql::ToSql),+] as &[&dyn $crate::store::sql::ToSql]
    };
}
pub use crate::sql_params as params;

/// `.optional()` on a one-row read: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> SqlResult<Option<T>>;
}

impl<T> OptionalExtension<T> for SqlResult<T> {
    fn optional(self) -> SqlResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind == DbErrorKind::NoRows => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn no_rows() -> DbError {
    DbError::new(DbErrorKind::NoRows, "the query returned no rows")
}

/// A column by position or by name.
pub trait RowIndex {
    fn lite(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<usize>;
    fn pg(&self, r: &postgres::Row) -> SqlResult<usize>;
}

impl RowIndex for usize {
    fn lite(&self, _: &rusqlite::Row<'_>) -> rusqlite::Result<usize> {
        Ok(*self)
    }
    fn pg(&self, r: &postgres::Row) -> SqlResult<usize> {
        if *self < r.len() {
            Ok(*self)
        } else {
            Err(DbError::new(
                DbErrorKind::Other,
                format!("no column {} (the row has {})", self, r.len()),
            ))
        }
    }
}

impl RowIndex for &str {
    fn lite(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<usize> {
        r.as_ref().column_index(self)
    }
    fn pg(&self, r: &postgres::Row) -> SqlResult<usize> {
        r.columns()
            .iter()
            .position(|c| c.name() == *self)
            .ok_or_else(|| DbError::new(DbErrorKind::Other, format!("no column named {self}")))
    }
}

/// One row of a query's answer.
pub struct Row<'a>(RowInner<'a>);

enum RowInner<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl<'a> Row<'a> {
    /// A column's value, borrowed from the row.
    pub fn get_ref<I: RowIndex>(&self, i: I) -> SqlResult<ValueRef<'a>> {
        match self.0 {
            RowInner::Lite(r) => {
                let at = i.lite(r)?;
                Ok(match r.get_ref(at)? {
                    rusqlite::types::ValueRef::Null => ValueRef::Null,
                    rusqlite::types::ValueRef::Integer(v) => ValueRef::Integer(v),
                    rusqlite::types::ValueRef::Real(v) => ValueRef::Real(v),
                    rusqlite::types::ValueRef::Text(t) => ValueRef::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| type_error(format!("column {at}: {e}")))?,
                    ),
                    rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
                })
            }
            RowInner::Pg(r) => {
                let at = i.pg(r)?;
                let raw: PgRaw<'a> = r.try_get(at).map_err(|e| pg_error(&e))?;
                Ok(raw.0)
            }
        }
    }

    /// A column's value as `T`.
    pub fn get<I: RowIndex, T: FromSql>(&self, i: I) -> SqlResult<T> {
        let v = self.get_ref(i)?;
        T::column_result(v)
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        match self.0 {
            RowInner::Lite(r) => r.as_ref().column_count(),
            RowInner::Pg(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection to the store's database.
pub struct Conn(ConnInner);

enum ConnInner {
    Lite(rusqlite::Connection),
    /// Dropped by `Conn`'s own `Drop` (see there).
    Pg(std::mem::ManuallyDrop<Box<PgConn>>),
}

impl Drop for Conn {
    /// The `postgres` client runs a small runtime of its own and waits on it to close, which
    /// tokio forbids on a runtime's thread: a PostgreSQL connection let go there (a store
    /// dropped in async code) is closed on a thread of its own.
    fn drop(&mut self) {
        if let ConnInner::Pg(p) = &mut self.0 {
            // SAFETY: taken once, here, and `self.0` is not used again.
            let p = unsafe { std::mem::ManuallyDrop::take(p) };
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("mailfleet-pg-close".into())
                    .spawn(move || drop(p));
            } else {
                drop(p);
            }
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            ConnInner::Lite(_) => "Conn(sqlite)",
            ConnInner::Pg(_) => "Conn(postgres)",
        })
    }
}

impl From<rusqlite::Connection> for Conn {
    fn from(c: rusqlite::Connection) -> Conn {
        Conn(ConnInner::Lite(c))
    }
}

impl Conn {
    /// A PostgreSQL connection, from a connected client.
    pub fn postgres(client: postgres::Client) -> Conn {
        Conn(ConnInner::Pg(std::mem::ManuallyDrop::new(Box::new(
            PgConn {
                client: RefCell::new(client),
                prepared: RefCell::new(HashMap::new()),
                in_tx: Cell::new(false),
                changes: Cell::new(0),
            },
        ))))
    }

    pub fn dialect(&self) -> Dialect {
        match self.0 {
            ConnInner::Lite(_) => Dialect::Sqlite,
            ConnInner::Pg(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, its file).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            ConnInner::Lite(c) => Some(c),
            ConnInner::Pg(_) => None,
        }
    }

    /// The PostgreSQL client underneath, for what only PostgreSQL has (LISTEN, COPY).
    pub fn postgres_client(&self) -> Option<std::cell::RefMut<'_, postgres::Client>> {
        match &self.0 {
            ConnInner::Lite(_) => None,
            ConnInner::Pg(p) => Some(p.client.borrow_mut()),
        }
    }

    /// Prepares `sql`, keeping it prepared for the next time it is asked for.
    pub fn prepare_cached(&self, sql: &str) -> SqlResult<Stmt<'_>> {
        match &self.0 {
            ConnInner::Lite(c) => Ok(Stmt(StmtInner::LiteCached(c.prepare_cached(sql)?))),
            ConnInner::Pg(p) => p.prepare(sql, true),
        }
    }

    /// Prepares `sql` once (built at run time, or seldom run).
    pub fn prepare(&self, sql: &str) -> SqlResult<Stmt<'_>> {
        match &self.0 {
            ConnInner::Lite(c) => Ok(Stmt(StmtInner::Lite(c.prepare(sql)?))),
            ConnInner::Pg(p) => p.prepare(sql, false),
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> SqlResult<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs statements separated by semicolons, without parameters.
    pub fn execute_batch(&self, sql: &str) -> SqlResult<()> {
        match &self.0 {
            ConnInner::Lite(c) => Ok(c.execute_batch(sql)?),
            ConnInner::Pg(p) => p.batch(sql),
        }
    }

    /// Runs a query and maps its first row; no row is an error (see `optional`).
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> SqlResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> SqlResult<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Whether the connection is gone (PostgreSQL: closed by the server or the network);
    /// an SQLite connection never is.
    pub fn is_broken(&self) -> bool {
        match &self.0 {
            ConnInner::Lite(_) => false,
            ConnInner::Pg(p) => p.client.borrow().is_closed(),
        }
    }

    /// Whether no transaction is open.
    pub fn is_autocommit(&self) -> bool {
        match &self.0 {
            ConnInner::Lite(c) => c.is_autocommit(),
            ConnInner::Pg(p) => !p.in_tx.get(),
        }
    }

    /// Rows changed through this connection since it opened.
    pub fn total_changes(&self) -> u64 {
        match &self.0 {
            ConnInner::Lite(c) => c.total_changes(),
            ConnInner::Pg(p) => p.changes.get(),
        }
    }
}

/// A prepared statement.
pub struct Stmt<'c>(StmtInner<'c>);

enum StmtInner<'c> {
    LiteCached(rusqlite::CachedStatement<'c>),
    Lite(rusqlite::Statement<'c>),
    Pg {
        conn: &'c PgConn,
        stmt: postgres::Statement,
        writes: bool,
    },
}

/// Binds our parameters to a rusqlite statement without copying them.
struct Lite<'a>(&'a dyn ToSql);

impl rusqlite::ToSql for Lite<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef as V;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            match self.0.to_sql() {
                ValueRef::Null => V::Null,
                ValueRef::Integer(i) => V::Integer(i),
                ValueRef::Real(f) => V::Real(f),
                ValueRef::Text(s) => V::Text(s.as_bytes()),
                ValueRef::Blob(b) => V::Blob(b),
            },
        ))
    }
}

fn lite_params<'a>(
    values: &'a [&'a dyn ToSql],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = Lite<'a>>> {
    rusqlite::params_from_iter(values.iter().map(|v| Lite(*v)))
}

impl<'c> Stmt<'c> {
    fn lite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.0 {
            StmtInner::LiteCached(s) => Some(s),
            StmtInner::Lite(s) => Some(s),
            StmtInner::Pg { .. } => None,
        }
    }

    /// Runs the statement; returns how many rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> SqlResult<usize> {
        if let Some(s) = self.lite() {
            return params
                .bind(|v| s.execute(lite_params(v)))
                .map_err(Into::into);
        }
        match &self.0 {
            StmtInner::Pg { conn, stmt, .. } => {
                let n = params.bind(|v| conn.execute(stmt, v))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
            _ => unreachable!("a SQLite statement returned above"),
        }
    }

    /// Runs the query and maps its first row; no row is an error (see `optional`).
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> SqlResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> SqlResult<T>,
    {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(no_rows()),
        }
    }

    /// Whether the query returns any row.
    pub fn exists<P: Params>(&mut self, params: P) -> SqlResult<bool> {
        let mut rows = self.query(params)?;
        Ok(rows.next()?.is_some())
    }

    /// Runs the query; its rows one by one.
    pub fn query<P: Params>(&mut self, params: P) -> SqlResult<Rows<'_>> {
        match &mut self.0 {
            StmtInner::LiteCached(s) => {
                let rows = params.bind(|v| s.query(lite_params(v)))?;
                Ok(Rows(RowsInner::Lite(rows)))
            }
            StmtInner::Lite(s) => {
                let rows = params.bind(|v| s.query(lite_params(v)))?;
                Ok(Rows(RowsInner::Lite(rows)))
            }
            StmtInner::Pg { conn, stmt, writes } => {
                let rows = params.bind(|v| conn.query(stmt, v, *writes))?;
                Ok(Rows(RowsInner::Pg {
                    rows: rows.into_iter(),
                    current: None,
                }))
            }
        }
    }

    /// Runs the query; its rows mapped by `f`.
    pub fn query_map<T, P, F>(&mut self, params: P, f: F) -> SqlResult<MappedRows<'_, F>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> SqlResult<T>,
    {
        Ok(MappedRows {
            rows: self.query(params)?,
            f,
        })
    }

    /// How many parameters the statement takes.
    pub fn parameter_count(&self) -> usize {
        match &self.0 {
            StmtInner::LiteCached(s) => s.parameter_count(),
            StmtInner::Lite(s) => s.parameter_count(),
            StmtInner::Pg { stmt, .. } => stmt.params().len(),
        }
    }
}

/// A query's rows.
pub struct Rows<'s>(RowsInner<'s>);

enum RowsInner<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg {
        rows: std::vec::IntoIter<postgres::Row>,
        current: Option<postgres::Row>,
    },
}

impl Rows<'_> {
    /// The next row, or `None` after the last.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> SqlResult<Option<Row<'_>>> {
        match &mut self.0 {
            RowsInner::Lite(rows) => Ok(rows.next()?.map(|r| Row(RowInner::Lite(r)))),
            RowsInner::Pg { rows, current } => {
                *current = rows.next();
                Ok(current.as_ref().map(|r| Row(RowInner::Pg(r))))
            }
        }
    }
}

/// A query's rows, each mapped.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    f: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> SqlResult<T>,
{
    type Item = SqlResult<T>;

    fn next(&mut self) -> Option<SqlResult<T>> {
        match self.rows.next() {
            Ok(Some(r)) => Some((self.f)(&r)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

// ---- PostgreSQL ----

struct PgConn {
    client: RefCell<postgres::Client>,
    /// Statements prepared on this connection, by their SQL as the scripts wrote it.
    prepared: RefCell<HashMap<Box<str>, (postgres::Statement, bool)>>,
    /// Whether a transaction is open (BEGIN seen, COMMIT or ROLLBACK not yet).
    in_tx: Cell<bool>,
    /// Rows changed through this connection (`Conn::total_changes`).
    changes: Cell<u64>,
}

impl PgConn {
    fn prepare(&self, sql: &str, keep: bool) -> SqlResult<Stmt<'_>> {
        if let Some((stmt, writes)) = self.prepared.borrow().get(sql) {
            return Ok(Stmt(StmtInner::Pg {
                conn: self,
                stmt: stmt.clone(),
                writes: *writes,
            }));
        }
        let text = to_postgres(sql);
        let stmt = self
            .client
            .borrow_mut()
            .prepare(&text)
            .map_err(|e| pg_error(&e))?;
        let writes = writes(sql);
        if keep {
            self.prepared
                .borrow_mut()
                .insert(Box::from(sql), (stmt.clone(), writes));
        }
        Ok(Stmt(StmtInner::Pg {
            conn: self,
            stmt,
            writes,
        }))
    }

    fn track(&self, sql: &str) {
        match first_word(sql).as_str() {
            "BEGIN" | "START" => self.in_tx.set(true),
            "COMMIT" | "END" => self.in_tx.set(false),
            // `ROLLBACK TO x` leaves the transaction open.
            "ROLLBACK" if !sql.to_ascii_uppercase().contains(" TO ") => self.in_tx.set(false),
            _ => {}
        }
    }

    fn batch(&self, sql: &str) -> SqlResult<()> {
        let r = self.client.borrow_mut().batch_execute(sql);
        match r {
            Ok(()) => {
                // Only a lone statement can be BEGIN, COMMIT or ROLLBACK as far as the
                // store goes (a script's function bodies say BEGIN and END too).
                let lone = sql.trim().trim_end_matches(';');
                if !lone.contains(';') {
                    self.track(lone);
                }
                Ok(())
            }
            Err(e) => {
                // A failed COMMIT or ROLLBACK ends the transaction (or the connection is
                // gone with it); a failed BEGIN leaves none.
                let up = sql.trim_start().to_ascii_uppercase();
                if up.starts_with("COMMIT")
                    || up.starts_with("END")
                    || (up.starts_with("ROLLBACK") && !up.contains(" TO "))
                {
                    self.in_tx.set(false);
                }
                Err(pg_error(&e))
            }
        }
    }

    fn execute(&self, stmt: &postgres::Statement, values: &[&dyn ToSql]) -> SqlResult<u64> {
        let n = with_pg_params(values, |refs| self.client.borrow_mut().execute(stmt, refs))?;
        self.changes.set(self.changes.get() + n);
        Ok(n)
    }

    fn query(
        &self,
        stmt: &postgres::Statement,
        values: &[&dyn ToSql],
        writes: bool,
    ) -> SqlResult<Vec<postgres::Row>> {
        let rows = with_pg_params(values, |refs| self.client.borrow_mut().query(stmt, refs))?;
        if writes {
            self.changes.set(self.changes.get() + rows.len() as u64);
        }
        Ok(rows)
    }
}

/// Whether a statement changes rows (its `RETURNING` rows are counted as changes).
fn writes(sql: &str) -> bool {
    matches!(
        first_word(sql).as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "WITH"
    )
}

/// A statement's first keyword, upper-cased.
fn first_word(sql: &str) -> String {
    sql.trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Runs `f` with `values` as the `postgres` client takes parameters.
fn with_pg_params<T>(
    values: &[&dyn ToSql],
    f: impl FnOnce(&[&(dyn postgres::types::ToSql + Sync)]) -> Result<T, postgres::Error>,
) -> SqlResult<T> {
    let params: Vec<PgParam<'_>> = values.iter().map(|v| PgParam(v.to_sql())).collect();
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect();
    f(&refs).map_err(|e| pg_error(&e))
}

/// A statement as the scripts write it (SQLite's spelling), as PostgreSQL takes it:
/// - `?` and `?N` parameters become `$N` (a bare `?` takes the number after the largest so
///   far, as in SQLite);
/// - `IS NOT ?` and `IS ?` (SQLite compares any value so) become `IS [NOT] DISTINCT FROM`;
/// - `LIKE` becomes `ILIKE` (SQLite's LIKE ignores ASCII case);
/// - `json_each(` becomes `json_array_elements(` (the store reads only arrays with it; both
///   name the element `value`);
/// - an `INDEXED BY name` hint (SQLite's planner only) is dropped.
///
/// Quoted text, quoted names and comments are left as they are.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let mut code = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let quoted_end = match c {
            '\'' | '"' => Some(c),
            '-' if chars.peek() == Some(&'-') => Some('\n'),
            '/' if chars.peek() == Some(&'*') => Some('/'),
            _ => None,
        };
        match quoted_end {
            None => code.push(c),
            Some(end) => {
                out.push_str(&code_to_postgres(&code, &mut largest));
                code.clear();
                out.push(c);
                let mut last = c;
                if c == '/' {
                    // Skip the `*` so that `/*/` does not end the comment.
                    if let Some(star) = chars.next() {
                        out.push(star);
                    }
                    last = ' ';
                }
                for d in chars.by_ref() {
                    out.push(d);
                    let done = match end {
                        '/' => last == '*' && d == '/',
                        e => d == e,
                    };
                    if done {
                        break;
                    }
                    last = d;
                }
            }
        }
    }
    out.push_str(&code_to_postgres(&code, &mut largest));
    out
}

/// `to_postgres` on a stretch of SQL outside quotes and comments.
fn code_to_postgres(code: &str, largest: &mut u32) -> String {
    let mut text = code
        .replace(" IS NOT ?", " IS DISTINCT FROM ?")
        .replace(" IS ?", " IS NOT DISTINCT FROM ?")
        .replace(" LIKE ", " ILIKE ")
        .replace("json_each(", "json_array_elements(");
    while let Some(at) = text.find(" INDEXED BY ") {
        let rest = &text[at + " INDEXED BY ".len()..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        text.replace_range(at..at + " INDEXED BY ".len() + name_len, "");
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() {
                digits.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let n = digits.parse::<u32>().unwrap_or(*largest + 1);
        *largest = (*largest).max(n);
        out.push('$');
        out.push_str(&n.to_string());
    }
    out
}

/// One parameter, encoded as the type PostgreSQL inferred for it.
#[derive(Debug)]
struct PgParam<'a>(ValueRef<'a>);

impl postgres::types::ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, ToSql as P, Type};
        let bad = |what: &str| -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {what} to a parameter of type {ty}").into()
        };
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => P::to_sql(&i, ty, out),
                Type::INT4 => {
                    let v = i32::try_from(i).map_err(|_| bad("a large integer"))?;
                    P::to_sql(&v, ty, out)
                }
                Type::INT2 => {
                    let v = i16::try_from(i).map_err(|_| bad("a large integer"))?;
                    P::to_sql(&v, ty, out)
                }
                Type::FLOAT8 => P::to_sql(&(i as f64), ty, out),
                Type::FLOAT4 => P::to_sql(&(i as f32), ty, out),
                Type::BOOL => P::to_sql(&(i != 0), ty, out),
                Type::NUMERIC => Ok(numeric_from_i64(i, out)),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    P::to_sql(&i.to_string().as_str(), &Type::TEXT, out)
                }
                _ => Err(bad("an integer")),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => P::to_sql(&f, ty, out),
                Type::FLOAT4 => P::to_sql(&(f as f32), ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => {
                    P::to_sql(&f.to_string().as_str(), &Type::TEXT, out)
                }
                _ => Err(bad("a real")),
            },
            ValueRef::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    P::to_sql(&s, &Type::TEXT, out)
                }
                Type::BYTEA => P::to_sql(&s.as_bytes(), ty, out),
                Type::JSON => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(bad("text")),
            },
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => P::to_sql(&b, ty, out),
                _ => Err(bad("a blob")),
            },
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// An integer in PostgreSQL's binary NUMERIC form.
fn numeric_from_i64(i: i64, out: &mut bytes::BytesMut) -> postgres::types::IsNull {
    use bytes::BufMut;
    let negative = i < 0;
    let mut n = i.unsigned_abs();
    let mut digits = Vec::new();
    while n > 0 {
        digits.push((n % 10_000) as i16);
        n /= 10_000;
    }
    digits.reverse();
    out.put_i16(digits.len() as i16);
    out.put_i16(digits.len().saturating_sub(1) as i16);
    out.put_u16(if negative { 0x4000 } else { 0 });
    out.put_i16(0);
    for d in digits {
        out.put_i16(d);
    }
    postgres::types::IsNull::No
}

/// A column's value, decoded from whatever type it has.
struct PgRaw<'a>(ValueRef<'a>);

impl<'a> postgres::types::FromSql<'a> for PgRaw<'a> {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<PgRaw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        Ok(PgRaw(match *ty {
            Type::INT8 => ValueRef::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => ValueRef::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => ValueRef::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::OID => ValueRef::Integer(i64::from(u32::from_sql(ty, raw)?)),
            Type::BOOL => ValueRef::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => ValueRef::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => ValueRef::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => ValueRef::Blob(raw),
            _ => ValueRef::Text(std::str::from_utf8(raw)?),
        }))
    }

    fn from_sql_null(
        _: &postgres::types::Type,
    ) -> Result<PgRaw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgRaw(ValueRef::Null))
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
}

/// A binary NUMERIC as an integer where it is one (sums of integers are NUMERIC in
/// PostgreSQL), else as a real.
fn numeric<'a>(raw: &[u8]) -> Result<ValueRef<'a>, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a NUMERIC value cut short".into())
    };
    let (count, weight, sign) = (word(0)?, word(1)?, word(2)? as u16);
    if sign == 0xC000 {
        return Ok(ValueRef::Real(f64::NAN));
    }
    let mut int: i128 = 0;
    let mut real = 0f64;
    let mut whole = true;
    for k in 0..count.max(0) as usize {
        let d = i128::from(word(4 + k)?);
        let power = i32::from(weight) - k as i32;
        real += d as f64 * 10_000f64.powi(power);
        if power >= 0 {
            int = int.saturating_add(d.saturating_mul(10_000i128.saturating_pow(power as u32)));
        } else if d != 0 {
            whole = false;
        }
    }
    let negative = sign == 0x4000;
    if whole {
        let v = if negative { -int } else { int };
        if let Ok(v) = i64::try_from(v) {
            return Ok(ValueRef::Integer(v));
        }
    }
    Ok(ValueRef::Real(if negative { -real } else { real }))
}

/// A PostgreSQL error in mailfleet's terms: the kind from its SQLSTATE, and its words
/// (the server's message and detail, never the connection's settings).
pub(crate) fn pg_error(e: &postgres::Error) -> DbError {
    use postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let kind = if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            DbErrorKind::Busy
        } else if code.code().starts_with("23") {
            DbErrorKind::Constraint
        } else if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
            DbErrorKind::Full
        } else if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            DbErrorKind::Lost
        } else {
            DbErrorKind::Other
        };
        let mut msg = db.message().to_owned();
        if let Some(d) = db.detail() {
            msg.push_str(": ");
            msg.push_str(d);
        }
        return DbError::new(kind, msg);
    }
    let text = e.to_string();
    let kind = if e.is_closed() {
        DbErrorKind::Lost
    } else if text.contains("error deserializing") || text.contains("error serializing") {
        DbErrorKind::Type
    } else {
        DbErrorKind::Lost
    };
    let why = std::error::Error::source(e)
        .map(|s| format!("{text}: {s}"))
        .unwrap_or(text);
    DbError::new(kind, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_respelt_for_postgres_outside_quotes_and_comments() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE a = ?1 AND b = ? AND c IN (?, ?3)"),
            "SELECT a FROM t WHERE a = $1 AND b = $2 AND c IN ($3, $3)"
        );
        assert_eq!(
            to_postgres("SELECT '?', \"a?\" -- why?\n, ? /* ?1 */ , ?12"),
            "SELECT '?', \"a?\" -- why?\n, $1 /* ?1 */ , $12"
        );
        assert_eq!(
            to_postgres(
                "SELECT x FROM r INDEXED BY r_changed WHERE k IS NOT ? AND j IS ? AND n LIKE ?"
            ),
            "SELECT x FROM r WHERE k IS DISTINCT FROM $1 AND j IS NOT DISTINCT FROM $2 AND n ILIKE $3"
        );
        assert_eq!(
            to_postgres("SELECT ' LIKE ?' /*/ ? */, ?"),
            "SELECT ' LIKE ?' /*/ ? */, $1"
        );
    }

    #[test]
    fn numeric_sums_read_back_as_integers_and_fractions_as_reals() {
        let mut buf = bytes::BytesMut::new();
        for i in [0i64, 7, 10_000, 123_456_789, -42, i64::MAX, i64::MIN + 1] {
            buf.clear();
            numeric_from_i64(i, &mut buf);
            assert_eq!(numeric(&buf).expect("decodes"), ValueRef::Integer(i), "{i}");
        }
        // 1.5: one digit before the point (weight 0), 5000 after; dscale 1.
        let half = [0u8, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&half).expect("decodes"), ValueRef::Real(1.5));
    }

    #[test]
    fn sqlite_reads_and_writes_through_the_seam() {
        let c = Conn::from(rusqlite::Connection::open_in_memory().expect("open"));
        c.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB)")
            .expect("table");
        let blob = vec![1u8, 2, 3];
        let n = c
            .execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
                params![7i64, "seven", 7.5, blob],
            )
            .expect("insert");
        assert_eq!(n, 1);
        c.execute("INSERT INTO t (a) VALUES (?)", [None::<i64>])
            .expect("null");
        let (a, b, f, d): (i64, String, f64, Vec<u8>) = c
            .query_row("SELECT a, b, c, d FROM t WHERE a = ?", [7], |r| {
                Ok((r.get(0)?, r.get("b")?, r.get(2)?, r.get(3)?))
            })
            .expect("row");
        assert_eq!((a, b.as_str(), f, d), (7, "seven", 7.5, blob));
        let none = c
            .query_row("SELECT a FROM t WHERE a = 99", [], |r| r.get::<_, i64>(0))
            .optional()
            .expect("read");
        assert_eq!(none, None);
        let e = c
            .query_row("SELECT b FROM t WHERE a = 7", [], |r| r.get::<_, i64>(0))
            .expect_err("text is not an integer");
        assert_eq!(e.kind, DbErrorKind::Type);
        let all: Vec<Option<i64>> = c
            .prepare("SELECT a FROM t ORDER BY a")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<SqlResult<_>>()
            .expect("rows");
        assert_eq!(all, vec![None, Some(7)]);
    }
}
