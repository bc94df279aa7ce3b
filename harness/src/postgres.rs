//! A throwaway PostgreSQL server for a test: its own directory (owned by the `postgres` user,
//! 0700, since `initdb` refuses root), `initdb`, `pg_ctl start` on 127.0.0.1 with a free port
//! and its unix socket in that directory; stopped and removed on drop.
//!
//! The binaries are Debian's (`/usr/lib/postgresql/VERSION/bin`, the newest of 15 or later);
//! when there are none the error says to run `cargo xtask setup`, which installs them: a test
//! that needs PostgreSQL fails rather than skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::ports::with_free_ports;
use crate::run::run;

/// The oldest major version the collector supports.
pub const MIN_VERSION: u32 = 15;
const USER: &str = "cairn";
const START: Duration = Duration::from_secs(60);

/// A running PostgreSQL server that stops, and whose directory goes, when dropped.
pub struct TempPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

/// The newest PostgreSQL binaries directory of version 15 or later.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        for d in dirs.flatten() {
            let version = d.file_name().to_string_lossy().parse::<u32>().ok();
            let bin = d.path().join("bin");
            if let Some(v) = version.filter(|v| *v >= MIN_VERSION) {
                if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
                    found.push((v, bin));
                }
            }
        }
    }
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL {MIN_VERSION} or newer is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             run `cargo xtask setup` (it installs Debian's postgresql)"
        )
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl TempPostgres {
    /// Start a server and wait until it accepts connections.
    pub fn start() -> Result<TempPostgres> {
        let bin = postgres_bin_dir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .context("cannot make a directory for PostgreSQL")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(dir.path());
            run(chown, Duration::from_secs(10))?
                .ok()
                .context("the user `postgres` must exist (Debian's postgresql package makes it): run `cargo xtask setup`")?;
        }
        let mut pg = TempPostgres {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        let data = pg.data();
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        run(initdb, START)?.ok().context("initdb failed")?;
        pg.port = with_free_ports(5, |_, tcp| {
            pg.port = tcp;
            pg.pg_ctl_start()?;
            Ok(tcp)
        })?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's directory (its log is `log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database as the superuser `cairn`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of another database of this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Stop the server (fast: connections are closed) and start it again on the same port.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_stop("fast")?;
        self.pg_ctl_start()
    }

    /// Stop the server at once and remove its directory, for a server that is never dropped
    /// (a test binary's static, at exit).
    pub fn shutdown(&self) {
        let _ = self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    /// A PostgreSQL program, run as the user `postgres` when the test runs as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.dir.path().display(),
            self.port
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "start"]);
        let out = run(start, START)?;
        if !out.success() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            bail!(
                "{}\nserver log:\n{}",
                out.describe("pg_ctl start"),
                crate::tail_str(&log, 20)
            );
        }
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START;
        loop {
            let mut ready = self.command("pg_isready");
            ready.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER]);
            if run(ready, Duration::from_secs(10))?.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL on port {} did not accept connections within {START:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(stop, START)?.ok().context("pg_ctl stop failed")?;
        Ok(())
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}
