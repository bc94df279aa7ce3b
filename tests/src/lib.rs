//! Harness for cairn's end-to-end tests: runs the real `cairn-collector`, `cairn-agent` and
//! `cairn` binaries on loopback, each test in its own temporary directory with its own ports.
//!
//! Everything here has a timeout: a broken binary makes a test fail with the tail of the
//! process logs, never hang. Child processes are killed when their handle is dropped.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use serde_json;
pub use tempfile;

/// How long a plain CLI call may take before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a collector or agent may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Binaries

/// The directory holding the workspace binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the test executable's path")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable {} has no parent", exe.display()))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Path of one of the workspace binaries (`cairn`, `cairn-agent`, `cairn-collector`).
pub fn bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "binary {} is missing: run `cargo build --workspace --bins` (or `cargo xtask test`, \
             which builds them) before `cargo test`",
            path.display()
        );
    }
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Running commands with a timeout

/// The result of running a command to completion.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for "the output names X" checks.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(self.stdout.trim()).with_context(|| {
            format!(
                "`{}` did not print JSON on stdout:\n--- stdout\n{}\n--- stderr\n{}",
                self.cmdline,
                tail_str(&self.stdout, 40),
                tail_str(&self.stderr, 40)
            )
        })
    }

    /// Fails, with the command's output in the message, unless it exited 0.
    pub fn ok(self) -> Result<Output> {
        if !self.success() {
            bail!("{}", self.describe("failed"));
        }
        Ok(self)
    }

    pub fn describe(&self, what: &str) -> String {
        format!(
            "`{}` {what} (exit {:?})\n--- stdout\n{}\n--- stderr\n{}",
            self.cmdline,
            self.code,
            tail_str(&self.stdout, 40),
            tail_str(&self.stderr, 40)
        )
    }
}

fn describe_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, killing it after `timeout`. A timeout is an error.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let cmdline = describe_cmd(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{cmdline}`"))?;
    let out_reader = reader_thread(child.stdout.take());
    let err_reader = reader_thread(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let out = Output {
        cmdline,
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    };
    if status.is_none() {
        bail!("{}", out.describe(&format!("timed out after {timeout:?}")));
    }
    Ok(out)
}

fn reader_thread<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `f` every `interval` until it returns `Ok(Some(_))` or `timeout` passes. Errors from
/// `f` are remembered and reported on timeout (they do not stop the polling).
pub fn wait_for_every<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(interval);
    }
}

/// [`wait_for_every`] with a 200 ms poll interval.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    wait_for_every(what, timeout, Duration::from_millis(200), f)
}

// ---------------------------------------------------------------------------------------------
// Ports, logs, hashes

static RESERVED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free UDP port and a free TCP port on 127.0.0.1 (bound to :0, then released). Ports handed
/// out earlier in this process are never handed out again, so parallel tests do not collide.
pub fn free_ports() -> Result<(u16, u16)> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket")?;
        let tcp = TcpListener::bind("127.0.0.1:0").context("cannot bind a TCP socket")?;
        let (u, t) = (udp.local_addr()?.port(), tcp.local_addr()?.port());
        let mut guard = RESERVED_PORTS
            .lock()
            .map_err(|_| anyhow!("port registry poisoned"))?;
        let set = guard.get_or_insert_with(HashSet::new);
        if u != t && !set.contains(&u) && !set.contains(&t) {
            set.insert(u);
            set.insert(t);
            return Ok((u, t));
        }
    }
    bail!("could not find free ports on 127.0.0.1")
}

/// The last `n` lines of a file (empty when it cannot be read).
pub fn tail_file(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(b) => tail_str(&String::from_utf8_lossy(&b), n),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

pub fn tail_str(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// SHA-256 of a file as the real coreutils `sha256sum` binary reports it.
pub fn sha256sum_cli(path: &Path) -> Result<String> {
    let mut cmd = Command::new("sha256sum");
    cmd.arg(path);
    let out = run(cmd, Duration::from_secs(300))?.ok()?;
    out.stdout
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("sha256sum printed nothing for {}", path.display()))
}

/// Whether an executable is on PATH.
pub fn have_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Writes `len` bytes of fast pseudo-random (incompressible) data to `path`; returns its SHA-256.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> Result<String> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut h = Sha256::new();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = usize::try_from(left.min(buf.len() as u64))?;
        f.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(hex::encode(h.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Managed background processes

/// A background child whose stdout and stderr go to a log file; killed (SIGKILL) on drop, and
/// when the test is failing its log tail is printed.
struct Managed {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Managed {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Managed> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        let file2 = file.try_clone()?;
        let cmdline = describe_cmd(&cmd);
        {
            let mut f = &file;
            let _ = writeln!(f, "=== harness: starting `{cmdline}`");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(file2));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{cmdline}`"))?;
        Ok(Managed {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Err with the log tail if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                bail!(
                    "{} exited ({status}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail_file(&self.log, 40)
                );
            }
            Ok(())
        } else {
            bail!("{} is not running", self.name)
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} log ({}):\n{}\n---",
                self.name,
                self.log.display(),
                tail_file(&self.log, 60)
            );
        }
    }
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

