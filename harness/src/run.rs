//! Running a command to completion with a timeout.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

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

/// The command line of `cmd`, for messages.
pub fn describe_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion with stdin closed and its output captured, killing it after
/// `timeout`. A timeout is an error (with what it printed so far).
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

/// Whether an executable is on PATH.
pub fn have_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// The last `n` lines of a file (a note saying why when it cannot be read).
pub fn tail_file(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(b) => tail_str(&String::from_utf8_lossy(&b), n),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The last `n` lines of `s`.
pub fn tail_str(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_exit_code() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout.trim(), "out");
        assert_eq!(out.stderr.trim(), "err");
        assert!(!out.success());
        assert!(out.ok().unwrap_err().to_string().contains("exit Some(3)"));
    }

    #[test]
    fn run_kills_at_the_timeout() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let err = run(cmd, Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_str("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_str("a", 5), "a");
    }
}
