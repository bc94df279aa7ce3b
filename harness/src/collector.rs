//! A real `cairn-collector` on loopback, and the `cairn` CLI against it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::collection::{is_finished, json_str};
use crate::{
    have_command, run, tail_file, wait_for, wait_for_every, with_free_ports, Api, Bins, Managed,
    Output, CLI_TIMEOUT, START_TIMEOUT,
};

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// `work/PREFIX-N`, N unique in this process (tests share one working directory per test).
pub(crate) fn unique_dir(work: &Path, prefix: &str) -> PathBuf {
    let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
    work.join(format!("{prefix}-{n}"))
}

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
    pub bins: Bins,
    pub data: PathBuf,
    pub log: PathBuf,
    pub quic_port: u16,
    pub api_port: u16,
    /// Where QUIC listens: loopback, or an address in another network namespace's reach.
    pub quic_ip: String,
    pub init: InitInfo,
    /// Set on every `cairn-collector` command: the back ends (`CAIRN_DATABASE`, `CAIRN_BLOBS`,
    /// the object store's `AWS_*`).
    pub env: Vec<(String, String)>,
    proc: Managed,
}

impl Collector {
    /// `init --json` a fresh data directory under `work` and `serve` it on free loopback
    /// ports, with the binaries beside the test executable.
    pub fn start(work: &Path) -> Result<Collector> {
        Self::start_in(
            &Bins::beside_test_exe()?,
            &unique_dir(work, "collector"),
            |_| Ok(()),
        )
    }

