//! The metadata store's contract, on every back end: each test is a function of a
//! `&dyn MetadataStore`, run once on a fresh SQLite file and once on a fresh PostgreSQL
//! database (one [`TempPostgres`] per test binary, a `CREATE DATABASE` per test). Tests that
//! only one back end can have (PostgreSQL's pool, reconnection, migration) are in
//! [`postgres`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod postgres;
mod records;
mod timeline;
mod work;

use super::postgres::Postgres;
use super::sqlite::Sqlite;
use super::MetadataStore;
use cairn_harness::TempPostgres;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Which store a test has: some answers differ by design (docs/decisions.md, #16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store and what keeps it alive.
pub(super) struct Fresh {
    pub store: Box<dyn MetadataStore>,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

pub(super) fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("meta.db")).unwrap();
    Fresh {
        store: Box::new(store),
        backend: Backend::Sqlite,
        _dir: Some(dir),
    }
}

static SERVER: OnceLock<Result<TempPostgres, String>> = OnceLock::new();

extern "C" fn stop_server() {
    if let Some(Ok(pg)) = SERVER.get() {
        pg.shutdown();
    }
}

/// The test binary's PostgreSQL server, started on first use and stopped at exit.
pub(super) fn server() -> &'static TempPostgres {
    let pg = SERVER.get_or_init(|| {
        let pg = TempPostgres::start().map_err(|e| format!("{e:#}"))?;
        // Statics are never dropped: stop the server when the test binary exits.
        // SAFETY: registers a plain function with no arguments to run at exit.
        unsafe {
            libc::atexit(stop_server);
        }
        Ok(pg)
    });
    match pg {
        Ok(pg) => pg,
        Err(e) => panic!("cannot start PostgreSQL for the conformance tests: {e}"),
    }
}

/// A new, empty database on the test server; its URL.
pub(super) fn fresh_database() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let pg = server();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    pg.url_of(&name)
}

pub(super) fn postgres() -> Fresh {
    let store = Postgres::connect(&fresh_database()).unwrap();
    Fresh {
        store: Box::new(store),
        backend: Backend::Postgres,
        _dir: None,
    }
}

/// Each test function run on both back ends: `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                let f = crate::storage::conformance::sqlite();
                super::$name(&*f.store, f.backend);
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                let f = crate::storage::conformance::postgres();
                super::$name(&*f.store, f.backend);
            })*
        }
    };
}
pub(super) use on_both;
