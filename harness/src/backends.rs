//! Which back ends the collectors of a test run use: `CAIRN_TEST_BACKENDS` unset (or
//! `sqlite+dir`) is the embedded default; `postgres+s3`, `postgres` or `s3` run the same
//! suites against a real PostgreSQL and a real Garage started once per test process. Each
//! collector gets its own database and its own prefix in the bucket, so tests stay apart.
//!
//! The shared servers must not outlive the test process, which never drops a static: each runs
//! under a shell that kills it when the pipe on its stdin closes, i.e. when this process ends,
//! however it ends.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

use crate::garage::Garage;

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

/// A PostgreSQL cluster for the whole test process.
pub struct SharedPostgres {
    /// `postgres://cairn@127.0.0.1:PORT`, without a database.
    pub base_url: String,
    pub psql: PathBuf,
    _server: Child,
    _dir: tempfile::TempDir,
}

impl SharedPostgres {
    /// A new empty database on the shared cluster; its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let out = Command::new(&self.psql)
            .arg(format!("{}/postgres", self.base_url))
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
        Ok(format!("{}/{name}", self.base_url))
    }
}

/// The newest PostgreSQL (15 or later) Debian installed: its `bin/` directory.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    (v >= 15 && bin.join("initdb").is_file()).then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!("PostgreSQL 15 or newer is not installed (/usr/lib/postgresql/*/bin/initdb): run `cargo xtask setup`")
    })
}

/// The `postgres` user's uid and gid, from /etc/passwd.
pub fn postgres_user() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| anyhow!("no postgres user: install PostgreSQL with `cargo xtask setup`"))
}

fn start_postgres() -> Result<Tied<SharedPostgres>> {
    let bin = postgres_bin_dir()?;
    let dir = tempfile::Builder::new().prefix("cairn-pg").tempdir()?;
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // initdb refuses root: the cluster belongs to the postgres user, and runs as it (set
    // directly, not through runuser, so that the pid the watchdog kills is the postmaster's).
    let (uid, gid) = postgres_user()?;
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(dir.path())
        .status()?;
    if !chown.success() {
        bail!("cannot give {} to the postgres user", dir.path().display());
    }
    let initdb = Command::new(bin.join("initdb"))
        .uid(uid)
        .gid(gid)
        .args([
            "-A",
            "trust",
            "-U",
            "cairn",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()?;
    if !initdb.status.success() {
        bail!("initdb: {}", String::from_utf8_lossy(&initdb.stderr));
    }
    let log = std::fs::File::create(dir.path().join("postgres.log"))?;
    let server = Command::new(bin.join("postgres"))
        .uid(uid)
        .gid(gid)
        .arg("-D")
        .arg(&data)
        .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
        .arg("-k")
        .arg(dir.path())
        .args(["-c", "fsync=off", "-c", "max_connections=400"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start postgres")?;
    let watch = watchdog(server.id())?;
    let pg = SharedPostgres {
        base_url: format!("postgres://cairn@127.0.0.1:{port}"),
        psql: PathBuf::from("psql"),
        _server: server,
        _dir: dir,
    };
    crate::wait_for(
        "the shared PostgreSQL to accept connections",
        crate::START_TIMEOUT,
        || {
            Ok(Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success()))
        },
    )?;
    Ok(Tied {
        server: pg,
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
