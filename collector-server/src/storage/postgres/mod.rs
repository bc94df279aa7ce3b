//! The shared metadata store: PostgreSQL 15 or newer, for several collectors on one database.
//!
//! The `postgres` client blocks, and blocking inside a tokio runtime panics; the traits are
//! called from tokio workers and `spawn_blocking` threads alike. So the connections live on
//! threads of their own ([`pool`]): a call sends its work there and waits for the answer. A
//! connection found dead is opened again, so a restarted server costs at most the call that
//! was on it. Writes are safe between processes by the database's constraints (primary and
//! unique keys, `ON CONFLICT`), never by a lock in this process.
//!
//! The schema is SQLite's ([`super::sqlite`]) in PostgreSQL's types: times as RFC 3339 text,
//! JSON as text, ids exposed to callers as `BIGINT` identities, and every text column
//! `COLLATE "C"`, so that text compares and sorts as bytes, as in SQLite. PostgreSQL text
//! cannot hold U+0000: text written is passed through [`Txt`], which stores it as U+FFFD;
//! custody records, whose bytes are signed, are refused instead (docs/decisions.md, #16).

mod cases;
mod collections;
mod console;
mod containment;
mod custody;
mod events;
mod hosts;
mod items;
mod migrate;
mod pool;
mod readiness;
mod searches;
mod sequences;
mod timeline;
mod tokens;

use super::{Result, StorageError};
use crate::storage::timeline_sql::Value;
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, Row};

pub use pool::POOL_SIZE;

/// The metadata store on a PostgreSQL database.
pub struct Postgres {
    pool: pool::Pool,
}

/// Held while the schema is created, so that collectors starting together take turns.
const SCHEMA_LOCK: i64 = 0x6361_6972_6e5f_7331; // "cairn_s1"

impl Postgres {
    /// Connect to the database at `url` (`postgres://user@host:port/db`) and create the schema
    /// where it is absent. Several processes may do this at once.
    pub fn connect(url: &str) -> Result<Postgres> {
        let pool = pool::Pool::start(url)?;
        pool.run(create_schema)?;
        Ok(Postgres { pool })
    }

    /// Run `f` on one of the pool's connections and wait for its answer.
    fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.pool.run(f)
    }
}

