//! A SQLite collector database copied into an empty PostgreSQL one, table by table and row by
//! row, in one transaction: row ids kept, identity sequences moved past them. What SQLite has
//! is the truth: every column of its tables (those its migrations added too) must have a place
//! here, or nothing is copied.

use super::{get, Param, Postgres};
use crate::storage::timeline_sql::Value;
use crate::storage::{Result, StorageError};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::Transaction;
use rusqlite::types::ValueRef;
use std::path::{Path, PathBuf};

/// Every table, parents before children; `true` where SQLite's implicit `rowid` (the order
/// rows were written, which reads rely on) becomes the column `rid`.
const TABLES: &[(&str, bool)] = &[
    ("api_tokens", false),
    ("enroll_tokens", false),
    ("hosts", false),
    ("collections", false),
    ("items", false),
    ("blobs", false),
    ("item_chunks", false),
    ("custody", false),
    ("events", true),
    ("timeline_hosts", false),
    ("timeline", false),
    ("timeline_items", false),
    ("saved_searches", false),
    ("readiness", true),
    ("console_sessions", false),
    ("console_links", false),
    ("annotations", false),
    ("cases", false),
    ("case_links", false),
    ("containments", true),
    ("trigger_sequences", false),
];

fn fail(what: &'static str, detail: impl Into<String>) -> StorageError {
    StorageError::Backend {
        what,
        source: detail.into().into(),
    }
}

impl Postgres {
    /// Copy every table of the SQLite collector database at `sqlite_path` (opened read-only)
    /// into this database, which must be empty; returns the rows copied per table.
    pub fn copy_from_sqlite(&self, sqlite_path: &Path) -> Result<Vec<(String, u64)>> {
        let path = sqlite_path.to_path_buf();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let copied = copy_all(&mut tx, &path)?;
            tx.commit()?;
            Ok(copied)
        })
    }
}

fn copy_all(tx: &mut Transaction<'_>, path: &PathBuf) -> Result<Vec<(String, u64)>> {
    let src = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        fail(
            "opening the SQLite database",
            format!("{}: {e}", path.display()),
        )
    })?;
    // No other writer may fill the target meanwhile.
    let names: Vec<&str> = TABLES.iter().map(|t| t.0).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))?;
    for (table, _) in TABLES {
        let used: bool = get(
            &tx.query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])?,
            0,
        )?;
        if used {
            return Err(fail(
                "copying from SQLite",
                format!("the PostgreSQL database is not empty (table {table} has rows): copy into an empty database"),
            ));
        }
    }
    let mut copied = Vec::new();
    for (table, rowid) in TABLES {
        let n = copy_table(tx, &src, table, *rowid)?;
        copied.push((table.to_string(), n));
    }
    reset_identities(tx)?;
    Ok(copied)
}

fn copy_table(
    tx: &mut Transaction<'_>,
    src: &rusqlite::Connection,
    table: &str,
    rowid: bool,
) -> Result<u64> {
    let mut st = src.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let src_cols = st
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    if src_cols.is_empty() {
        // A database from before the table: nothing to copy.
        return Ok(0);
    }
    let target = tx.prepare(&format!("SELECT * FROM {table} LIMIT 0"))?;
    let target: Vec<(String, Type)> = target
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let mut pairs: Vec<(String, String, Type)> = Vec::new();
    for col in &src_cols {
        let Some((name, ty)) = target.iter().find(|(n, _)| n == col) else {
            return Err(fail(
                "copying from SQLite",
                format!("column {table}.{col} has no place in the PostgreSQL schema"),
            ));
        };
        pairs.push((format!("\"{col}\""), format!("\"{name}\""), ty.clone()));
    }
    if rowid {
        pairs.push(("rowid".into(), "rid".into(), Type::INT8));
    }
    let select = format!(
        "SELECT {} FROM {table} ORDER BY rowid",
        pairs
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let columns = pairs
        .iter()
        .map(|p| p.1.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let types: Vec<Type> = pairs.iter().map(|p| p.2.clone()).collect();
    let sink = tx.copy_in(&format!(
        "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
    ))?;
    let mut w = BinaryCopyInWriter::new(sink, &types);
    let mut st = src.prepare(&select)?;
    let mut rows = st.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let mut values = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let v = cell(r.get_ref(i)?, ty, table == "custody").map_err(|e| {
                fail(
                    "copying from SQLite",
                    format!("{table}.{}, row {}: {e}", pairs[i].0, n + 1),
                )
            })?;
            values.push(v);
        }
        let params: Vec<Param<'_>> = values.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        w.write(&refs)?;
        n += 1;
    }
    w.finish()?;
    Ok(n)
}

/// A SQLite value as the PostgreSQL column's type holds it (SQLite's columns are loosely typed).
/// Text with U+0000 is stored as U+FFFD ([`super::Txt`]), except in a signed record (`exact`),
/// which is copied byte for byte or not at all.
fn cell(v: ValueRef<'_>, ty: &Type, exact: bool) -> std::result::Result<Value, String> {
    let int = *ty == Type::INT8 || *ty == Type::INT4;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if int => Value::Int(i),
        ValueRef::Integer(i) => Value::Text(i.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            let s = std::str::from_utf8(b).map_err(|e| format!("not UTF-8: {e}"))?;
            if exact && s.contains('\0') {
                return Err("a NUL character, which PostgreSQL text cannot store".into());
            }
            if int {
                Value::Int(
                    s.trim()
                        .parse()
                        .map_err(|_| format!("{s:?} is not an integer"))?,
                )
            } else {
                Value::Text(s.to_string())
            }
        }
        ValueRef::Real(f) if int && f.fract() == 0.0 => Value::Int(f as i64),
        ValueRef::Real(f) => Value::Text(f.to_string()),
    })
}

/// Every identity column starts after the largest id copied.
fn reset_identities(tx: &mut Transaction<'_>) -> Result<()> {
    let ids = tx.query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE is_identity = 'YES' AND table_schema = current_schema()",
        &[],
    )?;
    for r in ids {
        let (table, column): (String, String) = (get(&r, 0)?, get(&r, 1)?);
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                        COALESCE((SELECT MAX({column}) FROM {table}), 1),
                        (SELECT MAX({column}) FROM {table}) IS NOT NULL)"
            ),
            &[],
        )?;
    }
    Ok(())
}
