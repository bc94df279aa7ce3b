//! The embedded metadata store: one SQLite file, one connection behind a mutex.
//!
//! Every statement is short and SQLite serialises writers anyway. WAL mode lets
//! `cairn-collector token create` run beside a serving collector. Each group of tables has
//! its file here: its schema and its part of the [`super::MetadataStore`] traits.

mod cases;
mod collections;
mod console;
mod containment;
mod custody;
mod events;
mod hosts;
mod items;
mod readiness;
mod searches;
mod sequences;
mod timeline;
mod tokens;

use super::{Result, StorageError};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub struct Sqlite {
    conn: Mutex<Connection>,
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
        {
            return StorageError::Full(format!("SQLite: {e}"));
        }
        // A duplicate key is a conflict wherever it happens, as on every back end.
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            if matches!(
                f.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) {
                return StorageError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()));
            }
        }
        StorageError::Backend {
            what: "SQLite",
            source: Box::new(e),
        }
    }
}

/// A unique or primary key said no: the row exists.
fn is_conflict(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// `(table, column, type)` added since the table first shipped: added to older databases.
const MIGRATIONS: &[(&str, &str, &str)] = &[
    ("hosts", "status_json", "TEXT"),
    ("hosts", "readiness", "TEXT"),
    ("hosts", "readiness_since", "TEXT"),
    ("hosts", "readiness_at", "TEXT"),
    ("hosts", "retired_at", "TEXT"),
    ("hosts", "retired_reason", "TEXT"),
    ("api_tokens", "revoked_at", "TEXT"),
    ("enroll_tokens", "revoked_at", "TEXT"),
    ("timeline", "parent_exe", "TEXT"),
    ("timeline", "dst_addr", "TEXT"),
    ("timeline", "dst_port", "INTEGER"),
    ("timeline", "time_source", "TEXT"),
];

fn now() -> String {
    cairn_protocol::rfc3339::now()
}

impl Sqlite {
    /// Open (creating when absent) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path).map_err(|e| StorageError::Backend {
            what: "opening the SQLite database",
            source: format!("{}: {e}", path.display()).into(),
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL + NORMAL: a committed row survives the process being killed (the WAL is in the OS
        // page cache); chunk payloads themselves are fsynced before they are acknowledged.
        // 16 KiB pages take effect on new databases only (WAL fixes the page size).
        conn.execute_batch(
            "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             PRAGMA foreign_keys=ON; PRAGMA cache_size=-131072; PRAGMA wal_autocheckpoint=4096;",
        )?;
        for schema in [
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
        ] {
            conn.execute_batch(schema)?;
        }
        let db = Sqlite {
            conn: Mutex::new(conn),
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&self) -> Result<()> {
        let conn = self.lock();
        for (table, column, ty) in MIGRATIONS {
            let exists = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
                ))?
                .exists(params![column])?;
            if !exists {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
        Ok(())
    }

    /// Every row of a query, mapped.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.lock();
        let mut st = conn.prepare(sql)?;
        let rows = st.query_map(params, map)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: keep serving.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A text column that must hold one of an enum's names.
fn enum_col<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    parse: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown value {s:?}").into(),
        )
    })
}

fn sha(s: &str) -> String {
    cairn_protocol::sha256_hex(s.as_bytes())
}