    /// `init --json` `base/data` (log in `base/collector.log`), run `configure(DATA)` (e.g. to
    /// write a `triggers.toml`), then `serve` on free loopback ports, trying other ports when
    /// the collector cannot bind them.
    pub fn start_in(
        bins: &Bins,
        base: &Path,
        configure: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Collector> {
        Self::start_at(bins, base, "127.0.0.1", configure)
    }

    /// [`Collector::start_in`] with QUIC listening on `quic_ip` (an address of the root end of
    /// a veth pair, for agents in other network namespaces); the API stays on loopback.
    pub fn start_at(
        bins: &Bins,
        base: &Path,
        quic_ip: &str,
        configure: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Collector> {
        Self::start_with(
            bins,
            base,
            quic_ip,
            crate::backends::for_collector()?,
            configure,
        )
    }

    /// [`Collector::start_at`] with `env` on every `cairn-collector` command (the back ends
    /// of a test that chooses its own).
    pub fn start_with(
        bins: &Bins,
        base: &Path,
        quic_ip: &str,
        env: Vec<(String, String)>,
        configure: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Collector> {
        fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
        let data = base.join("data");
        let log = base.join("collector.log");
        let mut cmd = Command::new(bins.collector()?);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
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
        configure(&data)?;
        with_free_ports(3, |quic_port, api_port| {
            let mut c = Collector {
                bins: bins.clone(),
                data: data.clone(),
                log: log.clone(),
                quic_port,
                api_port,
                quic_ip: quic_ip.to_string(),
                init: init.clone(),
                env: env.clone(),
                proc: Managed::idle("cairn-collector", &log),
            };
            // On an error `c` is dropped, which kills what was started.
            c.serve()?;
            Ok(c)
        })
    }

    /// One more instance of this collector (`init --from`), in `base`, on the same back ends,
    /// serving on its own ports.
    pub fn start_peer(&self, base: &Path) -> Result<Collector> {
        fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
        let data = base.join("data");
        let log = base.join("collector.log");
        let mut cmd = self.collector_cmd()?;
        cmd.args(["init", "--data"])
            .arg(&data)
            .arg("--from")
            .arg(&self.data)
            .arg("--json");
        run(cmd, CLI_TIMEOUT)?.ok()?;
        let mut init = self.init.clone();
        init.ca_cert = data.join("ca.pem");
        with_free_ports(3, |quic_port, api_port| {
            let mut c = Collector {
                bins: self.bins.clone(),
                data: data.clone(),
                log: log.clone(),
                quic_port,
                api_port,
                quic_ip: self.quic_ip.clone(),
                init: init.clone(),
                env: self.env.clone(),
                proc: Managed::idle("cairn-collector", &log),
            };
            c.serve()?;
            Ok(c)
        })
    }

    /// A `cairn-collector` command with this collector's back-end environment.
    pub fn collector_cmd(&self) -> Result<Command> {
        let mut cmd = Command::new(self.bins.collector()?);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// A one-time sign-in link to the console for `name` with `role` (`cairn-collector
    /// console-link`).
    pub fn console_link(&self, name: &str, role: &str) -> Result<String> {
        let mut cmd = self.collector_cmd()?;
        cmd.args(["console-link", "--data"])
            .arg(&self.data)
            .args(["--name", name, "--role", role, "--url"])
            .arg(self.api_url());
        Ok(run(cmd, CLI_TIMEOUT)?.ok()?.stdout.trim().to_string())
    }

    fn serve(&mut self) -> Result<()> {
        let mut cmd = self.collector_cmd()?;
        cmd.args(["serve", "--data"])
            .arg(&self.data)
            .arg("--quic-listen")
            .arg(self.quic_addr())
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", self.api_port));
        let log_len_before = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        self.proc = Managed::spawn("cairn-collector", cmd, &self.log)?;
        let quic_line = format!("quic listening on {}", self.quic_addr());
        let api_line = format!("api listening on {}", self.api_url());
        let log = self.log.clone();
        wait_for_every(
            "the collector's \"listening\" lines",
            START_TIMEOUT,
            Duration::from_millis(50),
            || {
                self.proc.check_alive()?;
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

    /// An error with the log tail unless the collector process is running.
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive()
    }

    /// SIGKILL the collector (no clean shutdown).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Start `serve` again on the same ports and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.serve()
    }

    /// Leaves the collector running after this handle is gone; returns its pid.
    pub fn detach(&mut self) -> Option<u32> {
        self.proc.detach()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn quic_addr(&self) -> String {
        format!("{}:{}", self.quic_ip, self.quic_port)
    }

    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// A `cairn` command with `--api`, `--ca-cert` and (when given) `--token` set, and any
    /// CAIRN_* variables of the caller's own environment removed.
    pub fn cairn_cmd(&self, token: Option<&str>) -> Result<Command> {
        let mut cmd = Command::new(self.bins.cli()?);
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

    /// `cairn ARGS` (human output) with the admin token; does not check the exit code.
    pub fn cli_text(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut cmd = self.cairn_cmd(Some(&self.init.admin_token))?;
        cmd.args(args);
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
        // collection object it printed is what the caller wants to look at.
        let v = match out.json() {
            Ok(v) if v.get("id").is_some() => v,
            _ => out.clone().ok()?.json()?,
        };
        // The CLI waited; make sure we look at the final state.
        let id = json_str(&v, "id")?;
        if is_finished(v.get("status").and_then(Value::as_str).unwrap_or("")) {
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
                let done = is_finished(v.get("status").and_then(Value::as_str).unwrap_or(""));
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

    /// Wait until the host's sensor is attached and its live events arrive: a process run
    /// here shows up as a `process_exec` of that host. A fixed sleep is not enough on a
    /// loaded machine, where attaching the eBPF programs takes seconds.
    pub fn wait_sensor_live(&self, host: &str, timeout: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        let mark = format!("cairn-sensor-probe-{}", std::process::id());
        loop {
            let _ = Command::new("/bin/sh")
                .args(["-c", &format!("exec /bin/echo {mark}")])
                .stdout(std::process::Stdio::null())
                .status();
            let v = self.api_get(&format!(
                "/api/v1/hosts/{host}/events?kind=process_exec&from=-10m&limit=100000"
            ))?;
            let seen = v["events"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e.to_string().contains(&mark)));
            if seen {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("no live process_exec from host {host}'s sensor within {timeout:?}: {v}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A blocking HTTPS client for the API with the admin token, trusting the collector's CA.
    pub fn api(&self) -> Result<Api> {
        Api::new(&self.api_url(), &self.init.admin_token, &self.init.ca_cert)
    }

    /// `cairn-collector token create --uses N --ttl D --json` → the token.
    pub fn token_create(&self, uses: u32, ttl: &str) -> Result<String> {
        let mut cmd = self.collector_cmd()?;
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
