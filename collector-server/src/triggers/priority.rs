//! An alert's priority: its own severity, raised when the host stands out among its peers
//! (fleet context) or its last self-test found it misconfigured. The trigger policy can map
//! priority to a profile (`[priority]` in triggers.toml), so a low-severity alert on a strong
//! outlier collects memory and the same alert on a host whose peers all do the same thing
//! collects volatile state only.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub fn as_str(&self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// An alert's own severity: GuardDuty bands, Falco priorities, a plain request's words.
    /// Unknown words count as medium, so nothing unrecognised is quietly made low.
    pub fn of_severity(severity: &str) -> Priority {
        match severity.to_ascii_lowercase().as_str() {
            "critical" | "emergency" | "alert" => Priority::Critical,
            "high" | "error" => Priority::High,
            "low" | "notice" | "informational" | "info" | "debug" => Priority::Low,
            _ => Priority::Medium,
        }
    }

    fn raised(self) -> Priority {
        match self {
            Priority::Low => Priority::Medium,
            Priority::Medium => Priority::High,
            Priority::High | Priority::Critical => Priority::Critical,
        }
    }
}

/// What the collector knows of the host beyond the alert.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    /// Its outlier score among its peers (`None`: in no scored group).
    pub score: Option<f64>,
    pub outlier: bool,
    /// How many features its profile had (0: nothing of its behaviour was seen).
    pub features: usize,
    /// The reasons of its score, in words.
    pub reasons: Vec<String>,
    /// Its last self-test verdict (`pass`, `warn`, `fail`).
    pub readiness: Option<String>,
    /// A process behind what makes it an outlier, and in words which one: what a mapped
    /// `memory` captures when the alert names no process.
    pub suspect: Option<(u32, String)>,
}

/// A priority and why.
#[derive(Debug, Clone, Serialize)]
pub struct Prioritised {
    pub priority: Priority,
    pub reasons: Vec<String>,
}

/// The alert's priority on this host.
pub fn prioritise(severity: &str, host: &HostContext) -> Prioritised {
    let own = Priority::of_severity(severity);
    let mut p = own;
    let shown = if severity.is_empty() {
        "none"
    } else {
        severity
    };
    let mut reasons = vec![format!("alert severity {shown}: {}", own.as_str())];
    if host.outlier {
        p = p.raised();
        let first = host.reasons.first().map(String::as_str).unwrap_or("");
        reasons.push(format!(
            "raised: the host is an outlier among its peers (score {:.2}){}{first}",
            host.score.unwrap_or(0.0),
            if first.is_empty() { "" } else { ": " }
        ));
    } else if host.score == Some(0.0) && host.features > 0 {
        reasons.push("its peers all do what it does (score 0)".to_string());
    } else if host.score.is_some() && host.features == 0 {
        reasons.push(
            "nothing of its behaviour was seen in the profiling window: no fleet context"
                .to_string(),
        );
    } else if host.score.is_none() {
        reasons.push("in no scored group: no fleet context".to_string());
    }
    if host.readiness.as_deref() == Some("fail") {
        p = p.raised();
        reasons.push(
            "raised: its last self-test failed (evidence may be missing: see its readiness)"
                .to_string(),
        );
    }
    Prioritised {
        priority: p,
        reasons,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn severity_words_of_every_source() {
        assert_eq!(Priority::of_severity("low"), Priority::Low);
        assert_eq!(Priority::of_severity("Notice"), Priority::Low);
        assert_eq!(Priority::of_severity("warning"), Priority::Medium);
        assert_eq!(Priority::of_severity("whatever"), Priority::Medium);
        assert_eq!(Priority::of_severity("ERROR"), Priority::High);
        assert_eq!(Priority::of_severity("critical"), Priority::Critical);
    }

    #[test]
    fn an_outlier_raises_a_low_alert_and_a_typical_host_does_not() {
        let odd = HostContext {
            score: Some(4.97),
            outlier: true,
            features: 5,
            reasons: vec!["only web-7 of 12 in asg web-prod ran /tmp/.x/payload".into()],
            readiness: Some("pass".into()),
            suspect: None,
        };
        let p = prioritise("low", &odd);
        assert_eq!(p.priority, Priority::Medium);
        assert!(p.reasons[1].contains("only web-7 of 12"), "{:?}", p.reasons);
        let peer = HostContext {
            score: Some(0.0),
            features: 3,
            ..Default::default()
        };
        let p = prioritise("low", &peer);
        assert_eq!(p.priority, Priority::Low);
        assert_eq!(p.reasons[1], "its peers all do what it does (score 0)");
        let unseen = HostContext {
            score: Some(0.0),
            ..Default::default()
        };
        assert!(prioritise("low", &unseen).reasons[1].contains("nothing of its behaviour"));
        assert!(
            prioritise("low", &HostContext::default()).reasons[1].contains("in no scored group")
        );
        // A failed self-test raises as well, and priorities stop at critical.
        let broken = HostContext {
            readiness: Some("fail".into()),
            ..odd
        };
        assert_eq!(prioritise("low", &broken).priority, Priority::High);
        assert_eq!(prioritise("critical", &broken).priority, Priority::Critical);
    }
}
