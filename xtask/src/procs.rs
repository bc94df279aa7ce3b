//! Process management shared by `demo` and `bench`: find the built binaries, pick free loopback
//! ports, start a collector and an agent with their logs in files, wait until they are ready,
//! and kill them when the handles are dropped.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The repository root (xtask lives in `<root>/xtask`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `cargo` as invoked by the user (`cargo xtask` sets `CARGO`).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

/// Runs a command with inherited stdio; error unless it exits 0.
pub fn run_inherit(mut cmd: Command) -> Result<()> {
    let line = describe(&cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn section(title: &str) {
    println!(
        "\n==== {title} {}",
        "=".repeat(70usize.saturating_sub(title.chars().count()))
    );
}

/// The output of a command run to completion with a timeout.
pub struct Output {
    pub line: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn ok(self) -> Result<Output> {
        if !self.success() {
            bail!(
                "`{}` failed ({:?}):\n{}\n{}",
                self.line,
                self.status,
                self.stdout.trim(),
                self.stderr.trim()
            );
        }
        Ok(self)
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(self.stdout.trim()).with_context(|| {
            format!(
                "`{}` did not print JSON: {}\n{}",
                self.line,
                self.stdout.trim(),
                self.stderr.trim()
            )
        })
    }
}

/// Runs `cmd` with captured output, killing it after `timeout` (which is an error).
pub fn run_capture(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let line = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let read = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut b);
            }
            String::from_utf8_lossy(&b).into_owned()
        })
    };
    let o = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let e = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        line,
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    };
    if out.status.is_none() {
        bail!("`{}` timed out after {timeout:?}", out.line);
    }
    Ok(out)
}

pub fn have_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the effective uid of the process.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Makes sure the commands exist; as root, installs the Debian packages providing the missing
/// ones (one `apt-get update`, then one `apt-get install`). Returns the commands still missing.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<Vec<String>> {
    let missing: Vec<(&str, &str)> = tools
        .iter()
        .copied()
        .filter(|(cmd, _)| !have_command(cmd))
        .collect();
    if missing.is_empty() {
        println!(
            "all present: {}",
            tools.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        );
        return Ok(Vec::new());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|m| m.1).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    if !is_root() || !have_command("apt-get") {
        println!(
            "warning: missing {}; install the Debian packages {} (as root, `cargo xtask test` does it)",
            missing.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
            pkgs.join(" ")
        );
        return Ok(missing.iter().map(|m| m.0.to_string()).collect());
    }
    let mut update = Command::new("apt-get");
    update
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_inherit(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_inherit(install)?;
    let still: Vec<String> = missing
        .iter()
        .filter(|(cmd, _)| !have_command(cmd))
        .map(|m| m.0.to_string())
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(still)
}

/// A free UDP port and a free TCP port on 127.0.0.1 (bound to :0, then released).
pub fn free_ports() -> Result<(u16, u16)> {
    let udp = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket")?;
    let tcp = TcpListener::bind("127.0.0.1:0").context("cannot bind a TCP socket")?;
    Ok((udp.local_addr()?.port(), tcp.local_addr()?.port()))
}

pub fn tail_file(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(interval);
    }
}

/// The three binaries of one build profile.
#[derive(Clone)]
pub struct Bins {
    pub collector: PathBuf,
    pub cli: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    /// `cargo build --release --bins` and the paths of the results.
    pub fn build_release() -> Result<Bins> {
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--bins"]);
        run_inherit(cmd)?;
        let dir = target_dir().join("release");
        let bins = Bins {
            collector: dir.join("cairn-collector"),
            cli: dir.join("cairn"),
            agent: dir.join("cairn-agent"),
        };
        for b in [&bins.collector, &bins.cli, &bins.agent] {
            if !b.is_file() {
                bail!("{} was not built", b.display());
            }
        }
        Ok(bins)
    }
}

