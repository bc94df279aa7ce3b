//! `cairn-agent selftest`: is this host ready to be collected from?
//!
//! The worst time to learn that a host cannot be collected from is during the incident, so
//! every check does the real thing on a small scale: it loads and attaches a BPF program, reads
//! a child process's memory, opens block devices, and sends a small item through the normal
//! upload path for the collector to verify and read back. Each check says what it measured and,
//! when it is not a pass, what to do. The JSON form is documented in docs/selftest.md.
//!
//! - [`kernel`]: kernel version and configuration, BTF, tracefs, lockdown, clock.
//! - [`bpf`]: capabilities, a tiny tracepoint program loaded and attached, the ring buffer.
//! - [`memory`]: physical memory sources and a child process's memory.
//! - [`storage`]: block devices opened read-only and the spool's free space.
//! - [`collector`]: reachability, certificate expiry, clock skew, evidence round trip.
//! - [`preparedness`]: will the logs and agents a responder needs be there (compared across
//!   a host's peers by the collector).

pub mod bpf;
pub mod collector;
pub mod kernel;
pub mod memory;
pub mod preparedness;
pub mod storage;

use crate::config::StateDir;
use cairn_protocol::readiness::{CheckResult, CheckStatus, SelftestReport, SCHEMA_VERSION};
use std::path::PathBuf;
use std::time::Instant;

/// What to test and where.
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    pub state: StateDir,
    /// The host's root file system: `/`, or `/host` when the agent runs in a container.
    pub host_root: PathBuf,
    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<PathBuf>,
    /// In the running agent: what its eBPF sensor attached. That sensor is the proof the BPF
    /// checks look for, so no second program (and second parse of the kernel's BTF, tens of
    /// MB for a moment) is loaded beside it.
    pub running_sensor: Option<String>,
}

/// A check's verdict before it is timed and named.
pub struct Verdict {
    pub status: CheckStatus,
    pub measured: String,
    pub remediation: String,
}

impl Verdict {
    pub fn pass(measured: impl Into<String>) -> Verdict {
        Verdict {
            status: CheckStatus::Pass,
            measured: measured.into(),
            remediation: String::new(),
        }
    }
    pub fn warn(measured: impl Into<String>, remediation: impl Into<String>) -> Verdict {
        Verdict {
            status: CheckStatus::Warn,
            measured: measured.into(),
            remediation: remediation.into(),
        }
    }
    pub fn fail(measured: impl Into<String>, remediation: impl Into<String>) -> Verdict {
        Verdict {
            status: CheckStatus::Fail,
            measured: measured.into(),
            remediation: remediation.into(),
        }
    }
}

/// Run `f` as the check `id`, timing it.
pub fn check(id: &str, f: impl FnOnce() -> Verdict) -> CheckResult {
    let start = Instant::now();
    let v = f();
    result(id, v, start)
}

pub fn result(id: &str, v: Verdict, start: Instant) -> CheckResult {
    CheckResult {
        id: id.to_string(),
        status: v.status,
        measured: v.measured,
        remediation: v.remediation,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// The checks that need nothing but this host (blocking: run off the async executor).
pub fn local_checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    let mut out = kernel::checks(opts);
    out.extend(bpf::checks(opts));
    out.extend(memory::checks(opts));
    out.extend(storage::checks(opts));
    out.extend(preparedness::checks(opts));
    out
}

/// Every check, local and against the collector.
pub async fn run(opts: &SelftestOptions) -> SelftestReport {
    let started = cairn_protocol::rfc3339::now();
    let start = Instant::now();
    let o = opts.clone();
    let mut checks = match tokio::task::spawn_blocking(move || local_checks(&o)).await {
        Ok(c) => c,
        Err(e) => vec![CheckResult {
            id: "selftest.local".into(),
            status: CheckStatus::Fail,
            measured: format!("the local checks stopped: {e}"),
            remediation: "report this as a bug with the agent's log".into(),
            duration_ms: 0,
        }],
    };
    checks.extend(collector::checks(opts).await);
    SelftestReport {
        schema_version: SCHEMA_VERSION,
        started,
        duration_ms: start.elapsed().as_millis() as u64,
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        agent_version: crate::tool_version(),
        status: SelftestReport::worst(&checks),
        checks,
    }
}

/// The report as a table for a person.
pub fn render(report: &SelftestReport) -> String {
    let mut out = String::new();
    for c in &report.checks {
        out.push_str(&format!(
            "{:<4}  {:<30} {}\n",
            c.status.as_str().to_uppercase(),
            c.id,
            c.measured
        ));
        if !c.remediation.is_empty() {
            out.push_str(&format!("{:<36}→ {}\n", "", c.remediation));
        }
    }
    let (p, w, f) = report.counts();
    out.push_str(&format!(
        "readiness: {} ({p} pass, {w} warn, {f} fail) in {:.1} s\n",
        report.status.as_str().to_uppercase(),
        report.duration_ms as f64 / 1000.0
    ));
    out
}

/// `ROOT/PATH` for an absolute host path.
pub fn in_root(root: &std::path::Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}