fn create_schema(c: &mut Client) -> Result<()> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    for schema in SCHEMAS {
        tx.batch_execute(&collate_c(schema))?;
    }
    // Free text is a case-insensitive contains: trigrams serve it where the extension can be
    // had (Debian's postgresql ships pg_trgm; it is a trusted extension since PostgreSQL 13).
    let mut sp = tx.savepoint("trgm")?;
    match sp.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_trgm;
         CREATE INDEX IF NOT EXISTS timeline_message_trgm ON timeline USING gin (message gin_trgm_ops);",
    ) {
        Ok(()) => sp.commit()?,
        Err(e) => {
            tracing::warn!("PostgreSQL: no pg_trgm ({e}); free-text searches scan the timeline");
            sp.rollback()?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every group's tables, in the order their references need.
const SCHEMAS: &[&str] = &[
    tokens::SCHEMA,
    hosts::SCHEMA,
    collections::SCHEMA,
    items::SCHEMA,
    events::SCHEMA,
    timeline::SCHEMA,
    searches::SCHEMA,
    custody::SCHEMA,
    readiness::SCHEMA,
    console::SCHEMA,
    cases::SCHEMA,
    containment::SCHEMA,
    sequences::SCHEMA,
];

/// Text compares as bytes, as SQLite's `BINARY`: the schemas write `TEXT`, the database gets
/// `TEXT COLLATE "C"` whatever its default collation.
fn collate_c(schema: &str) -> String {
    schema.replace(" TEXT", " TEXT COLLATE \"C\"")
}

impl From<postgres::Error> for StorageError {
    fn from(e: postgres::Error) -> Self {
        let db = e.as_db_error();
        match e.code() {
            // "a row of custody: Key (collection_id, seq)=(c, 0)" (the error adds "already exists").
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StorageError::Conflict(format!(
                "a row of {}: {}",
                db.and_then(|d| d.table()).unwrap_or("a table"),
                db.and_then(|d| d.detail())
                    .unwrap_or_else(|| db.map(|d| d.message()).unwrap_or(""))
                    .trim_end_matches(" already exists.")
            )),
            Some(c) if *c == SqlState::DISK_FULL => {
                StorageError::Full(format!("PostgreSQL: {}", PgError(e)))
            }
            _ => StorageError::Backend {
                what: "PostgreSQL",
                source: Box::new(PgError(e)),
            },
        }
    }
}

/// A client error that says what the server said (`postgres::Error` alone shows `db error`).
#[derive(Debug)]
struct PgError(postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(d) => {
                write!(f, "{} {}: {}", d.severity(), d.code().code(), d.message())?;
                if let Some(x) = d.detail() {
                    write!(f, " ({x})")?;
                }
                Ok(())
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A deadlock or a serialisation failure between collectors: the transaction was rolled back
/// whole and may run again.
fn retryable(e: &StorageError) -> bool {
    let StorageError::Backend { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<PgError>()
        .and_then(|p| p.0.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Run a transaction, again (up to three times in all) when another collector's made it fail
/// by a deadlock: nothing of a failed attempt stays.
pub(in crate::storage) fn in_transaction<T>(
    c: &mut Client,
    mut f: impl FnMut(&mut postgres::Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = c
            .transaction()
            .map_err(StorageError::from)
            .and_then(|mut tx| {
                let v = f(&mut tx)?;
                tx.commit()?;
                Ok(v)
            });
        match r {
            Err(e) if attempt < 3 && retryable(&e) => continue,
            r => return r,
        }
    }
}

fn now() -> String {
    cairn_protocol::rfc3339::now()
}

fn sha(s: &str) -> String {
    cairn_protocol::sha256_hex(s.as_bytes())
}

/// Text as PostgreSQL can hold it: U+0000 (which `TEXT` refuses) is written as U+FFFD.
/// Evidence strings come from attackers: a NUL must not make a row, or a batch, unstorable.
#[derive(Debug)]
pub(super) struct Txt<'a>(pub Option<&'a str>);

pub(super) fn t(s: &str) -> Txt<'_> {
    Txt(Some(s))
}

pub(super) fn ot(s: Option<&str>) -> Txt<'_> {
    Txt(s)
}

/// A list of texts as an array parameter, NULs written as [`Txt`] writes them.
pub(super) fn texts(v: &[String]) -> Vec<String> {
    v.iter().map(|h| h.replace('\0', "\u{fffd}")).collect()
}

impl ToSql for Txt<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(s) if s.contains('\0') => s.replace('\0', "\u{fffd}").as_str().to_sql(ty, out),
            Some(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A value of the shared timeline SQL, bound as the parameter type the server inferred.
#[derive(Debug)]
pub(super) struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Value::Int(_) => Err(format!("an integer bound as {ty}").into()),
            Value::Text(s) => t(s).to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INT4 || *ty == Type::INT8 || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// The shared SQL's values as parameters.
pub(super) fn params(values: &[Value]) -> Vec<Param<'_>> {
    values.iter().map(Param).collect()
}

pub(super) fn refs<'a>(p: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    p.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A column, or what it is not.
pub(super) fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    Ok(r.try_get(i)?)
}

/// A count or a length: stored as `BIGINT`, never negative.
pub(super) fn get_u64(r: &Row, i: usize) -> Result<u64> {
    let v: i64 = get(r, i)?;
    u64::try_from(v).map_err(|_| StorageError::Corrupt {
        what: "count",
        detail: format!("column {i} is {v}"),
    })
}

pub(super) fn get_opt_u64(r: &Row, i: usize) -> Result<Option<u64>> {
    let v: Option<i64> = get(r, i)?;
    v.map(|v| {
        u64::try_from(v).map_err(|_| StorageError::Corrupt {
            what: "count",
            detail: format!("column {i} is {v}"),
        })
    })
    .transpose()
}

/// A count or a length as `BIGINT`.
pub(super) fn int(what: &'static str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StorageError::Corrupt {
        what,
        detail: format!("{v} does not fit a BIGINT"),
    })
}

/// A text column that must hold one of an enum's names.
pub(super) fn enum_col<T>(
    r: &Row,
    i: usize,
    what: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let s: String = get(r, i)?;
    parse(&s).ok_or_else(|| StorageError::Corrupt {
        what,
        detail: format!("unknown value {s:?}"),
    })
}

/// Every row of a query, mapped.
pub(super) fn rows<T>(
    c: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    map: impl Fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    c.query(sql, params)?.iter().map(map).collect()
}