fn unique_dir(work: &Path, prefix: &str) -> PathBuf {
    let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
    work.join(format!("{prefix}-{n}"))
}

// ---------------------------------------------------------------------------------------------
// Collector

/// What `cairn-collector init --json` printed.
#[derive(Debug, Clone)]
pub struct InitInfo {
    pub ca_sha256: String,
    pub enrollment_token: String,
    pub admin_token: String,
    pub ca_cert: PathBuf,
    pub raw: Value,
}

/// A running `cairn-collector serve` with its own data directory and ports.
pub struct Collector {
    pub data: PathBuf,
    pub log: PathBuf,
    pub quic_port: u16,
    pub api_port: u16,
    pub init: InitInfo,
    proc: Option<Managed>,
}

fn json_str(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string field {key:?} in {v}"))
}

impl Collector {
    /// `init --json` a fresh data directory under `work` and `serve` it on free loopback ports.
    pub fn start(work: &Path) -> Result<Collector> {
        let base = unique_dir(work, "collector");
        fs::create_dir_all(&base)?;
        let data = base.join("data");
        let log = base.join("collector.log");
        let mut cmd = Command::new(bin("cairn-collector")?);
        cmd.args(["init", "--data"]).arg(&data).arg("--json");
        let out = run(cmd, CLI_TIMEOUT)?.ok()?;
        let raw = out.json()?;
        let init = InitInfo {
            ca_sha256: json_str(&raw, "ca_sha256")?,
            enrollment_token: json_str(&raw, "enrollment_token")?,
            admin_token: json_str(&raw, "admin_token")?,
            ca_cert: raw
                .get("ca_cert")
                .and_then(Value::as_str)
                .map(PathBuf::from)
                .unwrap_or_else(|| data.join("ca.pem")),
            raw,
        };
        let mut last_err = None;
        for _attempt in 0..3 {
            let (quic_port, api_port) = free_ports()?;
            let mut c = Collector {
                data: data.clone(),
                log: log.clone(),
                quic_port,
                api_port,
                init: init.clone(),
                proc: None,
            };
            match c.serve() {
                Ok(()) => return Ok(c),
                Err(e) => {
                    // Most likely a port taken between picking and binding: try other ports.
                    c.kill();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("collector did not start")))
    }

    fn serve(&mut self) -> Result<()> {
        let mut cmd = Command::new(bin("cairn-collector")?);
        cmd.args(["serve", "--data"])
            .arg(&self.data)
            .arg("--quic-listen")
            .arg(self.quic_addr())
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", self.api_port));
        let log_len_before = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        self.proc = Some(Managed::spawn("cairn-collector", cmd, &self.log)?);
        let quic_line = format!("quic listening on {}", self.quic_addr());
        let api_line = format!("api listening on {}", self.api_url());
        let log = self.log.clone();
        wait_for_every(
            "the collector's \"listening\" lines",
            START_TIMEOUT,
            Duration::from_millis(50),
            || {
                if let Some(p) = self.proc.as_mut() {
                    p.check_alive()?;
                }
                let text = fs::read(&log).unwrap_or_default();
                let new = String::from_utf8_lossy(
                    text.get(usize::try_from(log_len_before)?..)
                        .unwrap_or_default(),
                )
                .into_owned();
                Ok((new.contains(&quic_line) && new.contains(&api_line)).then_some(()))
            },
        )
        .with_context(|| format!("log {}:\n{}", self.log.display(), tail_file(&self.log, 40)))
    }

    /// SIGKILL the collector (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Start `serve` again on the same ports and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.serve()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Managed::pid)
    }