/// A background child with stdout+stderr in a log file; SIGKILLed on drop unless detached.
pub struct Managed {
    name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Managed {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Managed> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let f2 = f.try_clone()?;
        {
            let mut w = &f;
            writeln!(w, "=== xtask: starting `{}`", describe(&cmd))?;
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} (`{}`)", describe(&cmd)))?;
        Ok(Managed {
            name: name.into(),
            child: Some(child),
            log: log.into(),
        })
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(s) = c.try_wait()? {
                self.child = None;
                bail!(
                    "{} exited ({s}); last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail_file(&self.log, 30)
                );
            }
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Leaves the process running; returns its pid.
    pub fn detach(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn str_field(v: &Value, k: &str) -> Result<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string field {k:?} in {v}"))
}

/// A collector with one enrolled, connected agent, everything under one directory.
pub struct Stack {
    pub bins: Bins,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub api_url: String,
    pub quic_addr: String,
    pub admin_token: String,
    pub ca_cert: PathBuf,
    pub host_id: String,
    // Field order: the agent is dropped (killed) before the collector.
    pub agent: Managed,
    pub collector: Managed,
}

impl Stack {
    pub fn start(bins: &Bins, dir: &Path) -> Result<Stack> {
        Self::start_with(bins, dir, |_| Ok(()))
    }

    /// As `start`, with `configure(DATA)` run between `init` and `serve` (e.g. triggers.toml).
    pub fn start_with(
        bins: &Bins,
        dir: &Path,
        configure: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Stack> {
        fs::create_dir_all(dir)?;
        let data = dir.join("collector");
        let mut init = Command::new(&bins.collector);
        init.args(["init", "--data"]).arg(&data).arg("--json");
        let info = run_capture(init, Duration::from_secs(60))?.ok()?.json()?;
        configure(&data)?;
        let admin_token = str_field(&info, "admin_token")?;
        let ca_cert = info
            .get("ca_cert")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| data.join("ca.pem"));

        let (udp, tcp) = free_ports()?;
        let quic_addr = format!("127.0.0.1:{udp}");
        let api_url = format!("https://127.0.0.1:{tcp}");
        let mut serve = Command::new(&bins.collector);
        serve
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--quic-listen", &quic_addr])
            .args(["--api-listen", &format!("127.0.0.1:{tcp}")]);
        let log = dir.join("collector.log");
        let mut collector = Managed::spawn("cairn-collector", serve, &log)?;
        let (ql, al) = (
            format!("quic listening on {quic_addr}"),
            format!("api listening on {api_url}"),
        );
        wait_for(
            "the collector's \"listening\" lines",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                collector.check_alive()?;
                let t = fs::read_to_string(&log).unwrap_or_default();
                Ok((t.contains(&ql) && t.contains(&al)).then_some(()))
            },
        )?;

        let state = dir.join("agent");
        let mut enroll = Command::new(&bins.agent);
        enroll
            .env_remove("CAIRN_AGENT_STATE")
            .args(["enroll", "--collector", &quic_addr])
            .args(["--token", &str_field(&info, "enrollment_token")?])
            .args(["--ca-sha256", &str_field(&info, "ca_sha256")?])
            .arg("--state-dir")
            .arg(&state);
        let enrolled = run_capture(enroll, Duration::from_secs(60))?.ok()?;
        let mut run = Command::new(&bins.agent);
        run.env_remove("CAIRN_AGENT_STATE")
            .arg("run")
            .arg("--state-dir")
            .arg(&state);
        let mut agent = Managed::spawn("cairn-agent", run, &dir.join("agent.log"))?;

        let stack_cli = CliEnv {
            cli: bins.cli.clone(),
            api_url: api_url.clone(),
            token: admin_token.clone(),
            ca_cert: ca_cert.clone(),
        };
        let host_id = wait_for(
            "the agent to show as connected in `cairn hosts`",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                agent.check_alive()?;
                let v = stack_cli.json(&["hosts"])?;
                let hosts = v
                    .get("hosts")
                    .and_then(Value::as_array)
                    .or(v.as_array())
                    .cloned()
                    .unwrap_or_default();
                Ok(hosts.iter().find_map(|h| {
                    let id = h.get("id").and_then(Value::as_str)?;
                    let connected = h.get("connected").and_then(Value::as_bool) == Some(true);
                    (connected && (hosts.len() == 1 || enrolled.stdout.contains(id)))
                        .then(|| id.to_string())
                }))
            },
        )
        .with_context(|| format!("agent log:\n{}", tail_file(&agent.log, 30)))?;
        Ok(Stack {
            bins: bins.clone(),
            dir: dir.to_path_buf(),
            data,
            api_url,
            quic_addr,
            admin_token,
            ca_cert,
            host_id,
            agent,
            collector,
        })
    }

    pub fn cli(&self) -> CliEnv {
        CliEnv {
            cli: self.bins.cli.clone(),
            api_url: self.api_url.clone(),
            token: self.admin_token.clone(),
            ca_cert: self.ca_cert.clone(),
        }
    }

    /// A blocking HTTPS client for the API, trusting the collector's CA.
    pub fn api(&self) -> Result<Api> {
        Api::new(&self.api_url, &self.admin_token, &self.ca_cert)
    }
}

/// Runs the `cairn` CLI with CAIRN_API / CAIRN_TOKEN / CAIRN_CA_CERT set.
pub struct CliEnv {
    pub cli: PathBuf,
    pub api_url: String,
    pub token: String,
    pub ca_cert: PathBuf,
}

impl CliEnv {
    pub fn command(&self, json: bool, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.env("CAIRN_API", &self.api_url)
            .env("CAIRN_TOKEN", &self.token)
            .env("CAIRN_CA_CERT", &self.ca_cert);
        if json {
            cmd.arg("--json");
        }
        cmd.args(args);
        cmd
    }

    pub fn json(&self, args: &[&str]) -> Result<Value> {
        run_capture(self.command(true, args), Duration::from_secs(120))?
            .ok()?
            .json()
    }

    pub fn text(&self, args: &[&str]) -> Result<Output> {
        run_capture(self.command(false, args), Duration::from_secs(600))
    }
}

/// A minimal blocking client for the collector's HTTPS API (keep-alive, so polling is cheap).
pub struct Api {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Api {
    pub fn new(base: &str, token: &str, ca_pem: &Path) -> Result<Api> {
        let pem = fs::read(ca_pem).with_context(|| format!("cannot read {}", ca_pem.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.context("bad certificate in the collector's ca.pem")?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(config))
            .timeout(Duration::from_secs(60))
            .build();
        Ok(Api {
            agent,
            base: base.trim_end_matches('/').into(),
            auth: format!("Bearer {token}"),
        })
    }

    fn handle(path: &str, r: Result<ureq::Response, ureq::Error>) -> Result<Value> {
        match r {
            Ok(resp) => Ok(resp.into_json()?),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                bail!("{path}: HTTP {code}: {body}")
            }
            Err(e) => Err(anyhow!("{path}: {e}")),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .call();
        Self::handle(path, r)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .send_json(body.clone());
        Self::handle(path, r)
    }
}

pub fn is_finished(status: &str) -> bool {
    matches!(status, "sealed" | "partial" | "failed")
}
