//! A real `cairn-agent`, enrolled with a [`Collector`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::collector::unique_dir;
use crate::{run, tail_file, wait_for, Bins, Collector, Managed, Output, CLI_TIMEOUT};

/// How long an agent may take from `run` to showing as connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// An enrolled agent state directory, and the `cairn-agent run` daemon once started.
pub struct Agent {
    pub bins: Bins,
    pub state: PathBuf,
    pub log: PathBuf,
    /// What `enroll` printed (contains the agent id).
    pub enroll_stdout: String,
    proc: Managed,
}

/// `cairn-agent enroll` with an explicit token; the output is returned whatever the exit code.
pub fn enroll_raw(collector: &Collector, state: &Path, token: &str) -> Result<Output> {
    enroll_raw_with(collector, state, token, &[])
}

/// [`enroll_raw`] with more arguments (`--new-identity`).
pub fn enroll_raw_with(
    collector: &Collector,
    state: &Path,
    token: &str,
    extra: &[&str],
) -> Result<Output> {
    let mut cmd = Command::new(collector.bins.agent()?);
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("enroll")
        .arg("--collector")
        .arg(collector.quic_addr())
        .arg("--token")
        .arg(token)
        .arg("--ca-sha256")
        .arg(&collector.init.ca_sha256)
        .arg("--state-dir")
        .arg(state)
        .args(extra);
    run(cmd, CLI_TIMEOUT)
}

/// Replace (or add, before any table) `key = value` in an agent state's agent.toml; `value`
/// is TOML (`"always"`, `1`, `false`).
pub fn set_agent_option(state: &Path, key: &str, value: &str) -> Result<()> {
    let p = state.join("agent.toml");
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let line = format!("{key} = {value}");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.split('=').next().map(str::trim) != Some(key))
        .map(str::to_string)
        .collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with('['))
        .unwrap_or(lines.len());
    lines.insert(at, line);
    fs::write(&p, lines.join("\n") + "\n")?;
    Ok(())
}

/// Sets `key = value` in table `[table]` of the agent's `agent.toml` (created at the end
/// when the file has no such table).
pub fn set_agent_table_option(state: &Path, table: &str, key: &str, value: &str) -> Result<()> {
    let p = state.join("agent.toml");
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let header = format!("[{table}]");
    let mut lines: Vec<String> = Vec::new();
    let mut in_table = false;
    let mut done = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_table = t == header;
        }
        if in_table && t.split('=').next().map(str::trim) == Some(key) {
            continue;
        }
        lines.push(l.to_string());
        if t == header {
            lines.push(format!("{key} = {value}"));
            done = true;
        }
    }
    if !done {
        lines.push(header);
        lines.push(format!("{key} = {value}"));
    }
    fs::write(&p, lines.join("\n") + "\n")?;
    Ok(())
}

