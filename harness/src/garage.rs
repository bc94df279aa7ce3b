//! A real S3-compatible object store for the tests: a one-node Garage server in a temporary
//! directory on loopback, with one bucket and one key.
//!
//! Garage is built from crates.io by `cargo xtask setup` (about 15 minutes of CPU) and cached
//! in [`GARAGE_CACHE`]; tests that need it fail, never skip, when it is missing.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{run, wait_for, Managed, CLI_TIMEOUT, START_TIMEOUT};

/// The Garage version `cargo xtask setup` builds.
pub const GARAGE_VERSION: &str = "2.5.0";
/// Where `cargo xtask setup` installs it (`bin/garage` below), kept across runs of the machine.
pub const GARAGE_CACHE: &str = "/var/cache/cairn/tools/garage-2.5.0";

/// The garage binary: `$CAIRN_GARAGE`, the cache, or `garage` on PATH.
pub fn garage_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_GARAGE") {
        return Ok(PathBuf::from(p));
    }
    let cached = Path::new(GARAGE_CACHE).join("bin/garage");
    if cached.is_file() {
        return Ok(cached);
    }
    if crate::have_command("garage") {
        return Ok(PathBuf::from("garage"));
    }
    bail!(
        "garage (the S3-compatible test server) is not installed: run `cargo xtask setup`, which builds it into {GARAGE_CACHE}"
    )
}

/// A running one-node Garage with a bucket and a key allowed on it.
pub struct Garage {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    config: PathBuf,
    bin: PathBuf,
    pub proc: Managed,
    /// The S3 port, for tests that make it unreachable.
    pub s3_port: u16,
    _dir: tempfile::TempDir,
}

/// The words in a start error that mean the server exited while starting.
const DIED_STARTING: &str = "garage exited while starting";

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Garage {
    /// Starts a fresh store. Ports are picked free and then bound by Garage, so another test
    /// can take one in between: a server that died while starting is started again on new
    /// ports (three tries) rather than failing the test that wanted it.
    pub fn start() -> Result<Garage> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once() {
                Ok(g) => return Ok(g),
                Err(e) if format!("{e:#}").contains(DIED_STARTING) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("garage did not start")))
    }

    fn start_once() -> Result<Garage> {
        let bin = garage_bin()?;
        let dir = tempfile::Builder::new().prefix("cairn-garage").tempdir()?;
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let mut secret = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
            .context("reading /dev/urandom")?;
        let config = dir.path().join("garage.toml");
        let d = dir.path().display();
        fs::write(
            &config,
            format!(
                // The collector sends zstd payloads already: Garage compressing them again
                // is CPU for nothing.
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 compression_level = \"none\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                hex::encode(secret)
            ),
        )?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&config).arg("server");
        let proc = Managed::spawn("garage", cmd, &dir.path().join("garage.log"))?;
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: "cairn-evidence".into(),
            key_id: String::new(),
            secret: String::new(),
            config,
            bin,
            proc,
            s3_port: s3,
            _dir: dir,
        };
        // A server that exited ends the wait at once (wait_for would retry until its timeout).
        let died = |e: anyhow::Error| anyhow::anyhow!("{DIED_STARTING}: {e:#}");
        let id = wait_for("garage to answer `node id`", START_TIMEOUT, || {
            if let Err(e) = g.proc.check_alive() {
                return Ok(Some(Err(e)));
            }
            Ok(g.cli(&["node", "id", "-q"])
                .ok()
                .and_then(|o| o.split('@').next().map(|s| s.trim().to_string()))
                .filter(|s| !s.is_empty())
                .map(Ok))
        })?
        .map_err(died)?;
        // `node id` reads the key file and answers before the RPC port listens; `layout
        // assign` needs that port, so it is retried until the server takes it.
        wait_for("garage to take the layout", START_TIMEOUT, || {
            if let Err(e) = g.proc.check_alive() {
                return Ok(Some(Err(e)));
            }
            Ok(g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])
                .ok()
                .map(Ok))
        })?
        .map_err(died)?;
        g.cli(&["layout", "apply", "--version", "1"])?;
        let bucket = g.bucket.clone();
        // The layout takes a moment to be applied: bucket creation fails until then.
        wait_for("garage to create the bucket", START_TIMEOUT, || {
            Ok(g.cli(&["bucket", "create", &bucket]).ok())
        })?;
        let out = g.cli(&["key", "create", "cairn-test"])?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .filter(|v| !v.is_empty())
        };
        match (field("Key ID:"), field("Secret key:")) {
            (Some(id), Some(secret)) => {
                g.key_id = id;
                g.secret = secret;
            }
            _ => bail!("`garage key create` printed no key id and secret:\n{out}"),
        }
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &bucket,
            "--key",
            "cairn-test",
        ])?;
        Ok(g)
    }

    /// `garage -c CONFIG ARGS`; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.config).args(args);
        let out = run(cmd, CLI_TIMEOUT)?.ok()?;
        Ok(out.stdout.clone())
    }

    /// The environment a collector (or the AWS tools) reaches this store with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Stop the server (SIGKILL): the store is unreachable until [`Garage::resume`].
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Start the server again on the same ports and data.
    pub fn resume(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.config).arg("server");
        let log = self.proc.log().to_path_buf();
        self.proc = Managed::spawn("garage", cmd, &log)?;
        let bucket = self.bucket.clone();
        wait_for("garage to list its bucket again", START_TIMEOUT, || {
            self.proc.check_alive()?;
            Ok(self.cli(&["bucket", "info", &bucket]).ok())
        })?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }
}
