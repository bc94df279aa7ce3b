//! The readiness self-test's report: what `cairn-agent selftest --json` prints, what the agent
//! sends the collector, and what the collector keeps as a host's readiness history.
//! The format is documented in docs/selftest.md.

use serde::{Deserialize, Serialize};

/// A check's verdict. Ordered: the worst verdict of a report is its `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Ready.
    Pass,
    /// Works, but something evidence would need is missing or degraded.
    Warn,
    /// Collection of some kind of evidence will not work until this is fixed.
    Fail,
}

impl CheckStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }

    pub fn parse(s: &str) -> Option<CheckStatus> {
        match s {
            "pass" => Some(CheckStatus::Pass),
            "warn" => Some(CheckStatus::Warn),
            "fail" => Some(CheckStatus::Fail),
            _ => None,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Stable dotted name, e.g. `bpf.load_attach`, `collector.reachability`.
    pub id: String,
    pub status: CheckStatus,
    /// What was measured, in words a responder reads (`kernel 6.1.0 with BTF at …`).
    pub measured: String,
    /// What to do about a warn or fail; empty on pass.
    #[serde(default)]
    pub remediation: String,
    /// How long the check took, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

/// One run of the self-test on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelftestReport {
    /// Version of this format; bumped on an incompatible change.
    pub schema_version: u32,
    /// When the run started (RFC 3339, the host's clock).
    pub started: String,
    pub duration_ms: u64,
    pub hostname: String,
    pub agent_version: String,
    /// The worst status of all checks.
    pub status: CheckStatus,
    pub checks: Vec<CheckResult>,
}

pub const SCHEMA_VERSION: u32 = 1;

impl SelftestReport {
    /// The worst status among `checks` (pass when there are none).
    pub fn worst(checks: &[CheckResult]) -> CheckStatus {
        checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(CheckStatus::Pass)
    }

    /// `(passed, warned, failed)` counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s| self.checks.iter().filter(|c| c.status == s).count();
        (
            n(CheckStatus::Pass),
            n(CheckStatus::Warn),
            n(CheckStatus::Fail),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_wins_and_round_trips_as_lowercase() {
        let c = |s| CheckResult {
            id: "x".into(),
            status: s,
            measured: String::new(),
            remediation: String::new(),
            duration_ms: 0,
        };
        assert_eq!(SelftestReport::worst(&[]), CheckStatus::Pass);
        assert_eq!(
            SelftestReport::worst(&[c(CheckStatus::Pass), c(CheckStatus::Warn)]),
            CheckStatus::Warn
        );
        assert_eq!(
            SelftestReport::worst(&[c(CheckStatus::Fail), c(CheckStatus::Warn)]),
            CheckStatus::Fail
        );
        let json = serde_json::to_string(&c(CheckStatus::Fail)).unwrap_or_default();
        assert!(json.contains(r#""status":"fail""#), "{json}");
        assert_eq!(CheckStatus::parse("warn"), Some(CheckStatus::Warn));
        assert_eq!(CheckStatus::parse("bad"), None);
    }
}