impl Agent {
    /// Point the (stopped) agent at several collector addresses, `HOST:PORT,HOST:PORT`.
    pub fn set_collectors(&self, addrs: &str) -> Result<()> {
        let p = self.state.join("agent.toml");
        let text = std::fs::read_to_string(&p)?;
        let mut done = false;
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if !done && (l.starts_with("collector ") || l.starts_with("collector=")) {
                    done = true;
                    format!("collector = \"{addrs}\"")
                } else {
                    l.to_string()
                }
            })
            .collect();
        if !done {
            anyhow::bail!("no collector line in {}", p.display());
        }
        std::fs::write(&p, out.join("\n") + "\n")?;
        Ok(())
    }

    /// Enrolls a new agent with the collector's fleet token, state in a fresh dir under `work`.
    pub fn enroll(collector: &Collector, work: &Path) -> Result<Agent> {
        Self::enroll_in(collector, &unique_dir(work, "agent"))
    }

    /// Enrolls a new agent with the collector's fleet token: state in `base/state`, log in
    /// `base/agent.log`.
    pub fn enroll_in(collector: &Collector, base: &Path) -> Result<Agent> {
        Self::enroll_in_with(collector, base, &[])
    }

    /// As [`Agent::enroll`], with more `enroll` arguments: `--new-identity` for a second host
    /// on this machine (another agent of the same machine id would take over the first's).
    pub fn enroll_with(collector: &Collector, work: &Path, extra: &[&str]) -> Result<Agent> {
        Self::enroll_in_with(collector, &unique_dir(work, "agent"), extra)
    }

    fn enroll_in_with(collector: &Collector, base: &Path, extra: &[&str]) -> Result<Agent> {
        fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
        let state = base.join("state");
        let log = base.join("agent.log");
        let out =
            enroll_raw_with(collector, &state, &collector.init.enrollment_token, extra)?.ok()?;
        Ok(Agent {
            bins: collector.bins.clone(),
            state,
            proc: Managed::idle("cairn-agent", &log),
            log,
            enroll_stdout: out.stdout,
        })
    }

    fn agent_cmd(&self, sub: &str) -> Result<Command> {
        let mut cmd = Command::new(self.bins.agent()?);
        cmd.env_remove("CAIRN_AGENT_STATE")
            .arg(sub)
            .arg("--state-dir")
            .arg(&self.state);
        Ok(cmd)
    }

    /// Starts `cairn-agent run` in the background.
    pub fn run(&mut self) -> Result<()> {
        let cmd = self.agent_cmd("run")?;
        self.proc = Managed::spawn("cairn-agent", cmd, &self.log)?;
        Ok(())
    }

    /// Starts `cairn-agent --host-root ROOT run` in the background: /proc, /dev and collected
    /// paths resolve inside ROOT, as for an agent in a container.
    pub fn run_with_host_root(&mut self, root: &Path) -> Result<()> {
        let mut cmd = self.agent_cmd("run")?;
        cmd.arg("--host-root").arg(root);
        self.proc = Managed::spawn("cairn-agent", cmd, &self.log)?;
        Ok(())
    }

    /// Starts `cairn-agent run` in network namespace `ns` (the network only: cgroups, bpffs
    /// and tracefs stay as they are).
    pub fn run_in_netns(&mut self, ns: &str) -> Result<()> {
        let mut cmd = crate::netns::Topology::command(ns, &self.bins.agent()?.to_string_lossy());
        cmd.env_remove("CAIRN_AGENT_STATE")
            .arg("run")
            .arg("--state-dir")
            .arg(&self.state);
        self.proc = Managed::spawn("cairn-agent", cmd, &self.log)?;
        Ok(())
    }

    /// `cairn-agent SUB ARGS…` (in network namespace `ns` when given); the output whatever
    /// the exit code.
    pub fn command(&self, ns: Option<&str>, sub: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c =
                    crate::netns::Topology::command(ns, &self.bins.agent()?.to_string_lossy());
                c.env_remove("CAIRN_AGENT_STATE")
                    .arg(sub)
                    .arg("--state-dir")
                    .arg(&self.state);
                c
            }
            None => self.agent_cmd(sub)?,
        };
        cmd.args(args);
        run(cmd, CLI_TIMEOUT)
    }

    /// An error with the log tail unless `cairn-agent run` is running.
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive()
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Leaves the agent running after this handle is gone; returns its pid.
    pub fn detach(&mut self) -> Option<u32> {
        self.proc.detach()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Stops `cairn-agent run` as systemd does (SIGTERM), waiting up to `wait` for it to exit.
    pub fn terminate(&mut self, wait: Duration) -> Result<std::process::ExitStatus> {
        self.proc.terminate(wait)
    }

    /// `cairn-agent ping`; the output is returned whatever the exit code.
    pub fn ping(&self) -> Result<Output> {
        run(self.agent_cmd("ping")?, CLI_TIMEOUT)
    }

    /// Whether a host object from `cairn hosts` is this agent.
    pub fn is_host(&self, host: &Value) -> bool {
        host.get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty() && self.enroll_stdout.contains(id))
    }

    /// Waits until the collector lists this agent as connected (and its `run` is alive);
    /// returns its host id.
    pub fn wait_connected(&mut self, collector: &Collector, timeout: Duration) -> Result<String> {
        let mut last = Vec::new();
        let log = self.log.clone();
        let res = wait_for(
            "the agent to show as connected in `cairn hosts`",
            timeout,
            || {
                self.proc.check_alive()?;
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

/// A collector with one enrolled, running, connected agent: (collector, agent, host id), each
/// in a fresh directory under `work`, with the binaries beside the test executable.
pub fn collector_with_agent(work: &Path) -> Result<(Collector, Agent, String)> {
    let collector = Collector::start(work)?;
    let agent = Agent::enroll(&collector, work)?;
    connect(collector, agent)
}

/// [`collector_with_agent`] with the given binaries, in `dir/collector` and `dir/agent`, and
/// `configure(DATA)` run between the collector's `init` and `serve`.
pub fn collector_with_agent_in(
    bins: &Bins,
    dir: &Path,
    configure: impl FnOnce(&Path) -> Result<()>,
) -> Result<(Collector, Agent, String)> {
    let collector = Collector::start_in(bins, &dir.join("collector"), configure)?;
    let agent = Agent::enroll_in(&collector, &dir.join("agent"))?;
    connect(collector, agent)
}

fn connect(collector: Collector, mut agent: Agent) -> Result<(Collector, Agent, String)> {
    agent.run()?;
    let host = agent.wait_connected(&collector, CONNECT_TIMEOUT)?;
    Ok((collector, agent, host))
}
