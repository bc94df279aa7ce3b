//! Background processes that do not outlive their handle.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::run::{describe_cmd, tail_file};

/// A background child whose stdout and stderr go to a log file; killed (SIGKILL) on drop
/// unless [detached](Managed::detach), and when a test is panicking its log tail is printed.
pub struct Managed {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Managed {
    /// Starts `cmd` (stdin closed, `RUST_LOG=info` unless set) with its output appended to
    /// `log`, after a line naming the command.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Managed> {
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
            .with_context(|| format!("cannot start {name} (`{cmdline}`)"))?;
        Ok(Managed {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// A handle with no process yet (its [`check_alive`](Managed::check_alive) fails until a
    /// [`spawn`](Managed::spawn) replaces it).
    pub fn idle(name: &str, log: &Path) -> Managed {
        Managed {
            name: name.to_string(),
            child: None,
            log: log.to_path_buf(),
        }
    }

    /// The liveness check: an error with the log tail if the process has exited (or was
    /// killed, detached or never started).
    pub fn check_alive(&mut self) -> Result<()> {
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

    /// SIGKILL (no clean shutdown), and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, as systemd stops a unit, then waits up to `wait` for the process to exit;
    /// returns how it exited (SIGKILL after `wait`, and an error).
    pub fn terminate(&mut self, wait: std::time::Duration) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("{} is not running", self.name)
        };
        // Our own child, not yet reaped: its pid is not reused.
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} ({}) failed: {sent}", c.id(), self.name);
        }
        let until = std::time::Instant::now() + wait;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > until {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "{} did not exit within {} s of SIGTERM; log {}:\n{}",
                    self.name,
                    wait.as_secs(),
                    self.log.display(),
                    tail_file(&self.log, 40)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Leaves the process running after this handle is gone; returns its pid.
    pub fn detach(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }

    pub fn log(&self) -> &Path {
        &self.log
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

/// A background process started by a test (e.g. a marker `sleep`), killed on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killed_on_drop_unless_detached() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut m = Managed::spawn("sleep", cmd, &log).unwrap();
        m.check_alive().unwrap();
        let pid = m.pid().unwrap();
        drop(m);
        // Reaped by the drop: the pid is gone (or reused by something that is not our child).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "sleep {pid} still there: {stat}");
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("starting `sleep 30`"));

        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut m = Managed::spawn("sleep", cmd, &log).unwrap();
        let pid = m.detach().unwrap();
        drop(m);
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }

    #[test]
    fn an_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bad config; exit 2"]);
        let mut m = Managed::spawn("sh", cmd, &log).unwrap();
        let err = crate::wait_for("sh to exit", std::time::Duration::from_secs(10), || {
            Ok(m.check_alive().err())
        })
        .unwrap();
        assert!(err.to_string().contains("bad config"), "{err}");
        assert!(m
            .check_alive()
            .unwrap_err()
            .to_string()
            .contains("not running"));
    }
}