    pub fn quic_addr(&self) -> String {
        format!("127.0.0.1:{}", self.quic_port)
    }

    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// A `cairn` command with `--api`, `--ca-cert` and (when given) `--token` set, and any
    /// CAIRN_* variables of the test's own environment removed.
    pub fn cairn_cmd(&self, token: Option<&str>) -> Result<Command> {
        let mut cmd = Command::new(bin("cairn")?);
        cmd.env_remove("CAIRN_API")
            .env_remove("CAIRN_TOKEN")
            .env_remove("CAIRN_CA_CERT")
            .arg("--api")
            .arg(self.api_url())
            .arg("--ca-cert")
            .arg(&self.init.ca_cert);
        if let Some(t) = token {
            cmd.arg("--token").arg(t);
        }
        Ok(cmd)
    }

    /// `cairn --json ARGS` with the admin token; does not check the exit code.
    pub fn cli_raw(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut cmd = self.cairn_cmd(Some(&self.init.admin_token))?;
        cmd.arg("--json").args(args);
        run(cmd, timeout)
    }

    /// `cairn --json ARGS` with the admin token; must exit 0 and print JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        self.cli_json_timeout(args, CLI_TIMEOUT)
    }

    pub fn cli_json_timeout(&self, args: &[&str], timeout: Duration) -> Result<Value> {
        self.cli_raw(args, timeout)?.ok()?.json()
    }

    /// `cairn hosts --json` as a list of host objects.
    pub fn hosts(&self) -> Result<Vec<Value>> {
        let v = self.cli_json(&["hosts"])?;
        let list = match &v {
            Value::Array(a) => a.clone(),
            other => other
                .get("hosts")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| anyhow!("`cairn hosts --json` printed no host list: {other}"))?,
        };
        Ok(list)
    }

    /// `cairn show ID --json`.
    pub fn show(&self, collection: &str) -> Result<Value> {
        self.cli_json(&["show", collection])
    }

    /// Requests a collection and waits (up to `timeout`) until it is finished
    /// (`sealed`, `partial` or `failed`); returns the collection object.
    pub fn collect_wait(
        &self,
        host: &str,
        profile: &str,
        reason: &str,
        paths: &[&Path],
        timeout: Duration,
    ) -> Result<Value> {
        let secs = timeout.as_secs().to_string();
        let mut args: Vec<String> = vec![
            "collect".into(),
            host.into(),
            "--profile".into(),
            profile.into(),
            "--reason".into(),
            reason.into(),
        ];
        for p in paths {
            args.push("--path".into());
            args.push(p.to_string_lossy().into_owned());
        }
        args.extend(["--wait".into(), "--timeout".into(), secs]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cli_raw(&refs, timeout + Duration::from_secs(30))?;
        // A collection that ended `partial` or `failed` may make the CLI exit non-zero; the
        // collection object it printed is what the test wants to look at.
        let v = match out.json() {
            Ok(v) if v.get("id").is_some() => v,
            _ => out.clone().ok()?.json()?,
        };
        // The CLI waited; make sure we look at the final state.
        let id = json_str(&v, "id")?;
        let status = v.get("status").and_then(Value::as_str).unwrap_or("");
        if matches!(status, "sealed" | "partial" | "failed") {
            return Ok(v);
        }
        self.wait_finished(&id, Duration::from_secs(30))
    }

    /// Polls `cairn show` until the collection is `sealed`, `partial` or `failed`.
    pub fn wait_finished(&self, collection: &str, timeout: Duration) -> Result<Value> {
        let mut last = Value::Null;
        wait_for(
            &format!("collection {collection} to finish"),
            timeout,
            || {
                let v = self.show(collection)?;
                let st = v.get("status").and_then(Value::as_str).unwrap_or("");
                let done = matches!(st, "sealed" | "partial" | "failed");
                last = v.clone();
                Ok(done.then_some(v))
            },
        )
        .with_context(|| {
            format!(
                "last state: {last}\ncollector log:\n{}",
                tail_file(&self.log, 30)
            )
        })
    }

    /// `cairn export ITEM -o FILE`.
    pub fn export(&self, item: &str, out: &Path) -> Result<()> {
        let o = out.to_string_lossy().into_owned();
        self.cli_raw(&["export", item, "-o", &o], Duration::from_secs(600))?
            .ok()?;
        Ok(())
    }

    /// A GET on the HTTP API with the admin token, through `curl` (JSON response).
    pub fn api_get(&self, path: &str) -> Result<Value> {
        if !have_command("curl") {
            bail!("curl is needed for raw API calls: install it (`cargo xtask test` does)");
        }
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "--cacert"])
            .arg(&self.init.ca_cert)
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.init.admin_token))
            .arg(format!("{}{path}", self.api_url()));
        let out = run(cmd, CLI_TIMEOUT)?.ok()?;
        out.json()
    }

    /// `cairn-collector token create --uses N --ttl D --json` → the token.
    pub fn token_create(&self, uses: u32, ttl: &str) -> Result<String> {
        let mut cmd = Command::new(bin("cairn-collector")?);
        cmd.args(["token", "create", "--data"])
            .arg(&self.data)
            .args(["--uses", &uses.to_string(), "--ttl", ttl, "--json"]);
        let v = run(cmd, CLI_TIMEOUT)?.ok()?.json()?;
        json_str(&v, "token")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `cairn --json ARGS` against `collector` with the admin token: (exit code, stdout JSON or Null).
pub fn cli(collector: &Collector, args: &[&str]) -> Result<(Option<i32>, Value)> {
    let out = collector.cli_raw(args, CLI_TIMEOUT)?;
    let v = out.json().unwrap_or(Value::Null);
    Ok((out.code, v))
}

// ---------------------------------------------------------------------------------------------
// Agent

/// An enrolled agent state directory, and the `cairn-agent run` daemon once started.
pub struct Agent {
    pub state: PathBuf,
    pub log: PathBuf,
    /// What `enroll` printed (contains the agent id).
    pub enroll_stdout: String,
    proc: Option<Managed>,
}

/// `cairn-agent enroll` with an explicit token; the output is returned whatever the exit code.
pub fn enroll_raw(collector: &Collector, state: &Path, token: &str) -> Result<Output> {
    let mut cmd = Command::new(bin("cairn-agent")?);
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("enroll")
        .arg("--collector")
        .arg(collector.quic_addr())
        .arg("--token")
        .arg(token)
        .arg("--ca-sha256")
        .arg(&collector.init.ca_sha256)
        .arg("--state-dir")
        .arg(state);
    run(cmd, CLI_TIMEOUT)
}

impl Agent {
    /// Enrolls a new agent with the collector's fleet token, state in a fresh dir under `work`.
    pub fn enroll(collector: &Collector, work: &Path) -> Result<Agent> {
        let base = unique_dir(work, "agent");
        fs::create_dir_all(&base)?;
        let state = base.join("state");
        let out = enroll_raw(collector, &state, &collector.init.enrollment_token)?.ok()?;
        Ok(Agent {
            state,
            log: base.join("agent.log"),
            enroll_stdout: out.stdout,
            proc: None,
        })
    }

    /// Starts `cairn-agent run` in the background.
    pub fn run(&mut self) -> Result<()> {
        let mut cmd = Command::new(bin("cairn-agent")?);
        cmd.env_remove("CAIRN_AGENT_STATE")
            .arg("run")
            .arg("--state-dir")
            .arg(&self.state);
        self.proc = Some(Managed::spawn("cairn-agent", cmd, &self.log)?);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// `cairn-agent ping`; the output is returned whatever the exit code.
    pub fn ping(&self) -> Result<Output> {
        let mut cmd = Command::new(bin("cairn-agent")?);
        cmd.env_remove("CAIRN_AGENT_STATE")
            .arg("ping")
            .arg("--state-dir")
            .arg(&self.state);
        run(cmd, CLI_TIMEOUT)
    }

    /// Whether a host object from `cairn hosts` is this agent.
    pub fn is_host(&self, host: &Value) -> bool {
        host.get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty() && self.enroll_stdout.contains(id))
    }

    /// Waits until the collector lists this agent as connected; returns its host id.
    pub fn wait_connected(&mut self, collector: &Collector, timeout: Duration) -> Result<String> {
        let mut last = Vec::new();
        let log = self.log.clone();
        let res = wait_for(
            "the agent to show as connected in `cairn hosts`",
            timeout,
            || {
                if let Some(p) = self.proc.as_mut() {
                    p.check_alive()?;
                }
                let hosts = collector.hosts()?;
                last = hosts.clone();
                let connected =
                    |h: &&Value| h.get("connected").and_then(Value::as_bool) == Some(true);
                let mine: Vec<&Value> = hosts.iter().filter(|h| self.is_host(h)).collect();
                let pick = if mine.is_empty() && hosts.len() == 1 {
                    // enroll's output did not contain the id as listed; one host is unambiguous.
                    hosts.iter().find(connected)
                } else {
                    mine.into_iter().find(connected)
                };
                Ok(pick.and_then(|h| h.get("id").and_then(Value::as_str).map(str::to_string)))
            },
        );
        res.with_context(|| {
            format!(
                "enroll printed {:?}; hosts: {}\nagent log {}:\n{}",
                self.enroll_stdout.trim(),
                Value::Array(last),
                log.display(),
                tail_file(&log, 30)
            )
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A collector with one enrolled, running, connected agent: (collector, agent, host id).
pub fn collector_with_agent(work: &Path) -> Result<(Collector, Agent, String)> {
    let collector = Collector::start(work)?;
    let mut agent = Agent::enroll(&collector, work)?;
    agent.run()?;
    let host = agent.wait_connected(&collector, Duration::from_secs(60))?;
    Ok((collector, agent, host))
}

/// A short description of a collection for assertion messages: status, errors, and one line
/// per item (name, status, length, SHA-256).
pub fn summary(collection: &Value) -> String {
    let mut out = format!(
        "collection {} status {} errors {}",
        collection.get("id").unwrap_or(&Value::Null),
        collection.get("status").unwrap_or(&Value::Null),
        collection.get("errors").unwrap_or(&Value::Null)
    );
    for i in items(collection) {
        out.push_str(&format!(
            "\n  item {} {} status {} raw_len {} chunks {}/{} dup {} sha256 {}",
            i.get("id").unwrap_or(&Value::Null),
            i.pointer("/source/name").unwrap_or(&Value::Null),
            i.get("status").unwrap_or(&Value::Null),
            i.get("raw_len").unwrap_or(&Value::Null),
            i.get("chunks_received").unwrap_or(&Value::Null),
            i.get("chunk_count").unwrap_or(&Value::Null),
            i.get("duplicate_chunks").unwrap_or(&Value::Null),
            i.get("sha256").unwrap_or(&Value::Null),
        ));
    }
    out
}

/// The items of a collection object.
pub fn items(collection: &Value) -> Vec<Value> {
    collection
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The item whose `source.name` is `name`.
pub fn item_named(collection: &Value, name: &str) -> Option<Value> {
    items(collection)
        .into_iter()
        .find(|i| i.pointer("/source/name").and_then(Value::as_str) == Some(name))
}

/// A string field of a JSON object, or an error naming the object.
pub fn s(v: &Value, key: &str) -> Result<String> {
    json_str(v, key)
}

/// A u64 field of a JSON object, or an error naming the object.
pub fn u(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("no integer field {key:?} in {v}"))
}

/// A fresh temporary working directory for one test (kept if `CAIRN_E2E_KEEP` is set).
pub fn workdir(test: &str) -> Result<tempfile::TempDir> {
    let prefix = format!("cairn-e2e-{test}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    b.disable_cleanup(std::env::var_os("CAIRN_E2E_KEEP").is_some());
    let dir = b.tempdir()?;
    Ok(dir)
}

/// A background process started by a test (e.g. a marker `sleep`), killed on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
