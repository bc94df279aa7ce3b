//! Which back ends the collectors of a test run use: `CAIRN_TEST_BACKENDS` unset (or
//! `sqlite+dir`) is the embedded default; `postgres+s3`, `postgres` or `s3` run the same
//! suites against a real PostgreSQL and a real Garage started once per test process. Each
//! collector gets its own database and its own prefix in the bucket, so tests stay apart.
//!
//! The shared servers must not outlive the test process, which never drops a static: each runs
//! under a shell that kills it when the pipe on its stdin closes, i.e. when this process ends,
//! however it ends.

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

use crate::garage::Garage;
use crate::postgres::TempPostgres;

/// The back ends named by `CAIRN_TEST_BACKENDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selected {
    pub postgres: bool,
    pub s3: bool,
}

pub fn selected() -> Result<Selected> {
    let v = std::env::var("CAIRN_TEST_BACKENDS").unwrap_or_default();
    let mut s = Selected::default();
    for part in v.split(['+', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "postgres" => s.postgres = true,
            "s3" => s.s3 = true,
            "sqlite" | "dir" => {}
            other => {
                bail!("CAIRN_TEST_BACKENDS: unknown back end {other:?} (postgres, s3, sqlite, dir)")
            }
        }
    }
    Ok(s)
}

/// A server kept for the whole test process, with the pipe whose closing stops it.
struct Tied<T> {
    server: T,
    _watch: Option<(Child, ChildStdin)>,
}

static GARAGE: OnceLock<Mutex<Option<Tied<Garage>>>> = OnceLock::new();
static POSTGRES: OnceLock<Mutex<Option<Tied<SharedPostgres>>>> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A shell that waits for its stdin to close, then SIGKILLs `pid`.
fn watchdog(pid: u32) -> Result<(Child, ChildStdin)> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("cat >/dev/null; kill -9 {pid} 2>/dev/null"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the watchdog shell of a shared test server")?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("the watchdog shell has no stdin"))?;
    Ok((child, stdin))
}

/// A PostgreSQL cluster for the whole test process: a [`TempPostgres`] whose postmaster the
/// watchdog kills when the process ends.
pub struct SharedPostgres {
    server: TempPostgres,
}

impl SharedPostgres {
    /// A new empty database on the shared cluster; its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let out = Command::new("psql")
            .arg(self.server.url())
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(self.server.url_of(name))
    }
}

fn start_postgres() -> Result<Tied<SharedPostgres>> {
    let server = TempPostgres::start()?;
    // The postmaster's pid is the first line of its pid file.
    let pidfile = server.dir().join("data/postmaster.pid");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading {}", pidfile.display()))?
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("no pid in {}", pidfile.display()))?;
    let watch = watchdog(pid)?;
    Ok(Tied {
        server: SharedPostgres { server },
        _watch: Some(watch),
    })
}

fn start_garage() -> Result<Tied<Garage>> {
    let mut g = Garage::start()?;
    let pid = g.proc.pid().ok_or_else(|| anyhow!("garage has no pid"))?;
    let watch = watchdog(pid)?;
    g.proc.detach();
    Ok(Tied {
        server: g,
        _watch: Some(watch),
    })
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new empty database on the process's shared PostgreSQL (started on first use).
pub fn postgres_database() -> Result<String> {
    let lock = POSTGRES.get_or_init(|| Mutex::new(None));
    let mut pg = lock
        .lock()
        .map_err(|_| anyhow!("shared PostgreSQL lock poisoned"))?;
    if pg.is_none() {
        *pg = Some(start_postgres()?);
    }
    let pg = pg.as_ref().ok_or_else(|| anyhow!("no shared PostgreSQL"))?;
    pg.server.create_database(&unique("cairn"))
}

/// The environment of one new collector on the selected back ends (empty for the default).
pub fn for_collector() -> Result<Vec<(String, String)>> {
    let sel = selected()?;
    let mut env = Vec::new();
    if sel.postgres {
        let lock = POSTGRES.get_or_init(|| Mutex::new(None));
        let mut pg = lock
            .lock()
            .map_err(|_| anyhow!("shared PostgreSQL lock poisoned"))?;
        if pg.is_none() {
            *pg = Some(start_postgres()?);
        }
        let pg = pg.as_ref().ok_or_else(|| anyhow!("no shared PostgreSQL"))?;
        let url = pg.server.create_database(&unique("cairn"))?;
        env.push(("CAIRN_DATABASE".to_string(), url));
    }
    if sel.s3 {
        let lock = GARAGE.get_or_init(|| Mutex::new(None));
        let mut g = lock
            .lock()
            .map_err(|_| anyhow!("shared Garage lock poisoned"))?;
        if g.is_none() {
            *g = Some(start_garage()?);
        }
        let g = g.as_ref().ok_or_else(|| anyhow!("no shared Garage"))?;
        env.push(("CAIRN_BLOBS".to_string(), g.server.url(&unique("c"))));
        env.extend(g.server.env().into_iter().map(|(k, v)| (k.to_string(), v)));
    }
    Ok(env)
}
